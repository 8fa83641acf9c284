"""Hungarian matcher and set-prediction losses on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from ovseg.maskformer.losses import (LossWeights, classification_loss, dice_loss, set_criterion,
                                     sigmoid_bce_loss, sigmoid_focal_loss)
from ovseg.maskformer.matcher import (MatchCosts, hungarian_match, pairwise_bce_cost, pairwise_dice_cost,
                                      pairwise_focal_cost)

BIG = 20.0  # a logit whose sigmoid is 1 to float precision


def _masks(*pixels: list[int]) -> torch.Tensor:
    """2×2 bool masks with the given flat pixels set."""
    out = torch.zeros(len(pixels), 4, dtype=torch.bool)
    for i, px in enumerate(pixels):
        out[i, px] = True
    return out.view(-1, 2, 2)


def test_dice_of_half_probabilities_by_hand():
    # p = 0.5 on 4 pixels, target 1 pixel: 1 - (2*0.5*1 + 1) / (2 + 1 + 1) = 0.5
    logits = torch.zeros(1, 4)
    target = torch.tensor([[1.0, 0, 0, 0]])
    assert pairwise_dice_cost(logits, target).item() == pytest.approx(0.5)
    assert dice_loss(logits, target, num_masks=2.0).item() == pytest.approx(0.25)


def test_focal_of_half_probabilities_by_hand():
    # positive pixel: 0.25 * 0.5^2 * ln2; negative: 0.75 * 0.5^2 * ln2; mean over 1 + 3 pixels
    logits = torch.zeros(1, 4)
    target = torch.tensor([[1.0, 0, 0, 0]])
    expected = (0.0625 + 3 * 0.1875) / 4 * math.log(2)
    assert sigmoid_focal_loss(logits, target, 1.0).item() == pytest.approx(expected)
    assert pairwise_focal_cost(logits, target).item() == pytest.approx(expected)


def test_bce_pairwise_equals_the_elementwise_loss():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-3.0, 1.0, 0.0, 4.0]])
    targets = torch.tensor([[1.0, 0, 0, 1], [0.0, 1, 1, 0], [1.0, 1, 1, 1]])
    pair = pairwise_bce_cost(logits, targets)
    for q in range(2):
        for n in range(3):
            assert pair[q, n].item() == pytest.approx(sigmoid_bce_loss(logits[q:q + 1], targets[n:n + 1], 1.0).item())


def test_matcher_crosses_when_masks_say_so():
    # query 0 predicts target 1's mask, query 1 target 0's, query 2 nothing: classes are uninformative
    targets = [{"labels": torch.tensor([0, 1]), "masks": _masks([0, 1], [2, 3])}]
    pred_masks = torch.full((1, 3, 2, 2), -BIG)
    pred_masks[0, 0].view(-1)[[2, 3]] = BIG
    pred_masks[0, 1].view(-1)[[0, 1]] = BIG
    pred_logits = torch.zeros(1, 3, 3)
    (rows, cols), = hungarian_match(pred_logits, pred_masks, targets)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_matcher_follows_classes_when_masks_are_equal():
    targets = [{"labels": torch.tensor([2, 0]), "masks": _masks([0], [0])}]
    pred_masks = torch.zeros(1, 2, 2, 2)
    pred_logits = torch.tensor([[[5.0, 0, 0, 0], [0, 0, 5.0, 0]]])  # q0 says class 0, q1 says class 2
    (rows, cols), = hungarian_match(pred_logits, pred_masks, targets, costs=MatchCosts(cost_mask=0.0, cost_dice=0.0))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_matcher_resizes_targets_and_handles_empty_images():
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}]
    pred_masks = torch.full((2, 2, 2, 2), -BIG)
    pred_masks[0, 1] = BIG
    out = hungarian_match(torch.zeros(2, 2, 2), pred_masks, targets)
    assert out[0][0].tolist() == [1] and out[0][1].tolist() == [0]
    assert out[1][0].numel() == 0 and out[1][1].numel() == 0


def test_classification_loss_weighs_no_object_by_hand():
    # q0 matched to class 0 with logits [0, 0] -> ln 2; q1 unmatched (no object) with [0, ln 3] -> ln(4/3)
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)]]])
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    loss = classification_loss(logits, matches, [{"labels": torch.tensor([0])}], no_object_weight=0.1)
    assert loss.item() == pytest.approx((math.log(2) + 0.1 * math.log(4 / 3)) / 1.1)


def test_set_criterion_total_by_hand_with_aux_layers():
    # one image, one target (pixel 0 of a 2x2 mask), two queries, K = 1 class
    targets = [{"labels": torch.tensor([0]), "masks": _masks([0])}]
    pred_masks = torch.zeros(1, 2, 2, 2)
    pred_masks[0, 1] = -BIG  # query 1 predicts an empty mask: query 0 (p = 0.5 everywhere) is matched
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)]]])
    outputs = {"pred_logits": logits, "pred_masks": pred_masks,
               "aux_outputs": [{"pred_logits": logits.clone(), "pred_masks": pred_masks.clone()}]}
    parts = set_criterion(outputs, targets)
    ce = (math.log(2) + 0.1 * math.log(4 / 3)) / 1.1
    focal = (0.0625 + 3 * 0.1875) / 4 * math.log(2)
    dice = 0.5
    for suffix in ("", "_0"):
        assert parts["loss_ce" + suffix].item() == pytest.approx(ce)
        assert parts["loss_mask" + suffix].item() == pytest.approx(focal)
        assert parts["loss_dice" + suffix].item() == pytest.approx(dice)
    assert parts["loss"].item() == pytest.approx(2 * (ce + 20 * focal + dice))
    no_aux = set_criterion(outputs, targets, weights=LossWeights(deep_supervision=False, mask_loss="bce"))
    assert "loss_ce_0" not in no_aux
    assert no_aux["loss"].item() == pytest.approx(ce + 20 * math.log(2) + dice)


def test_set_criterion_upsamples_predictions_and_backpropagates():
    torch.manual_seed(0)
    targets = [{"labels": torch.tensor([1, 0]), "masks": torch.rand(2, 16, 16) > 0.5},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}]
    logits = torch.randn(2, 5, 4, requires_grad=True)
    masks = torch.randn(2, 5, 4, 4, requires_grad=True)
    out = set_criterion({"pred_logits": logits, "pred_masks": masks}, targets, num_masks=4.0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and logits.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0
    assert masks.grad[1].abs().sum() == 0  # the image without targets trains no mask


def test_bad_mask_loss_name_is_rejected():
    with pytest.raises(ValueError, match="mask_loss"):
        LossWeights(mask_loss="l2")
