"""In-process tuning runs (one process, tiny random CLIP): overfitting, resume, modes, exports."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ovseg import mpt_export
from ovseg.clip import load_clip
from pipelines.config.load import load_config
from pipelines.train import checkpoint as ckpt
from pipelines.train.config import TuneConfig
from pipelines.train.dist import init_world
from pipelines.train.loop import run
from tests.synthetic_pairs import write_synthetic_pairs

SMOKE = "conf/smoke/tune_mpt.yaml"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_pairs")
    write_synthetic_pairs(str(root / "four"), n_shards=1, per_shard=16, size=64, nouns=("a", "b", "c", "d"))
    write_synthetic_pairs(str(root / "mixed"), n_shards=2, per_shard=24, size=64, seed=3)
    return root


def config(*overrides: str) -> TuneConfig:
    return load_config(TuneConfig, SMOKE, ["run.tensorboard=false", *overrides])


def test_mpt_overfits_a_tiny_shard(pairs, tmp_path):
    """Only the mask prompt trains (logit scale frozen): 30 steps on 16 pairs of 4 nouns must cut
    the loss by >= 2.5x and below log(4), the loss of a uniform guess."""
    cfg = config(f"data.urls={pairs / 'four'}", f"run.out_dir={tmp_path}", "optim.max_steps=30",
                 "optim.lr=0.1", "optim.warmup_steps=0", "optim.train_logit_scale=false",
                 "data.batch_size=16", "data.holdout_percent=0", "data.shuffle_buffer=0",
                 "eval.before=false", "run.save_every=1000")
    summary = run(cfg, init_world("cpu"))
    history = summary["loss_history"]
    late = sum(history[-5:]) / 5
    assert history[0] / late >= 2.5, history
    assert late < math.log(4)


def test_stop_resume_and_exports(pairs, tmp_path):
    common = [f"data.urls={pairs / 'mixed'}", f"run.out_dir={tmp_path}", "optim.max_steps=5",
              "run.save_every=2", "data.batch_size=4", "eval.max_samples=16", "run.keep_last=2"]
    first = run(config(*common, "run.stop_at=3"), init_world("cpu"))
    assert first["step"] == 3 and not first["finished"] and "eval_after" not in first
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 3))
    assert saved["scheduler"]["last_epoch"] == 3 and saved["optimizer"]["state"]
    assert set(saved["trainable"]) == {"prompt.mask_embedding", "clip.logit_scale"}

    second = run(config(*common), init_world("cpu"))  # resume=auto is the default
    assert second["resumed_from_step"] == 3 and second["step"] == 5 and second["finished"]
    assert len(second["loss_history"]) == 2
    assert second["eval_before"] == first["eval_before"]  # carried in the checkpoint
    assert second["eval_after"]["samples"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 5

    prompt = mpt_export.load_prompt(second["exports"]["prompt"])
    final = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert torch.equal(prompt.mask_embedding, final["trainable"]["prompt.mask_embedding"])
    assert prompt.clip_model == "ovseg-tiny-vit" and prompt.depth == 2 and prompt.image_size == 64
    # random-init CLIP: its weights travel with the export, so the prompt file rebuilds the model
    model, bundle = mpt_export.load_prompted_clip(second["exports"]["prompt"])
    assert prompt.clip_checkpoint == "clip_weights.pt"
    assert torch.equal(model.mask_embedding, prompt.mask_embedding)
    tuned = torch.load(tmp_path / "export" / "clip_weights.pt", weights_only=True)
    assert all(torch.equal(v, tuned[k]) for k, v in model.clip.state_dict().items())
    ovseg = torch.load(second["exports"]["ovseg"], weights_only=True)["model"]
    assert torch.equal(ovseg["clip_adapter.clip_model.visual.mask_embedding"], prompt.mask_embedding)
    assert torch.equal(ovseg["clip_adapter.clip_model.visual.conv1.weight"], tuned["visual.conv1.weight"])


@pytest.mark.parametrize("mode,loss,precision", [("finetune", "contrastive", "fp32"),
                                                  ("finetune+mpt", "vocab_ce", "bf16")])
def test_finetune_modes(pairs, tmp_path, mode, loss, precision):
    cfg = config(f"data.urls={pairs / 'mixed'}", f"run.out_dir={tmp_path}", "optim.max_steps=2",
                 f"optim.mode={mode}", f"loss.name={loss}", "optim.lr=1e-4", "optim.weight_decay=0.2",
                 f"optim.precision={precision}", "eval.every_steps=1",
                 "optim.grad_accum=2", "data.batch_size=4", "eval.before=false", "eval.max_samples=8")
    summary = run(cfg, init_world("cpu"))
    assert summary["finished"] and summary["global_batch"] == 8
    assert summary["eval_step_1"]["samples"] > 0 and "eval_step_2" not in summary  # step 2 = after
    trained = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["trainable"]
    assert "clip.visual.conv1.weight" in trained and not any(k.startswith("clip.transformer") for k in trained)
    assert ("prompt.mask_embedding" in trained) == (mode == "finetune+mpt")
    tuned = torch.load(summary["exports"]["clip"], weights_only=True)
    assert torch.equal(tuned["visual.conv1.weight"], trained["clip.visual.conv1.weight"])
    ovseg = torch.load(summary["exports"]["ovseg"], weights_only=True)["model"]
    assert "clip_adapter.clip_model.visual.conv1.weight" in ovseg
    assert ("clip_adapter.clip_model.visual.mask_embedding" in ovseg) == (mode == "finetune+mpt")
    if mode == "finetune+mpt":
        model, _ = mpt_export.load_prompted_clip(summary["exports"]["prompt"], load_clip)
        assert torch.equal(model.clip.visual.conv1.weight, trained["clip.visual.conv1.weight"])


def test_stop_and_resume_give_the_weights_of_an_uninterrupted_run(pairs, tmp_path):
    """The resumed run continues the exact data order and RNG: its mask prompt equals the prompt of
    one run of the same steps. Not bit for bit: the frozen text embeddings are cached in batches of
    the nouns first seen, and the resumed run meets them in other batches (float sums in another
    order, 1e-7 apart); a fresh shuffle after the resume instead differs by ~1e-3."""
    common = [f"data.urls={pairs / 'mixed'}", "optim.max_steps=5", "run.save_every=2", "data.batch_size=4",
              "eval.before=false", "data.holdout_percent=0"]
    whole = run(config(*common, f"run.out_dir={tmp_path / 'whole'}"), init_world("cpu"))
    run(config(*common, f"run.out_dir={tmp_path / 'cut'}", "run.stop_at=3"), init_world("cpu"))
    resumed = run(config(*common, f"run.out_dir={tmp_path / 'cut'}"), init_world("cpu"))
    assert resumed["resumed_from_step"] == 3 and resumed["step"] == whole["step"] == 5
    a = mpt_export.load_prompt(whole["exports"]["prompt"]).mask_embedding
    b = mpt_export.load_prompt(resumed["exports"]["prompt"]).mask_embedding
    assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    assert resumed["loss_history"] == pytest.approx(whole["loss_history"][3:], rel=1e-5)
