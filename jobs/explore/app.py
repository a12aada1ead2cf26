"""`deparrot explore`: the curator's workbench as a local web app (starlette + uvicorn).

Bound to 127.0.0.1 unless `--host` says otherwise; any other host requires a random
access token (printed once, in the URL to open), checked on every request and then kept
in a SameSite=Strict cookie. Bad query parameters get a 400 with one line, never a
traceback. Pages are rendered on the server (jobs/explore/views.py); the one script,
/static/app.js, only re-asks the what-if as its sliders move.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from jobs.config import TEXT_POLICIES, Config
from jobs.explore import views
from jobs.explore.decisions import GalleryFilters, WhatIf
from jobs.explore.tables import ExploreError
from jobs.explore.workbench import Workbench

TOKEN_COOKIE = "deparrot_explore_token"
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

APP_JS = (Path(__file__).with_name("templates") / "app.js").read_text()


class BadRequest(ExploreError):
    pass


def _param(params, name: str, default, convert):
    """The query parameter `name` through `convert` (a ValueError is the 400's reason),
    or `default` when it is absent or empty."""
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        return convert(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} {exc}") from None


def _int(params, name: str, default: int | None = None, lo: int = 0,
         hi: int = 2**63 - 1) -> int | None:
    def convert(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw[:40]!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return _param(params, name, default, convert)


def _float(params, name: str, default: float | None = None) -> float | None:
    def convert(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw[:40]!r}") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    return _param(params, name, default, convert)


def _choice(params, name: str, choices: tuple[str, ...], default: str | None = None):
    def convert(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return _param(params, name, default, convert)


def gallery_filters(params, reasons: list[str],
                    reject_stages: list[str]) -> tuple[GalleryFilters, dict]:
    stages = sorted({r.split(":", 1)[0] for r in reasons} | set(reject_stages))
    published = params.get("published") or None
    if published is not None and published not in reasons and published not in stages:
        raise BadRequest(f"published must be one of {', '.join(reasons + stages)}")
    f = GalleryFilters(
        published=published,
        cluster=_int(params, "cluster"),
        policy=_choice(params, "policy", TEXT_POLICIES),
        policy_verdict=_choice(params, "policy_verdict", ("keep", "drop"), "drop"),
        min_clip=_float(params, "min_clip"), max_clip=_float(params, "max_clip"),
        min_aesthetic=_float(params, "min_aesthetic"),
        max_aesthetic=_float(params, "max_aesthetic"),
    )
    kept = {k: params.get(k) for k in ("published", "cluster", "policy", "policy_verdict",
                                       "min_clip", "max_clip", "min_aesthetic",
                                       "max_aesthetic") if params.get(k)}
    return f, kept


def whatif_settings(params, wb: Workbench) -> WhatIf:
    now = wb.configured()
    return WhatIf(
        min_clip_score=_float(params, "min_clip_score", now.min_clip_score),
        min_aesthetic=_float(params, "min_aesthetic", now.min_aesthetic),
        text_policy=_choice(params, "text_policy", TEXT_POLICIES, now.text_policy),
        max_cotr=_float(params, "max_cotr", now.max_cotr),
        min_masked_clip_score=_float(params, "min_masked_clip_score",
                                     now.min_masked_clip_score),
    )


def build_app(wb: Workbench, token: str = "", config_path: str = "conf/local.yaml") -> Starlette:
    links = views.app_links()

    def html(title: str, body: str) -> HTMLResponse:
        return HTMLResponse(views.page(title, body))

    def home(request: Request) -> Response:
        return html("Funnel", views.warning(wb.index.warning) + views.funnel(wb.funnel(), links))

    def gallery(request: Request) -> Response:
        q = request.query_params
        reasons = wb.reasons()
        filters, kept = gallery_filters(q, reasons, wb.reject_stages())
        page = _int(q, "page", 0, 0, 10**7)
        result = wb.gallery(filters, page)
        body = views.gallery_form(kept, reasons, wb.clusters())
        body += views.gallery(result, links)
        body += views.pager(result, kept, links)
        if filters.published and filters.published.startswith("ingest"):
            body += _ingest(filters.published)
        return html("Gallery", body)

    def _ingest(published: str) -> str:
        reason = published.split(":", 1)[1] if ":" in published else None
        return views.ingest_rejects(wb.ingest_rejects(reason))

    def row(request: Request) -> Response:
        sid = _path_id(request)
        return html(f"Row {sid}", views.detail(wb.detail(sid), links, wb.index.warning))

    def image(request: Request) -> Response:
        sid = _path_id(request)
        data = wb.image(sid)
        if not data:
            return PlainTextResponse(f"no stored image for row {sid}", status_code=404)
        kind = views.sniff(data)
        if not kind.startswith("image/"):
            return PlainTextResponse(f"row {sid}: the stored bytes are not an image",
                                     status_code=404)
        return Response(data, media_type=kind,
                        headers={"Cache-Control": "private, max-age=3600"})

    def search(request: Request) -> Response:
        q = request.query_params
        text = (q.get("q") or "").strip()
        mode = _choice(q, "mode", ("caption", "meaning"), "caption")
        like = _int(q, "like")
        body = views.search_form(text, mode)
        if like is not None:
            body += views.search_results(wb.more_like(like), links, wb.index.warning,
                                         f"More like row {like}")
        elif text and mode == "caption":
            page = _int(q, "page", 0, 0, 10**7)
            body += views.gallery(wb.search_caption(text, page), links,
                                  title="Captions containing the text")
        elif text:
            body += views.search_results(wb.search_meaning(text), links, wb.index.warning,
                                         "Closest images by meaning")
        return html("Search", body)

    def whatif(request: Request) -> Response:
        w = whatif_settings(request.query_params, wb)
        result = wb.whatif(w)
        body = views.whatif_form(result["settings"])
        body += views.whatif_result(result, links, config_path)
        return html("What-if", body)

    def whatif_result(request: Request) -> Response:
        result = wb.whatif(whatif_settings(request.query_params, wb))
        return HTMLResponse(views.whatif_result(result, links, config_path))

    async def review(request: Request) -> Response:
        # A plain urlencoded form (the page's only form); parsed here rather than adding
        # python-multipart for one endpoint.
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            raise BadRequest("a review is posted as an urlencoded form")
        body = await request.body()
        if len(body) > 10_000:
            raise BadRequest("review too large")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        sid = _int(form, "sample_id")
        if sid is None:
            raise BadRequest("sample_id is required")
        label = form.get("label") or ""
        reviewer = (form.get("reviewer") or "").strip()
        await run_in_threadpool(wb.review, sid, str(label), str(reviewer))
        return RedirectResponse(f"/row/{sid}", status_code=303)

    def reviews_page(request: Request) -> Response:
        return html("Reviews", views.quality(wb.quality())
                    + views.reviews_list(wb.recent_reviews()))

    def app_js(request: Request) -> Response:
        return Response(APP_JS, media_type="text/javascript")

    def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    def favicon(request: Request) -> Response:  # browsers ask; a 404 is a console error
        return Response(status_code=204)

    routes = [
        Route("/", home), Route("/gallery", gallery), Route("/row/{sid}", row),
        Route("/image/{sid}", image), Route("/search", search), Route("/whatif", whatif),
        Route("/whatif/result", whatif_result), Route("/review", review, methods=["POST"]),
        Route("/reviews", reviews_page), Route("/static/app.js", app_js),
        Route("/health", health), Route("/favicon.ico", favicon),
    ]
    middleware = [Middleware(_Guard, token=token)]
    return Starlette(routes=routes, middleware=middleware)


def _path_id(request: Request) -> int:
    raw = request.path_params["sid"]
    if not raw.isdigit() or len(raw) > 19:
        raise BadRequest(f"a row is addressed by its numeric sample id, got {raw[:40]!r}")
    return int(raw)


class _Guard(BaseHTTPMiddleware):
    """The token check, one-line errors for bad input, and the security headers."""

    def __init__(self, app, token: str = ""):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        set_cookie = False
        if self.token:
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return PlainTextResponse("an access token is required: open the URL "
                                         "`deparrot explore` printed", status_code=403)
            set_cookie = "token" in request.query_params
        try:
            response = await call_next(request)
        except ExploreError as exc:
            response = PlainTextResponse(str(exc).splitlines()[0], status_code=400)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if set_cookie:
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(cfg: Config, host: str = "127.0.0.1", port: int = 8765,
        config_path: str | None = None) -> None:
    """Open the lake and serve the workbench until interrupted."""
    import uvicorn

    started = time.perf_counter()
    wb = Workbench.open(cfg)
    token = "" if is_loopback(host) else secrets.token_urlsafe(24)
    app = build_app(wb, token, config_path or "conf/local.yaml")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"deparrot explore: {wb.decisions.n_rows} rows read in "
          f"{time.perf_counter() - started:.1f}s; open {url}", file=sys.stderr)
    if token:
        print("deparrot explore: listening beyond this machine; the token in that URL is "
              "required on every request", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
