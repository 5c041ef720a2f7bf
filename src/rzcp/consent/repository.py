"""The queries of the consent registry: a patient's change counter, current Consents and their versions.

The caller owns the transaction (rzcp.store.db.Database.read()/write()); these only execute statements.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.consent.tables import consent_changes, consent_subjects
from rzcp.store.resources import Version, utcnow
from rzcp.store.tables import idx_reference, resource_versions, resources


def patient_id(patient_ref: str) -> str:
    """`Patient/123` -> `123`; a bare id is taken as it is."""
    return patient_ref.removeprefix("Patient/")


def patient_reference(patient_ref: str) -> str:
    return f"Patient/{patient_id(patient_ref)}"


#: Built once: read before every decision, where building a `select()` and its cache key cost more
#: than running it (bench/README.md).
_CHANGE_VERSION = select(consent_changes.c.version).where(
    consent_changes.c.patient_ref == bindparam("patient_ref")
)

#: The same counter as a column of a statement the caller asks anyway (a pull's sources): the same read in
#: the same statement, without a round trip of its own. Binds `patient_ref` (`patient_reference` form).
CHANGE_VERSION_COLUMN = _CHANGE_VERSION.scalar_subquery().label("rzcp_consent_version")


async def change_version(conn: AsyncConnection, patient_ref: str) -> int:
    """The patient's consent change counter; 0 when their consents never changed."""
    found = await conn.scalar(_CHANGE_VERSION, {"patient_ref": patient_reference(patient_ref)})
    return int(found or 0)


async def bump_version(conn: AsyncConnection, patient_ref: str, consent_id: str | None = None) -> int:
    """Add one to the patient's counter (creating it at 1), in the caller's transaction; returns it.

    The row lock this takes also orders concurrent writers of the same patient's consents.
    """
    ref = patient_reference(patient_ref)
    now = utcnow()
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = make(consent_changes).values(patient_ref=ref, version=1, changed_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[consent_changes.c.patient_ref],
            set_={"version": consent_changes.c.version + 1, "changed_at": now},
        ).returning(consent_changes.c.version)
        version = int((await conn.execute(statement)).scalar_one())
    else:  # pragma: no cover - the gateway runs on the two above
        updated = await conn.execute(
            update(consent_changes)
            .where(consent_changes.c.patient_ref == ref)
            .values(version=consent_changes.c.version + 1, changed_at=now)
        )
        if updated.rowcount == 0:
            await conn.execute(insert(consent_changes).values(patient_ref=ref, version=1, changed_at=now))
        version = await change_version(conn, ref)
    if consent_id is not None:
        await _remember_subject(conn, consent_id, ref)
    return version


async def consent_subject(conn: AsyncConnection, consent_id: str) -> str | None:
    """The patient (`Patient/<id>`) the Consent was first written for; None before its first write."""
    return (
        await conn.execute(
            select(consent_subjects.c.patient_ref).where(consent_subjects.c.consent_id == consent_id)
        )
    ).scalar_one_or_none()


async def _remember_subject(conn: AsyncConnection, consent_id: str, ref: str) -> None:
    if await consent_subject(conn, consent_id) is None:
        await conn.execute(insert(consent_subjects).values(consent_id=consent_id, patient_ref=ref))


def _patient_index(pid: str) -> Any:
    return and_(
        idx_reference.c.res_type == "Consent",
        idx_reference.c.param == "patient",
        idx_reference.c.target_type == "Patient",
        idx_reference.c.target_id == pid,
    )


async def current_consents(conn: AsyncConnection, patient_ref: str) -> list[dict[str, Any]]:
    """The current version of each (not deleted) Consent about the patient, as stored."""
    rows = (
        await conn.execute(
            select(resources.c.content)
            .join(idx_reference, idx_reference.c.res_pk == resources.c.pk)
            .where(_patient_index(patient_id(patient_ref)), resources.c.deleted.is_(False))
            .order_by(resources.c.pk)
        )
    ).all()
    return [orjson.loads(row.content) for row in rows]


async def consent_versions(conn: AsyncConnection, patient_ref: str) -> list[Version]:
    """Every stored version of every Consent about the patient, deleted ones included, oldest first."""
    ref = patient_reference(patient_ref)
    live = select(idx_reference.c.res_pk).where(_patient_index(patient_id(ref)))
    remembered = select(consent_subjects.c.consent_id).where(consent_subjects.c.patient_ref == ref)
    rows = (
        await conn.execute(
            select(
                resources.c.res_id,
                resource_versions.c.version_id,
                resource_versions.c.last_updated,
                resource_versions.c.deleted,
                resource_versions.c.content,
                resource_versions.c.method,
            )
            .join(resources, resources.c.pk == resource_versions.c.res_pk)
            .where(
                resources.c.res_type == "Consent",
                or_(resources.c.pk.in_(live), resources.c.res_id.in_(remembered)),
            )
            .order_by(resource_versions.c.last_updated, resource_versions.c.pk)
        )
    ).all()
    return [
        Version("Consent", r.res_id, r.version_id, r.last_updated, r.deleted, r.content, r.method)
        for r in rows
    ]
