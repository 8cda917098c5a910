import json

import pytest
from pydantic import ValidationError

from engine.spec.model import PipelineSpec, TaskKind, TaskSpec, pipeline_json_schema


def _spec(**extra: object) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"pipeline": "p", "tasks": [{"id": "a", "sql": "select 1"}], **extra}
    )


def test_sql_shorthand_and_kind() -> None:
    task = _spec().tasks[0]
    assert task.kind is TaskKind.SQL
    assert task.sql is not None
    assert task.sql.query == "select 1"


def test_model_is_frozen() -> None:
    spec = _spec()
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TaskSpec.model_validate({"id": "a", "sql": "select 1", "retires": {}})


def test_a_task_has_exactly_one_kind() -> None:
    with pytest.raises(ValidationError, match="exactly one kind"):
        TaskSpec.model_validate(
            {"id": "a", "sql": "select 1", "extract": {"from": "files", "path": "x"}}
        )
    with pytest.raises(ValidationError, match="one of extract, sql, udf, validate, load"):
        TaskSpec.model_validate({"id": "a"})


def test_retry_and_timeout_defaults_and_durations() -> None:
    spec = _spec(defaults={"retry": {"attempts": 5, "backoff": "2s"}, "timeout": "30m"})
    assert spec.defaults.retry.attempts == 5
    assert spec.defaults.retry.backoff.total_seconds() == 2
    assert spec.defaults.retry.max_backoff.total_seconds() == 60
    assert spec.defaults.timeout is not None
    assert spec.defaults.timeout.total_seconds() == 1800


def test_merge_load_requires_keys() -> None:
    with pytest.raises(ValidationError, match="needs 'keys'"):
        TaskSpec.model_validate(
            {
                "id": "l",
                "load": {
                    "input": "a",
                    "to": "duckdb",
                    "path": "w.duckdb",
                    "table": "t",
                    "mode": "merge",
                },
            }
        )


def test_json_schema_describes_every_kind_and_requires_exactly_one() -> None:
    schema = pipeline_json_schema()
    json.dumps(schema)  # serialisable
    task = schema["$defs"]["TaskSpec"]
    assert {tuple(option["required"]) for option in task["oneOf"]} == {(k.value,) for k in TaskKind}
    assert "pipeline" in schema["properties"]
    assert schema["properties"]["tasks"]["minItems"] == 1
