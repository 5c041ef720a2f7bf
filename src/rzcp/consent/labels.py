"""Security labels as the engine compares them: `system|code` tokens, one spelling per code system.

A member's system may label data with HL7's code systems under another name: the OID
(`urn:oid:2.16.840.1.113883.5.4`), the pre-R4 URL (`http://hl7.org/fhir/v3/ActCode`), https, a trailing
slash. Compared as written, a PSY label under the OID was no label at all, and the data it marks went out
under a consent for "all data" (a security test). Labels on data and in consents are turned into the R4
canonical spelling here, before any comparison; `Policy.sensitive_among` then fails closed for systems
it does not know.
"""

from __future__ import annotations

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

_CANONICAL = {ACT_CODE: "2.16.840.1.113883.5.4", CONFIDENTIALITY: "2.16.840.1.113883.5.25"}
_CANONICAL[OBSERVATION_VALUE] = "2.16.840.1.113883.5.1063"
_ALIASES: dict[str, str] = {}
for _url, _oid in _CANONICAL.items():
    _name = _url.rsplit("/", 1)[1]  # v3-ActCode
    for _alias in (_url, f"urn:oid:{_oid}", _oid, f"http://hl7.org/fhir/{_name.replace('-', '/')}"):
        _ALIASES[_alias.lower()] = _url


def canonical_system(system: str) -> str:
    """HL7's R4 URL for another spelling of one of its security-label code systems; any other system as
    given."""
    key = system.strip().lower().rstrip("/")
    if key.startswith("https://"):
        key = "http://" + key[8:]
    return _ALIASES.get(key, system)


def label_token(system: object, code: object) -> str:
    """The `system|code` token of a security label."""
    return f"{canonical_system(system) if isinstance(system, str) else system}|{code}"
