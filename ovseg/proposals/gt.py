"""Ground-truth masks as proposals, from COCO instance or panoptic annotations.

Useful to measure everything downstream of proposals (crops, CLIP scoring, matching) with perfect
masks, and to mine pairs from corpora that come with segmentations. Instance annotations are
decoded with pycocotools (polygons and RLE alike); panoptic annotations are read from their PNGs
(segment id = R + 256·G + 256²·B).
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovseg.masks import decode_segmentation
from ovseg.proposals.base import ImageContext, Proposals

log = logging.getLogger(__name__)


def _index_images(dataset: dict[str, Any]) -> tuple[dict[Any, dict], dict[str, Any]]:
    """``(id → image entry, file_name → id)`` for a COCO-style json dict."""
    by_id = {img["id"]: img for img in dataset.get("images", [])}
    by_name = {img.get("file_name"): img["id"] for img in dataset.get("images", [])}
    return by_id, by_name


@dataclass
class GroundTruthProposals:
    """Proposals read from annotations.

    Args:
        instances: a loaded COCO instances json (``images``, ``annotations``), or ``None``.
        panoptic: a loaded COCO panoptic json, or ``None``.
        panoptic_root: folder with the panoptic PNGs (local path), needed with ``panoptic``.
        read_file: ``name -> bytes`` of a panoptic PNG (relative to the PNG folder); the caller's
            storage (fsspec URL, options). ``None`` = open ``panoptic_root/name`` locally.
        include_crowd: also propose ``iscrowd`` regions.
    """

    instances: dict[str, Any] | None = None
    panoptic: dict[str, Any] | None = None
    panoptic_root: str | None = None
    include_crowd: bool = False
    read_file: Callable[[str], bytes] | None = None
    name: str = "gt"
    _anns: dict[Any, list[dict]] = field(default_factory=dict, init=False, repr=False)
    _images: dict[Any, dict] = field(default_factory=dict, init=False, repr=False)
    _by_name: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _panoptic: dict[Any, dict] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.instances is None and self.panoptic is None:
            raise ValueError("gt proposals need instance and/or panoptic annotations")
        for dataset in (self.instances, self.panoptic):
            if dataset is not None:
                by_id, by_name = _index_images(dataset)
                self._images.update(by_id)
                self._by_name.update(by_name)
        if self.instances is not None:
            for ann in self.instances.get("annotations", []):
                self._anns.setdefault(ann["image_id"], []).append(ann)
        if self.panoptic is not None:
            if self.panoptic_root is None:
                raise ValueError("panoptic annotations need panoptic_root (the PNG folder)")
            self._panoptic = {a["image_id"]: a for a in self.panoptic.get("annotations", [])}

    def _resolve_id(self, context: ImageContext) -> Any:
        if context.image_id in self._images:
            return context.image_id
        if context.file_name is not None:
            return self._by_name.get(context.file_name, self._by_name.get(Path(context.file_name).name))
        return None

    def _instance_masks(self, image_id: Any, h: int, w: int) -> list[np.ndarray]:
        masks = []
        for ann in self._anns.get(image_id, []):
            if ann.get("iscrowd", 0) and not self.include_crowd:
                continue
            seg = ann.get("segmentation")
            if not seg:
                continue
            masks.append(decode_segmentation(seg, h, w))
        return masks

    def _panoptic_masks(self, image_id: Any) -> list[np.ndarray]:
        entry = self._panoptic.get(image_id)
        if entry is None:
            return []
        source = (io.BytesIO(self.read_file(entry["file_name"])) if self.read_file is not None
                  else Path(self.panoptic_root) / entry["file_name"])
        png = np.asarray(Image.open(source).convert("RGB"), dtype=np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 256 * 256 * png[..., 2]
        return [ids == seg["id"] for seg in entry.get("segments_info", [])
                if self.include_crowd or not seg.get("iscrowd", 0)]

    def __call__(self, image: np.ndarray, context: ImageContext) -> Proposals:
        """``[H,W,3]`` image + its context → ground-truth masks ``[N,H,W]`` (resized if needed)."""
        h, w = image.shape[:2]
        image_id = self._resolve_id(context)
        if image_id is None:
            log.debug("no annotations for image %s", context.key)
            return Proposals.empty(h, w)
        entry = self._images[image_id]
        ah, aw = int(entry.get("height", h)), int(entry.get("width", w))
        masks = self._instance_masks(image_id, ah, aw) + self._panoptic_masks(image_id)
        masks = [m for m in masks if m.any()]
        if not masks:
            return Proposals.empty(h, w)
        stacked = torch.from_numpy(np.stack(masks))
        if stacked.shape[1:] != (h, w):
            stacked = F.interpolate(stacked[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5
        return Proposals(stacked, torch.ones(len(masks)))
