"""Write the expected parameter names and shapes of OVSeg's released checkpoints (test assets).

``ovseg_swinbase_vitL14_ft_mpt.pth`` and ``ovseg_R101c_vitB16_ft_mpt.pth`` hold a detectron2
``{"model": state_dict}`` of OVSeg's ``OVSeg`` meta-architecture. The names and shapes below are
derived from the public facebookresearch/ov-seg code and configs (facts, not code):

* ``configs/ovseg_swinB_vitL_bs32_120k.yaml`` / ``configs/ovseg_R101c_vitB_bs32_120k.yaml``:
  Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32, window 12) or DeepLab R101 (stem 128,
  FrozenBN by detectron2 default), CONVS_DIM = MASK_DIM = HIDDEN_DIM = 256, 100 queries,
  6 decoder layers (no encoder), FFN 2048, EMBEDDING_DIM 768 / 512, EMBED_LAYERS 2 with
  EMBED_HIDDEN_DIM 1024 (``open_vocab_seg/config.py``), NUM_CLASSES 171, CLIP ViT-L/14 / ViT-B/16
  with MASK_PROMPT_DEPTH 3.
* ``open_vocab_seg/modeling/backbone/swin.py`` (``D2SwinTransformer``: qkv fused, ``norm{i}`` per
  output, downsample at the end of stages 0-2), detectron2 ``projects/DeepLab`` ``DeepLabStem`` +
  ``BottleneckBlock`` (``shortcut``/``conv1..3`` each with ``.norm``),
  ``modeling/heads/pixel_decoder.py`` (``BasePixelDecoder``: ``adapter_{1..3}``, ``layer_{1..4}``,
  ``mask_features``), ``modeling/transformer/{transformer,transformer_predictor,
  open_vocab_transformer_predictor}.py`` (DETR decoder with ``nn.MultiheadAttention``,
  ``query_embed``, ``input_proj``, ``mask_embed`` and the MLP ``class_embed``),
  ``modeling/criterion.py`` (``empty_weight`` buffer [NUM_CLASSES+1]),
  ``modeling/clip_adapter/adapter.py`` (``non_object_embedding`` [1, D], persistent
  ``pixel_mean``/``pixel_std`` [1,3,1,1], the CLIP under ``clip_model``) and
  ``third_party/CLIP/clip/model.py`` (OpenAI CLIP layout plus ``visual.mask_embedding``
  [depth, grid², width]).

Run ``python tests/assets/make_ovseg_checkpoint_names.py`` to rewrite the two JSON files.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def _norm(prefix: str, dim: int, *, frozen_bn: bool = False) -> dict[str, list[int]]:
    keys = ("weight", "bias", "running_mean", "running_var") if frozen_bn else ("weight", "bias")
    return {f"{prefix}.{k}": [dim] for k in keys}


def swin_backbone(*, embed: int = 128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), window: int = 12) -> dict:
    out = {"backbone.patch_embed.proj.weight": [embed, 3, 4, 4], "backbone.patch_embed.proj.bias": [embed]}
    out.update(_norm("backbone.patch_embed.norm", embed))
    table = (2 * window - 1) ** 2
    for i, (depth, nh) in enumerate(zip(depths, heads)):
        dim = embed * 2**i
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}"
            out.update(_norm(f"{p}.norm1", dim))
            out[f"{p}.attn.relative_position_bias_table"] = [table, nh]
            out[f"{p}.attn.relative_position_index"] = [window * window, window * window]
            out[f"{p}.attn.qkv.weight"] = [3 * dim, dim]
            out[f"{p}.attn.qkv.bias"] = [3 * dim]
            out[f"{p}.attn.proj.weight"] = [dim, dim]
            out[f"{p}.attn.proj.bias"] = [dim]
            out.update(_norm(f"{p}.norm2", dim))
            out[f"{p}.mlp.fc1.weight"] = [4 * dim, dim]
            out[f"{p}.mlp.fc1.bias"] = [4 * dim]
            out[f"{p}.mlp.fc2.weight"] = [dim, 4 * dim]
            out[f"{p}.mlp.fc2.bias"] = [dim]
        if i < len(depths) - 1:
            out[f"backbone.layers.{i}.downsample.reduction.weight"] = [2 * dim, 4 * dim]
            out.update(_norm(f"backbone.layers.{i}.downsample.norm", 4 * dim))
    for i in range(len(depths)):
        out.update(_norm(f"backbone.norm{i}", embed * 2**i))
    return out


def deeplab_resnet_backbone(*, blocks=(3, 4, 23, 3), stem_out: int = 128) -> dict:
    out: dict[str, list[int]] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        out[f"backbone.{name}.weight"] = [c_out, c_in, k, k]
        out.update(_norm(f"backbone.{name}.norm", c_out, frozen_bn=True))

    conv("stem.conv1", stem_out // 2, 3, 3)
    conv("stem.conv2", stem_out // 2, stem_out // 2, 3)
    conv("stem.conv3", stem_out, stem_out // 2, 3)
    c_in, bottleneck = stem_out, 64
    for s, n in enumerate(blocks):
        c_out = bottleneck * 4
        for j in range(n):
            p = f"res{s + 2}.{j}"
            if j == 0:
                conv(f"{p}.shortcut", c_out, c_in, 1)
            conv(f"{p}.conv1", bottleneck, c_in if j == 0 else c_out, 1)
            conv(f"{p}.conv2", bottleneck, bottleneck, 3)
            conv(f"{p}.conv3", c_out, bottleneck, 1)
        c_in, bottleneck = c_out, bottleneck * 2
    return out


def pixel_decoder(channels: list[int], *, conv_dim: int = 256, mask_dim: int = 256) -> dict:
    p = "sem_seg_head.pixel_decoder"
    out: dict[str, list[int]] = {}
    for idx, c in enumerate(channels, start=1):
        if idx < len(channels):
            out[f"{p}.adapter_{idx}.weight"] = [conv_dim, c, 1, 1]
            out.update(_norm(f"{p}.adapter_{idx}.norm", conv_dim))
            out[f"{p}.layer_{idx}.weight"] = [conv_dim, conv_dim, 3, 3]
        else:
            out[f"{p}.layer_{idx}.weight"] = [conv_dim, c, 3, 3]
        out.update(_norm(f"{p}.layer_{idx}.norm", conv_dim))
    out[f"{p}.mask_features.weight"] = [mask_dim, conv_dim, 3, 3]
    out[f"{p}.mask_features.bias"] = [mask_dim]
    return out


def predictor(in_channels: int, *, embedding_dim: int, hidden: int = 256, ffn: int = 2048, layers: int = 6,
              queries: int = 100, mask_dim: int = 256, embed_hidden: int = 1024) -> dict:
    p = "sem_seg_head.predictor"
    out = {f"{p}.query_embed.weight": [queries, hidden],
           f"{p}.input_proj.weight": [hidden, in_channels, 1, 1], f"{p}.input_proj.bias": [hidden]}
    for i in range(layers):
        q = f"{p}.transformer.decoder.layers.{i}"
        for attn in ("self_attn", "multihead_attn"):
            out[f"{q}.{attn}.in_proj_weight"] = [3 * hidden, hidden]
            out[f"{q}.{attn}.in_proj_bias"] = [3 * hidden]
            out[f"{q}.{attn}.out_proj.weight"] = [hidden, hidden]
            out[f"{q}.{attn}.out_proj.bias"] = [hidden]
        out[f"{q}.linear1.weight"] = [ffn, hidden]
        out[f"{q}.linear1.bias"] = [ffn]
        out[f"{q}.linear2.weight"] = [hidden, ffn]
        out[f"{q}.linear2.bias"] = [hidden]
        for n in (1, 2, 3):
            out.update(_norm(f"{q}.norm{n}", hidden))
    out.update(_norm(f"{p}.transformer.decoder.norm", hidden))
    for i, (a, b) in enumerate([(hidden, hidden), (hidden, hidden), (hidden, mask_dim)]):
        out[f"{p}.mask_embed.layers.{i}.weight"] = [b, a]
        out[f"{p}.mask_embed.layers.{i}.bias"] = [b]
    for i, (a, b) in enumerate([(hidden, embed_hidden), (embed_hidden, embedding_dim)]):
        out[f"{p}.class_embed.layers.{i}.weight"] = [b, a]
        out[f"{p}.class_embed.layers.{i}.bias"] = [b]
    return out


def _clip_blocks(prefix: str, width: int, layers: int) -> dict:
    out: dict[str, list[int]] = {}
    for i in range(layers):
        q = f"{prefix}.resblocks.{i}"
        out[f"{q}.attn.in_proj_weight"] = [3 * width, width]
        out[f"{q}.attn.in_proj_bias"] = [3 * width]
        out[f"{q}.attn.out_proj.weight"] = [width, width]
        out[f"{q}.attn.out_proj.bias"] = [width]
        out.update(_norm(f"{q}.ln_1", width))
        out[f"{q}.mlp.c_fc.weight"] = [4 * width, width]
        out[f"{q}.mlp.c_fc.bias"] = [4 * width]
        out[f"{q}.mlp.c_proj.weight"] = [width, 4 * width]
        out[f"{q}.mlp.c_proj.bias"] = [width]
        out.update(_norm(f"{q}.ln_2", width))
    return out


def clip_adapter(*, embed: int, v_width: int, v_layers: int, patch: int, t_width: int, t_layers: int = 12,
                 resolution: int = 224, prompt_depth: int = 3, num_classes: int = 171) -> dict:
    p = "clip_adapter.clip_model"
    grid = resolution // patch
    out = {
        f"{p}.positional_embedding": [77, t_width],
        f"{p}.text_projection": [t_width, embed],
        f"{p}.logit_scale": [],
        f"{p}.visual.class_embedding": [v_width],
        f"{p}.visual.positional_embedding": [grid * grid + 1, v_width],
        f"{p}.visual.proj": [v_width, embed],
        f"{p}.visual.conv1.weight": [v_width, 3, patch, patch],
    }
    out.update(_norm(f"{p}.visual.ln_pre", v_width))
    out.update(_clip_blocks(f"{p}.visual.transformer", v_width, v_layers))
    out.update(_norm(f"{p}.visual.ln_post", v_width))
    out[f"{p}.visual.mask_embedding"] = [prompt_depth, grid * grid, v_width]
    out[f"{p}.token_embedding.weight"] = [49408, t_width]
    out.update(_clip_blocks(f"{p}.transformer", t_width, t_layers))
    out.update(_norm(f"{p}.ln_final", t_width))
    out["clip_adapter.non_object_embedding"] = [1, embed]
    out["clip_adapter.pixel_mean"] = [1, 3, 1, 1]
    out["clip_adapter.pixel_std"] = [1, 3, 1, 1]
    out["criterion.empty_weight"] = [num_classes + 1]
    return out


def checkpoints() -> dict[str, dict]:
    swin = {**swin_backbone(), **pixel_decoder([128, 256, 512, 1024]), **predictor(1024, embedding_dim=768),
            **clip_adapter(embed=768, v_width=1024, v_layers=24, patch=14, t_width=768)}
    r101c = {**deeplab_resnet_backbone(), **pixel_decoder([256, 512, 1024, 2048]), **predictor(2048, embedding_dim=512),
             **clip_adapter(embed=512, v_width=768, v_layers=12, patch=16, t_width=512)}
    return {"swinb_vitl14": swin, "r101c_vitb16": r101c}


FILES = {"swinb_vitl14": "ovseg_swinbase_vitL14_ft_mpt.pth", "r101c_vitb16": "ovseg_R101c_vitB16_ft_mpt.pth"}


def main() -> None:
    for name, shapes in checkpoints().items():
        int64 = sorted(k for k in shapes if k.endswith("relative_position_index"))
        payload = {"checkpoint": FILES[name], "source": "facebookresearch/ov-seg (see make_ovseg_checkpoint_names.py)",
                   "int64": int64, "shapes": shapes}
        (HERE / f"ovseg_checkpoint_names_{name}.json").write_text(json.dumps(payload, indent=0) + "\n")


if __name__ == "__main__":
    main()
