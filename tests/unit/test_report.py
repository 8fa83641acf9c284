"""The run report: totals, pictures, and precision against ground truth when it is known."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.mine.report import (GAP, RANDOM_NOTE, RIGHT, TILE, WRONG, ground_truth_check, ground_truth_quality,
                                   sample_pairs, write_report)
from pipelines.pairs.writer import committed_units
from pipelines.mine.stats import RunResult
from pipelines.mine.summary import closing_lines
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
    assert sheet.size[0] == GAP + 8 * (TILE + GAP) and sheet.size[1] >= 158
    assert Image.open(out / "score_hist.png").size == (600, 300)
    assert "recall: n/a" not in md and "recall n/a" not in "\n".join(closing_lines(run, report, str(out)))
    # Without a captions file (a URL list, a WebDataset) nothing counts recall's opportunities: n/a, not nan.
    blind = ground_truth_quality(str(out), cfg.proposals.instances_url, None)
    assert blind["opportunities"] == 0 and blind["precision"] == gt["precision"]
    report = write_report(str(out), run, config={"x": 1}, n_sheet=12, ground_truth=blind)
    md = (out / "report.md").read_text()
    assert "- recall: n/a" in md and "nan" not in md, md
    assert any("recall n/a (no captions file)" in line for line in closing_lines(run, report, str(out)))


def test_contact_sheet_marks_right_and_wrong_and_histogram_fits_scores(world, tmp_path):
    """With ground truth every tile is framed green (right) or red (wrong, reason written) under a legend."""
    import numpy as np

    out = tmp_path / "pairs"
    cfg = load_config(MineConfig, "conf/world/mine.yaml", [
        f"corpus.url={world}/coco/annotations/captions_train.json", f"corpus.images_url={world}/coco/train",
        f"output.url={out}", "corpus.images_per_unit=12", "proposals.max_proposals=8", "proposals.backend=superpixel",
        "matching.min_score=-1"])
    miner = UnitMiner(cfg)
    mined = [miner.mine_unit(u) for u in miner.reader.plan_units()]
    gt, judge = ground_truth_check(str(out), f"{world}/coco/annotations/instances_train.json", cfg.corpus.url)
    assert 0 < gt["correct"] < gt["pairs"]  # superpixels: some right, some wrong
    run = RunResult(all_committed=committed_units(str(out)), mined=mined, seconds=2.0)
    write_report(str(out), run, config={}, n_sheet=48, ground_truth=gt, judge=judge)
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB")).astype(int)
    green = (np.abs(sheet - RIGHT).sum(-1) < 30).sum()
    red = (np.abs(sheet - WRONG).sum(-1) < 30).sum()
    assert green > 4 * 128 and red > 4 * 128  # at least one framed tile of each
    # header (grey-fill note + legend) + 48 tiles of 8 columns with 3 label lines, GAP px apart
    assert sheet.shape[0] == GAP + 2 * 18 + GAP + 6 * (TILE + 44 + GAP)
    hist = np.asarray(Image.open(out / "score_hist.png").convert("RGB")).astype(int)
    bars = np.abs(hist - (31, 119, 180)).sum(-1) < 40  # tab:blue
    cols = np.flatnonzero(bars.any(0))
    assert (cols[-1] - cols[0]) > 0.5 * hist.shape[1], "the score axis does not fit the scores"


def test_report_after_a_resume_keeps_the_throughput_of_the_mining_runs(tmp_path):
    """A rerun with nothing left to mine reports the rate at which the committed units were mined."""
    stats = {i: {"unit": i, "images": 10, "pairs": 30, "seconds": 5.0, "started": 100.0 + 2 * i,
                 "finished": 105.0 + 2 * i} for i in range(3)}  # two actors overlapping: 9 s busy
    report = write_report(str(tmp_path), RunResult(all_committed=stats, seconds=0.5), config={})
    assert report["all_runs"]["busy_seconds"] == pytest.approx(9.0)
    assert report["all_runs"]["images_per_s"] == pytest.approx(30 / 9.0)
    assert report["all_runs"]["pairs_per_s"] == pytest.approx(90 / 9.0)
    md = (tmp_path / "report.md").read_text()
    assert "3.33 images/s" in md and "0.00 images/s" not in md
    from pipelines.mine.summary import closing_lines

    lines = "\n".join(closing_lines(RunResult(all_committed=stats, seconds=0.5), report, str(tmp_path)))
    assert "3.33 images/s" in lines and "0.00 images/s" not in lines and f"output: {tmp_path}" in lines


def test_busy_seconds_is_the_union_of_unit_intervals():
    from pipelines.mine.throughput import busy_seconds

    assert busy_seconds([{"started": 0, "finished": 4}, {"started": 1, "finished": 3},
                         {"started": 10, "finished": 12}, {"seconds": 1.5}]) == pytest.approx(7.5)
    assert busy_seconds([]) == 0.0


def test_contact_sheet_shows_the_number_asked_for_framed_and_says_when_clip_is_random(world, tmp_path):
    """Uneven shards still give the pairs asked for; every tile has a frame and a gap; a random CLIP
    is named in the report and on the sheet (red header line)."""
    import numpy as np

    out = tmp_path / "pairs"
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml", [
        f"corpus.url={world}/coco/annotations/captions_train.json", f"corpus.images_url={world}/coco/train",
        f"output.url={out}", "corpus.images_per_unit=5", "proposals.max_proposals=6"])
    miner = UnitMiner(cfg)
    mined = [miner.mine_unit(u) for u in miner.reader.plan_units()]
    counts = [s["pairs"] for s in mined]
    n = sum(counts) - 1
    assert len(set(counts)) > 1 and min(counts) < -(-n // len(counts))  # a short shard: the old 47-of-48 case
    assert len(sample_pairs(str(out), sorted(s["unit"] for s in mined), n)) == n
    from pipelines.config.load import as_dict

    run = RunResult(all_committed=committed_units(str(out)), mined=mined, seconds=2.0)
    write_report(str(out), run, config=as_dict(cfg), n_sheet=8)
    assert RANDOM_NOTE in (out / "report.md").read_text()
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB")).astype(int)
    header = sheet[: GAP + 2 * 18]
    assert (np.abs(header - WRONG).sum(-1) < 60).sum() > 50  # the red random-CLIP line
    top = GAP + 2 * 18 + GAP
    assert (sheet[top:top + TILE, GAP + TILE + 1: GAP + TILE + GAP - 1] == 255).all()  # a white gap between tiles
    assert (sheet[top - 1, GAP: GAP + TILE] < 128).all()  # the first tile's frame
