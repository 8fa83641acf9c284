"""A real S3-compatible server for the tests: moto's server mode as a subprocess on 127.0.0.1.

:func:`start_s3` starts ``python -m moto.server`` on a free port in its own session, waits until it
answers, creates a bucket and returns an :class:`S3Store` with the fsspec ``storage_options`` that
reach it. Credentials exist only in those options (random per test session, never in the
environment), so a leak of them anywhere is a leak of *this* secret, and tests grep for it.
"""
from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tests.integration.processes import kill_session, start_session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Store:
    """A running moto server and one bucket in it."""

    endpoint: str
    bucket: str
    key: str
    secret: str
    log: Path
    pid: int

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec (s3fs) options: credentials and endpoint; no listings cache, since other processes write."""
        return {"key": self.key, "secret": self.secret, "use_listings_cache": False,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def url(self, path: str) -> str:
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def put_dir(self, local: Path, prefix: str) -> str:
        """Upload every file under ``local`` to ``prefix``; returns the prefix's URL."""
        fs = self.fs()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.pipe(f"{self.bucket}/{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())
        return self.url(prefix)

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """``key → bytes`` of every object under ``prefix`` (the whole bucket by default)."""
        fs = self.fs()
        keys = [k for k in fs.find(f"{self.bucket}/{prefix}".rstrip("/"))]
        return {k[len(self.bucket) + 1 :]: fs.cat_file(k) for k in keys}


def start_s3(workdir: Path, timeout: float = 120.0) -> S3Store:
    """Start moto's S3 server and create a bucket; stop it with :func:`stop_s3`."""
    import boto3

    port = free_port()
    log = workdir / "moto.log"
    proc = start_session([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    store = S3Store(endpoint=f"http://127.0.0.1:{port}", bucket="ovseg-test", key="AKIA" + secrets.token_hex(8).upper(),
                    secret="s3secret-" + secrets.token_hex(16), log=log, pid=proc.pid)
    client = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.key,
                          aws_secret_access_key=store.secret, region_name="us-east-1")
    deadline = time.time() + timeout
    while True:
        try:
            client.create_bucket(Bucket=store.bucket)
            return store
        except Exception:  # not listening yet
            if proc.poll() is not None or time.time() > deadline:
                kill_session(proc.pid)
                raise RuntimeError("moto server did not start: " + log.read_text()[-2000:])
            time.sleep(0.5)


def stop_s3(store: S3Store) -> None:
    kill_session(store.pid)


def write_yaml(path: Path, base: Path, **sections: Any) -> Path:
    """A config file that builds on ``base`` (its ``defaults``) with ``sections`` on top."""
    path.write_text(OmegaConf.to_yaml(OmegaConf.create({"defaults": [str(base)], **json.loads(json.dumps(sections))})))
    return path
