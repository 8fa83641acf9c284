"""jobs/segment.py and jobs/evaluate.py with the world presets (the committed world CLIP and MaskFormer)
on a few freshly generated held-out world images: files written, and backgrounds named right."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipelines.world.generate import generate_split
from tests.conftest import REPO


def test_world_presets_segment_and_evaluate(tmp_path, capsys):
    import jobs.evaluate as evaluate
    import jobs.segment as segment

    world = tmp_path / "world"
    generate_split(world, 3, "val", 4, formats=("semseg",))
    assert evaluate.main(["--config", str(REPO / "conf/world/evaluate.yaml"), f"data.root={world}",
                          f"output.dir={tmp_path / 'eval'}", "eval.overlays=1"]) == 0
    m = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert m["images"] == 4 and set(m["groups"]) == {"seen", "unseen", "unseen things", "things", "stuff"}
    # the world MaskFormer names backgrounds (0.96 mIoU on 100 images); a shuffled label mapping would not
    assert m["groups"]["stuff"]["mIoU"] > 0.6, m["groups"]
    images = sorted((world / "semseg/images/val").iterdir())[:2]
    assert segment.main([*map(str, images), "--classes-file", str(world / "semseg/categories.json"),
                         "--config", str(REPO / "conf/world/segment.yaml"), "--out", str(tmp_path / "seg")]) == 0
    stem = images[0].stem
    label = np.asarray(Image.open(tmp_path / "seg" / f"{stem}.png"))
    meta = json.loads((tmp_path / "seg" / f"{stem}.json").read_text())
    assert label.shape == (128, 128) and len(meta["classes"]) == 22 and meta["models"]["proposals"]["class_head"]
    assert Image.open(tmp_path / "seg" / f"{stem}_overlay.png").size[1] == 512  # enlarged for a readable legend
