"""Keep a long-running mining worker's native heap flat: pin glibc's mmap threshold.

glibc serves large allocations (decoded images, masks, crop batches: 0.1-30 MB) with ``mmap`` and
returns them to the system on free, but each such free *raises* its mmap threshold (up to 32 MiB).
After a few units the same buffers come from the ``brk`` heap instead, where varying sizes fragment
it and the process grows a few MiB per unit without end: a mining actor grew 58 MiB over 27 units of
30 images (``bench/long_run.py``, ``tests/integration/test_long_run.py``) while the Python heap stayed
flat. Setting ``M_MMAP_THRESHOLD`` explicitly switches the dynamic adjustment off (glibc ``mallopt``);
with it the same run grew 3 MiB. The env-var equivalent is ``MALLOC_MMAP_THRESHOLD_=131072``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
DEFAULT_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial value


def pin_mmap_threshold(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` for this process; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to pin
        log.debug("mallopt unavailable; mmap threshold left dynamic")
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    log.debug("glibc mmap threshold pinned at %d bytes: %s", threshold_bytes, ok)
    return ok
