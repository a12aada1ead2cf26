"""Per-phase wall-clock timings that stages put in their reports (where the time goes)."""

from __future__ import annotations

import time


class Laps:
    def __init__(self, into: dict[str, float]):
        self._into = into
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self._into[name] = round(self._into.get(name, 0.0) + now - self._clock, 2)
        self._clock = now
