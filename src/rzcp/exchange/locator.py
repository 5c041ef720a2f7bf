"""The patient locator: which members hold data for which patient, under which of their own ids.

Members announce (and withdraw) that they hold data for a patient, by BSN and their local patient id, with
`POST /fhir/Patient/$announce` and `POST /fhir/Patient/$withdraw` (rzcp.exchange.router), a Parameters body:

    {"resourceType": "Parameters", "parameter": [
        {"name": "identifier", "valueIdentifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn",
                                                   "value": "999911120"}},
        {"name": "patient", "valueReference": {"reference": "Patient/<the member's own id>"}}]}

The gateway keeps one regional Patient per BSN (a Patient resource in its own store, whose id consents,
tokens and audit records name) and the index from it to the members' local ids. A BSN is never stored in
plain text: `exchange_patients` holds its keyed hash for look-up and its encryption for display
(rzcp.exchange.secrets.BsnProtector). The regional Patient resource carries no BSN either; it is added to
the Patient when the gateway answers a search by BSN.

Plain functions over a connection; the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.bsn import BSN_SYSTEM, is_bsn_system, is_valid_bsn
from rzcp.auth.tables import members
from rzcp.errors import BadRequest
from rzcp.exchange.adapters import Member
from rzcp.exchange.directory import MEMBER_COLUMNS, Directory
from rzcp.exchange.secrets import BsnProtector
from rzcp.exchange.tables import endpoints, locations, patients
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.store.resources import ResourceStore, utcnow

#: The regional patient's own identifier system (its id at the gateway).
REGIONAL_SYSTEM = "https://rzcp.nl/fhir/NamingSystem/regional-patient"
_LOCAL_ID_MAX = 64


@dataclass(frozen=True)
class Announcement:
    bsn: str
    #: The member's own patient id; None in a withdrawal means "every local id of this BSN".
    local_id: str | None


@dataclass(frozen=True)
class Source:
    """A member that holds data for the patient, with its local id of the patient."""

    member: Member
    local_id: str


def parse_announcement(body: Any, *, withdrawal: bool = False) -> Announcement:
    """The BSN and local patient id of a $announce / $withdraw Parameters body."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise BadRequest("the body must be a Parameters resource", code="invalid")
    bsn: str | None = None
    local: str | None = None
    parts = body.get("parameter") or []
    if not isinstance(parts, list) or not all(isinstance(part, Mapping) for part in parts):
        raise BadRequest("Parameters.parameter is a list of parameters", expression=("parameter",))
    for part in parts:
        name = part.get("name")
        if name not in ("identifier", "patient"):
            # a parameter the operation does not define is not ignored: the member meant something by it
            raise BadRequest(
                f"unknown parameter {str(name)[:64]!r}: this operation takes identifier and patient",
                code="not-supported",
                expression=("parameter",),
            )
        if (bsn if name == "identifier" else local) is not None:
            # one announcement is about one patient: which of two would the member mean? (found by a probe)
            raise BadRequest(f"parameter {name} is given more than once", code="value", expression=(name,))
        if name == "identifier":
            ident = part.get("valueIdentifier")
            system = ident.get("system") if isinstance(ident, Mapping) else None
            if not isinstance(system, str) or not is_bsn_system(system):
                raise BadRequest(f"identifier must be a BSN ({BSN_SYSTEM})", expression=("identifier",))
            bsn = str(ident.get("value") or "")  # type: ignore[union-attr]
        else:
            reference = part.get("valueReference")
            ref = (reference.get("reference") if isinstance(reference, Mapping) else None) or part.get(
                "valueString"
            )
            if not isinstance(ref, str):  # a list or an object would be stored as its Python spelling
                why = "patient is Patient/<your id>, as a reference or a string"
                raise BadRequest(why, expression=("patient",))
            local = ref.removeprefix("Patient/")
    if bsn is None or not is_valid_bsn(bsn):
        raise BadRequest("a valid BSN is required as parameter identifier", expression=("identifier",))
    if local is None and not withdrawal:
        raise BadRequest("the member's own patient id is required as parameter patient", code="required")
    if local is not None and not (0 < len(local) <= _LOCAL_ID_MAX and "/" not in local):
        raise BadRequest(f"{local!r} is not a patient id", expression=("patient",))
    return Announcement(bsn.zfill(9), local)


@dataclass(frozen=True)
class Locator:
    protector: BsnProtector

    async def find(self, conn: AsyncConnection, bsn: str) -> str | None:
        """The regional patient id for a BSN, or None when no member announced it."""
        digest = self.protector.lookup_hash(bsn)
        return await conn.scalar(select(patients.c.patient_id).where(patients.c.bsn_hash == digest))

    async def regional_patient(self, conn: AsyncConnection, search: SearchRegistry, bsn: str) -> str:
        """The regional patient id for a BSN, made (with its Patient resource) when there is none yet."""
        found = await self.find(conn, bsn)
        if found is not None:
            return found
        patient_id = str(uuid.uuid4())
        values = {
            "patient_id": patient_id,
            "bsn_hash": self.protector.lookup_hash(bsn),
            "bsn_sealed": self.protector.seal(bsn),
            "created_at": utcnow(),
        }
        make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        inserted = await conn.execute(
            make(patients).values(**values).on_conflict_do_nothing(index_elements=[patients.c.bsn_hash])
        )
        if inserted.rowcount == 0:  # another request made it first
            found = await self.find(conn, bsn)
            assert found is not None
            return found
        patient = {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": REGIONAL_SYSTEM, "value": patient_id}],
        }
        await ResourceStore(conn, search).create(patient, res_id=patient_id)
        return patient_id

    async def announce(
        self, conn: AsyncConnection, search: SearchRegistry, member_ura: str, bsn: str, local_id: str
    ) -> str:
        """Record that `member_ura` holds data for the BSN under `local_id`; returns the regional id."""
        patient_id = await self.regional_patient(conn, search, bsn)
        now = utcnow()
        make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = make(locations).values(
            patient_id=patient_id, member_ura=member_ura, local_id=local_id, announced_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[locations.c.member_ura, locations.c.local_id],
            set_={"patient_id": patient_id, "announced_at": now},
        )
        await conn.execute(statement)
        return patient_id

    async def withdraw(self, conn: AsyncConnection, member_ura: str, bsn: str, local_id: str | None) -> int:
        """Forget that the member holds data for the BSN (under `local_id`, or any); how many were kept."""
        patient_id = await self.find(conn, bsn)
        if patient_id is None:
            return 0
        where = and_(locations.c.member_ura == member_ura, locations.c.patient_id == patient_id)
        if local_id is not None:
            where = and_(where, locations.c.local_id == local_id)
        return (await conn.execute(delete(locations).where(where))).rowcount

    async def sources(self, conn: AsyncConnection, directory: Directory, patient_id: str) -> list[Source]:
        """The active members that announced the patient, with their local ids, by URA."""
        rows = await conn.execute(_SOURCES, {"patient_id": patient_id})
        return [Source(directory.from_row(row), row.local_id) for row in rows]

    async def sources_with(
        self,
        conn: AsyncConnection,
        directory: Directory,
        patient_id: str,
        statement: Select[Any],
        **params: Any,
    ) -> tuple[list[Source], Row[Any] | None]:
        """`sources` asked by `with_columns(...)`'s statement: the sources and the first row, whose added
        columns carry what the caller asked beside them (None when the patient has no source)."""
        rows = (await conn.execute(statement, {"patient_id": patient_id, **params})).all()
        return [Source(directory.from_row(row), row.local_id) for row in rows], (rows[0] if rows else None)

    @staticmethod
    def with_columns(*columns: Any) -> Select[Any]:
        """The sources' statement with scalar columns added (built once by the caller, at import)."""
        return _SOURCES.add_columns(*columns)

    async def bsn_of(self, conn: AsyncConnection, patient_id: str) -> str | None:
        sealed = await conn.scalar(select(patients.c.bsn_sealed).where(patients.c.patient_id == patient_id))
        return self.protector.reveal(sealed) if sealed else None

    async def rekey(self, conn: AsyncConnection, old: BsnProtector) -> int:
        """Re-hash and re-encrypt every BSN after the secret changed (`old` holds the previous one)."""
        rows = (await conn.execute(select(patients.c.patient_id, patients.c.bsn_sealed))).all()
        for row in rows:
            bsn = old.reveal(row.bsn_sealed)
            await conn.execute(
                update(patients)
                .where(patients.c.patient_id == row.patient_id)
                .values(bsn_hash=self.protector.lookup_hash(bsn), bsn_sealed=self.protector.seal(bsn))
            )
        return len(rows)


#: Asked on every pull; built once so that only its execution costs.
_SOURCES = (
    select(*MEMBER_COLUMNS, locations.c.local_id)
    .select_from(locations.join(members).outerjoin(endpoints, endpoints.c.ura == members.c.ura))
    .where(locations.c.patient_id == bindparam("patient_id"), members.c.status == "active")
    .order_by(members.c.ura, locations.c.local_id)
)
