"""The web monitor (`arrowline ui`): pages rendered on the server from the same `Project` the CLI
calls, pictures from engine.views, access rules in engine.ui.guard. Needs the `ui` extra."""
