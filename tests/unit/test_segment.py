"""Two-stage segmentation plumbing on a random tiny CLIP: shapes, painting, ensembling."""

from __future__ import annotations

import pytest
import torch

from ovseg.segment import NO_LABEL, classify_masks, ensemble_probs, paint_label_map, segment_image


def test_paint_label_map_prefers_confident_masks_and_marks_uncovered():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :, :2] = True
    masks[1, :, 1:3] = True  # overlaps mask 0 on column 1
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.6, 0.4]])
    label = paint_label_map(masks, probs)
    assert label.shape == (4, 4) and label.dtype == torch.long
    assert (label[:, 0] == 0).all() and (label[:, 1] == 0).all()  # 0.9 beats 0.6
    assert (label[:, 2] == 1).all() and (label[:, 3] == NO_LABEL).all()
    scored = paint_label_map(masks, probs, scores=torch.tensor([0.1, 1.0]))
    assert (scored[:, 1] == 1).all()  # down-weighted proposal loses the overlap


def test_paint_label_map_empty():
    assert (paint_label_map(torch.zeros(0, 3, 5, dtype=torch.bool), torch.zeros(0, 4)) == NO_LABEL).all()


def test_ensemble_probs():
    a = torch.tensor([[0.8, 0.2]])
    b = torch.tensor([[0.2, 0.8]])
    assert torch.equal(ensemble_probs(a, None), a)
    e = ensemble_probs(a, b, clip_weight=0.5)
    assert torch.allclose(e, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(e.sum(-1), torch.ones(1))


@pytest.fixture(scope="module")
def tiny():
    from ovseg.clip import load_clip

    torch.manual_seed(0)
    return load_clip("ovseg-tiny-vit")


def test_classify_and_segment_shapes(tiny):
    from ovseg.mpt import MaskPrompt

    image = torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8)
    masks = torch.zeros(3, 40, 48, dtype=torch.bool)
    masks[0, :20] = True
    masks[1, 20:] = True  # mask 2 stays empty
    text = torch.nn.functional.normalize(torch.randn(5, tiny.embed_dim), dim=-1)
    probs, valid = classify_masks(tiny, image, masks, text_emb=text)
    assert probs.shape == (3, 5) and valid.tolist() == [True, True, False]
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(probs[2], torch.full((5,), 0.2))
    prompt = MaskPrompt(tiny.model.visual, depth=1)
    p2, _ = classify_masks(tiny, image, masks, text_emb=text, prompt=prompt)
    assert p2.shape == (3, 5)
    res = segment_image(tiny, image, masks, text_emb=text)
    assert res.label.shape == (40, 48)
    assert set(res.label.unique().tolist()) <= set(range(5))  # the two masks cover every pixel
    assert (res.label[:20] == probs[0].argmax()).all()
