"""The typed configuration of MaskFormer training (``jobs/train_maskformer.py``).

The model is a named :data:`ovseg.maskformer.config.SPECS` preset; its classifier is the CLIP text
embeddings of the training vocabulary (the categories of ``data.instances_url`` minus
``data.unseen``), computed once with the CLIP of the ``clip`` section and saved with the weights.
``data.batch_size`` is per process: global batch = batch_size × world_size. The loss section is
:class:`ovseg.maskformer.losses.LossWeights` itself (one owner of those defaults).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ovseg.maskformer.losses import LossWeights
from pipelines.config.sections import ClipTextSection
from pipelines.config.load import check
from pipelines.train.config import TuneRunSection


@dataclass(kw_only=True)
class ModelSection:
    spec: str = "world-tiny"  # a preset name of ovseg.maskformer.config.SPECS
    overrides: dict[str, Any] = field(default_factory=dict)  # MaskFormerSpec fields replaced, e.g. {num_queries: 50}
    init_from: Optional[str] = None  # start from these weights (a save_maskformer file of the same spec) with a fresh schedule


@dataclass(kw_only=True)
class SegmentDataSection:
    instances_url: str = "???"  # COCO instances json with masks (things and stuff segments)
    images_url: str = "???"  # folder of the images (file_name of the json is relative to it)
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec for both URLs
    unseen: list[str] = field(default_factory=list)  # category names held out: annotations dropped, not in the vocabulary
    batch_size: int = 8  # images per process per step
    workers: int = 2  # data loader worker processes per process
    hflip: bool = True  # random horizontal flips
    image_size: Optional[int] = None  # resize (square) to this side; None = as stored (must be a multiple of 32)

    def validate(self, prefix: str) -> None:
        check(self.batch_size > 0, prefix + "batch_size", "must be > 0")
        check(self.workers >= 0, prefix + "workers", "must be >= 0")
        check(self.image_size is None or self.image_size % 32 == 0, prefix + "image_size",
              "must be a multiple of 32")


@dataclass(kw_only=True)
class TextSection(ClipTextSection):
    """The CLIP whose text tower embeds the category names (the classifier), once, before training."""


@dataclass(kw_only=True)
class SegmentOptimSection:
    lr: float = 1e-4  # AdamW learning rate (MaskFormer: 1e-4)
    weight_decay: float = 1e-4  # AdamW weight decay (MaskFormer: 1e-4; none on norms, biases, embeddings)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0
    max_steps: int = 1000  # optimizer steps in total
    grad_clip: Optional[float] = 0.01  # max global grad norm (MaskFormer: full-model clipping at 0.01), or None

    def validate(self, prefix: str) -> None:
        check(self.lr > 0, prefix + "lr", "must be > 0")
        check(self.max_steps > 0, prefix + "max_steps", "must be > 0")
        check(self.warmup_steps >= 0, prefix + "warmup_steps", "must be >= 0")


@dataclass(kw_only=True)
class SegmentRunSection(TuneRunSection):
    """The tuning job's run section (checkpoints, resume, logs); the export goes to ``export``."""

    export: Optional[str] = None  # final weights (+ vocabulary embeddings) file; None = out_dir/export/maskformer.pt
    export_dtype: str = "fp32"  # fp32 | fp16 (half the file; loading casts back to the model's fp32)

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.export_dtype in ("fp32", "fp16"), prefix + "export_dtype", "fp32 | fp16")


@dataclass(kw_only=True)
class TrainMaskFormerConfig:
    """``conf/world/train_maskformer.yaml``: every section of the MaskFormer training job."""

    model: ModelSection = field(default_factory=ModelSection)  # the MaskFormer preset
    clip: TextSection = field(default_factory=TextSection)  # the CLIP that embeds the vocabulary
    data: SegmentDataSection = field(default_factory=SegmentDataSection)  # segmentation annotations
    loss: LossWeights = field(default_factory=LossWeights)  # matching costs and loss weights
    optim: SegmentOptimSection = field(default_factory=SegmentOptimSection)  # optimizer and schedule
    run: SegmentRunSection = field(default_factory=SegmentRunSection)  # device, seed, checkpoints, logs
