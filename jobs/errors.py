"""Errors a person can act on: the CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input (a path, a file, a setting): one clear line and exit status 2."""


class ConcurrentRunError(Exception):
    """Another run committed to the same tables first; re-running resumes safely."""


def is_concurrent_write(exc: BaseException) -> bool:
    """Delta's optimistic-concurrency conflicts, whatever wrapper they arrive in."""
    try:
        from delta.exceptions.base import (
            ConcurrentAppendException,
            ConcurrentDeleteReadException,
            ConcurrentTransactionException,
            ConcurrentWriteException,
            DeltaConcurrentModificationException,
            MetadataChangedException,
        )

        kinds: tuple[type, ...] = (
            ConcurrentAppendException, ConcurrentDeleteReadException,
            ConcurrentTransactionException, ConcurrentWriteException,
            DeltaConcurrentModificationException, MetadataChangedException)
    except ImportError:  # pragma: no cover - delta-spark not installed
        kinds = ()
    if kinds and isinstance(exc, kinds):
        return True
    text = str(exc)
    return "DELTA_CONCURRENT" in text or "io.delta.exceptions.Concurrent" in text


def first_line(exc: BaseException) -> str:
    """The message without JVM stack frames (Spark puts them after the first line)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def suspected_bug(exc: BaseException) -> str | None:
    """The line of a udfs.failures.SuspectedBugError raised in a task, if `exc` carries one
    (Spark wraps it in its own error, with the worker's traceback around it)."""
    marker = "SuspectedBugError: "
    text = str(exc)
    at = text.find(marker)
    return text[at + len(marker):].splitlines()[0].strip() if at >= 0 else None
