"""Tell a bad image from a bad worker: per-row errors become rows, bugs fail the task.

A row-level error (an image that will not decode, a server that answers 404) belongs in
the table: re-runs skip it, and its reject says why. An error that is not the row's
fault (a library regression, a wrong setting, a bug of ours) must not be written into
every row for good: it hits most rows of a batch the same way, so `guard_batch` fails
the task loudly instead, and Spark retries it and then fails the stage with that line.
Resource errors (out of memory, a lost device) are the moment's fault, never the row's:
`is_resource_error` lets callers send them to batch halving, never to a fallback.

Each kind of error logs its traceback once per worker process, so a real bug shows its
stack in the executor log without one traceback per row.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger("deparrot.failures")

DETAIL_CHARS = 300
# At least this many rows of one batch must fail the same way before it counts as a bug:
# one unlucky row in a batch of one stays a row.
MIN_SAME_FAILURES = 2

# Out of memory or a lost device: the row is fine, the moment was not.
_RESOURCE_MARKERS = ("out of memory", "failed to allocate memory", "cuda error",
                     "cudnn_status", "cublas_status", "cudaerrormemoryallocation",
                     "device lost", "no cuda gpus are available", "resource exhausted",
                     "cuda driver")

_logged: set[str] = set()
_lock = threading.Lock()


class SuspectedBugError(RuntimeError):
    """Most of a batch failed with the same error that is not about its rows."""


def is_resource_error(exc: BaseException) -> bool:
    """Out of memory or a lost device (torch, onnxruntime or plain Python)."""
    if isinstance(exc, MemoryError):
        return True
    oom = _torch_oom()
    if oom is not None and isinstance(exc, oom):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in _RESOURCE_MARKERS)


def _torch_oom() -> type | None:
    import sys

    torch = sys.modules.get("torch")  # never imports torch for a download worker
    return getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)


def describe(exc: BaseException) -> str:
    """The error's own words: its type and first line, short enough for a table cell."""
    words = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {words[0]}" if words else type(exc).__name__
    return text[:DETAIL_CHARS]


def note(kind: str, exc: BaseException) -> str:
    """Log `exc`'s traceback the first time this process sees `kind`; its description."""
    with _lock:
        first = kind not in _logged
        _logged.add(kind)
    if first:
        log.warning("%s (traceback logged once per worker for this kind):\n%s", kind,
                    "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return describe(exc)


def guard_batch(stage: str, kinds: Iterable[str | None], details: Iterable[str | None] = ()
                ) -> None:
    """Raise SuspectedBugError when most rows of a batch failed with the same error that
    is not the rows' fault. `kinds`: per row, that error's kind, or None (ok, or a
    failure of the row itself such as an undecodable image)."""
    kinds = list(kinds)
    details = list(details) or [None] * len(kinds)
    counts = Counter(k for k in kinds if k)
    if not counts:
        return
    kind, n = counts.most_common(1)[0]
    if n < MIN_SAME_FAILURES or 2 * n <= len(kinds):
        return
    said = next((d for k, d in zip(kinds, details, strict=True) if k == kind and d), kind)
    raise SuspectedBugError(
        f"{stage}: {n} of {len(kinds)} rows of a batch failed with {said}. That is a bug "
        "or a wrong setting, not bad input: the task fails (Spark retries it) instead of "
        "rejecting every row for good.")
