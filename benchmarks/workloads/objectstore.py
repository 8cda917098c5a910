"""The workspace on an S3-compatible object store against the local folder, for the same
pipeline: sql_dag's 20 SQL tasks (1M lineitem rows by default, every output kept), run once with
`.arrowline/workspace/` and once with `workspace: s3://...` on a moto server on loopback, the one
S3 server this machine can run (Python, so its throughput, not arrowline's, bounds the upload).

Every output is uploaded under a prefix of its own and committed by a manifest; the attempt's
thread uploads while others run. The server runs in its own process started before the clock;
its memory is not in the contender's peak RSS. Both contenders report sql_dag's checksum of the
marts, so the harness refuses one that computed something else.

Child usage: python -m benchmarks.workloads.objectstore {local,s3} --data DIR
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main, engine_table, free_port
from benchmarks.workloads.sql_dag import DATA, MODELS, _arrowline, generate

_KEY, _SECRET = "bench", "bench-secret"


def _store(endpoint: str, **options: Any) -> Any:
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(
        access_key=_KEY, secret_key=_SECRET, endpoint_override=endpoint, scheme="http", **options
    )


@contextmanager
def moto_store(out: Path) -> Iterator[str]:
    """moto's server on a free loopback port with a bucket `bench`, this process's AWS
    environment pointed at it (a cache folder in `out`); its endpoint. Stopped afterwards."""
    port = free_port()
    with (out / "moto.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ |= {
            "AWS_ACCESS_KEY_ID": _KEY,
            "AWS_SECRET_ACCESS_KEY": _SECRET,
            "AWS_REGION": "us-east-1",
            "ARROWLINE_CACHE_DIR": str(out / "cache"),
        }
        _store(endpoint, allow_bucket_creation=True).create_dir("bench")
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def _local(data: Path, out: Path) -> dict[str, Any]:
    return _arrowline(data, out)


def _s3(data: Path, out: Path) -> dict[str, Any]:
    with moto_store(out) as endpoint:
        return _arrowline(data, out, workspace=f"s3://bench/ws?endpoint={endpoint}")


def _local_then_upload(data: Path, out: Path) -> dict[str, Any]:
    """The floor for getting the same outputs into the store: run with the local folder, then
    copy the whole workspace up in one threaded pyarrow `copy_files` (no manifests, nothing
    atomic), timed together."""
    import pyarrow.fs as pafs

    with moto_store(out) as endpoint:
        reported = _arrowline(data, out)  # its engine_s: the run alone, not the checksum
        started = time.perf_counter()
        pafs.copy_files(
            str(out / ".arrowline" / "workspace"),
            "bench/copied",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=_store(endpoint, allow_delayed_open=True),
            use_threads=True,
        )
        uploaded = time.perf_counter() - started
        return reported | {"engine_s": reported["engine_s"] + uploaded, "upload_s": uploaded}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 60_000 if args.quick else (args.rows or 1_000_000)
    folder = generate(rows, DATA / f"tpch-{rows}")
    return {"rows": rows, "data": str(folder), "tasks": len(MODELS)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.objectstore")
    return [
        Contender(label, (*module, name, "--data", params["data"]), group="marts")
        for label, name in (
            ("arrowline/local", "local"),
            ("arrowline/s3", "s3"),
            ("local, then copy_files up", "local_then_upload"),
        )
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    summary, rows = engine_table(outcomes)
    local, remote = summary.get("arrowline/local"), summary.get("arrowline/s3")
    if local and remote:
        ratio = remote["engine_s"] / local["engine_s"]
        summary["s3_vs_local"] = ratio
        verdict = "✅" if ratio <= 1.3 else "❌"
        rows.append(
            f"\nworkspace on the loopback S3 server / local folder (engine time): {ratio:.2f}x "
            f"(goal ≤ 1.3x {verdict})"
        )
    floor = summary.get("local, then copy_files up")
    if remote and floor:
        summary["s3_vs_local_then_upload"] = remote["engine_s"] / floor["engine_s"]
        rows.append(
            "\nworkspace on the S3 server / local run then one bulk upload (the floor for the "
            f"same bytes in the store): {summary['s3_vs_local_then_upload']:.2f}x"
        )
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {"local": _local, "s3": _s3, "local_then_upload": _local_then_upload},
        needs={"s3": "moto", "local_then_upload": "moto"},
    )


if __name__ == "__main__":
    main()
