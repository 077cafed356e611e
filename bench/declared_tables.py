"""Benchmark: the check every transform makes that each declared raw table exists and holds its
declared columns (``create_declared_raw_tables``, decisions 0025 and 0074), on a DuckDB warehouse
with ``--tables`` declared tables (``--sources`` sources) and ``--old-versions`` other tables in
the catalog (what old model versions leave in ``sqlmesh__*`` schemas). All tables exist: this is
the check of an unchanged warehouse, the usual transform.

The baseline, measured in the same run, is one read of the catalog's columns; the check's
seconds over it is the figure to compare (about 1 when the check reads the catalog once).

    .venv/bin/python bench/declared_tables.py [--tables 200] [--sources 20] [--old-versions 1600] [--repeat 3]

The last line is one JSON object. Machines are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--old-versions", type=int, default=1600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import duckdb

    from orchestrator.settings import Settings
    from orchestrator.transform.run import create_declared_raw_tables
    from sources.config import parse_source

    per_source = max(1, args.tables // args.sources)
    specs = [parse_source({"name": f"src{s:02d}", "kind": "files", "owner": "o", "path": "d", "tables": {
        f"t{t:03d}": {"file": f"t{t}.csv", "primary_key": "id",
                      "columns": {"id": "string", "amount": "decimal(12,2)", "updated_at": "timestamp"}}
        for t in range(per_source)}}) for s in range(args.sources)]
    with tempfile.TemporaryDirectory(prefix="elt-bench-declared-") as tmp:
        folder = Path(tmp)
        warehouse = folder / "wh.duckdb"
        con = duckdb.connect(str(warehouse))
        con.execute("CREATE SCHEMA sqlmesh__staging")
        for n in range(args.old_versions):
            con.execute(f"CREATE TABLE sqlmesh__staging.stg_old__v{n} (id VARCHAR, amount DECIMAL(12,2), a INT, b INT)")
        con.close()
        settings = Settings(project_root=folder, warehouse=warehouse, landing_root=folder / "landing", data_dir=folder)
        created = len(create_declared_raw_tables(settings, specs))  # the first transform makes them
        checks, baselines = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            assert create_declared_raw_tables(settings, specs) == []
            checks.append(time.perf_counter() - started)
            con = duckdb.connect(str(warehouse))
            started = time.perf_counter()
            con.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns").fetchall()
            baselines.append(time.perf_counter() - started)
            con.close()
    check, baseline = min(checks), min(baselines)
    print(json.dumps({"tables": created, "old_versions": args.old_versions, "check_s": round(check, 3),
                      "one_catalog_read_s": round(baseline, 4), "check_ratio": round(check / baseline, 1)}))


if __name__ == "__main__":
    main()
