"""One unit mined end to end without Ray, with every kind of bad input in it."""
import dataclasses
import io
import json

import numpy as np
import pytest
import skimage.data
import webdataset as wds
from PIL import Image

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.pairs.format import PairMeta, shard_url
from pipelines.pairs.writer import committed_units


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "images").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(root / "images" / "good.jpg")
    Image.fromarray(skimage.data.chelsea()).convert("CMYK").save(root / "images" / "cmyk.jpg")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(root / "images" / "flat.png")
    (root / "images" / "zero.jpg").write_bytes(b"")
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg" * 10)
    files = ["good.jpg", "cmyk.jpg", "flat.png", "zero.jpg", "corrupt.jpg", "missing.jpg", "good.jpg", "good.jpg"]
    captions = {
        1: ["an astronaut in a white suit next to a flag"], 2: ["a cat on a carpet"],
        3: ["a grey wall"], 4: ["a dog"], 5: ["a dog"], 6: ["a dog"],
        7: ["it is here."],  # no nouns
        # 8: no captions at all
    }
    data = {
        "images": [{"id": i + 1, "file_name": f} for i, f in enumerate(files)],
        "annotations": [{"id": 100 * i + j, "image_id": i, "caption": c}
                        for i, caps in captions.items() for j, c in enumerate(caps)],
    }
    (root / "captions.json").write_text(json.dumps(data))
    return root


def _config(corpus, out, *extra):
    return load_config(MineConfig, "conf/smoke/mine.yaml", [
        f"corpus.url={corpus}/captions.json", f"corpus.images_url={corpus}/images", f"output.url={out}",
        "corpus.images_per_unit=100", "run.images_per_batch=3", *extra])


def test_bad_inputs_are_counted_and_the_shard_commits(corpus, tmp_path):
    out = str(tmp_path / "pairs")
    miner = UnitMiner(_config(corpus, out))
    [unit] = miner.reader.plan_units()
    stats = miner.mine_unit(unit)
    assert stats["images"] == 8
    assert stats["skipped"] == {"zero_byte": 1, "corrupt_image": 1, "missing_file": 1, "no_nouns": 1,
                                "no_captions": 1, "no_proposals": 1}
    assert stats["pairs"] == stats["pairs_written"] > 0
    assert committed_units(out)[0]["pairs_written"] == stats["pairs"]
    samples = list(wds.WebDataset(shard_url(out, 0), shardshuffle=False).decode("pil"))
    assert len(samples) == stats["pairs"]
    nouns = {s["txt"] for s in samples}
    assert {"astronaut", "flag", "cat", "carpet"} <= nouns
    s = samples[0]
    raw = next(iter(wds.WebDataset(shard_url(out, 0), shardshuffle=False)))
    mask = Image.open(io.BytesIO(raw["png"]))
    assert s["jpg"].size == (64, 64) and mask.size == (64, 64) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255} and np.asarray(mask).max() == 255
    meta = s["json"]
    assert meta["noun"] == s["txt"] and meta["proposal_backend"] == "superpixel"
    assert list(meta) == [f.name for f in dataclasses.fields(PairMeta)]  # exactly the format's fields
    assert meta["image_key"] and "." not in s["__key__"]
    x0, y0, x1, y1 = meta["box"]
    assert 0 <= x0 < x1 <= meta["image_size"][1] and 0 <= y0 < y1 <= meta["image_size"][0]
    assert meta["caption"] == "an astronaut in a white suit next to a flag"


def test_mining_is_deterministic_and_crop_size_is_configurable(corpus, tmp_path):
    a = UnitMiner(_config(corpus, tmp_path / "a", "output.crop_size=32"))
    b = UnitMiner(_config(corpus, tmp_path / "b", "output.crop_size=32"))
    [unit] = a.reader.plan_units()
    a.mine_unit(unit), b.mine_unit(unit)
    read = lambda p: [(s["__key__"], s["txt"], s["jpg"]) for s in wds.WebDataset(shard_url(str(p), 0), shardshuffle=False)]
    first = read(tmp_path / "a")
    assert first == read(tmp_path / "b")
    img = next(iter(wds.WebDataset(shard_url(str(tmp_path / "a"), 0), shardshuffle=False).decode("pil")))
    assert img["jpg"].size == (32, 32)


def _jpeg(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def test_webdataset_corpus_with_bad_samples(tmp_path):
    import tarfile

    tar_path = tmp_path / "shard-00000.tar"
    members = [
        ("a.jpg", _jpeg(skimage.data.chelsea())), ("a.txt", b"a cat on a carpet"),
        ("b.jpg", b""), ("b.txt", b"a dog"),  # zero-byte image
        ("c.jpg", _jpeg(skimage.data.coffee())), ("c.txt", b"\xff\xfe a cup \xff"),  # caption not UTF-8
        ("d.jpg", _jpeg(skimage.data.astronaut())), ("d.txt", b"an astronaut next to a flag"),
    ]
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "pairs"
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml", ["corpus.format=webdataset", f"corpus.url={tar_path}",
                                                           f"output.url={out}"])
    miner = UnitMiner(cfg)
    [unit] = miner.reader.plan_units()
    stats = miner.mine_unit(unit)
    assert stats["images"] == 4
    assert stats["skipped"] == {"zero_byte": 1, "caption_not_utf8": 1, "no_captions": 1}
    nouns = {s["txt"].decode() for s in wds.WebDataset(shard_url(str(out), 0), shardshuffle=False)}
    assert {"cat", "carpet", "astronaut", "flag"} <= nouns and "cup" not in nouns


def test_parquet_corpus_with_bytes_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image": [_jpeg(skimage.data.chelsea()), b"junk"],
                      "caption": ["a ginger cat on a carpet", "a dog"], "key": ["cat1", "bad1"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    out = tmp_path / "pairs"
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml", ["corpus.format=parquet", f"corpus.url={tmp_path}/part-0.parquet",
                                                           "corpus.key_column=key", f"output.url={out}"])
    miner = UnitMiner(cfg)
    [unit] = miner.reader.plan_units()
    stats = miner.mine_unit(unit)
    assert stats["images"] == 2 and stats["skipped"] == {"corrupt_image": 1}
    samples = list(wds.WebDataset(shard_url(str(out), 0), shardshuffle=False).decode())
    assert {s["txt"] for s in samples} == {"ginger cat", "carpet"}
    assert all(s["json"]["image_key"] == "cat1" for s in samples)


def test_remining_with_a_tuned_prompt_scores_crops_with_the_prompted_tower(corpus, tmp_path):
    """``clip.prompt``: crops are embedded by the prompted tower (scores change), the plain CLIP's
    pairs and the re-mined pairs come from the same masks, and the metadata names the prompt."""
    import torch

    from ovseg.mpt import MaskPromptCLIP
    from ovseg.mpt_export import describe, save_prompt

    plain_out, prompted_out = str(tmp_path / "plain"), str(tmp_path / "prompted")
    plain = UnitMiner(_config(corpus, plain_out, "matching.min_margin=-2"))
    torch.manual_seed(1)
    tuned = MaskPromptCLIP(plain.clip.model, depth=1, init="normal", init_std=1.0)
    weights = tmp_path / "clip_weights.pt"
    torch.save(plain.clip.model.state_dict(), weights)
    prompt_path = save_prompt(describe(tuned, plain.clip.name, None, clip_checkpoint=str(weights)),
                              tmp_path / "mpt_prompt.pt")

    miner = UnitMiner(_config(corpus, prompted_out, f"clip.prompt={prompt_path}", "matching.min_margin=-2"))
    assert miner.prompt is not None
    [unit] = miner.reader.plan_units()
    plain.mine_unit(unit)
    miner.mine_unit(unit)

    def read(out):
        return {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(shard_url(out, 0), shardshuffle=False)}

    a, b = read(plain_out), read(prompted_out)
    assert a and set(a) == set(b)  # thresholds off in the smoke preset: one pair per noun either way
    assert all(m["clip_prompt"] == str(prompt_path) for m in b.values())
    assert all(m["clip_prompt"] is None for m in a.values())
    assert any(abs(a[k]["score"] - b[k]["score"]) > 1e-3 for k in a)  # the prompt changed the features


def test_every_pair_carries_provenance_and_the_index_equals_the_tar(corpus, tmp_path):
    import gzip
    import hashlib

    from pipelines.pairs.format import (CANDIDATES_NAME, INDEX_COLUMNS, IndexMismatch, index_row, iter_tar, read_index,
                                        rle_to_mask)

    out = str(tmp_path / "pairs")
    miner = UnitMiner(_config(corpus, out, "matching.strategy=one_to_one", "crops.views=tight+context",
                              "output.candidates=true"))
    [unit] = miner.reader.plan_units()
    miner.mine_unit(unit)
    import collections

    samples = list(iter_tar(shard_url(out, 0), collections.Counter()))
    good = hashlib.sha256((corpus / "images" / "good.jpg").read_bytes()).hexdigest()
    table = read_index(out, 0).to_pylist()
    assert [r["key"] for r in table] == [s["__key__"] for s in samples]  # a row per pair, tar order
    assert list(table[0]) == list(INDEX_COLUMNS)
    for row, s in zip(table, samples):
        meta = PairMeta.from_json(s["json"])
        assert row == index_row(s["__key__"], meta)  # the index says what the json says
        assert meta.strategy == "one_to_one" and set(meta.evidence) >= {"own_best_mask", "view_scores"}
        assert meta.score == pytest.approx(sum(meta.evidence["view_scores"]) / 2, abs=1e-5)
        assert meta.candidates >= 1 and meta.clip_hash and len(meta.clip_hash) == 12 and meta.proposal_hash is None
        full = rle_to_mask(meta.mask_rle)  # the full-resolution mask: its area and box are the json's
        assert list(full.shape) == meta.image_size and int(full.sum()) == meta.area
        ys, xs = np.nonzero(full)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == meta.box
        if meta.image_key in ("1", "7", "8") or meta.caption and "astronaut" in meta.caption:
            assert meta.image_sha256 == good
        start, end = meta.noun_span
        assert meta.caption[start:end].lower().startswith(meta.noun.split()[-1])
        assert meta.caption_index == 0
    lines = gzip.decompress((tmp_path / "pairs" / CANDIDATES_NAME.format(0)).read_bytes()).decode().splitlines()
    first = json.loads(lines[0])
    assert len(first["sim"]) == len(first["nouns"]) and len(first["sim"][0]) == len(first["masks"])
    # a stale index (one the marker does not describe) is refused
    index_file = tmp_path / "pairs" / "pairs-000000.parquet"
    from pipelines.pairs.format import verify_shard

    assert verify_shard(out, 0) is None
    index_file.write_bytes(index_file.read_bytes()[:-8] + b"PAR1PAR1")
    with pytest.raises(IndexMismatch):
        read_index(out, 0)
    assert "parquet" in verify_shard(out, 0)


def test_planted_duplicates_are_counted_not_mined_twice(tmp_path):
    from pipelines.mine.cpu_stage import DuplicateFilter, perceptual_hash

    root = tmp_path / "dups"
    (root / "images").mkdir(parents=True)
    astronaut, cat = skimage.data.astronaut(), skimage.data.chelsea()
    Image.fromarray(astronaut).save(root / "images" / "a.jpg", quality=95)
    Image.fromarray(astronaut).save(root / "images" / "a_recompressed.jpg", quality=60)  # other bytes, same picture
    Image.fromarray(astronaut).resize((256, 256)).save(root / "images" / "a_small.png")  # other size, same picture
    Image.fromarray(cat).save(root / "images" / "c.jpg")
    Image.fromarray(cat[:, ::-1].copy()).save(root / "images" / "c_mirrored.jpg")  # a different picture
    files = ["a.jpg", "c.jpg", "a_recompressed.jpg", "c_mirrored.jpg", "a_small.png", "a.jpg"]
    data = {"images": [{"id": i + 1, "file_name": f} for i, f in enumerate(files)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "caption": "a cat near an astronaut"}
                            for i in range(len(files))]}
    (root / "captions.json").write_text(json.dumps(data))
    hashes = [perceptual_hash(np.asarray(Image.open(root / "images" / f).convert("RGB"))) for f in files]
    assert hashes[0] == hashes[5] and hashes[0] != hashes[1] and hashes[1] != hashes[3]
    assert bin(hashes[0] ^ hashes[2]).count("1") <= 4 and bin(hashes[0] ^ hashes[4]).count("1") <= 4
    f = DuplicateFilter(max_distance=4)
    assert [f.is_duplicate(h) for h in hashes] == [False, False, True, False, True, True]

    def mine(*extra):
        out = tmp_path / f"out{len(extra)}"
        miner = UnitMiner(_config(root, out, *extra))
        [unit] = miner.reader.plan_units()
        return miner.mine_unit(unit)

    plain = mine()
    deduped = mine("corpus.dedup=phash", "corpus.dedup_max_distance=4")
    assert "duplicate_image" not in plain["skipped"]
    assert deduped["skipped"]["duplicate_image"] == 3  # the recompressed, the resized and the repeated file
    assert deduped["pairs"] < plain["pairs"]
