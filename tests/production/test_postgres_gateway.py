"""The production path on real servers: PostgreSQL (app database, warehouse, SQLMesh state) and an
S3-compatible endpoint, both on loopback, started by the fixtures.

``prod_pg`` runs `elt demo --production` once for the module on the session's jafgen data: app
database + catalog API -> S3 landing -> raw, models and state in PostgreSQL. Tests that change
the warehouse build a production warehouse of their own (``fresh_prod``: new databases and a new
bucket), so they never depend on each other's order.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import duckdb
import psycopg2
import pytest
from psycopg2 import errors, sql

from tests.conftest import BIN, copy_project, project_env, run

MARTS = ("customers", "orders", "order_items", "products", "locations", "supplies")


@dataclass
class ProdWarehouse:
    server: Any
    project: Path
    env: dict[str, str]
    warehouse_db: str
    app_db: str
    bucket: str
    output: str

    def dsn(self, dbname: str | None = None, user: str | None = None) -> str:
        return (f"host={self.server.host} port={self.server.port} user={user or self.server.user} "
                f"dbname={dbname or self.warehouse_db}")



def build_production(server, s3, data: Path, base: Path, tag: str) -> ProdWarehouse:  # type: ignore[no-untyped-def]
    """`elt demo --production` into new databases and a new bucket. (A copy made with CREATE
    DATABASE ... TEMPLATE would not do: SQLMesh's state names models by database.)"""
    tag = f"{tag}_{uuid.uuid4().hex[:6]}"
    warehouse_db, app_db, bucket = f"wh_{tag}", f"app_{tag}", f"prod-{tag.replace('_', '-')}"
    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(warehouse_db)))  # the app DB: created by the demo
    admin.close()
    s3_client(s3.env()).create_bucket(Bucket=bucket)
    project = copy_project(base / "project")
    env = project_env(project, JAFFLE_DATA_DIR=str(data), ELT_LANDING_URL=f"s3://{bucket}/landing",
                      JAFFLE_APP_DATABASE=app_db, **server.env("ELT_PG"), **s3.env())
    env["ELT_PG_DATABASE"] = warehouse_db
    proc = run([str(BIN / "elt"), "demo", "--production"], cwd=project, env=env, timeout=900)
    return ProdWarehouse(server, project, env, warehouse_db, app_db, bucket, proc.stdout)


def s3_client(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=env["ELT_S3_ENDPOINT"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])


def pg_rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def prod_pg(pg_server, s3_endpoint, jaffle_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ProdWarehouse:  # type: ignore[no-untyped-def]
    return build_production(pg_server, s3_endpoint, jaffle_data, tmp_path_factory.mktemp("prod"), "main")


@pytest.fixture
def fresh_prod(pg_server, s3_endpoint, jaffle_data: Path, tmp_path: Path) -> ProdWarehouse:  # type: ignore[no-untyped-def]
    """A production warehouse of the test's own, for tests that change prod."""
    return build_production(pg_server, s3_endpoint, jaffle_data, tmp_path, "own")


def normalized(value: Any) -> Any:
    """One representation per value across drivers (DuckDB and psycopg2 agree on most types)."""
    if isinstance(value, Decimal):
        return str(value.normalize()) if value == value.to_integral() else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def test_production_demo_runs_every_layer_on_postgres_with_s3_landing(prod_pg: ProdWarehouse) -> None:
    out = prod_pg.output
    assert "catalog API: serving the demo catalog" in out
    assert re.search(r"audits: (\d+) run on \d+ models, \1 passed", out), out
    # landing is on S3: one manifest per landed batch, for every table of both sources
    s3 = s3_client(prod_pg.env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=prod_pg.bucket, Prefix="landing/")["Contents"]]
    tables_with_manifest = {tuple(k.split("/")[1:3]) for k in keys if k.endswith("manifest.json")}
    assert tables_with_manifest == {("jaffle_app", t) for t in ("customers", "orders", "items", "tweets")} | \
        {("jaffle_catalog", t) for t in ("products", "stores", "supplies")}
    # raw, models and SQLMesh state are in the PostgreSQL warehouse; nothing went to a DuckDB file
    schemas = {r[0] for r in pg_rows(prod_pg.dsn(), "SELECT nspname FROM pg_namespace")}
    assert {"raw_jaffle_shop", "staging", "intermediate", "marts", "sqlmesh", "sqlmesh__marts", "elt_meta"} <= schemas
    assert pg_rows(prod_pg.dsn(), "SELECT count(*) FROM sqlmesh._environments WHERE name = 'prod'") == [(1,)]
    assert not (prod_pg.project / "data" / "warehouse.duckdb").exists()
    # physical names are md5 hashes of a fixed length, whatever the model is called: PostgreSQL's
    # 63-character limit cannot bite (it would truncate a longer name silently, so check the form)
    physical = [r[0] for r in pg_rows(prod_pg.dsn(), "SELECT relname FROM pg_class c JOIN pg_namespace n "
                                      "ON n.oid = c.relnamespace WHERE n.nspname LIKE 'sqlmesh\\_\\_%' "
                                      "AND c.relkind IN ('r', 'v', 'm', 'p')")]
    assert len(physical) >= 14, physical  # every model of the project
    odd = [name for name in physical if not re.fullmatch(r"sqlmesh_md5__[0-9a-f]{32}(__[a-z0-9_]{1,16})?", name)]
    assert not odd, odd


def test_every_model_on_postgres_equals_the_duckdb_gateways_row_for_row(prod_pg: ProdWarehouse, demo_project) -> None:  # type: ignore[no-untyped-def]
    """Same jafgen input: files -> DuckDB (elt demo) against app DB + API -> S3 -> PostgreSQL.
    Every staging, intermediate and mart model, so an engine difference cannot hide in a layer
    no mart reads (stg_jaffle_shop__tweets) or cancel out on the way up."""
    project, _ = demo_project
    con = duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True)
    try:
        models = [tuple(r) for r in con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE schema_name IN ('staging', 'intermediate', 'marts') "
            "ORDER BY 1, 2").fetchall()]
        assert {m for s, m in models if s == "marts"} == set(MARTS) and len(models) == 14, models
        for schema, model in models:
            name = f"{schema}.{model}"
            duck_cols = [r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
                "ORDER BY column_index", [schema, model]).fetchall()]
            pg_cols = [r[0] for r in pg_rows(prod_pg.dsn(), "SELECT column_name FROM information_schema.columns "
                                             "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                                             [schema, model])]
            assert pg_cols == duck_cols, f"{name}: columns differ"
            cols = ", ".join(f'"{c}"' for c in duck_cols)
            duck = Counter(tuple(map(normalized, r)) for r in con.execute(f"SELECT {cols} FROM {name}").fetchall())
            pg = Counter(tuple(map(normalized, r)) for r in pg_rows(prod_pg.dsn(), f"SELECT {cols} FROM {name}"))
            assert sum(pg.values()) == sum(duck.values()) > 0, f"{name}: row counts differ"
            only_pg, only_duck = pg - duck, duck - pg
            assert not only_pg and not only_duck, (
                f"{name}: {sum(only_pg.values())} rows only on PostgreSQL (e.g. {next(iter(only_pg), None)}), "
                f"{sum(only_duck.values())} only on DuckDB (e.g. {next(iter(only_duck), None)})")
    finally:
        con.close()


def test_model_unit_tests_pass_on_postgres(prod_pg: ProdWarehouse) -> None:
    proc = run([str(BIN / "sqlmesh"), "--gateway", "postgres", "test"], cwd=prod_pg.project, env=prod_pg.env, timeout=300)
    ran = re.search(r"Ran `(\d+)` Tests Against `postgres`", proc.stdout + proc.stderr)
    assert ran and int(ran.group(1)) >= 8, proc.stdout + proc.stderr  # every test in tests/models/*.yaml


def test_rerunning_the_production_demo_loads_and_changes_nothing(prod_pg: ProdWarehouse) -> None:
    dsn = prod_pg.dsn()

    def state() -> tuple[Any, ...]:
        ledger = pg_rows(dsn, "SELECT source, table_name, count(*) FROM elt_meta.loaded_batches GROUP BY 1, 2 ORDER BY 1, 2")
        marts = [pg_rows(dsn, f"SELECT count(*), md5(string_agg(m::text, '' ORDER BY m::text)) FROM marts.{m} AS m") for m in MARTS]
        return ledger, marts

    before = state()
    # the password from a file, as the README recommends (the test server trusts loopback: any will do)
    env = {k: v for k, v in prod_pg.env.items() if k != "ELT_PG_PASSWORD"}
    secret = prod_pg.project / "pg-password"
    secret.write_text("not-needed-here\n")
    env["ELT_PG_PASSWORD_FILE"] = str(secret)
    proc = run([str(BIN / "elt"), "demo", "--production"], cwd=prod_pg.project, env=env, timeout=600)
    # the app database's cursors find nothing new, and the catalog API's full snapshots equal the
    # landed ones: no batch, no restatement, the same marts
    assert state() == before
    assert "plan: no changes" in proc.stdout, proc.stdout
    # the next steps include what bare sqlmesh needs, which reads no _FILE variable (a walkthrough
    # ran them as printed and got a traceback)
    assert 'export ELT_PG_PASSWORD="$(cat "$ELT_PG_PASSWORD_FILE")"' in proc.stdout, proc.stdout
    assert "export ELT_PG_PASSWORD" not in prod_pg.output  # the first run had the variable itself


def test_bi_role_reads_marts_and_nothing_else(fresh_prod: ProdWarehouse) -> None:
    prod_pg = fresh_prod
    warehouse, env = prod_pg.warehouse_db, dict(prod_pg.env)
    role = f"bi_{uuid.uuid4().hex[:6]}"
    env.update(ELT_GATEWAY="postgres", ELT_BI_ROLE=role, ELT_BI_PASSWORD="not-a-real-secret")
    # as on PostgreSQL 14 and older (or a database upgraded from one): PUBLIC may create in public
    admin = psycopg2.connect(prod_pg.dsn(warehouse))
    with admin, admin.cursor() as cur:
        cur.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        # a server that logs DDL, as audits ask for: the password must not be in the statement it logs
        cur.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'ddl'").format(sql.Identifier(warehouse)))
        cur.execute("SHOW data_directory")
        server_log = Path(cur.fetchone()[0]).parent / "log"  # pg_ctl -l (tests/servers.py)
    admin.close()
    logged_before = server_log.stat().st_size
    first = run([str(BIN / "elt", ), "bi-role"], cwd=prod_pg.project, env=env)
    again = run([str(BIN / "elt"), "bi-role"], cwd=prod_pg.project, env=env)  # idempotent
    admin = psycopg2.connect(prod_pg.dsn(warehouse))
    with admin, admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} RESET log_statement").format(sql.Identifier(warehouse)))
    admin.close()
    with server_log.open("rb") as log_file:
        log_file.seek(logged_before)
        logged = log_file.read().decode(errors="replace")
    assert logged.count(f'ALTER ROLE "{role}" PASSWORD \'SCRAM-SHA-256$') == 2, logged  # sent hashed, twice
    assert "not-a-real-secret" not in logged
    assert f"created role {role}" in first.stdout and f"updated role {role}" in again.stdout
    assert "revoked from PUBLIC: TEMPORARY on database" in first.stdout and "WARNING" not in first.stdout
    assert "not-a-real-secret" not in first.stdout + first.stderr + again.stdout + again.stderr

    def as_bi(query: str) -> list[tuple[Any, ...]]:
        """Runs ``query`` as the BI role with read-only transactions switched off (anyone can do that
        in their own session), so a refused write proves a missing privilege, not the setting."""
        con = psycopg2.connect(prod_pg.dsn(warehouse, user=role))
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute("SHOW default_transaction_read_only")
                assert cur.fetchone() == ("on",)
                cur.execute("SET default_transaction_read_only = off")
                cur.execute(query)
                return cur.fetchall() if cur.description else []
        finally:
            con.close()

    for mart in MARTS:
        assert as_bi(f"SELECT count(*) FROM marts.{mart}")[0][0] > 0
    # column comments reach BI tools through the standard catalog
    assert as_bi("SELECT col_description('marts.customers'::regclass, 1)") == [("Customer key (UUID string).",)]

    physical = pg_rows(prod_pg.dsn(warehouse), "SELECT schemaname || '.' || tablename FROM pg_tables "
                                                "WHERE schemaname = 'sqlmesh__marts' LIMIT 1")[0][0]
    forbidden_reads = ["SELECT * FROM raw_jaffle_shop.orders LIMIT 1", "SELECT * FROM staging.stg_jaffle_shop__orders LIMIT 1",
                       "SELECT * FROM sqlmesh._environments LIMIT 1", f"SELECT * FROM {physical} LIMIT 1",
                       "SELECT * FROM elt_meta.loaded_batches LIMIT 1"]
    writes = ["INSERT INTO marts.locations (location_id) VALUES ('x')", "DELETE FROM marts.customers",
              "UPDATE marts.products SET product_name = 'x'", "CREATE TABLE marts.bi_scratch (x int)",
              "CREATE TABLE public.bi_scratch (x int)", "CREATE TEMP TABLE bi_scratch (x int)",
              "DROP VIEW marts.customers", "CREATE SCHEMA bi_scratch"]
    for query in forbidden_reads + writes:
        with pytest.raises(errors.InsufficientPrivilege):
            as_bi(query)

    # a deploy that re-creates a mart's view keeps it readable (default privileges)
    changed = copy_project(prod_pg.project.parent / "project-bi")
    model = changed / "models" / "marts" / "locations.sql"
    model.write_text(model.read_text().replace("FROM", "-- deployed after the grant\nFROM", 1))
    run([str(BIN / "sqlmesh"), "--gateway", "postgres", "plan", "--auto-apply", "--no-prompts"], cwd=changed,
        env=dict(env, ELT_PROJECT_DIR=str(changed)), timeout=300)
    assert as_bi("SELECT count(*) FROM marts.locations")[0][0] > 0


def test_restating_one_week_recomputes_only_that_week(fresh_prod: ProdWarehouse) -> None:
    prod_pg = fresh_prod
    warehouse, app, env = prod_pg.warehouse_db, prod_pg.app_db, dict(prod_pg.env)
    env.update(ELT_GATEWAY="postgres", **prod_pg.server.env("JAFFLE_APP"))
    env["JAFFLE_APP_DATABASE"] = app
    dsn, app_dsn = prod_pg.dsn(warehouse), prod_pg.dsn(app)
    week_start, week_end = "2018-10-08", "2018-10-14"
    # the source corrects one order inside the week and one outside it (tax and total up one cent)
    inside, outside = (pg_rows(app_dsn, "SELECT id FROM jaffle.orders WHERE ordered_at::date BETWEEN %s AND %s "
                                        "ORDER BY id LIMIT 1", [a, b])[0][0]
                       for a, b in ((week_start, week_end), ("2018-11-01", "2018-11-30")))
    con = psycopg2.connect(app_dsn)
    with con, con.cursor() as cur:
        cur.execute("UPDATE jaffle.orders SET tax_paid = tax_paid + 1, order_total = order_total + 1, "
                    "updated_at = now() WHERE id IN (%s, %s)", [inside, outside])
    con.close()
    run([str(BIN / "elt"), "load", "jaffle_app", "--table", "orders"], cwd=prod_pg.project, env=env)

    def snapshot(mart: str, key: str) -> dict[str, tuple[str, str]]:
        rows = pg_rows(dsn, f"SELECT {key}, ordered_at::date::text, md5(m::text) FROM marts.{mart} AS m")
        return {k: (day, digest) for k, day, digest in rows}

    before = {m: snapshot(m, k) for m, k in (("orders", "order_id"), ("order_items", "order_item_id"))}
    run([str(BIN / "sqlmesh"), "--gateway", "postgres", "plan", "--restate-model", "staging.stg_jaffle_shop__orders",
         "--start", week_start, "--end", week_end, "--auto-apply", "--no-prompts"], cwd=prod_pg.project, env=env, timeout=300)
    after = {m: snapshot(m, k) for m, k in (("orders", "order_id"), ("order_items", "order_item_id"))}

    for mart in before:
        assert before[mart].keys() == after[mart].keys(), f"marts.{mart}: rows added or lost"
        outside_week = [k for k, (day, _) in before[mart].items() if not week_start <= day <= week_end]
        assert outside_week and all(before[mart][k] == after[mart][k] for k in outside_week), \
            f"marts.{mart}: a row outside the restated week changed"
    changed = {k for k in before["orders"] if before["orders"][k] != after["orders"][k]}
    assert changed == {inside}  # recomputed inside the week; the correction outside it waits for its own restatement
    totals = dict(pg_rows(dsn, "SELECT order_id, tax_paid_cents FROM marts.orders WHERE order_id IN (%s, %s)", [inside, outside]))
    raw = dict(pg_rows(app_dsn, "SELECT id, tax_paid FROM jaffle.orders WHERE id IN (%s, %s)", [inside, outside]))
    assert totals[inside] == raw[inside] and totals[outside] == raw[outside] - 1

    # the literal form: restate the incremental mart itself for the week. Damage one row
    # inside the week and one outside it in the mart's physical table (as a stray write would):
    # the restatement repairs the one inside, and every row outside the week stays byte for byte
    view = pg_rows(dsn, "SELECT definition FROM pg_views WHERE schemaname = 'marts' AND viewname = 'orders'")[0][0]
    table = re.search(r"sqlmesh__marts\.(sqlmesh_md5__[0-9a-f]+)", view).group(0)
    day_of = {k: day for k, (day, _) in after["orders"].items()}
    hit_in = sorted(k for k, day in day_of.items() if week_start <= day <= week_end and k != inside)[0]
    hit_out = sorted(k for k, day in day_of.items() if day > "2018-11-01")[0]
    con = psycopg2.connect(dsn)
    with con, con.cursor() as cur:
        cur.execute(f"UPDATE {table} SET order_total_cents = -1 WHERE order_id IN (%s, %s)", [hit_in, hit_out])
        assert cur.rowcount == 2
    con.close()
    damaged = snapshot("orders", "order_id")
    run([str(BIN / "sqlmesh"), "--gateway", "postgres", "plan", "--restate-model", "marts.orders",
         "--start", week_start, "--end", week_end, "--auto-apply", "--no-prompts"], cwd=prod_pg.project, env=env, timeout=300)
    restated = snapshot("orders", "order_id")
    assert restated.keys() == damaged.keys()
    assert restated[hit_in] == after["orders"][hit_in]  # recomputed: repaired
    assert restated[hit_out] == damaged[hit_out] != after["orders"][hit_out]  # outside the window: untouched
    assert all(restated[k] == damaged[k] for k, day in day_of.items() if not week_start <= day <= week_end)
    assert all(restated[k] == after["orders"][k] for k, day in day_of.items() if week_start <= day <= week_end)


def test_backfill_of_one_week_on_postgres_reads_and_changes_only_that_week(fresh_prod: ProdWarehouse) -> None:
    """`elt backfill` on the production path: the app database's orders are re-read for the week
    only (window_column), the week is restated, and a second run changes nothing more."""
    prod = fresh_prod
    env = dict(prod.env, ELT_GATEWAY="postgres", **prod.server.env("JAFFLE_APP"))
    env["JAFFLE_APP_DATABASE"] = prod.app_db
    dsn, app_dsn = prod.dsn(), prod.dsn(prod.app_db)
    week = ("2018-10-08", "2018-10-14")
    inside, outside = (pg_rows(app_dsn, "SELECT id FROM jaffle.orders WHERE ordered_at::date BETWEEN %s AND %s "
                                        "ORDER BY id LIMIT 1", list(days))[0][0]
                       for days in (week, ("2018-11-01", "2018-11-30")))
    in_week = pg_rows(app_dsn, "SELECT count(*) FROM jaffle.orders WHERE ordered_at::date BETWEEN %s AND %s", list(week))[0][0]
    items_in_week = pg_rows(app_dsn, "SELECT count(*) FROM jaffle.items WHERE order_id IN (SELECT id FROM jaffle.orders "
                                     "WHERE ordered_at::date BETWEEN %s AND %s)", list(week))[0][0]
    assert 0 < items_in_week < pg_rows(app_dsn, "SELECT count(*) FROM jaffle.items")[0][0]
    # a correction the source made without touching updated_at (the cursor cannot see it)
    con = psycopg2.connect(app_dsn)
    with con, con.cursor() as cur:
        cur.execute("UPDATE jaffle.orders SET tax_paid = tax_paid + 1, order_total = order_total + 1 WHERE id IN (%s, %s)",
                    [inside, outside])
    con.close()

    def orders() -> dict[str, str]:
        return dict(pg_rows(dsn, "SELECT order_id, md5(m::text) FROM marts.orders AS m"))

    before = orders()
    first = run([str(BIN / "elt"), "backfill", "jaffle_app", "--start", week[0], "--end", week[1]],
                cwd=prod.project, env=env, timeout=600)
    after = orders()
    assert {k for k in before if before[k] != after[k]} == {inside}, first.stdout
    assert re.search(rf"orders\s+loaded\s+{in_week:,}\s", first.stdout), first.stdout  # the week's orders only
    # raw gains what differs from its latest versions: the corrected order, no copy of the rest
    assert re.search(rf"orders\s+loaded\s+{in_week:,}\s+1\s", first.stdout), first.stdout
    # items have no window column: read through their orders' window (the week's items), unchanged
    assert re.search(rf"items\s+loaded\s+{items_in_week:,}\s+0\s", first.stdout), first.stdout
    assert re.search(r"marts\.orders\s+0\s+1\s+0", first.stdout), first.stdout
    # what a window read cannot see is said (deletions, rows moved out, changes outside the week)
    assert re.search(r"note: orders, items \(through orders\), tweets were re-read for the window only", first.stdout), first.stdout

    second = run([str(BIN / "elt"), "backfill", "jaffle_app", "--start", week[0], "--end", week[1]],
                 cwd=prod.project, env=env, timeout=600)
    assert orders() == after
    assert re.search(r"marts\.orders\s+0\s+0\s+0", second.stdout), second.stdout
    for table in ("customers", "orders", "items", "tweets"):  # nothing differs: raw gains nothing
        assert re.search(rf"{table}\s+loaded\s+[\d,]+\s+0\s", second.stdout), second.stdout
    # both are in the run history, in the warehouse's elt_meta, with what each changed
    recorded = pg_rows(dsn, "SELECT status, source, interval_start::date::text, interval_end::date::text, tables_json "
                            "FROM elt_meta.job_runs WHERE job = 'elt backfill' ORDER BY started_at")
    assert [r[:4] for r in recorded] == [("succeeded", "jaffle_app", "2018-10-08", "2018-10-15")] * 2, recorded
    assert [json.loads(r[4])["marts.orders"]["changed"] for r in recorded] == [1, 0], recorded
    # the next scheduled transform does not restate whole models for the backfill's batches
    transform = run([str(BIN / "elt"), "transform"], cwd=prod.project, env=env, timeout=600)
    assert "restated nothing" in transform.stdout, transform.stdout
    assert orders() == after

    # the way out that a backfill whose rows failed an audit gives: the corrected rows are re-read
    # with the backfill's window. A plain load reads from the cursor and does not see a correction
    # that left it where it was; it said to, and the transform failed again (an on-call probe)
    con = psycopg2.connect(app_dsn)
    with con, con.cursor() as cur:
        cur.execute("UPDATE jaffle.orders SET tax_paid = tax_paid - 1, order_total = order_total - 1 WHERE id = %s",
                    [inside])
    con.close()
    plain = run([str(BIN / "elt"), "load", "jaffle_app", "--table", "orders"], cwd=prod.project, env=env, timeout=600)
    run([str(BIN / "elt"), "transform"], cwd=prod.project, env=env, timeout=600)
    assert orders() == after, plain.stdout  # not seen
    windowed = run([str(BIN / "elt"), "load", "jaffle_app", "--table", "orders", "--window", *week], cwd=prod.project,
                   env=env, timeout=600)
    assert re.search(rf"orders\s+loaded\s+{in_week:,}\s+1\s", windowed.stdout), windowed.stdout
    run([str(BIN / "elt"), "transform"], cwd=prod.project, env=env, timeout=600)
    assert orders()[inside] == before[inside] and orders() != after
