"""The compiled consents are filed by requester so a decision reads only the consents that can concern
it: a patient with many consents about other organisations gets the same decision, from the same
consents, as one with only the consents that matter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rzcp.consent.cases import consent_from_compact
from rzcp.consent.compiled import compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import BASIS_NO_CONSENT, BASIS_PERMITTED, BASIS_REFUSED, Decision, Request
from rzcp.consent.policy import Policy

HOSPITAL, GP = "00000201", "00000101"
OTHER_CATEGORIES = ["huisartsen", "apotheken", "ggz", "verpleging-verzorging", "overige"]


def _request(**changes: object) -> Request:
    base = Request(
        requester_ura=HOSPITAL,
        requester_category="ziekenhuizen-labs",
        source_ura=GP,
        source_category="huisartsen",
        purpose="TREAT",
        moment=datetime(2025, 6, 1, 10),
        resource_type="MedicationRequest",
        codes=frozenset(),
        labels=frozenset(),
    )
    return base.about(**changes)


def _irrelevant(policy: Policy) -> list[dict[str, Any]]:
    """Refusals and permissions about other organisations and categories, and consents about anyone
    that cover other data: none of them concerns a hospital asking for medication."""
    compact: list[dict[str, Any]] = []
    for i in range(60):
        compact.append({"id": f"org-{i}", "deny": {"to": f"ura:{20_000_000 + i:08d}"}})
    for i, category in enumerate(OTHER_CATEGORIES):
        compact.append({"id": f"cat-{i}", "deny": {"to": category}})
    compact.append({"id": "anyone-lab", "deny": {"data": ["labuitslagen"]}})
    return [consent_from_compact(c, policy) for c in compact]


def _decide(policy: Policy, consents: list[dict[str, Any]], request: Request | None = None) -> Decision:
    return decide(compile_consents(consents), policy, request or _request())


def test_many_irrelevant_consents_leave_the_decision_and_its_reason_alone(policy: Policy) -> None:
    relevant = [
        consent_from_compact({"id": "hospitals-medication", "permit": {"to": "ziekenhuizen-labs"}}, policy)
    ]
    alone = _decide(policy, relevant)
    crowded = _decide(policy, [*_irrelevant(policy)[:30], *relevant, *_irrelevant(policy)[30:]])
    assert (crowded.effect, crowded.basis, crowded.consent_ids) == (
        "permit",
        BASIS_PERMITTED,
        alone.consent_ids,
    )
    assert crowded.consent_ids == ("hospitals-medication",)
    assert crowded.reason == alone.reason


def test_irrelevant_consents_alone_leave_the_default(policy: Policy) -> None:
    decision = _decide(policy, _irrelevant(policy))
    assert (decision.effect, decision.basis, decision.deciding) == ("deny", BASIS_NO_CONSENT, ())


def test_the_organisation_the_category_and_anyone_are_all_weighed(policy: Policy) -> None:
    consents = [
        consent_from_compact(c, policy)
        for c in (
            {"id": "anyone", "permit": {}},
            {"id": "hospitals", "permit": {"to": "ziekenhuizen-labs"}},
            {"id": "not-this-hospital", "deny": {"to": f"ura:{HOSPITAL}"}},
        )
    ]
    asked = _decide(policy, [*_irrelevant(policy), *consents])
    assert (asked.effect, asked.basis, asked.consent_ids) == ("deny", BASIS_REFUSED, ("not-this-hospital",))
    other_hospital = _decide(policy, [*_irrelevant(policy), *consents], _request(requester_ura="00000202"))
    assert (other_hospital.effect, other_hospital.consent_ids) == ("permit", ("hospitals",))
    # a member the patient never named: only the consent about anyone speaks for it
    stranger = _decide(
        policy, [*_irrelevant(policy), *consents], _request(requester_ura="30000000", requester_category=None)
    )
    assert (stranger.effect, stranger.consent_ids) == ("permit", ("anyone",))


def test_a_consent_naming_the_requester_twice_over_answers_once_in_consent_order(policy: Policy) -> None:
    both = consent_from_compact(
        {"id": "both", "deny": {"to": [f"ura:{HOSPITAL}", "ziekenhuizen-labs"]}}, policy
    )
    first = consent_from_compact({"id": "first", "deny": {"to": "ziekenhuizen-labs"}}, policy)
    last = consent_from_compact({"id": "last", "deny": {}}, policy)
    decision = _decide(policy, [first, both, last])
    # "both" is more specific (the hospital itself) than the others and overrides them, once
    assert decision.consent_ids == ("both",)
    equal = [
        consent_from_compact({"id": f"r{i}", "deny": {"to": "ziekenhuizen-labs"}}, policy) for i in range(3)
    ]
    assert _decide(policy, [*equal, first]).consent_ids == ("r0", "r1", "r2", "first")


def test_a_requester_registered_by_national_type_finds_the_consents_about_its_category(
    policy: Policy,
) -> None:
    consents = [
        *_irrelevant(policy),
        consent_from_compact({"id": "hospitals", "permit": {"to": "ziekenhuizen-labs"}}, policy),
    ]
    decision = _decide(policy, consents, _request(requester_category="V6"))
    assert (decision.effect, decision.consent_ids) == ("permit", ("hospitals",))


def test_a_consent_about_anyone_still_speaks_for_a_requester_the_patient_named(policy: Policy) -> None:
    consents = [
        consent_from_compact({"id": "anyone", "permit": {"data": ["medicatie"]}}, policy),
        consent_from_compact(
            {"id": "no-lab-for-hospitals", "deny": {"to": "ziekenhuizen-labs", "data": ["labuitslagen"]}},
            policy,
        ),
        consent_from_compact(
            {"id": "no-lab-here", "deny": {"to": f"ura:{HOSPITAL}", "data": ["labuitslagen"]}}, policy
        ),
    ]
    decision = _decide(policy, [*_irrelevant(policy), *consents])
    assert (decision.effect, decision.basis, decision.consent_ids) == ("permit", BASIS_PERMITTED, ("anyone",))
