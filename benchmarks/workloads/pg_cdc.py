"""Change data capture from PostgreSQL: 500,000 inserts, 100,000 updates and 25,000 deletes
(in transactions of 10,000, 10,000 and 5,000 changes) to a 1,000,000-row table, read from a
logical replication slot.

    server/decode       the server alone decoding the slot: `select count(*) from
                        pg_logical_slot_peek_binary_changes(...)`, the rate to reach
    arrowline/read      a pipeline of one `cdc:` extract: the changes decoded into Arrow and
                        kept in the workspace (`read_s`: the extract task)
    arrowline/apply     the same extract, then a `mode: apply` load into a copy of the table
                        in PostgreSQL (`apply_s`: the load task)
    handwritten/merge   the same change rows (as arrowline/read decoded them, from Parquet)
                        COPied into a staging table, then DELETE ... USING and INSERT ... ON
                        CONFLICT DO UPDATE of each key's last change (`apply_s`)

Every sample starts from the same state, made before its clock starts: the table rebuilt from
its 1M-row base, a fresh slot (arrowline's own first run, a snapshot, makes it and fills the
copy), then the changes written. Goals (issue 18): arrowline/read's changes/s at least 0.7x
server/decode's and 150k changes/s; its peak RSS bounded by the batch size; arrowline/apply's
apply_s within 1.3x handwritten/merge's.

Needs a server with wal_level = logical: $ARROWLINE_BENCH_CDC_URI, else one started here (a
cluster under benchmarks/.data/pg-logical, left running for the next run; `pg_ctl -D
benchmarks/.data/pg-logical/data stop` stops it).

Child usage: python -m benchmarks.workloads.pg_cdc CONTENDER --data DIR
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main

DATA = Path(__file__).resolve().parents[1] / ".data"
NAMES = ["server/decode", "arrowline/read", "arrowline/apply", "handwritten/merge"]
SLOT = "bench_cdc"
PIPELINE = "pg_cdc"
TASK_SLOT = "arrowline_pg_cdc_changes_5d15e9bd"
"""The slot arrowline's extract makes (connectors.postgres.cdc.source.default_slot)."""
COLUMNS = "id bigint primary key, qty int, amount numeric(12,2), name text, updated_at timestamptz"


def _uri() -> str:
    given = os.environ.get("ARROWLINE_BENCH_CDC_URI")
    return given if given else _local_cluster()


def _local_cluster() -> str:
    """A wal_level = logical cluster under benchmarks/.data, started when not running."""
    import glob
    import pwd

    base = DATA / "pg-logical"
    port = 55432
    uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    if _answers(uri):
        return uri
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if not binaries:
        raise SystemExit("pg_cdc needs PostgreSQL's initdb, or ARROWLINE_BENCH_CDC_URI")
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    runas = ["runuser", "-u", "postgres", "--"] if owner else []
    base.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    if not data.exists():
        subprocess.run(
            [*runas, f"{binaries[0]}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
        )
    options = f"-p {port} -k {base} -h 127.0.0.1 -c wal_level=logical -c fsync=off"
    subprocess.run(
        [*runas, f"{binaries[0]}/pg_ctl", "-D", str(data), "-l", str(base / "log"), "-o",
         options, "-w", "start"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return uri


def _answers(uri: str) -> bool:
    import psycopg

    try:
        psycopg.connect(uri, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def _execute(uri: str, *statements: str) -> list[Any]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as connection:
        results = []
        for statement in statements:
            cursor = connection.execute(statement)  # type: ignore[arg-type]
            results.append(cursor.fetchall() if cursor.description else None)
        return results


def _rebuild(uri: str, rows: int) -> None:
    """The source table as its base, no slot, no publication."""
    _execute(
        uri,
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
        f"where slot_name in ('{SLOT}', '{TASK_SLOT}')",
        "drop publication if exists bench_cdc",
        f"drop publication if exists {TASK_SLOT}",
        "drop table if exists src",
        f"create table src ({COLUMNS})",
        f"insert into src select * from base_{rows}",
        "drop table if exists copy",
        "checkpoint",
    )


def _changes(uri: str, rows: int) -> int:
    """Write the workload's changes (inserts in 50 transactions, updates in 10, deletes in
    5); how many."""
    inserts, updates, deletes = rows // 2, rows // 10, rows // 40
    step, span, cut = inserts // 50, rows // 10, rows // 5
    _execute(
        uri,
        f"""
        do $$ begin
          for batch in 0..49 loop
            insert into src select g, g % 100, (g % 10000) / 100.0, 'new ' || g, now()
            from generate_series({rows} + batch * {step} + 1, {rows} + (batch + 1) * {step}) g;
            commit;
          end loop;
          for batch in 0..9 loop
            update src set qty = qty + 1, updated_at = now()
            where id % 10 = 0 and id > batch * {span} and id <= (batch + 1) * {span};
            commit;
          end loop;
          for batch in 0..4 loop
            delete from src where id % 40 = 5 and id > batch * {cut} and id <= (batch + 1) * {cut};
            commit;
          end loop;
        end $$
        """,
    )
    return inserts + updates + deletes


def _pipeline(out: Path, apply: bool) -> Path:
    load = textwrap.dedent(
        """
          - id: copy
            load: {input: changes, to: postgres, connection: src, table: copy, mode: apply,
                   keys: [id]}
        """
    )
    path = out / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipeline: {PIPELINE}
            connections:
              src: {{kind: postgres, uri: "{os.environ["CDC_BENCH_URI"]}"}}
            tasks:
              - id: changes
                extract: {{from: postgres, connection: src, table: src, cdc: {{}}}}
            """
        )
        + (textwrap.indent(load.strip("\n"), "  ") + "\n" if apply else "")
    )
    return path


def _arrowline(out: Path, rows: int, apply: bool) -> dict[str, Any]:
    from engine.api.pipeline import run

    path = _pipeline(out, apply)
    _rebuild(os.environ["CDC_BENCH_URI"], rows)
    # the apply load keeps its watermark in this database: it would point at a dropped slot
    arrowline = [sys.executable, "-m", "engine"]
    project = ["--project-dir", str(out)]
    subprocess.run([*arrowline, "state", "reset", str(path), "--yes", *project], check=True)
    # The first run, a snapshot, makes the slot (and fills the copy): in a process of its own,
    # so this one's peak RSS is the change run's.
    subprocess.run([*arrowline, "run", str(path), *project], check=True, capture_output=True)
    changes = _changes(os.environ["CDC_BENCH_URI"], rows)
    started = time.perf_counter()
    result = run(path, project_dir=out)
    engine_s = time.perf_counter() - started
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    figures: dict[str, Any] = {
        "engine_s": engine_s,
        "read_s": result.tasks["changes"].duration_s,
        "changes": result.tasks["changes"].rows_out,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    assert figures["changes"] == changes, figures
    if apply:
        figures["apply_s"] = result.tasks["copy"].duration_s
        figures["checksum"] = _checksum(os.environ["CDC_BENCH_URI"])
    else:
        output = result.tasks["changes"].output
        kept = DATA / f"cdc-changes-{rows}.parquet"
        if output is not None and not kept.exists():  # handwritten/merge's input
            import pyarrow.parquet as pq

            pq.write_table(pq.read_table(list(output.files)), out / kept.name)
            shutil.move(out / kept.name, kept)
    return figures


def _checksum(uri: str) -> str:
    ((count, ids, qty),) = _execute(uri, "select count(*), sum(id), sum(qty) from copy")[0]
    expected = _execute(uri, "select count(*), sum(id), sum(qty) from src")[0][0]
    assert (count, ids, qty) == expected, ((count, ids, qty), expected)
    return f"{count}:{ids}:{qty}"


def _server(out: Path, rows: int) -> dict[str, Any]:
    uri = os.environ["CDC_BENCH_URI"]
    _rebuild(uri, rows)
    _execute(
        uri,
        "create publication bench_cdc for table src",
        f"select pg_create_logical_replication_slot('{SLOT}', 'pgoutput')",
    )
    changes = _changes(uri, rows)
    started = time.perf_counter()
    ((messages,),) = _execute(
        uri,
        f"select count(*) from pg_logical_slot_peek_binary_changes('{SLOT}', null, null, "
        "'proto_version', '1', 'publication_names', 'bench_cdc')",
    )[0]
    seconds = time.perf_counter() - started
    _execute(uri, f"select pg_drop_replication_slot('{SLOT}')")
    return {"engine_s": seconds, "read_s": seconds, "changes": changes, "messages": messages}


def _handwritten(out: Path, rows: int) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as pgdb
    import pyarrow.parquet as pq

    uri = os.environ["CDC_BENCH_URI"]
    changes = pq.read_table(DATA / f"cdc-changes-{rows}.parquet")
    _rebuild(uri, rows)
    _execute(uri, "create table copy as select * from src", "alter table copy add primary key (id)")
    _changes(uri, rows)  # the source as the others leave it, for the checksum
    names = [n for n in changes.schema.names if not n.startswith("_")]
    listed = ", ".join(names)
    started = time.perf_counter()
    with pgdb.connect(uri) as connection, connection.cursor() as cursor:
        cursor.adbc_ingest("stage", changes, mode="create", temporary=True)
        cursor.execute(
            "create temp table net as select distinct on (id) * from stage "
            "order by id, _lsn desc, _seq desc"
        )
        cursor.execute("delete from copy c using net n where c.id = n.id and n._op = 'delete'")
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "id")
        cursor.execute(
            f"insert into copy ({listed}) select {listed} from net where _op <> 'delete' "
            f"on conflict (id) do update set {updates}"
        )
        connection.commit()
    seconds = time.perf_counter() - started
    return {"engine_s": seconds, "apply_s": seconds, "checksum": _checksum(uri)}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 40_000 if args.quick else (args.rows or 1_000_000)
    uri = _uri()
    _execute(
        uri,
        f"create table if not exists base_{rows} ({COLUMNS})",
        f"insert into base_{rows} select g, g % 100, (g % 10000) / 100.0, 'row ' || g, "
        f"now() from generate_series(1, {rows}) g "
        f"where not exists (select 1 from base_{rows})",
    )
    DATA.mkdir(parents=True, exist_ok=True)
    return {"rows": rows, "uri": uri}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = ("-m", "benchmarks.workloads.pg_cdc")
    env = (("CDC_BENCH_URI", params["uri"]),)
    groups = {"arrowline/apply": "apply", "handwritten/merge": "apply"}
    return [
        Contender(
            name,
            (sys.executable, *module, name, "--data", str(params["rows"])),
            group=groups.get(name, ""),
            env=env,
        )
        for name in NAMES  # arrowline/read before handwritten/merge: it writes its input
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    figures: dict[str, dict[str, float]] = {}
    rows = ["| contender | changes/s | read | apply | peak RSS |", "|---|---|---|---|---|"]
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {(o.error or 'missing').splitlines()[-1][:80]} |||")
            continue
        keys = [
            k for k in ("read_s", "apply_s", "changes", "peak_mb") if k in o.samples[0].reported
        ]
        figures[o.contender] = {k: o.median(k) for k in keys}
        mine = figures[o.contender]
        rate = mine["changes"] / mine["read_s"] if "read_s" in mine and "changes" in mine else None
        cells = [
            f"{rate:,.0f}" if rate else "",
            f"{mine['read_s']:.2f} s" if "read_s" in mine else "",
            f"{mine['apply_s']:.2f} s" if "apply_s" in mine else "",
            f"{mine['peak_mb']:.0f} MB" if "peak_mb" in mine else "",
        ]
        rows.append(f"| {o.contender} | {' | '.join(cells)} |")
    summary: dict[str, Any] = {"contenders": figures}
    read, server = figures.get("arrowline/read"), figures.get("server/decode")
    if read and server:
        ours, theirs = read["changes"] / read["read_s"], server["changes"] / server["read_s"]
        summary |= {"read_changes_per_s": ours, "read_vs_server": ours / theirs}
        rows.append(
            f"\narrowline/read: {ours:,.0f} changes/s, {ours / theirs:.2f}x the server's own "
            "decoding (goals: 0.7x, 150,000/s)"
        )
    apply, hand = figures.get("arrowline/apply"), figures.get("handwritten/merge")
    if apply and hand:
        summary["apply_vs_handwritten"] = apply["apply_s"] / hand["apply_s"]
        rows.append(
            f"arrowline/apply: {summary['apply_vs_handwritten']:.2f}x the hand-written staging "
            "merge (goal 1.3x)"
        )
    rows.insert(0, f"{params['rows']:,}-row table, {params['rows'] * 5 // 8:,} changes\n")
    return summary, "\n".join(rows)


def main() -> None:
    def runner(name: str) -> Any:
        def run_one(data: Path, out: Path) -> dict[str, Any]:
            rows = int(str(data))
            if name == "server/decode":
                return _server(out, rows)
            if name == "handwritten/merge":
                return _handwritten(out, rows)
            return _arrowline(out, rows, apply=name == "arrowline/apply")

        return run_one

    child_main({name: runner(name) for name in NAMES}, needs=dict.fromkeys(NAMES, "psycopg"))


if __name__ == "__main__":
    main()
