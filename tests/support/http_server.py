"""A local threaded HTTP(S) image server with misbehaviour routes, for download tests.

Real downloads meet 404s, rate limits, stalls, redirects, opt-out headers and
huge bodies; these routes reproduce each one on 127.0.0.1 so fetcher and Spark
download-job tests run offline and deterministically.

Usage::

    with LocalImageServer(files_dir=tmp_path, image_bytes=jpeg) as srv:
        url = srv.url("/files/a.jpg")
        ...
        assert srv.hits("/files/a.jpg") == 1

Routes (GET and HEAD):

``/image``                        the configured image (``image_bytes``, ``image_content_type``)
``/files/<name>``                 a file from ``files_dir`` (404 if absent)
``/status/<code>``                that status with a short text body
``/flaky/<key>/<n>/<code>``       first ``n`` requests for ``key`` get ``code``, then the image
``/slow/<seconds>``               waits before the headers, then the image
``/slow/<seconds>?stage=body``    sends headers and half the body, waits, then the rest
``/drip/<chunks>/<interval>``     the image in ``chunks`` pieces, ``interval`` seconds apart
``/redirect?to=<url>``            302 (or ``&code=30x``) to ``url``
``/redirect-chain/<n>``           ``n`` redirects in a row, then the image
``/header/<value>``               the image with ``X-Robots-Tag: <value>`` (URL-decoded;
                                  ``|`` separates repeated header lines)
``/big/<nbytes>``                 ``nbytes`` zero bytes; ``?mode=length`` (default),
                                  ``chunked`` or ``close`` (no length, ends at close)
``/html``                         an HTML page labelled ``image/jpeg``

``/status``, ``/flaky`` also take ``?retry_after=<value>`` to send a Retry-After header.

Every request is recorded (method, target, headers); see :meth:`hits` and
:attr:`requests`. Waiting routes wake up when the server stops, so shutdown is
prompt, and open keep-alive connections are closed on stop.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_CHUNK = 64 * 1024
_QUIET_ERRORS = (OSError,)  # client hang-ups, resets, TLS failures, timeouts


def default_image_bytes() -> bytes:
    """A small valid JPEG (32x24, orange), served when no image is configured."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (240, 120, 20)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    target: str  # path plus query, as sent
    path: str
    headers: dict[str, str]  # lower-cased names
    client_port: int  # same port on two requests means a reused keep-alive connection


def make_self_signed_cert(directory: Path, hostnames: Sequence[str]) -> tuple[Path, Path]:
    """Write a self-signed cert/key (openssl CLI) valid for ``hostnames``; return both paths.

    The cert is its own CA, so pass the cert path as the client's CA bundle.
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(f"DNS:{name}" for name in hostnames)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={hostnames[0]}",
            "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: LocalImageServer, host: str) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        if not isinstance(sys.exc_info()[1], _QUIET_ERRORS):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # no connection outlives a stuck test for long

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # here, not in the accept loop

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # --- plumbing -----------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        srv = self.server.owner
        parts = urlsplit(self.path)
        srv._record(
            RecordedRequest(
                self.command,
                self.path,
                parts.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.client_address[1],
            )
        )
        self._head = head
        self._query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        route = getattr(self, "_route_" + segments[0].replace("-", "_"), None)
        try:
            if route is None:
                self._send(404, b"no such route\n", "text/plain")
            else:
                route(*segments[1:])
        except (TypeError, ValueError):
            self._send(400, b"bad route arguments\n", "text/plain")
        except _QUIET_ERRORS:
            self.close_connection = True

    def _send(
        self,
        code: int,
        body: bytes = b"",
        content_type: str = "application/octet-stream",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        no_body = code in (204, 304) or 100 <= code < 200
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not no_body and not self._head:
            self.wfile.write(body)

    def _send_image(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        srv = self.server.owner
        self._send(200, srv.image_bytes, srv.image_content_type, headers)

    def _retry_after(self) -> list[tuple[str, str]]:
        value = self._query.get("retry_after")
        return [("Retry-After", value)] if value is not None else []

    # --- routes -------------------------------------------------------------------------------

    def _route_image(self) -> None:
        self._send_image()

    def _route_files(self, name: str) -> None:
        root = self.server.owner.files_dir
        path = (root / name).resolve() if root else None
        if path is None or root is None or path.parent != root.resolve() or not path.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), ctype)

    def _route_status(self, code: str) -> None:
        self._send(int(code), f"status {code}\n".encode(), "text/plain", self._retry_after())

    def _route_flaky(self, key: str, failures: str, code: str) -> None:
        if self.server.owner._bump(key) <= int(failures):
            self._send(int(code), b"try again\n", "text/plain", self._retry_after())
        else:
            self._send_image()

    def _route_slow(self, seconds: str) -> None:
        stop = self.server.owner._stop
        if self._query.get("stage") != "body":
            if not stop.wait(float(seconds)):
                self._send_image()
            return
        srv = self.server.owner
        body = srv.image_bytes
        self.send_response(200)
        self.send_header("Content-Type", srv.image_content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if not stop.wait(float(seconds)):
            self.wfile.write(body[len(body) // 2 :])

    def _route_drip(self, chunks: str, interval: str) -> None:
        srv = self.server.owner
        body, n = srv.image_bytes, max(1, int(chunks))
        self.send_response(200)
        self.send_header("Content-Type", srv.image_content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = -(-len(body) // n)
        for start in range(0, len(body), step):
            self.wfile.write(body[start : start + step])
            self.wfile.flush()
            if srv._stop.wait(float(interval)):
                return

    def _route_redirect(self) -> None:
        code = int(self._query.get("code", "302"))
        self._send(code, b"", "text/plain", [("Location", self._query["to"])])

    def _route_redirect_chain(self, remaining: str) -> None:
        left = int(remaining)
        if left <= 0:
            self._send_image()
        else:
            self._send(302, b"", "text/plain", [("Location", f"/redirect-chain/{left - 1}")])

    def _route_header(self, value: str) -> None:
        self._send_image([("X-Robots-Tag", v) for v in value.split("|")])

    def _route_big(self, nbytes: str) -> None:
        total, mode = int(nbytes), self._query.get("mode", "length")
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if mode == "length":
            self.send_header("Content-Length", str(total))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self._head:
            return
        block = bytes(_CHUNK)
        for start in range(0, total, _CHUNK):
            piece = block[: min(_CHUNK, total - start)]
            if mode == "chunked":
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def _route_html(self) -> None:
        body = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>gone</body></html>"
        self._send(200, body, "image/jpeg")


class LocalImageServer:
    """Threaded HTTP(S) server on 127.0.0.1 (free port); use as a context manager.

    ``image_bytes`` and ``image_content_type`` may be changed while it runs.
    Pass ``ssl_context`` (a server-side context with a cert loaded) for HTTPS.
    """

    def __init__(
        self,
        files_dir: str | Path | None = None,
        image_bytes: bytes | None = None,
        image_content_type: str = "image/jpeg",
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.files_dir = Path(files_dir) if files_dir is not None else None
        self.image_bytes = image_bytes if image_bytes is not None else default_image_bytes()
        self.image_content_type = image_content_type
        self._ssl_context = ssl_context
        self._host = host
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._counters: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalImageServer:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._stop.clear()
        server = _Server(self, self._host)
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stop.set()  # wake sleeping routes
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self._host}:{self.port}"

    def url(self, path: str, host: str | None = None) -> str:
        """Absolute URL for ``path``; ``host`` swaps in a name (e.g. one a test resolver maps)."""
        if not path.startswith("/"):
            path = "/" + path
        return f"{self.scheme}://{host or self._host}:{self.port}{path}"

    # --- recording ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def hits(self, path: str | None = None) -> int:
        """Requests seen: all, for a path (query ignored), or for an exact target with query."""
        with self._lock:
            if path is None:
                return len(self._requests)
            field = "target" if "?" in path else "path"
            return sum(1 for r in self._requests if getattr(r, field) == path)

    def reset(self) -> None:
        """Forget recorded requests and flaky counters."""
        with self._lock:
            self._requests.clear()
            self._counters.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _bump(self, key: str) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]
