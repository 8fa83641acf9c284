"""Two Ray nodes on this machine mining from and to S3; then the second node dies mid-run.

A head (``ray start --head``, 2 CPUs, resource ``head_node``) and a second node (``ray start
--address``, its own ``--temp-dir``, 1 CPU, resource ``second_node``) in their own sessions, with
Ray token authentication. The mining actors spread over both nodes (each unit's stats carry the
node id of the actor that mined it). Both runs must give exactly the pairs a one-node run gives.
The second run SIGKILLs the second node's whole session midway: its actor is restarted on the head
and its units retried, and nothing is lost or duplicated. The Ray token and the S3 secret appear
in nothing written. The tests stop exactly the sessions they started.
"""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.pairs.format import list_names
from pipelines.pairs.writer import committed_units
from tests.integration.conftest import REPO, child_env
from tests.integration.processes import kill_session, session_pids, sigkill_session, start_session
from tests.integration.s3_store import free_port, write_yaml
from tests.integration.pair_digests import pair_set

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).parent / "ray")
SAMPLE = REPO / "data" / "sample"
UNITS = 30

DRIVER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.driver import run_mining
result = run_mining(load_config(MineConfig, sys.argv[1]))
print("RESULT " + json.dumps({"mined": [{k: s.get(k) for k in ("unit", "node_id", "worker")} for s in result.mined],
                              "failed": result.failed, "committed": len(result.all_committed)}))
"""


def _node_args(temp_dir: Path) -> list[str]:
    """Ports of one node's agents: free ones, since several nodes (and other tests' heads) share the host."""
    return ["--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


class Cluster:
    """The two nodes' sessions and what identifies them."""

    def __init__(self, env: dict[str, str], token: str, work: Path) -> None:
        self.env, self.token, self.work = env, token, work
        self.temp = [Path(tempfile.mkdtemp(prefix=f"ovn{i}-", dir="/tmp")) for i in (0, 1)]
        self.address = f"127.0.0.1:{free_port()}"
        self.head = self.second = None

    def start_head(self) -> None:
        port = self.address.split(":")[1]
        self.head = start_session([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                                   "--include-dashboard=false", '--resources={"head_node": 1}',
                                   *_node_args(self.temp[0])], self.work / "head.log", self.env, str(self.work))

    def start_second(self) -> None:
        self.second = start_session([RAY, "start", f"--address={self.address}", "--num-cpus=1", "--num-gpus=0",
                                     '--resources={"second_node": 1}', *_node_args(self.temp[1])],
                                    self.work / f"second-{time.time():.0f}.log", self.env, str(self.work))

    def nodes(self) -> list[dict]:
        """Alive nodes as ``{"id", "resources"}`` (asked in a short-lived client process)."""
        code = ("import json, ray; ray.init(address='%s', logging_level='ERROR'); "
                "print('NODES ' + json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        run = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=300)
        lines = [line for line in run.stdout.splitlines() if line.startswith("NODES ")]
        return json.loads(lines[-1][6:]) if lines else []

    def wait_nodes(self, n: int, timeout: float = 400) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for proc in (self.head, self.second):
                assert proc is None or proc.poll() is None, self.logs()[-3000:]
            nodes = self.nodes()
            if len(nodes) == n:
                return nodes
            time.sleep(2)
        pytest.fail(f"cluster did not reach {n} nodes: " + self.logs()[-3000:])

    def start(self, which: str, attempts: int = 3) -> None:
        """Start the head or the second node, again when Ray's fixed 30 s start-up wait runs out
        (a loaded machine); the failed attempt's session is stopped first."""
        for attempt in range(1, attempts + 1):
            getattr(self, f"start_{which}")()
            proc = getattr(self, which)
            try:
                self.wait_nodes(1 if which == "head" else 2)
                return
            except BaseException:
                if proc.poll() is None or attempt == attempts:
                    raise
                kill_session(proc.pid)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work.glob("*.log")))

    def stop(self) -> None:
        for proc in (self.second, self.head):
            if proc is not None:
                kill_session(proc.pid)
        for temp in self.temp:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(32)
    (work / "token").write_text(token)
    env = dict(child_env(), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(work / "token"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    cl = Cluster(env, token, work)
    try:
        cl.start("head")
        cl.start("second")
        yield cl
    finally:
        cl.stop()


@pytest.fixture(scope="module")
def corpus(s3, repeated_sample, tmp_path_factory) -> str:
    local = tmp_path_factory.mktemp("coco")
    for image in SAMPLE.glob("*.jpg"):
        shutil.copy(image, local / image.name)
    shutil.copy(repeated_sample, local / "captions_x3.json")
    return s3.put_dir(local, "corpus") + "/captions_x3.json"


def _config(tmp: Path, s3, corpus: str, out: str, cluster: Cluster | None) -> Path:
    return write_yaml(tmp / f"mine-{out.rsplit('/', 1)[1]}.yaml", REPO / "conf" / "smoke" / "mine.yaml",
                      corpus={"format": "coco", "url": corpus, "images_per_unit": 1,
                              "storage_options": s3.storage_options},
                      output={"url": out, "storage_options": s3.storage_options},
                      ray={"num_actors": 2, "address": cluster.address if cluster else None},
                      run={"images_per_batch": 1})


@pytest.fixture(scope="module")
def one_node(s3, corpus, tmp_path_factory) -> dict[str, str]:
    """The pair set of a one-node run: the miner itself, unit after unit, in this process."""
    from pipelines.mine.model_stage import UnitMiner
    from pipelines.mine.driver import plan

    out = s3.url("out/one-node")
    cfg = load_config(MineConfig, _config(tmp_path_factory.mktemp("one"), s3, corpus, out, None))
    todo, _ = plan(cfg)
    miner = UnitMiner(cfg)
    for unit in todo:
        miner.mine_unit(unit)
    pairs = pair_set(out, s3.storage_options)
    assert len(committed_units(out, s3.storage_options)) == UNITS and pairs
    return pairs


def _result(log: str) -> dict:
    lines = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert lines, log[-4000:]
    return json.loads(lines[-1][7:])


def _node_named(nodes: list[dict], resource: str) -> str:
    return next(n["id"] for n in nodes if resource in n["resources"])


def test_two_nodes_give_the_pairs_of_one(cluster, s3, corpus, one_node, tmp_path):
    nodes = cluster.wait_nodes(2)
    out = s3.url("out/two-nodes")
    run = subprocess.run([sys.executable, "-c", DRIVER, str(_config(tmp_path, s3, corpus, out, cluster))],
                         cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=900)
    (cluster.work / "driver-two-nodes.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = _result(run.stdout)
    assert result["committed"] == UNITS and not result["failed"]
    used = {m["node_id"] for m in result["mined"]}
    assert used == {_node_named(nodes, "head_node"), _node_named(nodes, "second_node")}  # both nodes mined
    assert pair_set(out, s3.storage_options) == one_node


def _actor_pids(sid: int) -> list[int]:
    found = []
    for pid in session_pids(sid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::MiningActor"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_losing_the_second_node_mid_run_loses_and_duplicates_nothing(cluster, s3, corpus, one_node, tmp_path):
    nodes = cluster.wait_nodes(2)
    second = _node_named(nodes, "second_node")
    out = s3.url("out/node-lost")
    driver = start_session([sys.executable, "-c", DRIVER, str(_config(tmp_path, s3, corpus, out, cluster))],
                           cluster.work / "driver-node-lost.log", cluster.env, str(REPO))
    try:
        deadline = time.time() + 600
        victims: list[int] = []
        while time.time() < deadline and driver.poll() is None:
            victims = victims or _actor_pids(cluster.second.pid)
            if victims and len(list_names(out, s3.storage_options)) >= 8:  # ~4 units committed
                break
            time.sleep(0.1)
        assert victims, "no mining actor ran on the second node"
        assert driver.poll() is None, "the run ended before the node could be killed"
        assert sigkill_session(cluster.second.pid) > 2  # the whole node at once: raylet, agents, its actor
        early = committed_units(out, s3.storage_options)  # nothing on the second node can commit now
        driver.wait(timeout=900)
    finally:
        kill_session(driver.pid)
        kill_session(cluster.second.pid)
    log = (cluster.work / "driver-node-lost.log").read_text()
    assert driver.returncode == 0, log[-4000:]
    result = _result(log)
    assert result["committed"] == UNITS and not result["failed"]
    after = committed_units(out, s3.storage_options)
    assert sorted(after) == list(range(UNITS))
    head = _node_named(nodes, "head_node")
    # the units committed after the loss were all mined on the head (the restarted actor included)
    assert 0 < len(early) < UNITS
    assert {m["node_id"] for m in result["mined"] if m["unit"] not in early} == {head}
    assert pair_set(out, s3.storage_options) == one_node
    cluster.second = None  # stopped


def test_no_token_or_secret_in_anything_written(cluster, s3):
    """The Ray token and the S3 secret: in no object, no driver log, no file of either node's temp dir."""
    needles = [cluster.token.encode(), s3.secret.encode()]
    leaks = [k for k, data in s3.objects().items() if any(n in data for n in needles)]
    files = list(cluster.work.glob("driver-*.log")) + [p for t in cluster.temp for p in t.rglob("*")
                                                        if p.is_file() and not p.is_symlink()]
    assert any("session_" in str(p) for p in files)
    unread = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            unread.append(path)
            continue
        leaks.extend(str(path) for n in needles if n in data)
    assert not leaks, leaks
    # counted, not silent: only files that vanished (Ray's live session) may go unread
    assert all(not p.exists() for p in unread), [str(p) for p in unread if p.exists()]
    assert len(unread) < len(files) // 10, f"{len(unread)} of {len(files)} files unread"
