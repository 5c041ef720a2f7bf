"""Reading the audit trail: the auditors' search, and the patient's own access log in plain words.

Plain async functions over the indexed columns; the FHIR layer wraps a page in a searchset Bundle (the
events are AuditEvent dicts) and owns the HTTP route, the auditor role check and the patient's token. Both
read newest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import ColumnElement, func, select

from rzcp.audit.events import EMERGENCY_PURPOSE, ENTITY_TYPE, RESOURCE_TYPES, RZCP
from rzcp.audit.tables import audit_events as t
from rzcp.store.db import Database

try:
    LOCAL = ZoneInfo("Europe/Amsterdam")
except ZoneInfoNotFoundError:  # pragma: no cover - a system without tzdata
    LOCAL = ZoneInfo("UTC")

MAX_COUNT = 1000


@dataclass(frozen=True)
class AuditPage:
    #: How many records match in all.
    total: int
    offset: int
    count: int
    #: The AuditEvents of this page, newest first.
    events: list[dict[str, Any]]


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _filters(
    *,
    patient: str | None,
    agent: str | None,
    member: str | None,
    client: str | None,
    since: datetime | None,
    until: datetime | None,
    purpose: str | None,
    outcome: str | None,
    emergency: bool | None,
    correlation_id: str | None,
    subtype: str | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if patient is not None:
        where.append(t.c.patient == (patient if "/" in patient else f"Patient/{patient}"))
    if agent is not None:
        where.append(t.c.agent == agent)
    if member is not None:
        where.append(t.c.member_ura == member)
    if client is not None:
        where.append(t.c.client_id == client)
    if since is not None:
        where.append(t.c.recorded >= _naive_utc(since))
    if until is not None:
        where.append(t.c.recorded < _naive_utc(until))
    if purpose is not None:
        where.append(t.c.purpose == purpose)
    if outcome is not None:
        where.append(t.c.outcome == outcome)
    if emergency is not None:
        where.append(t.c.emergency == emergency)
    if correlation_id is not None:
        where.append(t.c.correlation_id == correlation_id)
    if subtype is not None:
        where.append(t.c.subtype == subtype)
    return where


async def search_events(
    db: Database,
    *,
    patient: str | None = None,
    agent: str | None = None,
    member: str | None = None,
    client: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    purpose: str | None = None,
    outcome: str | None = None,
    emergency: bool | None = None,
    correlation_id: str | None = None,
    subtype: str | None = None,
    offset: int = 0,
    count: int = 20,
) -> AuditPage:
    """AuditEvents matching every given criterion, newest first.

    patient: `Patient/<id>` or the bare id; agent: the practitioner as `system|value` (or `Patient/<id>`);
    member: URA; since (inclusive) / until (exclusive): datetimes, naive = UTC; purpose: v3 code;
    outcome: 0/4/8/12; emergency: break-the-glass or not."""
    offset, count = max(offset, 0), min(max(count, 0), MAX_COUNT)
    where = _filters(
        patient=patient,
        agent=agent,
        member=member,
        client=client,
        since=since,
        until=until,
        purpose=purpose,
        outcome=outcome,
        emergency=emergency,
        correlation_id=correlation_id,
        subtype=subtype,
    )
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(t).where(*where))).scalar_one()
        rows = []
        if count:
            rows = (
                await conn.execute(
                    select(t.c.content).where(*where).order_by(t.c.seq.desc()).offset(offset).limit(count)
                )
            ).all()
    return AuditPage(total, offset, count, [orjson.loads(row.content) for row in rows])


# --- the patient's access log ---------------------------------------------------------------------------

Lang = Literal["nl", "en"]

#: Resource types in words a patient understands.
TYPE_WORDS: dict[str, tuple[str, str]] = {
    "Patient": ("persoonsgegevens", "personal details"),
    "Observation": ("metingen en uitslagen", "measurements and test results"),
    "Condition": ("problemen en diagnoses", "problems and diagnoses"),
    "MedicationRequest": ("medicatievoorschriften", "prescriptions"),
    "MedicationStatement": ("medicatiegebruik", "medication use"),
    "MedicationDispense": ("verstrekte medicatie", "dispensed medication"),
    "MedicationAdministration": ("toegediende medicatie", "administered medication"),
    "Medication": ("medicatie", "medication"),
    "AllergyIntolerance": ("allergieën", "allergies"),
    "Encounter": ("contacten en opnames", "visits and admissions"),
    "Procedure": ("verrichtingen", "procedures"),
    "Immunization": ("vaccinaties", "vaccinations"),
    "DiagnosticReport": ("onderzoeksverslagen", "test reports"),
    "DocumentReference": ("documenten", "documents"),
    "CarePlan": ("behandelplannen", "care plans"),
    "Flag": ("waarschuwingen", "alerts"),
    "Appointment": ("afspraken", "appointments"),
    "Consent": ("toestemmingen", "consents"),
    "AuditEvent": ("inzagelog", "access log"),
    "Coverage": ("verzekeringsgegevens", "insurance details"),
}

PURPOSE_WORDS: dict[str, tuple[str, str]] = {
    "TREAT": ("voor uw behandeling", "for your treatment"),
    "ETREAT": ("in een noodsituatie", "in an emergency"),
    "COC": ("om uw zorg voort te zetten", "to continue your care"),
    "PATRQT": ("op uw verzoek", "at your request"),
    "FAMRQT": ("op verzoek van uw familie", "at your family's request"),
    "PWATRNY": ("op verzoek van uw gemachtigde", "at the request of your representative"),
}

_MONTHS_NL = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)  # fmt: skip


@dataclass(frozen=True)
class AccessEntry:
    """One time someone looked at (or asked for) the patient's data."""

    when: datetime
    who: str | None
    role: str | None
    organisation: str | None
    what: str
    why: str
    emergency: bool
    emergency_reason: str | None
    shared: bool
    text: str


def _code(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "code" in value:
            return value["code"]
        codings = value.get("coding") or ()
        return codings[0].get("code") if codings else None
    return None


def describe_access(event: Mapping[str, Any], lang: Lang = "nl") -> AccessEntry:
    """The AuditEvent as one entry of a patient's access log, in Dutch or English."""
    en = lang == "en"
    pick = 1 if en else 0
    when = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00")).astimezone(LOCAL)
    who = role = organisation = None
    for agent in event.get("agent", ()):
        kind = _code(agent.get("type"))
        if kind == "IRCP":
            who = agent.get("name") or (agent.get("who") or {}).get("display")
            roles = agent.get("role") or ()
            role = roles[0].get("text") if roles else None
        elif kind == "PROV":
            ident = (agent.get("who") or {}).get("identifier") or {}
            organisation = (agent.get("who") or {}).get("display") or (
                f"{'organisation with URA' if en else 'organisatie met URA'} {ident.get('value')}"
            )
    counts: dict[str, int] = {}
    reason = None
    permitted = denied = 0
    for entity in event.get("entity", ()):
        etype = entity.get("type") or {}
        details = {d.get("type"): d.get("valueString") for d in entity.get("detail") or ()}
        if etype.get("system") == RESOURCE_TYPES and entity.get("description") == "returned":
            counts[etype["code"]] = counts.get(etype["code"], 0) + int(details.get("count") or 0)
        elif etype.get("system") == RZCP and etype.get("code") == "emergency":
            reason = entity.get("description") or None
        elif etype.get("system") == RZCP and etype.get("code") == "consent-decision":
            if details.get("decision") == "permit":
                permitted += 1
            else:
                denied += 1
        elif etype.get("system") == ENTITY_TYPE and _code(entity.get("role")) == "24" and not counts:
            for d in entity.get("detail") or ():
                if d.get("type") == "resourceType":
                    counts.setdefault(d.get("valueString"), 0)
    purposes = event.get("purposeOfEvent") or ()
    purpose = _code(purposes[0]) if purposes else None
    emergency = purpose == EMERGENCY_PURPOSE
    why = PURPOSE_WORDS.get(purpose or "", (purpose or "", purpose or ""))[pick] if purpose else ""
    shared = event.get("outcome") == "0" and any(counts.values())
    parts = []
    for rtype, n in counts.items():
        words = TYPE_WORDS.get(rtype, (rtype, rtype))[pick]
        parts.append(f"{words} ({n})" if n else words)
    data = ", ".join(parts) or ("your data" if en else "uw gegevens")
    if en:
        what = f"viewed {data}" if shared else f"asked for {data}; nothing was shared"
        stamp = f"{when.day} {when.strftime('%B')} {when.year} at {when:%H:%M}"
        actor = who or "someone"
        text_ = (
            f"{stamp}: {actor}"
            + (f" ({role})" if role else "")
            + (f" at {organisation}" if organisation else "")
        )
        text_ += f" {what}" + (f", {why}" if why else "") + "."
        if denied and not shared:
            text_ += " Your consent settings did not allow it."
        if emergency:
            text_ += " This was an emergency access"
            text_ += (f" (reason given: {reason})" if reason else "") + "."
    else:
        what = f"bekeek {data}" if shared else f"vroeg {data} op; er is niets gedeeld"
        stamp = f"{when.day} {_MONTHS_NL[when.month - 1]} {when.year} om {when:%H:%M}"
        actor = who or "iemand"
        text_ = (
            f"{stamp}: {actor}"
            + (f" ({role})" if role else "")
            + (f" van {organisation}" if organisation else "")
        )
        text_ += f" {what}" + (f", {why}" if why else "") + "."
        if denied and not shared:
            text_ += " Uw toestemming stond dat niet toe."
        if emergency:
            text_ += (
                " Dit was een inzage in een noodsituatie"
                + (f" (opgegeven reden: {reason})" if reason else "")
                + "."
            )
    return AccessEntry(when, who, role, organisation, what, why, emergency, reason, shared, text_)


async def patient_access_log(
    db: Database, patient: str, *, lang: Lang = "nl", offset: int = 0, count: int = 50
) -> tuple[int, list[AccessEntry]]:
    """(total, entries): every time someone else touched this patient's data, newest first, in words.

    The patient's own actions (reading this log, changing a consent) are left out: they are in the trail,
    and an auditor sees them."""
    ref = patient if "/" in patient else f"Patient/{patient}"
    offset, count = max(offset, 0), min(max(count, 0), MAX_COUNT)
    where = [t.c.patient == ref, (t.c.agent.is_(None)) | (t.c.agent != ref)]
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(t).where(*where))).scalar_one()
        rows = (
            await conn.execute(
                select(t.c.content).where(*where).order_by(t.c.seq.desc()).offset(offset).limit(count)
            )
        ).all()
    return total, [describe_access(orjson.loads(row.content), lang) for row in rows]
