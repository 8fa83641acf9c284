"""Build the bundled sample corpus: 10 scikit-image photos + COCO-style captions.

Writes next to this file: ``<name>.jpg`` (JPEG quality 90, longest side <= 512, grey images
stay single-channel JPEGs) and ``captions_sample.json`` in COCO Captions format. Only images that
ship inside the scikit-image wheel are used (no network). Deterministic: rerunning it with the
same Pillow/scikit-image versions gives the same bytes.

    python data/sample/make_sample.py
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

logger = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent
MAX_SIDE = 512
QUALITY = 90

# (image id, name, loader, hand-written COCO-style captions)
SAMPLES: list[tuple[int, str, str, list[str]]] = [
    (1, "astronaut", "astronaut", [
        "A woman astronaut in an orange flight suit smiling next to a space shuttle model.",
        "An astronaut posing with her helmet in front of an American flag.",
        "A smiling woman in an orange space suit holding a black helmet.",
        "An official portrait of an astronaut with a flag and a shuttle model behind her.",
    ]),
    (2, "cat", "chelsea", [
        "A close up of a tabby cat with green eyes.",
        "A ginger tabby cat looking into the camera.",
        "The face of a striped cat with yellow green eyes and a pink nose.",
    ]),
    (3, "coffee", "coffee", [
        "A cup of espresso on a red saucer with a spoon on a wooden table.",
        "A white coffee cup sitting on a red saucer on a wooden table.",
        "An espresso in a small cup with a silver spoon on the saucer.",
    ]),
    (4, "rocket", "rocket", [
        "A rocket on a launch pad at night between tall towers.",
        "A white rocket standing on the launch pad under a blue evening sky.",
        "A rocket ready for launch with bright lights around the launch towers.",
    ]),
    (5, "cameraman", "camera", [
        "A black and white photo of a man in a dark coat using a camera on a tripod.",
        "A photographer looking through a camera mounted on a tripod in a field.",
        "A man in a coat filming on a grassy lawn with buildings in the background.",
    ]),
    (6, "coins", "coins", [
        "A black and white photo of many old coins laid out in rows on a dark surface.",
        "Rows of ancient silver coins on a black background.",
        "A collection of old coins arranged in a grid.",
    ]),
    (7, "horse", "horse", [
        "A black silhouette of a horse on a white background.",
        "The dark shape of a standing horse seen from the side.",
        "A horse silhouette in black against white.",
    ]),
    (8, "motorcycle", "stereo_motorcycle", [
        "A red motorcycle parked in a garage full of boxes.",
        "A red and black motorcycle standing in a workshop with shelves of cardboard boxes.",
        "A shiny red motorbike with chrome wheels inside a storage room.",
    ]),
    (9, "galaxies", "hubble_deep_field", [
        "A deep space image full of colorful galaxies and stars on a black sky.",
        "Thousands of distant galaxies in a telescope photo of space.",
        "A dark sky with many small bright galaxies of different colors.",
    ]),
    (10, "page", "page", [
        "A scanned page of text about region based segmentation.",
        "A black and white photo of a printed page with a heading and a paragraph of text.",
        "A page from a document with a title and lines of text.",
    ]),
]  # fmt: skip


def load(loader: str) -> Image.Image:
    """A scikit-image sample as a PIL image (RGB, or L for grey/binary ones)."""
    array = getattr(skimage.data, loader)()
    if loader == "stereo_motorcycle":
        array = array[0]  # (left, right, disparity) -> the left view
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array)


def resize(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Shrink so that the longest side is at most ``max_side`` (aspect ratio kept)."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def main() -> None:
    images, annotations = [], []
    for image_id, name, loader, captions in SAMPLES:
        image = resize(load(loader))
        file_name = f"{name}.jpg"
        image.save(OUT / file_name, "JPEG", quality=QUALITY, optimize=True)
        images.append(
            {"id": image_id, "file_name": file_name, "width": image.width, "height": image.height}
        )
        for caption in captions:
            ann_id = len(annotations) + 1
            annotations.append({"id": ann_id, "image_id": image_id, "caption": caption})
    info = {
        "description": "ovseg-mine sample: scikit-image sample photos, hand-written captions",
        "version": "1.0",
    }
    doc = {"info": info, "images": images, "annotations": annotations}
    (OUT / "captions_sample.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %d images and %d captions to %s", len(images), len(annotations), OUT)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
