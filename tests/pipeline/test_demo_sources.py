"""The demo sources over the real protocols (PostgreSQL app database + catalog HTTP API):
daily incremental loads replayed over 10 days equal a one-shot load, and a loader killed with
SIGKILL at any step leaves nothing half-applied: a rerun gives the same marts as a clean run."""

from __future__ import annotations

import os
import signal
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.settings import Settings
from orchestrator.transform.run import transform
from sources.connections import PostgresSettings
from orchestrator.demo import appdb
from orchestrator.demo.catalog_api import CatalogAPI
from tests.conftest import BIN, copy_project, project_env, run

pytestmark = pytest.mark.slow
TOKEN = "demo-token-not-secret"
START = date(2018, 9, 1)
MARTS = ("customers", "orders", "order_items", "products", "locations", "supplies")


@pytest.fixture
def sources(pg_db, jaffle_data: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """App database seeded (nothing released yet) and the catalog API running, both on loopback."""
    env = {**pg_db.env("JAFFLE_APP"), "JAFFLE_CATALOG_TOKEN": TOKEN}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = PostgresSettings.from_env("JAFFLE_APP_")
    appdb.seed(settings, jaffle_data)
    with CatalogAPI(jaffle_data, TOKEN, as_of=START) as api:
        monkeypatch.setenv("JAFFLE_CATALOG_URL", api.url)
        yield settings, api, {**env, "JAFFLE_CATALOG_URL": api.url}


def _settings(tmp_path: Path, name: str) -> Settings:
    project = copy_project(tmp_path / name)
    return Settings(project_root=project, warehouse=project / "data" / "warehouse.duckdb",
                    landing_root=project / "data" / "landing", data_dir=project / "data" / "jaffle-data")


def _release(app: PostgresSettings, api: CatalogAPI, day: date) -> None:
    appdb.release(app, day)
    api.as_of = day


def _load_and_transform(settings: Settings) -> None:
    for source in ("jaffle_app", "jaffle_catalog"):
        outcomes = load_source_into_warehouse(source, settings)
        assert not [str(o.error) for o in outcomes if o.error]
    os.environ["ELT_DUCKDB_PATH"] = str(settings.warehouse)
    transform(settings, quiet=True)


def _mart(path: Path, mart: str):  # type: ignore[no-untyped-def]
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"SELECT * FROM marts.{mart}").to_arrow_table()
    finally:
        con.close()


def _assert_same_marts(a: Path, b: Path) -> None:
    for mart in MARTS:
        left, right = _mart(a, mart), _mart(b, mart)
        assert left.num_rows > 0 and left.num_rows == right.num_rows, mart
        con = duckdb.connect()
        con.register("l", left)
        con.register("r", right)
        diff = con.execute("SELECT count(*) FROM (SELECT * FROM l EXCEPT ALL SELECT * FROM r)").fetchone()[0]
        con.close()
        assert diff == 0, f"marts.{mart} differs in {diff} rows"


def test_ten_daily_incremental_loads_equal_one_full_load(sources, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, api, _ = sources
    daily = _settings(tmp_path, "daily")
    days = [START + timedelta(days=d) for d in range(10)]
    for day in days:
        _release(app, api, day)
        _load_and_transform(daily)
    once = _settings(tmp_path, "once")
    _load_and_transform(once)
    _assert_same_marts(daily.warehouse, once.warehouse)
    con = duckdb.connect(str(daily.warehouse), read_only=True)
    try:
        # orders came in 10 incremental batches, each starting at the committed cursor minus the lookback
        batches = con.execute("SELECT count(*) FROM elt_meta.loaded_batches WHERE raw_table = 'raw_jaffle_shop.orders'").fetchone()[0]
        assert batches == 10
        last = con.execute("SELECT max(ordered_at) FROM marts.orders").fetchone()[0]
        assert last.date() == days[-1]
    finally:
        con.close()


# the release day -> the warehouse of a clean load and transform of the sources released up to it,
# made once per test process: the kill tests compare with it (each test's app database is seeded
# from the session's jafgen data, so a clean build of the same day is the same, and its 8 s were
# spent again by each of the eight tests)
_CLEAN: dict[date, Path] = {}


def _clean_warehouse(tmp_path: Path, day: date) -> Path:
    if day not in _CLEAN:
        clean = _settings(tmp_path, "clean")
        _load_and_transform(clean)
        _CLEAN[day] = clean.warehouse
    return _CLEAN[day]


@pytest.mark.parametrize("by", ["KILL", "TERM"])
@pytest.mark.parametrize("point", ["extract.mid", "landing.before_manifest", "raw.mid_load", "raw.after_commit"])
def test_a_loader_killed_at_any_step_leaves_nothing_half_applied(sources, tmp_path: Path, point: str, by: str) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL (the OOM killer, a power cut) or SIGTERM (a scheduler's timeout, `docker stop`) at
    each step of a load. A SIGTERM unwinds as a Ctrl-C does and says so (before, `elt load` died
    with status -15 and no word)."""
    app, api, env = sources
    _release(app, api, START + timedelta(days=2))
    clean = _clean_warehouse(tmp_path, START + timedelta(days=2))

    crashed = _settings(tmp_path, "crashed")
    sub_env = project_env(crashed.project_root, **env, ELT_DUCKDB_PATH=str(crashed.warehouse),
                          ELT_LANDING_ROOT=str(crashed.landing_root), ELT_FAILPOINT=point, ELT_FAILPOINT_SIGNAL=by)
    killed = run([str(BIN / "elt"), "load", "jaffle_app"], cwd=crashed.project_root, env=sub_env, check=False)
    if by == "KILL":
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    else:
        assert killed.returncode == 128 + signal.SIGTERM, killed.stderr[-2000:]
        assert "interrupted: `elt load jaffle_app` stopped by SIGTERM; what it had not committed was rolled back" \
            in killed.stderr and "Traceback" not in killed.stderr, killed.stderr[-2000:]
    # after the crash: any batch folder without a manifest is invisible; rerun, then transform
    del sub_env["ELT_FAILPOINT"]
    run([str(BIN / "elt"), "load", "jaffle_app"], cwd=crashed.project_root, env=sub_env)
    run([str(BIN / "elt"), "load", "jaffle_catalog"], cwd=crashed.project_root, env=sub_env)
    os.environ["ELT_DUCKDB_PATH"] = str(crashed.warehouse)
    transform(crashed, quiet=True)
    _assert_same_marts(clean, crashed.warehouse)
    con = duckdb.connect(str(crashed.warehouse), read_only=True)
    try:
        for table in ("customers", "orders", "items"):
            total, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM raw_jaffle_shop.{table}").fetchone()
            assert total == distinct, f"raw {table} has duplicates after the crash and rerun"
    finally:
        con.close()


@pytest.mark.parametrize("point", ["extract.mid", "landing.before_manifest", "raw.mid_load", "raw.after_commit"])
def test_killed_loads_into_postgres_raw_with_s3_landing_rerun_to_a_clean_result(  # type: ignore[no-untyped-def]
    sources, pg_server, s3_bucket, tmp_path: Path, point: str
) -> None:
    import psycopg2

    app, api, env = sources
    _release(app, api, START + timedelta(days=2))
    admin = psycopg2.connect(pg_server.dsn)
    admin.autocommit = True
    databases = {}
    for name in ("clean", "crashed"):
        db = f"wh_{name}_{point.replace('.', '_')}"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
            cur.execute(f'CREATE DATABASE "{db}"')
        databases[name] = db
    project = copy_project(tmp_path / "project")
    s3_env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "ELT_S3_ENDPOINT")}

    def load(name: str, failpoint: str | None = None, check: bool = True):  # type: ignore[no-untyped-def]
        sub_env = project_env(project, **env, **s3_env, ELT_GATEWAY="postgres", ELT_PG_HOST=pg_server.host,
                              ELT_PG_PORT=str(pg_server.port), ELT_PG_USER=pg_server.user, ELT_PG_DATABASE=databases[name],
                              ELT_LANDING_URL=f"s3://{s3_bucket}/{name}")
        if failpoint:
            sub_env["ELT_FAILPOINT"] = failpoint
        return run([str(BIN / "elt"), "load", "jaffle_app"], cwd=project, env=sub_env, check=check)

    load("clean")
    assert load("crashed", point, check=False).returncode == -signal.SIGKILL
    load("crashed")

    def raw_rows(name: str) -> dict[str, list[tuple]]:
        con = psycopg2.connect(pg_server.dsn.replace("dbname=postgres", f"dbname={databases[name]}"))
        out = {}
        with con, con.cursor() as cur:
            for table, cols in (("customers", "id, name, updated_at"), ("items", "id, order_id, sku, updated_at"),
                                ("orders", "id, customer, ordered_at, store_id, subtotal, tax_paid, order_total, updated_at"),
                                ("tweets", "id, user_id, tweeted_at, content")):
                cur.execute(f"SELECT {cols} FROM raw_jaffle_shop.{table} ORDER BY id")
                out[table] = cur.fetchall()
            cur.execute("SELECT table_name, cursor_value FROM elt_meta.source_cursors ORDER BY 1")
            out["cursors"] = cur.fetchall()
        con.close()
        return out

    clean, crashed = raw_rows("clean"), raw_rows("crashed")
    assert clean["orders"] and clean == crashed
    admin.close()


def test_the_production_demo_refuses_an_as_of_before_what_it_released(  # type: ignore[no-untyped-def]
    pg_db, s3_endpoint, s3_bucket, small_jaffle: Path, tmp_path: Path
) -> None:
    """The app database cannot take rows back while the catalog API would hide later stores: an
    earlier --as-of is refused before anything is loaded (it left orders whose locations were gone)."""
    app = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    appdb.seed(app, small_jaffle)
    released = date(2018, 9, 3)  # the small data's orders lie on 2018-09-01..04
    appdb.release(app, released)
    assert appdb.released_through(app) == released
    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_db.env("ELT_PG"), **pg_db.env("JAFFLE_APP"), **s3_endpoint.env(),
                      ELT_LANDING_URL=f"s3://{s3_bucket}/landing", JAFFLE_DATA_DIR=str(small_jaffle))
    earlier = released - timedelta(days=1)
    proc = run([str(BIN / "elt"), "demo", "--production", "--as-of", earlier.isoformat()], cwd=project, env=env,
               check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--as-of {earlier} is earlier than what the application database {app.dbname} has released already " \
           f"(orders through {released})" in proc.stderr, proc.stderr
    assert "== 2/4" not in proc.stdout  # nothing was loaded
    assert appdb.released_through(app) == released
