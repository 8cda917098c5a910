"""`arrowline init DIR`: a SQL project that runs as it is, on the embedded default (DuckDB and
files, no server): seeds, staging and mart models with a macro, a property file's tests and a
singular test, a validation that gates the publication, a load into a DuckDB file, and a daily
schedule. Nothing is overwritten."""

from __future__ import annotations

import re
from pathlib import Path

from engine.core.errors import DefinitionError

__all__ = ["scaffold"]

_PROJECT = """\
# A SQL project: every .sql file under models/ is a task named by its file, every .csv under
# seeds/ an extract; models read each other with ref() and parameters with var().
# `arrowline run {folder}` runs it; `arrowline plan {folder}` shows what a run would do.
name: {name}
schedule: "0 6 * * *"          # daily at 06:00 UTC, when `arrowline scheduler` runs

vars:
  start_date: "2024-01-01"

models:
  {name}:
    staging:
      +materialized: ephemeral  # inlined into the marts that read them; nothing kept
      +tags: [staging]
    marts:
      +tags: [marts]

seeds:
  {name}:
    raw_orders:
      +column_types: {{order_date: date, amount_cents: int64}}

tasks:
  - id: checked_revenue          # rows that break a rule are set aside, the rest go on
    validate:
      input: customer_revenue
      on_fail: quarantine
      schema:
        columns:
          customer_id: {{type: int64, unique: true}}
          revenue: {{type: float64, checks: {{ge: 0}}}}
  - id: publish_revenue          # one transaction; the table is replaced whole
    load: {{input: checked_revenue, to: duckdb, path: out/warehouse.duckdb,
           table: customer_revenue, mode: replace}}
"""

_FILES = {
    "seeds/raw_customers.csv": """\
id,name,country
1,Ada,gb
2,Grace,us
3,Linus,fi
""",
    "seeds/raw_orders.csv": """\
id,customer_id,order_date,amount_cents,status
1,1,2024-01-02,1250,paid
2,1,2024-01-05,4000,paid
3,2,2024-01-06,999,refunded
4,3,2024-01-07,15000,paid
5,2,2023-12-30,500,paid
""",
    "macros/money.sql": """\
{% macro cents_to_dollars(column) -%}
    round({{ column }} / 100, 2)
{%- endmacro %}

{# a test a property file can name: its rows are the failures #}
{% test not_negative(model, column_name) %}
select {{ column_name }} from {{ model }} where {{ column_name }} < 0
{% endtest %}
""",
    "models/marts/schema.yml": """\
# dbt's property file: descriptions, and tests that run on the model's output before anything
# reads it (a failure keeps the output back)
version: 2
models:
  - name: customer_revenue
    description: one row per customer, with their orders and what they paid
    columns:
      - name: customer_id
        description: the customer's id
        tests: [unique, not_null]
      - name: country
        tests:
          - accepted_values: {values: [gb, us, fi]}
      - name: revenue
        description: paid orders since var('start_date'), in dollars
        tests: [not_negative]
""",
    "tests/every_customer_has_a_country.sql": """\
-- a singular test: the rows it returns are failures
select customer_id, name
from {{ ref('customer_revenue') }}
where country is null
""",
    "models/staging/stg_customers.sql": """\
select id as customer_id, name, country
from {{ ref('raw_customers') }}
""",
    "models/staging/stg_orders.sql": """\
select id as order_id, customer_id, order_date, status,
       {{ cents_to_dollars('amount_cents') }} as amount
from {{ ref('raw_orders') }}
where order_date >= {{ var('start_date') | sql_literal }}
""",
    "models/marts/customer_revenue.sql": """\
select c.customer_id, c.name, c.country,
       count(o.order_id) as orders,
       coalesce(sum(o.amount) filter (where o.status = 'paid'), 0) as revenue
from {{ ref('stg_customers') }} as c
left join {{ ref('stg_orders') }} as o using (customer_id)
group by all
""",
}


def scaffold(folder: Path) -> list[Path]:
    """Write a new project into `folder` (made if missing); returns the files written.
    Raises DefinitionError, naming them, when any of its files is there already."""
    name = _project_name(folder)
    files = {"arrowline_project.yml": _PROJECT.format(name=name, folder=folder), **_FILES}
    present = sorted(str(folder / path) for path in files if (folder / path).exists())
    if present:
        raise DefinitionError(
            f"{folder} already holds {', '.join(present)}: nothing written",
            hint="give a new or empty folder: arrowline init NEW_FOLDER",
        )
    written = []
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def _project_name(folder: Path) -> str:
    """The folder's name as a pipeline name: lower case, `_` for anything else, a letter first."""
    name = re.sub(r"[^a-z0-9_]+", "_", folder.resolve().name.lower()).strip("_") or "project"
    return name if name[0].isalpha() else f"p_{name}"
