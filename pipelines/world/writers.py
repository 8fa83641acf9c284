"""Writers for the world corpus: COCO captions + instances, img2dataset-style WebDataset, semseg.

Layout under ``out``::

    coco/{split}/{image_id:012d}.jpg
    coco/annotations/captions_{split}.json       # COCO captions
    coco/annotations/instances_{split}.json      # COCO instances, RLE masks, things and stuff
    wds/{split}/{shard:05d}.tar                  # {key}.jpg / .txt (one caption) / .json
    semseg/images/{split}/{key}.jpg              # ADE20K / Pascal layout
    semseg/annotations/{split}/{key}.png         # mode "L", train_id 0..C-1, 255 = ignore

Tar members carry fixed metadata (mtime 0, uid 0) so a rerun writes identical bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from pipelines.pairs.writer import encode_png

from .captions import Caption
from .categories import CATEGORIES
from .compose import Scene

__all__ = ["CocoWriter", "WdsWriter", "SemsegWriter", "categories_json"]

JPEG_QUALITY = 95  # world images are stored with pipelines.pairs.writer.encode_jpeg at this quality


def categories_json() -> list[dict]:
    """COCO ``categories`` list (things then stuff)."""
    return [{"id": c.id, "name": c.name, "supercategory": c.kind, "isthing": int(c.kind == "thing")}
            for c in CATEGORIES]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class CocoWriter:
    """Accumulates one split and writes ``captions_{split}.json`` / ``instances_{split}.json``."""

    def __init__(self, root: Path, split: str) -> None:
        self.root, self.split = root, split
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        self.images: list[dict] = []
        self.captions: list[dict] = []
        self.instances: list[dict] = []

    def add(self, image_id: int, jpeg: bytes, scene: Scene, captions: list[Caption]) -> None:
        h, w = scene.image.shape[:2]
        file_name = f"{image_id:012d}.jpg"
        (self.root / self.split / file_name).write_bytes(jpeg)
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for cap in captions:
            self.captions.append({"id": len(self.captions) + 1, "image_id": image_id, "caption": cap.text})
        for inst in scene.instances:
            rle = _rle(inst.mask)
            self.instances.append({
                "id": len(self.instances) + 1, "image_id": image_id,
                "category_id": inst.category.id, "segmentation": rle,
                "area": float(mask_utils.area(_bytes_rle(rle))),
                "bbox": [float(v) for v in mask_utils.toBbox(_bytes_rle(rle))], "iscrowd": 0,
            })

    def close(self) -> None:
        info = {"description": f"procedural world, split {self.split}", "version": "1"}
        base = {"info": info, "licenses": [], "images": self.images}
        _dump(self.root / "annotations" / f"captions_{self.split}.json", {**base, "annotations": self.captions})
        _dump(self.root / "annotations" / f"instances_{self.split}.json",
              {**base, "annotations": self.instances, "categories": categories_json()})


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


class WdsWriter:
    """img2dataset-style shards: key = 5-digit shard + 4-digit index; one caption per sample."""

    def __init__(self, root: Path, split: str, shard_size: int = 1000) -> None:
        self.dir = root / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.count = 0
        self._tar: tarfile.TarFile | None = None
        self.sizes: dict[str, int] = {}

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uname = info.gname = "world"
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, image_id: int, jpeg: bytes, scene: Scene, captions: list[Caption], rng: np.random.Generator) -> None:
        shard, idx = divmod(self.count, self.shard_size)
        if idx == 0:
            self.close()
            self._tar = tarfile.open(self.dir / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT)
            self._name = f"{shard:05d}.tar"
            self.sizes[self._name] = 0
        key = f"{shard:05d}{idx:04d}"
        text = captions[int(rng.integers(len(captions)))].text
        h, w = scene.image.shape[:2]
        meta = {"key": key, "url": f"world://{self.dir.name}/{image_id}", "caption": text,
                "captions": [c.text for c in captions], "image_id": image_id, "status": "success",
                "width": w, "height": h, "original_width": w, "original_height": h}
        self._member(f"{key}.jpg", jpeg)
        self._member(f"{key}.txt", text.encode("utf-8"))
        self._member(f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        self.sizes[self._name] += 1
        self.count += 1

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            _dump(self.dir / "sizes.json", self.sizes)


class SemsegWriter:
    """ADE20K/Pascal-style split: images/{split}/{key}.jpg + annotations/{split}/{key}.png."""

    def __init__(self, root: Path, split: str) -> None:
        self.img_dir = root / "images" / split
        self.ann_dir = root / "annotations" / split
        self.img_dir.mkdir(parents=True, exist_ok=True)
        self.ann_dir.mkdir(parents=True, exist_ok=True)
        _dump(root / "categories.json", {"classes": [c.name for c in CATEGORIES], "ignore_label": 255,
                                         "kinds": [c.kind for c in CATEGORIES]})

    def add(self, image_id: int, jpeg: bytes, scene: Scene) -> None:
        key = f"{image_id:012d}"
        (self.img_dir / f"{key}.jpg").write_bytes(jpeg)
        (self.ann_dir / f"{key}.png").write_bytes(encode_png(scene.semantic))

    def close(self) -> None:
        pass
