"""The exchange's FHIR interactions over HTTP. Thin: parse, call the exchange, render; the report of each
exchange goes to `request.state.exchange_report` for the audit hook.

    POST /fhir/Patient/$announce          a member holds data for a patient (Parameters: BSN, local id)
    POST /fhir/Patient/$withdraw          ... no longer
    GET  /fhir/Patient/{id}/$everything   the regional Patient, then its data from every permitted member
    GET  /fhir/{Type}?patient=...         a clinical type the gateway does not keep but the policy covers:
                                          federated pull (also subject=, patient.identifier=<bsn>)
    POST /fhir/$process-message           a message to another member: 202 + Location of its status
    GET  /fhir/$process-message/{id}      the delivery's status, as a Task

The routes are included before the FHIR router's generic `/fhir/{type}` routes (rzcp.app). The pull route
is made per resource type (`pull_router`), only for types this gateway does not serve itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from rzcp.audit.events import Returned
from rzcp.audit.http import note as audit_note
from rzcp.auth.access import authorize_interaction
from rzcp.auth.bsn import BSN_SYSTEM, is_bsn_system, is_valid_bsn
from rzcp.auth.context import require_practitioner
from rzcp.auth.deps import CurrentPrincipal, current_principal
from rzcp.auth.principal import Principal
from rzcp.auth.registry import (
    LIVE_COLUMN,
    ensure_live,
    live_params,
    needs_live_check,
    refuse_dead,
    still_live,
)
from rzcp.errors import BadRequest, Forbidden, Gone, Issue, NotFound, RzcpError
from rzcp.exchange.adapters import Member
from rzcp.exchange.directory import Directory
from rzcp.exchange.locator import parse_announcement
from rzcp.exchange.outbox import accept_message, as_task, get_message
from rzcp.exchange.params import check_everything_params, check_pull_params, shape_entries
from rzcp.exchange.pull import PullQuery, Requester, plan_pull, run_pull
from rzcp.exchange.service import Exchange
from rzcp.fhir import paging
from rzcp.fhir.deps import RuntimeDep, is_fhir_id, prefer_of
from rzcp.fhir.operations import post_only
from rzcp.fhir.outcome import outcome_response
from rzcp.fhir.search.parser import SortKey
from rzcp.fhir.validation import validate_resource
from rzcp.fhir.wire import check_accept, read_json_body, render, shape
from rzcp.runtime import Runtime
from rzcp.store.resources import ResourceStore

router = APIRouter(prefix="/fhir", tags=["FHIR exchange"])
_FHIR_RESPONSE = {"content": {"application/fhir+json": {}}}

#: Parameters that name the patient of a pull (the gateway's own; never sent to members as asked).
_PATIENT_PARAMS = frozenset(
    {"patient", "subject", "patient.identifier", "subject.identifier", "subject:Patient.identifier"}
)
_OWN_PARAMS = _PATIENT_PARAMS | {"patient:identifier"}


async def _exchange(request: Request) -> Exchange:
    return request.app.state.exchange


ExchangeDep = Annotated[Exchange, Depends(_exchange)]


def _base(request: Request, runtime: Runtime) -> str:
    return runtime.fhir_base(str(request.base_url))


def _member_of(principal: Principal) -> str:
    """The exchange (pulls, pushes, announcements) is for systems of the role `member`: the region's admin
    and auditor systems manage and audit it, they take no part in it."""
    if not principal.is_system or principal.member_ura is None or principal.role != "member":
        raise Forbidden("the exchange is for member systems")
    return principal.member_ura


async def _requester(exchange: Exchange, conn: Any, principal: Principal) -> Requester:
    """The requesting (or sending) member, active now, acting for a named professional."""
    ura = _member_of(principal)
    require_practitioner(principal)
    member = await exchange.directory.active_member(conn, ura)
    if member is None:
        raise Forbidden("the calling member is not active")
    return _as_requester(principal, member)


def _as_requester(principal: Principal, member: Member) -> Requester:
    context = principal.context
    since = datetime.now(UTC) if context.break_glass else None
    return Requester(member.ura, member.category, context.purpose_of_use, since)


#: The calling member's row with its client's liveness beside it (`ensure_live`'s check, in the same
#: statement): one read instead of two on every pull and push.
_MEMBER_LIVE = Directory.with_columns(LIVE_COLUMN)


async def _live_requester(exchange: Exchange, conn: Any, principal: Principal) -> Requester:
    """`ensure_live`, then `_requester`, in one statement for a member system (the usual caller); any other
    principal takes the two steps, so every refusal stays what it was (a dead token's 401 first)."""
    if not (needs_live_check(principal) and principal.role == "member" and principal.member_ura):
        await ensure_live(conn, principal)
        return await _requester(exchange, conn, principal)
    row = await exchange.directory.active_member_with(
        conn, principal.member_ura, _MEMBER_LIVE, **live_params(principal)
    )
    if row is None:  # the member is not active: a dead client's 401 before the member's 403
        await ensure_live(conn, principal)
        return await _requester(exchange, conn, principal)
    if not still_live(principal, row.rzcp_live):
        raise await refuse_dead(conn, principal)
    require_practitioner(principal)
    return _as_requester(principal, exchange.directory.from_row(row))


def _patient_id(value: str, name: str, base: str) -> str:
    """`x`, `Patient/x` or this gateway's `<base>/Patient/x` -> `x`. A reference to a Patient on another
    server names no one here: a 400, not an answer about the regional patient with the same id (a probe
    found `http://evil.example/fhir/Patient/<id>` answered as if it were this gateway's)."""
    reference = value.removeprefix(f"{base}/")
    local = reference.removeprefix("Patient/")
    if not is_fhir_id(local):
        raise BadRequest(
            f"{name}={value!r} is not a Patient of this gateway: Patient/<id>, or {base}/Patient/<id>",
            expression=(name,),
        )
    return local


async def _patient_of(exchange: Exchange, conn: Any, pairs: list[tuple[str, str]], base: str) -> str | None:
    """The regional patient a pull is about (None when no member announced the BSN asked for)."""
    named = [(k, v) for k, v in pairs if k in _PATIENT_PARAMS or k == "patient:identifier"]
    if len(named) != 1 or "," in named[0][1]:
        raise BadRequest(
            "a search at the region names exactly one patient: patient=Patient/<id>, subject=..., or "
            f"patient.identifier={BSN_SYSTEM}|<bsn>",
            code="required",
        )
    name, value = named[0]
    if name in ("patient", "subject"):
        return _patient_id(value, name, base)
    bsn = _searched_bsn(value, name)
    if bsn is None:
        raise BadRequest(f"the patient's identifier must be a BSN ({BSN_SYSTEM}|<bsn>)", expression=(name,))
    return await exchange.locator.find(conn, bsn)


def _searched_bsn(token: str, name: str) -> str | None:
    """The BSN a token `<system>|<bsn>` names when its system is the BSN's, however spelled (the URL, the
    OID with or without `urn:oid:`, as a message's may be); None for another system. A number that is no
    BSN is a 400 naming the parameter: a typo told as one, checked without a lookup."""
    system, bar, bsn = token.partition("|")
    if not bar or not is_bsn_system(system):
        return None
    if not is_valid_bsn(bsn):
        raise BadRequest(
            f"{name}: {BSN_SYSTEM}|<bsn> takes a BSN (nine digits passing the 11-check)",
            code="value",
            expression=(name,),
        )
    return bsn.zfill(9)


def _count(pairs: list[tuple[str, str]], runtime: Runtime) -> int:
    raw = dict(pairs).get("_count")
    settings = runtime.settings
    if raw is None:
        return settings.default_page_size
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"_count={raw!r} is not a whole number", expression=("_count",))
    return min(int(raw), settings.max_page_size)  # 0: the total only, as a store search answers it


async def _answer(
    request: Request,
    runtime: Runtime,
    exchange: Exchange,
    principal: Principal,
    *,
    path: str,
    types: tuple[str, ...],
    pairs: list[tuple[str, str]],
    params: tuple[tuple[str, str], ...],
    interaction: str,
    patient_id: str | None = None,
    with_patient: bool = False,
    warnings: tuple[Issue, ...] = (),
    sort: tuple[SortKey, ...] = (),
) -> Response:
    """Plan with a connection (released before the fan-out), run, render, and leave the report.
    `with_patient`: the regional Patient itself leads the result ($everything). `warnings`: the
    parameters left out (rzcp.exchange.params)."""
    base = _base(request, runtime)
    bound = paging.binding(path, pairs)
    token = dict(pairs).get(paging.PAGE_PARAM)
    offset = runtime.sealer.open(token, bound) if token else 0
    count = _count(pairs, runtime)
    async with runtime.db.query() as conn:
        requester = await _live_requester(exchange, conn, principal)
        if patient_id is None:
            patient_id = await _patient_of(exchange, conn, pairs, base)
        query = PullQuery(
            patient_id=patient_id or "-",
            resource_types=types if patient_id else (),
            params=params,
            count=count,
            offset=offset,
            interaction=interaction,  # type: ignore[arg-type]
            asked=str(request.url.query),
            sort=sort,
        )
        plan = await plan_pull(exchange, conn, requester, query)
        leading = await _regional_patient(conn, runtime, base, patient_id) if with_patient else []
    next_url = paging.page_url(base, path, pairs, runtime.sealer.seal(offset + count, bound))
    body, report = await run_pull(
        exchange,
        plan,
        base=base,
        self_url=paging.page_url(base, path, pairs, token),
        next_url=next_url,
        leading=leading,
        warnings=warnings,
    )
    values = dict(pairs)
    shape_entries(body, elements=values.get("_elements"), summary=values.get("_summary"))
    _note(request, report, report.audit_returned(), report.outcome_desc())
    headers = {"Retry-After": str(report.retry_after)} if report.retry_after else None
    return render(request, body, status=report.status, headers=headers)


async def _regional_patient(
    conn: Any, runtime: Runtime, base: str, patient_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The regional Patient as the gateway keeps it (its id, no BSN), as a leading entry; none when the
    id names no patient."""
    patient = await _stored_patient(conn, runtime, patient_id) if patient_id is not None else None
    return [] if patient is None else [(f"{base}/Patient/{patient_id}", patient)]


async def _stored_patient(conn: Any, runtime: Runtime, patient_id: str) -> dict[str, Any] | None:
    """The regional Patient as stored (no BSN: the locator keeps that); None when there is none."""
    try:
        version = await ResourceStore(conn, runtime.registry).read("Patient", patient_id)
    except (NotFound, Gone):
        return None
    patient: dict[str, Any] = orjson.loads(version.content)
    return patient


def _note(request: Request, report: Any, returned: Any = (), desc: str | None = None) -> None:
    """Hand the exchange's report to the audit: on request.state, and in the request's AuditNote."""
    request.state.exchange_report = report
    if report is None:
        return
    record = audit_note(request)
    record.patient = report.patient or record.patient
    record.returned.extend(returned)
    record.decisions.extend(report.audit_decisions())
    if desc:
        record.outcome_desc = desc


def _pull_search(res_type: str) -> Callable[[Request], Awaitable[Response]]:
    """The pull endpoint of one type. Its dependencies (runtime, exchange, caller) are resolved in one
    call, as for the store's read: FastAPI solving them cost about a tenth of a pull (bench/README.md).
    The type is bound here, not a parameter: as a defaulted parameter FastAPI took it for a query
    parameter, so `?res_type=` could change what was pulled."""

    async def search(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        principal = await current_principal(request)
        check_accept(request)
        authorize_interaction(principal, res_type, "search-type", runtime.registry)
        pairs = list(request.query_params.multi_items())
        strict = prefer_of(request).strict
        checked = check_pull_params(res_type, pairs, runtime.registry, strict=strict, skip=_OWN_PARAMS)
        return await _answer(
            request,
            runtime,
            request.app.state.exchange,
            principal,
            path=f"/{res_type}",
            types=(res_type,),
            pairs=pairs,
            params=checked.passed_on,
            interaction="search-type",
            warnings=checked.warnings,
            sort=checked.sort,
        )

    return search


def pull_router(types: list[str]) -> APIRouter:
    """`GET /fhir/{Type}` for each type the gateway does not keep but the exchange pulls."""
    pulls = APIRouter(prefix="/fhir", tags=["FHIR exchange"])
    for res_type in types:
        search = _pull_search(res_type)
        pulls.add_api_route(
            f"/{res_type}",
            search,
            methods=["GET"],
            responses={200: _FHIR_RESPONSE},
            name=f"pull_{res_type}",
            summary=f"Search {res_type} of one patient across the region's members",
        )
    return pulls


@router.get("/Patient/{id}/$everything", responses={200: _FHIR_RESPONSE})
async def everything(
    request: Request,
    runtime: RuntimeDep,
    exchange: ExchangeDep,
    principal: CurrentPrincipal,
    res_id: Annotated[str, Path(alias="id", max_length=64)],
) -> Response:
    """The patient's data from every member that holds it and may share it (Patient/$everything)."""
    check_accept(request)
    authorize_interaction(principal, "Patient", "read", runtime.registry)
    pairs = list(request.query_params.multi_items())
    warnings = check_everything_params(pairs, runtime.registry, strict=prefer_of(request).strict)
    wanted = {t.strip() for v in (v for k, v in pairs if k == "_type") for t in v.split(",") if t.strip()}
    types = tuple(
        t for t in exchange.pull_types if (not wanted or t in wanted) and _may_search(principal, t, runtime)
    )
    return await _answer(
        request,
        runtime,
        exchange,
        principal,
        path=f"/Patient/{res_id}/$everything",
        types=types,
        patient_id=res_id,
        pairs=pairs,
        params=(),
        interaction="everything",
        with_patient=not wanted or "Patient" in wanted,
        warnings=warnings,
    )


def _may_search(principal: Principal, res_type: str, runtime: Runtime) -> bool:
    try:
        authorize_interaction(principal, res_type, "search-type", runtime.registry)
    except Forbidden:
        return False
    return True


@router.post("/Patient/$announce", responses={200: _FHIR_RESPONSE})
async def announce(
    request: Request, runtime: RuntimeDep, exchange: ExchangeDep, principal: CurrentPrincipal
) -> Response:
    """A member holds data for the patient with this BSN, under its own patient id."""
    authorize_interaction(principal, "Patient", "create", runtime.registry)
    ura = _member_of(principal)
    announcement = parse_announcement(await read_json_body(request, runtime.settings.max_body_bytes))
    assert announcement.local_id is not None
    async with runtime.db.write() as conn:
        await ensure_live(conn, principal)
        patient_id = await exchange.locator.announce(
            conn, runtime.registry, ura, announcement.bsn, announcement.local_id
        )
    audit_note(request).patient = f"Patient/{patient_id}"  # whom the announcement was about
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}}],
    }
    return render(request, body)


post_only(router, "/Patient/$announce")


@router.post("/Patient/$withdraw", responses={200: _FHIR_RESPONSE})
async def withdraw(
    request: Request, runtime: RuntimeDep, exchange: ExchangeDep, principal: CurrentPrincipal
) -> Response:
    """The member no longer holds data for the patient (under that local id, or any)."""
    authorize_interaction(principal, "Patient", "create", runtime.registry)
    ura = _member_of(principal)
    announcement = parse_announcement(
        await read_json_body(request, runtime.settings.max_body_bytes), withdrawal=True
    )
    async with runtime.db.write() as conn:
        await ensure_live(conn, principal)
        patient_id = await exchange.locator.find(conn, announcement.bsn)
        removed = await exchange.locator.withdraw(conn, ura, announcement.bsn, announcement.local_id)
    if patient_id is not None:
        audit_note(request).patient = f"Patient/{patient_id}"
    text = f"{removed} announcement(s) withdrawn"
    return outcome_response(200, [Issue("information", "informational", text)])


post_only(router, "/Patient/$withdraw")


@router.post("/$process-message", status_code=202, responses={202: _FHIR_RESPONSE})
async def process_message(
    request: Request, runtime: RuntimeDep, exchange: ExchangeDep, principal: CurrentPrincipal
) -> Response:
    """Accept a FHIR message Bundle for delivery to the member its MessageHeader names: stored before
    this answers 202, with a Location to follow the delivery."""
    authorize_interaction(principal, "Bundle", "create", runtime.registry)
    async with runtime.db.query() as conn:  # a revoked client gets its 401 before any validation work
        await ensure_live(conn, principal)
    # Validated at the edge like any resource written to the store: the receiver gets valid FHIR only.
    bundle = validate_resource(
        await read_json_body(request, runtime.settings.max_body_bytes), expected_type="Bundle"
    )
    try:
        async with runtime.db.write() as conn:
            sender = await _live_requester(exchange, conn, principal)
            message, report = await accept_message(exchange, conn, sender, bundle)
    except RzcpError as exc:
        refused = getattr(exc, "report", None)  # a refusal the audit records with its reason
        if refused is not None:  # naming the receiver it was meant for (a privacy officer found it nowhere)
            to = f" (to {refused.receiver_ura})" if refused.receiver_ura else ""
            _note(request, refused, desc=f"refused: {refused.refusal}{to}")
        raise
    accepted = "accepted again" if report.repeated else "accepted"
    _note(
        request,
        report,
        [Returned(t, n, report.sender_ura) for t, n in sorted(report.carried.items())],  # where it came from
        desc=f"{accepted} for delivery to {report.receiver_ura} as message {message.id}",
    )
    worker = getattr(request.app.state, "outbox_worker", None)
    if worker is not None:
        worker.wake()
    location = f"{_base(request, runtime)}/$process-message/{message.id}"
    text = "message accepted again (already known)" if report.repeated else "message accepted for delivery"
    return outcome_response(
        202, [Issue("information", "informational", f"{text}: {message.id}")], {"Location": location}
    )


post_only(router, "/$process-message")


@router.get("/$process-message/{id}", responses={200: _FHIR_RESPONSE})
async def message_status(
    request: Request,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    message_id: Annotated[str, Path(alias="id", max_length=64)],
) -> Response:
    """The delivery of a message, as a Task, for its sender and receiver (and the region's admin
    systems). A person's token is none of these, whatever the person's roles (found by a security test:
    an admin's token issued to another app read a delivery's Task)."""
    check_accept(request)
    admin_system = principal.is_system and principal.role == "admin"
    viewer = None if admin_system else _member_of(principal)
    async with runtime.db.query() as conn:
        await ensure_live(conn, principal)
        message = await get_message(conn, message_id, viewer_ura=viewer)
    return render(request, as_task(message, _base(request, runtime)))


#: What a search by BSN takes besides the identifier: result parameters it applies (`_format` and `_pretty`
#: are the response's). Anything else it cannot apply to the locator's answer, and ignoring it would answer
#: a question that was not asked (`birthdate` left out still returned the patient).
_BSN_SEARCH_EXTRAS = frozenset({"_count", "_summary", "_elements", "_total", "_format", "_pretty", "_page"})


async def regional_patient_search(
    request: Request, runtime: Runtime, conn: Any, pairs: list[tuple[str, str]]
) -> Response | None:
    """The hook of the FHIR router's Patient search: `Patient?identifier=<BSN system>|<bsn>` is answered
    from the locator (the stored regional Patient carries no BSN), with the BSN added for display.
    None for any other Patient search, and for a BSN no member announced: the store answers those."""
    identifiers = [v for k, v in pairs if k == "identifier"]
    bsn = _searched_bsn(identifiers[0], "identifier") if len(identifiers) == 1 else None
    if bsn is None:
        return None
    exchange: Exchange = request.app.state.exchange
    base = _base(request, runtime)
    patient_id = await exchange.locator.find(conn, bsn)
    if patient_id is None:
        return None  # not announced: the store answers (a Patient made by a patient's login, say)
    others = sorted({k for k, _ in pairs if k != "identifier" and k not in _BSN_SEARCH_EXTRAS})
    if others:
        raise BadRequest(
            "a search by BSN takes no other search parameter (" + ", ".join(o[:64] for o in others) + "): "
            "search by BSN, then by the regional id (_id) with the others",
            code="not-supported",
        )
    patient = await _stored_patient(conn, runtime, patient_id)
    params = dict(pairs)
    if params.get("_summary", "false") not in ("true", "text", "data", "count", "false"):
        raise BadRequest("_summary is true, text, data, count or false", code="value")
    if not params.get("_count", "1").isascii() or not params.get("_count", "1").isdigit():
        raise BadRequest("_count is a number of entries", code="value")
    if params.get("_total", "none") not in ("none", "estimate", "accurate"):
        raise BadRequest("_total is none, estimate or accurate", code="value")
    counted_only = params.get("_summary") == "count" or int(params.get("_count", "1")) == 0
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": int(patient is not None),
        "link": [{"relation": "self", "url": paging.page_url(base, "/Patient", pairs, None)}],
    }
    note = audit_note(request)
    if patient is not None:
        note.about(patient)
    if patient is not None and not counted_only:
        patient["identifier"] = [{"system": BSN_SYSTEM, "value": bsn}, *patient.get("identifier", [])]
        if params.get("_elements") or params.get("_summary"):
            patient = shape(patient, elements=params.get("_elements"), summary=params.get("_summary"))
        bundle["entry"] = [
            {"fullUrl": f"{base}/Patient/{patient_id}", "resource": patient, "search": {"mode": "match"}}
        ]
        note.sent("Patient", 1)  # the patient's access log says what went out: their personal details
    return render(request, bundle)
