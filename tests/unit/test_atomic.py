"""The one atomic write: complete file or the old one, never a part, no temporary left, any fsspec URL."""
from __future__ import annotations

import fsspec
import pytest

from pipelines.storage.atomic import atomic_write, write_bytes


@pytest.mark.parametrize("base", ["local", "memory://atomic"])
def test_atomic_write_is_all_or_nothing(tmp_path, base):
    root = str(tmp_path) if base == "local" else base
    fs, _ = fsspec.core.url_to_fs(root)
    fs.makedirs(root, exist_ok=True)
    url = f"{root}/a.json"
    write_bytes(url, b"old")
    with pytest.raises(ValueError):
        with atomic_write(url) as f:
            f.write(b"half")
            raise ValueError("killed mid-write")
    assert fs.cat_file(url) == b"old"
    with atomic_write(url) as f:
        f.write(b"new")
    assert fs.cat_file(url) == b"new"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) == ["a.json"]  # no .tmp left
