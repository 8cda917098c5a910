import itertools
from pathlib import Path

import pytest

from engine.core.errors import StateError
from engine.core.states import (
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    RunState,
    TaskState,
    check_run_transition,
    check_task_transition,
)
from engine.state.catalog import Catalog

ALLOWED_TASK = {
    ("PENDING", "QUEUED"),
    ("PENDING", "SKIPPED"),
    ("PENDING", "CANCELLED"),
    ("QUEUED", "RUNNING"),
    ("QUEUED", "CANCELLED"),
    ("RUNNING", "SUCCESS"),
    ("RUNNING", "FAILED"),
    ("RUNNING", "RETRYING"),
    ("RUNNING", "CANCELLED"),
    ("RUNNING", "PENDING"),  # a load streaming from an extract whose attempt failed
    ("RETRYING", "QUEUED"),
    ("RETRYING", "CANCELLED"),
}


def test_task_transition_table_is_the_documented_one() -> None:
    table = {(a.value, b.value) for a, targets in TASK_TRANSITIONS.items() for b in targets}
    assert table == ALLOWED_TASK
    assert {s for s in TaskState if s.terminal} == {
        TaskState.SUCCESS,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
    }


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (a, b)
        for a, b in itertools.product(TaskState, TaskState)
        if (a.value, b.value) not in ALLOWED_TASK
    ],
)
def test_every_invalid_task_transition_is_rejected(current: TaskState, target: TaskState) -> None:
    with pytest.raises(StateError, match=f"cannot go from {current.value} to {target.value}"):
        check_task_transition("t", current, target)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED_TASK))
def test_every_valid_task_transition_is_accepted(current: str, target: str) -> None:
    check_task_transition("t", TaskState(current), TaskState(target))


@pytest.mark.parametrize(("current", "target"), list(itertools.product(RunState, RunState)))
def test_run_transitions(current: RunState, target: RunState) -> None:
    if target in RUN_TRANSITIONS[current]:
        check_run_transition("r", current, target)
    else:
        with pytest.raises(StateError):
            check_run_transition("r", current, target)


def test_terminal_state_message_says_so() -> None:
    with pytest.raises(StateError, match="none, SUCCESS is terminal"):
        check_task_transition("t", TaskState.SUCCESS, TaskState.RUNNING)


def test_catalog_enforces_the_state_machine_and_keeps_the_state(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.create_run("r1", "p", "v1", None, {}, "2024-01-01", None, [("a", "sql", 0, "f")], {})
    catalog.transition_task("r1", "a", TaskState.QUEUED, "ready")
    with pytest.raises(StateError, match="cannot go from QUEUED to SUCCESS"):
        catalog.transition_task("r1", "a", TaskState.SUCCESS, "skip ahead")
    assert catalog.task_run("r1", "a").state is TaskState.QUEUED  # type: ignore[union-attr]
    assert [t.to_state for t in catalog.transitions("r1", "a")] == ["QUEUED"]
    catalog.close()
