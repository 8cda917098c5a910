"""Where an incremental extract starts, and when its watermark moves.

The truth lives next to the data. A transactional sink (PostgreSQL, DuckDB) commits the
watermark of the rows it loaded in the same transaction as the rows; the catalog keeps a mirror
(and the audit trail). A file sink has no transaction, so the catalog holds its watermark,
advanced only after the files are published.

An extract starts from the least advanced watermark among all loads downstream of it, so no
sink misses rows. What each sink held then is kept with the extract's output (its task
details, which a resume restores), and an `append` load that was ahead (another load failed,
holding the extract back) is sent only the rows past its own (`rows_after`), so it stores
nothing twice. Other modes, a `lookback` (re-reading is its point), text cursors (the
database's collation decides their order) and loads through a transform are sent the rows
again, which merge keys make harmless. A watermark a load commits never moves back past what
its sink held. An extract that no load consumes keeps its watermark in the catalog, advanced
when it succeeds. When a sink's value differs from the catalog's (the process died after the
sink committed and before the mirror was written), the sink wins and the catalog is repaired,
with an audit row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from loguru import logger

from connectors.base import ConnectorContext
from connectors.registry import sink_state
from engine.core.watermark import RowsAfter, Watermark, WatermarkUpdate
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import Catalog
from engine.tasks.base import TaskWatermarks

__all__ = ["NO_SINK", "WatermarkBroker"]

NO_SINK = ""
"""The catalog's sink id for an extract that no load consumes."""


class WatermarkBroker:
    def __init__(self, plan: Plan, catalog: Catalog, connections: Mapping[str, Any]) -> None:
        self.plan = plan
        self.catalog = catalog
        self.connections = connections
        self._new: dict[str, Watermark] = {}
        self._held: dict[str, dict[str, Watermark | None]] = {}
        """extract -> sink -> the watermark the sink held when the extract started."""
        self._committed: dict[str, dict[str, Watermark]] = {}
        """extract -> sink -> the watermark its load committed in this run."""
        self._groups: dict[tuple[str, ...], PlannedTask] = {}
        """Extracts sharing what they release -> one of them that ran in this run."""
        self._repairs: list[tuple[str, str, Watermark | None, str | None]] = []
        """(task, sink, its value, the run that committed it): mirrors to repair."""
        self._lock = threading.Lock()

    def _context(self, sink_id: str) -> ConnectorContext:
        return ConnectorContext(
            base_dir=self.plan.base_dir,
            pipeline=self.plan.pipeline,
            run_id=self.plan.run_id,
            task_id=sink_id,
            connections=self.connections,
        )

    def _mirror(self, task_id: str, sink_id: str) -> Watermark | None:
        return self._mirror_row(task_id, sink_id)[0]

    def _mirror_row(self, task_id: str, sink_id: str) -> tuple[Watermark | None, str | None]:
        """The catalog's value for a sink, and the run that wrote it."""
        rows = [
            r for r in self.catalog.watermarks(self.plan.pipeline, task_id) if r.sink_id == sink_id
        ]
        return (Watermark.from_json(rows[0].value), rows[0].run_id) if rows else (None, None)

    def _before_this_run(self, task_id: str, sink_id: str) -> Watermark | None:
        """What a sink held before this run first wrote to it: the old value of this run's
        first audited change (None when none is audited yet: read everything)."""
        for row in self.catalog.watermark_audit(self.plan.pipeline, task_id):
            if row.sink_id == sink_id and row.run_id == self.plan.run_id:
                return Watermark.from_json(row.old_value) if row.old_value else None
        return None

    def start(self, task: PlannedTask) -> Watermark | None:
        """The watermark an incremental extract reads from (None: read everything).

        A sink's value written by this very run (a resume, re-running the extract) is taken
        as it was before the run: the run's load of it runs again and replaces what it wrote
        (a file sink's parts are named by the run), so it needs those rows again."""
        self._joined(task)
        if self.plan.full_refresh:
            return None
        if not task.watermark_sinks:
            return self._mirror(task.id, NO_SINK)
        held: dict[str, Watermark | None] = {}
        for sink_id, config in task.watermark_sinks:
            state = sink_state(config)
            if state is None:
                value, writer = self._mirror_row(task.id, sink_id)
            else:
                stored = state.read(config, self._context(sink_id)).get(task.id)
                value, writer = stored if stored else (None, None)
                if value != self._mirror(task.id, sink_id):  # the dispatcher writes the catalog
                    with self._lock:
                        self._repairs.append((task.id, sink_id, value, writer))
            if writer is not None and writer == self.plan.run_id:
                value = self._before_this_run(task.id, sink_id)
            held[sink_id] = value
        with self._lock:
            self._held[task.id] = held
        return Watermark.least(list(held.values()))

    def saved(self, task: PlannedTask, watermark: Watermark | None) -> dict[str, Any]:
        """What an incremental extract's task details keep for a resume: the watermark it
        read up to, and what each sink held when it started."""
        details: dict[str, Any] = {}
        if watermark is not None:
            details["watermark"] = watermark.to_json()
        with self._lock:
            held = self._held.get(task.id)
        if held:
            details["sinks_held"] = {s: w.to_json() if w else None for s, w in held.items()}
        return details

    def repair(self) -> None:
        """Make the catalog's mirror agree with what sinks were found to hold (the process died
        after a sink committed and before the mirror was written): the sink wins, audited.
        Called by the dispatcher, which owns the catalog's writes."""
        with self._lock:
            repairs, self._repairs = self._repairs, []
        for task_id, sink_id, value, run_id in repairs:
            self.catalog.set_watermark(
                self.plan.pipeline,
                task_id,
                sink_id,
                value.to_json() if value else None,
                action="repair",
                run_id=run_id,
            )

    def reused(self, task: PlannedTask) -> None:
        """A run reuses an incremental extract's output (a resume, a selection): its loads
        still to run commit the watermark it had read up to then."""
        assert task.reuse_run is not None
        row = self.catalog.task_run(task.reuse_run, task.id)
        details = (row.details or {}) if row else {}
        saved = details.get("watermark")
        if saved:
            with self._lock:
                self._new[task.id] = Watermark.from_json(saved)
        held: dict[str, Watermark | None] = {}
        for sink_id, value in (details.get("sinks_held") or {}).items():
            now = self._mirror(task.id, sink_id)  # moved back since (state reset): that wins
            then = Watermark.from_json(value) if value else None
            held[sink_id] = None if then is None or now is None else _least(then, now)
        if held:
            with self._lock:
                self._held[task.id] = held

    def rows_after(self, load: PlannedTask, name: str) -> RowsAfter | None:
        """For an `append` load reading the incremental extract `name` directly whose sink
        held a watermark ahead of the one the extract read from: only the rows past its own
        are to be sent. None: every row is."""
        config = load.spec.load
        if config is None or getattr(config, "mode", None) != "append" or name not in self.plan:
            return None
        extract = self.plan.task(name)
        owner, source = extract.spec.connector, extract.spec.extract
        incremental = owner.incremental(source) if owner and source else None
        if incremental is None or incremental.lookback is not None:
            return None
        with self._lock:
            held = self._held.get(name)
        own = held.get(load.id) if held else None
        if held is None or own is None or own == Watermark.least(list(held.values())):
            return None
        return RowsAfter(incremental.cursor, incremental.key, own)

    def extracted(self, task: PlannedTask, watermark: Watermark | None) -> None:
        """An incremental extract succeeded with rows up to `watermark`."""
        if watermark is None:
            return
        with self._lock:
            self._new[task.id] = watermark
        if not task.watermark_sinks:
            self.catalog.set_watermark(
                self.plan.pipeline,
                task.id,
                NO_SINK,
                watermark.to_json(),
                action="advance",
                run_id=self.plan.run_id,
            )
            self._release(task, watermark)

    def pending(self, load: PlannedTask) -> tuple[WatermarkUpdate, ...]:
        """New watermarks a load commits with its rows."""
        with self._lock:
            return tuple(
                WatermarkUpdate(task_id, self._ahead(task_id, load.id, self._new[task_id]))
                for task_id in load.commits_watermarks
                if task_id in self._new
            )

    def _ahead(self, task_id: str, sink_id: str, new: Watermark) -> Watermark:
        """`new`, or what the sink held if that was further (rows it had loaded are gone
        from the source): a load never moves its watermark back."""
        held = self._held.get(task_id, {}).get(sink_id)
        try:
            return held if held is not None and held > new else new
        except TypeError:  # the cursor's type changed: the new value stands
            return new

    def of(self, task: PlannedTask) -> TaskWatermarks:
        """What one attempt of `task` asks of the broker."""
        return TaskWatermarks(
            start=lambda: self.start(task),
            pending=lambda: self.pending(task),
            rows_after=lambda name: self.rows_after(task, name),
        )

    def loaded(self, load: PlannedTask, updates: tuple[WatermarkUpdate, ...]) -> None:
        """A load committed: mirror its watermarks (the only copy, for a file sink), and once
        every load of an extract committed, let its source release what it held for them."""
        for update in updates:
            self.catalog.set_watermark(
                self.plan.pipeline,
                update.task_id,
                load.id,
                update.watermark.to_json(),
                action="advance",
                run_id=self.plan.run_id,
            )
            with self._lock:
                committed = self._committed.setdefault(update.task_id, {})
                committed[load.id] = update.watermark
                values = dict(committed)
            extract = self.plan.task(update.task_id)
            if {sink for sink, _ in extract.watermark_sinks} <= set(values):
                least = Watermark.least(list(values.values()))
                if least is not None:
                    self._release(extract, least)

    def _group(self, extract: PlannedTask) -> tuple[str, ...]:
        owner, config = extract.spec.connector, extract.spec.extract
        return owner.release_group(config, extract.id) if owner and config else ()

    def _joined(self, extract: PlannedTask) -> None:
        """An extract sharing what it releases ran: its group settles at the run's end, even
        when none of it commits (what the source holds is then needed by none of them)."""
        group = self._group(extract)
        if group:
            with self._lock:
                self._groups.setdefault(group, extract)

    def _release(self, extract: PlannedTask, watermark: Watermark) -> None:
        if extract.spec.connector is None or extract.spec.extract is None:
            return
        if self._group(extract):  # its siblings may still read from before: once the run ended
            self._joined(extract)
            return
        self._free(extract, watermark)

    def settle(self) -> None:
        """The run's tasks have all ended: release what extracts sharing a source hold (one
        slot for several tables) up to the least position any of them has committed. Not
        sooner: a sibling still reading may have started from a snapshot before it."""
        with self._lock:
            groups, self._groups = self._groups, {}
        for group, extract in groups.items():
            known = [w for w in map(self._committed_by, group) if w is not None]
            # none committed and none has output to load: each reads from a snapshot of its
            # own next time, so all the source holds for them is free (no WAL kept for them)
            self._free(extract, min(known) if known else None)

    def _free(self, extract: PlannedTask, watermark: Watermark | None) -> None:
        owner, config = extract.spec.connector, extract.spec.extract
        assert owner is not None
        assert config is not None
        try:
            owner.release(config, watermark, self._context(extract.id))
        except Exception as exc:  # done at its next read (a shared slot: a run's end): no loss
            logger.warning(
                "{}: could not release what the source holds up to {}: {}",
                extract.id,
                watermark.describe() if watermark else "now",
                exc,
            )

    def _committed_by(self, task_id: str) -> Watermark | None:
        """The least position the extract `task_id` may still need its source to hold: what
        each of its loads has committed (in this run or an earlier one) or, where one has
        not, the position of every output a resume may still load (this run's, and the
        kept outputs of earlier runs). None when it needs nothing: no load committed and no
        output is kept, so it reads from a snapshot of its own when it next runs."""
        output = None
        if task_id in self.plan and self.plan.task(task_id).watermark_sinks:
            sinks = [sink for sink, _ in self.plan.task(task_id).watermark_sinks]
            with self._lock:
                here = dict(self._committed.get(task_id, {}))
                output = self._new.get(task_id)
            values = [here[sink] if sink in here else self._mirror(task_id, sink) for sink in sinks]
        else:  # not in this run: what the catalog holds of it
            rows = self.catalog.watermarks(self.plan.pipeline, task_id)
            values = [Watermark.from_json(row.value) if row.value else None for row in rows]
        committed = [value for value in values if value is not None]
        if values and len(committed) == len(values):
            return Watermark.least(committed)
        loadable = [*committed, *self._kept(task_id), *([output] if output else [])]
        return Watermark.least(loadable) if loadable else None

    def _kept(self, task_id: str) -> list[Watermark]:
        """The positions the kept outputs of `task_id` read up to: a resume loads them."""
        kept = self.catalog.kept_outputs(self.plan.pipeline, task_id)
        found = [(row.details or {}).get("watermark") for row, _ in kept]
        return [Watermark.from_json(saved) for saved in found if saved]


def _least(a: Watermark, b: Watermark) -> Watermark:
    try:
        return min(a, b)
    except TypeError:  # the cursor's type changed: the newer value stands
        return b
