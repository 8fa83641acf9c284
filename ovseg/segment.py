"""Two-stage open-vocabulary segmentation, OVSeg's semantic inference (ov-seg ``ovseg_model.py``).

    proposals: masks [N,H,W] (soft 0..1 or bool) (+ the proposal model's class probs [N,C], optional)
        ──masked crops (mask > threshold, ov-seg's crop recipe)──▶ crops [M,3,S,S] (+ masks [M,1,S,S])
        ──CLIP image tower (a mask prompt when given)──▶ [M,D]
        ──· text embeddings [C,D] × 100 (ov-seg's fixed temperature)──▶ softmax ──▶ clip probs [M,C]
    ──fuse (CLIP_ENSEMBLE_WEIGHT w, geometric)──▶ class probs [N,C]
    ──semseg = einsum("qc,qhw->chw", probs, masks)──▶ label = argmax_c semseg ──▶ label map [H,W]

How ov-seg fuses (``OVSeg.semantic_inference``), reproduced by :func:`ensemble_probs`:

* the proposal model's probabilities are ``softmax(logits)[:, :C]`` (the no-object column dropped, rows
  *not* renormalised); CLIP's are a softmax over the C classes;
* ``w > 0``: ``p_mf ** (1 - w) * p_clip ** w`` (no renormalisation); masks that are empty after
  thresholding keep ``p_clip = 1`` (so they carry the proposal model's vote alone);
* ``w == 0``: CLIP alone, and masks that are empty after thresholding are dropped;
* no CLIP (``CLIP_ENSEMBLE False``): the proposal model's probabilities alone.

ov-seg's released code has no seen/unseen branch; its parent zsseg.baseline
(``zero_shot_mask_former_model.py``) has one, selectable here with ``seen``: for classes the proposal
model was trained on the weights swap, ``p_mf ** w * p_clip ** (1 - w)``; unseen classes as above.

Proposal backends without class scores (ground truth, superpixels, SAM) give CLIP alone; a backend's
confidence ``scores`` may weight the masks in the sum (ov-seg has none: scores = 1).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

import torch

from ovseg.clip import OVSEG_TEMPERATURE, ClipBundle, encode_images
from ovseg.crops import MaskedCrops, masked_crops, normalize

log = logging.getLogger(__name__)

__all__ = ["NO_LABEL", "OVSEG_TEMPERATURE", "classify_crops", "classify_masks", "ensemble_probs",
           "paint_label_map", "SegmentResult", "segment_image"]

NO_LABEL = 255  # label of pixels that no proposal covers

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` for ``bf16``/``fp16`` on CUDA (bf16 also on CPU); a no-op for ``fp32``."""
    if precision not in ("fp32", *_AUTOCAST):
        raise ValueError(f"precision must be fp32 | bf16 | fp16, got {precision!r}")
    dtype = _AUTOCAST.get(precision)
    enabled = dtype is not None and (device.type == "cuda" or dtype is torch.bfloat16)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=enabled):
        yield


@torch.no_grad()
def classify_crops(
    bundle: ClipBundle,
    crops: MaskedCrops,
    text_emb: torch.Tensor,
    *,
    prompt: torch.nn.Module | None = None,
    temperature: float | None = OVSEG_TEMPERATURE,
    batch_size: int = 256,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of already cut masked crops (see :func:`classify_masks`).

    Returns:
        ``probs [N,C]`` float32 for the N input masks of ``crops`` (rows of invalid masks are uniform)
        and ``valid [N]`` bool.
    """
    n, c = crops.valid.shape[0], text_emb.shape[0]
    probs = torch.full((n, c), 1.0 / max(c, 1))
    valid = crops.valid.cpu()
    if crops.crops.shape[0] == 0:
        return probs, valid
    with _autocast(bundle.device, precision):
        feats = encode_images(bundle, normalize(crops.crops, bundle.mean, bundle.std), batch_size,
                              masks=crops.masks, prompt=prompt)
    scale = float(bundle.model.logit_scale.detach().exp()) if temperature is None else temperature
    logits = scale * feats.float() @ text_emb.to(feats.device).float().T
    probs[valid] = logits.softmax(dim=-1).cpu()
    return probs, valid


@torch.no_grad()
def classify_masks(
    bundle: ClipBundle,
    image: torch.Tensor,
    masks: torch.Tensor,
    *,
    text_emb: torch.Tensor,
    prompt: torch.nn.Module | None = None,
    temperature: float | None = OVSEG_TEMPERATURE,
    batch_size: int = 256,
    threshold: float = 0.5,
    expand_ratio: float = 1.0,
    batched: bool | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of every mask.

    Args:
        bundle: the CLIP model (``bundle.model.visual`` must be a ViT when ``prompt`` is given).
        image: ``[3,H,W]`` uint8 or float on 0..255.
        masks: ``[N,H,W]`` bool, or float soft masks (thresholded with ``> threshold``).
        text_emb: ``[C,D]`` L2-normalised class embeddings.
        prompt: an :class:`ovseg.mpt.MaskPrompt` (called as ``prompt(visual, crops, crop_masks)``),
            or None for plain CLIP on masked crops.
        temperature: logit multiplier; ov-seg's fixed 100 by default; None = the model's learned
            ``logit_scale.exp()``.
        expand_ratio: crop box scale about its centre (ov-seg ``MASK_EXPAND_RATIO``, 1.0).
        batched: cut all crops with matrix products (:mod:`ovseg.crops_batched`); None = on CUDA.
        precision: ``fp32`` | ``bf16`` | ``fp16``: autocast of the image tower.

    Returns:
        ``probs [N,C]`` float32 (rows of empty masks are uniform) and ``valid [N]`` bool.
    """
    if batched is None:
        batched = bundle.device.type == "cuda"
    image = image.to(bundle.device) if batched else image
    masks = masks.to(image.device)
    if batched:
        from ovseg.crops_batched import masked_crops_batched

        crops = masked_crops_batched(image, masks, bundle.image_size, threshold=threshold, expand_ratio=expand_ratio)
    else:
        crops = masked_crops(image, masks, bundle.image_size, threshold=threshold, expand_ratio=expand_ratio)
    return classify_crops(bundle, crops, text_emb, prompt=prompt, temperature=temperature, batch_size=batch_size,
                          precision=precision)


def ensemble_probs(
    clip_probs: torch.Tensor | None,
    proposal_probs: torch.Tensor | None,
    clip_weight: float = 0.7,
    *,
    valid: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ov-seg's fusion of CLIP's and the proposal model's class probabilities (module docstring).

    Args:
        clip_probs: ``[N,C]`` CLIP softmax per mask, or None (no CLIP: proposal classes alone).
        proposal_probs: ``[N,C]`` the proposal model's ``softmax(logits)[:, :C]``, or None (CLIP alone).
        clip_weight: ov-seg's ``CLIP_ENSEMBLE_WEIGHT`` w in 0..1 (its configs: 0.7; 0 = CLIP alone).
        valid: ``[N]`` bool, masks that were non-empty after thresholding (None = all).
        seen: ``[C]`` bool, classes the proposal model was trained on (zsseg's branch; None = ov-seg).

    Returns:
        ``probs [N,C]`` (not renormalised, as ov-seg) and ``keep [N]`` bool, the masks to paint.
    """
    if clip_probs is None and proposal_probs is None:
        raise ValueError("need CLIP probabilities, proposal probabilities or both")
    ref = clip_probs if clip_probs is not None else proposal_probs
    n = ref.shape[0]
    valid = torch.ones(n, dtype=torch.bool) if valid is None else valid.bool().cpu()
    if clip_probs is None:
        return proposal_probs, torch.ones(n, dtype=torch.bool)
    if proposal_probs is None:
        return clip_probs, valid
    if not 0.0 <= clip_weight <= 1.0:
        raise ValueError(f"clip_weight must be in 0..1, got {clip_weight}")
    if clip_weight == 0:
        return clip_probs, valid
    clip = torch.where(valid[:, None], clip_probs.float(), torch.ones_like(clip_probs, dtype=torch.float))
    mf = proposal_probs.float()
    w = torch.full((mf.shape[1],), float(clip_weight))
    if seen is not None:
        w = torch.where(seen.bool().cpu(), 1.0 - clip_weight, clip_weight)
    return mf.pow(1.0 - w) * clip.pow(w), torch.ones(n, dtype=torch.bool)


def class_map(masks: torch.Tensor, probs: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    """``semseg [C,H,W] = einsum("qc,qhw->chw", probs · scores, masks)`` (ov-seg's semantic map)."""
    w = probs.float() if scores is None else probs.float() * scores.float()[:, None]
    return torch.einsum("qc,qhw->chw", w, masks.float())


def paint_label_map(masks: torch.Tensor, probs: torch.Tensor, scores: torch.Tensor | None = None,
                    *,
                    no_label: int = NO_LABEL) -> torch.Tensor:
    """Per-pixel argmax of ``Σ_n mask_n · score_n · probs_n``.

    Args:
        masks: ``[N,H,W]`` bool or float in 0..1.
        probs: ``[N,C]`` class probabilities.
        scores: ``[N]`` proposal confidences (None = 1).

    Returns:
        ``[H,W]`` long labels in 0..C-1; ``no_label`` where no mask covers the pixel.
    """
    if masks.shape[0] == 0:
        return torch.full(masks.shape[1:], no_label, dtype=torch.long)
    label = class_map(masks, probs, scores).argmax(dim=0)
    label[masks.float().sum(dim=0) <= 0] = no_label
    return label


@dataclass
class SegmentResult:
    """Output of :func:`segment_image`."""

    label: torch.Tensor  # [H,W] long, 0..C-1 or NO_LABEL
    score: torch.Tensor  # [H,W] float, the winning class's mask-weighted mean probability (0 where unlabelled)
    probs: torch.Tensor  # [N,C] fused class probabilities of the proposals
    valid: torch.Tensor  # [N] bool, proposals painted


def segment_image(
    bundle: ClipBundle | None,
    image: torch.Tensor,
    masks: torch.Tensor,
    *,
    text_emb: torch.Tensor | None,
    prompt: torch.nn.Module | None = None,
    scores: torch.Tensor | None = None,
    proposal_probs: torch.Tensor | None = None,
    clip_weight: float = 0.7,
    seen: torch.Tensor | None = None,
    temperature: float | None = OVSEG_TEMPERATURE,
    threshold: float = 0.5,
    expand_ratio: float = 1.0,
    batched: bool | None = None,
    precision: str = "fp32",
    no_label: int = NO_LABEL,
) -> SegmentResult:
    """Two-stage segmentation of one image ``[3,H,W]`` with proposals ``[N,H,W]`` over C classes.

    ``bundle=None`` skips CLIP (``proposal_probs`` alone, ov-seg's ``CLIP_ENSEMBLE False``);
    ``proposal_probs=None`` is CLIP alone. See :func:`classify_masks` and :func:`ensemble_probs`.
    """
    clip_probs, valid = None, None
    if bundle is not None:
        if text_emb is None:
            raise ValueError("CLIP classification needs text_emb")
        clip_probs, valid = classify_masks(bundle, image, masks, text_emb=text_emb, prompt=prompt,
                                           temperature=temperature, threshold=threshold, expand_ratio=expand_ratio,
                                           batched=batched, precision=precision)
    probs, keep = ensemble_probs(clip_probs, proposal_probs, clip_weight, valid=valid, seen=seen)
    if scores is not None:
        keep = keep & (scores.cpu() > 0)
    m = masks.cpu()[keep].float()
    if m.shape[0] == 0:
        h, w = masks.shape[1:]
        return SegmentResult(torch.full((h, w), no_label, dtype=torch.long), torch.zeros(h, w), probs, keep)
    semseg = class_map(m, probs[keep], None if scores is None else scores.cpu()[keep])
    best, label = semseg.max(dim=0)
    weight = m.sum(dim=0) if scores is None else torch.einsum("q,qhw->hw", scores.cpu()[keep].float(), m)
    covered = weight > 0
    label[~covered] = no_label
    score = torch.where(covered, best / weight.clamp_min(1e-12), torch.zeros_like(best))
    return SegmentResult(label, score, probs, keep)
