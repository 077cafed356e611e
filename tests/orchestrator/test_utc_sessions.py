"""A `timestamptz` column's day is its UTC day on every machine and server.

DuckDB's sessions take the machine's time zone and PostgreSQL's the database's default, and a
timestamptz column's day (DATE_TRUNC, a cast to TIMESTAMP or DATE, an interval's bounds compared
with it) follows the session's zone. Before the warehouse sessions were pinned to UTC, a build on a
machine at UTC+14 put 40,538 of 72,485 one-year orders on another day than a build at UTC, and a
scheduler and an on-call laptop in different zones restated different days of the same table.

Each test declares the demo's `orders.ordered_at` as timestamptz, loads and transforms in a zone
where most of the orders fall on another local day (Pacific/Kiritimati, UTC+14), loads one more
order late in a UTC day, transforms again (the windowed restatement), and compares every order's day
in staging and marts with the UTC day of its raw value, computed in a session set to UTC here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import psycopg2
import pytest

from sources.config import DECLARATIONS_DIR
from tests.conftest import BIN, copy_project, project_env, run

pytestmark = pytest.mark.slow
ZONE = "Pacific/Kiritimati"  # UTC+14: 10:00 UTC and later is the next local day
CHECK = """
SELECT count(*),
       count(*) FILTER (WHERE s.ordered_at <> {utc_day}),
       count(*) FILTER (WHERE m.ordered_at <> {utc_day}),
       count(*) FILTER (WHERE {local_day} <> {utc_day})
FROM raw_jaffle_shop.orders AS r
JOIN staging.stg_jaffle_shop__orders AS s ON s.order_id = r.id
JOIN marts.orders AS m ON m.order_id = r.id
"""


def _declaration_with_timestamptz(folder: Path) -> Path:
    folder.mkdir()
    text = (DECLARATIONS_DIR / "jaffle_shop.yaml").read_text()
    assert "      ordered_at: timestamp\n" in text
    path = folder / "jaffle_shop.yaml"
    path.write_text(text.replace("      ordered_at: timestamp\n", "      ordered_at: timestamptz\n"))
    return path


def _build_in_another_zone(tmp_path: Path, small_jaffle: Path, env: dict[str, str]) -> str:
    """Load, transform, load one more order, transform; the last transform's stderr."""
    declaration = _declaration_with_timestamptz(tmp_path / "declarations")
    project = Path(env["ELT_PROJECT_DIR"])
    elt = str(BIN / "elt")
    run([elt, "load", str(declaration), "--path", str(small_jaffle)], cwd=project, env=env)
    run([elt, "transform"], cwd=project, env=env)
    later = tmp_path / "later"
    shutil.copytree(small_jaffle, later)
    with (later / "raw_orders.csv").open("a") as orders:  # 23:30 UTC: 13:30 the next day at UTC+14 (no items)
        orders.write("o9,c1,2018-09-04T23:30:00,s1,0,0,0\n")
    run([elt, "load", str(declaration), "--path", str(later)], cwd=project, env=env)
    return run([elt, "transform"], cwd=project, env=env).stderr


def test_duckdb_days_are_utc_days_whatever_the_machines_zone(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    env = project_env(project, TZ=ZONE)
    _build_in_another_zone(tmp_path, small_jaffle, env)

    with duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        utc_day = "DATE_TRUNC('day', r.ordered_at)::TIMESTAMP"
        local_day = f"DATE_TRUNC('day', timezone('{ZONE}', r.ordered_at))"
        orders, staging_off, marts_off, local_differs = con.execute(
            CHECK.format(utc_day=utc_day, local_day=local_day)).fetchone()
    assert (orders, local_differs) == (5, 4)  # the zone moves 4 of them to the next day: the test can fail
    assert (staging_off, marts_off) == (0, 0)


def test_postgres_days_are_utc_days_whatever_the_databases_default_zone(tmp_path: Path, small_jaffle: Path,
                                                                        pg_db) -> None:  # type: ignore[no-untyped-def]
    with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
        cur.execute(f"ALTER DATABASE \"{pg_db.dbname}\" SET TimeZone = '{ZONE}'")
    con.close()
    project = copy_project(tmp_path / "project")
    env = project_env(project, TZ=ZONE, ELT_GATEWAY="postgres", **pg_db.env("ELT_PG"))
    stderr = _build_in_another_zone(tmp_path, small_jaffle, env)
    # bare `sqlmesh` would still get the database's zone: elt says so, with the statement that fixes it
    [warning] = [line["event"] for line in (json.loads(text) for text in stderr.splitlines() if text.startswith("{"))
                 if line.get("level") == "warning" and "time zone" in line["event"]]
    assert warning.startswith(f"the warehouse database's default time zone is {ZONE}: elt runs its sessions in UTC"), warning
    assert f"next: ALTER DATABASE \"{pg_db.dbname}\" SET TimeZone = 'UTC'" in warning, warning

    with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
        cur.execute("SHOW TimeZone")
        assert cur.fetchone() == (ZONE,)  # a session without elt's setting gets the zone
        cur.execute("SET TimeZone = 'UTC'")
        utc_day = "date_trunc('day', r.ordered_at AT TIME ZONE 'UTC')"
        local_day = f"date_trunc('day', r.ordered_at AT TIME ZONE '{ZONE}')"
        cur.execute(CHECK.format(utc_day=utc_day, local_day=local_day))
        orders, staging_off, marts_off, local_differs = cur.fetchone()
    con.close()
    assert (orders, local_differs) == (5, 4)
    assert (staging_off, marts_off) == (0, 0)
