"""Properties the engine must keep for any consents and any request (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rzcp.consent.cases import consent_from_compact
from rzcp.consent.compiled import compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import Decision, Request
from rzcp.consent.policy import Policy, load_policy, parse_policy

POLICY = load_policy()
EMERGENCY = parse_policy(
    {**POLICY.document.model_dump(), "emergency": {**POLICY.document.emergency.model_dump(), "enabled": True}}
)
MEMBERS = {
    "00000101": "huisartsen",
    "00000201": "ziekenhuizen-labs",
    "00000202": "V6",
    "00000301": "apotheken",
    "00000401": "ggz",
    "00000501": "T2",
}
CATEGORIES = ["huisartsen", "ziekenhuizen-labs", "apotheken", "ggz", "verpleging-verzorging", "V6", "T2"]
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITAL = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
HB = "http://loinc.org|718-7"
RESOURCES: list[tuple[str, frozenset[str] | None]] = [
    ("MedicationRequest", frozenset()),
    ("Observation", frozenset({LAB, HB})),
    ("Observation", frozenset({VITAL})),
    ("Observation", None),
    ("Condition", frozenset()),
    ("AllergyIntolerance", frozenset()),
    ("Encounter", frozenset()),
]
START = datetime(2024, 1, 1)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

moments = st.integers(min_value=0, max_value=3 * 365).map(lambda d: START + timedelta(days=d, hours=10))


def _day(offset: int) -> str:
    return (START + timedelta(days=offset)).date().isoformat()


periods = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 3 * 365), st.integers(0, 400)).map(
        lambda t: f"{_day(t[0])} / {_day(t[0] + t[1])}"
    ),
    st.integers(0, 3 * 365).map(lambda d: f"{_day(d)} / "),
)
parties = st.one_of(
    st.none(),
    st.sampled_from(CATEGORIES),
    st.sampled_from(sorted(MEMBERS)).map(lambda u: f"ura:{u}"),
)


_DATA = ["medicatie", "labuitslagen", "allergieen", "problemen", "vitale-functies", "alle-gegevens"]
_CONDITIONS: tuple[tuple[str, st.SearchStrategy[Any]], ...] = (
    ("to", parties),
    ("from", parties),
    ("data", st.lists(st.sampled_from(_DATA), min_size=1, max_size=2, unique=True)),
    ("codes", st.just([HB])),
    ("labels", st.just(["PSY"])),
    ("purpose", st.lists(st.sampled_from(["TREAT", "COC", "PATRQT"]), min_size=1, max_size=2, unique=True)),
    ("period", periods),
    ("data_period", periods),
)
_USE = st.lists(st.sampled_from([key for key, _ in _CONDITIONS]), max_size=3, unique=True)


def _conditions(draw: Any) -> dict[str, Any]:
    """A provision's conditions: a few of the possible ones, each with a drawn value."""
    chosen = set(draw(_USE))
    out: dict[str, Any] = {}
    for key, strategy in _CONDITIONS:
        if key in chosen:
            value = draw(strategy)
            if value is not None:
                out[key] = value
    return out


@st.composite
def compact_consents(draw: Any, effect: str | None = None, index: int = 0) -> dict[str, Any]:
    effect = effect or draw(st.sampled_from(["permit", "deny"]))
    provision = _conditions(draw)
    if draw(st.integers(0, 3)) == 0:
        inner = "deny" if effect == "permit" else "permit"
        provision["except"] = [{inner: _conditions(draw)}]
    status = draw(st.sampled_from(["active", "active", "active", "inactive"]))
    return {"id": f"c{index}-{draw(st.integers(0, 10**6))}", "status": status, effect: provision}


@st.composite
def consent_lists(draw: Any, max_size: int = 6) -> list[dict[str, Any]]:
    size = draw(st.integers(0, max_size))
    compact = [draw(compact_consents(index=i)) for i in range(size)]
    return [consent_from_compact(c, POLICY) for c in compact]


@st.composite
def requests(draw: Any) -> Request:
    requester = draw(st.sampled_from(sorted(MEMBERS)))
    source = draw(st.sampled_from(sorted(MEMBERS)))
    resource_type, codes = draw(st.sampled_from(RESOURCES))
    labels = draw(
        st.sampled_from(
            [frozenset(), frozenset({"http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"}), None]
        )
    )
    return Request(
        requester_ura=requester,
        requester_category=MEMBERS[requester],
        source_ura=source,
        source_category=MEMBERS[source],
        purpose=draw(st.sampled_from(["TREAT", "COC", "PATRQT", "ETREAT", "HMARKT"])),
        moment=draw(moments),
        resource_type=resource_type,
        codes=codes,
        labels=labels if codes is not None else None,
        data_moment=draw(st.one_of(st.none(), moments)),
    )


def _key(decision: Decision) -> tuple[str, str, tuple[str, ...]]:
    return decision.effect, decision.basis, tuple(sorted(decision.consent_ids))


def _policies() -> st.SearchStrategy[Policy]:
    return st.sampled_from([POLICY, EMERGENCY])


@SETTINGS
@given(request=requests(), policy=_policies())
def test_no_consents_deny_everything_but_the_emergency_rule(request: Request, policy: Policy) -> None:
    decision = decide(compile_consents([]), policy, request)
    assert decision.effect == "deny" or decision.basis == "emergency"
    if policy is POLICY:
        assert decision.effect == "deny"


@SETTINGS
@given(
    consents=consent_lists(),
    refusal=compact_consents(effect="deny", index=99),
    request=requests(),
    policy=_policies(),
)
def test_adding_a_refusal_never_widens_access(
    consents: list[dict[str, Any]], refusal: dict[str, Any], request: Request, policy: Policy
) -> None:
    before = decide(compile_consents(consents), policy, request)
    after = decide(compile_consents([*consents, consent_from_compact(refusal, POLICY)]), policy, request)
    if before.effect == "deny":
        assert after.effect == "deny", (before.reason, after.reason)


@SETTINGS
@given(consents=consent_lists(), request=requests(), policy=_policies(), pick=st.integers(0, 100))
def test_revoking_a_consent_never_widens_access(
    consents: list[dict[str, Any]], request: Request, policy: Policy, pick: int
) -> None:
    permissions = [i for i, c in enumerate(consents) if c["provision"]["type"] == "permit"]
    if not permissions:
        return
    index = permissions[pick % len(permissions)]
    revoked = [dict(c, status="inactive") if i == index else c for i, c in enumerate(consents)]
    before = decide(compile_consents(consents), policy, request)
    after = decide(compile_consents(revoked), policy, request)
    if before.effect == "deny":
        assert after.effect == "deny", (before.reason, after.reason)


@SETTINGS
@given(consents=consent_lists(), extra=compact_consents(index=98), request=requests(), policy=_policies())
def test_a_consent_outside_its_period_has_no_effect(
    consents: list[dict[str, Any]], extra: dict[str, Any], request: Request, policy: Policy
) -> None:
    effect = "permit" if "permit" in extra else "deny"
    moment = request.moment
    after, before = (
        (moment + timedelta(days=2), moment + timedelta(days=40)),
        (moment - timedelta(days=90), moment - timedelta(days=2)),
    )
    start, end = after if moment.day % 2 == 0 else before
    outside = f"{start.date().isoformat()} / {end.date().isoformat()}"
    extra = {**extra, "status": "active", effect: {**extra[effect], "period": outside}}
    without = decide(compile_consents(consents), policy, request)
    with_it = decide(compile_consents([*consents, consent_from_compact(extra, POLICY)]), policy, request)
    assert _key(with_it) == _key(without)


@SETTINGS
@given(consents=consent_lists(), request=requests(), policy=_policies(), data=st.data())
def test_the_order_of_the_consents_does_not_matter(
    consents: list[dict[str, Any]], request: Request, policy: Policy, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(consents))
    assert _key(decide(compile_consents(consents), policy, request)) == _key(
        decide(compile_consents(shuffled), policy, request)
    )
