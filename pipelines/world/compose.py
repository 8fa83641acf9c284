"""Scene composition: stuff background regions, 1-4 occluding drawn objects, exact ground truth.

``sample_scene(seed_seq, size)`` is a pure function of its seed: the same seed always gives the
same pixels, masks and labels, whichever process or order generates it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .categories import IGNORE_LABEL, STUFF, THINGS, Category
from .shapes import rasterize, shape_parts
from .textures import object_fill, sample_colour, stuff_texture

__all__ = ["Instance", "Scene", "sample_scene", "inner_boundary"]

MIN_VISIBLE_FRACTION = 0.5  # an object keeps at least this share of its drawn pixels
MIN_AREA = 60  # px at 128 px; scaled with the image area


@dataclass
class Instance:
    """One annotated region: a drawn object (thing) or a background region (stuff)."""

    category: Category
    mask: np.ndarray  # bool [H, W], visible pixels only (occlusion applied)
    colour: str | None = None  # colour word of a thing, None for stuff
    pattern: str | None = None  # fill pattern of a thing
    draw: dict | None = None  # thing: {cx, cy, radius, angle, flip, rgb} as passed to rasterize


@dataclass
class Scene:
    """A generated image with its exact annotation."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    instances: list[Instance]  # things in paint order, then stuff regions
    semantic: np.ndarray  # uint8 [H, W]: train_id, 255 on the inner 1-px rim of every thing
    meta: dict = field(default_factory=dict)

    @property
    def things(self) -> list[Instance]:
        return [i for i in self.instances if i.category.kind == "thing"]

    @property
    def stuff(self) -> list[Instance]:
        return [i for i in self.instances if i.category.kind == "stuff"]


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` [H, W] bool with a 4-neighbour outside the mask (image border excluded)."""
    p = np.pad(mask, 1, mode="edge")
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def _stuff_layout(rng: np.random.Generator, size: int) -> list[tuple[Category, np.ndarray]]:
    """One or two stuff regions covering the canvas: [(category, bool mask [S, S])]."""
    if rng.random() < 0.5:
        cat = STUFF[int(rng.integers(len(STUFF)))]
        return [(cat, np.ones((size, size), dtype=bool))]
    i, j = rng.choice(len(STUFF), size=2, replace=False)
    top, bottom = STUFF[int(i)], STUFF[int(j)]
    if bottom.name == "sky":
        top, bottom = bottom, top
    xs = np.arange(size)
    y_line = size * rng.uniform(0.3, 0.7) + size * 0.05 * np.sin(
        xs * rng.uniform(0.02, 0.08) + rng.uniform(0, 2 * math.pi))
    yy = np.arange(size)[:, None]
    upper = yy < y_line[None, :]
    return [(top, upper), (bottom, ~upper)]


def sample_scene(seed: int | list[int] | np.random.SeedSequence, size: int = 128,
                 max_objects: int = 4) -> Scene:
    """Draw one scene of ``size``×``size`` px from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    layout = _stuff_layout(rng, size)
    image = np.zeros((size, size, 3), dtype=np.float32)
    for cat, region in layout:
        image[region] = stuff_texture(rng, cat.name, size, size)[region]

    scale = size / 128.0
    min_area = MIN_AREA * scale * scale
    n_objects = int(rng.choice(np.arange(1, max_objects + 1), p=_count_probs(max_objects)))
    owner = np.full((size, size), -1, dtype=np.int32)  # index into `drawn`, -1 = stuff
    drawn: list[tuple[Category, np.ndarray, str, str, dict]] = []  # (cat, mask, colour, pattern, draw)
    chosen: list[Category] = []
    for _ in range(n_objects):
        if chosen and rng.random() < 0.2:
            cat = chosen[int(rng.integers(len(chosen)))]
        else:
            cat = THINGS[int(rng.integers(len(THINGS)))]
        parts = shape_parts(cat.name)
        for _attempt in range(20):
            radius = rng.uniform(16, 40) * scale
            angle = rng.uniform(-math.pi, math.pi) if cat.name == "arrow" else rng.uniform(-0.45, 0.45)
            flip = bool(rng.random() < 0.5)
            cx = rng.uniform(0.45 * radius, size - 0.45 * radius)
            cy = rng.uniform(0.45 * radius, size - 0.45 * radius)
            mask = rasterize(parts, size, size, cx, cy, radius, angle, flip)
            if mask.sum() < max(min_area, 0.35 * _unclipped_area(cat.name, radius)):
                continue
            trial = owner.copy()
            trial[mask] = len(drawn)
            if all((trial == k).sum() >= max(MIN_VISIBLE_FRACTION * m.sum(), min_area)
                   for k, (_, m, *_rest) in enumerate(drawn)):
                colour, rgb = sample_colour(rng)
                pattern, fill = object_fill(rng, size, size, rgb)
                image[mask] = fill[mask]
                owner = trial
                params = {"cx": cx, "cy": cy, "radius": radius, "angle": angle, "flip": flip,
                          "rgb": rgb.tolist()}
                drawn.append((cat, mask, colour, pattern, params))
                chosen.append(cat)
                break

    instances = [Instance(cat, owner == k, colour, pattern, params)
                 for k, (cat, _, colour, pattern, params) in enumerate(drawn)]
    semantic = np.full((size, size), IGNORE_LABEL, dtype=np.uint8)
    for cat, region in layout:
        visible = region & (owner < 0)
        semantic[visible] = cat.train_id
        if visible.sum() >= min_area:
            instances.append(Instance(cat, visible))
    for inst in instances[: len(drawn)]:
        semantic[inst.mask] = inst.category.train_id
        semantic[inner_boundary(inst.mask)] = IGNORE_LABEL
    img = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(img, instances, semantic, {"stuff_layout": [c.name for c, _ in layout]})


def _count_probs(max_objects: int) -> np.ndarray:
    w = np.array([1.0, 1.2, 1.0, 0.8, 0.6, 0.4][:max_objects])
    return w / w.sum()


_AREA_CACHE: dict[str, float] = {}


def _unclipped_area(name: str, radius: float) -> float:
    """Area in px² of shape ``name`` at ``radius`` if the canvas did not clip it (cached)."""
    if name not in _AREA_CACHE:
        r = 50.0
        m = rasterize(shape_parts(name), 128, 128, 64, 64, r, 0.0)
        _AREA_CACHE[name] = float(m.sum()) / (r * r)
    return _AREA_CACHE[name] * radius * radius
