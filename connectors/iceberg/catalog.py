"""Iceberg catalogs as pyiceberg opens them, and what the source and sink share: the ledger of
arrowline's loads in the table's properties, Arrow types Iceberg holds, errors as arrowline's.

A connection names a SQL catalog (SQLite or PostgreSQL, pyiceberg's `SqlCatalog`) or a REST
catalog; without one, a table lives in the embedded catalog beside the pipeline file:
`.arrowline/iceberg/catalog.db` and the warehouse folder next to it (the project's state folder
when the pipeline file is at the project's root).

The ledger: every load sets the table property `arrowline.load.<pipeline>.<task>` to JSON
holding its run, rows, sequence number and the watermarks of every extract whose rows the table
holds, in the same transaction (one metadata commit) as its snapshot. Properties outlive
snapshot expiry, so the newest load of a (pipeline, task) is always known, committed with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.base import ConnectorContext
from engine.core.errors import (
    ArrowlineError,
    DataError,
    DefinitionError,
    TaskError,
    TransientTaskError,
)
from engine.core.secrets import redact, register_secret, resolve_secrets
from engine.core.watermark import Watermark

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from connectors.iceberg.config import IcebergConnection

__all__ = [
    "EMBEDDED",
    "NO_RETRY",
    "REWRITE_KEY",
    "Load",
    "ResolvedIceberg",
    "catalog_for",
    "embedded",
    "iceberg_schema",
    "ledger_key",
    "load_table",
    "open_catalog",
    "resolve",
    "storable_schema",
    "translate",
]

REWRITE_KEY = "arrowline.rewrite"
"""A snapshot summary property: the snapshot moved rows without changing any (a compaction),
which incremental readers skip as they skip a `replace` snapshot."""

EMBEDDED = Path(".arrowline") / "iceberg"
"""The embedded catalog's folder, relative to the pipeline file."""


@dataclass(frozen=True)
class ResolvedIceberg:
    """A catalog's pyiceberg properties, secrets filled in: never print `properties`."""

    name: str
    properties: dict[str, str]

    def describe(self) -> str:
        return redact(self.properties.get("uri", ""))


def _local_uri(path: str, base_dir: Path) -> str:
    full = Path(path).expanduser()
    return (full if full.is_absolute() else (base_dir / full).resolve()).as_uri()


def _resolved_uri(template: str, where: str, base_dir: Path) -> str:
    """The URI with its references resolved; a user or password resolved inside the URI is
    percent-encoded, so a secret holding `@`, `:` or `/` stays the secret."""
    from urllib.parse import quote

    hidden: list[str] = []

    def hide(match: re.Match[str]) -> str:
        hidden.append(match.group(0))
        return f"\x00{len(hidden) - 1}\x00"

    def show(text: str) -> str:
        return re.sub(r"\x00(\d+)\x00", lambda m: hidden[int(m.group(1))], text)

    def value(text: str) -> str:
        return resolve_secrets(show(text), where=where, base_dir=base_dir)

    masked = re.sub(r"\$\{[^}]*\}", hide, template)
    scheme, sep, rest = masked.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return value(masked)
    userinfo, _, host = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    credentials = quote(value(user), safe="")
    if colon:
        secret = quote(value(password), safe="")
        register_secret(secret)
        credentials += ":" + secret
    return f"{value(scheme)}://{credentials}@{value(host)}{slash}{value(path)}"


def resolve(name: str, spec: IcebergConnection, base_dir: Path) -> ResolvedIceberg:
    where = f"connection {name!r}"
    uri = _resolved_uri(spec.uri, where, base_dir)
    properties = {
        key: resolve_secrets(value, where=f"{where}, {key}", base_dir=base_dir)
        for key, value in spec.properties.items()
    }
    if uri.startswith(("http://", "https://")):
        properties.update(type="rest", uri=uri)
        if "credential" in properties:  # the protocol's own token endpoint, said outright
            properties.setdefault("oauth2-server-uri", f"{uri.rstrip('/')}/v1/oauth/tokens")
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else (base_dir / path).resolve()
        properties.update(type="sql", uri=f"sqlite:///{path}")
    elif uri.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        rest = uri.split("://", 1)[1]
        properties.update(type="sql", uri=f"postgresql+psycopg://{rest}")
    else:
        raise DefinitionError(
            f"{where}: an Iceberg catalog's uri is sqlite:///..., postgresql://... or "
            f"http(s)://..., not {redact(uri)!r}"
        )
    if spec.warehouse is not None:
        warehouse = spec.warehouse
        local = "://" not in warehouse and properties["type"] != "rest"  # REST: a name it serves
        properties["warehouse"] = _local_uri(warehouse, base_dir) if local else warehouse
    return ResolvedIceberg(spec.catalog or name, properties)


def embedded(base_dir: Path) -> ResolvedIceberg:
    folder = (base_dir / EMBEDDED).resolve()
    return ResolvedIceberg(
        "arrowline",
        {
            "type": "sql",
            "uri": f"sqlite:///{folder / 'catalog.db'}",
            "warehouse": (folder / "warehouse").as_uri(),
        },
    )


def open_catalog(resolved: ResolvedIceberg) -> Catalog:
    try:
        from pyiceberg.catalog import load_catalog
    except ImportError as exc:  # pragma: no cover - the extra is part of dev
        raise DefinitionError(
            "Iceberg tables need pyiceberg", hint="pip install 'arrowline[iceberg]'"
        ) from exc
    properties = dict(resolved.properties)
    if properties["uri"].startswith("sqlite:///"):
        Path(properties["uri"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return load_catalog(resolved.name, **properties)
    except Exception as exc:
        raise translate(exc, f"opening the Iceberg catalog {resolved.describe()}") from None


@contextmanager
def catalog_for(config: Any, ctx: ConnectorContext) -> Iterator[Catalog]:
    """The catalog of a source or sink config (its connection's, else the embedded one), its
    pooled database connections closed on the way out (a table loaded from it still commits:
    the pool opens a connection again when asked)."""
    resolved = ctx.connection(config.connection) if config.connection else embedded(ctx.base_dir)
    catalog = open_catalog(resolved)
    try:
        yield catalog
    finally:
        engine = getattr(catalog, "engine", None)
        if engine is not None:
            engine.dispose()


NO_RETRY = {"commit.retry.num-retries": "0"}
"""No retry inside pyiceberg, which would replay a transaction computed from the table it
read over a concurrent commit's (a merge's file list, a ledger entry): a lost race fails the
attempt, and the task's retry computes it anew. Every load also sets it on the table."""


def load_table(catalog: Catalog, identifier: str) -> Table | None:
    """The table, None when there is none; its transactions commit once (`NO_RETRY`), from
    the first load on, though the table was made elsewhere and says otherwise."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        table = catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    properties = {**table.metadata.properties, **NO_RETRY}  # what pyiceberg's commit reads
    table.metadata = table.metadata.model_copy(update={"properties": properties})
    return table


RECENT_RUNS = 64
"""Runs a ledger entry remembers: a resume comes long before 64 later runs of its load."""


def ledger_key(pipeline: str, task: str) -> str:
    return f"arrowline.load.{pipeline}.{task}"


@dataclass(frozen=True)
class Load:
    """One arrowline load as the table's properties recorded it."""

    run_id: str
    rows: int
    sequence: int
    snapshot_id: int | None = None
    watermarks: dict[str, tuple[Watermark, str]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    """The runs whose load committed before, newest last (at most RECENT_RUNS), with their
    rows: a resume of any of them, not only of the newest, finds its rows loaded."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "rows": self.rows,
                "sequence": self.sequence,
                "watermarks": {k: [w.to_json(), run] for k, (w, run) in self.watermarks.items()},
                "runs": self.runs,
            }
        )

    def committed(self, run_id: str) -> int | None:
        """The rows `run_id`'s load committed, None when it has not."""
        return self.rows if run_id == self.run_id else self.runs.get(run_id)

    def with_run(self) -> dict[str, int]:
        """`runs` for the next load's entry: these plus this one."""
        runs = {**self.runs, self.run_id: self.rows}
        return dict(list(runs.items())[-RECENT_RUNS:])

    @classmethod
    def of(cls, table: Table, pipeline: str, task: str) -> Load | None:
        text = table.properties.get(ledger_key(pipeline, task))
        if text is None:
            return None
        entry = json.loads(text)
        return cls(
            run_id=str(entry["run_id"]),
            rows=int(entry["rows"]),
            sequence=int(entry["sequence"]),
            watermarks={
                extract: (Watermark.from_json(value), str(run))
                for extract, (value, run) in entry.get("watermarks", {}).items()
            },
            runs={str(run): int(rows) for run, rows in entry.get("runs", {}).items()},
        )


def _storable_type(name: str, t: pa.DataType) -> pa.DataType:
    """The type an Iceberg table holds `t` as (what pyiceberg would refuse or store wrong is
    widened or checked; what Iceberg cannot hold is refused, naming the column)."""
    if pa.types.is_dictionary(t):
        return _storable_type(name, t.value_type)
    if t in (pa.int8(), pa.int16(), pa.uint8(), pa.uint16()):
        return pa.int32()
    if t in (pa.uint32(), pa.uint64()):
        return pa.int64()  # uint64 is checked by the cast: past 2^63 - 1 fails the load
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", "UTC" if t.tz is not None else None)
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_decimal(t) and t.precision > 38:
        raise DataError(f"column {name!r} is {t}: Iceberg holds decimals of at most 38 digits")
    if pa.types.is_duration(t) or pa.types.is_interval(t) or pa.types.is_null(t):
        raise DataError(
            f"column {name!r} is {t}, which an Iceberg table cannot hold",
            hint="cast it upstream (a duration to microseconds as bigint; a NULL-only column "
            "to the type it is meant to have)",
        )
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_fixed_size_list(t)
    ):
        return pa.list_(_storable_type(name, t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_storable_type(f"{name}.{f.name}", f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_storable_type(name, t.key_type), _storable_type(name, t.item_type))
    return t


def storable_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_storable_type(f.name, f.type)) for f in schema])


def translate(exc: BaseException, what: str) -> ArrowlineError:
    """A pyiceberg exception as an arrowline error: a lost commit race may go away on retry,
    rows or a schema the table refuses are about the data, the rest is terminal."""
    from pyiceberg.exceptions import (
        CommitFailedException,
        CommitStateUnknownException,
        ServerError,
        ServiceUnavailableError,
        TooManyRequestsError,
        ValidationError,
        ValidationException,
    )

    if isinstance(exc, ArrowlineError):
        return exc
    message = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
    if isinstance(exc, CommitFailedException | ValidationException):
        return TransientTaskError(
            f"{what}: another writer committed to the table first ({message})",
            hint="the load is retried from its start; give the task more `retry` attempts "
            "when writers of one table often overlap",
        )
    if isinstance(
        exc,
        CommitStateUnknownException | ServerError | ServiceUnavailableError | TooManyRequestsError,
    ):
        # a retry finds the load's ledger entry when the commit did happen
        return TransientTaskError(f"{what}: the catalog did not answer ({message})")
    if isinstance(exc, ValidationError | ValueError | pa.ArrowInvalid | TypeError):
        return DataError(f"{what}: {message}")
    return TaskError(f"{what}: {message}")


def condition_problem(text: str) -> str | None:
    """Why pyiceberg cannot read `text` as a condition, or None."""
    from pyiceberg.expressions.parser import parse

    try:
        parse(text)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        return (
            f"{text!r} is not a condition pyiceberg reads ({reason}); write e.g. "
            "region = 'EU' and amount > 10"
        )
    return None


def parse_condition(text: str, key: str) -> Any:
    """`text` as a pyiceberg expression; a DataError naming `key` when it is none."""
    from pyiceberg.expressions.parser import parse

    problem = condition_problem(text)
    if problem is not None:
        raise DataError(f"{key}: {problem}")
    return parse(text)


def iceberg_schema(schema: pa.Schema) -> Any:
    """An Arrow schema as Iceberg's, with field ids of its own (a table assigns them anew)."""
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import assign_fresh_schema_ids

    return assign_fresh_schema_ids(Catalog._convert_schema_if_needed(schema))


def arrow_schema(table: Table) -> pa.Schema:
    schema: pa.Schema = table.schema().as_arrow()
    return schema


def describe(table: Any) -> str:
    return f"iceberg:{'.'.join(table.name())}"
