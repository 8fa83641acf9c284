"""Shared fixtures of the integration tests: the repo root, a bigger copy of the sample corpus, a moto S3 server per module."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.integration.s3_store import start_s3, stop_s3

REPO = Path(__file__).resolve().parents[2]


def mine_cmd(*overrides: str, config: str = "conf/smoke/mine.yaml") -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "mine.py"), "--config", str(REPO / config), *overrides]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def repeated_sample(tmp_path_factory) -> Path:
    """The bundled sample corpus repeated 3 times (30 images) as a COCO captions json."""
    src = json.loads((REPO / "data" / "sample" / "captions_sample.json").read_text())
    images, anns = [], []
    for rep in range(3):
        for img in src["images"]:
            images.append(dict(img, id=img["id"] + 1000 * rep))
        for ann in src["annotations"]:
            anns.append(dict(ann, id=ann["id"] + 1000 * rep, image_id=ann["image_id"] + 1000 * rep))
    path = tmp_path_factory.mktemp("corpus") / "captions_x3.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 for one test module (its own bucket, credentials and folder)."""
    store = start_s3(tmp_path_factory.mktemp("s3"))
    try:
        yield store
    finally:
        stop_s3(store)
