"""Tests for udfs.images: one row per URL, streamed by threads that fetch and resize."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from PIL import Image

from tests.support.http_server import LocalImageServer
from udfs.fetch import FetchSettings
from udfs.images import IMAGE_FIELDS, ImageSettings, download_batches, download_rows, image_row
from udfs.resize import ResizeSettings

FETCH = FetchSettings(allowed_networks=("127.0.0.1/32",), timeout_s=5.0, retries=0)
SETTINGS = ImageSettings(resize=ResizeSettings(image_size=64))


def _jpeg(size=(640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[LocalImageServer]:
    with LocalImageServer(image_bytes=_jpeg()) as srv:
        yield srv


def test_every_url_gets_exactly_one_row(server: LocalImageServer) -> None:
    urls = [server.url(f"/image?n={i}") for i in range(30)] + [
        server.url("/status/404"), server.url("/html"), "ftp://x/y", None]
    frames = [pd.DataFrame({"sample_id": range(0, 20), "url": urls[:20]}),
              pd.DataFrame({"sample_id": range(20, len(urls)), "url": urls[20:]})]
    out = pd.concat(download_batches(iter(frames), FETCH, SETTINGS, 4, rows_per_batch=7))
    assert list(out.columns) == list(IMAGE_FIELDS)
    assert sorted(out["sample_id"]) == list(range(len(urls)))
    rows = out.set_index("sample_id").sort_index()
    assert (rows.loc[:29, "status"] == "ok").all()
    assert (rows.loc[:29, ["width", "height", "original_width", "original_height"]]
            .drop_duplicates().values.tolist() == [[64, 64, 640, 480]])
    assert rows.loc[30:, "error"].tolist() == ["http_404", "html_not_image",
                                               "scheme_not_allowed", "bad_url"]


def test_a_slow_server_holds_one_thread_not_the_others(server: LocalImageServer) -> None:
    pairs = [(0, server.url("/slow/1.5"))] + [(i, server.url(f"/image?n={i}"))
                                               for i in range(1, 41)]
    start = time.monotonic()
    seen = []
    for row in download_rows(iter(pairs), FETCH, SETTINGS, concurrency=4):
        seen.append((row["sample_id"], time.monotonic() - start))
    assert sorted(i for i, _ in seen) == list(range(41))
    assert seen[-1][0] == 0  # the slow one finishes last ...
    fast_done = max(t for i, t in seen if i != 0)
    assert fast_done < 1.4  # ... while the other 40 went through the remaining threads


def test_stopping_early_cancels_the_rest(server: LocalImageServer) -> None:
    pairs = [(i, server.url("/slow/0.3")) for i in range(200)]
    rows = download_rows(iter(pairs), FETCH, SETTINGS, concurrency=4)
    next(rows)
    rows.close()

    def threads_left() -> int:
        return sum(t.name.startswith("download") for t in threading.enumerate())

    deadline = time.monotonic() + 5
    while threads_left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads_left() == 0  # they finished the request at hand and stopped
    assert server.hits() < 20  # not the 200 URLs


def test_reduced_decode_matches_full_decode_sizes() -> None:
    data = _jpeg((641, 479))
    full = image_row(1, "u", data, ImageSettings(resize=ResizeSettings(
        image_size=128, reduced_decode=False)), "http")
    reduced = image_row(1, "u", data, ImageSettings(resize=ResizeSettings(image_size=128)),
                        "http")
    keys = ("status", "width", "height", "original_width", "original_height", "sha256")
    assert [full[k] for k in keys] == [reduced[k] for k in keys] == [
        "ok", 128, 128, 641, 479, full["sha256"]]
