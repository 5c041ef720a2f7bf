"""Reading the audit trail: the auditors' search, and the patient's own access log in plain words.

Plain async functions over the indexed columns; the FHIR layer wraps a page in a searchset Bundle (the
events are AuditEvent dicts) and owns the HTTP route, the auditor role check and the patient's token. Both
read newest first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Select, false, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.events import CONSOLE, EMERGENCY_PURPOSE, ENTITY_TYPE, RESOURCE_TYPES, RZCP, first_code
from rzcp.audit.moments import LOCAL
from rzcp.audit.tables import audit_events as t
from rzcp.auth.context import PRACTITIONER_REGISTERS
from rzcp.auth.tables import members
from rzcp.store.db import Database

MAX_COUNT = 1000


@dataclass(frozen=True)
class AuditPage:
    #: How many records match in all; with `total_limit`, at most that many (see `more_than_total`).
    total: int
    offset: int
    count: int
    #: The AuditEvents of this page, newest first.
    events: list[dict[str, Any]]
    #: The chain seq of each event of this page (for a keyset `before_seq` to the next page).
    seqs: list[int] = field(default_factory=list)
    #: True when the count stopped at `total_limit`: more than `total` records match.
    more_than_total: bool = False


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


#: A criterion given several values (any matches): the column and the values.
Choice = tuple[Any, list[Any]]


def _filters(
    *,
    patient: str | None,
    agent: str | Sequence[str] | None,
    member: str | None,
    client: str | None,
    since: datetime | None,
    until: datetime | None,
    purpose: str | None,
    outcome: str | Sequence[str] | None,
    emergency: bool | None,
    correlation_id: str | None,
    subtype: str | None,
) -> tuple[list[ColumnElement[bool]], list[Choice]]:
    """The criteria as conditions, and apart from them those given several values: how a choice is
    best read differs between counting (one IN) and paging (`_newest`)."""
    where: list[ColumnElement[bool]] = []
    choices: list[Choice] = []
    if patient is not None:
        where.append(t.c.patient == (patient if "/" in patient else f"Patient/{patient}"))
    if isinstance(agent, str):
        where.append(t.c.agent == agent)
    elif agent is not None:
        choices.append((t.c.agent, list(dict.fromkeys(agent))))
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
    if isinstance(outcome, str):
        where.append(t.c.outcome == outcome)
    elif outcome is not None:
        choices.append((t.c.outcome, list(dict.fromkeys(outcome))))
    if emergency is not None:
        where.append(t.c.emergency == emergency)
    if correlation_id is not None:
        where.append(t.c.correlation_id == correlation_id)
    if subtype is not None:
        where.append(t.c.subtype == subtype)
    return where, choices


def _matching(where: list[ColumnElement[bool]], choices: list[Choice]) -> list[ColumnElement[bool]]:
    return [*where, *(column.in_(values) for column, values in choices)]


def _newest(
    where: list[ColumnElement[bool]], choices: list[Choice], *, offset: int, limit: int
) -> Select[Any]:
    """(seq, content) of the matching records, newest first.

    A choice of several values is read as one index-ordered read per value (the (column, seq) indexes),
    merged: a single read with IN cannot walk such an index in seq order, so the planner walked the whole
    trail backwards instead (PostgreSQL: 40,000 rows at a million records to find a practitioner's 21
    under three identifiers, bench_admin_audit.py). Each value's read stops at offset + limit rows."""
    combos = list(product(*([column == value for value in values] for column, values in choices)))
    if len(combos) == 1:
        return (
            select(t.c.seq, t.c.content)
            .where(*where, *combos[0])
            .order_by(t.c.seq.desc())
            .offset(offset)
            .limit(limit)
        )
    if not combos:  # a choice among no values: nothing matches
        return select(t.c.seq, t.c.content).where(false())
    reads = [
        select(t.c.seq).where(*where, *combo).order_by(t.c.seq.desc()).limit(offset + limit).subquery()
        for combo in combos
    ]
    merged = union_all(*(select(read.c.seq) for read in reads)).subquery()
    page = select(merged.c.seq).order_by(merged.c.seq.desc()).offset(offset).limit(limit).subquery()
    return select(t.c.seq, t.c.content).join(page, page.c.seq == t.c.seq).order_by(t.c.seq.desc())


async def _count(conn: AsyncConnection, where: list[ColumnElement[bool]], limit: int | None) -> int:
    """Every match, or with a limit, the matches up to one past it (what grows with the trail stops)."""
    matching = select(t.c.seq).where(*where)
    if limit is not None:
        matching = matching.limit(limit + 1)
    return (await conn.execute(select(func.count()).select_from(matching.subquery()))).scalar_one()


async def search_events(
    db: Database,
    *,
    patient: str | None = None,
    agent: str | Sequence[str] | None = None,
    member: str | None = None,
    client: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    purpose: str | None = None,
    outcome: str | Sequence[str] | None = None,
    emergency: bool | None = None,
    correlation_id: str | None = None,
    subtype: str | None = None,
    offset: int = 0,
    count: int = 20,
    before_seq: int | None = None,
    total_limit: int | None = None,
) -> AuditPage:
    """AuditEvents matching every given criterion, newest first.

    patient: `Patient/<id>` or the bare id; agent: the practitioner as `system|value` (or `Patient/<id>`),
    or several of them (any matches); member: URA; since (inclusive) / until (exclusive): datetimes,
    naive = UTC; purpose: v3 code; outcome: 0/4/8/12 or several; emergency: break-the-glass or not.
    `before_seq` pages by the chain's order instead of an offset (the console's `next`): a deep page costs
    what the first one does. `total` counts every match, whatever the page; with `total_limit` it counts
    no further than that (`more_than_total` then says there are more), so a search that matches a large
    part of a long trail costs what a narrow one does."""
    offset, count = max(offset, 0), min(max(count, 0), MAX_COUNT)
    where, choices = _filters(
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
        total = await _count(conn, _matching(where, choices), total_limit)
        rows = []
        if count:
            page = where if before_seq is None else [*where, t.c.seq < before_seq]
            rows = (await conn.execute(_newest(page, choices, offset=offset, limit=count))).all()
    more = total_limit is not None and total > total_limit
    return AuditPage(
        min(total, total_limit) if total_limit is not None else total,
        offset,
        count,
        [orjson.loads(row.content) for row in rows],
        [row.seq for row in rows],
        more,
    )


async def iter_events(
    db: Database, *, chunk: int = 1000, **criteria: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every AuditEvent matching `criteria` (as `search_events` takes them), newest first, a chunk at a
    time: each chunk is one indexed read after the last seq of the one before, so an export of the whole
    trail holds one chunk in memory and no read transaction open between chunks."""
    where, choices = _filters(**{name: criteria.get(name) for name in _FILTER_NAMES})
    before: int | None = None
    while True:
        page = where if before is None else [*where, t.c.seq < before]
        async with db.read() as conn:
            rows = (await conn.execute(_newest(page, choices, offset=0, limit=chunk))).all()
        if not rows:
            return
        yield [orjson.loads(row.content) for row in rows]
        if len(rows) < chunk:
            return
        before = rows[-1].seq


_FILTER_NAMES = (
    "patient", "agent", "member", "client", "since", "until", "purpose", "outcome", "emergency",
    "correlation_id", "subtype",
)  # fmt: skip


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
    "HRESCH": ("voor onderzoek", "for research"),
    "HPAYMT": ("voor betaling", "for payment"),
    "HOPERAT": ("voor de bedrijfsvoering", "for the organisation's operations"),
    "PUBHLTH": ("voor de volksgezondheid", "for public health"),
}
#: A purpose the words above do not know: said as such, with its code, never as the bare code alone.
_OTHER_PURPOSE = ("voor een ander doel ({code})", "for another purpose ({code})")

_MONTHS_NL = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)  # fmt: skip


#: The operations of a message push, in a patient's words (Dutch, English).
DELIVERY = "process-message-delivery"
_MESSAGE_WORDS = {
    "process-message": ("stuurde een bericht over u ({data})", "sent a message about you ({data})"),
    DELIVERY: ("ontving een bericht over u", "received a message about you"),
}
#: The same when the gateway refused the message or could not deliver it: nothing reached anyone.
_MESSAGE_REFUSED_WORDS = {
    "process-message": (
        "probeerde een bericht over u te sturen; dat is geweigerd",
        "tried to send a message about you; it was refused",
    ),
    DELIVERY: ("kreeg een bericht over u niet bezorgd", "could not be given a message about you"),
}
_DELIVERY_WHY = ("een bericht tussen zorgverleners", "a message between care providers")
#: A member's announcement to the patient locator (no data of the patient's leaves it).
_LOCATOR_WORDS = {
    "announce": ("meldde dat het gegevens van u heeft", "registered that it holds data about you"),
    "withdraw": (
        "meldde dat het geen gegevens van u meer heeft",
        "registered that it no longer holds data about you",
    ),
}
_LOCATOR_REFUSED_WORDS = (
    "probeerde iets over u te melden bij de verwijsindex; dat is geweigerd",
    "tried to register something about you in the index; it was refused",
)
#: Who asked, when the request came without a valid token: nobody could be identified.
_UNIDENTIFIED = ("iemand die zich niet kon aanmelden", "someone who could not sign in")
_LOCATOR_WHY = ("voor de regionale verwijsindex", "for the region's index of who holds your data")
#: The region's auditors reading the trail about this patient (the console files it under the patient).
_CONSOLE_WHO = ("een toezichthouder van de regio", "an auditor of the region")
_CONSOLE_WHAT = ("bekeek het logboek van wie uw gegevens inzag", "read the log of who looked at your data")
_CONSOLE_WHY = ("voor het toezicht op de uitwisseling", "to oversee the exchange")
#: Resource types that carry a message, not the patient's data.
_ENVELOPE = frozenset({"Bundle", "MessageHeader"})


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


def _practitioner_words(who: Mapping[str, Any], en: bool) -> str | None:
    """ "zorgverlener met UZI-nummer 900012345" when no name was passed on: NEN 7513 names the person, and
    the number is what the member's system gave."""
    ident = who.get("identifier") or {}
    if not ident.get("value"):
        return None
    register = PRACTITIONER_REGISTERS.get(ident.get("system", ""))
    if register is None:
        return f"care provider no. {ident['value']}" if en else f"zorgverlener nr. {ident['value']}"
    return (
        f"care provider with {register} number {ident['value']}"
        if en
        else f"zorgverlener met {register}-nummer {ident['value']}"
    )


def describe_access(
    event: Mapping[str, Any], lang: Lang = "nl", member_names: Mapping[str, str] | None = None
) -> AccessEntry:
    """The AuditEvent as one entry of a patient's access log, in Dutch or English; `member_names` (URA to
    name) names an organisation the record knows by its URA only."""
    en = lang == "en"
    pick = 1 if en else 0
    when = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00")).astimezone(LOCAL)
    who = role = organisation = None
    for agent in event.get("agent", ()):
        kind = first_code(agent.get("type"))
        actor = agent.get("who") or {}
        if kind == "IRCP":
            who = agent.get("name") or actor.get("display") or _practitioner_words(actor, en)
            roles = agent.get("role") or ()
            role = roles[0].get("text") if roles else None
        elif kind == "PROV":
            ura = (actor.get("identifier") or {}).get("value")
            name = actor.get("display") or (member_names or {}).get(ura or "")
            organisation = name or f"{'organisation with URA' if en else 'organisatie met URA'} {ura}"
    counts: dict[str, int] = {}
    reason = operation = None
    permitted = denied = 0
    for entity in event.get("entity", ()):
        etype = entity.get("type") or {}
        details = {d.get("type"): d.get("valueString") for d in entity.get("detail") or ()}
        if etype.get("system") == ENTITY_TYPE and first_code(entity.get("role")) == "4":
            operation = entity.get("description") or operation
        if etype.get("system") == RESOURCE_TYPES and entity.get("description") == "returned":
            counts[etype["code"]] = counts.get(etype["code"], 0) + int(details.get("count") or 0)
        elif etype.get("system") == RZCP and etype.get("code") == "emergency":
            reason = entity.get("description") or None
        elif etype.get("system") == RZCP and etype.get("code") == "consent-decision":
            if details.get("decision") == "permit":
                permitted += 1
            else:
                denied += 1
        elif etype.get("system") == ENTITY_TYPE and first_code(entity.get("role")) == "24" and not counts:
            for d in entity.get("detail") or ():
                if d.get("type") == "resourceType":
                    counts.setdefault(d.get("valueString"), 0)
    purposes = event.get("purposeOfEvent") or ()
    purpose = first_code(purposes[0]) if purposes else None
    succeeded = event.get("outcome") == "0"
    # An emergency access is one that took place; a refused attempt says so in its text, not as a "yes".
    emergency = purpose == EMERGENCY_PURPOSE and succeeded
    emergency_refused = purpose == EMERGENCY_PURPOSE and not succeeded
    why = ""
    if purpose:
        why = PURPOSE_WORDS.get(purpose, _OTHER_PURPOSE)[pick].format(code=purpose)
    shared = succeeded and any(counts.values())
    if who is None and organisation is None and _unauthenticated(event):
        who = _UNIDENTIFIED[pick]
    parts = []
    for rtype, n in counts.items():
        if rtype in _ENVELOPE:
            continue
        words = TYPE_WORDS.get(rtype, (rtype, rtype))[pick]
        parts.append(f"{words} ({n})" if n else words)
    data = ", ".join(parts) or ("your data" if en else "uw gegevens")
    message = (_MESSAGE_WORDS if succeeded else _MESSAGE_REFUSED_WORDS).get(operation or "")
    if message is not None:
        # a message pushed to another member, and its delivery by the region's exchange
        what = message[pick].format(data=data)
        why = why or _DELIVERY_WHY[pick]
    elif operation in _LOCATOR_WORDS:
        message = _LOCATOR_WORDS[operation] if succeeded else _LOCATOR_REFUSED_WORDS
        what, why = message[pick], _LOCATOR_WHY[pick]
    elif (event.get("type") or {}).get("code") == CONSOLE:
        message = _CONSOLE_WHAT
        what, why, who = _CONSOLE_WHAT[pick], _CONSOLE_WHY[pick], who or _CONSOLE_WHO[pick]
    if en:
        if message is None:
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
        elif emergency_refused:
            text_ += " It was asked for as an emergency access, and refused."
    else:
        if message is None:
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
        elif emergency_refused:
            text_ += " Het werd gevraagd als inzage in een noodsituatie, en geweigerd."
    return AccessEntry(when, who, role, organisation, what, why, emergency, reason, shared, text_)


def _unauthenticated(event: dict[str, Any]) -> bool:
    """The request came with no valid token: its requesting system is recorded as unauthenticated."""
    return any(
        agent.get("requestor") and (agent.get("who") or {}).get("display") == "unauthenticated"
        for agent in event.get("agent", ())
    )


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
        names = {row.ura: row.name for row in await conn.execute(select(members.c.ura, members.c.name))}
    return total, [describe_access(orjson.loads(row.content), lang, names) for row in rows]
