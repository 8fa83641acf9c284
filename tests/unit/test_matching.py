"""Best mask per noun, thresholds, runner-up and margin bookkeeping."""
import pytest
import torch

from ovseg.matching import MatchParams as _Params, match_pairs


def MatchParams(**kw):  # noqa: N802 - the library's thresholds, opened up unless a test sets them
    return _Params(**{"strategy": "best_mask", "min_score": 0.0, "min_area": 0, "min_area_frac": 0.0, **kw})

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


# ----------------------------------------------------------------------------- strategies
def _by_noun(pairs):
    return {p.noun: p for p in pairs}


def test_config_rules_live_with_the_params():
    assert _Params().problems() == []
    bad = _Params(strategy="greedy", min_score=3, temperature=0, min_prob=2)
    assert [name for name, _ in bad.problems()] == ["strategy", "min_score", "temperature", "min_prob"]
    with pytest.raises(ValueError, match="greedy"):
        match_pairs(SIM, NOUNS, torch.full((4,), 100), params=MatchParams(strategy="greedy"))


def test_best_mask_lets_two_nouns_share_a_mask_and_records_why():
    pairs, _ = match_pairs(SIM, NOUNS, torch.full((4,), 100), params=MatchParams(min_margin=-1))
    by = _by_noun(pairs)
    assert by["cat"].mask_index == by["rug"].mask_index == 3  # a mask every... two nouns want
    assert all(p.strategy == "best_mask" and p.candidates == 4 for p in pairs)


def test_one_to_one_gives_a_mask_at_most_one_noun():
    pairs, rejected = match_pairs(SIM, NOUNS, torch.full((4,), 100),
                                  params=MatchParams(strategy="one_to_one", min_margin=-1))
    by = _by_noun(pairs)
    # the assignment maximising the sum: cat->0 (0.30), dog->1 (0.35), rug->3 (0.41) = 1.06
    assert {n: p.mask_index for n, p in by.items()} == {"cat": 0, "dog": 1, "rug": 3}
    assert len({p.mask_index for p in pairs}) == 3 and not rejected
    assert by["cat"].evidence == {"own_best_mask": 3, "own_best_score": pytest.approx(0.40)}  # displaced
    assert by["cat"].strategy == "one_to_one"


def test_one_to_one_with_a_mask_every_noun_wants():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.3, 0.1], [0.7, 0.0, 0.2]])
    pairs, _ = match_pairs(sim, ["a", "b", "c"], torch.full((3,), 100), params=MatchParams(strategy="one_to_one",
                                                                                          min_margin=-1))
    assert {p.noun: p.mask_index for p in pairs} == {"a": 0, "b": 1, "c": 2}
    best, _ = match_pairs(sim, ["a", "b", "c"], torch.full((3,), 100), params=MatchParams(min_margin=-1))
    assert {p.mask_index for p in best} == {0}  # best_mask piles all three onto mask 0


def test_one_to_one_with_more_nouns_than_masks():
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.7, 0.6]])
    pairs, rejected = match_pairs(sim, ["a", "b", "c"], torch.tensor([100, 100]),
                                  params=MatchParams(strategy="one_to_one", min_margin=-1))
    assert {p.noun: p.mask_index for p in pairs} == {"a": 0, "c": 1}
    assert rejected == {"no_mask_left": 1}


def test_one_to_one_skips_small_masks():
    areas = torch.tensor([100, 100, 100, 5])
    pairs, _ = match_pairs(SIM, NOUNS, areas, params=MatchParams(strategy="one_to_one", min_area=10, min_margin=-1))
    assert 3 not in {p.mask_index for p in pairs} and len(pairs) == 3


@pytest.mark.parametrize("strategy", ["best_mask", "one_to_one", "dual_softmax"])
def test_ties_resolve_deterministically(strategy):
    sim = torch.full((2, 3), 0.5)
    params = MatchParams(strategy=strategy, min_margin=-1)
    first, _ = match_pairs(sim, ["a", "b"], torch.full((3,), 100), params=params)
    again, _ = match_pairs(sim.clone(), ["a", "b"], torch.full((3,), 100), params=params)
    assert [(p.noun, p.mask_index) for p in first] == [(p.noun, p.mask_index) for p in again]
    assert len(first) == 2 and all(p.margin == 0.0 for p in first)
    if strategy == "one_to_one":
        assert first[0].mask_index != first[1].mask_index


@pytest.mark.parametrize("strategy", ["best_mask", "one_to_one", "dual_softmax"])
def test_one_noun_takes_its_best_mask(strategy):
    pairs, _ = match_pairs(SIM[:1], NOUNS[:1], torch.full((4,), 50), params=MatchParams(strategy=strategy))
    assert len(pairs) == 1 and pairs[0].mask_index == 3 and pairs[0].margin is None


def test_dual_softmax_prefers_a_mask_the_noun_owns():
    # cat is torn between masks 0 and 3, but rug owns mask 3: the mask-over-nouns factor sends cat to 0
    sim = torch.tensor([[0.39, 0.10, 0.05, 0.40], [0.28, 0.35, 0.00, 0.20], [0.01, 0.02, 0.25, 0.60]])
    params = MatchParams(strategy="dual_softmax", temperature=0.05, min_margin=-1)
    by = _by_noun(match_pairs(sim, NOUNS, torch.full((4,), 100), params=params)[0])
    assert {n: p.mask_index for n, p in by.items()} == {"cat": 0, "dog": 1, "rug": 3}
    assert _by_noun(match_pairs(sim, NOUNS, torch.full((4,), 100), params=MatchParams(min_margin=-1))[0])[
        "cat"].mask_index == 3  # best_mask would put cat on rug's mask
    ev = by["cat"].evidence
    assert ev["prob"] == pytest.approx(ev["noun_over_masks"] * ev["mask_over_nouns"])
    s = sim / 0.05
    assert ev["prob"] == pytest.approx(float(torch.softmax(s, 1)[0, 0] * torch.softmax(s, 0)[0, 0]), rel=1e-5)


def test_dual_softmax_threshold_rejects_unsure_nouns():
    pairs, rejected = match_pairs(SIM, NOUNS, torch.full((4,), 100),
                                  params=MatchParams(strategy="dual_softmax", temperature=0.05, min_prob=0.5,
                                                     min_margin=-1))
    assert all(p.evidence["prob"] >= 0.5 for p in pairs)
    assert rejected["low_prob"] == 3 - len(pairs) and rejected["low_prob"] >= 1
