"""Each run keeps its log lines: per task, masked, appended by a resume, the newest kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loguru import logger

from engine.core.secrets import register_secret
from engine.execution import runlog


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_runs_lines_are_kept_with_their_task_and_masked(tmp_path: Path) -> None:
    register_secret("hunter2-very-secret")
    logger.enable("engine")
    try:
        with runlog.run_log(tmp_path, "p", "r1") as path:
            with logger.contextualize(run_id="r1", task_id="t"):
                logger.info("connecting with hunter2-very-secret")
                try:
                    raise ValueError("bad hunter2-very-secret")
                except ValueError:
                    logger.exception("failed")
            with logger.contextualize(run_id="other", task_id="t"):
                logger.info("a line of another run")
            logger.warning("no run at all")
        with logger.contextualize(run_id="r1"):
            logger.info("after the run ended")
    finally:
        logger.disable("engine")
    lines = _lines(path)
    assert [(line["task_id"], line["level"]) for line in lines] == [("t", "INFO"), ("t", "ERROR")]
    text = path.read_text()
    assert "hunter2" not in text
    assert lines[1]["error"].startswith("ValueError: bad ***")


def test_a_resume_appends_and_old_logs_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runlog, "KEEP_LOGS", 2)
    for run_id in ("r1", "r2", "r3", "r3"):  # r3 resumed
        with runlog.run_log(tmp_path, "p", run_id), logger.contextualize(run_id=run_id):
            logger.info("hello")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["r2.jsonl", "r3.jsonl"]
    assert len(_lines(tmp_path / "p" / "r3.jsonl")) == 2
