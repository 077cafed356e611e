"""Dev previews on PostgreSQL: a model change is built in a dev environment and diffed against prod;
prod's views and tables stay as they were until the change is applied to prod."""

from __future__ import annotations

from pathlib import Path

import psycopg2

from tests.conftest import BIN, copy_project, project_env, run


def rows(pg_db, query: str) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    con = psycopg2.connect(pg_db.dsn)
    try:
        with con.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        con.close()


def test_plan_dev_shows_the_change_in_dev_only_until_it_is_applied_to_prod(pg_db, small_jaffle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project")
    env = project_env(project, ELT_GATEWAY="postgres", ELT_LANDING_ROOT=str(tmp_path / "landing"), **pg_db.env("ELT_PG"))
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([str(BIN / "elt"), "transform"], cwd=project, env=env)
    types = "SELECT customer_id, customer_type FROM {} ORDER BY customer_id"
    assert rows(pg_db, types.format("marts.customers")) == [("c1", "returning"), ("c2", "returning"), ("c3", "new")]
    prod_views = "SELECT viewname, definition FROM pg_views WHERE schemaname = 'marts' ORDER BY viewname"
    prod_before = rows(pg_db, prod_views)

    # a developer changes a mart's logic: "returning" now needs more than two orders
    model = project / "models" / "marts" / "customers.sql"
    text = model.read_text()
    assert "count_lifetime_orders, 0) > 1 THEN 'returning'" in text
    model.write_text(text.replace("count_lifetime_orders, 0) > 1 THEN 'returning'", "count_lifetime_orders, 0) > 2 THEN 'returning'"))

    # the model's unit test (run on PostgreSQL) still expects the old rule: the plan is refused
    refused = run([str(BIN / "elt"), "preview", "dev"], cwd=project, env=env, timeout=300, check=False)
    assert refused.returncode == 1
    assert "unit test" in refused.stderr and "sqlmesh test" in refused.stderr, refused.stderr
    assert rows(pg_db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'marts__dev'") == [(0,)]
    # ... so the developer updates the expectation with the rule
    unit = project / "tests" / "models" / "test_marts.yaml"
    old_row = "lifetime_spend: 12.75, customer_type: returning"
    assert old_row in unit.read_text()
    unit.write_text(unit.read_text().replace(old_row, "lifetime_spend: 12.75, customer_type: new"))

    preview = run([str(BIN / "elt"), "preview", "dev"], cwd=project, env=env, timeout=300)
    report = preview.stdout
    assert "environment dev: 1 model(s) rebuilt (changed, or downstream of a breaking change); 1 of them differ" in report, report
    assert "marts.customers: prod 3 rows, dev 3 rows; on customer_id: 3 matched (2 changed)" in report, report
    # 2 of the 3 matched rows differ, in customer_type only
    assert "changed columns: customer_type (2 of 3 matched rows differ)" in report, report

    assert rows(pg_db, types.format("marts__dev.customers")) == [("c1", "new"), ("c2", "new"), ("c3", "new")]
    assert rows(pg_db, types.format("marts.customers")) == [("c1", "returning"), ("c2", "returning"), ("c3", "new")]
    assert rows(pg_db, prod_views) == prod_before  # prod's views still point at the same tables

    # `sqlmesh plan dev` itself, from the project root, agrees there is nothing left to build
    again = run([str(BIN / "sqlmesh"), "plan", "dev", "--no-prompts", "--auto-apply"], cwd=project, env=env, timeout=300)
    assert "No changes to plan" in again.stdout, again.stdout

    run([str(BIN / "sqlmesh"), "plan", "--no-prompts", "--auto-apply"], cwd=project, env=env, timeout=300)
    assert rows(pg_db, types.format("marts.customers")) == [("c1", "new"), ("c2", "new"), ("c3", "new")]
    assert rows(pg_db, prod_views) != prod_before
