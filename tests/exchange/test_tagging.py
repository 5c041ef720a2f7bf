"""What a requester gets of a member's resource: its references to the member's patient turned into the
regional Patient, everything else as the member sent it; and when two members' records count as one
(plain Python, no HTTP)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rzcp.exchange.adapters import Member
from rzcp.exchange.locator import Source
from rzcp.exchange.pull import SOURCE_SYSTEM, _fingerprint, _rewrite, _sorted, _tag
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import parse_search

LOCAL = "Patient/gp-17"
REGIONAL = "https://gateway.example/fhir/Patient/r-1"


def procedure() -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": "p1",
        "status": "completed",
        "subject": {"reference": LOCAL, "display": "J. Jansen"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "performer": [
            {"actor": {"reference": "Practitioner/dr-1"}},
            {"actor": {"reference": f"https://gp.example/fhir/{LOCAL}"}},
        ],
        "encounter": {"reference": "Encounter/e-1"},
        "note": [{"text": "no reference here"}],
        "reasonReference": [{"reference": "Condition/c-1"}],
    }


def test_references_to_the_members_patient_point_at_the_regional_one() -> None:
    sent = procedure()
    out = _rewrite(sent, LOCAL, REGIONAL)
    assert out["subject"] == {"reference": REGIONAL, "display": "J. Jansen"}
    assert out["performer"] == [
        {"actor": {"reference": "Practitioner/dr-1"}},
        {"actor": {"reference": REGIONAL}},  # an absolute reference to the same patient too
    ]
    # Other references and elements are the member's.
    assert out["encounter"] == {"reference": "Encounter/e-1"}
    assert out["reasonReference"] == [{"reference": "Condition/c-1"}]
    assert out["code"] == sent["code"] and out["note"] == sent["note"]


def test_the_members_resource_is_left_as_it_was() -> None:
    sent = procedure()
    before = copy.deepcopy(sent)
    out = _rewrite(sent, LOCAL, REGIONAL)
    assert sent == before
    assert out is not sent
    # Unchanged elements are shared, not copied: the rewrite runs for every resource of every answer.
    assert out["code"] is sent["code"] and out["note"] is sent["note"]
    assert out["reasonReference"] is sent["reasonReference"]


def test_only_the_gateway_names_a_resources_source_member() -> None:
    """A member's resource (or one it contains) cannot pass for another member's: source tags it wrote,
    spelled however (another case, http, a trailing slash, the default port), are removed; the gateway's
    own names the member it came from. Found by a probe (pushes) and a review (pulls, contained)."""
    forged = [
        {"system": spelled, "code": "00000401"}
        for spelled in (
            SOURCE_SYSTEM,
            SOURCE_SYSTEM + "/",
            SOURCE_SYSTEM.upper(),
            SOURCE_SYSTEM.replace("https:", "http:"),
            SOURCE_SYSTEM.replace("rzcp.nl", "rzcp.nl:443"),
        )
    ]
    label = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
    sent = {
        **procedure(),
        "meta": {"security": [*forged, label]},
        "contained": [
            {
                "resourceType": "Practitioner",
                "id": "c1",
                "meta": {"security": [*forged, label], "source": "https://ggz.example/fhir"},
            }
        ],
    }
    member = Member("00000101", "Huisartsenpraktijk De Linde", "huisartsen", "https://gp.example/fhir")
    out = _tag(sent, Source(member, "gp-17"), "https://gateway.example/fhir", "r-1")
    own = {"system": SOURCE_SYSTEM, "code": "00000101", "display": "Huisartsenpraktijk De Linde"}
    assert out["meta"]["security"] == [label, own]
    assert out["meta"]["source"] == "https://gp.example/fhir"
    assert out["contained"][0]["meta"] == {"security": [label]}  # no source of its own either


def test_a_reference_that_only_ends_like_the_patients_is_not_rewritten() -> None:
    sent = procedure()
    sent["subject"] = {"reference": "Patient/xgp-17"}
    assert _rewrite(sent, LOCAL, REGIONAL)["subject"] == {"reference": "Patient/xgp-17"}


def test_the_same_record_from_two_members_is_one_record_and_a_different_one_is_not() -> None:
    """A pull keeps the first of records that share a fingerprint: the same content whatever the member's
    id, meta, narrative and key order; or the same business identifiers whatever the content."""
    gp = _rewrite(procedure(), LOCAL, REGIONAL)
    other = procedure()
    other["subject"]["reference"] = "Patient/zh-9"  # the hospital's own id of the same patient
    other["performer"][1]["actor"]["reference"] = "https://zh.example/fhir/Patient/zh-9"
    hospital = _rewrite(
        {
            **{k: other[k] for k in reversed(list(other))},
            "id": "zh-p1",
            "meta": {"versionId": "7", "source": "https://zh.example/fhir"},
            "text": {"status": "generated", "div": "<div>Procedure</div>"},
        },
        "Patient/zh-9",
        REGIONAL,
    )
    assert _fingerprint(gp) == _fingerprint(hospital)
    assert _fingerprint(gp) != _fingerprint({**gp, "status": "entered-in-error"})
    assert _fingerprint(gp) != _fingerprint(
        _rewrite(procedure(), LOCAL, "https://gateway.example/fhir/Patient/r-2")
    )

    known = {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "P-1"}
    assert _fingerprint({**gp, "identifier": [known]}) == _fingerprint(
        {**gp, "status": "in-progress", "identifier": [known, {"system": "urn:x"}]}  # the valueless one aside
    )
    assert _fingerprint({**gp, "identifier": [known]}) != _fingerprint(
        {**gp, "identifier": [{**known, "value": "P-2"}]}
    )
    # a record known by identifier is never the same as one known by its content
    assert _fingerprint({**gp, "identifier": [known]}) != _fingerprint(gp)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["2020", "2020-02-30", "2021-03-04T10:00:00+01:00", "1999-12-31T23:59:59Z", "x|y"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["coding", "code", "system", "start", "end", "value", "lastUpdated", "event"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
_ELEMENTS = ["id", "meta", "recordedDate", "onsetDateTime", "onsetPeriod", "code", "category", "onsetAge"]
_SORTS = [
    "_id",
    "-_lastUpdated",
    "recorded-date",
    "-onset-date",
    "code",
    "-category,recorded-date",
    "-abatement-age",
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(_ELEMENTS), _JSON, max_size=6), max_size=8),
    st.sampled_from(_SORTS),
)
def test_sorting_what_members_sent_never_fails_whatever_they_sent(
    resources: list[dict[str, Any]], sort: str
) -> None:
    """A member's odd values (a number where a date belongs, a Coding where a list belongs) sort as no
    value (last), never as an error that would fail the whole pull."""
    keys = parse_search(
        "Condition", [("_sort", sort)], SearchRegistry.default(), strict=True, default_count=1, max_count=1
    ).sort
    entries = [(str(i), {**r, "resourceType": "Condition"}) for i, r in enumerate(resources)]
    assert sorted(e[0] for e in _sorted(entries, keys)) == sorted(e[0] for e in entries)
