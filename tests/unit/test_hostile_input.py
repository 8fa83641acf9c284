"""Hostile input: tar members that are links or climb out of the archive, COCO file names that
leave the image folder, and credentials in configs that get written."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

from pipelines.corpus.base import CorpusConfig
from pipelines.corpus.coco import CocoReader
from pipelines.corpus.webdataset import WebDatasetReader
from pipelines.pairs.format import iter_tar
from pipelines.storage.redact import REDACTED, redact
from pipelines.records import WorkUnit


def _tar(path, members: list[tuple[str, bytes | None, bytes]]) -> None:
    """``(name, data, type)``; link members carry their target as data."""
    with tarfile.open(path, "w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = kind, data.decode()
                tar.addfile(info)


HOSTILE = [("ok.jpg", b"\xff\xd8jpeg", tarfile.REGTYPE), ("ok.txt", b"a cat", tarfile.REGTYPE),
           ("/etc/abs.jpg", b"x", tarfile.REGTYPE), ("../up.txt", b"x", tarfile.REGTYPE),
           ("a/../../deep.jpg", b"x", tarfile.REGTYPE), ("C:/win.jpg", b"x", tarfile.REGTYPE),
           ("sym.jpg", b"/etc/passwd", tarfile.SYMTYPE), ("hard.jpg", b"ok.jpg", tarfile.LNKTYPE),
           ("dir/sym.txt", b"../../secret", tarfile.SYMTYPE)]


def test_webdataset_reader_refuses_and_counts_links_and_escaping_names(tmp_path):
    _tar(tmp_path / "s.tar", HOSTILE)
    skips: Counter = Counter()
    records = list(WebDatasetReader(CorpusConfig(format="webdataset", url=str(tmp_path / "s.tar")))
                   .read_unit(WorkUnit(0, str(tmp_path / "s.tar")), skips))
    assert [r.key for r in records] == ["ok"] and records[0].captions == ["a cat"]
    assert skips == Counter(unsafe_path=4, unsafe_link=3)


def test_pair_shard_reader_refuses_and_counts_them_too(tmp_path):
    _tar(tmp_path / "pairs-000000.tar", HOSTILE)
    skips: Counter = Counter()
    samples = list(iter_tar(str(tmp_path / "pairs-000000.tar"), skips))
    assert [s["__key__"] for s in samples] == ["ok"]
    assert skips == Counter(unsafe_path=4, unsafe_link=3)


def test_coco_file_names_that_leave_the_image_folder_are_refused(tmp_path):
    names = ["ok.jpg", "../outside.jpg", "/etc/passwd", "sub/../../x.jpg", "s3://other-bucket/x.jpg", "sub/fine.jpg"]
    data = {"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
            "annotations": [{"id": i, "image_id": i, "caption": "a cat"} for i in range(len(names))]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    reader = CocoReader(CorpusConfig(format="coco", url=str(tmp_path / "captions.json"), images_per_unit=10))
    skips: Counter = Counter()
    records = list(reader.read_unit(reader.plan_units()[0], skips))
    assert [r.image_url for r in records] == [f"{tmp_path}/ok.jpg", f"{tmp_path}/sub/fine.jpg"]
    assert skips == Counter(unsafe_path=4)


def test_redact_hides_storage_credentials_and_secret_keys_everywhere():
    config = {"corpus": {"url": "s3://b/c", "storage_options": {"key": "AKIA1", "secret": "s3cr3t", "anon": False,
                                                                "client_kwargs": {"endpoint_url": "http://h:1"},
                                                                "token": "tok"}},
              "output": {"storage_options": {"password": "pw", "profile": "prod"}},
              "ray": {"auth_token": "raytok", "address": "h:6379"}, "run": {"seed": 0}}
    text = json.dumps(redact(config))
    for secret in ("AKIA1", "s3cr3t", "tok\"", "pw", "prod", "raytok"):
        assert secret not in text
    red = redact(config)
    assert red["corpus"]["storage_options"]["client_kwargs"]["endpoint_url"] == "http://h:1"
    assert red["corpus"]["storage_options"]["secret"] == REDACTED and red["ray"]["address"] == "h:6379"
    assert config["corpus"]["storage_options"]["secret"] == "s3cr3t"  # a copy: the run keeps its options
