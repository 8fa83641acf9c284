"""What the segment / evaluate jobs read: class lists, image lists and images (local paths or fsspec URLs)."""
from __future__ import annotations

import io
import json
from typing import Any, Iterator, Sequence

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """A class list or an input location is unusable (one line; raised before any model loads)."""


def parse_classes(text: str, *, source: str, commas: bool = True) -> list[str]:
    """Class names from ``"cat, red blanket,sky"`` (``commas``) or a file's lines (``commas=False``:
    one name per line, so names such as ADE20K's ``"road, route"`` stay whole); trimmed and checked.

    Raises:
        InputError: empty list or a name given twice.
    """
    pieces = text.split(",") if commas else text.splitlines()
    names = [n.strip() for n in pieces]
    names = [n for n in names if n]  # blank lines, trailing commas
    if not names:
        raise InputError(f"{source}: the class list is empty")
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dupes:
        raise InputError(f"{source}: class names given twice: {', '.join(dict.fromkeys(dupes))}")
    return names


def read_text(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """A text file (path or fsspec URL) → its content; a missing file is an :class:`InputError`."""
    try:
        with fsspec.open(url, "rt", **(storage_options or {})) as f:
            return f.read()
    except (FileNotFoundError, OSError) as err:
        raise InputError(f"cannot read {url}: {err}") from None


def classes_from_file(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Class names from a text file (one per line) or a JSON file with a ``classes`` list."""
    text = read_text(url, storage_options)
    if url.endswith(".json"):
        try:
            names = json.loads(text)["classes"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{url}: expected a JSON object with a \"classes\" list") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{url}: \"classes\" must be a list of names")
        text = "\n".join(names)
    return parse_classes(text, source=url, commas=False)


def list_images(items: Sequence[str], storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files, folders (their images, sorted, recursively) and URLs → image URLs, in the order given.

    Raises:
        InputError: a path that does not exist or a folder without images.
    """
    out: list[str] = []
    for item in items:
        fs, path = fsspec.core.url_to_fs(item, **(storage_options or {}))
        protocol = item.split("://", 1)[0] + "://" if "://" in item else ""
        if protocol in ("http://", "https://"):
            out.append(item)
            continue
        if not fs.exists(path):
            raise InputError(f"no such file or folder: {item}")
        if fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {item}")
            out.extend(protocol + p if protocol and not p.startswith(protocol) else p for p in found)
        else:
            out.append(item)
    return out


def read_image(url: str, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """``[H,W,3]`` uint8 RGB; raises ``OSError`` / ``ValueError`` with the reason when unreadable."""
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        data = f.read()
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image PIL can decode") from None


def stem_of(url: str) -> str:
    """File name without folder and suffix (``a/b/cat.jpg`` → ``cat``)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def unique_stems(urls: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(url, stem)`` with ``_2``, ``_3`` ... appended where two inputs share a stem."""
    used: dict[str, int] = {}
    for url in urls:
        stem = stem_of(url)
        used[stem] = used.get(stem, 0) + 1
        yield url, stem if used[stem] == 1 else f"{stem}_{used[stem]}"
