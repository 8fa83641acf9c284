"""Segment images with an open vocabulary: OVSeg's two-stage recipe (proposals, CLIP on masked crops,
ensemble with the MaskFormer's class head).

  python jobs/segment.py IMAGE_OR_DIR_OR_URL... --classes "cat,red blanket,sky" [--config ...] [key=value ...]
  python jobs/segment.py data/sample --classes-file classes.txt --out out/seg --config conf/smoke/segment.yaml

For each image it writes DIR/<stem>.png (label map: pixel = index into the class list, 255 unlabelled;
16-bit with 65535 unlabelled past 255 classes), DIR/<stem>_overlay.png (colours, outlines, legend) and
DIR/<stem>.json (classes, pixel share and mean score per class, the models used). An unreadable image
is skipped with a one-line reason; an empty or duplicated class list stops before any model loads.
Exit status: 0 all segmented, 1 some skipped, 2 a start-up error (config, classes, inputs, models) in one line.
"""
from __future__ import annotations

import sys
import time

from pipelines.config.cli import StartupError, job_main, job_parser, load_job_config, setup_logging, startup
from pipelines.segment.config import SegmentConfig


def parse_args(argv: list[str] | None = None):
    parser = job_parser(SegmentConfig, __doc__, overrides_help="images, folders of images or fsspec URLs, "
                        "and config overrides such as proposals.backend=superpixel")
    parser.add_argument("--classes", help='comma-separated class names, e.g. "cat,red blanket,sky"')
    parser.add_argument("--classes-file", help="file with class names, one per line (commas stay part of a name), "
                        "or a JSON with a \"classes\" list (e.g. data/world/semseg/categories.json)")
    parser.add_argument("--out", help="output folder (overrides output.dir)")
    args = parser.parse_intermixed_args(argv)  # images, options and key=value in any order
    setup_logging(args.log_level)
    items = args.overrides
    args.overrides = [a for a in items if "=" in a and "://" not in a.split("=", 1)[0]]
    args.inputs = [a for a in items if a not in args.overrides]
    args.overrides += [f"output.dir={args.out}"] if args.out else []
    return args


@job_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_job_config(SegmentConfig, args)
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
        raise StartupError(str(err)) from err
    from pipelines.segment.run import segment_all
    from pipelines.segment.segmenter import Segmenter

    with startup("loading the models"):
        segmenter = Segmenter(cfg, classes)
    print(f"segmenting {len(urls)} images into {cfg.output.dir}: {len(classes)} classes, proposals "
          f"{cfg.proposals.backend}, CLIP {segmenter.bundle.name}" + (" + mask prompt" if segmenter.prompt else ""))
    t0 = time.time()
    done, skipped = segment_all(segmenter, urls, cfg, on_skip=lambda url, why: print(f"skipped {url}: {why}"))
    print(f"{done} images segmented, {len(skipped)} skipped, {time.time() - t0:.1f} s -> {cfg.output.dir}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
