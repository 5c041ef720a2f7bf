"""Federated pull: one patient's data from every member that holds it and may share it, as one Bundle.

    plan = await plan_pull(exchange, conn, requester, query)      # the database part (locate, decide)
    bundle, report = await run_pull(exchange, plan, base=..., self_url=...)   # the fan-out, no connection

The steps (../shared/design.md, "The way of a request"), plain Python with no HTTP in it:

1. locate: the members that announced the patient, with their local patient ids (the requester itself is
   not asked: it holds its own data);
2. decide, per source member and per resource type asked (so per data category), with the patient's
   compiled consents (one indexed read when they did not change): a denied source is not called and leaves
   no trace in the answer, no entry, no count, no warning;
3. fan out concurrently to the permitted (source, type) pairs through their adapters, each under the
   member's own deadline and circuit breaker, in the member's own terms (its local patient id);
4. decide again per resource that came back (its categories, codes, security labels and date are known
   now): a permitted source's sensitive entries are withheld silently;
5. translate the member's patient reference back to the regional Patient, tag each resource with its
   source (meta.source: the member's FHIR base; a meta.security coding naming the member's URA), remove
   duplicates (the same resource reported twice, or by two members), merge and page;
6. a permitted source that failed or timed out adds an OperationOutcome entry (search.mode `outcome`, issue
   `incomplete`, naming the member); when every permitted source failed the answer is a 503 (504 when they
   all timed out) OperationOutcome.

`report` (PullReport) is everything the audit record needs: who asked, about whom, what, the decision per
source and type with the deciding consents, who was called and how it ended, and what came back per source
and type (counts, never content).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.events import Decision as AuditDecision
from rzcp.audit.events import Returned
from rzcp.consent.cache import rules_for
from rzcp.consent.compiled import CompiledConsents
from rzcp.consent.engine import decide
from rzcp.consent.model import Decision, Request
from rzcp.consent.repository import CHANGE_VERSION_COLUMN
from rzcp.consent.service import ResourceDecisions
from rzcp.errors import Issue
from rzcp.exchange.adapters import ProblemCode, SearchOutcome, SearchQuery
from rzcp.exchange.locator import Locator, Source
from rzcp.exchange.service import Exchange
from rzcp.fhir.outcome import operation_outcome
from rzcp.fhir.search.parser import SortKey
from rzcp.store.indexer import sort_value

#: The coding in meta.security that names the member a resource came from.
SOURCE_SYSTEM = "https://rzcp.nl/fhir/CodeSystem/source-organization"
_SOURCE_PLACE = SOURCE_SYSTEM.removeprefix("https://").lower()


def is_source_coding(coding: Any) -> bool:
    """A source tag, or one a member wrote to pass for it: the system in any case, over http or https, with
    a trailing slash. A member's own data may not say where it came from; only the gateway says that."""
    if not isinstance(coding, Mapping):
        return False
    system = coding.get("system")
    if not isinstance(system, str):
        return False
    place = system.strip().rstrip("/").lower().removeprefix("https://").removeprefix("http://")
    host, _, path = place.partition("/")
    return f"{host.removesuffix(':443').removesuffix(':80')}/{path}" == _SOURCE_PLACE


#: `no-turn`: permitted but not asked, the process having had its most pulls under way at the member for the
#: member's whole timeout (rzcp.exchange.gates): the gateway's load, not the member's failure.
Outcome = Literal["ok", "partial", "failed", "timeout", "no-turn", "not-called"]


@dataclass(frozen=True)
class Requester:
    """Who asks and why: the member (URA and registered category), the purpose of use and, for
    break-the-glass, since when."""

    ura: str
    category: str | None
    purpose: str = "TREAT"
    break_glass_since: datetime | None = None


@dataclass(frozen=True)
class PullQuery:
    patient_id: str
    #: One type for a search; the covered types for $everything.
    resource_types: tuple[str, ...]
    #: Further search parameters, passed on to the members (and re-applied by the adapter where it can).
    params: tuple[tuple[str, str], ...] = ()
    count: int = 20
    offset: int = 0
    interaction: Literal["search-type", "everything"] = "search-type"
    #: The query string as asked, for the audit.
    asked: str = ""
    #: `_sort`, applied by the gateway to the merged answer.
    sort: tuple[SortKey, ...] = ()


@dataclass(frozen=True)
class TypeDecision:
    """The consent decision for one source member and one resource type, before the data came back."""

    resource_type: str
    permit: bool
    #: The engine's stable basis (permitted, refused, no-consent, sensitive ...).
    basis: str
    #: The deciding consents, as (id, versionId or None).
    consents: tuple[tuple[str, str | None], ...]
    decision: Decision = field(repr=False, compare=False)

    @property
    def reason(self) -> str:
        return self.decision.reason

    def for_audit(self, member_ura: str) -> AuditDecision:
        """This decision about `member_ura`'s data, as the audit trail records it."""
        return AuditDecision(
            permit=self.permit,
            member_ura=member_ura,
            data_class=self.resource_type,
            consents=tuple((cid, version or "") for cid, version in self.consents),
            rule=None if self.consents else self.basis,
        )


@dataclass
class SourceReport:
    member_ura: str
    member_name: str
    decisions: list[TypeDecision] = field(default_factory=list)
    called: bool = False
    outcome: Outcome = "not-called"
    #: Entries of this page passed on to the requester, per resource type.
    returned: dict[str, int] = field(default_factory=dict)
    #: Entries dropped, per reason: the adapter's (another patient, wrong type, not matching, broken) and
    #: the gateway's own (codes or labels that cannot be read). Counts only: the audit record names them.
    dropped: Counter[str] = field(default_factory=Counter)
    elapsed_ms: float = 0.0

    @property
    def permitted(self) -> bool:
        return any(d.permit for d in self.decisions)


@dataclass
class PullReport:
    interaction: str
    patient: str  # Patient/<regional id>
    requester_ura: str
    purpose: str
    resource_types: tuple[str, ...]
    asked: str
    sources: list[SourceReport] = field(default_factory=list)
    #: HTTP status of the answer (200, or 503/504 when every permitted source failed).
    status: int = 200
    #: Seconds until a member that failed is called again (Retry-After of a 503), when known.
    retry_after: int | None = None
    #: Entries in the whole result (all pages), after filtering and de-duplication.
    total: int = 0
    #: Entries on this page.
    page_entries: int = 0
    duplicates: int = 0
    #: The gateway's own resources on this page (the regional Patient of $everything), per type.
    own: dict[str, int] = field(default_factory=dict)

    def audit_decisions(self) -> tuple[AuditDecision, ...]:
        """The decisions, as the audit trail records them (rzcp.audit.Decision)."""
        return tuple(d.for_audit(s.member_ura) for s in self.sources for d in s.decisions)

    def audit_returned(self) -> tuple[Returned, ...]:
        own = tuple(Returned(t, n) for t, n in sorted(self.own.items()) if n)
        return own + tuple(
            Returned(t, n, s.member_ura) for s in self.sources for t, n in sorted(s.returned.items()) if n
        )

    def outcome_desc(self) -> str:
        """Failed sources, and what was dropped from the others' answers (counts per reason, no ids: a
        member sending another patient's data, say, is for the administrators to take up)."""
        parts = [
            f"source {s.member_ura} {s.outcome}"
            for s in self.sources
            if s.outcome in ("failed", "timeout", "no-turn")
        ]
        for s in self.sources:
            if s.dropped:
                reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(s.dropped.items()))
                parts.append(f"source {s.member_ura} entries dropped: {reasons}")
        return "; ".join(parts) if parts else "ok"


def type_decision(decision: Decision, resource_type: str) -> TypeDecision:
    consents = tuple((d.consent_id, d.version) for d in decision.deciding)
    return TypeDecision(resource_type, decision.permitted, decision.basis, consents, decision)


@dataclass
class PullPlan:
    """What the database said (sources, consents) and who will be asked: the part of a pull that needs a
    connection. The fan-out that follows holds none."""

    query: PullQuery
    report: PullReport
    compiled: CompiledConsents
    calls: list[tuple[Source, SourceReport, str, Request]]


#: The patient's sources with their consent change counter beside them: one read instead of two on every
#: pull. With no source there is no row, and `rules_for` reads the counter itself.
_SOURCES_AND_CONSENTS = Locator.with_columns(CHANGE_VERSION_COLUMN)


async def plan_pull(
    exchange: Exchange, conn: AsyncConnection, requester: Requester, query: PullQuery
) -> PullPlan:
    """Locate the patient's sources and decide, per source and resource type, who may be asked."""
    patient_ref = f"Patient/{query.patient_id}"
    report = PullReport(
        query.interaction, patient_ref, requester.ura, requester.purpose, query.resource_types, query.asked
    )
    found, first = await exchange.locator.sources_with(
        conn, exchange.directory, query.patient_id, _SOURCES_AND_CONSENTS, patient_ref=patient_ref
    )
    sources = [s for s in found if s.member.ura != requester.ura]
    version = None if first is None else int(first.rzcp_consent_version or 0)
    compiled = await rules_for(conn, exchange.consent_cache, patient_ref, version)
    now = datetime.now(UTC).replace(tzinfo=None)
    base_request = Request(
        requester_ura=requester.ura,
        requester_category=requester.category,
        source_ura=None,
        source_category=None,
        purpose=requester.purpose,
        moment=now,
        resource_type=query.resource_types[0] if query.resource_types else "Patient",
        break_glass_since=requester.break_glass_since,
    )
    calls: list[tuple[Source, SourceReport, str, Request]] = []
    for source in sources:
        member = source.member
        source_report = SourceReport(member.ura, member.name)
        report.sources.append(source_report)
        about = base_request.about(source_ura=member.ura, source_category=member.category)
        for res_type in query.resource_types:
            asked = about.about(resource_type=res_type)
            decision = decide(compiled, exchange.policy, asked)
            source_report.decisions.append(type_decision(decision, res_type))
            if decision.permitted:
                calls.append((source, source_report, res_type, asked))
    return PullPlan(query, report, compiled, calls)


async def pull(
    exchange: Exchange,
    conn: AsyncConnection,
    requester: Requester,
    query: PullQuery,
    *,
    base: str,
    self_url: str,
    next_url: str | None = None,
) -> tuple[dict[str, Any], PullReport]:
    """`plan_pull` and `run_pull` in one, for callers that do not mind holding the connection."""
    plan = await plan_pull(exchange, conn, requester, query)
    return await run_pull(exchange, plan, base=base, self_url=self_url, next_url=next_url)


async def run_pull(
    exchange: Exchange,
    plan: PullPlan,
    *,
    base: str,
    self_url: str,
    next_url: str | None = None,
    leading: Sequence[tuple[str, dict[str, Any]]] = (),
    warnings: Sequence[Issue] = (),
) -> tuple[dict[str, Any], PullReport]:
    """The searchset Bundle of one page (or an OperationOutcome when every permitted source failed), and
        the report for the audit. `next_url` is used when there is a next page. `leading` are the gateway's
        own entries (fullUrl, resource), first in the result: the regional Patient of $everything. `warnings`
    (parameters left out) lead the outcome entry."""
    query, report, compiled, calls = plan.query, plan.report, plan.compiled, plan.calls

    async def call(source: Source, res_type: str, asked: Request) -> _Answer:
        started = time.perf_counter()
        adapter = exchange.adapters.for_member(source.member)
        outcome = await adapter.search(source.member, SearchQuery(res_type, source.local_id, query.params))
        elapsed = (time.perf_counter() - started) * 1000
        decisions = ResourceDecisions(compiled, exchange.policy, asked)
        return _prepared(outcome, elapsed, source, res_type, decisions, base, query.patient_id)

    async def at_member(positions: list[int]) -> list[_Answer]:
        """This pull's calls to one member, in one of the member's turns (rzcp.exchange.gates)."""
        source = calls[positions[0]][0]
        member = source.member
        started = time.perf_counter()
        turn = await exchange.gates.enter(member.ura, member.timeout, member.max_pulls)
        if turn is None:
            return [_no_turn(source) for _ in positions]
        waited = time.perf_counter() - started
        if waited > 0.001:  # the wait counts against the member's deadline: one timeout for the pull
            source = replace(source, member=replace(member, timeout=max(member.timeout - waited, 0.001)))
        try:
            if len(positions) == 1:
                _, _, res_type, asked = calls[positions[0]]
                return [await call(source, res_type, asked)]
            # every call ends before the turn is given back, also when one of them raised
            done = await asyncio.gather(
                *(call(source, calls[i][2], calls[i][3]) for i in positions), return_exceptions=True
            )
            ended: list[_Answer] = []
            for result in done:
                if isinstance(result, BaseException):
                    raise result
                ended.append(result)
            return ended
        finally:
            exchange.gates.leave(turn)

    # Each answer is filtered and tagged in its own task as it arrives, while slower members are still
    # awaited: only the merge below waits for the last one. One member runs in the request's own task: a
    # new task would only start after every other request ready on the loop has had its turn, so under
    # load each pull's member call waited for all the others' preparation, and the member and the gateway
    # took turns instead of working at once (bench/README.md, "One member called without a task hop").
    # Several members are asked slowest first (rzcp.exchange.pace); the answers keep the source order.
    by_member: dict[str, list[int]] = {}
    for i, (source, *_) in enumerate(calls):
        by_member.setdefault(source.member.ura, []).append(i)
    groups = list(by_member.values())
    if len(groups) == 1:
        order, in_order = [0], [await at_member(groups[0])]
    else:
        order = exchange.pace.slowest_first([calls[group[0]][0].member.ura for group in groups])
        in_order = await asyncio.gather(*(at_member(groups[g]) for g in order))
    placed: dict[int, _Answer] = {}
    for g, group_answers in zip(order, in_order, strict=True):
        placed.update(zip(groups[g], group_answers, strict=True))
    answers = [placed[i] for i in range(len(calls))]
    _note_pace(exchange, calls, answers)

    entries: list[tuple[str, dict[str, Any]]] = list(leading)
    seen: set[str | bytes] = set()
    failures: dict[str, list[ProblemCode]] = {}
    answered: set[str] = set()
    no_turn: set[str] = set()
    for (source, source_report, _, _), answer in zip(calls, answers, strict=True):
        outcome = answer.outcome
        member = source.member
        if not answer.sent:
            no_turn.add(member.ura)
            continue
        source_report.called = True
        source_report.elapsed_ms = max(source_report.elapsed_ms, answer.elapsed_ms)
        for problem in outcome.problems:
            if problem.code in _DROPPED:
                source_report.dropped[problem.code.value] += 1
        if outcome.failed:
            failures.setdefault(member.ura, []).extend(p.code for p in outcome.problems)
            continue
        answered.add(member.ura)
        if outcome.partial:
            failures.setdefault(member.ura, []).append(ProblemCode.TRUNCATED)
        for url, tagged, key in answer.entries:
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            entries.append((url, tagged))
        if answer.unreadable:  # codes or security labels not in FHIR's shape: never decided on a guess
            source_report.dropped["unreadable-codes"] += answer.unreadable
        if answer.withheld:  # the record says so (the caller's answer does not: a privacy officer's find)
            source_report.dropped["withheld-by-consent"] += answer.withheld

    issues: list[Issue] = list(warnings)
    for source_report in report.sources:
        codes = failures.get(source_report.member_ura)
        if source_report.member_ura in no_turn and not source_report.called:
            source_report.outcome = "no-turn"
            issues.append(
                Issue(
                    "warning",
                    "incomplete",
                    f"{source_report.member_name} (URA {source_report.member_ura}) could not be asked in "
                    "time: the gateway had its most pulls under way there; the result may be incomplete",
                )
            )
            continue
        if not source_report.called:
            continue
        if codes is None:
            source_report.outcome = "ok"
            continue
        timed_out = ProblemCode.TIMEOUT in codes
        if source_report.member_ura in answered:
            source_report.outcome = "partial"
            what = "answered only in part"
        else:
            source_report.outcome = "timeout" if timed_out else "failed"
            what = "did not answer in time" if timed_out else "could not be asked"
        issues.append(
            Issue(
                "warning",
                "incomplete",
                f"{source_report.member_name} (URA {source_report.member_ura}) {what}: "
                "the result may be incomplete",
            )
        )

    tried = [s for s in report.sources if s.called or s.outcome == "no-turn"]
    if tried and all(s.outcome in ("failed", "timeout", "no-turn") for s in tried):
        report.status = 504 if all(s.outcome == "timeout" for s in tried) else 503
        text = "no member holding the patient's data could be asked" + (
            " in time" if report.status == 504 else ""
        )
        outcome_issues = [Issue("error", "timeout" if report.status == 504 else "transient", text), *issues]
        # members this process rests after failures: the caller may try again when the first is called again
        resting = [w for s in tried if (w := exchange.breakers.for_member(s.member_ura).retry_in()) > 0]
        report.retry_after = max(1, math.ceil(min(resting))) if resting else None
        return operation_outcome(outcome_issues), report

    if query.sort:
        entries[len(leading) :] = _sorted(entries[len(leading) :], query.sort)
    report.total = len(entries)
    page = entries[query.offset : query.offset + query.count]
    report.page_entries = len(page)
    by_ura = {s.member_ura: s for s in report.sources}
    for _, resource in page:  # the audit records what this page carried, not the whole result
        res_type = resource["resourceType"]
        counts = by_ura[ura].returned if (ura := _source_of(resource)) in by_ura else report.own
        counts[res_type] = counts.get(res_type, 0) + 1
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": report.total,
        "link": [{"relation": "self", "url": self_url}],
    }
    found = [{"fullUrl": url, "resource": r, "search": {"mode": "match"}} for url, r in page]
    if next_url is not None and query.count and query.offset + query.count < report.total:
        bundle["link"].append({"relation": "next", "url": next_url})
    if issues:
        found.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if found:  # FHIR JSON has no empty arrays
        bundle["entry"] = found
    return bundle, report


@dataclass(frozen=True)
class _Answer:
    """One member's answer for one type, filtered and tagged: (full URL, resource, de-duplication key) for
    each entry the patient's consents permit, in the member's order."""

    outcome: SearchOutcome
    elapsed_ms: float
    entries: list[tuple[str, dict[str, Any], str | bytes]]
    unreadable: int
    #: False when the pull got no turn at the member (rzcp.exchange.gates): nothing was sent.
    sent: bool = True
    #: Entries the patient's consents keep from the requester (a permitted source's sensitive ones).
    withheld: int = 0


def _no_turn(source: Source) -> _Answer:
    """Nothing sent: the member is neither failed nor slow for it (nothing for its breaker or its pace)."""
    return _Answer(SearchOutcome(source.member.ura, failed=True), 0.0, [], 0, sent=False)


def _prepared(
    outcome: SearchOutcome,
    elapsed_ms: float,
    source: Source,
    res_type: str,
    decisions: ResourceDecisions,
    base: str,
    patient_id: str,
) -> _Answer:
    if outcome.failed:
        return _Answer(outcome, elapsed_ms, [], 0)
    base_url, permits = source.member.base_url, decisions.permits
    entries: list[tuple[str, dict[str, Any], str | bytes]] = []
    for resource in outcome.resources:
        if permits(resource):
            tagged = _tag(resource, source, base, patient_id)
            entries.append((f"{base_url}/{res_type}/{resource['id']}", tagged, _fingerprint(tagged)))
    withheld = len(outcome.resources) - len(entries) - decisions.unreadable
    return _Answer(outcome, elapsed_ms, entries, decisions.unreadable, withheld=withheld)


def _note_pace(
    exchange: Exchange, calls: Sequence[tuple[Source, SourceReport, str, Request]], answers: list[_Answer]
) -> None:
    """Each member's answer time in this pull (its slowest type's, for $everything's several calls), once:
    noted per call, a member's fast and slow types took turns in its average. A call its circuit breaker
    refused, or that got no turn, never left the gateway, so it says nothing of the member's pace."""
    slowest: dict[str, float] = {}
    for (source, *_), answer in zip(calls, answers, strict=True):
        if not answer.sent or any(p.code is ProblemCode.CIRCUIT_OPEN for p in answer.outcome.problems):
            continue
        ura = source.member.ura
        slowest[ura] = max(slowest.get(ura, 0.0), answer.elapsed_ms)
    for ura, elapsed_ms in slowest.items():
        exchange.pace.note(ura, elapsed_ms)


_DROPPED = frozenset(
    {ProblemCode.OTHER_PATIENT, ProblemCode.WRONG_TYPE, ProblemCode.NOT_MATCHING, ProblemCode.INVALID_ENTRY}
)


def _tag(resource: Mapping[str, Any], source: Source, base: str, patient_id: str) -> dict[str, Any]:
    """The resource as the requester gets it: the member's patient reference turned into the regional
    Patient, and tagged with its source."""
    member = source.member
    local = f"Patient/{source.local_id}"
    regional = f"{base}/Patient/{patient_id}"
    out = _rewrite(resource, local, regional)
    meta = dict(out.get("meta") or {})
    meta["source"] = member.base_url
    security = [s for s in meta.get("security") or [] if not is_source_coding(s)]
    security.append({"system": SOURCE_SYSTEM, "code": member.ura, "display": member.name})
    meta["security"] = security
    out["meta"] = meta
    contained = out.get("contained")
    if isinstance(contained, list) and contained:  # a contained resource says no source of its own either
        out["contained"] = [without_source(c) for c in contained]
    return out


def without_source(resource: Any) -> Any:
    """The resource with no statement of its own source, no `meta.source` and no source tag however
    spelled: only the gateway says where data came from (pulls, and the messages it delivers). The same
    object when it states none."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    if not isinstance(meta, dict):
        return resource
    security = meta.get("security")
    tagged = isinstance(security, list) and any(is_source_coding(s) for s in security)
    if not tagged and "source" not in meta:
        return resource
    kept = {k: v for k, v in meta.items() if k != "source"}
    if tagged:
        kept["security"] = [s for s in security if not is_source_coding(s)]
        if not kept["security"]:
            del kept["security"]
    out = dict(resource)
    if kept:
        out["meta"] = kept
    else:
        del out["meta"]
    return out


def _source_of(resource: Mapping[str, Any]) -> str | None:
    """The URA of the member a tagged resource came from (None for the gateway's own)."""
    meta = resource.get("meta")
    for coding in reversed(meta.get("security") or []) if isinstance(meta, dict) else ():
        if isinstance(coding, dict) and coding.get("system") == SOURCE_SYSTEM:  # `_tag` put it last
            return coding.get("code")
    return None


def _rewrite(resource: Mapping[str, Any], local: str, regional: str) -> dict[str, Any]:
    """The resource with its references to the member's patient (top-level elements and the elements of
    top-level lists and objects: subject, patient, performer[].actor ...) pointing at the regional one.
    Copies only what it changes (run for every resource of every answer: no list is rebuilt unless one
    of its items changed)."""
    out = dict(resource)
    for key, value in resource.items():
        if isinstance(value, dict):
            changed: Any = _rewrite_reference(value, local, regional)
        elif isinstance(value, list):
            changed = _rewrite_items(value, local, regional)
        else:
            continue
        if changed is not value:
            out[key] = changed
    return out


def _rewrite_items(items: list[Any], local: str, regional: str) -> list[Any]:
    rewritten = None
    for i, item in enumerate(items):
        if isinstance(item, dict):
            changed = _rewrite_reference(item, local, regional)
            if changed is not item:
                rewritten = rewritten or list(items)
                rewritten[i] = changed
    return items if rewritten is None else rewritten


def _rewrite_reference(value: dict[str, Any], local: str, regional: str) -> dict[str, Any]:
    reference = value.get("reference")
    if isinstance(reference, str):
        if reference == local or reference.endswith("/" + local):
            return {**value, "reference": regional}
        return value
    for key, inner in value.items():  # one level deeper: performer[].actor, participant[].individual ...
        if isinstance(inner, dict) and isinstance(inner.get("reference"), str):
            ref = inner["reference"]
            if ref == local or ref.endswith("/" + local):
                return {**value, key: {**inner, "reference": regional}}
    return value


def _sorted(
    entries: list[tuple[str, dict[str, Any]]], keys: Sequence[SortKey]
) -> list[tuple[str, dict[str, Any]]]:
    """The entries in `_sort` order, as the store orders a search: by each key's least (ascending) or
    greatest (descending) value, those without one last; ties by full URL (member and id), so that every
    page of a paged answer sees one order whatever order the members answered in."""
    entries = sorted(entries, key=lambda entry: entry[0])
    for key in reversed(keys):
        valued = [(sort_value(entry[1], key.param, descending=key.descending), entry) for entry in entries]
        present = [(value, entry) for value, entry in valued if value is not None]
        present.sort(key=lambda pair: pair[0], reverse=key.descending)
        entries = [entry for _, entry in present] + [entry for value, entry in valued if value is None]
    return entries


def _fingerprint(resource: Mapping[str, Any]) -> str | bytes:
    """Equal for the same record reported twice: by business identifier when it has one, else by content
    (everything but id, meta and narrative). The content key is the canonical JSON itself, not a digest of
    it: it lives for one pull, and hashing it again cost more than the JSON (run for every entry)."""
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list) and identifiers:
        tokens = sorted(
            f"{i.get('system')}|{i.get('value')}"
            for i in identifiers
            if isinstance(i, dict) and i.get("system") and i.get("value")
        )
        if tokens:
            return resource["resourceType"] + "#" + ";".join(tokens)
    body = dict(resource)
    for key in ("id", "meta", "text"):
        body.pop(key, None)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def patient_types(exchange: Exchange) -> tuple[str, ...]:
    """The resource types $everything asks for: those the policy's data categories cover that can be
    searched by patient."""
    return exchange.pull_types


def searched_params(pairs: Sequence[tuple[str, str]], skip: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in pairs if k not in skip)
