"""Message push: a member's FHIR message Bundle, checked to be about one patient and from the member that
sends it (rzcp.exchange.message) and against the patient's consent, stored durably before the sender hears
"accepted", then delivered by a worker (rzcp.exchange.worker).

    message, report = await accept_message(exchange, conn, sender, bundle)   # in the request's write txn
    rows = await claim(conn, worker_token, lease_seconds=30, limit=10)       # by a worker
    await finish(conn, row.id, worker_token, attempt_result)                 # after the delivery attempt

The claim goes through the database, so several gateway processes deliver each message once and a message
whose worker died is taken over when its lease expires:
- PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` picks due messages no other worker is claiming right now,
  and the same transaction stamps them with the worker's claim token and a lease;
- SQLite: one `UPDATE ... WHERE id IN (SELECT due ...)` inside `BEGIN IMMEDIATE` (the database's write
  lock), so two processes cannot claim the same row.
A message is due when it is pending, its next attempt has come and nobody holds an unexpired lease on it.
`finish` writes the result only where the row still carries the worker's claim token (a worker that lost
its lease writes nothing). Every attempt sends the same idempotency key (the message's id), and receivers
keep a message once per key: delivery is at least once, processing once.

Statuses: pending (waiting or being delivered), delivered, rejected (the receiver refused it for good),
failed (no success after `outbox_max_attempts` attempts, or the receiver is no longer an active member).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.events import Decision as AuditDecision
from rzcp.consent.cache import rules_for
from rzcp.consent.engine import decide
from rzcp.consent.model import Request
from rzcp.consent.policy import Policy
from rzcp.consent.service import MalformedResource, contained_parts, request_for_resource
from rzcp.errors import BadRequest, Conflict, Forbidden, InvalidResource, NotFound, RzcpError
from rzcp.exchange.adapters import DeliveryOutcome, DeliveryStatus, Member
from rzcp.exchange.directory import URA_SYSTEM
from rzcp.exchange.message import (
    MessageIndex,
    check_flat,
    check_sender,
    endpoint_owner,
    is_server_address,
    message_bsn,
)
from rzcp.exchange.pull import Requester, TypeDecision, type_decision
from rzcp.exchange.service import Exchange
from rzcp.exchange.tables import outbox
from rzcp.fhir.deps import is_fhir_id
from rzcp.store.resources import instant, utcnow

#: Resources in a message that describe who and how, not the patient's data: a message needs more than
#: these, and consent decides what they contain, not themselves (`_to_decide`).
ADMINISTRATIVE_TYPES = frozenset(
    {"MessageHeader", "Patient", "Organization", "Practitioner", "PractitionerRole", "Endpoint", "Provenance"}
)
Status = Literal["pending", "delivered", "rejected", "failed"]


@dataclass
class PushReport:
    """What the audit records of one push: accepted or refused, and on what basis."""

    message_id: str | None
    sender_ura: str
    receiver_ura: str | None
    patient: str | None
    #: The consent decision per resource type carried (receiver asks, sender holds).
    decisions: list[TypeDecision] = field(default_factory=list)
    accepted: bool = False
    #: True when the sender repeated a message already accepted (same Bundle.id).
    repeated: bool = False
    status: int = 202
    #: Resource type -> count carried in the message (never content).
    carried: dict[str, int] = field(default_factory=dict)
    #: Why the push was refused, for the audit's outcome description.
    refusal: str | None = None

    def audit_decisions(self) -> tuple[AuditDecision, ...]:
        return tuple(d.for_audit(self.sender_ura) for d in self.decisions)


@dataclass
class DeliveryReport:
    """One delivery attempt by a worker, for the audit."""

    message_id: str
    sender_ura: str
    receiver_ura: str
    patient: str | None
    attempt: int
    #: delivered | retry | rejected | failed
    result: Literal["delivered", "retry", "rejected", "failed"]
    http_status: int | None
    detail: str
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    id: str
    sender_ura: str
    receiver_ura: str
    patient_id: str | None
    status: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    http_status: int | None
    detail: str | None
    content: dict[str, Any] | None = None
    purpose: str | None = None


def _receiver(header: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(URA, endpoint URL) named by the MessageHeader's one destination."""
    destinations = header.get("destination") or []
    if not isinstance(destinations, list) or len(destinations) != 1:
        raise BadRequest(
            "MessageHeader.destination must name exactly one member",
            expression=("MessageHeader.destination",),
        )
    destination = destinations[0] if isinstance(destinations[0], Mapping) else {}
    identifier = (destination.get("receiver") or {}).get("identifier") or {}
    ura = identifier.get("value") if identifier.get("system") == URA_SYSTEM else None
    return ura, destination.get("endpoint")


def _index(bundle: Any) -> MessageIndex:
    """The message's entries; BadRequest when it is not a message Bundle led by its one MessageHeader."""
    if (
        not isinstance(bundle, Mapping)
        or bundle.get("resourceType") != "Bundle"
        or bundle.get("type") != "message"
    ):
        raise BadRequest("$process-message takes a Bundle of type message")
    bundle_id = bundle.get("id")
    if bundle_id is not None and not (isinstance(bundle_id, str) and is_fhir_id(bundle_id)):
        # the message's key: cut or mangled, two messages could share it
        raise InvalidResource(
            "Bundle.id is a FHIR id: 1 to 64 letters, digits, '-' and '.'", expression=("Bundle.id",)
        )
    entries = bundle.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
            # R4's bdl-5: an entry of a message carries a resource; one without is nothing to decide on
            raise InvalidResource(
                "every entry of a message carries a resource", expression=(f"Bundle.entry[{i}].resource",)
            )
    index = MessageIndex(bundle)
    if not index.entries or index.entries[0].get("resourceType") != "MessageHeader":
        raise BadRequest("a message Bundle starts with its MessageHeader", expression=("Bundle.entry[0]",))
    if sum(r.get("resourceType") == "MessageHeader" for r in index.entries) > 1:
        # a second header could name another sender or receiver, and a receiver might read that one
        raise BadRequest("a message Bundle has one MessageHeader", expression=("Bundle.entry",))
    return index


def _receiver_member(header: Mapping[str, Any], active: Mapping[str, Member], sender: Requester) -> Member:
    ura, endpoint = _receiver(header)
    at = endpoint_owner(endpoint, active)
    if ura and at and at != ura:
        # the message goes to the URA's registered address, and would arrive saying it was for another
        raise BadRequest(
            f"MessageHeader.destination names member {ura} by its URA and member {at} by its endpoint: "
            "name one receiver",
            expression=("MessageHeader.destination",),
        )
    receiver = active.get(ura or at or "")
    if receiver is None:
        raise BadRequest(
            "the message's destination is not an active member of the region",
            expression=("MessageHeader.destination",),
        )
    if ura and is_server_address(endpoint) and endpoint_owner(endpoint, {ura: receiver}) != ura:
        # a server that is not the receiver's (a suspended member's, or none of the region's): the message
        # would arrive naming another place as where it was sent (a review)
        raise BadRequest(
            f"MessageHeader.destination.endpoint is not the address of member {ura} ({receiver.base_url})",
            expression=("MessageHeader.destination",),
        )
    if receiver.ura == sender.ura:
        raise BadRequest("a member does not send messages to itself through the region")
    return receiver


def _carried(entries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every resource the message carries: the entries and what they contain, for the record's counts."""
    contained = [
        c
        for r in entries
        if isinstance(r.get("contained"), list)
        for c in r["contained"]
        if isinstance(c, Mapping)
    ]
    return [*entries, *contained]


def _to_decide(
    policy: Policy, entries: list[Mapping[str, Any]]
) -> list[tuple[Mapping[str, Any], frozenset[str]]]:
    """What consent decides of a message, as a pull decides what comes back (`contained_parts`): each entry
    that is patient data, with its contained resources' labels, and what an entry contains that is other
    data (a Condition contained in an Organization or a MedicationRequest is decided as a Condition).
    MalformedResource (400) for contained resources that cannot be decided."""
    parts: list[tuple[Mapping[str, Any], frozenset[str]]] = []
    for entry in entries:
        own, labels = contained_parts(policy, entry)
        if entry.get("resourceType") not in ADMINISTRATIVE_TYPES:
            parts.append((entry, labels))
        parts.extend((inner, frozenset()) for inner in own)
    return parts


def _refused(error: RzcpError, report: PushReport, why: str) -> RzcpError:
    """The error with the report of the refusal riding on it (`.report`), for the audit."""
    report.status, report.refusal = error.status, why
    error.report = report  # type: ignore[attr-defined]
    return error


_STORED = select(outbox).where(
    outbox.c.sender_ura == bindparam("sender_ura"), outbox.c.sender_key == bindparam("sender_key")
)


async def accept_message(
    exchange: Exchange, conn: AsyncConnection, sender: Requester, bundle: Any
) -> tuple[Message, PushReport]:
    """Check a message Bundle and store it for delivery. Raises BadRequest for a malformed message,
    InvalidResource (422) for one that is not about exactly one patient (rzcp.exchange.message), and, with
    the report riding on it as `.report`: Forbidden when the MessageHeader names another sender or the
    patient's consent does not let the sender share it with the receiver, Conflict when the Bundle.id
    was used before for other content."""
    index = _index(bundle)
    header = index.entries[0]
    active = await exchange.directory.members(conn)
    receiver = _receiver_member(header, active, sender)
    report = PushReport(None, sender.ura, receiver.ura, None)
    carried = _carried(index.entries)
    for resource in carried:
        kind = str(resource.get("resourceType"))
        report.carried[kind] = report.carried.get(kind, 0) + 1
    try:
        check_sender(header, index, sender.ura, active)
    except Forbidden as exc:
        raise _refused(exc, report, "the MessageHeader names another sender") from None
    try:
        check_flat(index)
    except InvalidResource as exc:
        raise _refused(exc, report, "resources nested where they cannot be decided") from None
    clinical = [r for r in carried if r.get("resourceType") not in ADMINISTRATIVE_TYPES]
    if not clinical:
        raise BadRequest("the message carries no patient data to deliver")
    try:
        bsn = message_bsn(bundle, index)
    except InvalidResource as exc:
        raise _refused(exc, report, "not about exactly one patient") from None
    patient_id = await exchange.locator.find(conn, bsn)
    sender_key = _sender_key(bundle)
    existing = (await conn.execute(_STORED, {"sender_ura": sender.ura, "sender_key": sender_key})).first()
    if existing is not None and orjson.loads(existing.message) != bundle:
        raise _conflict(existing, patient_id, report)
    report.patient = f"Patient/{patient_id}" if patient_id else None
    if existing is not None:
        # A repeat (the sender lost our answer) is answered with the stored message's status, decided when
        # it was accepted: deciding again could tell the sender "refused, send it another way" about a
        # message already delivered (a probe's), and so bring a second copy.
        report.message_id, report.accepted, report.repeated = existing.id, True, True
        return _message(existing), report
    await _decide(
        exchange, conn, sender, receiver, patient_id, _to_decide(exchange.policy, index.entries), report
    )
    message = await _store(conn, sender, receiver, sender_key, patient_id, bundle)
    if message is not None:
        report.message_id, report.accepted = message.id, True
        return message, report
    # the same Bundle.id stored by a concurrent request since the SELECT above (another process)
    existing = (await conn.execute(_STORED, {"sender_ura": sender.ura, "sender_key": sender_key})).one()
    if orjson.loads(existing.message) != bundle:
        raise _conflict(existing, patient_id, report)
    report.message_id, report.accepted, report.repeated = existing.id, True, True
    return _message(existing), report


def _sender_key(bundle: Mapping[str, Any]) -> str:
    """The sender's Bundle.id; without one, the content's own digest, so that a repeat of the same
    message (the sender lost our answer) is still the stored message, not a second delivery (a probe's)."""
    if bundle.get("id"):
        return str(bundle["id"])
    return "sha256:" + hashlib.sha256(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _conflict(existing: Any, patient_id: str | None, report: PushReport) -> RzcpError:
    """The Bundle.id names a stored message with other content. The refusal's record names the patient
    only when the new content is about the stored message's patient too: otherwise the request was not
    about her, and naming her would put it in her access log and her name in a record of someone else's
    data."""
    if patient_id is not None and existing.patient_id == patient_id:
        report.patient = f"Patient/{patient_id}"
    error = Conflict(
        f"Bundle.id was used before for a message with other content ({existing.id}); a new message needs "
        "a new Bundle.id, and a repeat the same content",
        expression=("Bundle.id",),
    )
    return _refused(error, report, "Bundle.id already used for another message")


async def _decide(
    exchange: Exchange,
    conn: AsyncConnection,
    sender: Requester,
    receiver: Member,
    patient_id: str | None,
    parts: list[tuple[Mapping[str, Any], frozenset[str]]],
    report: PushReport,
) -> None:
    """Forbidden unless the patient is known and their consent lets the sender share every resource
    carried with the receiver; the decisions per type go into the report."""
    if patient_id is not None:
        compiled = await rules_for(conn, exchange.consent_cache, f"Patient/{patient_id}")
        base = Request(
            requester_ura=receiver.ura,
            requester_category=receiver.category,
            source_ura=sender.ura,
            source_category=sender.category,
            purpose=sender.purpose,
            moment=utcnow(),
            resource_type="Bundle",
            break_glass_since=sender.break_glass_since,
        )
        by_type: dict[str, TypeDecision] = {}
        for resource, labels in parts:
            decision = decide(compiled, exchange.policy, request_for_resource(base, resource, labels))
            kind = str(resource.get("resourceType"))
            if kind not in by_type or (by_type[kind].permit and not decision.permitted):
                by_type[kind] = type_decision(decision, kind)
        report.decisions = list(by_type.values())
    if patient_id is None or not all(d.permit for d in report.decisions):
        error = Forbidden("the patient's consent does not allow this message to be shared with the receiver")
        raise _refused(error, report, "no consent for the receiver")


async def _store(
    conn: AsyncConnection,
    sender: Requester,
    receiver: Member,
    sender_key: str,
    patient_id: str | None,
    bundle: Mapping[str, Any],
) -> Message | None:
    """The message as the sender sent it (a repeat is compared with it); the gateway's statement of the
    sender is added on delivery (rzcp.exchange.message.as_delivered). None when a message with this
    sender's key is there already: two processes accepting the same repeat at once store it once, and
    the loser answers as for a repeat instead of failing on the unique key."""
    now = utcnow()
    message_id = str(uuid.uuid4())
    row = {
        "id": message_id,
        "sender_ura": sender.ura,
        "sender_key": sender_key,
        "receiver_ura": receiver.ura,
        "patient_id": patient_id,
        "message": orjson.dumps(bundle).decode(),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_by": None,
        "lease_until": None,
        "created_at": now,
        "updated_at": now,
        "http_status": None,
        "detail": "accepted",
        "purpose": sender.purpose,
    }
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    insert = make(outbox).values(**row).on_conflict_do_nothing(index_elements=["sender_ura", "sender_key"])
    if (await conn.execute(insert)).rowcount == 0:
        return None
    return Message(message_id, sender.ura, receiver.ura, patient_id, "pending", 0, now, now, None, "accepted")


#: Why a message accepted earlier is not delivered after all.
NO_LONGER_PERMITTED = "the patient's consent no longer allows it to be shared with the receiver"


async def still_permitted(
    exchange: Exchange, conn: AsyncConnection, message: Message, sender: Member | None, receiver: Member
) -> bool:
    """Decided again at each delivery, against the patient's consents of now: a permission she withdrew
    after the message was accepted stops it before it leaves (a probe's message went out 28 s after the
    withdrawal). The same decision as at acceptance: every clinical resource carried, the receiver asking
    the sender's data for the sender's purpose (an emergency's window counted from the acceptance)."""
    if sender is None or message.patient_id is None or message.content is None:
        return False
    purpose = message.purpose or "TREAT"
    since = message.created_at.replace(tzinfo=UTC) if purpose == "ETREAT" else None
    requester = Requester(sender.ura, sender.category, purpose, since)
    report = PushReport(message.id, sender.ura, receiver.ura, f"Patient/{message.patient_id}")
    try:
        parts = _to_decide(exchange.policy, _index(message.content).entries)
        await _decide(exchange, conn, requester, receiver, message.patient_id, parts, report)
    except (Forbidden, MalformedResource):
        return False
    return True


def _message(row: Any, *, with_content: bool = False) -> Message:
    return Message(
        row.id,
        row.sender_ura,
        row.receiver_ura,
        row.patient_id,
        row.status,
        row.attempts,
        row.created_at,
        row.updated_at,
        row.http_status,
        row.detail,
        orjson.loads(row.message) if with_content else None,
        row.purpose,
    )


async def get_message(conn: AsyncConnection, message_id: str, *, viewer_ura: str | None) -> Message:
    """A message, for its sender or receiver (or, with `viewer_ura` None, an administrator)."""
    row = (await conn.execute(select(outbox).where(outbox.c.id == message_id))).first()
    if row is None or (viewer_ura is not None and viewer_ura not in (row.sender_ura, row.receiver_ura)):
        raise NotFound(f"no message {message_id}")
    return _message(row)


# --- the worker's side --------------------------------------------------------------------------------


def _due(now: datetime) -> Any:
    return and_(
        outbox.c.status == "pending",
        outbox.c.next_attempt_at <= now,
        or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
    )


async def any_due(conn: AsyncConnection) -> bool:
    """Whether any message is due now (one indexed read; the worker skips its write transaction if not)."""
    found = await conn.execute(select(outbox.c.id).where(_due(utcnow())).limit(1))
    return found.first() is not None


async def claim(conn: AsyncConnection, token: str, *, lease_seconds: float, limit: int = 10) -> list[Message]:
    """Claim up to `limit` due messages for `token` (one worker's claim); call in a write transaction."""
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    if conn.dialect.name == "postgresql":
        ids = list(
            (
                await conn.execute(
                    select(outbox.c.id)
                    .where(_due(now))
                    .order_by(outbox.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ids:
            return []
        where = outbox.c.id.in_(ids)
    else:
        picked = select(outbox.c.id).where(_due(now)).order_by(outbox.c.next_attempt_at).limit(limit)
        where = and_(outbox.c.id.in_(picked.scalar_subquery()), _due(now))
    await conn.execute(
        update(outbox)
        .where(where)
        .values(claimed_by=token, lease_until=lease, attempts=outbox.c.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    rows = await conn.execute(
        select(outbox).where(outbox.c.claimed_by == token, outbox.c.lease_until == lease)
    )
    return [_message(row, with_content=True) for row in rows]


@dataclass(frozen=True)
class RetryPlan:
    base: float
    ceiling: float
    max_attempts: int

    def next_at(self, attempts: int, retry_after: float | None) -> datetime | None:
        """When to try again after `attempts` attempts; None when it is time to give up."""
        if attempts >= self.max_attempts:
            return None
        pause = min(self.ceiling, self.base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.ceiling))
        return utcnow() + timedelta(seconds=pause)


async def extend_lease(conn: AsyncConnection, message_id: str, token: str, seconds: float) -> bool:
    """Hold the claim for `seconds` from now (a receiver with a long timeout: the lease must outlast the
    call, or another worker sends the message again while it is under way); False when the claim is no
    longer ours."""
    lease = utcnow() + timedelta(seconds=seconds)
    changed = await conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id, outbox.c.claimed_by == token, outbox.c.status == "pending")
        .values(lease_until=lease)
    )
    return changed.rowcount == 1


async def finish(
    conn: AsyncConnection, message: Message, token: str, outcome: DeliveryOutcome | None, plan: RetryPlan
) -> DeliveryReport:
    """Write the attempt's result where the claim is still ours; `outcome` None: the receiver is gone.

    A delivery is written whoever holds the claim now, as long as the message is pending: the receiver
    has it, and a worker that took the claim over meanwhile then writes nothing of its own. A receiver
    that was not called (its circuit open) gives the attempt back."""
    now = utcnow()
    values: dict[str, Any] = {"claimed_by": None, "lease_until": None, "updated_at": now}
    mine = outbox.c.claimed_by == token
    next_at = None
    if outcome is None:
        result, status, detail, http_status = (
            "failed",
            "failed",
            "the receiver is no longer an active member",
            None,
        )
    elif outcome.status is DeliveryStatus.DELIVERED:
        result, status, detail, http_status = "delivered", "delivered", outcome.detail, outcome.http_status
        mine = outbox.c.status == "pending"
    elif outcome.status is DeliveryStatus.REJECTED:
        result, status, detail, http_status = "rejected", "rejected", outcome.detail, outcome.http_status
    elif not outcome.called:
        # No attempt is spent, so the attempts' backoff cannot pace it: the message's age does (a quarter
        # of it, from the first pause up to the longest), and past its retry schedule's span it fails.
        age = (now - message.created_at).total_seconds()
        http_status, detail = None, outcome.detail
        if age > plan.ceiling * plan.max_attempts:
            result, status = "failed", "failed"
            detail = f"given up after {int(age)} s: the receiver could not be called ({detail})"
        else:
            result, status = "retry", "pending"
            pause = max(outcome.retry_after or 0.0, min(plan.ceiling, max(plan.base, age / 4)))
            next_at = now + timedelta(seconds=pause)
            values.update(next_attempt_at=next_at, attempts=outbox.c.attempts - 1)
    else:
        next_at = plan.next_at(message.attempts, outcome.retry_after)
        http_status, detail = outcome.http_status, outcome.detail
        if next_at is None:
            result, status = "failed", "failed"
            detail = f"given up after {message.attempts} attempts: {detail}"
        else:
            result, status = "retry", "pending"
            values["next_attempt_at"] = next_at
    shown = f"{detail}: {outcome.reason}" if outcome is not None and outcome.reason else detail
    values.update(status=status, http_status=http_status, detail=shown[:500])
    await conn.execute(update(outbox).where(outbox.c.id == message.id, mine).values(**values))
    return DeliveryReport(
        message.id,
        message.sender_ura,
        message.receiver_ura,
        f"Patient/{message.patient_id}" if message.patient_id else None,
        message.attempts,
        result,  # type: ignore[arg-type]
        http_status,
        detail,
        next_at,
    )


_TASK_STATUS = {
    "pending": "in-progress",
    "delivered": "completed",
    "rejected": "rejected",
    "failed": "failed",
}


def as_task(message: Message, base: str) -> dict[str, Any]:
    """The message's delivery as a FHIR Task (what `GET /fhir/$process-message/{id}` answers)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": message.id,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{message.id}"}],
        "status": _TASK_STATUS.get(message.status, "in-progress"),
        "businessStatus": {"text": message.detail or message.status},
        "intent": "order",
        "code": {"text": "deliver FHIR message"},
        "authoredOn": instant(message.created_at),
        "lastModified": instant(message.updated_at),
        "requester": {"identifier": {"system": URA_SYSTEM, "value": message.sender_ura}},
        "owner": {"identifier": {"system": URA_SYSTEM, "value": message.receiver_ura}},
        "output": [{"type": {"text": "attempts"}, "valueInteger": message.attempts}],
    }
    if message.patient_id:
        task["for"] = {"reference": f"{base}/Patient/{message.patient_id}"}
    if message.http_status is not None:
        task["output"].append({"type": {"text": "receiver-http-status"}, "valueInteger": message.http_status})
    return task
