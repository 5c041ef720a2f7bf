"""The decision: may this source share this data with this requester, for this purpose, at this moment?

Semantics, in the order they apply:

1. The purpose must be one the region's policy allows; ETREAT (break-the-glass) only when the policy's
   emergency rule is switched on.
2. Each active Consent answers on its own (FHIR R4): its base provision must match the request, then the
   deepest matching nested provision decides (exceptions, and exceptions to exceptions). A permission's
   exception carves data out of that permission and a refusal's exception carves data out of that
   refusal: the consent then says nothing about the request (it does not turn into the opposite).
3. A permission covers data with a sensitive label (policy.sensitive_labels) only when a provision on its
   path names that label.
4. The answers are weighed by specificity, per dimension (the Dutch generic-functions agreements):
   requester (one organisation 2 > its category 1 > anyone 0), source (likewise), data (a code 2 > a
   category, type or label 1 > all data 0), context (a purpose 1 > any 0). An answer at least as
   specific in every dimension and more specific in one overrides the other. Of the answers nothing
   overrides, one refusal suffices to refuse: so at equal specificity, and where neither is more
   specific in every dimension, refusal beats permission.
5. No answer: the policy's default (deny). ETREAT without a consent that decides it: the emergency rule.

Matching is exact when the request describes the resource (per resource, after the data came back).
Asked before (per source), what is not known yet is assumed in favour of permission and the decision is
marked `provisional`: the data must then be decided again, per resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rzcp.consent.compiled import CompiledConsent, CompiledConsents, Rule
from rzcp.consent.model import (
    BASIS_EMERGENCY,
    BASIS_EMERGENCY_DATA,
    BASIS_EMERGENCY_EXPIRED,
    BASIS_EMERGENCY_OFF,
    BASIS_EMERGENCY_REQUESTER,
    BASIS_EXCEPTED,
    BASIS_NO_CONSENT,
    BASIS_PERMITTED,
    BASIS_PURPOSE,
    BASIS_REFUSED,
    BASIS_SENSITIVE,
    Decider,
    Decision,
    Request,
)
from rzcp.consent.policy import Policy

Spec = tuple[int, int, int, int]
EMERGENCY_PURPOSE = "ETREAT"
_DIMENSIONS = ("requester", "source", "data", "purpose")


@dataclass(slots=True)
class _Context:
    moment: datetime
    requester_ura: str
    requester_categories: frozenset[str]
    source_ura: str | None
    source_categories: frozenset[str]
    purposes: frozenset[str]
    sure: frozenset[str]  # data categories the resource falls in
    maybe: frozenset[str]  # ... or may fall in, once its category codes are known
    general: frozenset[str]
    codes: frozenset[str] | None
    labels: frozenset[str] | None
    sensitive: frozenset[str]
    data_moment: datetime | None


@dataclass(slots=True)
class _Answer:
    consent: CompiledConsent
    effect: str
    rule: Rule
    spec: Spec


@dataclass(slots=True)
class _Outcome:
    answers: list[_Answer]
    excepted: list[CompiledConsent]
    unlabelled: list[CompiledConsent]
    provisional: bool


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def decide(compiled: CompiledConsents, policy: Policy, request: Request) -> Decision:
    """The decision for one request, from the patient's compiled consents and the region's policy."""
    purpose = request.purpose
    if purpose not in policy.purposes:
        return Decision("deny", BASIS_PURPOSE, f"purpose of use {purpose!r} is not allowed in this region")
    emergency = purpose == EMERGENCY_PURPOSE
    if emergency and not policy.emergency.enabled:
        return Decision(
            "deny", BASIS_EMERGENCY_OFF, "break-the-glass (ETREAT) is switched off in this region's policy"
        )
    ctx = _context(policy, request)
    outcome = _answers(compiled, ctx)
    decision = _weigh(outcome, policy, request)
    if emergency and decision.effect == "deny":
        return _emergency(policy, request, ctx, decision)
    return decision


def _context(policy: Policy, request: Request) -> _Context:
    found = policy.categories_of(request.resource_type, request.codes)
    labels = request.labels
    sensitive = policy.sensitive_among(labels) if labels else frozenset()
    if sensitive:  # a provision naming the label matches data labelled with another spelling of it
        labels = labels | sensitive  # type: ignore[operator]
    return _Context(
        moment=naive_utc(request.moment),
        requester_ura=request.requester_ura,
        requester_categories=policy.category_codes(request.requester_category),
        source_ura=request.source_ura,
        source_categories=policy.category_codes(request.source_category),
        purposes=policy.purpose_chain(request.purpose),
        sure=found.sure,
        maybe=found.maybe,
        general=policy.general_tokens,
        codes=request.codes,
        labels=labels,
        sensitive=sensitive,
        data_moment=naive_utc(request.data_moment) if request.data_moment is not None else None,
    )


# --- one consent ----------------------------------------------------------------------------------------


def _match(rule: Rule, c: _Context) -> tuple[Spec, bool] | None:
    """Whether the provision's own conditions hold: None if not; else its specificity, and whether that
    rests on an assumption about data not known yet."""
    if rule.unmatchable:
        return None
    period = rule.period
    if period is not None and not (period[0] <= c.moment <= period[1]):
        return None
    requester = source = data = context = 0
    assumed = False
    orgs, cats = rule.requester_orgs, rule.requester_categories
    if orgs is not None or cats is not None:
        if orgs is not None and c.requester_ura in orgs:
            requester = 2
        elif cats is not None and not cats.isdisjoint(c.requester_categories):
            requester = 1
        else:
            return None
    orgs, cats = rule.source_orgs, rule.source_categories
    if orgs is not None or cats is not None:
        if orgs is not None and c.source_ura in orgs:
            source = 2
        elif cats is not None and not cats.isdisjoint(c.source_categories):
            source = 1
        else:
            return None
    if rule.purposes is not None:
        if rule.purposes.isdisjoint(c.purposes):
            return None
        context = 1
    if rule.classes is not None:
        hit = rule.classes & c.sure
        if hit:
            data = 0 if hit <= c.general else 1
        elif not rule.classes.isdisjoint(c.maybe):
            data, assumed = 1, True
        else:
            return None
    if rule.labels is not None:
        if c.labels is None:
            assumed = True
        elif rule.labels.isdisjoint(c.labels):
            return None
        data = max(data, 1)
    if rule.codes is not None:
        if c.codes is None:
            assumed = True
        elif rule.codes.isdisjoint(c.codes):
            return None
        data = 2
    data_period = rule.data_period
    if data_period is not None:
        if c.data_moment is None:
            assumed = True
        elif not (data_period[0] <= c.data_moment <= data_period[1]):
            return None
    return (requester, source, data, context), assumed


def _resolve(rule: Rule, effect: str, spec: Spec, c: _Context, flags: list[bool]) -> tuple[str, Rule, Spec]:
    """The effect of a matched provision after its nested exceptions: the deepest matching one decides;
    of several matching siblings, a refusal wins. An assumption is made in favour of permission and
    recorded in `flags`."""
    chosen: tuple[str, Rule, Spec] | None = None
    for child in rule.children:
        matched = _match(child, c)
        if matched is None:
            continue
        child_spec, assumed = matched
        child_effect = child.effect or effect
        if assumed:
            flags[0] = True
            if child_effect == "deny":
                continue
        merged = (
            max(spec[0], child_spec[0]),
            max(spec[1], child_spec[1]),
            max(spec[2], child_spec[2]),
            max(spec[3], child_spec[3]),
        )
        result = _resolve(child, child_effect, merged, c, flags)
        if chosen is None or (result[0] == "deny" and chosen[0] != "deny"):
            chosen = result
    return chosen if chosen is not None else (effect, rule, spec)


def _labels_on_path(root: Rule, target: Rule) -> frozenset[str]:
    """The security labels named on the provisions from the base down to `target`."""

    def walk(rule: Rule, named: frozenset[str]) -> frozenset[str] | None:
        here = named | rule.labels if rule.labels else named
        if rule is target:
            return here
        for child in rule.children:
            found = walk(child, here)
            if found is not None:
                return found
        return None

    return walk(root, frozenset()) or frozenset()


def _answers(compiled: CompiledConsents, c: _Context) -> _Outcome:
    outcome = _Outcome([], [], [], False)
    flags = [False]
    for consent in compiled.candidates(c.requester_ura, c.requester_categories):
        matched = _match(consent, c)  # a compiled consent is its own base provision
        if matched is None:
            continue
        spec, assumed = matched
        if assumed:
            flags[0] = True
            if consent.effect == "deny":
                continue
        effect, rule, spec = _resolve(consent, consent.effect, spec, c, flags)
        if effect != consent.effect:
            outcome.excepted.append(consent)
            continue
        if effect == "permit":
            if c.labels is None:
                flags[0] = True
            elif c.sensitive and not c.sensitive <= _labels_on_path(consent, rule):
                outcome.unlabelled.append(consent)
                continue
        outcome.answers.append(_Answer(consent, effect, rule, spec))
    outcome.provisional = flags[0]
    return outcome


# --- weighing the answers -------------------------------------------------------------------------------


def _dominates(a: Spec, b: Spec) -> bool:
    return a != b and a[0] >= b[0] and a[1] >= b[1] and a[2] >= b[2] and a[3] >= b[3]


def _weigh(outcome: _Outcome, policy: Policy, request: Request) -> Decision:
    answers = outcome.answers
    if not answers:
        return _default(outcome, policy, request)
    if len(answers) == 1:
        top = answers
    else:
        # An answer can only be overridden by one with a larger sum of levels: taken in that order, each
        # needs comparing only with the undominated ones already kept (dominance is transitive).
        top = []
        for a in sorted(answers, key=lambda x: -(x.spec[0] + x.spec[1] + x.spec[2] + x.spec[3])):
            if not any(_dominates(b.spec, a.spec) for b in top):
                top.append(a)
    refusals = [a for a in top if a.effect == "deny"]
    winners = refusals or top
    effect = "deny" if refusals else "permit"
    deciding = tuple(Decider(a.consent.consent_id, a.consent.version, a.effect, a.rule.path) for a in winners)

    def explain() -> str:
        refs = ", ".join(d.reference for d in deciding)
        verb = "refused" if effect == "deny" else "permitted"
        text = f"{verb} by {refs} ({_spec_text(winners[0].spec)}) for {_describe(request, policy)}"
        overridden = [a for a in answers if a not in top]
        overruled = [a for a in top if a.effect != effect]
        if overridden:
            text += "; overridden by more specific consents: " + ", ".join(
                f"Consent/{a.consent.consent_id} ({a.effect})" for a in overridden
            )
        if overruled:
            text += "; a refusal outweighs the permission of " + ", ".join(
                f"Consent/{a.consent.consent_id}" for a in overruled
            )
        return text

    basis = BASIS_REFUSED if effect == "deny" else BASIS_PERMITTED
    return Decision(effect, basis, explain, deciding, provisional=outcome.provisional)


def _default(outcome: _Outcome, policy: Policy, request: Request) -> Decision:
    default = policy.document.default_decision
    if outcome.unlabelled:
        unlabelled = outcome.unlabelled

        def explain_sensitive() -> str:
            labels = ", ".join(sorted(policy.sensitive_among(request.labels or frozenset())))
            return (
                f"{_refs(unlabelled)} permit {_describe(request, policy)} but not data labelled {labels}: "
                "sensitive data needs a permission that names its label"
            )

        return Decision(
            "deny", BASIS_SENSITIVE, explain_sensitive, _deciders(unlabelled, "permit"), outcome.provisional
        )
    if outcome.excepted:
        excepted = outcome.excepted

        def explain_excepted() -> str:
            return (
                f"{_refs(excepted)} make an exception for {_describe(request, policy)}, and no other consent "
                f"permits it (the region's default is {default})"
            )

        return Decision(
            "deny", BASIS_EXCEPTED, explain_excepted, _deciders(excepted, None), outcome.provisional
        )

    def explain_default() -> str:
        what = _describe(request, policy)
        return f"no consent of the patient covers {what} (the region's default is {default})"

    return Decision(default, BASIS_NO_CONSENT, explain_default, (), outcome.provisional)


def _emergency(policy: Policy, request: Request, c: _Context, decision: Decision) -> Decision:
    rule = policy.emergency
    if decision.basis == BASIS_REFUSED and rule.respect_refusals:
        return Decision(
            "deny",
            BASIS_REFUSED,
            lambda: decision.reason + "; the patient's refusal holds in an emergency too",
            decision.deciding,
            provisional=decision.provisional,
        )
    if not policy.may_break_glass(request.requester_category):
        return Decision(
            "deny",
            BASIS_EMERGENCY_REQUESTER,
            f"the emergency rule is not for members of category {request.requester_category or '(none)'}",
        )
    moment = c.moment
    since = naive_utc(request.break_glass_since) if request.break_glass_since is not None else moment
    if moment - since > timedelta(minutes=rule.duration_minutes) or since > moment:
        return Decision(
            "deny",
            BASIS_EMERGENCY_EXPIRED,
            f"break-the-glass was declared at {since.isoformat()}Z; it lasts {rule.duration_minutes} minutes",
        )
    covered = policy.emergency_tokens
    sure = not covered.isdisjoint(c.sure)
    if not sure and covered.isdisjoint(c.maybe):
        return Decision(
            "deny",
            BASIS_EMERGENCY_DATA,
            lambda: f"the emergency rule does not cover {_describe(request, policy)}",
        )
    if c.sensitive and not rule.include_sensitive:
        return Decision(
            "deny",
            BASIS_SENSITIVE,
            f"the emergency rule never covers data with a sensitive label ({', '.join(sorted(c.sensitive))})",
        )
    return Decision(
        "permit",
        BASIS_EMERGENCY,
        lambda: (
            f"break-the-glass (ETREAT) under the region's emergency rule for {_describe(request, policy)}, "
            f"valid {rule.duration_minutes} minutes from {since.isoformat()}Z"
        ),
        provisional=not sure or c.labels is None,
    )


# --- reasons --------------------------------------------------------------------------------------------


def _refs(consents: Iterable[CompiledConsent]) -> str:
    return ", ".join(
        f"Consent/{c.consent_id}" + (f"/_history/{c.version}" if c.version else "") for c in consents
    )


def _deciders(consents: Iterable[CompiledConsent], effect: str | None) -> tuple[Decider, ...]:
    return tuple(Decider(c.consent_id, c.version, effect or c.effect, "Consent.provision") for c in consents)


def _spec_text(spec: Spec) -> str:
    levels = (
        ("any requester", "the requester's category", "the requester itself"),
        ("any source", "the source's category", "the source itself"),
        ("all data", "this kind of data", "this specific data"),
        ("any purpose", "this purpose"),
    )
    return ", ".join(levels[i][level] for i, level in enumerate(spec))


def _describe(request: Request, policy: Policy) -> str:
    found = policy.categories_of(request.resource_type, request.codes)
    names = sorted(
        policy.name_by_token[t]
        for t in found.sure | found.maybe
        if t in policy.name_by_token and t not in policy.general_tokens
    )
    data = request.resource_type + (f" ({', '.join(names)})" if names else "")
    source = request.source_ura or "any source"
    return (
        f"{data} from {source} to {request.requester_ura} "
        f"({request.requester_category or 'no category'}) for {request.purpose}"
    )
