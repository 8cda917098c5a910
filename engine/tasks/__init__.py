"""Task kinds: one module per kind (extract, sql, udf, validate, load) behind one protocol, and
the `KINDS` registry the planner, the checks, the dry run, lineage and the executor read
instead of branching on a task's kind.
"""
