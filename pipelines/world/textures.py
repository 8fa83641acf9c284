"""Colours and textures: named object colours, object fill patterns, stuff background textures.

All functions take a ``numpy.random.Generator`` and return float32 RGB arrays [H, W, 3] in 0..255,
so the composer decides where they are painted.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["COLOURS", "PATTERNS", "sample_colour", "object_fill", "stuff_texture"]

# name -> base RGB; objects get a jittered copy so the caption's colour word stays true.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 40),
    "green": (50, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "brown": (120, 75, 40),
}
PATTERNS = ("solid", "solid", "stripes", "dots", "checker", "gradient")


def sample_colour(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A colour name and its jittered RGB float32 [3]."""
    name = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    rgb = np.array(COLOURS[name], dtype=np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    return name, np.clip(rgb, 0, 255)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def object_fill(rng: np.random.Generator, h: int, w: int, rgb: np.ndarray) -> tuple[str, np.ndarray]:
    """Fill pattern for an object of main colour ``rgb``: (pattern name, [h, w, 3] float32)."""
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    out = np.broadcast_to(rgb, (h, w, 3)).astype(np.float32).copy()
    if pattern == "solid":
        pass
    else:
        second = np.clip(rgb * rng.uniform(0.4, 0.7) + rng.uniform(0, 80), 0, 255)
        yy, xx = _grid(h, w)
        if pattern == "stripes":
            a = rng.uniform(0, math.pi)
            period = rng.uniform(5, 10)
            sel = (np.cos(a) * xx + np.sin(a) * yy) % period < period / 2
        elif pattern == "dots":
            period = rng.uniform(6, 10)
            sel = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < (period / 4) ** 2
        elif pattern == "checker":
            period = int(rng.integers(4, 8))
            sel = ((xx // period + yy // period) % 2) == 0
        else:  # gradient
            t = (xx / max(w - 1, 1))[..., None]
            return pattern, out * (1 - 0.6 * t) + second * (0.6 * t)
        out[sel] = second
    return pattern, out


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise [h, w] in about -1..1 (bilinear upsampling of a coarse grid)."""
    gh, gw = h // scale + 2, w // scale + 2
    g = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / scale
    xs = np.arange(w, dtype=np.float32) / scale
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def stuff_texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """Texture [h, w, 3] float32 0..255 for the stuff category ``name``."""
    yy, xx = _grid(h, w)
    white = rng.normal(0, 1, (h, w)).astype(np.float32)
    if name == "grass":
        base = np.array([60, 150, 50]) + rng.normal(0, 15, 3)
        blades = np.sin(xx * rng.uniform(1.2, 2.0) + 3 * _noise(rng, h, w, 8)) * 0.5
        v = 1 + 0.25 * blades + 0.15 * _noise(rng, h, w, 6) + 0.06 * white
        img = base[None, None] * v[..., None]
    elif name == "water":
        base = np.array([40, 100, 190]) + rng.normal(0, 15, 3)
        waves = np.sin(yy * rng.uniform(0.5, 0.9) + 2.5 * _noise(rng, h, w, 16))
        v = 1 + 0.18 * waves + 0.04 * white
        img = base[None, None] * v[..., None] + (waves > 0.9)[..., None] * 50
    elif name == "sand":
        base = np.array([215, 190, 130]) + rng.normal(0, 12, 3)
        v = 1 + 0.08 * _noise(rng, h, w, 12) + 0.12 * white
        img = base[None, None] * v[..., None]
    elif name == "brick":
        base = np.array([170, 70, 50]) + rng.normal(0, 15, 3)
        bh = int(rng.integers(8, 12))
        bw = 2 * bh
        row = (yy // bh).astype(int)
        shift = (row % 2) * (bw // 2)
        mortar = (yy % bh < 2) | ((xx + shift) % bw < 2)
        v = 1 + 0.08 * _noise(rng, h, w, 4) + 0.05 * white
        img = base[None, None] * v[..., None]
        img[mortar] = np.array([200, 195, 185]) + rng.normal(0, 5, 3)
    elif name == "sky":
        top = np.array([90, 150, 230]) + rng.normal(0, 12, 3)
        bottom = np.array([180, 215, 245]) + rng.normal(0, 8, 3)
        t = (yy / max(h - 1, 1))[..., None]
        img = top * (1 - t) + bottom * t
        clouds = np.clip(_noise(rng, h, w, 24) * 2 - 0.6, 0, 1)[..., None]
        img = img * (1 - clouds) + 250 * clouds
    elif name == "snow":
        base = np.array([238, 242, 250]) + rng.normal(0, 5, 3)
        v = 1 - 0.07 * np.abs(_noise(rng, h, w, 10)) - 0.03 * np.abs(white)
        img = base[None, None] * v[..., None]
    else:
        raise KeyError(f"unknown stuff category {name!r}")
    return np.clip(img, 0, 255).astype(np.float32)
