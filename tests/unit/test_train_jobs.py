"""The thin job entry points: --help, config errors, standalone crop evaluation."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.synthetic_pairs import write_synthetic_pairs

ROOT = Path(__file__).resolve().parents[2]


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_and_config_errors(capsys):
    job = load_job("tune_mpt")
    with pytest.raises(SystemExit) as done:
        job.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "torchrun --nproc_per_node=N jobs/tune_mpt.py" in text and "finetune+mpt" in text
    assert job.main(["--config", "conf/smoke/tune_mpt.yaml", "optim.mode=lora"]) == 2
    assert "optim.mode" in capsys.readouterr().err
    assert job.main(["--config", "conf/smoke/tune_mpt.yaml", "optim.lerning_rate=1"]) == 2
    assert "lerning_rate" in capsys.readouterr().err
    assert job.parse_args(["resume=auto", "mode=finetune"]).overrides == ["run.resume=auto", "optim.mode=finetune"]


def test_tune_then_evaluate_crops(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    write_synthetic_pairs(str(pairs), n_shards=1, per_shard=24, size=64)
    run_dir = tmp_path / "run"
    tune = load_job("tune_mpt")
    assert tune.main(["--config", "conf/smoke/tune_mpt.yaml", f"data.urls={pairs}", f"run.out_dir={run_dir}",
                      "optim.max_steps=2", "run.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "eval before: top1" in out and "eval after:  top1" in out and "export prompt:" in out

    evaluate = load_job("evaluate_crops")
    result_file = tmp_path / "eval.json"
    assert evaluate.main([f"urls={pairs}", f"prompt_file={run_dir / 'export' / 'mpt_prompt.pt'}",
                          "device=cpu", "workers=0", "holdout_percent=20", "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    # the standalone evaluation of the exported prompt reproduces the job's own numbers
    assert result["prompted"] == summary["eval_after"]
    assert result["plain"] == summary["eval_before"]
    assert "prompted  top1" in capsys.readouterr().out
