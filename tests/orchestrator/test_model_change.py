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


def _git(root: Path, *args: str) -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(root), "-c", "user.name=Ann", "-c", "user.email=ann@example.com", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _deploys(project: Project) -> list[tuple]:
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT git_commit, git_dirty, changed FROM elt_meta.deploys ORDER BY deployed_at").fetchall()


def test_a_checkout_behind_the_last_deploy_does_not_put_older_models_back(project: Project, small_jaffle: Path) -> None:
    """A second machine (or a laptop) whose checkout nobody updated ran `elt transform`, and SQLMesh's
    plan put its older models back into prod without a word. Each deploy now records its commit,
    and a checkout behind it (or without it) stops before the plan, naming both commits and the
    models; `--allow-revert` is the deliberate rollback."""
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    (project.root / ".gitignore").write_text("data/\nlogs/\n.cache/\n")
    _git(project.root, "init", "-q", "-b", "main")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "A")
    first = _git(project.root, "rev-parse", "HEAD")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(c, d) for c, d, _ in _deploys(project)] == [(first, False)]  # the first deploy: every model

    model = project.root / "models" / "marts" / "orders.sql"
    old_sql = model.read_text()
    model.write_text(old_sql.replace("COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
                                     "COALESCE(order_items_summary.count_drink_items, 0) >= 1 AS is_drink_order,"))
    _git(project.root, "commit", "-q", "-am", "B: drink orders")
    second = _git(project.root, "rev-parse", "HEAD")
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (second, False, "marts.customers, marts.orders")  # and what reads it

    _git(project.root, "checkout", "-q", first)  # the stale checkout
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"prod was last deployed from {second[:12]} by " in out and f"this checkout ({first[:12]}) is behind it" in out, out
    assert "Models it would change: marts.customers, marts.orders." in out and "elt transform --allow-revert" in out, out
    assert "Traceback" not in out and len(_deploys(project)) == 2, out  # stopped before the plan

    proc = project.elt("transform", "--allow-revert", timeout=300)  # the rollback, on purpose
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (first, False, "marts.customers, marts.orders")
    status = project.elt("status")
    assert f"prod: {first[:12]} by " in status.stdout and "marts.orders" in status.stdout, status.stdout + status.stderr

    _git(project.root, "checkout", "-q", "main")  # ahead of the last deploy again: applied without a flag
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (second, False, "marts.customers, marts.orders")  # and what reads it

    # another machine deployed a commit this checkout has never fetched
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("INSERT INTO elt_meta.deploys VALUES ('prod', '0123456789abcdef0123456789abcdef01234567', FALSE, "
                    "'other-host', 'bob', now()::TIMESTAMP + INTERVAL 1 MINUTE, 'marts.orders')")
    model.write_text(old_sql)  # uncommitted edit: a model change to apply
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "0123456789ab by bob@other-host" in out and "does not have that commit" in out, out
