"""Does the world MaskFormer's class head name the objects its masks find? On its own training world
and on a held-out one, side by side, beside chance.

    python -m bench.world_class_head                  # ~1 min: 150 images of each world
    python -m bench.world_class_head --images 60

For every seen object instance (a thing category in the checkpoint's training vocabulary), the query
whose hard mask (sigmoid > 0.5) best covers it is the instance's query; the instance is *named* when
that query's arg-max class (over the training vocabulary's stored text embeddings, no-object
dropped) is its category. Chance is one over the seen thing names. The **training** world is the
one the committed checkpoint trained on (seed 1, conf/world/train_maskformer.yaml: its first images);
the held-out one is seed 2 (bench/world_proposals.py's). If the head names things at chance on
images it was trained on, the fault is the training (what the decoder sees, the loss), not
generalisation. The confusion matrix (rows truth, columns prediction, last column "a background
class") shows whether the names are permuted (a label-mapping bug) or guessed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.world_recall import CHECKPOINT
from pipelines.world.categories import CATEGORIES
from pipelines.world.generate import generate_split

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"training world (seed 1)": (1, "train"), "held-out world (seed 2)": (2, "val")}


def ensure_world(folder: Path, seed: int, split: str, n: int) -> Path:
    """``folder`` holds the first ``n`` images of ``split`` of the world of ``seed`` (COCO layout)."""
    stamp = folder / "class_head_world.json"
    want = {"seed": seed, "split": split, "n": n}
    if not (stamp.exists() and json.loads(stamp.read_text()) == want):
        generate_split(folder, seed, split, n, formats=("coco",))
        stamp.write_text(json.dumps(want))
    return folder / "coco"


@torch.no_grad()
def naming(coco_root: Path, split: str, proposer, text: torch.Tensor, vocabulary: list[str]) -> dict:
    """Naming accuracy and confusion of the seen things of one COCO-layout split."""
    from pycocotools.coco import COCO

    things = [c.name for c in CATEGORIES if c.kind == "thing" and c.name in vocabulary]
    coco = COCO(str(coco_root / f"annotations/instances_{split}.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    confusion = np.zeros((len(things), len(things) + 1), dtype=int)
    ious = []
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        image = np.asarray(Image.open(coco_root / split / info["file_name"]).convert("RGB"))
        masks, probs = proposer.semantic_outputs(image, text)
        hard = masks > 0.5
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            name = names[ann["category_id"]]
            if name not in things:
                continue
            gt = torch.from_numpy(coco.annToMask(ann)).bool()
            iou = (hard & gt).flatten(1).sum(1).float() / (hard | gt).flatten(1).sum(1).float().clamp(min=1)
            query = int(iou.argmax())
            said = vocabulary[int(probs[query].argmax())]
            confusion[things.index(name), things.index(said) if said in things else len(things)] += 1
            ious.append(float(iou[query]))
    n = int(confusion.sum())
    return {"instances": n, "named": float(np.trace(confusion[:, : len(things)]) / max(n, 1)),
            "chance": 1.0 / len(things), "called_background": float(confusion[:, -1].sum() / max(n, 1)),
            "best_cover_iou": float(np.mean(ious)) if ious else float("nan"),
            "things": things, "confusion": confusion.tolist()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="world MaskFormer weights")
    ap.add_argument("--images", type=int, default=150, help="images of each world")
    ap.add_argument("--work", type=Path, default=ROOT / "out/world/class_head_data")
    ap.add_argument("--json", type=Path, default=ROOT / "out/world/class_head_bench.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ovseg.proposals import build_proposals

    t0 = time.time()
    proposer = build_proposals("maskformer", checkpoint=str(args.checkpoint))
    meta = torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("meta", {})
    if "vocabulary" not in meta:
        raise SystemExit(f"{args.checkpoint} records no training vocabulary")
    vocabulary = list(meta["vocabulary"])
    text = proposer.model.train_text_embeddings
    result = {"checkpoint": str(args.checkpoint), "images": args.images, "worlds": {}}
    print("| world | seen object instances | named right | chance | called a background | best-cover mask IoU |")
    print("|---|---|---|---|---|---|")
    for label, (seed, split) in WORLDS.items():
        root = ensure_world(args.work / f"seed{seed}", seed, split, args.images)
        r = naming(root, split, proposer, text, vocabulary)
        result["worlds"][label] = r
        print(f"| {label} | {r['instances']} | {r['named']:.3f} | {r['chance']:.3f} | {r['called_background']:.3f} "
              f"| {r['best_cover_iou']:.2f} |")
    train = result["worlds"]["training world (seed 1)"]
    print("\nconfusion on the training world (rows truth, columns prediction, last: a background class):")
    print("  " + " ".join(f"{t[:5]:>5}" for t in train["things"]) + "   bg")
    for name, row in zip(train["things"], train["confusion"]):
        print(f"{name[:7]:>7} " + " ".join(f"{v:5d}" for v in row))
    result["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwritten {args.json} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
