"""One pass (download + mine, ``corpus.format=urls``) against two passes (download into
img2dataset-style tars, then mine the tars), side by side on world images served from 127.0.0.1.

  python -m bench.url_mining [--config conf/world/mine_urls.yaml] [--images 100] [--per-unit 50]
                             [--latency-ms 30] [overrides ...]

The server answers each image after ``--latency-ms`` (a stand-in for the web's round trips). Both
routes use the same models (one :class:`~pipelines.mine.model_stage.UnitMiner`, built before timing,
no Ray) and the same fetcher and thread count (``corpus.download_threads``); pass 1 of the
two-pass route writes the tars with :class:`~pipelines.mine.kept_images.ImageKeeper` (img2dataset
itself does not install next to our dependencies, see the README). Prints wall time, images/s,
bytes stored and pair precision against the world's instances for: one pass, one pass keeping the
images (``output.keep_images``), and two passes (download, mine, total), with how long the model
stage waited for batches (downloads it could not hide: each unit's first batch). Writes
``out/bench/url_mining.json`` (the committed reference run: ``bench/results/url_mining.json``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipelines.config.load import load_config
from pipelines.corpus.base import build_reader
from pipelines.mine.config import MineConfig
from pipelines.mine.kept_images import ImageKeeper
from pipelines.mine.model_stage import UnitMiner
from pipelines.mine.report import ground_truth_quality

RESULTS = Path(__file__).resolve().parents[1] / "out" / "bench" / "url_mining.json"


def serve(root: Path, latency_s: float) -> ThreadingHTTPServer:
    """Serve files under ``root`` on 127.0.0.1 (a free port), each after ``latency_s``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = (root / self.path.lstrip("/")).resolve()
            time.sleep(latency_s)
            if not path.is_file() or root.resolve() not in path.parents:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def url_list(world: Path, n: int, base: str, out: Path) -> None:
    coco = json.loads((world / "coco" / "annotations" / "captions_train.json").read_text())
    captions: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    with out.open("w") as f:
        for image in coco["images"][:n]:
            f.write(json.dumps({"url": f"{base}/coco/train/{image['file_name']}", "captions": captions[image["id"]],
                                "image_id": image["id"], "key": Path(image["file_name"]).stem}) + "\n")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def mine_all(miner: UnitMiner, cfg: MineConfig) -> tuple[float, Counter]:
    """Seconds to plan and mine every unit of ``cfg`` with ``miner``'s models; summed counts."""
    miner.cfg, miner.reader = cfg, build_reader(cfg.corpus)
    started = time.perf_counter()
    totals: Counter = Counter()
    for unit in miner.reader.plan_units():
        stats = miner.mine_unit(unit)
        totals.update(images=stats["images"], pairs=stats["pairs"])
        totals["wait_s"] += stats["timing"].get("wait", 0.0)  # the model stage waiting for a batch
    return time.perf_counter() - started, totals


def download_to_tars(cfg: MineConfig, out: Path) -> tuple[float, int]:
    """Pass 1 of the two-pass route: every URL into ``%05d.tar`` (+ parquet, stats); (seconds, images)."""
    reader = build_reader(cfg.corpus)
    started, n = time.perf_counter(), 0
    for unit in reader.plan_units():
        keeper, skips = ImageKeeper(str(out), unit.index), Counter()
        t0 = time.perf_counter()
        for record in reader.read_unit(unit, skips):
            keeper.add(record)
            n += 1
        keeper.commit(skips, time.perf_counter() - t0)
    reader.close()
    return time.perf_counter() - started, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/world/mine_urls.yaml")
    parser.add_argument("--world", type=Path, default=Path("data/world"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--per-unit", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-urls-"))
    httpd = serve(args.world, args.latency_ms / 1000)
    listing = tmp / "list.jsonl"
    url_list(args.world, args.images, f"http://127.0.0.1:{httpd.server_port}", listing)

    def cfg_of(*extra: str) -> MineConfig:
        return load_config(MineConfig, args.config, [*args.overrides, f"corpus.url={listing}",
                                                     f"corpus.images_per_unit={args.per_unit}", *extra])

    one = cfg_of(f"output.url={tmp / 'one'}")
    miner = UnitMiner(one)  # models built once, outside the timings
    rows: dict[str, dict] = {}
    seconds, totals = mine_all(miner, one)
    rows["one pass"] = {"seconds": seconds, **totals, "bytes": folder_bytes(tmp / "one"), "out": tmp / "one"}
    keep = cfg_of(f"output.url={tmp / 'keep'}", "output.keep_images=true")
    seconds, totals = mine_all(miner, keep)
    rows["one pass, keep images"] = {"seconds": seconds, **totals, "out": tmp / "keep",
                                     "bytes": folder_bytes(tmp / "keep") + folder_bytes(tmp / "keep_images")}
    dl_seconds, n = download_to_tars(one, tmp / "tars")
    rows["two pass: download"] = {"seconds": dl_seconds, "images": n, "pairs": 0, "bytes": folder_bytes(tmp / "tars")}
    tars = load_config(MineConfig, args.config, [*args.overrides, "corpus.format=webdataset",
                                                 f"corpus.url={tmp / 'tars'}", f"output.url={tmp / 'two'}"])
    seconds, totals = mine_all(miner, tars)
    rows["two pass: mine"] = {"seconds": seconds, **totals, "bytes": folder_bytes(tmp / "two"), "out": tmp / "two"}
    rows["two pass: total"] = {"seconds": dl_seconds + seconds, **totals, "out": tmp / "two",
                               "bytes": folder_bytes(tmp / "tars") + folder_bytes(tmp / "two")}
    httpd.shutdown()

    instances = one.proposals.instances_url
    print(f"{args.images} world images, {args.per_unit} per unit, {args.latency_ms:.0f} ms per image from the server, "
          f"{one.corpus.download_threads} download threads, proposals {one.proposals.backend}, CLIP {one.clip.model}")
    print(f"{'route':<24} {'wall s':>8} {'images/s':>9} {'pairs':>6} {'MB stored':>10} {'precision':>10} "
          f"{'model waited s':>15}")
    for name, row in rows.items():
        if instances and "out" in row:
            row["precision"] = ground_truth_quality(str(row["out"]), instances, None)["precision"]
        row.pop("out", None)
        row["images_per_s"] = row["images"] / row["seconds"] if row["seconds"] else None
        precision = f"{row['precision']:.3f}" if row.get("precision") is not None else "-"
        waited = f"{row['wait_s']:.1f}" if "wait_s" in row else "-"
        print(f"{name:<24} {row['seconds']:>8.1f} {row['images_per_s']:>9.2f} {row['pairs']:>6} "
              f"{row['bytes'] / 1e6:>10.2f} {precision:>10} {waited:>15}")
    ratio = rows["two pass: total"]["seconds"] / rows["one pass"]["seconds"]
    print(f"two pass / one pass wall time: {ratio:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"images": args.images, "per_unit": args.per_unit, "latency_ms": args.latency_ms,
                                   "config": args.config, "routes": rows, "two_over_one": ratio}, indent=1))


if __name__ == "__main__":
    main()
