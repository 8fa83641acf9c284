"""Class-agnostic proposal recall in the world and the pair-precision table split by seen / unseen
objects: the library ``bench/world_proposals.py`` and ``bench/world.py`` both print from.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bench.world_mining import CHECKPOINT as CLIP_CHECKPOINT
from bench.world_mining import mine, world_ground_truth
from ovseg.masks import mask_iou
from ovseg.proposals import ProposalGenerator, build_proposals
from bench.pair_tables import quality_with_chance
from pipelines.world.categories import CATEGORIES
from pipelines.world.generate import generate_split, image_id_of

ROOT = Path(__file__).resolve().parents[1]
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
    gt = world_ground_truth(world, "val", captions=False)
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
            iou = mask_iou(gt_masks.flatten(1), masks.flatten(1)) if len(masks) else torch.zeros(len(insts), 0)
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


def maskformer_seen_names(checkpoint: Path) -> set[str]:
    """The training vocabulary stored in a world MaskFormer file (``meta["vocabulary"]``)."""
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True).get("meta", {})
    if "vocabulary" not in meta:
        raise SystemExit(f"{checkpoint} records no training vocabulary: cannot tell seen from unseen")
    return set(meta["vocabulary"])


def world_proposers(checkpoint: Path) -> dict[str, ProposalGenerator]:
    """``maskformer`` (the committed world model, options as conf/world/mine.yaml) and ``superpixel``."""
    from pipelines.config.load import load_config
    from pipelines.mine.config import MineConfig

    mine = load_config(MineConfig, ROOT / "conf/world/mine.yaml", ["proposals.backend=maskformer",
                                                                   f"proposals.checkpoint={checkpoint}"])
    options = {**mine.proposals.options, "checkpoint": str(checkpoint), "max_proposals": max(KS)}
    return {"maskformer": build_proposals("maskformer", **options), "superpixel": build_proposals("superpixel", **SUPERPIXEL)}


def run_recall(world: Path, n_val: int, checkpoint: Path = CHECKPOINT) -> dict:
    """The recall table's numbers for the val split of ``world`` (which must exist)."""
    return proposal_recall(world, n_val, world_proposers(checkpoint), seen=maskformer_seen_names(checkpoint))


def mine_precision(world: Path, out: Path, *, n_train: int, units: int, backends: list[str]) -> dict:
    """Pair precision of mining the train split of ``world`` (bench/world.py's world) with each backend."""
    out.mkdir(parents=True, exist_ok=True)
    gt = world_ground_truth(world, "train")
    ids = {image_id_of("train", i) for i in range(n_train)}
    return {b: quality_with_chance(mine(world, out, b, backend=b, units=units, checkpoint=CLIP_CHECKPOINT), gt,
                                   image_ids=ids)
            for b in backends}


def object_precision(q: dict, names: set[str]) -> float:
    """Precision of the pairs whose noun is one of ``names`` (from ``mining_quality``'s per-noun counts)."""
    pairs = sum(n for noun, n in q["pairs_per_noun"].items() if noun in names)
    return sum(q["correct_per_noun"].get(noun, 0) for noun in names) / pairs if pairs else float("nan")


def precision_table(mining: dict, seen: set[str]) -> str:
    """Pair precision rows (thresholds off), objects split by the MaskFormer's seen / unseen classes."""
    things = {c.name for c in CATEGORIES if c.kind == "thing"}
    lines = [f"{'pairs mined by':<20}{'pairs':>7}{'precision':>11}{'chance':>8}{'recall':>8}{'objects':>9}{'chance':>8}"
             f"{'seen obj.':>11}{'unseen obj.':>13}{'backgr.':>9}{'chance':>8}"]
    nan = {"precision": float("nan"), "precision_by_kind": {"thing": {"precision": float("nan")},
                                                           "stuff": {"precision": float("nan")}}}
    for name, q in mining.items():
        k, c = q["precision_by_kind"], q.get("chance", nan)
        ck = c["precision_by_kind"]
        lines.append(f"{name:<20}{q['pairs']:>7}{q['precision']:>11.3f}{c['precision']:>8.3f}{q['recall']:>8.3f}"
                     f"{k['thing']['precision']:>9.3f}{ck['thing']['precision']:>8.3f}"
                     f"{object_precision(q, things & seen):>11.3f}"
                     f"{object_precision(q, things - seen):>13.3f}{k['stuff']['precision']:>9.3f}"
                     f"{ck['stuff']['precision']:>8.3f}")
    return "\n".join(lines)
