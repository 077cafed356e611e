"""End to end: `elt demo` on one year of jafgen data, in a copy of the project, then the marts are
compared row for row with an independent computation written here in plain DuckDB SQL over the
same CSV files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest import BIN, project_env, run

pytestmark = pytest.mark.slow


def _csv(folder: Path, name: str, columns: dict[str, str]) -> str:
    cols = ", ".join(f"'{k}': '{v}'" for k, v in columns.items())
    return f"read_csv('{folder / name}', header = true, columns = {{{cols}}})"


def expected_marts(con: duckdb.DuckDBPyConnection, data: Path) -> None:
    """The spec's marts, computed straight from the CSVs, without the project's models or macros."""
    con.execute(f"CREATE TEMP VIEW e_customers_raw AS SELECT * FROM {_csv(data, 'raw_customers.csv', {'id': 'VARCHAR', 'name': 'VARCHAR'})}")
    con.execute(f"""CREATE TEMP VIEW e_orders_raw AS SELECT * FROM {_csv(data, 'raw_orders.csv', {
        'id': 'VARCHAR', 'customer': 'VARCHAR', 'ordered_at': 'TIMESTAMP', 'store_id': 'VARCHAR',
        'subtotal': 'BIGINT', 'tax_paid': 'BIGINT', 'order_total': 'BIGINT'})}""")
    con.execute(f"CREATE TEMP VIEW e_items_raw AS SELECT * FROM {_csv(data, 'raw_items.csv', {'id': 'VARCHAR', 'order_id': 'VARCHAR', 'sku': 'VARCHAR'})}")
    con.execute(f"""CREATE TEMP VIEW e_products_raw AS SELECT * FROM {_csv(data, 'raw_products.csv', {
        'sku': 'VARCHAR', 'name': 'VARCHAR', 'type': 'VARCHAR', 'price': 'BIGINT', 'description': 'VARCHAR'})}""")
    con.execute(f"""CREATE TEMP VIEW e_stores_raw AS SELECT * FROM {_csv(data, 'raw_stores.csv', {
        'id': 'VARCHAR', 'name': 'VARCHAR', 'opened_at': 'TIMESTAMP', 'tax_rate': 'DECIMAL(9,4)'})}""")
    con.execute(f"""CREATE TEMP VIEW e_supplies_raw AS SELECT * FROM {_csv(data, 'raw_supplies.csv', {
        'id': 'VARCHAR', 'name': 'VARCHAR', 'cost': 'BIGINT', 'perishable': 'VARCHAR', 'sku': 'VARCHAR'})}""")

    con.execute("""CREATE TEMP VIEW e_products AS SELECT sku AS product_id, name AS product_name, type AS product_type,
        description AS product_description, (price / 100)::DECIMAL(16,2) AS product_price,
        type = 'jaffle' AS is_food_item, type = 'beverage' AS is_drink_item FROM e_products_raw""")
    con.execute("""CREATE TEMP VIEW e_locations AS SELECT id AS location_id, name AS location_name, tax_rate,
        CAST(opened_at AS DATE) AS opened_date FROM e_stores_raw""")
    con.execute("""CREATE TEMP VIEW e_supplies AS SELECT md5(concat(id, '|', sku)) AS supply_uuid, id AS supply_id,
        sku AS product_id, name AS supply_name, (cost / 100)::DECIMAL(16,2) AS supply_cost,
        perishable = 'True' AS is_perishable_supply FROM e_supplies_raw""")
    con.execute("""CREATE TEMP VIEW e_order_items AS
        SELECT i.id AS order_item_id, i.order_id, i.sku AS product_id, p.product_name, p.product_price,
               (SELECT sum(s.supply_cost) FROM e_supplies s WHERE s.product_id = i.sku) AS supply_cost,
               p.is_food_item, p.is_drink_item, date_trunc('day', o.ordered_at)::TIMESTAMP AS ordered_at
        FROM e_items_raw i JOIN e_orders_raw o ON o.id = i.order_id LEFT JOIN e_products p ON p.product_id = i.sku""")
    con.execute("""CREATE TEMP VIEW e_orders AS
        SELECT o.id AS order_id, o.store_id AS location_id, o.customer AS customer_id,
               o.subtotal AS subtotal_cents, o.tax_paid AS tax_paid_cents, o.order_total AS order_total_cents,
               (o.subtotal / 100)::DECIMAL(16,2) AS subtotal, (o.tax_paid / 100)::DECIMAL(16,2) AS tax_paid,
               (o.order_total / 100)::DECIMAL(16,2) AS order_total,
               (SELECT sum(oi.supply_cost) FROM e_order_items oi WHERE oi.order_id = o.id) AS order_cost,
               (SELECT sum(oi.product_price) FROM e_order_items oi WHERE oi.order_id = o.id) AS order_items_subtotal,
               (SELECT count(*) FROM e_order_items oi WHERE oi.order_id = o.id) AS count_order_items,
               (SELECT count(*) FROM e_order_items oi WHERE oi.order_id = o.id AND oi.is_food_item) AS count_food_items,
               (SELECT count(*) FROM e_order_items oi WHERE oi.order_id = o.id AND oi.is_drink_item) AS count_drink_items,
               row_number() OVER (PARTITION BY o.customer ORDER BY date_trunc('day', o.ordered_at), o.id) AS customer_order_number,
               date_trunc('day', o.ordered_at)::TIMESTAMP AS ordered_at
        FROM e_orders_raw o""")
    con.execute("""CREATE TEMP VIEW e_customers AS
        SELECT c.id AS customer_id, c.name AS customer_name,
               count(o.order_id) AS count_lifetime_orders,
               sum(o.subtotal) AS lifetime_spend_pretax, sum(o.tax_paid) AS lifetime_tax_paid, sum(o.order_total) AS lifetime_spend,
               CASE WHEN count(o.order_id) > 1 THEN 'returning' ELSE 'new' END AS customer_type,
               min(o.ordered_at) AS first_ordered_at, max(o.ordered_at) AS last_ordered_at
        FROM e_customers_raw c LEFT JOIN e_orders o ON o.customer_id = c.id GROUP BY c.id, c.name""")


MART_COLUMNS = {
    "customers": "customer_id, customer_name, count_lifetime_orders, lifetime_spend_pretax, lifetime_tax_paid, lifetime_spend, customer_type, first_ordered_at, last_ordered_at",
    "orders": "order_id, location_id, customer_id, subtotal_cents, tax_paid_cents, order_total_cents, subtotal, tax_paid, order_total, order_cost, order_items_subtotal, count_order_items, count_food_items, count_drink_items, customer_order_number, count_food_items > 0, count_drink_items > 0, ordered_at",
    "order_items": "order_item_id, order_id, product_id, product_name, product_price, supply_cost, is_food_item, is_drink_item, ordered_at",
    "products": "product_id, product_name, product_type, product_description, product_price, is_food_item, is_drink_item",
    "locations": "location_id, location_name, tax_rate, opened_date",
    "supplies": "supply_uuid, supply_id, product_id, supply_name, supply_cost, is_perishable_supply",
}


def test_demo_marts_equal_an_independent_computation_row_for_row(demo_project, jaffle_data: Path) -> None:  # type: ignore[no-untyped-def]
    project, proc = demo_project
    warehouse = project / "data" / "warehouse.duckdb"
    assert f"warehouse: {warehouse}" in proc.stdout
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        expected_marts(con, jaffle_data)
        for mart, columns in MART_COLUMNS.items():
            got_columns = columns.replace("count_food_items > 0, count_drink_items > 0", "is_food_order, is_drink_order")
            actual = f"SELECT {got_columns} FROM marts.{mart}"
            expected = f"SELECT {columns} FROM e_{mart}"
            n_actual = con.execute(f"SELECT count(*) FROM marts.{mart}").fetchone()[0]
            n_expected = con.execute(f"SELECT count(*) FROM e_{mart}").fetchone()[0]
            assert n_actual == n_expected and n_actual > 0, mart
            missing = con.execute(f"SELECT count(*) FROM ({expected} EXCEPT ALL {actual})").fetchone()[0]
            extra = con.execute(f"SELECT count(*) FROM ({actual} EXCEPT ALL {expected})").fetchone()[0]
            assert (missing, extra) == (0, 0), f"marts.{mart}: {missing} expected rows missing, {extra} unexpected rows"
        # raw keeps the files' rows exactly, each with its batch
        for table, file in [("orders", "raw_orders.csv"), ("items", "raw_items.csv"), ("customers", "raw_customers.csv")]:
            rows = con.execute(f"SELECT count(*), count(DISTINCT _batch_id) FROM raw_jaffle_shop.{table}").fetchone()
            lines = sum(1 for _ in (jaffle_data / file).open()) - 1
            assert rows == (lines, 1), table
        # column descriptions land in the warehouse as comments (what BI tools show)
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE schema_name = 'marts' AND table_name = 'orders' AND column_name = 'order_total'"
        ).fetchone()
        assert comment and "dollars" in comment[0]
    finally:
        con.close()
    # the summary names the rows per raw table and per mart, the audits, and what to try next
    for text in ("raw_jaffle_shop.orders", "marts.customers", "audits:", "passed", "elapsed:", "sqlmesh ui", "sqlmesh plan dev"):
        assert text in proc.stdout


def test_running_the_demo_again_changes_nothing(demo_project, jaffle_data: Path) -> None:  # type: ignore[no-untyped-def]
    project, _ = demo_project
    warehouse = project / "data" / "warehouse.duckdb"

    def snapshot() -> tuple:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            ledger = con.execute("SELECT batch_id FROM elt_meta.loaded_batches ORDER BY 1").fetchall()
            marts = [con.execute(f"SELECT count(*), md5(string_agg(x::VARCHAR, '' ORDER BY x::VARCHAR)) FROM marts.{m} AS x").fetchone() for m in MART_COLUMNS]
        finally:
            con.close()
        landed = sorted(p.relative_to(project) for p in (project / "data" / "landing").rglob("*") if p.is_file() and p.name != ".lock")
        return ledger, marts, landed

    before = snapshot()
    proc = run([str(BIN / "elt"), "demo"], cwd=project, env=project_env(project, JAFFLE_DATA_DIR=str(jaffle_data)))
    assert "plan: no changes" in proc.stdout
    assert snapshot() == before


def test_sqlmesh_commands_work_from_the_project_root_without_flags(demo_project) -> None:  # type: ignore[no-untyped-def]
    """After the demo, `sqlmesh plan`, `run`, `plan dev` and `test` find the warehouse via config.yaml's
    relative default path, from the project root, with no environment variable set."""
    project, _ = demo_project
    env = project_env(project)
    env.pop("ELT_PROJECT_DIR")
    sqlmesh = str(BIN / "sqlmesh")
    plan = run([sqlmesh, "plan", "--no-prompts"], cwd=project, env=env, timeout=300)
    assert "No changes to plan" in plan.stdout
    run([sqlmesh, "run"], cwd=project, env=env, timeout=300)
    dev = run([sqlmesh, "plan", "dev", "--no-prompts", "--auto-apply", "--include-unmodified"], cwd=project, env=env, timeout=300)
    assert "dev" in dev.stdout
    out = run([sqlmesh, "fetchdf", "SELECT count(*) AS n FROM marts__dev.customers"], cwd=project, env=env, timeout=300)
    assert out.stdout.strip().splitlines()[-1].split()[-1].isdigit()
    test = run([sqlmesh, "test"], cwd=project, env=env, timeout=300, check=False)
    assert test.returncode == 0, test.stdout + test.stderr
    assert not (project / "data" / "data").exists()
