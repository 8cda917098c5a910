"""Review of pipelined hand-off and `materialize: ephemeral`: each test shows one defect against
the real engine (real Parquet files, a real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds

from engine.api.pipeline import resume, run
from engine.core.errors import TransientTaskError
from engine.core.states import RunState, TaskState
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.conftest import PgSchema, WritePipeline
from tests.engine.execution.test_pipelined import write_input

CONNECTIONS = 'connections:\n          wh: {kind: postgres, uri: "${env:TEST_PG_URI}"}'


def _rows_in(directory: Path) -> int:
    return ds.dataset(directory, format="parquet").count_rows() if directory.exists() else 0


def test_resume_does_not_wipe_what_a_file_load_of_an_ephemeral_incremental_extract_wrote(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    """An ephemeral extract is always extracted again by --resume, and with it every load that
    reads it, even loads that had succeeded. An incremental extract then starts from the
    watermark those loads committed and reads nothing (or only newer rows); a Parquet append
    rewrites this run's own part files with that, deleting the rows the first attempt wrote,
    while the watermark says they were loaded: rows are lost for good."""
    source = pg.table("source")
    pg.execute(
        f"create table {source} (id bigint primary key, updated_at timestamptz)",
        f"insert into {source} select i, timestamptz '2024-01-01' + i * interval '1 second' "
        "from generate_series(1, 2000) i",
    )
    write_input(project, 100)
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        {CONNECTIONS}
        tasks:
          - id: orders
            materialize: ephemeral
            extract:
              from: postgres
              connection: wh
              table: {source}
              incremental: {{cursor: updated_at, key: [id]}}
          - id: publish
            load: {{input: orders, to: parquet, path: out/orders/, mode: append}}
          - id: other
            extract: {{from: files, path: data/orders.parquet}}
        """,
    )

    def flaky(context: TaskContext) -> TaskOutcome:
        if context.task.id == "other":
            raise TransientTaskError("an unrelated branch failed")
        return run_task(context)

    first = run(path, runner=flaky)
    assert first.state is RunState.FAILED
    assert first.tasks["publish"].state is TaskState.SUCCESS
    assert _rows_in(project / "out" / "orders") == 2000

    again = resume(path, first.run_id)
    assert again.state is RunState.SUCCESS, {t: r.error for t, r in again.tasks.items()}
    # the 2,000 rows the first attempt loaded (and whose watermark it committed) are still there
    assert _rows_in(project / "out" / "orders") == 2000
