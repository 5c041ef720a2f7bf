"""The audit trail's tables (revision 0004): append-only, outside the generic resource store.

    audit_events       one row per AuditEvent, in chain order (`seq`), with its canonical JSON, the hash of
                       the record before it and its own hash, and the columns auditors search by
    audit_checkpoints  the chain head signed at intervals, append-only: catches a truncated tail
    audit_anchors      where the chain in the database starts after `rzcp audit archive`: the archived tail's
                       seq and hash, signed, so the verifier picks up the chain where the archive left it

The head of the chain is its last row: a writer appends seq + 1 after the head it knows, and the primary key
makes a stale head fail instead of forking the chain (rzcp.audit.writer). The last row of every batch carries
the gateway's signature of its seq and hash, so a row appended outside the gateway is caught.

Every table carries `info={"append_only": True}`: code that empties tables (test fixtures) must leave them
alone; the triggers of revision 0004 refuse it anyway.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, String, Table, Text

from rzcp.store.tables import metadata

#: The prev_hash of the first record of a chain that starts empty.
GENESIS_HASH = "0" * 64

#: The columns, beside seq and the hashes, that are both searched and covered by each record's hash;
#: their order is part of the hashed form (rzcp.audit.chain), so never reorder, only append.
INDEX_COLUMNS = (
    "recorded",
    "event_id",
    "type_code",
    "subtype",
    "action",
    "outcome",
    "patient",
    "agent",
    "member_ura",
    "client_id",
    "purpose",
    "emergency",
    "correlation_id",
)

APPEND_ONLY = {"append_only": True}

audit_events = Table(
    "audit_events",
    metadata,
    #: The chain order, assigned by the writer under the head lock; never autoincremented.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    #: AuditEvent.recorded, naive UTC.
    Column("recorded", DateTime(timezone=False), nullable=False),
    #: AuditEvent.id.
    Column("event_id", String(64), nullable=False),
    #: type.code (`rest`, `110113` ...) and the first subtype code (`read`, `search-type` ...).
    Column("type_code", String(64), nullable=False),
    Column("subtype", String(64), nullable=True),
    #: C R U D E.
    Column("action", String(1), nullable=True),
    #: 0 4 8 12.
    Column("outcome", String(2), nullable=False),
    #: `Patient/<regional id>` the event is about.
    Column("patient", String(128), nullable=True),
    #: Who acted: the practitioner as `system|value`, or `Patient/<id>` for a patient, `person|<sub>`.
    Column("agent", String(300), nullable=True),
    Column("member_ura", String(32), nullable=True),
    Column("client_id", String(128), nullable=True),
    #: v3 PurposeOfUse code.
    Column("purpose", String(32), nullable=True),
    Column("emergency", Boolean, nullable=False),
    Column("correlation_id", String(128), nullable=True),
    #: On the last record of each batch: the gateway's Ed25519 signature of (seq, hash) and its key id.
    Column("key_id", String(32), nullable=True),
    Column("signature", String(128), nullable=True),
    #: The AuditEvent as canonical JSON (sorted keys, compact, UTF-8): exactly the bytes that were hashed.
    Column("content", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "recorded"),
    Index(None, "patient", "seq"),
    Index(None, "agent", "seq"),
    Index(None, "member_ura", "seq"),
    Index(None, "client_id", "seq"),
    Index(None, "correlation_id"),
    Index(None, "purpose", "seq"),
    Index(None, "outcome", "seq"),
    Index(None, "emergency", "seq"),
    Index(None, "type_code", "subtype", "seq"),
    info=APPEND_ONLY,
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("signed_at", DateTime(timezone=False), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(128), nullable=False),
    info=APPEND_ONLY,
)

audit_anchors = Table(
    "audit_anchors",
    metadata,
    #: The last archived record: the chain in audit_events continues at seq + 1 with prev_hash = hash.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("archived_at", DateTime(timezone=False), nullable=False),
    #: Where the archive went (file name as given) and the SHA-256 of its bytes.
    Column("archive_name", String(1024), nullable=False),
    Column("archive_sha256", String(64), nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(128), nullable=False),
    info=APPEND_ONLY,
)

AUDIT_TABLES = (audit_events, audit_checkpoints, audit_anchors)
