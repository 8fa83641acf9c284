"""Mining a URL list in one pass (no Ray): world images from a loopback server with every injected
fault; every unit commits, each fault is counted under its reason, and the good images give the
same pairs as the same images read from the tar."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from pipelines.config.load import load_config
from pipelines.corpus.base import build_reader
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.pairs.format import iter_tar, shard_url
from pipelines.pairs.writer import committed_units
from pipelines.world.generate import generate_split
from tests.image_server import FAULT_REASON, FAULTS, ImageServer

N_GOOD = 6
FAST = ["corpus.download_read_timeout=1.0", "corpus.download_retries=1", "corpus.download_backoff=0.05",
        "corpus.download_max_bytes=1000000", "corpus.download_threads=4"]


@pytest.fixture(scope="module")
def world_tar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_split(root, 0, "train", N_GOOD, formats=("wds",))
    return root / "wds" / "train" / "00000.tar"


def samples_of(tar_path: Path) -> list[tuple[str, bytes, dict, str]]:
    """``(key, jpg, json, txt)`` of every sample of a world tar."""
    out: dict[str, dict] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return [(k, v["jpg"], json.loads(v["json"]), v["txt"].decode()) for k, v in out.items()]


def url_list(path: Path, server: ImageServer, samples) -> None:
    rows = [{"url": server.url("img", key), "caption": [txt, *meta["captions"]], "key": key, "tag": f"t{key}"}
            for key, _, meta, txt in samples]
    rows += [{"url": server.url(fault, samples[n % N_GOOD][0]), "caption": ["a fault"], "key": f"fault_{fault}",
              "tag": fault} for n, fault in enumerate(FAULTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def pairs(out: str, unit: int) -> dict[str, dict]:
    got = {}
    for s in iter_tar(shard_url(out, unit), Counter()):
        meta = json.loads(s["json"])
        got[s["__key__"]] = {"jpg": s["jpg"], "png": s["png"], "meta": meta}
    return got


def test_url_list_mines_like_the_tar_and_counts_every_fault(world_tar, tmp_path) -> None:
    samples = samples_of(world_tar)
    with ImageServer({key: jpg for key, jpg, _, _ in samples}) as server:
        listing = tmp_path / "list.jsonl"
        url_list(listing, server, samples)
        out_urls, out_tar = str(tmp_path / "urls"), str(tmp_path / "tar")
        cfg = load_config(MineConfig, "conf/smoke/mine.yaml", [
            "corpus.format=urls", f"corpus.url={listing}", "corpus.key_column=key", "corpus.id_column=key",
            "corpus.extra_columns=[tag]", f"corpus.images_per_unit={N_GOOD}", f"output.url={out_urls}",
            "output.keep_images=true", *FAST])
        miner = UnitMiner(cfg)
        units = miner.reader.plan_units()
        assert [(u.start, u.stop) for u in units] == [(0, 6), (6, 12), (12, 14)]
        stats = [miner.mine_unit(u) for u in units]
        miner.reader.close()
        fetched = Counter(server.requests)
    assert sorted(committed_units(out_urls)) == [0, 1, 2]
    assert all(fetched[f"/img/{key}"] == 1 for key, *_ in samples)  # each good image fetched once

    tar_cfg = load_config(MineConfig, "conf/smoke/mine.yaml", [
        "corpus.format=webdataset", f"corpus.url={world_tar}", f"output.url={out_tar}"])
    miner.cfg, miner.reader = tar_cfg, build_reader(tar_cfg.corpus)  # the same models, another corpus and output
    [tar_unit] = miner.reader.plan_units()
    tar_stats = miner.mine_unit(tar_unit)

    skipped = Counter()
    for s in stats:
        skipped.update(s["skipped"])
    skipped.subtract(tar_stats["skipped"])
    assert +skipped == Counter(FAULT_REASON.values())  # each fault once, under its reason, nothing else
    assert stats[0]["images"] == tar_stats["images"] == N_GOOD
    assert stats[1]["images"] + stats[2]["images"] == 1  # the flaky URL, fetched on its retry

    got, want = pairs(out_urls, 0), pairs(out_tar, 0)
    assert got and set(got) == set(want)
    for key, pair in got.items():
        assert pair["jpg"] == want[key]["jpg"] and pair["png"] == want[key]["png"]
        meta, ref = dict(pair["meta"]), dict(want[key]["meta"])
        assert meta.pop("source_url").startswith("http://127.0.0.1:") and ref.pop("source_url").startswith("world://")
        assert meta.pop("extra") == {"tag": f"t{meta['image_key']}"} and ref.pop("extra") is None
        assert meta == ref

    # the kept images re-mine as a WebDataset corpus, with the same pairs and no download
    kept = out_urls + "_images"
    assert sorted(p.name for p in Path(kept).iterdir()) == [f"{i:05d}{ext}" for i in range(3)
                                                             for ext in (".parquet", ".tar", "_stats.json")]
    kept_stats = json.loads(Path(kept, "00001_stats.json").read_text())
    assert kept_stats["successes"] == 1 and kept_stats["status_dict"]["http_404"] == 1
    remine_cfg = load_config(MineConfig, "conf/smoke/mine.yaml", [
        "corpus.format=webdataset", f"corpus.url={kept}", f"output.url={tmp_path / 'remine'}"])
    miner.cfg, miner.reader = remine_cfg, build_reader(remine_cfg.corpus)
    remined_units = miner.reader.plan_units()
    assert len(remined_units) == 3
    remined = [miner.mine_unit(u) for u in remined_units]
    assert [s["images"] for s in remined] == [s["images"] for s in stats]
    again = pairs(str(tmp_path / "remine"), 0)
    assert set(again) == set(got)
    for key, pair in again.items():
        assert pair["jpg"] == got[key]["jpg"] and pair["png"] == got[key]["png"]
        assert {**pair["meta"], "extra": None} == {**got[key]["meta"], "extra": None}


def test_keep_images_only_for_url_lists() -> None:
    from pipelines.config.load import ConfigError

    with pytest.raises(ConfigError, match="output.keep_images"):
        load_config(MineConfig, "conf/smoke/mine.yaml", ["corpus.url=x.json", "output.keep_images=true"])
