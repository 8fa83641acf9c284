"""The evaluate job's loop: segment each benchmark image, sum confusion matrices (over processes too),
write ``metrics.json``, a per-class Markdown table and a few prediction-beside-ground-truth pictures.

Under ``torchrun`` every process takes every N-th image and the matrices are summed with
``all_reduce`` (gloo on CPU, NCCL tensors on GPU are not needed: the matrix is small).
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ovseg.metrics import ConfusionMatrix
from ovseg.segment import paint_label_map
from pipelines.segment.config import EvaluateConfig
from pipelines.segment.datasets import Dataset, DatasetError, read_label
from pipelines.segment.inputs import read_image
from pipelines.segment.outputs import join, overlay_image, write_json, write_png
from pipelines.segment.segmenter import UNLABELLED, Segmenter

log = logging.getLogger(__name__)


def majority_onehot(masks: torch.Tensor, label: np.ndarray, num_classes: int, *, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N,C]`` one-hot of each mask's most frequent ground-truth class, and ``[N]`` masks that have one."""
    lab = torch.from_numpy(label)
    out = torch.zeros(masks.shape[0], num_classes)
    has = torch.zeros(masks.shape[0], dtype=torch.bool)
    for i, m in enumerate(masks):
        vals = lab[m]
        vals = vals[vals != ignore]
        if vals.numel():
            out[i, int(torch.bincount(vals, minlength=num_classes).argmax())] = 1.0
            has[i] = True
    return out, has


def predict(segmenter: Segmenter, image: np.ndarray, label: np.ndarray, *, oracle: str, ignore: int) -> np.ndarray:
    """``[H,W]`` prediction (``UNLABELLED`` where nothing covers) in the given oracle mode."""
    c = len(segmenter.classes)
    if oracle == "gt_masks":
        present = [int(v) for v in np.unique(label) if v != ignore]
        masks = torch.from_numpy(np.stack([label == v for v in present])) if present else torch.zeros(0, *label.shape, dtype=torch.bool)
        return segmenter(image, masks=masks).label.numpy()
    if oracle == "gt_classes":
        masks, _ = segmenter.proposals(image)
        binary = masks if masks.dtype == torch.bool else masks > segmenter.cfg.ensemble.mask_threshold
        onehot, has = majority_onehot(binary, label, c, ignore=ignore)
        return paint_label_map(binary[has], onehot[has], no_label=UNLABELLED).numpy()
    return segmenter(image).label.numpy()


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; joins the gloo group when there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return int(os.environ.get("RANK", "0")), world


def evaluate(segmenter: Segmenter, data: Dataset, cfg: EvaluateConfig, *,
             on_image: Callable[[int], None] = lambda n: None) -> dict | None:
    """Evaluate this process's shard, sum over processes; rank 0 writes and returns the metrics."""
    rank, world = dist_info()
    c = len(data.classes)
    cm = ConfusionMatrix(c, ignore_index=data.ignore)
    opts, out = cfg.output.storage_options, cfg.output.dir
    t0, n = time.time(), 0
    for index in range(rank, len(data.pairs), world):
        image_url, label_url = data.pairs[index]
        label = read_label(label_url, c, ignore=data.ignore, storage_options=opts)
        try:
            image = read_image(image_url, opts)
        except FileNotFoundError:
            raise DatasetError(f"image not found for label {label_url}: {image_url}") from None
        except Exception as err:  # noqa: BLE001
            raise DatasetError(f"cannot read image {image_url}: {err}") from None
        if image.shape[:2] != label.shape:
            raise DatasetError(f"image {image_url} is {image.shape[1]}x{image.shape[0]}, its label "
                               f"{label.shape[1]}x{label.shape[0]}")
        pred = predict(segmenter, image, label, oracle=cfg.eval.oracle, ignore=data.ignore)
        cm.update(pred, label)  # UNLABELLED (-1) counts as a miss
        if index < cfg.eval.overlays:
            _write_overlay(image, pred, label, data=data, cfg=cfg, index=index)
        n += 1
        on_image(n)
    counts = torch.from_numpy(np.append(cm.mat.ravel(), n))
    if world > 1:
        torch.distributed.all_reduce(counts)
    if rank != 0:
        return None
    cm.mat = counts[:-1].numpy().reshape(cm.mat.shape).astype(np.int64)
    metrics = summarize(cm, data, cfg, images=int(counts[-1]), seconds=time.time() - t0, processes=world)
    write_json(join(out, "metrics.json"), metrics, opts)
    with __import__("fsspec").open(join(out, "per_class.md"), "wt", **opts) as f:
        f.write(per_class_table(metrics))
    return metrics


def _nan_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def summarize(cm: ConfusionMatrix, data: Dataset, cfg: EvaluateConfig, *, images: int, seconds: float,
              processes: int) -> dict:
    """metrics.json: overall figures, groups (seen / unseen, thing / stuff), per class."""
    r = cm.compute()
    groups: dict[str, list[int]] = {}
    seen = set(cfg.ensemble.seen_classes)
    if seen:
        groups["seen"] = [i for i, n in enumerate(data.classes) if n in seen]
        groups["unseen"] = [i for i, n in enumerate(data.classes) if n not in seen]
        if data.kinds:
            groups["unseen things"] = [i for i in groups["unseen"] if data.kinds[i] == "thing"]
    if data.kinds:
        for kind in sorted(set(data.kinds)):
            groups["things" if kind == "thing" else kind] = [i for i, k in enumerate(data.kinds) if k == kind]
    return {
        "dataset": data.name, "images": images, "classes": len(data.classes), "oracle": cfg.eval.oracle,
        "mIoU": _nan_none(r["mIoU"]), "fwIoU": _nan_none(r["fwIoU"]), "pixel_acc": _nan_none(r["pixel_acc"]),
        "mean_acc": _nan_none(r["mean_acc"]),
        "groups": {g: {"mIoU": _nan_none(cm.group_miou(ix)), "classes": len(ix)} for g, ix in groups.items()},
        "per_class": [{"name": name, "iou": _nan_none(r["iou"][i]), "acc": _nan_none(r["acc"][i]),
                       "gt_pixels": r["gt_pixels"][i], **({"kind": data.kinds[i]} if data.kinds else {}),
                       **({"seen": name in seen} if seen else {})} for i, name in enumerate(data.classes)],
        "seconds": round(seconds, 1), "seconds_per_image": round(seconds / max(images / processes, 1), 3),
        "processes": processes,
        "config": {"clip": cfg.clip.model, "clip_checkpoint": cfg.clip.checkpoint, "prompt": cfg.clip.prompt,
                   "templates": cfg.clip.templates, "temperature": cfg.clip.temperature,
                   "proposals": cfg.proposals.backend, "proposals_checkpoint": cfg.proposals.checkpoint,
                   "ensemble": {"clip": cfg.ensemble.clip, "clip_weight": cfg.ensemble.clip_weight,
                                "seen_swap": cfg.ensemble.seen_swap}},
    }


def per_class_table(metrics: dict) -> str:
    """Markdown: the headline figures, the groups, then one row per class."""
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    lines = [f"# {metrics['dataset']}: {metrics['images']} images, {metrics['classes']} classes, oracle {metrics['oracle']}",
             "", f"mIoU {pct(metrics['mIoU'])} · fwIoU {pct(metrics['fwIoU'])} · pixel acc {pct(metrics['pixel_acc'])} · "
             f"mean acc {pct(metrics['mean_acc'])}", ""]
    if metrics["groups"]:
        lines += ["| group | classes | mIoU |", "|---|---:|---:|"]
        lines += [f"| {g} | {v['classes']} | {pct(v['mIoU'])} |" for g, v in metrics["groups"].items()]
        lines.append("")
    lines += ["| class | IoU | acc | GT pixels |", "|---|---:|---:|---:|"]
    lines += [f"| {c['name']} | {pct(c['iou'])} | {pct(c['acc'])} | {c['gt_pixels']} |" for c in metrics["per_class"]]
    return "\n".join(lines) + "\n"


def _write_overlay(image: np.ndarray, pred: np.ndarray, label: np.ndarray, *, data: Dataset, cfg: EvaluateConfig,
                   index: int) -> None:
    stem = data.pairs[index][1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    kw = dict(alpha=cfg.output.overlay_alpha, min_side=cfg.output.overlay_min_side)
    left = overlay_image(image, pred, data.classes, no_label=UNLABELLED, title="prediction", **kw)
    right = overlay_image(image, label, data.classes, no_label=data.ignore, title="ground truth", **kw)
    both = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 8, 0))
    write_png(join(join(cfg.output.dir, "overlays"), f"{stem}.png"), both, cfg.output.storage_options)
