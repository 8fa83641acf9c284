"""Memory and open file descriptors of processes, from ``/proc`` (Linux), sampled in a thread.

Used by long-run checks (``bench/long_run.py``): the driver samples itself and the mining actors
(whose PIDs arrive in the units' stats) while a run goes on.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

__all__ = ["rss_bytes", "open_fds", "ProcessSampler", "Sample"]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    """Number of open file descriptors of ``pid`` (None when it is gone or not ours)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sample:
    """One reading of one process."""

    t: float  # seconds since the sampler started
    pid: int
    role: str  # "driver", "actor", ...
    rss: int | None  # bytes
    fds: int | None


@dataclass
class ProcessSampler:
    """Samples the registered processes every ``interval`` seconds until :meth:`stop`."""

    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pids: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def watch(self, pid: int, role: str) -> None:
        with self._lock:
            self._pids.setdefault(pid, role)

    def sample_now(self) -> None:
        with self._lock:
            pids = dict(self._pids)
        t = time.monotonic() - self._t0
        found = [Sample(t, pid, role, rss_bytes(pid), open_fds(pid)) for pid, role in pids.items()]
        with self._lock:
            self.samples.extend(found)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_now()

    def start(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        self.sample_now()
        return self.samples
