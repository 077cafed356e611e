"""A model version deployed by a bare `sqlmesh plan` (the review workflow), not by `elt transform`:
the next `elt transform` restates only what was loaded after that plan, not the version's whole
history a second time, and never leaves out a batch the plan's build did not read
(orchestrator/transform/restate.py, ``_built_outside_elt``; decision 0046)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import BIN, copy_project, project_env, run

pytestmark = pytest.mark.slow

STAGING = Path("models") / "staging" / "stg_jaffle_shop__orders.sql"
MARTS = ("customers", "orders", "order_items", "locations", "products", "supplies")


def _marts(warehouse: Path) -> dict[str, list[tuple[object, ...]]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {m: sorted(con.execute(f"SELECT * FROM marts.{m}").fetchall(), key=repr) for m in MARTS}


def _edit(project: Path, old: str, new: str) -> None:
    model = project / STAGING
    text = model.read_text()
    assert old in text, old
    model.write_text(text.replace(old, new, 1))


def test_a_version_a_bare_sqlmesh_plan_built_restates_only_what_came_after_it(small_jaffle: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    env = project_env(project)
    warehouse = project / "data" / "warehouse.duckdb"
    orders = small_jaffle / "raw_orders.csv"

    def elt(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "elt"), *args], cwd=project, env={**env, **extra})

    def bare_plan() -> str:
        return run([str(BIN / "sqlmesh"), "plan", "--no-prompts", "--auto-apply"], cwd=project, env=env).stdout

    def backdate() -> None:  # everything loaded so far was loaded two days ago
        with duckdb.connect(str(warehouse)) as con:
            con.execute("UPDATE elt_meta.loaded_batches SET loaded_at = loaded_at - INTERVAL 2 DAY "
                        "WHERE loaded_at > now()::TIMESTAMP - INTERVAL 1 DAY")

    def customer_of(order: str) -> str:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute("SELECT customer_id FROM marts.orders WHERE order_id = ?", [order]).fetchone()[0]

    elt("load", "jaffle_shop", "--path", str(small_jaffle))
    elt("transform")
    backdate()

    # a reviewed breaking change, deployed by `sqlmesh plan`: it builds the new version whole
    _edit(project, "FROM latest\nWHERE\n", "FROM latest\nWHERE COALESCE(latest.order_total, 0) > -999999999 AND\n")
    assert "stg_jaffle_shop__orders (Breaking)" in bare_plan()
    # then a late correction of order o2 (2018-09-03) is loaded, after the plan
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03", "o2,c2,2018-09-03"))
    elt("load", "jaffle_shop", "--path", str(small_jaffle))
    out = elt("transform")
    log = out.stdout + out.stderr
    assert "staging.stg_jaffle_shop__orders: its version" in log and "was built outside `elt transform`" in log, log
    # only the correction's day (and, where a customer's orders are numbered, that customer's later
    # days) is restated: before, every day of every batch was, and the marts' whole history
    assert "staging.stg_jaffle_shop__orders (1 day(s): 2018-09-03" in log, log
    assert "all history" not in log, log
    assert customer_of("o2") == "c2"

    # A newer snapshot of an older table (a metadata-only change, also by `sqlmesh plan`) says
    # nothing about when that table read raw: a batch loaded between the table's build and that
    # snapshot is restated, even with no margin at all
    backdate()
    _edit(project, "WHERE COALESCE(latest.order_total, 0) > -999999999 AND\n",
          "WHERE COALESCE(latest.order_total, 0) > -999999998 AND\n")
    assert "stg_jaffle_shop__orders (Breaking)" in bare_plan()
    orders.write_text(orders.read_text().replace("o3,c2,2018-09-03", "o3,c1,2018-09-03"))
    elt("load", "jaffle_shop", "--path", str(small_jaffle))
    _edit(project, "Jaffle Shop orders, one row per order", "Orders, one row per order")
    assert "Metadata Updated" in bare_plan()
    out = elt("transform", ELT_OUTSIDE_PLAN_MARGIN="0s")
    assert customer_of("o3") == "c1"
    assert "staging.stg_jaffle_shop__orders: its version" not in out.stdout + out.stderr, out.stdout + out.stderr

    # A batch loaded while the scheduled transform was down (a day and more ago), then a reviewed
    # change to a mart deployed by `sqlmesh plan`: the mart's new version was built from staging
    # that lacked the batch, so it did not read it, however old. It was taken as read, and the
    # marts kept the old customer for good, every command green (a probe)
    orders.write_text(orders.read_text().replace("o2,c2,2018-09-03", "o2,c3,2018-09-03"))
    elt("load", "jaffle_shop", "--path", str(small_jaffle))
    backdate()
    mart = project / "models" / "marts" / "orders.sql"
    mart.write_text(mart.read_text().replace("COALESCE(order_items_summary.count_food_items, 0) > 0 AS is_food_order",
                                             "COALESCE(order_items_summary.count_food_items, 0) >= 1 AS is_food_order"))
    assert "marts.orders (Breaking)" in bare_plan()
    assert customer_of("o2") == "c2"
    out = elt("transform")
    assert customer_of("o2") == "c3", out.stdout + out.stderr

    # and the marts equal one clean build of the final data with the final models
    clean = tmp_path / "clean"
    shutil.copytree(project, clean, ignore=shutil.ignore_patterns("data", ".cache"))
    clean_env = project_env(clean)
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=clean, env=clean_env)
    run([str(BIN / "elt"), "transform"], cwd=clean, env=clean_env)
    assert _marts(warehouse) == _marts(clean / "data" / "warehouse.duckdb")
