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
from pipelines.pairs.quality import GroundTruth  # noqa: E402
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
    from bench.world import CHECKPOINT as CLIP_CHECKPOINT
    from bench.world import mine
    from bench.pair_tables import quality_with_chance

    out.mkdir(parents=True, exist_ok=True)
    gt = GroundTruth(world / "coco/annotations/instances_train.json", world / "coco/annotations/captions_train.json")
    ids = {image_id_of("train", i) for i in range(n_train)}
    return {b: quality_with_chance(mine(world, out, b, backend=b, units=units, checkpoint=CLIP_CHECKPOINT), gt,
                                   image_ids=ids)
            for b in backends}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "out/world/proposals_data")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="world MaskFormer weights")
    ap.add_argument("--seed", type=int, default=2, help="world seed of the held-out split")
    ap.add_argument("--val", type=int, default=200, help="held-out images")
    ap.add_argument("--mine", type=int, default=0, help="also mine this many images of bench/world.py's world "
                                                         "(seed 0) with gt, superpixel and maskformer")
    ap.add_argument("--json", type=Path, default=ROOT / "out/world/proposals_bench.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    ensure_split(args.world, args.seed, args.val)
    result = {"settings": {k: str(v) for k, v in vars(args).items()},
              "recall": run_recall(args.world, args.val, args.checkpoint)}
    print(recall_table(result["recall"]))
    if args.mine:
        from bench.world import ensure_world

        mined_world = ROOT / "out/world/data"
        ensure_world(mined_world, 0, args.mine, 0)
        result["mining"] = mine_precision(mined_world, args.json.parent / "proposals_mining", n_train=args.mine,
                                          units=max(1, args.mine // 2), backends=["gt", "superpixel", "maskformer"])
        print(precision_table(result["mining"], maskformer_seen_names(args.checkpoint)))
    result["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {args.json} in {result['seconds'] / 60:.1f} min")
    return result


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


if __name__ == "__main__":
    main()
