"""Mining throughput of a config, and what the CPU-prefetch thread buys, measured side by side.

  python -m bench.mine_throughput [--config conf/smoke/mine.yaml] [--repeat 3] [--copies 3]

Builds a corpus of ``--copies`` copies of the corpus's images (COCO format only), then mines it
with one :class:`~pipelines.mine.model_stage.UnitMiner` per setting (no Ray, so the numbers are the model
path itself), alternating the settings ``--repeat`` times, and prints images/s, pairs/s and the
ratio prefetch / no-prefetch. Models are built before timing starts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


from pipelines.config.load import load_config
from pipelines.storage.urls import parent_url
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner


def repeated_corpus(src: Path, copies: int, out: Path) -> Path:
    data = json.loads(src.read_text())
    images, anns = [], []
    for rep in range(copies):
        images += [dict(i, id=i["id"] + 100000 * rep) for i in data["images"]]
        anns += [dict(a, id=a["id"] + 100000 * rep, image_id=a["image_id"] + 100000 * rep) for a in data["annotations"]]
    path = out / "corpus.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/smoke/mine.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = load_config(MineConfig, args.config, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mine-"))
    corpus = repeated_corpus(Path(base.corpus.url), args.copies, tmp)
    images_url = base.corpus.images_url or parent_url(base.corpus.url)
    settings = {"no_prefetch": 0, "prefetch": 2}
    miners = {}
    for name, prefetch in settings.items():
        cfg = load_config(MineConfig, args.config, [*args.overrides, f"corpus.url={corpus}",
                          f"corpus.images_url={images_url}", "corpus.images_per_unit=1000000",
                          f"run.prefetch_batches={prefetch}", f"output.url={tmp / name}"])
        miners[name] = UnitMiner(cfg)
    unit = miners["prefetch"].reader.plan_units()[0]
    rates: dict[str, list[tuple[float, float]]] = {n: [] for n in settings}
    for _ in range(args.repeat):
        for name, miner in miners.items():
            started = time.perf_counter()
            stats = miner.mine_unit(unit)
            dt = time.perf_counter() - started
            rates[name].append((stats["images"] / dt, stats["pairs"] / dt))
    print(f"config {args.config}, {stats['images']} images, {stats['pairs']} pairs per pass, {args.repeat} passes")
    print(f"{'setting':<12} {'images/s':>9} {'pairs/s':>9}")
    med = {}
    for name, values in rates.items():
        med[name] = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"{name:<12} {med[name][0]:>9.2f} {med[name][1]:>9.2f}")
    print(f"prefetch / no_prefetch (images/s, median): {med['prefetch'][0] / med['no_prefetch'][0]:.2f}x")


if __name__ == "__main__":
    main()
