"""The convolutional stem keeps the ViT's token grid, and load_clip builds it from the model name."""

import open_clip
import pytest
import torch

from ovseg.clip import load_clip
from ovseg.conv_stem import CONV_STEM_MODELS, ConvStem, apply_conv_stem
from ovseg.mpt import MaskPrompt


def test_stem_output_is_the_patch_grid():
    stem = ConvStem(width=128, patch_size=8, hidden=(32, 64))
    out = stem(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 128, 8, 8) and stem.out_channels == 128


@pytest.mark.parametrize("patch, hidden", [(6, (32,)), (8, (32,)), (1, ())])
def test_stem_rejects_what_cannot_keep_the_grid(patch, hidden):
    with pytest.raises(ValueError):
        ConvStem(width=64, patch_size=patch, hidden=hidden)


def test_load_clip_builds_the_stem_by_name_and_others_stay_plain():
    assert "world-clip" in CONV_STEM_MODELS
    world = load_clip("world-clip")
    assert isinstance(world.model.visual.conv1, ConvStem)
    tiny = load_clip("ovseg-tiny-vit")
    assert isinstance(tiny.model.visual.conv1, torch.nn.Conv2d)
    plain = open_clip.create_model("ovseg-tiny-vit")
    assert apply_conv_stem(plain, "ovseg-tiny-vit").visual.conv1.__class__ is torch.nn.Conv2d


def test_mask_prompt_reads_the_width_of_a_stem_tower():
    world = load_clip("world-clip")
    prompt = MaskPrompt(world.model.visual, depth=2)
    assert prompt.mask_embedding.shape == (2, 64, 128)
