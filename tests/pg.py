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
from typing import Any

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


def free_port() -> int:
    """A loopback port nothing listens on at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def loopback_server(
    name: str, command: list[str], port: int, log: Path, **popen: Any
) -> Iterator[None]:
    """Run `command` (a server told to listen on `port`) until the block ends; fail the test
    with the server's own log when it exits or does not answer within 60 s."""
    import pytest

    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"{name} did not start: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{name} did not answer within 60 s")
            time.sleep(0.1)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


class Cluster:
    """A throwaway cluster a test can stop and start, to see what clients see meanwhile."""

    def __init__(
        self, binaries: Path, base: Path, port: int, owner: pwd.struct_passwd | None
    ) -> None:
        self.binaries = binaries
        self.data = base / "data"
        self.base = base
        self.port = port
        self.owner = owner
        self.uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.settings: dict[str, str] = {}
        """Server settings (`-c name=value`) the cluster starts with."""

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """A command as the cluster's OS user (the `postgres` user when the tests run as root)."""
        command = ["runuser", "-u", "postgres", "--", *args] if self.owner is not None else args
        return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def start(self, *, wait: bool = True) -> None:
        sockets = self.base / "sock"
        self.run(
            [
                str(self.binaries / "pg_ctl"),
                "-D",
                str(self.data),
                "-w" if wait else "-W",
                "-l",
                str(self.base / "log"),
                "-o",
                f"-p {self.port} -k {sockets} -h 127.0.0.1 -c fsync=off"
                + "".join(f" -c {name}={value}" for name, value in self.settings.items()),
                "start",
            ]
        )

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """`pg_ctl stop -m mode`; a `smart` stop without waiting leaves the server refusing new
        sessions ("the database system is shutting down") until the open ones end."""
        pg_ctl = str(self.binaries / "pg_ctl")
        self.run([pg_ctl, "-D", str(self.data), "-m", mode, "-w" if wait else "-W", "stop"])


@contextlib.contextmanager
def throwaway_server(
    password: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """A fresh cluster on a free port; with `password`, the postgres role needs it (scram);
    `settings` are server settings, e.g. {"wal_level": "logical"} for change capture."""
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError("no initdb found: install PostgreSQL or set ARROWLINE_TEST_PG_URI")
    root = os.geteuid() == 0
    owner = pwd.getpwnam("postgres") if root else None
    base = Path(tempfile.mkdtemp(prefix="arrowline-pg-"))
    sockets = base / "sock"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(binaries, base, free_port(), owner)
    cluster.settings = dict(settings or {})
    auth = ["--auth=trust"]
    password_file = base / "pw"
    if password is not None:
        password_file.write_text(password + "\n")
        if owner is not None:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        auth = ["--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={password_file}"]
    cluster.run([str(binaries / "initdb"), "-D", str(cluster.data), "-U", "postgres", *auth])
    cluster.start()
    try:
        if password is None:
            deadline = time.monotonic() + 20
            while not _answers(cluster.uri) and time.monotonic() < deadline:
                time.sleep(0.2)
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster(password: str | None = None) -> Iterator[str]:
    """The URI of a fresh cluster on a free port (see throwaway_server)."""
    with throwaway_server(password) as cluster:
        yield cluster.uri


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
