"""Benchmark: the orphan check of a whole-history build on the PostgreSQL gateway (decision 0067).

A real PostgreSQL server (initdb into a temporary folder, as the tests start it) gets two raw
tables shaped like jaffle's, with the loader's indexes: ``orders`` (``--orders`` rows) and
``items`` (1.5 per order), over ``--batches`` batches; with ``--deletions`` every
``--delete-every``-th order (1,000th by default) is deleted by a later batch while its items stay,
so orphans exist and the exact query runs. The check (``windows.orphans``) is then given every
batch, as a first build or a rebuild from landing gives it, and also one batch (a day's
transform); with ``--deletions``, the check of the deleting batch (``windows.deleted_parents``)
is timed too. The baseline, measured in the same run, is one
scan that counts the items of those batches: the check's seconds over it is the figure to compare.

    .venv/bin/python bench/orphan_check_postgres.py [--orders 72000] [--batches 30] [--deletions]
        [--delete-every 1000]

The last line is one JSON object. Machines are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=72_000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--deletions", action="store_true")
    parser.add_argument("--delete-every", type=int, default=1000)
    args = parser.parse_args()

    import psycopg2
    from sqlmesh.core.engine_adapter import create_engine_adapter

    from orchestrator.transform import windows as w
    from tests.servers import postgres_server

    orders, items, batches = args.orders, args.orders * 3 // 2, args.batches
    meta = "_extracted_at TIMESTAMP, _batch_id TEXT, _batch_row BIGINT, _deleted BOOLEAN"
    batch = f"'b' || lpad((g % {batches})::text, 5, '0')"
    with postgres_server() as pg:
        con = psycopg2.connect(pg.dsn)
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE SCHEMA raw_j")
            cur.execute(f"CREATE TABLE raw_j.orders (id TEXT, ordered_at TIMESTAMP, {meta})")
            cur.execute(f"CREATE TABLE raw_j.items (id TEXT, order_id TEXT, {meta})")
            cur.execute(f"INSERT INTO raw_j.orders SELECT 'o' || g, TIMESTAMP '2020-01-01' + (g % 2190) * INTERVAL '1 day', "
                        f"TIMESTAMP '2026-01-01', {batch}, g, FALSE FROM generate_series(1, {orders}) AS g")
            if args.deletions:
                cur.execute("INSERT INTO raw_j.orders SELECT id, ordered_at, TIMESTAMP '2026-01-02', 'bz', _batch_row, TRUE "
                            f"FROM raw_j.orders WHERE _batch_row % {args.delete_every} = 0")
            cur.execute(f"INSERT INTO raw_j.items SELECT 'i' || g, 'o' || (1 + g % {orders}), TIMESTAMP '2026-01-01', "
                        f"{batch}, g, FALSE FROM generate_series(1, {items}) AS g")
            for table in ("orders", "items"):  # as sources/load/postgres_raw.py makes them
                cur.execute(f"CREATE INDEX ON raw_j.{table} (id, _extracted_at, _batch_id, _batch_row)")
                cur.execute(f"CREATE INDEX ON raw_j.{table} (_batch_id)")
            cur.execute("ANALYZE")
        adapter = create_engine_adapter(lambda: psycopg2.connect(pg.dsn), "postgres")
        specs = {"raw_j.orders": w.WindowSpec(("id",), "ordered_at"),
                 "raw_j.items": w.WindowSpec(("id",), None, ("raw_j.orders", "order_id"))}
        every = {f"b{i:05d}" for i in range(batches)} | ({"bz"} if args.deletions else set())
        ids = ", ".join(f"'{b}'" for b in sorted(every))

        def timed(run):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            value = run()
            return time.perf_counter() - start, value

        scan, _ = timed(lambda: adapter.fetchone(f"SELECT COUNT(*) FROM raw_j.items WHERE _batch_id IN ({ids})"))
        whole, found = timed(lambda: w.orphans(adapter, "raw_j.items", specs, every))
        day, _ = timed(lambda: w.orphans(adapter, "raw_j.items", specs, {"b00001"}))
        gone, _ = (timed(lambda: w.deleted_parents(adapter, "raw_j.orders", specs, {"bz"})) if args.deletions
                   else (0.0, None))
        adapter.close()
        con.close()
    result = {"orders": orders, "items": items, "batches": batches, "deletions": args.deletions,
              "orphans_found": found.count if found else 0, "baseline_scan_s": round(scan, 3),
              "whole_history_check_s": round(whole, 3), "whole_history_ratio": round(whole / max(scan, 1e-6), 1),
              "one_batch_check_s": round(day, 3), "deleted_orders": orders // args.delete_every if args.deletions else 0,
              "deleted_parents_check_s": round(gone, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
