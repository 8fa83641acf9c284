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
