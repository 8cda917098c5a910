"""`python -m benchmarks run [WORKLOAD ...] [--repeat 5] [--quick]`, `python -m benchmarks list`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import machine, run_interleaved, save
from benchmarks.workloads import NAMES, workload


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list workloads")
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
    args = parser.parse_args()
    if args.command == "list":
        for name in NAMES:
            print(f"{name:16} {(workload(name).__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = args.workloads or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(NAMES)}")
    repeat, warmup = (1, 0) if args.quick else (args.repeat, args.warmup)
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
        failed = failed or any(o.error and o.contender.startswith("arrowline") for o in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
