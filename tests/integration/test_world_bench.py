"""Reduced world benchmark on the committed world CLIP: the paper's effects stay measurable.

Runs ``bench/world.py`` end to end (generation, mining with the real job for ``gt`` and
``superpixel`` proposals, MPT with the real tuning job, held-out evaluation) at a reduced size and
checks the levels of the full run (``assets/world_clip/bench_reference.json``) with a margin for
the noise of the smaller run; pair precision is checked as a lift over the precision of a random
choice among the same candidate masks, measured on the same shards. Then the same run with a
deliberate bug injected into every process it starts (a ``sitecustomize`` module on ``PYTHONPATH``):
mask prompts that replace the *kept* patches, or crops whose outside pixels are not filled, must
push the MPT gain or the object lift below its bar; scores that ignore the image, an argmax over the
wrong axis, or a batched crop path that cuts mirrored boxes must push both lifts below their bars
(round-1 mining only) — the benchmark can tell a working OVSeg from a broken one.
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
# Pair precision is judged against the precision of a random choice among the same candidate masks,
# measured on the same shards in the same run (an audit found the world CLIP's object pairs with
# best_mask at chance level: 0.239 vs 0.25): the bars are lifts over chance, not absolute levels.
# Measured (one_to_one + context view, thresholds off): gt object lift 0.26 (0.517 vs chance 0.258),
# all 0.30 (0.560 vs 0.256); superpixel all 0.15. Injected mining bugs: random scores 0.00 / 0.00,
# mirrored batched crops -0.02 / 0.02, transposed argmax 0.21 / 0.13 (object / all: with gt masks the
# masks come in the order the captions name their objects, so an index mix-up still hits often).
MIN_OBJECT_LIFT_GT = 0.10  # object precision minus its chance, gt-mined pairs (default strategy)
MIN_LIFT_GT = 0.20  # all pairs, gt: precision minus chance
MIN_LIFT_SUPERPIXEL = 0.08  # superpixel pairs beat a random superpixel
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

# Bugs in scoring, matching and the batched crop path: (module, code, extra bench/world.py arguments,
# the lifts each must push below their bars).
# They only touch mining, so their runs stop after round 1 (--mine-only).
MINING_BUGS = {
    # the image tower's features replaced by random unit vectors: scores that ignore the image
    "random_scores": ("ovseg.clip", """
        import torch
        _encode = module.encode_images
        def encode_images(*a, **kw):
            feats = _encode(*a, **kw)
            return torch.nn.functional.normalize(torch.randn_like(feats), dim=-1)
        module.encode_images = encode_images
    """, [], ("object", "all")),
    # the argmax taken over the wrong axis of the noun x mask matrix (best noun per mask used as a mask index)
    "transposed_argmax": ("ovseg.matching", """
        _real = module._choose
        def _choose(sim, large, params):
            _, evidence = _real(sim, large, params)
            per_mask = sim.masked_fill(~large[None], float("-inf")).argmax(dim=0)  # [N] noun indices
            n = sim.shape[1]
            return [int(per_mask[min(i, n - 1)]) % n for i in range(sim.shape[0])], evidence
        module._choose = _choose
    """, [], ("all",)),
    # the batched crop path cuts every box mirrored (start measured from the far edge)
    "batched_crop_mirrored": ("ovseg.crops_batched", """
        _bm = module.bicubic_matrices
        module.bicubic_matrices = lambda start, length, size, *, full: _bm(full - start - length, length, size, full=full)
    """, ["--mine-override", "crops.impl=batched"], ("object", "all")),
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


def _run_bench(out: Path, bug: str | None = None, backends: str = "gt,superpixel", extra: list[str] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if bug is not None:
        inject = out / "inject"
        inject.mkdir(parents=True)
        target, code = BUGS[bug] if bug in BUGS else MINING_BUGS[bug][:2]
        (inject / "sitecustomize.py").write_text(_LAZY_PATCH.format(target=target, code=textwrap.dedent(code)))
        env["PYTHONPATH"] = os.pathsep.join([str(inject), str(REPO), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "bench.world", "--world", str(out / "data"), "--out", str(out / "run"),
         "--train", "150", "--val", "40", "--units", "75", "--tune-steps", "60", "--no-finetune", "--no-round2",
         "--backends", backends, *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "run" / "world_bench.json").read_text())


def _mpt_gain(result: dict) -> float:
    models = result["eval"]["models"]
    return models["CLIP+MPT"]["crop_acc"] - models["CLIP"]["crop_acc"]


def _object_precision(result: dict) -> float:
    return result["mining"]["gt"]["precision_by_kind"]["thing"]["precision"]


def _lift(result: dict, backend: str = "gt", kind: str | None = None) -> float:
    """Precision minus the chance of a random candidate mask, both from the same shards of this run."""
    q = result["mining"][backend]
    if kind is None:
        return q["precision"] - q["chance"]["precision"]
    return q["precision_by_kind"][kind]["precision"] - q["chance"]["precision_by_kind"][kind]["precision"]


@pytest.fixture(scope="module")
def reduced_bench(tmp_path_factory) -> dict:
    return _run_bench(tmp_path_factory.mktemp("world_bench"))


def test_mining_precision_beats_chance(reduced_bench):
    m = reduced_bench["mining"]
    assert _lift(reduced_bench, "gt", "thing") >= MIN_OBJECT_LIFT_GT, (m["gt"]["precision_by_kind"], m["gt"]["chance"])
    assert _lift(reduced_bench, "gt") >= MIN_LIFT_GT, m["gt"]["chance"]
    assert _lift(reduced_bench, "superpixel") >= MIN_LIFT_SUPERPIXEL, m["superpixel"]["chance"]
    assert m["gt"]["precision"] > m["superpixel"]["precision"]  # better masks, better pairs
    # the strategies replayed on the shards' similarities agree with the pairs the miner wrote
    default = reduced_bench["strategies"]["gt"]
    assert any(abs(r["precision"] - m["gt"]["precision"]) < 1e-9 for r in default.values())


def test_world_clip_sees_objects_and_the_domain_gap_shows(reduced_bench):
    clip = reduced_bench["eval"]["models"]["CLIP"]
    assert clip["whole_image_thing_hit1"] >= MIN_WHOLE_IMAGE_HIT, clip
    assert clip["whole_image_thing_hit1"] - clip["crop_acc_thing"] >= MIN_DOMAIN_GAP, clip


def test_mpt_gain_on_heldout_masks(reduced_bench):
    assert _mpt_gain(reduced_bench) >= MIN_MPT_GAIN, reduced_bench["eval"]["models"]


def test_oracles_are_consistent(reduced_bench):
    ev = reduced_bench["eval"]
    clip = ev["models"]["CLIP"]
    # The paper's oracle gap: proposals labelled with the true classes far above two-stage, i.e.
    # classification is the bottleneck. ("GT masks never hurt" no longer holds here: since ov-seg's
    # crop recipe (issue 16) the reduced run gives GT masks 0.073 vs two-stage 0.074 for the plain
    # CLIP and 0.143 vs 0.152 after MPT — both near the CLIP's chance level; see the closing note.)
    assert ev["mIoU_proposals_gt_classes"] > 3 * clip["mIoU_two_stage"]
    assert ev["mIoU_proposals_gt_classes"] > 3 * clip["mIoU_gt_masks"]


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_broken_ovseg_falls_below_the_bars(bug, tmp_path):
    broken = _run_bench(tmp_path, bug, backends="gt")  # the bars are about gt-mined pairs and MPT on them
    below = _mpt_gain(broken) < MIN_MPT_GAIN or _lift(broken, "gt", "thing") < MIN_OBJECT_LIFT_GT
    assert below, {"gain": _mpt_gain(broken), "object_lift": _lift(broken, "gt", "thing")}


@pytest.mark.parametrize("bug", sorted(MINING_BUGS))
def test_a_broken_miner_falls_to_chance(bug, tmp_path):
    _, _, extra, breaks = MINING_BUGS[bug]
    broken = _run_bench(tmp_path, bug, backends="gt", extra=["--mine-only", *extra])
    lifts = {"object": _lift(broken, "gt", "thing"), "all": _lift(broken, "gt")}
    bars = {"object": MIN_OBJECT_LIFT_GT, "all": MIN_LIFT_GT}
    assert all(lifts[name] < bars[name] for name in breaks), (lifts, breaks)
