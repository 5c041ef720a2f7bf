"""The adapter protocol: how the exchange talks to a member organisation's system, whatever it runs.

An adapter is a class implementing `MemberAdapter`'s four hooks, shipped in a package that registers a
factory in the entry-point group `rzcp.adapters`:

    [project.entry-points."rzcp.adapters"]
    fhir-rest = "rzcp_fhir_rest:create"

The factory takes an `AdapterContext` (the process's shared HTTP client, limits, breakers) and returns the
adapter; one adapter instance serves every member whose `Member.adapter` names it. The core finds adapters
through `AdapterRegistry` and never imports one by name.

The hooks, all required:
- `search(member, query) -> SearchOutcome`: resources of one type for one patient (the member's own
  patient id); what the member returned that is not that (another patient, another type, a broken entry) is
  dropped and listed in `problems`, never passed on;
- `read(member, res_type, res_id, patient=None) -> ReadOutcome`: one resource by the member's id;
- `deliver(member, message, idempotency_key) -> DeliveryOutcome`: hand a FHIR message Bundle over, once
  per key to the receiver's knowledge: the key goes out as the Bundle's id and as an `Idempotency-Key`
  header, and the same key is sent again on every retry of the same message;
- `capabilities(member) -> Capabilities`: what the member's server says it supports.

A member's misbehaviour (slow, down, 5xx, garbage, wrong data) is never raised: it comes back as an outcome
with `failed=True` and/or problems, for the exchange to turn into an OperationOutcome issue. Exceptions
are left for the gateway's own bugs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import httpx

from rzcp.exchange.breaker import BreakerBoard
from rzcp.exchange.limits import ResponseLimits, RetryPolicy

ENTRY_POINT_GROUP = "rzcp.adapters"


# --- who is called -----------------------------------------------------------------------------------------


#: The client assertion algorithms the gateway signs with (SMART Backend Services asks for RS384 or ES384).
SMART_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256")


class AuthKind(StrEnum):
    NONE = "none"
    BEARER = "bearer"  # a static bearer token the member gave the region
    SMART = "smart-backend"  # SMART Backend Services to the member's own authorization server


@dataclass(frozen=True)
class MemberAuth:
    """How the gateway authenticates to a member's server (never how the member authenticates to us)."""

    kind: AuthKind = AuthKind.NONE
    #: BEARER: the token.
    token: str | None = None
    #: SMART: the member's token endpoint, the region's client id there, the private key (PEM or JWK
    #: JSON) that signs the `private_key_jwt` assertion, its key id, algorithm and the scopes asked for.
    token_url: str | None = None
    client_id: str | None = None
    private_key: str | None = None
    key_id: str | None = None
    algorithm: str = "RS384"
    scope: str = "system/*.rs"

    def __post_init__(self) -> None:
        if self.kind is AuthKind.BEARER and not self.token:
            raise ValueError("bearer auth needs a token")
        if self.kind is AuthKind.SMART and not (self.token_url and self.client_id and self.private_key):
            raise ValueError("SMART Backend Services auth needs token_url, client_id and private_key")
        if self.algorithm not in SMART_ALGORITHMS:
            raise ValueError(f"unsupported client assertion algorithm {self.algorithm!r}")

    def __repr__(self) -> str:  # never print a secret
        return f"MemberAuth(kind={self.kind.value!r}, client_id={self.client_id!r})"


#: The most pulls a member may be given at a time, per process (RZCP_MEMBER_MAX_PULLS has the same bound).
MAX_PULLS_LIMIT = 1000


@dataclass(frozen=True)
class Member:
    """A member organisation as the exchange calls it."""

    ura: str
    name: str
    category: str
    #: The member's FHIR base URL, without a trailing slash (`http://127.0.0.1:9101/fhir`).
    base_url: str
    adapter: str = "fhir-rest"
    #: The whole call's deadline in seconds (retries and pages included).
    timeout: float = 5.0
    auth: MemberAuth = field(default_factory=MemberAuth)
    #: Pulls one gateway process has under way at the member at a time (rzcp.exchange.gates); None: the
    #: gateway's setting (RZCP_MEMBER_MAX_PULLS).
    max_pulls: int | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"member {self.ura}: base URL {self.base_url!r} is not http(s)")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not 0 < self.timeout <= 120:
            raise ValueError(f"member {self.ura}: timeout {self.timeout} is not within (0, 120] seconds")
        if self.max_pulls is not None and not 1 <= self.max_pulls <= MAX_PULLS_LIMIT:
            raise ValueError(f"member {self.ura}: max_pulls {self.max_pulls} not within 1..{MAX_PULLS_LIMIT}")


# --- what is asked and what comes back ---------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    """A search of one resource type for one patient, in the member's own terms."""

    resource_type: str
    #: The member's local id of the patient; None only for searches not about one patient.
    patient: str | None
    #: Further search parameters, as (name, value) pairs, already translated for the member.
    params: Sequence[tuple[str, str]] = ()


class ProblemCode(StrEnum):
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    HTTP_ERROR = "http-error"
    INVALID_JSON = "invalid-json"
    INVALID_ANSWER = "invalid-answer"  # JSON, but not the FHIR shape asked for (not a searchset, ...)
    TOO_LARGE = "too-large"
    TRUNCATED = "truncated"  # more entries or pages than the limits allow; the rest was not read
    CIRCUIT_OPEN = "circuit-open"
    AUTH_FAILED = "auth-failed"
    WRONG_TYPE = "wrong-type"
    OTHER_PATIENT = "other-patient"
    NOT_MATCHING = "not-matching"  # an entry the member returned although a search parameter excludes it
    INVALID_ENTRY = "invalid-entry"
    MEMBER_WARNING = "member-warning"  # an OperationOutcome the member put in its answer


@dataclass(frozen=True)
class Problem:
    code: ProblemCode
    detail: str
    #: `Type/id` of a dropped entry, when it had one.
    reference: str | None = None


@dataclass
class SearchOutcome:
    member: str  # URA
    resources: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: True when the member gave no usable answer at all (nothing in `resources` then).
    failed: bool = False
    #: True when resources were kept but the answer is known to be partial (cut off, a page lost).
    partial: bool = False
    #: Match entries the member sent (kept or dropped), for comparing with the Bundle's `total`.
    matches: int = 0


class ReadStatus(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not-found"  # 404 or 410, or the resource was dropped as not the patient's
    FAILED = "failed"


@dataclass
class ReadOutcome:
    member: str
    status: ReadStatus
    resource: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    RETRY_LATER = "retry-later"  # down, slow, 5xx, 429, circuit open: try again with the same key
    REJECTED = "rejected"  # the receiver refused the message for good (a 4xx other than 408/425/429)


@dataclass
class DeliveryOutcome:
    member: str
    status: DeliveryStatus
    #: The receiver's HTTP status and its answer (a response Bundle or an OperationOutcome), when any.
    http_status: int | None = None
    answer: dict[str, Any] | None = None
    detail: str = ""
    #: Seconds the receiver asked us to wait (Retry-After), when it said.
    retry_after: float | None = None
    #: False when the receiver was not called at all (its circuit is open): no attempt is spent on it.
    called: bool = True
    #: The receiver's own words for turning the message down (its OperationOutcome), one line, bounded:
    #: shown to the sender in its Task, never written to the audit trail (free text from outside).
    reason: str | None = None


@dataclass
class Capabilities:
    member: str
    available: bool
    fhir_version: str | None = None
    #: Resource type -> the search parameters the member declares for it.
    resource_types: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Operations the member declares at system or type level (`process-message`, `everything`, ...).
    operations: frozenset[str] = frozenset()
    problems: list[Problem] = field(default_factory=list)


# --- the contract ------------------------------------------------------------------------------------------


@dataclass
class AdapterContext:
    """What the process gives every adapter: one HTTP client, the limits, the breakers."""

    http: httpx.AsyncClient
    limits: ResponseLimits = field(default_factory=ResponseLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breakers: BreakerBoard = field(default_factory=BreakerBoard)


class MemberAdapter(abc.ABC):
    """The base contract of a member adapter. Every hook must be implemented; none may raise for what a
    member does (report it in the outcome instead)."""

    #: The entry-point name it is registered under (`fhir-rest`).
    name: str

    @abc.abstractmethod
    async def search(self, member: Member, query: SearchQuery) -> SearchOutcome: ...

    @abc.abstractmethod
    async def read(
        self, member: Member, res_type: str, res_id: str, *, patient: str | None = None
    ) -> ReadOutcome:
        """One resource; with `patient`, a resource that is not about that patient is not returned."""

    @abc.abstractmethod
    async def deliver(
        self, member: Member, message: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryOutcome: ...

    @abc.abstractmethod
    async def capabilities(self, member: Member) -> Capabilities: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the adapter holds (never the shared HTTP client: its owner closes that)."""


AdapterFactory = Callable[[AdapterContext], MemberAdapter]


class UnknownAdapter(LookupError):
    pass


def discover() -> dict[str, EntryPoint]:
    """The adapters installed in this environment, by entry-point name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class AdapterRegistry:
    """Builds each installed adapter once, on first use, with the process's shared context."""

    def __init__(
        self, context: AdapterContext, *, available: Mapping[str, EntryPoint | AdapterFactory] | None = None
    ) -> None:
        self.context = context
        self._available: dict[str, EntryPoint | AdapterFactory] = dict(
            discover() if available is None else available
        )
        self._built: dict[str, MemberAdapter] = {}

    def names(self) -> list[str]:
        return sorted(self._available)

    def get(self, name: str) -> MemberAdapter:
        adapter = self._built.get(name)
        if adapter is not None:
            return adapter
        source = self._available.get(name)
        if source is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownAdapter(f"no adapter {name!r} is installed (installed: {known})")
        factory = source.load() if isinstance(source, EntryPoint) else source
        adapter = factory(self.context)
        if not isinstance(adapter, MemberAdapter):
            raise TypeError(f"adapter {name!r} does not implement rzcp.exchange.adapters.MemberAdapter")
        self._built[name] = adapter
        return adapter

    def for_member(self, member: Member) -> MemberAdapter:
        return self.get(member.adapter)

    async def aclose(self) -> None:
        for adapter in self._built.values():
            await adapter.aclose()
        self._built.clear()
