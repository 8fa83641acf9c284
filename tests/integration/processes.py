"""Start commands in their own session and stop exactly that session's processes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """PIDs of every live process whose session id is ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def kill_session(sid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process of session ``sid`` (Ray workers included)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while session_pids(sid) and time.time() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


def start_session(cmd: list[str], log: Path, env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Run ``cmd`` as the leader of a new session, output to ``log``."""
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env, cwd=cwd)


def sigkill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` at once, no grace (a crash, not a shutdown); returns how many."""
    pids = session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
