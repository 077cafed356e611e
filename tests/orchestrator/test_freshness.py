"""Freshness on a known history: ages are the age of the newest *data* (a table's time column),
else of the newest extraction, with the last load or build beside; ``unknown`` says why."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg2
import pytest

from orchestrator.observe.freshness import Freshness, evaluate, render
from sources.config import DECLARATIONS_DIR
from sources.load.base import LEDGER_COLUMNS
from tests.conftest import BIN, run
from tests.orchestrator.conftest import Project

NOW = datetime(2018, 9, 6)  # the small shop's newest order is 2018-09-04 12:00: 36h before


@pytest.fixture
def shop(project: Project, small_jaffle: Path, tmp_path: Path) -> tuple[Project, Path]:
    """The small shop loaded by jaffle_shop (declared `freshness: 26h` here) and transformed, with the
    ledger and the watermark set to a known history: extracted 2018-09-05 00:00, loaded 00:05, built 00:10."""
    return _shop(project, small_jaffle, tmp_path)


def _shop(project: Project, small_jaffle: Path, tmp_path: Path) -> tuple[Project, Path]:
    declarations = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, declarations)
    shop_yaml = declarations / "jaffle_shop.yaml"
    shop_yaml.write_text(shop_yaml.read_text() + "freshness: 26h\n")
    project.env.update(ELT_DECLARATIONS_DIR=str(declarations), ELT_JOBS="jaffle_shop,jaffle_app,transform")
    for step in (("load", "jaffle_shop", "--path", str(small_jaffle)), ("transform",)):
        proc = project.elt(*step, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("UPDATE elt_meta.loaded_batches SET extracted_at = '2018-09-05 00:00', loaded_at = '2018-09-05 00:05'")
        con.execute("UPDATE elt_meta.transform_watermarks SET finished_at = '2018-09-05 00:10'")
    return project, declarations


def _lines(stdout: str) -> dict[str, str]:
    """Each line by its subject, without the `  owner ...` that `elt freshness` still appends to stale
    lines (the line names its owner itself)."""
    return {line.split(":")[0]: line.split("  owner ")[0] for line in stdout.splitlines()}


def _by_subject(results: list[Freshness] | None) -> dict[str, Freshness]:
    assert results is not None
    return {f.subject: f for f in results}


def test_ages_are_the_newest_data_with_the_last_load_and_build_beside(shop: tuple[Project, Path]) -> None:
    project, declarations = shop
    out = project.elt("freshness", "--now", NOW.isoformat())
    assert out.returncode == 1, out.stdout + out.stderr  # the orders are stale
    lines = _lines(out.stdout)
    # a raw table with a time column: its newest order, loaded a day ago by the source that declares it
    assert lines["raw_jaffle_shop.orders"] == (
        "raw_jaffle_shop.orders: stale (newest data 36.0h old, max 26.0h); ordered_at up to 2018-09-04 12:00, "
        "last loaded 23.9h ago by jaffle_shop; source jaffle_shop, owner data-team@example.com")
    # no time column: the newest extraction that brought rows
    assert lines["raw_jaffle_shop.customers"] == (
        "raw_jaffle_shop.customers: fresh (newest extraction 24.0h old, max 26.0h); newest data unknown "
        "(no time column), last loaded 23.9h ago by jaffle_shop; source jaffle_shop, owner data-team@example.com")
    # declared by jaffle_app too: the line names the source that loads it, with that source's limit
    assert lines["raw_jaffle_shop.tweets"] == (
        "raw_jaffle_shop.tweets: stale (newest data 4.6d old, max 26.0h); tweeted_at up to 2018-09-01 10:00, "
        "last loaded 23.9h ago by jaffle_shop; source jaffle_shop, owner data-team@example.com")
    # a mart with a time column, built by the day: it keeps ordered_at as the order's day (UTC
    # midnight), and SQLMesh builds a day once it is over, so its age counts from the end of its
    # newest day. At midnight the 5th has just ended: the 4th is all a healthy build has, for the
    # maximum's two hours beyond the day (from the start of the 4th, 48 hours, it read "stale"
    # from 02:00 every day: a probe)
    assert lines["marts.orders"] == (
        "marts.orders: fresh (newest day 2018-09-04 over 24.0h ago, max 26.0h); ordered_at up to 2018-09-04 00:00, "
        "last built 23.8h ago; from jaffle_shop, owner data-team")
    # a FULL mart whose freshness column holds days (the newest order's day, from the daily staging
    # orders; tagged 'freshness_column:last_ordered_at:day') counts from that day's end too: measured
    # from the row it read stale 22 hours a day on a healthy pipeline (a walkthrough)
    assert lines["marts.customers"] == (
        "marts.customers: fresh (newest day 2018-09-04 over 24.0h ago, max 26.0h); last_ordered_at up to "
        "2018-09-04 00:00, last built 23.8h ago; from jaffle_shop, owner data-team"), out.stdout
    # at 02:00:01 the 5th has been over longer than the maximum, and it is not built
    late = project.elt("freshness", "--now", "2018-09-06T02:00:01")
    assert _lines(late.stdout)["marts.orders"].startswith(
        "marts.orders: stale (newest day 2018-09-04 over 26.0h ago, max 26.0h); ordered_at up to 2018-09-04 00:00"), late.stdout
    assert _lines(late.stdout)["marts.customers"].startswith(
        "marts.customers: stale (newest day 2018-09-04 over 26.0h ago, max 26.0h)"), late.stdout
    # a mart without one: the newest extraction of its inputs that its last build had
    assert lines["marts.locations"] == (
        "marts.locations: fresh (newest extraction 24.0h old, max 7.0d); newest data unknown (no time column), "
        "last built 23.8h ago; from jaffle_shop, owner data-team")

    results = _by_subject(evaluate(project.settings(), NOW, [str(declarations / "jaffle_shop.yaml"),
                                                             str(declarations / "jaffle_app.yaml")]))
    orders = results["marts.orders"]
    assert (orders.state, orders.measure, orders.age_s(NOW), orders.max_age_s) == ("fresh", "newest day", 24 * 3600, 26 * 3600)
    assert (orders.newest, orders.newest_data, orders.last_loaded) == (
        datetime(2018, 9, 5), datetime(2018, 9, 4), datetime(2018, 9, 5, 0, 10))
    customers = results["raw_jaffle_shop.customers"]
    assert (customers.state, customers.measure, customers.age_s(NOW)) == ("fresh", "newest extraction", 24 * 3600)
    assert (customers.newest_data, customers.data_note, customers.loaded_by) == (None, "no time column", "jaffle_shop")
    tweets = results["raw_jaffle_shop.tweets"]
    assert (tweets.state, tweets.source, tweets.newest) == ("stale", "jaffle_shop", datetime(2018, 9, 1, 10, 0, 0, 123456))
    page = render(list(results.values()), NOW)
    assert page.startswith("Freshness at 2018-09-06 00:00 UTC. Age = now - the newest data")
    assert "compared to the max" in page

    # a week later the catalog marts are stale too; a new load of the orders does not make old orders new
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("UPDATE elt_meta.loaded_batches SET extracted_at = '2018-09-13 00:00', loaded_at = '2018-09-13 00:05' "
                    "WHERE table_name = 'orders'")
    later = _by_subject(evaluate(project.settings(), datetime(2018, 9, 13, 1), [str(declarations / "jaffle_shop.yaml")]))
    assert later["marts.locations"].state == "stale" and later["raw_jaffle_shop.orders"].state == "stale"
    assert later["raw_jaffle_shop.orders"].last_loaded == datetime(2018, 9, 13, 0, 5)


MONTHLY = """MODEL (
  name marts.{name},
  kind INCREMENTAL_BY_TIME_RANGE (time_column month_start),
  {schedule}
);

SELECT DATE_TRUNC('month', orders.ordered_at) AS month_start, COUNT(*) AS orders
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1
"""

LA_DAILY = """MODEL (
  name marts.la_daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_day),
  cron_tz 'America/Los_Angeles'
);

SELECT DATE_TRUNC('day', orders.ordered_at) AS order_day, COUNT(*) AS orders
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1
"""


def test_a_monthly_mart_is_not_stale_all_month(project: Project, small_jaffle: Path, tmp_path: Path) -> None:
    """A mart of monthly rows keeps each month's first day in its time column: against the 26-hour
    default, `elt freshness` called it stale every day of every month (a probe of monthly models).
    Its newest row must be the month before the one of its cron's last run (allow_partials: that
    month itself), the run having had the daily marts' 26 hours; a tag still decides. The first
    version allowed a fixed 62 days, so a month whose build failed was named a day or two late."""
    marts = project.root / "models" / "marts"
    for name, schedule in (("by_month", "cron '@monthly'"), ("so_far", "interval_unit 'month',\n  allow_partials true"),
                           ("tagged", "cron '@monthly',\n  tags ('freshness:40d')")):
        (marts / f"{name}.sql").write_text(MONTHLY.format(name=name, schedule=schedule))
    (marts / "la_daily.sql").write_text(LA_DAILY)
    project, declarations = _shop(project, small_jaffle, tmp_path)
    sources = [str(declarations / "jaffle_shop.yaml")]
    results = _by_subject(evaluate(project.settings(), NOW, sources))
    got = {m: (results[m].state, results[m].newest, round(results[m].max_age_s / 86400, 2))
           for m in ("marts.by_month", "marts.so_far", "marts.tagged")}
    # September 6th: the September 1st run built August (by_month); the run of the 4th built September so far
    assert got == {"marts.by_month": ("fresh", datetime(2018, 9, 1), 36.0),
                   "marts.so_far": ("fresh", datetime(2018, 9, 1), 5.0),
                   "marts.tagged": ("fresh", datetime(2018, 9, 1), 40.0)}, got
    # a daily mart keeps the 26 hours, from the end of its newest day (the 4th: 24 hours ago)
    assert (results["marts.orders"].state, results["marts.orders"].age_s(NOW)) == ("fresh", 24 * 3600)
    # a daily mart whose cron runs in Los Angeles (cron_tz): SQLMesh builds the 5th at 07:00 UTC on
    # the 6th (midnight there), so at 08:00 its newest day is still the 4th, 32 hours over: stale for a
    # mart whose cron runs at midnight UTC, fresh for it (26 hours from that run, 33 from the day's
    # end); at 09:30 it is stale too. Without cron_tz read, it was stale from 02:00 to 07:00 every day.
    at = datetime(2018, 9, 6, 8)
    assert _la_daily_at(evaluate(project.settings(), at, sources), at) == ("stale", "fresh", (
        "marts.la_daily: fresh (newest day 2018-09-04 over 32.0h ago, max 33.0h = 26.0h + 7.0h from the next "
        "day's end to the run of its cron '@daily' in America/Los_Angeles); order_day up to 2018-09-04 00:00, "
        "last built 31.8h ago; from jaffle_shop, owner data-team"))
    at = datetime(2018, 9, 6, 9, 30)
    assert _la_daily_at(evaluate(project.settings(), at, sources), at)[:2] == ("stale", "stale")
    # November 5th: September is still the newest month, so October was never built
    later = _by_subject(evaluate(project.settings(), datetime(2018, 11, 5), sources))
    assert {m: later[m].state for m in got} == {"marts.by_month": "stale", "marts.so_far": "stale",
                                                "marts.tagged": "stale"}
    # October 15th: last month (September) is the newest a monthly build has; a build of this month so
    # far would have October; the tag's 40 days are over
    middle = _by_subject(evaluate(project.settings(), datetime(2018, 10, 15), sources))
    assert {m: middle[m].state for m in got} == {"marts.by_month": "fresh", "marts.so_far": "stale",
                                                 "marts.tagged": "stale"}
    # November 1st at noon, the November run may still be landing: September is enough; on the 2nd
    # at 03:00 that run is 27 hours old and October is missing (the fixed 62 days said fresh until the 3rd)
    noon = _by_subject(evaluate(project.settings(), datetime(2018, 11, 1, 12), sources))
    night = _by_subject(evaluate(project.settings(), datetime(2018, 11, 2, 3), sources))
    assert (noon["marts.by_month"].state, night["marts.by_month"].state) == ("fresh", "stale")
    said = night["marts.by_month"].describe(datetime(2018, 11, 2, 3))
    assert said.startswith("marts.by_month: stale (newest data 62.1d old, max 32.1d)"), said
    # a late correction loaded on October 13th and not transformed: every `elt transform` consumes
    # batches whatever the mart's cron, so two days of waiting are stale, as for a daily mart (the
    # calendar's maximum, 44 days on October 15th, held it "fresh" for weeks)
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03", "o2,c2,2018-09-03"))
    assert project.elt("load", "jaffle_shop", "--path", str(small_jaffle), timeout=300).returncode == 0
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("UPDATE elt_meta.loaded_batches SET extracted_at = '2018-10-12 23:55', loaded_at = '2018-10-13 00:00' "
                    "WHERE loaded_at > '2019-01-01'")
    waiting = _by_subject(evaluate(project.settings(), datetime(2018, 10, 15), sources))["marts.by_month"]
    assert (waiting.state, waiting.measure) == ("stale", "untransformed batch"), waiting


def _la_daily_at(results: list[Freshness] | None, at: datetime) -> tuple[str, str, str]:
    found = _by_subject(results)
    return found["marts.orders"].state, found["marts.la_daily"].state, found["marts.la_daily"].describe(at)


def test_a_correction_that_only_a_bare_sqlmesh_run_saw_makes_its_mart_stale_until_elt_transform(
        shop: tuple[Project, Path], small_jaffle: Path) -> None:
    """New days reach the marts through `sqlmesh run` too, so their newest data stays young; a late
    correction reaches them only through `elt transform`. A batch no version of the mart consumed,
    loaded longer ago than the mart's maximum, makes the mart stale and says so."""
    project, declarations = shop
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03", "o2,c2,2018-09-03"))  # a late correction
    assert project.elt("load", "jaffle_shop", "--path", str(small_jaffle), timeout=300).returncode == 0
    bare = run([str(BIN / "sqlmesh"), "run"], cwd=project.root, env=project.env, timeout=300, check=False)
    assert bare.returncode == 0, bare.stdout + bare.stderr
    warehouse = project.root / "data" / "warehouse.duckdb"

    def customer_of_o2() -> str:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute("SELECT customer_id FROM marts.orders WHERE order_id = 'o2'").fetchone()[0]

    assert customer_of_o2() == "c1"  # `sqlmesh run` did not apply it
    # the correction was loaded 27h before now; the newest order day is 25h old (new days kept coming)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE elt_meta.loaded_batches SET extracted_at = '2018-09-03 21:55', loaded_at = '2018-09-03 22:00' "
                    "WHERE loaded_at > '2019-01-01'")
    now = datetime(2018, 9, 5, 1)
    out = project.elt("freshness", "--now", now.isoformat())
    assert out.returncode == 1, out.stdout + out.stderr
    line = _lines(out.stdout)["marts.orders"]
    assert line.startswith("marts.orders: stale (untransformed batch 27.0h old, max 26.0h); ordered_at up to 2018-09-04 00:00"), line
    assert ("1 batch(es) of raw_jaffle_shop.orders waiting for `elt transform` since 27.0h ago "
            "(a bare `sqlmesh run` does not apply them)") in line, line
    mart = _by_subject(evaluate(project.settings(), now, [str(declarations / "jaffle_shop.yaml")]))["marts.orders"]
    assert (mart.state, mart.measure, mart.newest) == ("stale", "untransformed batch", datetime(2018, 9, 3, 22))
    assert mart.waiting == (1, datetime(2018, 9, 3, 22), ("raw_jaffle_shop.orders",))

    assert project.elt("transform", timeout=600).returncode == 0
    assert customer_of_o2() == "c2"
    mart = _by_subject(evaluate(project.settings(), now, [str(declarations / "jaffle_shop.yaml")]))["marts.orders"]
    assert (mart.state, mart.measure, mart.waiting) == ("fresh", "newest day", None)
    assert "waiting for" not in mart.describe(now)


def test_never_built_and_missing_tables_are_unknown_and_say_why(project: Project) -> None:
    out = project.elt("freshness", "--now", NOW.isoformat(), ELT_JOBS="jaffle_app")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _lines(out.stdout)
    assert lines["marts.orders"] == ("marts.orders: unknown (never built, table missing, max 26.0h); newest data "
                                     "unknown (table missing), never built; from no loaded source, owner data-team")
    assert lines["raw_jaffle_shop.customers"] == (
        "raw_jaffle_shop.customers: unknown (never loaded, max 26.0h); newest data unknown (table missing), "
        "never loaded; source jaffle_app, owner app-team@example.com")


def test_freshness_on_postgres(project: Project, pg_db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The same measures through the PostgreSQL gateway (tables written here: no load or transform)."""
    for key, value in {**pg_db.env("ELT_PG"), "ELT_GATEWAY": "postgres"}.items():
        monkeypatch.setenv(key, value)
    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA elt_meta; CREATE TABLE elt_meta.loaded_batches ({LEDGER_COLUMNS})")
        cur.execute("INSERT INTO elt_meta.loaded_batches VALUES "
                    "('b1', 'jaffle_app', 'orders', 'raw_jaffle_shop.orders', 4, '2018-09-05 00:00', '2018-09-05 00:05', NULL),"
                    "('b2', 'jaffle_app', 'orders', 'raw_jaffle_shop.orders', 0, '2018-09-05 12:00', '2018-09-05 12:05', NULL),"
                    "('b3', 'jaffle_app', 'orders', 'RAW_JAFFLE_SHOP.ORDERS', 2, '2018-09-04 19:55', '2018-09-04 20:00', NULL)")
        # marts.orders consumed b1 (and b2, which brought no rows, does not count); b3 waits for it
        cur.execute("CREATE TABLE elt_meta.consumed_batches (model TEXT, version TEXT, batch_id TEXT, raw_table TEXT, "
                    "consumed_at TIMESTAMP); INSERT INTO elt_meta.consumed_batches VALUES "
                    "('marts.orders', 'v1', 'b1', 'raw_jaffle_shop.orders', '2018-09-05 00:10')")
        cur.execute("CREATE TABLE elt_meta.transform_watermarks (environment TEXT, loaded_through TIMESTAMP, "
                    "finished_at TIMESTAMP); INSERT INTO elt_meta.transform_watermarks VALUES ('prod', NULL, '2018-09-05 00:10')")
        cur.execute("CREATE SCHEMA raw_jaffle_shop; CREATE TABLE raw_jaffle_shop.orders (id TEXT, ordered_at TIMESTAMP);"
                    "INSERT INTO raw_jaffle_shop.orders VALUES ('o4', '2018-09-04 12:00')")
        cur.execute("CREATE SCHEMA marts; CREATE TABLE marts.orders (order_id TEXT, ordered_at DATE);"
                    "INSERT INTO marts.orders VALUES ('o4', '2018-09-04')")
    settings = replace(project.settings(), gateway="postgres")
    results = _by_subject(evaluate(settings, NOW, [str(DECLARATIONS_DIR / "jaffle_app.yaml")]))
    raw = results["raw_jaffle_shop.orders"]
    assert (raw.state, raw.age_s(NOW), raw.last_loaded, raw.loaded_by) == ("stale", 36 * 3600, datetime(2018, 9, 5, 12, 5),
                                                                           "jaffle_app")
    mart = results["marts.orders"]
    # its newest day (the 4th) ended 24 hours ago, but a batch has waited 28 hours for a transform
    assert (mart.state, mart.measure, mart.newest, mart.inputs) == (
        "stale", "untransformed batch", datetime(2018, 9, 4, 20), ("jaffle_app",))
    assert mart.waiting == (1, datetime(2018, 9, 4, 20), ("raw_jaffle_shop.orders",))
    assert "1 batch(es) of raw_jaffle_shop.orders waiting for `elt transform` since 28.0h ago" in mart.describe(NOW)
    customers = results["raw_jaffle_shop.customers"]
    assert (customers.state, customers.why, customers.data_note) == ("unknown", "never loaded", "table missing")
    locations = results["marts.locations"]  # not built; its inputs were never loaded: the last build
    assert (locations.measure, locations.newest, locations.data_note) == ("last build", datetime(2018, 9, 5, 0, 10),
                                                                         "table missing")


def test_a_mart_built_only_from_raw_tables_never_loaded_is_unknown_not_fresh(project: Project) -> None:
    """`elt transform` makes a declared, never-loaded table empty, so its marts build (empty): their
    last build must not pass for fresh data while no batch has ever arrived."""
    from sources.config import load_source
    from sources.load.duckdb_raw import DuckDBRaw

    warehouse = project.root / "data" / "warehouse.duckdb"
    spec = load_source("jaffle_shop")
    with DuckDBRaw(warehouse) as raw:
        for table in spec.tables.values():
            raw.create_declared(spec.raw_schema, table.name, [{"name": c.name, "type": c.type.name} for c in table.columns],
                                list(table.primary_key))
    built = project.elt("transform", timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    with duckdb.connect(str(warehouse)) as con:  # a build an hour ago (another source's batch would have set it)
        con.execute("DELETE FROM elt_meta.transform_watermarks")
        con.execute("INSERT INTO elt_meta.transform_watermarks VALUES ('prod', '2018-09-05 00:00', '2018-09-05 23:00')")
    out = project.elt("freshness", "--now", NOW.isoformat(), ELT_JOBS="jaffle_shop,transform")
    lines = _lines(out.stdout)
    assert lines["marts.orders"].startswith("marts.orders: unknown (inputs never loaded"), out.stdout


def test_rows_dated_ahead_do_not_make_a_table_fresh() -> None:
    """Found by a probe: one order dated 2100 made its table `fresh (newest data -73.1y old)` for
    good, whatever stopped arriving."""
    import duckdb

    from orchestrator.observe.freshness import _newest_data

    con = duckdb.connect()
    con.execute("CREATE SCHEMA s; CREATE TABLE s.t (\"at\" TIMESTAMP); "
                "INSERT INTO s.t VALUES ('2020-01-01 10:00:00'), ('2100-01-01 00:00:00'), (NULL)")
    value, note = _newest_data(lambda sql: con.execute(sql).fetchall(), "duckdb", {"s.t": "at"}, datetime.now())["s.t"]
    assert str(value) == "2020-01-01 10:00:00" and note.startswith("1 row(s) dated after ") and "left out" in note
    con.execute("DELETE FROM s.t WHERE \"at\" < '2050-01-01'")
    assert _newest_data(lambda sql: con.execute(sql).fetchall(), "duckdb", {"s.t": "at"}, datetime.now())["s.t"][0] is None
    # a column that is no time is said to be none (a review found the filter failed on it)
    con.execute("CREATE TABLE s.u (\"at\" VARCHAR); INSERT INTO s.u VALUES ('x')")
    assert _newest_data(lambda sql: con.execute(sql).fetchall(), "duckdb", {"s.u": "at"}, datetime.now())["s.u"] == (None, "at is not a time")


def test_a_date_column_is_named_as_holding_days() -> None:
    """A DATE event time or mart column holds days: its table is measured from the end of its newest
    day, as a daily mart is (from the row, a daily export of yesterday read stale from 02:00)."""
    import duckdb

    from orchestrator.observe.freshness import _newest_data

    con = duckdb.connect()
    con.execute("CREATE SCHEMA s; CREATE TABLE s.d (\"day\" DATE); INSERT INTO s.d VALUES ('2020-01-01'), ('2020-01-02')")
    con.execute("CREATE TABLE s.t (\"at\" TIMESTAMP); INSERT INTO s.t VALUES ('2020-01-02 00:00:00')")
    dated: set[str] = set()
    found = _newest_data(lambda sql: con.execute(sql).fetchall(), "duckdb", {"s.d": "day", "s.t": "at"},
                         datetime(2020, 1, 3, 4), dated)
    assert found == {"s.d": (datetime(2020, 1, 2), ""), "s.t": (datetime(2020, 1, 2), "")}, found
    assert dated == {"s.d"}  # a timestamp at midnight is a time, not a day: only a tag says so


def test_a_mixed_case_time_column_on_postgresql_is_read_as_spelled(pg_db) -> None:  # type: ignore[no-untyped-def]
    """A PostgreSQL raw table keeps a source's "Order Date"; the newest-data query quoted the name
    lower-cased, `elt freshness` and `elt report` ended in a traceback (column "order date" does
    not exist), and `elt tick` stopped checking freshness for every source (a probe of identifiers)."""
    import psycopg2

    from orchestrator.observe.freshness import _newest_data

    con = psycopg2.connect(pg_db.dsn)
    con.autocommit = True

    def query(sql: str) -> list:  # type: ignore[type-arg]
        with con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    try:
        query('CREATE SCHEMA raw_s; CREATE TABLE raw_s.t ("Order Date" TIMESTAMP); '
              "INSERT INTO raw_s.t VALUES ('2020-01-01 10:00:00')")
        value, note = _newest_data(query, "postgres", {"raw_s.t": "Order Date"}, datetime.now())["raw_s.t"]
        assert str(value) == "2020-01-01 10:00:00" and note == "", (value, note)
    finally:
        con.close()


def test_many_tables_print_a_count_and_the_stale_ones_first() -> None:
    """At 200 tables `elt freshness` printed 207 lines in declaration order, the 5 stale ones at
    lines 196-205, with no count (a probe)."""
    from datetime import datetime, timedelta

    from orchestrator.observe.freshness import Freshness, render

    now = datetime(2026, 12, 7, 12, 0)
    fresh = [Freshness(f"raw_shop.t{n:03d}", "table", "fresh", 3600, now - timedelta(minutes=5), "o", source="shop",
                       last_loaded=now, loaded_by="shop") for n in range(195)]
    stale = [Freshness(f"raw_shop.s{n}", "table", "stale", 3600, now - timedelta(hours=5), "o", source="shop",
                       last_loaded=now - timedelta(hours=5), loaded_by="shop") for n in range(5)]
    unknown = [Freshness("marts.never", "mart", "unknown", 3600, None, "o", measure="last build", why="never built")]
    lines = render(fresh[:100] + stale[:3] + unknown + fresh[100:] + stale[3:], now).splitlines()
    assert lines[1] == "201 checked: 5 stale, 1 unknown, 195 fresh, stale ones first", lines[1]
    assert [line.split(":")[0] for line in lines[2:8]] == [
        "raw_shop.s0", "raw_shop.s1", "raw_shop.s2", "raw_shop.s3", "raw_shop.s4", "marts.never"]
    assert len(lines) == 203 and lines[8].startswith("raw_shop.t000: fresh")
