"""Keys the exchange derives from configured secrets, and what it does with them.

- `BsnProtector`: a BSN is kept as a keyed hash (HMAC-SHA256) for look-up and encrypted (AES-GCM) for
  display, each with its own key derived (HKDF-SHA256) from RZCP_BSN_SECRET. A database reader without the
  secret can neither find a patient by BSN nor read one; equal BSNs give equal hashes, so the index works.
- `SecretBox`: AES-GCM for small secrets at rest (a member's bearer token or private key), with a key
  derived from RZCP_SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


def derive_key(secret: str, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rzcp-exchange", info=purpose.encode()).derive(
        secret.encode()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SecretBox:
    """AES-GCM with a random nonce; `purpose` is bound as associated data, so a sealed value of one kind
    cannot be passed off as another."""

    def __init__(self, key: bytes, purpose: str) -> None:
        self._aead = AESGCM(key)
        self._aad = purpose.encode()

    def seal(self, plain: str) -> str:
        nonce = os.urandom(_NONCE)
        return _b64(nonce + self._aead.encrypt(nonce, plain.encode(), self._aad))

    def open(self, sealed: str) -> str:
        raw = _unb64(sealed)
        return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._aad).decode()


class BsnProtector:
    def __init__(self, secret: str) -> None:
        self._hash_key = derive_key(secret, "bsn-lookup")
        self._box = SecretBox(derive_key(secret, "bsn-display"), "bsn")

    def lookup_hash(self, bsn: str) -> str:
        return hmac.new(self._hash_key, bsn.zfill(9).encode(), hashlib.sha256).hexdigest()

    def seal(self, bsn: str) -> str:
        return self._box.seal(bsn.zfill(9))

    def reveal(self, sealed: str) -> str:
        return self._box.open(sealed)


def member_secret_box(secret_key: str) -> SecretBox:
    return SecretBox(derive_key(secret_key, "member-auth"), "member-auth")
