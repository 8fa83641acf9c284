"""Pair shard reader: URL expansion, sizes, splitting, mixing, shuffling, skipping bad samples."""
from __future__ import annotations

import collections
import io
import itertools
import json
import tarfile

import pytest
import torch

from pipelines.pairs.stream import PairStream, decode_pair, epoch_samples, make_loader, make_source
from pipelines.pairs.format import iter_tar, shard_urls
from tests.synthetic_pairs import write_synthetic_pairs

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_synthetic_pairs(str(root / "a"), n_shards=4, per_shard=12, size=32, seed=1)
    write_synthetic_pairs(str(root / "b"), n_shards=1, per_shard=20, size=32, seed=2, nouns=("zebra", "lamp"))
    return root


def stream(sources, **kw) -> PairStream:
    kw.setdefault("batch_size", 4)
    return PairStream(sources, image_size=32, mean=MEAN, std=STD, **kw)


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["keys"]]


def test_expand_urls_patterns(pairs):
    a = str(pairs / "a")
    by_folder = shard_urls(a)
    assert [u.rsplit("/", 1)[1] for u in by_folder] == [f"pairs-{i:06d}.tar" for i in range(4)]
    assert shard_urls(a + "/pairs-{000000..000003}.tar") == by_folder
    assert shard_urls(a + "/pairs-*.tar") == by_folder
    both = shard_urls(f"{a}::file://{pairs / 'b'}")
    assert len(both) == 5 and both[-1].startswith("file://")
    with pytest.raises(FileNotFoundError):
        shard_urls(str(pairs / "nothing"))


def test_uncommitted_shard_is_ignored(tmp_path):
    write_synthetic_pairs(str(tmp_path), n_shards=2, per_shard=2, size=32)
    (tmp_path / "pairs-000001.stats.json").unlink()
    assert [u.rsplit("/", 1)[1] for u in shard_urls(str(tmp_path))] == ["pairs-000000.tar"]


def test_sizes_and_epoch(pairs):
    a, b = make_source(str(pairs / "a")), make_source(str(pairs / "b"), weight=2.0)
    assert (a.num_samples, b.num_samples) == (48, 20)
    assert epoch_samples([a, b]) == 68
    assert epoch_samples([a], holdout_percent=25) == 36


def test_decode_pair_shapes(pairs):
    sample = next(iter_tar(shard_urls(str(pairs / "a"))[0], collections.Counter()))
    image, mask, noun = decode_pair(sample, 48, mean=MEAN, std=STD)  # resized from 32
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert mask.shape == (1, 48, 48) and mask.dtype == torch.bool and mask.any()
    assert noun == json.loads(sample["json"])["noun"]


def test_finite_ranks_cover_every_sample_once(pairs):
    """4 shards over 2 ranks x 2 workers (shard split) and 1 shard over 2 ranks (sample split)."""
    for spec, n, workers in [(pairs / "a", 48, 2), (pairs / "b", 20, 0)]:
        src = make_source(str(spec))
        seen = []
        for rank in range(2):
            s = stream([src], rank=rank, world_size=2, infinite=False)
            seen.append(keys_of(make_loader(s, workers=workers)))
        assert not set(seen[0]) & set(seen[1])
        assert len(seen[0]) + len(seen[1]) == n == len(set(seen[0]) | set(seen[1]))


def test_infinite_shuffle_mix_and_holdout(pairs):
    a, b = make_source(str(pairs / "a")), make_source(str(pairs / "b"), weight=3.0)
    first = keys_of(itertools.islice(stream([a], seed=0, shuffle_buffer=16), 12))
    again = keys_of(itertools.islice(stream([a], seed=0, shuffle_buffer=16), 12))
    other = keys_of(itertools.islice(stream([a], seed=1, shuffle_buffer=16), 12))
    assert first == again and first != other
    many = keys_of(itertools.islice(stream([a], seed=0, shuffle_buffer=16), 30))
    assert len(set(many)) == 48 and max(collections.Counter(many).values()) <= 4  # passes repeat

    mixed = [n for batch in itertools.islice(stream([a, b], seed=0, batch_size=50), 8) for n in batch["nouns"]]
    share_b = sum(n in ("zebra", "lamp") for n in mixed) / len(mixed)
    assert 0.65 < share_b < 0.85  # weight 3:1 -> 0.75

    train = set(keys_of(stream([a], infinite=False, holdout_percent=30, split="train")))
    held = set(keys_of(stream([a], infinite=False, holdout_percent=30, split="eval")))
    assert not train & held and len(train | held) == 48 and 5 <= len(held) <= 25


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_bad_samples_are_skipped_and_counted(pairs, tmp_path):
    good = next(iter_tar(shard_urls(str(pairs / "a"))[0], collections.Counter()))
    black = io.BytesIO()
    from PIL import Image

    Image.new("L", (32, 32)).save(black, format="PNG")
    members = {
        "ok.jpg": good["jpg"], "ok.png": good["png"], "ok.txt": good["txt"],
        "notxt.jpg": good["jpg"], "notxt.png": good["png"],
        "badjpg.jpg": b"not a jpeg", "badjpg.png": good["png"], "badjpg.txt": b"cat",
        "empty.jpg": good["jpg"], "empty.png": black.getvalue(), "empty.txt": b"cat",
        "blank.jpg": good["jpg"], "blank.png": good["png"], "blank.txt": b"   ",
    }
    data = _tar_bytes(members)
    (tmp_path / "pairs-000000.tar").write_bytes(data)
    batches = list(stream([make_source(str(tmp_path))], infinite=False, batch_size=8))
    skips = collections.Counter()
    for b in batches:
        skips.update(b["skips"])
    assert keys_of(batches) == ["ok"]
    assert skips == {"missing_field": 1, "corrupt_image": 1, "empty_mask": 1, "empty_noun": 1}

    (tmp_path / "pairs-000000.tar").write_bytes(data[: len(data) // 3])  # truncated midway
    batches = list(stream([make_source(str(tmp_path))], infinite=False, batch_size=8))
    assert keys_of(batches) == ["ok"]  # what was read before the break is kept
    assert sum(b["skips"].get("shard_error", 0) for b in batches) == 1


def test_fsspec_url_source():
    """A non-local fsspec file system (memory://): listing, sizes.json and reading."""
    write_synthetic_pairs("memory://pairtest/pairs", n_shards=2, per_shard=5, size=32)
    source = make_source("memory://pairtest/pairs")
    assert source.shards[0].startswith("memory://") and source.num_samples == 10
    assert len(keys_of(stream([source], infinite=False))) == 10
