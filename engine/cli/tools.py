"""`arrowline bench | schema | init`: tools beside the pipelines: the benchmark harness, the JSON
Schema of pipeline files, and a new SQL project to start from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.cli.common import err, fail

__all__ = ["COMMANDS"]


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """The benchmark harness (`python -m benchmarks`): run, list, report, compare.

    It lives in the source checkout, beside engine/, and is run from there."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").exists():
        fail(
            "the benchmark harness is not installed with the package",
            hint="run it from a source checkout: python -m benchmarks",
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.__main__ import main as bench_main

    sys.exit(bench_main(list(args), prog="arrowline bench"))


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to a file instead of standard output.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of pipeline files, for editors (yaml-language-server) and linters."""
    from engine.spec.model import pipeline_json_schema

    text = json.dumps(pipeline_json_schema(), indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {output}")


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(folder: Path) -> None:
    """Start a SQL project in FOLDER (default: here): seeds, models, a macro, a validation,
    a load into a DuckDB file and a daily schedule, ready to run. Nothing is overwritten."""
    from engine.api.scaffold import scaffold
    from engine.cli.common import errors, out

    with errors():
        written = scaffold(folder)
    for path in written:
        out.print(f"  wrote {path}")
    out.print(f"run it with: arrowline run {folder}")


COMMANDS = (bench, schema, init)
