"""The committed world CLIPs (v1 ``assets/world_clip``, v2 ``assets/world_clip_v2``): each loads by name
through ovseg.clip (conv stem included), recognises the objects of held-out whole world images, keeps
its object prompts apart, and MPT wraps it; v2 (zoom-tuned) names OVSeg's masked crops better than v1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovseg.clip import TextEmbeddingCache, encode_images, load_clip
from ovseg.conv_stem import ConvStem
from ovseg.crops import masked_crops, normalize
from ovseg.mpt import MaskPromptCLIP
from pipelines.world.categories import NAMES, THINGS
from pipelines.world.generate import make_sample

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = {"v1": ROOT / "assets/world_clip/world_clip.pt", "v2": ROOT / "assets/world_clip_v2/world_clip.pt"}
N_VAL = 60


@pytest.fixture(scope="module")
def clips():
    torch.set_num_threads(1)
    return {name: load_clip("world-clip", checkpoint=str(path)) for name, path in WEIGHTS.items()}


@pytest.fixture(scope="module", params=sorted(WEIGHTS))
def world_clip(request, clips):
    return clips[request.param]


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
    assert all(path.stat().st_size < 10_000_000 for path in WEIGHTS.values())
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


def test_the_zoom_tuned_clip_names_ovseg_crops_better(clips):
    """Issue 17's world CLIP v2: the same held-out objects cut out OVSeg's way (tight box, mean-colour
    fill, resized to the input), 16-way. Measured on 150 images (bench/world_gap.py): v1 0.157, v2 0.333;
    chance 1/16. Here 60 images: v1 0.131, v2 0.352. A v2 file that is v1 again fails here."""
    acc = {}
    for name, bundle in clips.items():
        text = TextEmbeddingCache(bundle).embed([c.name for c in THINGS])
        hits = total = 0
        for i in range(N_VAL):
            scene, _ = make_sample(0, "val", i)
            if not scene.things:
                continue
            image = torch.from_numpy(scene.image).permute(2, 0, 1).float()
            masks = torch.from_numpy(np.stack([t.mask for t in scene.things]))
            truth = torch.tensor([t.category.train_id for t in scene.things])
            crops = masked_crops(image, masks, bundle.image_size)
            top = (encode_images(bundle, normalize(crops.crops, bundle.mean, bundle.std)) @ text.T).argmax(1)
            hits += int((top == truth[crops.valid]).sum())
            total += int(crops.valid.sum())
        acc[name] = hits / total
    assert total > 100 and acc["v2"] >= acc["v1"] + 0.08 and acc["v2"] >= 0.22, acc
