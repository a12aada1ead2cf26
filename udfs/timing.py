"""Wall-clock time per phase, summed into a dict (a stage's report, a benchmark's laps)."""

from __future__ import annotations

import time


class Laps:
    """`lap(name)` adds the time since the previous lap to `into[name]` (None: not kept)."""

    def __init__(self, into: dict[str, float] | None, digits: int | None = None):
        self.into, self.digits = into, digits
        self.clock = time.perf_counter()

    def __call__(self, name: str) -> float:
        now = time.perf_counter()
        took, self.clock = now - self.clock, now
        if self.into is not None:
            total = self.into.get(name, 0.0) + took
            self.into[name] = round(total, self.digits) if self.digits is not None else total
        return took
