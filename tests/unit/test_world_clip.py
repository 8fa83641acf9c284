"""The committed world CLIP: loads by name through ovseg.clip (conv stem included), recognises the
objects of held-out whole world images, keeps its object prompts apart, and MPT wraps it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovseg.clip import TextEmbeddingCache, encode_images, load_clip
from ovseg.conv_stem import ConvStem
from ovseg.crops import normalize
from ovseg.mpt import MaskPromptCLIP
from pipelines.world.categories import NAMES, THINGS
from pipelines.world.generate import make_sample

ASSETS = Path(__file__).resolve().parents[2] / "assets/world_clip"
N_VAL = 60


@pytest.fixture(scope="module")
def world_clip():
    torch.set_num_threads(1)
    return load_clip("world-clip", checkpoint=str(ASSETS / "world_clip.pt"))


@pytest.fixture(scope="module")
def heldout():
    """``N_VAL`` held-out val images at 64 px ``[N,3,64,64]`` float 0..255 and their object ids."""
    images, objects = [], []
    for i in range(N_VAL):
        scene, _ = make_sample(0, "val", i)
        small = Image.fromarray(scene.image).resize((64, 64), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1).float())
        objects.append({inst.category.train_id for inst in scene.things})
    return torch.stack(images), objects


def test_checkpoint_is_small_and_has_the_conv_stem(world_clip):
    """What the weights do is tested live below (held-out images, prompts); the training log's own
    figures are not asserted."""
    assert (ASSETS / "world_clip.pt").stat().st_size < 10_000_000
    assert isinstance(world_clip.model.visual.conv1, ConvStem)
    assert world_clip.image_size == 64 and world_clip.embed_dim == 128


def test_whole_heldout_images_name_their_objects(world_clip, heldout):
    images, objects = heldout
    text = TextEmbeddingCache(world_clip).embed([c.name for c in THINGS])  # 16 object prompts
    feats = encode_images(world_clip, normalize(images, world_clip.mean, world_clip.std))
    top = (feats @ text.T).argmax(1).tolist()
    hit = np.mean([t in present for t, present in zip(top, objects) if present])
    assert hit >= 0.7, hit  # chance is ~0.14


def test_object_prompts_do_not_collapse(world_clip):
    text = TextEmbeddingCache(world_clip).embed([c.name for c in THINGS])
    cos = text @ text.T
    off = cos[~torch.eye(len(THINGS), dtype=torch.bool)]
    assert off.max() < 0.95, off.max()  # the old patchify-stem CLIP had mean 0.997


def test_mask_prompts_wrap_the_conv_stem_tower(world_clip, heldout):
    images = normalize(heldout[0][:4], world_clip.mean, world_clip.std)
    prompted = MaskPromptCLIP(world_clip.model, depth=3)
    ones = torch.ones(4, 1, 64, 64, dtype=torch.bool)
    plain = F.normalize(world_clip.model.encode_image(images), dim=-1)
    assert torch.allclose(prompted.encode_image(images, ones), plain, atol=1e-5)
    half = ones.clone()
    half[..., :32] = False
    assert not torch.allclose(prompted.encode_image(images, half), plain, atol=1e-3)
    assert len(NAMES) == 22
