"""Benchmark: what a load with nothing new costs as a table's landed history grows (decision 0059).

One table of a file source is given 1, 100, 10,000 and 100,000 applied batches (one real batch,
its folder copied under new ids with hard links, and a ledger row each), then a load with nothing
new runs in a fresh interpreter, as `elt load` does: median seconds and peak RSS of ``--repeat``
runs per size, interleaved, and each size's time over the 1-batch time measured in the same run.

    .venv/bin/python bench/landing_listing.py [--sizes 1 100 10000 100000] [--repeat 3]

The last line is one JSON object. Machines are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sources.config import parse_source  # noqa: E402
from sources.landing.manifest import MANIFEST_NAME  # noqa: E402
from sources.landing.store import Landing  # noqa: E402
from sources.load.duckdb_raw import DuckDBRaw  # noqa: E402
from sources.pipeline import ingest  # noqa: E402

SPEC = {"name": "shop", "kind": "files", "owner": "bench",
        "tables": {"orders": {"file": "orders.csv", "primary_key": "id",
                              "columns": {"id": "integer", "total": "integer"}}}}

# a load with nothing new, as `elt load` runs it: a fresh interpreter
NOOP = """
import sys
from pathlib import Path
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
work = Path(sys.argv[1])
spec = parse_source({**%r, "path": str(work / "in")})
with DuckDBRaw(work / "wh.duckdb") as raw:
    (out,) = ingest(spec, landing=Landing.local(work / "landing"), raw=raw, lock_dir=work)
assert out.status == "unchanged" and out.error is None, out
# peak resident memory of this process (ru_maxrss would include the parent's, from before exec)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
""" % (SPEC,)


def build(work: Path, batches: int) -> None:
    """A landed and applied table of ``batches`` batches: one real, the others copies of it."""
    (work / "in").mkdir(parents=True)
    (work / "in" / "orders.csv").write_text("id,total\n1,10\n2,20\n")
    spec = parse_source({**SPEC, "path": str(work / "in")})
    landing = Landing.local(work / "landing")
    with DuckDBRaw(work / "wh.duckdb") as raw:
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=work)
    (real,) = out.applied
    folder = Path(landing.batch_dir("shop", "orders", real))
    manifest = (folder / MANIFEST_NAME).read_text()
    # ids that sort before the real batch (it stays the newest, which the file is compared with)
    ids = [f"20000101T{i // 1_000_000:06d}{i % 1_000_000:06d}Z-{i:08x}" for i in range(batches - 1)]
    source = folder
    for i, batch_id in enumerate(ids):
        copy = folder.parent / batch_id
        copy.mkdir()
        for f in source.iterdir():
            if f.name != MANIFEST_NAME:  # a file takes 65,000 links at most: copied once per 50,000
                (shutil.copyfile if i % 50_000 == 0 else os.link)(f, copy / f.name)
        if i % 50_000 == 0:
            source = copy
        (copy / MANIFEST_NAME).write_text(manifest.replace(real, batch_id))
    if not ids:
        return
    con = duckdb.connect(str(work / "wh.duckdb"))
    try:
        con.execute("CREATE TEMP TABLE ids AS SELECT unnest(?::VARCHAR[]) AS batch_id", [ids])
        columns = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'elt_meta' "
                                             "AND table_name = 'loaded_batches' ORDER BY column_index").fetchall()]
        others = ", ".join(f'l."{c}"' for c in columns if c != "batch_id")
        con.execute(f"INSERT INTO elt_meta.loaded_batches (batch_id, {', '.join(chr(34) + c + chr(34) for c in columns if c != 'batch_id')}) "
                    f"SELECT ids.batch_id, {others} FROM ids, elt_meta.loaded_batches l WHERE l.batch_id = ?", [real])
    finally:
        con.close()


def noop(work: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", NOOP, str(work)], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"the no-op load failed:\n{proc.stderr[-3000:]}")
    return elapsed, int(proc.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size, interleaved; medians are reported")
    args = parser.parse_args()
    sizes = sorted(set([1, *args.sizes]))
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        works = {}
        for n in sizes:
            started = time.perf_counter()
            works[n] = Path(tmp) / f"b{n}"
            build(works[n], n)
            print(f"built {n:,} batches in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runs: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
        for _ in range(args.repeat):
            for n in sizes:
                runs[n].append(noop(works[n]))
    base = statistics.median(s for s, _ in runs[1])
    result: dict[str, object] = {"bench": "landing_listing", "repeat": args.repeat}
    for n in sizes:
        seconds = statistics.median(s for s, _ in runs[n])
        result[f"noop_load_{n}"] = {"seconds": round(seconds, 3), "over_1_batch": round(seconds / base, 3),
                                    "peak_rss_mb": round(max(r for _, r in runs[n]))}
        print(f"{n:>9,} batches: no-op load {seconds:.2f}s ({seconds / base:.2f}x the 1-batch load), "
              f"peak {max(r for _, r in runs[n]):.0f} MB", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
