"""A dbt-style SQL project (a shop: sources, seeds, staging and mart models, a macro, a Jinja loop
over payment methods, a var, generic tests) run by arrowline, dbt-duckdb and one DuckDB script,
each as the whole process a user starts, cold and then warm.

The project is generated at a scale (`--rows`: orders, 3,000,000 by default; customers a tenth
of that, payments 1.25 per order, order items 2.5 per order) as Parquet sources, plus two small
CSV seeds (products, stores). Its model files, macro and property files (`schema.yml`: unique,
not_null, accepted_values and relationships tests) are the same text for arrowline and dbt;
only the project files differ (`arrowline_project.yml` with each source's `extract:`;
`dbt_project.yml`, `profiles.yml` and sources with dbt-duckdb's `external_location`). Every
model is a table; the four marts end up as tables in a DuckDB file for every contender:

    arrowline           `arrowline run PROJECT`: sources and seeds extracted into the workspace,
                        every model a kept table, its tests right after it, then four loads
                        (`mode: replace`) publish the marts into out/shop.duckdb
    arrowline/cache     the same project with `cache: true` (and on its loads): the warm run
                        reuses every output made from unchanged inputs and code
    duckdb/script       one Python process: seeds, then `create or replace table` per model
                        in dependency order, each followed by its tests as dbt writes them,
                        in one DuckDB file (the Jinja rendered beforehand, untimed): the floor
    dbt-duckdb          `dbt build` (seeds, models as tables in a DuckDB file, tests), threads
                        = the CPU count (arrowline's default parallelism)

Cold: a fresh project folder (no .arrowline/, no target/, no database). Warm: the same command
again on the state the cold run left (dbt parses partially, then rebuilds everything; arrowline
without `cache:` runs every task again). Each run is timed from outside (`wait4`: wall, CPU and
peak RSS of the tool's process); the checksum (rows and an order-independent hash of every row
of each mart, read from the contender's DuckDB file after each run) must agree across
contenders and between the cold and warm runs.

Child usage:
    python -m benchmarks.workloads.sql_project measure CONTENDER --data DIR
    python -m benchmarks.workloads.sql_project script --plan FILE --db FILE
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.rusage import process_usage

MODULE = "benchmarks.workloads.sql_project"
DATA = Path(__file__).resolve().parents[1] / ".data"
NAMES = ("arrowline", "arrowline/cache", "duckdb/script", "dbt-duckdb")
INSTALL_DBT = (
    "pip install 'arrowline[bench]' (or: pip install 'dbt-core>=1.9,<1.10' 'dbt-duckdb>=1.9')"
)
TARGETS = {
    "≥ 3x faster than dbt-duckdb": ("dbt-duckdb", 1 / 3),
    "within 1.2x of the DuckDB script": ("duckdb/script", 1.2),
}
"""Issue 20's goals for arrowline's process time, cold and warm: (peer, at most this ratio)."""

PAYMENT_METHODS = ("credit_card", "coupon", "bank_transfer", "gift_card")
STATUSES = ("placed", "shipped", "completed", "return_pending", "returned")
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "outdoor", "tools", "toys")
MARTS = ("orders", "customers", "category_revenue_monthly", "payments_monthly")
SOURCES = {"shop": ("customers", "orders", "order_items"), "stripe": ("payments",)}
SEED_TYPES = {
    "raw_products": {"product_id": "int64", "name": "string", "category": "string"},
    "raw_stores": {"store_id": "int64", "city": "string", "region": "string"},
}
"""Declared seed column types (arrowline's names); price_cents is left to inference."""
_DUCKDB_TYPES = {"int64": "bigint", "string": "varchar"}
START_DATE = "2018-01-01"

MACROS = {
    "macros/money.sql": """\
        {# an amount in cents as dollars, exact: a decimal, not a float #}
        {% macro cents_to_dollars(column, scale=2) -%}
            cast(round({{ column }} / 100, {{ scale }}) as decimal(18, {{ scale }}))
        {%- endmacro %}
        """,
}
_LOOP = "{% set payment_methods = " + repr(list(PAYMENT_METHODS)) + " %}"
MODELS: dict[str, str] = {
    "models/staging/stg_customers.sql": """\
        select id as customer_id, first_name, last_name, signup_date
        from {{ source('shop', 'customers') }}
        """,
    "models/staging/stg_orders.sql": """\
        select id as order_id, user_id as customer_id, order_date, status, store_id
        from {{ source('shop', 'orders') }}
        """,
    "models/staging/stg_payments.sql": """\
        select id as payment_id, order_id, payment_method,
               {{ cents_to_dollars('amount') }} as amount
        from {{ source('stripe', 'payments') }}
        """,
    "models/staging/stg_products.sql": """\
        select product_id, name as product_name, category,
               {{ cents_to_dollars('price_cents') }} as price
        from {{ ref('raw_products') }}
        """,
    "models/staging/stg_stores.sql": """\
        select store_id, city, region from {{ ref('raw_stores') }}
        """,
    "models/staging/stg_order_items.sql": """\
        select id as order_item_id, order_id, product_id, quantity
        from {{ source('shop', 'order_items') }}
        """,
    "models/intermediate/int_order_items.sql": """\
        select i.order_item_id, i.order_id, o.order_date, p.category, i.quantity,
               i.quantity * p.price as revenue
        from {{ ref('stg_order_items') }} as i
        join {{ ref('stg_products') }} as p using (product_id)
        join {{ ref('stg_orders') }} as o using (order_id)
        """,
    "models/marts/customers.sql": """\
        with customer_orders as (
            select
                customer_id,
                min(order_date) as first_order,
                max(order_date) as most_recent_order,
                count(order_id) as number_of_orders
            from {{ ref('stg_orders') }}
            group by customer_id
        ),

        customer_payments as (
            select o.customer_id, sum(p.amount) as total_amount
            from {{ ref('stg_payments') }} as p
            join {{ ref('stg_orders') }} as o using (order_id)
            group by o.customer_id
        )

        select
            c.customer_id,
            c.first_name,
            c.last_name,
            co.first_order,
            co.most_recent_order,
            coalesce(co.number_of_orders, 0) as number_of_orders,
            coalesce(cp.total_amount, 0) as customer_lifetime_value
        from {{ ref('stg_customers') }} as c
        left join customer_orders as co using (customer_id)
        left join customer_payments as cp using (customer_id)
        """,
    "models/marts/orders.sql": """\
        {{ config(tags=['finance']) }}
        LOOP

        with order_payments as (
            select
                order_id,
                {% for payment_method in payment_methods -%}
                sum(case when payment_method = '{{ payment_method }}' then amount else 0 end)
                    as {{ payment_method }}_amount,
                {% endfor -%}
                sum(amount) as total_amount
            from {{ ref('stg_payments') }}
            group by order_id
        ),

        order_lines as (
            select order_id, count(*) as item_count, sum(quantity)::bigint as quantity,
                   sum(revenue) as items_revenue
            from {{ ref('int_order_items') }}
            group by order_id
        )

        select
            o.order_id,
            o.customer_id,
            o.order_date,
            o.status,
            o.store_id,
            s.region as store_region,
            {% for payment_method in payment_methods -%}
            coalesce(p.{{ payment_method }}_amount, 0) as {{ payment_method }}_amount,
            {% endfor -%}
            coalesce(p.total_amount, 0) as amount,
            coalesce(l.item_count, 0) as item_count,
            coalesce(l.quantity, 0) as quantity,
            coalesce(l.items_revenue, 0) as items_revenue
        from {{ ref('stg_orders') }} as o
        left join order_payments as p using (order_id)
        left join order_lines as l using (order_id)
        left join {{ ref('stg_stores') }} as s using (store_id)
        where o.order_date >= @start_date@
        """.replace("LOOP", _LOOP),
    "models/marts/category_revenue_monthly.sql": """\
        select
            date_trunc('month', order_date)::date as month,
            category,
            count(distinct order_id) as orders,
            sum(quantity)::bigint as quantity,
            sum(revenue) as revenue
        from {{ ref('int_order_items') }}
        where order_date >= @start_date@
        group by all
        """,
    "models/marts/payments_monthly.sql": """\
        LOOP

        select
            date_trunc('month', o.order_date)::date as month,
            s.region,
            {% for payment_method in payment_methods -%}
            sum(case when p.payment_method = '{{ payment_method }}' then p.amount else 0 end)
                as {{ payment_method }}_amount,
            {% endfor -%}
            count(*) as payments
        from {{ ref('stg_payments') }} as p
        join {{ ref('stg_orders') }} as o using (order_id)
        join {{ ref('stg_stores') }} as s using (store_id)
        group by all
        """.replace("LOOP", _LOOP),
}
"""Every model, after the models it reads and those its tests refer to (the script's order)."""
START_DATE_VAR = {
    "dbt": """'{{ var("start_date") }}'""",
    "arrowline": """'{{ var("start_date") }}'""",
}
"""The var line of the models (`@start_date@`), dbt's way for both: arrowline prints a value
written as the whole of a SQL string as that string, its quotes escaped (it once refused it as
a text parameter printed raw, so the two tools' files differed here)."""


def models(tool: str) -> dict[str, str]:
    """The model files as `tool` ("dbt" or "arrowline") takes them."""
    return {
        path: text.replace("@start_date@", START_DATE_VAR[tool]) for path, text in MODELS.items()
    }


def _relationship(model: str, field: str) -> dict[str, Any]:
    return {"relationships": {"to": f"ref('{model}')", "field": field}}


TESTS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "models/staging/schema.yml": {
        "stg_customers": {"customer_id": ["unique", "not_null"]},
        "stg_orders": {
            "order_id": ["unique", "not_null"],
            "status": [{"accepted_values": {"values": list(STATUSES)}}],
            "customer_id": [_relationship("stg_customers", "customer_id")],
        },
        "stg_order_items": {
            "order_item_id": ["unique", "not_null"],
            "product_id": [_relationship("stg_products", "product_id")],
        },
        "stg_payments": {
            "payment_id": ["unique", "not_null"],
            "payment_method": [{"accepted_values": {"values": list(PAYMENT_METHODS)}}],
        },
        "stg_products": {"product_id": ["unique", "not_null"]},
        "stg_stores": {"store_id": ["unique", "not_null"]},
    },
    "models/marts/schema.yml": {
        "customers": {"customer_id": ["unique", "not_null"]},
        "orders": {
            "order_id": ["unique", "not_null"],
            "status": [{"accepted_values": {"values": list(STATUSES)}}],
            "customer_id": [_relationship("customers", "customer_id")],
        },
        "category_revenue_monthly": {"category": ["not_null"]},
        "payments_monthly": {"month": ["not_null"]},
    },
}
"""Each property file's generic tests: model -> column -> tests, in dbt's shapes."""


# -- the data ----------------------------------------------------------------------------------


def generate(orders: int, folder: Path) -> Path:
    """The sources as Parquet and the seeds as CSV, from arithmetic on row numbers
    (deterministic, no extension)."""
    import duckdb

    marker = folder / "DONE"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    customers = max(orders // 10, 1)

    def h(expression: str, modulo: int) -> str:
        """A deterministic pseudo-random integer in [0, modulo) from a row number."""
        return f"(hash({expression}) % {modulo})::bigint"

    def pick(values: tuple[str, ...], expression: str) -> str:
        return f"{list(values)!r}[{h(expression, len(values))} + 1]"

    statements = {
        "customers.parquet": f"select range + 1 as id, 'first_' || {h('range', 5000)} "
        f"as first_name, chr(65 + {h('range * 3', 26)}::int) || '.' as last_name, "
        f"date '2016-01-01' + {h('range * 5', 700)}::int as signup_date "
        f"from range({customers})",
        # Every fourth order has a second payment; some orders predate the start_date var.
        "orders.parquet": f"select range + 1 as id, {h('range', customers)} + 1 as user_id, "
        f"date '2017-06-01' + {h('range * 7', 1100)}::int as order_date, "
        f"{pick(STATUSES, 'range * 11')} as status, {h('range * 13', 20)} + 1 as store_id "
        f"from range({orders})",
        "payments.parquet": f"select range + 1 as id, range % {orders} + 1 as order_id, "
        f"{pick(PAYMENT_METHODS, 'range * 17')} as payment_method, "
        f"({h('range * 19', 50000)} + 100)::int as amount "
        f"from range({orders + orders // 4})",
        "order_items.parquet": f"select range + 1 as id, range % {orders} + 1 as order_id, "
        f"{h('range * 23', 500)} + 1 as product_id, ({h('range * 29', 5)} + 1)::int as quantity "
        f"from range({orders * 5 // 2})",
    }
    seeds = {
        "raw_products.csv": f"select range + 1 as product_id, 'product ' || (range + 1) as name, "
        f"{list(CATEGORIES)!r}[range % {len(CATEGORIES)} + 1] as category, "
        f"(range * 37) % 9000 + 99 as price_cents from range(500)",
        "raw_stores.csv": "select range + 1 as store_id, 'city ' || (range + 1) as city, "
        "['north','south','east','west'][range % 4 + 1] as region from range(20)",
    }
    with duckdb.connect() as connection:
        for name, sql in statements.items():
            connection.execute(f"copy ({sql}) to '{folder / name}' (format parquet)")
        for name, sql in seeds.items():
            connection.execute(f"copy ({sql} order by 1) to '{folder / name}' (header)")
    marker.write_text("ok")
    return folder


# -- the project, as each tool takes it --------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def _shared_files(data: Path, tool: str) -> dict[str, str]:
    """What both tools read: models, the macro, property files and seeds."""
    import yaml

    files = {**MACROS, **models(tool)}
    for path, tested in TESTS.items():
        document = {
            "version": 2,
            "models": [
                {"name": model, "columns": [{"name": c, "tests": t} for c, t in columns.items()]}
                for model, columns in tested.items()
            ],
        }
        files[path] = yaml.safe_dump(document, sort_keys=False)
    for seed in SEED_TYPES:
        files[f"seeds/{seed}.csv"] = (data / f"{seed}.csv").read_text(encoding="utf-8")
    return files


def write_arrowline(root: Path, data: Path, *, cache: bool) -> None:
    import yaml

    project: dict[str, Any] = {"name": "shop", "vars": {"start_date": START_DATE}}
    if cache:
        project["cache"] = True
    project["models"] = {"shop": {"staging": {"+tags": ["staging"]}, "marts": {"+tags": ["marts"]}}}
    project["seeds"] = {
        "shop": {seed: {"+column_types": types} for seed, types in SEED_TYPES.items()}
    }
    project["sources"] = [
        {
            "name": source,
            "tables": [
                {"name": t, "extract": {"from": "files", "path": str(data / f"{t}.parquet")}}
                for t in tables
            ],
        }
        for source, tables in SOURCES.items()
    ]
    loads = []
    for mart in MARTS:
        load = {"input": mart, "to": "duckdb", "path": "out/shop.duckdb", "table": mart}
        task: dict[str, Any] = {"id": f"publish_{mart}", "load": load | {"mode": "replace"}}
        if cache:
            task["cache"] = True  # a load is skipped only when it says so itself
        loads.append(task)
    project["tasks"] = loads
    _write(root, _shared_files(data, "arrowline"))
    (root / "arrowline_project.yml").write_text(yaml.safe_dump(project, sort_keys=False))


def write_dbt(root: Path, data: Path) -> None:
    import yaml

    project = {
        "name": "shop",
        "version": "1.0.0",
        "config-version": 2,
        "profile": "shop",
        "vars": {"start_date": START_DATE},
        "flags": {"send_anonymous_usage_stats": False},
        "models": {
            "shop": {
                "+materialized": "table",
                "staging": {"+tags": ["staging"]},
                "marts": {"+tags": ["marts"]},
            }
        },
        "seeds": {
            "shop": {
                seed: {"+column_types": {c: _DUCKDB_TYPES[t] for c, t in types.items()}}
                for seed, types in SEED_TYPES.items()
            }
        },
    }
    profile = {
        "shop": {
            "target": "dev",
            "outputs": {
                "dev": {
                    "type": "duckdb",
                    "path": str(root / "shop.duckdb"),
                    "threads": max(os.cpu_count() or 2, 2),
                }
            },
        }
    }
    sources = {
        "version": 2,
        "sources": [
            {
                "name": source,
                "meta": {"external_location": f"{data}/{{name}}.parquet"},
                "tables": [{"name": t} for t in tables],
            }
            for source, tables in SOURCES.items()
        ],
    }
    _write(root, _shared_files(data, "dbt"))
    (root / "dbt_project.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "profiles.yml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (root / "models/staging/_sources.yml").write_text(yaml.safe_dump(sources, sort_keys=False))


def _test_sql(model: str, column: str, test: Any) -> str:
    """A generic test as dbt-core's macros write it: the query returns the failing rows."""
    name, arguments = (test, {}) if isinstance(test, str) else next(iter(test.items()))
    if name == "unique":
        return (
            f"select {column} from {model} where {column} is not null "
            f"group by {column} having count(*) > 1"
        )
    if name == "not_null":
        return f"select {column} from {model} where {column} is null"
    if name == "accepted_values":
        values = ", ".join(f"'{v}'" for v in arguments["values"])
        return (
            f"select value_field from (select {column} as value_field, count(*) as n_records "
            f"from {model} group by {column}) where value_field not in ({values})"
        )
    assert name == "relationships", test
    parent = arguments["to"].removeprefix("ref('").removesuffix("')")
    field = arguments["field"]
    return (
        f"select child.from_field from (select {column} as from_field from {model} "
        f"where {column} is not null) as child left join (select {field} as to_field "
        f"from {parent}) as parent on child.from_field = parent.to_field "
        "where parent.to_field is null"
    )


def script_plan(data: Path) -> list[dict[str, str]]:
    """The floor's statements in order: seeds, then each model (its Jinja rendered here, with
    the project's macro, var and the sources' files) followed by its tests."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    macros = "".join(textwrap.dedent(text) for text in MACROS.values())
    context = {
        "ref": lambda name: name,
        "source": lambda _source, table: f"read_parquet('{data / table}.parquet')",
        "var": lambda name: {"start_date": START_DATE}[name],
        "config": lambda **_: "",
    }
    tests = {model: columns for tested in TESTS.values() for model, columns in tested.items()}
    plan = []
    for seed, types in SEED_TYPES.items():
        columns = {c: _DUCKDB_TYPES[t] for c, t in types.items()}
        sql = (
            f"create or replace table {seed} as select * from read_csv("
            f"'{data / seed}.csv', header = true, types = {columns!r})"
        )
        plan.append({"kind": "seed", "name": seed, "sql": sql})
    for path, text in models("dbt").items():
        model = Path(path).stem
        body = environment.from_string(macros + textwrap.dedent(text)).render(context)
        sql = f"create or replace table {model} as {body}"
        plan.append({"kind": "model", "name": model, "sql": sql})
        for column, listed in tests.get(model, {}).items():
            for test in listed:
                sql = _test_sql(model, column, test)
                plan.append({"kind": "test", "name": f"{model}.{column}", "sql": sql})
    made = [step["name"] for step in plan if step["kind"] != "test"]
    for step in plan:  # MODELS' order puts a relationship's parent before the test
        if step["kind"] == "test" and "to_field from " in step["sql"]:
            parent = step["sql"].split("to_field from ")[1].split(")")[0]
            assert made.index(parent) < made.index(step["name"].split(".")[0]), step
    return plan


def _script(plan_file: Path, database: Path) -> None:
    """The floor: the plan's statements in one DuckDB connection; a failing test fails it."""
    import duckdb

    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    with duckdb.connect(str(database)) as connection:
        for step in plan:
            if step["kind"] != "test":
                connection.execute(step["sql"])
                continue
            row = connection.execute(f"select count(*) from ({step['sql']})").fetchone()
            if row is None or row[0]:
                sys.exit(f"test {step['name']} failed: {row[0] if row else '?'} rows")


# -- one contender, cold then warm -------------------------------------------------------------


def checksum(database: Path) -> str:
    """Rows and an order-independent hash of every row of each mart."""
    import duckdb

    parts = []
    with duckdb.connect(str(database), read_only=True) as connection:
        for mart in MARTS:
            row = connection.execute(
                f"select count(*), sum(hash(m::varchar)) % 1000000007 from {mart} m"
            ).fetchone()
            assert row is not None
            parts.append(f"{mart}={row[0]}:{row[1]}")
    return ";".join(parts)


def _dbt_cli() -> Path:
    return Path(sys.executable).with_name("dbt")  # the environment's own, not one on PATH


def missing_peer(name: str) -> str:
    """Why a peer cannot run here (and how to install it), or ''."""
    if name != "dbt-duckdb":
        return ""
    if not _dbt_cli().exists() or importlib.util.find_spec("dbt.adapters.duckdb") is None:
        return f"dbt-duckdb is not installed: {INSTALL_DBT}"
    return ""


def measure(name: str, data: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "shop"
        root.mkdir()
        env = None
        if name.startswith("arrowline"):
            write_arrowline(root, data, cache=name == "arrowline/cache")
            cli = Path(sys.executable).with_name("arrowline")
            argv = [str(cli), "run", str(root), "--project-dir", str(root), "--no-progress"]
            argv += ["--log-level", "warning"]
            database = root / "out" / "shop.duckdb"
        elif name == "dbt-duckdb":
            write_dbt(root, data)
            argv = [str(_dbt_cli()), "build", "--project-dir", str(root), "--profiles-dir"]
            argv += [str(root), "--quiet"]
            env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
            database = root / "shop.duckdb"
        else:
            plan = root / "plan.json"
            plan.write_text(json.dumps(script_plan(data)), encoding="utf-8")
            database = root / "shop.duckdb"
            argv = [sys.executable, "-m", MODULE, "script", "--plan", str(plan)]
            argv += ["--db", str(database)]
        result: dict[str, Any] = {}
        sums = []
        for phase in ("cold", "warm"):
            wall, cpu, rss = process_usage(argv, root, env)
            result |= {f"{phase}_s": wall, f"{phase}_cpu_s": cpu, f"{phase}_rss_mb": rss}
            sums.append(checksum(database))
        shutil.rmtree(root)
    if sums[0] != sums[1]:
        sys.exit(f"the warm run's marts differ from the cold run's: {sums[1]} != {sums[0]}")
    return result | {"checksum": sums[0]}


# -- the harness's side ------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    orders = 20_000 if args.quick else (args.rows or 3_000_000)
    folder = generate(orders, DATA / f"shop-{orders}")
    return {
        "rows": orders,
        "data": str(folder),
        "models": len(MODELS),
        "tests": sum(len(t) for m in TESTS.values() for c in m.values() for t in c.values()),
    }


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", MODULE, "measure")
    return [
        Contender(name, (*module, name, "--data", params["data"]), group="marts") for name in NAMES
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = {o.contender: o for o in outcomes if o.samples and not o.error}
    lines = [
        f"A shop project over {params['rows']:,} orders ({params['models']} models, "
        f"{params['tests']} tests), each tool's whole process; medians, min–max.",
        "",
        "| contender | cold | cold CPU | cold peak RSS | warm | warm CPU | warm peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error or not o.samples:
            reason = (o.error or "no samples").splitlines()[-1][:120]
            lines.append(f"| {o.contender} | {reason} | | | | | |")
            continue
        cells = []
        for phase in ("cold", "warm"):
            low, high = o.spread(f"{phase}_s")
            cells += [
                f"{o.median(f'{phase}_s'):.2f} s ({low:.2f}–{high:.2f})",
                f"{o.median(f'{phase}_cpu_s'):.2f} s",
                f"{o.median(f'{phase}_rss_mb'):.0f} MB",
            ]
        lines.append(f"| {o.contender} | " + " | ".join(cells) + " |")
    keys = [f"{p}_{m}" for p in ("cold", "warm") for m in ("s", "cpu_s", "rss_mb")]
    summary: dict[str, Any] = {name: {k: o.median(k) for k in keys} for name, o in done.items()}
    goals: dict[str, Any] = {}
    lines += ["", "| goal (issue 20) | contender | cold | warm |", "|---|---|---|---|"]
    for label, (peer, bound) in TARGETS.items():
        for ours in ("arrowline", "arrowline/cache"):
            if ours not in done or peer not in done:
                lines.append(f"| {label} | {ours} | n/a: a contender is missing | |")
                continue
            cells = []
            for phase in ("cold", "warm"):
                ratio = done[ours].median(f"{phase}_s") / done[peer].median(f"{phase}_s")
                met = ratio <= bound
                goals[f"{ours} {phase}: {label}"] = {"ratio": ratio, "met": met}
                shown = f"{1 / ratio:.2f}x as fast" if bound < 1 else f"{ratio:.2f}x the time"
                cells.append(f"{'✅' if met else '❌'} {shown}")
            lines.append(f"| {label} | {ours} | " + " | ".join(cells) + " |")
    summary["goals"] = goals
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("measure", "script"))
    parser.add_argument("contender", nargs="?", choices=NAMES)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.mode == "script":
        _script(args.plan, args.db)
        return
    reason = missing_peer(args.contender)
    if reason:
        sys.exit(reason)
    print("RESULT " + json.dumps(measure(args.contender, args.data.resolve())))


if __name__ == "__main__":
    main()
