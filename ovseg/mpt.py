"""Mask prompt tuning (MPT, OVSeg §3.3) as a wrapper around open_clip's ``VisionTransformer``.

A masked crop fed to CLIP has large blank (mean-filled) areas. MPT replaces the patch tokens of
those areas by learnable *mask tokens* so that CLIP need not be re-trained to ignore them:

* ``mask_embedding`` has shape ``[depth, grid_h * grid_w, width]`` (OVSeg ViT-L/14 @ 224 px:
  ``[3, 256, 1024]``).
* The binary mask ``[B,1,H,W]`` is pooled to the patch grid ``[B, grid_h * grid_w]``; a patch is
  *masked* only when **no** pixel of it lies inside the mask (OVSeg: ``ceil(avg_pool(mask))``).
* Masked patch tokens are *replaced* (not prepended) by ``mask_embedding[0]`` right after the patch
  embedding (before the class token and the positional embedding are added), and by
  ``mask_embedding[d]`` right after transformer block ``d`` for ``d = 1 .. depth-1``. The class token
  is never replaced.
* With an all-ones mask (or ``masks=None``) nothing is replaced and the output equals plain CLIP.

OVSeg initialises the prompt with ``normal(std=0.02)`` in its tuning code (its inference copy of
CLIP starts from zeros, which is overwritten by the checkpoint); ``init="normal"`` is the default.

Only ``VisionTransformer`` image towers (every open_clip ``ViT-*`` config, custom ones included)
are supported; timm / ModifiedResNet towers raise ``TypeError``.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

InitMode = Literal["normal", "zeros"]
#: OVSeg's std for ``normal`` initialisation of the mask prompt (MAE-style).
OVSEG_INIT_STD = 0.02


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def patch_keep_mask(masks: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Pool a pixel mask to the patch grid.

    Args:
        masks: ``[B,1,H,W]`` or ``[B,H,W]``; bool, or float where ``> 0.5`` counts as inside.
        patch_size: ``(ph, pw)`` of the ViT.

    Returns:
        ``[B, (H//ph) * (W//pw)]`` bool in row-major patch order; ``True`` = keep the image token
        (at least one pixel of the patch is inside the mask), ``False`` = replace by a mask token.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be [B,1,H,W] or [B,H,W], got {tuple(masks.shape)}")
    inside = masks if masks.dtype == torch.bool else masks > 0.5
    pooled = F.max_pool2d(inside.float(), kernel_size=patch_size, stride=patch_size)
    return pooled.flatten(1) > 0


def check_vit(visual: nn.Module) -> None:
    """Raise ``TypeError`` unless ``visual`` is an open_clip ``VisionTransformer``."""
    if not isinstance(visual, VisionTransformer):
        raise TypeError(
            f"mask prompt tuning needs an open_clip VisionTransformer, got {type(visual).__name__}"
        )


class MaskPrompt(nn.Module):
    """The learnable mask prompt and the prompted forward of an open_clip ViT.

    The prompt does not own the tower: :meth:`forward` takes it as an argument, so a CLIP model
    and its prompt keep separate, non-duplicated state-dict keys (``mask_embedding`` here).

    Args:
        visual: the open_clip ``VisionTransformer`` the prompt is made for (sizes are read from it).
        depth: number of replacement points (1 = only after the patch embedding); ``1..layers``.
        init: ``"normal"`` (OVSeg, ``std=init_std``) or ``"zeros"``.
        init_std: std for ``init="normal"``.
    """

    def __init__(
        self,
        visual: nn.Module,
        depth: int = 3,
        init: InitMode = "normal",
        *,
        init_std: float = OVSEG_INIT_STD,
    ) -> None:
        super().__init__()
        check_vit(visual)
        layers = len(visual.transformer.resblocks)
        if not 1 <= depth <= layers:
            raise ValueError(f"mask prompt depth must be in 1..{layers} (tower layers), got {depth}")
        self.depth = depth
        self.patch_size = _pair(visual.patch_size)
        self.grid_size = _pair(visual.grid_size)
        self.image_size = _pair(visual.image_size)
        self.width = int(visual.conv1.out_channels)
        n_tokens = self.grid_size[0] * self.grid_size[1]
        self.mask_embedding = nn.Parameter(torch.zeros(depth, n_tokens, self.width))
        self.reset_parameters(init, init_std)

    def reset_parameters(self, init: InitMode = "normal", std: float = OVSEG_INIT_STD) -> None:
        """(Re)initialise ``mask_embedding`` in place: ``normal(0, std)`` or zeros."""
        with torch.no_grad():
            if init == "normal":
                nn.init.normal_(self.mask_embedding, std=std)
            elif init == "zeros":
                self.mask_embedding.zero_()
            else:
                raise ValueError(f"unknown mask prompt init {init!r} (normal | zeros)")

    def keep_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B,1,H,W]``/``[B,H,W]`` pixel masks → ``[B, grid²]`` bool, True = keep image token."""
        keep = patch_keep_mask(masks, self.patch_size)
        if keep.shape[1] != self.mask_embedding.shape[1]:
            raise ValueError(
                f"mask pools to {keep.shape[1]} patches, the prompt has {self.mask_embedding.shape[1]}"
                f" (mask size must equal the image size {self.image_size})"
            )
        return keep

    def _replace(self, tokens: torch.Tensor, keep: torch.Tensor, level: int) -> torch.Tensor:
        """Replace patch tokens ``[B, grid², width]`` where ``keep`` ``[B, grid², 1]`` is False."""
        prompt = self.mask_embedding[level].to(tokens.dtype).unsqueeze(0)  # [1, grid², width]
        return torch.where(keep, tokens, prompt)

    @staticmethod
    def _run_block(visual: nn.Module, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One residual block on NLD tokens, honouring the tower's layout and grad checkpointing."""
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        if visual.transformer.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(lambda t: block(t, attn_mask=None), x, use_reentrant=False)
        else:
            x = block(x, attn_mask=None)
        return x if batch_first else x.transpose(0, 1)

    def forward(
        self, visual: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image features of ``visual`` with mask prompts.

        Args:
            visual: the open_clip ``VisionTransformer`` this prompt was built for.
            images: ``[B,3,S,S]`` normalised images (S = the tower's image size).
            masks: ``[B,1,S,S]`` or ``[B,S,S]`` (bool; float > 0.5 = inside), or ``None`` for
                plain CLIP.

        Returns:
            ``[B,D]`` un-normalised image features (equal to ``visual(images)`` when no patch is
            masked).
        """
        if masks is None:
            out = visual(images)
            return out[0] if visual.output_tokens else out
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        if visual.training and not isinstance(visual.patch_dropout, nn.Identity):
            raise ValueError("mask prompts need every patch token: disable patch_dropout")
        keep = self.keep_mask(masks).unsqueeze(-1)  # [B, grid², 1]

        x = visual.conv1(images)  # [B, width, gh, gw]
        x = x.flatten(2).transpose(1, 2)  # [B, grid², width]
        x = self._replace(x, keep, 0)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # [B, 1 + grid², width]
        x = x + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)

        for index, block in enumerate(visual.transformer.resblocks):
            x = self._run_block(visual, block, x)
            level = index + 1  # x is now the output of block `level` (1-based)
            if level < self.depth:
                x = torch.cat([x[:, :1], self._replace(x[:, 1:], keep, level)], dim=1)

        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled


class MaskPromptedViT(nn.Module):
    """A stand-alone prompted image tower: ``visual`` (open_clip ViT) + ``prompt`` (:class:`MaskPrompt`).

    For segmentation / notebooks: ``MaskPromptedViT(clip.visual, depth=3)(images, masks) -> [B,D]``.
    """

    def __init__(
        self,
        visual: nn.Module,
        depth: int = 3,
        init: InitMode = "normal",
        *,
        init_std: float = OVSEG_INIT_STD,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.prompt = MaskPrompt(visual, depth=depth, init=init, init_std=init_std)

    @property
    def mask_embedding(self) -> nn.Parameter:
        """``[depth, grid², width]`` learnable mask prompt."""
        return self.prompt.mask_embedding

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """``[B,3,S,S]`` images + ``[B,1,S,S]``/``[B,S,S]`` masks → ``[B,D]`` (un-normalised)."""
        return self.prompt(self.visual, images, masks)


class MaskPromptCLIP(nn.Module):
    """An open_clip ``CLIP`` whose image tower takes mask prompts.

    Holds the CLIP model (``clip``) and a :class:`MaskPrompt` (``prompt``); state-dict keys are
    ``clip.*`` and ``prompt.mask_embedding``.

    Args:
        clip_model: open_clip ``CLIP`` with a ``VisionTransformer`` image tower.
        depth / init / init_std: see :class:`MaskPromptedViT`.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        depth: int = 3,
        init: InitMode = "normal",
        *,
        init_std: float = OVSEG_INIT_STD,
    ) -> None:
        super().__init__()
        self.clip = clip_model
        self.prompt = MaskPrompt(clip_model.visual, depth=depth, init=init, init_std=init_std)

    @property
    def mask_embedding(self) -> nn.Parameter:
        """``[depth, grid², width]`` learnable mask prompt."""
        return self.prompt.mask_embedding

    @property
    def logit_scale(self) -> nn.Parameter:
        """Scalar log temperature of the CLIP model."""
        return self.clip.logit_scale

    def encode_image(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """``[B,3,S,S]`` images (+ ``[B,1,S,S]``/``[B,S,S]`` masks) → ``[B,D]`` features."""
        feats = self.prompt(self.clip.visual, images, masks)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``[K, context_length]`` token ids → ``[K,D]`` text features."""
        return self.clip.encode_text(tokens, normalize=normalize)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`encode_image` (normalised)."""
        return self.encode_image(images, masks)

    def set_trainable(self, mode: str, train_logit_scale: bool = True) -> list[str]:
        """Freeze/unfreeze parameters for a tuning mode; returns the trainable parameter names.

        * ``mpt``: only ``mask_embedding`` (and ``logit_scale`` if asked).
        * ``finetune``: the whole image tower (text tower frozen); the prompt is frozen.
        * ``finetune+mpt``: the image tower and the prompt (text frozen). OVSeg's FT→MPT recipe is
          two runs: ``finetune`` then ``mpt`` starting from the fine-tuned weights.
        """
        if mode not in ("mpt", "finetune", "finetune+mpt"):
            raise ValueError(f"unknown tuning mode {mode!r} (mpt | finetune | finetune+mpt)")
        for p in self.parameters():
            p.requires_grad_(False)
        if mode in ("finetune", "finetune+mpt"):
            for p in self.clip.visual.parameters():
                p.requires_grad_(True)
        self.mask_embedding.requires_grad_(mode in ("mpt", "finetune+mpt"))
        self.clip.logit_scale.requires_grad_(train_logit_scale)
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        log.info("tuning mode %s: %d trainable tensors", mode, len(names))
        return names
