"""The request context headers of the contract, checked: `X-Purpose-Of-Use` (a v3 PurposeOfUse code the
region allows; TREAT when absent), `X-Acting-Practitioner` (`system|value`, a UZI, AGB or BIG number or an
identifier under an organisation's OID; required for patient data) and
`X-Break-Glass-Reason` (required with ETREAT, which is refused unless break-the-glass is enabled)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set

from rzcp.auth.bsn import holds_bsn, is_bsn_system
from rzcp.auth.principal import Identifier, Principal, RequestContext
from rzcp.errors import BadRequest, Forbidden

#: ASCII digits only: `str.isdigit` also takes superscripts and other scripts' digits, which no register
#: holds, and the trail must name a person someone can find.
_DIGITS = re.compile(r"[0-9]{1,12}")
_OID = re.compile(r"[0-9]+(\.[0-9]+)*")

#: The v3 PurposeOfUse codes (http://terminology.hl7.org/CodeSystem/v3-ActReason) a region may allow.
PURPOSE_OF_USE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
KNOWN_PURPOSES = frozenset(
    {
        "TREAT", "ETREAT", "COC", "CLINTRCH", "PATRQT", "FAMRQT", "PWATRNY", "SUPNWK", "HPAYMT", "HOPERAT",
        "HRESCH", "PUBHLTH", "HSYSADMIN", "HMARKT", "HQUALIMP", "TRAIN", "HLEGAL", "HDIRECT", "ETREATDS",
    }
)  # fmt: skip
MAX_REASON = 1000
#: The national registers of care professionals (system -> the name people know it by), their numbers all
#: digits (UZI 9, AGB 8, BIG 11).
PRACTITIONER_REGISTERS = {
    "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers": "UZI",
    "http://fhir.nl/fhir/NamingSystem/agb-z": "AGB",
    "http://fhir.nl/fhir/NamingSystem/big": "BIG",
}


#: The request context headers of the contract.
CONTEXT_HEADERS = ("X-Purpose-Of-Use", "X-Acting-Practitioner", "X-Break-Glass-Reason")


def parse_context(
    headers: Mapping[str, str], *, allowed: Set[str], break_glass_enabled: bool, default: str = "TREAT"
) -> RequestContext:
    """The context the headers give, refusing malformed values and purposes the region does not allow."""
    _each_once(headers)
    given = headers.get("x-purpose-of-use")
    purpose = default if given is None else given.strip()
    if not purpose:  # given but empty is a client's mistake, not a request for the default
        raise BadRequest(
            "X-Purpose-Of-Use is empty: give a v3 PurposeOfUse code, or leave it out", code="value"
        )
    if purpose not in KNOWN_PURPOSES:
        raise BadRequest(f"X-Purpose-Of-Use {purpose!r} is not a v3 PurposeOfUse code", code="value")
    reason = _reason(headers)
    if purpose == "ETREAT":
        if not break_glass_enabled:
            raise Forbidden("break-the-glass (ETREAT) is not enabled in this region")
        if reason is None:
            raise BadRequest("X-Purpose-Of-Use ETREAT needs an X-Break-Glass-Reason", code="required")
        if len(reason) > MAX_REASON:
            raise BadRequest(f"X-Break-Glass-Reason is longer than {MAX_REASON} characters", code="value")
    elif purpose not in allowed and purpose != default:
        raise Forbidden(f"the purpose of use {purpose} is not allowed in this region")
    elif reason is not None:
        raise BadRequest("X-Break-Glass-Reason goes only with X-Purpose-Of-Use ETREAT", code="invalid")
    practitioner = None
    raw = headers.get("x-acting-practitioner")
    if raw is not None:
        practitioner = _practitioner(parse_identifier(raw, "X-Acting-Practitioner"))
    return RequestContext(purpose, practitioner, reason)


def context_as_asked(headers: Mapping[str, str], default: str) -> RequestContext:
    """What the headers of a refused request say, for its audit record: a purpose only when it is a v3
    code (empty otherwise, never a guess), the practitioner only when it names one, the emergency reason
    only with ETREAT."""
    values = getattr(headers, "getlist", lambda name: [headers.get(name)])
    purposes = [v.strip() for v in values("x-purpose-of-use") if v]
    purpose = (purposes[0] if len(purposes) == 1 else "") if purposes else default
    if purpose not in KNOWN_PURPOSES:
        purpose = ""
    practitioner = None
    named = [v for v in values("x-acting-practitioner") if v]
    if len(named) == 1:
        try:
            practitioner = _practitioner(parse_identifier(named[0], "X-Acting-Practitioner"))
        except BadRequest:
            practitioner = None
    reason = (_reason(headers) or "")[:MAX_REASON] or None
    return RequestContext(purpose, practitioner, reason if purpose == "ETREAT" else None)


def _reason(headers: Mapping[str, str]) -> str | None:
    """X-Break-Glass-Reason as the practitioner wrote it. HTTP hands header values over as Latin-1, so
    a reason sent as UTF-8 ("patiënt bewusteloos") read as "patiÃ«nt" in the patient's log (a patient's
    walkthrough): its bytes are read as UTF-8, and as the Latin-1 they were when they are no UTF-8 (a
    client that sends Latin-1 is not refused for it: a review)."""
    raw = headers.get("x-break-glass-reason")
    if raw is None:
        return None
    data = raw.encode("latin-1", errors="replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = raw
    return text.strip() or None


def _each_once(headers: Mapping[str, str]) -> None:
    """A header given twice is refused: the gateway would act on one (the first) while a proxy, a log or
    the member's own system might read the other, and the audit trail must name who really acted."""
    getlist = getattr(headers, "getlist", None)  # Starlette's Headers; a plain mapping holds one each
    if getlist is None:
        return
    for name in CONTEXT_HEADERS:
        if len(getlist(name)) > 1:
            raise BadRequest(f"{name} is given more than once", code="value")


def _practitioner(identifier: Identifier) -> Identifier:
    """The audit trail must name a person someone can find (NEN 7513): a number in a national register, or
    an organisation's own identifier under its OID; not any `x|1`."""
    if identifier.system in PRACTITIONER_REGISTERS:
        if not _DIGITS.fullmatch(identifier.value):
            raise BadRequest(
                f"X-Acting-Practitioner: a {identifier.system} number is digits only", code="value"
            )
        return identifier
    if is_bsn_system(identifier.system):
        raise BadRequest(
            "X-Acting-Practitioner names a person by BSN; a BSN is recorded nowhere, the audit trail "
            "included: use the person's UZI, AGB or BIG number or the organisation's own identifier",
            code="value",
        )
    if identifier.system.startswith("urn:oid:") and _OID.fullmatch(identifier.system[8:]):
        if "," in identifier.value:  # two headers folded into one ("a, b"): which person acted?
            raise BadRequest("X-Acting-Practitioner names one person: a value without commas", code="value")
        if holds_bsn(identifier.value):
            # the value is the organisation's to choose, and the trail keeps it: not a BSN
            raise BadRequest(
                "X-Acting-Practitioner: this value could be a BSN, which is recorded nowhere; use the "
                "person's UZI, AGB or BIG number, or an employee number that is not a BSN",
                code="value",
            )
        return identifier
    raise BadRequest(
        "X-Acting-Practitioner must name the person by a UZI, AGB or BIG number "
        "(http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|<number>, .../agb-z|..., .../big|...) or by an "
        "identifier under the organisation's OID (urn:oid:<oid>|<value>)",
        code="value",
    )


def parse_identifier(raw: str, name: str) -> Identifier:
    """`system|value`; blanks around either are not part of it (an integrator's walkthrough wrote
    `system | value` and was told the system was not a register's)."""
    if len(raw) > 512:
        raise BadRequest(f"{name} is longer than 512 characters", code="value")
    system, sep, value = (part.strip() for part in raw.partition("|"))
    if not sep or not system or not value or "|" in value:
        raise BadRequest(f"{name} must be system|value, such as the UZI number of the person", code="value")
    return Identifier(system, value)


def require_practitioner(principal: Principal) -> None:
    """Member systems touching patient data must say on whose behalf they act."""
    if principal.is_system and principal.context.acting_practitioner is None:
        raise BadRequest(
            "X-Acting-Practitioner (system|value) is required for requests that touch patient data",
            code="required",
        )
