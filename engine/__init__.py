"""arrowline's engine: define, validate, plan and run Arrow pipelines, and open their state.

    import engine
    project = engine.open("examples/quickstart")
    project.table("orders_enriched").head(5).collect()

Names are imported on first use, so `import engine` stays cheap and has no side effects.
In IPython or Jupyter, `%load_ext engine` adds the `%arrowline` and `%%sql` magics.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from engine.api.pipeline import Pipeline, RunResult, load, plan, run, validate
    from engine.api.project import Project, open
    from engine.core.errors import ArrowlineError
    from engine.planning.build import Plan
    from engine.spec.definition import Definition
    from engine.spec.model import PipelineSpec, TaskSpec
    from transforms.udf import udf

__all__ = [
    "ArrowlineError",
    "Definition",
    "Pipeline",
    "PipelineSpec",
    "Plan",
    "Project",
    "RunResult",
    "TaskSpec",
    "load",
    "open",
    "plan",
    "run",
    "udf",
    "validate",
]

_EXPORTS = {
    "ArrowlineError": "engine.core.errors",
    "Definition": "engine.spec.definition",
    "Pipeline": "engine.api.pipeline",
    "PipelineSpec": "engine.spec.model",
    "Plan": "engine.planning.build",
    "Project": "engine.api.project",
    "RunResult": "engine.api.pipeline",
    "TaskSpec": "engine.spec.model",
    "load": "engine.api.pipeline",
    "open": "engine.api.project",
    "plan": "engine.api.pipeline",
    "run": "engine.api.pipeline",
    "udf": "transforms.udf",
    "validate": "engine.api.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext engine` in IPython or Jupyter: the `%arrowline` and `%%sql` magics
    (engine.api.magics, which alone imports IPython)."""
    from engine.api.magics import load_ipython_extension as register

    register(ipython)


# A library does not log until its user says so (loguru's convention); the CLI enables it.
logger.disable("engine")
