"""The auditors' view of the trail: the console's filters turned into `search_events` criteria (a BSN
through the locator's keyed hash, never kept or logged), each record as a one-line summary, one record with
the consent that decided it, and the export of a selection as NDJSON or CSV."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.admin.classify import classify
from rzcp.audit.csvfile import csv_line
from rzcp.audit.events import PERSON_SUBJECT, RESOURCE_TYPES, index_columns
from rzcp.audit.moments import region_moment
from rzcp.audit.search import iter_events, search_events
from rzcp.audit.tables import audit_events
from rzcp.auth.bsn import is_valid_bsn
from rzcp.auth.context import KNOWN_PURPOSES
from rzcp.auth.registry import is_ura
from rzcp.auth.tables import members
from rzcp.errors import BadRequest, Gone, NotFound
from rzcp.exchange.locator import Locator
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.store.db import Database
from rzcp.store.resources import ResourceStore

#: Where a practitioner's bare number is looked for: UZI, AGB and BIG registers.
PRACTITIONER_SYSTEMS = (
    "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers",
    "http://fhir.nl/fhir/NamingSystem/agb-z",
    "http://fhir.nl/fhir/NamingSystem/big",
)
OUTCOMES = {"success": "0", "denied": "4", "failed": ("8", "12")}
DEFAULT_COUNT, MAX_COUNT = 20, 200
#: How far a search counts its matches: past it the answer says "more than 1000", so a search that matches
#: much of a long trail (a member, a year) costs what a narrow one does (bench_admin_audit.py).
TOTAL_LIMIT = 1000
SUMMARY_FIELDS = (
    "id", "recorded", "kind", "action", "outcome", "member_ura", "member_name", "client_id",
    "practitioner", "patient", "purpose", "emergency", "what", "denied", "returned",
)  # fmt: skip
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: A search that can match nothing (a BSN no member announced).
NOTHING = "Patient/-"
#: The filters `criteria` reads (docs/admin-api.md), and with them what the search (a page size and the
#: previous answer's `next`) and the export (its format) take besides: any other name is refused
#: (rzcp.admin.params), since a filter left unread would widen the selection to the whole trail.
FILTERS = frozenset(
    {"bsn", "patient", "practitioner", "member", "since", "until", "purpose", "outcome", "emergency"}
)
SEARCH_PARAMS = FILTERS | {"count", "page"}
EXPORT_PARAMS = FILTERS | {"format"}


def moment(value: str, name: str, *, end: bool = False) -> datetime:
    """`region_moment`, a bad value a 400 naming the parameter."""
    try:
        return region_moment(value, end=end)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


async def criteria(conn: AsyncConnection, locator: Locator, params: Mapping[str, str]) -> dict[str, Any]:
    """search_events' criteria from the console's query parameters (FILTERS; the caller has refused any
    other name); a bad value is a 400."""
    found: dict[str, Any] = {}
    if bsn := params.get("bsn"):
        if not is_valid_bsn(bsn):
            raise BadRequest("bsn is not a valid BSN (11-check)")
        patient_id = await locator.find(conn, bsn)
        found["patient"] = f"Patient/{patient_id}" if patient_id else NOTHING
    if patient := params.get("patient"):
        ref = patient if patient.startswith("Patient/") else f"Patient/{patient}"
        if not _ID.fullmatch(ref.removeprefix("Patient/")):
            raise BadRequest("patient is Patient/<id>")
        if found.get("patient", ref) != ref:
            found["patient"] = NOTHING  # a BSN and a patient that are not the same person
        else:
            found["patient"] = ref
    if practitioner := params.get("practitioner"):
        if "|" in practitioner:
            found["agent"] = practitioner
        else:
            # a number under any register, or a staff member's login as the console shows it (`dev:chief`)
            systems = (*PRACTITIONER_SYSTEMS, PERSON_SUBJECT)
            found["agent"] = [f"{system}|{practitioner}" for system in systems]
    if member := params.get("member"):
        if not is_ura(member):
            raise BadRequest("member is a URA: 8 digits")
        found["member"] = member
    if since := params.get("since"):
        found["since"] = moment(since, "since")
    if until := params.get("until"):
        found["until"] = moment(until, "until", end=True)
    if purpose := params.get("purpose"):
        if purpose not in KNOWN_PURPOSES:  # `TRAET` found nothing, which read as "nothing happened"
            raise BadRequest(f"purpose {purpose!r} is not a PurposeOfUse code (TREAT, ETREAT ...)")
        found["purpose"] = purpose
    if outcome := params.get("outcome"):
        if outcome not in OUTCOMES:
            raise BadRequest("outcome is success, denied or failed")
        found["outcome"] = OUTCOMES[outcome]
    if emergency := params.get("emergency"):
        if emergency not in ("true", "false"):
            raise BadRequest("emergency is true or false")
        found["emergency"] = emergency == "true"
    return found


def page_size(value: str | None) -> int:
    if not value:
        return DEFAULT_COUNT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_COUNT:
        raise BadRequest(f"count is a number from 1 to {MAX_COUNT}")
    return int(value)


def seal_page(seq: int) -> str:
    return base64.urlsafe_b64encode(f"before:{seq}".encode()).decode().rstrip("=")


def open_page(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, seq = text.partition(":")
        if kind != "before" or not (seq.isascii() and seq.isdigit()):
            raise ValueError(token)
        return int(seq)
    except ValueError:
        raise BadRequest("page is not a page of this search: use the `next` of the previous answer") from None


async def member_names(conn: AsyncConnection, uras: set[str]) -> dict[str, str]:
    if not uras:
        return {}
    rows = await conn.execute(select(members.c.ura, members.c.name).where(members.c.ura.in_(uras)))
    return {row.ura: row.name for row in rows}


def summary(event: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    columns = index_columns(event)
    seen = classify(event)
    agent = columns["agent"]
    if agent and agent.startswith(f"{PERSON_SUBJECT}|"):
        agent = agent.split("|", 1)[1]
    elif agent and agent.startswith("Patient/"):
        agent = None
    member = columns["member_ura"]
    return {
        "id": event["id"],
        "recorded": event["recorded"],
        "kind": seen.kind,
        "action": event.get("action"),
        "outcome": seen.outcome,
        "member_ura": member,
        "member_name": names.get(member) if member else None,
        "client_id": columns["client_id"],
        "practitioner": agent,
        "patient": columns["patient"],
        "purpose": columns["purpose"],
        "emergency": seen.emergency,
        "what": seen.what,
        # a pull every consent decision refused answers 200 with nothing in it: its outcome is success,
        # which read as a disclosure (an administrator's walkthrough); these say what happened
        "denied": seen.denied,
        "returned": seen.returned,
    }


async def summaries(db: Database, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    uras = {m for m in (index_columns(e)["member_ura"] for e in events) if m}
    async with db.read() as conn:
        names = await member_names(conn, uras)
    return [summary(event, names) for event in events]


async def search(db: Database, found: dict[str, Any], *, count: int, page: str | None) -> dict[str, Any]:
    """One page, newest first; one record more is read to know whether there is a next page. `total` is
    exact up to TOTAL_LIMIT; past it, `more_than_total` is true and `total` is TOTAL_LIMIT."""
    before = open_page(page) if page else None
    result = await search_events(db, **found, count=count + 1, before_seq=before, total_limit=TOTAL_LIMIT)
    events, seqs = result.events[:count], result.seqs[:count]
    more = len(result.events) > count
    return {
        "total": result.total,
        "more_than_total": result.more_than_total,
        "events": await summaries(db, events),
        "next": seal_page(seqs[-1]) if more else None,
    }


async def read_event(conn: AsyncConnection, event_id: str) -> dict[str, Any]:
    if not _ID.fullmatch(event_id):
        raise BadRequest("not an audit event id")
    content = await conn.scalar(select(audit_events.c.content).where(audit_events.c.event_id == event_id))
    if content is None:
        raise NotFound(f"no audit event {event_id}")
    return orjson.loads(content)


async def event_detail(db: Database, search_registry: SearchRegistry, event_id: str) -> dict[str, Any]:
    """The summary, the full AuditEvent, the first deciding Consent (as the version that decided) and the
    decisions: each with its member (by name), kind of data, outcome and what decided it (the consents,
    or the region's rule, such as no consent at all), and which of them the Consent shown decided. An
    auditor once read the one consent shown (a GGZ shield) as the reason for every refusal of a pull,
    three of which had no consent at all."""
    async with db.read() as conn:
        event = await read_event(conn, event_id)
        decisions, consent_refs = _decisions(event)
        sources = {d["source"] for d in decisions if d.get("source")}
        names = await member_names(conn, sources | {m for m in [index_columns(event)["member_ura"]] if m})
        consent, shown = None, None
        for ref in consent_refs:
            _, cid, _, version = ref.split("/")
            if not (version.isascii() and version.isdigit()):
                continue
            try:
                stored = await ResourceStore(conn, search_registry).vread("Consent", cid, int(version))
            except (NotFound, Gone):
                continue
            consent, shown = orjson.loads(stored.content), ref
            break
    decision = None
    if decisions:
        permit = any(d["decision"] == "permit" for d in decisions)
        items = [
            {
                "decision": d.get("decision", "deny"),
                "data_class": d.get("dataClass"),
                "source": d.get("source"),
                "source_name": names.get(d.get("source") or ""),
                "consents": d["consent"].split(", ") if d.get("consent") else [],
                "rule": d.get("rule"),
            }
            for d in decisions
        ]
        decision = {
            "decision": "permit" if permit else "deny",
            "reason": "; ".join(_reason(d) for d in decisions),
            "items": items,
            "by_shown_consent": [i for i, item in enumerate(items) if shown in item["consents"]],
        }
    return {"summary": summary(event, names), "event": event, "consent": consent, "decision": decision}


def _decisions(event: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    decisions: list[dict[str, str]] = []
    refs: list[str] = []
    for entity in event.get("entity") or ():
        etype = entity.get("type") or {}
        if etype.get("code") == "consent-decision":
            detail: dict[str, str] = {}
            for d in entity.get("detail") or ():
                key = d.get("type")
                if key == "consent":
                    detail["consent"] = ", ".join(filter(None, [detail.get("consent"), d.get("valueString")]))
                elif key:
                    detail[key] = d.get("valueString") or ""
            decisions.append(detail)
        elif etype.get("system") == RESOURCE_TYPES and etype.get("code") == "Consent":
            ref = (entity.get("what") or {}).get("reference") or ""
            if ref.count("/") == 3:
                refs.append(ref)
    return decisions, refs


def _reason(decision: Mapping[str, str]) -> str:
    words = decision.get("decision", "deny")
    if decision.get("dataClass"):
        words += f" {decision['dataClass']}"
    if decision.get("source"):
        words += f" from {decision['source']}"
    basis = decision.get("consent") or decision.get("rule")
    return f"{words}: {basis}" if basis else words


async def export(db: Database, found: dict[str, Any], fmt: str) -> AsyncIterator[bytes]:
    """The matching records, newest first: NDJSON (one AuditEvent a line) or CSV (the summary columns)."""
    if fmt == "csv":
        yield csv_line(SUMMARY_FIELDS)
    async for chunk in iter_events(db, **found):
        if fmt == "ndjson":
            yield b"".join(orjson.dumps(event) + b"\n" for event in chunk)
        else:
            rows = await summaries(db, chunk)
            yield b"".join(csv_line([_cell(row[name]) for name in SUMMARY_FIELDS]) for row in rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
