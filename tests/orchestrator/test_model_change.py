"""A model edited after prod was built: the scheduled `elt transform` plans it and goes on.

It failed on every run with ``ValueError: Unsupported expression type Model`` while printing the
plan's diff: `elt` writes SQL (the raw tables' DDL) before it imports SQLMesh, sqlglot had built its
DuckDB generator's dispatch table then, and SQLMesh's MODEL expression was missing from it
(``orchestrator.transform.run.forget_sqlglot_dispatch``). Adding a model never showed it: an added
model has no diff; only a change to an existing one does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from tests.orchestrator.conftest import Project


def test_an_edited_model_is_planned_by_the_scheduled_transform(project: Project, small_jaffle: Path) -> None:
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    model = project.root / "models" / "marts" / "orders.sql"
    text = model.read_text()
    edited = text.replace("COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
                          "COALESCE(order_items_summary.count_drink_items, 0) >= 1 AS is_drink_order,")
    assert edited != text
    model.write_text(edited)

    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Unsupported expression type" not in out and "Traceback" not in out, out
    assert "Directly Modified" in out and "marts.orders" in out and "plan applied" in out, out
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        drinks = con.execute("SELECT count(*) FILTER (is_drink_order), count(*) FILTER (count_drink_items > 0) "
                             "FROM marts.orders").fetchone()
    assert drinks is not None and drinks[0] == drinks[1] and drinks[0] > 0
