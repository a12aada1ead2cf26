"""One cache for everything a Python worker loads once: models, fetchers, faiss indexes.

Spark reuses Python workers across tasks (spark.python.worker.reuse, on by default), so
a module-level cache turns "load per batch" into "load per worker". Every executor-side
module goes through `worker_cached` instead of keeping its own dict, so the locking,
the keying by settings and the size bound are written once.

Keys are made from the settings that matter: dataclasses, mappings and sequences are
turned into a canonical JSON text, so unhashable settings (a free-form options mapping)
and equal settings built in different processes give the same key.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Per kind: a worker rarely holds more than a couple of model variants; the bound keeps
# a long-lived worker that saw many configurations from piling up GPU memory.
DEFAULT_MAX_ENTRIES = 4

_CACHES: dict[str, OrderedDict[str, Any]] = {}
_LOCK = threading.RLock()


def cache_key(value: Any) -> str:
    """A canonical text for `value` (settings dataclass, mapping, tuple, scalar)."""
    return json.dumps(_plain(value), sort_keys=True, default=repr, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__,
                **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def worker_cached(kind: str, key: Any, build: Callable[[], T],
                  max_entries: int = DEFAULT_MAX_ENTRIES) -> T:
    """Return the cached object of `kind` for `key`, building it on first use.

    Building happens under the lock: two threads of one task asking for the same model
    must not load it twice (GPU memory), and loads are rare.
    """
    text = cache_key(key)
    with _LOCK:
        cache = _CACHES.setdefault(kind, OrderedDict())
        if text in cache:
            cache.move_to_end(text)
            return cache[text]
        value = build()
        cache[text] = value
        while len(cache) > max(1, max_entries):
            cache.popitem(last=False)
        return value


def cached_count(kind: str) -> int:
    with _LOCK:
        return len(_CACHES.get(kind, ()))


def clear(kind: str | None = None) -> None:
    """Drop cached objects (tests; or a worker switching to other models)."""
    with _LOCK:
        if kind is None:
            _CACHES.clear()
        else:
            _CACHES.pop(kind, None)
