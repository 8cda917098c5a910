"""Lineage composed across a pipeline's tasks, through `arrowline lineage`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import PgSchema, WritePipeline

Cli = Callable[..., Result]

PIPELINE = """
pipeline: shop
tasks:
  - id: orders
    extract: {from: files, path: data/orders.csv}
  - id: customers
    extract: {from: files, path: data/customers.csv}
  - id: joined
    sql: |
      select o.id, o.amount, c.segment
      from orders o join customers c using (cid)
      where o.status = 'paid'
  - id: scored
    udf: {input: joined, function: "udfs.py:score"}
  - id: checked
    validate:
      input: scored
      on_fail: quarantine
      schema: {columns: {amount: {checks: {ge: 0}}}}
  - id: publish
    load: {input: checked, to: parquet, path: out/orders.parquet}
"""

UDFS = """
import polars as pl

def score():
    return {"big": pl.col("amount") > 100}
"""


def shop(write: WritePipeline) -> Path:
    """The pipeline above with one order and one customer."""
    write("data/orders.csv", "id,cid,amount,status\n1,10,50,paid\n")
    write("data/customers.csv", "cid,segment\n10,retail\n")
    write("udfs.py", UDFS)
    return write("p.yaml", PIPELINE)


def flatten(tree: dict[str, object], into: set[str] | None = None) -> set[str]:
    into = set() if into is None else into
    for name, below in tree.items():
        into.add(name)
        if isinstance(below, dict):
            flatten(below, into)
    return into


def test_lineage_follows_a_column_through_every_kind_of_task(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("data/orders.csv", "id,cid,amount,status\n1,10,50,paid\n2,11,150,open\n")
    write("data/customers.csv", "cid,segment\n10,retail\n11,b2b\n")
    write("udfs.py", UDFS)
    path = write("p.yaml", PIPELINE)
    assert cli("run", path, "--no-progress").exit_code == 0

    result = cli("lineage", path, "publish.big", "--format", "json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["unresolved"] == {}
    assert flatten(payload["tree"]) == {
        "checked.big (value)",
        "scored.big (value)",
        "joined.amount (value)",
        "orders.amount (value)",
        "files:data/orders.csv::amount (value)",
        "scored.amount (filter)",  # the validate task's check on amount decides the rows
        "orders.cid (filter)",
        "customers.cid (filter)",
        "orders.status (filter)",
        "files:data/orders.csv::cid (value)",
        "files:data/customers.csv::cid (value)",
        "files:data/orders.csv::status (value)",
    }

    values = json.loads(
        cli("lineage", path, "publish.big", "--kind", "value", "--format", "json").stdout
    )
    assert "orders.status (filter)" not in flatten(values["tree"])
    assert "files:data/orders.csv::amount (value)" in flatten(values["tree"])

    impact = cli("lineage", path, "orders.status", "--downstream")
    assert impact.exit_code == 0
    for dependent in ("joined.id (filter)", "joined.segment (filter)", "publish.segment (value)"):
        assert dependent in impact.stdout
    bad = cli("lineage", path, "nowhere.x")
    assert bad.exit_code == 2
    assert "no task 'nowhere'" in bad.stderr


def test_lineage_from_a_notebook_and_as_mermaid_or_dot(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    import engine

    path = shop(write)
    assert cli("run", path, "--no-progress").exit_code == 0
    with engine.open(project) as opened:
        report = opened.lineage(path, "joined.segment")
    assert report["direction"] == "upstream"
    assert set(report["tree"]) == {
        "customers.segment (value)",
        "orders.cid (filter)",
        "customers.cid (filter)",
        "orders.status (filter)",
    }
    mermaid = cli("lineage", path, "joined.segment", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n")
    assert '["customers.segment"]' in mermaid
    assert "-->|value|" in mermaid
    assert "-->|filter|" in mermaid
    dot = cli("lineage", path, "joined.segment", "--format", "dot").stdout
    assert '"customers.segment" -> "joined.segment" [label="value"];' in dot
    assert '"orders.status" -> "joined.segment" [label="filter" style="dashed"];' in dot


def test_lineage_is_known_before_the_first_run(cli: Cli, write: WritePipeline) -> None:
    path = shop(write)
    result = cli("lineage", path, "publish.segment", "--format", "json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["unresolved"] == {}
    assert "files:data/customers.csv::segment (value)" in flatten(payload["tree"])


def test_each_run_keeps_the_lineage_it_ran_with(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    import engine
    from engine.state.catalog import CatalogReader

    path = shop(write)
    assert cli("run", path, "--no-progress").exit_code == 0
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        first = catalog.runs("shop")[0].run_id
        stored = catalog.lineage(first)
    assert stored is not None
    assert {
        "target": "joined.segment",
        "source": "customers.segment",
        "kind": "value",
        "inferred": False,
    } in stored["edges"]
    assert stored["external"]["publish"] == "parquet:out/orders.parquet"

    # The definition changes: `segment` now comes from a constant. The run's record does not.
    write("p.yaml", PIPELINE.replace("c.segment", "'none' as segment"))
    now = json.loads(cli("lineage", path, "joined.segment", "--format", "json").stdout)
    assert "customers.segment (value)" not in now["tree"]
    then = json.loads(
        cli("lineage", path, "joined.segment", "--run", first, "--format", "json").stdout
    )
    assert "customers.segment (value)" in then["tree"]
    assert then["run_id"] == first
    with engine.open(project) as opened:
        assert opened.lineage(path, "joined.segment", run=first)["tree"] == then["tree"]
    missing = cli("lineage", path, "joined.segment", "--run", "no-such-run")
    assert missing.exit_code == 1
    assert "no run 'no-such-run' in the catalog" in missing.stderr


def test_a_postgres_query_extract_is_traced_to_its_tables(
    cli: Cli, write: WritePipeline, project: Path, pg: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = pg.schema
    pg.execute(
        f"create table {s}.orders (id int, cid int, amount numeric(10,2), status text)",
        f"create table {s}.customers (id int, segment text)",
        f"insert into {s}.orders values (1, 10, 5.5, 'paid'), (2, 11, 7, 'open')",
        f"insert into {s}.customers values (10, 'retail'), (11, 'b2b')",
    )
    monkeypatch.setenv("OPENLINEAGE_URL", "")
    monkeypatch.setenv("ARROWLINE_OPENLINEAGE_FILE", str(project / "events.ndjson"))
    path = write(
        "p.yaml",
        f"""
        pipeline: pgq
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: paid
            extract:
              from: postgres
              connection: wh
              query: |
                select o.id, o.amount * 100 as cents, c.segment
                from {s}.orders o join {s}.customers c on c.id = o.cid
                where o.status = 'paid'
          - id: out
            load: {{input: paid, to: parquet, path: out/paid.parquet}}
        """,
    )
    assert cli("run", path, "--no-progress").exit_code == 0
    payload = json.loads(cli("lineage", path, "out.cents", "--format", "json").stdout)
    assert payload["unresolved"] == {}
    assert flatten(payload["tree"]) == {
        "paid.cents (value)",
        f"postgres:wh#{s}.orders::amount (value)",
        f"postgres:wh#{s}.orders::cid (filter)",
        f"postgres:wh#{s}.orders::status (filter)",
        f"postgres:wh#{s}.customers::id (filter)",
    }
    # The OpenLineage events name the two tables as datasets, each column from its own table.
    events = [json.loads(line) for line in (project / "events.ndjson").read_text().splitlines()]
    final = events[-1]
    assert sorted(d["name"] for d in final["inputs"]) == [
        f"test.{s}.customers",
        f"test.{s}.orders",
    ]
    fields = final["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert {(f["name"], f["field"]) for f in fields["segment"]["inputFields"]} == {
        (f"test.{s}.customers", "segment"),
        (f"test.{s}.customers", "id"),
        (f"test.{s}.orders", "cid"),
        (f"test.{s}.orders", "status"),
    }


def test_a_struct_field_is_traced_to_its_column(cli: Cli, write: WritePipeline) -> None:
    write("data/events.ndjson", '{"id": 1, "payload": {"city": "Oslo", "zip": "0150"}}\n')
    path = write(
        "p.yaml",
        """
        pipeline: nested
        tasks:
          - id: events
            extract: {from: files, path: data/events.ndjson}
          - id: cities
            sql: select id, payload.city as city from events where payload.zip like '01%'
        """,
    )
    assert cli("run", path, "--no-progress").exit_code == 0
    payload = json.loads(cli("lineage", path, "cities.city", "--format", "json").stdout)
    assert payload["unresolved"] == {}
    assert set(payload["tree"]) == {"events.payload (value)", "events.payload (filter)"}


def test_a_run_records_a_frame_udfs_lineage_from_the_plan_it_ran(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    from engine.state.catalog import CatalogReader

    write("data/orders.csv", "id,cid,amount,status\n1,10,50,paid\n")
    write(
        "frames.py",
        """
        import polars as pl

        CALLS = []

        def paid_only(frame: pl.LazyFrame) -> pl.LazyFrame:
            CALLS.append(1)
            return frame.filter(pl.col("status") == "paid").select("id", "amount")
        """,
    )
    path = write(
        "p.yaml",
        """
        pipeline: frames
        tasks:
          - id: orders
            extract: {from: files, path: data/orders.csv}
          - id: paid
            udf: {input: orders, function: "frames.py:paid_only", mode: frame}
        """,
    )
    assert cli("run", path, "--no-progress").exit_code == 0
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        stored = catalog.lineage(catalog.runs("frames")[0].run_id)
    assert stored is not None
    paid = {
        (e["target"], e["source"], e["kind"], e["inferred"])
        for e in stored["edges"]
        if e["target"].startswith("paid.")
    }
    assert paid == {
        ("paid.id", "orders.id", "value", False),
        ("paid.id", "orders.status", "filter", False),
        ("paid.amount", "orders.amount", "value", False),
        ("paid.amount", "orders.status", "filter", False),
    }


def test_upstream_is_the_default_and_can_be_said(cli: Cli, write: WritePipeline) -> None:
    path = shop(write)
    said = cli("lineage", path, "joined.segment", "--upstream", "--format", "json")
    default = cli("lineage", path, "joined.segment", "--format", "json")
    assert said.exit_code == 0
    assert json.loads(said.stdout) == json.loads(default.stdout)
    assert json.loads(said.stdout)["direction"] == "upstream"


def test_run_takes_a_prefix_or_last_like_runs_and_show(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    from engine.state.catalog import CatalogReader

    path = shop(write)
    assert cli("run", path, "--no-progress").exit_code == 0
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        run_id = catalog.runs("shop")[0].run_id
    full = cli("lineage", path, "joined.segment", "--run", run_id, "--format", "json")
    assert full.exit_code == 0, full.stderr
    for reference in ("last", run_id[:12]):
        result = cli("lineage", path, "joined.segment", "--run", reference, "--format", "json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["run_id"], report["tree"]) == (run_id, json.loads(full.stdout)["tree"])
    # `last` is the pipeline's own last run, even when another pipeline ran since.
    other = write("q.yaml", "pipeline: other\ntasks:\n  - id: t\n    sql: select 1 as x\n")
    assert cli("run", other, "--no-progress").exit_code == 0
    last = cli("lineage", path, "joined.segment", "--run", "last", "--format", "json")
    assert json.loads(last.stdout)["run_id"] == run_id
    foreign = cli("lineage", other, "t.x", "--run", run_id)
    assert foreign.exit_code == 1
    assert f"run {run_id} belongs to pipeline 'shop', not 'other'" in foreign.stderr


def test_an_unknown_column_is_an_error_with_did_you_mean(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    import engine
    from engine.core.errors import SelectionError

    path = shop(write)
    result = cli("lineage", path, "joined.segmnt")
    assert result.exit_code == 2
    assert "task 'joined' has no column 'segmnt'. Did you mean 'segment'?" in result.stderr
    assert "(no sources)" not in result.stdout
    assert "amount, id, segment" in " ".join(result.stderr.split())  # the hint lists them
    assert cli("run", path, "--no-progress").exit_code == 0
    recorded = cli("lineage", path, "publish.nope", "--run", "last")
    assert recorded.exit_code == 2
    assert "task 'publish' has no column 'nope'" in recorded.stderr
    # A column with no sources at all is still a column: its lineage is just empty.
    constant = write("c.yaml", "pipeline: c\ntasks:\n  - id: t\n    sql: select 1 as one\n")
    known = cli("lineage", constant, "t.one")
    assert known.exit_code == 0
    assert "(no sources)" in known.stdout
    with engine.open(project) as opened, pytest.raises(SelectionError, match="Did you mean"):
        opened.lineage(path, "joined.segmnt")


def test_two_outputs_with_one_name_keep_their_own_sources(cli: Cli, write: WritePipeline) -> None:
    path = shop(write)
    with path.open("a") as pipeline:
        pipeline.write(
            "  - id: pair\n"
            "    sql: select o.cid, c.cid, count(*) over () from orders o join customers c "
            "on o.cid = c.cid\n"
        )
    trees = {}
    for column in ("pair.cid", "pair.cid_1", "pair.count() OVER ()"):  # as DuckDB writes them
        result = cli("lineage", path, column, "--format", "json")
        assert result.exit_code == 0, result.stderr
        trees[column] = set(json.loads(result.stdout)["tree"])
    on = {"orders.cid (filter)", "customers.cid (filter)"}
    assert trees == {
        "pair.cid": {"orders.cid (value)", *on},
        "pair.cid_1": {"customers.cid (value)", *on},
        "pair.count() OVER ()": on,
    }


def test_a_selection_keeps_the_walk_inside_its_tasks(cli: Cli, write: WritePipeline) -> None:
    path = shop(write)
    whole = json.loads(cli("lineage", path, "publish.big", "--format", "json").stdout)
    assert "selected" not in whole
    assert "joined.amount (value)" in flatten(whole["tree"])

    # joined is left out: the walk up from publish.big ends where scored reads it
    cut = cli("lineage", path, "publish.big", "--exclude", "joined", "--format", "json")
    assert cut.exit_code == 0, cut.stderr
    payload = json.loads(cut.stdout)
    assert flatten(payload["tree"]) == {
        "checked.big (value)",
        "scored.big (value)",
        "scored.amount (filter)",
    }
    assert payload["selected"] == ["checked", "customers", "orders", "publish", "scored"]
    assert set(payload["external"]) == {"orders", "customers", "publish"}

    text = cli("lineage", path, "publish.big", "-s", "+publish", "--exclude", "joined")
    assert text.exit_code == 0, text.stderr
    assert [line.strip(" └─") for line in text.stdout.splitlines()] == [
        "publish.big",
        "checked.big (value)",
        "scored.big (value)",
        "scored.amount (filter)",
    ]
    mermaid = cli("lineage", path, "publish.big", "--exclude", "joined", "--format", "mermaid")
    assert set(re.findall(r'\["([^"]+)"\]', mermaid.stdout)) == {
        "publish.big",
        "checked.big",
        "scored.big",
        "scored.amount",
    }
    dot = cli("lineage", path, "publish.big", "--exclude", "joined", "--format", "dot").stdout
    assert {node for edge in re.findall(r'"([^"]+)" -> "([^"]+)"', dot) for node in edge} == {
        "publish.big",
        "checked.big",
        "scored.big",
        "scored.amount",
    }


def test_a_selection_by_tag_and_kind_keeps_the_places_its_extracts_read(
    cli: Cli, write: WritePipeline
) -> None:
    write("data/orders.csv", "id,cid,amount,status\n1,10,50,paid\n")
    write("data/customers.csv", "cid,segment\n10,retail\n")
    write("udfs.py", UDFS)
    tagged = PIPELINE.replace("  - id: customers\n", "  - id: customers\n    tags: [crm]\n")
    path = write("p.yaml", tagged)
    both = cli("lineage", path, "joined.segment", "-s", "joined tag:crm", "--format", "json")
    assert both.exit_code == 0, both.stderr
    payload = json.loads(both.stdout)
    assert flatten(payload["tree"]) == {
        "customers.segment (value)",
        "customers.cid (filter)",
        "files:data/customers.csv::segment (value)",
        "files:data/customers.csv::cid (value)",
    }
    assert payload["external"] == {"customers": "files:data/customers.csv"}
    alone = cli("lineage", path, "joined.segment", "-s", "joined")
    assert alone.exit_code == 0, alone.stderr
    assert "(no sources among the selected tasks)" in alone.stdout
    down = cli("lineage", path, "orders.status", "--downstream", "-s", "orders+,kind:sql")
    assert down.exit_code == 2  # orders is no sql task: the walk has nowhere to start
    down = cli("lineage", path, "orders.status", "--downstream", "--exclude", "tag:crm publish")
    assert down.exit_code == 0, down.stderr
    assert "joined.segment (filter)" in down.stdout
    assert "checked.segment (value)" in down.stdout
    assert "publish." not in down.stdout


def test_a_selection_reads_a_runs_recorded_lineage_too(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = shop(write)
    assert cli("run", path, "--no-progress").exit_code == 0
    result = cli(
        "lineage",
        path,
        "joined.segment",
        "--run",
        "last",
        "--exclude",
        "customers",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    assert flatten(json.loads(result.stdout)["tree"]) == {
        "orders.cid (filter)",
        "orders.status (filter)",
        "files:data/orders.csv::cid (value)",
        "files:data/orders.csv::status (value)",
    }


def test_lineage_fails_on_a_bad_selection_as_plan_does(cli: Cli, write: WritePipeline) -> None:
    path = shop(write)
    for args in (("-s", "joind"), ("-s", "tag:nightly"), ("--exclude", "kind:sqll")):
        planned = cli("plan", path, *args, "--no-schemas")
        traced = cli("lineage", path, "joined.segment", *args)
        assert planned.exit_code == 2, args
        assert (traced.exit_code, traced.stderr) == (2, planned.stderr), args
        assert traced.stdout == ""
    left_out = cli("lineage", path, "publish.big", "-s", "+checked")
    assert left_out.exit_code == 2
    assert "leaves out task 'publish', whose column 'publish.big' is asked about" in (
        left_out.stderr
    )
    unknown = cli("lineage", path, "nowhere.x", "-s", "orders")
    assert unknown.exit_code == 2
    assert "no task 'nowhere'" in unknown.stderr  # an unknown task is said as without -s
