"""The run report: totals, pictures, and precision against ground truth when it is known."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from pipelines.config import load_config
from pipelines.mine_config import MineConfig
from pipelines.mining import UnitMiner
from pipelines.report import ground_truth_quality, write_report
from pipelines.shards import committed_units
from pipelines.stats import RunResult
from tests.conftest import REPO


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    subprocess.run([sys.executable, "-m", "pipelines.world.generate", "--out", str(out), "--train", "12",
                    "--val", "2", "--formats", "coco"], check=True, cwd=REPO, capture_output=True)
    return out


def test_report_with_ground_truth(world, tmp_path):
    out = tmp_path / "pairs"
    cfg = load_config(MineConfig, "conf/world/mine.yaml", [
        f"corpus.url={world}/coco/annotations/captions_train.json", f"corpus.images_url={world}/coco/train",
        f"proposals.instances_url={world}/coco/annotations/instances_train.json", "proposals.backend=gt",
        f"output.url={out}", "corpus.images_per_unit=6"])
    miner = UnitMiner(cfg)
    mined = [miner.mine_unit(u) for u in miner.reader.plan_units()]
    gt = ground_truth_quality(str(out), cfg.proposals.instances_url, cfg.corpus.url)
    assert gt["pairs"] == sum(s["pairs"] for s in mined) > 0
    assert 0.0 < gt["precision"] <= 1.0 and gt["correct"] <= gt["pairs"]
    run = RunResult(all_committed=committed_units(str(out)), mined=mined, seconds=2.0)
    report = write_report(str(out), run, config={"x": 1}, n_sheet=12, ground_truth=gt)
    assert report["totals"]["images"] == 12 and report["images_per_s"] == pytest.approx(6.0)
    assert report["totals"]["pairs"] == sum(report["totals"]["score_hist"])
    md = (out / "report.md").read_text()
    assert f"pair precision: {gt['precision']:.3f}" in md and "## Top nouns" in md
    assert json.loads((out / "report.json").read_text())["ground_truth"]["pairs"] == gt["pairs"]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] == 8 * 128 and sheet.size[1] >= 158
    assert Image.open(out / "score_hist.png").size == (600, 300)


def test_remote_urls_skip_the_ground_truth_check():
    assert ground_truth_quality("s3://bucket/pairs", "/tmp/i.json", None) is None
