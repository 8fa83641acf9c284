"""`ray job submit -- python jobs/mine.py` against a real Ray head on 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import tempfile
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds

from pipelines.pairs.writer import committed_units
from tests.integration.conftest import REPO, child_env
from tests.integration.processes import kill_session, start_session

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).parent / "ray")
HEAD_DIRS: dict[str, Path] = {}  # dashboard address -> the directory its head was started in
GCS: dict[str, str] = {}  # dashboard address -> the head's GCS address (for ray.address=)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory) -> dict[str, str]:
    """Environment for the head and its clients: token authentication with a token of this test."""
    token = tmp_path_factory.mktemp("raytoken") / "auth_token"
    token.write_text(secrets.token_hex(32))
    return dict(child_env(), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, ray_env):
    """A Ray head (GCS + dashboard/job server) on loopback; stops exactly the processes it started."""
    log_dir = tmp_path_factory.mktemp("rayhead")
    head_dir = tmp_path_factory.mktemp("headcwd")  # the head runs elsewhere than any job (as on a cluster)
    temp_dir = Path(tempfile.mkdtemp(prefix="ovr-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    gcs_port, dash_port = _free_port(), _free_port()
    proc = start_session([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                          f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                          "--num-cpus=2", "--num-gpus=0",
                          f"--dashboard-agent-listen-port={_free_port()}",  # not 52365: other heads may run
                          f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                         log_dir / "head.log", ray_env, str(head_dir))
    address = f"http://127.0.0.1:{dash_port}"
    HEAD_DIRS[address] = head_dir
    GCS[address] = f"127.0.0.1:{gcs_port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            ok = subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, env=ray_env)
            if ok.returncode == 0:
                break
            assert proc.poll() is None, (log_dir / "head.log").read_text()[-3000:]
            time.sleep(2)
        else:
            pytest.fail("Ray head did not come up: " + (log_dir / "head.log").read_text()[-3000:])
        yield address
    finally:
        kill_session(proc.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(address: str, env: dict[str, str], *entrypoint: str) -> subprocess.CompletedProcess:
    """``ray job submit`` without --working-dir, retried while the head's job agent comes up."""
    cmd = [RAY, "job", "submit", "--address", address, "--", *entrypoint]
    deadline = time.time() + 300  # slow on a loaded machine
    while True:
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if "No available agent" not in run.stderr + run.stdout or time.time() > deadline:
            return run
        time.sleep(3)


def _job_dir(tmp_path: Path) -> Path:
    """A job directory holding the sample corpus under a relative path (``data/``)."""
    job = tmp_path / "job"
    job.mkdir()
    (job / "data").symlink_to(REPO / "data" / "sample")
    return job


def test_relative_paths_resolve_in_the_job_directory_not_the_nodes(ray_head, ray_env, tmp_path):
    """No --working-dir, relative corpus and output: shards land where the config says, relative to
    the directory the job started in; the head (and its actors) run in another directory."""
    job = _job_dir(tmp_path)
    run = _submit(ray_head, ray_env, "bash", "-c", f"cd {job} && {sys.executable} {REPO}/jobs/mine.py --config "
                  f"{REPO}/conf/smoke/mine.yaml corpus.url=data/captions_sample.json output.url=out/pairs "
                  "corpus.images_per_unit=5 ray.num_actors=1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = job / "out" / "pairs"
    assert sorted(committed_units(str(out))) == [0, 1]
    assert f"output: {out}" in run.stdout and f"-> {out}:" in run.stdout  # absolute, as written
    assert "2 units mined this run, 2 committed in total" in run.stdout
    assert not (HEAD_DIRS[ray_head] / "out").exists()
    assert json.loads((out / "report.json").read_text())["totals"]["images"] == 10


FORGE = """
import os, runpy, sys
import pipelines.mine.driver as runner

real = runner._dispatch

def dispatch(cfg, todo, result, **kw):  # the actors commit; then unit 0's commit marker vanishes
    real(cfg, todo, result, **kw)
    os.remove(runner.shard_url(cfg.output.url, 0)[: -len(".tar")] + ".stats.json")

runner._dispatch = dispatch
sys.argv = ["mine.py", *sys.argv[1:]]
runpy.run_path("{mine}", run_name="__main__")
"""


def test_a_reported_commit_that_is_not_there_fails_the_job(ray_head, ray_env, tmp_path):
    job = _job_dir(tmp_path)
    (job / "forge.py").write_text(FORGE.replace("{mine}", str(REPO / "jobs" / "mine.py")))
    run = _submit(ray_head, ray_env, "bash", "-c", f"cd {job} && {sys.executable} forge.py --config {REPO}/conf/smoke/mine.yaml "
                  "corpus.url=data/captions_sample.json output.url=out/pairs corpus.images_per_unit=5 "
                  "ray.num_actors=1 output.report=false")
    text = run.stdout + run.stderr
    assert run.returncode != 0, text[-3000:]
    out = job / "out" / "pairs"
    assert f"error: unit 0: the worker reported it committed at file://{out}/pairs-000000.tar but it is not " \
           f"committed at {out}/pairs-000000.tar" in text, text[-3000:]
    assert sorted(committed_units(str(out))) == [1]


def _agent_log(address: str) -> str:
    logs = sorted(Path("/tmp").glob("ovr-*/session_latest/logs/dashboard_agent.log"))
    return "\n".join(p.read_text()[-2000:] for p in logs)


def test_ray_job_submit_mines_committed_readable_shards(ray_head, ray_env, tmp_path):
    out = tmp_path / "pairs"
    cmd = [RAY, "job", "submit", "--address", ray_head, "--working-dir", str(REPO), "--",
           sys.executable, "jobs/mine.py", "--config", "conf/smoke/mine.yaml", f"output.url={out}",
           "corpus.images_per_unit=3", "ray.num_actors=2"]
    deadline = time.time() + 300
    while True:  # the head's job agent can need a little longer than its HTTP server
        run = subprocess.run(cmd, capture_output=True, text=True, env=ray_env, timeout=600)
        if "No available agent" not in run.stderr + run.stdout or time.time() > deadline:
            break
        time.sleep(3)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + _agent_log(ray_head)
    assert "succeeded" in run.stdout
    stats = committed_units(str(out))
    assert sorted(stats) == [0, 1, 2, 3]  # 10 images, 3 per unit
    assert sum(s["images"] for s in stats.values()) == 10
    sizes = json.loads((out / "sizes.json").read_text())
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("pairs-*.tar")), shardshuffle=False).decode("pil"))
    assert len(samples) == sum(sizes.values()) == sum(s["pairs"] for s in stats.values()) > 0
    assert all({"jpg", "png", "txt", "json"} <= set(s) for s in samples)
    assert len({s["json"]["unit"] for s in samples}) >= 3
    # two actors did the work, in processes of the cluster, not of the submitting shell
    assert len({s["worker"] for s in stats.values()}) == 2
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["pairs"] == len(samples)
    assert (out / "contact_sheet.png").stat().st_size > 1000


def test_a_gpu_request_no_node_can_meet_fails_in_one_line(ray_head, ray_env, tmp_path):
    """Issue 18, case 2: ``ray.num_gpus_per_actor=1`` on this head without GPUs ended never (Ray's
    autoscaler repeated "No available node types can fulfill resource request" every 35 s). Now the
    driver compares the request with the nodes' resources: one line, exit 2, nothing mined; with
    ``ray.wait_for_resources_s`` it says once that it waits, then gives up."""
    base = [sys.executable, str(REPO / "jobs/mine.py"), "--config", str(REPO / "conf/smoke/mine.yaml"),
            f"ray.address={GCS[ray_head]}", "ray.num_gpus_per_actor=1", f"output.url={tmp_path / 'pairs'}"]
    started = time.time()
    run = subprocess.run(base, capture_output=True, text=True, env=ray_env, timeout=300, cwd=REPO)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    assert lines == ["error: ray.num_gpus_per_actor=1: no node of the Ray cluster has that many GPU (the most is 0); "
                     "set ray.num_gpus_per_actor=0 and run.device=cpu, add such nodes, or with an autoscaler set "
                     "ray.wait_for_resources_s=600"], run.stderr[-3000:]
    assert run.stdout == "" and not (tmp_path / "pairs").exists()
    assert time.time() - started < 120

    run = subprocess.run(base + ["ray.wait_for_resources_s=3"], capture_output=True, text=True, env=ray_env,
                         timeout=300, cwd=REPO)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    waits = [line for line in run.stderr.splitlines() if "waiting up to 3 s for the autoscaler" in line]
    assert len(waits) == 1, run.stderr[-3000:]
    assert run.stderr.splitlines()[-1] == ("error: no mining actor was placed within ray.wait_for_resources_s=3 s: "
                                           "the cluster still lacks the resources one actor asks for"), run.stderr[-3000:]


def test_actors_that_cannot_load_their_weights_fail_in_one_line(ray_head, ray_env, tmp_path):
    """Issue 18, case 1's other half: an actor's start-up error reached the terminal as ~200 lines of
    Ray creation-task traceback per actor; now the actor reports it and the driver prints one line."""
    bad = tmp_path / "not_weights.pt"
    bad.write_text("garbage")
    run = subprocess.run([sys.executable, str(REPO / "jobs/mine.py"), "--config", str(REPO / "conf/smoke/mine.yaml"),
                          f"ray.address={GCS[ray_head]}", f"clip.checkpoint={bad}", f"output.url={tmp_path / 'pairs'}"],
                         capture_output=True, text=True, env=ray_env, timeout=300, cwd=REPO)
    text = run.stdout + run.stderr
    assert run.returncode == 2, text[-3000:]
    assert run.stderr.splitlines()[-1] == (f"error: mining actors could not start: ClipLoadError: {bad}: not a CLIP "
                                           "weight file (a state dict for torch.load(weights_only=True) or "
                                           ".safetensors): UnpicklingError"), text[-3000:]
    assert "Traceback" not in text and "(MiningActor" not in text, text[-3000:]
    assert not list((tmp_path / "pairs").glob("*.stats.json"))
