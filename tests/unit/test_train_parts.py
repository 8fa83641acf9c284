"""Tuning building blocks: losses, schedule, checkpoints, exports."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from ovseg import mpt_export
from ovseg.atomic import save_torch
from ovseg.mpt import MaskPromptCLIP
from pipelines.train import checkpoint as ckpt
from pipelines.train.losses import contrastive_loss, vocab_ce_loss
from pipelines.train.setup import build_schedule


def test_vocab_ce_same_noun_is_not_a_negative():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(3, 8), dim=-1)  # vocab: a, b, c
    nouns = ["a", "a", "b", "c", "a"]
    img = F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    loss, acc = vocab_ce_loss(img, nouns, ["a", "b", "c"], text_features=text, logit_scale=scale)
    labels = torch.tensor([0, 0, 1, 2, 0])
    assert torch.allclose(loss, F.cross_entropy(10 * img @ text.T, labels))
    # with frozen (identical) text embeddings per noun, the image->text half of the contrastive
    # loss is vocab CE on logits shifted by log(batch count of each noun), plus log(count of the
    # true noun): a batch-frequency prior and a floor that vocab CE does not have
    per_pair_text = text[labels]
    i2t = F.cross_entropy(10 * img @ per_pair_text.T, torch.arange(5), reduction="none")
    log_n = torch.tensor([3.0, 1, 1]).log()
    shifted = F.cross_entropy(10 * img @ text.T + log_n, labels, reduction="none")
    assert torch.allclose(i2t, shifted + log_n[labels], atol=1e-5)
    full, _ = contrastive_loss(img, per_pair_text, scale)
    assert not torch.allclose(full, loss)
    # a perfect crop embedding: vocab CE -> 0 at high temperature, contrastive cannot (duplicates)
    big = torch.tensor(math.log(1000.0))
    perfect, acc = vocab_ce_loss(text[labels], nouns, ["a", "b", "c"], text_features=text, logit_scale=big)
    assert perfect < 1e-3 and acc == 1.0
    dup, acc_c = contrastive_loss(text[labels], per_pair_text, big)
    assert dup > 0.5 and acc_c == 1.0


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, warmup=4, total=12)
    lrs = []
    for _ in range(12):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and abs(lrs[8] - 0.5) < 1e-9 and lrs[11] < 0.05
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_checkpoint_files_rng_and_weights_only(tmp_path):
    for step in (2, 4, 6):
        save_torch({"format": ckpt.FORMAT, "step": step, "rng": [ckpt.rng_state()]},
                         ckpt.checkpoint_path(tmp_path, step))
    (tmp_path / "checkpoints" / ".ckpt-00000008.pt.x.tmp").write_bytes(b"partial")  # a killed write
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6]
    ckpt.prune(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 6]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))  # weights_only=True inside
    assert state["step"] == 6
    saved = ckpt.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(7), random.random()
    ckpt.set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    with pytest.raises(ValueError):
        torch.save({"step": 1}, tmp_path / "other.pt")
        ckpt.load_checkpoint(tmp_path / "other.pt")


def _tiny() -> CLIP:
    vision = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16}
    text = {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}
    return CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text).eval()


def test_prompt_export_roundtrip_and_ovseg_layout(tmp_path):
    torch.manual_seed(0)
    model = MaskPromptCLIP(_tiny(), depth=3)
    info = mpt_export.describe(model, "tiny", None, meta={"steps": 5})
    path = mpt_export.save_prompt(info, tmp_path / "prompt.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ovseg-mpt/1" and raw["depth"] == 3 and raw["grid_size"] == [4, 4]
    assert raw["image_size"] == 32 and raw["patch_size"] == 8 and raw["width"] == 32
    back = mpt_export.load_prompt(path)
    torch.manual_seed(0)
    rebuilt = mpt_export.build_prompted_clip(back, _tiny())  # same CLIP weights, prompt from file
    images, masks = torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32) > 0.99
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_image(images, masks), model.encode_image(images, masks))

    sd = mpt_export.ovseg_state_dict(model.mask_embedding, model.clip.state_dict())
    assert torch.equal(sd["clip_adapter.clip_model.visual.mask_embedding"], model.mask_embedding.detach())
    assert "clip_adapter.clip_model.visual.transformer.resblocks.0.attn.in_proj_weight" in sd
    assert "clip_adapter.clip_model.logit_scale" in sd
    base = {"model": {"backbone.w": torch.ones(1), "clip_adapter.clip_model.visual.proj": torch.zeros(1)},
            "iteration": 7}
    torch.save(base, tmp_path / "ovseg.pth")
    out = mpt_export.save_ovseg(tmp_path / "merged.pth", model.mask_embedding, None,
                                base_checkpoint=tmp_path / "ovseg.pth")
    merged = torch.load(out, weights_only=True)
    assert merged["iteration"] == 7 and set(merged["model"]) == {
        "backbone.w", "clip_adapter.clip_model.visual.proj", "clip_adapter.clip_model.visual.mask_embedding"}
    with pytest.raises(ValueError):
        mpt_export.build_prompted_clip(back, CLIP(24, {"image_size": 32, "patch_size": 16, "width": 32,
                                                        "layers": 3, "head_width": 16},
                                                  {"context_length": 16, "vocab_size": 1000, "width": 32,
                                                   "heads": 2, "layers": 1}))
