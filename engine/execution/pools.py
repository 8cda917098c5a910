"""Resource pools: named slots a task takes while it runs, shared by every run of the project.

    pools: {warehouse: 4, crm_api: 2}     # pipeline level: each pool's slots
    tasks:
      - id: big_refresh
        pool: warehouse                   # takes a slot of warehouse while it runs
        pool_slots: 2                     # (two, here)
      - id: contacts
        extract: {from: http, connection: crm_api, ...}   # a pool named like a connection:
                                                          # every task using it takes a slot

A task whose slots are all taken (by this run or any other: engine.state.slots) stays QUEUED,
its attempts untouched, and is said once in the log with who holds them; it asks again as soon
as a task of this run gives one back, and every `poll` seconds for slots other runs hold. The
attempt's RUNNING event then says how long it waited. A task needing slots of two pools takes
all or none, so two tasks can never each hold half of what the other needs.

Slots are held from the attempt's start to its end: a task waiting for a retry, or one that
failed, holds none. An ephemeral extract and the loads streaming from it run as one unit, so it
takes its loads' slots with its own before it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from engine.execution.waiting import DueQueue
from engine.state.slots import PoolSlot

if TYPE_CHECKING:
    from pathlib import Path

    from engine.planning.build import Plan, PlannedTask
    from engine.state.db import CatalogLocation

__all__ = ["PoolGate"]


class PoolGate:
    def __init__(
        self,
        plan: Plan,
        locks_dir: Path,
        location: CatalogLocation | None,
        waiting: DueQueue,
        clock: Callable[[], float],
        log: Any,
        *,
        poll: float = 0.5,
    ) -> None:
        self.plan = plan
        self.waiting = waiting
        """Shared with the breakers: a due task goes back to the ready queue and asks again."""
        self.clock = clock
        self.log = log
        self.poll = poll
        self.slots = {
            pool: [PoolSlot(locks_dir, location, pool, index) for index in range(size)]
            for pool, size in plan.pools.items()
        }
        self.held: dict[str, list[PoolSlot]] = {}
        self.waits: dict[str, tuple[float, str]] = {}
        """task id -> when it began waiting, for which pool."""
        self.notes: dict[str, str] = {}
        self.abandoned: dict[tuple[str, int], list[PoolSlot]] = {}
        """(task id, attempt) -> the slots of an attempt given up while its thread runs."""

    def needs(self, task: PlannedTask) -> dict[str, int]:
        """Pool -> how many of its slots the task takes."""
        found: dict[str, int] = {}
        if task.spec.pool is not None and task.spec.pool in self.slots:
            found[task.spec.pool] = task.spec.pool_slots
        if task.connection in self.slots:
            found[task.connection] = max(found.get(task.connection, 0), 1)
        return found

    def take(self, task_id: str, also: Iterable[str] = (), *, queue: bool = True) -> bool:
        """Take the slots of `task_id` (and of the tasks `also`, held under their own ids),
        all or none. Refused: False, and unless `queue` is False the task waits in `waiting`."""
        wanted = [tid for tid in (task_id, *also) if tid not in self.held]
        taken: dict[str, list[PoolSlot]] = {}
        try:
            for tid in wanted:
                for pool, count in self.needs(self.plan.task(tid)).items():
                    got = self._free(pool, count, tid, taken.setdefault(tid, []))
                    if got < count:
                        _give_back(taken)
                        if queue:
                            self._wait(task_id, pool, count)
                        return False
        except BaseException:  # a lock file or the catalog failed: keep none of them
            _give_back(taken)
            raise
        self.held.update(taken)
        if task_id in self.waits:
            began, pool = self.waits.pop(task_id)
            self.notes[task_id] = f" after waiting {self.clock() - began:.2f}s for pool {pool!r}"
            self.log.bind(task_id=task_id).info("took its slots{}", self.notes[task_id])
        return True

    def waited(self, task_id: str) -> str:
        """For the RUNNING event of a task that just took slots it had waited for."""
        return self.notes.pop(task_id, "")

    def release(self, task_id: str) -> None:
        """The task's attempt ended (or it was skipped, cancelled, reused): its slots go back,
        and the tasks of this run waiting for those pools ask again at once."""
        for slot in self.held.pop(task_id, []):
            slot.release()
            self.waiting.wake(f"pool:{slot.pool}")
        self.waits.pop(task_id, None)

    def abandon(self, task_id: str, attempt: int) -> None:
        """The attempt was given up while its thread still runs: its slots stay taken (that
        thread still uses what the pool guards) until `ended` says the thread returned."""
        if task_id in self.held:
            self.abandoned[task_id, attempt] = self.held.pop(task_id)
        self.waits.pop(task_id, None)

    def ended(self, task_id: str, attempt: int) -> None:
        """An abandoned attempt's thread returned: its slots go back."""
        self.held[f"{task_id}#{attempt}"] = self.abandoned.pop((task_id, attempt), [])
        self.release(f"{task_id}#{attempt}")

    def close(self) -> None:
        """The run is over: every slot goes back, an abandoned thread's too (nothing of the
        run is left to tell when it returns; a new process holds none of its locks)."""
        for task_id in list(self.held):
            self.release(task_id)
        for slots in self.abandoned.values():
            for slot in slots:
                slot.release()
        self.abandoned.clear()

    def _free(self, pool: str, count: int, task_id: str, into: list[PoolSlot]) -> int:
        """Take up to `count` free slots of `pool` into `into` (as soon as each is taken, so
        that a failure part way leaves none unaccounted for); how many it took."""
        holder = {"pipeline": self.plan.pipeline, "run_id": self.plan.run_id, "task_id": task_id}
        got = 0
        for slot in self.slots[pool]:
            if got == count:
                break
            if not slot.taken and slot.try_take(holder):
                into.append(slot)
                got += 1
        return got

    def _wait(self, task_id: str, pool: str, count: int) -> None:
        self.waiting.add(task_id, self.poll, f"pool:{pool}")
        if task_id in self.waits:
            return  # said once per wait
        self.waits[task_id] = (self.clock(), pool)
        mine = [tid for tid, slots in self.held.items() if any(s.pool == pool for s in slots)]
        others = [who for slot in self.slots[pool] if not slot.taken and (who := slot.holder())]
        given_up = [
            f"task {tid}'s attempt {number}, given up but its thread still running"
            for (tid, number), slots in self.abandoned.items()
            if any(s.pool == pool for s in slots)
        ]
        holders = [f"task {tid} of this run" for tid in mine] + given_up + others
        size = len(self.slots[pool])
        if count == 1:
            said = f"all {size} slots of pool {pool!r} are taken"
        else:  # some may be free, but not as many as it needs
            said = f"it needs {count} of the {size} slots of pool {pool!r}, not all of them free"
        self.log.bind(task_id=task_id).info(
            "queued: {}{}", said, f" ({'; '.join(holders)})" if holders else ""
        )


def _give_back(taken: dict[str, list[PoolSlot]]) -> None:
    for slots in taken.values():
        for slot in slots:
            slot.release()
    taken.clear()
