"""Segmentation training data from a COCO instances file: images with the masks of a vocabulary.

Every annotation (thing instance or stuff segment) of a category outside ``unseen`` becomes one
target ``(label, mask)``; annotations of the ``unseen`` categories are dropped (and counted), so
the model never sees them as targets: their pixels are background to every query, which is how
open-vocabulary segmentation holds classes out. Labels index :attr:`SegmentDataset.names` (the
training vocabulary, in the file's category order).
"""
from __future__ import annotations

import io
import itertools
import json
import logging
from collections import Counter, defaultdict
from typing import Any, Iterator, Sequence

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ovseg.masks import decode_segmentation

log = logging.getLogger(__name__)


class SegmentDataset(Dataset):
    """COCO instances → ``{"image": uint8 [3,H,W], "labels": long [N], "masks": bool [N,H,W], "image_id"}``.

    Args:
        instances_url: COCO instances json (fsspec URL) with ``segmentation`` on every annotation.
        images_url: folder holding the images (``file_name`` is relative to it).
        unseen: category names held out; a name the file does not have is an error (a typo would
            silently hold out nothing).
        image_size: resize to this square side (bilinear images, nearest masks); None = as stored.
        hflip: flip image and masks left-right with probability 0.5.
    """

    def __init__(self, instances_url: str, images_url: str, *, unseen: Sequence[str] = (),
                 image_size: int | None = None, hflip: bool = False,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.images_url = images_url.rstrip("/")
        self.image_size, self.hflip = image_size, hflip
        self.storage_options = dict(storage_options or {})
        with fsspec.open(instances_url, "rb", **self.storage_options) as f:
            coco = json.loads(f.read())
        categories = coco.get("categories") or []
        known = {c["name"] for c in categories}
        strangers = sorted(set(unseen) - known)
        if strangers:
            raise ValueError(f"unseen categories {strangers} are not categories of {instances_url}")
        self.unseen = [c["name"] for c in categories if c["name"] in set(unseen)]
        self.names = [c["name"] for c in categories if c["name"] not in set(unseen)]
        label_of = {c["id"]: self.names.index(c["name"]) for c in categories if c["name"] in self.names}
        held_out = {c["id"] for c in categories if c["name"] in set(unseen)}
        self.dropped: Counter = Counter()
        self.targets: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for a in coco.get("annotations", []):
            if a["category_id"] in held_out:
                self.dropped["unseen_category"] += 1
            elif a["category_id"] not in label_of:
                raise ValueError(f"annotation {a.get('id')} has category_id {a['category_id']}, not in categories")
            elif a.get("iscrowd", 0):
                self.dropped["crowd"] += 1
            else:
                self.targets[a["image_id"]].append((label_of[a["category_id"]], a["segmentation"]))
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        if not self.images:
            raise ValueError(f"{instances_url} lists no images")
        log.info("%d images, vocabulary of %d (%d held out), dropped annotations: %s",
                 len(self.images), len(self.names), len(self.unseen), dict(self.dropped))

    def __len__(self) -> int:
        return len(self.images)

    def _read_image(self, file_name: str) -> np.ndarray:
        url = f"{self.images_url}/{file_name}"
        try:
            with fsspec.open(url, "rb", **self.storage_options) as f:
                return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot read training image {url}: {err}") from err

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.images[index]
        image = torch.from_numpy(self._read_image(info["file_name"]).copy()).permute(2, 0, 1)
        h, w = image.shape[1:]
        targets = self.targets.get(info["id"], [])
        labels = torch.tensor([label for label, _ in targets], dtype=torch.long)
        masks = torch.from_numpy(np.stack([decode_segmentation(seg, h, w) for _, seg in targets])
                                 if targets else np.zeros((0, h, w), dtype=bool))
        if self.image_size and (h, w) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            image = image.round().clamp(0, 255).to(torch.uint8)
            masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5 if len(masks) else \
                torch.zeros(0, *size, dtype=torch.bool)
            keep = masks.flatten(1).any(1)
            labels, masks = labels[keep], masks[keep]
        if self.hflip and bool(torch.rand(()) < 0.5):
            image, masks = image.flip(-1), masks.flip(-1)
        return {"image": image, "labels": labels, "masks": masks, "image_id": int(info["id"])}


def collate_segments(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the images ``[B,3,H,W]`` (equal sizes required) and keep per-image targets in a list."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"images of one batch differ in size {sorted(sizes)}: set data.image_size")
    return {"images": torch.stack([s["image"] for s in samples]),
            "targets": [{"labels": s["labels"], "masks": s["masks"]} for s in samples],
            "image_ids": [s["image_id"] for s in samples]}


def endless_batches(dataset: SegmentDataset, *, batch_size: int, workers: int, rank: int, world_size: int,
                    seed: int) -> Iterator[dict[str, Any]]:
    """Batches of this process's share of ``dataset``, reshuffled every epoch, forever.

    Each process gets ``batch_size`` images per step (``DistributedSampler``, incomplete last batch
    dropped); the shuffle depends on ``seed`` and the epoch only, so all processes agree.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    generator = torch.Generator().manual_seed(seed + rank)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_segments, drop_last=True, persistent_workers=workers > 0,
                        generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} images cannot fill one batch of {batch_size} on {world_size} processes")
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader
