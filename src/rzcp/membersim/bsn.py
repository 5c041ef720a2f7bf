"""Dutch citizen service numbers (BSN) for simulated patients: the 11-check, and test numbers.

The simulated members give their patients BSNs from the 9999 range (999900000 to 999999999), numbers set
aside for testing, each passing the 11-check. A number is derived from the patient's id in its source file,
so every member that loads the same file gives the same person the same BSN and the locator can link them.
"""

from __future__ import annotations

import hashlib

from rzcp.auth import bsn as auth_bsn

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
_TEST_FIRST = 999_900_000
_TEST_SPAN = 100_000


def is_valid_bsn(value: str) -> bool:
    """Nine digits passing the 11-check (the gateway's own check, which also pads eight digits: a
    simulated patient's number is written out in full)."""
    return len(value) == 9 and auth_bsn.is_valid_bsn(value)


def derive_test_bsn(seed: str, taken: set[str] | None = None) -> str:
    """A valid BSN of the test range, derived from `seed`, and not in `taken`."""
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % _TEST_SPAN
    for step in range(_TEST_SPAN):
        candidate = str(_TEST_FIRST + (start + step) % _TEST_SPAN)
        if is_valid_bsn(candidate) and (taken is None or candidate not in taken):
            return candidate
    raise ValueError("the BSN test range is exhausted")  # pragma: no cover - 9,000+ valid numbers
