"""Column lineage of one SQL statement: for every output column, the upstream columns it comes
from, and how.

    value   the output's value is computed from it (projection, expression, aggregate, window
            function argument)
    filter  it decides which rows appear or how they are grouped or ordered into the value
            (WHERE, JOIN ON / USING, GROUP BY, HAVING, QUALIFY, a window's PARTITION BY and
            ORDER BY, the columns of a subquery in a condition, DISTINCT, and ORDER BY when a
            LIMIT or OFFSET makes it choose rows). EXISTS asks whether a row exists, so only
            what decides its subquery's rows counts, never what it selects (`SELECT *`).

Outputs are named as DuckDB writes them: two names that are one to DuckDB become `id`, `id_1`,
and given the names of the written output, an unaliased expression takes DuckDB's name for it
(`count_star()`) instead of sqlglot's (`_col_1`).

The upstream schemas are known (every upstream task's Arrow schema), so sqlglot's `qualify`
expands `*`, `t.*`, `USING`, `EXCLUDE` and `REPLACE` and qualifies every column before the walk;
the walk then follows each column through CTEs, derived tables and set operations (UNION,
INTERSECT, EXCEPT: by position, every branch) down to the upstream tables. A recursive CTE is
followed through its anchor and reported as recursive. A column that cannot be traced is listed
as unresolved with the reason, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, SchemaError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from engine.core.sqltext import distinct_names
from lineage.rewrite import rewrite
from lineage.tables import DIALECT

__all__ = ["ColumnEdge", "ColumnLineage", "Unresolved", "column_lineage", "source_query_lineage"]

Kind = Literal["value", "filter"]
_Deps = dict[tuple[str, str], set[Kind]]
"""(upstream table, column) -> its kinds: a join key selected as a column is both."""


@dataclass(frozen=True, order=True)
class ColumnEdge:
    output: str
    table: str
    column: str
    kind: Kind
    inferred: bool = False
    """Found by comparing schemas (a frame UDF), not by reading the computation."""


@dataclass(frozen=True)
class Unresolved:
    output: str | None
    """None: the whole statement could not be analysed."""
    reason: str


@dataclass
class ColumnLineage:
    outputs: list[str]
    edges: list[ColumnEdge] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)
    recursive: bool = False
    """The statement has a recursive CTE: its columns are followed through the anchor."""

    def of(self, output: str, kind: Kind | None = None) -> set[tuple[str, str]]:
        return {
            (e.table, e.column)
            for e in self.edges
            if e.output == output and (kind is None or e.kind == kind)
        }


def _add(deps: _Deps, key: tuple[str, str], kind: Kind) -> None:
    deps.setdefault(key, set()).add(kind)


def _merge(into: _Deps, other: _Deps, as_filter: bool = False) -> None:
    for key, kinds in other.items():
        for kind in kinds:
            _add(into, key, "filter" if as_filter else kind)


class _Walker:
    def __init__(self, upstream: set[str]) -> None:
        self.upstream = upstream
        self.memo: dict[int, list[tuple[str, _Deps]]] = {}
        self.row_memo: dict[int, _Deps] = {}
        """Per scope: what decides which rows it has (read by a query selecting from it)."""
        self.exists_memo: dict[int, _Deps] = {}
        """Per SELECT: what decides whether it has any row (read by EXISTS): `row_memo` less
        DISTINCT and ORDER BY ... LIMIT, which choose among rows but never remove the last."""
        self.active: set[int] = set()
        self.recursive = False
        self.problems: dict[str, str] = {}
        self.recursive_names: set[str] = set()
        """Names of recursive CTEs: their self-references add nothing beyond the anchor."""

    def outputs(self, scope: Scope) -> list[tuple[str, _Deps]]:
        """Each output column of a scope, in order, with its upstream dependencies."""
        key = id(scope.expression)
        if key in self.memo:
            return self.memo[key]
        if key in self.active:  # a recursive CTE refers to itself: the anchor has the lineage
            self.recursive = True
            return []
        self.active.add(key)
        try:
            if isinstance(scope.expression, exp.SetOperation):
                result = self._set_operation(scope)
            elif scope.is_udtf and scope.subquery_scopes:  # LATERAL (SELECT ...): its query
                inner = scope.subquery_scopes[0]
                result = self.outputs(inner)
                self.row_memo[key] = self.row_memo.get(id(inner.expression), {})
            else:
                result = self._select(scope)
        finally:
            self.active.discard(key)
        self.memo[key] = result
        return result

    def _set_operation(self, scope: Scope) -> list[tuple[str, _Deps]]:
        """UNION: each output takes its values from that position of every branch (and, without
        ALL, every column decides which rows survive deduplication). INTERSECT and EXCEPT:
        values come from the first branch; every column of every branch decides the rows."""
        branches = [self.outputs(branch) for branch in scope.set_operation_scopes]
        first = next((b for b in branches if b), [])
        union = not isinstance(scope.expression, exp.Intersect | exp.Except)
        deduplicated = union and bool(scope.expression.args.get("distinct"))
        result = []
        for position, (name, _) in enumerate(first):
            deps: _Deps = {}
            for branch in branches if union else [first]:
                if position < len(branch):
                    _merge(deps, branch[position][1])
            result.append((name, deps))
        rows: _Deps = {}
        for branch_scope in scope.set_operation_scopes:
            _merge(rows, self.row_memo.get(id(branch_scope.expression), {}), as_filter=True)
        if not union or deduplicated:  # UNION without ALL drops duplicates: values decide rows
            for branch in branches:
                for _, deps in branch:
                    _merge(rows, deps, as_filter=True)
            for _, deps in result:
                _merge(deps, rows, as_filter=True)
        self.row_memo[id(scope.expression)] = rows
        return result

    def _column(self, scope: Scope, column: exp.Column, into: _Deps, kind: Kind) -> None:
        owner: Scope | None = scope
        while owner is not None and column.table not in owner.sources:
            owner = owner.parent  # a correlated reference to an enclosing query's table
        if owner is None:
            if column.table:  # e.g. the output of a PIVOT: not traced, and said so
                _add(into, ("", f"column {column.table}.{column.name} is not traced"), kind)
            return  # without a table: a lambda variable, nothing upstream
        scope = owner
        source = scope.sources.get(column.table)
        if isinstance(source, exp.Table):
            if source.name in self.upstream:
                _add(into, (source.name, column.name), kind)
            elif not self.recursive_names or source.name not in self.recursive_names:
                self.problems.setdefault(
                    f"{source.name}.{column.name}",
                    f"column {source.name}.{column.name}: {source.name!r} is not an upstream task",
                )
        elif isinstance(source, Scope):
            for name, deps in self.outputs(source):
                if name == column.name:
                    _merge(into, deps, as_filter=kind == "filter")
                    break

    def _collect(self, scope: Scope, node: exp.Expr, into: _Deps, kind: Kind) -> None:
        """Every column under `node`: a window's PARTITION BY / ORDER BY makes it a filter;
        the columns of a subquery under `node` are followed through the subquery's scope."""
        for column in node.find_all(exp.Column):
            path = _path(column, node)
            if any(isinstance(step, exp.Select | exp.Subquery) for step, _ in path):
                continue  # a subquery's own column: it belongs to that subquery's scope
            in_window_spec = any(
                (isinstance(step, exp.Window) and key in ("partition_by", "order"))
                or (isinstance(step, exp.Filter) and key == "expression")  # agg FILTER (WHERE)
                for step, key in path
            )
            self._column(scope, column, into, "filter" if in_window_spec else kind)
        for subquery in _subqueries(node, scope):
            if isinstance(subquery.expression.parent, exp.Exists):
                _merge(into, self.existence(subquery))
                continue
            for _, deps in self.outputs(subquery):
                _merge(into, deps, as_filter=kind == "filter")

    def existence(self, scope: Scope) -> _Deps:
        """What decides whether a subquery returns a row, as filters: not what it selects."""
        self.outputs(scope)
        expression = scope.expression
        if isinstance(expression, exp.Select):
            return self.exists_memo.get(id(expression), {})
        deps: _Deps = {}
        if isinstance(expression, exp.Union):  # a row of any branch is a row
            for branch in scope.set_operation_scopes:
                _merge(deps, self.existence(branch))
            return deps
        for _, values in self.outputs(scope):  # INTERSECT, EXCEPT: the values decide
            _merge(deps, values, as_filter=True)
        _merge(deps, self.row_memo.get(id(expression), {}), as_filter=True)
        return deps

    def _select(self, scope: Scope) -> list[tuple[str, _Deps]]:
        select = scope.expression
        if not isinstance(select, exp.Select):
            return []
        rows: _Deps = {}  # what decides which rows there are
        for _, source in scope.selected_sources.values():
            if isinstance(source, Scope):  # a derived table's or CTE's own row filters
                self.outputs(source)
                _merge(rows, self.row_memo.get(id(source.expression), {}), as_filter=True)
        for key in ("where", "group", "having", "qualify"):
            clause = select.args.get(key)
            if clause is not None:
                self._collect(scope, clause, rows, "filter")
        for join in select.args.get("joins") or []:
            for key in ("on", "using"):
                condition = join.args.get(key)
                if isinstance(condition, exp.Expr):
                    self._collect(scope, condition, rows, "filter")
        self.exists_memo[id(select)] = {key: set(kinds) for key, kinds in rows.items()}
        values = []
        for projection in select.expressions:
            deps: _Deps = {}
            self._collect(scope, projection, deps, "value")
            reason = _untraceable(projection, scope)
            if reason:
                _add(deps, ("", reason), "value")
            values.append((projection.alias_or_name, deps))
        group = select.args.get("group")
        if group is not None and group.args.get("all"):  # GROUP BY ALL: the non-aggregates
            for projection, (_, deps) in zip(select.expressions, values, strict=True):
                if not any(projection.find_all(exp.AggFunc)):
                    _merge(rows, deps, as_filter=True)
        if select.args.get("distinct"):  # duplicates of the selected values are dropped
            for _, deps in list(values):
                _merge(rows, deps, as_filter=True)
        order = select.args.get("order")
        if order is not None and (select.args.get("limit") or select.args.get("offset")):
            # ORDER BY alone only orders; with LIMIT it decides which rows appear.
            by_alias = dict(values)
            for column in order.find_all(exp.Column):
                if not column.table and column.name in by_alias:
                    _merge(rows, by_alias[column.name], as_filter=True)
            self._collect(scope, order, rows, "filter")
        result = []
        for name, deps in values:
            _merge(deps, rows, as_filter=True)
            result.append((name, deps))
        self.row_memo[id(select)] = rows
        return result


def _untraceable(projection: exp.Expr, scope: Scope) -> str | None:
    """Constructs whose lineage the walk would get wrong: reported instead of guessed.

    A struct field or list element of an upstream table's column comes from that column (the
    column is the unit of lineage); one of a struct or list built inside the statement would be
    traced to everything that built it, so it is reported instead."""
    if projection.alias_or_name == "*":
        return "`struct.*` expands a struct's fields into columns; not resolved"
    for node in projection.walk():
        accessor = isinstance(node, exp.Dot | exp.Bracket | exp.StructExtract)
        inner = node.this if accessor else None
        if isinstance(inner, exp.Column) and not isinstance(
            scope.sources.get(inner.table), exp.Table
        ):
            return "a field of a struct (or list) built inside the statement; not resolved"
        if isinstance(node, exp.Columns):
            return "COLUMNS(...) selects columns by pattern; not resolved"
    return None


def _path(node: exp.Expr, top: exp.Expr) -> list[tuple[exp.Expr, str | None]]:
    """The ancestors of `node` below `top`, each with the argument key leading down to node."""
    steps = []
    child, parent = node, node.parent
    while parent is not None and child is not top:
        steps.append((parent, child.arg_key))
        if parent is top:
            break
        child, parent = parent, parent.parent
    return steps


def _inside(node: exp.Expr, container: exp.Expr | None) -> bool:
    if container is None:
        return False
    parent = node.parent
    while parent is not None:
        if parent is container:
            return True
        parent = parent.parent
    return False


def _subqueries(node: exp.Expr, scope: Scope) -> list[Scope]:
    """Child scopes of subqueries that sit under `node` (e.g. `x IN (SELECT ...)`)."""
    found = []
    for child in scope.subquery_scopes:
        expression = child.expression
        if _inside(expression, node) or expression is node:
            found.append(child)
    return found


def column_lineage(
    sql: str,
    schemas: Mapping[str, Mapping[str, str]],
    written: Sequence[str] | None = None,
) -> ColumnLineage:
    """Lineage of `sql` (DuckDB dialect) over upstream tables with the given column types
    ({table: {column: SQL type}}). `written`: the names of the output DuckDB wrote, when known
    (a task's output schema)."""
    try:
        tree = rewrite(sqlglot.parse_one(sql, read=DIALECT), schemas)
        _remember_aliases(tree)
        qualified = qualify(
            tree,
            schema={t: dict(c) for t, c in schemas.items()},
            dialect=DIALECT,
            validate_qualify_columns=True,
            identify=False,
        )
    except (ParseError, OptimizeError, SchemaError) as exc:
        return ColumnLineage([], unresolved=[Unresolved(None, str(exc).splitlines()[0])])
    root = build_scope(qualified)
    if root is None:
        reason = "not a query"
        if isinstance(qualified, exp.Pivot):
            reason = "a PIVOT without a static IN list: its columns depend on the data"
        return ColumnLineage([], unresolved=[Unresolved(None, reason)])
    walker = _Walker(set(schemas))
    for with_ in qualified.find_all(exp.With):
        if with_.args.get("recursive"):
            walker.recursive_names |= {cte.alias_or_name for cte in with_.expressions}
    outputs = walker.outputs(root)
    recursive = walker.recursive or any(
        bool(with_.args.get("recursive")) for with_ in qualified.find_all(exp.With)
    )
    names = _output_names(_aliases_as_written(qualified, [n for n, _ in outputs]), written)
    lineage = ColumnLineage(names, recursive=recursive)
    for name, (_, deps) in zip(names, outputs, strict=True):
        reasons = sorted(column for table, column in deps if not table)
        if reasons:  # no edges for an output that is partly untraceable: none would be sure
            lineage.unresolved.extend(Unresolved(name, reason) for reason in reasons)
            continue
        for (table, column), kinds in sorted(deps.items()):
            for kind in sorted(kinds):
                lineage.edges.append(ColumnEdge(name, table, column, kind))
    for reason in walker.problems.values():
        lineage.unresolved.append(Unresolved(None, reason))
    return lineage


_WRITTEN = "arrowline_written"
"""Meta key of an output alias's identifier: the alias as written in the statement."""


def _outermost_select(tree: exp.Expr) -> exp.Select | None:
    """The SELECT that names a statement's outputs (of a set operation, its first branch)."""
    while isinstance(tree, exp.SetOperation | exp.Subquery):
        tree = tree.this
    return tree if isinstance(tree, exp.Select) else None


def _remember_aliases(tree: exp.Expr) -> None:
    """DuckDB names an output by its alias as written (`AS "Amount"`), while qualify lowers
    every identifier (DuckDB compares them ignoring case): keep the written alias aside."""
    select = _outermost_select(tree)
    for projection in select.expressions if select is not None else []:
        if isinstance(projection, exp.Alias):
            projection.args["alias"].meta[_WRITTEN] = projection.alias


def _aliases_as_written(qualified: exp.Expr, names: list[str]) -> list[str]:
    select = _outermost_select(qualified)
    if select is None or len(select.expressions) != len(names):
        return names
    return [
        projection.args["alias"].meta.get(_WRITTEN, name)
        if isinstance(projection, exp.Alias)
        else name
        for projection, name in zip(select.expressions, names, strict=True)
    ]


def _output_names(found: list[str], written: Sequence[str] | None) -> list[str]:
    """The statement's output names as DuckDB writes them. The written names, when known,
    replace them by position unless they are the same names (an order sqlglot and DuckDB might
    not share); of another number, they describe some other statement and are not used."""
    names = distinct_names(found)
    if written is None or len(written) != len(names) or set(written) == set(names):
        return names
    return list(written)


def source_query_lineage(
    sql: str, output_columns: list[str], dialect: str = "postgres"
) -> tuple[ColumnLineage, dict[str, str]]:
    """Lineage of an extract's query over tables outside the pipeline, whose schemas are not
    known: each table's columns are the ones the query names for it (qualified by the table or
    its alias, or unqualified in a scope that reads one table), and a lone `*` over one table is
    that table's columns, which are the extract's output columns. Anything else (an unqualified
    column in a join, a star over several tables) is left unresolved by `column_lineage`.

    Returns the lineage, whose `table`s are stand-in names, and stand-in -> table as written."""
    from sqlglot.optimizer.scope import traverse_scope

    try:
        tree = sqlglot.parse_one(sql, read=dialect)
        scopes = traverse_scope(tree)
    except (ParseError, OptimizeError) as exc:
        return ColumnLineage([], unresolved=[Unresolved(None, str(exc).splitlines()[0])]), {}
    names: dict[str, str] = {}  # table as written -> stand-in
    columns: dict[str, dict[str, str]] = {}
    for scope in scopes:
        for source in scope.sources.values():
            if (
                isinstance(source, exp.Table)
                and source.name
                and not isinstance(source.this, exp.Func)
            ):
                written = ".".join(p for p in (source.catalog, source.db, source.name) if p)
                names.setdefault(written, f"src{len(names)}")
    for scope in scopes:
        tables = {
            alias: ".".join(p for p in (s.catalog, s.db, s.name) if p)
            for alias, s in scope.sources.items()
            if isinstance(s, exp.Table) and s.name in {w.rsplit(".", 1)[-1] for w in names}
        }
        for column in scope.columns:
            if column.table and column.table in tables:
                written = tables[column.table]
            elif not column.table and len(scope.sources) == 1 and tables:
                (written,) = tables.values()
            else:
                continue
            columns.setdefault(names[written], {})[column.name] = "VARCHAR"
        select = scope.expression
        if (
            scope.is_root
            and isinstance(select, exp.Select)
            and len(select.expressions) == 1
            and isinstance(select.expressions[0], exp.Star)
            and len(scope.sources) == 1
            and tables
        ):
            (written,) = tables.values()
            columns.setdefault(names[written], {}).update(dict.fromkeys(output_columns, "VARCHAR"))
    for table in tree.find_all(exp.Table):
        written = ".".join(p for p in (table.catalog, table.db, table.name) if p)
        if written in names:
            table.set("catalog", None)
            table.set("db", None)
            table.set("this", exp.to_identifier(names[written]))
            if not table.alias:
                table.set(
                    "alias", exp.TableAlias(this=exp.to_identifier(written.rsplit(".", 1)[-1]))
                )
    unknown = [written for written, stand_in in names.items() if not columns.get(stand_in)]
    if unknown:
        reason = f"no column of {', '.join(unknown)} can be told apart from the query alone"
        return ColumnLineage([], unresolved=[Unresolved(None, reason)]), {}
    lineage = column_lineage(tree.sql(dialect=DIALECT), columns)
    for name in output_columns:
        if name not in lineage.outputs and not any(u.output is None for u in lineage.unresolved):
            reason = "comes from a `*` beside other columns, over columns the query does not name"
            lineage.unresolved.append(Unresolved(name, reason))
    return lineage, {stand_in: written for written, stand_in in names.items()}
