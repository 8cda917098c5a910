"""A real S3-compatible server on loopback for the object-store workspace's tests: moto's
server mode, started once per test session in its own process; each test gets a bucket of its
own and the AWS_* environment a deployment would set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.pg import free_port, loopback_server

__all__ = ["GuardedStore", "S3Bucket", "guarded_s3", "s3", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint of a moto server on loopback."""
    try:
        import moto.server  # noqa: F401
    except ImportError:  # never skipped: a missing fixture is a failure
        pytest.fail("moto's server is needed: .venv/bin/pip install -e '.[dev]' (moto[server])")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with loopback_server("moto's server", command, port, log):
        yield f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    bucket: str

    def uri(self, prefix: str = "ws") -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}"

    @property
    def filesystem(self) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object under `prefix` in the bucket, sorted."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True)
        selector.allow_not_found = True
        infos = self.filesystem.get_file_info(selector)
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)


@pytest.fixture
def s3(s3_server: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket on the loopback server, credentials in the environment, and a cache of
    downloaded outputs of the test's own."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "arrowline-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-" + uuid.uuid4().hex)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("ARROWLINE_CACHE_DIR", str(tmp_path / "object-cache"))
    bucket = S3Bucket(s3_server, "b-" + uuid.uuid4().hex[:12])
    bucket.filesystem.create_dir(bucket.bucket)
    return bucket


@dataclass(frozen=True)
class GuardedStore:
    """A moto server that checks every request's signature against the IAM user it made:
    requests signed with any other key are refused (InvalidAccessKeyId)."""

    endpoint: str
    access_key: str
    secret_key: str

    def bucket(self) -> str:
        import boto3

        name = "g-" + uuid.uuid4().hex[:12]
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def guarded_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedStore]:
    """A second moto server, with authentication on (INITIAL_NO_AUTH_ACTION_COUNT: the three
    IAM calls that make its one user and key go unsigned, every later request is checked)."""
    import json

    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto-guarded") / "server.log"
    environment = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name="us-east-1",
        )
        iam.create_user(UserName="arrowline")
        key = iam.create_access_key(UserName="arrowline")["AccessKey"]
        policy = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName="arrowline",
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        yield GuardedStore(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        process.terminate()
        process.wait(10)
