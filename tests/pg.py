"""A real PostgreSQL for tests (STYLE.md, item 15), and throwaway clusters.

Order: $ARROWLINE_TEST_PG_URI; else the server on 127.0.0.1:5432 if it answers; else a
throwaway cluster started from the local `initdb` / `pg_ctl` (as the `postgres` OS user when the
tests run as root). Without any of them the tests fail and say what to do; they never skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_URI = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(uri: str) -> bool:
    import adbc_driver_postgresql.dbapi as pgdb

    try:
        connection = pgdb.connect(uri)
    except Exception:
        return False
    connection.close()
    return True


def _binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def throwaway_cluster(password: str | None = None) -> Iterator[str]:
    """A fresh cluster on a free port; with `password`, the postgres role needs it (scram)."""
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError("no initdb found: install PostgreSQL or set ARROWLINE_TEST_PG_URI")
    root = os.geteuid() == 0
    owner = pwd.getpwnam("postgres") if root else None
    base = Path(tempfile.mkdtemp(prefix="arrowline-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def as_owner(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "postgres", "--", *args] if owner is not None else args
        return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    port = _free_port()
    auth = ["--auth=trust"]
    password_file = base / "pw"
    if password is not None:
        password_file.write_text(password + "\n")
        if owner is not None:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        auth = ["--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={password_file}"]
    as_owner([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", *auth])
    as_owner(
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off",
            "start",
        ]
    )
    try:
        uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        if password is None:
            deadline = time.monotonic() + 20
            while not _answers(uri) and time.monotonic() < deadline:
                time.sleep(0.2)
        yield uri
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def test_server() -> Iterator[str]:
    """The URI of the PostgreSQL the tests use, starting one if need be."""
    from_env = os.environ.get("ARROWLINE_TEST_PG_URI")
    if from_env:
        yield from_env
        return
    if _answers(DEFAULT_URI):
        yield DEFAULT_URI
        return
    if _binaries() is None:
        raise RuntimeError(
            "the PostgreSQL tests need a server: set ARROWLINE_TEST_PG_URI, run one on "
            "127.0.0.1:5432 (user postgres, database test), or install PostgreSQL so a "
            "throwaway cluster can be started"
        )
    with throwaway_cluster() as uri:
        yield uri
