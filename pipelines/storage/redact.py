"""Keep credentials out of what a run writes: reports, checkpoints, summaries, logs.

Configs carry fsspec ``storage_options`` (S3 keys, tokens) to the workers that need them; any copy
of a config that is *written* (report.json, a checkpoint's ``config``) goes through :func:`redact`
first. Under a ``storage_options`` mapping every value is replaced except a few harmless,
useful settings (:data:`KEEP`); elsewhere keys that name a secret are replaced.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["redact", "REDACTED", "KEEP"]

REDACTED = "<redacted>"
KEEP = frozenset({"anon", "endpoint_url", "region_name", "use_ssl", "client_kwargs", "config_kwargs",
                  "default_block_size", "default_cache_type", "requester_pays", "project", "s3_additional_kwargs",
                  "signature_version", "addressing_style", "verify", "use_listings_cache"})  # no secret in these
_SECRET_WORDS = re.compile(r"secret|token|passw|credential|private|api_?key|access_?key|auth|session|^key$", re.I)


def redact(obj: Any, *, in_storage: bool = False) -> Any:
    """A copy of ``obj`` (nested dicts / lists) with secrets replaced by :data:`REDACTED`."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            name = str(key)
            if isinstance(value, (dict, list, tuple)):
                out[key] = redact(value, in_storage=in_storage or name == "storage_options")
            elif (in_storage and name not in KEEP) or _SECRET_WORDS.search(name):
                out[key] = REDACTED if value not in (None, "", False) else value
            else:
                out[key] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v, in_storage=in_storage) for v in obj]
    return obj
