"""What the engine is asked and what it answers: plain, immutable values with no framework in them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

Effect = Literal["permit", "deny"]

#: Why a decision came out as it did (Decision.basis), stable for audits and tests.
BASIS_PERMITTED = "permitted"  # a consent permits it, and nothing at least as specific refuses
BASIS_REFUSED = "refused"  # a consent refuses it, at least as specifically as any permission
BASIS_NO_CONSENT = "no-consent"  # no consent covers the request: the region's default (deny)
BASIS_EXCEPTED = "excepted"  # the only permissions that came near carve this out (nested exception)
BASIS_SENSITIVE = "sensitive"  # permitted data, but with a sensitive label no permission names
BASIS_PURPOSE = "purpose-not-allowed"  # the purpose of use is not one the region allows
BASIS_EMERGENCY = "emergency"  # permitted by the region's break-the-glass rule
BASIS_EMERGENCY_OFF = "emergency-off"  # break-the-glass asked, but the region has it switched off
BASIS_EMERGENCY_EXPIRED = "emergency-expired"  # break-the-glass declared too long ago
BASIS_EMERGENCY_DATA = "emergency-not-covered"  # break-the-glass does not cover this data
BASIS_EMERGENCY_REQUESTER = "emergency-not-for-requester"  # the requester's category may not break the glass


@dataclass(frozen=True, slots=True)
class Request:
    """One question: may `source` make this patient's data available to `requester`, for `purpose`?

    Organisations are named by URA; `*_category` is the member's registered category (a category code of
    the policy or a national organisation-type code). The resource fields describe the data: asked before
    the data comes back (per source) they may be unknown (None); asked per resource they are exact.
    Tokens are `system|code`.
    """

    requester_ura: str
    requester_category: str | None
    source_ura: str | None
    source_category: str | None
    purpose: str
    moment: datetime
    resource_type: str
    #: Category and code tokens of the resource (Observation.category, .code ...); None: not known yet.
    codes: frozenset[str] | None = None
    #: meta.security tokens of the resource; None: not known yet.
    labels: frozenset[str] | None = None
    #: The clinical date of the data, for Consent.provision.dataPeriod; None: not known yet.
    data_moment: datetime | None = None
    #: When break-the-glass (purpose ETREAT) was declared; None: at `moment`.
    break_glass_since: datetime | None = None

    def about(self, **changes: object) -> Request:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Decider:
    """A consent that took part in a decision, and the provision in it that applied (`Consent.provision`
    or a nested one, as a FHIRPath-like path)."""

    consent_id: str
    version: str | None
    effect: Effect
    provision: str

    @property
    def reference(self) -> str:
        base = f"Consent/{self.consent_id}"
        return f"{base}/_history/{self.version}" if self.version else base


@dataclass(frozen=True, slots=True)
class Decision:
    """permit or deny, why (`basis`, stable; `reason`, readable), the consents that decided, and whether
    the answer is provisional. The readable reason is composed when first read: most decisions on the
    request path are never explained, only audited by basis and deciding consents."""

    effect: Effect
    basis: str
    explain: str | Callable[[], str] = field(repr=False, compare=False)
    deciding: tuple[Decider, ...] = ()
    #: True when the answer assumed something about data not known yet (its category, labels or date):
    #: the data that comes back must be decided again per resource.
    provisional: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        explain = self.explain
        if callable(explain):
            explain = explain()
            object.__setattr__(self, "explain", explain)
        return explain

    @property
    def permitted(self) -> bool:
        return self.effect == "permit"

    @property
    def consent_ids(self) -> tuple[str, ...]:
        return tuple(d.consent_id for d in self.deciding)

    def __repr__(self) -> str:
        ids = ", ".join(self.consent_ids)
        return (
            f"Decision({self.effect}, {self.basis}, [{ids}], provisional={self.provisional}: {self.reason})"
        )
