"""The FHIR REST adapter: a member that speaks FHIR R4 REST (search, read, `$process-message`, metadata).

Every call has one deadline, the member's `timeout`, covering retries, pages and a token fetch. Reads
(search pages, read, metadata) are retried with jittered exponential back-off on connection failures and on
429/502/503/504; a delivery is never retried here (the outbox retries with the same idempotency key). A
circuit breaker per member (rzcp.exchange.breaker; per process, a health heuristic, not an access rule)
counts timeouts, unreachable servers, 5xx and unreadable answers; 4xx answers and dropped entries are not
failures of the member's server. Response bodies are read up to `ResponseLimits.max_bytes`, a search up to
`max_entries` resources over at most `max_pages` pages, following `next` links only on the member's own
origin; the first page asks for `_count=max_entries`, so a member's own page size decides how many pages
that takes. What comes back is checked entry by entry (checks.py) and what fails a check is dropped and
reported, never passed on; nothing in an answer is assumed to have FHIR's shape (an `issue` that is a
number, a `link` that is a string, a next link no client can send): what cannot be read is reported, and
what may be missing because of it makes the search partial. Calls go over the aiohttp session under the
gateway's client when it has one (bench/README.md, "The exchange: a pull through the gateway"), else
through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import httpx
import orjson

from rzcp.addresses import no_server_url
from rzcp.exchange.adapters import (
    AdapterContext,
    Capabilities,
    DeliveryOutcome,
    DeliveryStatus,
    Member,
    MemberAdapter,
    Problem,
    ProblemCode,
    ReadOutcome,
    ReadStatus,
    SearchOutcome,
    SearchQuery,
)
from rzcp.exchange.http import GatewayClient
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp_fhir_rest.auth import AuthFailed, MemberCredentials
from rzcp_fhir_rest.checks import EntryChecker, patient_param
from rzcp_fhir_rest.replies import objects, response_code, stated_reason

FHIR_JSON = "application/fhir+json"
ACCEPT = {"Accept": FHIR_JSON}
#: Capabilities are asked again after this many seconds.
CAPABILITIES_TTL = 300.0


class _TooLarge(Exception):
    """The answer's body is over the byte limit; `status` is the HTTP status it came with."""

    status: int | None = None


#: A connection that failed or timed out (retryable), over either client.
_TRANSPORT_FAILURES = (httpx.TransportError, aiohttp.ClientConnectionError, TimeoutError, OSError)
#: Everything an exchange turns into its answer's problem (`_failure`); the rest are bugs and raise.
_FAILURES = (
    AuthFailed,
    _TooLarge,
    *_TRANSPORT_FAILURES,
    httpx.HTTPError,
    httpx.InvalidURL,  # a member's next link httpx will not send (aiohttp's InvalidURL is a ClientError)
    aiohttp.ClientError,
)


@dataclass
class _Answer:
    """One HTTP exchange, read and bounded: a status and body, or a problem (and whether it is the
    server's failure, for the breaker)."""

    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    problem: Problem | None = None
    server_failure: bool = False
    retryable: bool = False

    def json(self) -> tuple[Any, Problem | None]:
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None, Problem(ProblemCode.INVALID_JSON, "the answer is not valid JSON")
        # What the gateway cannot write out again it cannot pass on: one entry nested past orjson's 254
        # levels failed every pull of the member's patients with a 500 (found by review). The resources sit
        # as deep in the gateway's Bundle as in the member's, so writing the answer once (~6 us for 15 kB)
        # is the one check needed.
        try:
            orjson.dumps(parsed)
        except TypeError:
            return None, Problem(ProblemCode.INVALID_JSON, "the answer is nested too deeply to pass on")
        return parsed, None


def _transport_problem(exc: BaseException) -> Problem:
    """Timeout or unreachable, looking through the transport's wrapping (aiohttp's refused connection
    surfaces as httpx.ConnectTimeout; its cause says what happened)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | httpx.ConnectError) or (
            isinstance(seen, OSError) and not isinstance(seen, TimeoutError) and seen.errno is not None
        ):
            return Problem(ProblemCode.UNREACHABLE, "the member's server could not be reached")
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Problem(ProblemCode.TIMEOUT, "the member did not answer in time")
    return Problem(ProblemCode.UNREACHABLE, f"the connection to the member failed ({type(exc).__name__})")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    raw = headers.get("retry-after") if headers is not None else None
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(raw))
    return None


def _under_base(url: str, base: str) -> bool:
    """Whether a next link stays on the member's server and under its FHIR base: a vendor serving several
    members from one host has them under different paths, and a link to another's (a security test's
    worry) would read that member's data with this one's credentials."""
    try:
        one, two = urlsplit(url), urlsplit(base)
    except ValueError:  # a link the member garbled (`http://[::1`) is on no server of the member's
        return False
    if (one.scheme, one.netloc) != (two.scheme, two.netloc):
        return False
    plain = unquote(one.path)
    if any(c in plain for c in ";\\%"):
        # path parameters (`..;` is `..` to Tomcat and Jetty), backslashes (`/` to IIS) and what is still
        # encoded after one decoding are read otherwise by some servers than here: not followed (a review)
        return False
    path = posixpath.normpath("/" + plain)  # `/fhir/../other`, `%2e%2e` included
    root = posixpath.normpath("/" + unquote(two.path))
    return path == root or path.startswith(root.rstrip("/") + "/")


class FhirRestAdapter(MemberAdapter):
    name = "fhir-rest"

    def __init__(self, context: AdapterContext, registry: SearchRegistry | None = None) -> None:
        self.context = context
        self.http = context.http
        self.registry = registry or SearchRegistry.default()
        self.credentials = MemberCredentials(context.http)
        #: The client's own headers (User-Agent ...) for calls made with aiohttp directly; aiohttp sets the
        #: Accept-Encoding it can decode itself.
        self._headers = {
            k.lower(): v for k, v in context.http.headers.items() if k.lower() != "accept-encoding"
        }
        self._capabilities: dict[tuple[str, str], tuple[float, Capabilities]] = {}

    # --- the hooks -------------------------------------------------------------------------------------

    async def search(self, member: Member, query: SearchQuery) -> SearchOutcome:
        outcome = SearchOutcome(member.ura)
        params: list[tuple[str, str]] | None = list(query.params)
        if query.patient is not None:
            name = patient_param(self.registry, query.resource_type)
            if name is None:
                outcome.failed = True
                detail = f"{query.resource_type} cannot be searched by patient"
                outcome.problems.append(Problem(ProblemCode.INVALID_ANSWER, detail))
                return outcome
            value = query.patient if name == "_id" else f"Patient/{query.patient}"
            params = [(name, value), *(p for p in query.params if p[0] not in {"patient", "subject"})]
        # Pages as large as the member allows: at its default size (often 20) the page limit would cut a
        # search off at a hundred entries, far below max_entries.
        if not any(name == "_count" for name, _ in params):
            params = [*params, ("_count", str(self.context.limits.max_entries))]
        breaker = self.context.breakers.for_member(member.ura, member.base_url)
        if not breaker.allow():
            outcome.failed = True
            outcome.problems.append(self._circuit_open(breaker.retry_in()))
            return outcome
        limits = self.context.limits
        checker = EntryChecker(query, self.registry)
        deadline = asyncio.get_running_loop().time() + member.timeout
        url: str | None = f"{member.base_url}/{query.resource_type}"
        pages = 0
        total: int | None = None
        server_ok = True
        while url is not None:
            pages += 1
            answer = await self._get(member, url, params, deadline)
            params = None  # a next link carries its own query
            problem = answer.problem or self._status_problem(answer)
            bundle: Any = None
            if problem is None:
                bundle, problem = answer.json()
                if problem is None and not (
                    isinstance(bundle, dict)
                    and bundle.get("resourceType") == "Bundle"
                    and bundle.get("type") == "searchset"
                ):
                    problem = Problem(ProblemCode.INVALID_ANSWER, "the answer is not a searchset Bundle")
                if problem is not None:
                    answer.server_failure = True
            if problem is not None:
                outcome.problems.append(problem)
                if pages == 1:
                    outcome.failed = True
                    server_ok = not answer.server_failure
                else:
                    outcome.partial = True
                break
            if pages == 1 and _is_count(bundle.get("total")):
                total = bundle["total"]
            url = self._take_entries(bundle, checker, outcome)
            if url is None:
                if total is not None and total > outcome.matches and not outcome.partial:
                    # Some servers (Medplum's in-memory one) page without `next` links.
                    outcome.partial = True
                    detail = (
                        f"the member counts {total} matches but gave {outcome.matches} without a next link"
                    )
                    outcome.problems.append(Problem(ProblemCode.TRUNCATED, detail))
                break
            if not _under_base(url, member.base_url):
                outcome.partial = True
                outcome.problems.append(
                    Problem(ProblemCode.INVALID_ANSWER, "a next link points away from the member's FHIR base")
                )
                break
            if pages >= limits.max_pages:
                outcome.partial = True
                detail = f"more than {limits.max_pages} pages; the rest was not read"
                outcome.problems.append(Problem(ProblemCode.TRUNCATED, detail))
                break
        if server_ok:
            breaker.record_success()
        else:
            breaker.record_failure()
        return outcome

    async def read(
        self, member: Member, res_type: str, res_id: str, *, patient: str | None = None
    ) -> ReadOutcome:
        breaker = self.context.breakers.for_member(member.ura, member.base_url)
        if not breaker.allow():
            problem = self._circuit_open(breaker.retry_in())
            return ReadOutcome(member.ura, ReadStatus.FAILED, problems=[problem])
        deadline = asyncio.get_running_loop().time() + member.timeout
        answer = await self._get(member, f"{member.base_url}/{res_type}/{res_id}", None, deadline)
        if answer.problem is None and answer.status in {404, 410}:
            breaker.record_success()
            return ReadOutcome(member.ura, ReadStatus.NOT_FOUND)
        problem = answer.problem or self._status_problem(answer)
        resource: Any = None
        if problem is None:
            resource, problem = answer.json()
            if problem is not None:
                answer.server_failure = True
        if problem is not None:
            breaker.record_failure() if answer.server_failure else breaker.record_success()
            return ReadOutcome(member.ura, ReadStatus.FAILED, problems=[problem])
        breaker.record_success()
        checker = EntryChecker(SearchQuery(res_type, patient), self.registry)
        problem = checker.check(resource)
        if problem is None and resource.get("id") != res_id:
            problem = Problem(ProblemCode.INVALID_ENTRY, f"asked for {res_type}/{res_id}, got another id")
        if problem is not None:
            status = ReadStatus.NOT_FOUND if problem.code is ProblemCode.OTHER_PATIENT else ReadStatus.FAILED
            return ReadOutcome(member.ura, status, problems=[problem])
        return ReadOutcome(member.ura, ReadStatus.FOUND, resource=resource)

    async def deliver(
        self, member: Member, message: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryOutcome:
        breaker = self.context.breakers.for_member(member.ura, member.base_url)
        if not breaker.allow():
            retry_in = breaker.retry_in()
            return DeliveryOutcome(
                member.ura,
                DeliveryStatus.RETRY_LATER,
                detail="circuit open",
                retry_after=retry_in or None,
                called=False,
            )
        body = orjson.dumps({**message, "id": idempotency_key})
        headers = {"Content-Type": FHIR_JSON, "Idempotency-Key": idempotency_key}
        deadline = asyncio.get_running_loop().time() + member.timeout
        answer = await self._exchange(
            member, "POST", f"{member.base_url}/$process-message", None, body, headers, deadline
        )
        if answer.problem is not None:
            breaker.record_failure() if answer.server_failure else breaker.record_success()
            if answer.problem.code is ProblemCode.TOO_LARGE and 200 <= (answer.status or 0) < 300:
                # the receiver took the message: its answer is not needed, and too large to keep (a probe's
                # receiver got the same letter six times, the sender was told "failed")
                detail = f"delivered ({answer.problem.detail}: not kept)"
                return DeliveryOutcome(member.ura, DeliveryStatus.DELIVERED, answer.status, None, detail)
            return DeliveryOutcome(member.ura, DeliveryStatus.RETRY_LATER, detail=answer.problem.detail)
        status = answer.status or 0
        parsed: Any = None
        if answer.body:
            parsed, _ = answer.json()
        reply = parsed if isinstance(parsed, dict) else None
        if status >= 500:
            breaker.record_failure()
        else:
            breaker.record_success()
        code = response_code(reply) if 200 <= status < 300 else None
        if 200 <= status < 300 and code not in ("fatal-error", "transient-error"):
            return DeliveryOutcome(member.ura, DeliveryStatus.DELIVERED, status, reply, "delivered")
        if 300 <= status < 400:  # not followed: a message goes only to the address the registry holds
            detail = f"the receiver answered {status}, a redirect: its registered address may be out of date"
            return DeliveryOutcome(member.ura, DeliveryStatus.RETRY_LATER, status, reply, detail)
        said = stated_reason(reply)  # the receiver's words, kept apart: the Task shows them, the trail not
        if code == "fatal-error":
            detail = "the receiver rejected the message"
            return DeliveryOutcome(member.ura, DeliveryStatus.REJECTED, status, reply, detail, reason=said)
        if code == "transient-error":
            detail = "the receiver could not process the message yet"
            retry = _retry_after(answer.headers)
            return DeliveryOutcome(
                member.ura, DeliveryStatus.RETRY_LATER, status, reply, detail, retry, reason=said
            )
        if status in {401, 408, 425, 429} or status >= 500:
            if status == 401:
                self.credentials.invalidate(member)
            return DeliveryOutcome(
                member.ura,
                DeliveryStatus.RETRY_LATER,
                status,
                reply,
                f"the receiver answered {status}",
                _retry_after(answer.headers),
                reason=said,
            )
        detail = f"the receiver refused the message ({status})"
        return DeliveryOutcome(member.ura, DeliveryStatus.REJECTED, status, reply, detail, reason=said)

    async def capabilities(self, member: Member) -> Capabilities:
        loop = asyncio.get_running_loop()
        cached = self._capabilities.get((member.ura, member.base_url))  # a moved member is asked anew
        if cached is not None and loop.time() - cached[0] < CAPABILITIES_TTL:
            return cached[1]
        breaker = self.context.breakers.for_member(member.ura, member.base_url)
        if not breaker.allow():
            return Capabilities(member.ura, False, problems=[self._circuit_open(breaker.retry_in())])
        answer = await self._get(member, f"{member.base_url}/metadata", None, loop.time() + member.timeout)
        problem = answer.problem or self._status_problem(answer)
        statement: Any = None
        if problem is None:
            statement, problem = answer.json()
            if problem is None and not (
                isinstance(statement, dict) and statement.get("resourceType") == "CapabilityStatement"
            ):
                problem = Problem(ProblemCode.INVALID_ANSWER, "the answer is not a CapabilityStatement")
            if problem is not None:
                answer.server_failure = True
        if problem is not None:
            breaker.record_failure() if answer.server_failure else breaker.record_success()
            return Capabilities(member.ura, False, problems=[problem])
        breaker.record_success()
        found = _parse_capabilities(member.ura, statement)
        self._capabilities[(member.ura, member.base_url)] = (loop.time(), found)
        return found

    # --- HTTP ------------------------------------------------------------------------------------------

    @staticmethod
    def _circuit_open(retry_in: float) -> Problem:
        return Problem(
            ProblemCode.CIRCUIT_OPEN,
            f"the member failed repeatedly; not asked again for {retry_in:.0f} s",
        )

    @staticmethod
    def _status_problem(answer: _Answer) -> Problem | None:
        status = answer.status or 0
        if 200 <= status < 300:
            return None
        if status in {401, 403}:
            detail = f"the member refused the gateway's credentials ({status})"
            return Problem(ProblemCode.AUTH_FAILED, detail)
        if status >= 500:
            answer.server_failure = True
        return Problem(ProblemCode.HTTP_ERROR, f"the member answered HTTP {status}")

    async def _get(
        self, member: Member, url: str, params: Sequence[tuple[str, str]] | None, deadline: float
    ) -> _Answer:
        """A GET, retried with back-off while the deadline allows (idempotent, so safe to repeat)."""
        policy = self.context.retry
        loop = asyncio.get_running_loop()
        attempt = 0
        refreshed = False
        while True:
            answer = await self._exchange(member, "GET", url, params, None, ACCEPT, deadline)
            if answer.status == 401 and member.auth.kind.value == "smart-backend" and not refreshed:
                self.credentials.invalidate(member)  # the token may have been revoked: one fresh try
                refreshed = True
                continue
            if not answer.retryable or attempt >= policy.retries:
                return answer
            attempt += 1
            pause = policy.delay(attempt)
            asked = _retry_after(answer.headers)
            if asked is not None:
                pause = max(pause, asked)
            if loop.time() + pause >= deadline:
                return answer
            await asyncio.sleep(pause)

    async def _exchange(
        self,
        member: Member,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | None,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: float,
    ) -> _Answer:
        """One request within the deadline; the body read up to the byte limit. Never raises for the
        member: a failure comes back as the answer's problem. Over the client's aiohttp session when it
        has one (less than half the CPU of going through httpx), else through httpx."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return _Answer(problem=Problem(ProblemCode.TIMEOUT, "the member did not answer in time"))
        if no_server_url(url):  # an address registered before the rule, written as an IP (the resolver
            # sees names only: a review)
            return _Answer(problem=Problem(ProblemCode.UNREACHABLE, "the member's address is not a server's"))
        session = self.http.aiohttp_session() if isinstance(self.http, GatewayClient) else None
        if session is not None:
            return await self._exchange_aiohttp(
                session, member, method, url, params, content, headers, deadline, remaining
            )
        try:
            async with asyncio.timeout_at(deadline):
                auth = await self.credentials.headers(member, remaining)
                request = self.http.build_request(
                    method,
                    url,
                    params=list(params) if params else None,
                    content=content,
                    headers={**headers, **auth},
                    timeout=httpx.Timeout(remaining),
                )
                response = await self.http.send(request, stream=True)
                try:
                    body = await self._read_bounded(response)
                except _TooLarge as exc:
                    exc.status = response.status_code
                    raise
                finally:
                    await response.aclose()
        except _FAILURES as exc:
            return self._failure(exc)
        retryable = response.status_code in self.context.retry.retry_statuses
        return _Answer(response.status_code, body, response.headers, retryable=retryable)

    async def _exchange_aiohttp(
        self,
        session: aiohttp.ClientSession,
        member: Member,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | None,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: float,
        remaining: float,
    ) -> _Answer:
        """`_exchange` over aiohttp: the same deadline, limits and mapping of failures."""
        try:
            async with asyncio.timeout_at(deadline):
                auth = await self.credentials.headers(member, remaining)
                sent = {**self._headers, **{k.lower(): v for k, v in (*headers.items(), *auth.items())}}
                async with session.request(
                    method,
                    url,
                    params=list(params) if params else None,
                    data=content,
                    headers=sent,
                    allow_redirects=False,
                ) as response:
                    try:
                        body = await self._read_bounded_aiohttp(response)
                    except _TooLarge as exc:
                        exc.status = response.status
                        raise
        except _FAILURES as exc:
            return self._failure(exc)
        retryable = response.status in self.context.retry.retry_statuses
        return _Answer(response.status, body, response.headers, retryable=retryable)

    def _failure(self, exc: BaseException) -> _Answer:
        """A failed exchange as the answer's problem, the same over httpx and aiohttp."""
        if isinstance(exc, AuthFailed):
            return _Answer(problem=Problem(ProblemCode.AUTH_FAILED, str(exc)))
        if isinstance(exc, _TooLarge):
            limit = self.context.limits.max_bytes
            problem = Problem(ProblemCode.TOO_LARGE, f"the answer is larger than {limit} bytes")
            return _Answer(exc.status, problem=problem)
        if isinstance(exc, _TRANSPORT_FAILURES):
            return _Answer(problem=_transport_problem(exc), server_failure=True, retryable=True)
        # a malformed answer (bad headers, broken chunking ...)
        detail = f"the answer could not be read ({type(exc).__name__})"
        return _Answer(problem=Problem(ProblemCode.INVALID_ANSWER, detail), server_failure=True)

    async def _read_bounded_aiohttp(self, response: aiohttp.ClientResponse) -> bytes:
        return await self._capped(response.content_length, response.content.iter_any())

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        size = int(declared) if declared is not None and (declared.isascii() and declared.isdigit()) else None
        return await self._capped(size, response.aiter_bytes())

    async def _capped(self, declared: int | None, chunks: AsyncIterator[bytes]) -> bytes:
        """The body, refused (`_TooLarge`) as soon as it is declared or read past the byte limit."""
        limit = self.context.limits.max_bytes
        if declared is not None and declared > limit:
            raise _TooLarge
        kept: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            kept.append(chunk)
        return b"".join(kept)

    # --- answers ---------------------------------------------------------------------------------------

    def _take_entries(
        self, bundle: dict[str, Any], checker: EntryChecker, outcome: SearchOutcome
    ) -> str | None:
        """Check and keep the page's entries; the next page's URL, or None when done or cut off."""
        limit = self.context.limits.max_entries
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            outcome.problems.append(Problem(ProblemCode.INVALID_ANSWER, "Bundle.entry is not a list"))
            outcome.partial = True
            return None
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            search = entry.get("search") if isinstance(entry, dict) else None
            mode = search.get("mode") if isinstance(search, dict) else None
            if mode == "outcome" or (
                isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome"
            ):
                outcome.problems.append(Problem(ProblemCode.MEMBER_WARNING, _outcome_text(resource)))
                continue
            if mode == "include":
                continue  # not asked for; never passed on unchecked
            outcome.matches += 1
            problem = checker.check(resource)
            if problem is not None:
                outcome.problems.append(problem)
                continue
            if len(outcome.resources) >= limit:
                outcome.partial = True
                outcome.problems.append(
                    Problem(ProblemCode.TRUNCATED, f"more than {limit} resources; the rest was not read")
                )
                return None
            outcome.resources.append(resource)  # type: ignore[arg-type]
        return _next_url(bundle, outcome)


def _next_url(bundle: dict[str, Any], outcome: SearchOutcome) -> str | None:
    """The next page's URL, None on the last page. Links that cannot be read may have hidden a next page,
    so they leave the search partial rather than looking complete."""
    links = bundle.get("link")
    if links is None:
        return None
    urls = [link.get("url") for link in objects(links) if link.get("relation") == "next"]
    if isinstance(links, list) and all(isinstance(url, str) for url in urls):
        return urls[0] if urls else None
    outcome.partial = True
    outcome.problems.append(Problem(ProblemCode.INVALID_ANSWER, "Bundle.link cannot be read"))
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _outcome_text(resource: Any) -> str:
    """The member's own words for its warning, or a plain sentence when the outcome has none to read."""
    return stated_reason(resource) or "the member reported an issue with its answer"


def _parse_capabilities(ura: str, statement: dict[str, Any]) -> Capabilities:
    types: dict[str, frozenset[str]] = {}
    operations: set[str] = set()
    for rest in objects(statement.get("rest")):
        if rest.get("mode", "server") != "server":
            continue
        operations.update(_operation_names(rest))
        for resource in objects(rest.get("resource")):
            if not isinstance(resource.get("type"), str):
                continue
            names = {
                p["name"] for p in objects(resource.get("searchParam")) if isinstance(p.get("name"), str)
            }
            types[resource["type"]] = frozenset(names)
            operations.update(_operation_names(resource))
    if objects(statement.get("messaging")):
        operations.add("process-message")
    version = statement.get("fhirVersion")
    return Capabilities(
        ura,
        True,
        fhir_version=version if isinstance(version, str) else None,
        resource_types=types,
        operations=frozenset(operations),
    )


def _operation_names(declaring: dict[str, Any]) -> set[str]:
    return {
        op["name"].lstrip("$")
        for op in objects(declaring.get("operation"))
        if isinstance(op.get("name"), str)
    }
