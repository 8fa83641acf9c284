"""The segment job's loop: read each image, segment it, write its label map, overlay and JSON."""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import fsspec

from pipelines.segment.config import SegmentConfig
from pipelines.segment.inputs import read_image, unique_stems
from pipelines.segment.outputs import class_summary, join, label_image, overlay_image, unlabelled_value, write_json, write_png
from pipelines.segment.segmenter import UNLABELLED, Segmenter

log = logging.getLogger(__name__)


def segment_all(segmenter: Segmenter, urls: Sequence[str], cfg: SegmentConfig, *,
                on_skip: Callable[[str, str], None] = lambda url, why: None) -> tuple[int, dict[str, str]]:
    """Segment every image of ``urls`` into ``cfg.output.dir``.

    Returns:
        the number of images written and ``{url: reason}`` of the skipped ones.
    """
    out, opts = cfg.output.dir, cfg.output.storage_options
    fs, root = fsspec.core.url_to_fs(out, **opts)
    fs.makedirs(root, exist_ok=True)
    classes = segmenter.classes
    done, skipped = 0, {}
    for url, stem in unique_stems(urls):
        try:
            image = read_image(url, opts)
        except Exception as err:  # noqa: BLE001 - any undecodable input is a counted skip
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
            skipped[url] = reason
            on_skip(url, reason)
            continue
        t0 = time.perf_counter()
        result = segmenter(image)
        seconds = time.perf_counter() - t0
        label, score = result.label.numpy(), result.score.numpy()
        write_png(join(out, f"{stem}.png"), label_image(label, len(classes), no_label=UNLABELLED), opts)
        if cfg.output.overlay:
            write_png(join(out, f"{stem}_overlay.png"),
                      overlay_image(image, label, classes, no_label=UNLABELLED, alpha=cfg.output.overlay_alpha,
                                    min_side=cfg.output.overlay_min_side, title=stem), opts)
        write_json(join(out, f"{stem}.json"), {
            "image": url, "height": int(label.shape[0]), "width": int(label.shape[1]), "classes": classes,
            "unlabelled_value": unlabelled_value(len(classes)),
            "unlabelled_share": float((label == UNLABELLED).mean()),
            "present": class_summary(label, score, classes, no_label=UNLABELLED),
            "proposals": int(result.valid.sum()), "seconds": round(seconds, 3), "models": segmenter.models()}, opts)
        done += 1
    return done, skipped
