"""Tests for udfs.fetch against a real local server (tests.support.http_server).

No test leaves 127.0.0.1: refused addresses are rejected before any connection,
and names other than ``localhost`` go through a stub resolver.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.http_server import LocalImageServer, make_self_signed_cert
from udfs.fetch import (
    Fetcher,
    FetchResult,
    FetchSettings,
    parse_retry_after,
    robots_directive,
)

LOOPBACK = ("127.0.0.1/32",)
MakeFetcher = Callable[..., Fetcher]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalImageServer]:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff file a")
    with LocalImageServer(files_dir=tmp_path, image_bytes=b"\xff\xd8\xff" + b"x" * 2000) as srv:
        yield srv


@pytest.fixture
def make_fetcher() -> Iterator[MakeFetcher]:
    """Fetchers that may reach 127.0.0.1 only, with fast backoff; closed after the test."""
    made: list[Fetcher] = []

    def make(resolver=None, **overrides) -> Fetcher:
        opts = {"allowed_networks": LOOPBACK, "backoff_s": 0.01, "timeout_s": 5.0}
        fetcher = Fetcher(FetchSettings(**{**opts, **overrides}), resolver=resolver)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def _timed(fetcher: Fetcher, url: str) -> tuple[FetchResult, float]:
    start = time.monotonic()
    res = fetcher.fetch(url)
    return res, time.monotonic() - start


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- success and HTTP statuses ----------------------------------------------------------------


def test_success(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    url = server.url("/image")
    res = make_fetcher().fetch(url)
    assert res.ok and res.error is None
    assert (res.url, res.final_url, res.status, res.attempts) == (url, url, 200, 1)
    assert res.data == server.image_bytes
    assert res.content_type == "image/jpeg"
    assert not res.retryable
    (req,) = server.requests
    assert req.headers["user-agent"].startswith("deparrot/")
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["accept-encoding"] == "identity"


def test_files_route(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher()
    assert fetcher.fetch(server.url("/files/a.jpg")).data == b"\xff\xd8\xff file a"
    assert fetcher.fetch(server.url("/files/missing.jpg")).error == "http_404"


def test_404_is_not_retried(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher(retries=3).fetch(server.url("/status/404"))
    assert (res.error, res.status, res.retryable, res.attempts) == ("http_404", 404, False, 1)
    assert res.data is None
    assert server.hits("/status/404") == 1


def test_429_then_success(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher(retries=2).fetch(server.url("/flaky/k429/1/429"))
    assert res.ok and res.attempts == 2
    assert res.data == server.image_bytes
    assert server.hits("/flaky/k429/1/429") == 2


def test_503_exhausts_retries(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher(retries=2).fetch(server.url("/status/503"))
    assert (res.error, res.status, res.retryable, res.attempts) == ("http_503", 503, True, 3)
    assert server.hits("/status/503") == 3


def test_retry_after_is_honoured(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res, elapsed = _timed(
        make_fetcher(max_backoff_s=5), server.url("/flaky/ra/1/503?retry_after=1")
    )
    assert res.ok and res.attempts == 2
    assert elapsed >= 0.95


def test_long_retry_after_defers_to_a_later_run(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    res, elapsed = _timed(make_fetcher(max_backoff_s=2), server.url("/status/429?retry_after=600"))
    assert (res.error, res.retryable, res.attempts) == ("http_429", True, 1)
    assert elapsed < 1


# --- timeouts and connection failures ---------------------------------------------------------


def test_timeout_before_headers(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res, elapsed = _timed(make_fetcher(timeout_s=0.5, retries=1), server.url("/slow/3"))
    assert (res.error, res.retryable, res.attempts) == ("timeout", True, 2)
    assert server.hits("/slow/3") == 2
    assert elapsed < 2.5


def test_timeout_mid_body(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res, elapsed = _timed(make_fetcher(timeout_s=0.5, retries=0), server.url("/slow/3?stage=body"))
    assert (res.error, res.status, res.retryable) == ("timeout", 200, True)
    assert elapsed < 1.5


def test_total_deadline_beats_a_dripping_server(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    # Every single read is quick, so only the per-attempt deadline can stop this.
    res, elapsed = _timed(make_fetcher(timeout_s=0.4, retries=0), server.url("/drip/20/0.1"))
    assert res.error == "timeout"
    assert elapsed < 1.0


def test_connection_refused(make_fetcher: MakeFetcher) -> None:
    res = make_fetcher(retries=1).fetch(f"http://127.0.0.1:{_closed_port()}/x.jpg")
    assert (res.error, res.retryable, res.attempts) == ("connection_error", True, 2)


# --- redirects --------------------------------------------------------------------------------


def test_redirect_chain(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher().fetch(server.url("/redirect-chain/3"))
    assert res.ok and res.data == server.image_bytes
    assert res.final_url == server.url("/redirect-chain/0")
    assert server.hits() == 4


def test_absolute_redirect(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    target = server.url("/files/a.jpg")
    res = make_fetcher().fetch(server.url(f"/redirect?to={target}&code=301"))
    assert res.ok and res.final_url == target


def test_too_many_redirects(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher(max_redirects=2).fetch(server.url("/redirect-chain/3"))
    assert (res.error, res.retryable, res.status) == ("too_many_redirects", False, 302)
    assert server.hits() == 3  # the original request plus two followed redirects
    assert make_fetcher(max_redirects=3).fetch(server.url("/redirect-chain/3")).ok


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://0.0.0.0:{port}/image",
        "http://[::1]:{port}/image",
    ],
)
def test_redirect_to_refused_address(
    server: LocalImageServer, make_fetcher: MakeFetcher, target: str
) -> None:
    # 127.0.0.1 itself is allow-listed, so only the redirect target is judged.
    target = target.format(port=server.port)
    res, elapsed = _timed(make_fetcher(retries=2), server.url(f"/redirect?to={target}"))
    assert (res.error, res.retryable, res.attempts) == ("host_not_allowed", False, 1)
    assert res.final_url == target
    assert server.hits() == 1  # only the redirect itself was served
    assert elapsed < 1  # refused before connecting anywhere


# --- SSRF guard -------------------------------------------------------------------------------


def test_guard_refuses_loopback_without_allow_list(server: LocalImageServer) -> None:
    with Fetcher(FetchSettings(retries=2)) as fetcher:
        for host in ("127.0.0.1", "localhost", "2130706433", "127.1"):
            res = fetcher.fetch(server.url("/image", host=host))
            assert (res.error, res.retryable, res.attempts) == ("host_not_allowed", False, 1)
    assert server.hits() == 0


def test_allow_private_opens_the_guard(server: LocalImageServer) -> None:
    with Fetcher(FetchSettings(allow_private=True)) as fetcher:
        assert fetcher.fetch(server.url("/image", host="localhost")).ok


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.5.4",
        "192.168.0.1",
        "127.0.0.2",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.251",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1%1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:a00:1::1",  # 6to4 wrapping 10.0.0.1
    ],
)
def test_guard_refuses_non_public_addresses(make_fetcher: MakeFetcher, address: str) -> None:
    fetcher = make_fetcher(allowed_networks=(), resolver=lambda host, port: [address])
    assert fetcher.check_url("http://images.example/a.jpg") == "host_not_allowed"


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111"])
def test_guard_allows_public_addresses(make_fetcher: MakeFetcher, address: str) -> None:
    fetcher = make_fetcher(allowed_networks=(), resolver=lambda host, port: [address])
    assert fetcher.check_url("http://images.example/a.jpg") is None


def test_every_resolved_address_must_pass(make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(resolver=lambda host, port: ["127.0.0.1", "10.0.0.7"])
    assert fetcher.fetch("http://mixed.example/a.jpg").error == "host_not_allowed"


def test_connects_to_checked_ip_with_original_host(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    res = make_fetcher(resolver=resolver).fetch(server.url("/redirect-chain/1", host="img.test"))
    assert res.ok
    assert lookups == ["img.test", "img.test"]  # resolved once per hop, never by urllib3
    assert {r.headers["host"] for r in server.requests} == {f"img.test:{server.port}"}


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.org/a.jpg", "gopher://x/", "javascript:alert(1)"],
)
def test_scheme_not_allowed(make_fetcher: MakeFetcher, url: str) -> None:
    res = make_fetcher().fetch(url)
    assert (res.error, res.retryable, res.attempts) == ("scheme_not_allowed", False, 1)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "http://",
        "http:///path.jpg",
        "http://user:pw@images.example/a.jpg",
        "http://images.example:99999/a.jpg",
        "http://exa mple.org/a.jpg",
    ],
)
def test_bad_url(make_fetcher: MakeFetcher, url: str) -> None:
    assert make_fetcher().fetch(url).error == "bad_url"


def test_null_url_is_bad_url(make_fetcher: MakeFetcher) -> None:
    res = make_fetcher().fetch(None)  # type: ignore[arg-type]  # a null in a Spark column
    assert (res.error, res.retryable) == ("bad_url", False)


def test_https_only_setting(make_fetcher: MakeFetcher, server: LocalImageServer) -> None:
    fetcher = make_fetcher(allowed_schemes=["https"])
    assert fetcher.fetch(server.url("/image")).error == "scheme_not_allowed"


def test_dns_errors(make_fetcher: MakeFetcher) -> None:
    def gone(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    res = make_fetcher(resolver=gone, retries=2).fetch("http://nx.example/a.jpg")
    assert (res.error, res.retryable, res.attempts) == ("dns_error", False, 1)
    res = make_fetcher(resolver=flaky, retries=2).fetch("http://nx.example/a.jpg")
    assert (res.error, res.retryable, res.attempts) == ("dns_error", True, 3)


def test_unexpected_errors_do_not_raise(make_fetcher: MakeFetcher) -> None:
    def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("bug")

    res = make_fetcher(resolver=broken).fetch("http://x.example/a.jpg")
    assert (res.error, res.retryable) == ("internal_error", False)


# --- opt-outs and size limits -----------------------------------------------------------------


@pytest.mark.parametrize("directive", ["noai", "noimageai", "noindex", "noimageindex"])
def test_x_robots_tag_directive_skips(
    server: LocalImageServer, make_fetcher: MakeFetcher, directive: str
) -> None:
    res = make_fetcher(retries=2).fetch(server.url(f"/header/{directive.upper()}"))
    assert (res.error, res.status, res.retryable) == (f"x_robots_tag:{directive}", 200, False)
    assert res.data is None
    assert server.hits() == 1


@pytest.mark.parametrize(
    ("header", "blocked"),
    [
        ("deparrot: noai", "x_robots_tag:noai"),
        ("otherbot: noai", None),
        ("otherbot: noai|deparrot: noimageai", "x_robots_tag:noimageai"),
        ("nofollow, noarchive", None),
        ("none", "x_robots_tag:none"),
    ],
)
def test_x_robots_tag_scoping(
    server: LocalImageServer, make_fetcher: MakeFetcher, header: str, blocked: str | None
) -> None:
    res = make_fetcher().fetch(server.url(f"/header/{header}"))
    assert res.error == blocked
    assert (res.data is None) == (blocked is not None)


def test_x_robots_tag_check_can_be_disabled(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    res = make_fetcher(disallowed_header_directives=()).fetch(server.url("/header/noai, noindex"))
    assert res.ok and res.data == server.image_bytes


def test_robots_directive_parsing() -> None:
    blocked = ("noai", "noimageai", "noindex", "noimageindex")
    check = lambda *values: robots_directive(values, "deparrot", blocked)  # noqa: E731
    assert check("noai") == "noai"
    assert check(" NoImageAI , nofollow ") == "noimageai"
    assert check("DeParrot: noindex") == "noindex"
    assert check("*: noai") == "noai"
    assert check("googlebot: noai") is None
    assert check("noarchive, googlebot: noai") is None  # scope switches mid-list
    assert check("googlebot: nofollow, deparrot: noai") == "noai"
    assert check("unavailable_after: 25 Jun 2010 15:00:00 PST") is None
    assert check("unavailable_after: 25 Jun 2010 15:00:00 PST, noai") == "noai"
    assert check("max-image-preview: large, noimageindex") == "noimageindex"
    assert check("all", "otherbot: none") is None
    assert check() is None
    assert robots_directive(["noai"], "deparrot", ()) is None


@pytest.mark.parametrize("mode", ["length", "chunked", "close"])
def test_too_large(server: LocalImageServer, make_fetcher: MakeFetcher, mode: str) -> None:
    # 1 GB bodies: finishing fast proves the read was abandoned early.
    res, elapsed = _timed(
        make_fetcher(max_bytes=100_000), server.url(f"/big/1000000000?mode={mode}")
    )
    assert (res.error, res.retryable, res.status) == ("too_large", False, 200)
    assert elapsed < 2


def test_aborted_bodies_do_not_poison_reused_connections(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    fetcher = make_fetcher(max_bytes=100_000, retries=0)
    for path in ("/big/1000000", "/header/noai", "/status/404", "/big/1000000?mode=chunked"):
        assert fetcher.fetch(server.url(path)).error is not None
        assert fetcher.fetch(server.url("/image")).data == server.image_bytes


def test_body_exactly_at_the_limit(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(max_bytes=100_000)
    for mode in ("length", "chunked", "close"):
        res = fetcher.fetch(server.url(f"/big/100000?mode={mode}"))
        assert res.ok and len(res.data or b"") == 100_000, mode


def test_html_body_is_fetched_as_is(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    res = make_fetcher().fetch(server.url("/html"))
    assert res.ok and res.content_type == "image/jpeg"  # decoding is the decoder's job
    assert res.data is not None and res.data.startswith(b"<!DOCTYPE html>")


# --- concurrency, TLS, settings ---------------------------------------------------------------


def test_fetch_many_keeps_order_and_runs_concurrently(
    server: LocalImageServer, make_fetcher: MakeFetcher
) -> None:
    urls = [server.url(p) for p in ("/slow/0.4", "/status/404", "/image", "/slow/0.4")] * 2
    start = time.monotonic()
    results = make_fetcher(retries=0).fetch_many(urls, concurrency=8)
    elapsed = time.monotonic() - start
    assert [r.url for r in results] == urls
    assert [r.error for r in results] == [None, "http_404", None, None] * 2
    assert elapsed < 1.2  # four 0.4 s requests one after another would take 1.6 s


def test_connections_are_reused(server: LocalImageServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher()
    for _ in range(5):
        assert fetcher.fetch(server.url("/image")).ok
    assert len({r.client_port for r in server.requests}) == 1


def test_server_records_and_stops_promptly(make_fetcher: MakeFetcher) -> None:
    srv = LocalImageServer().start()
    fetcher = make_fetcher(timeout_s=30, retries=0)
    worker = threading.Thread(target=fetcher.fetch, args=(srv.url("/slow/30"),))
    worker.start()
    assert fetcher.fetch(srv.url("/redirect?to=/image")).ok
    assert (srv.hits("/redirect"), srv.hits("/redirect?to=/image"), srv.hits("/image")) == (1, 1, 1)
    start = time.monotonic()
    srv.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - start < 2
    srv.reset()
    assert srv.hits() == 0


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LocalImageServer, Path]]:
    try:
        cert, key = make_self_signed_cert(tmp_path, ["img.test"])
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"openssl not usable: {err}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with LocalImageServer(ssl_context=ctx) as srv:
        yield srv, cert


def test_https_uses_original_name_for_sni_and_cert_check(
    tls_server: tuple[LocalImageServer, Path], make_fetcher: MakeFetcher
) -> None:
    srv, cert = tls_server
    fetcher = make_fetcher(ca_certs=str(cert), resolver=lambda host, port: ["127.0.0.1"])
    res = fetcher.fetch(srv.url("/image", host="img.test"))
    assert res.ok and res.data == srv.image_bytes
    assert srv.requests[-1].headers["host"] == f"img.test:{srv.port}"
    # Same IP, but a name the certificate does not cover: verification must fail.
    res = fetcher.fetch(srv.url("/image", host="other.test"))
    assert (res.error, res.retryable) == ("ssl_error", False)


def test_settings_validation() -> None:
    settings = FetchSettings(disallowed_header_directives=["NoAI"], allowed_networks=["10.0.0.0/8"])
    assert settings.disallowed_header_directives == ("noai",)
    assert settings.allowed_networks == ("10.0.0.0/8",)
    with pytest.raises(ValueError):
        FetchSettings(allowed_schemes=("http", "ftp"))
    with pytest.raises(ValueError):
        FetchSettings(allowed_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError):
        FetchSettings(timeout_s=0)


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
