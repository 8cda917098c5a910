"""`arrowline dlq list|show|requeue` and `arrowline quarantine show|replay`, end to end."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.state.catalog import CatalogReader, catalog_location
from tests.conftest import WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

Cli = Callable[..., Result]

FLAKY = """
pipeline: nightly
params: {day: "2024-03-01"}
tasks:
  - id: src
    sql: select range as id, {{ params.day | sql_literal }} as day from range(10)
  - id: fussy
    udf: {input: src, function: "udfs.py:needs_flag"}
    retry: {attempts: 2, backoff: 0s}
  - id: out
    load: {input: fussy, to: duckdb, path: out/w.duckdb, table: t, mode: append}
"""

UDFS = """
from pathlib import Path

def needs_flag(frame):
    if not Path("ready.flag").exists():
        raise ConnectionError("upstream service is not ready")
    return frame
"""


def test_a_dead_letter_is_listed_shown_and_requeued(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", FLAKY)
    failed = cli("run", path, "--no-progress")
    assert failed.exit_code == 1

    listed = cli("dlq", "list")
    assert listed.exit_code == 0
    assert "fussy" in listed.stdout
    assert "open" in listed.stdout
    letters = json.loads(cli("dlq", "list", "--format", "json").stdout)
    assert len(letters) == 1
    letter = letters[0]
    assert letter["reason"] == "attempts exhausted"
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2]
    assert all(a["error_kind"] == "UserCodeError" or a["transient"] for a in letter["attempts"])

    shown = cli("dlq", "show", str(letter["id"]))
    assert shown.exit_code == 0
    for fact in ('{"day": "2024-03-01"}', "attempt 1 at", "attempt 2 at", "not ready"):
        assert fact in shown.stdout
    assert f"arrowline dlq requeue {letter['id']}" in shown.stdout

    (project / "ready.flag").write_text("ok")
    requeued = cli("dlq", "requeue", str(letter["id"]), "--attempts", "4")
    assert requeued.exit_code == 0, requeued.stderr
    assert cli("dlq", "list").stdout.strip() == "no open dead letters"
    (after,) = json.loads(cli("dlq", "list", "--all", "--format", "json").stdout)
    assert (after["status"], after["requeue_result"]) == ("resolved", "SUCCESS")
    with CatalogReader(catalog_location(project)) as catalog:
        (the_run,) = catalog.runs("nightly")
    assert the_run.run_id == letter["run_id"]  # requeued in place: same run, same parameters
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*), min(day) from t").fetchone() == (
            10,
            "2024-03-01",
        )

    again = cli("dlq", "requeue", str(letter["id"]))
    assert again.exit_code == 1
    assert "is resolved" in again.stderr
    missing = cli("dlq", "show", "999")
    assert missing.exit_code == 1
    assert "no dead letter 999" in missing.stderr


STRICT = """
pipeline: shop
tasks:
  - id: orders
    sql: select range as id, (range % 10) as amount from range(100)
  - id: checked
    validate:
      input: orders
      schema: {{columns: {{amount: {{type: int64, checks: {{le: {limit}}}}}}}}}
      on_fail: quarantine
      max_rejected_fraction: 0.9
  - id: out
    load: {{input: checked, to: duckdb, path: out/w.duckdb, table: good, mode: {mode}}}
"""


def test_quarantined_rows_are_shown_and_replayed_after_a_fix(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", STRICT.format(limit=5, mode="append"))
    first = cli("run", path, "--no-progress")
    assert first.exit_code == 0, first.stderr

    shown = cli("quarantine", "show", "checked", "--format", "json")
    assert shown.exit_code == 0
    report = json.loads(shown.stdout)
    assert report["rows"] == 40  # amounts 6..9, ten rows each
    assert report["by_reason"] == [
        {"column": "amount", "check": "less_than_or_equal_to(5)", "rows": 40}
    ]
    assert {row["amount"] for row in report["preview"]} <= {6, 7, 8, 9}
    assert all(row["_arrowline_row"] % 10 >= 6 for row in report["preview"])
    text = cli("quarantine", "show", "checked")
    assert "40 quarantined rows; failures by check" in text.stdout

    # The fix: the limit was wrong for 6..7 but right for 8..9.
    path.write_text(STRICT.format(limit=7, mode="append"))
    replay = cli("quarantine", "replay", path, "checked", "--then", "out")
    assert replay.exit_code == 1, replay.stderr  # not every row passes yet
    assert (
        "replayed 40 quarantined rows of checked: 20 passed, 20 failed again and stay quarantined"
        in replay.stdout.replace("\n", " ")
    )
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        counts = connection.execute(
            "select count(*), count(distinct id), max(amount) from good"
        ).fetchone()
    assert counts == (80, 80, 7)  # 60 from the first run, 20 replayed, none twice
    with CatalogReader(catalog_location(project)) as catalog:
        replay_run = catalog.runs("shop")[0]
        ran = {t.task_id for t in catalog.task_runs(replay_run.run_id)}
    assert ran == {"checked", "out"}  # `orders` was not run again

    path.write_text(STRICT.format(limit=7, mode="replace"))
    refused = cli("quarantine", "replay", path, "checked", "--then", "out")
    assert refused.exit_code == 2
    assert "replaces its target" in refused.stderr
    wrong = cli("quarantine", "replay", path, "orders")
    assert wrong.exit_code == 2
    assert "only validate tasks quarantine rows" in wrong.stderr


def test_a_replay_where_rows_fail_again_reports_the_counts_not_a_failed_run(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    """More rows failing again than max_rejected_fraction allows is not a failure of the
    replay: no FAILED run, no dead letter; the counts and the exit code say how it went."""
    strict = STRICT.replace("max_rejected_fraction: 0.9", "max_rejected_fraction: 0.5")
    path = write("p.yaml", strict.format(limit=5, mode="append"))
    assert cli("run", path, "--no-progress").exit_code == 0  # 40 of 100 quarantined: under half

    path.write_text(strict.format(limit=6, mode="append"))  # a partial fix: only the 6s pass
    partial = cli("quarantine", "replay", path, "checked", "--then", "out")
    assert partial.exit_code == 1
    assert "replayed 40 quarantined rows of checked: 10 passed, 30 failed again and stay " in (
        partial.stdout.replace("\n", " ")
    )
    assert "arrowline quarantine show checked --run" in partial.stdout.replace("\n", " ")
    with CatalogReader(catalog_location(project)) as catalog:
        replay_run = catalog.runs("shop")[0]
        assert replay_run.state.value == "SUCCESS"
        assert catalog.dead_letters("shop", status=None) == []
    report = json.loads(cli("quarantine", "show", "checked", "--format", "json").stdout)
    assert report["rows"] == 30  # they stay quarantined, in the replay's run

    path.write_text(strict.format(limit=9, mode="append"))  # the whole fix
    fixed = cli("quarantine", "replay", path, "checked", "--then", "out")
    assert fixed.exit_code == 0, fixed.stdout
    assert "replayed 30 quarantined rows of checked: 30 passed, 0 failed again" in (
        fixed.stdout.replace("\n", " ")
    )
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        counts = connection.execute("select count(*), count(distinct id) from good").fetchone()
    assert counts == (100, 100)  # 60 + 10 + 30: every row landed once


def test_a_dead_letter_dealt_with_by_hand_is_resolved_with_who_when_and_why(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", FLAKY)
    assert cli("run", path, "--no-progress").exit_code == 1
    (letter,) = json.loads(cli("dlq", "list", "--format", "json").stdout)
    ident = str(letter["id"])

    # bad notes change nothing and say what is wrong
    for note, problem in (
        ("   ", "the note is empty"),
        ("fixed \x1b[2J\x1b[31mby hand", "control character '\\x1b' at position 7"),
        ("x" * 2001, "the note is 2,001 characters; at most 2,000"),
    ):
        refused = cli("dlq", "resolve", ident, "--note", note)
        assert refused.exit_code == 2, refused.stdout
        assert problem in refused.stderr
    for bad_id in ("0", "-1", "1; drop table dead_letters"):
        assert cli("dlq", "resolve", bad_id, "--note", "x").exit_code == 2
    missing = cli("dlq", "resolve", "999", "--note", "x")
    assert missing.exit_code == 1
    assert "no dead letter 999" in missing.stderr
    assert json.loads(cli("dlq", "list", "--format", "json").stdout)[0]["status"] == "open"

    note = "reloaded by hand from postgresql://etl:s3cret-pw@db/x'); drop table runs; --"
    resolved = cli("dlq", "resolve", ident, "--note", note)
    assert resolved.exit_code == 0, resolved.stderr
    assert f"resolved dead letter {ident}" in resolved.stdout
    assert cli("dlq", "list").stdout.strip() == "no open dead letters"
    (after,) = json.loads(cli("dlq", "list", "--all", "--format", "json").stdout)
    assert after["status"] == "resolved"
    assert after["resolved_by"].endswith("@" + socket.gethostname())
    assert after["resolved_at"] >= letter["created_at"]
    # the catalog never keeps a password, and the quote is only text
    assert after["resolution_note"] == (
        "reloaded by hand from postgresql://etl:***@db/x'); drop table runs; --"
    )
    shown = cli("dlq", "show", ident).stdout
    assert f"by {after['resolved_by']} at {after['resolved_at']}" in shown
    assert "s3cret-pw" not in shown
    assert "arrowline dlq requeue" not in shown

    again = cli("dlq", "resolve", ident, "--note", "twice")
    assert again.exit_code == 1
    assert f"already resolved by {after['resolved_by']} at {after['resolved_at']}" in (
        again.stderr.replace("\n", "")
    )
    requeue = cli("dlq", "requeue", ident)
    assert requeue.exit_code == 1
    assert f"is resolved by {after['resolved_by']}" in requeue.stderr
    with CatalogReader(catalog_location(project)) as catalog:
        assert [r.state.value for r in catalog.runs("nightly")] == ["FAILED"]  # nothing ran


EXTRACT = """
pipeline: landing
tasks:
  - id: raw
    extract: {{from: files, path: "in/*.csv", columns: {{amount: int64}}, on_bad_row: {policy}}}
  - id: out
    load: {{input: raw, to: duckdb, path: out/w.duckdb, table: raw, mode: append}}
"""


def test_bad_rows_of_an_extract_go_to_its_quarantine_or_fail_it_losing_nothing(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    (project / "in").mkdir()
    (project / "in" / "a.csv").write_text("id,amount\n1,10\n2,20\n")
    path = write("p.yaml", EXTRACT.format(policy="fail"))
    assert cli("run", path, "--no-progress").exit_code == 0

    (project / "in" / "b.csv").write_text("id,amount\n3,30\n4,forty\n5,50,extra\n6,60\n")
    failed = cli("run", path, "--no-progress")
    assert failed.exit_code == 1
    assert "in/b.csv: malformed row, line 4: expected 2 fields, found 3: '5,50,extra'" in (
        failed.stdout
    )
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        kept = connection.execute("select id from raw order by id").fetchall()
    assert kept == [(1,), (2,)]  # what the first run committed is all still there

    path.write_text(EXTRACT.format(policy="quarantine"))
    passed = cli("run", path, "--no-progress")
    assert passed.exit_code == 0, passed.stderr
    report = json.loads(cli("quarantine", "show", "raw", "--format", "json").stdout)
    assert report["rows"] == 2
    found = {(r["_arrowline_file"], r["_arrowline_row"]) for r in report["preview"]}
    assert found == {("in/b.csv", 2), ("in/b.csv", 4)}  # row 2 (conversion), line 4 (ragged)
    with CatalogReader(catalog_location(project)) as catalog:
        latest = catalog.runs("landing")[0]
        raw = catalog.task_run(latest.run_id, "raw")
    assert raw is not None
    assert (raw.rows_in, raw.rows_out, raw.rows_rejected) == (6, 4, 2)


def test_a_task_in_several_pipelines_asks_for_the_pipeline_option(
    cli: Cli, write: WritePipeline
) -> None:
    for name in ("shop", "outlet"):
        text = STRICT.format(limit=5, mode="append").replace("pipeline: shop", f"pipeline: {name}")
        assert cli("run", write(f"{name}.yaml", text), "--no-progress").exit_code == 0
    for command in (("quarantine", "show", "checked"), ("show", "checked")):
        ambiguous = cli(*command)
        assert ambiguous.exit_code == 1
        assert "task 'checked' exists in several pipelines (outlet, shop)" in ambiguous.stderr
        assert "--pipeline outlet" in ambiguous.stderr
        assert "pipeline=" not in ambiguous.stderr
        assert cli(*command, "--pipeline", "shop").exit_code == 0


WIDE = """
pipeline: wide
tasks:
  - id: orders
    sql: |
      select range as order_id, range % 7 as customer_id, date '2024-01-01' as order_date,
             case when range = 3 then 'lost_in_space' else 'shipped' end as status,
             case when range = 3 then -115.62::double else 10.5 end as amount, 'GBP' as currency,
             'small_business' as segment, 'DE' as country, range % 2 = 0 as is_large,
             'medium' as value_band, 1.25 as unit_price_usd, 'a longer free text note' as note
      from range(5)
  - id: checked
    validate:
      input: orders
      schema:
        columns:
          amount: {type: float64, checks: {gt: 0}}
          status: {type: string, checks: {isin: [placed, shipped, delivered, returned]}}
      on_fail: quarantine
      max_rejected_fraction: 1
"""


def test_quarantine_show_prints_each_reason_whole_on_a_line_of_its_own(
    cli: Cli, write: WritePipeline
) -> None:
    assert cli("run", write("wide.yaml", WIDE), "--no-progress").exit_code == 0
    for command in (("quarantine", "show", "checked"), ("show", "checked", "--quarantine")):
        shown = cli(*command)
        assert shown.exit_code == 0, shown.stderr
        lines = shown.stdout.splitlines()
        amount = [i for i, line in enumerate(lines) if "amount: greater_than(0) (-115.62)" in line]
        status = [
            i
            for i, line in enumerate(lines)
            if "status: isin(['placed', 'shipped', 'delivered', 'returned']) (lost_in_space)"
            in line
        ]
        assert len(amount) == len(status) == 1
        assert abs(amount[0] - status[0]) == 1  # the row takes one line per reason, no more
        assert " 3 " in lines[min(amount[0], status[0])]  # beside its row number
        csv = cli(*command, "--format", "csv")
        assert csv.exit_code == 0
        header, row = csv.stdout.splitlines()
        assert header.startswith("_arrowline_row,_arrowline_reasons,order_id,")
        assert row.startswith(
            "3,\"amount: greater_than(0) (-115.62); status: isin(['placed', 'shipped', "
            "'delivered', 'returned']) (lost_in_space)\",3,"
        )
