"""The proposal interface: an image in, class-agnostic masks out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch


@dataclass
class ImageContext:
    """What a proposal backend may know about an image besides its pixels.

    Attributes:
        key: the corpus key of the image.
        image_id: COCO image id or corpus id (the ``gt`` backend looks annotations up by it).
        file_name: the image's file name in its corpus, if any (``gt`` falls back to it).
        meta: anything else the reader attached.
    """

    key: str = ""
    image_id: int | str | None = None
    file_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Proposals:
    """Class-agnostic mask proposals for one image.

    Attributes:
        masks: ``[N,H,W]`` bool, at the image's resolution.
        scores: ``[N]`` float, the backend's confidence (1.0 where it has none).
    """

    masks: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @staticmethod
    def empty(height: int, width: int) -> "Proposals":
        return Proposals(torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0))


class ProposalGenerator(Protocol):
    """Callable that proposes masks for an ``[H,W,3]`` uint8 RGB image."""

    name: str

    def __call__(self, image: np.ndarray, context: ImageContext) -> Proposals: ...


def propose_batch(
    backend: ProposalGenerator, images: Sequence[np.ndarray], contexts: Sequence[ImageContext]
) -> list[Proposals]:
    """Proposals for the images of a batch: the backend's own ``propose_batch(images, contexts)`` when
    it has one (e.g. ``maskformer``: one network pass for several images), else one call per image."""
    batched = getattr(backend, "propose_batch", None)
    if batched is not None:
        return list(batched(images, contexts))
    return [backend(image, context) for image, context in zip(images, contexts)]
