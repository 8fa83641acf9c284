"""Generate the procedural world corpus.

    python -m pipelines.world.generate --out data/world --seed 0 --train 2000 --val 500

Every sample is a pure function of (seed, split, index), so splits never overlap, any subset can
be regenerated in memory (``make_sample``), and reruns write identical files.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.pairs.writer import encode_jpeg

from .captions import Caption, write_captions
from .categories import CATEGORIES
from .compose import Scene, sample_scene
from .writers import JPEG_QUALITY, CocoWriter, SemsegWriter, WdsWriter

__all__ = ["SPLITS", "image_id_of", "make_sample", "generate_split", "main"]

log = logging.getLogger(__name__)

# split name -> code mixed into the seed; "clip" is the world CLIP's own pretraining split.
SPLITS = {"train": 1, "val": 2, "clip": 3}
_ID_BASE = {"train": 0, "val": 1_000_000, "clip": 2_000_000}


def image_id_of(split: str, index: int) -> int:
    """COCO image id of sample ``index`` of ``split`` (ids of different splits never collide)."""
    return _ID_BASE[split] + index + 1


def make_sample(seed: int, split: str, index: int, size: int = 128) -> tuple[Scene, list[Caption]]:
    """Scene and captions of sample ``index`` of ``split`` (deterministic)."""
    code = SPLITS[split]
    scene = sample_scene([seed, code, index, 0], size=size)
    captions = write_captions(np.random.default_rng([seed, code, index, 1]), scene)
    return scene, captions


def generate_split(out: Path, seed: int, split: str, n: int, size: int = 128,
                   shard_size: int = 1000, formats: tuple[str, ...] = ("coco", "wds", "semseg")) -> dict:
    """Write ``n`` samples of ``split`` under ``out`` in ``formats``; returns split statistics."""
    coco = CocoWriter(out / "coco", split) if "coco" in formats else None
    wds = WdsWriter(out / "wds", split, shard_size) if "wds" in formats else None
    sem = SemsegWriter(out / "semseg", split) if "semseg" in formats else None
    n_things = n_stuff = n_caps = n_absent = 0
    for i in tqdm(range(n), desc=f"world {split}", unit="img"):
        scene, captions = make_sample(seed, split, i, size)
        jpeg = encode_jpeg(scene.image, JPEG_QUALITY)
        image_id = image_id_of(split, i)
        if coco:
            coco.add(image_id, jpeg, scene, captions)
        if wds:
            wds.add(image_id, jpeg, scene, captions, np.random.default_rng([seed, SPLITS[split], i, 2]))
        if sem:
            sem.add(image_id, jpeg, scene)
        n_things += len(scene.things)
        n_stuff += len(scene.stuff)
        n_caps += len(captions)
        n_absent += sum(bool(c.absent) for c in captions)
    for w in (coco, wds, sem):
        if w:
            w.close()
    return {"images": n, "things": n_things, "stuff_regions": n_stuff, "captions": n_caps,
            "captions_with_absent_noun": n_absent}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data/world"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000, help="images in the train (mining) split")
    ap.add_argument("--val", type=int, default=500, help="images in the held-out val split")
    ap.add_argument("--size", type=int, default=128, help="image side in px")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--formats", default="coco,wds,semseg")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    stats = {}
    for split, n in (("train", args.train), ("val", args.val)):
        if n > 0:
            stats[split] = generate_split(args.out, args.seed, split, n, args.size, args.shard_size, formats)
    manifest = {"seed": args.seed, "size": args.size, "formats": list(formats), "splits": stats,
                "categories": [{"id": c.id, "name": c.name, "kind": c.kind} for c in CATEGORIES]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "world.json").write_text(json.dumps(manifest, indent=1))
    print(f"world written to {args.out} in {time.time() - t0:.1f}s: "
          + ", ".join(f"{s}={v['images']} images/{v['captions']} captions/{v['things']} objects"
                      for s, v in stats.items()))


if __name__ == "__main__":
    main()
