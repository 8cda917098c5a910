"""SQL hooks: statements a load runs in its target, inside its transaction, before and after it
writes. dbt's `pre_hook` and `post_hook` of a SQL project's models (and `+pre-hook` for
folders) become the hooks of the load that publishes the model (engine.spec.sqlproject).

    - id: publish
      load: {input: orders, to: duckdb, path: out/w.duckdb, table: marts.orders}
      hooks:
        pre: ["create table if not exists audit(day date, n bigint)"]
        post: ["insert into audit select {{ ds | sql_literal }}, count(*) from {{ this }}"]

Each hook is a template rendered as a sql task's statement is: a parameter reaches it through
`sql_literal` or `sql_identifier` (printed raw, validation refuses it unless it is a number).
It sees everything a task's template sees, `target` among it, and `this`: the load's table as
SQL in its target names it (its connector's `relation`; in a DuckDB file `"w"."marts"."orders"`,
dbt-duckdb's spelling, which no schema named as the file can make ambiguous).

Pre-hooks run in order once the load's transaction has begun, before its rows are written;
post-hooks after they are written, before it commits. The load runs after the task it reads
succeeded and, for a model, after the model's tests passed. A hook that fails rolls the whole
load back (its rows, the other hooks' changes, its watermarks) and fails the load, naming the
hook and the file and line it was written at. A hook that would end the transaction
(`commit`, `rollback`, `begin`, ...) is refused before the load writes anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr

from engine.core.config import ConfigModel
from engine.core.errors import DefinitionError

if TYPE_CHECKING:
    from connectors.base import Hook

__all__ = ["HOOK_WHEN", "HooksSpec"]

HOOK_WHEN: tuple[Literal["pre", "post"], ...] = ("pre", "post")


class HooksSpec(ConfigModel):
    """A load's SQL hooks (see engine.spec.hooks)."""

    pre: tuple[str, ...] = Field(
        (), description="SQL run in the load's target before it writes, in its transaction."
    )
    post: tuple[str, ...] = Field(
        (), description="SQL run in the load's target after it writes, before it commits."
    )
    _places: dict[str, tuple[str | None, ...]] = PrivateAttr(default_factory=dict)
    """Where each hook is written (`file:line`), set when the hooks are rendered for a run."""

    def placed(self, places: dict[str, tuple[str | None, ...]]) -> HooksSpec:
        """These hooks, knowing where each is written."""
        copy = self.model_copy()
        copy._places = places
        return copy

    def hooks(self, when: Literal["pre", "post"]) -> tuple[Hook, ...]:
        """The `pre` or `post` hooks as a sink runs them, each named for its errors."""
        from connectors.base import Hook

        texts = self.pre if when == "pre" else self.post
        places = self._places.get(when, ())
        found = []
        for number, sql in enumerate(texts, start=1):
            place = places[number - 1] if number <= len(places) else None
            label = f"{when}-hook {number}" + (f" at {place}" if place else "")
            said = _ends_transaction(sql)
            if said is not None:
                raise DefinitionError(
                    f"{label}: {said!r} would end the load's transaction, so its rows would "
                    "be committed (or dropped) apart from the load's watermarks and the rest "
                    "of its hooks",
                    hint="hooks run inside the load's transaction: leave transaction "
                    "statements out",
                )
            found.append(Hook(sql, label))
        return tuple(found)


_TRANSACTION = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "END", "ABORT", "START", "SAVEPOINT"})


def _ends_transaction(sql: str) -> str | None:
    """The first statement of `sql` that starts, ends or splits a transaction (`commit`,
    `rollback`, `begin`, ...), None when there is none. Statements are told apart by SQL's
    tokens, so a `commit` inside a string or a comment does not count."""
    import sqlglot
    from sqlglot.tokenizer_core import TokenType

    try:
        tokens = sqlglot.tokenize(sql)
    except Exception:  # not SQL sqlglot can read: the database says what is wrong
        return None
    first = True
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            first = True
        elif first:
            first = False
            if token.text.upper() in _TRANSACTION:
                return token.text
    return None
