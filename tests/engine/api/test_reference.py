"""The committed reference and JSON Schema are generated from the model and must match it."""

import json
from pathlib import Path

from engine.api.reference import render_reference
from engine.spec.model import pipeline_json_schema

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_pipeline_reference_is_up_to_date() -> None:
    committed = (DOCS / "pipeline-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), (
        "run: python -m engine.api.reference > docs/pipeline-reference.md"
    )


def test_json_schema_is_up_to_date() -> None:
    committed = json.loads((DOCS / "pipeline.schema.json").read_text(encoding="utf-8"))
    assert committed == pipeline_json_schema(), "run: arrowline schema -o docs/pipeline.schema.json"


def test_every_key_of_every_model_is_documented() -> None:
    from engine.api.reference import SECTIONS

    text = render_reference()
    for _, model, _ in SECTIONS:
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in text, (
                f"{model.__name__}.{name} is not documented"
            )
            assert field.description, f"{model.__name__}.{name} has no description"


def test_every_scheduler_api_endpoint_is_documented() -> None:
    from engine.scheduling.http import ENDPOINTS

    text = render_reference()
    for endpoint in ENDPOINTS:
        assert f"| {endpoint.method} | `{endpoint.path}` |" in text
