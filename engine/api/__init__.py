"""The application: what the CLI, notebooks and scripts call.

    project     Project, one object per project over its ProjectLayout: plan, run, resume,
                replay, requeue, watermarks, dead letters, the scheduler's requests, status
    reader      ProjectReader, its read side: runs, task runs, outputs, quarantines, SQL
    options     PlanOptions (what a run covers) and RunOptions (how it is carried out)
    pipeline    the Pipeline builder, and engine.run/plan/validate/load: keyword forms of
                Project's methods for scripts
    state       watermarks shown, set and reset in every sink and the catalog
    compare     two runs side by side, repetitions summed up (`runs compare`, `run --repeat`)

The scheduler (engine.scheduling) sits below this package: it runs pipelines through
engine.execution.launch, the same code Project.run calls, and its HTTP API answers from the
same functions over the same layout as Project.status and Project.metrics.
"""

from engine.spec.definition import HTML_VIEWS, Definition


def _definition_html(definition: Definition) -> str:
    from engine.api.notebook import pipeline_html

    return pipeline_html(definition, definition.name)


HTML_VIEWS[:] = [_definition_html]
