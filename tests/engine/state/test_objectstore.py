"""The object-store workspace beyond the shared contract (tests/engine/state/test_workspace.py):
URIs checked as an attacker would write them, publishing by a manifest written last (a process
killed between its upload and its manifest publishes nothing), readers during a publish, and the
cached copies readers read. Against a real S3-compatible server on loopback (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.core.errors import DefinitionError, StateError
from engine.core.s3 import ObjectStoreLocation, is_object_store
from engine.state.objectstore import (
    MANIFEST,
    ObjectStoreWorkspace,
    ensure_local,
    local_output,
    output_present,
    output_schema,
)
from engine.state.workspace import Workspace
from tests.s3_server import S3Bucket


def _workspace(s3: S3Bucket, tmp_path: Path) -> ObjectStoreWorkspace:
    return ObjectStoreWorkspace.open(s3.uri("ws"), scratch=tmp_path / "scratch")


def _publish(workspace: Workspace, run_id: str, values: list[int], attempt: int = 1) -> Path:
    staging = Workspace.prepare_staging(workspace.staging("p", "t", run_id, attempt))
    pq.write_table(pa.table({"x": values}), staging / "part-00000.parquet")
    return workspace.publish(staging, "p", "t", run_id)


# -- URIs ------------------------------------------------------------------------------------


def test_a_uri_is_read_into_bucket_prefix_endpoint_and_region() -> None:
    location = ObjectStoreLocation.parse(
        "s3://my-bucket/a/b_c?endpoint=http://127.0.0.1:9000&region=eu-west-1", environ={}
    )
    assert (location.bucket, location.prefix) == ("my-bucket", "a/b_c")
    assert (location.endpoint, location.region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert location.root == Path("my-bucket/a/b_c")
    # what the catalog records names no endpoint: a reader uses its own settings'
    assert location.locator(location.root / "p") == "s3://my-bucket/a/b_c/p"
    assert is_object_store("S3://x/y")
    assert not is_object_store("/tmp/s3://x")


def test_endpoint_and_region_come_from_the_environment_when_the_uri_leaves_them_out() -> None:
    env = {"AWS_ENDPOINT_URL": "https://minio.internal:9000/", "AWS_DEFAULT_REGION": "us-east-2"}
    location = ObjectStoreLocation.parse("s3://bucket", environ=env)
    assert (location.endpoint, location.region, location.prefix) == (
        "https://minio.internal:9000",
        "us-east-2",
        "",
    )


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3://AKIA:secret@bucket/p", "carries credentials"),
        ("s3://bucket/p?access_key=AKIA&secret_key=x", "unknown option 'access_key'"),
        ("s3://bucket/../etc", "prefix part '..' is not allowed"),
        ("s3://bucket/a/./b", "prefix part '.' is not allowed"),
        ("s3://bucket/a%2F..%2Fb", "is not allowed"),
        ("s3://bucket/a b", "is not allowed"),
        ("s3://bucket/p';drop", "is not allowed"),
        ("s3://Bucket_Upper/p", "not a valid bucket name"),
        ("s3://b/p", "not a valid bucket name"),
        ("s3://bucket/p?endpoint=http://host/path", "is not http(s)://host[:port]"),
        ("s3://bucket/p?endpoint=file:///etc", "is not http(s)://host[:port]"),
        ("s3://bucket/p?endpoint=http://h:1&endpoint=http://h:2", "given twice"),
        ("s3://bucket/p?region=us-east-1%0Ax", "is not a region name"),
        ("s3://bucket/p#frag", "fragment"),
        ("gs://bucket/p", "only s3://"),
    ],
)
def test_a_bad_uri_is_refused_saying_which_part(uri: str, says: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        ObjectStoreLocation.parse(uri, environ={})
    assert says in str(caught.value)
    assert "secret" not in caught.value.message.replace("secret_key", "")


def test_a_missing_bucket_or_a_server_that_does_not_answer_is_a_clear_error(
    s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StateError, match="bucket 'no-such-bucket' does not exist"):
        ObjectStoreWorkspace.open(
            f"s3://no-such-bucket/ws?endpoint={s3.endpoint}", scratch=tmp_path
        )
    with pytest.raises(StateError, match="cannot be reached") as caught:
        ObjectStoreWorkspace.open("s3://bucket/ws?endpoint=http://127.0.0.1:9", scratch=tmp_path)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


# -- publishing ------------------------------------------------------------------------------


def test_an_output_is_an_upload_of_its_own_named_by_the_manifest_written_last(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1, 2, 3])
    keys = s3.keys("ws/p/t")
    (part,) = [k for k in keys if k.endswith("part-00000.parquet")]
    assert part.startswith(f"{s3.bucket}/ws/p/t/r1/")
    assert part.count("/") == 6
    assert f"{s3.bucket}/ws/p/t/r1/{MANIFEST}" in keys
    assert f"{s3.bucket}/ws/p/t/LATEST" in keys
    locator = workspace.locator(published)
    assert locator == f"s3://{s3.bucket}/ws/p/t/r1"
    assert output_present(locator)
    assert output_schema(locator) == pa.schema([("x", pa.int64())])
    # published from this machine: the staged files became the cached copy
    assert not any(workspace.scratch.rglob("*.parquet"))


def test_publishing_again_deletes_the_old_upload_but_a_reader_holding_it_still_reads(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1, 2])
    before = workspace.table("t", "r1", published)
    _publish(workspace, "r1", [7], attempt=2)
    uploads = {k.split("/")[5] for k in s3.keys("ws/p/t/r1") if k.endswith(".parquet")}
    assert len(uploads) == 1  # the old upload is gone from the store
    after = workspace.table("t", "r1", published)
    assert pq.read_table(after.files[0]).column("x").to_pylist() == [7]
    # the reader that opened the first output reads it whole, from its cached copy
    assert pq.read_table(before.files[0]).column("x").to_pylist() == [1, 2]


def test_a_reader_elsewhere_reads_an_output_by_the_locator_the_catalog_keeps(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path / "host-a")
    staging = Workspace.prepare_staging(workspace.staging("p", "t", "r1", 1))
    pq.write_table(pa.table({"x": [1, 2]}), staging / "part-00000.parquet")
    (staging / "quarantine").mkdir()
    pq.write_table(pa.table({"x": [9]}), staging / "quarantine" / "part-00000.parquet")
    locator = workspace.locator(workspace.publish(staging, "p", "t", "r1"))
    folder = local_output(locator, cache=tmp_path / "host-b-cache")  # nothing cached there
    assert folder.is_relative_to(tmp_path / "host-b-cache")
    assert pq.read_table(folder / "part-00000.parquet").column("x").to_pylist() == [1, 2]
    assert pq.read_table(folder / "quarantine" / "part-00000.parquet").num_rows == 1
    assert local_output(locator, cache=tmp_path / "host-b-cache") == folder  # copied once


def test_a_manifest_naming_files_it_cannot_hold_is_refused(s3: S3Bucket, tmp_path: Path) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1])
    manifest = f"{published}/{MANIFEST}"
    for forged in (
        b'{"upload": "../../../../etc", "parts": []}',
        b'{"upload": "0123456789abcdef", "parts": [["../../x.parquet", 1]]}',
        b"not json",
    ):
        with s3.filesystem.open_output_stream(manifest) as stream:
            stream.write(forged)
        with pytest.raises(StateError, match="manifest"):
            local_output(workspace.locator(published), cache=tmp_path / "fresh")
    assert not (tmp_path / "x.parquet").exists()


_KILLED = """
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from engine.state.objectstore import ObjectStoreWorkspace
from engine.state.workspace import Workspace
workspace = ObjectStoreWorkspace.open(sys.argv[1], scratch=Path(sys.argv[2]))
staging = Workspace.prepare_staging(workspace.staging("p", "t", "r1", 2))
pq.write_table(pa.table({"x": [5, 6, 7]}), staging / "part-00000.parquet")
workspace.publish(staging, "p", "t", "r1")
"""


def test_a_kill_between_the_upload_and_the_manifest_publishes_nothing(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1, 2])  # what was published before stays
    script = tmp_path / "publish.py"
    script.write_text(textwrap.dedent(_KILLED))
    env = {**os.environ, "ARROWLINE_FAULT": "objectstore.before_manifest"}
    process = subprocess.Popen(
        [sys.executable, str(script), s3.uri("ws"), str(tmp_path / "scratch")],
        stderr=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "reached objectstore.before_manifest" in line:
            break
    process.kill()  # SIGKILL: no cleanup of any kind
    process.wait()
    process.stderr.close()
    uploads = {k.split("/")[5] for k in s3.keys("ws/p/t/r1") if k.endswith(".parquet")}
    assert len(uploads) == 2  # the dead attempt's upload is there ...
    table = workspace.table("t", "r1", published)  # ... but readers still see the old output
    assert pq.read_table(table.files[0]).column("x").to_pylist() == [1, 2]
    workspace.sweep_staging("p", "r1")  # the next run's recovery
    uploads = {k.split("/")[5] for k in s3.keys("ws/p/t/r1") if k.endswith(".parquet")}
    assert len(uploads) == 1
    assert workspace.table("t", "r1", published).num_rows == 2


def test_readers_during_publishes_see_one_whole_output_or_the_other(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1] * 10)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        reader = ObjectStoreWorkspace.open(
            s3.uri("ws"), scratch=tmp_path / "reader", cache=tmp_path / "reader-cache"
        )
        while not done.is_set():
            try:
                table = ensure_local(reader.table("t", "r1", published), reader.cache)
                seen.append(pa.concat_tables(pq.read_table(f) for f in table.files).num_rows)
            except StateError as exc:  # replaced between its manifest and its download
                if "cannot be read" not in str(exc) and "published again" not in str(exc):
                    errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for attempt in range(2, 8):
        _publish(workspace, "r1", [attempt] * (10 * attempt), attempt=attempt)
    done.set()
    for thread in readers:
        thread.join()
    assert not errors
    assert seen
    assert set(seen) <= {10 * n for n in range(1, 8)}


# -- from a review: what a store that fails, a damaged cache or a forged row must not do -----


def test_a_store_that_does_not_answer_is_an_error_never_a_deleted_output(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    locator = workspace.locator(_publish(workspace, "r1", [1]))
    assert output_present(locator)
    from engine.core.s3 import trust

    # the same bucket, now configured at an endpoint where nothing listens
    trust(ObjectStoreLocation(s3.bucket, "ws", "http://127.0.0.1:9", "us-east-1"))
    try:
        with pytest.raises(StateError, match="workspace cannot be read"):
            output_present(locator)  # a planner must not rebuild from scratch on a timeout
    finally:
        trust(workspace.location)
    assert output_present(locator)


def test_a_cached_copy_missing_a_part_is_copied_again_whole(s3: S3Bucket, tmp_path: Path) -> None:
    workspace = _workspace(s3, tmp_path)
    staging = Workspace.prepare_staging(workspace.staging("p", "t", "r1", 1))
    for n in range(3):
        pq.write_table(pa.table({"x": [n] * 10}), staging / f"part-{n:05d}.parquet")
    locator = workspace.locator(workspace.publish(staging, "p", "t", "r1"))
    folder = local_output(locator, workspace.cache)
    (folder / "part-00001.parquet").unlink()  # a cleaner, a hand, another user's cache
    (folder / "part-00002.parquet").write_bytes(b"short")
    again = local_output(locator, workspace.cache)
    assert sum(pq.read_table(p).num_rows for p in sorted(again.glob("*.parquet"))) == 30


def test_a_locator_from_the_catalog_never_chooses_where_credentials_go(
    s3: S3Bucket, tmp_path: Path
) -> None:
    from engine.core.s3 import locate

    workspace = _workspace(s3, tmp_path)
    locator = workspace.locator(_publish(workspace, "r1", [1]))
    location, _ = locate(locator)
    assert location.endpoint == s3.endpoint  # this host's setting for the bucket
    for forged in (
        locator + "?endpoint=http://127.0.0.1:5932",
        locator.replace("/ws/", "/ws/../../other/"),
        locator + "/./x",
        "s3://" + s3.bucket + "//etc",
        "file:///etc/passwd",
    ):
        with pytest.raises(StateError, match="not an output arrowline recorded"):
            locate(forged)


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        (
            b'{"format": 1, "upload": "0123456789abcdef", "parts": [["../../../hr/pay.parquet", 1]],'
            b' "quarantine": [], "rows": 1, "schema": null}',
            "name",
        ),
        (
            b'{"format": 1, "upload": "0123456789abcdef", "parts": "zz", "quarantine": [],'
            b' "rows": 1, "schema": null}',
            "parts",
        ),
        (
            b'{"format": 1, "upload": "0123456789abcdef", "parts": [["part-00000.parquet", "big"]],'
            b' "quarantine": [], "rows": 1, "schema": null}',
            "size",
        ),
        (
            b'{"format": 2, "upload": "0123456789abcdef", "parts": [], "quarantine": [], "rows": 0}',
            "format",
        ),
        (b"not json", "json"),
    ],
)
def test_a_forged_manifest_is_refused_whole_by_every_reader(
    s3: S3Bucket, tmp_path: Path, manifest: bytes, why: str
) -> None:
    workspace = _workspace(s3, tmp_path)
    published = _publish(workspace, "r1", [1])
    with s3.filesystem.open_output_stream(f"{published}/{MANIFEST}") as stream:
        stream.write(manifest)
    locator = workspace.locator(published)
    fresh = ObjectStoreWorkspace.open(s3.uri("ws"), scratch=tmp_path / "other")
    for read in (
        lambda: output_schema(locator),
        lambda: output_present(locator),
        lambda: local_output(locator, cache=tmp_path / "fresh"),
        lambda: fresh.output_bytes(published),
        lambda: fresh.table("t", "r1", published),
    ):
        with pytest.raises(StateError, match="not a manifest arrowline wrote"):
            read()


def test_an_upload_finishing_after_its_attempt_was_abandoned_is_deleted(
    s3: S3Bucket, tmp_path: Path
) -> None:
    workspace = _workspace(s3, tmp_path)
    staging = Workspace.prepare_staging(workspace.staging("p", "t", "r1", 1))
    pq.write_table(pa.table({"x": [1]}), staging / "part-00000.parquet")
    workspace.discard(staging)  # the run gave up on the attempt while it was still writing
    staging.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), staging / "part-00000.parquet")
    workspace.upload(staging, "p", "t", "r1")  # its thread ends later and uploads
    assert s3.keys("ws/p") == []


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (" s3://bucket/ws", "spaces or control characters"),
        ("s3:/bucket/ws", "only s3://"),
        ("../escaped", "only s3://"),
        ("/abs/folder", "only s3://"),
    ],
)
def test_a_setting_that_is_not_an_s3_uri_is_refused(uri: str, says: str) -> None:
    with pytest.raises(DefinitionError, match=says):
        ObjectStoreLocation.parse(uri, environ={})


def test_regions_and_hosts_of_common_s3_servers_are_accepted_and_credentials_never_echoed() -> None:
    for uri in (
        "s3://bucket/p?region=auto",  # Cloudflare R2
        "s3://bucket/p?region=garage&endpoint=http://minio_1:9000",  # Garage, a compose host
        "s3://bucket/p?endpoint=https://[::1]:9000",
    ):
        ObjectStoreLocation.parse(uri, environ={})
    with pytest.raises(DefinitionError) as caught:
        ObjectStoreLocation.parse(
            "s3://bucket/p?endpoint=http://AKIAX:verysecretpw@127.0.0.1:9000", environ={}
        )
    assert "verysecretpw" not in str(caught.value)
    assert "carries credentials" in str(caught.value)


def test_a_copy_half_made_by_a_killed_reader_is_swept(s3: S3Bucket, tmp_path: Path) -> None:
    workspace = _workspace(s3, tmp_path)
    locator = workspace.locator(_publish(workspace, "r1", [1]))
    folder = local_output(locator, tmp_path / "c")
    dead = folder.with_name(f".{folder.name}.999999999.1")  # no such process
    (dead / "junk").parent.mkdir(parents=True)
    (dead / "part-00000.parquet").write_bytes(b"half")
    folder.rename(folder.with_name("gone"))  # make the next read copy it again
    assert local_output(locator, tmp_path / "c") == folder
    assert not dead.exists()
