"""Shared fixtures: a project folder, pipeline writers, a CLI runner, clean logging."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# pytest-xdist's workers inherit COLUMNS=80; the CLI's messages would wrap at 80 columns there
# and at 160 in a serial run (rich's width for captured output). Every worker sees what a serial
# run sees. (Before the CLI's consoles are made, at its first import below.)
os.environ.pop("COLUMNS", None)

import pytest
from click.testing import CliRunner, Result
from loguru import logger

from engine.cli.logs import PACKAGES
from engine.core.problems import Problem
from tests.iceberg_rest import rest_catalog, rest_catalog_server  # noqa: F401  (a REST catalog)
from tests.s3_server import guarded_s3, s3, s3_server  # noqa: F401  (fixtures: loopback S3 servers)

T = TypeVar("T")


def at_once(*calls: Callable[[], T]) -> list[T | BaseException]:
    """Run the calls on threads released together (a barrier), to make races happen; each
    call's result, or the exception it raised, in order."""
    start = threading.Barrier(len(calls))
    outcomes: list[T | BaseException] = [RuntimeError("did not finish")] * len(calls)

    def one(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = calls[index]()
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture(autouse=True)
def _quiet_loguru() -> Iterator[None]:
    """The CLI configures loguru globally; put it back after every test."""
    yield
    logger.remove()
    for package in PACKAGES:
        logger.disable(package)


@pytest.fixture(autouse=True)
def _embedded_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests use the embedded catalog unless they ask for a shared one (`each_catalog`)."""
    monkeypatch.delenv("ARROWLINE_CATALOG", raising=False)
    monkeypatch.delenv("ARROWLINE_WORKSPACE", raising=False)


@dataclass(frozen=True)
class SharedCatalog:
    """A PostgreSQL catalog in a schema of its own, named by $ARROWLINE_CATALOG."""

    uri: str
    schema: str

    @property
    def location(self) -> str:
        return f"{self.uri}?schema={self.schema}"

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        """Query the catalog's tables; [] while they do not exist yet."""
        import adbc_driver_postgresql.dbapi as pgdb

        with pgdb.connect(self.uri, autocommit=True) as connection, connection.cursor() as cur:
            if not _fetch(cur, f"select to_regclass('{self.schema}.runs') is not null")[0][0]:
                return []
            cur.execute(f"set search_path to {self.schema}")
            return _fetch(cur, sql)


def _fetch(cursor: Any, sql: str) -> list[tuple[object, ...]]:
    cursor.execute(sql)
    return list(cursor.fetchall())


@pytest.fixture
def shared_catalog(
    pg_uri: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SharedCatalog]:
    """ARROWLINE_CATALOG set to a fresh schema on the test server, as a deployment would."""
    import hashlib

    catalog = SharedCatalog(
        pg_uri, "c_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    )
    drop = f"drop schema if exists {catalog.schema} cascade"
    PgSchema(pg_uri, catalog.schema).execute(drop)
    monkeypatch.setenv("ARROWLINE_CATALOG", catalog.location)
    yield catalog
    PgSchema(pg_uri, catalog.schema).execute(drop)


@pytest.fixture(params=["embedded", "postgres"])
def each_catalog(request: pytest.FixtureRequest) -> str:
    """Run the test twice: on the embedded SQLite catalog, then on a shared PostgreSQL one."""
    if request.param == "postgres":
        request.getfixturevalue("shared_catalog")
    return str(request.param)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder that is also the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARROWLINE_PROJECT_DIR", raising=False)
    return tmp_path


WritePipeline = Callable[[str, str], Path]


@pytest.fixture
def write(project: Path) -> WritePipeline:
    """write("name.yaml", yaml_text) -> path, with the text dedented."""

    def _write(name: str, text: str) -> Path:
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run `arrowline ...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from engine.cli import main

    def _run(*args: str) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return _run


class PgSchema:
    """A schema of its own on the test server, with small helpers."""

    def __init__(self, uri: str, schema: str) -> None:
        self.uri = uri
        self.schema = schema

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def execute(self, *statements: str) -> None:
        import adbc_driver_postgresql.dbapi as pgdb

        with pgdb.connect(self.uri) as connection, connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            connection.commit()

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        import adbc_driver_postgresql.dbapi as pgdb

        with pgdb.connect(self.uri) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    from tests.pg import test_server

    with test_server() as uri:
        yield uri


@pytest.fixture
def pg(
    pg_uri: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PgSchema]:
    """Each test gets its own schema (dropped afterwards) and $TEST_PG_URI for pipelines."""
    import hashlib

    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    schema = PgSchema(pg_uri, name)
    # Pipelines in these tests are named after the schema; their watermarks live in the shared
    # arrowline_state schema and must not leak from one execution of a test into the next.
    forget = (
        "do $$ begin if to_regclass('arrowline_state.watermarks') is not null then "
        f"delete from arrowline_state.watermarks where pipeline = '{name}'; end if; "
        "if to_regclass('arrowline_state.loads') is not null then "
        f"delete from arrowline_state.loads where pipeline = '{name}'; end if; end $$"
    )
    schema.execute(f"drop schema if exists {name} cascade", f"create schema {name}", forget)
    monkeypatch.setenv("TEST_PG_URI", pg_uri)
    yield schema
    schema.execute(f"drop schema if exists {name} cascade", forget)


def problems_of(path: Path) -> list[Problem]:
    """What validating the pipeline (file or SQL project folder) at `path` reports."""
    from engine.tasks.checks import check_file

    return check_file(path)[1]


def only(problems: list[Problem], code: str) -> Problem:
    """The one problem of `code` among `problems` (the assertion names all when there is not
    exactly one)."""
    found = [p for p in problems if p.code == code]
    assert len(found) == 1, f"expected one {code}, got {[p.format() for p in problems]}"
    return found[0]
