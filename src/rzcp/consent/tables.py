"""The consent schema: what every gateway process needs to agree on about consents.

consent_changes   one row per patient whose consents changed: a version number bumped in the same
                  transaction as each Consent write, so every process sees in one indexed read whether
                  its compiled rules for the patient are still current
consent_subjects  which patient each Consent is about, kept after the Consent is deleted, so the
                  consents that applied at a past moment can still be found (audits after the fact)

The Consent resources themselves, with their versions, live in the resource store.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, String, Table

from rzcp.store.tables import metadata

consent_changes = Table(
    "consent_changes",
    metadata,
    Column("patient_ref", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("changed_at", DateTime(timezone=False), nullable=False),
)

consent_subjects = Table(
    "consent_subjects",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("patient_ref", String(128), nullable=False),
    Index(None, "patient_ref"),
)
