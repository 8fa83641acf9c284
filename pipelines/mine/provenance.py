"""Where a pair came from: content hashes, the noun's place in its caption, the mask as COCO RLE.

Every pair's json (:class:`pipelines.pairs.format.PairMeta`) carries these, so a pair can be traced
back to the exact image bytes, caption characters and weight files that made it.
"""
from __future__ import annotations

import hashlib
import re
from typing import Optional, Sequence

import fsspec
import torch

SHORT = 12  # hex digits of a short weight hash


def sha256_hex(data: bytes) -> str:
    """Full SHA-256 of ``data`` (hex)."""
    return hashlib.sha256(data).hexdigest()


def file_hash(url: Optional[str], storage_options: Optional[dict] = None) -> Optional[str]:
    """First :data:`SHORT` hex digits of the SHA-256 of the file at ``url`` (None for no url)."""
    if not url:
        return None
    digest = hashlib.sha256()
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:SHORT]


def state_dict_hash(module: torch.nn.Module) -> str:
    """Short SHA-256 over a module's state dict (names, dtypes, shapes and values, in name order):
    the CLIP's fingerprint when its weights come from a pretrained tag rather than a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:SHORT]


def noun_location(noun: str, captions: Sequence[str]) -> tuple[Optional[int], Optional[list[int]]]:
    """``(caption index, [start, end))`` of the first caption that contains ``noun`` as a word (or its
    plural with s / es), the span in characters; ``(index of the first caption containing the
    noun's last word, span of that word)`` when the whole phrase is not there; ``(None, None)``
    when neither occurs (spaCy lemmatised it beyond recognition)."""
    for phrase in (noun, noun.split()[-1] if noun.split() else noun):
        pattern = re.compile(r"\b" + re.escape(phrase) + r"(?:e?s)?\b", re.IGNORECASE)
        for i, caption in enumerate(captions):
            if m := pattern.search(caption):
                return i, [m.start(), m.end()]
    return None, None
