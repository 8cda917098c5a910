"""Models published where dbt would build them: `+database` (a DuckDB file or a postgres
connection) and `+schema` make a load per model, `table` a table, `view` a view of the model's
output, `incremental` a table merged by its unique_key. Each published table is compared with
the model's own output."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import Result
from polars.testing import assert_frame_equal

import engine
from engine.api.pipeline import plan, run
from tests.conftest import PgSchema, only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


@pytest.fixture
def shop(project: Path) -> Path:
    folder = Path(shutil.copytree(SHOP, project / "shop"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace(
            "    marts:\n      +tags: [marts]\n",
            "    marts:\n      +tags: [marts]\n      +database: out/warehouse.duckdb\n"
            "      +schema: marts\n",
        )
    )
    return folder


def _model(project: Path, task: str) -> pl.DataFrame:
    with engine.open(project) as opened:
        return opened.table(task).collect()


def test_each_mart_is_published_as_a_table_or_a_view(shop: Path, project: Path) -> None:
    (shop / "models" / "marts" / "orders.sql").write_text(
        "{{ config(materialized='view') }}\n"
        + (shop / "models" / "marts" / "orders.sql").read_text()
    )
    tasks = {t.id: t for t in plan(shop).tasks}
    assert tasks["customers__publish"].spec.load is not None
    assert tasks["customers__publish"].inputs == ("customers",)
    assert tasks["orders__publish"].spec.materialize == "view"
    assert "marts" in tasks["orders__publish"].spec.tags  # selected with its model's tags
    result = run(shop)
    assert result.ok, result
    with duckdb.connect(str(shop / "out" / "warehouse.duckdb"), read_only=True) as db:
        kinds = dict(
            db.sql(
                "select table_name, table_type from information_schema.tables "
                "where table_schema = 'marts'"
            ).fetchall()
        )
        assert kinds == {"customers": "BASE TABLE", "orders": "VIEW"}
        for name in ("customers", "orders"):
            published = db.sql(f"select * from marts.{name}").pl()
            expected = _model(project, name)
            assert_frame_equal(
                published.sort(pl.first()), expected.sort(pl.first()), check_dtypes=False
            )


def test_an_incremental_model_is_published_whole_and_a_full_refresh_drops_rows(
    shop: Path,
) -> None:
    model = shop / "models" / "marts" / "customers.sql"
    model.write_text(
        "{{ config(materialized='incremental', unique_key='customer_id') }}\n" + model.read_text()
    )
    assert run(shop).ok
    seeds = shop / "seeds" / "raw_customers.csv"
    before = seeds.read_text()
    seeds.write_text(before + "6,Ada,L.\n")
    assert run(shop).ok
    load = plan(shop).task("customers__publish").spec.load
    assert load is not None
    assert load.mode == "replace"

    def published() -> list[int]:
        with duckdb.connect(str(shop / "out" / "warehouse.duckdb"), read_only=True) as db:
            return [
                r[0]
                for r in db.sql("select customer_id from marts.customers order by 1").fetchall()
            ]

    assert published() == [1, 2, 3, 4, 5, 6]
    seeds.write_text(before)  # customer 6 gone from the source
    assert run(shop).ok
    assert published() == [1, 2, 3, 4, 5, 6]  # kept: an incremental model adds
    assert run(shop, full_refresh=True).ok
    assert published() == [1, 2, 3, 4, 5]  # rebuilt, and the table with it


def test_a_schema_named_as_its_duckdb_file_is_not_ambiguous(shop: Path) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace(
            "+database: out/warehouse.duckdb", "+database: out/marts.duckdb"
        )
    )
    assert run(shop).ok
    with duckdb.connect(str(shop / "out" / "marts.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from marts.marts.customers").fetchall() == [(5,)]


def test_a_model_is_published_into_postgresql_through_its_connection(
    shop: Path, project: Path, pg: PgSchema
) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(
        settings.read_text()
        .replace("+database: out/warehouse.duckdb", "+database: warehouse")
        .replace("+schema: marts", f"+schema: {pg.schema}")
        + '\nconnections:\n  warehouse: {kind: postgres, uri: "${env:TEST_PG_URI}"}\n'
    )
    assert run(shop).ok
    rows = pg.rows(f"select customer_id, number_of_orders from {pg.schema}.customers order by 1")
    expected = _model(project, "customers").sort("customer_id")
    assert rows == list(zip(expected["customer_id"], expected["number_of_orders"], strict=True))


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("+database: out/w.duckdb\n      +schema: 'marts; drop table x'", "is not a name"),
        ("+database: api", "is a http connection"),
    ],
)
def test_a_publishing_setting_written_wrong_is_refused_at_each_model(
    shop: Path, setting: str, says: str
) -> None:
    settings = shop / "arrowline_project.yml"
    text = settings.read_text().replace(
        "      +database: out/warehouse.duckdb\n      +schema: marts\n", f"      {setting}\n"
    )
    text += "\nconnections:\n  api: {kind: http, base_url: 'http://127.0.0.1:1'}\n"
    settings.write_text(text)
    problems = [p for p in problems_of(shop) if p.code == "invalid-value"]
    assert sorted(Path(p.file or "").name for p in problems) == ["customers.sql", "orders.sql"]
    assert all(says in p.message for p in problems), [p.format() for p in problems]


def test_a_view_without_a_database_is_refused(project: Path) -> None:
    folder = Path(shutil.copytree(SHOP, project / "plain"))
    model = folder / "models" / "marts" / "orders.sql"
    model.write_text("{{ config(materialized='view') }}\n" + model.read_text())
    problem = only(problems_of(folder), "invalid-value")
    assert "a view lives in a database" in problem.message
    assert Path(problem.file or "").resolve() == model


def test_a_schema_without_a_database_is_refused(project: Path) -> None:
    folder = Path(shutil.copytree(SHOP, project / "plain"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace(
            "      +tags: [marts]\n", "      +tags: [marts]\n      +schema: marts\n"
        )
    )
    problems = [p for p in problems_of(folder) if p.code == "invalid-value"]
    assert len(problems) == 2
    assert all("needs +database" in p.message for p in problems)


def _with_targets(project: Path, more: str = "") -> Path:
    """The shop, copied, with dbt's dev (the default) and prod targets (and `more`)."""
    folder = Path(shutil.copytree(SHOP, project / "targets"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text() + f"\n{more}target: dev\ntargets:\n"
        "  dev: {database: out/dev.duckdb, schema: main}\n"
        "  prod: {database: out/prod.duckdb, schema: analytics}\n"
    )
    return folder


def test_targets_choose_where_every_kept_model_is_published(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt's dev and prod: the project's `target:` by default, `--target` or $ARROWLINE_TARGET
    for another; `{{ target.name }}` in a model; ephemeral models publish nothing."""
    folder = _with_targets(project)
    model = folder / "models" / "marts" / "customers.sql"
    model.write_text(
        model.read_text().replace(
            "    c.customer_id,", "    c.customer_id,\n    '{{ target.name }}' as built_for,"
        )
    )
    loads = {t.id for t in plan(folder).tasks if t.spec.load is not None}
    assert loads == {
        "publish_customers",
        *("customers__publish", "orders__publish"),
        *("raw_customers__publish", "raw_orders__publish"),  # seeds, as dbt seed loads them
    }
    assert run(folder).ok
    with duckdb.connect(str(folder / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select distinct built_for from main.customers").fetchall() == [("dev",)]
        assert db.sql("select count(*) from main.orders").fetchall() == [(7,)]
        assert db.sql("select count(*) from main.raw_customers").fetchall() == [(5,)]
    assert cli("run", folder, "--target", "prod", "--no-progress").exit_code == 0
    with duckdb.connect(str(folder / "out" / "prod.duckdb"), read_only=True) as db:
        assert db.sql("select distinct built_for from analytics.customers").fetchall() == [
            ("prod",)
        ]
    monkeypatch.setenv("ARROWLINE_TARGET", "prdo")
    problem = only(problems_of(folder), "invalid-value")
    assert "$ARROWLINE_TARGET names no target: 'prdo' (the targets: 'dev', 'prod')." in (
        problem.message
    )
    assert "Did you mean 'prod'?" in problem.message


@pytest.mark.parametrize(
    ("database", "says"),
    [
        ("warehous", "database 'warehous' names no connection. Did you mean 'warehouse'?"),
        ("postgresql://alice:s3cr3t@db.example/wh", "not a URI"),
    ],
)
def test_a_database_that_is_neither_a_connection_nor_a_file_is_refused(
    shop: Path, database: str, says: str
) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace("+database: out/warehouse.duckdb", f"+database: '{database}'")
        + '\nconnections:\n  warehouse: {kind: postgres, uri: "postgresql://x@127.0.0.1/db"}\n'
    )
    problems = [p for p in problems_of(shop) if p.code == "invalid-value"]
    assert len(problems) == 2  # each mart's
    assert all(says in p.message for p in problems), [p.format() for p in problems]
    assert all("s3cr3t" not in p.message for p in problems)


def test_an_appending_incremental_model_is_published_whole(shop: Path) -> None:
    """A key does not make an appending model's rows unique: its table is replaced, not
    merged (a merge would refuse the repeated keys)."""
    schema = shop / "models" / "marts" / "schema.yml"  # appended twice, ids repeat
    schema.write_text(schema.read_text().replace("tests: [unique, not_null]", "tests: [not_null]"))
    model = shop / "models" / "marts" / "customers.sql"
    model.write_text(
        "{{ config(materialized='incremental', unique_key='customer_id', "
        "incremental_strategy='append') }}\n" + model.read_text()
    )
    load = plan(shop).task("customers__publish").spec.load
    assert load is not None
    assert load.mode == "replace"
    assert run(shop).ok
    assert run(shop).ok  # customers twice over: published as they are
    with duckdb.connect(str(shop / "out" / "warehouse.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from marts.customers").fetchall() == [(10,)]


def test_a_target_asked_of_a_project_without_targets_is_said(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARROWLINE_TARGET", "prod")
    problem = only(problems_of(shop), "not-supported")
    assert "has no `targets:`" in problem.message
    assert problem.severity == "warning"


def test_selecting_a_model_selects_its_publication(shop: Path) -> None:
    """dbt's `--select orders` builds orders in the warehouse: here its load comes with it."""
    the_plan = plan(shop, select=["orders"])
    assert set(the_plan.selected or ()) == {"orders", "orders__publish"}
    assert "customers__publish" not in {t.id for t in the_plan.to_run}
    model = shop / "models" / "marts" / "orders.sql"
    assert run(shop).ok
    model.write_text(
        model.read_text().replace("    o.status,", "    o.status,\n    'v2' as version,")
    )
    assert run(shop, select=["state:modified"]).ok
    with duckdb.connect(str(shop / "out" / "warehouse.duckdb"), read_only=True) as db:
        assert db.sql("select distinct version from marts.orders").fetchall() == [("v2",)]


def test_a_models_schema_under_a_target_is_prefixed_as_dbt_does_and_types_read_as_dbt_writes(
    project: Path,
) -> None:
    folder = Path(shutil.copytree(SHOP, project / "prefixed"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text()
        .replace("      +tags: [marts]\n", "      +tags: [marts]\n      +schema: marts\n")
        .replace("{order_date: date}", "{order_date: date, id: integer, status: varchar(20)}")
        + "\ntarget: dev\ntargets:\n  dev: {database: out/dev.duckdb, schema: dev}\n"
    )
    the_plan = plan(folder)
    load = the_plan.task("orders__publish").spec.load
    assert load is not None
    assert load.table == "dev_marts.orders"  # dbt's generate_schema_name: target_custom
    columns = the_plan.task("raw_orders").spec.extract.columns  # type: ignore[union-attr]
    assert {k: str(v) for k, v in columns.items()} == {
        "order_date": "date",
        "id": "int32",
        "status": "string",
    }
    assert run(folder).ok


def test_trigger_backfill_and_the_scheduler_take_a_target_too(
    project: Path, cli: Callable[..., Result]
) -> None:
    """`--target` reaches every command that starts runs: a direct trigger and a backfill
    publish into the target named. A trigger handed to a running scheduler would run for the
    scheduler's target, so naming another there is refused, with the way to run it here."""
    from engine.scheduling.scheduler import Scheduler

    folder = _with_targets(project, 'schedule: "0 3 * * *"\n')
    done = cli("trigger", folder, "--direct", "--target", "prod")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(folder / "out" / "prod.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from analytics.orders").fetchall() == [(7,)]
    (folder / "out" / "prod.duckdb").unlink()
    done = cli("backfill", folder, "--from", "2024-01-01", "--to", "2024-01-01", "--target", "prod")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(folder / "out" / "prod.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from analytics.orders").fetchall() == [(7,)]
    assert not (folder / "out" / "dev.duckdb").exists()
    leader = Scheduler(project)
    assert leader.try_lead()
    try:
        refused = cli("trigger", folder, "--target", "prod")
    finally:
        leader.close()
    assert refused.exit_code == 2
    assert "the running scheduler runs its pipelines for its own target" in refused.stderr
    assert "--direct" in refused.stderr
