"""The workbench in a real browser (the OS's Chromium, driven by Playwright): the click-through
a curator makes, the what-if's sliders, a review landing in Delta, hostile web text staying
text, and one-line 400s. tests/jobs/test_explore.py checks the same answers in-process."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from benchmarks.explore_lake import HOSTILE, LakeShape, write_lake
from jobs.config import load_config
from jobs.explore.app import build_app
from jobs.explore.decisions import GalleryFilters
from jobs.explore.workbench import Workbench

REPO = Path(__file__).resolve().parents[2]
CONFIG = "conf/local.yaml"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium on PATH (chromium, chromium-browser, google-chrome)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"{message}: `bash scripts/setup.sh` installs it")


@dataclasses.dataclass
class Served:
    url: str
    root: Path
    wb: Workbench
    counts: dict


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import uvicorn

    _chromium()
    root = tmp_path_factory.mktemp("explore_browser") / "lake"
    counts = write_lake(str(root), LakeShape(rows=150, hostile=True))
    cfg = load_config(str(REPO / CONFIG), [f"storage.root={root}"])
    wb = Workbench.open(cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(wb, "", CONFIG), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Served(f"http://127.0.0.1:{port}", root, wb, counts)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    """A fresh page; `page.errors` collects console errors and uncaught exceptions (a CSP
    violation, a failed image, a script error)."""
    context = browser.new_context(base_url=served.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(f"{m.text} ({m.location.get('url')})")
          if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()


def _open(page, path: str):
    response = page.goto(path)
    assert response is not None and response.status == 200, (path, response and response.status)
    return response


def _words(text: str | None) -> set[str]:
    return set((text or "").lower().split())


def _is_hostile(row: dict) -> bool:
    return any(h in (row.get(k) or "") for h in HOSTILE for k in ("text", "ocr_text", "url"))


def test_funnel_to_gallery_to_a_row_with_its_boxes_and_parroted_words(page, served):
    wb = served.wb
    _open(page, "/")
    input_rows = page.locator('#funnel tr:has(td:text-is("input rows")) td.n').inner_text()
    assert int(input_rows) == served.counts["input"]
    link = page.locator('#funnel tr:has(td:text-is("text_found")) a')
    n = int(link.inner_text())
    assert n == wb.gallery(GalleryFilters(published="publish:text_found"))["total"] > 0
    link.click()
    page.wait_for_url(re.compile(r"/gallery\?published=publish%3Atext_found$"))
    assert page.locator("#total").inner_text().startswith(f"{n} rows")
    cards = page.locator("#gallery .card")
    assert cards.count() == min(n, 48)
    assert set(page.locator("#gallery .card .tag").all_inner_texts()) == {"publish:text_found"}

    shown = [int(s) for s in cards.evaluate_all("cs => cs.map(c => c.dataset.sampleId)")]
    rows = [wb.detail(s).row for s in shown]
    row = next(r for r in rows if not _is_hostile(r) and r["image_status"] == "ok"
               and _words(r["text"]) & _words(r["ocr_text"]))
    sid = row["sample_id"]
    page.locator(f'#gallery .card[data-sample-id="{sid}"] a').click()
    page.wait_for_url(f"**/row/{sid}")

    img = page.locator("#figure img")
    page.wait_for_function("() => { const i = document.querySelector('#figure img');"
                           " return i.complete && i.naturalWidth > 0; }")
    assert img.evaluate("i => i.naturalWidth") == row["image_width"]
    polygons = page.locator("#boxes polygon")
    assert polygons.count() >= 1
    rect = "e => { const r = e.getBoundingClientRect();" \
           " return {x: r.x, y: r.y, width: r.width, height: r.height}; }"
    ib, pb = img.evaluate(rect), polygons.first.evaluate(rect)  # geometry, without the stroke
    assert ib["width"] > 0 and pb["width"] > 0
    assert ib["x"] - 1 <= pb["x"] and pb["x"] + pb["width"] <= ib["x"] + ib["width"] + 1
    assert ib["y"] - 1 <= pb["y"] and pb["y"] + pb["height"] <= ib["y"] + ib["height"] + 1
    # Where the text is: the lake's box is (10, 40)-(150, 80) on a 160 x 120 image.
    sx, sy = ib["width"] / row["image_width"], ib["height"] / row["image_height"]
    assert abs(pb["x"] - (ib["x"] + 10 * sx)) < 3 and abs(pb["width"] - 140 * sx) < 3
    assert abs(pb["y"] - (ib["y"] + 40 * sy)) < 3 and abs(pb["height"] - 40 * sy) < 3

    assert page.locator("#ocr-text").inner_text() == row["ocr_text"]
    assert row["ocr_text"] in page.locator("#ocr").inner_text()
    assert page.locator("#caption").inner_text() == row["text"]
    marks = {m.lower() for m in page.locator("#caption mark").all_inner_texts()}
    assert marks and marks <= _words(row["ocr_text"])
    assert marks == _words(row["text"]) & _words(row["ocr_text"])
    assert page.locator("#published").inner_text() == "publish:text_found"
    assert page.errors == []


def test_caption_search_finds_the_rows_holding_a_word(page, served):
    wb = served.wb
    _open(page, "/search")
    page.fill("#search input[name=q]", "Bicycle")
    page.select_option("#search select[name=mode]", "caption")
    page.click("#search button[type=submit]")
    page.wait_for_url(re.compile(r"/search\?q=Bicycle&mode=caption"))
    total = wb.search_caption("bicycle")["total"]
    assert total > 0
    assert page.locator("#total").inner_text().startswith(f"{total} rows")
    captions = page.locator("#gallery .card .cap").all_inner_texts()
    assert len(captions) == min(total, 48)
    assert all("bicycle" in c.lower() for c in captions)
    assert page.errors == []


def test_meaning_search_warns_and_more_like_this_follows(page, served):
    """The first meaning search imports torch, open_clip and torchvision: the module's
    slowest step (10-20 s here), so it is asked once."""
    wb = served.wb
    _open(page, "/search")
    page.fill("#search input[name=q]", "a red bicycle in the street")
    page.select_option("#search select[name=mode]", "meaning")
    with page.expect_navigation(timeout=120_000):
        page.click("#search button[type=submit]")
    assert "mode=meaning" in page.url
    results = page.locator("#results .card")
    shown = [int(x) for x in results.evaluate_all("cs => cs.map(c => c.dataset.sampleId)")]
    assert shown == [h.sample_id for h in wb.search_meaning("a red bicycle in the street")]
    assert len(shown) == 24
    assert "randomly initialised" in page.locator("#search-warning").inner_text()

    first = shown[0]
    _open(page, f"/row/{first}")
    page.click("#more-like")
    page.wait_for_url(f"**/search?like={first}")
    assert page.locator("h2", has_text=f"More like row {first}").count() == 1
    similar = [int(s) for s in page.locator("#results .card").evaluate_all(
        "cs => cs.map(c => c.dataset.sampleId)")]
    assert len(similar) == 24 and first not in similar
    assert similar == [h.sample_id for h in wb.more_like(first)]
    assert page.errors == []


def test_whatif_slider_updates_the_counts_and_the_set_line(page, served):
    wb = served.wb
    _open(page, "/whatif")
    before = page.locator("#kept").inner_text()
    assert int(before) == wb.whatif(wb.configured())["kept"]
    # Stricter: fewer kept (looser would make rows dedup never compared, not kept ones).
    moved = dataclasses.replace(wb.configured(), min_clip_score=0.32)
    expected = wb.whatif(moved)["kept"]
    assert expected < int(before)
    page.evaluate("""() => {
        const s = document.querySelector('#whatif input[name=min_clip_score]');
        s.value = '0.32';
        s.dispatchEvent(new Event('input', {bubbles: true}));
    }""")
    page.wait_for_function("b => document.getElementById('kept').textContent !== b", arg=before)
    assert int(page.locator("#kept").inner_text()) == expected
    assert "--set recipe.min_clip_score=0.32" in page.locator("#set-line").inner_text()
    assert "min_clip_score: 0.32" in page.locator("#yaml").inner_text()
    slider_output = page.locator("#whatif input[name=min_clip_score] + output")
    assert slider_output.inner_text() == "0.32"
    assert "min_clip_score=0.32" in page.url  # the address reproduces the view

    # The keyboard moves it too: one step up from 0.32 is 0.325.
    page.focus("#whatif input[name=min_clip_score]")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.getElementById('set-line').textContent.includes('=0.325 ')")
    higher = dataclasses.replace(moved, min_clip_score=0.325)
    assert int(page.locator("#kept").inner_text()) == wb.whatif(higher)["kept"]
    assert page.errors == []


def test_a_review_is_shown_and_lands_in_the_delta_table(page, served):
    from deltalake import DeltaTable

    wb = served.wb
    sid = wb.gallery(GalleryFilters(published="publish:text_found"))["rows"][0]["sample_id"]
    _open(page, f"/row/{sid}")
    page.fill("#review input[name=reviewer]", "pw-curator")
    with page.expect_navigation():
        page.click("#review button[value=no_text]")
    assert page.url.endswith(f"/row/{sid}")
    reviews = page.locator("#row-reviews").inner_text()
    assert "no_text" in reviews and "pw-curator" in reviews

    table = DeltaTable(str(served.root / "reviews")).to_pyarrow_table().to_pylist()
    mine = [r for r in table if r["reviewer"] == "pw-curator"]
    assert [(r["sample_id"], r["label"]) for r in mine] == [(sid, "no_text")]

    _open(page, "/reviews")
    assert page.locator(f'#reviews a[href="/row/{sid}"]').count() == 1
    # A row that the text filter dropped, reviewed as having no text: a false positive.
    assert re.search(r"\b1 false positives", page.locator("main").inner_text())
    assert page.errors == []


_SAFE_PAGE = """(url) => {
    const bad = [];
    for (const el of document.querySelectorAll('a[href], img[src], [src], [href]')) {
        for (const attr of ['href', 'src']) {
            const v = el.getAttribute(attr);
            if (v === null) continue;
            const t = v.trim().toLowerCase();
            if (t.startsWith('javascript:') || (url && v.includes(url))
                || t.includes('images.example') || t.includes('pwned'))
                bad.push(el.tagName + ' ' + attr + '=' + v);
        }
    }
    for (const el of document.querySelectorAll('*'))
        for (const a of el.attributes)
            if (a.name.startsWith('on')) bad.push(el.tagName + ' ' + a.name);
    for (const s of document.querySelectorAll('script'))
        if (s.getAttribute('src') !== '/static/app.js') bad.push('script ' + s.outerHTML);
    return bad;
}"""


def _assert_inert(page, url: str | None = None) -> None:
    assert page.evaluate("() => window.__pwned") is None
    assert page.evaluate(_SAFE_PAGE, url) == []


def test_hostile_text_stays_text(page, served):
    wb = served.wb
    hostile = wb.search_caption("pwned")["rows"]
    assert len(hostile) >= len(HOSTILE)

    _open(page, "/search?q=pwned&mode=caption")
    _assert_inert(page)
    captions = page.locator("#gallery .card .cap").all_inner_texts()
    assert len(captions) == len(hostile)
    for payload in HOSTILE:
        assert any(payload in c for c in captions), payload
    for path in ("/gallery", "/gallery?published=ingest:bad_url"):
        _open(page, path)
        _assert_inert(page)
    assert HOSTILE[0] in page.locator("#ingest-rejects").inner_text()

    with_ocr = 0
    for h in hostile:
        row = wb.detail(h["sample_id"]).row
        _open(page, f"/row/{row['sample_id']}")
        if row["image_status"] == "ok":
            page.wait_for_function("() => document.querySelector('#figure img').complete")
        _assert_inert(page, row["url"])
        assert page.locator("#caption").inner_text() == row["text"]
        assert page.locator("#url").inner_text() == row["url"]
        if row["ocr_text"] and "pwned" in row["ocr_text"]:
            with_ocr += 1
            assert page.locator("#ocr-text").inner_text() == row["ocr_text"]
    assert with_ocr >= 1
    assert sum(1 for h in hostile if not wb.detail(h["sample_id"]).row["url"].startswith(
        "http")) >= 1  # a URL that is nothing but the payload
    assert page.errors == []


@pytest.mark.parametrize("path", [
    "/gallery?cluster=abc", "/row/abc", "/gallery?page=-1", "/gallery?min_clip=nan",
    "/gallery?published=nope", "/search?mode=evil&q=x", "/whatif?min_clip_score=7",
    "/whatif/result?text_policy=<script>", "/row/99",
])
def test_a_bad_parameter_is_a_one_line_400(page, path):
    response = page.goto(path)
    assert response.status == 400
    body = response.text()
    assert body.strip() and "\n" not in body.strip()
    assert "Traceback" not in body
    assert response.headers["content-type"].startswith("text/plain")
    assert page.evaluate("() => window.__pwned") is None
