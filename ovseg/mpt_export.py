"""Export a tuned mask prompt: a small portable file, and the OVSeg checkpoint layout.

Portable file (``torch.load(path, weights_only=True)`` works; plain containers and tensors)::

    {"format": "ovseg-mpt/1", "mask_embedding": [depth, grid², width] float32,
     "clip_model": "ViT-B-16", "pretrained": "openai" | None, "clip_checkpoint": path | None,
     "depth": 3, "image_size": 224, "patch_size": 16, "grid_size": [14, 14], "width": 768,
     "logit_scale": 4.6, "mode": "mpt", "meta": {...}}

``clip_checkpoint`` names a CLIP state dict next to the file (relative) or anywhere (absolute) when
the weights are not a public pretrained tag left untouched (fine-tuned tower, local checkpoint,
random init); otherwise CLIP is rebuilt from ``clip_model`` + ``pretrained``.

OVSeg layout: OVSeg (facebookresearch/ov-seg) keeps its CLIP under ``clip_adapter.clip_model.`` in
the detectron2 checkpoint's ``"model"`` dict, with the prompt at
``clip_adapter.clip_model.visual.mask_embedding`` (and ``MODEL.CLIP_ADAPTER.MASK_PROMPT_FWD True``,
``MODEL.CLIP_ADAPTER.MASK_PROMPT_DEPTH = depth`` in its config). open_clip ViT parameter names equal
OpenAI CLIP's, which OVSeg uses, so the tuned tower maps one-to-one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ovseg.atomic import save_torch
from ovseg.mpt import MaskPromptCLIP

log = logging.getLogger(__name__)

FORMAT = "ovseg-mpt/1"
OVSEG_PREFIX = "clip_adapter.clip_model."
OVSEG_MASK_KEY = OVSEG_PREFIX + "visual.mask_embedding"


@dataclass
class PromptExport:
    """Content of a portable prompt file."""

    mask_embedding: torch.Tensor  # [depth, grid², width]
    clip_model: str
    pretrained: str | None
    clip_checkpoint: str | None
    depth: int
    image_size: int
    patch_size: int
    grid_size: tuple[int, int]
    width: int
    logit_scale: float
    mode: str = "mpt"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "mask_embedding": self.mask_embedding.detach().float().cpu().contiguous(),
            "clip_model": self.clip_model, "pretrained": self.pretrained,
            "clip_checkpoint": self.clip_checkpoint, "depth": self.depth,
            "image_size": self.image_size, "patch_size": self.patch_size,
            "grid_size": list(self.grid_size), "width": self.width,
            "logit_scale": self.logit_scale, "mode": self.mode, "meta": dict(self.meta),
        }


def describe(
    model: MaskPromptCLIP,
    clip_model: str,
    pretrained: str | None,
    *,
    clip_checkpoint: str | None = None,
    mode: str = "mpt",
    meta: dict[str, Any] | None = None,
) -> PromptExport:
    """Collect what is needed to rebuild ``model``'s prompt."""
    prompt = model.prompt
    return PromptExport(
        mask_embedding=prompt.mask_embedding.detach().float().cpu().clone(),
        clip_model=clip_model, pretrained=pretrained, clip_checkpoint=clip_checkpoint,
        depth=prompt.depth, image_size=prompt.image_size[0], patch_size=prompt.patch_size[0],
        grid_size=prompt.grid_size, width=prompt.width,
        logit_scale=float(model.logit_scale.detach().float()), mode=mode, meta=meta or {},
    )


def save_prompt(export: PromptExport, path: str | Path) -> Path:
    """Write the portable prompt file (``torch.save`` of plain containers, atomically)."""
    return save_torch(export.to_dict(), path)


def load_prompt(path: str | Path) -> PromptExport:
    """Read a portable prompt file (``weights_only=True``)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not an exported mask prompt ({FORMAT})")
    obj = {k: v for k, v in obj.items() if k != "format"}
    obj["grid_size"] = tuple(obj["grid_size"])
    return PromptExport(**obj)


def build_prompted_clip(export: PromptExport, clip_model: torch.nn.Module) -> MaskPromptCLIP:
    """Wrap an already built CLIP (``export.clip_model``) and load the exported prompt into it."""
    model = MaskPromptCLIP(clip_model, depth=export.depth, init="zeros")
    if model.mask_embedding.shape != export.mask_embedding.shape:
        raise ValueError(
            f"prompt {tuple(export.mask_embedding.shape)} does not fit {export.clip_model}: "
            f"expected {tuple(model.mask_embedding.shape)}"
        )
    with torch.no_grad():
        model.mask_embedding.copy_(export.mask_embedding)
        model.logit_scale.fill_(export.logit_scale)
    return model


def load_prompted_clip(
    path: str | Path, loader: Callable[..., Any] | None = None, device: str = "cpu"
) -> tuple[MaskPromptCLIP, Any]:
    """Rebuild CLIP + prompt from a prompt file: ``model, bundle = load_prompted_clip("mpt_prompt.pt")``.

    Args:
        loader: ``(name, pretrained=, checkpoint=, device=) -> bundle``; default ``ovseg.clip.load_clip``.

    Returns:
        the prompted model and the bundle (tokenizer, mean/std, ...).
    """
    if loader is None:
        from ovseg.clip import load_clip as loader
    export = load_prompt(path)
    checkpoint = export.clip_checkpoint
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str(Path(path).parent / checkpoint)
    pretrained = None if checkpoint is not None else export.pretrained  # the file has all weights
    bundle = loader(export.clip_model, pretrained=pretrained, checkpoint=checkpoint, device=device)
    return build_prompted_clip(export, bundle.model).to(device), bundle


def ovseg_state_dict(
    mask_embedding: torch.Tensor | None, clip_state_dict: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """OVSeg ``"model"`` entries: ``clip_adapter.clip_model.visual.mask_embedding`` (when a prompt
    is given) and every CLIP parameter under ``clip_adapter.clip_model.`` (for a tuned tower)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in (clip_state_dict or {}).items():
        out[OVSEG_PREFIX + key.removeprefix("module.")] = value.detach().cpu()
    if mask_embedding is not None:
        out[OVSEG_MASK_KEY] = mask_embedding.detach().float().cpu().contiguous()
    return out


def save_ovseg(
    path: str | Path,
    mask_embedding: torch.Tensor | None,
    clip_state_dict: dict[str, torch.Tensor] | None = None,
    *,
    base_checkpoint: str | Path | None = None,
) -> Path:
    """Write ``{"model": {...}}`` in OVSeg's layout.

    With ``base_checkpoint`` (an OVSeg ``.pth``), its ``"model"`` entries are kept and the CLIP
    entries replaced (what OVSeg's ``tools/ovseg_replace_clip.py`` does); keys the base lacks are
    reported, the mask prompt (if given) is always set.
    """
    entries = ovseg_state_dict(mask_embedding, clip_state_dict)
    if base_checkpoint is not None:
        base = torch.load(base_checkpoint, map_location="cpu", weights_only=True)
        model = dict(base["model"])
        absent = [k for k in entries if k not in model and k != OVSEG_MASK_KEY]
        if absent:
            log.warning("%d CLIP keys are not in %s, e.g. %s", len(absent), base_checkpoint, absent[:3])
        model.update(entries)
        out = dict(base, model=model)
    else:
        out = {"model": entries}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return path
