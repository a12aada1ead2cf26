"""Screenshots of every view of the curator's workbench (`deparrot explore`), for the README.

    .venv/bin/python scripts/screenshot_explore.py [--config conf/demo.yaml] [--out docs]

Serves the workbench over the config's lake (default: the demo's, after
`bash scripts/demo.sh`) on a free 127.0.0.1 port and saves, with Playwright and the OS's
Chromium, docs/explore_<view>.png at 1280 px wide for: funnel, gallery (publish:text_found),
detail (a row with OCR boxes), search (by meaning), whatif (the CLIP slider moved) and
reviews. Tall pages are cut at --max-height; colours are reduced to a 256-colour palette
(--full-colour keeps them). Read-only: it posts no review.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.config import load_config  # noqa: E402
from jobs.explore.app import build_app  # noqa: E402
from jobs.explore.decisions import GalleryFilters  # noqa: E402
from jobs.explore.workbench import Workbench  # noqa: E402


def serve(wb: Workbench, config_path: str):
    """The workbench on a free 127.0.0.1 port in a background thread: (url, stop)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(wb, "", config_path), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("screenshot_explore: the server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("screenshot_explore: no Chromium on PATH (bash scripts/setup.sh installs it)")


def row_with_boxes(wb: Workbench) -> int:
    """A row whose OCR found text (boxes to draw), its image stored; parroting ones first."""
    for published in ("publish:text_found", None):
        for row in wb.gallery(GalleryFilters(published=published), per_page=200)["rows"]:
            d = wb.detail(row["sample_id"])
            if d.boxes and d.row["image_status"] == "ok":
                return int(row["sample_id"])
    raise SystemExit("screenshot_explore: no row with OCR boxes in this lake")


def shrink(png: Path) -> None:
    """A 256-colour palette without dithering: the UI's few colours stay exact, photos band
    a little, the file is about a fifth (the README shows them small)."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                           dither=Image.Dither.NONE)
    small.save(png, optimize=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="conf/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides, as for deparrot (e.g. storage.root=...)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=1400)
    ap.add_argument("--full-colour", action="store_true",
                    help="keep every colour (default: a 256-colour palette, a fifth the bytes)")
    ap.add_argument("--query", default="a shop sign with words on it",
                    help="the meaning search shown")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    cfg = load_config(args.config, args.set)
    wb = Workbench.open(cfg)
    sid = row_with_boxes(wb)
    moved = dataclasses.replace(wb.configured(),
                                min_clip_score=round(wb.configured().min_clip_score + 0.02, 3))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url, stop = serve(wb, args.config)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 800})
            page.set_default_timeout(120_000)  # the first meaning search imports torch

            def shot(view: str, path: str | None = None) -> None:
                if path is not None:
                    response = page.goto(url + path)
                    if response is None or response.status != 200:
                        raise SystemExit(f"screenshot_explore: {path} answered "
                                         f"{response and response.status}")
                page.wait_for_load_state("networkidle")
                page.wait_for_function("() => [...document.images].every(i => i.complete)")
                height = page.evaluate(  # the content's, not the window's, on short pages
                    "() => Math.ceil(document.querySelector('main').getBoundingClientRect()"
                    ".bottom + window.scrollY)")
                target = out / f"explore_{view}.png"
                page.screenshot(path=str(target), full_page=True, clip={
                    "x": 0, "y": 0, "width": args.width,
                    "height": min(height, args.max_height)})
                if not args.full_colour:
                    shrink(target)
                print(f"screenshot_explore: {target} ({target.stat().st_size // 1024} KiB)")

            shot("funnel", "/")
            shot("gallery", "/gallery?" + urlencode({"published": "publish:text_found"}))
            shot("detail", f"/row/{sid}")
            shot("search", "/search?" + urlencode({"q": args.query, "mode": "meaning"}))
            page.goto(url + "/whatif")
            page.evaluate("""v => {
                const s = document.querySelector('#whatif input[name=min_clip_score]');
                s.value = String(v);
                s.dispatchEvent(new Event('input', {bubbles: true}));
            }""", moved.min_clip_score)
            page.wait_for_function(
                "v => document.getElementById('set-line').textContent"
                ".includes('min_clip_score=' + v + ' ')", arg=moved.min_clip_score)
            shot("whatif")
            shot("reviews", "/reviews")
            browser.close()
    finally:
        stop()


if __name__ == "__main__":
    main()
