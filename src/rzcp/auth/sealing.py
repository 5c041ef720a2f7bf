"""Small signed, expiring envelopes for state that travels through a browser (the pending authorization
request while the user is at the identity provider). HMAC-SHA256 with a key derived from RZCP_SECRET_KEY
and the envelope's purpose; nothing secret goes in them, since they are signed, not encrypted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson


class SealError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key.encode()

    def _mac(self, purpose: str, body: str) -> str:
        key = hashlib.sha256(self._secret + b"\x00" + purpose.encode()).digest()
        return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())

    def seal(self, purpose: str, data: dict[str, Any], ttl: int) -> str:
        body = _b64(orjson.dumps({"d": data, "x": int(time.time()) + ttl}))
        return f"{body}.{self._mac(purpose, body)}"

    def open(self, purpose: str, token: str) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        if not body or not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise SealError("not sealed by this gateway")
        try:
            envelope = orjson.loads(_unb64(body))
        except ValueError:
            raise SealError("malformed") from None
        if envelope["x"] < time.time():
            raise SealError("expired")
        return envelope["d"]
