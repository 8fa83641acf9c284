"""Adapter for OVSeg's released detectron2 checkpoints (``ovseg_swinbase_vitL14_ft_mpt.pth``,
``ovseg_R101c_vitB16_ft_mpt.pth``): their ``"model"`` dict → our ``OpenVocabMaskFormer`` + the CLIP.

One file holds four things, all mapped here, none silently dropped:

* ``backbone.*`` (detectron2 ``D2SwinTransformer`` / DeepLab ResNet) → ``backbone.body.*``
  (transformers MaskFormer Swin: fused ``qkv`` split into ``query/key/value``; timm ResNet: deep
  stem ``conv1.{0,3,6}`` / ``bn1``, ``conv{n}.norm`` → ``bn{n}``, ``shortcut`` → ``downsample``);
* ``sem_seg_head.pixel_decoder.*`` (``BasePixelDecoder``) → ``pixel_decoder.*`` (transformers FPN);
* ``sem_seg_head.predictor.*`` (DETR decoder with ``nn.MultiheadAttention``: fused ``in_proj``
  split into ``q/k/v_proj``) → ``predictor.*``; ``clip_adapter.non_object_embedding`` →
  ``no_object_embedding``; OVSeg's fixed temperature 100 → ``logit_scale = log 100``;
* ``clip_adapter.clip_model.*`` (OpenAI CLIP layout = open_clip's ``*-quickgelu`` configs) →
  ``clip_state`` and its ``visual.mask_embedding`` ``[depth, grid², width]`` → ``mask_embedding``.

Deliberately unused (listed in ``IGNORED``): ``criterion.empty_weight`` (training loss weights)
and ``clip_adapter.pixel_mean/pixel_std`` (OpenAI CLIP's constants). Any other unknown key, or a
model key no checkpoint entry fills (except BatchNorm's ``num_batches_tracked``, ``logit_scale``
and ``train_text_embeddings``), raises ``ValueError``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from ovseg.maskformer.config import SPECS, MaskFormerSpec
from ovseg.maskformer.model import OpenVocabMaskFormer, build_maskformer, maskformer_from_state

log = logging.getLogger(__name__)

CLIP_PREFIX = "clip_adapter.clip_model."
MASK_EMBEDDING_KEY = CLIP_PREFIX + "visual.mask_embedding"
NO_OBJECT_KEY = "clip_adapter.non_object_embedding"
IGNORED = ("criterion.empty_weight", "clip_adapter.pixel_mean", "clip_adapter.pixel_std")
#: OVSeg's ``ClipAdapter.get_sim_logits`` temperature.
OVSEG_TEMPERATURE = 100.0


@dataclass(frozen=True)
class Variant:
    """One released OVSeg model: our spec preset, the open_clip config of its CLIP, a telltale key."""

    spec: str
    clip_model: str
    telltale: str


VARIANTS: dict[str, Variant] = {
    "swinb_vitl14": Variant("ovseg-swin-base", "ViT-L-14-quickgelu", "backbone.patch_embed.proj.weight"),
    "r101c_vitb16": Variant("ovseg-r101c", "ViT-B-16-quickgelu", "backbone.stem.conv1.weight"),
}


@dataclass
class OVSegCheckpoint:
    """An OVSeg checkpoint in our layouts.

    Attributes:
        variant: key of ``VARIANTS``.
        spec: the MaskFormer architecture (``clip_text_dim`` read from the class head).
        maskformer_state: state dict for ``build_maskformer(spec)`` (strict load).
        clip_model: open_clip config name that ``clip_state`` loads into.
        clip_state: open_clip state dict of the CLIP (without the mask prompt).
        mask_embedding: ``[depth, grid², width]`` mask prompt, or None when the file has none.
        ignored: checkpoint keys deliberately not used.
    """

    variant: str
    spec: MaskFormerSpec
    maskformer_state: dict[str, torch.Tensor]
    clip_model: str
    clip_state: dict[str, torch.Tensor]
    mask_embedding: torch.Tensor | None
    ignored: list[str] = field(default_factory=list)


Rule = tuple[re.Pattern, Callable[[re.Match], str | tuple[str, ...]]]


def _rules(pairs: list[tuple[str, Callable[[re.Match], str | tuple[str, ...]] | str]]) -> list[Rule]:
    return [(re.compile(p + r"$"), f if callable(f) else (lambda m, t=f: m.expand(t))) for p, f in pairs]


def _split3(template: str) -> Callable[[re.Match], tuple[str, ...]]:
    """A fused ``[3C,...]`` tensor → three names (``{}`` filled with each part, in q, k, v order)."""
    return lambda m: tuple(m.expand(template.replace("{}", part)) for part in ("query", "key", "value"))


_SWIN = "backbone.body.model."
_SWIN_BLOCK = _SWIN + r"encoder.layers.\1.blocks.\2."
SWIN_RULES = _rules([
    (r"backbone\.patch_embed\.proj\.(weight|bias)", _SWIN + r"embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.patch_embed\.norm\.(weight|bias)", _SWIN + r"embeddings.norm.\1"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)", _SWIN_BLOCK + r"layernorm_before.\3"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)", _SWIN_BLOCK + r"layernorm_after.\3"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.(relative_position_bias_table|relative_position_index)",
     _SWIN_BLOCK + r"attention.self.\3"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _split3(_SWIN_BLOCK + r"attention.self.{}.\3")),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", _SWIN_BLOCK + r"attention.output.dense.\3"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", _SWIN_BLOCK + r"intermediate.dense.\3"),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", _SWIN_BLOCK + r"output.dense.\3"),
    (r"backbone\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", _SWIN + r"encoder.layers.\1.downsample.\2.\3"),
    (r"backbone\.norm(\d+)\.(weight|bias)", r"backbone.body.hidden_states_norms.\1.\2"),
])

_BN = r"(weight|bias|running_mean|running_var)"
#: detectron2 DeepLab stem convs → timm deep-stem Sequential indices (conv, norm); conv3's norm is ``bn1``.
_STEM = {"conv1": ("conv1.0", "conv1.1"), "conv2": ("conv1.3", "conv1.4"), "conv3": ("conv1.6", "bn1")}


def _res_block(m: re.Match) -> str:
    stage, block, part, rest = int(m[1]), m[2], m[3], m[4]
    head = f"backbone.body.layer{stage - 1}.{block}."
    if part == "shortcut":
        return head + ("downsample.0.weight" if rest == "weight" else "downsample.1." + rest.removeprefix("norm."))
    n = part.removeprefix("conv")
    return head + (f"conv{n}.weight" if rest == "weight" else f"bn{n}." + rest.removeprefix("norm."))


RESNET_RULES = _rules([
    (r"backbone\.stem\.(conv[123])\.weight", lambda m: f"backbone.body.{_STEM[m[1]][0]}.weight"),
    (r"backbone\.stem\.(conv[123])\.norm\." + _BN, lambda m: f"backbone.body.{_STEM[m[1]][1]}.{m[2]}"),
    (r"backbone\.res([2-5])\.(\d+)\.(shortcut|conv[123])\.(weight|norm\." + _BN + ")", _res_block),
])

_PD = "sem_seg_head.pixel_decoder."
_PRED = "sem_seg_head.predictor."
_DEC = r"predictor.decoder.layers.\1."
_ATTN = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"}
_LAYER_NORMS = {"norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm", "norm3": "final_layer_norm"}


def _fpn(m: re.Match, *, levels: int = 4) -> str:
    """``adapter_k`` / ``layer_k`` (k = 1 finest) → transformers FPN (stem = coarsest, layers.0 = next finer)."""
    kind, k, part, rest = m[1], int(m[2]), m[3], m[4]
    if kind == "layer" and k == levels:
        return f"pixel_decoder.fpn.stem.{0 if part is None else 1}.{rest}"
    sub = "proj" if kind == "adapter" else "block"
    return f"pixel_decoder.fpn.layers.{levels - 1 - k}.{sub}.{0 if part is None else 1}.{rest}"


HEAD_RULES = _rules([
    (re.escape(_PD) + r"(adapter|layer)_(\d)\.(norm\.)?(weight|bias)", _fpn),
    (re.escape(_PD) + r"mask_features\.(weight|bias)", r"pixel_decoder.mask_projection.\1"),
    (re.escape(_PRED) + r"query_embed\.weight", "predictor.query_embed.weight"),
    (re.escape(_PRED) + r"input_proj\.(weight|bias)", r"predictor.input_proj.\1"),
    (re.escape(_PRED) + r"transformer\.decoder\.layers\.(\d+)\.(self_attn|multihead_attn)\.in_proj_(weight|bias)",
     lambda m: tuple(f"predictor.decoder.layers.{m[1]}.{_ATTN[m[2]]}.{p}_proj.{m[3]}" for p in "qkv")),
    (re.escape(_PRED) + r"transformer\.decoder\.layers\.(\d+)\.(self_attn|multihead_attn)\.out_proj\.(weight|bias)",
     lambda m: f"predictor.decoder.layers.{m[1]}.{_ATTN[m[2]]}.o_proj.{m[3]}"),
    (re.escape(_PRED) + r"transformer\.decoder\.layers\.(\d+)\.linear([12])\.(weight|bias)", _DEC + r"mlp.fc\2.\3"),
    (re.escape(_PRED) + r"transformer\.decoder\.layers\.(\d+)\.(norm[123])\.(weight|bias)",
     lambda m: f"predictor.decoder.layers.{m[1]}.{_LAYER_NORMS[m[2]]}.{m[3]}"),
    (re.escape(_PRED) + r"transformer\.decoder\.norm\.(weight|bias)", r"predictor.decoder.layernorm.\1"),
    (re.escape(_PRED) + r"(mask_embed|class_embed)\.layers\.(\d+)\.(weight|bias)", r"predictor.\1.layers.\2.\3"),
    (re.escape(NO_OBJECT_KEY), "no_object_embedding"),
])

#: Model entries no checkpoint key fills: set by ``convert_ovseg_state_dict`` or left at their init.
FILLED_HERE = ("logit_scale", "train_text_embeddings")


def detect_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Which released model a ``"model"`` dict is (by a key only its backbone has)."""
    for name, variant in VARIANTS.items():
        if variant.telltale in state:
            return name
    raise ValueError("not an OVSeg checkpoint: neither a D2 Swin (backbone.patch_embed.*) nor a DeepLab "
                     "ResNet (backbone.stem.*) backbone")


def _map(key: str, rules: list[Rule]) -> str | tuple[str, ...] | None:
    for pattern, target in rules:
        match = pattern.match(key)
        if match:
            return target(match)
    return None


def convert_ovseg_state_dict(state: Mapping[str, torch.Tensor]) -> OVSegCheckpoint:
    """Map an OVSeg ``"model"`` dict onto our layouts; raise on any key that maps nowhere or is missing."""
    name = detect_variant(state)
    variant = VARIANTS[name]
    rules = (SWIN_RULES if variant.spec == "ovseg-swin-base" else RESNET_RULES) + HEAD_RULES
    class_out = state.get(_PRED + "class_embed.layers.1.weight")
    text_dim = int(class_out.shape[0]) if class_out is not None else SPECS[variant.spec].clip_text_dim
    spec = dataclasses.replace(SPECS[variant.spec], clip_text_dim=text_dim)
    ours: dict[str, torch.Tensor] = {}
    clip_state: dict[str, torch.Tensor] = {}
    mask_embedding = None
    ignored, unknown = [], []
    for key, value in state.items():
        if key == MASK_EMBEDDING_KEY:
            mask_embedding = value
        elif key.startswith(CLIP_PREFIX):
            clip_state[key.removeprefix(CLIP_PREFIX)] = value
        elif key in IGNORED:
            ignored.append(key)
        else:
            target = _map(key, rules)
            if target is None:
                unknown.append(key)
            elif isinstance(target, tuple):
                for part_name, part in zip(target, value.chunk(len(target), dim=0)):
                    ours[part_name] = part
            else:
                ours[target] = value
    if unknown:
        raise ValueError(f"{len(unknown)} OVSeg checkpoint keys map nowhere, e.g. {unknown[:5]}")
    ours["logit_scale"] = torch.tensor(math.log(OVSEG_TEMPERATURE))
    _check_complete(ours, spec)
    _check_clip(clip_state, mask_embedding, clip_model=variant.clip_model)
    return OVSegCheckpoint(variant=name, spec=spec, maskformer_state=ours, clip_model=variant.clip_model,
                           clip_state=clip_state, mask_embedding=mask_embedding, ignored=ignored)


def _expected_state(spec: MaskFormerSpec) -> dict[str, torch.Tensor]:
    """Our model's state dict for ``spec`` on the meta device (names and shapes only)."""
    with torch.device("meta"):
        return build_maskformer(spec).state_dict()


def _check_complete(ours: dict[str, torch.Tensor], spec: MaskFormerSpec) -> None:
    """Every model entry is filled (bar ``FILLED_HERE`` and ``num_batches_tracked``) with the right shape."""
    expected = _expected_state(spec)
    missing = [k for k in expected if k not in ours and k not in FILLED_HERE and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in ours if k not in expected]
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in ours.items()
             if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"OVSeg checkpoint does not fit {spec.backbone} MaskFormer: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")


def _check_clip(clip_state: dict[str, torch.Tensor], mask_embedding: torch.Tensor | None, *, clip_model: str) -> None:
    """The CLIP entries are exactly open_clip ``clip_model``'s state dict; the prompt fits its ViT."""
    import open_clip

    from ovseg.clip import quiet_random_init

    with quiet_random_init(True), torch.device("meta"):
        expected = open_clip.create_model(clip_model, device="meta").state_dict()
    missing = [k for k in expected if k not in clip_state]
    unexpected = [k for k in clip_state if k not in expected]
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in clip_state.items()
             if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"the CLIP in the OVSeg checkpoint does not fit open_clip {clip_model}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    if mask_embedding is not None:
        grid = expected["visual.positional_embedding"].shape[0] - 1
        width = expected["visual.class_embedding"].shape[0]
        if mask_embedding.dim() != 3 or tuple(mask_embedding.shape[1:]) != (grid, width):
            raise ValueError(f"mask_embedding {tuple(mask_embedding.shape)} does not fit {clip_model}: "
                             f"expected [depth, {grid}, {width}]")


def read_ovseg_checkpoint(path: str | Path) -> OVSegCheckpoint:
    """Load an OVSeg ``.pth`` (``weights_only=True``) and convert its ``"model"`` dict."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a detectron2 checkpoint {{'model': state_dict}}")
    converted = convert_ovseg_state_dict(state)
    log.info("read OVSeg %s checkpoint %s (ignored %s)", converted.variant, path, converted.ignored)
    return converted


def maskformer_from_ovseg(checkpoint: OVSegCheckpoint, *, device: str | torch.device = "cpu") -> OpenVocabMaskFormer:
    """The MaskFormer of a converted checkpoint with its weights (eval mode; no vocabulary stored)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.maskformer_state.items()}  # fp16 files
    for key in _expected_state(checkpoint.spec):
        if key.endswith("num_batches_tracked"):  # detectron2's FrozenBN has none
            state[key] = torch.zeros((), dtype=torch.long)
    state["train_text_embeddings"] = torch.zeros(0, checkpoint.spec.clip_text_dim)
    return maskformer_from_state(checkpoint.spec, state, device=device).eval()


def write_clip_and_prompt(checkpoint: OVSegCheckpoint, out_dir: str | Path) -> Path:
    """Write the checkpoint's CLIP (``clip.pt``, open_clip state dict) and its mask prompt
    (``mpt_prompt.pt``, ``ovseg.mpt_export`` format naming ``clip.pt``) into ``out_dir``.

    Returns the prompt file: ``clip.prompt=<it>`` makes mining score crops with OVSeg's own
    mask-prompted CLIP (``load_prompted_clip`` rebuilds ``checkpoint.clip_model`` from ``clip.pt``).
    """
    from ovseg.atomic import save_torch
    from ovseg.mpt_export import PromptExport, save_prompt

    if checkpoint.mask_embedding is None:
        raise ValueError("the checkpoint holds no mask prompt (clip_adapter.clip_model.visual.mask_embedding)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip_state = dict(checkpoint.clip_state)
    save_torch(clip_state, out / "clip.pt")
    width = int(clip_state["visual.class_embedding"].shape[0])
    patch = int(clip_state["visual.conv1.weight"].shape[-1])
    grid = math.isqrt(int(clip_state["visual.positional_embedding"].shape[0]) - 1)
    export = PromptExport(
        mask_embedding=checkpoint.mask_embedding, clip_model=checkpoint.clip_model, pretrained=None,
        clip_checkpoint="clip.pt", depth=int(checkpoint.mask_embedding.shape[0]), image_size=grid * patch,
        patch_size=patch, grid_size=(grid, grid), width=width,
        logit_scale=float(clip_state["logit_scale"]), mode="mpt",
        meta={"source": f"OVSeg {checkpoint.variant} checkpoint"},
    )
    return save_prompt(export, out / "mpt_prompt.pt")
