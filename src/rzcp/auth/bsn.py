"""The Dutch citizen service number (BSN) and its 11-check. A BSN is never put in a token or a log."""

from __future__ import annotations

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"


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
