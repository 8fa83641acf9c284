"""Records: key sanitising, caption cleaning and its skip counts."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest

from pipelines.records import (
    ImageRecord,
    SkipSample,
    WorkUnit,
    clean_caption,
    clean_captions,
    sanitize_key,
)

SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize("key", ["000123", "abc_DEF-9", "u000001_x"])
def test_sanitize_key_keeps_safe_keys(key: str) -> None:
    assert sanitize_key(key) == key


def test_sanitize_key_rewrites_with_stable_hash() -> None:
    assert sanitize_key("a.b") == "a_b--h69f6642c9d71b463"
    assert sanitize_key("a.b") == sanitize_key("a.b")
    assert sanitize_key(17) == "17"


@pytest.mark.parametrize(
    "raw", ["a.b", "a/b", "a b", "a..b", "dir/sub/0001.jpg", "ünïcode", "...", "", "x" * 500]
)
def test_sanitize_key_output_is_safe_and_short(raw: str) -> None:
    key = sanitize_key(raw)
    assert SAFE.fullmatch(key)
    assert "." not in key and len(key) <= 128


def test_sanitize_key_distinct_inputs_do_not_collide() -> None:
    raws = ["a.b", "a/b", "a b", "a_b", "a..b", "a.b.", "x" * 500, "x" * 501]
    keys = [sanitize_key(r) for r in raws]
    assert len(set(keys)) == len(raws)
    # A safe key shaped like a rewritten one is rewritten too, so it cannot collide.
    looks_hashed = sanitize_key("a.b")
    assert sanitize_key(looks_hashed) != looks_hashed
    assert sanitize_key(looks_hashed).startswith("a_b--h69f6642c9d71b463--h")


def test_clean_caption_whitespace_nfc_and_bom() -> None:
    skips: Counter = Counter()
    assert clean_caption("  a\n\tdog \r\n on   grass ", 100, skips) == "a dog on grass"
    assert clean_caption("\ufeffa cat".encode("utf-8"), 100, skips) == "a cat"
    assert clean_caption("cafe\u0301", 100, skips) == "caf\u00e9"  # NFC
    assert clean_caption("a\x00b\x07c", 100, skips) == "a b c"
    assert skips == Counter()


@pytest.mark.parametrize("raw", ["", "   ", "\n\t", b"", b"  \n", None])
def test_clean_caption_empty(raw) -> None:
    skips: Counter = Counter()
    assert clean_caption(raw, 100, skips) is None
    assert skips == Counter({"caption_empty": 1})


@pytest.mark.parametrize("raw", [b"caf\xe9 au lait", b"\xff\xfe\x00a", "lone \ud800 surrogate"])
def test_clean_caption_not_utf8(raw) -> None:
    skips: Counter = Counter()
    assert clean_caption(raw, 100, skips) is None
    assert skips == Counter({"caption_not_utf8": 1})


def test_clean_caption_truncates_100kb_at_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(20_000))  # ~ 150 kB
    assert len(words) > 100_000
    skips: Counter = Counter()
    text = clean_caption(words.encode("utf-8"), 1000, skips)
    assert text is not None
    assert 500 < len(text) <= 1000
    assert words.startswith(text) and words[len(text)] == " "  # cut before a space
    tokens = text.split(" ")
    assert tokens[-1] == f"word{len(tokens) - 1}"  # last word kept whole
    assert skips == Counter({"caption_truncated": 1})


def test_clean_caption_hard_cut_without_spaces() -> None:
    skips: Counter = Counter()
    assert clean_caption("x" * 5000, 1000, skips) == "x" * 1000
    assert clean_caption("x" * 1000, 1000, skips) == "x" * 1000  # exactly at the limit
    assert skips == Counter({"caption_truncated": 1})


def test_clean_captions_drops_bad_and_duplicates_in_order() -> None:
    skips: Counter = Counter()
    raws = ["a dog", b"\xff", "", "a  dog", "a cat", None, "y" * 2000]
    assert clean_captions(raws, 1000, skips) == ["a dog", "a cat", "y" * 1000]
    assert skips == Counter(
        {"caption_not_utf8": 1, "caption_empty": 2, "caption_truncated": 1}
    )


def test_clean_caption_without_counter() -> None:
    assert clean_caption(b"\xff", 10) is None
    assert clean_caption("hello world again", 11) == "hello world"


def test_dataclasses_follow_the_contract() -> None:
    unit = WorkUnit(index=3, source="memory://x.tar")
    assert (unit.start, unit.stop) == (0, None)
    assert {unit: 1}[WorkUnit(3, "memory://x.tar", 0, None)] == 1  # frozen -> hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        unit.index = 4  # type: ignore[misc]
    a = ImageRecord(key="k", captions=[], image_bytes=None, image_url="x.jpg")
    b = ImageRecord(key="k2", captions=["c"], image_bytes=b"..")
    a.meta["x"] = 1
    assert b.meta == {} and b.image_url is None and b.image_id is None and b.source_url is None


def test_skip_sample_reason() -> None:
    err = SkipSample("corrupt_image", "bad header")
    assert err.reason == "corrupt_image" and err.detail == "bad header"
    assert str(err) == "corrupt_image: bad header"
    assert SkipSample("zero_byte").reason == "zero_byte"
