"""Reduced world benchmark on the committed world CLIP: the paper's effects stay measurable.

Runs ``bench/world.py`` end to end (generation, mining with the real job for ``gt`` and
``superpixel`` proposals, MPT with the real tuning job, held-out evaluation) at a reduced size and
checks the levels of the full run (``assets/world_clip/bench_reference.json``) with a margin for
the noise of the smaller run. Then the same run with a deliberate bug injected into every process
it starts (a ``sitecustomize`` module on ``PYTHONPATH``): mask prompts that replace the *kept*
patches, or crops whose outside pixels are not filled. Each bug must push the gain or the
precision below its bar — the benchmark can tell a working OVSeg from a broken one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# Levels of the reduced run (150 mined images, 40 val images, 60 MPT steps on the gt-mined pairs).
# Measured (issue 8 note): object precision 0.288, superpixel precision 0.246, whole-image hit@1
# 0.975, object crop accuracy 0.227, MPT gain +0.097; the bars leave a margin for noise.
MIN_OBJECT_PRECISION_GT = 0.20  # object pairs mined from ground-truth masks that are right
MIN_PRECISION_SUPERPIXEL = 0.08
MIN_WHOLE_IMAGE_HIT = 0.85  # 16-way object hit@1 of the world CLIP on whole held-out images
MIN_DOMAIN_GAP = 0.40  # whole-image hit@1 minus object crop accuracy: masked crops are out of domain
MIN_MPT_GAIN = 0.05  # CLIP+MPT minus CLIP, masked-crop accuracy on held-out GT masks

# name -> (module, code run on that module right after it is first imported, as `module`)
BUGS = {
    # MaskPrompt replaces the patch tokens it should keep (and keeps the masked ones)
    "mpt_replaces_kept_patches": ("ovseg.mpt", """
        _keep = module.MaskPrompt.keep_mask
        module.MaskPrompt.keep_mask = lambda self, masks: ~_keep(self, masks)
    """),
    # masked crops keep the whole box: pixels outside the mask are not filled
    "crop_fill_missing": ("ovseg.crops", """
        import torch
        _crops = module.masked_crops
        def masked_crops(image, masks, size, *a, **kw):
            binary = masks if masks.dtype == torch.bool else masks > kw.get("threshold", 0.5)
            valid = binary.flatten(1).any(1)
            filled = torch.zeros_like(binary)
            for i, (x0, y0, x1, y1) in zip(valid.nonzero().flatten().tolist(), module.mask_boxes(binary[valid]).tolist()):
                filled[i, y0:y1, x0:x1] = True
            return _crops(image, filled, size, *a, **kw)
        module.masked_crops = masked_crops
    """),
}

# A sitecustomize that patches one module lazily, when some process first imports it (every
# process of the run imports this file: jobs, Ray workers, torchrun children; only importing the
# target costs anything, so Ray's own helper processes start as fast as usual).
_LAZY_PATCH = """
import importlib.abc, importlib.util, sys
TARGET = {target!r}
CODE = {code!r}

class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            exec(CODE, {{"module": module}})

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _PatchOnImport())
"""


def _run_bench(out: Path, bug: str | None = None, backends: str = "gt,superpixel") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if bug is not None:
        inject = out / "inject"
        inject.mkdir(parents=True)
        target, code = BUGS[bug]
        (inject / "sitecustomize.py").write_text(_LAZY_PATCH.format(target=target, code=textwrap.dedent(code)))
        env["PYTHONPATH"] = os.pathsep.join([str(inject), str(REPO), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "bench.world", "--world", str(out / "data"), "--out", str(out / "run"),
         "--train", "150", "--val", "40", "--units", "75", "--tune-steps", "60", "--no-finetune", "--no-round2",
         "--backends", backends],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "run" / "world_bench.json").read_text())


def _mpt_gain(result: dict) -> float:
    models = result["eval"]["models"]
    return models["CLIP+MPT"]["crop_acc"] - models["CLIP"]["crop_acc"]


def _object_precision(result: dict) -> float:
    return result["mining"]["gt"]["precision_by_kind"]["thing"]["precision"]


@pytest.fixture(scope="module")
def reduced_bench(tmp_path_factory) -> dict:
    return _run_bench(tmp_path_factory.mktemp("world_bench"))


def test_mining_precision(reduced_bench):
    m = reduced_bench["mining"]
    assert _object_precision(reduced_bench) >= MIN_OBJECT_PRECISION_GT, m["gt"]
    assert m["superpixel"]["precision"] >= MIN_PRECISION_SUPERPIXEL, m["superpixel"]
    assert m["gt"]["precision"] > m["superpixel"]["precision"]  # better masks, better pairs


def test_world_clip_sees_objects_and_the_domain_gap_shows(reduced_bench):
    clip = reduced_bench["eval"]["models"]["CLIP"]
    assert clip["whole_image_thing_hit1"] >= MIN_WHOLE_IMAGE_HIT, clip
    assert clip["whole_image_thing_hit1"] - clip["crop_acc_thing"] >= MIN_DOMAIN_GAP, clip


def test_mpt_gain_on_heldout_masks(reduced_bench):
    assert _mpt_gain(reduced_bench) >= MIN_MPT_GAIN, reduced_bench["eval"]["models"]


def test_oracles_are_consistent(reduced_bench):
    ev = reduced_bench["eval"]
    clip = ev["models"]["CLIP"]
    assert clip["mIoU_gt_masks"] >= clip["mIoU_two_stage"]  # perfect masks never hurt
    assert ev["mIoU_proposals_gt_classes"] > clip["mIoU_two_stage"]  # classification is the bottleneck


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_broken_ovseg_falls_below_the_bars(bug, tmp_path):
    broken = _run_bench(tmp_path, bug, backends="gt")  # the bars are about gt-mined pairs and MPT on them
    below = _mpt_gain(broken) < MIN_MPT_GAIN or _object_precision(broken) < MIN_OBJECT_PRECISION_GT
    assert below, {"gain": _mpt_gain(broken), "object_precision": _object_precision(broken)}
