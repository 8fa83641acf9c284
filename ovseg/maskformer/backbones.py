"""Backbones that turn an image into the four feature maps ``res2..res5`` (strides 4, 8, 16, 32).

* ``ResNetBackbone``: timm's ``ResNet`` with the 3-conv deep stem, which is detectron2's DeepLab
  stem (``R101c``: 3x3 convs 3→64 (stride 2) → 64 → 128, then 3x3 max-pool stride 2) and, like
  detectron2 with ``STRIDE_IN_1X1=False``, the stride on the 3x3 conv of each bottleneck. The one
  thing timm lacks, DeepLab's res5 multi-grid (dilations 1, 2, 4 of the three res5 3x3 convs at
  stride 32), is set on the built convolutions.
* ``SwinBackbone``: transformers' ``MaskFormerSwinBackbone``, a port of detectron2's
  ``D2SwinTransformer`` made for MaskFormer: pads to the window size per stage and normalises each
  stage output with its own LayerNorm (``norm0..norm3`` in detectron2).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from transformers import MaskFormerSwinConfig
from transformers.models.maskformer.modeling_maskformer_swin import MaskFormerSwinBackbone

from ovseg.maskformer.config import MaskFormerSpec


class ResNetBackbone(nn.Module):
    """timm ResNet (deep stem) returning ``[res2, res3, res4, res5]``, each ``[B,C_i,H/s_i,W/s_i]``."""

    def __init__(self, spec: MaskFormerSpec) -> None:
        super().__init__()
        block = Bottleneck if spec.resnet_block == "bottleneck" else BasicBlock
        self.body = ResNet(
            block=block,
            layers=tuple(spec.resnet_layers),
            channels=tuple(spec.resnet_channels),
            stem_type="deep",
            stem_width=spec.resnet_stem_width,
            num_classes=0,
            global_pool="",
        )
        grid = spec.resnet_res5_multi_grid
        for i, res5_block in enumerate(self.body.layer4):
            conv = res5_block.conv2
            dilation = int(grid[i % len(grid)])
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2
        self.channels = [c * block.expansion for c in spec.resnet_channels]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B,3,H,W]`` → four maps at strides 4, 8, 16, 32."""
        body = self.body
        x = body.maxpool(body.act1(body.bn1(body.conv1(images))))
        features = []
        for stage in (body.layer1, body.layer2, body.layer3, body.layer4):
            x = stage(x)
            features.append(x)
        return features


class SwinBackbone(nn.Module):
    """transformers' MaskFormer Swin returning ``[res2, res3, res4, res5]`` (channels C, 2C, 4C, 8C)."""

    def __init__(self, spec: MaskFormerSpec) -> None:
        super().__init__()
        config = MaskFormerSwinConfig(
            image_size=spec.swin_pretrain_img_size,
            patch_size=4,
            embed_dim=spec.swin_embed_dim,
            depths=list(spec.swin_depths),
            num_heads=list(spec.swin_num_heads),
            window_size=spec.swin_window_size,
            drop_path_rate=spec.swin_drop_path_rate,
            use_absolute_embeddings=False,
            out_features=[f"stage{i + 1}" for i in range(len(spec.swin_depths))],
        )
        self.body = MaskFormerSwinBackbone(config)
        # The final LayerNorm of MaskFormerSwinModel only feeds its pooled output, which a backbone never
        # uses (D2SwinTransformer has no such norm): drop it so that every parameter has a checkpoint entry.
        self.body.model.layernorm = nn.Identity()
        self.channels = [spec.swin_embed_dim * 2**i for i in range(len(spec.swin_depths))]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B,3,H,W]`` → four maps at strides 4, 8, 16, 32 (padded inside as needed)."""
        return list(self.body(images).feature_maps)


def build_backbone(spec: MaskFormerSpec) -> ResNetBackbone | SwinBackbone:
    """The backbone named by ``spec.backbone``; ``.channels`` lists its four output widths."""
    return ResNetBackbone(spec) if spec.backbone == "resnet" else SwinBackbone(spec)
