"""Class-agnostic mask proposals behind one interface and a ``name → builder`` registry.

``PROPOSAL_REGISTRY[name](**options)`` returns a callable ``(image[H,W,3] uint8, ImageContext) →
Proposals``; :func:`propose_batch` runs a batch of images through a backend (one network pass for
backends that have ``propose_batch``, such as ``maskformer``). ``sam`` (Segment Anything's
automatic mask generator) is one of them; new backends register here and plug into the mining and
segmentation pipelines without touching them.
"""
from __future__ import annotations

from typing import Any, Callable

from ovseg.proposals.base import ImageContext, ProposalGenerator, Proposals, propose_batch
from ovseg.proposals.gt import GroundTruthProposals
from ovseg.proposals.superpixel import SuperpixelProposals


def _maskformer(**options: Any) -> ProposalGenerator:
    """``maskformer`` (imported on use: it pulls in transformers and timm)."""
    from ovseg.proposals.maskformer import MaskFormerProposals

    return MaskFormerProposals(**options)


def _sam(**options: Any) -> ProposalGenerator:
    """``sam`` (imported on use: it needs the optional segment-anything package)."""
    from ovseg.proposals.sam import SamProposals

    return SamProposals(**options)


PROPOSAL_REGISTRY: dict[str, Callable[..., ProposalGenerator]] = {
    "gt": GroundTruthProposals,
    "superpixel": SuperpixelProposals,
    "maskformer": _maskformer,
    "sam": _sam,
}


def register_proposals(name: str, builder: Callable[..., ProposalGenerator]) -> None:
    """Add a backend under ``name`` (later registrations replace earlier ones)."""
    PROPOSAL_REGISTRY[name] = builder


def build_proposals(name: str, **options: Any) -> ProposalGenerator:
    """Build the backend ``name`` with its keyword options."""
    if name not in PROPOSAL_REGISTRY:
        raise KeyError(f"unknown proposal backend {name!r}; known: {sorted(PROPOSAL_REGISTRY)}")
    return PROPOSAL_REGISTRY[name](**options)


__all__ = [
    "PROPOSAL_REGISTRY", "ImageContext", "ProposalGenerator", "Proposals",
    "GroundTruthProposals", "SuperpixelProposals", "build_proposals", "propose_batch", "register_proposals",
]
