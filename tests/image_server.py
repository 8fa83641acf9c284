"""A loopback HTTP server (127.0.0.1, a free port) serving images with injected faults, for the
URL-list corpus tests. Every request is logged, so tests can count what was fetched.

Paths:
    /img/<name>         the image ``name`` (Content-Type image/jpeg)
    /404/<name>         404
    /flaky/<name>       500 on the first request of this path, then the image
    /slow/<name>        headers and half the body, then silence past any read timeout we use
    /big/<name>         Content-Length past the test's size cap (nothing sent beyond the headers)
    /html/<name>        an HTML page with status 200
    /loop/<name>        302 to /loop2/<name>, which redirects back
    /tofile/<name>      302 to file:///etc/passwd
    /truncated/<name>   Content-Length of the whole image, half the body, then the connection closes
    /noai/<name>        the image with ``X-Robots-Tag: noai``
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("404", "flaky", "slow", "big", "html", "loop", "truncated", "noai")
#: The reason each fault must be counted under (``flaky`` recovers: it is no failure).
FAULT_REASON = {"404": "http_404", "slow": "timeout", "big": "too_large", "html": "not_an_image",
                "loop": "redirect_loop", "truncated": "truncated", "noai": "opted_out"}
SLOW_S = 3.0  # how long /slow/ stays silent (tests use read timeouts well below it)
BIG_BYTES = 50_000_000


class ImageServer:
    """``with ImageServer(images) as server: server.url("img", "a")``; ``server.requests`` counts paths."""

    def __init__(self, images: dict[str, bytes], delay_s: float = 0.0) -> None:
        self.images = images
        self.delay_s = delay_s  # /img/ answers after this long (slows a job down enough to kill it midway)
        self.requests: Counter = Counter()
        self.user_agents: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.requests[self.path] += 1
                    seen = server.requests[self.path]
                    server.user_agents.add(self.headers.get("User-Agent", ""))
                server._serve(self, seen)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, route: str, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{route}/{name}"

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, h: BaseHTTPRequestHandler, seen: int) -> None:
        route, _, name = h.path.lstrip("/").partition("/")
        body = self.images.get(name)
        if body is None or route == "404":
            return _send(h, 404, b"not found", "text/plain")
        if route in ("img", "noai") or (route == "flaky" and seen > 1):
            if route == "img" and self.delay_s:
                time.sleep(self.delay_s)
            extra = {"X-Robots-Tag": "noai"} if route == "noai" else {}
            return _send(h, 200, body, "image/jpeg", extra)
        if route == "flaky":
            return _send(h, 500, b"try again", "text/plain")
        if route == "html":
            return _send(h, 200, b"<html><body>an image page</body></html>", "text/html; charset=utf-8")
        if route == "tofile":
            return _send(h, 302, b"", "text/plain", {"Location": "file:///etc/passwd"})
        if route in ("loop", "loop2"):
            target = f"/{'loop2' if route == 'loop' else 'loop'}/{name}"
            return _send(h, 302, b"", "text/plain", {"Location": target})
        if route == "big":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(BIG_BYTES))
            h.end_headers()
            h.wfile.write(body[:1000])
            h.close_connection = True
            return None
        if route in ("slow", "truncated"):
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if route == "slow":
                time.sleep(SLOW_S)
            h.close_connection = True
            return None
        return _send(h, 404, b"no such route", "text/plain")


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
