"""Image bytes -> ``(H, W, 3) uint8`` RGB arrays, or a counted ``SkipSample`` (docs/CONTRACTS.md).

Skip reasons raised by :func:`decode_image` / :func:`read_bytes`:
    ``zero_byte``          empty payload
    ``corrupt_image``      not an image PIL can identify, or broken data
    ``truncated_image``    the data stops before the image does
    ``too_many_pixels``    width*height above ``max_pixels`` (read from the header, before decoding)
    ``image_too_small``    a side shorter than ``min_side`` pixels
    ``unsupported_mode``   a pixel mode with no sensible RGB conversion
    ``missing_file``       :func:`read_bytes` found nothing at the URL
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Optional

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.records import ImageRecord, SkipSample

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_PIXELS", "decode_image", "read_bytes", "load_record_image", "to_rgb"]

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit (~ 9459 x 9459)
MIN_SIDE = 8
_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> np.ndarray:
    """Decode encoded image bytes into an ``(H, W, 3) uint8`` RGB array.

    The first frame of multi-frame files is used; EXIF orientation is applied; alpha is composited
    on white; CMYK/palette/grey/16-bit images are converted (see :func:`to_rgb`). PIL refuses
    anything above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` on its own; that is also ``too_many_pixels``.

    Raises:
        SkipSample: with one of the reasons listed in the module docstring.
    """
    if not data:
        raise SkipSample("zero_byte")
    with warnings.catch_warnings():
        # We check the pixel count ourselves; PIL's warning between 1x and 2x its limit is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as e:
            raise SkipSample("too_many_pixels", str(e)) from None
        except UnidentifiedImageError:
            raise SkipSample("corrupt_image", "unidentified image format") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise SkipSample(_load_error_reason(e), f"{type(e).__name__}: {e}") from None
        width, height = im.size
        if width * height > max_pixels:
            raise SkipSample("too_many_pixels", f"{width}x{height} > {max_pixels}")
        if min(width, height) < min_side:
            raise SkipSample("image_too_small", f"{width}x{height} < {min_side}")
        try:
            im.load()
        except Image.DecompressionBombError as e:
            raise SkipSample("too_many_pixels", str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            raise SkipSample(_load_error_reason(e), f"{type(e).__name__}: {e}") from None
    im = _apply_exif_orientation(im)
    return to_rgb(im)


def _load_error_reason(e: BaseException) -> str:
    """``truncated_image`` for PIL's short-read errors, ``corrupt_image`` for the rest."""
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return "truncated_image"
    return "corrupt_image"


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a broken EXIF block leaves the image as is."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as e:  # noqa: BLE001 - malformed EXIF must not cost the sample
        logger.debug("ignoring unreadable EXIF orientation: %s", e)
        return im


def to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any common mode to an ``(H, W, 3) uint8`` RGB array.

    - ``RGBA``/``LA``/``PA``/``P`` with transparency: alpha-composited onto white.
    - ``I;16*``: 0..65535 scaled to 0..255 (``round(v / 257)``); ``I`` (32-bit int) is treated as
      16-bit data and clipped to 0..65535 first (what 16-bit PNG/TIFF decode to).
    - ``F`` (float): min-max scaled to 0..255 (NaN -> 0).
    - ``1``/``L``/``P``/``CMYK``/``YCbCr``/...: PIL's own conversion to RGB.
    """
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im).astype(np.float64)
        arr = np.clip(arr, 0, 65535) / 257.0
        return _grey_to_rgb(np.rint(arr).astype(np.uint8))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return _grey_to_rgb(np.rint(scaled).astype(np.uint8))
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        im = Image.alpha_composite(background, rgba)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as e:
        raise SkipSample("unsupported_mode", f"{mode}: {e}") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise SkipSample("unsupported_mode", f"{mode} gave shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` -> ``(H, W, 3) uint8`` by repeating the channel."""
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def read_bytes(url: str, storage_options: Optional[dict] = None) -> bytes:
    """Read a whole file through fsspec (local path, ``s3://``, ``gs://``, ``http(s)://``, ...).

    Raises:
        SkipSample("missing_file"): nothing at ``url`` (or it is a directory).
    Other I/O errors (network, permissions) propagate so that the unit of work can be retried.
    """
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise SkipSample("missing_file", f"{url}: {e}") from None


def load_record_image(
    record: ImageRecord,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    storage_options: Optional[dict] = None,
) -> np.ndarray:
    """Decode ``record.image_bytes``, or read ``record.image_url`` first; ``(H, W, 3) uint8`` RGB.

    Raises:
        SkipSample: ``missing_image`` when the record has neither bytes nor URL, or any reason of
        :func:`read_bytes` / :func:`decode_image`.
    """
    data = record.image_bytes
    if data is None:
        if not record.image_url:
            raise SkipSample("missing_image", record.key)
        data = read_bytes(record.image_url, storage_options)
    return decode_image(data, max_pixels=max_pixels)
