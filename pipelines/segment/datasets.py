"""Semantic-segmentation benchmarks in the prepared layouts of ov-seg's ``datasets/DATASETS.md``.

Each layout is an image folder and a label folder under a root (ov-seg's ``$DETECTRON2_DATASETS``);
a label file ``<stem>.png`` / ``<stem>.tif`` pairs with the image ``<stem>.jpg``; label values are
indices into the class list (shipped in ``pipelines/segment/classes/``), the ignore value is 255 for
8-bit and 65535 for 16-bit labels. The class lists come from ov-seg's dataset registrations
(ADE20K-847, Pascal Context 59/459, VOC-20) and detectron2's ``ADE20K_SEM_SEG_CATEGORIES``
(ADE20K-150, which ov-seg evaluates through detectron2's built-in registration), names stripped.

``world`` is this project's generated corpus (``python -m pipelines.world.generate``): its
``semseg/categories.json`` carries the class list and each class's kind (thing / stuff).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from PIL import Image

CLASS_DIR = Path(__file__).parent / "classes"
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset folder, file or label value is not what the layout promises (one line, names the file)."""


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where a benchmark's validation images and labels lie under its root."""

    images: str  # image folder, relative to the root
    labels: str  # label folder, relative to the root
    ignore: int  # ignore label value
    classes: str  # class list: a file name in CLASS_DIR, or "categories.json" next to the labels' parent
    image_suffix: str = ".jpg"


LAYOUTS: dict[str, Layout] = {
    "ade150": Layout(images="ADEChallengeData2016/images/validation",
                     labels="ADEChallengeData2016/annotations_detectron2/validation", ignore=255, classes="ade150.txt"),
    "ade847": Layout(images="ADE20K_2021_17_01/images_detectron2/validation",
                     labels="ADE20K_2021_17_01/annotations_detectron2/validation", ignore=65535, classes="ade847.txt"),
    "pc59": Layout(images="VOCdevkit/VOC2010/JPEGImages", labels="VOCdevkit/VOC2010/annotations_detectron2/pc59_val",
                   ignore=255, classes="pc59.txt"),
    "pc459": Layout(images="VOCdevkit/VOC2010/JPEGImages", labels="VOCdevkit/VOC2010/annotations_detectron2/pc459_val",
                    ignore=65535, classes="pc459.txt"),
    "voc20": Layout(images="VOCdevkit/VOC2012/JPEGImages", labels="VOCdevkit/VOC2012/annotations_detectron2/val",
                    ignore=255, classes="voc20.txt"),
    "world": Layout(images="semseg/images/val", labels="semseg/annotations/val", ignore=255,
                    classes="semseg/categories.json"),
}


@dataclass
class Dataset:
    """A benchmark's class list and its (image, label) file pairs."""

    name: str
    classes: list[str]
    ignore: int
    pairs: list[tuple[str, str]]  # (image URL, label URL), sorted by stem
    kinds: list[str] | None = None  # thing / stuff per class, where the dataset says


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def read_class_list(layout: Layout, root: str, storage_options: dict[str, Any] | None = None) -> tuple[list[str], list[str] | None]:
    """The class names (and kinds, for the world) of a layout."""
    if layout.classes.endswith(".json"):
        url = _join(root, layout.classes)
        try:
            with fsspec.open(url, "rt", **(storage_options or {})) as f:
                meta = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"class list not found: {url}") from None
        return list(meta["classes"]), meta.get("kinds")
    return (CLASS_DIR / layout.classes).read_text().splitlines(), None


def open_dataset(name: str, root: str, *, storage_options: dict[str, Any] | None = None,
                 max_images: int | None = None) -> Dataset:
    """The layout ``name`` under ``root``: class list and image/label pairs.

    Raises:
        DatasetError: unknown name, missing folder, a label without its image.
    """
    if name not in LAYOUTS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    fs, _ = fsspec.core.url_to_fs(root, **(storage_options or {}))
    images, labels = _join(root, layout.images), _join(root, layout.labels)
    for folder in (images, labels):
        if not fs.isdir(fsspec.core.url_to_fs(folder, **(storage_options or {}))[1]):
            raise DatasetError(f"{name}: folder not found: {folder}")
    classes, kinds = read_class_list(layout, root, storage_options)
    label_files = sorted(p for p in fs.ls(fsspec.core.url_to_fs(labels, **(storage_options or {}))[1], detail=False)
                         if p.lower().endswith(LABEL_SUFFIXES))
    if not label_files:
        raise DatasetError(f"{name}: no label files ({', '.join(LABEL_SUFFIXES)}) in {labels}")
    if max_images:
        label_files = label_files[:max_images]
    pairs = []
    for path in label_files:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        image = _join(images, stem + layout.image_suffix)
        pairs.append((image, _join(labels, path.rsplit("/", 1)[-1])))
    return Dataset(name, classes, layout.ignore, pairs, kinds)


def read_label(url: str, num_classes: int, *, ignore: int, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """``[H,W]`` int64 label map; every value in ``0..C-1`` or ``ignore``.

    Raises:
        DatasetError: unreadable file or a value outside the class list, naming the file.
    """
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            label = np.array(im).astype(np.int64)
    except Exception as err:  # noqa: BLE001 - any unreadable label is a one-line error naming it
        raise DatasetError(f"cannot read label {url}: {type(err).__name__}: {err}") from None
    if label.ndim != 2:
        raise DatasetError(f"label {url} has shape {label.shape}: expected one channel of class indices")
    bad = (label != ignore) & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise DatasetError(f"label {url}: value {int(label[bad][0])} is outside the {num_classes} classes "
                           f"(0..{num_classes - 1}, ignore {ignore})")
    return label
