"""The OVSeg crop recipe, checked pixel by pixel on hand-built images."""
import pytest
import torch

from ovseg.crops import MEAN_FILL_255, expand_boxes, mask_boxes, masked_crops, normalize, to_uint8_image


def _image() -> torch.Tensor:
    """[3,6,8] image whose pixel (c, y, x) = 100*c + 10*y + x."""
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(6), torch.arange(8), indexing="ij")
    return (100 * c + 10 * y + x).to(torch.uint8)


def _l_mask() -> torch.Tensor:
    """An L-shaped mask inside rows 1..3, cols 2..4 (box x0=2, y0=1, x1=5, y1=4)."""
    m = torch.zeros(6, 8, dtype=torch.bool)
    m[1:4, 2] = True
    m[3, 2:5] = True
    return m


def test_mean_fill_is_clip_mean_on_255_scale():
    assert MEAN_FILL_255 == pytest.approx((122.7709383, 116.7460125, 104.09373615))


def test_box_is_tight_and_exclusive():
    boxes = mask_boxes(torch.stack([_l_mask()]))
    assert boxes.tolist() == [[2, 1, 5, 4]]


def test_crop_at_box_size_keeps_masked_pixels_and_fills_the_rest():
    out = masked_crops(_image(), _l_mask()[None], size=3)
    assert out.crops.shape == (1, 3, 3, 3)
    crop = out.crops[0]
    # inside the mask: original values, e.g. (c=1, y=2, x=2) -> 100 + 20 + 2
    assert crop[1, 1, 0].item() == pytest.approx(122.0)
    assert crop[0, 2, 2].item() == pytest.approx(34.0)  # (y=3, x=4)
    assert crop[2, 0, 0].item() == pytest.approx(212.0)  # (y=1, x=2)
    # outside the mask inside the box: CLIP mean colour
    assert crop[:, 0, 1].tolist() == pytest.approx(list(MEAN_FILL_255), abs=1e-4)
    assert crop[:, 1, 2].tolist() == pytest.approx(list(MEAN_FILL_255), abs=1e-4)
    assert out.masks[0, 0].tolist() == [[True, False, False], [True, False, False], [True, True, True]]
    assert out.areas.tolist() == [5]


def test_upscaled_mask_is_nearest_and_crop_corners_follow():
    out = masked_crops(_image(), _l_mask()[None], size=6)
    expected = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(out.masks[0, 0], expected.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert out.crops.shape == (1, 3, 6, 6)


def test_empty_masks_are_dropped_and_reported():
    masks = torch.stack([torch.zeros(6, 8, dtype=torch.bool), _l_mask()])
    out = masked_crops(_image(), masks, size=4)
    assert out.valid.tolist() == [False, True]
    assert out.crops.shape[0] == 1 and out.boxes.tolist() == [[2, 1, 5, 4]]


def test_soft_masks_are_thresholded():
    soft = _l_mask().float() * 0.6
    soft[0, 0] = 0.4  # below threshold: not part of the mask, box unchanged
    out = masked_crops(_image(), soft[None], size=3, threshold=0.5)
    assert out.boxes.tolist() == [[2, 1, 5, 4]]


def test_zero_fill_and_expand_ratio():
    out = masked_crops(_image(), _l_mask()[None], size=3, fill=(0, 0, 0), expand_ratio=1.0)
    assert out.crops[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]
    # ov-seg truncates: x 3.5±3 -> int(0.5)=0, int(6.5)=6; y 2.5±3 -> int(-0.5)=0, int(5.5)=5
    assert expand_boxes(torch.tensor([[2, 1, 5, 4]]), 2.0, 6, width=8).tolist() == [[0, 0, 6, 5]]
    # ov-seg's expand_box(x1, y1, x2, y2, ratio) then its clip to the image, in plain Python
    def ovseg_box(x1, y1, x2, y2, r, h, w):
        cx, cy, bw, bh = 0.5 * (x1 + x2), 0.5 * (y1 + y2), (x2 - x1) * r, (y2 - y1) * r
        l, t, rr, b = (int(v) for v in (cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh))
        return [max(l, 0), max(t, 0), min(rr, w), min(b, h)]
    g = torch.Generator().manual_seed(0)
    xy0 = torch.randint(0, 30, (200, 2), generator=g)
    boxes = torch.cat([xy0, xy0 + torch.randint(1, 20, (200, 2), generator=g)], dim=1)
    for ratio in (1.1, 1.5, 0.8):
        got = expand_boxes(boxes, ratio, 40, width=45).tolist()
        assert got == [ovseg_box(*b, ratio, 40, 45) for b in boxes.tolist()]


def test_normalize_matches_clip_formula():
    crops = torch.full((1, 3, 2, 2), 255.0)
    out = normalize(crops, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_to_uint8_clamps_bicubic_overshoot():
    crop = torch.tensor([[[-3.0, 300.0]], [[10.4, 10.6]], [[0.0, 255.0]]])
    assert to_uint8_image(crop).tolist() == [[[0, 10, 0], [255, 11, 255]]]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[N,H,W\]"):
        masked_crops(_image(), torch.zeros(1, 5, 8, dtype=torch.bool), size=4)


def test_context_masks_are_the_expanded_boxes_and_keep_the_surroundings():
    import torch

    from ovseg.crops import context_masks, masked_crops

    masks = torch.zeros(3, 20, 30, dtype=torch.bool)
    masks[0, 5:9, 10:14] = True  # a 4x4 square -> box 6x6 centred on it at ratio 1.5
    masks[1, 0:2, 0:3] = True  # at the corner: clipped to the image
    ctx = context_masks(masks, 1.5)
    assert ctx[0].nonzero().min(0).values.tolist() == [4, 9] and ctx[0].nonzero().max(0).values.tolist() == [9, 14]
    assert ctx[0].sum() == 36 and ctx[1][0, 0] and not ctx[2].any()  # an empty mask stays empty
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30) % 255
    view = masked_crops(image, ctx[:1], 6)
    assert torch.allclose(view.crops[0], image[:, 4:10, 9:15], atol=1e-3)  # nothing filled: the surroundings stay
