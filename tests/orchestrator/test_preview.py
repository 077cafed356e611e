"""`elt preview` on the DuckDB gateway: a column whose type changed is reported with both types and
its values are compared too; SQLMesh's `Executing SQL` lines stay out unless `--verbose`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BIN, copy_project, project_env, run

HEAD = "marts.locations: prod 2 rows, dev 2 rows; on location_id: 2 matched"
RETYPED = "tax_rate DECIMAL(9, 4) in prod -> DOUBLE in dev (values compared as numbers to 9 decimal places"


def test_preview_reports_a_type_change_and_counts_changed_values(small_jaffle: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    (tmp_path / "tmp").mkdir()  # the loader's per-source lock lives under TMPDIR
    env = project_env(project, TMPDIR=str(tmp_path / "tmp"))
    elt = str(BIN / "elt")
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([elt, "transform"], cwd=project, env=env)

    # the same tax rates (s1 0.06, s2 0.04) as DOUBLE instead of DECIMAL(9,4): a type change, no value change
    model = project / "models" / "marts" / "locations.sql"
    original = model.read_text()
    assert "  locations.tax_rate,\n" in original
    model.write_text(original.replace("  locations.tax_rate,\n", "  CAST(locations.tax_rate AS DOUBLE) AS tax_rate,\n"))
    retyped = run([elt, "preview", "dev"], cwd=project, env=env, timeout=120)
    assert f"{HEAD} (0 changed), 0 only in prod, 0 only in dev" in retyped.stdout, retyped.stdout
    assert f"type changed: {RETYPED}: 100.0% equal)" in retyped.stdout, retyped.stdout
    # the models rebuilt only because they are downstream have the same rows: not counted as differing
    # (the headline said "3 model(s) differ from prod" above their "0 changed")
    head = next(line for line in retyped.stdout.splitlines() if line.startswith("environment dev:"))
    assert "model(s) rebuilt (changed, or downstream of a breaking change); 1 of them differ" in head, retyped.stdout
    assert not head.startswith("environment dev: 1 model(s)"), head  # downstream models were rebuilt too
    assert "Executing SQL" not in retyped.stdout + retyped.stderr, retyped.stderr[:2000]

    # s2's rate moves by 1e-8, which SQLMesh's default 3 decimal places would hide
    model.write_text(original.replace(
        "  locations.tax_rate,\n",
        "  CAST(locations.tax_rate AS DOUBLE) + CASE WHEN locations.location_id = 's2' THEN 0.00000001 ELSE 0 END"
        " AS tax_rate,\n"))
    changed = run([elt, "preview", "dev"], cwd=project, env=env, timeout=120)
    assert f"{HEAD} (1 changed), 0 only in prod, 0 only in dev" in changed.stdout, changed.stdout
    assert f"type changed: {RETYPED}: 50.0% equal)" in changed.stdout, changed.stdout
    assert "Executing SQL" not in changed.stdout + changed.stderr, changed.stderr[:2000]

    # the statements are still there for whoever asks
    verbose = run([elt, "preview", "dev", "--verbose"], cwd=project, env=env, timeout=120)
    assert "Executing SQL" in verbose.stdout + verbose.stderr
    assert f"{HEAD} (1 changed)" in verbose.stdout, verbose.stdout

    # a new column, a non-breaking change: the models downstream reuse prod's table, and the headline
    # no longer counts them as rebuilt (a newcomer walkthrough read "3 model(s) rebuilt" above them)
    model.write_text(original.replace("  locations.opened_date\n", "  locations.opened_date,\n  1 AS one\n"))
    added = run([elt, "preview", "fresh"], cwd=project, env=env, timeout=120).stdout  # against prod only
    head = next(line for line in added.splitlines() if line.startswith("environment fresh:"))
    reused = added.count("downstream of a non-breaking change; reads prod's table")
    assert reused >= 1 and head.startswith("environment fresh: 1 model(s) rebuilt (changed, or downstream of a breaking "
                                           f"change), {reused} reuse prod's table"), added


def test_a_preview_since_a_day_builds_and_compares_that_window_only(tmp_path: Path) -> None:
    """`elt preview dev --since DAY`: the changed day-partitioned model is built from DAY on only (its
    dev table and SQLMesh's intervals say so), its rows are compared from DAY on, and the models that
    read it are reported as not compared; without --since the same change is compared whole."""
    import random
    from datetime import timedelta

    import duckdb

    from tests.orchestrator.test_incremental_transform import START, Shop

    shop = Shop(random.Random(7))
    for offset in range(20):
        for _ in range(5):
            shop.add_order(START + timedelta(days=offset))
    files = tmp_path / "files"
    shop.write(files)
    project = copy_project(tmp_path / "project")
    warehouse = tmp_path / "warehouse.duckdb"
    env = project_env(project, ELT_DUCKDB_PATH=str(warehouse), ELT_LANDING_ROOT=str(tmp_path / "landing"))
    elt = str(BIN / "elt")
    run([elt, "load", "jaffle_shop", "--path", str(files)], cwd=project, env=env)
    run([elt, "transform"], cwd=project, env=env)

    # a breaking change: orders without items (subtotal 0) leave staging, and so every mart
    model = project / "models" / "staging" / "stg_jaffle_shop__orders.sql"
    text = model.read_text()
    assert text.rstrip().endswith("latest.ordered_at BETWEEN @start_ts AND @end_ts")
    model.write_text(text.rstrip() + " AND latest.subtotal > 0\n")
    since = START + timedelta(days=15)
    orders = list(shop.orders.values())
    window = [o for o in orders if str(o["ordered_at"])[:10] >= since.isoformat()]
    empty = [o for o in window if o["subtotal"] == 0]
    assert window and empty and len(empty) < len(window)

    windowed = run([elt, "preview", "dev", "--since", since.isoformat()], cwd=project, env=env, timeout=300)
    out = windowed.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        first, count = con.execute("SELECT MIN(ordered_at), COUNT(*) FROM staging__dev.stg_jaffle_shop__orders").fetchone()
    assert first.date() >= since and count == len(window) - len(empty), (first, count)  # built from the day on only
    assert (f"staging.stg_jaffle_shop__orders (rows with ordered_at >= {since}, the window built): prod {len(window)} rows, "
            f"dev {len(window) - len(empty)} rows; on order_id: {len(window) - len(empty)} matched (0 changed), "
            f"{len(empty)} only in prod, 0 only in dev") in out, out
    assert (f"marts.orders: not compared: it reads staging.stg_jaffle_shop__orders (directly or through other models), "
            f"which this preview built from {since} on only") in out, out
    assert "marts.customers: not compared" in out, out
    head = next(line for line in out.splitlines() if line.startswith("environment dev:"))
    assert "1 of them differ from prod in rows or columns" in head and "not compared (built from partial inputs)" in head, head

    whole = run([elt, "preview", "dev"], cwd=project, env=env, timeout=300).stdout
    all_empty = [o for o in orders if o["subtotal"] == 0]
    assert (f"staging.stg_jaffle_shop__orders: prod {len(orders)} rows, dev {len(orders) - len(all_empty)} rows; "
            f"on order_id: {len(orders) - len(all_empty)} matched (0 changed), {len(all_empty)} only in prod") in whole, whole
    assert "not compared" not in whole, whole

    bad = run([elt, "preview", "dev", "--since", "2018-13-01"], cwd=project, env=env, check=False)
    assert bad.returncode == 2 and "--since '2018-13-01' is not a day" in bad.stderr, bad.stderr
