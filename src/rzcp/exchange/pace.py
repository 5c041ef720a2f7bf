"""How long each member took to answer lately, so that a pull asks its slowest members first.

A pull waits for its slowest member, and its calls leave one after the other: each costs the gateway a
few hundred microseconds of CPU before the next one is sent (bench/README.md, "The slowest member asked
first"). Asking the member that took longest lately first lets its wait overlap the sending of the
others; asking it last adds the whole sending to the pull.

The figures are this process's own and only order the calls: no decision rests on them, so processes
that disagree, or a member that changed its pace, cost no more than the order of the source list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: The weight of the newest answer time in a member's average: about the last ten answers count.
WEIGHT = 0.2
#: More members than a region has; past it the averages start again rather than grow.
MAX_MEMBERS = 10_000


@dataclass
class MemberPace:
    """A moving average of each member's answer time (ms), by URA."""

    weight: float = WEIGHT
    _ms: dict[str, float] = field(default_factory=dict)

    def note(self, ura: str, elapsed_ms: float) -> None:
        """One answer (or failure, or timeout) of this member took `elapsed_ms`."""
        before = self._ms.get(ura)
        if before is None:
            if len(self._ms) >= MAX_MEMBERS:
                self._ms.clear()
            self._ms[ura] = elapsed_ms
        else:
            self._ms[ura] = before + self.weight * (elapsed_ms - before)

    def expected_ms(self, ura: str) -> float | None:
        return self._ms.get(ura)

    def slowest_first(self, uras: Sequence[str]) -> list[int]:
        """The positions of `uras` in the order to call them: the slowest lately first, a member not yet
        heard from before all (it may be the slowest), equals in their given order."""
        return sorted(range(len(uras)), key=lambda i: -self._ms.get(uras[i], math.inf))
