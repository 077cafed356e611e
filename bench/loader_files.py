"""Benchmark: the file loader (CSV -> landing Parquet + manifest -> raw DuckDB table) against a
baseline doing the same bytes-to-table work with DuckDB alone, measured in the same run.

    .venv/bin/python bench/loader_files.py [--years 3] [--data DIR]

Reports rows/s and peak RSS for both and their ratio; the last line is one JSON object.
Machines are noisy: compare the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

LOADER = """
import sys, time
from pathlib import Path
from sources.config import load_source
from sources.landing.store import LocalLanding
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import load_file_source
work, data = Path(sys.argv[1]), Path(sys.argv[2])
with DuckDBRaw(work / "wh.duckdb") as raw:
    out = load_file_source(load_source("jaffle_shop"), path=data, landing=LocalLanding(work / "landing"), raw=raw)
assert not [o.error for o in out if o.error], out
import resource
print(sum(o.rows_applied for o in out), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

BASELINE = """
import sys, duckdb
from pathlib import Path
work, data = Path(sys.argv[1]), Path(sys.argv[2])
con = duckdb.connect(str(work / "base.duckdb"))
rows = 0
for f in sorted(data.glob("raw_*.csv")):
    con.execute(f"CREATE TABLE {f.stem} AS SELECT * FROM read_csv('{f}', header = true)")
    con.execute(f"COPY {f.stem} TO '{work / f.stem}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    rows += con.execute(f"SELECT count(*) FROM {f.stem}").fetchone()[0]
import resource
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(code: str, data: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, work, str(data)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        elapsed = time.perf_counter() - started
    rows, max_rss_kb = (int(x) for x in proc.stdout.strip().splitlines()[-1].split())
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed), "peak_rss_mb": round(max_rss_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--data", type=Path, help="existing folder of jafgen CSVs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            subprocess.run([str(BIN / "jafgen"), str(args.years)], cwd=tmp, check=True, capture_output=True)
            data = Path(tmp) / "jaffle-data"
        results = {}
        for name, code in (("baseline_duckdb", BASELINE), ("loader", LOADER)):
            results[name] = measure(code, data)
            print(f"{name:16} {results[name]}", file=sys.stderr)
    results["ratio_rows_per_s"] = round(results["loader"]["rows_per_s"] / results["baseline_duckdb"]["rows_per_s"], 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
