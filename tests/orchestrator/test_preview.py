"""`elt preview` on the DuckDB gateway: a column whose type changed is reported with both types and
its values are compared too; SQLMesh's `Executing SQL` lines stay out unless `--verbose`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BIN, copy_project, project_env, run

HEAD = "marts.locations: prod 2 rows, dev 2 rows; on location_id: 2 matched"
RETYPED = "tax_rate DECIMAL(9, 4) in prod -> DOUBLE in dev (values compared as numbers to 9 decimal places"
ELT = str(BIN / "elt")
# breaking changes that keep every value: the changed model (and those after it) get tables of their own
SAME_TOTAL = ("    orders.order_total,\n", "    COALESCE(orders.order_total, orders.order_total) AS order_total,\n")
SAME_CUSTOMER = ("  latest.customer AS customer_id,", "  COALESCE(latest.customer, latest.customer) AS customer_id,")


def _built_shop(project: Path, env: dict[str, str], small_jaffle: Path) -> None:
    """The small shop loaded and transformed into prod by ``project``'s checkout."""
    run([ELT, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([ELT, "transform"], cwd=project, env=env)


def _shop(small_jaffle: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copied project, with its own warehouse under it, holding the small shop in prod."""
    project = copy_project(tmp_path / "project")
    (tmp_path / "tmp").mkdir()  # the loader's per-source lock lives under TMPDIR
    env = project_env(project, TMPDIR=str(tmp_path / "tmp"))
    _built_shop(project, env, small_jaffle)
    return project, env


def _edit(model: Path, change: tuple[str, str]) -> str:
    """Apply ``change`` (old, new) to ``model``; the text before it."""
    text = model.read_text()
    assert change[0] in text, text
    model.write_text(text.replace(*change))
    return text


def _move_o2_to_c2(small_jaffle: Path, project: Path, env: dict[str, str]) -> None:
    """The source moves order o2 to customer c2, and it is loaded (not transformed)."""
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03", "o2,c2,2018-09-03"))
    run([ELT, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)


def test_preview_reports_a_type_change_and_counts_changed_values(small_jaffle: Path, tmp_path: Path) -> None:
    project, env = _shop(small_jaffle, tmp_path)
    elt = ELT

    # the same tax rates (s1 0.06, s2 0.04) as DOUBLE instead of DECIMAL(9,4): a type change, no value change
    model = project / "models" / "marts" / "locations.sql"
    original = model.read_text()
    assert "  locations.tax_rate,\n" in original
    model.write_text(original.replace("  locations.tax_rate,\n", "  CAST(locations.tax_rate AS DOUBLE) AS tax_rate,\n"))
    retyped = run([elt, "preview", "dev"], cwd=project, env=env, timeout=120)
    assert f"{HEAD} (0 changed), 0 only in prod, 0 only in dev" in retyped.stdout, retyped.stdout
    assert f"type changed: {RETYPED}: 100% equal)" in retyped.stdout, retyped.stdout
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

    # a model prod does not have yet: said so (it was "could not diff: 'not enough values to unpack'")
    model.write_text(original)
    (project / "models" / "marts" / "location_count.sql").write_text(
        "MODEL (name marts.location_count, kind FULL, grain one);\n"
        "SELECT 1 AS one, COUNT(*) AS locations FROM marts.locations\n")
    new = run([elt, "preview", "newmodel"], cwd=project, env=env, timeout=120).stdout
    assert "marts.location_count: a new model: prod has no marts.location_count to compare with" in new, new
    assert "could not diff" not in new, new


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


def test_a_preview_left_behind_is_brought_up_to_date_before_it_is_compared(small_jaffle: Path, tmp_path: Path) -> None:
    """Found by a probe: a dev environment previewed before a correction was loaded and transformed
    into prod kept its old rows; previewing it again said "No changes" to SQLMesh and reported the
    staleness as the change's effect, and a promotion would have served it. The changed models'
    own tables are restated in dev first, so a change that keeps every value differs in nothing."""
    (tmp_path / "tmp").mkdir()
    data = tmp_path / "data"
    shared = {"ELT_DUCKDB_PATH": str(data / "warehouse.duckdb"), "ELT_LANDING_ROOT": str(data / "landing"),
              "TMPDIR": str(tmp_path / "tmp")}
    prod = copy_project(tmp_path / "prod")  # the deployed checkout
    branch = copy_project(tmp_path / "branch")  # a branch with a change, on the same warehouse
    prod_env, branch_env = project_env(prod, **shared), project_env(branch, **shared)
    elt = ELT
    _built_shop(prod, prod_env, small_jaffle)

    # dev's marts.orders (and marts.customers after it) get tables of their own
    _edit(branch / "models" / "marts" / "orders.sql", SAME_TOTAL)
    first = run([elt, "preview", "dev"], cwd=branch, env=branch_env, timeout=300).stdout
    assert "marts.orders: prod 4 rows, dev 4 rows; on order_id: 4 matched (0 changed)" in first, first
    assert "restated in dev" not in first, first

    # the source moves o2 to customer c2; prod loads and transforms it
    _move_o2_to_c2(small_jaffle, prod, prod_env)
    run([elt, "transform"], cwd=prod, env=prod_env)

    again = run([elt, "preview", "dev"], cwd=branch, env=branch_env, timeout=300).stdout
    note = next(line for line in again.splitlines() if "restated in dev before comparing" in line)
    assert note.startswith("2 model(s) of dev (marts.customers, marts.orders) were built by a preview from ") and \
        " batch(es) of their raw tables were loaded or applied to prod from an hour before that on" in note, again
    assert "marts.orders: prod 4 rows, dev 4 rows; on order_id: 4 matched (0 changed), 0 only in prod" in again, again
    assert "0 of them differ from prod" in again, again
    import duckdb

    with duckdb.connect(shared["ELT_DUCKDB_PATH"], read_only=True) as con:
        assert con.execute("SELECT customer_id FROM marts__dev.orders WHERE order_id = 'o2'").fetchone() == ("c2",)
    assert "deploy with `elt transform`" in again, again


def test_a_transform_of_a_dev_environment_leaves_prods_tables_and_batches_to_prod(small_jaffle: Path, tmp_path: Path) -> None:
    """Found by a probe: `elt transform --environment dev` restated the model versions dev shares
    with prod, recorded prod's batches as consumed by them and removed prod's intervals; prod
    lacked the rows until its next transform and `elt freshness` saw nothing waiting for it. A dev
    environment now restates its own tables only, and a batch once prod has it (they read prod's
    shared staging, which holds its rows only then)."""
    import duckdb

    project, env = _shop(small_jaffle, tmp_path)
    elt = ELT
    # before dev exists, with no model change to create it: said, not a traceback (a probe)
    missing = run([elt, "transform", "--environment", "dev"], cwd=project, env=env, timeout=300, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert "environment dev does not exist yet" in missing.stderr and "elt preview dev" in missing.stderr, missing.stderr
    model = project / "models" / "marts" / "orders.sql"
    prod_sql = _edit(model, SAME_TOTAL)
    run([elt, "preview", "dev"], cwd=project, env=env, timeout=300)  # dev's own marts.orders and marts.customers
    _move_o2_to_c2(small_jaffle, project, env)
    warehouse = project / "data" / "warehouse.duckdb"

    def consumers() -> set[tuple[str, str]]:  # (model, version) that consumed the newest orders batch
        with duckdb.connect(str(warehouse), read_only=True) as con:
            newest = con.execute("SELECT batch_id FROM elt_meta.loaded_batches WHERE table_name = 'orders' "
                                 "ORDER BY loaded_at DESC LIMIT 1").fetchone()[0]
            return set(con.execute("SELECT model, version FROM elt_meta.consumed_batches WHERE batch_id = ?",
                                   [newest]).fetchall())

    def customer_of_o2(schema: str) -> str:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute(f"SELECT customer_id FROM {schema}.orders WHERE order_id = 'o2'").fetchone()[0]

    run([elt, "transform", "--environment", "dev"], cwd=project, env=env, timeout=300)
    assert consumers() == set() and customer_of_o2("marts") == "c1"  # prod's batch, prod's tables: untouched
    waiting = run([elt, "freshness"], cwd=project, env=env, check=False).stdout
    assert "waiting for `elt transform`" in waiting, waiting  # prod's marts still wait for the batch

    model.write_text(prod_sql)  # the prod checkout's transform
    run([elt, "transform"], cwd=project, env=env, timeout=300)
    assert customer_of_o2("marts") == "c2" and "marts.orders" in {m for m, _ in consumers()}
    _edit(model, SAME_TOTAL)
    before = consumers()
    run([elt, "transform", "--environment", "dev"], cwd=project, env=env, timeout=300)  # dev follows prod
    assert customer_of_o2("marts__dev") == "c2", consumers()
    added = consumers() - before  # dev's own versions of the two marts, and nothing else
    assert sorted(m for m, _ in added) == ["marts.customers", "marts.orders"], added


def test_a_dev_environment_with_its_own_staging_applies_a_batch_without_waiting_for_prod(small_jaffle: Path,
                                                                                          tmp_path: Path) -> None:
    """The other side of the rule above (a review): a dev environment whose change reaches staging
    reads raw through its own tables only, and applies a new batch at once, before prod has."""
    import duckdb

    project, env = _shop(small_jaffle, tmp_path)
    _edit(project / "models" / "staging" / "stg_jaffle_shop__orders.sql", SAME_CUSTOMER)
    run([ELT, "preview", "dev"], cwd=project, env=env, timeout=300)
    _move_o2_to_c2(small_jaffle, project, env)
    run([ELT, "transform", "--environment", "dev"], cwd=project, env=env, timeout=300)
    with duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT customer_id FROM marts__dev.orders WHERE order_id = 'o2'").fetchone() == ("c2",)
        assert con.execute("SELECT customer_id FROM marts.orders WHERE order_id = 'o2'").fetchone() == ("c1",)
