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

    # records of versions SQLMesh does not have (as after its janitor dropped them), of the only
    # version a model has without virtual environments, and of a model this project does not have
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        before = con.execute("SELECT model, version, count(*) FROM elt_meta.consumed_batches GROUP BY ALL").fetchall()
        batch = con.execute("SELECT min(batch_id) FROM elt_meta.loaded_batches").fetchone()[0]  # type: ignore[index]
        for model_name, version in (("marts.orders", "dropped0"), ("marts.orders", "novde"),
                                    ("marts.customers", "dropped1"), ("marts.gone_model", "x")):
            con.execute("INSERT INTO elt_meta.consumed_batches VALUES (?, ?, ?, 'raw_jaffle_shop.orders', "
                        "now() - INTERVAL 2 DAY)", [model_name, version, batch])
        # recorded just now, by a transform whose plan has not put it in SQLMesh's state yet
        con.execute("INSERT INTO elt_meta.consumed_batches VALUES ('marts.orders', 'planning', ?, "
                    "'raw_jaffle_shop.orders', now())", [batch])
    assert before and all(n > 0 for _, _, n in before)

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
        after = con.execute("SELECT model, version, count(*) FROM elt_meta.consumed_batches GROUP BY ALL").fetchall()
    assert drinks is not None and drinks[0] == drinks[1] and drinks[0] > 0
    # the deploy forgot the records of the two versions SQLMesh does not have, and only those: the
    # versions served before it (still in SQLMesh's state) keep theirs, the new one has its own
    kept = {(m, v) for m, v, _ in after}
    assert not kept & {("marts.orders", "dropped0"), ("marts.customers", "dropped1")}, after
    assert {("marts.orders", "novde"), ("marts.gone_model", "x"), ("marts.orders", "planning")} <= kept, after
    assert set(before) <= set(after), (before, after)
    assert len([v for m, v, _ in after if m == "marts.orders"]) == 4  # before's, the new one's, novde, planning
    assert "forgot 2 consumed-batch record(s) of 2 model version(s)" in out, out
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0 and "restated nothing" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _git(root: Path, *args: str) -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(root), "-c", "user.name=Ann", "-c", "user.email=ann@example.com", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _deploys(project: Project) -> list[tuple]:
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT git_commit, git_dirty, changed, reverted, status FROM elt_meta.deploys "
                           "ORDER BY deployed_at").fetchall()


def test_a_checkout_behind_the_last_deploy_does_not_put_older_models_back(project: Project, small_jaffle: Path) -> None:
    """A second machine (or a laptop) whose checkout nobody updated ran `elt transform`, and SQLMesh's
    plan put its older models back into prod without a word. Each deploy now records its commit,
    and a checkout behind it (or without it) stops before the plan, naming both commits and the
    models; `--allow-revert` is the deliberate rollback, which a newer checkout may not quietly
    undo; a plan that failed is no deploy."""
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    (project.root / ".gitignore").write_text("data/\nlogs/\n.cache/\n")
    _git(project.root, "init", "-q", "-b", "main")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "A")
    first = _git(project.root, "rev-parse", "HEAD")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(c, d, r, st) for c, d, _, r, st in _deploys(project)] == [(first, False, False, "applied")]  # every model

    # a transform killed after its plan promoted the models, before it marked the deploy applied:
    # `elt status` says so (it showed the deploy as finished), and the next transform, which finds
    # nothing to plan (prod serves this commit's models), marks it applied (it stayed planning)
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("UPDATE elt_meta.deploys SET status = 'planning'")
    status = project.elt("status")
    assert f"prod: {first[:12]} by " in status.stdout and "its plan has not finished" in status.stdout, status.stdout
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0 and "plan had no changes" in proc.stdout, proc.stdout + proc.stderr
    assert [st for *_, st in _deploys(project)] == ["applied"]
    assert "its plan has not finished" not in project.elt("status").stdout

    changed = "marts.customers, marts.orders"  # the edited mart and the one that reads it
    model = project.root / "models" / "marts" / "orders.sql"
    old_sql = model.read_text()
    model.write_text(old_sql.replace("COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
                                     "COALESCE(order_items_summary.count_drink_items, 0) >= 1 AS is_drink_order,"))
    _git(project.root, "commit", "-q", "-am", "B: drink orders")
    second = _git(project.root, "rev-parse", "HEAD")
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (second, False, changed, False, "applied")

    _git(project.root, "checkout", "-q", first)  # the stale checkout
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    first_line = next(line for line in out.splitlines() if "transform failed during deploy" in line)
    assert f"prod was last deployed from {second[:12]} by " in first_line, out  # one line: what the alert shows
    assert f"this checkout ({first[:12]}) is behind it" in first_line and f"(models: {changed})" in first_line, out
    assert "next: `git pull` here" in first_line and "elt transform --allow-revert" in first_line, out
    assert "Traceback" not in out and len(_deploys(project)) == 2, out  # stopped before the plan

    proc = project.elt("transform", "--allow-revert", timeout=300)  # the rollback, on purpose
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (first, False, changed, True, "applied")
    status = project.elt("status")
    assert f"prod: {first[:12]} (a rollback: --allow-revert) by " in status.stdout and "marts.orders" in status.stdout, \
        status.stdout + status.stderr

    _git(project.root, "checkout", "-q", "main")  # the scheduler's checkout, still at the bad commit
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and f"prod was rolled back to {first[:12]} " in out, out
    assert "would undo the rollback" in out and len(_deploys(project)) == 3, out
    proc = project.elt("transform", "--allow-revert", timeout=300)  # the fix is in: rolled forward on purpose
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1] == (second, False, changed, False, "applied")  # forward: no rollback

    # rolled back once more; the branch then gains an edit upstream of the bad model: its query is
    # still the rolled-back one, so the checkout is refused, naming that model only
    _git(project.root, "checkout", "-q", first)
    proc = project.elt("transform", "--allow-revert", timeout=300)
    assert proc.returncode == 0 and _deploys(project)[-1] == (first, False, changed, True, "applied"), \
        proc.stdout + proc.stderr
    _git(project.root, "checkout", "-q", "main")
    staging = project.root / "models" / "staging" / "stg_jaffle_shop__orders.sql"
    staging.write_text(staging.read_text().replace("'Jaffle Shop orders, one row per order", "'Orders, one row per order"))
    _git(project.root, "commit", "-q", "-am", "D: a description upstream")
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "would undo the rollback (models: marts.orders)" in out, out
    # the branch reverts the bad change (found by an on-call probe: this newer checkout was refused
    # as undoing the rollback on every run, although it no longer held the rolled-back query): it
    # deploys as usual, D's edit included, and is recorded as a deploy, not a rollback
    _git(project.root, "revert", "--no-edit", second)
    fixed = _git(project.root, "rev-parse", "HEAD")
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _deploys(project)[-1][0::3] == (fixed, False) and _deploys(project)[-1][4] == "applied"
    assert "staging.stg_jaffle_shop__orders" in _deploys(project)[-1][2]
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        rolled_back = con.execute("SELECT model, version FROM elt_meta.rolled_back_versions").fetchall()
    assert [m for m, _ in rolled_back] == ['"warehouse"."marts"."orders"'] * 2, rolled_back  # one per rollback

    # a plan that fails (here a model's query) promotes nothing and is not recorded
    model.write_text(old_sql.replace("COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
                                     "CAST('not a number' AS INTEGER) > 0 AS is_drink_order,"))
    _git(project.root, "commit", "-q", "-am", "C: broken")
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 1 and "transform failed during plan" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert len(_deploys(project)) == 6 and _deploys(project)[-1][0] == fixed

    # another machine deployed a commit this checkout has never fetched
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb")) as con:
        con.execute("INSERT INTO elt_meta.deploys VALUES ('x1', 'prod', '0123456789abcdef0123456789abcdef01234567', "
                    "FALSE, 'other-host', 'bob', now()::TIMESTAMP + INTERVAL 1 MINUTE, 'marts.orders', FALSE, 'applied')")
    model.write_text(old_sql.replace("COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
                                     "COALESCE(order_items_summary.count_drink_items, 0) <> 0 AS is_drink_order,"))
    proc = project.elt("transform", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "0123456789ab by bob@other-host" in out and "does not have that commit" in out, out
    assert "git fetch --unshallow" in out, out


def test_a_change_deployed_by_a_bare_sqlmesh_plan_is_not_put_back_by_a_checkout_without_it(project: Project,
                                                                                             small_jaffle: Path) -> None:
    """Found by a dev-environment probe: a reviewed change deployed with a bare `sqlmesh plan` (the
    README allows it) from another checkout was undone by the next scheduled `elt transform` of a
    checkout that had not merged it: 'plan applied', recorded as a deploy, not a word about it.
    Such a transform now stops, naming the models; a checkout that holds the change deploys as usual."""
    from tests.conftest import BIN, copy_project, run

    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    branch = copy_project(project.root.parent / "branch")  # the reviewer's checkout, on the same warehouse
    model = branch / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text().replace(
        "COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,",
        "COALESCE(order_items_summary.count_drink_items, 0) >= 1 AS is_drink_order,"))
    env = {**project.env, "ELT_PROJECT_DIR": str(branch),
           "ELT_DUCKDB_PATH": str(project.root / "data" / "warehouse.duckdb")}
    run([str(BIN / "sqlmesh"), "plan", "--auto-apply", "--no-prompts"], cwd=branch, env=env, timeout=300)
    # the runbook's next step after a bare plan, from the same checkout (it plans nothing: it
    # serves what prod serves). It took the outside plan for elt's own, and the scheduler's
    # checkout below then put the change back, green (a probe)
    run([str(BIN / "elt"), "transform"], cwd=branch, env=env, timeout=300)

    proc = project.elt("transform", timeout=300)  # the scheduler's checkout, without the change
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    line = next(line for line in out.splitlines() if "transform failed during deploy" in line)
    assert "by a plan outside `elt transform` (a bare `sqlmesh plan`), which deployed versions of marts.orders" in line, out
    assert "Nothing ran. next: bring that change into this checkout" in line and "--allow-revert" in line, out
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM elt_meta.deploys").fetchone() == (1,)  # nothing planned

    # the change merged into the scheduler's checkout, with an edit of the mart downstream of it
    # since (whose version the outside plan had changed too): deployed as usual, nothing to refuse
    shutil.copy(model, project.root / "models" / "marts" / "orders.sql")
    customers = project.root / "models" / "marts" / "customers.sql"
    text = customers.read_text()
    assert "description 'Customers, one row per customer," in text
    customers.write_text(text.replace("description 'Customers, one row per customer,",
                                      "description 'Customers (one row each),", 1))
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plan applied" in proc.stdout, proc.stdout
