"""The typed configuration of mask prompt tuning (``conf/tune_mpt.yaml``).

Defaults follow OVSeg's MPT recipe on real weights (ViT-B/16 ``openai``; OVSeg's released run used
ViT-L/14): prompt depth 3, AdamW lr 2e-2, weight decay 0, cosine schedule with warmup, 224 px,
5 epochs. ``data.batch_size`` is per process and micro-step: global batch = batch_size ×
world_size × optim.grad_accum (OVSeg: 256, e.g. 32 × 8 GPUs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from pipelines.config.sections import DEVICES, ClipSection, RunBase, TemplatesSection
from pipelines.config.load import check

MODES = ("mpt", "finetune", "finetune+mpt")
LOSSES = ("vocab_ce", "contrastive")


@dataclass(kw_only=True)
class PromptSection:
    depth: int = 3  # replacement points: after the patch embedding and after blocks 1..depth-1
    init: str = "normal"  # normal (OVSeg: std 0.02) | zeros
    init_std: float = 0.02  # std of the normal init
    init_from: Optional[str] = None  # start from an exported prompt file (mpt_prompt.pt)

    def validate(self, prefix: str) -> None:
        check(self.depth >= 1, prefix + "depth", "must be >= 1")
        check(self.init in ("normal", "zeros"), prefix + "init", "normal | zeros")


@dataclass(kw_only=True)
class SourceSection:
    urls: str = "???"  # brace pattern / folder / glob / fsspec URL; several joined by '::'
    weight: float = 1.0  # relative mixing weight
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec for these shards

    def validate(self, prefix: str) -> None:
        check(self.weight > 0, prefix + "weight", "must be > 0")


@dataclass(kw_only=True)
class DataSection:
    sources: list[SourceSection] = field(default_factory=list)  # training pair shards, mixed
    urls: Optional[str] = None  # shortcut for one source (weight 1); replaces `sources` when set
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options of `urls` and `eval.urls`
    batch_size: int = 32  # pairs per process per micro-step
    workers: int = 4  # data loader worker processes per process
    shuffle_buffer: int = 2000  # samples held for shuffling per worker
    holdout_percent: float = 1.0  # share of pairs (by key hash) held out for evaluation
    samples_per_epoch: Optional[int] = None  # overrides the count from sizes.json
    filter: Optional[str] = None  # keep only pairs whose index row matches, e.g. "score > 0.25 and margin > 0.03" (python -m pipelines.pairs.select's grammar)

    def validate(self, prefix: str) -> None:
        if self.urls:
            self.sources = [SourceSection(urls=self.urls, storage_options=dict(self.storage_options))]
        check(len(self.sources) > 0, prefix + "sources", "give data.urls or at least one source")
        check(self.batch_size > 0, prefix + "batch_size", "must be > 0")
        check(self.workers >= 0, prefix + "workers", "must be >= 0")
        check(0 <= self.holdout_percent < 100, prefix + "holdout_percent", "must be in [0, 100)")
        if self.filter:
            from pipelines.pairs.select import FilterError, compile_filter

            try:
                compile_filter(self.filter)
            except FilterError as err:
                check(False, prefix + "filter", str(err))


@dataclass(kw_only=True)
class LossSection:
    # vocab_ce: crops of the same noun are never each other's negatives (as at test time).
    name: str = "vocab_ce"  # vocab_ce (each crop vs the global batch's unique nouns) | contrastive (OVSeg's CLIP loss)
    text_prompt: str = "noun"  # noun (the bare noun, as OVSeg trains) | vild (9-template ensemble)

    def validate(self, prefix: str) -> None:
        check(self.name in LOSSES, prefix + "name", " | ".join(LOSSES))
        check(self.text_prompt in ("noun", "vild"), prefix + "text_prompt", "noun | vild")


@dataclass(kw_only=True)
class OptimSection:
    mode: str = "mpt"  # mpt | finetune (image tower, text frozen) | finetune+mpt
    lr: float = 2e-2  # OVSeg MPT: 2e-2; full fine-tuning: 5e-6
    weight_decay: float = 0.0  # OVSeg MPT: 0; full fine-tuning: 0.2 (not on gains/biases)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.98  # AdamW beta2
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0
    epochs: float = 5.0  # epochs of `samples_per_epoch` (ignored when max_steps is set)
    max_steps: Optional[int] = None  # optimizer steps in total (overrides epochs)
    grad_accum: int = 1  # micro-steps per optimizer step
    grad_clip: Optional[float] = None  # max global grad norm, or None
    train_logit_scale: bool = True  # OVSeg leaves CLIP's logit scale trainable
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    grad_checkpointing: bool = False  # recompute image-tower activations in backward

    def validate(self, prefix: str) -> None:
        check(self.mode in MODES, prefix + "mode", " | ".join(MODES))
        check(self.lr > 0, prefix + "lr", "must be > 0")
        check(self.grad_accum >= 1, prefix + "grad_accum", "must be >= 1")
        check(self.warmup_steps >= 0, prefix + "warmup_steps", "must be >= 0")
        check(self.max_steps is None or self.max_steps > 0, prefix + "max_steps", "must be > 0")
        check(self.epochs > 0, prefix + "epochs", "must be > 0")
        check(self.precision in ("auto", "bf16", "fp32"), prefix + "precision", "auto | bf16 | fp32")


@dataclass(kw_only=True)
class EvalSection(TemplatesSection):
    urls: Optional[str] = None  # held-out pair shards; None = data.holdout_percent of the sources
    max_samples: int = 5000  # evaluate on at most this many pairs (over all processes)
    batch_size: int = 64  # pairs per forward pass
    before: bool = True  # also evaluate before tuning (plain CLIP on the masked crops)
    every_steps: int = 0  # evaluate during training every N steps (0 = only before/after)

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.max_samples > 0, prefix + "max_samples", "must be > 0")


@dataclass(kw_only=True)
class TuneRunSection(RunBase):
    """The shared device/seed section plus checkpoints and logging."""

    out_dir: str = "out/tune_mpt"  # checkpoints, exports, TensorBoard logs, summary.json
    resume: str = "auto"  # auto (latest checkpoint in out_dir, if any) | never | <checkpoint path>
    save_every: int = 500  # checkpoint every N optimizer steps (and always at the end)
    keep_last: int = 3  # checkpoints kept (older ones are deleted)
    stop_at: Optional[int] = None  # stop (with a checkpoint) at this step; the schedule is unchanged
    log_every: int = 10  # TensorBoard / progress-bar update period in steps
    tensorboard: bool = True  # write TensorBoard logs under out_dir/tensorboard

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.save_every > 0, prefix + "save_every", "must be > 0")
        check(self.keep_last >= 1, prefix + "keep_last", "must be >= 1")


@dataclass(kw_only=True)
class TuneConfig:
    """``conf/tune_mpt.yaml``: every section of the tuning job."""

    clip: ClipSection = field(default_factory=ClipSection)  # the CLIP to tune (shared with mining)
    prompt: PromptSection = field(default_factory=PromptSection)  # the mask prompt
    data: DataSection = field(default_factory=DataSection)  # training pairs
    loss: LossSection = field(default_factory=LossSection)  # training loss
    optim: OptimSection = field(default_factory=OptimSection)  # optimizer and schedule
    eval: EvalSection = field(default_factory=EvalSection)  # before/after evaluation
    run: TuneRunSection = field(default_factory=TuneRunSection)  # device, seed, checkpoints, logs


@dataclass(kw_only=True)
class EvalCropsConfig:
    """``jobs/evaluate_crops.py``: zero-shot masked-crop accuracy of CLIP with/without a prompt."""

    urls: str = "???"  # pair shards to evaluate (brace pattern / folder / fsspec URL)
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec for `urls`
    holdout_percent: float = 0.0  # > 0: only the held-out share (same key hash as training)
    prompt_file: Optional[str] = None  # exported mpt_prompt.pt; rebuilds its CLIP (clip.* ignored)
    clip: ClipSection = field(default_factory=ClipSection)  # used when prompt_file is None
    eval: EvalSection = field(default_factory=EvalSection)  # vocabulary prompts, batch size, sample cap
    workers: int = 2  # data loader workers
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on GPU) | bf16 | fp32

    def validate(self, prefix: str) -> None:
        check(0 <= self.holdout_percent < 100, prefix + "holdout_percent", "must be in [0, 100)")
        check(self.device in DEVICES, prefix + "device", " | ".join(DEVICES))
