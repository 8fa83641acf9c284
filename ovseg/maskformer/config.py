"""``MaskFormerSpec``: the one description of an open-vocabulary MaskFormer, and its named presets.

The presets ``ovseg-swin-base`` and ``ovseg-r101c`` are OVSeg's two released proposal models
(``configs/ovseg_swinB_vitL_bs32_120k.yaml`` and ``configs/ovseg_R101c_vitB_bs32_120k.yaml`` of
facebookresearch/ov-seg); ``world-tiny`` is a small model that trains on 2 CPU cores at 128 px.
A spec round-trips through a plain dict (``spec_to_dict`` / ``spec_from_dict``) so that it can be
saved next to the weights and loaded with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

#: ImageNet mean / std on the 0-255 scale (OVSeg's ``PIXEL_MEAN`` / ``PIXEL_STD``).
IMAGENET_MEAN_255 = (123.675, 116.280, 103.530)
IMAGENET_STD_255 = (58.395, 57.120, 57.375)


@dataclass(frozen=True, kw_only=True)
class MaskFormerSpec:
    """Architecture of an ``OpenVocabMaskFormer`` (defaults: OVSeg's R101c model)."""

    backbone: Literal["resnet", "swin"] = "resnet"  # "resnet": timm ResNet with DeepLab stem; "swin": Swin (D2 layout)
    # --- ResNet backbone (backbone="resnet")
    resnet_block: Literal["bottleneck", "basic"] = "bottleneck"  # residual block type
    resnet_layers: tuple[int, ...] = (3, 4, 23, 3)  # blocks per stage res2..res5 (R101)
    resnet_channels: tuple[int, ...] = (64, 128, 256, 512)  # base widths per stage (bottleneck output = 4x)
    resnet_stem_width: int = 64  # DeepLab stem: three 3x3 convs with widths (w, w, 2w), then max-pool
    resnet_res5_multi_grid: tuple[int, ...] = (1, 2, 4)  # dilation of the 3x3 conv of each res5 block (cycled)
    # --- Swin backbone (backbone="swin")
    swin_embed_dim: int = 128  # channels of stage 1 (doubles per stage)
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)  # blocks per stage
    swin_num_heads: tuple[int, ...] = (4, 8, 16, 32)  # attention heads per stage
    swin_window_size: int = 12  # attention window (OVSeg: 12, pretrained at 384 px)
    swin_pretrain_img_size: int = 384  # image size the Swin was pretrained at (sets patch grid metadata only)
    swin_drop_path_rate: float = 0.3  # stochastic depth at the last block
    # --- pixel decoder (detectron2 BasePixelDecoder = transformers MaskFormerPixelDecoder)
    conv_dim: int = 256  # FPN channels (GroupNorm with 32 groups: multiple of 32)
    mask_dim: int = 256  # channels of the per-pixel mask embedding at stride 4
    # --- transformer decoder (DETR decoder on res5, post-norm)
    hidden_dim: int = 256  # query / decoder width
    num_queries: int = 100  # object queries = proposals per image
    dec_layers: int = 6  # decoder layers (each gives an auxiliary output except the last)
    nheads: int = 8  # attention heads
    dim_feedforward: int = 2048  # FFN width
    dropout: float = 0.1  # dropout in attention and FFN
    # --- open-vocabulary class head
    clip_text_dim: int = 512  # CLIP text embedding dim (ViT-B/16: 512, ViT-L/14: 768)
    class_embed_hidden_dim: int = 1024  # hidden width of the class-embedding MLP (OVSeg EMBED_HIDDEN_DIM)
    class_embed_layers: int = 2  # layers of the class-embedding MLP (OVSeg EMBED_LAYERS)
    temperature: float = 100.0  # logits = temperature x cosine (OVSeg: fixed 100); stored as log
    learn_temperature: bool = False  # make the log-temperature a trained parameter
    # --- input normalisation (0-255 scale, RGB)
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN_255  # per-channel mean
    pixel_std: tuple[float, float, float] = IMAGENET_STD_255  # per-channel std

    @property
    def logit_scale_init(self) -> float:
        """``log(temperature)``, the initial value of the model's ``logit_scale``."""
        return math.log(self.temperature)

    def __post_init__(self) -> None:
        if self.backbone not in ("resnet", "swin"):
            raise ValueError(f"backbone must be 'resnet' or 'swin', got {self.backbone!r}")
        if self.conv_dim % 32:
            raise ValueError(f"conv_dim must be a multiple of 32 (GroupNorm(32)), got {self.conv_dim}")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim {self.hidden_dim} not divisible by nheads {self.nheads}")


SPECS: dict[str, MaskFormerSpec] = {
    # OVSeg's Swin-B model (ovseg_swinbase_vitL14_ft_mpt.pth): CLIP ViT-L/14 text dim 768.
    "ovseg-swin-base": MaskFormerSpec(backbone="swin", clip_text_dim=768),
    # OVSeg's R101c model (ovseg_R101c_vitB16_ft_mpt.pth): CLIP ViT-B/16 text dim 512.
    "ovseg-r101c": MaskFormerSpec(backbone="resnet", clip_text_dim=512),
    # A few-M-parameter model for the procedural world (128 px images, res5 = 4x4 cells).
    "world-tiny": MaskFormerSpec(
        backbone="resnet",
        resnet_block="basic",
        resnet_layers=(1, 1, 2, 1),
        resnet_channels=(32, 64, 128, 256),
        resnet_stem_width=16,
        resnet_res5_multi_grid=(1,),
        conv_dim=64,
        mask_dim=64,
        hidden_dim=128,
        num_queries=48,
        dec_layers=4,
        nheads=4,
        dim_feedforward=256,
        dropout=0.0,
        clip_text_dim=128,  # the world CLIP (ovseg/model_configs/world-clip.json embed_dim)
        class_embed_hidden_dim=256,
        class_embed_layers=2,
        temperature=50.0,
        learn_temperature=True,
    ),
}


def spec_to_dict(spec: MaskFormerSpec) -> dict[str, Any]:
    """Plain-dict form (tuples become lists) for saving next to the weights."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def spec_from_dict(data: dict[str, Any]) -> MaskFormerSpec:
    """Inverse of ``spec_to_dict``; unknown keys raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(MaskFormerSpec)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"unknown MaskFormerSpec fields: {sorted(unknown)}")
    return MaskFormerSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def get_spec(name: str, **overrides: Any) -> MaskFormerSpec:
    """Preset ``name`` with field overrides, e.g. ``get_spec("world-tiny", clip_text_dim=256)``."""
    if name not in SPECS:
        raise KeyError(f"unknown MaskFormer spec {name!r}; known: {sorted(SPECS)}")
    return dataclasses.replace(SPECS[name], **overrides)
