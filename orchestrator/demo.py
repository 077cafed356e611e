"""The demo: Jaffle Shop from generated CSV files to audited marts in prod, then a summary.

Safe to rerun: existing generated data is reused, unchanged files are not landed again, and a
plan with no changes applies nothing. ``JAFFLE_DATA_DIR`` points it at an existing folder of
jafgen CSVs instead of generating data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.loading import load_source_into_warehouse, print_load_report
from orchestrator.settings import Settings
from orchestrator.transform import TransformFailed, make_context, transform
from sources.config import load_source
from sources.logs import get_logger

log = get_logger("orchestrator.demo")
SOURCE = "jaffle_shop"
MARTS = ("customers", "orders", "order_items", "products", "locations", "supplies")


def generate(data_dir: Path, years: int) -> None:
    """Run jafgen (pinned 0.4.14) so that it writes ``data_dir`` (it always writes ./jaffle-data)."""
    if data_dir.name != "jaffle-data":
        raise SystemExit(f"the demo data folder must be named jaffle-data (jafgen's choice), got {data_dir}")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    jafgen = Path(sys.executable).with_name("jafgen")
    print(f"generating {years} year(s) of Jaffle Shop data with jafgen into {data_dir} ...", flush=True)
    subprocess.run([str(jafgen), str(years)], cwd=data_dir.parent, check=True, stdout=subprocess.DEVNULL)


def run_demo(settings: Settings, years: int = 1) -> int:
    started = time.monotonic()
    if settings.gateway != "duckdb":
        print("error: `elt demo` builds the embedded DuckDB pipeline; unset ELT_GATEWAY (or set it to duckdb). "
              "Load real sources into PostgreSQL with `elt load SOURCE`.", file=sys.stderr)
        return 2
    warehouse_from_env = bool(os.environ.get("ELT_DUCKDB_PATH"))
    spec = load_source(SOURCE)
    custom = os.environ.get("JAFFLE_DATA_DIR")
    if custom:
        data_dir = Path(custom).expanduser().resolve()
        missing = [t.file for t in spec.tables.values() if not (data_dir / t.file).is_file()]
        if missing:
            print(f"error: JAFFLE_DATA_DIR={data_dir} lacks {', '.join(missing)} (expected jafgen's raw_*.csv)", file=sys.stderr)
            return 2
        print(f"using existing data in {data_dir} (JAFFLE_DATA_DIR)")
    else:
        data_dir = settings.data_dir
        if all((data_dir / t.file).is_file() for t in spec.tables.values()):
            print(f"reusing generated data in {data_dir} (delete it or `make clean-data` to regenerate)")
        else:
            generate(data_dir, years)

    print("\n== 1/3 load: files -> landing (Parquet + manifest) -> raw tables")
    outcomes = load_source_into_warehouse(SOURCE, settings, path=data_dir)
    print_load_report(outcomes, settings)
    failed = [o for o in outcomes if o.error]
    if failed:
        print(f"\n{len(failed)} table(s) failed to load; fix them and rerun `make demo`.", file=sys.stderr)
        return 1

    print("\n== 2/3 transform: sqlmesh plan + run on prod (staging -> intermediate -> marts, audits)")
    try:
        summary = transform(settings, environment="prod")
    except TransformFailed as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1

    print("\n== 3/3 summary")
    ctx, _ = make_context(settings, quiet=True)
    count = lambda table: ctx.engine_adapter.fetchone(f"SELECT COUNT(*) FROM {table}")[0]  # noqa: E731
    print("raw tables (rows, all batches):")
    for table in spec.tables.values():
        print(f"  {spec.raw_schema}.{table.name:<22} {count(f'{spec.raw_schema}.{table.name}'):>10,}")
    print("marts (rows):")
    for mart in MARTS:
        print(f"  marts.{mart:<36} {count(f'marts.{mart}'):>10,}")
    print(
        f"audits: {summary.audits_run} run on {summary.models_audited} models, {summary.audits_passed} passed"
        f"{'' if summary.audits_passed == summary.audits_run else ' (FAILURES above)'}"
    )
    ctx.close()
    print(f"plan: {'applied' if summary.applied_plan else 'no changes (already up to date)'}")
    print(f"warehouse: {settings.warehouse}")
    print(f"landing:   {settings.landing_location}")
    print(f"elapsed:   {time.monotonic() - started:.1f}s")
    env = f"ELT_DUCKDB_PATH={settings.warehouse} " if warehouse_from_env else ""
    print(
        "\nnext, from the project root (source .venv/bin/activate first):\n"
        f"  {env}sqlmesh ui                    # browse models and column-level lineage (http://127.0.0.1:8000)\n"
        f"  {env}sqlmesh plan dev              # preview a model change in a dev environment\n"
        f"  {env}sqlmesh run                   # process intervals that are due\n"
        f"  {env}sqlmesh fetchdf \"select * from marts.customers limit 5\"\n"
        "  elt load jaffle_shop --path DIR   # load another folder of jafgen CSVs"
    )
    return 0
