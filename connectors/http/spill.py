"""Pages as Arrow on disk: spilled page by page with the schema each suggests, unified as
they come, read back in the final schema; and the checkpoint that keeps them, with the
pagination's progress, for a resumed run."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from loguru import logger

from connectors.base import ConnectorContext
from connectors.http.config import HttpSource
from connectors.http.pages import Page
from connectors.http.parse import records_table
from engine.core.errors import DataError
from engine.core.files import remove_tree
from engine.core.types import parse_type
from engine.core.watermark import RowsAfter

__all__ = ["Checkpoint", "Child", "Spill", "read_page_file", "write_page_file"]

Child = tuple[int, str, int]
"""A fan-out's child: its parent page's number and digest, and the parent record's index."""


class Spill:
    """Pages as Arrow, spilled to an IPC stream file page by page with the schema each one
    suggests, unified as they come; read back in the final schema."""

    def __init__(
        self, config: HttpSource, folder: Path, after: RowsAfter | None, task_id: str = ""
    ) -> None:
        self.task_id = task_id
        self.after = after
        """Records at or before the committed watermark, which the API sent again, are
        dropped when the comparison can be made exactly (not with a lookback)."""
        self.declared = {name: parse_type(kind) for name, kind in (config.columns or {}).items()}
        self.folder = folder
        self.schema: pa.Schema | None = None
        self.files: list[tuple[Path, int, str]] = []
        """Each page's spill file, its number and URL (for messages)."""
        self.rows = 0
        self.widened: list[dict[str, Any]] = []
        """Each field a later page widened (its task details say so, as the log does)."""

    def add(self, page: Page, shown: str, carried: dict[str, Any] | None = None) -> None:
        """One page's records; `carried`: values every row of it gets (a parent's fields)."""
        if page.table is not None:
            self.add_table(page.number, page.table, shown, carried)
        else:
            self.add_records(page.number, page.records, shown, carried)

    def add_records(
        self, number: int, records: list[Any], shown: str, carried: dict[str, Any] | None = None
    ) -> None:
        """The records of page `number` (counted from 0) of `shown`."""
        if records:
            self.add_table(number, records_table(records, number, shown), shown, carried)

    def add_table(
        self, number: int, table: pa.Table, shown: str, carried: dict[str, Any] | None = None
    ) -> None:
        """Page `number`'s records, made a table (`connectors.http.parse`)."""
        if not table.num_rows:
            return
        for name, value in (carried or {}).items():
            table = table.append_column(name, pa.array([value] * table.num_rows))
        table = self._declared(table, number, shown)
        if self.after is not None and self.after.refusal(table.schema) is None:
            table = table.filter(self.after.mask(table))  # what the watermark had committed
        self._unify(table.schema, number, shown)
        path = self.folder / f"page-{len(self.files):06d}.arrow"
        write_page_file(path, table)
        self.files.append((path, number, shown))
        self.rows += table.num_rows

    def _declared(self, table: pa.Table, number: int, shown: str) -> pa.Table:
        for name, kind in self.declared.items():
            if name not in table.column_names:
                continue
            index = table.column_names.index(name)
            try:
                column = table.column(index).cast(kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise DataError(
                    f"page {number + 1} of {shown}: field {name!r} does not fit the "
                    f"declared {kind}: {exc}"
                ) from None
            table = table.set_column(index, name, column)
        return table

    def _unify(self, schema: pa.Schema, number: int, shown: str) -> None:
        if self.schema is None:
            self.schema = schema
            return
        try:
            merged = pa.unify_schemas([self.schema, schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            field = _clash(self.schema, schema)
            raise DataError(
                f"page {number + 1} of {shown}: field {field!r} holds "
                f"{schema.field(field).type if field else '?'} where earlier pages held "
                f"{self.schema.field(field).type if field else '?'}: {exc}",
                hint="declare the field's type in columns",
            ) from None
        for field in merged:
            before = self.schema.field(field.name) if field.name in self.schema.names else None
            if before is not None and before.type != field.type and before.type != pa.null():
                logger.bind(task_id=self.task_id).info(
                    "field {!r} widened from {} to {} at page {}",
                    field.name,
                    before.type,
                    field.type,
                    number + 1,
                )
                self.widened.append(
                    {
                        "field": field.name,
                        "from": str(before.type),
                        "to": str(field.type),
                        "page": number + 1,
                    }
                )
        self.schema = merged

    def batches(self) -> Iterator[pa.RecordBatch]:
        assert self.schema is not None
        for path, number, shown in self.files:
            table = read_page_file(path)
            try:
                table = _conform(table, self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"page {number + 1} of {shown}: its values do not fit the type later pages "
                    f"gave their field: {exc}",
                    hint="declare the field's type in columns",
                ) from None
            yield from table.to_batches()  # the folder goes once all are read


def write_page_file(path: Path, table: pa.Table) -> None:
    """A page's records on disk (spilled, or kept as fetched) in the Arrow file format: its
    footer comes last, so a file cut short (a power cut: these files are not synced) does not
    read at all, where a stream cut between two messages reads as fewer rows."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)


_FILE_MAGIC = b"ARROW1"


def read_page_file(path: Path) -> pa.Table:
    """A page file whole; a checkpoint from before the file format holds IPC streams."""
    with pa.memory_map(str(path)) as source:
        if source.read(len(_FILE_MAGIC)) == _FILE_MAGIC:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()


def _readable(path: Path) -> bool:
    try:
        read_page_file(path)
    except (OSError, pa.ArrowInvalid):
        return False
    return True


def _clash(before: pa.Schema, after: pa.Schema) -> str | None:
    for field in after:
        if field.name in before.names:
            try:
                pa.unify_schemas(
                    [pa.schema([before.field(field.name)]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return str(field.name)
    return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: missing fields as nulls, every column cast to its final type."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


class Checkpoint:
    """A resource's progress in a folder that outlives the attempt: its spilled pages and a
    journal, `progress.jsonl`. A page is journaled twice. Once fetched, its records are written
    as JSON (`raw-<n>.json`: the records only, not the rest of the body, where an API may echo
    the caller's key; `raw-<n>.arrow` in the Arrow file format when the page was converted as
    it was fetched) and a line names the file with where the pages then stand (the next
    request, counts, style), before the next request is sent; once converted and spilled, a
    line names its Arrow file, the row count and the schema when it changed, and the raw file
    goes. In a fan-out, a line says when a parent's children are all kept: the parent page
    being worked on and how many of its records are done. A resume converts the pages fetched
    but not kept and goes on from the last page fetched, so a kill costs only the request in
    flight. Lines are appended, so keeping a page costs the same at page 10,000 as at page 1;
    a line cut short by a kill is ignored. A resumed run of the same config and start goes
    on; anything else starts afresh."""

    def __init__(self, folder: Path | None, config: HttpSource, ctx: ConnectorContext) -> None:
        assert folder is not None
        self.folder = folder
        self.file = folder / "progress.jsonl"
        start = ctx.watermark.to_json() if ctx.watermark is not None else None
        identity = config.model_dump_json(by_alias=True) + (start or "")
        self.identity = hashlib.sha256(identity.encode()).hexdigest()
        self._lock = threading.Lock()
        """Pages are journaled as fetched on one thread and as kept on another."""
        self._journaled = 0
        """How many of the spill's files the journal names."""
        self._schema: pa.Schema | None = None
        self._seen: set[str] = set()
        """The requests the journal names as seen (each line names only the new ones)."""
        self.prefetched: dict[Child, list[dict[str, Any]]] = {}
        """After `restore`, in a fan-out: the children's pages fetched but not kept."""

    def restore(self, spill: Spill) -> dict[str, Any] | None:
        """The last saved progress, its pages put back into `spill` (the bodies fetched but
        not converted, converted now); None to start afresh."""
        import base64

        lines = _journal(self.file)
        if not lines or lines[0].get("identity") != self.identity or len(lines) < 2:
            remove_tree(self.folder)
            self.folder.mkdir(parents=True)
            return None
        files: list[tuple[str, int, str]] = []
        schema = b""
        seen: set[str] = set()
        kept: dict[str, Any] | None = None
        fetched: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        converted: set[str] = set()
        for position, line in enumerate(lines[1:], start=1):
            if "child" in line:
                children.append(line)
                continue
            if "fetched" in line:
                fetched.append(line)
                continue
            if not all(_readable(self.folder / name) for name, _, _ in line["files"]):
                # a page file cut short or lost (a power cut): the journal goes back to the
                # line before, and the pages from there are fetched again
                self._rewrite(lines[:position])
                break
            seen.update(_requests(line))
            files += [(name, number, shown) for name, number, shown in line["files"]]
            schema = base64.b64decode(line["schema"]) if "schema" in line else schema
            converted.update(line.get("raw", ()))
            kept = line
        names = {name for name, _, _ in files}
        for leftover in self.folder.glob("page-*.arrow"):  # spilled, not recorded: again
            if leftover.name not in names:
                leftover.unlink()
        spill.files = [(self.folder / name, number, shown) for name, number, shown in files]
        spill.rows = kept["rows"] if kept is not None else 0
        spill.schema = pa.ipc.read_schema(pa.py_buffer(schema)) if schema else None
        self._journaled, self._schema, self._seen = len(spill.files), spill.schema, seen
        progress: dict[str, Any] | None = kept["progress"] if kept is not None else None
        # The bodies fetched but not converted, taken in page order from the page after the
        # last one kept; the requests seen are those up to the page the resume goes on from
        # (a line past it names a request the resume is yet to send).
        following = progress["number"] if progress is not None else 0
        seen.update(*(_requests(line) for line in fetched if line["number"] < following))
        for line in fetched:
            if line["fetched"] in converted or line["number"] < following:
                continue  # kept, or left by an earlier attempt for a page kept since
            if line["number"] > following or not self._convert(spill, line, seen):
                break
            progress, following = line["progress"], following + 1
        self.prefetched = self._prefetched([c for c in children if c["fetched"] not in converted])
        wanted = {line["fetched"] for lines in self.prefetched.values() for line in lines}
        for leftover in self.folder.glob("raw-*.*"):
            if leftover.name not in wanted:  # not journaled, or after a body lost: again
                leftover.unlink()
        if progress is None and self.prefetched:  # a fan-out killed before a parent was done
            progress = {"parent": None, "number": 0, "done": 0}
        if progress is None:
            self.reset(spill)
            return None
        for where in _paginations(progress):  # the requests seen: only ever more
            where.pop("seen_new", None)
            where["seen"] = sorted(seen)
        what = "parent page" if "parent" in progress else "page"
        logger.bind(task_id=spill.task_id).info(
            "resuming after {} {} ({} records kept)", what, progress["number"], spill.rows
        )
        return progress

    def _prefetched(self, lines: list[dict[str, Any]]) -> dict[Child, list[dict[str, Any]]]:
        """The children's pages fetched but not kept, by child, each child's in page order and
        only as far as its bodies are on disk whole."""
        found: dict[Child, list[dict[str, Any]]] = {}
        for line in lines:
            found.setdefault((line["of"], line["digest"], line["child"]), []).append(line)
        for key, pages in list(found.items()):
            whole = []
            for number, line in enumerate(sorted(pages, key=lambda line: line["number"])):
                if line["number"] != number or not self._whole(line["fetched"]):
                    break
                whole.append(line)
            if whole:
                found[key] = whole
            else:
                del found[key]
        return found

    def _whole(self, name: str) -> bool:
        try:
            orjson.loads((self.folder / name).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False
        return True

    def drop(self, names: Sequence[str]) -> None:
        """Forget fetched bodies: a page whose conversion failed is fetched again by the next
        attempt, not converted from the same body (the API may have answered badly once)."""
        for name in names:
            (self.folder / name).unlink(missing_ok=True)

    def replayed(self, line: dict[str, Any]) -> list[Any]:
        """The records of a page a fetched line names, from its file."""
        records: list[Any] = orjson.loads((self.folder / line["fetched"]).read_bytes())
        return records

    def _convert(self, spill: Spill, line: dict[str, Any], seen: set[str]) -> bool:
        """Spill the body a line says was fetched, and journal it kept; False when the body
        is not on disk whole (the page is fetched again)."""
        name, number, shown = line["fetched"], line["number"], line["shown"]
        try:
            if name.endswith(".arrow"):
                table = read_page_file(self.folder / name)
            else:
                table = None
                records = orjson.loads((self.folder / name).read_bytes())
        except (OSError, orjson.JSONDecodeError, pa.ArrowInvalid):
            return False
        seen.update(_requests(line))
        if table is not None:
            spill.add_table(number, table, shown)
        else:
            spill.add_records(number, records, shown)
        self.save(spill, line["progress"], raw=[name])
        return True

    def fetched(self, page: Page, shown: str, child: Child | None = None) -> str:
        """Keep `page`'s records, and journal them with where the pages then stand,
        before it is converted: a kill then costs only the request in flight. Returns the
        body's file name, for `save` once the page is kept. (Names are never reused: a line
        left by an earlier attempt names no file of a later one.)

        `child`: the page is one of a fan-out's child's (the parent page's number and digest,
        the parent record's index). Its line keeps the child's own progress without the
        requests it saw: a resumed child checks for a repeated cursor from there on."""
        import uuid

        assert page.progress is not None
        name = f"raw-{page.number:06d}-{uuid.uuid4().hex[:12]}"
        if page.table is not None:  # converted already: its table, as an Arrow file
            name += ".arrow"
            write_page_file(self.folder / name, page.table)
        else:
            name += ".json"
            (self.folder / name).write_bytes(orjson.dumps(page.records))
        line: dict[str, Any] = {"fetched": name, "number": page.number, "shown": shown}
        if child is not None:
            of, digest, index = child
            progress = {**page.progress, "seen": []}
            line |= {"child": index, "of": of, "digest": digest, "child_progress": progress}
            with self._lock:
                self._append(line)
            return name
        with self._lock:
            self._append({**line, "progress": self._thin(page.progress)})
        return name

    def save(self, spill: Spill, progress: dict[str, Any], *, raw: Sequence[str] = ()) -> None:
        """Journal the pages spilled since the line before as kept; `raw`: the fetched bodies
        they were converted from, which then go."""
        import base64

        with self._lock:
            line: dict[str, Any] = {
                "files": [(p.name, n, shown) for p, n, shown in spill.files[self._journaled :]],
                "rows": spill.rows,
                "progress": self._thin(progress),
            }
            if spill.schema is not None and spill.schema != self._schema:
                line["schema"] = base64.b64encode(spill.schema.serialize().to_pybytes()).decode()
                self._schema = spill.schema
            if raw:
                line["raw"] = list(raw)
            self._append(line)
            self._journaled = len(spill.files)
        for name in raw:
            (self.folder / name).unlink(missing_ok=True)

    def _rewrite(self, lines: list[dict[str, Any]]) -> None:
        """The journal as `lines`, replaced at once."""
        draft = self.file.with_suffix(".draft")
        draft.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        draft.replace(self.file)

    def _append(self, line: dict[str, Any]) -> None:
        head = b""
        if not self.file.exists():
            head = orjson.dumps({"identity": self.identity}) + b"\n"
        with self.file.open("ab") as journal:  # in the kernel's hands: a kill -9 cannot lose it
            journal.write(head + orjson.dumps(line) + b"\n")

    def _thin(self, progress: dict[str, Any]) -> dict[str, Any]:
        """`progress` naming only the requests seen since the line before: written whole in
        every line, the set would make the journal quadratic in pages again."""

        def thin(where: dict[str, Any]) -> dict[str, Any]:
            if "seen" not in where:
                return where
            new = [key for key in where["seen"] if key not in self._seen]
            self._seen.update(new)
            return {**{k: v for k, v in where.items() if k != "seen"}, "seen_new": new}

        progress = thin(progress)
        if isinstance(progress.get("parent"), dict):  # a fan-out: its parent's pages
            progress = {**progress, "parent": thin(progress["parent"])}
        return progress

    def reset(self, spill: Spill) -> None:
        """Forget every page: the folder emptied, the spill and the journal start afresh."""
        remove_tree(self.folder)
        self.folder.mkdir(parents=True)
        spill.files, spill.rows, spill.schema = [], 0, None
        self._journaled, self._schema, self._seen = 0, None, set()
        self.prefetched = {}

    def remove(self) -> None:
        remove_tree(self.folder)


def _requests(line: dict[str, Any]) -> set[str]:
    """The requests a journal line names as seen (its pagination's, or its parent's)."""
    found: set[str] = set()
    for where in _paginations(line["progress"]):
        found.update(where.get("seen", ()), where.get("seen_new", ()))
    return found


def _paginations(progress: dict[str, Any]) -> list[dict[str, Any]]:
    """Where a line's progress keeps a pagination's state: itself, or a fan-out's parent."""
    parent = progress.get("parent")
    return [parent] if isinstance(parent, dict) else [] if "parent" in progress else [progress]


def _journal(path: Path) -> list[dict[str, Any]]:
    """The journal's whole lines; [] when unreadable. A line cut short by a kill is dropped
    and cut off the file too: the resumed run appends after it, and a line glued to the
    fragment would be unreadable, and every line after it lost at the next resume."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    lines, whole = [], 0
    for text in raw.split(b"\n")[:-1]:  # after the last newline: nothing, or a cut line
        try:
            lines.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            break
        whole += len(text) + 1
    if whole < len(raw):
        with path.open("r+b") as journal:
            journal.truncate(whole)
    return lines
