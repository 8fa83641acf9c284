"""The GPU check runs end to end on a CPU with --quick (tiny sizes); no timings are asserted."""
import json

from bench.gpu_check import main


def test_gpu_check_quick_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = main(["--quick", "--device", "cpu", "--seconds", "0.05", "--out", str(out)])
    assert json.loads(out.read_text())["quick"] is True
    assert set(result["encode"]) == {"ViT-B/16", "ViT-L/14"}
    for enc in result["encode"].values():
        assert enc["crops_per_s"] > 0 and enc["gflops_per_crop"] > 0
    assert all(rate > 0 for tune in result["tune"].values() for rate in tune.values())
    assert result["mining"]["pairs"] == 8 * 3  # one pair per precomputed noun of every image
    assert result["maskformer"]["spec"] == "world-tiny" and result["maskformer"]["images_per_s"] > 0
    assert result["segment"]["spec"] == "world-tiny" and result["segment"]["images_per_s"] > 0
