"""The exchange schema: what every gateway process needs to agree on about members' systems, patients'
whereabouts and messages in flight.

exchange_endpoints  per member (auth_members.ura): what the exchange needs beyond the registry's row: the
                    AGB code, the call timeout, the member's capacity (pulls at a time), and how the
                    gateway authenticates to the member's server (the secret sealed with a key derived
                    from RZCP_SECRET_KEY)
exchange_patients   one regional patient per BSN: the keyed hash for look-up, the BSN encrypted for display,
                    and the id of the regional Patient resource; never a plain BSN
exchange_locations  which member holds data for which regional patient, under which local patient id
exchange_outbox     messages accepted for delivery: stored before the sender gets its 202, claimed by one
                    worker at a time through the database (a lease), delivered with retries

The member itself (URA, name, category, endpoint URL, adapter, status) has one source of truth: the auth
registry's `auth_members` row. The Organization and Endpoint resources members read are projections of it
(rzcp.exchange.directory), rewritten in the transaction that changes the row.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from rzcp.store.tables import PrimaryKey, metadata

endpoints = Table(
    "exchange_endpoints",
    metadata,
    Column("ura", String(16), ForeignKey("auth_members.ura"), primary_key=True),
    Column("agb", String(16), nullable=True),
    #: The whole call's deadline, in seconds.
    Column("timeout", Float, nullable=False),
    #: Pulls one gateway process has under way at the member at a time; NULL: RZCP_MEMBER_MAX_PULLS.
    Column("max_pulls", Integer, nullable=True),
    #: none | bearer | smart-backend
    Column("auth_kind", String(32), nullable=False),
    #: The auth's settings as JSON, encrypted (AES-GCM) with a key derived from RZCP_SECRET_KEY; NULL: none.
    Column("auth_sealed", Text, nullable=True),
    Column("changed_at", DateTime(timezone=False), nullable=False),
)

patients = Table(
    "exchange_patients",
    metadata,
    #: The regional Patient's id in the gateway's store.
    Column("patient_id", String(64), primary_key=True),
    #: HMAC-SHA256 of the BSN with the locator key (hex): the only way in by BSN.
    Column("bsn_hash", String(64), nullable=False, unique=True),
    #: The BSN encrypted with AES-GCM (base64url of nonce + ciphertext), for display only.
    Column("bsn_sealed", String(128), nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
)

locations = Table(
    "exchange_locations",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), ForeignKey("exchange_patients.patient_id"), nullable=False),
    Column("member_ura", String(16), ForeignKey("auth_members.ura"), nullable=False),
    #: The member's own id of the patient.
    Column("local_id", String(64), nullable=False),
    Column("announced_at", DateTime(timezone=False), nullable=False),
    UniqueConstraint("member_ura", "local_id"),
    Index(None, "patient_id"),
)

outbox = Table(
    "exchange_outbox",
    metadata,
    #: Also the idempotency key the receiver sees (Bundle.id and the Idempotency-Key header).
    Column("id", String(64), primary_key=True),
    Column("sender_ura", String(16), nullable=False),
    #: The sender's own Bundle.id: a sender that repeats its POST gets the same message back.
    Column("sender_key", String(128), nullable=False),
    Column("receiver_ura", String(16), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("message", Text, nullable=False),
    #: pending | delivered | failed | rejected
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=False), nullable=False),
    #: The worker holding the message and until when; an expired lease may be taken by another worker.
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=False), nullable=True),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("updated_at", DateTime(timezone=False), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("detail", String(500), nullable=True),
    #: The sender's purpose of use (NULL: TREAT, before it was kept): each delivery is decided again with it.
    Column("purpose", String(16), nullable=True),
    UniqueConstraint("sender_ura", "sender_key"),
    Index(None, "status", "next_attempt_at"),
)

EXCHANGE_TABLES = (endpoints, patients, locations, outbox)
