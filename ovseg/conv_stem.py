"""A convolutional patch stem for open_clip ViTs that keeps the patch-token grid.

A ViT trained from scratch on a few thousand small images learns object shapes far better with a
few strided convolutions in front of the transformer than with a single patchify convolution
(Xiao et al., *Early Convolutions Help Transformers See Better*, 2021). :class:`ConvStem` replaces
``visual.conv1`` of an open_clip ``VisionTransformer``: ``log2(patch_size)`` stride-2 3×3
convolutions map ``[B,3,S,S]`` to the same ``[B,width,S/p,S/p]`` token grid the patchify
convolution made, so mask prompt tuning (``ovseg.mpt``), which replaces tokens per grid cell,
wraps it unchanged.

Which open_clip model configs get the stem is data: :data:`CONV_STEM_MODELS` maps a config name to
its stem's channel plan, and :func:`apply_conv_stem` is called by :func:`ovseg.clip.load_clip`
(and the world-CLIP trainer) right after ``open_clip.create_model``, so every job builds the same
module from the model name alone.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConvStem", "CONV_STEM_MODELS", "apply_conv_stem"]

#: open_clip config name -> hidden channels of the stem's stride-2 convolutions (all but the last,
#: whose output has the tower's width). The number of convolutions is log2(patch_size).
CONV_STEM_MODELS: dict[str, tuple[int, ...]] = {
    "world-clip": (32, 64),
}


class ConvStem(nn.Module):
    """Stride-2 3×3 conv → BatchNorm-free GroupNorm → GELU, repeated; a 1×1 projection to ``width``.

    Args:
        width: channels of the output tokens (the transformer width).
        patch_size: total stride; must be a power of two (e.g. 8 = three stride-2 convolutions).
        hidden: channels after each stride-2 convolution but the last (``log2(patch_size) - 1`` values).

    Shapes: ``[B,3,S,S]`` → ``[B,width,S/patch_size,S/patch_size]``.
    """

    def __init__(self, width: int, patch_size: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        n = int(round(math.log2(patch_size)))
        if 2**n != patch_size or n < 1:
            raise ValueError(f"conv stem needs a power-of-two patch size, got {patch_size}")
        if len(hidden) != n - 1:
            raise ValueError(f"patch size {patch_size} needs {n - 1} hidden channel counts, got {hidden}")
        chans = (3, *hidden, width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(1 if c_out < 8 else 8, c_out), nn.GELU()]
        layers.append(nn.Conv2d(width, width, 1))
        self.layers = nn.Sequential(*layers)
        self.out_channels = width
        self.stride = patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,S,S]`` normalised images → ``[B,width,S/p,S/p]`` patch tokens."""
        return self.layers(images)


def apply_conv_stem(model: nn.Module, model_name: str) -> nn.Module:
    """Swap ``model.visual.conv1`` for a :class:`ConvStem` when ``model_name`` is listed.

    Returns the model (changed in place). Models not in :data:`CONV_STEM_MODELS` are untouched.
    """
    hidden = CONV_STEM_MODELS.get(model_name)
    if hidden is None:
        return model
    visual = model.visual
    patch = visual.patch_size
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    ref = visual.conv1.weight
    stem = ConvStem(int(visual.conv1.out_channels), patch, hidden)
    visual.conv1 = stem.to(device=ref.device, dtype=ref.dtype)
    return model
