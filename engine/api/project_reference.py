"""The SQL project section of `docs/pipeline-reference.md` (engine.api.reference): the project
file's keys and a model's settings (engine.spec.sqlproject, engine.spec.publish)."""

from __future__ import annotations

__all__ = ["PROJECT"]

_PROJECT_KEYS = [
    ("`name`", "", "the pipeline's name (or `pipeline:`)"),
    ("`vars`", "", "parameters, read in models as `var('name')`"),
    ("`model-paths`", "`[models]`", "every `.sql` file under them is a sql task named by its file"),
    ("`seed-paths`", "`[seeds]`", "every `.csv` file is an extract task named by its file"),
    (
        "`macro-paths`",
        "`[macros]`",
        "every macro (and `{% test %}` block) of their `.sql` files is callable",
    ),
    ("`test-paths`", "`[tests]`", "every `.sql` file is a singular test: its rows are failures"),
    ("`models`", "", "settings by folder, below the project's name: `+name: value`"),
    (
        "`seeds`",
        "",
        "`+column_types: {col: type}` (dbt's names, `integer`, `varchar(20)`, `numeric(12,2)`, "
        "or Arrow's), `+enabled`, `+tags`, `+description`, `+database`, `+schema` (a seed "
        "with a database, or under a target, is published as a model is)",
    ),
    (
        "`sources`",
        "",
        "`[{name, tables: [{name, extract}]}]`: what `source('s', 't')` reads. A table "
        "without `extract:` is read as dbt reads it: from dbt-duckdb's `external_location` "
        "(`meta:` or `config:` of the table or source, `{name}` the identifier) as files, else "
        "from the target's database (`schema`, default the source's name; `identifier`, "
        "default the table's). A table no model, macro, test or task names is not read, "
        "as in dbt",
    ),
    ("`tasks`", "", "any other task (loads, validations), as in a pipeline"),
    (
        "`on-run-start`, `on-run-end`",
        "",
        "not run yet, and refused rather than skipped: a model's `pre_hook` and `post_hook` are",
    ),
    (
        "`targets`, `target`",
        "",
        "dbt's dev and prod: `targets: {dev: {database, schema, threads}, ...}` and the "
        "default `target: dev`; `--target NAME` (on run, plan, validate, render, docs, "
        "lineage, graph, trigger, backfill and the scheduler; or `$ARROWLINE_TARGET`) picks "
        "another: a name the pipeline has not is an error listing those it has (a pipeline "
        "without targets has one, `default`; `$ARROWLINE_TARGET` there only warns, as a "
        "scheduler's is every pipeline's). Every model that keeps an output is published into "
        "the target (unless it sets `database`); templates read dbt's `target`: `name`, "
        "`type` (`duckdb` or the connection's kind), `database` (as written), `path` (the "
        "DuckDB file), `schema` (default `main`, `public` in PostgreSQL), `threads` (as "
        "given, else the tasks a run starts at once), `profile_name` (the pipeline's name)",
    ),
]
_MODEL_SETTINGS = [
    (
        "`materialized`",
        "`table` (kept in the workspace, the default), `ephemeral` (inlined into its readers), "
        "`view` (kept, and published as a view: needs `database`), `incremental` (adds to its "
        "last output: [sql: incremental](#sql-incremental))",
    ),
    (
        "`unique_key`, `incremental_strategy`, `on_schema_change`",
        "an incremental model's key; `merge` (or `delete+insert`) or `append`; `ignore` (the "
        "default), `append_new_columns`, `sync_all_columns` or `fail`",
    ),
    (
        "`database`",
        "publish the model: a DuckDB file's path or a `postgres` connection's name; a load task "
        "`<model>__publish` is made (replace; merge by `unique_key` for an incremental model; a "
        "view for `view`)",
    ),
    (
        "`schema`",
        "the schema it is published in (needs `database`); under a target, `<target "
        "schema>_<schema>`, as dbt's generate_schema_name makes it",
    ),
    ("`tags`, `enabled`, `description`", "as a task's"),
    (
        "`pre_hook`, `post_hook`",
        "SQL templates (one, or a list) run in the database the model is published to, inside "
        "its publishing load's transaction (see [hooks](#hooks)): pre before its rows are "
        "written, post after, both after the model's tests passed. dbt's spellings: "
        "`+pre-hook`/`+post-hook` for folders, `pre_hook`/`post_hook` (or dashed) in a "
        "property file's `config:` and in `{{ config(...) }}`; they add up: the folders', the "
        "property file's, then the model's own. `{{ this }}` is the published table, "
        "`{{ target }}` the target. A hook that fails rolls the publication back and fails it "
        "(`<model>__publish`, so the run), naming the hook's file:line; the model's output "
        "stays in the workspace. A model with hooks must be published (`database` or a "
        "target), into a DuckDB file or a PostgreSQL database; a hook that would end the "
        "transaction (`commit`, `rollback`) is refused",
    ),
]
PROJECT = "\n".join(
    [
        "## SQL projects (`arrowline_project.yml`)",
        "",
        "A folder holding `arrowline_project.yml` is a pipeline in dbt's shapes (`arrowline run "
        "shop/`); the file takes a pipeline's keys and dbt_project.yml's. `arrowline init FOLDER` "
        "starts one. A dbt project runs as it is: a folder with `dbt_project.yml` and no "
        "`arrowline_project.yml` is read the same way, and the profile it names (`profile:`) "
        "is read from dbt's `profiles.yml` (in `--profiles-dir`, else $DBT_PROFILES_DIR, "
        "either of which must hold one, else the project's folder, then ~/.dbt) as its "
        "`targets:` unless it declares its own: each output is a target of its name "
        "publishing every model (`type: duckdb`: its `path`, relative to the project's "
        "folder; `type: postgres`: a connection `dbt_<output>` of its host, port, user, "
        "password and dbname), chosen as dbt chooses: `--target`, $ARROWLINE_TARGET, "
        "$DBT_TARGET, then the profile's `target:`. `{{ env_var('NAME') }}` "
        "in profiles.yml becomes `${env:NAME}` (resolved when a run starts, never printed); "
        "any other template, another output type, or a key not read is an error at its line.",
        "",
        "| key | default | what |",
        "|---|---|---|",
        *(f"| {key} | {default} | {what} |" for key, default, what in _PROJECT_KEYS),
        "",
        "A model's settings come from its folders, its property file's `config:`, then its own "
        "`{{ config(...) }}` (the last wins; tags add up):",
        "",
        "| setting | what |",
        "|---|---|",
        *(f"| {key} | {what} |" for key, what in _MODEL_SETTINGS),
        "",
        "Property files (`.yml` beside the models) give `models: [{name, description, config, "
        "columns: [{name, description, tests}], tests}]` and `sources:`. A column's tests: "
        "`unique`, `not_null`, `accepted_values: {values}`, `relationships: {to: ref('model'), "
        "field}` and the custom tests of the macro files (`{% test name(model, column_name, ...) "
        "%} select ... {% endtest %}`, called with the test's arguments), each with `config: "
        "{severity, warn_if, error_if, store_failures, enabled}`; a model's own `tests:` take "
        "custom tests. A test runs on its model's output before the output is published (see "
        "[test](#test)). Misspelt keys and unknown tests are errors at their line. Templates see "
        "`ref()`, `source()`, `var()`, `config()`, `this`, `is_incremental()` and `target`.",
        "",
    ]
)
