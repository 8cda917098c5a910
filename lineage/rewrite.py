"""DuckDB constructs rewritten into plain SQL with the same lineage, before the walk.

- `COLUMNS('regex')`, `COLUMNS(*)` and one function of them (`max(COLUMNS(*))`) over a single
  upstream table expand to one projection per matching column, named as DuckDB names them (the
  column, or the alias). Regexes match anywhere in the name, as DuckDB's do.
- `PIVOT` with a static `IN` list, in either form (`FROM t PIVOT (agg FOR col IN (...))` or the
  statement `PIVOT t ON col IN (...) USING agg GROUP BY ...`), over an upstream table, becomes the
  grouped query it stands for: one `agg FILTER (WHERE col = value)` per value, named `value` for
  one unaliased aggregate, `value_alias` otherwise.

Anything else of the kind is left as it is, and the walk reports it unresolved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlglot import exp

__all__ = ["rewrite"]


def rewrite(tree: exp.Expr, schemas: Mapping[str, Mapping[str, str]]) -> exp.Expr:
    tree = _statement_pivot(tree, schemas)
    for table in list(tree.find_all(exp.Table)):
        if table.args.get("pivots"):
            _from_pivot(table, schemas)
    for select in list(tree.find_all(exp.Select)):
        _expand_columns(select, schemas)
    return tree


def _upstream(table: exp.Expr, schemas: Mapping[str, Mapping[str, str]]) -> list[str] | None:
    if isinstance(table, exp.Table) and not table.db and table.name in schemas:
        return list(schemas[table.name])
    return None


# ---------------------------------------------------------------------------------------------
# COLUMNS(...)


def _expand_columns(select: exp.Select, schemas: Mapping[str, Mapping[str, str]]) -> None:
    if not any(select.find_all(exp.Columns)) or select.args.get("joins"):
        return
    source = select.args.get("from_") or select.args.get("from")
    columns = _upstream(source.this, schemas) if source is not None else None
    if columns is None:
        return
    expanded: list[exp.Expr] = []
    for projection in select.expressions:
        found = list(projection.find_all(exp.Columns))
        if not found:
            expanded.append(projection)
            continue
        pattern = found[0].this
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        simple = inner is found[0] or (
            isinstance(inner, exp.Func) and inner.this is found[0] and len(found) == 1
        )
        if len(found) != 1 or not simple:
            return  # a shape whose output names are not sure: leave it to be reported
        if isinstance(pattern, exp.Star):
            matches = columns
        elif isinstance(pattern, exp.Literal) and pattern.is_string:
            regex = re.compile(pattern.this)
            matches = [name for name in columns if regex.search(name)]
        else:
            return
        alias = projection.alias if isinstance(projection, exp.Alias) else None
        if alias and len(matches) > 1:
            return  # several outputs of one name: lineage by name could not tell them apart
        for name in matches:
            copy = inner.copy()
            column = exp.column(name, quoted=True)
            if copy is found[0] or isinstance(copy, exp.Columns):
                copy = column
            else:
                copy.set("this", column)
            expanded.append(exp.alias_(copy, alias or name, quoted=True))
    select.set("expressions", expanded)


# ---------------------------------------------------------------------------------------------
# PIVOT


def _pivot_names(values: list[exp.Expr], aggregates: list[exp.Expr]) -> list[str] | None:
    named = len(aggregates) > 1 or any(isinstance(a, exp.Alias) for a in aggregates)
    if named and not all(isinstance(a, exp.Alias) for a in aggregates):
        return None  # DuckDB names unaliased ones after their text: not guessed
    names = []
    for value in values:
        if not isinstance(value, exp.Literal):
            return None
        for aggregate in aggregates:
            names.append(f"{value.this}_{aggregate.alias}" if named else str(value.this))
    return names


def _grouped(
    table: str,
    on: exp.Expr,
    values: list[exp.Expr],
    aggregates: list[exp.Expr],
    group: list[str],
) -> exp.Select | None:
    names = _pivot_names(values, aggregates)
    if names is None:
        return None
    projections: list[exp.Expr] = [exp.column(name, quoted=True) for name in group]
    index = 0
    for value in values:
        for aggregate in aggregates:
            inner = aggregate.this if isinstance(aggregate, exp.Alias) else aggregate
            condition = exp.EQ(this=on.copy(), expression=value.copy())
            filtered = exp.Filter(this=inner.copy(), expression=exp.Where(this=condition))
            projections.append(exp.alias_(filtered, names[index], quoted=True))
            index += 1
    select = exp.select(*projections).from_(exp.to_table(table))
    return select.group_by(*[exp.column(name, quoted=True) for name in group]) if group else select


def _pivot_parts(
    fields: list[exp.Expr],
) -> tuple[exp.Expr, list[exp.Expr]] | None:
    if len(fields) != 1 or not isinstance(fields[0], exp.In):
        return None
    on = fields[0].this
    values = list(fields[0].expressions)
    return (on, values) if isinstance(on, exp.Column) and values else None


def _implicit_group(columns: list[str], on: exp.Expr, aggregates: list[exp.Expr]) -> list[str]:
    used = {on.name} | {c.name for a in aggregates for c in a.find_all(exp.Column)}
    return [name for name in columns if name not in used]


def _from_pivot(table: exp.Table, schemas: Mapping[str, Mapping[str, str]]) -> None:
    pivots = table.args.get("pivots") or []
    columns = _upstream(table, schemas)
    if columns is None or len(pivots) != 1 or pivots[0].args.get("unpivot"):
        return
    pivot = pivots[0]
    parts = _pivot_parts(list(pivot.args.get("fields") or []))
    if parts is None:
        return
    on, values = parts
    aggregates = list(pivot.expressions)
    group = _implicit_group(columns, on, aggregates)
    query = _grouped(table.name, on, values, aggregates, group)
    if query is None:
        return
    alias = pivot.alias or table.alias or table.name
    table.replace(exp.Subquery(this=query, alias=exp.TableAlias(this=exp.to_identifier(alias))))


def _statement_pivot(tree: exp.Expr, schemas: Mapping[str, Mapping[str, str]]) -> exp.Expr:
    if not isinstance(tree, exp.Pivot) or tree.args.get("unpivot"):
        return tree
    columns = _upstream(tree.this, schemas)
    parts = _pivot_parts(list(tree.expressions))
    if columns is None or parts is None:
        return tree
    on, values = parts
    aggregates = list(tree.args.get("using") or [])
    group_clause = tree.args.get("group")
    if group_clause is not None:
        group = [c.name for c in group_clause.expressions if isinstance(c, exp.Column)]
    else:
        group = _implicit_group(columns, on, aggregates)
    query = _grouped(tree.this.name, on, values, aggregates, group)
    return query if query is not None else tree
