"""What the segment / evaluate jobs write: label PNGs, overlays with a legend, per-image JSON."""
from __future__ import annotations

import colorsys
import io
import json
from typing import Any, Sequence

import fsspec
import numpy as np
from PIL import Image, ImageDraw, ImageFont

UNLABELLED_8 = 255  # unlabelled pixel in an 8-bit label PNG (up to 255 classes)
UNLABELLED_16 = 65535  # unlabelled pixel in a 16-bit label PNG (more than 255 classes)


def unlabelled_value(num_classes: int) -> int:
    """255 for up to 255 classes, else 65535 (16-bit PNG)."""
    return UNLABELLED_8 if num_classes <= 255 else UNLABELLED_16


def label_image(label: np.ndarray, num_classes: int, *, no_label: int) -> Image.Image:
    """``[H,W]`` labels (``no_label`` = unlabelled) → 8-bit PNG image, or 16-bit past 255 classes."""
    value = unlabelled_value(num_classes)
    out = np.where(label == no_label, value, label)
    if num_classes <= 255:
        return Image.fromarray(out.astype(np.uint8), mode="L")
    return Image.fromarray(out.astype(np.uint16))  # PIL writes I;16 as a 16-bit grey PNG


def palette(num_classes: int) -> np.ndarray:
    """``[C,3]`` uint8 distinct colours (golden-ratio hues, two saturation/value levels)."""
    cols = []
    for i in range(num_classes):
        h = (i * 0.618033988749895) % 1.0
        s, v = (0.75, 0.95) if i % 2 == 0 else (0.55, 0.75)
        cols.append([round(255 * x) for x in colorsys.hsv_to_rgb(h, s, v)])
    return np.array(cols, dtype=np.uint8).reshape(-1, 3)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def overlay_image(image: np.ndarray, label: np.ndarray, classes: Sequence[str], *, no_label: int,
                  alpha: float = 0.55, min_side: int = 512, title: str | None = None) -> Image.Image:
    """The picture with translucent class colours, white outlines between regions and a legend.

    Args:
        image: ``[H,W,3]`` uint8. label: ``[H,W]`` ints (``no_label`` = unlabelled, left uncoloured).
        min_side: images whose short side is smaller are enlarged (nearest) to it first.
        title: optional line above the legend.

    Returns:
        RGB image: the overlay with a legend panel on its right (classes present, by pixel share).
    """
    h, w = label.shape
    scale = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    if scale > 1:
        image = image.repeat(scale, 0).repeat(scale, 1)
        label = label.repeat(scale, 0).repeat(scale, 1)
    pal = palette(len(classes))
    labelled = label != no_label
    colour = np.zeros_like(image)
    colour[labelled] = pal[label[labelled]]
    out = image.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * colour[labelled].astype(np.float32)
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, :-1] |= edge[:, 1:].copy()  # 2 px wide
    out[edge] = 255.0
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    counts = np.bincount(label[labelled].ravel(), minlength=len(classes)) if labelled.any() else np.zeros(len(classes))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    size = max(14, min(22, picture.height // 28))
    font, row = _font(size), size + 10
    lines = [(i, f"{classes[i]}  {100.0 * counts[i] / label.size:.1f}%") for i in present]
    if (~labelled).any():
        lines.append((-1, f"unlabelled  {100.0 * (~labelled).sum() / label.size:.1f}%"))
    max_rows = max(1, (picture.height - 2 * row) // row)
    if len(lines) > max_rows:
        rest = len(lines) - max_rows + 1
        lines = lines[: max_rows - 1] + [(-2, f"... {rest} more")]
    probe = ImageDraw.Draw(picture)
    text_w = max([probe.textlength(t, font=font) for _, t in lines] + [probe.textlength(title or "", font=font), 80])
    panel_w = int(text_w) + size + 36
    canvas = Image.new("RGB", (picture.width + panel_w, picture.height), (250, 250, 250))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = picture.width + 12, 10
    if title:
        draw.text((x0, y), title, fill=(20, 20, 20), font=font)
        y += row
    for index, text in lines:
        if index >= 0:
            draw.rectangle([x0, y + 2, x0 + size, y + 2 + size], fill=tuple(int(c) for c in pal[index]),
                           outline=(40, 40, 40))
        elif index == -1:
            draw.rectangle([x0, y + 2, x0 + size, y + 2 + size], fill=(255, 255, 255), outline=(40, 40, 40))
        draw.text((x0 + size + 8, y), text, fill=(20, 20, 20), font=font)
        y += row
    return canvas


def class_summary(label: np.ndarray, score: np.ndarray, classes: Sequence[str], *, no_label: int) -> list[dict]:
    """Per class present: pixel share and the mean per-pixel score, largest first."""
    total = label.size
    out = []
    for i, name in enumerate(classes):
        sel = label == i
        n = int(sel.sum())
        if n:
            out.append({"index": i, "name": name, "pixel_share": n / total, "mean_score": float(score[sel].mean())})
    out.sort(key=lambda d: -d["pixel_share"])
    return out


def write_png(url: str, picture: Image.Image, storage_options: dict[str, Any] | None = None) -> None:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buf.getvalue())


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    with fsspec.open(url, "wt", **(storage_options or {})) as f:
        json.dump(obj, f, indent=1)


def join(base: str, name: str) -> str:
    """``base/name`` for paths and URLs."""
    return base.rstrip("/") + "/" + name
