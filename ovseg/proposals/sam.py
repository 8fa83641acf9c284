"""``sam`` proposals: Segment Anything's automatic mask generator (``segment-anything``'s
``SamAutomaticMaskGenerator``) from a local checkpoint — the proposals OVSeg's users asked for
(ov-seg issues 10, 21, 25, 29).

The generator prompts SAM with a grid of points, keeps masks whose predicted IoU and stability pass
its thresholds and removes duplicates by box NMS; every setting of the generator is an option here
(``points_per_side``, ``points_per_batch``, ``pred_iou_thresh``, ...). The kept masks are ranked by
SAM's predicted IoU (the proposal score), filtered by area and de-duplicated by mask IoU like the
other backends (``ovseg.proposals.filtering``), and the best ``max_proposals`` are returned.

Nothing is downloaded: ``checkpoint`` must be a local file; the official weights are
``sam_vit_b_01ec64.pth`` / ``sam_vit_l_0b3195.pth`` / ``sam_vit_h_4b8939.pth`` (URLs in
:data:`SAM_CHECKPOINT_URLS`). The state dict is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ovseg.proposals.base import ImageContext, Proposals
from ovseg.proposals.filtering import area_in_range, greedy_dedup

log = logging.getLogger(__name__)

#: Where the official checkpoints are published (segment-anything's README).
SAM_CHECKPOINT_URLS: dict[str, str] = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}

#: ``model_type → () -> randomly initialised Sam``; vit_b/l/h from segment-anything, more via
#: :func:`register_sam_builder` (tests register a tiny one built from the package's own modules).
_EXTRA_BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {}


def register_sam_builder(model_type: str, builder: Callable[[], torch.nn.Module]) -> None:
    """Make ``model_type`` buildable (``builder()`` returns a randomly initialised ``Sam``)."""
    _EXTRA_BUILDERS[model_type] = builder


def _import_sam() -> Any:
    try:
        import segment_anything
    except ImportError:
        raise ImportError("the sam proposal backend needs the segment-anything package: "
                          "pip install segment-anything (a dependency of this project)") from None
    return segment_anything


def model_types() -> list[str]:
    """The SAM architectures this backend can build."""
    return sorted({"vit_b", "vit_l", "vit_h", *_EXTRA_BUILDERS})


def guess_model_type(checkpoint: str) -> str | None:
    """``vit_b`` / ``vit_l`` / ``vit_h`` from an official file name (``sam_vit_b_01ec64.pth``), else None."""
    name = Path(checkpoint).name
    return next((t for t in ("vit_b", "vit_l", "vit_h") if t in name), None)


def load_sam(checkpoint: str | Path, model_type: str = "auto", *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``Sam`` in eval mode with the weights of a local checkpoint.

    Raises:
        FileNotFoundError: the checkpoint is missing (the message says where to get it).
        ValueError: unknown model type, or a state dict that does not fit it.
    """
    checkpoint = str(checkpoint)
    if model_type == "auto":
        model_type = guess_model_type(checkpoint) or ""
        if not model_type:
            raise ValueError(f"cannot tell the SAM model type from {Path(checkpoint).name}: set model_type to one of "
                             f"{', '.join(model_types())}")
    if model_type not in model_types():
        raise ValueError(f"unknown SAM model type {model_type!r}; known: {', '.join(model_types())}")
    if not Path(checkpoint).is_file():
        url = SAM_CHECKPOINT_URLS.get(model_type, SAM_CHECKPOINT_URLS["vit_h"])
        raise FileNotFoundError(f"SAM checkpoint not found: {checkpoint}; download {url} elsewhere "
                                "(this machine downloads nothing) and point the checkpoint at the local file")
    if model_type in _EXTRA_BUILDERS:
        model = _EXTRA_BUILDERS[model_type]()
    else:
        model = _import_sam().sam_model_registry[model_type](checkpoint=None)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint} does not fit SAM {model_type}: {str(err).splitlines()[0]}") from None
    return model.to(device).eval()


@dataclass
class SamProposals:
    """Class-agnostic SAM proposals.

    Args:
        checkpoint: local SAM weight file (state dict).
        model_type: ``vit_b`` | ``vit_l`` | ``vit_h`` | ``auto`` (from the official file name).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` ...
        points_per_side / points_per_batch / pred_iou_thresh / stability_score_thresh /
            stability_score_offset / box_nms_thresh / crop_n_layers / crop_nms_thresh /
            crop_overlap_ratio / crop_n_points_downscale_factor / min_mask_region_area:
            ``SamAutomaticMaskGenerator``'s settings (its defaults, chosen for ViT-H).
        min_area_frac / max_area_frac: keep masks whose area fraction of the image is in this range.
        dedup_iou: drop a mask whose IoU with a better-scored kept one exceeds this.
        max_proposals: keep at most this many per image (highest predicted IoU first).
    """

    checkpoint: str
    model_type: str = "auto"
    device: str = "auto"
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    min_area_frac: float = 0.001
    max_area_frac: float = 1.0
    dedup_iou: float = 0.9
    max_proposals: int = 100
    name: str = "sam"
    model: torch.nn.Module = field(init=False, repr=False)
    generator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        sam = _import_sam()
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_sam(self.checkpoint, self.model_type, device=self.device)
        self.generator = sam.SamAutomaticMaskGenerator(
            self.model, points_per_side=self.points_per_side, points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh, stability_score_thresh=self.stability_score_thresh,
            stability_score_offset=self.stability_score_offset, box_nms_thresh=self.box_nms_thresh,
            crop_n_layers=self.crop_n_layers, crop_nms_thresh=self.crop_nms_thresh,
            crop_overlap_ratio=self.crop_overlap_ratio,
            crop_n_points_downscale_factor=self.crop_n_points_downscale_factor,
            min_mask_region_area=self.min_mask_region_area)
        log.info("sam proposals: %s (%s) on %s", self.checkpoint, self.model_type, self.device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, context: ImageContext | None = None) -> Proposals:
        """``[H,W,3]`` uint8 RGB → :class:`Proposals` (``[N,H,W]`` bool masks, predicted-IoU scores)."""
        h, w = image.shape[:2]
        records = self.generator.generate(np.ascontiguousarray(image))
        if not records:
            return Proposals.empty(h, w)
        masks = torch.from_numpy(np.stack([r["segmentation"] for r in records])).bool()
        scores = torch.tensor([float(r["predicted_iou"]) for r in records])
        keep = area_in_range(masks, min_frac=self.min_area_frac, max_frac=self.max_area_frac)
        index = keep.nonzero().flatten()
        index = index[scores[index].argsort(descending=True, stable=True)]
        kept = index[greedy_dedup(masks[index], iou_threshold=self.dedup_iou, max_keep=self.max_proposals)]
        if len(kept) == 0:
            return Proposals.empty(h, w)
        return Proposals(masks[kept], scores[kept])
