"""The one Principal every layer after auth reads (FHIR, consent, audit): who calls, with what rights, on
whose behalf and why. Built once per request from the verified token and the request's context headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rzcp.auth.scopes import ScopeSet

Kind = Literal["system", "patient", "person"]
Role = Literal["member", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("member", "auditor", "admin")

#: Authentication methods (RFC 8176 `amr`) that count as a second factor.
SECOND_FACTORS = frozenset({"mfa", "otp", "hwk", "sms", "swk", "pop"})
#: `acr` values that mean at least two factors (eIDAS substantial/high, DigiD Substantieel/Hoog).
STRONG_ACR = frozenset({"substantial", "high", "urn:etoegang:core:assurance-class:loa3", "loa3", "loa4"})


@dataclass(frozen=True)
class Identifier:
    """`system|value`, as in X-Acting-Practitioner."""

    system: str
    value: str

    def __str__(self) -> str:
        return f"{self.system}|{self.value}"


@dataclass(frozen=True)
class RequestContext:
    """Why and on whose behalf: X-Purpose-Of-Use, X-Acting-Practitioner, X-Break-Glass-Reason."""

    purpose_of_use: str = "TREAT"
    acting_practitioner: Identifier | None = None
    break_glass_reason: str | None = None

    @property
    def break_glass(self) -> bool:
        return self.purpose_of_use == "ETREAT"


@dataclass(frozen=True)
class Principal:
    kind: Kind
    #: client id (system), Patient id (patient), identity provider subject (person)
    subject: str
    scopes: ScopeSet
    role: Role | None = None
    #: every role a person holds (a system has its one `role`): an admin reads the trail only as an auditor
    roles: tuple[Role, ...] = ()
    client_id: str | None = None
    member_ura: str | None = None
    patient_id: str | None = None
    acr: str | None = None
    amr: tuple[str, ...] = ()
    token_id: str | None = None
    #: When the token was issued (its `iat`, naive UTC): one issued before its member's last suspension
    #: is refused, also after the member is reinstated.
    issued_at: datetime | None = None
    context: RequestContext = field(default_factory=RequestContext)

    @property
    def is_patient(self) -> bool:
        return self.kind == "patient"

    @property
    def is_system(self) -> bool:
        return self.kind == "system"

    @property
    def has_second_factor(self) -> bool:
        return bool(SECOND_FACTORS.intersection(self.amr)) or (self.acr or "").lower() in STRONG_ACR

    def with_context(self, context: RequestContext) -> Principal:
        return Principal(**{**self.__dict__, "context": context})

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        kind = claims.get("kind")
        if kind not in ("system", "patient", "person"):
            raise ValueError("token of unknown kind")
        amr = claims.get("amr") or ()
        role = claims.get("role") if claims.get("role") in ROLES else None
        listed = claims.get("roles")
        roles = tuple(r for r in listed if r in ROLES) if isinstance(listed, list) else ()
        return cls(
            kind=kind,
            subject=str(claims["sub"]),
            scopes=ScopeSet.parse(str(claims.get("scope", "")), lenient=True),
            role=role,
            roles=roles or ((role,) if role else ()),
            client_id=claims.get("client_id"),
            member_ura=claims.get("ura"),
            patient_id=claims.get("patient"),
            acr=claims.get("acr"),
            amr=tuple(str(a) for a in amr) if isinstance(amr, list) else (),
            token_id=claims.get("jti"),
            issued_at=_moment(_issued(claims)),
        )


#: The moment a token was issued, in milliseconds since the epoch: a private claim beside the
#: whole-second `iat` (rzcp.auth.tokens writes it).
ISSUED_MS = "rzcp_issued_ms"


def _issued(claims: dict[str, Any]) -> Any:
    """When the token was issued, in seconds: to the millisecond where our tokens say (`rzcp_issued_ms`),
    else its whole-second `iat`."""
    precise = claims.get(ISSUED_MS)
    if isinstance(precise, int) and not isinstance(precise, bool):
        return precise / 1000
    return claims.get("iat")


def _moment(epoch: Any) -> datetime | None:
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return None
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


#: Who calls when authentication is switched off (benchmarks only; refused in production).
UNAUTHENTICATED_BENCH = Principal(
    kind="system",
    subject="auth-disabled",
    scopes=ScopeSet.parse("system/*.cruds"),
    role="admin",
    client_id="auth-disabled",
)
