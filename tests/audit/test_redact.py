"""What of a request the audit trail keeps: every way a BSN can be written into a query string or a path is
masked, and the record still says what was asked (the parameter, the system, the other values)."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rzcp.audit.redact import recorded_query, recorded_reference
from rzcp.auth.bsn import BSN_OID, BSN_SYSTEM, is_bsn_system, is_valid_bsn, without_bsns

BSN = "999967551"
OID = f"urn:oid:{BSN_OID}"


def recorded(query: str) -> str:
    """The recorded query as an auditor reads it: percent-decoded."""
    return unquote_plus(recorded_query(query))


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        (f"identifier={BSN}", "identifier=*"),
        (f"identifier={OID}|{BSN}", f"identifier={OID}|*"),
        (f"identifier={BSN_OID}|{BSN}", f"identifier={BSN_OID}|*"),
        (f"identifier={quote(BSN_SYSTEM + '|' + BSN, safe='')}", f"identifier={BSN_SYSTEM}|*"),
        (f"identifier:text={BSN}", "identifier:text=*"),
        (f"identifier:contains=bsn{BSN}", "identifier:contains=*"),
        (f"patient.identifier={BSN}", "patient.identifier=*"),
        (f"subject:Patient.identifier={BSN_SYSTEM}|{BSN}", f"subject:Patient.identifier={BSN_SYSTEM}|*"),
        (f"_has:Observation:patient:identifier={BSN}", "_has:Observation:patient:identifier=*"),
        (f"patient:identifier={OID}|{BSN}", f"patient:identifier={OID}|*"),
        ("identifier=999+967+551", "identifier=*"),
        ("identifier=999.96.7551", "identifier=*"),
        ("identifier=%39%39%39%39%36%37%35%35%31", "identifier=*"),
        ("identifier=12345672", "identifier=*"),  # an old eight-digit BSN
        (f"identifier=|{BSN}", "identifier=|*"),
        (
            f"identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NNNLD|{BSN}",
            "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NNNLD|*",
        ),
        (
            f"identifier=http://x.example/mrn|A1,{BSN}&identifier={OID}|{BSN}&_count=5",
            f"identifier=http://x.example/mrn|A1,*&identifier={OID}|*&_count=5",
        ),
        (f"patient={BSN}", "patient=*"),
        (f"patient=Patient/{BSN}", "patient=Patient/*"),
        (f"patient={BSN_SYSTEM}|{BSN}", f"patient={BSN_SYSTEM}|*"),
        (f"_content=patient%20{BSN}%20seen", "_content=patient * seen"),
        (f"{BSN}", "*="),
    ],
)
def test_every_way_of_asking_by_bsn_is_masked_and_what_was_asked_is_kept(asked: str, kept: str) -> None:
    assert recorded(asked) == kept


@pytest.mark.parametrize(
    "asked",
    [
        "family=Jansen&birthdate=ge1970-01-01&_count=20",
        "patient=Patient/3f2a1b4c-1234-5678-9abc-a99996755100",  # a regional id: a UUID
        "code=http://snomed.info/sct|386661004",  # nine digits, but no BSN (11-check)
        "identifier=http://x.example/mrn|A-1234",
        "_id=ura-00001111",
    ],
)
def test_a_query_without_a_bsn_is_kept_as_asked(asked: str) -> None:
    assert recorded_query(asked) == asked


def test_ids_from_a_path() -> None:
    assert recorded_reference(f"Patient/{BSN}") == "Patient/*"
    assert recorded_reference("Patient/12345672") == "Patient/*"
    assert recorded_reference(f"Patient/x{BSN}y") == "Patient/x*y"
    for kept in ("Patient/3f2a1b4c-1234-5678-9abc-999967551000", "Organization/ura-00001111", "Bundle/m-1"):
        assert recorded_reference(kept) == kept


def test_bsn_systems_and_free_text() -> None:
    for system in (BSN_SYSTEM, BSN_SYSTEM.upper() + "/", OID, BSN_OID, " urn:OID:" + BSN_OID):
        assert is_bsn_system(system)
    assert not is_bsn_system("http://fhir.nl/fhir/NamingSystem/ura")
    assert without_bsns(f"patient {BSN}, seen at 12:00 (386661004)") == "patient *, seen at 12:00 (386661004)"


# --- any identifier parameter, any way of writing a BSN --------------------------------------------------


def _with_check_digit(first: int) -> str:
    """Eight digits and the digit that makes them pass the 11-check (ten when none does: not a BSN)."""
    digits = f"{first:08d}"
    return digits + str(sum(int(d) * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11)


bsns = st.integers(min_value=0, max_value=10**8 - 1).map(_with_check_digit).filter(is_valid_bsn)
identifier_names = st.tuples(
    st.sampled_from(
        ["", "patient.", "subject:Patient.", "_has:Observation:patient:", "patient:", "Subject."]
    ),
    st.sampled_from(["identifier", "Identifier", "value-identifier"]),
    st.sampled_from(["", ":text", ":exact", ":contains", ":not", ":of-type"]),
).map("".join)
bsn_systems = st.sampled_from(["", "|", f"{BSN_SYSTEM}|", f"{OID}|", f"{BSN_OID}|", "http://x.example/mrn|"])
separators = st.sampled_from(["", " ", ".", "-"])
encodings = st.sampled_from(
    [
        lambda text: quote(text, safe=""),
        lambda text: quote_plus(text, safe="|:/"),
        lambda text: "".join(f"%{ord(c):02X}" for c in text),
    ]
)
other_params = st.lists(
    st.sampled_from(["_count=10", "family=Jansen", "code=http://loinc.org|8867-4", "date=ge2020-01-01"]),
    max_size=3,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    name=identifier_names,
    bsn=bsns,
    system=bsn_systems,
    separator=separators,
    encode=encodings,
    alternatives=st.lists(st.sampled_from(["A-1", "http://x.example/mrn|7", ""]), max_size=2),
    before=other_params,
    after=other_params,
)
def test_no_bsn_survives_in_an_identifier_parameter(
    name: str,
    bsn: str,
    system: str,
    separator: str,
    encode: Callable[[str], str],
    alternatives: list[str],
    before: list[str],
    after: list[str],
) -> None:
    written = separator.join((bsn[:3], bsn[3:6], bsn[6:]))
    value = ",".join([*alternatives, system + written])
    asked = "&".join([*before, f"{encode(name)}={encode(value)}", *after])
    pairs = parse_qsl(recorded_query(asked), keep_blank_values=True)
    for _, kept in pairs:
        assert bsn not in re.sub(r"[\s.\-]", "", kept), (asked, pairs)
    # What was asked is still there: the parameter, the system and the other values.
    assert (name, ",".join([*alternatives, system + "*"])) in pairs
    assert [p for p in pairs if p[0] != name] == [tuple(p.split("=")) for p in (*before, *after)]


@settings(max_examples=200, deadline=None, database=None)
@given(
    name=st.sampled_from(
        ["patient", "subject", "_id", "_content", "code", "foo", "_has:Observation:subject"]
    ),
    bsn=bsns,
    system=st.sampled_from(["", f"{BSN_SYSTEM}|", f"{OID}|", "Patient/"]),
    encode=encodings,
)
def test_no_bsn_survives_in_any_other_parameter(
    name: str, bsn: str, system: str, encode: Callable[[str], str]
) -> None:
    asked = f"{name}={encode(system + bsn)}"
    assert bsn not in unquote_plus(recorded_query(asked))
