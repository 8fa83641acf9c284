"""The GPU check runs end to end on a CPU with --quick (tiny sizes); no timings are asserted, only
that every figure is there and is a finite number (a zero-length timing gives inf, a lost count nan)."""
import json
import math

from bench.gpu_check import main


def test_gpu_check_quick_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = main(["--quick", "--device", "cpu", "--seconds", "0.05", "--out", str(out)])
    assert json.loads(out.read_text())["quick"] is True
    assert set(result["encode"]) == {"ViT-B/16", "ViT-L/14"}
    for enc in result["encode"].values():
        assert math.isfinite(enc["crops_per_s"]) and math.isfinite(enc["gflops_per_crop"])
    assert result["tune"] and all(tune for tune in result["tune"].values())
    assert all(math.isfinite(rate) for tune in result["tune"].values() for rate in tune.values())
    assert result["mining"]["pairs"] == 8 * 3  # one pair per precomputed noun of every image
    assert result["maskformer"]["spec"] == "world-tiny" and math.isfinite(result["maskformer"]["images_per_s"])
