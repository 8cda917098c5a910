"""Property: PostgreSQL -> Arrow -> PostgreSQL through a pipeline changes no value."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Pipeline
from tests.conftest import PgSchema

# PostgreSQL text and jsonb cannot hold NUL; surrogates are not valid UTF-8.
TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))

COLUMNS = {
    "i2": ("int2", st.integers(-(2**15), 2**15 - 1).map(str)),
    "i4": ("int4", st.integers(-(2**31), 2**31 - 1).map(str)),
    "i8": ("int8", st.integers(-(2**63), 2**63 - 1).map(str)),
    "f8": ("float8", st.floats(allow_nan=False, allow_infinity=False).map(repr)),
    "n": (
        "numeric(12,2)",
        st.decimals(
            min_value=Decimal("-9999999999.99"),
            max_value=Decimal("9999999999.99"),
            places=2,
            allow_nan=False,
            allow_infinity=False,
        ).map(str),
    ),
    "t": ("text", st.text(TEXT, max_size=20)),
    "b": ("bool", st.booleans().map(str)),
    "d": ("date", st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)),
    "tm": ("time", st.times().map(time.isoformat)),
    "ts": (
        "timestamp",
        st.datetimes(datetime(1800, 1, 1), datetime(2200, 1, 1)).map(datetime.isoformat),
    ),
    "tz": (
        "timestamptz",
        st.datetimes(datetime(1800, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)).map(
            datetime.isoformat
        ),
    ),
    "u": ("uuid", st.uuids().map(str)),
    "jb": (
        "jsonb",
        st.dictionaries(
            st.text(TEXT, max_size=5), st.integers() | st.text(TEXT, max_size=5), max_size=3
        ).map(json.dumps),
    ),
    "by": ("bytea", st.binary(max_size=16).map(lambda b: "\\x" + b.hex())),
    "ai": (
        "int4[]",
        st.lists(st.integers(-1000, 1000), max_size=4).map(
            lambda xs: "{" + ",".join(map(str, xs)) + "}"
        ),
    ),
    "iv": ("interval", st.integers(-(10**10), 10**10).map(lambda us: f"{us} microseconds")),
}

rows = st.lists(
    st.fixed_dictionaries({name: st.none() | strategy for name, (_, strategy) in COLUMNS.items()}),
    min_size=0,
    max_size=25,
)


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=rows)
def test_values_survive_postgres_arrow_postgres(
    pg: PgSchema, tmp_path_factory: pytest.TempPathFactory, data: list[dict[str, str | None]]
) -> None:
    source, target = pg.table("source"), pg.table("target")
    columns = ", ".join(f"{name} {pg_type}" for name, (pg_type, _) in COLUMNS.items())
    pg.execute(
        f"drop table if exists {source}",
        f"drop table if exists {target}",
        f"create table {source} ({columns})",
    )
    if data:
        import adbc_driver_postgresql.dbapi as pgdb

        placeholders = ", ".join(
            f"${i + 1}::{pg_type}" for i, (_, (pg_type, _)) in enumerate(COLUMNS.items())
        )
        with pgdb.connect(pg.uri) as connection, connection.cursor() as cursor:
            cursor.executemany(
                f"insert into {source} values ({placeholders})",
                [tuple(row[name] for name in COLUMNS) for row in data],
            )
            connection.commit()
    workdir = tmp_path_factory.mktemp("roundtrip")
    p = Pipeline(pg.schema, base_dir=workdir)
    p._header["connections"] = {"wh": {"kind": "postgres", "uri": pg.uri}}
    p.extract("rows", "postgres", connection="wh", table=source, batch_bytes=1 << 16)
    p.load("back", input="rows", to="postgres", connection="wh", table=target)
    result = p.run(project_dir=workdir)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert pg.rows(f"select count(*) from {target}") == [(len(data),)]
    missing = pg.rows(
        f"select count(*) from (select * from {source} except all select * from {target}) d"
    )
    extra = pg.rows(
        f"select count(*) from (select * from {target} except all select * from {source}) d"
    )
    assert (missing, extra) == ([(0,)], [(0,)])
