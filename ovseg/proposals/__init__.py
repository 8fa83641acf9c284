"""Class-agnostic mask proposals behind one interface and a ``name → builder`` registry.

``PROPOSAL_REGISTRY[name](**options)`` returns a callable ``(image[H,W,3] uint8, ImageContext) →
Proposals``. New backends (``maskformer``, ``sam``) register themselves here and plug into the
mining pipeline without touching it.
"""
from __future__ import annotations

from typing import Any, Callable

from ovseg.proposals.base import ImageContext, ProposalGenerator, Proposals
from ovseg.proposals.gt import GroundTruthProposals
from ovseg.proposals.superpixel import SuperpixelProposals

PROPOSAL_REGISTRY: dict[str, Callable[..., ProposalGenerator]] = {
    "gt": GroundTruthProposals,
    "superpixel": SuperpixelProposals,
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
    "GroundTruthProposals", "SuperpixelProposals", "build_proposals", "register_proposals",
]
