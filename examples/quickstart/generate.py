"""Generate the quickstart's input data: deterministic, about a million orders, no downloads.

    python examples/quickstart/generate.py            # 1,000,000 orders (skips if present)
    python examples/quickstart/generate.py --rows 2000000 --out /tmp/qs-data --force

Writes data/orders/orders-<month>.csv (four files, read with a glob), data/customers.ndjson and
data/fx_rates.parquet. A few orders are wrong on purpose (negative amounts, an unknown status, a
missing customer) so the pipeline's validation has something to quarantine.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20240101
CURRENCIES = {"USD": 1.0, "EUR": 1.09, "GBP": 1.27, "JPY": 0.0067, "CHF": 1.12}
STATUSES = ["placed", "shipped", "delivered", "returned"]
SEGMENTS = ["consumer", "small_business", "enterprise"]
COUNTRIES = ["US", "DE", "GB", "JP", "CH", "FR", "NL", "CA"]
MONTHS = [date(2024, month, 1) for month in (1, 2, 3, 4)]


def _bad_row_positions(rows: int) -> dict[int, str]:
    """Fixed, spread-out positions of deliberately invalid orders (about 0.005%)."""
    count = max(3, rows // 20_000)
    kinds = ["negative_amount", "unknown_status", "missing_customer"]
    return {(index * 7_919 + 13) % rows: kinds[index % 3] for index in range(count)}


def orders(rows: int, customers: int, out: Path) -> int:
    rng = random.Random(SEED)
    bad = _bad_row_positions(rows)
    per_file = -(-rows // len(MONTHS))
    directory = out / "orders"
    directory.mkdir(parents=True, exist_ok=True)
    order_id = 0
    for month in MONTHS:
        n = min(per_file, rows - order_id)
        ids, customer, day, amount, currency, status, quantity = [], [], [], [], [], [], []
        for _ in range(n):
            ids.append(order_id)
            customer.append(int(rng.random() * customers))
            day.append(month + timedelta(days=int(rng.random() * 28)))
            quantity.append(1 + int(rng.random() * 5))
            amount.append(round(5 + rng.random() * 995, 2))
            currency.append(list(CURRENCIES)[int(rng.random() * len(CURRENCIES))])
            status.append(STATUSES[int(rng.random() * len(STATUSES))])
            kind = bad.get(order_id)
            if kind == "negative_amount":
                amount[-1] = -amount[-1]
            elif kind == "unknown_status":
                status[-1] = "lost_in_space"
            elif kind == "missing_customer":
                customer[-1] = None
            order_id += 1
        table = pa.table(
            {
                "order_id": pa.array(ids, pa.int64()),
                "customer_id": pa.array(customer, pa.int64()),
                "order_date": pa.array(day, pa.date32()),
                "amount": pa.array(amount, pa.float64()),
                "currency": currency,
                "status": status,
                "quantity": pa.array(quantity, pa.int32()),
            }
        )
        pa_csv.write_csv(table, directory / f"orders-{month:%Y-%m}.csv")
    return order_id


def customer_file(customers: int, out: Path) -> None:
    rng = random.Random(SEED + 1)
    with (out / "customers.ndjson").open("w", encoding="utf-8") as handle:
        for customer_id in range(customers):
            record = {
                "customer_id": customer_id,
                "name": f"Customer {customer_id:05d}",
                "segment": SEGMENTS[int(rng.random() * len(SEGMENTS))],
                "country": COUNTRIES[int(rng.random() * len(COUNTRIES))],
                "signup_date": (
                    date(2020, 1, 1) + timedelta(days=int(rng.random() * 1400))
                ).isoformat(),
            }
            handle.write(json.dumps(record) + "\n")


def fx_file(out: Path) -> None:
    table = pa.table({"currency": list(CURRENCIES), "usd_rate": list(CURRENCIES.values())})
    pq.write_table(table, out / "fx_rates.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="orders to generate")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--force", action="store_true", help="regenerate even if the data exists")
    args = parser.parse_args()
    marker = args.out / ".generated"
    wanted = f"rows={args.rows} customers={args.customers} seed={SEED}"
    if not args.force and marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        print(f"data already generated in {args.out} ({wanted})")
        return
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    written = orders(args.rows, args.customers, args.out)
    customer_file(args.customers, args.out)
    fx_file(args.out)
    marker.write_text(wanted, encoding="utf-8")
    print(f"wrote {written:,} orders, {args.customers:,} customers and fx rates to {args.out}")


if __name__ == "__main__":
    main()
