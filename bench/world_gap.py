"""Where the world CLIP's masked-crop domain gap comes from: fill or scale?

    python -m bench.world_gap [--val 150] [--checkpoint assets/world_clip/world_clip.pt]

For every drawn object of the first ``--val`` held-out world images, 16-way object accuracy of the
world CLIP (object prompts, OVSeg's prompt ensemble) on four views of the same object:

* ``whole image``       the whole image (a hit when the top object is any object drawn in it);
* ``OVSeg crop``        tight box, outside pixels = CLIP mean colour, resized to the input (the recipe);
* ``fill, no crop``     outside pixels = mean colour, but the object stays at its place and scale;
* ``crop, no fill``     tight box resized to the input, background pixels kept.

Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from ovseg.clip import TextEmbeddingCache, encode_images, load_clip
from ovseg.crops import MEAN_FILL_255, masked_crops, normalize
from pipelines.world.categories import THINGS
from pipelines.world.generate import make_sample

VIEWS = ("whole image", "OVSeg crop", "fill, no crop", "crop, no fill")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[N,3,h,w]`` 0..255 → ``[N,3,size,size]`` (bicubic)."""
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "assets/world_clip/world_clip.pt")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load_clip("world-clip", checkpoint=str(args.checkpoint))
    text = TextEmbeddingCache(bundle).embed([c.name for c in THINGS])  # [16, D]
    size = bundle.image_size
    fill = torch.tensor(MEAN_FILL_255).view(3, 1, 1)
    hits = {v: [0, 0] for v in VIEWS}

    def top(x: torch.Tensor) -> torch.Tensor:
        return (encode_images(bundle, normalize(x, bundle.mean, bundle.std)) @ text.T).argmax(1)

    for i in range(args.val):
        scene, _ = make_sample(args.seed, "val", i)
        if not scene.things:
            continue
        img = torch.from_numpy(scene.image).permute(2, 0, 1).float()
        masks = torch.from_numpy(np.stack([t.mask for t in scene.things]))
        gt = torch.tensor([t.category.train_id for t in scene.things])
        hits["whole image"][0] += int(top(_resize(img[None], size))[0]) in set(gt.tolist())
        hits["whole image"][1] += 1
        crops = masked_crops(img, masks, size)
        kept = gt[crops.valid]
        boxes = crops.boxes.tolist()
        views = {
            "OVSeg crop": crops.crops,
            "fill, no crop": _resize(torch.stack([torch.where(m, img, fill) for m in masks[crops.valid]]), size),
            "crop, no fill": torch.cat([_resize(img[None, :, y0:y1, x0:x1], size) for x0, y0, x1, y1 in boxes]),
        }
        for name, x in views.items():
            hits[name][0] += int((top(x) == kept).sum())
            hits[name][1] += int(kept.numel())
    result = {name: {"acc": h / max(n, 1), "n": n} for name, (h, n) in hits.items()}
    print(f"{'view of a held-out object':<28}{'16-way acc':>11}{'n':>6}")
    for name, r in result.items():
        print(f"{name:<28}{r['acc']:>11.3f}{r['n']:>6}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
