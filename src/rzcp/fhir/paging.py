"""Opaque paging links.

A `next` link repeats the client's own search parameters and adds `_page`, a token sealed with the
server's secret (AES-GCM): the client can neither read nor alter the position it holds, and a token
pasted onto another search is refused. Any process that shares the secret can continue the paging, so
the gateway scales out without sticky sessions.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from urllib.parse import urlencode

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rzcp.errors import BadRequest

PAGE_PARAM = "_page"


class PageSealer:
    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(hashlib.sha256(b"rzcp-paging\x00" + secret.encode()).digest())

    def seal(self, offset: int, binding: str) -> str:
        nonce = os.urandom(12)
        plain = orjson.dumps({"o": offset})
        sealed = self._aead.encrypt(nonce, plain, binding.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, token: str, binding: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], binding.encode())
            offset = orjson.loads(plain)["o"]
        except (InvalidTag, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise BadRequest("the _page token is not valid for this search; start the search again") from None
        if not isinstance(offset, int) or offset < 0:
            raise BadRequest("the _page token is not valid for this search; start the search again")
        return offset


def search_params(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's parameters that define the result set (everything but the page position)."""
    return [(k, v) for k, v in pairs if k != PAGE_PARAM]


def binding(path: str, pairs: Sequence[tuple[str, str]]) -> str:
    return path + "?" + urlencode(sorted(search_params(pairs)))


def page_url(base: str, path: str, pairs: Sequence[tuple[str, str]], token: str | None) -> str:
    own = search_params(pairs)
    query = urlencode([*own, (PAGE_PARAM, token)] if token else own)
    return f"{base}{path}" + (f"?{query}" if query else "")
