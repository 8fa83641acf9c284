"""``maskformer`` proposals: OVSeg's open-vocabulary MaskFormer used class-agnostically.

Each query gives a sigmoid mask (at image resolution) scored by its objectness,
``1 - p(no object)`` over the model's training vocabulary. The checkpoint is either our own weight
file (``ovseg.maskformer.weights``, e.g. the world model; it stores its vocabulary) or one of OVSeg's
released ``.pth`` files (mapped by ``ovseg.maskformer.ovseg_checkpoint``; the vocabulary is
COCO-Stuff's 171 classes embedded with the CLIP in the same file, or ``vocabulary`` if given).

Masks are binarised at ``mask_threshold``; masks with an area fraction outside
``[min_area_frac, max_area_frac]`` or an objectness below ``min_objectness`` are dropped, the rest
are de-duplicated greedily in objectness order (``ovseg.proposals.filtering``, shared with the other
backends). Filtering runs at the network's input resolution; only kept masks are upsampled.
``propose_batch`` runs the images of a batch through the network together (padded to a common size).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.maskformer.model import SIZE_DIVISIBILITY, OpenVocabMaskFormer
from ovseg.proposals.base import ImageContext, Proposals
from ovseg.proposals.filtering import area_in_range, select_proposals

log = logging.getLogger(__name__)

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _read(path: str | Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped when the file format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects other than tensors and plain containers (weights_only=True "
                         f"refuses them); re-save its state dict as tensors: {err}") from err
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format


def load_proposal_model(
    checkpoint: str | Path, *, vocabulary: Sequence[str] | None = None, device: str | torch.device = "cpu"
) -> OpenVocabMaskFormer:
    """Our weight file or an OVSeg ``.pth`` → eval model holding its vocabulary embeddings."""
    from ovseg.maskformer.weights import is_maskformer_file, maskformer_from_payload

    payload = _read(checkpoint)
    if is_maskformer_file(payload):
        if vocabulary is not None:
            raise ValueError("vocabulary= applies to OVSeg checkpoints; our weight files carry their own")
        model = maskformer_from_payload(payload)
    else:
        from ovseg.maskformer.ovseg_checkpoint import convert_ovseg_state_dict, maskformer_from_ovseg
        from ovseg.maskformer.vocabulary import COCO_STUFF_171, embed_vocabulary

        if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
            raise ValueError(f"{checkpoint}: neither an ovseg-maskformer file nor a detectron2 {{'model': ...}} checkpoint")
        converted = convert_ovseg_state_dict(payload["model"])
        model = maskformer_from_ovseg(converted)
        names = list(vocabulary) if vocabulary is not None else list(COCO_STUFF_171)
        model.set_train_text_embeddings(embed_vocabulary(converted.clip_model, converted.clip_state, names, device=device))
    if model.train_text_embeddings.shape[0] == 0:
        raise ValueError(f"{checkpoint} stores no vocabulary embeddings: objectness is undefined")
    return model.to(device).eval()


def _resize_side(height: int, width: int, *, short_side: int | None, max_side: int | None) -> tuple[int, int]:
    """Size the network sees: short side scaled to ``short_side`` (None = as is), long side ≤ ``max_side``."""
    scale = 1.0 if short_side is None else short_side / min(height, width)
    if max_side is not None:
        scale = min(scale, max_side / (max(height, width) * 1.0))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class MaskFormerProposals:
    """Class-agnostic MaskFormer proposals.

    Args:
        checkpoint: our weight file (``save_maskformer``) or an OVSeg ``.pth``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast, CUDA only).
        short_side / max_side: resize the image so its short side is ``short_side`` (None = keep;
            OVSeg tests at 640 for Swin-B, 512 for R101c), long side at most ``max_side``.
        mask_threshold: sigmoid probability above which a pixel is in the mask.
        min_objectness: drop queries whose 1 - p(no object) is below this.
        min_area_frac / max_area_frac: keep masks whose area fraction of the image is in this range.
        dedup_iou: drop a mask whose IoU with a better-scored kept one exceeds this.
        max_proposals: keep at most this many per image (highest objectness first).
        batch_size: images per network forward in ``propose_batch``.
        vocabulary: class names for the objectness of an OVSeg checkpoint (default COCO-Stuff 171).
    """

    checkpoint: str
    device: str = "auto"
    precision: str = "fp32"
    short_side: int | None = None
    max_side: int | None = 1333
    mask_threshold: float = 0.5
    min_objectness: float = 0.0
    min_area_frac: float = 0.001
    max_area_frac: float = 1.0
    dedup_iou: float = 0.9
    max_proposals: int = 100
    batch_size: int = 8
    vocabulary: list[str] | None = None
    name: str = "maskformer"
    model: OpenVocabMaskFormer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32 | bf16 | fp16, got {self.precision!r}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_proposal_model(self.checkpoint, vocabulary=self.vocabulary, device=self.device)
        log.info("maskformer proposals: %s on %s (%d queries, vocabulary of %d)", self.checkpoint, self.device,
                 self.model.spec.num_queries, self.model.train_text_embeddings.shape[0])

    def __call__(self, image: np.ndarray, context: ImageContext | None = None) -> Proposals:
        """``[H,W,3]`` uint8 → :class:`Proposals` with ``[N,H,W]`` bool masks and objectness scores."""
        return self.propose_batch([image], [context])[0]

    @torch.no_grad()
    def propose_batch(self, images: Sequence[np.ndarray], contexts: Sequence[ImageContext | None] = ()) -> list[Proposals]:
        """Proposals for several ``[H,W,3]`` uint8 images, ``batch_size`` of them per forward pass."""
        out: list[Proposals] = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self._forward_chunk(list(images[start : start + self.batch_size])))
        return out

    def _forward_chunk(self, images: list[np.ndarray]) -> list[Proposals]:
        device = torch.device(self.device)
        sizes = [_resize_side(*im.shape[:2], short_side=self.short_side, max_side=self.max_side) for im in images]
        pad_h = -(-max(h for h, _ in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
        pad_w = -(-max(w for _, w in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
        batch = torch.zeros(len(images), 3, pad_h, pad_w, device=device)
        for i, (image, (h, w)) in enumerate(zip(images, sizes)):
            array = image if image.flags.writeable and image.flags.c_contiguous else np.array(image)
            pixels = torch.from_numpy(array).to(device).permute(2, 0, 1)[None].float()
            if (h, w) != tuple(image.shape[:2]):
                pixels = F.interpolate(pixels, size=(h, w), mode="bilinear", align_corners=False)
            batch[i, :, :h, :w] = self.model.normalize(pixels)[0]  # zero padding = the mean colour
        dtype = _AUTOCAST.get(self.precision)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda"):
            out = self.model(batch, self.model.train_text_embeddings)
        objectness = 1.0 - out["pred_logits"].float().softmax(-1)[..., -1]  # [B,Q]
        results = []
        for i, (image, (h, w)) in enumerate(zip(images, sizes)):  # one image's [Q,H,W] logits at a time
            logits = F.interpolate(out["pred_masks"][i : i + 1].float(), size=(pad_h, pad_w), mode="bilinear",
                                   align_corners=False)[0, :, :h, :w]
            results.append(self._select(logits, objectness[i], size=image.shape[:2]))
        return results

    def _select(self, logits: torch.Tensor, objectness: torch.Tensor, *, size: tuple[int, int]) -> Proposals:
        """``[Q,h,w]`` mask logits at network resolution → filtered masks at image ``size``."""
        masks = logits.sigmoid() > self.mask_threshold
        keep = area_in_range(masks, min_frac=self.min_area_frac, max_frac=self.max_area_frac)
        keep &= objectness >= self.min_objectness
        kept = select_proposals(masks, objectness, keep=keep, iou_threshold=self.dedup_iou, max_keep=self.max_proposals)
        if len(kept) == 0:
            return Proposals.empty(*size)
        if tuple(size) != tuple(masks.shape[-2:]):
            full = F.interpolate(logits[kept][None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            binary = full.sigmoid() > self.mask_threshold
        else:
            binary = masks[kept]
        return Proposals(binary.cpu(), objectness[kept].cpu())
