"""COCO Captions reader: ``captions_*.json`` + an image folder.

Images are sorted by id and cut into units of ``images_per_unit`` images
(``WorkUnit(source=json_url, start, stop)`` index into that order). All captions of an image are
grouped into one record; the image itself is read lazily from ``images_url/file_name``.

Skip reasons: ``bad_annotation`` (an image entry without ``id``/``file_name``), ``unsafe_path``
(a ``file_name`` that is absolute, a URL, or climbs out of the image folder with ``..``) and the caption
reasons of :func:`pipelines.records.clean_caption`. Images with no caption are kept (empty
``captions``), as the record contract allows.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import fsspec

from pipelines.corpus.base import CorpusConfig, register_reader
from pipelines.storage.urls import join_url, parent_url
from pipelines.records import ImageRecord, WorkUnit, clean_captions, sanitize_key

logger = logging.getLogger(__name__)

__all__ = ["CocoReader", "CocoIndex", "load_coco_index", "coco_key"]


@dataclass
class CocoIndex:
    """The parsed captions file: images sorted by id, raw captions grouped per image id."""

    images: list[dict[str, Any]]  # COCO "images" entries, sorted by id
    captions: dict[Any, list[Any]]  # image id -> raw captions in annotation order


def _sort_id(image_id: Any) -> tuple[int, Any]:
    """Order ints numerically, then anything else as strings (ids of one file are one type)."""
    return (0, image_id) if isinstance(image_id, int) else (1, str(image_id))


def load_coco_index(url: str, storage_options: Optional[dict] = None) -> CocoIndex:
    """Read and index a COCO Captions json (``images`` + ``annotations`` with ``caption``)."""
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        data = json.load(f)
    images = [im for im in data.get("images", []) if isinstance(im, dict)]
    captions: dict[Any, list[Any]] = defaultdict(list)
    known = {im.get("id") for im in images}
    orphans = 0
    for ann in data.get("annotations", []):
        image_id = ann.get("image_id")
        if image_id not in known:
            orphans += 1
            continue
        captions[image_id].append(ann.get("caption"))
    if orphans:
        logger.warning("%s: %d captions name an image id that is not listed", url, orphans)
    images.sort(key=lambda im: _sort_id(im.get("id")))
    logger.info("%s: %d images, %d captions", url, len(images), sum(map(len, captions.values())))
    return CocoIndex(images=images, captions=dict(captions))


def coco_key(image_id: Any) -> str:
    """Record key of a COCO image: the id zero-padded to 12 digits like COCO file names."""
    if isinstance(image_id, int) and image_id >= 0:
        return f"{image_id:012d}"
    return sanitize_key(str(image_id))


@register_reader("coco")
class CocoReader:
    """Reads COCO Captions; the json is parsed once per reader and cached."""

    def __init__(self, cfg: CorpusConfig) -> None:
        if cfg.images_per_unit < 1:
            raise ValueError(f"images_per_unit must be >= 1, got {cfg.images_per_unit}")
        self.cfg = cfg
        self.images_url = cfg.images_url or parent_url(cfg.url)
        self._index: Optional[CocoIndex] = None

    @property
    def index(self) -> CocoIndex:
        """The parsed captions file (loaded on first use)."""
        if self._index is None:
            self._index = load_coco_index(self.cfg.url, self.cfg.storage_options)
        return self._index

    def plan_units(self) -> list[WorkUnit]:
        """Consecutive slices of ``images_per_unit`` images in id order."""
        n, step = len(self.index.images), self.cfg.images_per_unit
        return [
            WorkUnit(index=i, source=self.cfg.url, start=start, stop=min(start + step, n))
            for i, start in enumerate(range(0, n, step))
        ]

    def read_unit(self, unit: WorkUnit, skips: Counter) -> Iterator[ImageRecord]:
        """Records of images ``start:stop`` (in id order) with their grouped captions."""
        index = self.index
        for image in index.images[unit.start : unit.stop]:
            image_id, file_name = image.get("id"), image.get("file_name")
            if image_id is None or not file_name or not isinstance(file_name, str):
                skips["bad_annotation"] += 1
                continue
            if _unsafe_file_name(file_name):
                logger.warning("%s: refused file_name %r of image %r", self.cfg.url, file_name, image_id)
                skips["unsafe_path"] += 1
                continue
            captions = clean_captions(
                index.captions.get(image_id, []), self.cfg.max_caption_chars, skips
            )
            meta = {"file_name": file_name}
            meta.update({k: image[k] for k in ("width", "height") if k in image})
            yield ImageRecord(
                key=coco_key(image_id),
                captions=captions,
                image_bytes=None,
                image_url=join_url(self.images_url, file_name),
                image_id=image_id,
                source_url=image.get("coco_url") or image.get("flickr_url"),
                meta=meta,
            )


def _unsafe_file_name(name: str) -> bool:
    """Whether a ``file_name`` would leave the image folder: absolute, a URL, or with ``..``."""
    return ("://" in name or name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":")
            or ".." in name.split("/"))
