"""A URL list of the world corpus, for trying ``corpus.format=urls`` offline (conf/world/mine_urls.yaml).

  python -m pipelines.world.url_list --world data/world --split train          # -> data/world/urls/train.jsonl
  python -m http.server 8000 --bind 127.0.0.1 --directory data/world           # serves the images

One JSON line per image of ``<world>/coco/annotations/captions_<split>.json``: ``url`` (the image
under ``--base``), ``captions`` (all of its captions), ``image_id`` (so pair precision against the
world's instances stays measurable) and ``key`` (the file stem, as in the world's COCO folder).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_url_list(world: Path, split: str, base: str, *, out: Path) -> int:
    """Write the list of ``split``'s images served under ``base``; returns the number of rows."""
    coco = json.loads((world / "coco" / "annotations" / f"captions_{split}.json").read_text())
    captions: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for image in coco["images"]:
            f.write(json.dumps({"url": f"{base.rstrip('/')}/coco/{split}/{image['file_name']}",
                                "captions": captions.get(image["id"], []), "image_id": image["id"],
                                "key": Path(image["file_name"]).stem}) + "\n")
    return len(coco["images"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=Path("data/world"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--base", default="http://127.0.0.1:8000", help="URL the world folder is served under")
    ap.add_argument("--out", type=Path, default=None, help="default: <world>/urls/<split>.jsonl")
    args = ap.parse_args(argv)
    out = args.out or args.world / "urls" / f"{args.split}.jsonl"
    n = write_url_list(args.world, args.split, args.base, out=out)
    print(f"{n} rows -> {out}")


if __name__ == "__main__":
    main()
