"""HTTP API -> one Parquet file: 1,000,000 records (a dozen fields, some nested) in pages of
1,000, served by a local API in its own process with every page encoded ahead, so the server is
not the bottleneck. Each contender is a whole process, timed from outside (`wait4`):

    arrowline           `arrowline run p.yaml`: extract from http (cursor pages) -> load to one
                        Parquet file
    httpx+pyarrow       a hand-written loop: httpx GET, `response.json()`,
                        `pa.Table.from_struct_array(pa.array(records))`, `ParquetWriter`
    dlt/rest_api        dlt's `rest_api` source into a filesystem destination as Parquet (dlt
                        splits nested lists into child tables; the checksum reads the root table)
    arrowline/parallel  the same pages by page number (`/paged` adds the page count to each
                        body), `parallel: 4`: four requests at once, read in order
    arrowline/limited   200 pages of 20 records from an endpoint that allows 50 requests/s
                        and answers 429 beyond, with `rate_limit: {requests: 50}`: reports
                        the 429s it received (goal: none) and the rate it kept (goal: >= 95%
                        of 50/s)

Checksum: rows and sum(id) of what was written, equal across the first three.

Child usage:
    python -m benchmarks.workloads.rest_extract serve --records N --port P
    python -m benchmarks.workloads.rest_extract measure CONTENDER --url URL --records N
    python -m benchmarks.workloads.rest_extract script {httpx,dlt} --url URL --out DIR

The /limited endpoint counts a sliding window: a request finding LIMIT others in the second
before it is answered 429 with Retry-After: 1.
"""

from __future__ import annotations

import argparse
import atexit
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.rusage import timed_process
from benchmarks.workloads._child import free_port

MODULE = "benchmarks.workloads.rest_extract"
PAGE = 1_000
LIMIT = 50
"""Requests per second the /limited endpoint allows."""
LIMITED_PAGES = 200
LIMITED_RECORDS = 20
"""Records per /limited page: few, so the rate, not parsing, is what bounds the run."""
NAMES = ("arrowline", "arrowline/parallel", "httpx+pyarrow", "dlt/rest_api", "arrowline/limited")
NEEDS = {"dlt/rest_api": "dlt"}
TARGETS = {
    "rows/s ≥ 3x dlt rest_api": ("dlt/rest_api", "rows_per_s", 3.0, "higher"),
    "peak RSS ≤ 0.5x dlt rest_api": ("dlt/rest_api", "process_rss_mb", 0.5, "lower"),
    "rows/s ≥ 0.9x httpx + pyarrow": ("httpx+pyarrow", "rows_per_s", 0.9, "higher"),
}


def record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "created_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        "status": ("paid", "shipped", "refunded", "open")[i % 4],
        "amount": round((i * 7919) % 100_000 / 100, 2),
        "qty": 1 + i % 9,
        "currency": ("EUR", "USD", "GBP")[i % 3],
        "flag": i % 5 == 0,
        "note": None if i % 3 else f"note {i}",
        "customer": {"id": i % 50_000, "name": f"customer {i % 50_000}", "country": "de"},
        "items": [
            {"sku": f"sku-{(i + k) % 997}", "qty": 1 + k, "price": 9.99 + k}
            for k in range(i % 3 + 1)
        ],
        "tags": ["a", "b"][: i % 3],
        "score": (i % 1000) / 10,
    }


# -- the server --------------------------------------------------------------------------------


def serve(records: int, port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl, urlsplit

    pages: list[bytes] = []
    for start in range(0, records, PAGE):
        following = start // PAGE + 1 if start + PAGE < records else None
        chunk = [record(i) for i in range(start + 1, min(start + PAGE, records) + 1)]
        pages.append(json.dumps({"data": chunk, "next_cursor": following}).encode())
    first = json.dumps([record(i) for i in range(1, LIMITED_RECORDS + 1)]).encode()
    stats = {"limited": 0, "refused": 0, "first": 0.0, "last": 0.0}
    lock = threading.Lock()
    window: list[float] = []
    """When the /limited requests of the last second were allowed."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            status, headers, body = 200, {}, b""
            if parts.path == "/orders":
                body = pages[int(query.get("cursor", 0))]
            elif parts.path == "/paged":  # the same page, saying how many there are
                body = b'{"pages": %d, ' % len(pages) + pages[int(query.get("cursor", 0))][1:]
            elif parts.path == "/limited":
                page = int(query.get("cursor", 0))
                now = time.monotonic()
                with lock:
                    while window and now - window[0] >= 1.0:
                        window.pop(0)
                    if len(window) >= LIMIT:  # LIMIT requests in the last second already
                        stats["refused"] += 1
                        status, headers = 429, {"retry-after": "1"}
                        body = b'{"message": "rate limit"}'
                    else:
                        window.append(now)
                        stats["limited"] += 1
                        stats["first"] = stats["first"] or now
                        stats["last"] = now
                        following = page + 1 if page + 1 < LIMITED_PAGES else None
                        tail = json.dumps(following).encode()
                        body = b'{"data": ' + first + b', "next_cursor": ' + tail + b"}"
            elif parts.path == "/stats":
                with lock:
                    body = json.dumps(stats).encode()
            elif parts.path == "/reset":
                with lock:
                    stats.update(limited=0, refused=0, first=0.0, last=0.0)
                    window.clear()
                body = b"{}"
            else:
                status, body = 404, b'{"message": "no such path"}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("READY", flush=True)
    server.serve_forever()


def start_server(records: int) -> str:
    """The API in its own process, until this one ends; its URL once it serves."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE, "serve", "--records", str(records), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    atexit.register(process.terminate)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "READY":
        raise RuntimeError("the benchmark API did not start")
    return f"http://127.0.0.1:{port}"


# -- the contenders ----------------------------------------------------------------------------


PAGINATE = {
    "cursor": "{type: cursor, cursor_path: next_cursor, cursor_param: cursor}",
    "parallel": "{type: page_number, page_param: cursor, start: 0, total_pages_path: pages, "
    "parallel: 4}",
}


def pipeline_yaml(
    url: str, out: Path, path: str, rate: bool, paginate: str = PAGINATE["cursor"]
) -> str:
    limit = f", rate_limit: {{requests: {LIMIT}, per: second}}" if rate else ""
    return textwrap.dedent(f"""\
        pipeline: bench_rest
        connections:
          api: {{kind: http, base_url: "{url}"{limit}}}
        tasks:
          - id: orders
            extract:
              from: http
              connection: api
              path: {path}
              data_path: data
              paginate: {paginate}
          - id: to_parquet
            load: {{input: orders, to: parquet, path: "{out}"}}
        """)


def _httpx(url: str, out: Path) -> None:
    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    cursor: Any = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while cursor is not None:
            body = client.get("/orders", params={"cursor": cursor}).raise_for_status().json()
            table = pa.Table.from_struct_array(pa.array(body["data"]))
            if writer is None:
                writer = pq.ParquetWriter(out / "orders.parquet", table.schema)
            writer.write_table(table.cast(writer.schema))
            cursor = body["next_cursor"]
    if writer is not None:
        writer.close()


def _dlt(url: str, out: Path) -> None:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": url,
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resources": [
                {"name": "orders", "endpoint": {"path": "orders", "data_selector": "data"}}
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_rest",
        destination=dlt.destinations.filesystem(bucket_url=str(out / "dlt")),
        dataset_name="api",
        pipelines_dir=str(out.parent / "pipelines"),
    )
    pipeline.run(source, loader_file_format="parquet")


def _read_back(folder: Path) -> tuple[int, int]:
    """Rows and sum(id) of the Parquet files of the orders (dlt's root table: its child tables,
    orders__items and orders__tags, and its bookkeeping are beside it)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dlt_root = folder / "dlt" / "api" / "orders"
    rows, total = 0, 0
    for path in sorted((dlt_root if dlt_root.exists() else folder).rglob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["id"]):
            rows += batch.num_rows
            total += pc.sum(batch.column("id")).as_py() or 0
    return rows, total


def _get(url: str) -> dict[str, Any]:
    import httpx

    result: dict[str, Any] = httpx.get(url, timeout=10).json()
    return result


def measure(name: str, url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        out = scratch / "out"
        out.mkdir()
        if name in ("httpx+pyarrow", "dlt/rest_api"):
            script = "httpx" if name.startswith("httpx") else "dlt"
            argv = [sys.executable, "-m", MODULE, "script", script, "--url", url, "--out", str(out)]
        else:
            limited, parallel = name == "arrowline/limited", name == "arrowline/parallel"
            pipeline = scratch / "p.yaml"
            path = "/limited" if limited else "/paged" if parallel else "/orders"
            paginate = PAGINATE["parallel" if parallel else "cursor"]
            text = pipeline_yaml(url, out / "orders.parquet", path, limited, paginate)
            pipeline.write_text(text)
            cli = str(Path(sys.executable).with_name("arrowline"))
            argv = [cli, "run", str(pipeline), "--project-dir", str(scratch), "--no-progress"]
            argv += ["--log-level", "warning"]
            if limited:
                _get(f"{url}/reset")
        elapsed, rss = timed_process(argv, scratch)
        rows, total = _read_back(out)
    result: dict[str, Any] = {
        "rows": rows,
        "process_s": elapsed,
        "process_rss_mb": rss,
        "rows_per_s": rows / elapsed,
    }
    if name == "arrowline/limited":
        stats = _get(f"{url}/stats")
        span = stats["last"] - stats["first"]
        result["refused_429"] = stats["refused"]
        result["kept_rate"] = (stats["limited"] - 1) / span if span > 0 else 0.0
        result["checksum"] = f"limited:{rows}"
    else:
        result["checksum"] = f"{rows}:{total}"
    return result


# -- the harness's side ------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    records = 20_000 if args.quick else (args.rows or 1_000_000)
    return {"rows": records, "url": start_server(records), "page": PAGE, "limit": LIMIT}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", MODULE, "measure")
    return [
        Contender(
            name,
            (*module, name, "--url", params["url"]),
            group="limited" if name.endswith("limited") else "rows",
        )
        for name in NAMES
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = {o.contender: o for o in outcomes if o.samples and not o.error}
    lines = [
        f"{params['rows']:,} records in pages of {params['page']:,} from a local API to one "
        "Parquet file; each tool's whole process; medians, min–max.",
        "",
        "| contender | process time | rows/s | peak RSS |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error or not o.samples:
            reason = (o.error or "no samples").splitlines()[-1][:120]
            lines.append(f"| {o.contender} | {reason} | | |")
            continue
        low, high = o.spread("process_s")
        lines.append(
            f"| {o.contender} | {o.median('process_s'):.2f} s ({low:.2f}–{high:.2f}) | "
            f"{o.median('rows_per_s'):,.0f} | {o.median('process_rss_mb'):.0f} MB |"
        )
    summary: dict[str, Any] = {
        name: {k: o.median(k) for k in ("process_s", "process_rss_mb", "rows_per_s")}
        for name, o in done.items()
    }
    goals: dict[str, Any] = {}
    lines += ["", "| target (arrowline) | met | figure |", "|---|---|---|"]
    for label, (peer, key, bound, way) in TARGETS.items():
        if "arrowline" not in done or peer not in done:
            lines.append(f"| {label} | n/a | a contender is missing |")
            continue
        ratio = done["arrowline"].median(key) / done[peer].median(key)
        met = ratio >= bound if way == "higher" else ratio <= bound
        goals[label] = {"ratio": ratio, "met": met}
        lines.append(f"| {label} | {'✅' if met else '❌'} | {ratio:.2f}x |")
    if "arrowline/parallel" in done and "arrowline" in done:
        ratio = done["arrowline/parallel"].median("rows_per_s") / done["arrowline"].median(
            "rows_per_s"
        )
        goals["parallel pages against one at a time"] = {"ratio": ratio}
        lines.append(f"| `parallel: 4` against one page at a time (rows/s) | | {ratio:.2f}x |")
    if "arrowline/limited" in done:
        limited = done["arrowline/limited"]
        refused = max(s.reported["refused_429"] for s in limited.samples)
        rate = limited.median("kept_rate")
        goals["no 429 within the declared rate"] = {"refused": refused, "met": refused == 0}
        goals["rate kept ≥ 95%"] = {"rate": rate, "met": rate >= 0.95 * LIMIT}
        met = "✅" if refused == 0 else "❌"
        lines.append(f"| no 429 at {LIMIT} requests/s | {met} | {refused} refused |")
        lines.append(
            f"| rate kept ≥ 95% of {LIMIT}/s | {'✅' if rate >= 0.95 * LIMIT else '❌'} | "
            f"{rate:.1f}/s |"
        )
    summary["goals"] = goals
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("serve", "measure", "script"))
    parser.add_argument("contender", nargs="?")
    parser.add_argument("--url")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.records, args.port)
        return
    if args.mode == "script":
        {"httpx": _httpx, "dlt": _dlt}[args.contender](args.url, args.out)
        return
    import importlib.util

    module = NEEDS.get(args.contender)
    if module and importlib.util.find_spec(module) is None:
        sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
    print("RESULT " + json.dumps(measure(args.contender, args.url)))


if __name__ == "__main__":
    main()
