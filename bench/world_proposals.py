"""Class-agnostic proposal quality in the world: mask recall of seen objects, unseen objects and
backgrounds at 16 / 32 / 100 proposals, for every proposal backend, on a freshly generated split.

    python bench/world_proposals.py                    # ~2 min: 200 held-out images, maskformer vs superpixel
    python bench/world_proposals.py --val 60 --seed 5  # smaller

A ground-truth region is *covered* at k proposals when one of the backend's k best proposals
(ranked by the backend's own score, ties in the backend's order) has mask IoU ≥ 0.5 with it.
"Seen" / "unseen" objects follow the MaskFormer checkpoint's training vocabulary (the world things
it was not trained on are unseen); backgrounds (stuff regions) are seen classes. The split is the
``val`` split of a world generated with ``--seed`` (default 2: neither the MaskFormer's training
world, seed 1, nor the world bench/world.py mines, seed 0).

bench/world.py prints the same table when it mines with ``maskformer`` (and adds the pair precision
of maskformer proposals beside gt and superpixel).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovseg.proposals import ProposalGenerator, build_proposals  # noqa: E402
from pipelines.world.categories import CATEGORIES  # noqa: E402
from pipelines.world.evaluate import GroundTruth  # noqa: E402
from pipelines.world.generate import generate_split, image_id_of  # noqa: E402

CHECKPOINT = ROOT / "assets/world_maskformer/world_maskformer.pt"
KS = (16, 32, 100)
GROUPS = ("seen objects", "unseen objects", "backgrounds")
SUPERPIXEL = {"max_proposals": 100}  # conf/world/mine.yaml keeps 48; here enough for k = 100


def region_group(name: str, seen: set[str]) -> str:
    """The recall group of a ground-truth region of category ``name``."""
    kind = next(c.kind for c in CATEGORIES if c.name == name)
    if kind == "stuff":
        return "backgrounds"
    return "seen objects" if name in seen else "unseen objects"


def mask_iou(gt: torch.Tensor, props: torch.Tensor) -> torch.Tensor:
    """IoU of ``[G,H,W]`` and ``[N,H,W]`` bool masks → ``[G,N]``."""
    a, b = gt.flatten(1).float(), props.flatten(1).float()
    inter = a @ b.T
    return inter / (a.sum(1, keepdim=True) + b.sum(1)[None] - inter).clamp(min=1)


def ensure_split(world: Path, seed: int, n_val: int) -> None:
    """A world of ``n_val`` val images generated with ``seed`` (kept when it already matches)."""
    stamp = world / "world_proposals.json"
    want = {"seed": seed, "val": n_val}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    generate_split(world, seed, "val", n_val, formats=("coco",))
    stamp.write_text(json.dumps(want))


@torch.no_grad()
def proposal_recall(world: Path, n_val: int, proposers: dict[str, ProposalGenerator], *, seen: set[str],
                    ks: tuple[int, ...] = KS, iou_threshold: float = 0.5) -> dict:
    """Recall per backend, group and k on the val split of ``world``.

    Returns:
        ``{"images", "regions": {group: count}, "backends": {name: {"recall": {group: {k: r}},
        "proposals_per_image": float, "seconds_per_image": float}}}``.
    """
    gt = GroundTruth(world / "coco/annotations/instances_val.json")
    counts = {g: 0 for g in GROUPS}
    hits = {name: {g: {k: 0 for k in ks} for g in GROUPS} for name in proposers}
    n_props = {name: 0 for name in proposers}
    seconds = {name: 0.0 for name in proposers}
    for i in tqdm(range(n_val), desc="proposal recall", mininterval=5):
        iid = image_id_of("val", i)
        image = np.asarray(Image.open(world / f"coco/val/{iid:012d}.jpg").convert("RGB"))
        insts = gt.instances(iid)
        groups = [region_group(name, seen) for name, _ in insts]
        for g in groups:
            counts[g] += 1
        gt_masks = torch.from_numpy(np.stack([m for _, m in insts]))
        for name, proposer in proposers.items():
            t0 = time.perf_counter()
            props = proposer(image, None)
            seconds[name] += time.perf_counter() - t0
            order = torch.argsort(props.scores, descending=True, stable=True)
            masks = props.masks[order]
            n_props[name] += len(masks)
            iou = mask_iou(gt_masks, masks) if len(masks) else torch.zeros(len(insts), 0)
            for k in ks:
                best = iou[:, :k].max(1).values if iou.shape[1] else torch.zeros(len(insts))
                for g, covered in zip(groups, (best >= iou_threshold).tolist()):
                    hits[name][g][k] += int(covered)
    backends = {name: {"recall": {g: {k: hits[name][g][k] / counts[g] if counts[g] else float("nan") for k in ks}
                                  for g in GROUPS},
                       "proposals_per_image": n_props[name] / max(n_val, 1),
                       "seconds_per_image": seconds[name] / max(n_val, 1)}
                for name in proposers}
    return {"images": n_val, "regions": counts, "ks": list(ks), "backends": backends}


def recall_table(result: dict) -> str:
    """The recall result as a plain-text table (one row per backend and k)."""
    lines = [f"== class-agnostic mask recall at IoU >= 0.5 ({result['images']} held-out images: "
             + ", ".join(f"{n} {g}" for g, n in result["regions"].items()) + ") =="]
    lines.append(f"{'backend':<14}{'proposals':>10}" + "".join(f"{g:>16}" for g in GROUPS) + f"{'props/img':>11}")
    for name, b in result["backends"].items():
        for k in result["ks"]:
            lines.append(f"{name:<14}{k:>10}" + "".join(f"{b['recall'][g][k]:>16.3f}" for g in GROUPS)
                         + f"{b['proposals_per_image']:>11.1f}")
    return "\n".join(lines)
