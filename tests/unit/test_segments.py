"""The segment dataset of MaskFormer training: seen-category targets from COCO instances."""
from __future__ import annotations

import pytest
import torch

from pipelines.train.segments import SegmentDataset, collate_segments, endless_batches
from pipelines.world.categories import CATEGORIES
from pipelines.world.generate import generate_split

UNSEEN = ["arrow", "triangle", "house", "umbrella"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_split(root, 7, "train", 12, formats=("coco",))
    return root / "coco"


def _dataset(world, **kw) -> SegmentDataset:
    return SegmentDataset(str(world / "annotations/instances_train.json"), str(world / "train"), **kw)


def test_unseen_categories_are_dropped_and_counted(world):
    full, held = _dataset(world), _dataset(world, unseen=UNSEEN)
    assert full.names == [c.name for c in CATEGORIES] and full.dropped == {}
    assert held.names == [c.name for c in CATEGORIES if c.name not in UNSEEN]
    assert held.unseen == UNSEEN
    n_full = sum(len(full[i]["labels"]) for i in range(len(full)))
    n_held = sum(len(held[i]["labels"]) for i in range(len(held)))
    assert held.dropped["unseen_category"] == n_full - n_held > 0
    for i in range(len(held)):
        sample, reference = held[i], full[i]
        assert sample["image"].shape == (3, 128, 128) and sample["image"].dtype == torch.uint8
        assert sample["masks"].shape[1:] == (128, 128) and sample["masks"].dtype == torch.bool
        names = sorted(held.names[k] for k in sample["labels"].tolist())
        assert names == sorted(full.names[k] for k in reference["labels"].tolist() if full.names[k] not in UNSEEN)


def test_a_misspelt_unseen_name_is_an_error(world):
    with pytest.raises(ValueError, match="umbrela"):
        _dataset(world, unseen=["umbrela"])


def test_resize_and_flip_keep_masks_aligned(world):
    small = _dataset(world, image_size=64)[0]
    assert small["image"].shape == (3, 64, 64) and small["masks"].shape[1:] == (64, 64)
    torch.manual_seed(0)
    flips = [_dataset(world, hflip=True)[0]["masks"] for _ in range(8)]
    plain = _dataset(world)[0]["masks"]
    assert any(torch.equal(f, plain.flip(-1)) for f in flips) and any(torch.equal(f, plain) for f in flips)


def test_batches_split_the_data_between_processes(world):
    data = _dataset(world)
    ids = [[b["image_ids"] for _, b in zip(range(2), endless_batches(data, batch_size=3, workers=0, rank=r,
                                                                      world_size=2, seed=0))] for r in (0, 1)]
    first_epoch = [set(i for batch in per_rank for i in batch) for per_rank in ids]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 6 and not first_epoch[0] & first_epoch[1]
    batch = next(endless_batches(data, batch_size=4, workers=0, rank=0, world_size=1, seed=0))
    assert batch["images"].shape == (4, 3, 128, 128) and len(batch["targets"]) == 4


def test_images_of_different_sizes_need_a_resize(world):
    data = _dataset(world)
    a, b = data[0], data[1]
    b = dict(b, image=b["image"][:, :64])
    with pytest.raises(ValueError, match="image_size"):
        collate_segments([a, b])
