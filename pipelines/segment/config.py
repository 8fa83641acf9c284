"""The typed configuration of ``jobs/segment.py`` and ``jobs/evaluate.py`` (``conf/*/segment.yaml``).

Defaults follow ov-seg's test recipe (``configs/ovseg_swinB_vitL_bs32_120k.yaml``): the 14 ViLD
templates, crops at temperature 100, CLIP_ENSEMBLE_WEIGHT 0.7, masks binarised at 0.5 for the crops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipelines.config.load import check
from pipelines.config.sections import ClipTextSection, RunBase


@dataclass(kw_only=True)
class SegmentClipSection(ClipTextSection):
    """The CLIP that names the masked crops (and embeds the vocabulary for the MaskFormer's class head)."""

    prompt: Optional[str] = None  # tuned mask prompt (tune_mpt's export/mpt_prompt.pt); its CLIP replaces model/pretrained/checkpoint
    temperature: Optional[float] = 100.0  # crop logits = temperature x cosine (ov-seg: 100); null = the CLIP's learned logit_scale
    precision: str = "fp32"  # image tower autocast: fp32 | bf16 (GPU, or CPUs with AMX) | fp16 (GPU)
    batch_size: int = 256  # crops per image-tower forward pass

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.temperature is None or self.temperature > 0, prefix + "temperature", "must be > 0 or null")
        check(self.precision in ("fp32", "bf16", "fp16"), prefix + "precision", "fp32 | bf16 | fp16")
        check(self.batch_size > 0, prefix + "batch_size", "must be > 0")
        if self.prompt and "://" not in self.prompt:
            check(Path(self.prompt).exists(), prefix + "prompt", f"file not found: {self.prompt}")


@dataclass(kw_only=True)
class SegmentProposalSection:
    """Where the masks come from."""

    backend: str = "superpixel"  # a key of ovseg.proposals.PROPOSAL_REGISTRY (maskformer: its class head joins the ensemble)
    checkpoint: Optional[str] = None  # maskformer / sam: local weight file (our MaskFormer file, an OVSeg .pth, a SAM .pth)
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the backend (e.g. short_side, points_per_side)

    def validate(self, prefix: str) -> None:
        from ovseg.proposals import PROPOSAL_REGISTRY

        check(self.backend in PROPOSAL_REGISTRY and self.backend != "gt", prefix + "backend",
              f"one of {sorted(set(PROPOSAL_REGISTRY) - {'gt'})}")
        if self.backend in ("maskformer", "sam"):
            check(bool(self.checkpoint), prefix + "checkpoint", f"the {self.backend} backend needs a local weight file")
            hint = "" if self.backend != "sam" else "; SAM weights: https://dl.fbaipublicfiles.com/segment_anything/sam_vit_{b_01ec64,l_0b3195,h_4b8939}.pth"
            check("://" in self.checkpoint or Path(self.checkpoint).exists(), prefix + "checkpoint",
                  f"local file not found: {self.checkpoint}{hint}")


@dataclass(kw_only=True)
class EnsembleSection:
    """How the class probabilities are made (ov-seg's MODEL.CLIP_ADAPTER keys)."""

    clip: bool = True  # classify the masked crops with CLIP (ov-seg CLIP_ENSEMBLE); false = MaskFormer's class head alone
    clip_weight: float = 0.7  # CLIP_ENSEMBLE_WEIGHT w: mf^(1-w) * clip^w (0 = CLIP alone, as ov-seg)
    seen_classes: list[str] = field(default_factory=list)  # classes the MaskFormer was trained on (evaluate reports seen / unseen apart)
    seen_swap: bool = False  # zsseg.baseline's branch: seen classes get mf^w * clip^(1-w) (ov-seg: false, one rule for all)
    mask_threshold: float = 0.5  # soft masks are binarised with > threshold for the crops (MASK_THR)
    expand_ratio: float = 1.0  # crop box scale about its centre (MASK_EXPAND_RATIO)

    def validate(self, prefix: str) -> None:
        check(0.0 <= self.clip_weight <= 1.0, prefix + "clip_weight", "must be in 0..1")
        check(0.0 < self.mask_threshold < 1.0, prefix + "mask_threshold", "must be in (0, 1)")
        check(self.expand_ratio > 0, prefix + "expand_ratio", "must be > 0")
        check(not self.seen_swap or bool(self.seen_classes), prefix + "seen_swap", "needs ensemble.seen_classes")


@dataclass(kw_only=True)
class SegmentOutputSection:
    """What is written per image."""

    dir: str = "out/segment"  # output folder (local path or fsspec URL); evaluate writes metrics.json, per_class.md, overlays/ there
    overlay: bool = True  # also write <stem>_overlay.png (colours, outlines, legend)
    overlay_alpha: float = 0.55  # opacity of the class colours in the overlay
    overlay_min_side: int = 512  # small images are enlarged (nearest) to this short side so the legend stays readable
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for dir and the inputs

    def validate(self, prefix: str) -> None:
        check(0.0 <= self.overlay_alpha <= 1.0, prefix + "overlay_alpha", "must be in 0..1")


@dataclass(kw_only=True)
class SegmentConfig:
    """``jobs/segment.py``: models, ensemble, outputs."""

    clip: SegmentClipSection = field(default_factory=SegmentClipSection)  # crop classifier
    proposals: SegmentProposalSection = field(default_factory=SegmentProposalSection)  # mask proposals
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)  # class fusion
    output: SegmentOutputSection = field(default_factory=SegmentOutputSection)  # written files
    run: RunBase = field(default_factory=RunBase)  # device and seed

    def validate(self, prefix: str) -> None:
        check(self.ensemble.clip or self.proposals.backend == "maskformer", prefix + "ensemble.clip",
              "without CLIP only the maskformer backend can name masks")


@dataclass(kw_only=True)
class EvalDataSection:
    """Which benchmark, where (layouts of ov-seg's datasets/DATASETS.md, or the world)."""

    dataset: str = "world"  # ade150 | ade847 | pc59 | pc459 | voc20 | world
    root: str = "data/world"  # ov-seg's $DETECTRON2_DATASETS folder (the world: the generated corpus folder)
    max_images: int = 0  # evaluate the first N images by file name (0 = all)

    def validate(self, prefix: str) -> None:
        from pipelines.segment.datasets import LAYOUTS

        check(self.dataset in LAYOUTS, prefix + "dataset", " | ".join(LAYOUTS))
        check(self.max_images >= 0, prefix + "max_images", "must be >= 0")


@dataclass(kw_only=True)
class EvalSection:
    """What is measured and shown."""

    oracle: str = "none"  # none | gt_masks (ground-truth masks named by CLIP) | gt_classes (proposals named by their majority ground-truth class)
    overlays: int = 4  # write this many prediction-beside-ground-truth pictures (first images by name)

    def validate(self, prefix: str) -> None:
        check(self.oracle in ("none", "gt_masks", "gt_classes"), prefix + "oracle", "none | gt_masks | gt_classes")
        check(self.overlays >= 0, prefix + "overlays", "must be >= 0")


@dataclass(kw_only=True)
class EvaluateConfig(SegmentConfig):
    """``jobs/evaluate.py``: the segment config plus the benchmark and the oracle mode."""

    data: EvalDataSection = field(default_factory=EvalDataSection)  # benchmark
    eval: EvalSection = field(default_factory=EvalSection)  # oracle and pictures

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.eval.oracle != "gt_masks" or self.ensemble.clip, prefix + "ensemble.clip",
              "the gt_masks oracle names the ground-truth masks with CLIP")
