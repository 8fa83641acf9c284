"""A longer mining run (the CI-sized version of ``bench/long_run.py``): memory and fds stay flat.

3000 generated 32-64 px pictures in 30 units of 100, one actor on a local Ray, driver and actor
sampled every half second from ``/proc``. After warm-up (the first fifth of the units: models
built, caches, thread pools and Ray's connections in place):

* open file descriptors: no growth at all beyond ``FD_SLACK`` (Ray opens and closes a socket or a
  pipe now and then; a leak of one file per unit would show 24 more);
* RSS growth as a slope, MiB per 1000 images mined (least squares over the post-warm-up samples,
  ``bench/long_run.py``), not as an end-minus-start difference that one late allocation can tip:
  the driver (it holds no corpus and no pixels) at most ``DRIVER_SLOPE``; the actor at most
  ``ACTOR_SLOPE``. Its allocator and torch's CPU caches settle over the first minutes, so even a
  healthy actor has a slope: measured 24, 24.5 and 31.2 MiB/1k (the last in a CI run) with glibc's
  mmap threshold pinned (``pipelines/mine/native_heap.py``), 38 and 49 MiB/1k with the pin removed
  (the leak this test found: the brk heap fragmenting under varying buffer sizes), on 2 cores; the
  bar sits between them. The late slope (second half) does not separate them (12.2 pinned, 11.3
  not). A leak of the per-batch crop tensors (up to 12 MiB a batch of 32, ~375 MiB/1k) fails it by far.

Throughput (first vs last units) is reported by the bench, not asserted (no timed assertions).
"""
from __future__ import annotations

import pytest

from bench.long_run import long_run

pytestmark = pytest.mark.integration
FD_SLACK = 8
DRIVER_SLOPE = 5.0  # MiB per 1000 images; measured 0.6
ACTOR_SLOPE = 35.0  # MiB per 1000 images; measured 24-31 pinned, 38-49 without the pin (31.24 failed a 31 bar in CI)


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict:
    result = long_run(images=3000, images_per_unit=100, workdir=tmp_path_factory.mktemp("long_run"))
    assert result["units"] == 30 and result["images"] == 3000 and result["pairs"] > 0
    return result


def test_open_files_stay_flat_and_the_driver_memory_too(figures):
    for role in ("driver", "actor"):
        f = figures[role]
        assert f["samples"] >= 8, figures
        assert f["fds_max"] - f["fds_after_warmup"] <= FD_SLACK, (role, f)
    assert figures["driver"]["rss_slope_mb_per_1k_images"] <= DRIVER_SLOPE, figures["driver"]
    assert len(figures["actor"]["pids"]) == 1  # one actor the whole run: nothing died and restarted


def test_the_actor_memory_stays_flat(figures):
    # Found by this test: the actor grew 0.05-0.2 MiB per image while its Python heap stayed flat;
    # glibc's dynamic mmap threshold, now pinned in every mining worker (pipelines/mine/native_heap.py).
    assert figures["actor"]["rss_slope_mb_per_1k_images"] <= ACTOR_SLOPE, figures["actor"]
