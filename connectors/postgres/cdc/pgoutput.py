"""pgoutput messages (protocol version 1) into columns, a batch of messages at a time.

`pg_logical_slot_peek_binary_changes` returns one row per message: Begin, Relation, Insert,
Update, Delete, Truncate, Commit (and Origin, Type, Message, which carry nothing we keep). A
change's tuple is a 16-bit column count and, per column, a kind byte: `n` null, `u` an
unchanged TOASTed value (not sent), `t` a 32-bit length and the value as text.

Parsing one message at a time in Python tops out near 90k changes/s. Here the changes of one
relation between two Relation (or Truncate) messages are parsed together with numpy: one array
of positions, advanced column by column (the kind byte, the length where it is `t`), and each
column's text gathered from the message buffer into an Arrow string array in one copy. The
Python work per batch is per column, not per row.

Transactions arrive whole and in commit order. Begin carries the transaction's final (commit)
LSN, its commit time and xid, so every change is stamped with them as soon as it is read: a
transaction larger than a batch streams through without being held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Chunk", "Decoder", "Relation"]

Ints = np.ndarray[Any, Any]

_PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 (PostgreSQL's epoch) in microseconds since 1970-01-01."""

INSERT, UPDATE, DELETE, TRUNCATE = "insert", "update", "delete", "truncate"
_CHANGES = np.frombuffer(b"IUD", np.uint8)
_OLD = np.frombuffer(b"KO", np.uint8)
_T, _U = ord("t"), ord("u")


@dataclass(frozen=True)
class Relation:
    """A Relation message: the columns the changes after it carry, in order."""

    oid: int
    namespace: str
    name: str
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    key: tuple[str, ...]


@dataclass
class Chunk:
    """Consecutive changes of one relation under one definition, in stream order."""

    relation: Relation
    op: list[str] | Ints
    """One of INSERT, UPDATE, DELETE, TRUNCATE per change (an array of codes, see OPS)."""
    lsn: Ints
    """The final (commit) LSN of each change's transaction."""
    seq: Ints
    """The change's position within its transaction, from 0."""
    xid: Ints
    commit_us: Ints
    """Commit time, microseconds since 1970-01-01 UTC."""
    texts: list[pa.Array] = field(default_factory=list)
    """Per column of `relation`: its values as text (null: NULL or not sent)."""
    unchanged: list[Ints | None] = field(default_factory=list)
    """Per column: where the value is an unchanged TOASTed one (None: nowhere)."""

    def __len__(self) -> int:
        return len(self.lsn)


OPS = np.array([INSERT, UPDATE, DELETE, TRUNCATE], dtype=object)


def _be(buf: Ints, pos: Ints, width: int) -> Ints:
    """Big-endian signed integers of `width` bytes at each position."""
    raw = buf[pos[:, None] + np.arange(width)]
    dtype = {2: ">i2", 4: ">i4", 8: ">i8"}[width]
    return np.ascontiguousarray(raw).view(dtype).reshape(len(pos)).astype(np.int64)


def _gather(buf: Ints, starts: Ints, lengths: Ints):  # type: ignore[no-untyped-def]
    """(offsets, data): the byte ranges [start, start+length) copied end to end."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return offsets, np.zeros(0, np.uint8)
    small = len(buf) < 2**31  # int32 positions: half the memory of the index
    kind = np.int32 if small else np.int64
    index = np.repeat((starts - offsets[:-1]).astype(kind), lengths)
    index += np.arange(total, dtype=kind)
    return offsets, buf[index]


def _strings(valid: Ints, offsets: Ints, data: Any) -> pa.Array:
    count = len(valid)
    kind = pa.large_string() if offsets[-1] >= 2**31 else pa.string()
    if kind == pa.string():
        offsets = offsets.astype(np.int32)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    array = pa.Array.from_buffers(kind, count, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])
    return array.cast(pa.string()) if kind == pa.large_string() else array


class Decoder:
    """Turns batches of (lsn, data) rows into `Chunk`s of one relation's changes.

    Keeps, across batches, the relations seen and the transaction being read. `wanted` is the
    oid of the one table read: changes of other tables the publication has are skipped."""

    def __init__(self, wanted: int, key: tuple[str, ...] = ()) -> None:
        self.wanted = wanted
        self.key = key
        """The table's key columns: an update that changes them also deletes the old key."""
        self.relations: dict[int, Relation] = {}
        self.redefined: list[Relation] = []
        """Relation messages of the wanted table, in order (schema changes mid-stream)."""
        self.final_lsn = 0
        self.commit_us = 0
        self.xid = 0
        self.seq = 0
        self.changes = 0
        self.last_commit: int | None = None
        """The final LSN of the last transaction whose Commit was read."""

    def decode(self, messages: pa.Array) -> Iterator[Chunk]:
        if len(messages) == 0:
            return
        if messages.null_count:
            messages = messages.filter(messages.is_valid())
        buffers = messages.buffers()
        width = np.int64 if pa.types.is_large_binary(messages.type) else np.int32
        offsets = np.frombuffer(buffers[1], width)[
            messages.offset : messages.offset + len(messages) + 1
        ]
        buf = (
            np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(1, np.uint8)
        )
        starts = offsets[:-1].astype(np.int64)
        kinds = buf[starts]
        # Relation and Truncate messages change what follows: read them one by one, and the
        # runs of other messages between them in bulk.
        special = np.flatnonzero((kinds == ord("R")) | (kinds == ord("T")))
        begin = 0
        for index in [*special.tolist(), len(kinds)]:
            if index > begin:
                yield from self._run(buf, starts[begin:index], kinds[begin:index])
            if index < len(kinds):
                start, end = int(offsets[index]), int(offsets[index + 1])
                message = buf[start:end].tobytes()
                if message[:1] == b"R":
                    self._relation(message)
                else:
                    truncated = self._truncate(message)
                    if truncated is not None:
                        yield truncated
            begin = index + 1

    def _run(self, buf: Ints, starts: Ints, kinds: Ints) -> Iterator[Chunk]:
        is_begin = kinds == ord("B")
        is_change = np.isin(kinds, _CHANGES)
        # The transaction of every message: the last Begin at or before it (or the one carried
        # over from the batch before).
        begins = np.flatnonzero(is_begin)
        if len(begins):
            final = np.concatenate([[self.final_lsn], _be(buf, starts[begins] + 1, 8)])
            commit = np.concatenate(
                [[self.commit_us], _be(buf, starts[begins] + 9, 8) + _PG_EPOCH_US]
            )
            xid = np.concatenate([[self.xid], _be(buf, starts[begins] + 17, 4) & 0xFFFFFFFF])
        else:
            final = np.array([self.final_lsn])
            commit = np.array([self.commit_us])
            xid = np.array([self.xid])
        which = np.cumsum(is_begin)  # 0: the carried transaction
        # Position within the transaction: changes since its Begin.
        changes_before: Ints = np.cumsum(is_change) - is_change
        at_begin = np.zeros(len(begins) + 1, np.int64)
        at_begin[0] = -self.seq
        at_begin[1:] = changes_before[begins]
        seq = changes_before - at_begin[which]
        commits = np.flatnonzero(kinds == ord("C"))
        if len(commits):
            self.last_commit = int(final[which[commits[-1]]])
        self.final_lsn, self.commit_us, self.xid = int(final[-1]), int(commit[-1]), int(xid[-1])
        self.seq = int(changes_before[-1] + is_change[-1] - at_begin[which[-1]])
        if not is_change.any():
            return
        rows = np.flatnonzero(is_change)
        pos = starts[rows]
        oids = _be(buf, pos + 1, 4) & 0xFFFFFFFF
        mine = oids == self.wanted
        if not mine.all():
            rows, pos = rows[mine], pos[mine]
        if len(rows) == 0:
            return
        self.changes += len(rows)
        relation = self.relations.get(self.wanted)
        if relation is None:
            raise ValueError("a change arrived before the Relation message of its table")
        kind = kinds[rows]
        tuple_pos = pos + 6  # kind, oid, then 'N' (insert), or 'K'/'O' (update, delete)
        width = len(relation.columns)
        old = (kind == ord("U")) & np.isin(buf[pos + 5], _OLD)
        updates = np.flatnonzero(old)
        before: list[pa.Array] = []
        if len(updates):  # the old key or row, then 'N' and the new one
            before, _, ends = self._columns(buf, tuple_pos[updates], width)
            tuple_pos[updates] = ends + 1
        codes = np.where(kind == ord("I"), 0, np.where(kind == ord("U"), 1, 2)).astype(np.int8)
        chunk = Chunk(
            relation,
            OPS[codes],
            final[which[rows]],
            seq[rows],
            xid[which[rows]],
            commit[which[rows]],
        )
        chunk.texts, chunk.unchanged, _ = self._columns(buf, tuple_pos, width)
        if len(updates):
            keyed = buf[pos[updates] + 5] == ord("K")
            chunk = self._moved_keys(before, keyed, updates, chunk)
        yield chunk

    def _moved_keys(
        self, before: list[pa.Array], keyed: Ints, updates: Ints, chunk: Chunk
    ) -> Chunk:
        """An update that changed the key (its old key tuple 'K', or its old row 'O' under
        REPLICA IDENTITY FULL with other key values) also deletes the old key: a delete of
        the old values (`before`, the texts of the `updates` rows' old tuples) goes right
        before it, with the same position."""
        relation = chunk.relation
        moved = keyed.copy()
        for name in self.key:
            if name not in relation.columns:
                continue
            index = relation.columns.index(name)
            new = chunk.texts[index].take(pa.array(updates))
            differs = pc.invert(pc.fill_null(pc.equal(before[index], new), False))
            moved |= np.asarray(differs)
        if not moved.any():
            return chunk
        rows = updates[moved]
        order = np.argsort(np.concatenate([np.arange(len(chunk)) * 2 + 1, rows * 2]))
        taken = pa.array(order)
        merged = Chunk(
            relation,
            np.concatenate([chunk.op, OPS[np.full(len(rows), 2)]])[order],
            np.concatenate([chunk.lsn, chunk.lsn[rows]])[order],
            np.concatenate([chunk.seq, chunk.seq[rows]])[order],
            np.concatenate([chunk.xid, chunk.xid[rows]])[order],
            np.concatenate([chunk.commit_us, chunk.commit_us[rows]])[order],
        )
        keep = pa.array(np.flatnonzero(moved))
        for index in range(len(relation.columns)):
            old_values = before[index].take(keep)
            merged.texts.append(pa.concat_arrays([chunk.texts[index], old_values]).take(taken))
            mask = chunk.unchanged[index]
            if mask is None:
                merged.unchanged.append(None)
            else:
                merged.unchanged.append(np.concatenate([mask, np.zeros(len(rows), bool)])[order])
        self.changes += len(rows)
        return merged

    @staticmethod
    def _columns(
        buf: Ints, pos: Ints, width: int
    ) -> tuple[list[pa.Array], list[Ints | None], Ints]:
        """The tuples starting at `pos` (at their column count): each column's text, where
        its value is an unchanged TOASTed one (None: nowhere), and where the tuples end."""
        texts: list[pa.Array] = []
        unsent: list[Ints | None] = []
        count = _be(buf, pos, 2)
        pos = pos + 2
        for column in range(width):
            live = column < count
            kind = buf[np.where(live, pos, 0)]
            text = live & (kind == _T)
            length = np.where(text, _be(buf, np.where(text, pos + 1, 0), 4), 0)
            offsets, data = _gather(buf, pos + 5, length)
            texts.append(_strings(text, offsets, data))
            unchanged = live & (kind == _U)
            unsent.append(unchanged if unchanged.any() else None)
            pos = np.where(text, pos + 5 + length, np.where(live, pos + 1, pos))
        return texts, unsent, pos

    def _relation(self, message: bytes) -> None:
        oid = int.from_bytes(message[1:5], "big")
        at = 5
        namespace, at = _cstring(message, at)
        name, at = _cstring(message, at)
        at += 1  # replica identity setting
        count = int.from_bytes(message[at : at + 2], "big")
        at += 2
        columns, types, key = [], [], []
        for _ in range(count):
            flags = message[at]
            column, at = _cstring(message, at + 1)
            types.append(int.from_bytes(message[at : at + 4], "big"))
            at += 8  # type oid, type modifier
            columns.append(column)
            if flags & 1:
                key.append(column)
        relation = Relation(
            oid, namespace or "pg_catalog", name, tuple(columns), tuple(types), tuple(key)
        )
        self.relations[oid] = relation
        if oid == self.wanted:
            self.redefined.append(relation)

    def _truncate(self, message: bytes) -> Chunk | None:
        count = int.from_bytes(message[1:5], "big")
        oids = [int.from_bytes(message[6 + 4 * i : 10 + 4 * i], "big") for i in range(count)]
        relation = self.relations.get(self.wanted)
        if self.wanted not in oids or relation is None:
            return None
        chunk = Chunk(
            relation,
            OPS[[3]],
            np.array([self.final_lsn]),
            np.array([self.seq]),
            np.array([self.xid]),
            np.array([self.commit_us]),
        )
        self.seq += 1
        self.changes += 1
        for _ in relation.columns:
            chunk.texts.append(pa.nulls(1, pa.string()))
            chunk.unchanged.append(None)
        return chunk


def _cstring(message: bytes, at: int) -> tuple[str, int]:
    end = message.index(b"\0", at)
    return message[at:end].decode(), end + 1
