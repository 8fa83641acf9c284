"""Fetching images over HTTP(S) for URL-list corpora (:mod:`pipelines.corpus.url_list`).

One :class:`Fetcher` per reader (per mining worker): a thread-safe ``urllib3`` pool shared by the
reader's download threads. :meth:`Fetcher.fetch` returns the encoded image bytes or raises
:class:`~pipelines.records.SkipSample` with one of :data:`DOWNLOAD_FAILURES`:

    ``http_404``            the server says the image is gone (404 / 410)
    ``http_4xx``            any other 4xx (403, 429, ...): not retried
    ``http_5xx``            5xx on every attempt (retried with backoff first)
    ``timeout``             connect / read timeout, or the whole body slower than the total budget,
                            on every attempt (retried with backoff first)
    ``too_large``           ``Content-Length`` or the body past ``max_bytes``
    ``not_an_image``        a non-image ``Content-Type`` (html, json, text) or no image magic bytes
    ``opted_out``           ``X-Robots-Tag`` with a refused directive (img2dataset's convention:
                            ``noai``, ``noimageai``, ``noindex``; ``bot: directive`` forms apply
                            only when ``bot`` is our user agent token)
    ``redirect_loop``       a redirect back to a URL already visited
    ``too_many_redirects``  more than ``max_redirects`` hops
    ``truncated``           the connection closed before ``Content-Length`` bytes arrived
    ``connection_error``    refused / reset / DNS failure (not retried: a dead host stays dead)
    ``bad_url``             not an http(s) URL, or a redirect without a usable ``Location``

Only 5xx answers and timeouts are retried; the image is counted once, under the last reason.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, LocationParseError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)

from pipelines.records import SkipSample

logger = logging.getLogger(__name__)

__all__ = ["DOWNLOAD_FAILURES", "download_summary", "OPT_OUT_DIRECTIVES", "USER_AGENT_TOKEN", "FetchPolicy", "Fetcher",
           "is_image_magic", "refused_by_robots_tag"]

DOWNLOAD_FAILURES = ("http_404", "http_4xx", "http_5xx", "timeout", "too_large", "not_an_image", "opted_out",
                     "redirect_loop", "too_many_redirects", "truncated", "connection_error", "bad_url")
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex")
USER_AGENT_TOKEN = "ovseg-mine"
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
_BINARY_TYPES = ("application/octet-stream", "binary/octet-stream")


def download_summary(images: int, skipped: dict[str, int]) -> dict:
    """Download figures of a URL-list run, as img2dataset's stats give them.

    Args:
        images: records that reached the mining CPU stage (each one a downloaded image).
        skipped: skip counts by reason (the run's or a unit's ``skipped``).
    Returns:
        ``{"attempted", "downloaded", "failed": {reason: n}, "success_rate"}`` (rate None when nothing was tried).
    """
    failed = {reason: int(skipped[reason]) for reason in DOWNLOAD_FAILURES if skipped.get(reason)}
    attempted = images + sum(failed.values())
    return {"attempted": attempted, "downloaded": images, "failed": failed,
            "success_rate": images / attempted if attempted else None}


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(kw_only=True)
class FetchPolicy:
    """How one image is fetched (filled from ``corpus.download_*``)."""

    connect_timeout: float = 5.0  # seconds to open the connection
    read_timeout: float = 10.0  # seconds without a byte from the server
    total_timeout: float = 60.0  # seconds for the whole body of one attempt
    retries: int = 2  # extra attempts after a 5xx or a timeout
    backoff: float = 0.5  # seconds before the first retry, doubling
    max_bytes: int = 20_000_000  # bodies past this count as too_large
    max_redirects: int = 5  # redirect hops followed
    opt_out: bool = True  # honour X-Robots-Tag noai / noimageai / noindex
    user_agent: str = f"{USER_AGENT_TOKEN}/0.1 (open-vocabulary segmentation pair mining)"


def is_image_magic(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a body) starts like JPEG, PNG, GIF, WebP, BMP, TIFF or AVIF/HEIF."""
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                             b"II*\x00", b"MM\x00*"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1")))


def refused_by_robots_tag(values: list[str], token: str = USER_AGENT_TOKEN,
                          refused: tuple[str, ...] = OPT_OUT_DIRECTIVES) -> bool:
    """Whether ``X-Robots-Tag`` header values refuse us: ``"noai"``, ``"noindex, nofollow"`` or
    ``"<token>: noimageai"`` do; ``"otherbot: noai"`` does not."""
    for value in values:
        scope, sep, rest = value.partition(":")
        if sep and "," not in scope and scope.strip().lower() not in refused:  # "<bot>: directives"
            bot, directives = scope.strip().lower(), rest
        else:  # plain directives, possibly "noindex, unavailable_after: <date>"
            bot, directives = None, value
        if bot is not None and bot != token.lower():
            continue
        if any(d.partition(":")[0].strip().lower() in refused for d in directives.split(",")):
            return True
    return False


class Fetcher:
    """Downloads images under a :class:`FetchPolicy`; safe to call from many threads.

    Args:
        policy: timeouts, caps, retries, opt-out and user agent.
        max_connections: connections kept per host (the reader's download threads).
    """

    def __init__(self, policy: FetchPolicy, max_connections: int = 16) -> None:
        self.policy = policy
        self.http = urllib3.PoolManager(
            num_pools=64, maxsize=max_connections, block=False, retries=False,
            timeout=urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout),
            headers={"User-Agent": policy.user_agent, "Accept": "image/*,*/*;q=0.5"},
        )

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` (an image's encoded bytes).

        Raises:
            SkipSample: with a reason of :data:`DOWNLOAD_FAILURES`.
        """
        if urlsplit(url).scheme not in ("http", "https"):
            raise SkipSample("bad_url", url[:200])
        delay = self.policy.backoff
        for attempt in range(self.policy.retries + 1):
            try:
                return self._fetch_once(url)
            except _Retryable as err:
                if attempt == self.policy.retries:
                    raise SkipSample(err.reason, url) from None
                logger.debug("retrying %s after %s (attempt %d)", url, err.reason, attempt + 1)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _fetch_once(self, url: str) -> bytes:
        seen, current = {url}, url
        for _ in range(self.policy.max_redirects + 1):
            try:
                resp = self.http.request("GET", current, preload_content=False, redirect=False)
            except NewConnectionError as err:  # refused, DNS (first: urllib3 2 makes it a ConnectTimeoutError subclass)
                raise SkipSample("connection_error", f"{current}: {err}") from None
            except (ConnectTimeoutError, ReadTimeoutError):
                raise _Retryable("timeout") from None
            except LocationParseError:
                raise SkipSample("bad_url", current[:200]) from None
            except HTTPError as err:
                if "timed out" in str(err).lower():
                    raise _Retryable("timeout") from None
                raise SkipSample("connection_error", f"{current}: {err}") from None
            try:
                if resp.status in _REDIRECTS:
                    _drain(resp)
                    location = resp.headers.get("Location")
                    if not location:
                        raise SkipSample("bad_url", f"{current}: redirect without Location")
                    current = urljoin(current, location)
                    if urlsplit(current).scheme not in ("http", "https"):  # no file://, ftp:// ... via a redirect
                        raise SkipSample("bad_url", f"{url}: redirect to {current[:200]}")
                    if current in seen:
                        raise SkipSample("redirect_loop", url)
                    seen.add(current)
                    continue
                return self._body(resp, current)
            finally:
                resp.release_conn()
        raise SkipSample("too_many_redirects", url)

    def _body(self, resp: urllib3.BaseHTTPResponse, url: str) -> bytes:
        """Status, opt-out, type and size checks, then the body (the connection is dropped on a failure)."""
        try:
            status = resp.status
            if status in (404, 410):
                raise SkipSample("http_404", url)
            if status >= 500:
                raise _Retryable("http_5xx")
            if status >= 400 or status < 200:
                raise SkipSample("http_4xx", f"{url}: {status}")
            if self.policy.opt_out and refused_by_robots_tag(resp.headers.getlist("X-Robots-Tag")):
                raise SkipSample("opted_out", url)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith("image/") and ctype not in _BINARY_TYPES:
                raise SkipSample("not_an_image", f"{url}: {ctype}")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > self.policy.max_bytes:
                raise SkipSample("too_large", f"{url}: {length} bytes")
            data = self._read(resp, url)
            if not is_image_magic(data[:16]):
                raise SkipSample("not_an_image", f"{url}: no image magic bytes")
            return data
        except BaseException:
            resp.close()  # a half-read connection is not reused
            raise

    def _read(self, resp: urllib3.BaseHTTPResponse, url: str) -> bytes:
        deadline = time.monotonic() + self.policy.total_timeout
        parts, size = [], 0
        try:
            for chunk in resp.stream(_CHUNK):
                size += len(chunk)
                if size > self.policy.max_bytes:
                    raise SkipSample("too_large", f"{url}: past {self.policy.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise _Retryable("timeout")
                parts.append(chunk)
        except ReadTimeoutError:
            raise _Retryable("timeout") from None
        except ProtocolError as err:  # IncompleteRead: fewer bytes than Content-Length, or a reset
            cause = err.args[1] if len(err.args) > 1 else err
            if "timed out" in str(cause).lower():
                raise _Retryable("timeout") from None
            raise SkipSample("truncated", f"{url}: {cause}") from None
        return b"".join(parts)


def _drain(resp: urllib3.BaseHTTPResponse, limit: int = 64 * 1024) -> None:
    """Read a redirect's (small) body so that its connection can serve the next hop; drop it when large."""
    try:
        if resp.read(limit, decode_content=False) and resp.read(1, decode_content=False):
            resp.close()
    except HTTPError:
        resp.close()
