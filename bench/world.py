"""The paper's story, measured in the procedural world — one command, one table, one JSON.

    python bench/world.py                      # ~15-30 min on 2 (shared) CPU cores
    python bench/world.py --train 300 --val 60 --tune-steps 60 --no-finetune   # reduced (tests)

1. World corpus (seed, sizes fixed up front) under --world: COCO captions+instances, semseg val.
2. Mining with the committed world CLIP (jobs/mine.py, conf/world/mine.yaml), proposals ``gt`` and
   ``superpixel``: pair precision (mask IoU ≥ 0.5 with an instance of the noun's category) and
   recall ((image, category) present and named in a caption, found by a correct pair).
3. Tuning on the superpixel-mined pairs (jobs/tune_mpt.py, conf/world/tune_mpt.yaml): MPT (CLIP
   frozen) and full fine-tuning of the image tower.
4. Held-out val split: masked-crop accuracy on ground-truth masks (things + stuff, 22-way);
   two-stage mIoU with superpixel proposals classified by CLIP and painted (ovseg.segment);
   oracles: ground-truth masks + CLIP classes, and proposals + ground-truth classes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovseg.clip import TextEmbeddingCache, load_clip  # noqa: E402
from ovseg.metrics import ConfusionMatrix  # noqa: E402
from ovseg.proposals import build_proposals  # noqa: E402
from ovseg.crops import MaskedCrops, masked_crops
from ovseg.segment import classify_crops, paint_label_map  # noqa: E402
from pipelines.world.categories import CATEGORIES, IGNORE_LABEL, NAMES  # noqa: E402
from pipelines.world.evaluate import GroundTruth, mining_quality  # noqa: E402
from pipelines.world.generate import generate_split, image_id_of  # noqa: E402

CHECKPOINT = ROOT / "assets/world_clip/world_clip.pt"
MINE_CONF = ROOT / "conf/world/mine.yaml"
TUNE_CONF = ROOT / "conf/world/tune_mpt.yaml"
SUPERPIXEL = {"max_proposals": 48}  # as conf/world/mine.yaml (backend defaults otherwise)


def ensure_world(world: Path, seed: int, n_train: int, n_val: int) -> None:
    """Generate the corpus unless ``world/world_bench.json`` says it already has these settings."""
    stamp = world / "world_bench.json"
    want = {"seed": seed, "train": n_train, "val": n_val}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    if world.exists():
        shutil.rmtree(world)
    generate_split(world, seed, "train", n_train, formats=("coco",))
    generate_split(world, seed, "val", n_val, formats=("coco", "semseg"))
    stamp.write_text(json.dumps(want))


def run_job(args: list[str], log_path: Path) -> None:
    """Run a job script with this interpreter; its console output goes to ``log_path``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed (exit {proc.returncode}); see {log_path}")


def mine(world: Path, out: Path, backend: str, units: int, checkpoint: Path) -> Path:
    pairs = out / f"pairs-{backend}"
    if pairs.exists():
        shutil.rmtree(pairs)
    ann = world / "coco/annotations"
    run_job(["jobs/mine.py", "--config", str(MINE_CONF),
             f"corpus.url={ann / 'captions_train.json'}", f"corpus.images_url={world / 'coco/train'}",
             f"corpus.images_per_unit={units}", f"proposals.backend={backend}",
             f"proposals.instances_url={ann / 'instances_train.json'}", f"output.url={pairs}",
             f"clip.checkpoint={checkpoint}",
             "output.report=false"], out / f"mine-{backend}.log")
    return pairs


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


class Model:
    """A way to turn masks into class probabilities: bundle + optional mask prompt + temperature."""

    def __init__(self, name: str, bundle, prompt=None, temperature: float | None = None) -> None:
        self.name, self.bundle, self.prompt = name, bundle, prompt
        self.temperature = temperature
        self.text = TextEmbeddingCache(bundle).embed(list(NAMES))

    def probs(self, crops: MaskedCrops) -> tuple[torch.Tensor, torch.Tensor]:
        return classify_crops(self.bundle, crops, self.text, prompt=self.prompt, temperature=self.temperature)


def load_models(checkpoint: Path, mpt: dict | None, ft: dict | None) -> list[Model]:
    """The base world CLIP, + its MPT prompt, + its fine-tuned image tower (from tuning summaries)."""
    from ovseg.mpt_export import load_prompted_clip

    base = load_clip("world-clip", checkpoint=str(checkpoint))
    models = [Model("CLIP", base)]
    if mpt is not None:
        prompted, bundle = load_prompted_clip(mpt["exports"]["prompt"], load_clip)
        bundle.model = prompted.clip.eval()
        models.append(Model("CLIP+MPT", bundle, prompted.prompt.eval(),
                            float(prompted.logit_scale.detach().exp())))
    if ft is not None:
        models.append(Model("CLIP fine-tuned", load_clip("world-clip", checkpoint=ft["exports"]["clip"])))
    return models


def majority_labels(masks: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot ``[N,C]``: each mask's most frequent ground-truth class (ignore pixels skipped)."""
    out = torch.zeros(masks.shape[0], num_classes)
    for i, m in enumerate(masks):
        vals = label[m]
        vals = vals[vals != IGNORE_LABEL]
        if vals.numel():
            out[i, int(torch.bincount(vals, minlength=num_classes).argmax())] = 1.0
    return out


@torch.no_grad()
def evaluate(world: Path, n_val: int, models: list[Model]) -> dict:
    """Crop accuracy, two-stage mIoU and the two oracles on the held-out split."""
    gt = GroundTruth(world / "coco/annotations/instances_val.json")
    proposer = build_proposals("superpixel", **SUPERPIXEL)
    c = len(CATEGORIES)
    name_to_id = {cat.name: cat.train_id for cat in CATEGORIES}
    crop_hits = {m.name: [0, 0] for m in models}
    crop_hits_kind = {m.name: {"thing": [0, 0], "stuff": [0, 0]} for m in models}
    cms = {key: ConfusionMatrix(c) for m in models for key in (f"two_stage/{m.name}", f"gt_masks/{m.name}")}
    cms["oracle_classes"] = ConfusionMatrix(c)
    n_props = 0
    for i in tqdm(range(n_val), desc="evaluate val"):
        iid = image_id_of("val", i)
        key = f"{iid:012d}"
        img = np.asarray(Image.open(world / f"semseg/images/val/{key}.jpg").convert("RGB"))
        label = torch.from_numpy(np.asarray(Image.open(world / f"semseg/annotations/val/{key}.png")).astype(np.int64))
        image_t = torch.from_numpy(img.copy()).permute(2, 0, 1)
        insts = gt.instances(iid)
        gt_masks = torch.from_numpy(np.stack([m for _, m in insts]))
        gt_cls = torch.tensor([name_to_id[n] for n, _ in insts])
        kinds = [CATEGORIES[int(k)].kind for k in gt_cls]
        props = proposer(img, None).masks
        n_props += props.shape[0]
        oracle = majority_labels(props, label, c)
        cms["oracle_classes"].update(paint_label_map(props, oracle), label)
        size = models[0].bundle.image_size
        gt_crops, prop_crops = masked_crops(image_t, gt_masks, size), masked_crops(image_t, props, size)
        for m in models:
            p_gt, valid = m.probs(gt_crops)
            ok = (p_gt.argmax(1) == gt_cls) & valid
            crop_hits[m.name][0] += int(ok.sum())
            crop_hits[m.name][1] += int(valid.sum())
            for k, v, o in zip(kinds, valid.tolist(), ok.tolist()):
                crop_hits_kind[m.name][k][0] += int(o)
                crop_hits_kind[m.name][k][1] += int(v)
            cms[f"gt_masks/{m.name}"].update(paint_label_map(gt_masks, p_gt), label)
            p_sp, _ = m.probs(prop_crops)
            cms[f"two_stage/{m.name}"].update(paint_label_map(props, p_sp), label)
    res = {"val_images": n_val, "proposals_per_image": n_props / max(n_val, 1), "models": {}}
    for m in models:
        res["models"][m.name] = {
            "crop_acc": crop_hits[m.name][0] / max(crop_hits[m.name][1], 1),
            "crop_acc_thing": _ratio(crop_hits_kind[m.name]["thing"]),
            "crop_acc_stuff": _ratio(crop_hits_kind[m.name]["stuff"]),
            "mIoU_two_stage": cms[f"two_stage/{m.name}"].compute()["mIoU"],
            "mIoU_gt_masks": cms[f"gt_masks/{m.name}"].compute()["mIoU"],
            "pixel_acc_two_stage": cms[f"two_stage/{m.name}"].compute()["pixel_acc"],
        }
    res["mIoU_proposals_gt_classes"] = cms["oracle_classes"].compute()["mIoU"]
    res["crops"] = crop_hits[models[0].name][1]
    return res


def _ratio(hits: list[int]) -> float:
    return hits[0] / hits[1] if hits[1] else float("nan")


def table(result: dict) -> str:
    """The result as a plain-text table."""
    lines = ["== mining (world CLIP, no score threshold) =="]
    lines.append(f"{'proposals':<22}{'pairs':>8}{'precision':>11}{'recall':>9}{'prec.thing':>12}{'prec.stuff':>12}")
    for backend, q in result["mining"].items():
        lines.append(f"{backend:<22}{q['pairs']:>8}{q['precision']:>11.3f}{q['recall']:>9.3f}"
                     f"{q['precision_by_kind']['thing']['precision']:>12.3f}{q['precision_by_kind']['stuff']['precision']:>12.3f}")
    ev = result["eval"]
    lines.append(f"\n== held-out val ({ev['val_images']} images, {ev['crops']} GT masks, "
                 f"{ev['proposals_per_image']:.1f} superpixel proposals/image, {len(NAMES)} classes) ==")
    lines.append(f"{'model':<18}{'crop acc':>9}{'thing':>8}{'stuff':>8}{'mIoU 2-stage':>14}{'mIoU GT masks':>15}")
    for name, m in ev["models"].items():
        lines.append(f"{name:<18}{m['crop_acc']:>9.3f}{m['crop_acc_thing']:>8.3f}{m['crop_acc_stuff']:>8.3f}"
                     f"{m['mIoU_two_stage']:>14.3f}{m['mIoU_gt_masks']:>15.3f}")
    lines.append(f"{'oracle: superpixel proposals + GT classes':<45} mIoU {ev['mIoU_proposals_gt_classes']:.3f}")
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
    ap.add_argument("--no-finetune", action="store_true", help="skip the full fine-tuning run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}
    ensure_world(args.world, args.seed, args.train, args.val)
    timings["world"] = time.time() - t0
    gt = GroundTruth(args.world / "coco/annotations/instances_train.json",
                     args.world / "coco/annotations/captions_train.json")
    train_ids = {image_id_of("train", i) for i in range(args.train)}
    mining, pairs = {}, {}
    for backend in ("gt", "superpixel"):
        t = time.time()
        pairs[backend] = mine(args.world, args.out, backend, args.units, args.checkpoint)
        mining[backend] = mining_quality(pairs[backend], gt, image_ids=train_ids)
        mining[f"{backend}, margin>=0"] = mining_quality(pairs[backend], gt, image_ids=train_ids, min_margin=0.0)
        timings[f"mine_{backend}"] = time.time() - t
        print(f"mined {backend}: {mining[backend]['pairs']} pairs, precision {mining[backend]['precision']:.3f}",
              flush=True)
    t = time.time()
    mpt = tune(pairs["superpixel"], args.out, "tune_mpt", args.tune_steps, [], args.checkpoint)
    timings["tune_mpt"] = time.time() - t
    ft = None
    if not args.no_finetune:
        t = time.time()
        ft = tune(pairs["superpixel"], args.out, "tune_ft", args.tune_steps,
                  ["optim.mode=finetune", "optim.lr=5e-5", "optim.weight_decay=0.2"], args.checkpoint)
        timings["tune_ft"] = time.time() - t
    t = time.time()
    ev = evaluate(args.world, args.val, load_models(args.checkpoint, mpt, ft))
    timings["evaluate"] = time.time() - t
    timings["total"] = time.time() - t0
    ev["tuning"] = {name: {k: s.get(k) for k in ("mode", "step", "samples_seen", "first_loss", "last_loss",
                                                  "eval_before", "eval_after", "train_seconds")}
                    for name, s in (("mpt", mpt), ("finetune", ft)) if s}
    result = {"settings": {k: str(v) for k, v in vars(args).items()},
              "mining": mining, "eval": ev, "seconds": {k: round(v, 1) for k, v in timings.items()}}
    print(table(result))
    path = args.json or args.out / "world_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {path} in {timings['total'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
