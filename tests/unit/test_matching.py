"""Best mask per noun, thresholds, runner-up and margin bookkeeping."""
import pytest
import torch

from ovseg.matching import MatchParams, match_pairs

NOUNS = ["cat", "dog", "rug"]
# rows = nouns, columns = masks
SIM = torch.tensor([
    [0.30, 0.10, 0.05, 0.40],
    [0.28, 0.35, 0.00, 0.20],
    [0.01, 0.02, 0.25, 0.41],
])


def test_best_mask_per_noun_with_runner_up_and_margin():
    pairs, rejected = match_pairs(SIM, NOUNS, torch.tensor([100, 100, 100, 100]), params=MatchParams())
    by_noun = {p.noun: p for p in pairs}
    # rug's best mask (3, 0.41) beats cat there (0.40); cat's best mask is 3 too, where rug leads
    assert set(by_noun) == {"dog", "rug"}
    assert rejected == {"low_margin": 1}
    assert by_noun["dog"].mask_index == 1 and by_noun["dog"].runner_up_noun == "cat"
    assert by_noun["dog"].margin == pytest.approx(0.25)
    assert by_noun["rug"].mask_index == 3 and by_noun["rug"].runner_up_noun == "cat"
    assert by_noun["rug"].margin == pytest.approx(0.01)


def test_min_area_excludes_small_masks_before_argmax():
    areas = torch.tensor([100, 100, 100, 5])  # mask 3 too small
    pairs, rejected = match_pairs(SIM, NOUNS, areas, params=MatchParams(min_area=10))
    by_noun = {p.noun: p for p in pairs}
    assert by_noun["cat"].mask_index == 0 and by_noun["rug"].mask_index == 2
    assert not rejected
    assert {p.noun for p in pairs} == {"cat", "dog", "rug"}


def test_min_area_frac_uses_image_area():
    areas = torch.tensor([100, 100, 100, 100])
    pairs, rejected = match_pairs(SIM, NOUNS, areas, params=MatchParams(min_area_frac=0.5), image_area=1000)
    assert pairs == [] and rejected == {"no_large_mask": 3}


def test_min_score_and_margin_thresholds():
    pairs, rejected = match_pairs(SIM, NOUNS, torch.full((4,), 100), params=MatchParams(min_score=0.36, min_margin=-1))
    assert [p.noun for p in pairs] == ["cat", "rug"]
    assert rejected == {"low_score": 1}
    pairs, rejected = match_pairs(SIM, NOUNS, torch.full((4,), 100), params=MatchParams(min_margin=0.1))
    assert [p.noun for p in pairs] == ["dog"]
    assert rejected == {"low_margin": 2}


def test_single_noun_has_no_runner_up():
    pairs, _ = match_pairs(SIM[:1], NOUNS[:1], torch.full((4,), 50), params=MatchParams(min_margin=0.5))
    assert len(pairs) == 1 and pairs[0].runner_up_noun is None and pairs[0].margin is None
    assert pairs[0].mask_index == 3 and pairs[0].area == 50


def test_no_masks_and_shape_errors():
    pairs, rejected = match_pairs(torch.zeros(2, 0), ["a", "b"], torch.zeros(0), params=MatchParams())
    assert pairs == [] and rejected == {"no_large_mask": 2}
    with pytest.raises(ValueError):
        match_pairs(SIM, NOUNS[:2], torch.full((4,), 1), params=MatchParams())
