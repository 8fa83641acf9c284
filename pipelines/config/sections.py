"""Config sections shared by the jobs: which CLIP weights, the prompt ensemble, where / how a run computes.

One definition each, imported by :mod:`pipelines.mine.config` and :mod:`pipelines.train.config`
(which extend them with their own keys). Every field has a one-line comment: ``--help`` shows it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pipelines.config.load import check

DEVICES = ("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class ClipSection:
    """The CLIP weights: an open_clip model config plus a pretrained tag or a local state dict."""

    model: str = "ViT-B-16"  # open_clip model config name (a ViT)
    pretrained: Optional[str] = "openai"  # open_clip pretrained tag (real weights), or None (random init)
    checkpoint: Optional[str] = None  # local CLIP state dict; overrides `pretrained`

    def validate(self, prefix: str) -> None:
        if self.checkpoint and "://" not in self.checkpoint:
            check(Path(self.checkpoint).exists(), prefix + "checkpoint", f"file not found: {self.checkpoint}")

    def load(self, **kwargs: Any) -> Any:
        """:func:`ovseg.clip.load_clip` of these weights (``kwargs``: device, precision); when the
        weights are unavailable the error names the setting that fixes it."""
        from ovseg.clip import ClipWeightsUnavailable, load_clip

        try:
            return load_clip(self.model, self.pretrained, self.checkpoint, **kwargs)
        except ClipWeightsUnavailable as err:
            raise ClipWeightsUnavailable(f"{err}: set clip.checkpoint=/path/to/weights "
                                         "(or use the offline presets under conf/smoke/)") from err



@dataclass(kw_only=True)
class TemplatesSection:
    """The prompt ensemble a vocabulary is embedded with: one owner of the key, its default and its check."""

    templates: str = "vild"  # prompt ensemble: vild (ov-seg's 14, its text_template.py) | vild9 (before issue 16) | single ("a photo of a {}.") | noun (the bare name)

    def validate(self, prefix: str) -> None:
        from ovseg.clip import TEMPLATE_SETS

        check(self.templates in TEMPLATE_SETS, prefix + "templates", " | ".join(TEMPLATE_SETS))


@dataclass(kw_only=True)
class ClipTextSection(ClipSection, TemplatesSection):
    """CLIP weights plus the prompt ensemble its text tower embeds a vocabulary with."""

    def validate(self, prefix: str) -> None:
        ClipSection.validate(self, prefix)
        TemplatesSection.validate(self, prefix)

@dataclass(kw_only=True)
class RunBase:
    """Where a run computes and how it seeds its random numbers."""

    device: str = "auto"  # auto (the process's GPU when it has one, else cpu) | cpu | cuda
    seed: int = 0  # random seed (model init, shuffling)

    def validate(self, prefix: str) -> None:
        check(self.device in DEVICES, prefix + "device", " | ".join(DEVICES))
