"""Confusion-matrix mIoU against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovseg.metrics import ConfusionMatrix, miou


def test_perfect_prediction():
    gt = np.array([[0, 1], [2, 255]])
    cm = ConfusionMatrix(3)
    cm.update(gt.copy(), gt)
    r = cm.compute()
    assert r["mIoU"] == 1.0 and r["pixel_acc"] == 1.0 and r["mean_acc"] == 1.0


def test_hand_computed_iou():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    r = ConfusionMatrix(3)
    r.update(pred, gt)
    out = r.compute()
    # class 0: tp 1, fn 1, fp 0 -> 1/2 ; class 1: tp 2, fp 1 -> 2/3 ; class 2 absent -> NaN
    assert out["iou"][0] == pytest.approx(0.5) and out["iou"][1] == pytest.approx(2 / 3)
    assert math.isnan(out["iou"][2])
    assert out["mIoU"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(0.75)


def test_ignore_in_gt_is_skipped_and_unlabelled_prediction_is_a_miss():
    gt = np.array([[0, 255, 1, 1]])
    pred = np.array([[0, 1, 255, 1]])
    cm = ConfusionMatrix(2)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    out = cm.compute()
    assert out["iou"] == [pytest.approx(1.0), pytest.approx(0.5)]  # class 1: tp 1, fn 1 (pred 255)
    assert out["pixel_acc"] == pytest.approx(2 / 3)


def test_accumulates_over_images_and_wrapper():
    gts = [np.zeros((2, 2), int), np.ones((2, 2), int)]
    preds = [np.zeros((2, 2), int), np.zeros((2, 2), int)]
    assert miou(preds, gts, 2) == pytest.approx((0.5 + 0.0) / 2)


def test_rejects_bad_labels():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2)), np.full((2, 2), 5))
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 3)), np.zeros((2, 2)))


def test_fwiou_acc_merge_and_16_bit_ignore_by_hand():
    # 3 classes, 16-bit labels with 65535 = ignore; class 2 absent from gt and prediction
    gt = np.array([[0, 0, 0, 1, 1, 65535]], dtype=np.uint16)
    pred = np.array([[0, 0, 1, 1, 65535, 2]], dtype=np.uint16)  # pred 65535 = no proposal: a miss
    cm = ConfusionMatrix(3, ignore_index=65535)
    cm.update(pred, gt)
    out = cm.compute()
    # class 0: tp 2, fn 1, fp 0 -> 2/3 ; class 1: tp 1, fn 1 (none), fp 1 -> 1/3 ; class 2: NaN
    assert out["iou"][:2] == [pytest.approx(2 / 3), pytest.approx(1 / 3)] and math.isnan(out["iou"][2])
    assert out["fwIoU"] == pytest.approx(3 / 5 * 2 / 3 + 2 / 5 * 1 / 3)
    assert out["pixel_acc"] == pytest.approx(3 / 5)
    assert out["acc"][:2] == [pytest.approx(2 / 3), pytest.approx(1 / 2)] and out["gt_pixels"] == [3, 2, 0]
    assert cm.group_miou([1, 2]) == pytest.approx(1 / 3)
    other = ConfusionMatrix(3, ignore_index=65535)
    other.update(gt[:, :3], gt[:, :3])
    cm.merge(other)
    assert cm.compute()["iou"][0] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="label 7 outside 0..2"):
        cm.update(np.zeros((1, 1)), np.full((1, 1), 7))
