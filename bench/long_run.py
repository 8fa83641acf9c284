"""A long mining run: memory, open file descriptors and throughput from the first unit to the last.

  python -m bench.long_run [--images 20000] [--images-per-unit 400] [--json out/bench/long_run.json]

Generates a WebDataset corpus of small pictures (32-64 px: a coloured shape on a coloured ground,
with a caption naming both), mines it with the smoke preset (tiny random CLIP, superpixel
proposals) on a local Ray with one actor, and samples the resident memory (RSS) and the open file
descriptors of the driver and the actor every half second. Prints and writes (``--json``):

* RSS of each process after warm-up (the first ``--warmup`` share of the units) and at the end,
  the growth in between, and its slope: MiB per 1000 images mined (least squares over the samples
  after warm-up, and over their second half, when caches have settled and only a leak still grows);
* open fds after warm-up, at the end and at most;
* throughput (images/s per unit, from the units' own timings) of the first and the last tenth of
  the units after warm-up, and their ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from bench.proc_stats import ProcessSampler, Sample

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 200), "yellow": (230, 210, 40),
           "purple": (130, 40, 160), "grey": (128, 128, 128)}
SHAPES = ("square", "circle", "triangle")
GROUNDS = ("grass", "sand", "water", "snow")


def _picture(rng: np.random.Generator) -> tuple[bytes, str]:
    size = int(rng.integers(32, 65))
    shape, ground = SHAPES[rng.integers(len(SHAPES))], GROUNDS[rng.integers(len(GROUNDS))]
    names = list(COLOURS)
    colour, ground_colour = names[rng.integers(len(names))], names[rng.integers(len(names))]
    image = Image.new("RGB", (size, size), COLOURS[ground_colour])
    draw = ImageDraw.Draw(image)
    x0, y0 = (int(v) for v in rng.integers(0, size // 3, 2))
    x1, y1 = x0 + size // 2, y0 + size // 2
    if shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=COLOURS[colour])
    elif shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=COLOURS[colour])
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=COLOURS[colour])
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), f"a {colour} {shape} on the {ground}"


def make_corpus(root: Path, *, images: int, per_tar: int, seed: int = 0) -> Path:
    """``images`` small pictures with captions as WebDataset tars of ``per_tar`` each under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for start in range(0, images, per_tar):
        with tarfile.open(root / f"shard-{start // per_tar:06d}.tar", "w") as tar:
            for i in range(start, min(start + per_tar, images)):
                jpg, caption = _picture(rng)
                for ext, data in (("jpg", jpg), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def mine_watched(corpus: Path, out: Path, *, interval: float = 0.5) -> tuple[list[dict], list[Sample], float]:
    """Mine ``corpus`` into ``out`` on a local Ray (one actor), sampling driver and actor.

    Returns the units' stats in completion order (with ``done_at``: seconds since the start), the
    samples, and the run's seconds.
    """
    from pipelines.mine.driver import run_mining

    cfg = load_config(MineConfig, REPO / "conf" / "smoke" / "mine.yaml", [
        "corpus.format=webdataset", f"corpus.url={corpus}", f"output.url={out}", "output.report=false",
        "ray.num_actors=1", "run.images_per_batch=32", "proposals.max_proposals=8", "matching.min_area=16",
        "clip.batch_size=256"])
    sampler = ProcessSampler(interval=interval)
    sampler.watch(os.getpid(), "driver")
    units: list[dict] = []
    t0 = time.monotonic()

    def on_unit(stats: dict) -> None:
        sampler.watch(int(str(stats["worker"]).rsplit(":", 1)[1]), "actor")
        units.append(dict(stats, done_at=time.monotonic() - t0))

    sampler.start()
    try:
        result = run_mining(cfg, on_unit)
    finally:
        samples = sampler.stop()
    if result.failed:
        raise RuntimeError(f"units failed: {result.failed}")
    return units, [Sample(s.t - (t0 - sampler._t0), s.pid, s.role, s.rss, s.fds) for s in samples], result.seconds


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rss_slope_mb_per_1k(samples: list[Sample], units: list[dict]) -> float:
    """Least-squares slope of RSS (MiB) against images mined (thousands) over ``samples``; the
    images mined at a sample's time are interpolated between the units' completion times."""
    done = np.cumsum([0] + [u["images"] for u in units]) / 1000.0
    times = np.array([0.0] + [u["done_at"] for u in units])
    x = np.interp([s.t for s in samples], times, done)
    y = np.array([s.rss for s in samples], dtype=float) / 2**20
    if len(samples) < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def analyse(units: list[dict], samples: list[Sample], *, warmup: float = 0.2) -> dict:
    """Growth of RSS and fds after warm-up, per role, and throughput first vs last units."""
    n_warm = max(1, int(len(units) * warmup))
    warm_end, end = units[n_warm - 1]["done_at"], units[-1]["done_at"]  # after `end` the actors are being stopped
    figures: dict = {"units": len(units), "images": sum(u["images"] for u in units),
                     "pairs": sum(u["pairs"] for u in units), "warmup_units": n_warm,
                     "warmup_seconds": round(warm_end, 1)}
    for role in ("driver", "actor"):
        after = [s for s in samples if s.role == role and warm_end <= s.t <= end and s.rss is not None]
        if len(after) < 4:
            figures[role] = {"samples": len(after)}
            continue
        tenth = max(1, len(after) // 10)
        rss0, rss1 = _median([s.rss for s in after[:tenth]]), _median([s.rss for s in after[-tenth:]])
        fds = [s.fds for s in after if s.fds is not None]
        figures[role] = {
            "samples": len(after), "pids": sorted({s.pid for s in after}),
            "rss_after_warmup_mb": round(rss0 / 2**20, 1), "rss_end_mb": round(rss1 / 2**20, 1),
            "rss_max_mb": round(max(s.rss for s in after) / 2**20, 1),
            "rss_growth_mb": round((rss1 - rss0) / 2**20, 1),
            "rss_slope_mb_per_1k_images": round(rss_slope_mb_per_1k(after, units), 2),
            "rss_late_slope_mb_per_1k_images": round(rss_slope_mb_per_1k(after[len(after) // 2:], units), 2),
            "fds_after_warmup": fds[0], "fds_end": fds[-1], "fds_max": max(fds), "fds_min": min(fds),
        }
    rest = units[n_warm:]
    tenth = max(1, len(rest) // 10)
    rate = [u["images"] / u["seconds"] for u in rest if u["seconds"] > 0]
    first, last = _median(rate[:tenth]), _median(rate[-tenth:])
    figures["throughput"] = {"first_units_images_per_s": round(first, 1), "last_units_images_per_s": round(last, 1),
                             "last_over_first": round(last / first, 3) if first else None,
                             "units_per_tenth": tenth}
    return figures


def long_run(*, images: int, images_per_unit: int, workdir: Path, warmup: float = 0.2) -> dict:
    corpus = make_corpus(workdir / "corpus", images=images, per_tar=images_per_unit)
    units, samples, seconds = mine_watched(corpus, workdir / "pairs")
    figures = analyse(units, samples, warmup=warmup)
    figures["seconds"] = round(seconds, 1)
    figures["images_per_s"] = round(figures["images"] / seconds, 1)
    figures["samples"] = [{"t": round(s.t, 2), "role": s.role, "pid": s.pid, "rss_mb": round((s.rss or 0) / 2**20, 1),
                           "fds": s.fds} for s in samples]
    figures["per_unit"] = [{"unit": u["unit"], "images": u["images"], "pairs": u["pairs"],
                            "seconds": round(u["seconds"], 3), "done_at": round(u["done_at"], 2)} for u in units]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--images-per-unit", type=int, default=400)
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the units counted as warm-up")
    parser.add_argument("--json", default="out/bench/long_run.json", help="where to write the figures")
    parser.add_argument("--workdir", default=None, help="corpus and shards (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="long_run_") as tmp:
        figures = long_run(images=args.images, images_per_unit=args.images_per_unit,
                           workdir=Path(args.workdir or tmp), warmup=args.warmup)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(figures, indent=1))
    brief = {k: v for k, v in figures.items() if k not in ("samples", "per_unit")}
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
