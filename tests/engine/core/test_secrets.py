"""Secrets written in a pipeline reach no catalog table, no command's output and no log line.

Each case puts a known password in one place a pipeline can hold it, runs the pipeline (it
fails, so a dead letter is written and the run can be resumed), looks at it with `plan --json`,
`runs`, `render` and `show`, edits the pipeline and is refused a `--resume` (whose diff shows the
old and new definition), and then searches every catalog table and every byte printed for the
password. Every case has a password of its own: the redactor remembers the secrets it has seen in
this process, and a password another case registered must not hide a leak in this one.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import Result

from engine.core.secrets import MASK, mask_secrets, mask_text
from engine.state.schema import TABLES
from tests.conftest import SharedCatalog, WritePipeline

Cli = Callable[..., Result]


@dataclass(frozen=True)
class Case:
    """One place a pipeline can hold a password. `{pw}` in any text is the case's password."""

    connection: str = 'wh: {kind: postgres, uri: "{pg}"}'
    top: str = ""
    """Pipeline-level settings (params, openlineage, alerts)."""
    udf_args: str = "{}"
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    """`--param` assignments given to `run` and `plan`."""
    reference: str | None = None
    """A `${env:...}`/`${file:...}` reference that the stored definition keeps as written."""


def _with_password(pg_uri: str, password: str) -> str:
    return pg_uri.replace("postgres@", f"postgres:{password}@", 1)  # trust auth ignores it


CASES: dict[str, Case] = {
    "uri userinfo": Case(connection='wh: {kind: postgres, uri: "{pg_pw}"}'),
    "uri postgres scheme": Case(
        connection='wh: {kind: postgres, uri: "{pg_pw_short_scheme}"}',
    ),
    "uri userinfo with @ and :": Case(
        connection='wh: {kind: postgres, uri: "postgresql://postgres:{pw}@x:y@127.0.0.1:1/t"}'
    ),
    "uri percent-encoded": Case(
        connection='wh: {kind: postgres, uri: "postgresql://postgres:{pw}%40x@127.0.0.1:1/t"}'
    ),
    "uri ?password=": Case(connection='wh: {kind: postgres, uri: "{pg}?password={pw}"}'),
    "uri &password=": Case(
        connection='wh: {kind: postgres, uri: "{pg}?sslmode=disable&password={pw}"}'
    ),
    "uri ?sslpassword=": Case(connection='wh: {kind: postgres, uri: "{pg}?sslpassword={pw}"}'),
    "uri ?options= encoded": Case(
        connection='wh: {kind: postgres, uri: "{pg}?options=-c%20password%3D{pw}"}'
    ),
    "host and password:": Case(
        connection="wh: {kind: postgres, host: 127.0.0.1, user: postgres, database: test, "
        'password: "{pw}"}'
    ),
    "password: with spaces": Case(
        connection="wh: {kind: postgres, host: 127.0.0.1, user: postgres, database: test, "
        "password: 'a {pw} b'}"
    ),
    "options password": Case(
        connection='wh: {kind: postgres, uri: "{pg}", options: {password: "{pw}"}}'
    ),
    "options sslpassword": Case(
        connection='wh: {kind: postgres, uri: "{pg}", options: {sslpassword: "{pw}"}}'
    ),
    "options libpq options": Case(
        connection='wh: {kind: postgres, uri: "{pg}", options: {options: "-c password={pw}"}}'
    ),
    "conninfo instead of uri": Case(
        connection='wh: {kind: postgres, uri: "host=127.0.0.1 password={pw} dbname=test"}'
    ),
    "conninfo quoted": Case(
        connection="wh: {kind: postgres, uri: \"host=127.0.0.1 password='{pw} x' dbname=test\"}"
    ),
    "uri from ${env:}": Case(
        connection='wh: {kind: postgres, uri: "${env:WH_URI}"}',
        env={"WH_URI": "{pg_pw}"},
        reference="${env:WH_URI}",
    ),
    "password from ${env:}": Case(
        connection="wh: {kind: postgres, host: 127.0.0.1, user: postgres, database: test, "
        'password: "${env:PG_PASSWORD}"}',
        env={"PG_PASSWORD": "{pw}"},
        reference="${env:PG_PASSWORD}",
    ),
    "password from ${file:}": Case(
        connection="wh: {kind: postgres, host: 127.0.0.1, user: postgres, database: test, "
        'password: "${file:pg.secret}"}',
        files={"pg.secret": "{pw}\n"},
        reference="${file:pg.secret}",
    ),
    "${env:} inside the uri": Case(
        connection='wh: {kind: postgres, uri: "postgresql://postgres:${env:PG_PASSWORD}'
        '@127.0.0.1:5432/test"}',
        env={"PG_PASSWORD": "{pw}"},
        reference="postgresql://postgres:${env:PG_PASSWORD}@",
    ),
    "openlineage api_key": Case(top='openlineage: {file: ol.jsonl, api_key: "{pw}"}'),
    "openlineage api_key from ${env:}": Case(
        top='openlineage: {file: ol.jsonl, api_key: "${env:OL_KEY}"}',
        env={"OL_KEY": "{pw}"},
        reference="${env:OL_KEY}",
    ),
    "openlineage url userinfo": Case(
        top='openlineage: {file: ol.jsonl, url: "http://lineage:{pw}@127.0.0.1:9/"}'
    ),
    "openlineage url ?api_key=": Case(
        top='openlineage: {file: ol.jsonl, url: "http://127.0.0.1:9/?api_key={pw}"}'
    ),
    "alerts webhook ?token=": Case(top='alerts: {webhook: "http://127.0.0.1:9/hook?token={pw}"}'),
    "alerts command header": Case(
        top="alerts: {command: \"curl -H 'Authorization: Bearer {pw}' http://127.0.0.1:9/\"}"
    ),
    "udf args api_key": Case(udf_args='{api_key: "{pw}"}'),
    "udf args Authorization header": Case(udf_args='{headers: {Authorization: "Bearer {pw}"}}'),
    "param default": Case(top='params: {db_password: "{pw}"}'),
    "param from the environment": Case(
        top='params: {api_token: ""}', env={"ARROWLINE_PARAM_API_TOKEN": "{pw}"}
    ),
    "param from --param": Case(top='params: {api_token: ""}', params=("api_token={pw}",)),
}

UDFS = """
import polars as pl

def keep(**settings):
    return [pl.col("x")]
"""

PIPELINE = """
pipeline: {name}
{top}
connections:
  {connection}
tasks:
  - id: a
    extract: {{from: postgres, connection: wh, query: "select 1 as x"}}
  - id: c
    udf: {{input: a, function: "udfs.py:keep", args: {udf_args}}}
  - id: b
    sql: select error('{failure}') as x from c
"""


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _pipeline(case: Case, name: str, values: dict[str, str], failure: str) -> str:
    top = case.top if "openlineage" in case.top else case.top + "\nopenlineage: {file: ol.jsonl}"
    return PIPELINE.format(
        name=name,
        top=_fill(top, values),
        connection=_fill(case.connection, values),
        udf_args=_fill(case.udf_args, values),
        failure=failure,
    )


def _catalog_text(project: Path, shared: SharedCatalog | None) -> str:
    """Every row of every catalog table, as one text."""
    rows: list[tuple[object, ...]] = []
    for table in TABLES:
        if shared is not None:
            rows += shared.rows(f"select * from {table}")
        else:
            with sqlite3.connect(project / ".arrowline" / "catalog.db") as db:
                rows += db.execute(f"select * from {table}").fetchall()
    assert rows, "the catalog recorded nothing"
    return "\n".join(repr(row) for row in rows)


def _stored_definition(project: Path, shared: SharedCatalog | None) -> str:
    sql = "select definition from runs"
    if shared is not None:
        found = shared.rows(sql)
    else:
        with sqlite3.connect(project / ".arrowline" / "catalog.db") as db:
            found = db.execute(sql).fetchall()
    return "\n".join(str(row[0]) for row in found)


def _check_case(
    case_name: str,
    cli: Cli,
    project: Path,
    pg_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    shared: SharedCatalog | None = None,
) -> None:
    case = CASES[case_name]
    slug = "".join(ch for ch in case_name if ch.isalnum())[:20]
    password, new_password = f"Pw-{slug}-7f3q", f"New-{slug}-9k2z"

    def values(pw: str) -> dict[str, str]:
        return {
            "pw": pw,
            "pg": pg_uri,
            "pg_pw": _with_password(pg_uri, pw),
            "pg_pw_short_scheme": _with_password(pg_uri, pw).replace("postgresql:", "postgres:"),
        }

    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, values(password)))
    for name, text in case.files.items():
        (project / name).write_text(_fill(text, values(password)), encoding="utf-8")
    (project / "udfs.py").write_text(textwrap.dedent(UDFS), encoding="utf-8")
    path = project / "p.yaml"
    path.write_text(_pipeline(case, "secrets", values(password), "boom"), encoding="utf-8")
    params = [arg for assignment in case.params for arg in ("--param", assignment)]
    params = [_fill(arg, values(password)) for arg in params]
    invoke = cli
    printed: list[tuple[str, Result]] = []
    ran = invoke(
        "run", path, *params, "--no-progress", "--log-format", "json", "--log-level", "DEBUG"
    )
    printed.append(("run", ran))
    assert ran.exit_code != 0, ran.output  # task b fails on purpose
    printed.append(("plan --json", invoke("plan", path, *params, "--format", "json")))
    printed.append(("plan", invoke("plan", path, *params, "--no-schemas")))
    printed.append(("runs", invoke("runs", "last")))
    printed.append(("runs --json", invoke("runs", "last", "--format", "json")))
    printed.append(("runs list --json", invoke("runs", "--format", "json")))
    printed.append(("render", invoke("render", path, "c", *params)))
    printed.append(("show", invoke("show", "a")))
    printed.append(("dlq list", invoke("dlq", "list", "--format", "json")))
    # a changed pipeline (new password, new SQL) is refused a resume, with a diff
    path.write_text(_pipeline(case, "secrets", values(new_password), "bang"), encoding="utf-8")
    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, values(new_password)))
    for name, text in case.files.items():
        (project / name).write_text(_fill(text, values(new_password)), encoding="utf-8")
    refused = invoke(
        "run", path, "--resume", "--no-progress", "--log-format", "json", "--log-level", "DEBUG"
    )
    printed.append(("run --resume", refused))

    for command, result in printed:
        for secret in (password, new_password):
            assert secret not in result.stdout + result.stderr, (command, result.output)
    lineage = project / "ol.jsonl"
    if lineage.exists():
        assert password not in lineage.read_text(encoding="utf-8")

    resolving_fails = "conninfo" in case_name
    if resolving_fails:  # nothing ran, so nothing was stored; the refusal is about no run
        assert "not a postgresql:// URI" in ran.stderr
        return
    assert refused.exit_code != 0
    assert "tasks changed: b" in refused.stderr
    assert "bang" in refused.stderr  # the diff is shown ...
    stored = _catalog_text(project, shared)
    for secret in (password, new_password):
        assert secret not in stored
    assert "failed" in ran.stderr  # the failure was logged, as JSON lines ...
    assert MASK in stored or case.reference  # ... and what was masked is shown as masked
    if case.reference is not None:  # ... and a reference stays what it was
        assert case.reference in _stored_definition(project, shared)


@pytest.mark.parametrize("case_name", list(CASES))
def test_a_password_in_the_pipeline_reaches_no_catalog_table_output_or_log_line(
    case_name: str, cli: Cli, project: Path, pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_case(case_name, cli, project, pg_uri, monkeypatch)


@pytest.mark.parametrize("case_name", ["uri userinfo", "options libpq options", "param default"])
def test_a_shared_catalog_stores_no_password_either(
    case_name: str,
    cli: Cli,
    project: Path,
    pg_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    shared_catalog: SharedCatalog,
) -> None:
    _check_case(case_name, cli, project, pg_uri, monkeypatch, shared_catalog)


def test_an_error_that_quotes_a_password_written_in_the_pipeline_is_stored_and_logged_masked(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    (project / "udfs.py").write_text(
        textwrap.dedent(
            """
            def call(frame, api_key):
                raise ValueError(f"the service refused key {api_key}")
            """
        ),
        encoding="utf-8",
    )
    path = write(
        "p.yaml",
        """
        pipeline: quoted
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            udf: {input: a, function: "udfs.py:call", args: {api_key: "K3y-quoted-by-error"}}
        """,
    )
    ran = cli("run", path, "--no-progress", "--log-format", "json")
    assert ran.exit_code == 1
    assert "the service refused key ***" in ran.stderr
    assert "K3y-quoted-by-error" not in ran.stdout + ran.stderr
    assert "K3y-quoted-by-error" not in _catalog_text(project, None)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://u:pw1@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@w:1@h/db", "postgresql://u:***@h/db"),  # userinfo ends at the last @
        (
            "postgresql://u@h/db?sslmode=require&password=pw1",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        (
            "postgresql://h/db?options=-c%20password%3Dpw1%20-c%20x%3D1",
            "postgresql://h/db?options=-c%20password%3D***%20-c%20x%3D1",
        ),
        ("host=h password='p w' dbname=db", "host=h password=*** dbname=db"),
        ("host=h sslpassword = pw1 dbname=db", "host=h sslpassword = *** dbname=db"),
        ("http://hook/x?token=t1&channel=ops", "http://hook/x?token=***&channel=ops"),
        (
            "curl -H 'Authorization: Bearer t1' http://x/",
            "curl -H 'Authorization: Bearer ***' http://x/",
        ),
        ('{"api_key": "k1"}', '{"api_key": "***"}'),
        ("notify --password=pw1", "notify --password=***"),
        # references are not secrets and stay as written
        ("postgresql://u:${env:PW}@h/db", "postgresql://u:${env:PW}@h/db"),
        ("password=${file:/run/secrets/pg}", "password=${file:/run/secrets/pg}"),
        # text that only looks similar is left alone
        ("unexpected token: ')' at line 1", "unexpected token: ')' at line 1"),
        ("http://host:8080/path@v2", "http://host:8080/path@v2"),
        ("select * from t where a = 1", "select * from t where a = 1"),
    ],
)
def test_mask_text_hides_passwords_in_uris_conninfo_and_headers(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_mask_secrets_masks_values_by_their_key_and_keeps_references() -> None:
    value = {
        "password": "pw1",
        "options": {"sslpassword": "pw2", "application_name": "etl"},
        "api_key": "${env:OL_KEY}",
        "headers": {"Authorization": "Bearer t1", "X-Api-Key": "k1", "Accept": "json"},
        "db_password": "pw3",
        "accessToken": "t2",
        "token_limit": 100,  # numbers are not secrets
        "tokenizer": "bert",
        "list": [{"client_secret": "s1"}],
    }
    assert mask_secrets(value) == {
        "password": MASK,
        "options": {"sslpassword": MASK, "application_name": "etl"},
        "api_key": "${env:OL_KEY}",
        "headers": {"Authorization": MASK, "X-Api-Key": MASK, "Accept": "json"},
        "db_password": MASK,
        "accessToken": MASK,
        "token_limit": 100,
        "tokenizer": "bert",
        "list": [{"client_secret": MASK}],
    }


def test_an_auth_block_masks_the_secrets_it_names_and_keeps_its_settings() -> None:
    """`auth` is named like a secret; a block under it that names its own secrets keeps the
    rest readable (and out of the redactor, which would hide "header" or "0.5s" in every
    message); one that names none is masked whole. A name for where a secret is (token_url,
    secret_path) is no secret."""
    value = {
        "auth": {
            "type": "oauth2_client_credentials",
            "token_url": "https://id.example.com/token",
            "client_id": "c",
            "client_secret": "s3cret",
            "refresh_before": "0.5s",
        },
        "key_auth": {"type": "api_key", "location": "header", "api_key": "k-123"},
        "credentials": {"account": "a", "blob": "opaque"},
        "secret_path": "/run/secrets/db",
    }
    assert mask_secrets(value) == {
        "auth": {
            "type": "oauth2_client_credentials",
            "token_url": "https://id.example.com/token",
            "client_id": "c",
            "client_secret": MASK,
            "refresh_before": "0.5s",
        },
        "key_auth": {"type": "api_key", "location": "header", "api_key": MASK},
        "credentials": {"account": MASK, "blob": MASK},
        "secret_path": "/run/secrets/db",
    }


def test_a_resume_takes_a_masked_parameter_from_the_environment_again(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.api.pipeline import resume, run
    from engine.core.states import RunState
    from engine.state.catalog import CatalogReader
    from engine.state.db import catalog_location

    (project / "udfs.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            def guarded(frame):
                if Path("broken.flag").exists():
                    raise ValueError("broken")
                return frame
            """
        ),
        encoding="utf-8",
    )
    path = write(
        "p.yaml",
        """
        pipeline: tokens
        params: {api_token: "", region: north}
        tasks:
          - id: a
            sql: select {{ params.api_token | sql_literal }} as t
          - id: b
            udf: {input: a, function: "udfs.py:guarded"}
        """,
    )
    monkeypatch.setenv("ARROWLINE_PARAM_API_TOKEN", "Tok-from-env-1")
    (project / "broken.flag").touch()
    first = run(path, params={"region": "south"})
    assert first.state is RunState.FAILED
    with CatalogReader(catalog_location(project)) as catalog:
        assert catalog.run(first.run_id).params == {"api_token": MASK, "region": "south"}
    (project / "broken.flag").unlink()
    resumed = resume(path, first.run_id)
    assert resumed.state is RunState.SUCCESS
    # the recorded region, and the token from the environment, not the mask
    assert dict(resumed.plan.params) == {"api_token": "Tok-from-env-1", "region": "south"}


def test_a_definition_stored_before_masking_is_never_shown_with_its_password(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    text = """
        pipeline: legacy
        connections:
          wh: {kind: postgres, host: 127.0.0.1, user: postgres, password: "${env:NOT_NEEDED}"}
        tasks:
          - id: a
            sql: select error('boom') as x
        """
    path = write("p.yaml", text)
    assert cli("run", path, "--no-progress").exit_code == 1
    database = project / ".arrowline" / "catalog.db"
    with sqlite3.connect(database) as db:  # as a version without masking stored it
        (stored,) = db.execute("select definition from runs").fetchone()
        legacy = stored.replace("${env:NOT_NEEDED}", "Legacy-pw-42")
        db.execute("update runs set definition = ?", (legacy,))
    path.write_text(textwrap.dedent(text).replace("boom", "bang"), encoding="utf-8")
    refused = cli("run", path, "--resume", "--no-progress")
    assert refused.exit_code != 0
    assert "tasks changed: a" in refused.stderr
    assert "Legacy-pw-42" not in refused.stdout + refused.stderr
    shown = cli("runs", "last", "--format", "json")
    assert "Legacy-pw-42" not in shown.stdout
    assert "password: '***'" in shown.stdout or "password: ***" in shown.stdout
