"""What a newcomer hits first: each start-up failure of the jobs and the GPU check, as a real process,
ends in one line on stderr that names the key or file and what to do, with exit code 2, before any
work starts (issue 18). The Ray GPU-request case is in tests/integration/test_ray_job.py (it reuses
that module's Ray head), the torchrun one in tests/integration/test_tune_mpt_torchrun.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


def no_credentials_env() -> dict[str, str]:
    """This environment without any cloud credentials (and no metadata-server lookups)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_CONFIG_FILE="/nonexistent")
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})


def assert_one_line(proc: subprocess.CompletedProcess, expected: str) -> None:
    """Exit code 2, exactly ``expected`` on stderr, no traceback anywhere."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert lines == [expected], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


@NO_CUDA
def test_mining_on_cuda_without_a_gpu_fails_on_the_driver(tmp_path):
    """Case 1: the device, not the weights, is named; no actor starts."""
    proc = run(sys.executable, "jobs/mine.py", "--config", "conf/smoke/mine.yaml", "run.device=cuda",
               f"output.url={tmp_path / 'pairs'}")
    assert_one_line(proc, "error: run.device=cuda but this machine has no usable CUDA GPU (torch.cuda.is_available() "
                          "is False); set run.device=cpu (or auto), or run on a GPU machine")
    assert proc.stdout == "" and not (tmp_path / "pairs").exists()


def test_the_readme_maskformer_command_as_printed_names_the_placeholder(tmp_path):
    """Case 4: ``corpus.url=... output.url=...`` copied from the README (YAML reads ``...`` as a
    document end: a 28-line ParserError before)."""
    proc = run(sys.executable, "jobs/mine.py", "--config", "conf/mine.yaml", "proposals.backend=maskformer",
               "proposals.checkpoint=ovseg_swinbase_vitL14_ft_mpt.pth", "proposals.options.short_side=640",
               "run.device=cuda", "corpus.url=...", "output.url=...")
    assert_one_line(proc, "error: override corpus.url=...: '...' is a placeholder; put your own value for "
                          "'corpus.url' there")


def test_an_override_that_is_not_yaml_names_the_override():
    proc = run(sys.executable, "jobs/mine.py", "--config", "conf/smoke/mine.yaml", "corpus.url=[a")
    assert_one_line(proc, "error: override corpus.url=[a: the value of 'corpus.url' is not valid YAML (while parsing "
                          "a flow sequence); quote it: 'corpus.url=\"[a\"'")


def test_export_of_a_missing_checkpoint(tmp_path):
    """Case 5 (a 19-line traceback before)."""
    proc = run(sys.executable, "jobs/export_ovseg_clip.py", "missing.pth", str(tmp_path / "x"))
    assert_one_line(proc, "error: checkpoint missing.pth: file not found; download OVSeg's .pth "
                          "(e.g. ovseg_swinbase_vitL14_ft_mpt.pth) and give its path")
    assert not (tmp_path / "x").exists()


def test_tuning_from_s3_without_credentials(tmp_path):
    """Case 6, one process (torchrun with 8 ranks printed 773 lines): storage is probed before the model."""
    proc = run(sys.executable, "jobs/tune_mpt.py", "--config", "conf/smoke/tune_mpt.yaml", "data.urls=s3://bucket/pairs",
               f"run.out_dir={tmp_path / 'run'}", env=no_credentials_env())
    assert_one_line(proc, "error: data.urls=s3://bucket/pairs: no usable credentials for s3:// (Unable to locate "
                          "credentials); set them in the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), "
                          "the provider's config file, or data.storage_options")
    assert not (tmp_path / "run").exists()


@NO_CUDA
def test_gpu_check_refuses_full_sizes_without_cuda_and_points_at_quick(tmp_path):
    """Case 3: the full-size models ran on the CPU until the 480 s limit before."""
    started = time.time()
    proc = run("bash", "bench/gpu_check.sh", str(tmp_path / "g.json"))
    assert_one_line(proc, "error: the full-size GPU check needs CUDA (torch.cuda.is_available() is False, --device cpu); "
                          "on a CPU run the tiny sizes: bash bench/gpu_check.sh out/gpu_check.json --quick --device cpu")
    assert time.time() - started < 120 and not (tmp_path / "g.json").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_killing_gpu_check_sh_stops_the_check(tmp_path):
    """Case 3: killing the script left ``timeout ... gpu_check.py`` running in its own process group."""
    proc = subprocess.Popen(["bash", "bench/gpu_check.sh", str(tmp_path / "g.json"), "--quick", "--device", "cpu",
                             "--seconds", "30"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while not (kids := _children(proc.pid)) and time.time() < deadline:
        time.sleep(0.2)
    assert kids, "the check did not start"
    os.kill(proc.pid, signal.SIGTERM)  # the script only, as `kill PID` does
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(Path(f"/proc/{k}").exists() and "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2]
              for k in kids) and time.time() < deadline:
        time.sleep(0.2)
    alive = [k for k in kids if Path(f"/proc/{k}").exists()]
    assert not alive, f"still running after the script was killed: {alive}"
    assert not (tmp_path / "g.json").exists()


def test_the_banner_names_the_clip_of_a_prompt_file_without_double_slashes(tmp_path, capsys, monkeypatch):
    """Case 7: with ``clip.prompt=`` the banner named only the base CLIP, as ``world-clip//abs/path``."""
    import importlib.util

    from ovseg.clip import load_clip
    from ovseg.mpt import MaskPromptCLIP
    from ovseg.mpt_export import describe, save_prompt

    bundle = load_clip("ovseg-tiny-vit", None)
    weights = tmp_path / "clip_weights.pt"
    torch.save(bundle.model.state_dict(), weights)
    prompt = save_prompt(describe(MaskPromptCLIP(bundle.model, depth=2), "ovseg-tiny-vit", None,
                                  clip_checkpoint=str(weights)), tmp_path / "mpt_prompt.pt")
    spec = importlib.util.spec_from_file_location("_mine_job_banner", REPO / "jobs/mine.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    monkeypatch.chdir(REPO)
    assert job.main(["--config", "conf/smoke/mine.yaml", f"clip.prompt={prompt}", f"output.url={tmp_path}/pairs",
                     "run.max_units=0"]) == 0
    banner = capsys.readouterr().out.splitlines()[0]
    assert f"CLIP ovseg-tiny-vit ({weights}) + mask prompt {prompt}, proposals superpixel" in banner
    assert "//" not in banner


def test_a_preset_that_is_not_yaml_names_the_file_and_line(tmp_path):
    from pipelines.config.load import ConfigError, load_config
    from pipelines.mine.config import MineConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus:\n  url: [a\n")
    with pytest.raises(ConfigError) as err:
        load_config(MineConfig, bad)
    assert str(err.value).startswith(f"config file {bad}: not valid YAML (while parsing a flow sequence")
    assert "line 2" in str(err.value) and "\n" not in str(err.value)


def test_resource_check_messages_for_a_local_ray_and_a_cluster():
    """:func:`check_resources` on ``ray.nodes()``-shaped input: the local Ray fails at once, a cluster
    fails at once unless ``ray.wait_for_resources_s`` lets an autoscaler add the node."""
    from pipelines.config.cli import StartupError
    from pipelines.config.load import load_config
    from pipelines.mine.config import MineConfig
    from pipelines.mine.driver import check_resources

    cpu_node = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}]
    gpu = load_config(MineConfig, "conf/smoke/mine.yaml", ["ray.num_gpus_per_actor=1"])
    with pytest.raises(StartupError, match=r"^ray.num_gpus_per_actor=1: the local Ray on this machine has 0 GPU; "
                                           r"set ray.num_gpus_per_actor=0 and run.device=cpu, or run on a GPU machine$"):
        check_resources(gpu, cpu_node, local=True)  # the dead node's GPUs do not count
    cpus = load_config(MineConfig, "conf/smoke/mine.yaml", ["ray.num_cpus_per_actor=4"])
    with pytest.raises(StartupError, match=r"^ray.num_cpus_per_actor=4: no node of the Ray cluster has that many CPU "
                                           r"\(the most is 2\); lower ray.num_cpus_per_actor"):
        check_resources(cpus, cpu_node, local=False)
    waiting = load_config(MineConfig, "conf/smoke/mine.yaml", ["ray.num_gpus_per_actor=1", "ray.wait_for_resources_s=60"])
    assert check_resources(waiting, cpu_node, local=False) is True
    assert check_resources(load_config(MineConfig, "conf/smoke/mine.yaml"), cpu_node, local=True) is False
    cuda = load_config(MineConfig, "conf/smoke/mine.yaml", ["run.device=cuda"])
    with pytest.raises(StartupError, match=r"^run.device=cuda but no node of the Ray cluster has a GPU"):
        check_resources(cuda, cpu_node, local=False)
