"""Records exchanged between corpus readers and the mining pipeline (see docs/CONTRACTS.md).

Anything unusable is *skipped and counted*, never raised out of a reader: helpers here take an
optional ``collections.Counter`` and add ``skips[reason] += 1`` with short snake_case reasons.

Caption reasons (counted per caption, the sample itself is kept):
    ``caption_empty``      nothing left after whitespace clean-up
    ``caption_not_utf8``   bytes that are not valid UTF-8 (or a str holding lone surrogates)
    ``caption_truncated``  longer than ``max_chars``; cut at a word boundary and kept
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

logger = logging.getLogger(__name__)

__all__ = [
    "ImageRecord",
    "WorkUnit",
    "SkipSample",
    "sanitize_key",
    "clean_caption",
    "clean_captions",
    "count_skip",
]


@dataclass
class ImageRecord:
    """One image of a corpus with all of its captions."""

    key: str  # unique inside the corpus, no dots ([A-Za-z0-9_-] only)
    captions: list[str]  # cleaned (valid UTF-8, stripped, length-capped), may be empty
    image_bytes: Optional[bytes]  # encoded image (jpg/png/...) or None when image_url is given
    image_url: Optional[str] = None  # fsspec URL to read lazily when image_bytes is None
    image_id: int | str | None = None  # COCO image id or corpus id
    source_url: Optional[str] = None  # original URL (img2dataset "url") if known
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkUnit:
    """One unit of work = one output shard ``pairs-%06d.tar``."""

    index: int  # output shard number -> pairs-%06d.tar
    source: str  # fsspec URL of the input file/shard
    start: int = 0  # first item (for partitions of a single big file such as COCO json)
    stop: Optional[int] = None  # one past the last item; None = to the end of ``source``
    byte_range: Optional[tuple[int, int]] = None  # text URL lists: bytes [a, b) of ``source`` holding rows start..stop-1


class SkipSample(Exception):
    """Raised for a sample that cannot be used; ``reason`` is a short snake_case counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def count_skip(skips: Optional[Counter], reason: str, n: int = 1) -> None:
    """``skips[reason] += n`` when a counter is given (a no-op for ``None``)."""
    if skips is not None:
        skips[reason] += n


_KEY_OK = re.compile(r"[A-Za-z0-9_-]+")
_KEY_BAD_RUN = re.compile(r"[^A-Za-z0-9_-]+")
# Every key that had to change ends with "--h" + 16 hex digits; a key that already has this
# shape is rewritten too, so an unchanged key can never equal a rewritten one.
_HASHED_TAIL = re.compile(r"--h[0-9a-f]{16}\Z")
_KEY_MAX_LEN = 128


def sanitize_key(s: str | int, max_len: int = _KEY_MAX_LEN) -> str:
    """Map any string to a shard-safe key made of ``[A-Za-z0-9_-]`` only (no dots).

    Keys that are already safe (and at most ``max_len`` long) are returned unchanged. Otherwise
    runs of other characters become ``_``, the result is cut to leave room, and ``--h`` plus 16 hex
    digits of the SHA-1 of the original string are appended, so two different inputs do not
    collide. The mapping is stable across runs and machines.

    >>> sanitize_key("000123")
    '000123'
    >>> sanitize_key("a.b")
    'a_b--h69f6642c9d71b463'
    """
    s = str(s)
    if _KEY_OK.fullmatch(s) and len(s) <= max_len and not _HASHED_TAIL.search(s):
        return s
    digest = hashlib.sha1(s.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
    base = _KEY_BAD_RUN.sub("_", s).strip("_")[: max(0, max_len - 19)]
    return f"{base}--h{digest}" if base else f"h{digest}"


_WS = re.compile(r"\s+")


def clean_caption(
    raw: bytes | str | None, max_chars: int = 1000, skips: Optional[Counter] = None
) -> Optional[str]:
    """Clean one caption; return ``None`` when it is unusable (the reason is counted).

    - ``bytes`` must be valid UTF-8 (else ``caption_not_utf8``); a UTF-8 BOM is dropped.
    - Unicode is NFC-normalised, control characters removed, whitespace runs (newlines included)
      collapsed to one space, ends stripped; nothing left -> ``caption_empty``.
    - Longer than ``max_chars`` -> cut at the last space in the second half of the budget (or hard
      at ``max_chars`` when there is none) and counted as ``caption_truncated``.
    """
    if raw is None:
        count_skip(skips, "caption_empty")
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8-sig")
        except UnicodeDecodeError:
            count_skip(skips, "caption_not_utf8")
            return None
    else:
        text = str(raw)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, e.g. from a JSON "\ud800" escape
            count_skip(skips, "caption_not_utf8")
            return None
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    text = _WS.sub(" ", text).strip()
    if not text:
        count_skip(skips, "caption_empty")
        return None
    if len(text) > max_chars:
        cut = text[: max_chars + 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut[:max_chars]).rstrip()
        count_skip(skips, "caption_truncated")
    return text


def clean_captions(
    raws: list[bytes | str | None], max_chars: int = 1000, skips: Optional[Counter] = None
) -> list[str]:
    """Clean several captions of one image; drop unusable ones and exact duplicates (order kept)."""
    out: list[str] = []
    for raw in raws:
        text = clean_caption(raw, max_chars, skips)
        if text is not None and text not in out:
            out.append(text)
    return out
