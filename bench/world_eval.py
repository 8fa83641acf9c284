"""Held-out evaluation of the world benchmark: whole images, ground-truth masks, two-stage mIoU.

For every model (the base world CLIP, and the tuned variants exported by ``jobs/tune_mpt.py``),
on the held-out val split of the world:

* whole-image object hit@1: the top-ranked of the 16 object prompts names an object drawn in the
  whole image (the task the world CLIP was trained for, no masks);
* masked-crop accuracy on the ground-truth masks, cut the OVSeg way (22-way, objects and
  backgrounds): whole image vs masked crop is the paper's domain gap;
* two-stage mIoU: superpixel proposals classified by the model and painted (``ovseg.segment``), and
  ground-truth masks classified by the model (oracle masks); plus superpixel proposals + ground-truth
  classes (oracle classes), which needs no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from bench.world_mining import world_ground_truth
from ovseg.clip import ClipBundle, TextEmbeddingCache, encode_images, load_clip
from ovseg.crops import MaskedCrops, masked_crops, normalize
from ovseg.metrics import ConfusionMatrix
from ovseg.proposals import build_proposals
from ovseg.segment import classify_crops, paint_label_map
from pipelines.world.categories import CATEGORIES, IGNORE_LABEL, NAMES, THINGS
from pipelines.world.generate import image_id_of

SUPERPIXEL = {"max_proposals": 48}  # as conf/world/mine.yaml (backend defaults otherwise)
N_THINGS = len(THINGS)  # things come first in NAMES


class Model:
    """A way to turn masks into class probabilities: bundle + optional mask prompt + temperature."""

    def __init__(self, name: str, bundle: ClipBundle, *, prompt: torch.nn.Module | None = None,
                 temperature: float | None = None) -> None:
        self.name, self.bundle, self.prompt = name, bundle, prompt
        self.temperature = temperature
        self.text = TextEmbeddingCache(bundle).embed(list(NAMES))  # [22, D]

    def probs(self, crops: MaskedCrops) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N,22]`` class probabilities of the crops and ``[N]`` validity."""
        return classify_crops(self.bundle, crops, self.text, prompt=self.prompt, temperature=self.temperature)

    def whole_image_scores(self, image: torch.Tensor) -> torch.Tensor:
        """``[3,H,W]`` uint8 whole image → ``[22]`` cosine scores (no mask: plain tower)."""
        size = self.bundle.image_size
        x = F.interpolate(image[None].float(), size=(size, size), mode="bicubic", align_corners=False)
        feats = encode_images(self.bundle, normalize(x.clamp(0, 255), self.bundle.mean, self.bundle.std))
        return (feats @ self.text.T)[0]


@dataclass
class TunedRun:
    """Where a tuning job's exports are: ``summary.json`` ``exports`` (``prompt`` and/or ``clip``)."""

    name: str
    exports: dict[str, str]


def load_models(checkpoint: Path, runs: list[TunedRun]) -> list[Model]:
    """The base world CLIP plus one model per tuning run (prompt export, or fine-tuned tower)."""
    from ovseg.mpt_export import load_prompted_clip

    models = [Model("CLIP", load_clip("world-clip", checkpoint=str(checkpoint)))]
    for run in runs:
        if "prompt" in run.exports:
            prompted, bundle = load_prompted_clip(run.exports["prompt"], load_clip)
            bundle.model = prompted.clip.eval()
            models.append(Model(run.name, bundle, prompt=prompted.prompt.eval(),
                                temperature=float(prompted.logit_scale.detach().exp())))
        else:
            models.append(Model(run.name, load_clip("world-clip", checkpoint=run.exports["clip"])))
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


def _ratio(hits: list[int]) -> float:
    return hits[0] / hits[1] if hits[1] else float("nan")


@torch.no_grad()
def evaluate(world: Path, n_val: int, models: list[Model]) -> dict:
    """Whole-image hit@1, GT-mask crop accuracy, two-stage mIoU and the two oracles on val."""
    gt = world_ground_truth(world, "val", captions=False)
    proposer = build_proposals("superpixel", **SUPERPIXEL)
    c = len(CATEGORIES)
    name_to_id = {cat.name: cat.train_id for cat in CATEGORIES}
    crop = {m.name: {"all": [0, 0], "thing": [0, 0], "stuff": [0, 0]} for m in models}
    whole = {m.name: [0, 0] for m in models}
    cms = {key: ConfusionMatrix(c) for m in models for key in (f"two_stage/{m.name}", f"gt_masks/{m.name}")}
    cms["oracle_classes"] = ConfusionMatrix(c)
    n_props = 0
    size = models[0].bundle.image_size
    for i in tqdm(range(n_val), desc="evaluate val", mininterval=5):
        iid = image_id_of("val", i)
        key = f"{iid:012d}"
        img = np.asarray(Image.open(world / f"semseg/images/val/{key}.jpg").convert("RGB"))
        label = torch.from_numpy(np.asarray(Image.open(world / f"semseg/annotations/val/{key}.png")).astype(np.int64))
        image_t = torch.from_numpy(img.copy()).permute(2, 0, 1)
        insts = gt.instances(iid)
        gt_masks = torch.from_numpy(np.stack([m for _, m in insts]))
        gt_cls = torch.tensor([name_to_id[n] for n, _ in insts])
        kinds = [CATEGORIES[int(k)].kind for k in gt_cls]
        present_things = {int(k) for k, kind in zip(gt_cls, kinds) if kind == "thing"}
        props = proposer(img, None).masks
        n_props += props.shape[0]
        cms["oracle_classes"].update(paint_label_map(props, majority_labels(props, label, c)), label)
        gt_crops, prop_crops = masked_crops(image_t, gt_masks, size), masked_crops(image_t, props, size)
        for m in models:
            if present_things:
                top = int(m.whole_image_scores(image_t)[:N_THINGS].argmax())
                whole[m.name][0] += top in present_things
                whole[m.name][1] += 1
            p_gt, valid = m.probs(gt_crops)
            ok = (p_gt.argmax(1) == gt_cls) & valid
            for k, v, o in zip(kinds, valid.tolist(), ok.tolist()):
                for bucket in ("all", k):
                    crop[m.name][bucket][0] += int(o)
                    crop[m.name][bucket][1] += int(v)
            cms[f"gt_masks/{m.name}"].update(paint_label_map(gt_masks, p_gt), label)
            p_sp, _ = m.probs(prop_crops)
            cms[f"two_stage/{m.name}"].update(paint_label_map(props, p_sp), label)
    res = {"val_images": n_val, "proposals_per_image": n_props / max(n_val, 1), "models": {}}
    for m in models:
        two_stage = cms[f"two_stage/{m.name}"].compute()
        res["models"][m.name] = {
            "whole_image_thing_hit1": _ratio(whole[m.name]),
            "crop_acc": _ratio(crop[m.name]["all"]),
            "crop_acc_thing": _ratio(crop[m.name]["thing"]),
            "crop_acc_stuff": _ratio(crop[m.name]["stuff"]),
            "mIoU_two_stage": two_stage["mIoU"],
            "mIoU_gt_masks": cms[f"gt_masks/{m.name}"].compute()["mIoU"],
            "pixel_acc_two_stage": two_stage["pixel_acc"],
        }
    res["mIoU_proposals_gt_classes"] = cms["oracle_classes"].compute()["mIoU"]
    res["crops"] = crop[models[0].name]["all"][1]
    res["crops_thing"] = crop[models[0].name]["thing"][1]
    return res
