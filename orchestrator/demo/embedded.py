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

from sqlglot import exp

from orchestrator.scheduling.loading import load_source_into_warehouse, print_load_report
from orchestrator.scheduling.locks import LockBusy, holding
from orchestrator.settings import Settings
from sources.logs import redact_userinfo
from orchestrator.transform.run import TransformFailed, make_context, transform
from sources.config import load_source
from sources.logs import get_logger

log = get_logger("orchestrator.demo.embedded")
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


def demo_data(settings: Settings, years: int | None) -> Path | None:
    """The folder of jafgen CSVs: ``JAFFLE_DATA_DIR``, or generated once under data/ (``years``:
    as given by --years, None when not given: 1)."""
    spec = load_source(SOURCE)
    custom = os.environ.get("JAFFLE_DATA_DIR")
    if custom:
        data_dir = Path(custom).expanduser().resolve()
        if not data_dir.is_dir():
            print(f"error: JAFFLE_DATA_DIR={data_dir} {'is not a folder' if data_dir.exists() else 'does not exist'}\n"
                  "  next: point JAFFLE_DATA_DIR at a folder of jafgen's raw_*.csv files, or unset it to have the "
                  f"demo generate them under {settings.data_dir}", file=sys.stderr)
            return None
        missing = [t.file for t in spec.tables.values() if not (data_dir / t.file).is_file()]
        if missing:
            print(f"error: JAFFLE_DATA_DIR={data_dir} lacks {', '.join(missing)} (expected jafgen's raw_*.csv)\n"
                  "  next: point it at the jaffle-data folder jafgen wrote, or unset it to generate the data", file=sys.stderr)
            return None
        print(f"using existing data in {data_dir} (JAFFLE_DATA_DIR)"
              + (f"; --years {years} is ignored: it applies to generated data" if years is not None else ""))
        return data_dir
    data_dir = settings.data_dir
    if all((data_dir / t.file).is_file() for t in spec.tables.values()):
        # said, or a newcomer takes the demo's numbers for the years asked for (a walkthrough)
        ignored = (f"; --years {years} is ignored: the data there was generated before, and is kept"
                   if years is not None else "")
        print(f"reusing generated data in {data_dir}{ignored} (delete it or `make clean-data` to regenerate)")
    else:
        generate(data_dir, years or 1)
    return data_dir


def print_summary(settings: Settings, summary, specs, started: float) -> None:  # type: ignore[no-untyped-def]
    """Row counts of the raw tables and marts, the audits, and where everything is."""
    ctx, _ = make_context(settings, quiet=True)
    try:
        adapter = ctx.engine_adapter

        def count(schema: str, table: str) -> int:
            return adapter.fetchone(exp.select("COUNT(*)").from_(exp.table_(table, db=schema, quoted=True)))[0]

        print("raw tables (rows, all batches):")
        for spec in specs:
            for table in spec.tables.values():
                print(f"  {spec.raw_schema}.{table.name:<22} {count(spec.raw_schema, table.name):>10,}")
        print("marts (rows):")
        for mart in MARTS:
            print(f"  marts.{mart:<36} {count('marts', mart):>10,}")
    finally:
        ctx.close()
    print(
        f"audits: {summary.audits_run} run on {summary.models_audited} models, {summary.audits_passed} passed"
        f"{'' if summary.audits_passed == summary.audits_run else ' (FAILURES above)'}"
    )
    print(f"plan: {'applied' if summary.applied_plan else 'no changes (already up to date)'}")
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        pg = PostgresSettings.from_env(settings.pg_prefix)
        print(f"warehouse: PostgreSQL {pg.user}@{pg.host}:{pg.port}/{pg.dbname} (SQLMesh state in schema sqlmesh)")
    elif settings.gateway == "spark":
        from sources.spark import spark_conf, spark_home

        conf = spark_conf(settings.project_root)
        if "spark.remote" in conf:
            print(f"warehouse: Spark Connect {redact_userinfo(conf['spark.remote'])} (its metastore and warehouse; "
                  f"SQLMesh state under {spark_home(settings.project_root)})")
        else:
            print(f"warehouse: Spark {conf.get('spark.master', '?')}, tables in {conf.get('spark.sql.warehouse.dir', '?')} "
                  f"(metastore and SQLMesh state under {spark_home(settings.project_root)})")
    else:
        print(f"warehouse: {settings.warehouse}")
    print(f"landing:   {redact_userinfo(str(settings.landing_location))}")
    print(f"elapsed:   {time.monotonic() - started:.1f}s")


def run_demo(settings: Settings, years: int | None = None) -> int:
    started = time.monotonic()
    if settings.gateway == "postgres":
        print("error: `elt demo` builds the pipeline from files on DuckDB or Spark; with ELT_GATEWAY=postgres run "
              "`elt demo --production` (app database, catalog API, S3 landing, PostgreSQL warehouse).", file=sys.stderr)
        return 2
    warehouse_from_env = bool(os.environ.get("ELT_DUCKDB_PATH"))
    spec = load_source(SOURCE)
    data_dir = demo_data(settings, years)
    if data_dir is None:
        return 2

    print("\n== 1/3 load: files -> landing (Parquet + manifest) -> raw tables")
    outcomes = load_source_into_warehouse(SOURCE, settings, path=data_dir)
    print_load_report(outcomes, settings)
    failed = [o for o in outcomes if o.error]
    if failed:
        print(f"\n{len(failed)} table(s) failed to load; fix them and rerun `make demo`.", file=sys.stderr)
        return 1

    print("\n== 2/3 transform: sqlmesh plan + run on prod (staging -> intermediate -> marts, audits)")
    try:
        # serialized with `elt transform`, the scheduler's transform job and `elt backfill`
        with holding(settings, "sqlmesh:prod", float(os.environ.get("ELT_SQLMESH_LOCK_WAIT_S", "3600"))):
            summary = transform(settings, environment="prod", allow_revert=True)  # a sandbox: any checkout
    except LockBusy as exc:
        print(f"\nerror: {exc}; see `elt runs` for the running transform, then rerun", file=sys.stderr)
        return 1
    except TransformFailed as exc:
        if "Could not set lock on file" in str(exc):
            raise  # `elt` says which process holds the warehouse file
        print(f"\n{exc}", file=sys.stderr)
        return 1

    print("\n== 3/3 summary")
    print_summary(settings, summary, [spec], started)
    env = f"ELT_DUCKDB_PATH={settings.warehouse} " if warehouse_from_env else ""
    if settings.gateway == "spark":
        env = "ELT_GATEWAY=spark " + (f"ELT_SPARK_HOME={os.environ['ELT_SPARK_HOME']} " if os.environ.get("ELT_SPARK_HOME") else "")
    print(
        "\nnext, from the project root (source .venv/bin/activate first):\n"
        f"  {env}sqlmesh ui                    # browse models and column-level lineage (http://127.0.0.1:8000)\n"
        f"  {env}sqlmesh plan dev              # after editing a model: preview the change in a dev environment\n"
        f"  {env}sqlmesh run                   # process intervals that are due\n"
        f"  {env}sqlmesh fetchdf \"select * from marts.customers limit 5\"\n"
        f"  {env}elt load jaffle_shop --path DIR   # load another folder of jafgen CSVs"
    )
    return 0
