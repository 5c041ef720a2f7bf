"""What of a request's own text an AuditEvent keeps. BSNs are stored nowhere in clear, the trail included:
a record names the patient by the regional Patient id it resolved to, and keeps what was asked with every
BSN in it replaced by `*`. The trail is append-only and kept for years, so these rules mask too much
rather than too little; what is masked is only the value, so the record still says what was asked.

In the query string (`recorded_query`), after percent-decoding (`+` too), per parameter and per
comma-separated value:

- Everything after a BSN system (the NamingSystem URL or the OID, bare or as `urn:oid:`), in any
  parameter: `patient.identifier=http://fhir.nl/fhir/NamingSystem/bsn|*`.
- In an identifier parameter, the value (after the last `|`) when it holds eight digits or more, written
  together or with spaces, dots or dashes between them (a BSN, also an old eight-digit one); a UUID is kept.
  An identifier parameter is any name with a part (between `.` and `:`) ending in `identifier`, whatever
  the modifier or chain: `identifier:text`, `patient.identifier`, `subject:Patient.identifier`,
  `_has:Observation:patient:identifier`, `patient:identifier`.
- In every name and value: any nine-digit number passing the 11-check (`without_bsns`), so that
  `patient=999967551` or a BSN in `_content` is not kept either; and a value from which a BSN can be read
  once its separators are left out (`patient=999.967.551`), unless it is a UUID.

In a path (`recorded_reference`): an id that is eight or nine digits, holds a BSN, or is one written with
separators; the gateway's ids are UUIDs, so no id it gives is masked.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from rzcp.auth.bsn import UUID, is_bsn_system, is_spelled_bsn, without_bsns

MASK = "*"
#: Eight or more digits, with at most one space, dot or dash between two of them.
_LONG_NUMBER = re.compile(r"\d(?:[\s.\-]?\d){7,}")
_PARTS = re.compile(r"[.:]")
_SEGMENT = re.compile(r"[^/\s,|]+")


def recorded_query(query: str) -> str:
    """The query string as the trail keeps it: as asked when it holds no BSN, else re-encoded with each
    BSN masked."""
    pairs = parse_qsl(query, keep_blank_values=True)
    masked = [(without_bsns(name), _masked_value(name, value)) for name, value in pairs]
    return query if masked == pairs else urlencode(masked, safe=MASK)


def recorded_reference(reference: str) -> str:
    """`Type/id` from a request's path or parameters, its id masked when it may be a BSN."""
    head, _, res_id = reference.rpartition("/")
    digits = res_id.isascii() and res_id.isdigit()
    if (digits and len(res_id) in (8, 9)) or is_spelled_bsn(res_id):
        res_id = MASK
    return without_bsns(f"{head}/{res_id}" if head else res_id)


def recorded_text(text: str) -> str:
    """Free text the gateway wrote (a refusal's reason, which may quote what was asked) as the trail keeps
    it: every word that is eight or nine digits, or a BSN written with separators, masked, as a path's id
    is (an eight-digit URA too: the rules mask too much rather than too little)."""

    def masked(match: re.Match[str]) -> str:
        word = match[0]
        core = word.strip("'\"()[]{}.:;")
        digits = core.isascii() and core.isdigit() and len(core) in (8, 9)
        return word.replace(core, MASK) if core and (digits or is_spelled_bsn(core)) else word

    return _SEGMENT.sub(masked, without_bsns(text))


def _is_identifier_param(name: str) -> bool:
    return any(part.lower().endswith("identifier") for part in _PARTS.split(name))


def _masked_value(name: str, value: str) -> str:
    identifier = _is_identifier_param(name)
    masked = ",".join(_masked_token(token, identifier=identifier) for token in value.split(","))
    return _spelled_out(without_bsns(masked))


def _masked_token(token: str, *, identifier: bool) -> str:
    """One value, `[system|]value` (or an :of-type's `system|code|value`)."""
    pieces = token.split("|")
    for i, piece in enumerate(pieces[:-1]):
        if is_bsn_system(piece):
            return "|".join([*pieces[: i + 1], *(MASK if p else p for p in pieces[i + 1 :])])
    if identifier and _LONG_NUMBER.search(pieces[-1]) and not UUID.fullmatch(pieces[-1]):
        pieces[-1] = MASK
    return "|".join(pieces)


def _spelled_out(text: str) -> str:
    """`text` with each segment (between slashes, spaces, commas and bars) that is a BSN written with
    separators masked: `Patient/999.967.551` becomes `Patient/*`. An OID or a date has more digits."""
    return _SEGMENT.sub(lambda m: MASK if is_spelled_bsn(m[0]) else m[0], text)
