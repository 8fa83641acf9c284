"""torch.distributed set-up for torchrun (NCCL on GPU, gloo on CPU) and small collectives."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process is: ``rank`` of ``size``, ``local_rank`` on its node, and its device."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: str = "auto", timeout_s: int = 1800, *, key: str = "run.device") -> World:
    """Read torchrun's environment and start the process group when there is more than one process.

    ``device="auto"`` takes ``cuda:<local rank>`` with NCCL when CUDA is available, else CPU with gloo.
    ``device="cuda"`` without CUDA raises :class:`~pipelines.config.cli.StartupError` naming ``key``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        from pipelines.config.cli import StartupError

        raise StartupError(f"{key}=cuda but this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                           f"False); set {key}=cpu (or auto), or run on a GPU machine")
    rank = int(os.environ.get("RANK", 0))
    size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        if restart > 0:  # after a torchrun restart the store still holds the dead round's addresses:
            # a rank could read its peer's stale address before the peer rewrote it (gloo: connection
            # refused), so every restarted round uses keys of its own
            is_master = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size,
                                  is_master=is_master, timeout=timeout)
            dist.init_process_group(backend, store=dist.PrefixStore(f"restart-{restart}", store), rank=rank,
                                    world_size=size, timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
        log.info("process group: %s, rank %d of %d", backend, rank, size)
    return World(rank=rank, size=size, local_rank=local_rank, device=dev)


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: object, world: World) -> list:
    """Every process's ``obj`` (picklable), in rank order."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum of a list of numbers over processes."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_with_local_grad(x: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate ``x`` ``[B,...]`` of all processes (equal ``B``); only the local slice carries
    gradient (open_clip's ``gather_with_grad=False`` behaviour)."""
    if not world.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(world.size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[world.rank] = x
    return torch.cat(parts)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def checked_once(check: Callable[[], str | None], world: World) -> str | None:
    """Run ``check`` on rank 0 only and give every rank its answer (a problem in one line, or None).

    Start-up probes (storage, credentials) run once per job this way, not once per rank: eight ranks
    without credentials print one line, not eight tracebacks.
    """
    problem = check() if world.is_main else None
    if world.distributed:
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        problem = box[0]
    return problem
