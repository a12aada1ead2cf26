"""Which values name model weights: torch-free, so the driver checks them before any task.

One place for what every model loader (CLIP, aesthetic, Sync. Score, training) and the
score stage's path resolution agree on; the files themselves are read through
udfs/storage.py, wherever they live.
"""

from __future__ import annotations

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".safetensors")
# Values that ask for randomly initialised weights (tests and demos only).
RANDOM_WEIGHTS = ("", "random", "none")


def is_random(value: str | None) -> bool:
    return value is None or value.strip().lower() in RANDOM_WEIGHTS


def looks_like_file(value: str) -> bool:
    """A weights file rather than a tag: a path, or a name with a checkpoint suffix."""
    return "/" in value or value.lower().endswith(CHECKPOINT_SUFFIXES)
