"""Caption writer: 1-5 varied captions per scene, deliberately imperfect like web alt-text.

Each caption mentions every present thing category with probability ``P_MENTION`` (so present
objects are sometimes omitted), each stuff region with ``P_STUFF``, and with ``P_ABSENT`` one
category that is *not* in the image (a wrong noun, as in real captions). Templates avoid
"-ing" participles after nouns, which spaCy's small model mis-tags as nouns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .categories import STUFF, THINGS, Category
from .compose import Scene
from .textures import COLOURS

__all__ = ["Caption", "write_captions"]

P_MENTION = 0.8
P_STUFF = 0.45
P_ABSENT = 0.15
P_COLOUR = 0.6
P_SIZE = 0.25  # a lone object without a colour word is called small / large by its true size

_NUMBERS = {2: "two", 3: "three", 4: "four"}
_PREPOSITIONS = {
    "grass": ["on the grass", "in the grass"],
    "water": ["in the water", "on the water"],
    "sand": ["on the sand", "in the sand"],
    "brick": ["against the bricks", "in front of the bricks"],
    "sky": ["in the sky", "under the sky", "against the sky"],
    "snow": ["in the snow", "on the snow"],
}
_TEMPLATES = [
    "{things} {place}.",
    "a photo of {things} {place}.",
    "there is {things} {place}.",
    "a picture with {things} {place}",
    "a drawing of {things} {place}.",
    "{things}, {place}",
    "this is {things} {place}.",
    "an image of {things}.",
    "{things}.",
    "a photo of {things} in the scene.",
    "a simple picture of {things}",
]
_RELATIONS = ["next to", "above", "below", "beside", "near"]


@dataclass
class Caption:
    """One caption and what it names."""

    text: str
    mentioned: list[str]  # category names the caption names (present or not)
    absent: list[str]  # the subset of `mentioned` that is not in the image


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# colour words spaCy's small model reads as part of a noun ("an orange house" -> "orange house"):
# such captions leave the colour out.
_NOUNISH_COLOURS = {"orange"}
_COMPOUNDS: set[tuple[str, str]] = set()


def _colour_ok(colour: str, name: str) -> bool:
    return colour not in _NOUNISH_COLOURS and (colour, name) not in _COMPOUNDS


def _size_word(radius: float, image_size: int) -> str:
    r = radius * 128.0 / image_size  # the composer draws radii in 16..40 px at 128 px
    return "small" if r < 24 else "large" if r > 32 else ""


def _thing_phrase(rng: np.random.Generator, cat: Category, colours: list[str], size_word: str) -> str:
    colours = [c if _colour_ok(c, cat.name) else "" for c in colours]
    if len(colours) == 1:
        words = ([colours[0]] if colours[0] and rng.random() < P_COLOUR else []) + [cat.name]
        if len(words) == 1 and size_word and rng.random() < P_SIZE:
            words = [size_word, cat.name]
        return f"{_article(words[0])} {' '.join(words)}"
    if len(set(colours)) == 1 and colours[0] and rng.random() < P_COLOUR:
        return f"{_NUMBERS.get(len(colours), 'some')} {colours[0]} {cat.plural}"
    return f"{_NUMBERS.get(len(colours), 'some')} {cat.plural}" if rng.random() < 0.7 else cat.plural


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _one_caption(rng: np.random.Generator, scene: Scene) -> Caption:
    groups: dict[str, list[str]] = {}
    cats: dict[str, Category] = {}
    sizes: dict[str, str] = {}
    for inst in scene.things:
        groups.setdefault(inst.category.name, []).append(inst.colour or "")
        cats[inst.category.name] = inst.category
        sizes[inst.category.name] = _size_word(inst.draw["radius"], scene.image.shape[0]) if inst.draw else ""
    present_stuff = [i.category for i in scene.stuff]
    named = [n for n in groups if rng.random() < P_MENTION]
    stuff = [c for c in present_stuff if rng.random() < P_STUFF]
    absent: list[str] = []
    if rng.random() < P_ABSENT:
        pool = [c for c in THINGS if c.name not in groups]
        if rng.random() < 0.25:
            pool = [c for c in STUFF if c not in present_stuff]
        cat = pool[int(rng.integers(len(pool)))]
        absent.append(cat.name)
        if cat.kind == "thing":
            groups.setdefault(cat.name, [list(COLOURS)[int(rng.integers(len(COLOURS)))]])
            cats[cat.name] = cat
            named.append(cat.name)
        else:
            stuff.append(cat)
    if not named and groups:
        named.append(list(groups)[int(rng.integers(len(groups)))])
    order = [named[i] for i in rng.permutation(len(named))]
    phrases = [_thing_phrase(rng, cats[n], groups[n], sizes.get(n, "")) for n in order]
    place = " and ".join(_PREPOSITIONS[c.name][int(rng.integers(len(_PREPOSITIONS[c.name])))]
                     for c in stuff)
    if len(phrases) >= 2 and rng.random() < 0.3:
        rel = _RELATIONS[int(rng.integers(len(_RELATIONS)))]
        things = f"{phrases[0]} {rel} {_join(phrases[1:])}"
    else:
        things = _join(phrases)
    if not phrases:  # only stuff to talk about
        text = f"a photo {place}." if place else "a photo."
    else:
        candidates = [t for t in _TEMPLATES if ("{place}" in t) == bool(place)]
        text = candidates[int(rng.integers(len(candidates)))].format(things=things, place=place)
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    mentioned = order + [c.name for c in stuff]
    return Caption(text, mentioned, absent)


def write_captions(rng: np.random.Generator, scene: Scene, n_min: int = 1, n_max: int = 5) -> list[Caption]:
    """Between ``n_min`` and ``n_max`` captions for ``scene`` drawn with ``rng``."""
    n = int(rng.integers(n_min, n_max + 1))
    return [_one_caption(rng, scene) for _ in range(n)]


def mention_counts(captions: list[Caption]) -> Counter:
    """How many captions name each category (helper for corpus statistics)."""
    return Counter(n for c in captions for n in c.mentioned)
