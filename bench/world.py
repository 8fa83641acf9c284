"""The paper's story, measured in the procedural world — one command, one table, one JSON.

    python -m bench.world                      # ~15-25 min on 2 CPU cores (see README)
    python -m bench.world --train 150 --val 40 --units 75 --tune-steps 60 --no-finetune --no-round2   # reduced (tests)

1. World corpus (seed, sizes fixed up front) under --world: COCO captions+instances, semseg val.
2. Round 1: mining with the committed world CLIP (jobs/mine.py, conf/world/mine.yaml), proposals
   ``gt`` and ``superpixel``: pair precision (mask IoU ≥ 0.5 with an instance of the noun's
   category), by kind (objects, backgrounds), and recall, each precision beside the chance of a
   random candidate mask for the same pairs; every matching strategy replayed on the same
   similarities (bench/pair_tables.py). Thresholds are off; ``--mine-only`` stops here.
3. Tuning (jobs/tune_mpt.py, conf/world/tune_mpt.yaml) on the pairs mined from ``--tune-on``
   proposals (default ``gt``: the stand-in for a good class-agnostic proposal model): MPT with the
   CLIP frozen; full fine-tuning of the image tower; MPT on the fine-tuned tower (OVSeg's FT -> MPT,
   the paper's ablation); and MPT on the superpixel pairs.
4. Round 2 (re-mining, which OVSeg never tried): mine again with the MPT-tuned CLIP
   (``clip.prompt=``), tune a fresh prompt on the re-mined pairs.
5. Held-out val split (bench/world_eval.py): whole-image object hit@1 next to masked-crop accuracy
   on ground-truth masks (the domain gap), two-stage mIoU, and the two oracles.
6. With ``--backends gt,superpixel,maskformer`` (the committed world MaskFormer,
   assets/world_maskformer/): its pairs beside the others, object precision split into the
   categories it was trained on (seen) and held out (unseen), and class-agnostic mask recall of
   seen / unseen objects and backgrounds at 16 / 32 / 100 proposals on the val split
   (bench/world_proposals.py).
7. With ``--segment``: the paper's segmentation table (bench/world_segment.py): two-stage mIoU of
   {superpixel, maskformer} proposals x every model above x {class head alone, CLIP alone, ov-seg's
   ensemble with the weight swept} on the semantic val split, seen / unseen apart, and both oracles.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from bench.pair_tables import mining_table, quality_with_chance, strategy_rows, strategy_table, world_matching
from bench.world_eval import TunedRun, evaluate, load_models
from bench.world_mining import CHECKPOINT, ensure_world, mine, run_job, world_ground_truth
from bench.world_recall import CHECKPOINT as MASKFORMER
from bench.world_recall import maskformer_seen_names, precision_table, recall_table, run_recall
from pipelines.world.categories import NAMES
from pipelines.world.generate import image_id_of
from bench.world_segment import ClipVariant, segment_table
from bench.world_segment import measure as measure_segment

TUNE_CONF = ROOT / "conf/world/tune_mpt.yaml"
FINETUNE = ["optim.mode=finetune", "optim.lr=5e-5", "optim.weight_decay=0.2"]  # image tower, text frozen


def tune(pairs: Path, out: Path, name: str, steps: int | None, extra: list[str], checkpoint: Path) -> dict:
    """Run jobs/tune_mpt.py; returns its summary (``exports``: prompt / clip file paths, evals)."""
    run_dir = out / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    overrides = [f"data.urls={pairs}", f"run.out_dir={run_dir}", f"clip.checkpoint={checkpoint}", *extra]
    if steps:
        overrides.append(f"optim.max_steps={steps}")
    run_job(["jobs/tune_mpt.py", "--config", str(TUNE_CONF), *overrides], out / f"{name}.log")
    return json.loads((run_dir / "summary.json").read_text())


def table(result: dict) -> str:
    """The result as a plain-text table."""
    lines = ["== mining (thresholds off: every noun gets its best mask; chance = a random candidate mask) =="]
    lines.append(mining_table(result["mining"]))
    if result.get("strategies"):
        lines.append("\n== matching strategies replayed on the same similarities (P precision, R recall) ==")
        lines.append(strategy_table(result["strategies"]))
    ev = result["eval"]
    lines.append(f"\n== held-out val ({ev['val_images']} images, {ev['crops']} GT masks of which {ev['crops_thing']} "
                 f"objects, {ev['proposals_per_image']:.1f} superpixel proposals/image, {len(NAMES)} classes) ==")
    lines.append(f"{'model':<30}{'whole img':>10}{'crop acc':>9}{'objects':>8}{'backgr.':>8}"
                 f"{'mIoU 2-stage':>13}{'mIoU GT masks':>14}")
    for name, m in ev["models"].items():
        lines.append(f"{name:<30}{m['whole_image_thing_hit1']:>10.3f}{m['crop_acc']:>9.3f}{m['crop_acc_thing']:>8.3f}"
                     f"{m['crop_acc_stuff']:>8.3f}{m['mIoU_two_stage']:>13.3f}{m['mIoU_gt_masks']:>14.3f}")
    lines.append(f"{'oracle: superpixel proposals + GT classes':<45} mIoU {ev['mIoU_proposals_gt_classes']:.3f}")
    lines.append("whole img = 16-way object hit@1 on whole images; crop acc = 22-way on GT masks cut the OVSeg way")
    if "maskformer" in result["mining"]:
        lines.append("\n== round-1 pairs, objects split by the world MaskFormer's seen / unseen categories ==")
        rows = {name: result["mining"][name] for name in ("gt", "superpixel", "maskformer") if name in result["mining"]}
        lines.append(precision_table(rows, maskformer_seen_names(MASKFORMER)))
    if result.get("proposal_recall"):
        lines.append("\n" + recall_table(result["proposal_recall"]))
    if ev.get("segment"):
        lines.append("\n" + segment_table(ev["segment"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "out/world/data")
    ap.add_argument("--out", type=Path, default=ROOT / "out/world/bench")
    ap.add_argument("--json", type=Path, default=None, help="default: <out>/world_bench.json")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="world CLIP weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=800, help="images mined")
    ap.add_argument("--val", type=int, default=150, help="held-out images evaluated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads here and in the jobs")
    ap.add_argument("--units", type=int, default=200, help="images per mining unit")
    ap.add_argument("--tune-steps", type=int, default=None, help="optimizer steps (default: conf epochs)")
    ap.add_argument("--backends", default="gt,superpixel", help="proposal backends mined in round 1 (comma list; "
                    "add maskformer for the world MaskFormer's pairs and proposal recall)")
    ap.add_argument("--tune-on", choices=("gt", "superpixel"), default="gt", help="pairs the tuning runs train on")
    ap.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning runs (FT, FT+MPT)")
    ap.add_argument("--no-round2", action="store_true", help="skip re-mining with the tuned CLIP")
    ap.add_argument("--mine-only", action="store_true", help="round-1 mining and its pair quality only (no tuning, "
                    "no held-out evaluation)")
    ap.add_argument("--mine-override", action="append", default=[], help="extra jobs/mine.py override "
                    "(key=value), repeatable; e.g. crops.impl=batched")
    ap.add_argument("--segment", action="store_true", help="add the segmentation table (bench/world_segment.py; "
                    "needs the world MaskFormer, ~10 s per val image and model on 2 cores)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(key: str, fn, *a, **kw):
        t = time.time()
        value = fn(*a, **kw)
        timings[key] = time.time() - t
        return value

    timed("world", ensure_world, args.world, args.seed, args.train, args.val)
    gt = world_ground_truth(args.world, "train")
    train_ids = {image_id_of("train", i) for i in range(args.train)}
    mining, pairs, strategies = {}, {}, {}

    def mine_and_measure(name: str, backend: str, *, folder: str | None = None, prompt: str | None = None) -> None:
        folder = folder or backend
        pairs[name] = timed(f"mine_{folder}", mine, args.world, args.out, folder, backend=backend, units=args.units,
                            checkpoint=args.checkpoint, prompt=prompt, extra=tuple(args.mine_override))
        mining[name] = quality_with_chance(pairs[name], gt, image_ids=train_ids)
        mining[f"{name}, margin>=0"] = quality_with_chance(pairs[name], gt, image_ids=train_ids, min_margin=0.0)
        if prompt is None:  # every strategy replayed on the same similarities, each beside its chance
            strategies[name] = strategy_rows(pairs[name], gt, world_matching(), image_ids=train_ids)
        q = mining[name]
        print(f"mined {name}: {q['pairs']} pairs, precision {q['precision']:.3f} (chance {q['chance']['precision']:.3f}; "
              f"objects {q['precision_by_kind']['thing']['precision']:.3f}, chance "
              f"{q['chance']['precision_by_kind']['thing']['precision']:.3f})", flush=True)

    backends = [b for b in args.backends.split(",") if b]
    if args.tune_on not in backends:
        ap.error(f"--tune-on {args.tune_on} must be one of --backends {args.backends}")
    for backend in backends:
        mine_and_measure(backend, backend)
    if args.mine_only:
        result = {"settings": {k: str(v) for k, v in vars(args).items()}, "mining": mining, "strategies": strategies,
                  "seconds": {k: round(v, 1) for k, v in timings.items()}}
        print(mining_table(mining) + "\n\n" + strategy_table(strategies))
        path = args.json or args.out / "world_bench.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        return result
    proposal_recall = timed("proposal_recall", run_recall, args.world, args.val) if "maskformer" in backends else None
    runs: list[TunedRun] = []
    summaries: dict[str, dict] = {}

    def tune_run(label: str, folder: str, on: str, extra: list[str], checkpoint: Path = args.checkpoint) -> dict:
        s = timed(f"tune_{folder}", tune, pairs[on], args.out, folder, args.tune_steps, extra, checkpoint)
        summaries[label] = s
        runs.append(TunedRun(label, s["exports"]))
        return s

    mpt = tune_run("CLIP+MPT", "tune_mpt", args.tune_on, [])
    if not args.no_finetune:
        ft = tune_run("CLIP FT", "tune_ft", args.tune_on, FINETUNE)
        # OVSeg's FT -> MPT: a prompt tuned on the fine-tuned tower (frozen)
        tune_run("CLIP FT -> MPT", "tune_ft_mpt", args.tune_on, [], checkpoint=Path(ft["exports"]["clip"]))
    if args.tune_on != "superpixel" and "superpixel" in backends:
        tune_run("CLIP+MPT (superpixel pairs)", "tune_mpt_sp", "superpixel", [])
    if not args.no_round2:
        round2 = f"{args.tune_on}, round 2 (CLIP+MPT)"
        mine_and_measure(round2, args.tune_on, folder=f"{args.tune_on}-round2", prompt=mpt["exports"]["prompt"])
        tune_run("CLIP+MPT round 2", "tune_mpt_r2", round2, [])
    models = load_models(args.checkpoint, runs)
    ev = timed("evaluate", evaluate, args.world, args.val, models)
    if args.segment:
        variants = [ClipVariant(m.name, m.bundle, m.prompt,
                                m.temperature or float(m.bundle.model.logit_scale.detach().exp())) for m in models]
        ev["segment"] = timed("segment", measure_segment, args.world, args.val, variants)
    timings["total"] = time.time() - t0
    ev["tuning"] = {name: {k: s.get(k) for k in ("mode", "step", "samples_seen", "first_loss", "last_loss",
                                                  "eval_before", "eval_after", "train_seconds")}
                    for name, s in summaries.items()}
    result = {"settings": {k: str(v) for k, v in vars(args).items()},
              "mining": mining, "strategies": strategies, "eval": ev, "proposal_recall": proposal_recall,
              "seconds": {k: round(v, 1) for k, v in timings.items()}}
    print(table(result))
    path = args.json or args.out / "world_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {path} in {timings['total'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
