"""open_clip loading, image encoding and a prompt-ensembled text-embedding cache.

Everything CLIP-related that the mining, tuning and segmentation code share lives here:

* :func:`load_clip` builds an open_clip model by name and fills it either from an open_clip
  *pretrained tag* (e.g. ``ViT-B-16`` + ``openai``; needs the weights in open_clip's cache or network
  access to the model hub), from a *local checkpoint file* (``.pt``/``.pth``/``.bin``/``.safetensors``),
  or leaves it randomly initialised (``pretrained=None, checkpoint=None``; only useful for tests).
* :func:`encode_images` runs the image tower on normalised crops ``[B,3,S,S]`` → ``[B,D]``.
* :class:`TextEmbeddingCache` embeds nouns with OVSeg's prompt ensemble and keeps them by noun.

Model configs shipped in ``ovseg/model_configs`` (e.g. ``ovseg-tiny-vit``) are registered with
open_clip when this module is imported, so they are usable by name everywhere.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import open_clip
import torch
import torch.nn.functional as F

from .conv_stem import apply_conv_stem

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: OVSeg's prompt ensemble: the 14 ``VILD_PROMPT`` templates of ov-seg's
#: ``open_vocab_seg/modeling/clip_adapter/text_template.py`` (from ViLD), in its order. OVSeg's class
#: head and mask prompt were trained against text embeddings averaged over exactly these.
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

#: The first 9 of them: this project's ensemble before it followed ov-seg (mined pairs and the
#: committed world numbers up to issue 16 were made with it).
VILD9_TEMPLATES: tuple[str, ...] = VILD_TEMPLATES[:9]

#: Named prompt ensembles a config may select (``templates: vild``).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "vild": VILD_TEMPLATES,
    "vild9": VILD9_TEMPLATES,
    "single": ("a photo of a {}.",),
    "noun": ("{}",),
}

#: ov-seg's fixed logit multiplier for crop classification (``ClipAdapter.get_sim_logits``).
OVSEG_TEMPERATURE = 100.0


def templates_named(name: str) -> tuple[str, ...]:
    """The prompt ensemble called ``name`` (a key of :data:`TEMPLATE_SETS`)."""
    if name not in TEMPLATE_SETS:
        raise ValueError(f"unknown prompt ensemble {name!r}; known: {sorted(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]


#: File suffixes that make a ``pretrained`` value a local weight file rather than an open_clip tag.
WEIGHT_FILE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".safetensors")


class ClipLoadError(RuntimeError):
    """Raised when a CLIP model cannot be built or its weights cannot be found."""


class ClipWeightsUnavailable(ClipLoadError):
    """The pretrained weights are neither cached nor downloadable: pass a local ``checkpoint``.

    The caller knows where that setting lives (a config key, a flag) and adds it to the message.
    """


@dataclass
class ClipBundle:
    """An open_clip model with what is needed to feed it.

    Attributes:
        model: the open_clip ``CLIP`` module (eval mode, on ``device``).
        tokenizer: ``list[str] -> LongTensor[B, context_length]``.
        image_size: side S of the square input the image tower expects.
        mean / std: per-channel normalisation on 0..1 pixel values.
        name / pretrained / checkpoint: where the model came from (for reports and exports).
    """

    model: torch.nn.Module
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    pretrained: str | None = None
    checkpoint: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])


def available_models() -> list[str]:
    """Names of all model configs open_clip knows (including the ones shipped here)."""
    return list(open_clip.list_models())


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ClipLoadError(f"{path}: not a CLIP weight file (a state dict for torch.load(weights_only=True) "
                            f"or .safetensors): {type(err).__name__}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ClipLoadError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init(active: bool) -> Iterator[None]:
    """Silence open_clip's "Model initialized randomly" while building a model a checkpoint will fill."""
    if not active:
        yield
        return
    root, flt = logging.getLogger(), _DropRandomInitWarning()
    handlers = list(root.handlers)
    root.addFilter(flt)
    for handler in handlers:  # records of child loggers skip the root logger's filters
        handler.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)
        for handler in handlers:
            handler.removeFilter(flt)


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> ClipBundle:
    """Build an open_clip model and load its weights.

    Args:
        model_name: open_clip config name, e.g. ``"ViT-B-16"``, ``"ViT-L-14"``, ``"ovseg-tiny-vit"``.
        pretrained: open_clip pretrained tag (e.g. ``"openai"``) *or* a local checkpoint path.
        checkpoint: local checkpoint path (state dict; takes precedence over ``pretrained``).
        device: where the model lives.
        precision: open_clip precision string (``fp32``, ``bf16``, ``fp16``).

    Returns:
        A :class:`ClipBundle` with the model in eval mode.

    Raises:
        ClipLoadError: unknown model name, missing checkpoint, or a pretrained tag whose weights are
            neither cached nor downloadable (e.g. on an offline machine).
    """
    if model_name not in open_clip.list_models():
        raise ClipLoadError(
            f"unknown CLIP model {model_name!r}; open_clip knows {len(open_clip.list_models())} "
            f"configs, e.g. ViT-B-16, ViT-L-14, ovseg-tiny-vit (see ovseg.clip.available_models())"
        )
    if checkpoint is None and pretrained is not None and pretrained.endswith(WEIGHT_FILE_SUFFIXES):
        checkpoint, pretrained = pretrained, None
    tag = pretrained
    if tag is not None:
        from ovseg.clip_weights import unavailable_reason

        reason = unavailable_reason(model_name, tag)
        if reason is not None:
            raise ClipWeightsUnavailable(f"{reason}: download the weights elsewhere and pass their file "
                                         "as the checkpoint")
    try:
        with quiet_random_init(tag is None):  # a checkpoint fills it, or our own warning below says it is random
            model = open_clip.create_model(model_name, pretrained=tag, precision=precision, device=device)
    except Exception as err:  # open_clip raises RuntimeError / OSError / HF errors when offline
        raise ClipWeightsUnavailable(
            f"could not load pretrained weights {model_name}/{tag}: {err}. Real weights need either "
            "network access to the model hub or a local file: download them elsewhere and pass their "
            "file as the checkpoint"
        ) from err
    apply_conv_stem(model, model_name)
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise ClipLoadError(f"CLIP checkpoint not found: {checkpoint}")
        state = _read_state_dict(checkpoint)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ClipLoadError(
                f"checkpoint {checkpoint} does not fit {model_name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    if pretrained is None and checkpoint is None:
        log.warning("CLIP %s is randomly initialised (no pretrained tag, no checkpoint)", model_name)
    model.eval()
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", OPENAI_CLIP_MEAN))
    std = tuple(cfg.get("std", OPENAI_CLIP_STD))
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        image_size=size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        name=model_name,
        pretrained=pretrained,
        checkpoint=checkpoint,
    )


@torch.no_grad()
def encode_images(
    bundle: ClipBundle,
    images: torch.Tensor,
    batch_size: int = 256,
    *,
    masks: torch.Tensor | None = None,
    prompt: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Embed normalised images with the image tower, optionally mask-prompted.

    Args:
        images: ``[B,3,S,S]`` float, already normalised with ``bundle.mean/std``.
        batch_size: chunk size for the forward passes.
        masks: ``[B,1,S,S]`` bool crop-aligned masks; needed when ``prompt`` is given.
        prompt: an ``ovseg.mpt.MaskPrompt`` (a tuned mask prompt): patches entirely outside the
            mask get its learned tokens (mask prompt tuning); ``None`` = plain CLIP.

    Returns:
        ``[B,D]`` L2-normalised float32 embeddings (on the model's device).
    """
    if prompt is not None and (masks is None or masks.shape[0] != images.shape[0]):
        raise ValueError("a mask prompt needs one mask per image")
    device = bundle.device
    out = []
    mask_chunks = masks.split(batch_size) if prompt is not None else [None] * len(images.split(batch_size))
    for chunk, mask_chunk in zip(images.split(batch_size), mask_chunks):
        chunk = chunk.to(device)
        if prompt is None:
            feats = bundle.model.encode_image(chunk)
        else:
            feats = prompt(bundle.model.visual, chunk, mask_chunk.to(device))
        out.append(F.normalize(feats.float(), dim=-1))
    if not out:
        return torch.zeros(0, bundle.embed_dim, device=device)
    return torch.cat(out)


class TextEmbeddingCache:
    """Prompt-ensembled noun embeddings, computed once per noun and kept.

    For a noun, every template is filled, encoded and L2-normalised; the template embeddings are
    averaged and the mean is renormalised (OVSeg / ViLD prompt ensembling).
    """

    def __init__(
        self,
        bundle: ClipBundle,
        templates: Iterable[str] = VILD_TEMPLATES,
        batch_size: int = 512,
        *,
        max_entries: int | None = 1_000_000,
    ) -> None:
        self.bundle = bundle
        self.templates = tuple(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("every prompt template must contain '{}'")
        self.batch_size = batch_size
        self.max_entries = max_entries
        self._cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def _encode(self, nouns: list[str]) -> torch.Tensor:
        """``len(nouns)`` nouns → ``[K,D]`` ensembled, normalised embeddings (CPU)."""
        prompts = [t.format(n) for n in nouns for t in self.templates]
        feats = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.bundle.tokenizer(prompts[start : start + self.batch_size])
            emb = self.bundle.model.encode_text(tokens.to(self.bundle.device))
            feats.append(F.normalize(emb.float(), dim=-1))
        per_prompt = torch.cat(feats).view(len(nouns), len(self.templates), -1)
        return F.normalize(per_prompt.mean(dim=1), dim=-1).cpu()

    def embed(self, nouns: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``nouns`` (K of them), in order.

        Returns:
            ``[K,D]`` float32 on the model's device, L2-normalised.
        """
        missing = list(dict.fromkeys(n for n in nouns if n not in self._cache))
        if missing:
            if self.max_entries is not None and len(self._cache) + len(missing) > self.max_entries:
                self._cache.clear()
            self._cache.update(zip(missing, self._encode(missing)))
        if not nouns:
            return torch.zeros(0, self.bundle.embed_dim, device=self.bundle.device)
        return torch.stack([self._cache[n] for n in nouns]).to(self.bundle.device)
