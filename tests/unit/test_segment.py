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


def test_ensemble_probs_follows_ovseg_on_hand_computed_tensors():
    clip = torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    mf = torch.tensor([[0.2, 0.6], [0.4, 0.4], [0.3, 0.1]])  # softmax[:, :-1]: rows sum < 1, not renormalised
    valid = torch.tensor([True, False, True])
    p, keep = ensemble_probs(clip, mf, 0.5, valid=valid)
    # w = 0.5: sqrt(mf * clip); the invalid mask keeps clip = 1 -> sqrt(mf)
    expected = torch.tensor([[0.4, 0.12 ** 0.5], [0.4 ** 0.5, 0.4 ** 0.5], [0.03 ** 0.5, 0.09 ** 0.5]])
    torch.testing.assert_close(p, expected)
    assert keep.all()
    p, _ = ensemble_probs(clip, mf, 0.75, valid=valid)
    torch.testing.assert_close(p[0], torch.tensor([0.2 ** 0.25 * 0.8 ** 0.75, 0.6 ** 0.25 * 0.2 ** 0.75]))
    # w = 0: ov-seg's "only clip model predictions", invalid masks dropped
    p, keep = ensemble_probs(clip, mf, 0.0, valid=valid)
    assert torch.equal(p, clip) and keep.tolist() == [True, False, True]
    # no proposal classes: CLIP alone; no CLIP: proposal classes alone, every mask kept
    assert torch.equal(ensemble_probs(clip, None, valid=valid)[0], clip)
    p, keep = ensemble_probs(None, mf)
    assert torch.equal(p, mf) and keep.all()
    # zsseg's seen branch: class 0 seen -> its weights swap (mf^w clip^(1-w)), class 1 as before
    p, _ = ensemble_probs(clip, mf, 0.75, valid=valid, seen=torch.tensor([True, False]))
    torch.testing.assert_close(p[0], torch.tensor([0.2 ** 0.75 * 0.8 ** 0.25, 0.6 ** 0.25 * 0.2 ** 0.75]))
    torch.testing.assert_close(p[1], torch.tensor([0.4 ** 0.75, 0.4 ** 0.25]))
    with pytest.raises(ValueError):
        ensemble_probs(None, None)


def test_segment_image_is_the_einsum_of_fused_probs_and_soft_masks():
    masks = torch.tensor([[[0.9, 0.6], [0.1, 0.0]], [[0.2, 0.7], [0.8, 0.0]]])  # [2,2,2] sigmoid masks
    mf = torch.tensor([[0.7, 0.1], [0.2, 0.5]])
    res = segment_image(None, torch.zeros(3, 2, 2), masks, text_emb=None, proposal_probs=mf)
    # semseg[c] = sum_q mf[q,c] * m[q]: pixel (0,1): c0 .42+.14=.56, c1 .06+.35=.41 -> 0
    # pixel (1,0): c0 .07+.16=.23, c1 .01+.4=.41 -> 1; pixel (1,1) uncovered
    assert res.label.tolist() == [[0, 0], [1, NO_LABEL]]
    torch.testing.assert_close(res.score[0, 1], torch.tensor(0.56 / 1.3))
    assert res.score[1, 1] == 0


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
    assert res.valid.tolist() == [True, True, False]
    batched = classify_masks(tiny, image, masks, text_emb=text, batched=True)[0]
    torch.testing.assert_close(batched, probs, atol=1e-4, rtol=1e-3)
    bf16 = classify_masks(tiny, image, masks, text_emb=text, precision="bf16")[0]
    assert (bf16.argmax(1)[:2] == probs.argmax(1)[:2]).all() or torch.allclose(bf16, probs, atol=0.1)
    assert res.label.shape == (40, 48)
    assert set(res.label.unique().tolist()) <= set(range(5))  # the two masks cover every pixel
    assert (res.label[:20] == probs[0].argmax()).all()
