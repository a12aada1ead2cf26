"""HTML of the workbench's views, shared by the web app and the notebooks' `displayHTML`.

Captions, OCR text and URLs are attacker-controlled web text: every value goes through
Jinja2's autoescaping (never `|safe` on data), URLs are printed as text and never become
an `href` or `src`, and images are addressed by sample id only. The app also sends a
Content-Security-Policy without inline scripts, so a missed escape still would not run.

`Links` is what differs between the two hosts: the app links counts to galleries and
serves `/image/<id>`; a notebook inlines images as data URIs and has no links.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader

from jobs.config import TEXT_POLICIES
from jobs.explore.decisions import KEPT, PENDING, WhatIf
from udfs.parrot import words_normalised

_env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=True, trim_blocks=True, lstrip_blocks=True)


@dataclass
class Links:
    image: Callable[[int], str]
    detail: Callable[[int], str | None]
    gallery: Callable[[dict], str | None]
    interactive: bool = True


def app_links() -> Links:
    def q(params: dict) -> str:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return urlencode(clean)

    return Links(
        image=lambda sid: f"/image/{int(sid)}",
        detail=lambda sid: f"/row/{int(sid)}",
        gallery=lambda params: f"/gallery?{q(params)}",
    )


def notebook_links(image_bytes: Callable[[int], bytes | None]) -> Links:
    """Images inlined as data URIs (a notebook cell cannot reach a local server)."""
    def data_uri(sid: int) -> str:
        data = image_bytes(sid) or b""
        return f"data:{sniff(data)};base64,{base64.b64encode(data).decode()}"

    return Links(image=data_uri, detail=lambda sid: None, gallery=lambda p: None,
                 interactive=False)


def sniff(data: bytes) -> str:
    """The image type from its magic bytes (never from the URL or a stored name)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def highlight(caption: str | None, ocr_text: str | None) -> list[tuple[str, bool]]:
    """The caption split on whitespace, each piece marked when its normalised word is one
    the OCR text also has (the co-emb. words of udfs/parrot.py)."""
    if not caption:
        return []
    ocr = set(words_normalised(ocr_text))
    pieces: list[tuple[str, bool]] = []
    word = ""
    for ch in caption + " ":
        if ch.isspace():
            if word:
                norm = words_normalised(word)
                pieces.append((word, bool(norm) and norm[0] in ocr))
                word = ""
            pieces.append((ch, False))
        else:
            word += ch
    return pieces[:-1]


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_env.filters["num"] = _fmt


def _render(template: str, **kw) -> str:
    return _env.get_template(template).render(**kw)


STYLE = Path(__file__).with_name("templates").joinpath("style.css").read_text()


def page(title: str, body: str, nav: bool = True) -> str:
    return _render("page.html",
                   title=title, body=_Markup(body), style=_Markup(STYLE), nav=nav)


class _Markup(str):
    """HTML this module rendered itself (already escaped): passed through unescaped."""

    def __html__(self) -> str:
        return str(self)


def warning(text: str) -> str:
    return _Markup(_render("warning.html", t=text))


def funnel(f: dict, links: Links) -> str:
    return _Markup(_render("funnel.html",
        f=f, kept=KEPT, pending=PENDING, link=lambda n, p: _count_link(n, p, links)))


def _count_link(n: int, params: dict, links: Links) -> str:
    href = links.gallery(params)
    if not href:
        return _Markup(str(int(n)))
    return _Markup(_render("count_link.html", h=href, n=int(n)))


def gallery(result: dict, links: Links, title: str = "Gallery") -> str:
    return _Markup(_render("gallery.html", r=result, links=links, kept=KEPT, title=title))


def pager(result: dict, params: dict, links: Links) -> str:
    pages = (result["total"] - 1) // result["per_page"] + 1 if result["total"] else 1
    out = []
    for label, p in (("previous", result["page"] - 1), ("next", result["page"] + 1)):
        if 0 <= p < pages:
            out.append(_render("pager_link.html", l=label,
                               h=links.gallery({**params, "page": p})))
    return _Markup(" · ".join(out))


def gallery_form(params: dict, reasons: list[str], clusters: list[int]) -> str:
    return _Markup(_render("gallery_form.html",
        p=params, reasons=reasons, clusters=clusters, policies=TEXT_POLICIES))


def detail(d, links: Links, warning: str = "") -> str:
    row = d.row
    w, h = row.get("image_width") or 1, row.get("image_height") or 1
    polys = [" ".join(f"{x:.1f},{y:.1f}" for x, y in (b.get("polygon") or []))
             for b in d.boxes]
    return _Markup(_render("detail.html",
        row=row, links=links, w=w, h=h, polys=polys, boxes=d.boxes,
        caption=highlight(row.get("text"), row.get("ocr_text")), r=d.recipe,
        policies=d.policies, dups=d.duplicates, reviews=d.reviews, warning=warning,
        interactive=links.interactive,
        ok=lambda v, t: "–" if v is None else ("yes" if v > t else "no"),
        ge=lambda v, t: "–" if v is None else ("yes" if v >= t else "no"),
        link=lambda sid: _id_link(sid, links)))


def _id_link(sid: int, links: Links) -> str:
    href = links.detail(sid)
    if not href:
        return _Markup(str(int(sid)))
    return _Markup(_render("id_link.html", h=href, s=int(sid)))


def whatif_form(w: dict) -> str:
    return _Markup(_render("whatif_form.html", w=w, policies=TEXT_POLICIES))


def whatif_result(r: dict, links: Links, config_path: str = "conf/...") -> str:
    before = dict(r["before"])
    return _Markup(_render("whatif_result.html", r=r, before=before, links=links,
                           config=config_path,
                           yaml=WhatIf(**r["settings"]).yaml_overlay(config_path)))


def search_results(hits, links: Links, warning: str, title: str) -> str:
    return _Markup(_render("search_results.html",
        hits=hits, links=links, warning=warning, title=title))


def search_form(q: str = "", mode: str = "caption") -> str:
    return _Markup(_render("search_form.html", q=q, mode=mode))


def ingest_rejects(rows: list[dict]) -> str:
    """Rows that never reached metadata: their reason and the record as read."""
    return _Markup(_render("ingest_rejects.html", rows=rows))


def reviews_list(rows: list[tuple]) -> str:
    return _Markup(_render("reviews_list.html", rows=rows))


def quality(q: dict) -> str:
    t, d = q["text"], q["dedup"]
    return _Markup(_render("quality.html",
        t=t, d=d))
