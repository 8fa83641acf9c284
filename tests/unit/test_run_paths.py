"""Where a mining run reads and writes: paths resolved on the driver, commit verification, storage checks."""
from __future__ import annotations

import pytest

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.driver import verify_committed
from pipelines.mine.paths import StorageError, check_output_shared, resolve_local_paths
from tests.conftest import REPO


def test_relative_local_paths_are_resolved_against_the_job_directory(tmp_path):
    cfg = load_config(MineConfig, REPO / "conf/world/mine.yaml", [
        "output.url=out/x", "corpus.images_url=imgs", "proposals.panoptic_root=./pan",
        "clip.checkpoint=null", "clip.pretrained=weights/w.safetensors"])
    out = resolve_local_paths(cfg, tmp_path)
    assert out.output.url == f"{tmp_path}/out/x"
    assert out.corpus.url == f"{tmp_path}/data/world/coco/annotations/captions_train.json"
    assert out.corpus.images_url == f"{tmp_path}/imgs"
    assert out.proposals.instances_url == f"{tmp_path}/data/world/coco/annotations/instances_train.json"
    assert out.proposals.panoptic_root == f"{tmp_path}/pan"
    assert out.clip.pretrained == f"{tmp_path}/weights/w.safetensors"
    assert cfg.output.url == "out/x"  # the input config is left alone


def test_a_tuned_prompt_path_is_resolved_like_the_checkpoint(tmp_path):
    cfg = load_config(MineConfig, REPO / "conf/world/mine.yaml", ["clip.prompt=assets/world_clip/world_clip.pt"])
    out = resolve_local_paths(cfg, tmp_path)
    assert out.clip.prompt == f"{tmp_path}/assets/world_clip/world_clip.pt"
    assert out.clip.checkpoint == f"{tmp_path}/assets/world_clip_v2/world_clip.pt"  # the preset's, resolved too


def test_urls_tags_and_absolute_paths_are_kept(tmp_path):
    cfg = load_config(MineConfig, REPO / "conf/smoke/mine.yaml", [
        "output.url=s3://bucket/pairs", "corpus.url=/abs/c.json", "corpus.images_url=file://rel/imgs",
        "clip.pretrained=openai", "clip.model=ViT-B-16"])
    out = resolve_local_paths(cfg, tmp_path)
    assert (out.output.url, out.corpus.url, out.clip.pretrained) == ("s3://bucket/pairs", "/abs/c.json", "openai")
    assert out.corpus.images_url == f"file://{tmp_path}/rel/imgs"


@pytest.mark.parametrize("url", ["/data/pairs", "out/pairs", "file:///data/pairs"])
def test_node_local_output_is_refused_on_a_multi_node_cluster(url):
    with pytest.raises(StorageError, match="output.shared_filesystem=true") as err:
        check_output_shared(url, alive_nodes=3, shared_filesystem=False)
    assert "\n" not in str(err.value) and "3 nodes" in str(err.value)
    check_output_shared(url, alive_nodes=3, shared_filesystem=True)  # a declared shared mount
    check_output_shared(url, alive_nodes=1, shared_filesystem=False)  # one machine


def test_shared_storage_is_accepted_on_a_multi_node_cluster():
    for url in ("s3://bucket/pairs", "gs://bucket/pairs", "simplecache::s3://bucket/pairs"):
        check_output_shared(url, alive_nodes=8, shared_filesystem=False)


def test_a_reported_commit_missing_where_the_driver_reads_is_named():
    mined = [{"unit": 0, "output": "file:///node/a/pairs-000000.tar", "worker": "n:1", "finished": 1.0},
             {"unit": 1, "output": "file:///out/pairs-000001.tar", "worker": "n:1", "finished": 2.0},
             {"unit": 2, "output": "file:///out/pairs-000002.tar", "worker": "n:1", "finished": 3.0}]
    found = {1: {"worker": "n:1", "finished": 2.0}, 2: {"worker": "old:7", "finished": 0.5}}
    problems = verify_committed(mined, found, "/out")
    assert sorted(problems) == [0, 2]
    assert "unit 0" in problems[0] and "/node/a/pairs-000000.tar" in problems[0] and "/out/pairs-000000.tar" in problems[0]
    assert "another run" in problems[2]


def test_the_corpus_is_planned_once_per_run(tmp_path, monkeypatch):
    """The driver plans the corpus once (it used to parse it twice: to print, then to mine)."""
    import importlib.util

    from pipelines.corpus.coco import CocoReader

    calls = []
    real = CocoReader.plan_units
    monkeypatch.setattr(CocoReader, "plan_units", lambda self: calls.append(1) or real(self))
    spec = importlib.util.spec_from_file_location("_mine_job", REPO / "jobs/mine.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    monkeypatch.chdir(REPO)
    assert job.main(["--config", "conf/smoke/mine.yaml", f"output.url={tmp_path}/pairs", "run.max_units=0"]) == 0
    assert len(calls) == 1
