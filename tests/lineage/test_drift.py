"""Schema drift between two runs of a task: every kind of change, and `arrowline runs` showing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import Result

from engine.api.pipeline import run
from engine.state.catalog import CatalogReader
from lineage.drift import compare_schemas, is_widening, lineage_renames
from lineage.graph import LineageEdge, LineageGraph
from tests.conftest import WritePipeline

Cli = Callable[..., Result]


def schema(*fields: tuple[str, pa.DataType] | pa.Field) -> pa.Schema:
    return pa.schema([f if isinstance(f, pa.Field) else pa.field(*f) for f in fields])


def changes(old: pa.Schema, new: pa.Schema) -> list[tuple[str, str, bool]]:
    return [(c.change, c.column, c.breaking) for c in compare_schemas(old, new)]


def test_unchanged_schema_has_no_changes() -> None:
    s = schema(("id", pa.int64()), ("name", pa.string()))
    assert compare_schemas(s, s) == []


def test_every_kind_of_change_is_classified() -> None:
    old = schema(
        ("id", pa.int32()),
        ("amount", pa.decimal128(10, 2)),
        ("score", pa.float64()),
        ("code", pa.string()),
        ("gone", pa.int64()),
        pa.field("flag", pa.bool_(), nullable=False),
    )
    new = schema(
        ("id", pa.int64()),
        ("amount", pa.decimal128(12, 2)),
        ("score", pa.float32()),
        ("code", pa.int64()),
        pa.field("flag", pa.bool_(), nullable=True),
        ("extra", pa.date32()),
    )
    assert changes(old, new) == [
        ("widened", "id", False),
        ("widened", "amount", False),
        ("narrowed", "score", True),
        ("changed", "code", True),
        ("nullability", "flag", False),
        ("added", "extra", False),
        ("dropped", "gone", True),
    ]


def test_without_lineage_a_rename_is_not_guessed() -> None:
    old = schema(("id", pa.int64()), ("cust", pa.string()))
    new = schema(("id", pa.int64()), ("customer", pa.string()))
    assert changes(old, new) == [("added", "customer", False), ("dropped", "cust", True)]
    (change,) = compare_schemas(old, new, {"customer": "cust"})
    assert (change.change, change.column, change.before, change.breaking) == (
        "renamed",
        "customer",
        "cust",
        True,
    )


def test_lineage_shows_a_rename_only_when_the_sources_match_one_to_one() -> None:
    def graph(*edges: tuple[str, str]) -> LineageGraph:
        return LineageGraph(
            [LineageEdge(f"t.{target}", source, "value") for target, source in edges]
        )

    old = schema(("id", pa.int64()), ("cust", pa.string()), ("seg", pa.string()))
    before = graph(("id", "up.id"), ("cust", "up.cid"), ("seg", "up.segment"))
    renamed = schema(("id", pa.int64()), ("customer", pa.string()), ("seg", pa.string()))
    now = graph(("id", "up.id"), ("customer", "up.cid"), ("seg", "up.segment"))
    assert lineage_renames("t", old, renamed, before, now) == {"customer": "cust"}
    other = graph(("id", "up.id"), ("customer", "up.name"), ("seg", "up.segment"))
    assert lineage_renames("t", old, renamed, before, other) == {}
    twins = schema(
        ("id", pa.int64()), ("c1", pa.string()), ("c2", pa.string()), ("seg", pa.string())
    )
    both = graph(("id", "up.id"), ("c1", "up.cid"), ("c2", "up.cid"), ("seg", "up.segment"))
    assert lineage_renames("t", old, twins, before, both) == {}
    assert lineage_renames("t", old, renamed, None, now) == {}


def test_a_run_reports_a_rename_lineage_shows(write: WritePipeline, project: Path) -> None:
    template = """
        pipeline: rename
        tasks:
          - id: up
            sql: select 1 as cid, 'x' as name
          - id: t
            schema_change: evolve
            sql: select {column} from up
        """
    path = write("p.yaml", template.format(column="cid as cust"))
    assert run(path).ok
    write("p.yaml", template.format(column="cid as customer"))
    renamed = run(path)
    write("p.yaml", template.format(column="name as client"))
    replaced = run(path)
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        first = catalog.task_run(renamed.run_id, "t")
        second = catalog.task_run(replaced.run_id, "t")
    assert first is not None
    assert first.details is not None
    assert [(c["change"], c["column"], c["before"]) for c in first.details["schema_changes"]] == [
        ("renamed", "customer", "cust")
    ]
    assert second is not None
    assert second.details is not None
    # `client` comes from up.name, not from what `customer` was computed from: not a rename
    assert [(c["change"], c["column"]) for c in second.details["schema_changes"]] == [
        ("added", "client"),
        ("dropped", "customer"),
    ]


def test_nullability_changes_are_reported_but_not_breaking(tmp_path: Path) -> None:
    old = schema(pa.field("id", pa.int64(), nullable=True))
    new = schema(pa.field("id", pa.int64(), nullable=False))
    assert changes(old, new) == [("nullability", "id", False)]
    assert changes(new, old) == [("nullability", "id", False)]
    # Why not breaking: DuckDB's Parquet writer derives not-null from the rows it wrote, so the
    # same statement over different data flips the flag.
    import duckdb
    import pyarrow.parquet as pq

    connection = duckdb.connect()
    with_rows, without_rows = tmp_path / "rows.parquet", tmp_path / "none.parquet"
    connection.execute(f"copy (select 1 as id) to '{with_rows}'")
    connection.execute(f"copy (select 1 as id where false) to '{without_rows}'")
    assert pq.read_schema(with_rows).field("id").nullable is False
    assert pq.read_schema(without_rows).field("id").nullable is True


@pytest.mark.parametrize(
    ("old", "new", "widening"),
    [
        (pa.int8(), pa.int64(), True),
        (pa.int64(), pa.int32(), False),
        (pa.uint32(), pa.int64(), True),
        (pa.uint32(), pa.int32(), False),
        (pa.int32(), pa.float64(), True),
        (pa.int64(), pa.float64(), False),  # not every int64 is a float64
        (pa.decimal128(10, 2), pa.decimal128(12, 3), True),
        (pa.decimal128(10, 2), pa.decimal128(10, 3), False),
        (pa.int32(), pa.decimal128(12, 2), True),
        (pa.string(), pa.large_string(), True),
        (pa.date32(), pa.string(), False),
    ],
)
def test_widening_rules(old: pa.DataType, new: pa.DataType, widening: bool) -> None:
    assert is_widening(old, new) is widening


def test_a_run_records_and_shows_how_an_output_changed(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        "pipeline: drift\ntasks:\n  - id: t\n    sql: select 1::int as id, 'a' as code\n",
    )
    assert run(path).ok
    path.write_text(
        "pipeline: drift\ntasks:\n  - id: t\n    sql: select 1::bigint as id, 2 as extra\n"
    )
    second = run(path)
    assert second.ok
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        row = catalog.task_run(second.run_id, "t")
    assert row is not None
    assert row.details is not None
    assert [(c["change"], c["column"]) for c in row.details["schema_changes"]] == [
        ("widened", "id"),
        ("added", "extra"),
        ("dropped", "code"),
    ]
    shown = cli("runs", second.run_id)
    assert "schema change: column 'id' widened int32 -> int64" in shown.stdout
    assert "schema change: column 'code' dropped (string)" in shown.stdout


@pytest.mark.parametrize(
    ("policy", "second_sql", "fails"),
    [
        ("fail_on_breaking", "select 1::bigint as id, 'a' as code, 2 as extra", False),
        ("fail_on_breaking", "select 1::int as id", True),  # code dropped
        ("freeze", "select 1::bigint as id, 'a' as code", True),  # even a widening
        ("evolve", "select 1::int as id", False),
    ],
)
def test_schema_change_policy_is_enforced_before_anything_is_published(
    write: WritePipeline, project: Path, policy: str, second_sql: str, fails: bool
) -> None:
    template = "pipeline: drift\ntasks:\n  - id: t\n    schema_change: {policy}\n    sql: {sql}\n"
    path = write("p.yaml", template.format(policy=policy, sql="select 1::int as id, 'a' as code"))
    first = run(path)
    assert first.ok
    path.write_text(template.format(policy=policy, sql=second_sql))
    second = run(path)
    assert second.ok is not fails
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        latest = catalog.latest_output("drift", "t")
    assert latest is not None
    if fails:
        error = second.tasks["t"].error or ""
        assert f"output schema changed and schema_change is {policy}" in error
        assert latest.run_id == first.run_id  # the refused output was never published
        assert not list((project / ".arrowline" / "workspace" / "drift" / "t").glob(".staging*"))
    else:
        assert latest.run_id == second.run_id


def test_a_schema_naming_a_column_twice_is_compared_by_its_first_occurrence() -> None:
    # Outputs written before such names were refused may have them; comparing must not crash.
    twice = pa.schema([pa.field("id", pa.int64()), pa.field("id", pa.string())])
    fixed = schema(("id", pa.int64()), ("id2", pa.string()))
    assert changes(twice, fixed) == [("added", "id2", False)]
    assert changes(fixed, twice) == [("dropped", "id2", True)]


def test_an_output_naming_a_column_twice_fails_its_task_on_every_run(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    import duckdb

    duckdb.connect(str(project / "source.duckdb")).close()
    path = write(
        "p.yaml",
        """
        pipeline: twice
        tasks:
          - id: raw
            extract: {from: duckdb, path: source.duckdb, query: "select 1 as id, 2 as ID"}
        """,
    )
    for _ in range(2):  # the second run used to crash comparing with the first's output
        result = cli("run", path)
        assert result.exit_code == 1
        assert (
            "the output names columns 'id' and 'ID' (columns 1 and 2), which differ only in case"
            in " ".join(result.output.split())
        )
        assert "Traceback" not in result.output


def test_a_run_after_a_previous_output_named_a_column_twice_succeeds(
    write: WritePipeline, project: Path
) -> None:
    import pyarrow.parquet as pq

    write("x.csv", "id,id2\n1,a\n")
    path = write(
        "p.yaml",
        "pipeline: legacy\ntasks:\n  - id: raw\n    extract: {from: files, path: x.csv}\n",
    )
    first = run(path)
    output = first.tasks["raw"].output
    assert output is not None
    # As an earlier version published an `id,id` header: both columns named `id`.
    pq.write_table(pa.table([[1], ["a"]], names=["id", "id"]), output.files[0])
    second = run(path)
    assert second.ok
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        row = catalog.task_run(second.run_id, "raw")
    assert row is not None
    assert row.details is not None
    assert [(c["change"], c["column"]) for c in row.details["schema_changes"]] == [("added", "id2")]
