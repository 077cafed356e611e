"""Benchmark: extract a PostgreSQL table of jaffle-like orders into landing (Parquet + manifest)
and raw (DuckDB), against ``psql -c "COPY (...) TO STDOUT"`` measured in the same run.

    make bench-loader                      # 1M and 5M rows
    .venv/bin/python bench/loader_postgres.py --sizes 1000000 5000000

A real PostgreSQL server is started for the run (initdb in a temp folder, loopback). For each
size it runs the baseline (psql to /dev/null) and the loader alternately ``--repeat`` times and
reports the median time (rows/s) and the largest peak RSS of each, and their ratio. The loader's
time is split into extraction with landing (``land_s``: COPY, parsing, Parquet) and the raw
load (``raw_s``). The extractor alone (COPY into Arrow record batches, nothing landed) is
measured too, as ``extract_ratio``. Then (``--file-years``, 6 by default, 0 to skip) the file loader
loads jafgen's CSVs of that many years (cached in ~/.cache/elt-bench/, as bench/transform.py
does) against DuckDB's own CSV read of the same files (bench/loader_files.py), as ``file_load``.
The last line printed is one JSON object. Machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import postgres_server  # noqa: E402 - the same real server the tests use

LOADER = r"""
import json, resource, sys, time
from pathlib import Path
from sources import pipeline
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
work, view = Path(sys.argv[1]), sys.argv[2]
phases = {"land_s": 0.0, "raw_s": 0.0}
def timed(phase, step):
    def run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            phases[phase] += time.perf_counter() - started
    return run
pipeline.land, pipeline.apply_pending = timed("land_s", pipeline.land), timed("raw_s", pipeline.apply_pending)
spec = parse_source({"name": "bench", "kind": "postgres", "owner": "bench", "env_prefix": "BENCH_PG_",
                     "tables": {"orders": {"source_table": view, "primary_key": "id"}}})
started = time.perf_counter()
with DuckDBRaw(work / "wh.duckdb") as raw:
    (out,) = ingest(spec, landing=Landing.local(work / "landing"), raw=raw, lock_dir=work)
assert out.error is None, out.error
print(json.dumps({"rows": out.rows_applied, "seconds": time.perf_counter() - started,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **phases}))
"""

EXTRACT = r"""
import json, os, resource, sys, time
from sources.config import parse_source
from sources.extract import postgres
view = sys.argv[1]
spec = parse_source({"name": "bench", "kind": "postgres", "owner": "bench", "env_prefix": "BENCH_PG_",
                     "tables": {"orders": {"source_table": view, "primary_key": "id"}}})
started = time.perf_counter()
rows = sum(b.num_rows for item in postgres.extracts(spec, spec.tables["orders"], cursor=None) for b in item.batches)
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
# Exiting right after the last batch sometimes aborts ("terminate called without an active
# exception", about 1 run in 15, with the CSV format too): an Arrow I/O thread lets go of the
# Python file object while the interpreter finalizes (apache/arrow#34314). Measured: skip it.
os._exit(0)
"""

SEED = """
CREATE SCHEMA bench;
CREATE TABLE bench.orders AS
SELECT n,
       md5(n::text)::uuid::text AS id,
       md5((n % 50000)::text)::uuid::text AS customer,
       TIMESTAMP '2018-09-01' + (n % 31536000) * INTERVAL '1 second' AS ordered_at,
       md5((n % 6)::text)::uuid::text AS store_id,
       (n % 5000)::bigint * 100 AS subtotal,
       (n % 5000)::bigint * 6 AS tax_paid,
       (n % 5000)::bigint * 106 AS order_total,
       ((n % 1000) / 100.0)::numeric(12, 2) AS discount,
       (n % 3 = 0) AS is_delivery
FROM generate_series(1, {rows}) AS n;
"""


def psql_baseline(pg, view: str) -> dict[str, float]:
    cmd = ["psql", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", pg.dbname, "-X", "-q",
           "-c", f"COPY (SELECT * FROM {view}) TO STDOUT"]
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 3), "peak_rss_mb": round(int(proc.stderr.strip().splitlines()[-1]) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--file-years", type=int, default=6, help="years of jafgen CSVs for the file load (0: skip it)")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with postgres_server() as pg:
        env = {**os.environ, **pg.env("BENCH_PG")}
        import psycopg2

        con = psycopg2.connect(pg.dsn)
        con.autocommit = True
        biggest = max(args.sizes)
        print(f"seeding tables of {', '.join(f'{s:,}' for s in args.sizes)} rows ...", file=sys.stderr, flush=True)
        with con.cursor() as cur:
            cur.execute(SEED.replace("{rows}", str(biggest)))
            for size in args.sizes:  # one real table per size, keyed like an application table
                cur.execute(f"CREATE TABLE bench.orders_{size} AS SELECT id, customer, ordered_at, store_id, subtotal, "
                            f"tax_paid, order_total, discount, is_delivery FROM bench.orders WHERE n <= {size}")
                cur.execute(f"ALTER TABLE bench.orders_{size} ADD PRIMARY KEY (id)")
                cur.execute(f"VACUUM ANALYZE bench.orders_{size}")
            cur.execute("DROP TABLE bench.orders")
        con.close()
        for size in args.sizes:
            view = f"bench.orders_{size}"
            bases, loaders, extracts = [], [], []
            for _ in range(args.repeat):  # interleaved, so all see the same machine
                bases.append(psql_baseline(pg, view))
                proc = subprocess.run([sys.executable, "-c", EXTRACT, view], cwd=ROOT, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                extracts.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                with tempfile.TemporaryDirectory() as work:
                    proc = subprocess.run([sys.executable, "-c", LOADER, work, view], cwd=ROOT, env=env,
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise SystemExit(proc.stderr[-3000:])
                    run = json.loads(proc.stdout.strip().splitlines()[-1])
                loaders.append({"rows": run["rows"], "seconds": round(run["seconds"], 3),
                                "land_s": round(run["land_s"], 3), "raw_s": round(run["raw_s"], 3),
                                "peak_rss_mb": round(run["rss_kb"] / 1024)})
            base = {"seconds": statistics.median(b["seconds"] for b in bases),
                    "peak_rss_mb": max(b["peak_rss_mb"] for b in bases)}
            loader = {"rows": loaders[0]["rows"], **{k: statistics.median(l[k] for l in loaders)
                                                     for k in ("seconds", "land_s", "raw_s")},
                      "peak_rss_mb": max(l["peak_rss_mb"] for l in loaders)}
            assert loader["rows"] == size == extracts[0]["rows"], loader
            extract = {"seconds": round(statistics.median(e["seconds"] for e in extracts), 3),
                       "peak_rss_mb": round(max(e["rss_kb"] for e in extracts) / 1024)}
            loader["rows_per_s"] = round(size / loader["seconds"])
            base["rows_per_s"] = round(size / base["seconds"])
            results[str(size)] = {"loader": loader, "psql_copy": base, "extract_only": extract,
                                  "ratio_rows_per_s": round(loader["rows_per_s"] / base["rows_per_s"], 3),
                                  "extract_ratio": round(base["seconds"] / extract["seconds"], 3)}
            print(f"{size:>10,} rows: {results[str(size)]}", file=sys.stderr, flush=True)
    sizes = [str(s) for s in args.sizes]
    results["ratio_by_size"] = {s: results[s]["ratio_rows_per_s"] for s in sizes}  # type: ignore[index]
    results["extract_ratio_by_size"] = {s: results[s]["extract_ratio"] for s in sizes}  # type: ignore[index]
    results["peak_rss_mb_by_size"] = {s: results[s]["loader"]["peak_rss_mb"] for s in sizes}  # type: ignore[index]
    results["min_ratio_rows_per_s"] = min(results[s]["ratio_rows_per_s"] for s in sizes)  # type: ignore[index]
    if args.file_years:
        from bench.loader_files import compare
        from bench.transform import jafgen

        files = compare(jafgen(args.file_years), args.repeat)
        results["file_load"] = {"years": args.file_years, **files}
        print(f"file load, {args.file_years} years: {files}", file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
