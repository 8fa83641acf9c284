"""jobs/segment.py: class lists, inputs, outputs (label PNGs 8/16-bit, overlay, JSON), skips and early errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.config.load import ConfigError, load_config
from pipelines.segment.config import SegmentConfig
from pipelines.segment.inputs import InputError, classes_from_file, list_images, parse_classes, read_image, unique_stems
from pipelines.segment.outputs import class_summary, label_image, overlay_image, palette
from tests.conftest import REPO


def test_class_lists_are_split_trimmed_and_checked(tmp_path):
    assert parse_classes("cat, red blanket,sky", source="x") == ["cat", "red blanket", "sky"]
    assert parse_classes("cat\nroad, route\n\nsky\n", source="f.txt", commas=False) == ["cat", "road, route", "sky"]
    (tmp_path / "c.json").write_text('{"classes": ["a", "b, c"]}')
    assert classes_from_file(str(tmp_path / "c.json")) == ["a", "b, c"]
    (tmp_path / "c.txt").write_text("a\nb, c\na\n")
    with pytest.raises(InputError, match="twice: a"):
        classes_from_file(str(tmp_path / "c.txt"))
    with pytest.raises(InputError, match="empty"):
        parse_classes(" , \n", source="--classes")
    with pytest.raises(InputError, match="twice: cat"):
        parse_classes("cat,dog,cat", source="--classes")


def test_inputs_folders_files_and_stems(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/a.jpg", "notes.txt"):
        Image.new("RGB", (4, 4)).save(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    urls = list_images([str(tmp_path)])
    assert [u.rsplit("/", 1)[1] for u in urls] == ["a.png", "b.jpg", "a.jpg"]
    assert [s for _, s in unique_stems(urls)] == ["a", "b", "a_2"]
    with pytest.raises(InputError, match="no such file"):
        list_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match="not an image"):
        read_image(str(tmp_path / "notes.txt"))


def test_label_png_is_8_bit_up_to_255_classes_and_16_bit_past(tmp_path):
    label = np.array([[0, 1], [254, 255]])
    img = label_image(label, 255, no_label=255)
    img.save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "L"
    big = np.array([[0, 300], [846, 255]])  # 255 is a class here; unlabelled is marked 65535 (no_label=-1)
    img = label_image(np.where(big == 255, -1, big), 847, no_label=-1)
    img.save(tmp_path / "b.png")
    back = np.asarray(Image.open(tmp_path / "b.png"))
    assert back.tolist() == [[0, 300], [846, 65535]]


def test_overlay_has_a_legend_panel_and_outlines():
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    label = np.full((20, 30), 255)
    label[:, :15] = 0
    label[:10, 15:] = 2
    out = overlay_image(image, label, ["cat", "dog", "sky"], no_label=255, min_side=60)
    assert out.height == 60 and out.width > 90  # enlarged x3, legend panel to the right
    arr = np.asarray(out)
    assert (arr[5, 10] != 100).any()  # coloured
    assert (arr[40, 80] == 100).all()  # unlabelled stays the picture
    assert (arr[5, 45] == 255).all() or (arr[5, 44] == 255).all()  # white outline at the class border
    assert len(set(map(tuple, palette(22)))) == 22
    summary = class_summary(label, np.ones((20, 30)), ["cat", "dog", "sky"], no_label=255)
    assert [d["name"] for d in summary] == ["cat", "sky"] and summary[0]["pixel_share"] == 0.5


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="proposals.checkpoint"):
        load_config(SegmentConfig, REPO / "conf/smoke/segment.yaml", ["proposals.backend=maskformer"])
    with pytest.raises(ConfigError, match="ensemble.clip_weight"):
        load_config(SegmentConfig, REPO / "conf/smoke/segment.yaml", ["ensemble.clip_weight=1.5"])
    with pytest.raises(ConfigError, match="clip.templates"):
        load_config(SegmentConfig, REPO / "conf/smoke/segment.yaml", ["clip.templates=nine"])


def test_bad_class_lists_fail_before_any_model_loads(monkeypatch, capsys):
    import jobs.segment as job
    import pipelines.segment.segmenter as segmenter

    monkeypatch.setattr(segmenter, "Segmenter", lambda *a, **k: pytest.fail("a model was loaded"))
    for classes in (",", "cat,cat"):
        assert job.main([str(REPO / "data/sample/cat.jpg"), "--classes", classes,
                         "--config", str(REPO / "conf/smoke/segment.yaml")]) == 2
        assert capsys.readouterr().err.startswith("error: --classes: ")
    assert job.main(["nope.jpg", "--classes", "cat", "--config", str(REPO / "conf/smoke/segment.yaml")]) == 2
    assert "no such file or folder: nope.jpg" in capsys.readouterr().err


def test_smoke_preset_end_to_end_with_a_skip(tmp_path, capsys):
    import jobs.segment as job

    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = job.main([str(REPO / "data/sample/cat.jpg"), str(tmp_path / "broken.jpg"), "--classes", "cat,person,sky",
                   "--config", str(REPO / "conf/smoke/segment.yaml"), "--out", str(out), "proposals.options.max_proposals=6"])
    printed = capsys.readouterr().out
    assert rc == 1 and f"skipped {tmp_path / 'broken.jpg'}: ValueError: not an image PIL can decode" in printed
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png", "cat_overlay.png"]
    label = np.asarray(Image.open(out / "cat.png"))
    assert label.shape == (300, 451) and set(np.unique(label)) <= {0, 1, 2, 255}
    meta = json.loads((out / "cat.json").read_text())
    assert meta["classes"] == ["cat", "person", "sky"] and meta["models"]["proposals"]["backend"] == "superpixel"
    shares = {d["name"]: d["pixel_share"] for d in meta["present"]}
    for i, name in enumerate(meta["classes"]):
        assert shares.get(name, 0.0) == pytest.approx((label == i).mean())
