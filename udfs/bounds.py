"""Range checks for settings dataclasses: a value that cannot work is an error naming it.

`batch_size: -5` would otherwise be accepted and fail deep inside a Spark task, or
silently do nothing. The config loader (jobs/config.py) prefixes the section, so the
message names the full key (`score: batch_size must be >= 1, got -5`).
"""

from __future__ import annotations

import math
from typing import Any


def at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
            raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


def within(obj: Any, low: float, high: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
