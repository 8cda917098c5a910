"""PostgreSQL -> Arrow for every type the issue names, NULLs included, on a real server."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.base import ConnectorContext
from connectors.postgres.config import PostgresConnection, PostgresSource
from connectors.postgres.connection import resolve
from connectors.postgres.source import open_postgres
from engine.core.errors import DataError
from tests.conftest import PgSchema

COLUMNS = {
    "i2": ("int2", "1", pa.int16(), 1),
    "i4": ("int4", "2", pa.int32(), 2),
    "i8": ("int8", "3", pa.int64(), 3),
    "f4": ("float4", "1.5", pa.float32(), 1.5),
    "f8": ("float8", "2.25", pa.float64(), 2.25),
    "n": ("numeric(12,2)", "12345.67", pa.decimal128(12, 2), Decimal("12345.67")),
    "n_big": (
        "numeric(50,10)",
        "12345678901234567890123456789012345678.0123456789",
        pa.decimal256(50, 10),
        Decimal("12345678901234567890123456789012345678.0123456789"),
    ),
    "n_free": ("numeric", "3.141592653", pa.decimal128(38, 9), Decimal("3.141592653")),
    "t": ("text", "'héllo'", pa.string(), "héllo"),
    "v": ("varchar(10)", "'abc'", pa.string(), "abc"),
    "b": ("bool", "true", pa.bool_(), True),
    "d": ("date", "'2024-02-29'", pa.date32(), date(2024, 2, 29)),
    "tm": ("time", "'12:34:56.789'", pa.time64("us"), time(12, 34, 56, 789000)),
    "ts": (
        "timestamp",
        "'2024-01-02 03:04:05.123456'",
        pa.timestamp("us"),
        datetime(2024, 1, 2, 3, 4, 5, 123456),
    ),
    "tz": (
        "timestamptz",
        "'2024-01-02 03:04:05+02'",
        pa.timestamp("us", "UTC"),
        datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC),
    ),
    "iv": ("interval", "'1 mon 2 days 03:00:00'", pa.duration("us"), timedelta(days=32, hours=3)),
    "u": (
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        pa.uuid(),
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ),
    "j": ("json", """'{"a": 1}'""", pa.json_(), '{"a": 1}'),
    "jb": ("jsonb", """'{"b": 2}'""", pa.json_(), '{"b": 2}'),
    "by": ("bytea", "'\\xdeadbeef'", pa.binary(), b"\xde\xad\xbe\xef"),
    "ai": ("int4[]", "'{1,2,3}'", pa.list_(pa.int32()), [1, 2, 3]),
    "at": ("text[]", "'{a,NULL}'", pa.list_(pa.string()), ["a", None]),
    # ADBC reports no precision for array elements: they follow unconstrained_numeric, exactly.
    "an": (
        "numeric(6,2)[]",
        "'{1.50,2.25}'",
        pa.list_(pa.decimal128(38, 9)),
        [Decimal("1.50"), Decimal("2.25")],
    ),
    "e": ("{schema}.mood", "'happy'", pa.string(), "happy"),
    # Types ADBC has no Arrow type for arrive as their text, as psql shows it (their binary
    # wire form came out as bytes posing as text, or failed as invalid UTF-8).
    "ip": ("inet", "'10.0.0.1'", pa.string(), "10.0.0.1"),
    "net": ("cidr", "'10.1.0.0/16'", pa.string(), "10.1.0.0/16"),
    "mac": ("macaddr", "'08:00:2b:01:02:03'", pa.string(), "08:00:2b:01:02:03"),
    "pt": ("point", "'(1.5,2)'", pa.string(), "(1.5,2)"),
    "ttz": ("timetz", "'12:00:00+02'", pa.string(), "12:00:00+02"),
    "rng": ("int4range", "'[1,5)'", pa.string(), "[1,5)"),
    "aip": ("inet[]", "'{10.0.0.2,NULL}'", pa.list_(pa.string()), ["10.0.0.2", None]),
}


def extract(pg: PgSchema, tmp_path: Path, **config: object) -> pa.Table:
    connection = PostgresConnection(kind="postgres", uri=pg.uri)
    server = resolve("test", connection, tmp_path)
    source = PostgresSource.model_validate({"from": "postgres", "connection": "test", **config})
    ctx = ConnectorContext(tmp_path, "p", "r", "extract", connections={"test": server})
    readers = open_postgres(source, ctx)
    return pa.Table.from_batches(
        [b for reader in readers for b in reader], schema=readers[0].schema
    )


@pytest.fixture
def all_types(pg: PgSchema) -> str:
    table = pg.table("all_types")
    pg.execute(f"create type {pg.schema}.mood as enum ('sad', 'ok', 'happy')")
    columns = ", ".join(
        f"{name} {spec[0].format(schema=pg.schema)}" for name, spec in COLUMNS.items()
    )
    values = ", ".join(spec[1] for spec in COLUMNS.values())
    nulls = ", ".join("null" for _ in COLUMNS)
    pg.execute(
        f"create table {table} ({columns})", f"insert into {table} values ({values}), ({nulls})"
    )
    return table


@pytest.mark.parametrize("column", list(COLUMNS))
def test_each_type_arrives_as_its_arrow_type(
    pg: PgSchema, tmp_path: Path, all_types: str, column: str
) -> None:
    table = extract(pg, tmp_path, table=all_types, columns=[column])
    _, _, arrow_type, value = COLUMNS[column]
    assert table.schema.field(column).type == arrow_type
    got = table.column(column).to_pylist()
    assert got[1] is None  # NULLs stay NULL in every type
    assert got[0] == value


def test_pg_type_is_kept_in_field_metadata(pg: PgSchema, tmp_path: Path, all_types: str) -> None:
    table = extract(pg, tmp_path, table=all_types, columns=["n", "e"])
    assert table.schema.field("n").metadata[b"POSTGRESQL:type"] == b"numeric"


def test_unconstrained_numeric_that_does_not_fit_fails_loudly(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("free")
    pg.execute(
        f"create table {table} (x numeric)",
        f"insert into {table} values (1.5), (3.14159265358979323846)",
    )
    with pytest.raises(
        DataError,
        match=r"column 'x': NUMERIC value '3.14159265358979323846' does not fit decimal128\(38, 9\)",
    ):
        extract(pg, tmp_path, table=table)
    as_float = extract(pg, tmp_path, table=table, unconstrained_numeric="float64")
    assert as_float.column("x").to_pylist() == [1.5, pytest.approx(3.141592653589793)]
    as_text = extract(pg, tmp_path, table=table, unconstrained_numeric="string")
    assert as_text.column("x").to_pylist() == ["1.5", "3.14159265358979323846"]
    wide = extract(pg, tmp_path, table=table, unconstrained_numeric="decimal(38,20)")
    assert wide.column("x").type == pa.decimal128(38, 20)


def test_numeric_nan_is_refused_not_rounded(pg: PgSchema, tmp_path: Path) -> None:
    narrow, wide = pg.table("nan_narrow"), pg.table("nan_wide")
    pg.execute(
        f"create table {narrow} (x numeric(10,2))",
        f"insert into {narrow} values (1.5), ('NaN')",
        f"create table {wide} (x numeric(30,2))",
        f"insert into {wide} values (1.5), ('NaN')",
    )
    # up to 18 digits the server sends scaled integers; NaN cannot be one
    with pytest.raises(DataError, match="a NUMERIC value in 'x' is NaN or Infinity"):
        extract(pg, tmp_path, table=narrow)
    # wider columns come as text and are parsed in Arrow
    with pytest.raises(DataError, match=r"(?i)'nan' does not fit decimal128\(30, 2\)"):
        extract(pg, tmp_path, table=wide)


def test_queries_with_repeated_column_names_still_convert_numerics(
    pg: PgSchema, tmp_path: Path
) -> None:
    table = extract(pg, tmp_path, query="select 1.25::numeric(5,2) as v, 2.50::numeric(5,2) as v")
    assert table.schema.types == [pa.decimal128(5, 2), pa.decimal128(5, 2)]
    assert table.column(0).to_pylist() == [Decimal("1.25")]
    assert table.column(1).to_pylist() == [Decimal("2.50")]


def test_batches_are_bounded_by_batch_bytes_not_table_size(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("many")
    pg.execute(
        f"create table {table} as select g as id, md5(g::text) as s from generate_series(1, 200000) g"
    )
    connection = PostgresConnection(kind="postgres", uri=pg.uri)
    server = resolve("test", connection, tmp_path)
    source = PostgresSource.model_validate(
        {"from": "postgres", "connection": "test", "table": table, "batch_bytes": 1 << 20}
    )
    (reader,) = open_postgres(
        source, ConnectorContext(tmp_path, "p", "r", "e", connections={"test": server})
    )
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == 200_000
    assert len(sizes) > 5
    assert max(sizes) < 60_000


def test_query_source(pg: PgSchema, tmp_path: Path) -> None:
    table = extract(
        pg, tmp_path, query="select g as n, g * 2 as twice from generate_series(1, 5) g;"
    )
    assert table.column("twice").to_pylist() == [2, 4, 6, 8, 10]
