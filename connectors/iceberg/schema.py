"""An Iceberg table's schema and partition spec fitted to a load's input, inside its transaction:
the `schema_change` policy for appends and merges (Iceberg's promotions), the input's shape for
a replace, evolved by name so kept columns keep their field ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.evolution import Column, arrow_type_name, diff, replacing_policy
from connectors.iceberg.catalog import arrow_schema, iceberg_schema, storable_schema
from connectors.iceberg.config import IcebergSink, partition_field
from engine.core.errors import DataError

if TYPE_CHECKING:
    from pyiceberg.table import Table, Transaction


__all__ = [
    "arrow_schema_of",
    "evolve_schema",
    "partition_spec",
    "partition_transforms",
    "plain_schema",
    "respec",
    "table_columns",
]


def partition_transforms(config: IcebergSink) -> list[tuple[str, Any, str]]:
    """(column, transform, partition field name) of each `partition_by` entry."""
    from pyiceberg.transforms import (
        BucketTransform,
        DayTransform,
        HourTransform,
        IdentityTransform,
        MonthTransform,
        TruncateTransform,
        VoidTransform,
        YearTransform,
    )

    simple = {
        "identity": IdentityTransform,
        "year": YearTransform,
        "month": MonthTransform,
        "day": DayTransform,
        "hour": HourTransform,
        "void": VoidTransform,
    }
    found = []
    for text in config.partition_by:
        column, kind, size = partition_field(text)
        transform: Any
        if kind == "bucket" and size is not None:
            transform = BucketTransform(num_buckets=size)
        elif kind == "truncate" and size is not None:
            transform = TruncateTransform(width=size)
        else:
            transform = simple[kind]()
        found.append((column, transform, column if kind == "identity" else f"{column}_{kind}"))
    return found


def partition_spec(schema: Any, config: IcebergSink) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec

    fields = []
    for index, (column, transform, name) in enumerate(partition_transforms(config)):
        try:
            source_id = schema.find_field(column).field_id
        except ValueError:
            raise DataError(f"partition_by: the input has no column {column!r}") from None
        fields.append(PartitionField(source_id, 1000 + index, transform, name))
    return PartitionSpec(*fields)


def respec(tx: Transaction, table: Table, config: IcebergSink, given: pa.Schema) -> None:
    """A replaced table takes the input's schema and `partition_by` (its own spec when the
    load names none), evolved by name: columns the input keeps with their type keep their
    field ids (and partition fields on them); the others are dropped and added anew. The
    table is empty at this point of the transaction, so any change is allowed."""
    missing = [c for c, _, _ in partition_transforms(config) if c not in given.names]
    if missing:
        raise DataError(f"partition_by: the input has no column {missing[0]!r}")
    schema = table.schema()
    current = storable_schema(plain_schema(arrow_schema(table)))
    keep = {
        f.name
        for f in given
        if f.name in current.names
        and arrow_type_name(current.field(f.name).type) == arrow_type_name(f.type)
    }
    wanted = {(name, str(transform)) for _, transform, name in partition_transforms(config)}
    remove = [
        field.name
        for field in table.spec().fields
        if schema.find_field(field.source_id).name not in keep
        or (config.partition_by and (field.name, str(field.transform)) not in wanted)
    ]
    if remove:
        with tx.update_spec() as spec:
            for name in remove:
                spec.remove_field(name)
    drop = [name for name in current.names if name not in keep]
    if drop:
        with tx.update_schema(allow_incompatible_changes=True) as update:
            for name in drop:
                update.delete_column(name)
    fresh = [f for f in given if f.name not in keep]
    if fresh:
        with tx.update_schema(allow_incompatible_changes=True) as update:
            update.union_by_name(iceberg_schema(pa.schema(fresh)))
    present = {f.name for f in table.spec().fields} - set(remove)
    added = [(c, t, n) for c, t, n in partition_transforms(config) if n not in present]
    if added:
        with tx.update_spec() as spec:
            for column, transform, name in added:
                spec.add_field(column, transform, name)


def plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.remove_metadata() for f in schema])


def table_columns(schema: pa.Schema) -> list[Column]:
    return [Column(f.name, arrow_type_name(f.type), not f.nullable, False) for f in schema]


def evolve_schema(
    tx: Transaction, table: Table, given: pa.Schema, config: IcebergSink, label: str
) -> tuple[pa.Schema, list[dict[str, object]]]:
    """Fit the table's schema to the input in the transaction, per `schema_change`: the
    schema the rows are written in, and the changes (reported)."""
    current = arrow_schema(table)
    # compared as Iceberg holds them: pyiceberg hands nested strings over as large_string
    held = storable_schema(plain_schema(current))
    fields = [(f.name, arrow_type_name(f.type)) for f in given]
    if config.mode == "replace" and config.predicate is None:
        policy = replacing_policy(config, view=False)
        report = diff(label, fields, table_columns(held), policy).report() if policy else []
        same_shape = given.names == held.names and all(
            arrow_type_name(a.type) == arrow_type_name(b.type)
            for a, b in zip(given, held, strict=True)
        )
        spec = [(f.name, str(f.transform)) for f in table.spec().fields]
        wanted = [(name, str(transform)) for _, transform, name in partition_transforms(config)]
        if same_shape and (not config.partition_by or spec == wanted):
            return current, report
        respec(tx, table, config, given)
        return arrow_schema_of(tx), report
    found = diff(label, fields, table_columns(held), config.schema_change)
    if not found.changes:
        return current, []
    from pyiceberg.types import DecimalType, DoubleType, LongType

    promotions = {"bigint": LongType(), "double precision": DoubleType()}
    added = [f.with_nullable(True) for f in given if f.name not in current.names]
    with tx.update_schema() as update:
        for change in found.changes:
            if change.change != "widened" or change.after is None:
                continue
            target: Any = promotions.get(change.after)
            if change.after.startswith("numeric("):
                precision, scale = (int(p) for p in change.after[8:-1].split(","))
                before = current.field(change.column).type
                if scale != before.scale:
                    raise DataError(
                        f"column {change.column!r} {change.before} -> {change.after}: an "
                        "Iceberg decimal may gain digits, never change its scale",
                        hint="cast the input to the table's scale upstream",
                    )
                target = DecimalType(precision, scale)
            if target is None:
                raise DataError(
                    f"column {change.column!r} {change.before} -> {change.after} is no "
                    "promotion Iceberg allows (int to long, float to double, wider decimals)"
                )
            update.update_column(change.column, field_type=target)
        if added:
            update.union_by_name(iceberg_schema(pa.schema(added)))
    return arrow_schema_of(tx), found.report()


def arrow_schema_of(tx: Transaction) -> pa.Schema:
    schema: pa.Schema = tx.table_metadata.schema().as_arrow()
    return schema
