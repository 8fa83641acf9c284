"""Two-stage open-vocabulary segmentation: class-agnostic proposals, then CLIP names each one.

    proposals [N,H,W] ──masked_crops──▶ crops [N,3,S,S] (+ masks [N,1,S,S])
        ──CLIP image tower (optionally with a mask prompt)──▶ [N,D]
        ──· text embeddings [C,D] × logit scale──▶ softmax ──▶ class probabilities [N,C]
        (──optional ensemble with the proposal generator's own class scores [N,C]──)
    ──paint: label(x) = argmax_c Σ_n mask_n(x) · score_n · prob_n,c──▶ label map [H,W]

The proposal generator is anything that yields masks (ground truth, superpixels, MaskFormer, SAM);
MaskFormer's in-vocabulary class scores enter through ``proposal_probs`` (geometric ensemble).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ovseg.clip import ClipBundle, encode_images
from ovseg.crops import MaskedCrops, masked_crops, normalize

log = logging.getLogger(__name__)

__all__ = ["classify_crops", "classify_masks", "ensemble_probs", "paint_label_map", "SegmentResult", "segment_image"]

NO_LABEL = 255  # label of pixels that no proposal covers


@torch.no_grad()
def classify_crops(
    bundle: ClipBundle,
    crops: MaskedCrops,
    text_emb: torch.Tensor,
    *,
    prompt: torch.nn.Module | None = None,
    temperature: float | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of already cut masked crops (see :func:`classify_masks`).

    Returns:
        ``probs [N,C]`` for the N input masks of ``crops`` (rows of invalid masks are uniform)
        and ``valid [N]`` bool.
    """
    n, c = crops.valid.shape[0], text_emb.shape[0]
    probs = torch.full((n, c), 1.0 / max(c, 1))
    valid = crops.valid.cpu()
    if crops.crops.shape[0] == 0:
        return probs, valid
    feats = encode_images(bundle, normalize(crops.crops, bundle.mean, bundle.std), batch_size,
                          masks=crops.masks, prompt=prompt)
    scale = float(bundle.model.logit_scale.detach().exp()) if temperature is None else temperature
    logits = scale * feats @ text_emb.to(feats.device).float().T
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
    temperature: float | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of every mask.

    Args:
        bundle: the CLIP model (``bundle.model.visual`` must be a ViT when ``prompt`` is given).
        image: ``[3,H,W]`` uint8 or float on 0..255.
        masks: ``[N,H,W]`` bool (or float, thresholded at 0.5).
        text_emb: ``[C,D]`` L2-normalised class embeddings.
        prompt: an :class:`ovseg.mpt.MaskPrompt` (called as ``prompt(visual, crops, crop_masks)``),
            or None for plain CLIP on masked crops.
        temperature: logit multiplier; None = the model's learned ``logit_scale.exp()``.

    Returns:
        ``probs [N,C]`` float32 (rows of empty masks are uniform) and ``valid [N]`` bool.
    """
    crops = masked_crops(image, masks, bundle.image_size)
    return classify_crops(bundle, crops, text_emb, prompt=prompt, temperature=temperature, batch_size=batch_size)


def ensemble_probs(clip_probs: torch.Tensor, proposal_probs: torch.Tensor | None,
                   clip_weight: float = 1.0) -> torch.Tensor:
    """Geometric ensemble ``clip^w · proposal^(1-w)`` of ``[N,C]`` probabilities, rows renormalised.

    ``proposal_probs=None`` or ``clip_weight=1`` returns ``clip_probs`` unchanged.
    """
    if proposal_probs is None or clip_weight >= 1.0:
        return clip_probs
    p = clip_probs.clamp_min(1e-8) ** clip_weight * proposal_probs.clamp_min(1e-8) ** (1 - clip_weight)
    return p / p.sum(dim=-1, keepdim=True)


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
    m = masks.float()
    w = probs.float() if scores is None else probs.float() * scores.float()[:, None]
    if m.shape[0] == 0:
        return torch.full(m.shape[1:], no_label, dtype=torch.long)
    per_class = torch.einsum("nc,nhw->chw", w, m)
    label = per_class.argmax(dim=0)
    label[m.sum(dim=0) <= 0] = no_label
    return label


@dataclass
class SegmentResult:
    """Output of :func:`segment_image`."""

    label: torch.Tensor  # [H,W] long, 0..C-1 or NO_LABEL
    probs: torch.Tensor  # [N,C] class probabilities used for painting
    valid: torch.Tensor  # [N] bool, non-empty proposals


def segment_image(
    bundle: ClipBundle,
    image: torch.Tensor,
    masks: torch.Tensor,
    *,
    text_emb: torch.Tensor,
    prompt: torch.nn.Module | None = None,
    scores: torch.Tensor | None = None,
    proposal_probs: torch.Tensor | None = None,
    clip_weight: float = 1.0,
) -> SegmentResult:
    """Two-stage segmentation of one image ``[3,H,W]`` with proposals ``[N,H,W]`` over C classes."""
    probs, valid = classify_masks(bundle, image, masks, text_emb=text_emb, prompt=prompt)
    probs = ensemble_probs(probs, proposal_probs, clip_weight)
    keep = valid if scores is None else valid & (scores > 0)
    label = paint_label_map(masks[keep], probs[keep], None if scores is None else scores[keep])
    return SegmentResult(label, probs, valid)
