"""Unit geometry of the 16 thing categories and their rasterisation into exact binary masks.

A shape is a list of ``(op, polygon)`` parts in unit coordinates (x right, y down, roughly inside
[-1, 1]²); ``op`` is ``"add"`` or ``"sub"`` and parts are painted in order, so a ring is a disc
minus a smaller disc. Rasterisation uses PIL without antialiasing, hence the mask is exactly the
set of pixels that the composer paints.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["Part", "SHAPES", "shape_parts", "rasterize"]

Part = tuple[str, np.ndarray]  # ("add" | "sub", polygon [P, 2] float unit coordinates)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, a0: float = 0.0,
             a1: float = 2 * math.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-6)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _star() -> list[Part]:
    k = np.arange(10)
    r = np.where(k % 2 == 0, 1.0, 0.42)
    a = -math.pi / 2 + k * math.pi / 5
    return [("add", np.stack([r * np.cos(a), r * np.sin(a)], axis=1))]


def _ring() -> list[Part]:
    return [("add", _ellipse(0, 0, 1, 1, 48)), ("sub", _ellipse(0, 0, 0.55, 0.55, 40))]


def _heart() -> list[Part]:
    t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [("add", np.stack([x / 17.0, (y + 2.5) / 17.0], axis=1))]


def _arrow() -> list[Part]:
    pts = [(-1, -0.18), (0.2, -0.18), (0.2, -0.55), (1, 0), (0.2, 0.55), (0.2, 0.18), (-1, 0.18)]
    return [("add", np.array(pts, dtype=float))]


def _moon() -> list[Part]:
    return [("add", _ellipse(0, 0, 1, 1, 48)), ("sub", _ellipse(0.45, -0.2, 0.85, 0.85, 48))]


def _key() -> list[Part]:
    return [
        ("add", _ellipse(-0.6, 0, 0.4, 0.4, 32)),
        ("sub", _ellipse(-0.6, 0, 0.17, 0.17, 20)),
        ("add", _rect(-0.25, -0.1, 1.0, 0.1)),
        ("add", _rect(0.55, 0.05, 0.68, 0.38)),
        ("add", _rect(0.82, 0.05, 0.97, 0.32)),
    ]


def _leaf() -> list[Part]:
    t = np.linspace(0, math.pi, 24)
    upper = np.stack([-1 + 1.75 * t / math.pi, -0.5 * np.sin(t)], axis=1)
    lower = upper[::-1] * np.array([1.0, -1.0])
    vein = np.array([(-0.6, -0.03), (0.5, -0.03), (0.5, 0.03), (-0.6, 0.03)])
    return [("add", np.concatenate([upper, lower])), ("sub", vein),
            ("add", _rect(0.7, -0.05, 1.0, 0.05))]


def _triangle() -> list[Part]:
    a = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
    return [("add", np.stack([np.cos(a), np.sin(a) + 0.2], axis=1))]


def _diamond() -> list[Part]:
    return [("add", np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], dtype=float))]


def _flower() -> list[Part]:
    parts: list[Part] = []
    for k in range(5):
        a = -math.pi / 2 + k * 2 * math.pi / 5
        parts.append(("add", _ellipse(0.55 * math.cos(a), 0.55 * math.sin(a), 0.42, 0.42, 28)))
    parts.append(("sub", _ellipse(0, 0, 0.22, 0.22, 20)))
    return parts


def _tree() -> list[Part]:
    return [
        ("add", _rect(-0.15, 0.55, 0.15, 1.0)),
        ("add", np.array([(0, -1), (0.5, -0.2), (-0.5, -0.2)], dtype=float)),
        ("add", np.array([(0, -0.55), (0.75, 0.6), (-0.75, 0.6)], dtype=float)),
    ]


def _house() -> list[Part]:
    return [
        ("add", _rect(-0.7, -0.1, 0.7, 0.9)),
        ("add", np.array([(0, -0.9), (0.95, -0.05), (-0.95, -0.05)], dtype=float)),
        ("sub", _rect(-0.18, 0.35, 0.18, 0.9)),
    ]


def _fish() -> list[Part]:
    return [
        ("add", _ellipse(-0.15, 0, 0.75, 0.45, 40)),
        ("add", np.array([(0.45, 0), (1.0, -0.5), (1.0, 0.5)], dtype=float)),
        ("sub", _ellipse(-0.55, -0.1, 0.09, 0.09, 12)),
    ]


def _bell() -> list[Part]:
    top = _ellipse(0, -0.3, 0.5, 0.55, 24, math.pi, 2 * math.pi)
    body = np.concatenate([top, [[0.6, 0.45], [0.85, 0.7], [-0.85, 0.7], [-0.6, 0.45]]])
    return [("add", body), ("add", _ellipse(0, 0.82, 0.18, 0.18, 16)),
            ("add", _rect(-0.08, -1.0, 0.08, -0.8))]


def _crown() -> list[Part]:
    pts = [(-0.9, 0.6), (-0.9, -0.6), (-0.45, -0.05), (0, -0.8), (0.45, -0.05), (0.9, -0.6),
           (0.9, 0.6)]
    return [("add", np.array(pts, dtype=float))]


def _umbrella() -> list[Part]:
    canopy = _ellipse(0, 0, 1.0, 0.75, 32, math.pi, 2 * math.pi)
    canopy = np.concatenate([canopy, [[1.0, 0.0], [-1.0, 0.0]]])
    hook = [("add", _ellipse(0.2, 0.85, 0.25, 0.15, 20, 0, math.pi)),
            ("sub", _ellipse(0.2, 0.85, 0.13, 0.06, 16, 0, math.pi))]
    return [("add", canopy), ("add", _rect(-0.06, -0.05, 0.06, 0.88))] + hook


SHAPES: dict[str, Callable[[], list[Part]]] = {
    "star": _star, "ring": _ring, "heart": _heart, "arrow": _arrow, "moon": _moon, "key": _key,
    "leaf": _leaf, "triangle": _triangle, "diamond": _diamond, "flower": _flower,
    "tree": _tree, "house": _house, "fish": _fish, "bell": _bell, "crown": _crown,
    "umbrella": _umbrella,
}


def shape_parts(name: str) -> list[Part]:
    """Unit-coordinate parts of the thing category ``name``."""
    return SHAPES[name]()


def rasterize(parts: list[Part], height: int, width: int, cx: float, cy: float, radius: float,
              angle: float, flip: bool = False) -> np.ndarray:
    """Paint ``parts`` scaled by ``radius`` px, rotated by ``angle`` rad, centred at (cx, cy).

    Returns a bool mask [height, width]; pixels outside the canvas are clipped.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    for op, poly in parts:
        p = poly.copy()
        if flip:
            p[:, 0] = -p[:, 0]
        p = (p @ rot.T) * radius + np.array([cx, cy])
        draw.polygon([tuple(q) for q in p.tolist()], fill=255 if op == "add" else 0)
    return np.asarray(canvas) > 0
