"""A dbt project as it is: dbt_project.yml read as the project file, and the profile it names
read from profiles.yml as its targets (a DuckDB file, a real PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest
from click.testing import Result

from tests.conftest import PgSchema

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


@pytest.fixture
def project_dir(project: Path) -> Path:
    """The test's folder, its working directory: the project's state is kept there."""
    return project


PROFILE = """\
{name}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: out/dev.duckdb
      schema: main
    prod:
      type: postgres
      host: {host}
      port: {port}
      user: "{{{{ env_var('DBTP_USER', '{user}') }}}}"
      password: "{{{{ env_var('DBTP_PASSWORD') }}}}"
      dbname: {database}
      schema: {schema}
      threads: 2
"""


def dbt_project(folder: Path, name: str, pg_uri: str, schema: str = "marts") -> Path:
    """The shop fixture as dbt keeps it: dbt_project.yml (no arrowline key: its publishing
    load left out) and profiles.yml beside it."""
    project = Path(shutil.copytree(SHOP, folder))
    text = (project / "arrowline_project.yml").read_text()
    text = text[: text.index("tasks:")].replace("shop", name)
    (project / "arrowline_project.yml").unlink()
    (project / "dbt_project.yml").write_text(text)
    uri = urlsplit(pg_uri)
    (project / "profiles.yml").write_text(
        PROFILE.format(
            name=name,
            host=uri.hostname,
            port=uri.port or 5432,
            user=uri.username,
            database=uri.path.lstrip("/"),
            schema=schema,
        )
    )
    return project


def test_a_dbt_project_runs_as_it_is_into_its_profiles_targets(
    project_dir: Path,
    pg: PgSchema,
    pg_uri: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = dbt_project(project_dir / "shop", pg.schema, pg_uri, schema=pg.schema)
    done = cli("run", project, "--no-progress")  # the profile's target: dev, DuckDB
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from main.orders").fetchall() == [(7,)]
        assert db.sql("select count(*) from main.customers").fetchall() == [(5,)]
    monkeypatch.setenv("DBTP_PASSWORD", "not-the-password-s3cr3t")  # trust auth: unused
    planned = cli("plan", project, "--target", "prod")
    assert planned.exit_code == 0, planned.output
    assert "not-the-password-s3cr3t" not in planned.output
    done = cli("run", project, "--no-progress", "--target", "prod")
    assert done.exit_code == 0, done.output
    assert "not-the-password-s3cr3t" not in done.output + done.stderr
    assert pg.rows(f"select count(*) from {pg.table('orders')}") == [(7,)]
    assert pg.rows(f"select count(*) from {pg.table('customers')}") == [(5,)]
    monkeypatch.delenv("DBTP_PASSWORD")
    unset = cli("run", project, "--no-progress", "--target", "prod")
    assert unset.exit_code != 0
    assert "environment variable DBTP_PASSWORD is not set" in unset.output + unset.stderr


def test_profiles_are_found_where_dbt_looks_first_dbt_profiles_dir(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    elsewhere = project_dir / "profiles"
    elsewhere.mkdir()
    text = (project / "profiles.yml").read_text().replace("out/dev.duckdb", "out/other.duckdb")
    (elsewhere / "profiles.yml").write_text(text)
    monkeypatch.setenv("DBT_PROFILES_DIR", str(elsewhere))
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    assert (project / "out" / "other.duckdb").is_file()
    assert not (project / "out" / "dev.duckdb").exists()


@pytest.mark.parametrize(
    ("change", "said", "line"),
    [
        (("type: duckdb", "type: snowflake"), "is of type 'snowflake'", 5),
        (("path: out/dev.duckdb", "path: ':memory:'"), "not :memory:", 6),
        (("dbname: d", "dbname: \"{{ var('db') }}\""), "only {{ env_var('NAME') }}", 14),
        (("schema: main", "schema: main\n      warehouse: w"), "'warehouse' is not read", 8),
    ],
)
def test_a_profile_that_cannot_be_a_target_is_said_at_its_line(
    project_dir: Path,
    cli: Callable[..., Result],
    change: tuple[str, str],
    said: str,
    line: int,
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text().replace(*change))
    prod = "dbname" in change[0]  # an output of prod's: said when prod is the one used
    done = cli("validate", project, *(("--target", "prod") if prod else ()))
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    assert f"profiles.yml:{line}: error: " in text
    assert said in text
    assert "names no target" not in text  # the profile's fault, said once


def test_a_profile_with_no_profiles_file_is_said_at_the_profile_key(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    (project / "profiles.yml").unlink()
    monkeypatch.setenv("HOME", str(project_dir))  # no ~/.dbt either
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    done = cli("validate", project)
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    line = next(
        n
        for n, row in enumerate((project / "dbt_project.yml").read_text().splitlines(), 1)
        if row.startswith("profile:")
    )
    assert f"dbt_project.yml:{line}" in text
    assert "no profiles.yml" in text


def test_a_folder_with_both_files_is_arrowlines_project(project_dir: Path) -> None:
    from engine.scheduling.discover import discover_pipelines
    from engine.spec.sqlproject import project_file

    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    assert project_file(project) == project / "dbt_project.yml"
    assert discover_pipelines(project_dir) == {"shop": project / "dbt_project.yml"}
    shutil.copy(SHOP / "arrowline_project.yml", project / "arrowline_project.yml")
    assert project_file(project) == project / "arrowline_project.yml"
    assert discover_pipelines(project_dir) == {"shop": project / "arrowline_project.yml"}


def test_only_the_output_a_run_uses_must_be_right_and_a_wrong_target_is_said_once(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text() + "    sf: {type: snowflake, account: x}\n")
    done = cli("run", project, "--no-progress")  # dev is right: snowflake is not used
    assert done.exit_code == 0, done.output
    wrong = cli("validate", project, "--target", "staging")
    assert wrong.exit_code != 0
    text = " ".join(wrong.output.split())
    assert "names no target: 'staging'" in text
    assert text.count("error") == 2, text  # the one, and the count line
    profiles.write_text(profiles.read_text().replace("target: dev", "target: qa"))
    said = " ".join(cli("validate", project).output.split())
    assert "profiles.yml:2: error: profile 'shop': target 'qa' is none of its outputs" in said


def test_a_duckdb_outputs_schema_is_main_as_dbt_duckdb_has_it(project_dir: Path) -> None:
    from engine.tasks.checks import load_definition

    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("      schema: main\n", "", 1))
    text = (project / "dbt_project.yml").read_text()
    (project / "dbt_project.yml").write_text(
        text.replace("+tags: [marts]", "+tags: [marts]\n      +schema: mart")
    )
    spec = load_definition(project / "dbt_project.yml").spec
    assert spec.task("orders__publish").load.table == "main_mart.orders"  # type: ignore[union-attr]


def test_path_selects_the_seeds_a_folder_holds(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    planned = cli("plan", project, "-s", "path:seeds", "--format", "json")
    assert planned.exit_code == 0, planned.output
    assert "raw_orders" in planned.stdout
    assert "stg_orders" not in planned.stdout
    one = cli("plan", project, "-s", "path:seeds/raw_orders.csv", "--format", "json")
    assert one.exit_code == 0, one.output
    assert "raw_customers" not in one.stdout


def test_a_view_in_one_targets_duckdb_file_still_reads_after_runs_for_another(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    """A DuckDB view of a model reads the workspace's files of the run that made it: retention
    keeps them per target database, not only for the newest run of the load."""
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(
        profiles.read_text() + "    other: {type: duckdb, path: out/other.duckdb}\n"
    )
    text = (project / "dbt_project.yml").read_text()
    text = text.replace("+materialized: ephemeral", "+materialized: view")
    (project / "dbt_project.yml").write_text(text + "retention: {keep_runs: 1}\n")
    assert cli("run", project, "--no-progress").exit_code == 0  # dev
    for _ in range(3):
        done = cli("run", project, "--no-progress", "--target", "other", "--force")
        assert done.exit_code == 0, done.output
    assert cli("gc", project, "--keep-runs", "1").exit_code == 0
    with duckdb.connect(str(project / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from main.stg_orders").fetchall() == [(8,)]


SOURCES = "models/staging/_sources.yml"


def test_a_dbt_source_is_read_from_its_external_location_or_the_targets_database(
    project_dir: Path,
    pg: PgSchema,
    pg_uri: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = dbt_project(project_dir / "shop", pg.schema, pg_uri, schema=pg.schema)
    payments = (project / "data" / "payments.csv").read_text()
    (project / SOURCES).write_text(  # dbt-duckdb's external_location, {name} the table
        "version: 2\nsources:\n  - name: stripe\n"
        "    meta: {external_location: 'data/{name}.csv'}\n    tables:\n      - name: payments\n"
    )
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from main.orders").fetchall() == [(7,)]
    # As dbt has them: tables already in the target's database, schema and identifier.
    (project / SOURCES).write_text(
        f"version: 2\nsources:\n  - name: stripe\n    schema: {pg.schema}\n    tables:\n"
        "      - {name: payments, identifier: stripe_payments}\n"
    )
    rows = [line.split(",") for line in payments.strip().splitlines()]
    typed = ", ".join(f"{c} {'text' if c == 'payment_method' else 'bigint'}" for c in rows[0])
    values = [", ".join(v if v.isdigit() else repr(v) for v in row) for row in rows[1:]]
    pg.execute(
        f"create table {pg.table('stripe_payments')} ({typed})",
        *(f"insert into {pg.table('stripe_payments')} values ({v})" for v in values),
    )
    monkeypatch.setenv("DBTP_PASSWORD", "unused")
    done = cli("run", project, "--no-progress", "--target", "prod")
    assert done.exit_code == 0, done.output
    assert pg.rows(f"select count(*) from {pg.table('orders')}") == [(7,)]
    (project / SOURCES).write_text(
        "version: 2\nsources:\n  - name: stripe\n    tables:\n      - name: payments\n"
    )
    (project / "profiles.yml").unlink()  # no target database: said where the table is
    text = (project / "dbt_project.yml").read_text().replace(f"profile: {pg.schema}\n", "")
    (project / "dbt_project.yml").write_text(text)
    said = " ".join(cli("validate", project).output.split())
    assert "_sources.yml:5" in said
    assert "needs `extract:`" in said
    assert "meta.external_location or a target database" in said


def test_vars_as_dbt_gives_them_on_the_command_line(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    (project_dir / "v.yaml").write_text(
        "pipeline: v\nparams: {n: 1, region: north}\ntasks:\n  - id: t\n"
        "    sql: select {{ params.n }} as n, {{ params.region | sql_literal }} as r\n"
    )
    done = cli("render", "v.yaml", "t", "--vars", '{n: 5, region: "it\'s"}')
    assert done.exit_code == 0, done.output
    assert "select 5 as n, 'it''s' as r" in done.stdout
    both = cli("render", "v.yaml", "t", "--vars", "{n: 5}", "-p", "n=7")
    assert "select 7 as n" in both.stdout  # --param wins
    for wrong, said in (("[1]", "a mapping of parameter names"), ("{n: x}", "as int")):
        refused = cli("render", "v.yaml", "t", "--vars", wrong)
        assert refused.exit_code != 0
        assert said in refused.output + refused.stderr


def test_dbts_two_argument_ref_names_the_model(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    model = project / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text().replace("ref('stg_orders')", "ref('shop', 'stg_orders')"))
    assert "ref('shop', 'stg_orders')" in model.read_text()
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from main.orders").fetchall() == [(7,)]


def test_packages_and_snapshots_are_said_not_read(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    (project / "packages.yml").write_text("packages:\n  - package: dbt-labs/dbt_utils\n")
    (project / "snapshots").mkdir()
    (project / "snapshots" / "orders_snapshot.sql").write_text("{% snapshot s %}{% endsnapshot %}")
    done = cli("validate", project)
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "packages.yml:1: warning: packages.yml: packages are not read" in text
    assert "snapshots/: dbt snapshots are not run" in text


def test_env_var_in_a_profile_is_read_where_dbt_reads_it(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-developer schema, a file path, threads with `| int`, the profile's target: read
    from the environment as the profile is read; a password stays a reference."""
    from engine.tasks.checks import load_definition

    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    text = profiles.read_text()
    text = text.replace("target: dev", "target: \"{{ env_var('DBTP_TARGET', 'dev') }}\"")
    text = text.replace("path: out/dev.duckdb", "path: \"{{ env_var('DBTP_FILE') }}\"")
    text = text.replace("schema: main", "schema: \"dev_{{ env_var('DBTP_WHO') }}\"")
    text = text.replace("threads: 2", "threads: \"{{ env_var('DBTP_THREADS', '3') | int }}\"")
    profiles.write_text(text)
    monkeypatch.setenv("DBTP_FILE", "out/mine.duckdb")
    monkeypatch.setenv("DBTP_WHO", "ann")
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project / "out" / "mine.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from dev_ann.orders").fetchall() == [(7,)]
    monkeypatch.setenv("DBTP_TARGET", "prod")
    spec = load_definition(project / "dbt_project.yml").spec
    assert spec.connections["dbt_prod"].password == "${env:DBTP_PASSWORD}"  # type: ignore[union-attr]
    monkeypatch.delenv("DBTP_TARGET")
    monkeypatch.delenv("DBTP_WHO")
    said = " ".join(cli("validate", project).output.split())
    assert "profiles.yml:7: error: schema: environment variable DBTP_WHO is not set" in said


def test_vars_dates_are_read_by_each_parameters_type(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    done = cli("run", project, "--no-progress", "--vars", "{start_date: 2018-01-05}")
    assert done.exit_code == 0, done.output
    unknown = cli("run", project, "--no-progress", "--vars", "{nope: 1}")
    assert unknown.exit_code != 0
    assert "_arrowline_target" not in unknown.output + unknown.stderr


def test_external_location_under_config_meta_names_the_table_by_its_name(
    project_dir: Path, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    (project / SOURCES).write_text(
        "version: 2\nsources:\n  - name: stripe\n"
        "    config: {meta: {external_location: 'data/{name}.csv'}}\n"
        "    tables:\n      - {name: payments, identifier: stripe_payments}\n"
    )
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output


def test_installed_dbt_packages_are_not_pipelines(project_dir: Path) -> None:
    from engine.scheduling.discover import discover_pipelines

    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    package = project / "dbt_packages" / "dbt_utils"
    package.mkdir(parents=True)
    (package / "dbt_project.yml").write_text("name: dbt_utils\nversion: '1.0'\n")
    assert discover_pipelines(project_dir) == {"shop": project / "dbt_project.yml"}


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("{name: payments, identifier: 'x; drop table m; --'}", "identifier 'x; drop"),
        ("{name: payments, schema: 'a.b'}", "schema 'a.b' is not a name"),
        ("{name: payments, extract: 'data/payments.csv'}", "extract must be a mapping"),
    ],
)
def test_a_source_table_that_cannot_be_read_is_said_at_its_line_before_a_run(
    project_dir: Path, cli: Callable[..., Result], table: str, said: str
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    (project / SOURCES).write_text(
        f"version: 2\nsources:\n  - name: stripe\n    tables:\n      - {table}\n"
    )
    done = cli("validate", project)
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    assert "_sources.yml:5: error: source table stripe.payments" in text
    assert said in text


def test_dbt_target_chooses_the_output_after_target_and_before_the_profiles_default(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text() + "    ci: {type: duckdb, path: out/ci.duckdb}\n")
    monkeypatch.setenv("DBT_TARGET", "ci")
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    assert (project / "out" / "ci.duckdb").is_file()
    assert not (project / "out" / "dev.duckdb").exists()
    done = cli("run", project, "--no-progress", "--target", "dev")  # the command line wins
    assert done.exit_code == 0, done.output
    assert (project / "out" / "dev.duckdb").is_file()
    monkeypatch.setenv("DBT_TARGET", "cii")
    for command in ("validate", "run", "check"):
        wrong = cli(command, project, *(("--no-progress",) if command == "run" else ()))
        assert wrong.exit_code != 0, wrong.output
        said = " ".join((wrong.output + wrong.stderr).split())
        assert "$DBT_TARGET names no output of profile 'shop': 'cii'" in said, said
        assert "(its outputs: 'dev', 'prod', 'ci'). Did you mean 'ci'?" in said
        assert "profiles.yml:4: error" in said  # where the profile's outputs start


def test_a_profiles_folder_given_must_hold_profiles_yml_and_the_option_wins(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    elsewhere = project_dir / "profiles"
    elsewhere.mkdir()
    text = (project / "profiles.yml").read_text()
    (elsewhere / "profiles.yml").write_text(text.replace("out/dev.duckdb", "out/other.duckdb"))
    line = 1 + next(
        n
        for n, row in enumerate((project / "dbt_project.yml").read_text().splitlines())
        if row.startswith("profile:")
    )
    empty = project_dir / "empty"
    empty.mkdir()
    for value, wrong in (
        (project_dir / "nowhere", "does not exist"),
        (project / "profiles.yml", "is not a folder"),
        (empty, "holds no profiles.yml"),
    ):
        monkeypatch.setenv("DBT_PROFILES_DIR", str(value))
        done = cli("run", project, "--no-progress")  # not the project's own profiles.yml
        assert done.exit_code != 0, done.output
        said = " ".join((done.output + done.stderr).split())
        assert f"dbt_project.yml:{line}: error" in said, said
        assert f"$DBT_PROFILES_DIR '{value}' {wrong}" in said, said
    assert not (project / "out").exists()
    done = cli("run", project, "--no-progress", "--profiles-dir", elsewhere)  # over the env's
    assert done.exit_code == 0, done.output
    assert (project / "out" / "other.duckdb").is_file()
    monkeypatch.delenv("DBT_PROFILES_DIR")
    done = cli("validate", project, "--profiles-dir", empty)
    assert done.exit_code != 0
    assert f"--profiles-dir '{empty}' holds no profiles.yml" in " ".join(done.output.split())
    done = cli("validate", project, "--profiles-dir", project_dir / "nowhere")
    assert done.exit_code == 2
    assert "does not exist" in done.stderr


def test_check_tries_the_connection_of_the_target_dbt_target_names_without_its_secret(
    project_dir: Path,
    pg: PgSchema,
    pg_uri: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = dbt_project(project_dir / "shop", pg.schema, pg_uri, schema=pg.schema)
    profiles = project / "profiles.yml"
    secret = "literal-s3cr3t-in-profiles"  # written in the file, not through env_var()
    profiles.write_text(
        profiles.read_text().replace("\"{{ env_var('DBTP_PASSWORD') }}\"", f'"{secret}"')
    )
    monkeypatch.setenv("DBT_TARGET", "prod")
    for args in (("check", project), ("check", project, "--target", "prod")):
        done = cli(*args)
        assert done.exit_code == 0, done.output
        assert "dbt_prod" in done.output
        assert secret not in done.output + done.stderr
    for command in (("plan", project), ("run", project, "--no-progress")):
        done = cli(*command)
        assert done.exit_code == 0, done.output
        assert secret not in done.output + done.stderr
    assert pg.rows(f"select count(*) from {pg.table('orders')}") == [(7,)]
    done = cli("check", project, "--target", "prdo")
    assert done.exit_code != 0
    assert "Did you mean 'prod'?" in " ".join((done.output + done.stderr).split())


def test_a_password_yaml_reads_as_a_number_is_its_text_and_never_shown(
    project_dir: Path,
    pg: PgSchema,
    pg_uri: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = dbt_project(project_dir / "shop", pg.schema, pg_uri, schema=pg.schema)
    profiles = project / "profiles.yml"
    profiles.write_text(  # dbt renders it as text; a number is still the password
        profiles.read_text().replace("\"{{ env_var('DBTP_PASSWORD') }}\"", "98765432101")
    )
    for args in (("plan", project), ("plan", project, "--target", "prod")):
        done = cli(*args)
        assert done.exit_code == 0, done.output
        assert "98765432101" not in done.output + done.stderr
    from engine.tasks.checks import load_definition

    monkeypatch.setenv("DBT_TARGET", "prod")
    spec = load_definition(project / "dbt_project.yml").spec
    assert spec.connections["dbt_prod"].password == "98765432101"  # type: ignore[union-attr]


def test_a_source_table_nothing_reads_is_no_task(
    project_dir: Path, pg: PgSchema, pg_uri: str, cli: Callable[..., Result]
) -> None:
    project = dbt_project(project_dir / "shop", pg.schema, pg_uri, schema=pg.schema)
    (project / SOURCES).write_text(  # refunds: documented, not made yet, read by no model
        "version: 2\nsources:\n  - name: stripe\n"
        "    meta: {external_location: 'data/{name}.csv'}\n    tables:\n"
        "      - name: payments\n      - name: refunds\n"
    )
    planned = cli("plan", project)
    assert planned.exit_code == 0, planned.output
    assert "stripe__payments" in planned.output
    assert "stripe__refunds" not in planned.output
    done = cli("run", project, "--no-progress")  # dbt reads no source no model reads
    assert done.exit_code == 0, done.output
    (project / "models" / "refunds_seen.sql").write_text(
        "select count(*) as n from {{ source('stripe', 'refunds') }}"
    )
    planned = cli("plan", project)  # read now: a task, whose file is missing
    assert "stripe__refunds" in planned.output
    failed = cli("run", project, "--no-progress")
    assert failed.exit_code != 0
    assert "models/staging/_sources.yml:7" in failed.output  # the table's line
    (project / "models" / "refunds_seen.sql").write_text(  # named by the project's vars
        "select count(*) as n from {{ source('stripe', var('refund_table')) }}"
    )
    settings = project / "dbt_project.yml"
    settings.write_text(settings.read_text().replace("vars:\n", "vars:\n  refund_table: refunds\n"))
    assert "stripe__refunds" in cli("plan", project).output


def test_an_unset_secret_is_said_only_of_the_target_a_run_would_use(
    project_dir: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(project_dir / "shop", "shop", "postgresql://u@h:5432/d")
    monkeypatch.delenv("DBTP_PASSWORD", raising=False)
    dev = cli("validate", project)  # dev is a DuckDB file: prod's password is not needed
    assert dev.exit_code == 0, dev.output
    assert "DBTP_PASSWORD" not in dev.output
    prod = cli("validate", project, "--target", "prod")
    assert "connection 'dbt_prod': password uses ${env:DBTP_PASSWORD}, not set here" in " ".join(
        prod.output.split()
    )
