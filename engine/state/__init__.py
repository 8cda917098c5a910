"""Everything kept under a project's state: the catalog (runs, task runs, transitions,
watermarks, dead letters, lineage, schedules) in SQLite or PostgreSQL, its schema and
migrations, the workspace of task outputs, and the locks that keep two runs of one pipeline apart.

This package depends only on `engine.core`; planners read it, the executor and the scheduler write
it, and no SQL against the catalog is written anywhere else.
"""
