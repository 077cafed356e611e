"""Transform cost against history size: full build, no-op, a new day, a late correction.

    .venv/bin/python bench/transform.py --years 1 6

For each history size: jafgen data (generated once, cached in ~/.cache/elt-bench/), loaded through
the file source into a fresh DuckDB warehouse, then timed in separate processes (peak memory is
the child's max RSS):

- full: the first `elt transform` (plan + build of every model);
- floor: the same models computed by plain DuckDB SQL from the same raw tables (one process),
  into temporary tables (compute only), then under the models' DuckDB limits, then writing real
  tables under those limits (``floor_tables``: what a warehouse must do; docs/decisions/0011);
- noop: `elt transform` with nothing new, against `sqlmesh run` with nothing due;
- first_load: the first `elt load` of the files (a full snapshot into empty raw tables);
- new_day: one new day of orders and items appended to the snapshot files, `elt load`
  (``new_day_load_s``: the whole files read and landed, compared with raw's current state; raw
  gains only the new rows), then `elt transform` (``new_day_s``);
- late_correction: one 2018 order's store changed, load, transform;
- late_order: a late-arriving order on an early day for a customer with later orders, load,
  transform (``late_order_over_full``: only ``marts.orders`` restates the customer's later days);
- scattered: 40 orders at random over the whole history get another store (a source-side fix
  spread over many days), load, transform; ``scattered_over_full`` compares it with the full build,
  ``scattered_separate_s`` is the same transform with every touched day's range restated on its own;
- pg_new_day (``--postgres``, on by default): the same history served by a PostgreSQL app
  database (a server started on loopback), read by cursor (`jaffle_app`); after a full build,
  one more day is released at the source, loaded by cursor, and transformed.

``--spark [YEARS]`` measures instead the Spark gateway (local mode) beside DuckDB, from the same
files: load, full build, no-op and one new day (information, no target).

The full build (each time followed by the floor writing tables), the no-op (each time followed by
`sqlmesh run`) and the new day run ``--repeat`` times (3), each from the same starting state; the
figures are medians, the ratios are between medians, and ``*_runs_s`` lists every run (this
machine's speed moves by a quarter from one minute to the next).

The last line is one JSON object. Ratios compare figures measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("ELT_BENCH_CACHE", Path.home() / ".cache" / "elt-bench"))

FLOOR_SQL = """
CREATE TEMP TABLE o AS SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) rn FROM raw_jaffle_shop.orders) WHERE rn = 1 AND NOT coalesce(_deleted, false);
CREATE TEMP TABLE i AS SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) rn FROM raw_jaffle_shop.items) WHERE rn = 1 AND NOT coalesce(_deleted, false);
CREATE TEMP TABLE p AS SELECT sku, name, price / 100.0 AS price, type = 'jaffle' AS food, type = 'beverage' AS drink FROM raw_jaffle_shop.products;
CREATE TEMP TABLE s AS SELECT sku, sum(cost) / 100.0 AS cost FROM raw_jaffle_shop.supplies GROUP BY sku;
CREATE TEMP TABLE oi AS SELECT i.id, i.order_id, i.sku, p.name, p.price, s.cost, p.food, p.drink, date_trunc('day', o.ordered_at) AS ordered_at FROM i JOIN o ON i.order_id = o.id LEFT JOIN p ON i.sku = p.sku LEFT JOIN s ON i.sku = s.sku;
CREATE TEMP TABLE mo AS SELECT o.*, a.cost, a.subtotal_items, coalesce(a.n, 0) AS n, row_number() OVER (PARTITION BY o.customer ORDER BY date_trunc('day', o.ordered_at), o.id) AS rank FROM o LEFT JOIN (SELECT order_id, sum(cost) AS cost, sum(price) AS subtotal_items, count(*) AS n FROM oi GROUP BY 1) a ON a.order_id = o.id;
CREATE TEMP TABLE t AS SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) rn FROM raw_jaffle_shop.tweets) WHERE rn = 1 AND NOT coalesce(_deleted, false);
CREATE TEMP TABLE mc AS SELECT c.id, count(mo.id) AS n, sum(mo.order_total) AS total, min(mo.ordered_at) AS first_at, max(mo.ordered_at) AS last_at FROM raw_jaffle_shop.customers c LEFT JOIN mo ON mo.customer = c.id GROUP BY c.id;
"""


def jafgen(years: int) -> Path:
    folder = CACHE / f"jafgen-{years}y" / "jaffle-data"
    if not (folder / "raw_orders.csv").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "jafgen"), str(years)], cwd=folder.parent, check=True, capture_output=True)
    return folder


SCATTERED_ORDERS = 40  # corrected orders spread over the whole history, for ``scattered``

TIME = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS of the command in MB).

    The peak comes from GNU time, which starts the command from a small process: a child forked
    straight from this (large) Python process would report this process's peak as its own."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        full = [TIME, "-f", "%M", "-o", str(peak_file), *cmd] if TIME else cmd
        with open(Path(tmp) / "out", "w+") as out:
            started = time.perf_counter()
            proc = subprocess.run(full, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                out.seek(0)
                raise SystemExit(f"{' '.join(cmd)} failed:\n{out.read()[-3000:]}")
        peak_kb = float(peak_file.read_text().split()[-1]) if TIME else float("nan")
    return round(elapsed, 2), round(peak_kb / 1024, 0)


def copied(src: Path, dst: Path) -> None:
    """Copy a warehouse file and wait until the copy is on disk: a command run on a newly copied
    file otherwise waits for its pages to be written at its first checkpoint (seconds at 6 years,
    decision 0046), a cost neither the pipeline nor the floor has in place."""
    shutil.copy(src, dst)
    os.sync()


def append_day(folder: Path) -> None:
    """One new day: copies of the last day's orders (new ids) on the next day, with their items.
    Streams the files (the bench process stays small)."""
    last = ""
    with open(folder / "raw_orders.csv") as fh:
        for row in csv.DictReader(fh):
            last = max(last, row["ordered_at"][:10])
    nxt = (datetime.date.fromisoformat(last) + datetime.timedelta(days=1)).isoformat()
    with open(folder / "raw_orders.csv") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        day = [o for o in reader if o["ordered_at"].startswith(last)]
    ids = {o["id"] for o in day}
    with open(folder / "raw_items.csv") as fh:
        items = [i for i in csv.DictReader(fh) if i["order_id"] in ids]
    with open(folder / "raw_orders.csv", "a", newline="") as fh:
        w = csv.DictWriter(fh, fields)
        for o in day:
            w.writerow({**o, "id": "n-" + o["id"], "ordered_at": nxt + o["ordered_at"][10:]})
    with open(folder / "raw_items.csv", "a", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "order_id", "sku"])
        for i in items:
            w.writerow({"id": "n-" + i["id"], "order_id": "n-" + i["order_id"], "sku": i["sku"]})


def change_stores(folder: Path, rows: set[int]) -> set[str]:
    """The orders at data rows ``rows`` (0-based) of ``raw_orders.csv`` get another store, streamed
    through a copy; returns the days (``ordered_at``) they lie on."""
    path = folder / "raw_orders.csv"
    with open(path) as fh:
        stores = sorted({r["store_id"] for r in csv.DictReader(fh)})
    days = set()
    tmp = path.with_suffix(".tmp")
    with open(path) as src, open(tmp, "w", newline="") as dst:
        reader = csv.DictReader(src)
        w = csv.DictWriter(dst, list(reader.fieldnames or []))
        w.writeheader()
        for i, row in enumerate(reader):
            if i in rows:
                row["store_id"] = next(s for s in stores if s != row["store_id"])
                days.add(row["ordered_at"][:10])
            w.writerow(row)
    tmp.replace(path)
    return days


def late_correction(folder: Path) -> None:
    """The store of the file's 6th order changes (an order of 2018)."""
    change_stores(folder, {5})


def late_order(folder: Path) -> str:
    """A late-arriving order: a copy (new id, with its items) of the file's last order, placed on the
    day of the order a sixth of the way into the file. Its customer ordered on the last day, so the
    order shifts the rank of that customer's later orders (``sequence_key``, decision 0029): only the
    models that number orders restate those later days. Returns the day."""
    times: list[str] = []
    last: dict[str, str] = {}
    with open(folder / "raw_orders.csv") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        for row in reader:  # streamed: only the times are kept
            times.append(row["ordered_at"])
            if not last or row["ordered_at"] > last["ordered_at"]:
                last = row
    times.sort()
    day = times[len(times) // 6][:10]
    with open(folder / "raw_items.csv") as fh:
        items = [i for i in csv.DictReader(fh) if i["order_id"] == last["id"]]
    with open(folder / "raw_orders.csv", "a", newline="") as fh:
        csv.DictWriter(fh, fields).writerow({**last, "id": "late-" + last["id"], "ordered_at": day + last["ordered_at"][10:]})
    with open(folder / "raw_items.csv", "a", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "order_id", "sku"])
        for i in items:
            w.writerow({"id": "late-" + i["id"], "order_id": "late-" + last["id"], "sku": i["sku"]})
    return day


def scattered_corrections(folder: Path, n: int = SCATTERED_ORDERS) -> int:
    """``n`` orders chosen at random over the whole file (fixed seed) get another store; returns
    how many days they lie on. Corrections spread over history, as a source-side fix makes: each
    touched day is a range to restate (docs/decisions/0011)."""
    import random

    with open(folder / "raw_orders.csv") as fh:
        total = sum(1 for _ in fh) - 1
    return len(change_stores(folder, set(random.Random(n).sample(range(total), n))))


def pg_new_day(years: int, src: Path) -> dict[str, object]:
    """Full build from the app database read by cursor, then one new day released and transformed."""
    sys.path.insert(0, str(ROOT))
    from sources.connections import PostgresSettings
    from orchestrator.demo import appdb
    from tests.servers import postgres_server

    with open(src / "raw_orders.csv") as fh:
        last = max(row["ordered_at"][:10] for row in csv.DictReader(fh))
    last_day = datetime.date.fromisoformat(last)
    work = Path(tempfile.mkdtemp(prefix=f"elt-bench-pg-{years}y-"))
    try:
        with postgres_server() as server:
            app_env = server.env("JAFFLE_APP")
            env = {**os.environ, **app_env, "ELT_DUCKDB_PATH": str(work / "warehouse.duckdb"),
                   "ELT_LANDING_ROOT": str(work / "landing"), "ELT_JSON_LOGS": "1"}
            os.environ.update(app_env)
            settings = PostgresSettings.from_env("JAFFLE_APP_")
            appdb.seed(settings, src)
            appdb.release(settings, last_day - datetime.timedelta(days=1))
            elt = str(BIN / "elt")
            catalog = [elt, "load", "jaffle_shop", "--path", str(src), "--table", "products", "--table", "stores",
                       "--table", "supplies"]
            subprocess.run(catalog, env=env, cwd=ROOT, check=True, capture_output=True)
            subprocess.run([elt, "load", "jaffle_app"], env=env, cwd=ROOT, check=True, capture_output=True)
            r: dict[str, object] = {}
            r["pg_full_s"], r["pg_full_peak_mb"] = timed([elt, "transform"], env)
            r["pg_orders_after_new_day"] = appdb.release(settings, last_day)["orders"]
            started = time.perf_counter()
            subprocess.run([elt, "load", "jaffle_app"], env=env, cwd=ROOT, check=True, capture_output=True)
            r["pg_new_day_load_s"] = round(time.perf_counter() - started, 2)
            r["pg_new_day_s"], r["pg_new_day_peak_mb"] = timed([elt, "transform"], env)
            return r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spark_sizes(years: int) -> dict[str, object]:
    """The full build and one new day on the Spark gateway (local mode, config.yaml's limits),
    next to the same on DuckDB, from the same files. Information, no target: Spark is for scale."""
    src = jafgen(years)
    work = Path(tempfile.mkdtemp(prefix=f"elt-bench-spark-{years}y-"))
    try:
        r: dict[str, object] = {"years": years}
        for gateway in ("duckdb", "spark"):
            home = work / gateway
            data = home / "jaffle-data"  # each gateway's own copy, given the same new day
            shutil.copytree(src, data)
            env = {**os.environ, "ELT_GATEWAY": gateway, "ELT_DUCKDB_PATH": str(home / "warehouse.duckdb"),
                   "ELT_LANDING_ROOT": str(home / "landing"),
                   "ELT_SPARK_HOME": str(home / "spark"), "ELT_JSON_LOGS": "1"}
            elt = str(BIN / "elt")
            load = [elt, "load", "jaffle_shop", "--path", str(data)]
            r[f"{gateway}_load_s"], _ = timed(load, env)
            r[f"{gateway}_full_s"], r[f"{gateway}_full_peak_mb"] = timed([elt, "transform"], env)
            r[f"{gateway}_noop_s"], _ = timed([elt, "transform"], env)
            append_day(data)
            subprocess.run(load, env=env, cwd=ROOT, check=True, capture_output=True)
            r[f"{gateway}_new_day_s"], r[f"{gateway}_new_day_peak_mb"] = timed([elt, "transform"], env)
        r["spark_over_duckdb_full"] = round(float(r["spark_full_s"]) / float(r["duckdb_full_s"]), 2)  # type: ignore[arg-type]
        r["spark_over_duckdb_new_day"] = round(float(r["spark_new_day_s"]) / float(r["duckdb_new_day_s"]), 2)  # type: ignore[arg-type]
        return r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def keep_peak(r: dict[str, object], key: str, peak: float) -> None:
    """``r[key]``: the highest peak of the repeats so far."""
    r[key] = max(peak, float(r.get(key, 0)))  # type: ignore[arg-type]


def one_size(years: int, postgres: bool = True, repeat: int = 3) -> dict[str, object]:
    src = jafgen(years)
    work = Path(tempfile.mkdtemp(prefix=f"elt-bench-{years}y-"))
    try:
        data = work / "jaffle-data"
        shutil.copytree(src, data)
        wh = work / "warehouse.duckdb"
        env = {**os.environ, "ELT_DUCKDB_PATH": str(wh), "ELT_LANDING_ROOT": str(work / "landing"), "ELT_JSON_LOGS": "1"}
        elt = str(BIN / "elt")
        load = [elt, "load", "jaffle_shop", "--path", str(data)]
        r_first = timed(load, env)
        with open(src / "raw_orders.csv") as fh:
            orders = sum(1 for _ in fh) - 1
        r: dict[str, object] = {"years": years, "orders": orders}
        r["first_load_s"], r["first_load_peak_mb"] = r_first
        raw_copy = work / "raw.duckdb"
        shutil.copy(wh, raw_copy)
        floor_script = ("import duckdb,sys,time; c=duckdb.connect(sys.argv[1]); t=time.perf_counter(); "
                        "c.execute(sys.argv[2]); print(time.perf_counter()-t)")
        limits = (f"SET memory_limit = '{os.environ.get('ELT_DUCKDB_MEMORY_LIMIT', '1GB')}'; "
                  f"SET threads = {os.environ.get('ELT_DUCKDB_THREADS', '2')};\n")
        copy = work / "floor" / "warehouse.duckdb"
        copy.parent.mkdir()
        # The full build and its floor writing tables, in pairs, ``repeat`` times: this machine's
        # speed moves by a quarter between consecutive minutes, so one pair can land anywhere from
        # 1.5x to 2x; the ratio is taken between the medians, and each pair's is listed.
        fulls: list[float] = []
        floors: list[float] = []
        for i in range(repeat):
            if i:  # back to the loaded, never transformed warehouse
                copied(raw_copy, wh)
            seconds, peak = timed([elt, "transform"], env)
            fulls.append(seconds)
            keep_peak(r, "full_peak_mb", peak)
            # the same SQL writing real tables, as a warehouse must (staging and marts are persisted
            # for BI tools), on a copy of the raw warehouse: the engine's cost for the pipeline's output
            copied(raw_copy, copy)
            seconds, peak = timed(
                [sys.executable, "-c", floor_script, str(copy), limits + FLOOR_SQL.replace("TEMP TABLE", "TABLE")], env)
            floors.append(seconds)
            keep_peak(r, "floor_tables_peak_mb", peak)
            copy.unlink()
        r["full_s"], r["full_runs_s"] = median(fulls), fulls
        r["floor_tables_s"], r["floor_tables_runs_s"] = median(floors), floors
        r["full_over_floor_tables_runs"] = [round(f / t, 2) for f, t in zip(fulls, floors)]
        r["floor_s"], r["floor_peak_mb"] = timed([sys.executable, "-c", floor_script, str(wh), FLOOR_SQL], env)
        # the same SQL under the models' DuckDB limits (config.yaml): what the engine itself needs here
        r["floor_limited_s"], r["floor_limited_peak_mb"] = timed(
            [sys.executable, "-c", floor_script, str(wh), limits + FLOOR_SQL], env)
        noops: list[float] = []
        runs: list[float] = []
        for _ in range(repeat):
            seconds, peak = timed([elt, "transform"], env)
            noops.append(seconds)
            keep_peak(r, "noop_peak_mb", peak)
            runs.append(timed([str(BIN / "sqlmesh"), "run"], env)[0])
        r["noop_s"], r["noop_runs_s"] = median(noops), noops
        r["sqlmesh_run_noop_s"], r["sqlmesh_run_noop_runs_s"] = median(runs), runs
        # One new day, ``repeat`` times from the same state: the warehouse (raw, ledger, SQLMesh
        # state) and landing as they were before it, restored before each repeat; the data keeps the new day.
        before = work / "before-new-day"
        before.mkdir()
        shutil.copy(wh, before / wh.name)
        shutil.copytree(work / "landing", before / "landing")
        append_day(data)
        os.sync()  # the copies above, written out before the timed commands
        days: list[float] = []
        day_loads: list[float] = []
        for i in range(repeat):
            if i:
                shutil.rmtree(work / "landing")
                shutil.copytree(before / "landing", work / "landing")
                copied(before / wh.name, wh)
            # the snapshot files read whole, landed whole, compared with raw's current state
            seconds, peak = timed(load, env)
            day_loads.append(seconds)
            keep_peak(r, "new_day_load_peak_mb", peak)
            seconds, peak = timed([elt, "transform"], env)
            days.append(seconds)
            keep_peak(r, "new_day_peak_mb", peak)
        r["new_day_s"], r["new_day_runs_s"] = median(days), days
        r["new_day_load_s"], r["new_day_load_runs_s"] = median(day_loads), day_loads
        shutil.rmtree(before)
        late_correction(data)
        subprocess.run(load, env=env, cwd=ROOT, check=True, capture_output=True)
        r["late_correction_s"], r["late_correction_peak_mb"] = timed([elt, "transform"], env)
        r["late_order_day"] = late_order(data)
        subprocess.run(load, env=env, cwd=ROOT, check=True, capture_output=True)
        r["late_order_s"], r["late_order_peak_mb"] = timed([elt, "transform"], env)
        r["scattered_days"] = scattered_corrections(data)
        subprocess.run(load, env=env, cwd=ROOT, check=True, capture_output=True)
        # the same change with every touched range restated on its own (the baseline of joining)
        shutil.copy(wh, raw_copy)
        separate = {**env, "ELT_RESTATE_JOIN_GAP_DAYS": "0", "ELT_RESTATE_MAX_RANGES": "1000000"}
        r["scattered_separate_s"], _ = timed([elt, "transform"], separate)
        copied(raw_copy, wh)
        r["scattered_s"], r["scattered_peak_mb"] = timed([elt, "transform"], env)
        full, noop = float(r["full_s"]), float(r["noop_s"])  # type: ignore[arg-type]
        r["full_over_floor"] = round(full / float(r["floor_s"]), 2)  # type: ignore[arg-type]
        r["full_over_floor_limited"] = round(full / float(r["floor_limited_s"]), 2)  # type: ignore[arg-type]
        r["full_over_floor_tables"] = round(full / float(r["floor_tables_s"]), 2)  # type: ignore[arg-type]
        r["noop_over_sqlmesh_run"] = round(noop / float(r["sqlmesh_run_noop_s"]), 2)  # type: ignore[arg-type]
        r["new_day_budget_s"] = round(noop + 0.1 * (full - noop), 2)
        r["scattered_over_full"] = round(float(r["scattered_s"]) / full, 2)  # type: ignore[arg-type]
        r["late_order_over_full"] = round(float(r["late_order_s"]) / full, 2)  # type: ignore[arg-type]
        raw_copy.unlink()
        if postgres:
            r.update(pg_new_day(years, src))
        return r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--repeat", type=int, default=3,
                        help="times the full build (with its floor), the no-op and the new day run; medians reported")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL cursor-source new day")
    parser.add_argument("--spark", type=int, nargs="*", metavar="YEARS",
                        help="only the Spark gateway beside DuckDB (full build, one new day) at these sizes (default 1)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.spark is not None:
        spark = [spark_sizes(y) for y in (args.spark or [1])]
        for r in spark:
            print(f"{r['years']}y Spark local: full {r['spark_full_s']}s (DuckDB {r['duckdb_full_s']}s), new day "
                  f"{r['spark_new_day_s']}s (DuckDB {r['duckdb_new_day_s']}s)", file=sys.stderr)
        print(json.dumps({"spark": spark}))
        return
    results = [one_size(y, postgres=not args.no_postgres, repeat=args.repeat) for y in args.years]
    for r in results:
        print(f"{r['years']}y {r['orders']:,} orders: full {r['full_s']}s (floor {r['floor_s']}s, as tables {r['floor_tables_s']}s), noop {r['noop_s']}s "
              f"(sqlmesh run {r['sqlmesh_run_noop_s']}s), new day {r['new_day_s']}s (budget {r['new_day_budget_s']}s; its "
              f"load {r['new_day_load_s']}s, first load {r['first_load_s']}s), "
              f"late correction {r['late_correction_s']}s, late order {r['late_order_s']}s "
              f"({r['late_order_over_full']} of full), {SCATTERED_ORDERS} orders corrected on {r['scattered_days']} days "
              f"{r['scattered_s']}s (each day's range on its own {r['scattered_separate_s']}s)"
              + (f", PostgreSQL cursor new day {r['pg_new_day_s']}s" if "pg_new_day_s" in r else ""), file=sys.stderr)
    out: dict[str, object] = {"sizes": results}
    if len(results) > 1:
        out["new_day_largest_over_smallest"] = round(float(results[-1]["new_day_s"]) / float(results[0]["new_day_s"]), 2)  # type: ignore[arg-type]
        # the file source's load of a new day: its files hold the whole history (a snapshot), so
        # this grows with history by design; the comparison with raw must not add more than that
        out["new_day_load_largest_over_smallest"] = round(
            float(results[-1]["new_day_load_s"]) / float(results[0]["new_day_load_s"]), 2)  # type: ignore[arg-type]
        out["first_load_largest_over_smallest"] = round(
            float(results[-1]["first_load_s"]) / float(results[0]["first_load_s"]), 2)  # type: ignore[arg-type]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
