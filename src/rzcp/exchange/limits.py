"""The bounds an adapter keeps when it talks to a member: how much it reads and how often it retries.

Plain values, built once per process and handed to every adapter through its `AdapterContext`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseLimits:
    """What one answer of a member may cost the gateway before the rest is refused and reported."""

    #: The most bytes read from one HTTP response body (a page); past it the page is dropped.
    max_bytes: int = 5 * 1024 * 1024
    #: The most resources taken from one search, over all pages; the rest is cut off and reported.
    max_entries: int = 1000
    #: The most pages read for one search (the first plus `next` links followed).
    max_pages: int = 5


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for idempotent reads only (search pages, read, capabilities); a delivery is never retried
    by the adapter (the outbox does that, with the idempotency key)."""

    #: Attempts after the first one.
    retries: int = 2
    #: The first back-off, doubled each time, with full jitter; never past the call's deadline.
    backoff: float = 0.05
    max_backoff: float = 1.0
    #: HTTP statuses worth another try: the member said "not now", not "no".
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def delay(self, attempt: int) -> float:
        """The pause before retry number `attempt` (1-based): full jitter over an exponential cap."""
        cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not a secret
