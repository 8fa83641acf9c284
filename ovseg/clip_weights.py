"""Can open_clip get the weights of a pretrained tag right now? Answered in seconds, not after retries.

open_clip downloads a tag's weights from the model hub (or a URL) unless they are in the cache; on a
machine without network access that fails only after the hub client's retries. :func:`unavailable_reason`
looks in the caches first, then honours ``HF_HUB_OFFLINE`` and otherwise tries one TCP connection to
the download host with a short timeout.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import open_clip

_HF_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cached(hf_hub: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo_id, filename = os.path.split(hf_hub)  # "org/model/" -> ("org/model", "")
    names = tuple(dict.fromkeys(([filename, filename.rsplit(".", 1)[0] + ".safetensors"] if filename else [])
                                + list(_HF_NAMES)))
    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)


def _url_cached(url: str) -> bool:
    cache = os.path.expanduser(os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "clip"))
    return os.path.isfile(os.path.join(cache, os.path.basename(urlparse(url).path)))


def _reachable(url: str, timeout: float) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_reason(model_name: str, tag: str, *, timeout: float = 3.0) -> str | None:
    """Why open_clip cannot get ``model_name``/``tag`` weights now, or ``None`` if it (probably) can.

    Cached weights are always available. Otherwise the hub must be reachable: not with
    ``HF_HUB_OFFLINE`` set, and one TCP connection to the download host must open within ``timeout``.
    Unknown tags return ``None`` (open_clip itself reports them).
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg or "file" in cfg:
        return None
    hf_hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if (hf_hub and _hf_cached(hf_hub)) or (url and _url_cached(url)):
        return None
    if hf_hub:
        if _truthy(os.environ.get("HF_HUB_OFFLINE")):
            return f"weights of {model_name}/{tag} are not in the hub cache and HF_HUB_OFFLINE is set"
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    else:
        endpoint = url
    if not _reachable(endpoint, timeout):
        where = urlparse(endpoint).netloc
        return f"weights of {model_name}/{tag} are not cached and {where} cannot be reached (offline?)"
    return None
