"""The application: one `Project` that the CLI, notebooks and the scheduler's HTTP API all call,
the `Pipeline` builder for Python definitions, and typed run options.
"""
