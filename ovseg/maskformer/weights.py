"""Our own MaskFormer weight files: ``torch.save({"format", "spec", "model"})``, read with ``weights_only=True``.

Format ``ovseg-maskformer/1``::

    {"format": "ovseg-maskformer/1",
     "spec": spec_to_dict(spec),        # plain dict of MaskFormerSpec fields
     "model": model.state_dict(),       # includes train_text_embeddings [K,D]
     "meta": {...}}                     # optional, free-form (e.g. training step, vocabulary names)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ovseg.atomic import save_torch
from ovseg.maskformer.config import spec_from_dict, spec_to_dict
from ovseg.maskformer.model import OpenVocabMaskFormer, maskformer_from_state

log = logging.getLogger(__name__)

FORMAT = "ovseg-maskformer/1"


def save_maskformer(model: OpenVocabMaskFormer, path: str | Path, *, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (spec + state dict) atomically: a temporary file renamed into place."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "spec": spec_to_dict(model.spec), "model": state, "meta": dict(meta or {})}
    save_torch(payload, path)


def is_maskformer_file(payload: dict[str, Any]) -> bool:
    """Whether a loaded dict is in our format (not, e.g., an OVSeg detectron2 checkpoint)."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def maskformer_from_payload(payload: dict[str, Any]) -> OpenVocabMaskFormer:
    """Build the model of a loaded ``ovseg-maskformer/1`` dict and load its weights strictly."""
    if not is_maskformer_file(payload):
        raise ValueError(f"not an {FORMAT} file (format={payload.get('format')!r})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}  # fp16 files load as fp32
    model = maskformer_from_state(spec_from_dict(payload["spec"]), state)
    return model


def load_maskformer(path: str | Path, *, map_location: str | torch.device = "cpu") -> OpenVocabMaskFormer:
    """Read a file written by ``save_maskformer``; the model comes back in eval mode."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = maskformer_from_payload(payload).eval()
    log.info("loaded MaskFormer %s (%d vocabulary embeddings)", path, model.train_text_embeddings.shape[0])
    return model
