"""A longer mining run (the CI-sized version of ``bench/long_run.py``): memory and fds stay flat.

1,200 generated 32-64 px pictures in 40 units of 30, one actor on a local Ray, driver and actor
sampled every half second from ``/proc``. After warm-up (the first fifth of the units: models
built, caches, thread pools and Ray's connections in place):

* open file descriptors: no growth at all beyond ``FD_SLACK`` (Ray opens and closes a socket or a
  pipe now and then; a leak of one file per unit would show 32 more);
* RSS: at most ``RSS_SLACK_MB`` between the median of the first and of the last tenth of the
  samples. Allocator arenas and torch's CPU caches move by a few MiB; a leak of the per-batch
  crop tensors (32 crops x 3 x 64 x 64 float32 = 1.5 MiB per batch, 40 batches) or of the decoded
  images would exceed it.

Throughput (first vs last units) is reported by the bench, not asserted (no timed assertions).
"""
from __future__ import annotations

import pytest

from bench.long_run import long_run

pytestmark = pytest.mark.integration
FD_SLACK = 8
RSS_SLACK_MB = 48.0


def test_memory_and_open_files_stay_flat_over_a_longer_run(tmp_path):
    figures = long_run(images=1200, images_per_unit=30, workdir=tmp_path)
    assert figures["units"] == 40 and figures["images"] == 1200 and figures["pairs"] > 0
    for role in ("driver", "actor"):
        f = figures[role]
        assert f["samples"] >= 8, figures
        assert f["fds_max"] - f["fds_after_warmup"] <= FD_SLACK, (role, f)
        assert f["rss_growth_mb"] <= RSS_SLACK_MB, (role, f)
    assert len(figures["actor"]["pids"]) == 1  # one actor the whole run: nothing died and restarted
