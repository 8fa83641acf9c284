"""Segment images with an open vocabulary: OVSeg's two-stage recipe (proposals, CLIP on masked crops,
ensemble with the MaskFormer's class head).

  python jobs/segment.py IMAGE_OR_DIR_OR_URL... --classes "cat,red blanket,sky" [--config ...] [key=value ...]
  python jobs/segment.py data/sample --classes-file classes.txt --out out/seg --config conf/smoke/segment.yaml

For each image it writes DIR/<stem>.png (label map: pixel = index into the class list, 255 unlabelled;
16-bit with 65535 unlabelled past 255 classes), DIR/<stem>_overlay.png (colours, outlines, legend) and
DIR/<stem>.json (classes, pixel share and mean score per class, the models used). An unreadable image
is skipped with a one-line reason; an empty or duplicated class list stops before any model loads.
Exit status: 0 all segmented, 1 some skipped, 2 bad config / classes / inputs, 3 models unusable.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config.help import help_text  # noqa: E402
from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.segment.config import SegmentConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=help_text(SegmentConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="images, folders of images, or fsspec URLs")
    parser.add_argument("--classes", help='comma-separated class names, e.g. "cat,red blanket,sky"')
    parser.add_argument("--classes-file", help="file with class names, one per line (commas stay part of a name), or a JSON with a \"classes\" list "
                        "(e.g. data/world/semseg/categories.json)")
    parser.add_argument("--out", help="output folder (overrides output.dir)")
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("--log-level", default="WARNING", help="log level (default: %(default)s)")
    args, rest = parser.parse_known_args(argv)
    args.overrides = [a for a in args.inputs + rest if "=" in a and "://" not in a.split("=", 1)[0]]
    args.inputs = [a for a in args.inputs + rest if a not in args.overrides]
    if unknown := [a for a in args.inputs if a.startswith("--")]:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = args.overrides + ([f"output.dir={args.out}"] if args.out else [])
    try:
        cfg = load_config(SegmentConfig, args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.segment.inputs import InputError, classes_from_file, list_images, parse_classes

    opts = cfg.output.storage_options
    try:
        if bool(args.classes) == bool(args.classes_file):
            raise InputError("give the vocabulary with exactly one of --classes or --classes-file")
        classes = (parse_classes(args.classes, source="--classes") if args.classes else
                   classes_from_file(args.classes_file, opts))
        if not args.inputs:
            raise InputError("no input images given")
        urls = list_images(args.inputs, opts)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ovseg.clip import ClipLoadError
    from pipelines.segment.run import segment_all
    from pipelines.segment.segmenter import SegmentSetupError, Segmenter

    try:
        segmenter = Segmenter(cfg, classes)
    except (ClipLoadError, SegmentSetupError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(f"segmenting {len(urls)} images into {cfg.output.dir}: {len(classes)} classes, proposals "
          f"{cfg.proposals.backend}, CLIP {segmenter.bundle.name}" + (" + mask prompt" if segmenter.prompt else ""))
    t0 = time.time()
    done, skipped = segment_all(segmenter, urls, cfg, on_skip=lambda url, why: print(f"skipped {url}: {why}"))
    print(f"{done} images segmented, {len(skipped)} skipped, {time.time() - t0:.1f} s -> {cfg.output.dir}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
