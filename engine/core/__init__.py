"""What every layer shares: errors and problems, task and run states, durations, secrets,
fault points, the task graph, SQL quoting, the Arrow type grammar, watermarks and the Arrow
hand-off between tasks.

`engine.core` imports nothing else of arrowline, so connectors, transforms and lineage build on
it without reaching into the engine (the import contracts in `pyproject.toml` hold that).
"""
