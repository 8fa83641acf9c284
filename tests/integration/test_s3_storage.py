"""Mining and tuning on a real S3-compatible server (moto's server mode on 127.0.0.1).

Corpora in all three formats are read from ``s3://``; shards, ``sizes.json``, the report and the
contact sheet are written there; the tuning job reads its pairs from there. Object stores have no
atomic rename, so a driver SIGKILLed mid-run must leave nothing a reader takes for committed, and
the rerun must end with exactly the pair set of an uninterrupted run (keys and payload hashes).
Hostile tar members in a corpus are refused and counted, nothing is written outside the output
prefix, and the S3 secret appears in nothing that was written (objects, logs, checkpoints).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.pairs.format import committed_shards, list_names, shard_url, verify_shard
from pipelines.pairs.writer import committed_units, write_sizes
from tests.integration.conftest import REPO, child_env
from tests.integration.pair_digests import pair_set
from tests.integration.processes import kill_session, sigkill_session, start_session
from tests.integration.s3_store import write_yaml

pytestmark = pytest.mark.integration
SAMPLE = REPO / "data" / "sample"
UNITS = 30  # the sample corpus x3, one image per unit


@pytest.fixture(scope="module")
def ray_tmp():
    """Ray's temp root for the jobs of this module (short: Ray's socket paths are length-limited)."""
    path = Path(tempfile.mkdtemp(prefix="ovs3-", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def corpora(s3, repeated_sample, tmp_path_factory) -> dict[str, str]:
    """The sample corpus on S3 as COCO (x3), WebDataset tars and parquet."""
    local = tmp_path_factory.mktemp("corpora")
    coco = json.loads((SAMPLE / "captions_sample.json").read_text())
    captions: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    wds_dir = local / "wds"
    wds_dir.mkdir()
    for part, images in enumerate((coco["images"][:5], coco["images"][5:])):
        with tarfile.open(wds_dir / f"shard-{part:05d}.tar", "w") as tar:
            for im in images:
                key = Path(im["file_name"]).stem
                _add(tar, f"{key}.jpg", (SAMPLE / im["file_name"]).read_bytes())
                _add(tar, f"{key}.json", json.dumps({"captions": captions[im["id"]]}).encode())
    pq_dir = local / "pq"
    pq_dir.mkdir()
    pq.write_table(pa.table({"image": [(SAMPLE / im["file_name"]).read_bytes() for im in coco["images"]],
                             "caption": [captions[im["id"]] for im in coco["images"]],
                             "key": [Path(im["file_name"]).stem for im in coco["images"]]}),
                   pq_dir / "part-0.parquet", row_group_size=4)
    images = local / "images"
    images.mkdir()
    for im in coco["images"]:
        (images / im["file_name"]).write_bytes((SAMPLE / im["file_name"]).read_bytes())
    (images / "captions_x3.json").write_text(repeated_sample.read_text())
    return {"coco": s3.put_dir(images, "corpus/coco") + "/captions_x3.json",
            "webdataset": s3.put_dir(wds_dir, "corpus/wds"), "parquet": s3.put_dir(pq_dir, "corpus/pq")}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _mine_yaml(tmp: Path, s3, *, corpus: dict, out: str) -> Path:
    return write_yaml(tmp / f"mine-{abs(hash(out))}.yaml", REPO / "conf" / "smoke" / "mine.yaml",
                      corpus=dict(corpus, storage_options=s3.storage_options),
                      output={"url": out, "storage_options": s3.storage_options},
                      ray={"num_actors": 1}, run={"images_per_batch": 1})


def _mine_cmd(config: Path) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "mine.py"), "--config", str(config), "--log-level", "INFO"]


def _env(ray_tmp: Path) -> dict[str, str]:
    return dict(child_env(), RAY_TMPDIR=str(ray_tmp), OMP_NUM_THREADS="1")


LOGS: list[Path] = []  # every log a job of this module wrote (grepped for the secret at the end)


@pytest.fixture(scope="module")
def reference(s3, corpora, ray_tmp, tmp_path_factory) -> str:
    """An uninterrupted ``jobs/mine.py`` run: COCO on S3 -> shards, report, contact sheet on S3."""
    tmp = tmp_path_factory.mktemp("reference")
    out = s3.url("out/reference")
    config = _mine_yaml(tmp, s3, corpus={"format": "coco", "url": corpora["coco"], "images_per_unit": 1}, out=out)
    run = subprocess.run(_mine_cmd(config), cwd=REPO, env=_env(ray_tmp), capture_output=True, text=True, timeout=600)
    (tmp / "job.log").write_text(run.stdout + run.stderr)
    LOGS.append(tmp / "job.log")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return out


def test_coco_job_writes_shards_report_and_contact_sheet_to_s3(s3, reference):
    so = s3.storage_options
    committed = committed_units(reference, so)
    assert sorted(committed) == list(range(UNITS))
    assert all(verify_shard(reference, i, so) is None for i in committed)  # size, SHA-256, pair count
    names = list_names(reference, so)
    assert {"sizes.json", "report.json", "report.md", "contact_sheet.png", "score_hist.png"} <= names
    report = json.loads(s3.fs().cat_file(f"{s3.bucket}/out/reference/report.json"))
    assert report["totals"]["images"] == UNITS
    assert report["config"]["output"]["storage_options"]["secret"] == "<redacted>"
    assert not [n for n in names if n.endswith(".tmp")]


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_webdataset_and_parquet_corpora_read_from_s3(s3, corpora, fmt, tmp_path):
    """The two other readers, through the same miner, from S3 to S3 (no Ray: the miner itself)."""
    from pipelines.mine.model_stage import UnitMiner
    from pipelines.mine.driver import plan

    out = s3.url(f"out/{fmt}")
    cfg = load_config(MineConfig, _mine_yaml(tmp_path, s3, corpus={"format": fmt, "url": corpora[fmt],
                                                                     "images_per_unit": 4, "key_column": "key"}, out=out))
    todo, committed = plan(cfg)
    assert len(todo) == (2 if fmt == "webdataset" else 3) and not committed
    miner = UnitMiner(cfg)
    stats = [miner.mine_unit(unit) for unit in todo]
    assert sum(s["images"] for s in stats) == 10 and sum(s["pairs"] for s in stats) > 0
    assert not any(s["skipped"] for s in stats), [s["skipped"] for s in stats]
    sizes = write_sizes(out, committed_units(out, s3.storage_options), s3.storage_options)
    assert sum(sizes.values()) == sum(s["pairs"] for s in stats)
    assert all(verify_shard(out, u.index, s3.storage_options) is None for u in todo)


def test_tune_mpt_reads_its_pairs_from_s3(s3, reference, tmp_path):
    out_dir = tmp_path / "tune"
    config = write_yaml(tmp_path / "tune.yaml", REPO / "conf" / "smoke" / "tune_mpt.yaml",
                        data={"urls": reference, "storage_options": s3.storage_options},
                        optim={"max_steps": 2, "warmup_steps": 1}, eval={"max_samples": 32},
                        run={"out_dir": str(out_dir), "save_every": 1})
    run = subprocess.run([sys.executable, str(REPO / "jobs" / "tune_mpt.py"), "--config", str(config),
                          "--log-level", "INFO"], cwd=REPO, env=child_env(), capture_output=True, text=True,
                         timeout=600)
    (tmp_path / "tune.log").write_text(run.stdout + run.stderr)
    LOGS.append(tmp_path / "tune.log")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 2 and summary["eval_after"]["samples"] > 0
    assert not summary["skipped"]
    LOGS.extend(p for p in out_dir.rglob("*") if p.is_file())  # checkpoints, exports, tensorboard


def test_driver_sigkilled_on_s3_leaves_nothing_half_committed_and_rerun_matches(s3, corpora, reference, ray_tmp,
                                                                                tmp_path):
    so = s3.storage_options
    out = s3.url("out/killed")
    config = _mine_yaml(tmp_path, s3, corpus={"format": "coco", "url": corpora["coco"], "images_per_unit": 1}, out=out)
    proc = start_session(_mine_cmd(config), tmp_path / "killed.log", _env(ray_tmp), str(REPO))
    LOGS.append(tmp_path / "killed.log")
    try:
        deadline = time.time() + 400
        while len(list_names(out, so)) < 6 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)  # ~3 units committed (tar + marker each)
        sigkill_session(proc.pid)  # the driver and the Ray it started, no clean-up
    finally:
        kill_session(proc.pid)
    before = committed_units(out, so)
    assert 0 < len(before) < UNITS, f"kill did not land midway ({len(before)} units)"
    # what a reader takes for committed is exactly what verifies in full (size, hash, count)
    assert all(verify_shard(out, i, so) is None for i in before)
    trusted = committed_shards([shard_url(out, i) for i in range(UNITS)], so)
    assert trusted == [shard_url(out, i) for i in sorted(before)]

    rerun = subprocess.run(_mine_cmd(config), cwd=REPO, env=_env(ray_tmp), capture_output=True, text=True, timeout=600)
    (tmp_path / "rerun.log").write_text(rerun.stdout + rerun.stderr)
    LOGS.append(tmp_path / "rerun.log")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert f"{UNITS - len(before)} units to mine, {len(before)} already committed" in rerun.stdout
    after = committed_units(out, so)
    assert sorted(after) == list(range(UNITS))
    assert all(after[i]["tar_sha256"] == before[i]["tar_sha256"] for i in before)  # skipped, not redone
    assert pair_set(out, so) == pair_set(reference, so)
    assert not [n for n in list_names(out, so) if n.endswith(".tmp")]


def _hostile_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for key in ("cat", "horse"):
            _add(tar, f"{key}.jpg", (SAMPLE / f"{key}.jpg").read_bytes())
            _add(tar, f"{key}.txt", f"a {key} on the grass".encode())
        _add(tar, "/tmp/abs.jpg", (SAMPLE / "coins.jpg").read_bytes())
        _add(tar, "../up.jpg", (SAMPLE / "coins.jpg").read_bytes())
        _add(tar, "ok/../../deep.jpg", (SAMPLE / "coins.jpg").read_bytes())
        for name, kind, target in (("link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
                                   ("hard.jpg", tarfile.LNKTYPE, "cat.jpg")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)


def test_hostile_tar_members_are_refused_and_nothing_lands_outside_the_output_prefix(s3, tmp_path):
    from pipelines.mine.model_stage import UnitMiner
    from pipelines.mine.driver import plan

    local = tmp_path / "hostile"
    local.mkdir()
    _hostile_tar(local / "shard-00000.tar")
    corpus = s3.put_dir(local, "corpus/hostile")
    before = set(s3.objects())
    out = s3.url("out/hostile")
    cfg = load_config(MineConfig, _mine_yaml(tmp_path, s3, corpus={"format": "webdataset", "url": corpus}, out=out))
    [unit], _ = plan(cfg)
    stats = UnitMiner(cfg).mine_unit(unit)
    assert stats["images"] == 2 and stats["skipped"] == {"unsafe_path": 3, "unsafe_link": 2}
    keys = set(pair_set(out, s3.storage_options))
    assert keys and all(k.startswith(("u000000_cat_", "u000000_horse_")) for k in keys)
    new = set(s3.objects()) - before
    assert new and all(k.startswith("out/hostile/") for k in new), sorted(new)


def test_the_secret_appears_in_nothing_written(s3, ray_tmp):
    """Every object in the bucket, every job log, the tuning run's files, Ray's session logs and
    the S3 server's request log: the secret key is in none of them."""
    secret = s3.secret.encode()
    objects = s3.objects()
    assert len(objects) > 3 * UNITS
    leaks = [k for k, data in objects.items() if secret in data]
    files = list(LOGS) + [s3.log] + [p for p in ray_tmp.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(LOGS) >= 4 and any("session_" in str(p) for p in files)
    unread = []
    for path in files:
        try:
            if secret in path.read_bytes():
                leaks.append(str(path))
        except OSError:
            unread.append(path)
    assert not leaks, leaks
    # counted, not silent: only files that vanished (Ray's live session) may go unread
    assert all(not p.exists() for p in unread), [str(p) for p in unread if p.exists()]
    assert len(unread) < len(files) // 10, f"{len(unread)} of {len(files)} files unread"
