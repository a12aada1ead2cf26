"""Errors that are bugs fail the task; errors of one row stay that row's (udfs.failures)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from tests.support.http_server import LocalImageServer
from udfs import failures
from udfs.failures import SuspectedBugError, describe, guard_batch, is_resource_error, note
from udfs.fetch import Fetcher, FetchSettings
from udfs.images import ImageSettings, download_batches
from udfs.resize import ResizeSettings


def test_most_of_a_batch_failing_the_same_way_is_a_bug():
    with pytest.raises(SuspectedBugError, match="3 of 4 rows .* KeyError: 'x'"):
        guard_batch("score", ["score:KeyError"] * 3 + [None], ["KeyError: 'x'"] * 4)


@pytest.mark.parametrize("kinds", [
    ["score:ValueError", None, None],  # one image the model cannot handle
    ["score:ValueError"],  # alone in its batch: still the image's
    ["score:ValueError", "score:KeyError", None, None],  # different errors
    ["score:ValueError", "score:ValueError", None, None],  # half is not most
    [None, None],
])
def test_a_few_failing_rows_stay_rows(kinds):
    guard_batch("score", kinds)  # no error


def test_the_traceback_of_a_kind_is_logged_once_per_process(caplog):
    failures._logged.discard("test:ZeroDivisionError")
    with caplog.at_level(logging.WARNING, logger="deparrot.failures"):
        for _ in range(3):
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError as exc:
                detail = note("test:ZeroDivisionError", exc)
    assert detail == "ZeroDivisionError: division by zero"
    logged = [r for r in caplog.records if "test:ZeroDivisionError" in r.getMessage()]
    assert len(logged) == 1 and "Traceback" in logged[0].getMessage()


def test_resource_errors_are_told_apart_from_bugs():
    assert is_resource_error(MemoryError())
    assert is_resource_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_resource_error(RuntimeError("Failed to allocate memory for requested buffer"))
    assert not is_resource_error(KeyError("det_limit_side_len"))
    assert describe(ValueError("first line\nsecond")) == "ValueError: first line"
    assert len(describe(ValueError("x" * 1000))) == failures.DETAIL_CHARS


def test_a_fetcher_bug_on_every_url_fails_the_download_task(monkeypatch):
    def bug(self, url):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(Fetcher, "_attempt", bug)
    fetch = FetchSettings(allowed_networks=("127.0.0.1/32",), timeout_s=5.0, retries=0,
                          pool_maxsize=3)  # its own cached fetcher
    frame = pd.DataFrame({"sample_id": [1, 2, 3], "url": [f"http://127.0.0.1:9/{i}.jpg"
                                                          for i in range(3)]})
    settings = ImageSettings(resize=ResizeSettings(image_size=64))
    with pytest.raises(SuspectedBugError, match="3 of 3 rows .*TypeError: unsupported"):
        list(download_batches(iter([frame]), fetch, settings, concurrency=2))


def test_a_fetcher_bug_on_one_url_is_that_rows_error_with_its_words(monkeypatch):
    real = Fetcher._attempt

    def bug_on_b(self, url):
        if url.endswith("/b"):
            raise TypeError("a bug on this one URL")
        return real(self, url)

    monkeypatch.setattr(Fetcher, "_attempt", bug_on_b)
    with LocalImageServer(image_bytes=_jpeg()) as srv:
        fetch = FetchSettings(allowed_networks=("127.0.0.1/32",), timeout_s=5.0, retries=0,
                              pool_maxsize=5)
        frame = pd.DataFrame({"sample_id": [1, 2, 3],
                              "url": [srv.url("/image?n=1"), srv.url("/b"),
                                      srv.url("/image?n=3")]})
        settings = ImageSettings(resize=ResizeSettings(image_size=64))
        out = pd.concat(download_batches(iter([frame]), fetch, settings, concurrency=2))
    rows = out.set_index("sample_id")
    assert rows.loc[2, "error"] == "internal_error"
    assert rows.loc[2, "error_detail"] == "TypeError: a bug on this one URL"
    assert (rows.loc[[1, 3], "status"] == "ok").all()


def test_out_of_memory_in_the_batched_detector_is_not_swallowed_by_its_fallback():
    from udfs.batched_ocr import BatchedOcrSpotter

    spotter = BatchedOcrSpotter(engine="torch", num_threads=1)

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 4.00 GiB")

    spotter._det_torch = oom
    image = np.full((64, 96, 3), 255, np.uint8)
    with pytest.raises(RuntimeError, match="out of memory"):
        spotter.spot([image])
    assert spotter.engine == "torch"  # no switch to the slow path for the worker's life

    def other(*args, **kwargs):  # e.g. an onnxruntime build without I/O binding
        raise NotImplementedError("no I/O binding")

    spotter._det_torch = other
    assert len(spotter.spot([image])) == 1 and spotter.engine == "numpy"


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.radial_gradient("L").resize((128, 96)).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()
