"""The paper's segmentation table in the world: two-stage mIoU on the held-out semantic split.

    python -m bench.world_segment                      # world CLIP only, 100 val images of data/world (~20 min, 2 busy cores)
    python -m bench.world_segment --val 40 --prompt "CLIP+MPT=out/world/bench/tune_mpt/export/mpt_prompt.pt"

Rows: proposals {superpixel, maskformer (the committed world MaskFormer, all 48 queries, soft masks)}
x CLIP {the world CLIP, tuned prompts / towers given with --prompt / --clip, or passed in by
bench/world.py} x classification {MaskFormer's class head alone, CLIP alone, ov-seg's geometric
ensemble with CLIP_ENSEMBLE_WEIGHT swept, zsseg's seen-swap at 0.7} x crop temperature {100 (ov-seg),
the CLIP's learned one}; plus both oracles (ground-truth masks named by CLIP; proposals named by their
majority ground-truth class). mIoU over the 22 classes, seen / unseen by the MaskFormer's training
vocabulary (its 4 held-out object classes are the unseen ones), objects / backgrounds apart.
Each image's CLIP features are computed once; every row is painted from them (ovseg.segment).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ovseg.clip import ClipBundle, TextEmbeddingCache, encode_images, load_clip, templates_named
from ovseg.crops import masked_crops, normalize
from ovseg.metrics import ConfusionMatrix
from ovseg.proposals import build_proposals
from ovseg.segment import OVSEG_TEMPERATURE, ensemble_probs, paint_label_map
from pipelines.segment.datasets import open_dataset, read_label
from pipelines.segment.inputs import read_image

ROOT = Path(__file__).resolve().parents[1]

CLIP_CHECKPOINT = ROOT / "assets/world_clip/world_clip.pt"
MASKFORMER = ROOT / "assets/world_maskformer/world_maskformer.pt"
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.85)  # CLIP_ENSEMBLE_WEIGHT values swept (ov-seg's configs: 0.7; GETTING_STARTED: 0.45-0.6)
SUPERPIXEL = {"max_proposals": 48}  # as conf/world/mine.yaml
TEMPLATES = "vild9"  # the world CLIP and MaskFormer were trained with the 9-template ensemble


@dataclass
class ClipVariant:
    """A CLIP that names crops: the bundle, its mask prompt (or None), its learned temperature."""

    name: str
    bundle: ClipBundle
    prompt: torch.nn.Module | None = None
    learned_temperature: float | None = None


def world_clip() -> ClipVariant:
    bundle = load_clip("world-clip", checkpoint=str(CLIP_CHECKPOINT))
    return ClipVariant("world CLIP", bundle, None, float(bundle.model.logit_scale.detach().exp()))


def prompted_variant(name: str, path: str) -> ClipVariant:
    """A tuned mask prompt export (tune_mpt's export/mpt_prompt.pt) on the CLIP it was tuned with."""
    from ovseg.mpt_export import load_prompted_clip

    prompted, bundle = load_prompted_clip(path, load_clip)
    prompted.eval()
    bundle.model = prompted.clip
    return ClipVariant(name, bundle, prompted.prompt, float(prompted.logit_scale.detach().exp()))


@torch.no_grad()
def cosines(v: ClipVariant, image: torch.Tensor, masks: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N,C]`` cosine of each masked crop with each class, ``[N]`` validity (mask > 0.5 non-empty)."""
    crops = masked_crops(image, masks, v.bundle.image_size)
    cos = torch.zeros(masks.shape[0], text.shape[0])
    if crops.crops.shape[0]:
        feats = encode_images(v.bundle, normalize(crops.crops, v.bundle.mean, v.bundle.std),
                              masks=crops.masks, prompt=v.prompt)
        cos[crops.valid] = (feats @ text.T).cpu()
    return cos, crops.valid.cpu()


def majority(masks: torch.Tensor, label: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    onehot, has = torch.zeros(masks.shape[0], c), torch.zeros(masks.shape[0], dtype=torch.bool)
    for i, m in enumerate(masks):
        vals = label[m]
        vals = vals[vals != 255]
        if vals.numel():
            onehot[i, int(torch.bincount(vals, minlength=c).argmax())] = 1
            has[i] = True
    return onehot, has


def measure(world: Path, n_val: int, variants: list[ClipVariant], *, maskformer: Path = MASKFORMER,
            weights: tuple[float, ...] = WEIGHTS) -> dict:
    """Every row's confusion matrix over ``n_val`` val images → metrics per row."""
    data = open_dataset("world", str(world), max_images=n_val)
    c = len(data.classes)
    mf = build_proposals("maskformer", checkpoint=str(maskformer), device="cpu")
    sp = build_proposals("superpixel", **SUPERPIXEL)
    meta = torch.load(maskformer, map_location="cpu", weights_only=True).get("meta", {})
    seen_names = set(meta.get("vocabulary", []))
    seen = torch.tensor([n in seen_names for n in data.classes])
    texts = {v.name: TextEmbeddingCache(v.bundle, templates_named(TEMPLATES)).embed(data.classes).cpu() for v in variants}
    mf_text = texts[variants[0].name]  # the MaskFormer's class head: the world CLIP's text tower (it was trained with it)
    cms: dict[str, ConfusionMatrix] = {}

    def add(row: str, pred: torch.Tensor, label: torch.Tensor) -> None:
        cms.setdefault(row, ConfusionMatrix(c)).update(pred, label)

    t0 = time.time()
    rng = torch.Generator().manual_seed(0)
    for image_url, label_url in tqdm(data.pairs, desc="world segment table", mininterval=10):
        label = torch.from_numpy(read_label(label_url, c, ignore=255))
        img = read_image(image_url)
        image_t = torch.from_numpy(img).permute(2, 0, 1)
        soft, mf_probs = mf.semantic_outputs(img, mf_text)
        sp_masks = sp(img, None).masks
        present = [int(v) for v in label.unique() if v != 255]
        gt_masks = torch.stack([label == v for v in present])
        add("maskformer | - | class head alone", paint_label_map(soft, mf_probs, no_label=-1), label)
        chance = torch.zeros_like(mf_probs).scatter_(1, torch.randint(0, c, (soft.shape[0], 1), generator=rng), 1.0)
        add("maskformer | - | random classes (chance)", paint_label_map(soft, chance, no_label=-1), label)
        for props, name in ((soft > 0.5, "maskformer"), (sp_masks, "superpixel")):
            onehot, has = majority(props, label, c)
            add(f"oracle: {name} proposals + GT classes | - | -", paint_label_map(props[has], onehot[has], no_label=-1), label)
        for v in variants:
            text = texts[v.name]
            cos_mf, valid_mf = cosines(v, image_t, soft, text)
            cos_sp, valid_sp = cosines(v, image_t, sp_masks, text)
            cos_gt, _ = cosines(v, image_t, gt_masks, text)
            temps = [("T100", OVSEG_TEMPERATURE)] + ([("T learned", v.learned_temperature)] if v.learned_temperature else [])
            for tname, t in temps:
                p_mf, p_sp, p_gt = ((t * x).softmax(-1) for x in (cos_mf, cos_sp, cos_gt))
                probs, keep = ensemble_probs(p_mf, mf_probs, 0.0, valid=valid_mf)
                add(f"maskformer | {v.name} {tname} | CLIP alone", paint_label_map(soft[keep], probs[keep], no_label=-1), label)
                for w in weights:
                    probs, _ = ensemble_probs(p_mf, mf_probs, w, valid=valid_mf)
                    add(f"maskformer | {v.name} {tname} | ensemble w={w}", paint_label_map(soft, probs, no_label=-1), label)
                probs, _ = ensemble_probs(p_mf, mf_probs, 0.7, valid=valid_mf, seen=seen)
                add(f"maskformer | {v.name} {tname} | seen-swap w=0.7", paint_label_map(soft, probs, no_label=-1), label)
                add(f"superpixel | {v.name} {tname} | CLIP alone",
                    paint_label_map(sp_masks[valid_sp], p_sp[valid_sp], no_label=-1), label)
                add(f"oracle: GT masks | {v.name} {tname} | CLIP alone", paint_label_map(gt_masks, p_gt, no_label=-1), label)
    kinds = data.kinds or ["thing"] * c
    groups = {"seen": [i for i in range(c) if seen[i]], "unseen": [i for i in range(c) if not seen[i]],
              "objects": [i for i in range(c) if kinds[i] == "thing"],
              "backgrounds": [i for i in range(c) if kinds[i] == "stuff"]}
    rows = {}
    for row, cm in cms.items():
        r = cm.compute()
        rows[row] = {"mIoU": r["mIoU"], "pixel_acc": r["pixel_acc"], "fwIoU": r["fwIoU"],
                     **{g: cm.group_miou(ix) for g, ix in groups.items()}}
    return {"val_images": len(data.pairs), "classes": c, "unseen_classes": [data.classes[i] for i in groups["unseen"]],
            "seconds": round(time.time() - t0, 1), "rows": rows}


def segment_table(result: dict) -> str:
    """The rows as plain text, oracles last."""
    def f(x: float) -> str:
        return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.3f}"

    head = f"{'proposals':<42}{'CLIP':<22}{'classes':<22}{'mIoU':>7}{'seen':>7}{'unseen':>7}{'objects':>8}{'backgr.':>8}{'pix acc':>8}"
    lines = [f"== two-stage segmentation, held-out world val ({result['val_images']} images, {result['classes']} classes; "
             f"unseen = {', '.join(result['unseen_classes'])}) ==", head]
    rows = sorted(result["rows"].items(), key=lambda kv: (kv[0].startswith("oracle"), kv[0]))
    for row, m in rows:
        prop, clip, cls = (s.strip() for s in row.split("|"))
        lines.append(f"{prop:<42}{clip:<22}{cls:<22}{f(m['mIoU']):>7}{f(m['seen']):>7}{f(m['unseen']):>7}"
                     f"{f(m['objects']):>8}{f(m['backgrounds']):>8}{f(m['pixel_acc']):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "data/world", help="generated world (semseg val split)")
    ap.add_argument("--val", type=int, default=100, help="held-out images")
    ap.add_argument("--prompt", action="append", default=[], help="NAME=path/to/mpt_prompt.pt (repeatable)")
    ap.add_argument("--json", type=Path, default=ROOT / "out/world/segment_table.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [world_clip()] + [prompted_variant(*p.split("=", 1)) for p in args.prompt]
    result = measure(args.world, args.val, variants)
    print(segment_table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"written {args.json} in {result['seconds'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
