"""OVSeg's open-vocabulary MaskFormer: backbone → FPN pixel decoder → DETR decoder on res5 → masks + CLIP-space classes.

Reused from ``transformers`` (the MaskFormer port, whose modules match detectron2's):

* ``MaskFormerPixelDecoder`` = detectron2 ``BasePixelDecoder``: 3x3 conv+GN+ReLU on res5, then per
  finer level a 1x1 lateral conv+GN, nearest upsampling, sum, 3x3 conv+GN+ReLU; a 3x3 conv gives
  the per-pixel mask features at stride 4.
* ``MaskFormerDetrDecoderLayer`` / ``MaskFormerDetrDecoder`` = DETR's post-norm decoder layer
  (self-attention with query positions on q,k; cross-attention with sine positions on the keys;
  ReLU FFN) and its final LayerNorm. Its own forward with ``auxiliary_loss`` feeds the normalised
  state into the next layer (detectron2 does not), so ``Predictor`` loops over the layers itself.
* ``MaskFormerSinePositionEmbedding`` = detectron2 ``PositionEmbeddingSine(normalize=True)``.

Written here (what differs from transformers' closed-vocabulary MaskFormer): the class head is an
MLP into the CLIP text space whose L2-normalised output is compared by cosine with the text
embeddings of any vocabulary plus a learned no-object embedding, times a temperature
(``exp(logit_scale)``; OVSeg: 100). Deep-supervision outputs come from every decoder layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.maskformer.configuration_maskformer import MaskFormerDetrConfig
from transformers.models.maskformer.modeling_maskformer import (
    MaskFormerDetrDecoder,
    MaskFormerPixelDecoder,
    MaskFormerSinePositionEmbedding,
)

from ovseg.maskformer.backbones import build_backbone
from ovseg.maskformer.config import MaskFormerSpec

#: Input sides must be multiples of this (the res5 stride); ``proposals`` pads to it.
SIZE_DIVISIBILITY = 32


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between (detectron2/DETR ``MLP``; keys ``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, *, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Predictor(nn.Module):
    """Queries attend to res5; every decoder layer's output becomes mask and class embeddings."""

    def __init__(self, *, in_channels: int, spec: MaskFormerSpec) -> None:
        super().__init__()
        hidden = spec.hidden_dim
        self.input_proj: nn.Module = (
            nn.Conv2d(in_channels, hidden, kernel_size=1) if in_channels != hidden else nn.Identity()
        )
        self.pe_layer = MaskFormerSinePositionEmbedding(num_position_features=hidden // 2, normalize=True)
        self.query_embed = nn.Embedding(spec.num_queries, hidden)
        self.decoder = MaskFormerDetrDecoder(
            MaskFormerDetrConfig(
                d_model=hidden,
                num_queries=spec.num_queries,
                decoder_layers=spec.dec_layers,
                decoder_attention_heads=spec.nheads,
                decoder_ffn_dim=spec.dim_feedforward,
                dropout=spec.dropout,
                attention_dropout=spec.dropout,
                activation_dropout=spec.dropout,
            )
        )
        self.mask_embed = MLP(hidden, hidden, spec.mask_dim, num_layers=3)
        self.class_embed = MLP(hidden, spec.class_embed_hidden_dim, spec.clip_text_dim, num_layers=spec.class_embed_layers)

    def forward(self, res5: torch.Tensor) -> torch.Tensor:
        """``res5 [B,C,h,w]`` → per-layer query states ``[L,B,Q,hidden]`` (each after the final LayerNorm)."""
        src = self.input_proj(res5)
        batch, channels, height, width = src.shape
        pos = self.pe_layer(src.shape, src.device, src.dtype).flatten(2).transpose(1, 2)  # [B,hw,C]
        memory = src.flatten(2).transpose(1, 2)  # [B,hw,C]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)  # [B,Q,C]
        hidden = torch.zeros_like(query_pos)
        states = []
        for layer in self.decoder.layers:
            hidden = layer(
                hidden,
                attention_mask=None,
                spatial_position_embeddings=pos,
                object_queries_position_embeddings=query_pos,
                encoder_hidden_states=memory,
            )
            states.append(self.decoder.layernorm(hidden))
        return torch.stack(states)


class OpenVocabMaskFormer(nn.Module):
    """MaskFormer whose classifier is the CLIP text embedding of any vocabulary.

    Buffers: ``pixel_mean`` / ``pixel_std`` ``[3,1,1]`` (0-255 scale, not saved) and
    ``train_text_embeddings`` ``[K,D]`` (saved: the vocabulary it was trained with, used by
    ``proposals`` when no vocabulary is given; ``[0,D]`` until set).
    """

    def __init__(self, *, spec: MaskFormerSpec, backbone: nn.Module, pixel_decoder: nn.Module, predictor: Predictor) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.no_object_embedding = nn.Parameter(torch.randn(1, spec.clip_text_dim) * spec.clip_text_dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(spec.logit_scale_init), requires_grad=spec.learn_temperature)
        self.register_buffer("pixel_mean", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("train_text_embeddings", torch.zeros(0, spec.clip_text_dim))
        self.reset_constants()

    def reset_constants(self) -> None:
        """(Re)fill the non-saved buffers from the spec, on the parameters' device (see ``maskformer_from_state``)."""
        device = self.logit_scale.device
        self.pixel_mean = torch.tensor(self.spec.pixel_mean, device=device).view(3, 1, 1)
        self.pixel_std = torch.tensor(self.spec.pixel_std, device=device).view(3, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` uint8 or float on the 0-255 scale (RGB) → normalised float."""
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def set_train_text_embeddings(self, text_embeddings: torch.Tensor) -> None:
        """Store the ``[K,D]`` training vocabulary (saved with the weights)."""
        self.train_text_embeddings = F.normalize(text_embeddings.detach().float(), dim=-1).to(self.pixel_mean.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "train_text_embeddings"
        if key in state_dict:  # its K differs per training vocabulary
            self.train_text_embeddings = torch.empty_like(state_dict[key], device=self.train_text_embeddings.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def classify(self, class_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """``[...,D]`` query class embeddings × ``[K,D]`` text → ``[...,K+1]`` logits (last = no object)."""
        text = torch.cat([F.normalize(text_embeddings, dim=-1), F.normalize(self.no_object_embedding, dim=-1)])
        return self.logit_scale.exp() * F.normalize(class_embeddings, dim=-1) @ text.to(class_embeddings.dtype).T

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> dict:
        """Predict masks and open-vocabulary classes.

        Args:
            images: ``[B,3,H,W]`` normalised (see ``normalize``); H, W multiples of 32.
            text_embeddings: ``[K,D]`` CLIP text embeddings (L2-normalised here again).

        Returns:
            ``pred_logits [B,Q,K+1]``, ``pred_masks [B,Q,H/4,W/4]`` (mask logits) and
            ``aux_outputs``: one dict with the same two keys per decoder layer before the last.
        """
        features = self.backbone(images)
        mask_features = self.pixel_decoder(features).last_hidden_state  # [B,mask_dim,H/4,W/4]
        states = self.predictor(features[-1])  # [L,B,Q,hidden]
        mask_embed = self.predictor.mask_embed(states)  # [L,B,Q,mask_dim]
        masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
        logits = self.classify(self.predictor.class_embed(states), text_embeddings)  # [L,B,Q,K+1]
        aux = [{"pred_logits": logits[i], "pred_masks": masks[i]} for i in range(len(states) - 1)]
        return {"pred_logits": logits[-1], "pred_masks": masks[-1], "aux_outputs": aux}

    @torch.no_grad()
    def proposals(
        self, images: torch.Tensor, text_embeddings: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-agnostic proposals.

        Args:
            images: ``[B,3,H,W]`` normalised, any H, W (zero-padded to multiples of 32 inside).
            text_embeddings: ``[K,D]`` vocabulary for p(no object); default ``train_text_embeddings``.

        Returns:
            ``masks [B,Q,H,W]`` sigmoid probabilities at image resolution and ``objectness [B,Q]``
            = 1 - softmax(pred_logits)[..., -1].
        """
        if text_embeddings is None:
            if self.train_text_embeddings.shape[0] == 0:
                raise ValueError("no vocabulary: pass text_embeddings or load weights that store train_text_embeddings")
            text_embeddings = self.train_text_embeddings
        height, width = images.shape[-2:]
        pad_h = -height % SIZE_DIVISIBILITY
        pad_w = -width % SIZE_DIVISIBILITY
        padded = F.pad(images, (0, pad_w, 0, pad_h))
        out = self.forward(padded, text_embeddings.to(images.device))
        masks = F.interpolate(out["pred_masks"], size=padded.shape[-2:], mode="bilinear", align_corners=False)
        masks = masks[..., :height, :width].sigmoid()
        objectness = 1.0 - out["pred_logits"].float().softmax(-1)[..., -1]
        return masks, objectness


def build_maskformer(spec: MaskFormerSpec) -> OpenVocabMaskFormer:
    """The one builder: backbone, pixel decoder and predictor from ``spec``, passed into the model."""
    backbone = build_backbone(spec)
    channels = list(backbone.channels)
    pixel_decoder = MaskFormerPixelDecoder(
        in_features=channels[-1],
        lateral_widths=channels[:-1],
        feature_size=spec.conv_dim,
        mask_feature_size=spec.mask_dim,
    )
    predictor = Predictor(in_channels=channels[-1], spec=spec)
    return OpenVocabMaskFormer(spec=spec, backbone=backbone, pixel_decoder=pixel_decoder, predictor=predictor)


def maskformer_from_state(
    spec: MaskFormerSpec, state: dict[str, torch.Tensor], *, device: str | torch.device = "cpu"
) -> OpenVocabMaskFormer:
    """``build_maskformer(spec)`` holding ``state`` (strict): built on the meta device and given the
    state's tensors (no random init, no copy: seconds instead of a minute for Swin-B on a CPU)."""
    with torch.device("meta"):
        model = build_maskformer(spec)
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_constants()
    return model.to(device)
