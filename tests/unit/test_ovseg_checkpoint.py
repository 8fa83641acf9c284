"""The OVSeg checkpoint adapter against the name/shape assets of the two released files.

The state dicts are full size (Swin-B + ViT-L/14: 532 M values) but cost no memory: every tensor is
a broadcast view whose value encodes its key index and row (``index * 8192 + row``), so the test can
tell where each tensor (and each third of a fused q/k/v tensor) arrived. The model is built on the
meta device and takes the tensors as they are (no copy).
"""
from __future__ import annotations

import json

import open_clip
import pytest
import torch

from ovseg.clip import quiet_random_init
from ovseg.maskformer.ovseg_checkpoint import (
    IGNORED,
    OVSEG_TEMPERATURE,
    convert_ovseg_state_dict,
    maskformer_from_ovseg,
    write_clip_and_prompt,
)
from ovseg.mpt_export import load_prompt
from ovseg.mpt import MaskPrompt
from tests.conftest import REPO

VARIANTS = ("swinb_vitl14", "r101c_vitb16")
ROW = 8192  # value = key index * ROW + row (exact in float32 for < 2048 keys and < 8192 rows)


def _asset(variant: str) -> dict:
    return json.loads((REPO / f"tests/assets/ovseg_checkpoint_names_{variant}.json").read_text())


def _encoded_state(asset: dict) -> dict[str, torch.Tensor]:
    state = {}
    for index, (key, shape) in enumerate(asset["shapes"].items()):
        dtype = torch.int64 if key in asset["int64"] else torch.float32
        rows = shape[0] if shape and shape[0] < ROW else 1
        values = torch.arange(rows, dtype=dtype) + index * ROW
        state[key] = values.view(-1, *[1] * (len(shape) - 1)).expand(shape) if shape else values[0]
    return state


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request):
    asset = _asset(request.param)
    state = _encoded_state(asset)
    converted = convert_ovseg_state_dict(state)
    model = maskformer_from_ovseg(converted)
    return request.param, asset, state, converted, model


def test_asset_loads_with_no_missing_or_unexpected_keys(loaded):
    variant, asset, state, converted, model = loaded
    assert converted.variant == variant
    assert sorted(converted.ignored) == sorted(IGNORED)
    ours = model.state_dict()
    # every model entry came from the checkpoint except BatchNorm counters, the temperature, the vocabulary
    own = {k for k in ours if k.endswith("num_batches_tracked")} | {"logit_scale", "train_text_embeddings"}
    assert set(converted.maskformer_state) | own == set(ours)
    assert float(model.logit_scale.exp()) == pytest.approx(OVSEG_TEMPERATURE)
    # the CLIP loads strictly into open_clip's config of the same model, and the prompt fits its ViT
    with quiet_random_init(True), torch.device("meta"):
        clip = open_clip.create_model(converted.clip_model, device="meta")
        prompt = MaskPrompt(clip.visual, depth=3, init="zeros")
    result = clip.load_state_dict(converted.clip_state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert converted.mask_embedding.shape == prompt.mask_embedding.shape
    n_clip = sum(k.startswith("clip_adapter.clip_model.") for k in asset["shapes"])
    assert len(converted.clip_state) + 1 == n_clip  # + visual.mask_embedding


def test_every_checkpoint_tensor_arrives_once_and_whole(loaded):
    _, asset, _, converted, model = loaded
    names = list(asset["shapes"])
    rows_seen: dict[str, list[int]] = {}
    for key, value in model.state_dict().items():
        if key not in converted.maskformer_state or key == "logit_scale":
            continue
        codes = [int(value)] if value.dim() == 0 else value.reshape(value.shape[0], -1)[:, 0].long().tolist()
        sources = {c // ROW for c in codes}
        assert len(sources) == 1, key  # one checkpoint tensor per model tensor
        rows_seen.setdefault(names[sources.pop()], []).extend(c % ROW for c in codes)
    mapped = {k for k in names if not k.startswith("clip_adapter.clip_model.") and k not in IGNORED}
    assert set(rows_seen) == mapped  # no checkpoint tensor lost
    for key, rows in rows_seen.items():
        shape = asset["shapes"][key]
        expected = list(range(shape[0])) if shape else [0]
        assert sorted(rows) == expected, key  # used once and whole (q, k, v order: checked by hand below)


# (checkpoint key, our key, rows of the checkpoint tensor) per rule family, written out by hand
PLACES = {
    "swinb_vitl14": [
        ("backbone.patch_embed.proj.weight", "backbone.body.model.embeddings.patch_embeddings.projection.weight", None),
        ("backbone.patch_embed.norm.bias", "backbone.body.model.embeddings.norm.bias", None),
        ("backbone.layers.2.blocks.17.attn.qkv.weight", "backbone.body.model.encoder.layers.2.blocks.17.attention.self.query.weight", slice(0, 512)),
        ("backbone.layers.2.blocks.17.attn.qkv.weight", "backbone.body.model.encoder.layers.2.blocks.17.attention.self.key.weight", slice(512, 1024)),
        ("backbone.layers.0.blocks.1.attn.qkv.bias", "backbone.body.model.encoder.layers.0.blocks.1.attention.self.value.bias", slice(256, 384)),
        ("backbone.layers.3.blocks.1.attn.relative_position_bias_table", "backbone.body.model.encoder.layers.3.blocks.1.attention.self.relative_position_bias_table", None),
        ("backbone.layers.1.blocks.0.attn.relative_position_index", "backbone.body.model.encoder.layers.1.blocks.0.attention.self.relative_position_index", None),
        ("backbone.layers.1.blocks.0.attn.proj.weight", "backbone.body.model.encoder.layers.1.blocks.0.attention.output.dense.weight", None),
        ("backbone.layers.1.blocks.1.norm1.weight", "backbone.body.model.encoder.layers.1.blocks.1.layernorm_before.weight", None),
        ("backbone.layers.1.blocks.1.norm2.bias", "backbone.body.model.encoder.layers.1.blocks.1.layernorm_after.bias", None),
        ("backbone.layers.2.blocks.3.mlp.fc1.weight", "backbone.body.model.encoder.layers.2.blocks.3.intermediate.dense.weight", None),
        ("backbone.layers.2.blocks.3.mlp.fc2.bias", "backbone.body.model.encoder.layers.2.blocks.3.output.dense.bias", None),
        ("backbone.layers.2.downsample.reduction.weight", "backbone.body.model.encoder.layers.2.downsample.reduction.weight", None),
        ("backbone.layers.0.downsample.norm.weight", "backbone.body.model.encoder.layers.0.downsample.norm.weight", None),
        ("backbone.norm3.weight", "backbone.body.hidden_states_norms.3.weight", None),
        ("backbone.norm0.bias", "backbone.body.hidden_states_norms.0.bias", None),
    ],
    "r101c_vitb16": [
        ("backbone.stem.conv1.weight", "backbone.body.conv1.0.weight", None),
        ("backbone.stem.conv1.norm.running_mean", "backbone.body.conv1.1.running_mean", None),
        ("backbone.stem.conv2.weight", "backbone.body.conv1.3.weight", None),
        ("backbone.stem.conv3.weight", "backbone.body.conv1.6.weight", None),
        ("backbone.stem.conv3.norm.running_var", "backbone.body.bn1.running_var", None),
        ("backbone.res2.0.shortcut.weight", "backbone.body.layer1.0.downsample.0.weight", None),
        ("backbone.res2.0.shortcut.norm.bias", "backbone.body.layer1.0.downsample.1.bias", None),
        ("backbone.res4.22.conv3.norm.weight", "backbone.body.layer3.22.bn3.weight", None),
        ("backbone.res5.2.conv2.weight", "backbone.body.layer4.2.conv2.weight", None),
        ("backbone.res3.1.conv1.norm.running_mean", "backbone.body.layer2.1.bn1.running_mean", None),
    ],
}
HEAD_PLACES = [
    ("sem_seg_head.pixel_decoder.layer_4.weight", "pixel_decoder.fpn.stem.0.weight", None),
    ("sem_seg_head.pixel_decoder.layer_4.norm.bias", "pixel_decoder.fpn.stem.1.bias", None),
    ("sem_seg_head.pixel_decoder.adapter_3.weight", "pixel_decoder.fpn.layers.0.proj.0.weight", None),
    ("sem_seg_head.pixel_decoder.adapter_1.norm.weight", "pixel_decoder.fpn.layers.2.proj.1.weight", None),
    ("sem_seg_head.pixel_decoder.layer_2.weight", "pixel_decoder.fpn.layers.1.block.0.weight", None),
    ("sem_seg_head.pixel_decoder.layer_1.norm.bias", "pixel_decoder.fpn.layers.2.block.1.bias", None),
    ("sem_seg_head.pixel_decoder.mask_features.weight", "pixel_decoder.mask_projection.weight", None),
    ("sem_seg_head.predictor.query_embed.weight", "predictor.query_embed.weight", None),
    ("sem_seg_head.predictor.input_proj.bias", "predictor.input_proj.bias", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.0.self_attn.in_proj_weight", "predictor.decoder.layers.0.self_attn.q_proj.weight", slice(0, 256)),
    ("sem_seg_head.predictor.transformer.decoder.layers.4.multihead_attn.in_proj_weight", "predictor.decoder.layers.4.encoder_attn.k_proj.weight", slice(256, 512)),
    ("sem_seg_head.predictor.transformer.decoder.layers.5.multihead_attn.in_proj_bias", "predictor.decoder.layers.5.encoder_attn.v_proj.bias", slice(512, 768)),
    ("sem_seg_head.predictor.transformer.decoder.layers.2.self_attn.out_proj.weight", "predictor.decoder.layers.2.self_attn.o_proj.weight", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.3.linear1.weight", "predictor.decoder.layers.3.mlp.fc1.weight", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.3.linear2.bias", "predictor.decoder.layers.3.mlp.fc2.bias", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.1.norm1.weight", "predictor.decoder.layers.1.self_attn_layer_norm.weight", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.1.norm2.weight", "predictor.decoder.layers.1.encoder_attn_layer_norm.weight", None),
    ("sem_seg_head.predictor.transformer.decoder.layers.1.norm3.bias", "predictor.decoder.layers.1.final_layer_norm.bias", None),
    ("sem_seg_head.predictor.transformer.decoder.norm.weight", "predictor.decoder.layernorm.weight", None),
    ("sem_seg_head.predictor.mask_embed.layers.2.weight", "predictor.mask_embed.layers.2.weight", None),
    ("sem_seg_head.predictor.class_embed.layers.1.weight", "predictor.class_embed.layers.1.weight", None),
    ("clip_adapter.non_object_embedding", "no_object_embedding", None),
]


def test_each_rule_family_puts_tensors_where_written_by_hand(loaded):
    variant, _, state, converted, model = loaded
    ours = model.state_dict()
    for source, target, rows in PLACES[variant] + HEAD_PLACES:
        expected = state[source] if rows is None else state[source][rows]
        assert torch.equal(ours[target], expected), f"{source} -> {target}"
    clip_key = "visual.transformer.resblocks.3.attn.in_proj_weight"
    assert converted.clip_state[clip_key] is state["clip_adapter.clip_model." + clip_key]
    assert converted.mask_embedding is state["clip_adapter.clip_model.visual.mask_embedding"]


@pytest.mark.parametrize("key", [
    "sem_seg_head.predictor.transformer.decoder.layers.3.linear1.weight",
    "sem_seg_head.pixel_decoder.adapter_2.norm.weight",
    "clip_adapter.clip_model.visual.ln_post.bias",
    "clip_adapter.non_object_embedding",
])
def test_a_changed_name_fails(key):
    state = _encoded_state(_asset("r101c_vitb16"))
    state[key.replace("weight", "weights").replace("bias", "biases").replace("embedding", "embed")] = state.pop(key)
    with pytest.raises(ValueError):
        convert_ovseg_state_dict(state)


def test_a_missing_tensor_or_wrong_shape_fails():
    state = _encoded_state(_asset("swinb_vitl14"))
    del state["backbone.layers.2.blocks.5.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="missing"):
        convert_ovseg_state_dict(state)
    state = _encoded_state(_asset("swinb_vitl14"))
    state["sem_seg_head.predictor.query_embed.weight"] = torch.zeros(50, 256)
    with pytest.raises(ValueError, match="wrong shapes"):
        convert_ovseg_state_dict(state)


def test_the_clip_and_its_mask_prompt_are_written_for_mining(loaded, tmp_path):
    """``clip.prompt=<mpt_prompt.pt>`` then scores crops with OVSeg's own prompted CLIP."""
    _, _, state, converted, _ = loaded
    prompt_path = write_clip_and_prompt(converted, tmp_path)
    export = load_prompt(prompt_path)
    assert export.clip_model == converted.clip_model and export.clip_checkpoint == "clip.pt"
    assert torch.equal(export.mask_embedding, state["clip_adapter.clip_model.visual.mask_embedding"].float())
    grid = export.grid_size[0]
    assert (export.depth, grid * grid, export.width) == tuple(export.mask_embedding.shape)
    assert export.image_size == grid * export.patch_size == 224
    clip_state = torch.load(tmp_path / "clip.pt", weights_only=True)
    assert clip_state.keys() == converted.clip_state.keys()
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.equal(clip_state[key], state["clip_adapter.clip_model." + key])


class _DetrLayer(torch.nn.Module):
    """A post-norm DETR decoder layer in OVSeg's parameter layout (nn.MultiheadAttention), the reference."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = torch.nn.MultiheadAttention(dim, heads)
        self.multihead_attn = torch.nn.MultiheadAttention(dim, heads)
        self.linear1, self.linear2 = torch.nn.Linear(dim, ffn), torch.nn.Linear(ffn, dim)
        self.norm1, self.norm2, self.norm3 = (torch.nn.LayerNorm(dim) for _ in range(3))

    def forward(self, tgt, memory, pos, query_pos):  # sequence-first [L,B,C]
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt)[0])
        tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory)[0])
        return self.norm3(tgt + self.linear2(torch.relu(self.linear1(tgt))))


def test_a_mapped_detr_layer_computes_what_the_reference_computes():
    """The fused in_proj split into q/k/v and the norm names mean the same computation."""
    from ovseg.maskformer import get_spec
    from ovseg.maskformer.model import Predictor
    from ovseg.maskformer.ovseg_checkpoint import HEAD_RULES, _map

    torch.manual_seed(0)
    ref = _DetrLayer(32, 4, 64).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    spec = get_spec("ovseg-r101c", hidden_dim=32, nheads=4, dim_feedforward=64, dec_layers=1, dropout=0.0)
    ours = Predictor(in_channels=32, spec=spec).decoder.layers[0].eval()
    state = {}
    for key, value in ref.state_dict().items():
        target = _map(f"sem_seg_head.predictor.transformer.decoder.layers.0.{key}", HEAD_RULES)
        parts = zip(target, value.chunk(3)) if isinstance(target, tuple) else [(target, value)]
        state.update({name.removeprefix("predictor.decoder.layers.0."): part for name, part in parts})
    ours.load_state_dict(state, strict=True)
    tgt, query_pos = torch.randn(7, 2, 32), torch.randn(7, 2, 32)
    memory, pos = torch.randn(15, 2, 32), torch.randn(15, 2, 32)
    with torch.no_grad():
        expected = ref(tgt, memory, pos, query_pos)
        got = ours(tgt.transpose(0, 1), attention_mask=None, spatial_position_embeddings=pos.transpose(0, 1),
                   object_queries_position_embeddings=query_pos.transpose(0, 1), encoder_hidden_states=memory.transpose(0, 1))
    torch.testing.assert_close(got, expected.transpose(0, 1), atol=1e-5, rtol=1e-5)
