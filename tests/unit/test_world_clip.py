"""The committed world CLIP loads through ovseg.clip and names held-out world regions well above chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.clip import TextEmbeddingCache, load_clip
from ovseg.segment import classify_masks
from pipelines.world.categories import NAMES
from pipelines.world.generate import make_sample

ASSETS = Path(__file__).resolve().parents[2] / "assets/world_clip"
CHANCE = 1.0 / len(NAMES)


@pytest.fixture(scope="module")
def world_clip():
    if not (ASSETS / "world_clip.pt").exists():
        pytest.skip("world CLIP weights not committed")
    torch.set_num_threads(1)
    return load_clip("world-clip", checkpoint=str(ASSETS / "world_clip.pt"))


def test_checkpoint_is_small_and_logged(world_clip):
    assert (ASSETS / "world_clip.pt").stat().st_size < 10_000_000
    log = json.loads((ASSETS / "train_log.json").read_text())
    assert log["loss"][-1] < log["loss"][0]
    assert world_clip.image_size == 64 and world_clip.embed_dim == 128


def test_masked_crops_of_heldout_regions_beat_chance(world_clip):
    text = TextEmbeddingCache(world_clip).embed(list(NAMES))
    hits = total = 0
    for i in range(15):
        scene, _ = make_sample(0, "val", i)
        masks = torch.from_numpy(np.stack([inst.mask for inst in scene.instances]))
        gt = torch.tensor([inst.category.train_id for inst in scene.instances])
        probs, valid = classify_masks(world_clip, torch.from_numpy(scene.image).permute(2, 0, 1), masks, text_emb=text)
        hits += int(((probs.argmax(1) == gt) & valid).sum())
        total += int(valid.sum())
    assert hits / total > 4 * CHANCE, hits / total
