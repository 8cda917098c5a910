"""The benchmark harness.

    python -m benchmarks list
    python -m benchmarks run [WORKLOAD ...] [--repeat 5] [--rows N] [--quick] [--only NAMES]
    python -m benchmarks report RESULT.json [...]
    python -m benchmarks compare OLD.json NEW.json [--threshold 0.10]

`arrowline bench ...` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import machine, run_interleaved, save
from benchmarks.workloads import NAMES, workload


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list workloads")
    report = commands.add_parser("report", help="Markdown table and PNG chart of result files")
    report.add_argument("results", nargs="+", type=Path)
    compare = commands.add_parser("compare", help="ratios NEW/OLD; exit 1 on a regression")
    compare.add_argument("old", type=Path)
    compare.add_argument("new", type=Path)
    compare.add_argument(
        "--threshold", type=float, default=0.10, help="allowed slowdown (default 0.10 = 10%%)"
    )
    run = commands.add_parser("run", help="run workloads and write results")
    run.add_argument("workloads", nargs="*", help=f"default: all of {', '.join(NAMES)}")
    run.add_argument("--repeat", type=int, default=5, help="measured runs per contender")
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--rows", type=int, default=None, help="base row count where it applies")
    run.add_argument("--quick", action="store_true", help="small data, one run: proves it works")
    run.add_argument(
        "--only",
        default=None,
        help="comma-separated contender names (or prefixes, e.g. arrowline/) to run",
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args.results)
    if args.command == "compare":
        return _compare(args.old, args.new, args.threshold)
    if args.command == "list":
        for name in NAMES:
            print(f"{name:16} {(workload(name).__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = args.workloads or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(NAMES)}")
    repeat, warmup = (1, 0) if args.quick else (args.repeat, args.warmup)
    _compile_bytecode()
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, "
        f"load {info['load_average_at_start']}"
    )
    failed = False
    for name in names:
        module = workload(name)
        print(f"\n== {name} (repeat {repeat}, warm-up {warmup})")
        contenders = module.contenders(args)
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            contenders = [c for c in contenders if any(c.name.startswith(w) for w in wanted)]
            if not contenders:
                parser.error(f"--only {args.only!r} matches no contender of {name}")
        params = module.prepare(args)
        outcomes = run_interleaved(contenders, repeat, Path.cwd(), warmup)
        summary, table = module.summarize(outcomes, params)
        path = save(
            name,
            outcomes,
            params | {"repeat": repeat, "quick": args.quick, "only": args.only},
            summary,
        )
        print(table)
        print(f"results: {path}")
        _report([path])
        failed = failed or any(
            o.error and not o.unsupported and o.contender.startswith("arrowline") for o in outcomes
        )
    return 1 if failed else 0


def _compile_bytecode() -> None:
    """Compile arrowline's own modules, as installing its wheel does. A checkout has no
    bytecode, and with PYTHONDONTWRITEBYTECODE set (as on the shared machines) every arrowline
    process compiled its ~170 modules from source, about 0.3 s a process, while the peers'
    installed packages came compiled: a cost no user pays, counted against arrowline alone."""
    import compileall
    import re

    root = Path(__file__).resolve().parents[1]
    data = re.compile(r"[/\\]benchmarks[/\\](\.data|results)[/\\]")
    for package in ("engine", "connectors", "transforms", "lineage", "benchmarks"):
        # not the workloads' projects under benchmarks/.data: their files are the data a
        # contender works on (a `udfs.py` compiled there by a run beside it is a new file)
        compileall.compile_dir(root / package, quiet=1, rx=data)


def _report(paths: list[Path]) -> int:
    from benchmarks.report import write_report

    for path in paths:
        table, chart = write_report(path)
        print(f"table: {table}")
        print(f"chart: {chart}" if chart else "chart: not drawn (pip install 'arrowline[bench]')")
    return 0


def _compare(old_path: Path, new_path: Path, threshold: float) -> int:
    from benchmarks.report import compare, load, lower_is_better, regressions

    try:
        rows = compare(load(old_path), load(new_path))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("error: the two files share no contender with measurements", file=sys.stderr)
        return 2
    width = max(len(r.contender) for r in rows)
    print(f"{'contender':<{width}}  {'metric':<14} {'old':>12} {'new':>12}  new/old")
    for row in rows:
        arrow = "lower is better" if lower_is_better(row.metric) else "higher is better"
        print(
            f"{row.contender:<{width}}  {row.metric:<14} {row.old:>12.4g} {row.new:>12.4g}  "
            f"{row.ratio:6.3f}  ({arrow})"
        )
    worse = regressions(rows, threshold)
    for row in worse:
        print(
            f"REGRESSION: {row.contender} {row.metric} is {row.worse_by():.0%} worse "
            f"(threshold {threshold:.0%})"
        )
    if not worse:
        print(f"no arrowline measurement got more than {threshold:.0%} worse")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
