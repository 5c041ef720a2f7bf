"""The hash chain's one canonical form, and the signatures on its head.

A record's hash is

    SHA-256( JSON([seq, prev_hash, recorded, event_id, type_code, subtype, action, outcome, patient, agent,
                   member_ura, client_id, purpose, emergency, correlation_id])
             || "\\n" || content )

with `recorded` as the text `YYYY-MM-DD HH:MM:SS.ffffff` (naive UTC) and `emergency` as 0 or 1: the form
SQLite stores them in and PostgreSQL gives with `to_char(...)` and `::int`, so the verifier hashes the
driver's raw values without converting them in Python.

where `content` is the AuditEvent as canonical JSON (orjson with sorted keys: compact, UTF-8, no
insignificant white space; the builder emits only strings, integers, booleans, lists and objects, so this is
the JSON Canonicalization Scheme of RFC 8785 for these values) and the header covers the position in the
chain (`seq`), the link to the record before it, and every column an auditor searches by, so that neither the
record, its position nor its index entries can change unseen. The stored `content` is exactly the hashed
bytes: the verifier hashes what it reads, without parsing it.

Checkpoints and anchors are signed with Ed25519 (`ChainSigner`): a public key lets an auditor or an outside
party verify the trail without being able to sign a checkpoint themselves, which an HMAC secret could not
offer. Signing costs some tens of microseconds, once per committed batch (the batch's last record carries
it); verifying one costs about twice that, so the verifier checks only the newest batch signature and the
interval checkpoints, and the hash chain does the rest.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rzcp.audit.tables import INDEX_COLUMNS


def canonical(event: Mapping[str, Any]) -> bytes:
    """The AuditEvent as the bytes that are stored and hashed."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def record_hash(seq: int, prev_hash: str, columns: Iterable[Any], content: bytes) -> str:
    """The hash of one record; `columns` in the order of INDEX_COLUMNS, with their stored types."""
    header = orjson.dumps([seq, prev_hash, *columns])
    return hashlib.sha256(header + b"\n" + content).hexdigest()


def stamp_text(moment: datetime) -> str:
    """`recorded` in the hashed form (also SQLite's storage form of a DateTime)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}"
    )


def column_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The index columns of a row (as the writer has them) in their hashed form."""
    values = [row[name] for name in INDEX_COLUMNS]
    values[0] = stamp_text(values[0])
    values[INDEX_COLUMNS.index("emergency")] = int(values[INDEX_COLUMNS.index("emergency")])
    return tuple(values)


def utcnow() -> datetime:
    """Naive UTC, as the tables store it."""
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(moment: datetime) -> bytes:
    return moment.isoformat(timespec="microseconds").encode()


def batch_message(seq: int, head_hash: str) -> bytes:
    """What the last record of each batch carries a signature of."""
    return b"rzcp-audit-batch\n%d\n%s" % (seq, head_hash.encode())


def checkpoint_message(seq: int, head_hash: str, signed_at: datetime) -> bytes:
    return b"rzcp-audit-checkpoint\n%d\n%s\n%s" % (seq, head_hash.encode(), _stamp(signed_at))


def anchor_message(
    seq: int, head_hash: str, archived_at: datetime, archive_sha256: str, records: int
) -> bytes:
    return b"rzcp-audit-anchor\n%d\n%s\n%s\n%s\n%d" % (
        seq,
        head_hash.encode(),
        _stamp(archived_at),
        archive_sha256.encode(),
        records,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: str


class ChainSigner:
    """Signs checkpoints with this gateway's Ed25519 key; verifies with it and any earlier public keys."""

    def __init__(
        self, private: Ed25519PrivateKey | None, public_keys: Iterable[Ed25519PublicKey] = ()
    ) -> None:
        self._private = private
        self._public: dict[str, Ed25519PublicKey] = {key_id(k): k for k in public_keys}
        if private is not None:
            own = private.public_key()
            self.key_id: str | None = key_id(own)
            self._public[self.key_id] = own
        else:
            self.key_id = None

    @classmethod
    def from_config(cls, signing_key: str | None, verify_keys: Iterable[str] = ()) -> ChainSigner:
        """`signing_key`: the base64url Ed25519 seed (32 bytes); `verify_keys`: base64url public keys."""
        try:
            private = Ed25519PrivateKey.from_private_bytes(_unb64(signing_key)) if signing_key else None
        except ValueError:  # the library's words name no setting (a new user's report)
            raise ValueError(
                "RZCP_AUDIT_SIGNING_KEY is not an Ed25519 key: 32 bytes, base64url (`rzcp audit keygen`)"
            ) from None
        try:
            publics = [Ed25519PublicKey.from_public_bytes(_unb64(k)) for k in verify_keys]
        except ValueError:
            raise ValueError(
                "RZCP_AUDIT_VERIFY_KEYS holds a value that is not an Ed25519 public key (32 bytes, base64url)"
            ) from None
        return cls(private, publics)

    @classmethod
    def derived(cls, secret: str, verify_keys: Iterable[str] = ()) -> ChainSigner:
        """A key derived from a secret: for development and tests, where no key is configured."""
        seed = hashlib.sha256(b"rzcp-audit-signing-key\n" + secret.encode()).digest()
        return cls.from_config(_b64(seed), verify_keys)

    @staticmethod
    def generate() -> tuple[str, str]:
        """A new key pair: (base64url seed for RZCP_AUDIT_SIGNING_KEY, base64url public key)."""
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _b64(seed), _b64(public)

    @property
    def public_key(self) -> str | None:
        if self._private is None:
            return None
        return _b64(self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> Signature:
        if self._private is None or self.key_id is None:
            raise RuntimeError("no audit signing key: this process can verify the trail but not write it")
        return Signature(self.key_id, _b64(self._private.sign(message)))

    def knows(self, kid: str | None) -> bool:
        """Is the key this id names one this signer can verify with (its own, or RZCP_AUDIT_VERIFY_KEYS)?"""
        return (kid or "") in self._public

    def verify(self, kid: str | None, signature: str | None, message: bytes) -> bool:
        key = self._public.get(kid or "")
        if key is None or not signature:
            return False
        try:
            key.verify(_unb64(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True
