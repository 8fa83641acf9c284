"""Models from a :class:`SegmentConfig`, and one image in → :class:`ovseg.segment.SegmentResult` out."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ovseg.clip import ClipBundle, TextEmbeddingCache, load_clip, templates_named
from ovseg.proposals import ImageContext, build_proposals
from ovseg.segment import SegmentResult, segment_image
from pipelines.segment.config import SegmentConfig

log = logging.getLogger(__name__)


#: Label of pixels no proposal covers, in the label maps this wing handles (any class index >= 0 is valid).
UNLABELLED = -1


class SegmentSetupError(RuntimeError):
    """The models of a segmentation config cannot work together (one line, names the keys)."""


def resolve_device(setting: str) -> torch.device:
    """``auto`` → the GPU when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_segment_clip(cfg: SegmentConfig, device: torch.device) -> tuple[ClipBundle, torch.nn.Module | None]:
    """The CLIP of ``cfg.clip`` and its tuned mask prompt when ``clip.prompt`` is set."""
    if not cfg.clip.prompt:
        return load_clip(cfg.clip.model, cfg.clip.pretrained, cfg.clip.checkpoint, device=device), None
    from ovseg.mpt_export import load_prompted_clip

    prompted, bundle = load_prompted_clip(cfg.clip.prompt, load_clip, device=str(device))
    prompted.eval()
    bundle.model = prompted.clip
    return bundle, prompted.prompt


class Segmenter:
    """The CLIP, its vocabulary embeddings and the proposal backend of one config and class list.

    Args:
        cfg: the job's config.
        classes: the vocabulary, in label order (label value i = ``classes[i]``).
    """

    def __init__(self, cfg: SegmentConfig, classes: Sequence[str]) -> None:
        self.cfg, self.classes = cfg, list(classes)
        self.device = resolve_device(cfg.run.device)
        torch.manual_seed(cfg.run.seed)  # random-init test models are the same in every run
        self.bundle, self.prompt = load_segment_clip(cfg, self.device)
        self.text = TextEmbeddingCache(self.bundle, templates_named(cfg.clip.templates)).embed(self.classes)
        options = dict(cfg.proposals.options)
        if cfg.proposals.backend in ("maskformer", "sam"):
            options.setdefault("checkpoint", cfg.proposals.checkpoint)
            options.setdefault("device", str(self.device))
        self.proposer = build_proposals(cfg.proposals.backend, **options)
        self.has_classes = callable(getattr(self.proposer, "semantic_outputs", None))
        if self.has_classes:
            dim = int(self.proposer.model.spec.clip_text_dim)
            if dim != self.text.shape[1]:
                raise SegmentSetupError(
                    f"proposals.checkpoint's class head takes {dim}-d text embeddings, clip {self.bundle.name} makes "
                    f"{self.text.shape[1]}-d ones: use the CLIP the MaskFormer was trained with")
        unknown = sorted(set(cfg.ensemble.seen_classes) - set(self.classes))
        if unknown:
            log.info("ensemble.seen_classes not in the vocabulary (ignored): %s", unknown)
        self.seen = (torch.tensor([c in set(cfg.ensemble.seen_classes) for c in self.classes])
                     if cfg.ensemble.seen_swap and self.has_classes else None)

    def models(self) -> dict:
        """What ran, for the per-image JSON."""
        c = self.cfg
        return {"clip": {"model": self.bundle.name, "checkpoint": c.clip.checkpoint, "pretrained": c.clip.pretrained,
                         "prompt": c.clip.prompt, "templates": c.clip.templates, "temperature": c.clip.temperature,
                         "used": c.ensemble.clip},
                "proposals": {"backend": c.proposals.backend, "checkpoint": c.proposals.checkpoint,
                              "class_head": self.has_classes},
                "ensemble": {"clip_weight": c.ensemble.clip_weight if self.has_classes and c.ensemble.clip else None,
                             "seen_swap": c.ensemble.seen_swap}}

    @torch.no_grad()
    def proposals(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[H,W,3]`` uint8 → masks ``[N,H,W]`` (soft for maskformer) and the proposal model's ``[N,C]``
        class probabilities (None for backends without a class head)."""
        if self.has_classes:
            return self.proposer.semantic_outputs(image, self.text)
        return self.proposer(image, ImageContext()).masks, None

    @torch.no_grad()
    def __call__(self, image: np.ndarray, *, masks: torch.Tensor | None = None,
                 proposal_probs: torch.Tensor | None = None) -> SegmentResult:
        """Segment one ``[H,W,3]`` uint8 image (``masks`` given: classify those instead of proposing);
        unlabelled pixels are :data:`UNLABELLED`."""
        if masks is None:
            masks, proposal_probs = self.proposals(image)
        e = self.cfg.ensemble
        return segment_image(
            self.bundle if e.clip else None, torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1), masks,
            text_emb=self.text, prompt=self.prompt, proposal_probs=proposal_probs, clip_weight=e.clip_weight,
            seen=self.seen, temperature=self.cfg.clip.temperature, threshold=e.mask_threshold,
            expand_ratio=e.expand_ratio, precision=self.cfg.clip.precision, no_label=UNLABELLED)
