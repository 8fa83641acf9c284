"""jobs/evaluate.py: every dataset layout from a tiny generated copy, label checks, oracles, metrics files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.segment.datasets import CLASS_DIR, LAYOUTS, DatasetError, open_dataset, read_label
from tests.conftest import REPO

SIZES = {"ade150": 150, "ade847": 847, "pc59": 59, "pc459": 459, "voc20": 20}


def make_layout(root, name: str, n: int = 2, *, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    """A tiny copy of ``name``'s prepared layout under ``root``: n images and labels (16-bit TIFF where ov-seg's are)."""
    layout = LAYOUTS[name]
    (root / layout.images).mkdir(parents=True, exist_ok=True)
    (root / layout.labels).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = 22 if name == "world" else SIZES[name]
    if name == "world":
        (root / layout.classes).write_text(json.dumps({"classes": [f"c{i}" for i in range(22)],
                                                        "kinds": ["thing"] * 16 + ["stuff"] * 6, "ignore_label": 255}))
    labels = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / layout.images / f"im{i}.jpg")
        label = np.full((size, size), layout.ignore, dtype=np.int64)
        label[: size // 2] = classes - 1 - i  # the last class ids: > 255 for the 16-bit sets
        label[size // 2 :, : size // 2] = i
        if layout.ignore == 65535:
            Image.fromarray(label.astype(np.uint16)).save(root / layout.labels / f"im{i}.tif")
        else:
            Image.fromarray(label.astype(np.uint8)).save(root / layout.labels / f"im{i}.png")
        labels.append(label)
    return labels


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_reads_from_a_tiny_copy(tmp_path, name):
    labels = make_layout(tmp_path, name)
    data = open_dataset(name, str(tmp_path))
    assert len(data.classes) == (22 if name == "world" else SIZES[name])
    assert [p[0].rsplit("/", 1)[1] for p in data.pairs] == ["im0.jpg", "im1.jpg"]
    got = read_label(data.pairs[1][1], len(data.classes), ignore=data.ignore)
    assert np.array_equal(got, labels[1]) and data.ignore == LAYOUTS[name].ignore


def test_shipped_class_lists():
    for name, n in SIZES.items():
        names = (CLASS_DIR / LAYOUTS[name].classes).read_text().splitlines()
        assert len(names) == n == len(set(names)) and all(x == x.strip() and x for x in names)
    ade = (CLASS_DIR / "ade150.txt").read_text().splitlines()
    assert ade[:3] == ["wall", "building", "sky"] and ade[8] == "window" and ade[-1] == "flag"
    assert (CLASS_DIR / "voc20.txt").read_text().splitlines()[-1] == "tvmonitor"


def test_missing_folder_and_bad_label_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="folder not found: .*ADEChallengeData2016/images/validation"):
        open_dataset("ade150", str(tmp_path))
    make_layout(tmp_path, "voc20", n=1)
    bad = tmp_path / LAYOUTS["voc20"].labels / "im0.png"
    Image.fromarray(np.full((4, 4), 21, dtype=np.uint8)).save(bad)
    with pytest.raises(DatasetError, match=f"label {bad}: value 21 is outside the 20 classes"):
        read_label(str(bad), 20, ignore=255)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_layout(root, "world", n=3, size=40)
    return root


def _run(tiny_world, out, *extra):
    import jobs.evaluate as job

    return job.main(["--config", str(REPO / "conf/smoke/segment.yaml"), f"data.root={tiny_world}",
                     f"output.dir={out}", "proposals.options.max_proposals=6", "eval.overlays=1", *extra])


def test_evaluate_end_to_end_and_oracles(tiny_world, tmp_path, capsys):
    assert _run(tiny_world, tmp_path / "plain") == 0
    m = json.loads((tmp_path / "plain/metrics.json").read_text())
    assert m["images"] == 3 and m["classes"] == 22 and set(m["groups"]) == {"things", "stuff"}
    assert (tmp_path / "plain/per_class.md").read_text().startswith("# world: 3 images")
    assert [p.name for p in (tmp_path / "plain/overlays").iterdir()] == ["im0.png"]
    # oracle: proposals labelled with their majority ground-truth class -> no model named anything
    assert _run(tiny_world, tmp_path / "gtc", "eval.oracle=gt_classes") == 0
    gtc = json.loads((tmp_path / "gtc/metrics.json").read_text())
    # oracle: ground-truth masks named by (random) CLIP: every GT pixel is covered, so pixel acc = share named right
    assert _run(tiny_world, tmp_path / "gtm", "eval.oracle=gt_masks") == 0
    gtm = json.loads((tmp_path / "gtm/metrics.json").read_text())
    assert gtc["pixel_acc"] > m["pixel_acc"] and gtc["mIoU"] > 0.3  # the oracle knows the classes
    assert gtm["per_class"][21]["gt_pixels"] == m["per_class"][21]["gt_pixels"] > 0
    capsys.readouterr()
    assert _run(tiny_world, tmp_path / "x", "data.dataset=pc59") == 2
    assert "folder not found" in capsys.readouterr().err
