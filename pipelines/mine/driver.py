"""Driving the mining of a corpus with Ray: plan units, skip committed ones, fan out to actors.

The driver plans the corpus's units (deterministic), drops the ones already committed in the
output folder (resume), and keeps every :class:`MiningActor` busy with up to two units at a time
(one running, one queued, so the actor never waits for the driver). Actors hold the models; Ray
restarts a dead actor (``ray.max_restarts``) and retries its unit (``ray.max_task_retries``); a
unit that still fails is resubmitted up to ``ray.max_unit_attempts`` times and then reported as
failed (its shard stays uncommitted, so the next run redoes it).

With ``ray.cpu_workers_per_actor > 0`` each mining actor starts that many :class:`CpuStageActor`
workers (one CPU each) that decode, run spaCy and propose masks; the mining actor reads the unit's
records, hands batches to them round robin, at most ``run.prefetch_batches`` ahead (a bounded
queue: memory stays flat), and takes the prepared batches back in reading order, so the shard is
the same as with the CPU stage in a thread. Actors rather than Ray Data: the CPU stage's models
(spaCy, proposal backends) are built once per worker, and a unit stays one ordered stream that
one actor commits, which per-unit commit and resume rely on.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Iterator

import ray

from pipelines.config.cli import StartupError
from pipelines.corpus.base import build_reader
from pipelines.mine.config import MineConfig
from pipelines.mine.native_heap import pin_mmap_threshold
from pipelines.pairs.format import shard_url
from pipelines.records import WorkUnit
from pipelines.mine.paths import check_output_shared
from pipelines.pairs.writer import committed_units, write_sizes
from pipelines.mine.stats import RunResult

log = logging.getLogger(__name__)
LOCAL_START_ATTEMPTS = 3  # tries to start a local Ray
ACTOR_REST_S = 15.0  # an actor whose unit failed with an actor error gets no new unit for this long


class ActorStartError(StartupError):
    """The mining actors could not build their models (bad weights path, missing package, ...)."""


def check_device(cfg: MineConfig) -> None:
    """``run.device=cuda`` needs a GPU: on this machine when Ray is local, in the cluster otherwise
    (checked by :func:`check_resources` once connected). Raises :class:`StartupError`."""
    if cfg.run.device != "cuda" or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    if not torch.cuda.is_available():
        raise StartupError("run.device=cuda but this machine has no usable CUDA GPU (torch.cuda.is_available() "
                           "is False); set run.device=cpu (or auto), or run on a GPU machine")


def check_resources(cfg: MineConfig, nodes: list[dict[str, Any]], *, local: bool) -> bool:
    """Can one mining actor be placed? Its request compared with the alive nodes' resources.

    Without such a node Ray waits for ever (its autoscaler repeats "No available node types can
    fulfill resource request" every 35 s). A local Ray gets no more nodes: fail at once. A cluster
    may have an autoscaler: with ``ray.wait_for_resources_s > 0`` say once that we wait (True),
    else fail at once.

    Args:
        nodes: ``ray.nodes()``.
        local: True when this job started the Ray it uses.

    Raises:
        StartupError: one line naming the key and what to change.
    """
    need = {"CPU": float(cfg.ray.num_cpus_per_actor), "GPU": float(cfg.ray.num_gpus_per_actor)}
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(all(res.get(k, 0.0) >= v for k, v in need.items() if v > 0) for res in alive):
        if cfg.run.device == "cuda" and not any(res.get("GPU", 0.0) > 0 for res in alive):
            raise StartupError("run.device=cuda but no node of the Ray cluster has a GPU; set run.device=cpu "
                               "(or auto), or add GPU nodes")
        return False
    kind = "GPU" if need["GPU"] > max((res.get("GPU", 0.0) for res in alive), default=0.0) else "CPU"
    key = f"ray.num_{kind.lower()}s_per_actor"
    most = max((res.get(kind, 0.0) for res in alive), default=0.0)
    fix = ("set ray.num_gpus_per_actor=0 and run.device=cpu" if kind == "GPU" else f"lower {key}")
    if local:
        raise StartupError(f"{key}={need[kind]:g}: the local Ray on this machine has {most:g} {kind}; {fix}"
                           + (", or run on a GPU machine" if kind == "GPU" else ""))
    if cfg.ray.wait_for_resources_s <= 0:
        raise StartupError(f"{key}={need[kind]:g}: no node of the Ray cluster has that many {kind} (the most is "
                           f"{most:g}); {fix}, add such nodes, or with an autoscaler set ray.wait_for_resources_s=600")
    log.warning("%s=%g: no node of the Ray cluster has that many %s yet (the most is %g); waiting up to %.0f s "
                "for the autoscaler (ray.wait_for_resources_s)", key, need[kind], kind, most,
                cfg.ray.wait_for_resources_s)
    return True


def _setup_logging(log_level: int) -> None:
    """An actor logs at the driver's level; the model library's start-up remarks (random CLIP weights,
    ...) are the same in every actor and the driver says them once, so below INFO they stay quiet."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(log_level)
    if log_level > logging.INFO:
        logging.getLogger("ovseg").setLevel(max(log_level, logging.ERROR))
        for handler in logging.getLogger().handlers:  # open_clip logs "initialized randomly" on the root logger
            handler.addFilter(lambda record: "open_clip" not in record.pathname or record.levelno >= logging.ERROR)


class CpuStageActor:
    """A Ray actor around :class:`pipelines.mine.cpu_stage.CpuStage` (spaCy and proposals built once)."""

    def __init__(self, cfg: MineConfig, log_level: int = logging.WARNING) -> None:
        _setup_logging(log_level)
        pin_mmap_threshold()  # a long-lived worker: keep its native heap from fragmenting (native_heap.py)
        from pipelines.mine.cpu_stage import CpuStage

        self.stage = CpuStage(cfg)

    def prepare(self, records: list) -> Any:
        return self.stage.prepare(records)

    def ready(self) -> bool:
        return True


class RoundRobin:
    """``submit`` for :class:`pipelines.mine.model_stage.UnitMiner`: batches go to CPU workers in turn."""

    def __init__(self, workers: list) -> None:
        self.workers, self.next = workers, 0

    def __call__(self, records: list) -> ray.ObjectRef:
        worker = self.workers[self.next % len(self.workers)]
        self.next += 1
        return worker.prepare.remote(records)


def start_cpu_workers(cfg: MineConfig, log_level: int) -> list:
    """``ray.cpu_workers_per_actor`` :class:`CpuStageActor` handles, started and ready."""
    cls = ray.remote(CpuStageActor).options(num_cpus=1, max_restarts=cfg.ray.max_restarts,
                                            max_task_retries=cfg.ray.max_task_retries)
    workers = [cls.remote(cfg, log_level) for _ in range(cfg.ray.cpu_workers_per_actor)]
    ray.get([w.ready.remote() for w in workers])
    return workers


class MiningActor:
    """A Ray actor around :class:`pipelines.mine.model_stage.UnitMiner` (models built once per actor)."""

    def __init__(self, cfg: MineConfig, log_level: int = logging.WARNING) -> None:
        _setup_logging(log_level)
        pin_mmap_threshold()  # a long-lived worker: keep its native heap from fragmenting (native_heap.py)
        from pipelines.mine.model_stage import UnitMiner

        self.start_error: str | None = None
        try:
            if cfg.ray.cpu_workers_per_actor > 0:
                self.cpu_workers = start_cpu_workers(cfg, log_level)
                self.miner = UnitMiner(cfg, submit=RoundRobin(self.cpu_workers), resolve=ray.get)
            else:
                self.miner = UnitMiner(cfg)
        except Exception as err:  # noqa: BLE001 - reported by ready(): one line on the driver, not
            # a creation-task traceback that Ray prints per actor (the traceback stays in this log)
            log.debug("mining actor could not start", exc_info=True)
            lines = [line for line in str(err).splitlines() if line.strip()]
            self.start_error = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")

    def mine(self, unit: WorkUnit) -> dict[str, Any]:
        """The unit's committed stats plus ``node_id``: the Ray node this actor runs on."""
        return dict(self.miner.mine_unit(unit), node_id=ray.get_runtime_context().get_node_id())

    def ready(self) -> str:
        """The device the models are on; raises the start-up error as one line."""
        if self.start_error is not None:
            raise ActorStartError(self.start_error)
        return str(self.miner.device)


def init_ray(cfg: MineConfig) -> bool:
    """Connect to ``ray.address`` / ``RAY_ADDRESS``, or start a local Ray. True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    level = logging.getLogger().getEffectiveLevel()
    quiet = dict(logging_level=level, log_to_driver=True)
    if level > logging.INFO:  # a notice about Ray's defaults on every start, not about this run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, **quiet)
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        check_output_shared(cfg.output.url, alive_nodes=alive, shared_filesystem=cfg.output.shared_filesystem)
        return False
    per_actor = cfg.ray.num_cpus_per_actor + cfg.ray.cpu_workers_per_actor
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(include_dashboard=False, **quiet,
                     num_cpus=max(os.cpu_count() or 1, int(cfg.ray.num_actors * per_actor + 0.999)))
        except Exception as err:  # Ray gives a starting node a fixed 30 s, then raises a bare Exception
            if "timed out during startup" not in str(err) or attempt == LOCAL_START_ATTEMPTS:
                raise
            log.warning("local Ray start %d of %d timed out (loaded machine?); retrying", attempt, LOCAL_START_ATTEMPTS)
            ray.shutdown()
        else:
            return True
    return True


@contextlib.contextmanager
def ray_session(cfg: MineConfig, *, needed: bool = True) -> Iterator[float | None]:
    """Connect to (or start) Ray and check that one mining actor fits (:func:`check_resources`);
    shut a Ray this started down at the end. With ``needed=False`` (nothing to mine) Ray is not touched.

    Yields:
        how long to wait for the actors to be placed (``ray.wait_for_resources_s`` when an
        autoscaler must add a node first), or None (no limit: they fit now).

    Raises:
        StartupError: the cluster cannot place an actor (before anything is printed or mined).
    """
    if not needed:
        yield None
        return
    started = init_ray(cfg)
    try:
        yield cfg.ray.wait_for_resources_s if check_resources(cfg, ray.nodes(), local=started) else None
    finally:
        if started:
            ray.shutdown()


def plan(cfg: MineConfig) -> tuple[list[WorkUnit], dict[int, dict]]:
    """``(units to mine, already committed stats)`` for this config."""
    units = build_reader(cfg.corpus).plan_units()
    if cfg.run.max_units is not None:
        units = units[: cfg.run.max_units]
    committed = {} if cfg.output.overwrite else committed_units(cfg.output.url, cfg.output.storage_options)
    return [u for u in units if u.index not in committed], committed


def run_mining(cfg: MineConfig, on_unit: Callable[[dict[str, Any]], None] | None = None, *,
               planned: tuple[list[WorkUnit], dict[int, dict]] | None = None,
               ready_timeout: float | None = None) -> RunResult:
    """Mine every uncommitted unit of the corpus; returns what happened.

    Args:
        cfg: the mining config, its local paths already absolute
            (:func:`pipelines.mine.paths.resolve_local_paths`): actors run in other directories.
        on_unit: called on the driver with each committed unit's stats (progress bars).
        planned: the result of :func:`plan` when the caller has it (the corpus is planned once).
        ready_timeout: what :func:`ray_session` yielded, when the caller holds the session
            (otherwise this opens one).
    """
    started = time.time()
    todo, committed = planned if planned is not None else plan(cfg)
    result = RunResult(planned=len(todo) + len(committed), skipped_committed=len(committed))
    log.info("%d units planned, %d already committed, %d to mine", result.planned, len(committed), len(todo))
    if todo:
        if ray.is_initialized():
            _dispatch(cfg, todo, result, on_unit=on_unit, ready_timeout=ready_timeout)
        else:
            with ray_session(cfg) as timeout:
                _dispatch(cfg, todo, result, on_unit=on_unit, ready_timeout=timeout)
    result.all_committed = committed_units(cfg.output.url, cfg.output.storage_options)
    result.mismatched = verify_committed(result.mined, result.all_committed, cfg.output.url)
    result.sizes = write_sizes(cfg.output.url, result.all_committed, cfg.output.storage_options)
    result.seconds = time.time() - started
    return result


def verify_committed(mined: list[dict[str, Any]], found: dict[int, dict], out_url: str) -> dict[int, str]:
    """``unit → message`` for every unit a worker reported committed that is not committed in ``out_url``.

    Args:
        mined: the stats the workers returned (``unit``, and ``output``: where the worker wrote).
        found: :func:`pipelines.pairs.writer.committed_units` of ``out_url``, read by the driver.
    """
    problems = {}
    for stats in mined:
        index = int(stats["unit"])
        if index not in found:
            problems[index] = (f"unit {index}: the worker reported it committed at "
                               f"{stats.get('output', '?')} but it is not committed at {shard_url(out_url, index)}")
        elif (stats.get("worker"), stats.get("finished")) != (found[index].get("worker"), found[index].get("finished")):
            problems[index] = (f"unit {index}: the worker committed it at {stats.get('output', '?')} but "
                               f"{shard_url(out_url, index)} holds another run's commit")
    return problems


def _start_error(err: Exception) -> ActorStartError:
    """One line for an actor that could not start, from what ``ray.get`` on its ``ready()`` raised."""
    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, ActorStartError):
        return ActorStartError(f"mining actors could not start: {err.cause}")
    cause = getattr(err, "error_msg", None) or str(err)
    last = [line for line in cause.splitlines() if line.strip()][-1:]
    return ActorStartError(f"mining actors could not start: {last[0] if last else cause}")


def _await_ready(actors: list, ready_timeout: float | None, *, drain_s: float = 30.0) -> None:
    """Wait until every actor is ready; raise one :class:`ActorStartError` for the first that is not.

    Every ``ready()`` reference is fetched, the failed ones too: Ray prints an "Unhandled error"
    traceback for each failed reference it garbage-collects unread, which buried the one-line error.
    After a failure the others get ``drain_s`` to report (they share the config, so they fail alike),
    and the rest are killed and read.
    """
    pending = [a.ready.remote() for a in actors]
    deadline = None if ready_timeout is None else time.time() + ready_timeout
    first: ActorStartError | None = None
    drained = False
    while pending and not drained:
        if first is not None:  # one failed: give the others drain_s to report, all at once
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=drain_s)
            drained = True
        else:
            left = None if deadline is None else max(0.0, deadline - time.time())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                break  # the placement deadline passed
        for ref in done:
            try:
                ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as err:
                if not isinstance(err, ray.exceptions.RayActorError) and not isinstance(
                        getattr(err, "cause", None), ActorStartError):
                    raise
                first = first or _start_error(err)
    if pending:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        for ref in pending:
            try:
                ray.get(ref, timeout=drain_s)
            except Exception:  # noqa: BLE001 - the killed actors' refs, read so Ray does not report them
                pass
        if first is None:
            raise ActorStartError(f"no mining actor was placed within ray.wait_for_resources_s={ready_timeout:g} s: "
                                  "the cluster still lacks the resources one actor asks for")
    if first is not None:
        raise first


def _dispatch(cfg: MineConfig, todo: list[WorkUnit], result: RunResult, *, on_unit,
              ready_timeout: float | None = None) -> None:
    actor_cls = ray.remote(MiningActor).options(
        num_cpus=cfg.ray.num_cpus_per_actor, num_gpus=cfg.ray.num_gpus_per_actor,
        max_restarts=cfg.ray.max_restarts, max_task_retries=cfg.ray.max_task_retries,
        scheduling_strategy="SPREAD",  # one actor per node first: losing a node costs the fewest actors
    )
    n_actors = min(cfg.ray.num_actors, len(todo))
    actors = [actor_cls.remote(cfg, logging.getLogger().level) for _ in range(n_actors)]
    _await_ready(actors, ready_timeout)
    ready = time.time()
    attempts: dict[int, int] = {}
    queue = list(reversed(todo))
    inflight: dict[ray.ObjectRef, tuple[Any, WorkUnit]] = {}

    resting: dict[int, float] = {}  # id(actor) -> until when it gets no new unit (it failed; Ray restarts it)

    def submit(actor) -> None:
        unit = queue.pop()
        attempts[unit.index] = attempts.get(unit.index, 0) + 1
        inflight[actor.mine.remote(unit)] = (actor, unit)

    def load(actor) -> int:
        return sum(1 for a, _ in inflight.values() if a is actor)

    def top_up() -> None:
        """Give queued units to actors that are not resting, least loaded first, two at most each."""
        while queue:
            free = [a for a in actors if resting.get(id(a), 0.0) <= time.time() and load(a) < 2]
            if not free:
                break
            submit(min(free, key=load))
        if queue and not inflight:  # every actor rests: wait for the first one to be back
            time.sleep(max(0.0, min(resting.values()) - time.time()))
            submit(min(actors, key=lambda a: resting.get(id(a), 0.0)))

    for actor in actors:
        for _ in range(2):
            if queue:
                submit(actor)
    while inflight:
        [ref], _ = ray.wait(list(inflight), num_returns=1)
        actor, unit = inflight.pop(ref)
        try:
            stats = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as err:
            log.error("unit %d failed (attempt %d): %s", unit.index, attempts[unit.index], err)
            if attempts[unit.index] < cfg.ray.max_unit_attempts:
                queue.append(unit)
            else:
                result.failed[unit.index] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            if isinstance(err, ray.exceptions.RayActorError):  # died / unreachable (its node is lost):
                resting[id(actor)] = time.time() + ACTOR_REST_S  # retry elsewhere, not on it at once
        else:
            result.mined.append(stats)
            if on_unit is not None:
                on_unit(stats)
        top_up()
    result.mining_seconds = time.time() - ready

