"""Everything kept under a project's state: the catalog (runs, task runs, transitions,
watermarks, dead letters, lineage, schedules) in SQLite or PostgreSQL, its schema and
migrations, the workspace of task outputs, and the locks that keep two runs of one pipeline apart.

This package depends only on `engine.core`; planners read it, the executor and the scheduler
write it, and no SQL against the catalog is written anywhere else
(tests/engine/state/test_state_sql.py holds both). Its modules, by concern:

    folders       the names under .arrowline/; layout: one project's folders and catalog
    db            where the catalog lives and the two databases that can hold it
    schema        the tables, per entity; migrations: creating and upgrading a catalog
    rows, values  what the catalog answers with, and how it stores times, notes, parameters
    runs, transitions, watermarks, dead_letters, lineage, outputs, schedules
                  one store per entity, holding its statements
    reports       aggregates for metrics
    reader        CatalogReader, the read side; catalog: Catalog, the write side (thin facades)
    copy          a whole catalog into another
    workspace     task outputs; retention: which of them stay
    locks, advisory  one run of a pipeline at a time (a file lock, or PostgreSQL's)

Import from the modules; this package exports nothing itself, so that importing one part (the
locks, for a CLI probe) does not load the others.
"""
