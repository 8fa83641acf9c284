"""The world's vocabulary: 16 drawn "thing" categories and 6 textured "stuff" categories.

Every name is a single ordinary English noun that spaCy's small English model tags as a NOUN
and lemmatises to itself (plurals lemmatise back to the name), so noun extraction over the
world's captions recovers category names without a synonym table.

Category ids are 1-based in COCO files (``id``) and 0-based in semantic label maps
(``train_id``; 255 = ignore), following the detectron2 ADE20K/Pascal convention.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Category", "CATEGORIES", "THINGS", "STUFF", "NAMES", "by_name", "IGNORE_LABEL"]

IGNORE_LABEL = 255


@dataclass(frozen=True)
class Category:
    """One world category."""

    id: int  # COCO category id, 1-based
    name: str  # singular noun, the class name used for prompts
    plural: str  # plural form used by the caption writer
    kind: str  # "thing" (drawn shape, has instances) or "stuff" (textured background region)

    @property
    def train_id(self) -> int:
        """0-based label used in semantic label maps."""
        return self.id - 1


_THING_NAMES = [
    ("star", "stars"),
    ("ring", "rings"),
    ("heart", "hearts"),
    ("arrow", "arrows"),
    ("moon", "moons"),
    ("key", "keys"),
    ("leaf", "leaves"),
    ("triangle", "triangles"),
    ("diamond", "diamonds"),
    ("flower", "flowers"),
    ("tree", "trees"),
    ("house", "houses"),
    ("fish", "fish"),
    ("bell", "bells"),
    ("crown", "crowns"),
    ("umbrella", "umbrellas"),
]
_STUFF_NAMES = [
    ("grass", "grass"),
    ("water", "water"),
    ("sand", "sand"),
    ("brick", "bricks"),
    ("sky", "sky"),
    ("snow", "snow"),
]

CATEGORIES: tuple[Category, ...] = tuple(
    [Category(i + 1, n, p, "thing") for i, (n, p) in enumerate(_THING_NAMES)]
    + [Category(len(_THING_NAMES) + i + 1, n, p, "stuff") for i, (n, p) in enumerate(_STUFF_NAMES)]
)
THINGS: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.kind == "thing")
STUFF: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.kind == "stuff")
NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_BY_NAME = {c.name: c for c in CATEGORIES}


def by_name(name: str) -> Category:
    """Category for a singular name; raises KeyError for names outside the world."""
    return _BY_NAME[name]
