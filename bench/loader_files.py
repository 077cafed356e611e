"""Benchmark: the file loader (CSV -> landing Parquet + manifest -> raw DuckDB table) against
DuckDB alone, measured in the same run: DuckDB's own CSV read into a table (``duckdb_read``, the
issue's baseline) and DuckDB doing the loader's work (CSV -> table and a Parquet copy,
``duckdb_same_work``).

    .venv/bin/python bench/loader_files.py [--years 3] [--data DIR] [--repeat 3]

`make bench-loader` runs it at 6 years beside the PostgreSQL extraction. Reports median seconds,
rows/s and peak RSS of each and the loader's time over each baseline; the last line is one JSON
object. Machines are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
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

# DuckDB alone, CSV into a table; {copy} is nothing (its own read) or a Parquet copy of each table
# (the loader's work: landing and raw)
DUCKDB = """
import sys, duckdb
from pathlib import Path
work, data = Path(sys.argv[1]), Path(sys.argv[2])
con = duckdb.connect(str(work / "base.duckdb"))
rows = 0
for f in sorted(data.glob("raw_*.csv")):
    con.execute(f"CREATE TABLE {f.stem} AS SELECT * FROM read_csv('{f}', header = true)")
    {copy}
    rows += con.execute(f"SELECT count(*) FROM {f.stem}").fetchone()[0]
import resource
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
DUCKDB_READ = DUCKDB.replace("{copy}", "pass")
SAME_WORK = DUCKDB.replace(
    "{copy}", """con.execute(f"COPY {f.stem} TO '{work / f.stem}.parquet' (FORMAT parquet, COMPRESSION zstd)")""")


def measure(code: str, data: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, work, str(data)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        elapsed = time.perf_counter() - started
    rows, max_rss_kb = (int(x) for x in proc.stdout.strip().splitlines()[-1].split())
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed), "peak_rss_mb": round(max_rss_kb / 1024)}


def compare(data: Path, repeat: int = 3) -> dict[str, object]:
    """The loader and both DuckDB baselines, interleaved ``repeat`` times: medians and ratios."""
    runs: dict[str, list[dict[str, float]]] = {"duckdb_read": [], "duckdb_same_work": [], "loader": []}
    for _ in range(repeat):
        for name, code in (("duckdb_read", DUCKDB_READ), ("duckdb_same_work", SAME_WORK), ("loader", LOADER)):
            runs[name].append(measure(code, data))
    out: dict[str, object] = {}
    for name, measured in runs.items():
        seconds = statistics.median(m["seconds"] for m in measured)
        out[name] = {"rows": measured[0]["rows"], "seconds": seconds, "rows_per_s": round(measured[0]["rows"] / seconds),
                     "peak_rss_mb": max(m["peak_rss_mb"] for m in measured)}
    assert len({o["rows"] for o in out.values()}) == 1, out  # type: ignore[index]
    loader = out["loader"]["seconds"]  # type: ignore[index]
    out["loader_over_duckdb_read"] = round(loader / out["duckdb_read"]["seconds"], 3)  # type: ignore[index]
    out["loader_over_duckdb_same_work"] = round(loader / out["duckdb_same_work"]["seconds"], 3)  # type: ignore[index]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--data", type=Path, help="existing folder of jafgen CSVs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved; medians are reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            subprocess.run([str(BIN / "jafgen"), str(args.years)], cwd=tmp, check=True, capture_output=True)
            data = Path(tmp) / "jaffle-data"
        results = compare(data, args.repeat)
    for name in ("duckdb_read", "duckdb_same_work", "loader"):
        print(f"{name:16} {results[name]}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
