"""Start a small local JSON API (orders, cursor-paginated, bearer auth) and run the pipeline
against it: `python examples/rest/run.py`."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

HERE = Path(__file__).resolve().parent
TOKEN = "example-token"
START = datetime(2024, 1, 1, tzinfo=UTC)
ORDERS = [
    {
        "id": i,
        "total": round(10 + (i * 37) % 500 + 0.99, 2),
        "created_at": (START + timedelta(hours=7 * i)).isoformat(),
        "customer": {"id": i % 97, "country": ["de", "fr", "us"][i % 3]},
        "items": [{"sku": f"s{i % 11}", "qty": 1 + i % 3}],
    }
    for i in range(1, 2001)
]
PAGE = 250


class Shop(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            self._send(401, {"message": "missing or wrong token"})
        elif parts.path != "/orders":
            self._send(404, {"message": f"no {parts.path}"})
        else:
            start = int(dict(parse_qsl(parts.query)).get("cursor", 0))
            end = start + PAGE
            following = end if end < len(ORDERS) else None
            self._send(200, {"data": ORDERS[start:end], "meta": {"next_cursor": following}})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    sys.path.insert(0, str(HERE.parents[1]))
    from engine.api.pipeline import run

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.setdefault("SHOP_TOKEN", TOKEN)
    os.environ["SHOP_BASE_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = run(HERE / "pipeline.yaml", project_dir=HERE)
    finally:
        server.shutdown()
    print(result)
    if result.ok:
        print(f"{result.tasks['orders'].rows_out} orders read; daily revenue in out/shop.duckdb")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
