"""The batched crop cutter gives OVSeg's crops: the per-mask reference up to float rounding."""
import pytest
import skimage.data
import torch

from ovseg.crops import masked_crops
from ovseg.crops_batched import masked_crops_batched
from ovseg.proposals.superpixel import SuperpixelProposals


@pytest.mark.parametrize("size,expand_ratio,soft", [(64, 1.0, False), (96, 1.3, False), (48, 1.0, True)])
def test_batched_crops_equal_the_per_mask_loop(size, expand_ratio, soft):
    pixels = skimage.data.astronaut()[::6, ::5].copy()  # not square, odd sizes
    masks = SuperpixelProposals(max_proposals=12)(pixels).masks
    masks = torch.cat([masks, torch.zeros(1, *masks.shape[1:], dtype=torch.bool)])  # an empty one
    if soft:
        masks = masks.float() * 0.8
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    ref = masked_crops(image, masks, size, expand_ratio=expand_ratio)
    got = masked_crops_batched(image, masks, size, expand_ratio=expand_ratio, max_elements=3 * 5 * masks[0].numel())
    assert got.crops.shape == ref.crops.shape and ref.crops.shape[0] == masks.shape[0] - 1
    assert torch.allclose(got.crops, ref.crops, atol=2e-3)
    assert torch.equal(got.masks, ref.masks)
    assert torch.equal(got.boxes, ref.boxes) and torch.equal(got.valid, ref.valid) and torch.equal(got.areas, ref.areas)
