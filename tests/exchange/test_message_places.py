"""Whose server a MessageHeader.source.endpoint names (rzcp.exchange.message): the place, as URL parsers
read it, not the text. A sender naming another member's server is refused; a place no member owns is not."""

from __future__ import annotations

import pytest

from rzcp.exchange.adapters import Member
from rzcp.exchange.message import endpoint_owner

MEMBERS = {
    m.ura: m
    for m in (
        Member("00000001", "Ziekenhuis", "ziekenhuizen-labs", "https://hospital.example/fhir"),
        Member("00000002", "Praktijk A", "huisartsen", "https://vendor.example/a/fhir"),
        Member("00000003", "Praktijk B", "huisartsen", "https://vendor.example/b/fhir"),
        Member("00000004", "Apotheek", "apotheken", "http://127.0.0.1:8083/fhir"),
    )
}


@pytest.mark.parametrize(
    ("endpoint", "owner"),
    [
        ("https://hospital.example/fhir", "00000001"),
        ("https://hospital.example/fhir/$process-message", "00000001"),
        ("HTTPS://HOSPITAL.EXAMPLE./FHIR/?x#y", "00000001"),
        ("https:hospital.example/fhir", "00000001"),
        ("https:///hospital.example//fhir", "00000001"),
        ("https://hospital%2eexample/fhir", "00000001"),
        ("https://hospital\u3002example/fhir", "00000001"),
        ("https://\uff48ospital.example/fhir", "00000001"),
        ("https://someone@hospital.example:443/./x/../fhir", "00000001"),
        ("https://vendor.example/b/fhir", "00000003"),
        ("http://0.0.0.0:8083/fhir", "00000004"),
        ("http://localhost:8083/fhir", "00000004"),
        ("http://2130706433:8083/fhir", "00000004"),
        # places no member owns: another port, another path on a shared host, no server at all
        ("https://hospital.example:8443/fhir", None),
        ("https://vendor.example/messaging/sender", None),
        ("https://vendor.example/", None),
        ("urn:oid:2.16.528.1.1007.99.1", None),
        ("not a url", None),
    ],
)
def test_the_member_a_source_endpoint_names(endpoint: str, owner: str | None) -> None:
    assert endpoint_owner(endpoint, MEMBERS) == owner
