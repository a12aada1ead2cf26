"""Safe HTTP image fetcher for the download stage.

Dataset URLs are untrusted input, so every hop is checked by an SSRF guard:
the host is resolved here, every address it resolves to must be public (or in
``allowed_networks``), and the connection goes to that checked address while
the original name is sent as Host and used for TLS SNI and certificate checks.
A DNS answer that changes between check and connect (rebinding) is therefore
never used. Redirects are followed by hand so each one goes through the guard.

Opt-outs in ``X-Robots-Tag`` are honoured before the body is read, bodies are
capped at ``max_bytes`` while streaming, and transient failures are retried
with exponential backoff. :meth:`Fetcher.fetch` never raises; failures carry a
reason code and ``retryable`` (whether a later re-run should try again).

Reason codes: ``bad_url``, ``scheme_not_allowed``, ``host_not_allowed``,
``dns_error``, ``timeout``, ``connection_error``, ``ssl_error``,
``too_many_redirects``, ``too_large``, ``content_encoding_error``,
``http_<code>``, ``x_robots_tag:<directive>``, ``internal_error``.

Proxies from the environment are not used (the guard needs direct connections).
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3 import exceptions as u3e

from udfs.failures import note

DEFAULT_USER_AGENT = "deparrot/0.1 (+image-text dataset curation; honours X-Robots-Tag noai)"
DEFAULT_DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left alone when re-quoting a URL path/query (same set as requests' requote_uri).
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
# Robots directives that carry a value after a colon; their name is not a user-agent prefix.
_VALUE_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"


@dataclass(frozen=True)
class FetchSettings:
    """Fetcher options. Lists from YAML are accepted and stored as tuples.

    ``timeout_s`` bounds each attempt (connect, headers and the whole body
    together, checked between reads). ``allowed_networks`` (CIDR strings) are
    permitted even while private addresses are refused: tests and intranet
    mirrors. ``pool_maxsize`` should be at least the request concurrency.
    """

    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    user_agent_token: str = "deparrot"
    disallowed_header_directives: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES
    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ("http", "https")
    pool_maxsize: int = 16
    num_pools: int = 256
    ca_certs: str | None = None

    def __post_init__(self) -> None:
        for name in ("disallowed_header_directives", "allowed_networks", "allowed_schemes"):
            values = tuple(str(v).strip().lower() for v in getattr(self, name))
            object.__setattr__(self, name, values)
        unknown = set(self.allowed_schemes) - set(_DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"only http and https can be fetched, got {sorted(unknown)}")
        for net in self.allowed_networks:
            ipaddress.ip_network(net, strict=False)  # raises ValueError on a typo
        if self.timeout_s <= 0 or self.max_bytes <= 0 or self.pool_maxsize <= 0:
            raise ValueError("timeout_s, max_bytes and pool_maxsize must be positive")
        if self.retries < 0 or self.max_redirects < 0 or self.backoff_s < 0:
            raise ValueError("retries, max_redirects and backoff_s must not be negative")


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one :meth:`Fetcher.fetch`; ``data`` is set only on success."""

    url: str
    final_url: str | None
    status: int | None
    data: bytes | None
    content_type: str | None
    error: str | None
    retryable: bool
    attempts: int
    detail: str | None = None  # the error's own words, where they say more than `error`

    @property
    def ok(self) -> bool:
        return self.error is None


class _Failure(Exception):
    """Internal: one attempt failed with a reason code."""

    def __init__(
        self,
        reason: str,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.content_type = content_type
        self.final_url: str | None = None


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, no brackets
    port: int
    request_uri: str
    host_header: str


def robots_directive(
    values: Iterable[str], user_agent_token: str, disallowed: Iterable[str]
) -> str | None:
    """First directive in ``X-Robots-Tag`` header values that forbids our use, else None.

    Like img2dataset, each header value is a comma-separated list of directives,
    optionally prefixed ``botname:``, which limits them to that bot. Unlike it,
    a ``botname:`` may also start mid-list (``noindex, otherbot: noai`` scopes
    only ``noai``), directives that take a value (``unavailable_after: <date>``)
    are not mistaken for a bot name, ``*:`` means every bot, and ``none`` counts
    as ``noindex``. Matching is case-insensitive.
    """
    blocked = {d.strip().lower() for d in disallowed}
    if not blocked:
        return None
    ours = user_agent_token.strip().lower()
    for value in values:
        scope: str | None = None
        for raw in value.split(","):
            part = raw.strip().lower()
            name, colon, rest = part.partition(":")
            name = name.strip()
            if colon and name and name not in _VALUE_DIRECTIVES and " " not in name:
                scope, part = name, rest.strip()
            directive = part.partition(":")[0].strip()
            if scope not in (None, "*", ours):
                continue
            if directive in blocked or (directive == "none" and "noindex" in blocked):
                return directive
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _is_public(ip: IPAddress) -> bool:
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global  # also catches shared space 100.64/10 and friends
    ):
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)


def _embedded_ipv4(ip: IPAddress) -> list[IPAddress]:
    """IPv4 addresses tunnelled in an IPv6 one (mapped, 6to4, Teredo), which also get checked."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[IPAddress] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _discard(resp: urllib3.BaseHTTPResponse) -> None:
    """Drop a response without reading its body; the pool replaces the closed connection."""
    resp.close()
    resp.release_conn()


class Fetcher:
    """Thread-safe fetcher with one connection pool manager per instance.

    ``resolver`` (host, port) -> IP strings replaces DNS, for tests.
    """

    def __init__(self, settings: FetchSettings | None = None, *, resolver: Resolver | None = None):
        self.settings = settings or FetchSettings()
        self._resolve = resolver or _default_resolver
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in self.settings.allowed_networks
        )
        self._pools = urllib3.PoolManager(
            num_pools=self.settings.num_pools,
            maxsize=self.settings.pool_maxsize,
            block=False,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=self.settings.ca_certs,
        )
        self._closed = threading.Event()

    # --- public -------------------------------------------------------------------------------

    def fetch(self, url: str) -> FetchResult:
        """Download one URL, retrying transient failures. Never raises."""
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            try:
                final_url, status, data, ctype = self._attempt(url)
                return FetchResult(url, final_url, status, data, ctype, None, False, attempt)
            except _Failure as fail:
                failure = fail
            except Exception as exc:  # a bug of ours: one row, or the task if most rows
                # (udfs.failures.guard_batch, in udfs.images.download_arrow)
                return FetchResult(url, None, None, None, None, "internal_error", False, attempt,
                                   note("download:internal_error", exc))
            if not failure.retryable or attempt > s.retries or self._closed.is_set():
                break
            delay = min(s.max_backoff_s, s.backoff_s * 2 ** (attempt - 1))
            if failure.retry_after is not None:
                if failure.retry_after > s.max_backoff_s:
                    break  # the server wants a long pause: leave it to a later re-run
                delay = max(delay, failure.retry_after)
            time.sleep(delay)
        return FetchResult(
            url,
            failure.final_url,
            failure.status,
            None,
            failure.content_type,
            failure.reason,
            failure.retryable,
            attempt,
        )

    def fetch_many(self, urls: list[str], concurrency: int = 16) -> list[FetchResult]:
        """Fetch with up to ``concurrency`` requests in flight; results keep input order."""
        if concurrency <= 1 or len(urls) <= 1:
            return [self.fetch(u) for u in urls]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(urls))) as pool:
            return list(pool.map(self.fetch, urls))

    def check_url(self, url: str) -> str | None:
        """Guard verdict for a URL without connecting: a reason code, or None if allowed."""
        try:
            target = self._parse(url)
            self._checked_ip(target)
        except _Failure as fail:
            return fail.reason
        return None

    def close(self) -> None:
        self._closed.set()
        self._pools.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one attempt: follow redirects by hand ------------------------------------------------

    def _attempt(self, url: str) -> tuple[str, int, bytes, str | None]:
        s = self.settings
        deadline = time.monotonic() + s.timeout_s
        current = url
        try:
            for hop in range(s.max_redirects + 1):
                target = self._parse(current)
                ip = self._checked_ip(target)
                resp = self._request(target, ip, deadline)
                if resp.status not in _REDIRECT_STATUSES:
                    return current, resp.status, self._read(resp, deadline), _ctype(resp)
                location = resp.headers.get("Location")
                _discard(resp)
                if not location:
                    raise _Failure(f"http_{resp.status}", status=resp.status)
                if hop == s.max_redirects:
                    raise _Failure("too_many_redirects", status=resp.status)
                current = urljoin(current, location.strip())
        except _Failure as fail:
            fail.final_url = current
            raise
        raise AssertionError("unreachable")

    def _parse(self, url: str) -> _Target:
        try:
            parts = urlsplit(url.strip())
            scheme = parts.scheme.lower()
            host = parts.hostname
            port = parts.port
        except (ValueError, AttributeError) as err:
            raise _Failure("bad_url") from err
        if not scheme:
            raise _Failure("bad_url")
        if scheme not in self.settings.allowed_schemes:
            raise _Failure("scheme_not_allowed")
        if not host or parts.username is not None or parts.password is not None:
            raise _Failure("bad_url")  # credentials in dataset URLs are never legitimate
        try:
            ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError as err:
            raise _Failure("bad_url") from err
        if any(c in ascii_host for c in " \t\r\n\\/@") or ascii_host.startswith("."):
            raise _Failure("bad_url")
        default_port = _DEFAULT_PORTS[scheme]
        port = port or default_port
        shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
        host_header = shown if port == default_port else f"{shown}:{port}"
        uri = quote(parts.path or "/", safe=_URL_SAFE)
        if parts.query:
            uri += "?" + quote(parts.query, safe=_URL_SAFE)
        return _Target(scheme, ascii_host, port, uri, host_header)

    def _address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        candidates = [ip, *_embedded_ipv4(ip)]
        if any(c in net for c in candidates for net in self._networks if c.version == net.version):
            return True
        return self.settings.allow_private or all(_is_public(c) for c in candidates)

    def _checked_ip(self, target: _Target) -> str:
        """Resolve once and refuse the host if any of its addresses is refused."""
        try:
            addresses = self._resolve(target.host, target.port)
        except socket.gaierror as err:
            raise _Failure("dns_error", retryable=err.errno == socket.EAI_AGAIN) from err
        except (UnicodeError, ValueError) as err:
            raise _Failure("bad_url") from err
        except OSError as err:
            raise _Failure("dns_error", retryable=True) from err
        if not addresses:
            raise _Failure("dns_error")
        try:
            if not all(self._address_allowed(a) for a in addresses):
                raise _Failure("host_not_allowed")
        except ValueError as err:  # resolver returned something that is not an IP
            raise _Failure("dns_error") from err
        return addresses[0]

    def _request(self, target: _Target, ip: str, deadline: float) -> urllib3.BaseHTTPResponse:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure("timeout", retryable=True)
        pool_kwargs: dict[str, str] = {}
        if target.scheme == "https" and not _is_ip_literal(target.host):
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        headers = {
            "Host": target.host_header,
            "User-Agent": self.settings.user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": "identity",
        }
        try:
            pool = self._pools.connection_from_host(
                ip, target.port, target.scheme, pool_kwargs=pool_kwargs
            )
            return pool.urlopen(
                "GET",
                target.request_uri,
                headers=headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
            )
        except Exception as err:
            raise _transport_failure(err) from err

    def _read(self, resp: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        s = self.settings
        status, ctype = resp.status, _ctype(resp)
        if not 200 <= status < 300:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            _discard(resp)
            raise _Failure(f"http_{status}", _retryable_status(status), status, retry_after, ctype)
        directive = robots_directive(
            resp.headers.getlist("X-Robots-Tag"),
            s.user_agent_token,
            s.disallowed_header_directives,
        )
        if directive is not None:
            _discard(resp)
            raise _Failure(f"x_robots_tag:{directive}", status=status, content_type=ctype)
        declared = _content_length(resp)
        if declared is not None and declared > s.max_bytes:
            _discard(resp)
            raise _Failure("too_large", status=status, content_type=ctype)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _Failure("timeout", True, status, content_type=ctype)
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > s.max_bytes:
                    raise _Failure("too_large", status=status, content_type=ctype)
                chunks.append(chunk)
        except _Failure:
            _discard(resp)
            raise
        except Exception as err:
            _discard(resp)
            fail = _transport_failure(err)
            fail.status, fail.content_type = status, ctype
            raise fail from err
        resp.release_conn()
        return b"".join(chunks)


def _ctype(resp: urllib3.BaseHTTPResponse) -> str | None:
    return resp.headers.get("Content-Type")


def _content_length(resp: urllib3.BaseHTTPResponse) -> int | None:
    value = resp.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _transport_failure(err: BaseException) -> _Failure:
    """Map urllib3/socket exceptions to reason codes (order matters: subclasses first)."""
    if isinstance(err, u3e.SSLError):
        return _Failure("ssl_error")
    if isinstance(err, u3e.NewConnectionError):
        return _Failure("connection_error", retryable=True)
    if isinstance(err, (u3e.TimeoutError, TimeoutError)):
        return _Failure("timeout", retryable=True)
    if isinstance(err, u3e.DecodeError):
        return _Failure("content_encoding_error")
    if isinstance(err, (u3e.LocationValueError, u3e.LocationParseError)):
        return _Failure("bad_url")
    if isinstance(err, (u3e.ProtocolError, u3e.HTTPError, OSError)):
        return _Failure("connection_error", retryable=True)
    return _Failure("internal_error")
