"""OpenVocabMaskFormer: forward shapes for both backbones at tiny widths, the open-vocabulary head,
class-agnostic proposals, and the saved-weights round trip."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ovseg.maskformer import SPECS, build_maskformer, get_spec, spec_from_dict, spec_to_dict
from ovseg.maskformer.weights import load_maskformer, save_maskformer
from tests.conftest import REPO

TINY_HEAD = dict(conv_dim=32, mask_dim=16, hidden_dim=32, nheads=2, dim_feedforward=64, num_queries=5,
                 dec_layers=3, class_embed_hidden_dim=32, clip_text_dim=24)
TINY = {
    "swin": get_spec("ovseg-swin-base", swin_embed_dim=16, swin_depths=(1, 1, 2, 1), swin_num_heads=(1, 2, 2, 4),
                     swin_window_size=4, **TINY_HEAD),
    "r101c": get_spec("ovseg-r101c", resnet_layers=(1, 1, 1, 3), resnet_channels=(8, 8, 8, 8), resnet_stem_width=8,
                      **TINY_HEAD),
}
WORLD_WEIGHTS = REPO / "assets/world_maskformer/world_maskformer.pt"


def _text(k: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(k, dim), dim=-1)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_shapes_for_both_backbones_at_tiny_widths(name):
    torch.manual_seed(0)
    spec = TINY[name]
    model = build_maskformer(spec).eval()
    out = model(torch.randn(2, 3, 96, 64), _text(7, spec.clip_text_dim))
    assert out["pred_logits"].shape == (2, 5, 8)
    assert out["pred_masks"].shape == (2, 5, 24, 16)
    assert len(out["aux_outputs"]) == spec.dec_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 5, 8) and aux["pred_masks"].shape == (2, 5, 24, 16)
    # the last aux output is a different layer than the final prediction
    assert not torch.allclose(out["aux_outputs"][-1]["pred_masks"], out["pred_masks"])


def test_world_tiny_forward_shapes_and_size():
    spec = SPECS["world-tiny"]
    model = build_maskformer(spec).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000
    out = model(torch.randn(1, 3, 128, 128), _text(4, spec.clip_text_dim))
    assert out["pred_logits"].shape == (1, spec.num_queries, 5)
    assert out["pred_masks"].shape == (1, spec.num_queries, 32, 32)


def test_the_committed_world_weights_load_strictly_into_world_tiny():
    """The committed world MaskFormer loads into today's model with no missing, unexpected or
    reshaped tensor: extend the model, never rename."""
    payload = torch.load(WORLD_WEIGHTS, map_location="cpu", weights_only=True)
    model = build_maskformer(SPECS["world-tiny"])
    model.load_state_dict(payload["model"], strict=True)  # raises on any name or shape mismatch
    assert payload["spec"]["num_queries"] == SPECS["world-tiny"].num_queries


def test_logits_are_temperature_times_cosine_with_text_and_a_no_object_column():
    torch.manual_seed(0)
    spec = TINY["r101c"]
    model = build_maskformer(spec).eval()
    images, text = torch.randn(1, 3, 64, 64), _text(6, spec.clip_text_dim)
    logits = model(images, text)["pred_logits"]
    temperature = spec.temperature
    assert logits.abs().max() <= temperature + 1e-3
    # reordering the vocabulary reorders the columns; the no-object column stays last and unchanged
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = model(images, text[perm])["pred_logits"]
    torch.testing.assert_close(permuted[..., :-1], logits[..., perm])
    torch.testing.assert_close(permuted[..., -1], logits[..., -1])
    # a text embedding equal to a query's class direction scores exactly the temperature
    with torch.no_grad():
        states = model.predictor(model.backbone(images)[-1])
        direction = F.normalize(model.predictor.class_embed(states[-1, 0, :1]), dim=-1)
    torch.testing.assert_close(model(images, direction)["pred_logits"][0, 0, 0], torch.tensor(temperature))


def test_proposals_are_probabilities_at_image_size_with_objectness():
    torch.manual_seed(0)
    spec = TINY["swin"]
    model = build_maskformer(spec).eval()
    images = model.normalize(torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8))
    with pytest.raises(ValueError, match="no vocabulary"):
        model.proposals(images)
    model.set_train_text_embeddings(torch.randn(3, spec.clip_text_dim))
    masks, objectness = model.proposals(images)
    assert masks.shape == (2, 5, 50, 70) and objectness.shape == (2, 5)
    assert 0 <= masks.min() and masks.max() <= 1 and 0 <= objectness.min() and objectness.max() <= 1
    probs = model(F.pad(images, (0, 26, 0, 14)), model.train_text_embeddings)["pred_logits"].softmax(-1)
    torch.testing.assert_close(objectness, 1 - probs[..., -1])


def test_spec_round_trips_through_a_plain_dict():
    for spec in [*SPECS.values(), *TINY.values()]:
        assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    with pytest.raises(ValueError, match="unknown MaskFormerSpec fields"):
        spec_from_dict({**spec_to_dict(SPECS["world-tiny"]), "nope": 1})


def test_saved_weights_load_back_with_spec_and_vocabulary(tmp_path):
    torch.manual_seed(0)
    spec = TINY["r101c"]
    model = build_maskformer(spec).eval()
    model.set_train_text_embeddings(torch.randn(4, spec.clip_text_dim))
    path = tmp_path / "world_maskformer.pt"
    save_maskformer(model, path, meta={"step": 3})
    loaded = load_maskformer(path)
    assert loaded.spec == spec and not loaded.training
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.proposals(images)[0], model.proposals(images)[0])
    torch.testing.assert_close(loaded.train_text_embeddings, model.train_text_embeddings)
    assert torch.load(path, weights_only=True)["meta"] == {"step": 3}


def test_r101c_has_the_deeplab_stem_and_res5_multi_grid():
    with torch.device("meta"):
        body = build_maskformer(SPECS["ovseg-r101c"]).backbone.body
    stem = [m for m in body.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in stem] == [
        (3, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    assert [len(body.layer1), len(body.layer2), len(body.layer3), len(body.layer4)] == [3, 4, 23, 3]
    assert [b.conv2.dilation for b in body.layer4] == [(1, 1), (2, 2), (4, 4)]
    assert body.layer2[0].conv2.stride == (2, 2) and body.layer2[0].conv1.stride == (1, 1)  # stride in the 3x3
    features = build_maskformer(TINY["r101c"]).backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_half_precision_weight_files_load_as_fp32(tmp_path):
    model = build_maskformer(TINY["swin"]).eval()
    model.set_train_text_embeddings(torch.randn(2, TINY["swin"].clip_text_dim))
    path = tmp_path / "half.pt"
    save_maskformer(model, path)
    payload = torch.load(path, weights_only=True)
    payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, path)
    loaded = load_maskformer(path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert loaded.proposals(torch.randn(1, 3, 64, 64))[0].dtype == torch.float32
