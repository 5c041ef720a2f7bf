"""The gateway's own token-signing keys, kept in the database so every process signs and verifies alike.

Rotation without downtime: `rotate()` adds a new key and retires the current one in one transaction. The
new key signs from then on (other processes pick it up within `REFRESH_SECONDS`); a retired key keeps being
published at the jwks endpoint, and accepted, until every token it can have signed has expired. A token
with a kid this process does not know makes it reload the keys once (rate-limited), so a key made by another
process is found at once.

The private halves are stored encrypted with a key derived from RZCP_SECRET_KEY.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from cryptography.fernet import Fernet
from joserfc.jwk import RSAKey
from sqlalchemy import delete, select, update

from rzcp.auth.tables import signing_keys
from rzcp.store.db import Database

ALG = "RS384"
#: How often a process re-reads the keys, so that it signs with the newest within this many seconds.
REFRESH_SECONDS = 30.0
#: Extra time a retired key stays published beyond the token lifetime (clock skew, slow clients).
MARGIN_SECONDS = 60
_RELOAD_AT_MOST_EVERY = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class PublicKey:
    kid: str
    key: RSAKey
    created_at: datetime
    retired_at: datetime | None


class KeyRing:
    def __init__(self, db: Database, secret_key: str, token_seconds: int) -> None:
        self.db = db
        digest = hashlib.sha256(b"rzcp-signing-keys\x00" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._retention = timedelta(seconds=token_seconds + REFRESH_SECONDS + MARGIN_SECONDS)
        self._public: dict[str, PublicKey] = {}
        self._signing: RSAKey | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def signing_key(self) -> RSAKey:
        """The key to sign with now: the newest unretired one (made when there is none)."""
        if self._signing is None or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            await self._load(create=True)
        assert self._signing is not None
        return self._signing

    async def public_key(self, kid: str) -> RSAKey | None:
        """The published key with this kid, reloading once when it is unknown here."""
        found = self._public.get(kid)
        if found is None and time.monotonic() - self._loaded_at > _RELOAD_AT_MOST_EVERY:
            await self._load(create=False)
            found = self._public.get(kid)
        if found is None or not self._is_published(found, utcnow()):
            return None
        return found.key

    async def jwks(self) -> dict[str, list[dict[str, object]]]:
        await self.signing_key()
        now = utcnow()
        return {
            "keys": [
                {**k.key.as_dict(private=False), "alg": ALG, "use": "sig"}
                for k in sorted(self._public.values(), key=lambda k: k.created_at, reverse=True)
                if self._is_published(k, now)
            ]
        }

    async def rotate(self) -> str:
        """Add a new signing key and retire the current ones; drop keys no token can still need."""
        now = utcnow()
        row = self._new_key(now)  # generated outside the transaction: it takes tens of milliseconds
        async with self.db.write() as conn:
            await conn.execute(
                update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=now)
            )
            await conn.execute(delete(signing_keys).where(signing_keys.c.retired_at < now - self._retention))
            await conn.execute(signing_keys.insert().values(**row))
        await self._load(create=False)
        return str(row["kid"])

    def _is_published(self, key: PublicKey, now: datetime) -> bool:
        return key.retired_at is None or key.retired_at + self._retention > now

    async def _load(self, *, create: bool) -> None:
        async with self._lock:
            async with self.db.read() as conn:
                rows = (await conn.execute(select(signing_keys))).all()
            if create and not any(r.retired_at is None for r in rows):
                row = self._new_key(utcnow())
                async with self.db.write() as conn:
                    # Another process may have made one meanwhile; then there are two, both valid.
                    await conn.execute(signing_keys.insert().values(**row))
                    rows = (await conn.execute(select(signing_keys))).all()
            public: dict[str, PublicKey] = {}
            newest = None
            for row in rows:
                key = RSAKey.import_key(orjson.loads(row.public_jwk))
                public[row.kid] = PublicKey(row.kid, key, row.created_at, row.retired_at)
                if row.retired_at is None and (newest is None or row.created_at > newest.created_at):
                    newest = row
            if newest is not None:
                private = orjson.loads(self._fernet.decrypt(newest.private_jwk.encode()))
                self._signing = RSAKey.import_key(private, parameters={"kid": newest.kid})
            self._public = public
            self._loaded_at = time.monotonic()

    def _new_key(self, now: datetime) -> dict[str, object]:
        kid = f"{now:%Y%m%d}-{uuid.uuid4().hex[:12]}"
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": ALG, "use": "sig"}, private=True)
        return {
            "kid": kid,
            "alg": ALG,
            "public_jwk": orjson.dumps(key.as_dict(private=False)).decode(),
            "private_jwk": self._fernet.encrypt(orjson.dumps(key.as_dict(private=True))).decode(),
            "created_at": now,
            "retired_at": None,
        }
