"""The Dutch citizen service number (BSN) and its 11-check. A BSN is never put in a token or a log."""

from __future__ import annotations

import re
import unicodedata

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
#: The BSN's OID, the older name of the same identifier system (`urn:oid:<oid>` as a FHIR system).
BSN_OID = "2.16.840.1.113883.2.4.6.3"
_BSN_SYSTEMS = frozenset(
    {BSN_SYSTEM.lower(), BSN_SYSTEM.lower().replace("http:", "https:"), BSN_OID, f"urn:oid:{BSN_OID}"}
)
_UUID = r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
#: A UUID: the gateway's own ids, never taken for a BSN.
UUID = re.compile(_UUID)
#: A UUID (left whole) or a nine-digit number standing alone.
_UUID_OR_NINE_DIGITS = re.compile(rf"(?P<uuid>{_UUID})|(?<!\d)(?P<nine>\d{{9}})(?!\d)")
_SEPARATORS = re.compile(r"[\s.\-_:/]")
_DIGIT_RUN = re.compile(r"\d{9,}")
#: Groups of digits with separators between them: `999.911.120`, `999 911 120`, `9 9 9 9 1 1 1 2 0`.
#: Separators as people and their word processors write them: blanks, dots, commas, colons, slashes, and
#: every dash (hyphen, non-breaking hyphen, en and em dash, minus), the middle dot (a review found these).
_DIGIT_GROUPS = re.compile(r"(?<!\d)\d+(?:[\s.,:;_/\-\u00b7\u2010-\u2015\u2212]{1,5}\d+)*(?!\d)")


def holds_bsn(text: str) -> bool:
    """Whether a BSN can be read from `text` once its separators are left out (`999.967.551`, a UUID whose
    last group ends in one): for a value a caller chose that the trail would keep whole, such as a request
    id. Stricter than `without_bsns`, which leaves UUIDs alone; a few random ids are refused with it."""
    for run in _DIGIT_RUN.findall(_SEPARATORS.sub("", text)):
        if any(is_valid_bsn(run[i : i + 9]) for i in range(len(run) - 8)):
            return True
    return False


def is_spelled_bsn(text: str) -> bool:
    """Whether `text` is a BSN written with separators (`999.967.551`, `999-967-551`): its digits alone
    are eight or nine and pass the 11-check. Narrower than `holds_bsn`: an OID or a date has more
    digits, so a value kept for what it says (a query, an id) is masked only when it is one."""
    digits = _SEPARATORS.sub("", text)
    return digits.isascii() and digits.isdigit() and is_valid_bsn(digits)


def is_valid_bsn(value: str) -> bool:
    """Nine digits (eight are padded with a leading zero) passing the 11-check: sum(d_i * w_i) % 11 == 0
    with weights 9..2 and -1 for the last digit; all zeros is refused."""
    if not value.isascii() or not value.isdigit() or len(value) not in (8, 9):
        return False
    digits = [int(c) for c in value.zfill(9)]
    if not any(digits):
        return False
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0


def is_bsn_system(system: str) -> bool:
    """Whether an identifier system names the BSN. Besides the NamingSystem URL, systems still send the
    OID (with or without `urn:oid:`), and a case or a trailing slash must not let a BSN through."""
    return system.strip().lower().rstrip("/") in _BSN_SYSTEMS


def without_bsns(text: str) -> str:
    """`text` with every nine-digit number that passes the 11-check replaced by `*`: for free text and ids
    a caller chose, which may hold a BSN anywhere. A UUID is left whole (the gateway's ids are UUIDs and a
    nine-digit stretch inside one is not a BSN); a number that fails the 11-check is no BSN."""
    return _UUID_OR_NINE_DIGITS.sub(_masked_match, text)


def without_bsns_in_words(text: str) -> str:
    """`without_bsns` for what a person wrote (an emergency's reason), where a BSN comes spelled as people
    write it: in groups (`999.911.120`, `999 911 120`, `999-911-120`), digit by digit, with a leading
    zero (`0999911120`) or in full-width digits. Any stretch of digit groups in which consecutive groups
    make nine digits (after a leading zero) passing the 11-check is masked whole; a date or a time makes
    no nine-digit stretch and stays. UUIDs are left whole, as in `without_bsns`."""
    text = unicodedata.normalize("NFKC", text)
    out, last = [], 0
    for uuid in UUID.finditer(text):
        out.append(_DIGIT_GROUPS.sub(_masked_groups, text[last : uuid.start()]))
        out.append(uuid.group(0))
        last = uuid.end()
    out.append(_DIGIT_GROUPS.sub(_masked_groups, text[last:]))
    return "".join(out)


def _masked_groups(match: re.Match[str]) -> str:
    groups = re.findall(r"\d+", match.group(0))
    for start in range(len(groups)):
        digits = ""
        for group in groups[start:]:
            digits += group
            nine = digits[1:] if len(digits) == 10 and digits[0] == "0" else digits
            if len(nine) == 9 and is_valid_bsn(nine):
                return "*"
            if len(digits) > 10:
                break
    return match.group(0)


def _masked_match(match: re.Match[str]) -> str:
    nine = match.group("nine")
    return "*" if nine is not None and is_valid_bsn(nine) else match.group(0)
