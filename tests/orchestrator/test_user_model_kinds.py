"""Models a data team adds beside the shipped ones, of kinds the shipped ones do not use: what
`elt transform` does to them when new batches arrive (a probe of user-written models found these)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.transform.run import make_context, transform
from tests.conftest import project_settings

SCD2 = """MODEL (
  name marts.customer_name_history,
  kind SCD_TYPE_2_BY_COLUMN (unique_key customer_id, columns [customer_name]),
  grain (customer_id, valid_from),
  description 'Every name each customer has had, with when it was first and last seen.'
);

SELECT
  customers.customer_id,
  customers.customer_name
FROM staging.stg_jaffle_shop__customers AS customers
"""


UNMANAGED = """MODEL (
  name marts.customer_names_seen,
  kind INCREMENTAL_UNMANAGED,
  description 'Each customer''s name as every scheduled run saw it.'
);

SELECT customers.customer_id, customers.customer_name, CAST(@execution_ts AS TIMESTAMP) AS seen_at
FROM staging.stg_jaffle_shop__customers AS customers
"""

FROZEN = """MODEL (
  name marts.orders_by_day_frozen,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at, disable_restatement true),
  grain ordered_at,
  description 'Orders per day and one customer''s name, as first built.'
);

SELECT orders.ordered_at, COUNT(*) AS orders, MAX(customers.customer_name) AS a_customer_name
FROM staging.stg_jaffle_shop__orders AS orders
JOIN staging.stg_jaffle_shop__customers AS customers ON customers.customer_id = orders.customer_id
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1
"""


@pytest.fixture
def settings(built_settings):  # type: ignore[no-untyped-def]
    """A copy of a project where the tiny shop was loaded and transformed (conftest's
    ``built_settings``): the models these tests add join a pipeline that already runs, as a team's
    do, and a test's first load and transform cost its own model and changes, not a first build of
    every shipped model (about 2.4 s of a test's 10 to 20)."""
    return built_settings


@pytest.fixture
def empty_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A copied project with an empty warehouse: the models the test adds are in its first build."""
    return project_settings(tmp_path, monkeypatch)


def _load(settings, folder: Path) -> None:  # type: ignore[no-untyped-def]
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder)
    assert not [o.error for o in outcomes if o.error]


def _history(settings) -> list[tuple]:  # type: ignore[no-untyped-def]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute("SELECT customer_name, valid_to IS NULL FROM marts.customer_name_history "
                           "WHERE customer_id = 'c1' ORDER BY valid_from").fetchall()


def test_an_scd_type_2_model_keeps_its_history_when_its_source_changes(  # type: ignore[no-untyped-def]
        empty_settings, small_jaffle: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLMesh refuses to restate an SCD type 2 model: its table holds versions the source no
    longer has. `elt transform` removed its interval whenever customers changed, and SQLMesh rebuilt
    it from today's names: every earlier name was gone, every command succeeding. (The models are
    in the project's first build.)"""
    settings = empty_settings
    (settings.project_root / "models" / "marts" / "customer_name_history.sql").write_text(SCD2)
    (settings.project_root / "models" / "marts" / "customer_names_seen.sql").write_text(UNMANAGED)
    (settings.project_root / "models" / "marts" / "orders_by_day_frozen.sql").write_text(FROZEN)
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    first = _history(settings)
    assert len(first) == 1 and first[0][1], first
    # consumed under the table version SQLMesh gave the new (forward-only) model, not its fingerprint's
    ctx, _ = make_context(settings, quiet=True)
    try:
        version = ctx.get_snapshot("marts.customer_name_history", raise_if_missing=True).version
    finally:
        ctx.close()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        consumed = con.execute("SELECT DISTINCT version FROM elt_meta.consumed_batches "
                               "WHERE model = 'marts.customer_name_history'").fetchall()
    assert consumed == [(version,)], (consumed, version)

    # the source renames c1; the scheduled run of the next day records the new name
    text = (small_jaffle / "raw_customers.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(text) if line.startswith("c1,"))
    text[row] = "c1,Ann Renamed"
    (small_jaffle / "raw_customers.csv").write_text("\n".join(text) + "\n")
    _load(settings, small_jaffle)
    ctx, _ = make_context(settings, quiet=True)
    try:
        ctx.run("prod", execution_time=datetime.now(UTC) + timedelta(days=1))
    finally:
        ctx.close()
    named = _history(settings)
    assert [n for n, _ in named] == [first[0][0], "Ann Renamed"] and named[-1][1], named

    # a later change reaches the model through `elt transform`: the history stays
    text[row] = "c1,Ann Renamed Again"
    (small_jaffle / "raw_customers.csv").write_text("\n".join(text) + "\n")
    _load(settings, small_jaffle)
    caplog.set_level(logging.INFO, logger="orchestrator.transform.run")
    transform(settings, quiet=True)
    assert _history(settings)[:2] == [(first[0][0], False), ("Ann Renamed", True)], _history(settings)
    kept = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not restating")]
    # the other kinds SQLMesh never restates, each named for what it is (a probe: the unmanaged model's
    # line spoke of days and of disable_restatement, which it has neither of)
    assert kept == ["not restating marts.customer_name_history: it is an SCD type 2 model, which SQLMesh never "
                    "restates (that would erase its history); its next scheduled interval records the changes",
                    "not restating marts.customer_names_seen: it is INCREMENTAL_UNMANAGED, which SQLMesh never "
                    "restates: its next scheduled run appends what its query returns then, so changed or late rows "
                    "reach it only if that query selects them. To rebuild it from today's data, `sqlmesh plan "
                    "--restate-model marts.customer_names_seen` (it is rebuilt whole)",
                    "not restating marts.orders_by_day_frozen: it sets disable_restatement true: changed or late rows "
                    "of days it has already built never reach it, only rows of days it has yet to build. If they "
                    "must, remove disable_restatement and restate it (`sqlmesh plan --restate-model "
                    "marts.orders_by_day_frozen`)"], kept


RUNNING = """MODEL (
  name marts.{name},
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  {tags}
  description 'Each order with the running total of its {entity}''s spend up to and including it.'
);

WITH history AS (
  SELECT
    orders.order_id,
    orders.{entity}_id AS entity_id,
    orders.ordered_at,
    SUM(orders.order_total_cents) OVER (PARTITION BY orders.{entity}_id ORDER BY orders.ordered_at, orders.order_id) AS running_cents
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE orders.ordered_at <= @end_ts
)
SELECT history.order_id, history.entity_id, history.ordered_at, history.running_cents
FROM history
WHERE history.ordered_at BETWEEN @start_ts AND @end_ts
"""


TRAILING = """MODEL (
  name marts.location_trailing_revenue,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_day),
  grain (location_id, order_day),
  tags ('restate:next_days:2'),
  description 'Each store''s revenue over the day and the two days before it, on the days it sold.'
);

WITH daily AS (
  SELECT orders.location_id, orders.ordered_at AS order_day, SUM(orders.order_total_cents) AS cents
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE orders.ordered_at BETWEEN CAST(@start_ts AS TIMESTAMP) - INTERVAL 2 DAY AND @end_ts
  GROUP BY orders.location_id, orders.ordered_at
)
SELECT
  daily.location_id,
  daily.order_day,
  (SELECT SUM(before.cents) FROM daily AS before WHERE before.location_id = daily.location_id
     AND before.order_day BETWEEN daily.order_day - INTERVAL 2 DAY AND daily.order_day) AS trailing_cents
FROM daily
WHERE daily.order_day BETWEEN @start_ts AND @end_ts
"""


def test_running_totals_follow_a_corrected_amount_into_later_days(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """A running total per customer (its window function is found in the SQL), one per store,
    another entity than the declared sequence_key (customer), so it carries 'restate:all_later_days',
    and a store's trailing 3-day revenue ('restate:next_days:2'). A corrected amount restated only
    the order's own day, and the later days kept stale totals; a rank (ROW_NUMBER) needs later days
    only when rows appear, go or move, and still gets only those."""
    models = settings.project_root / "models" / "marts"
    (models / "customer_running_spend.sql").write_text(RUNNING.format(name="customer_running_spend", entity="customer", tags=""))
    (models / "location_running_revenue.sql").write_text(
        RUNNING.format(name="location_running_revenue", entity="location", tags="tags ('restate:all_later_days'),"))
    (models / "location_trailing_revenue.sql").write_text(TRAILING)
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c3,2018-09-05T09:00:00,s1,0,0,0\n")
    _load(settings, small_jaffle)
    transform(settings, quiet=True)

    # o1 (c1, store s1, 2018-09-01): more tax. c1's next order is o2 (09-03); s1's are o2 and o5 (09-05)
    orders.write_text(orders.read_text().replace("o1,c1,2018-09-01T09:00:00,s1,1700,102,1802",
                                                 "o1,c1,2018-09-01T09:00:00,s1,1700,110,1810"))
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-01", summary.restated_windows
    assert summary.restated_windows["marts.customer_running_spend"].startswith("2 day(s): 2018-09-01, 2018-09-03")
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        for model, entity in (("customer_running_spend", "customer_id"), ("location_running_revenue", "location_id")):
            got = con.execute(f"SELECT order_id, running_cents FROM marts.{model} ORDER BY order_id").fetchall()
            want = con.execute(f"SELECT order_id, SUM(order_total_cents) OVER (PARTITION BY {entity} ORDER BY ordered_at, "
                               "order_id) FROM staging.stg_jaffle_shop__orders ORDER BY order_id").fetchall()
            assert got == want, (model, got, want)
        assert con.execute("SELECT running_cents FROM marts.location_running_revenue WHERE order_id = 'o5'").fetchone() == (
            1810 + 1166,)
        got = con.execute("SELECT location_id, order_day, trailing_cents FROM marts.location_trailing_revenue ORDER BY 1, 2").fetchall()
        want = con.execute("SELECT d.location_id, d.ordered_at, (SELECT SUM(o.order_total_cents) FROM staging.stg_jaffle_shop__orders "
                           "AS o WHERE o.location_id = d.location_id AND o.ordered_at BETWEEN d.ordered_at - INTERVAL 2 DAY "
                           "AND d.ordered_at) FROM (SELECT DISTINCT location_id, ordered_at FROM staging.stg_jaffle_shop__orders) "
                           "AS d ORDER BY 1, 2").fetchall()
        assert got == want and ("s1", datetime(2018, 9, 3), 1810 + 1166) in got, (got, want)
    assert summary.restated_windows["marts.location_trailing_revenue"].startswith("3 day(s): 2018-09-01..2018-09-03")


FIRST_ORDERS = """MODEL (
  name marts.first_orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  {tags}
  description 'Whether each order is its customer''s first.'
);

SELECT
  orders.order_id,
  orders.ordered_at,
  NOT EXISTS (
    SELECT 1 FROM staging.stg_jaffle_shop__orders AS earlier
    WHERE earlier.customer_id = orders.customer_id AND earlier.ordered_at < orders.ordered_at
  ) AS is_first_order
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
"""


SPENT_SO_FAR = """MODEL (
  name marts.customer_spent_so_far,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  {tags}
  description 'Each order with what its customer had spent by the end of its window.'
);

WITH spent AS (
  SELECT orders.customer_id, SUM(orders.order_total_cents) AS cents
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE orders.ordered_at <= @end_ts
  GROUP BY orders.customer_id
)
SELECT orders.order_id, orders.ordered_at, spent.cents AS spent_cents
FROM staging.stg_jaffle_shop__orders AS orders
JOIN spent ON spent.customer_id = orders.customer_id
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
"""

WEEK_BEFORE = """MODEL (
  name marts.location_orders_week_before,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  {tags}
  description 'Each order with its store''s orders from a week before its window to its day.'
);

SELECT
  orders.order_id,
  orders.ordered_at,
  (
    SELECT COUNT(*) FROM staging.stg_jaffle_shop__orders AS week
    WHERE week.location_id = orders.location_id
      AND week.ordered_at BETWEEN CAST(@start_ts AS TIMESTAMP) - INTERVAL 7 DAY AND CAST(@end_ts AS TIMESTAMP)
  ) AS store_orders
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
"""


@pytest.mark.parametrize("tags", ["", "tags ('restate:later_days'),", "tags ('restate:own_days'),"])
def test_a_model_that_compares_two_rows_times_without_a_restate_tag_is_named(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, caplog: pytest.LogCaptureFixture, tags: str) -> None:
    """'Is this the customer's first order', written as a correlated subquery: a day's rows depend on
    earlier days, which nothing but a tag tells the transform. Without one, a probe's model drifted to
    51 stale rows with no word from any command. A total so far (rows up to the window's end, with
    no start) and a week before the window are the same kind of read without a column comparison,
    and were not named (decision 0053's "other forms of history reads")."""
    marts = settings.project_root / "models" / "marts"
    for name, text in (("first_orders", FIRST_ORDERS), ("customer_spent_so_far", SPENT_SO_FAR),
                       ("location_orders_week_before", WEEK_BEFORE)):
        (marts / f"{name}.sql").write_text(text.format(tags=tags))
    _load(settings, small_jaffle)
    caplog.set_level(logging.WARNING, logger="orchestrator.transform.run")
    transform(settings, quiet=True)
    named = sorted(r.getMessage() for r in caplog.records
                   if "compares rows of different times" in r.getMessage() or "reads rows before its window" in r.getMessage())
    if tags:
        assert named == [], named
    else:
        assert [m.split(" and has no restate tag")[0] for m in named] == [
            "marts.customer_spent_so_far reads rows before its window (orders.ordered_at <= @end_ts)",
            "marts.first_orders compares rows of different times (earlier.ordered_at < orders.ordered_at)",
            "marts.location_orders_week_before reads rows before its window (week.ordered_at BETWEEN "
            "CAST(@start_ts AS TIMESTAMP) - INTERVAL '7' DAY AND CAST(@end_ts AS TIMESTAMP))"], named


RUNNING_ITEMS = """MODEL (
  name marts.customer_running_items,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_item_id,
  description 'Each item with the running count of its customer''s items.'
);

WITH history AS (
  SELECT
    items.order_item_id,
    orders.ordered_at,
    SUM(1) OVER (PARTITION BY orders.customer_id ORDER BY orders.ordered_at, items.order_item_id) AS running_items
  FROM staging.stg_jaffle_shop__order_items AS items
  JOIN staging.stg_jaffle_shop__orders AS orders ON items.order_id = orders.order_id
  WHERE orders.ordered_at <= @end_ts
)
SELECT history.order_item_id, history.ordered_at, history.running_items
FROM history
WHERE history.ordered_at BETWEEN @start_ts AND @end_ts
"""


def test_a_late_item_reaches_its_customers_later_running_count(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """Items take their day from their order (event_time_from): a late item of o1 (c1, 09-01) must
    also restate c1's later days (o2's item on 09-03) in a model that aggregates c1's earlier items
    (found by a review: the parent's days alone were restated)."""
    (settings.project_root / "models" / "marts" / "customer_running_items.sql").write_text(RUNNING_ITEMS)
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    items = small_jaffle / "raw_items.csv"
    items.write_text(items.read_text() + "i6,o1,BEV-002\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.customer_running_items"].startswith("2 day(s): 2018-09-01, 2018-09-03")
    assert summary.restated_windows["marts.order_items"] == "1 day(s): 2018-09-01", summary.restated_windows
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT order_item_id, running_items FROM marts.customer_running_items ORDER BY 1").fetchall()
        want = con.execute("SELECT i.order_item_id, COUNT(*) OVER (PARTITION BY o.customer_id ORDER BY o.ordered_at, "
                           "i.order_item_id) FROM staging.stg_jaffle_shop__order_items AS i JOIN "
                           "staging.stg_jaffle_shop__orders AS o USING (order_id) ORDER BY 1").fetchall()
    assert got == want and ("i3", 4) in got, (got, want)


RANKED_FROM = """firsts AS (
  SELECT customer_id, MIN(ordered_at) AS ordered_at FROM staging.stg_jaffle_shop__orders GROUP BY customer_id
), ranked AS (
  SELECT
    orders.order_id,
    orders.ordered_at,
    {window} AS place
  FROM staging.stg_jaffle_shop__orders AS orders
  JOIN firsts ON firsts.customer_id = orders.customer_id
)"""

RANKED = """MODEL (
  name marts.ranked_orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  description 'Each order with a figure over its customer''s orders: {what}.'
);

WITH {ranked}
SELECT ranked.order_id, ranked.ordered_at, ranked.place
FROM ranked
WHERE ranked.ordered_at BETWEEN @start_ts AND @end_ts
"""


@pytest.mark.parametrize("what, window", [
    ("the latest first", "ROW_NUMBER() OVER (PARTITION BY orders.customer_id ORDER BY orders.ordered_at DESC, orders.order_id)"),
    ("the largest first", "ROW_NUMBER() OVER (PARTITION BY orders.customer_id ORDER BY orders.order_total_cents DESC, "
                          "orders.order_id)"),
    ("spend through the month", "SUM(orders.order_total_cents) OVER (PARTITION BY orders.customer_id "
                                "ORDER BY DATE_TRUNC('month', orders.ordered_at))"),
    ("orders of the cohort", "COUNT(*) OVER (PARTITION BY CAST(firsts.ordered_at AS DATE))"),
])
def test_a_window_not_ordered_from_the_earliest_day_restates_every_day(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str, window: str) -> None:
    """'Is this the customer's latest order' (ORDER BY ordered_at DESC), a rank by amount, a running
    sum by month (a month's rows are peers) and a count over a cohort (a window without ORDER BY,
    partitioned by another table's column of the same name) read later rows, not only earlier ones:
    a new order of c1 on 09-04 changes o2 (09-03) and o1 (09-01). The first three were taken for
    ranks by time and restated from the new order's day on, leaving earlier days stale; a review
    found the last three."""
    ranked = RANKED_FROM.format(window=window)
    (settings.project_root / "models" / "marts" / "ranked_orders.sql").write_text(RANKED.format(what=what, ranked=ranked))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        before = dict(con.execute("SELECT order_id, place FROM marts.ranked_orders").fetchall())
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c1,2018-09-04T09:00:00,s1,0,5300,5300\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.ranked_orders"] == "all history", summary.restated_windows
    assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-04", summary.restated_windows
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT order_id, place FROM marts.ranked_orders ORDER BY order_id").fetchall()
        want = con.execute(f"WITH {ranked} SELECT order_id, place FROM ranked ORDER BY order_id").fetchall()
    assert got == want, (got, want)
    # the new order changed an earlier day's row (o1 on 09-01 or o2 on 09-03): what only restating them heals
    assert any(dict(got)[o] != before[o] for o in ("o1", "o2")), (got, before)


RANKED_ITEMS = """MODEL (
  name marts.customer_item_numbers,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_item_id,
  description 'Each item with its place among its customer''s items ({what}).'
);

WITH items AS (
  SELECT
    items.order_item_id,
    orders.ordered_at,
    {window} AS place
  FROM staging.stg_jaffle_shop__order_items AS items
  JOIN staging.stg_jaffle_shop__orders AS orders ON items.order_id = orders.order_id
  WHERE orders.ordered_at <= @end_ts
)
SELECT items.order_item_id, items.ordered_at, items.place
FROM items
WHERE items.ordered_at BETWEEN @start_ts AND @end_ts
"""


@pytest.mark.parametrize("what, window", [
    ("a rank", "ROW_NUMBER() OVER (PARTITION BY orders.customer_id ORDER BY orders.ordered_at, items.order_item_id)"),
    ("a running count", "COUNT(*) OVER (PARTITION BY orders.customer_id ORDER BY orders.ordered_at, items.order_item_id)"),
])
def test_a_late_item_reaches_its_customers_later_item_numbers(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str, window: str) -> None:
    """A model that numbers a customer's items by time (items take their day from their order): a
    late item of o1 (c1, 09-01) shifts the numbers of c1's later items (o2's on 09-03). Before, a
    ranking model got later days only for its sequence_key table's own rows (orders), so 09-03 kept
    its old numbers (two items numbered alike). marts.orders, which ranks orders and only sums their
    items, still restates the item's day alone."""
    (settings.project_root / "models" / "marts" / "customer_item_numbers.sql").write_text(
        RANKED_ITEMS.format(what=what, window=window))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    items = small_jaffle / "raw_items.csv"
    items.write_text(items.read_text() + "i6,o1,BEV-002\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.customer_item_numbers"].startswith("2 day(s): 2018-09-01, 2018-09-03"), \
        summary.restated_windows
    assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-01", summary.restated_windows
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT order_item_id, place FROM marts.customer_item_numbers ORDER BY 1").fetchall()
        want = con.execute(f"SELECT items.order_item_id, {window} FROM staging.stg_jaffle_shop__order_items AS items "
                           "JOIN staging.stg_jaffle_shop__orders AS orders USING (order_id) ORDER BY 1").fetchall()
    assert got == want and ("i3", 4) in got, (got, want)


NUMBERED = """MODEL (
  name marts.numbered,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  description 'A user model that numbers rows: {what}.'
);

WITH {numbered}
SELECT numbered.row_key, numbered.ordered_at, numbered.place
FROM numbered
WHERE numbered.ordered_at BETWEEN @start_ts AND @end_ts
"""

def _numbered_and_clean(settings, numbered: str) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """marts.numbered's rows, and the same CTE computed now over staging (a clean build)."""
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT row_key, place FROM marts.numbered ORDER BY 1").fetchall()
        want = con.execute(f"WITH {numbered} SELECT row_key, place FROM numbered ORDER BY 1").fetchall()
    return got, want


def _after_a_late_order_of_c2(settings, small_jaffle: Path, numbered: str):  # type: ignore[no-untyped-def]
    """Build, add a late order of c2 on 09-02, transform again: the model's rows, the clean
    recompute's, and the second transform's summary."""
    orders = small_jaffle / "raw_orders.csv"
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    orders.write_text(orders.read_text() + "o6,c2,2018-09-02T09:00:00,s2,0,0,0\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    return (*_numbered_and_clean(settings, numbered), summary)


_ORDERS = "staging.stg_jaffle_shop__orders AS orders"
_ITEMS = "staging.stg_jaffle_shop__order_items AS items"
_DRINKS = ("drinks AS (SELECT items.order_id, COUNT(*) AS n FROM staging.stg_jaffle_shop__order_items AS items "
           "WHERE items.product_id LIKE 'BEV%' GROUP BY items.order_id), ")
NUMBERED_CASES = {
    # c1's orders with a drink: o1 (09-01), o5 (09-05); a late drink on o2 (09-03) makes o5 the third
    "drink orders (EXISTS)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS} WHERE EXISTS "
        f"(SELECT 1 FROM {_ITEMS} WHERE items.order_id = orders.order_id AND items.product_id LIKE 'BEV%'))",
        "late drink", "o5"),
    "drink orders (a grouped LEFT JOIN, filtered)": (
        f"{_DRINKS}numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS} LEFT JOIN drinks "
        "ON drinks.order_id = orders.order_id WHERE COALESCE(drinks.n, 0) > 0)",
        "late drink", "o5"),
    # one row per order and product: a new product on o2 adds a line before o5's
    "product lines (LEFT JOIN grouped finer than its join key)": (
        f"numbered AS (SELECT orders.order_id || COALESCE(lines.product_id, '') AS row_key, orders.ordered_at, ROW_NUMBER() OVER "
        f"(PARTITION BY orders.customer_id ORDER BY orders.ordered_at, lines.product_id) AS place FROM {_ORDERS} "
        f"LEFT JOIN (SELECT items.order_id, items.product_id FROM {_ITEMS} GROUP BY items.order_id, items.product_id) "
        "AS lines ON lines.order_id = orders.order_id)",
        "late drink", "o5BEV-002"),
    # c1's orders with tax of 50 cents or more: o1 (102), o2 (66); o1 corrected to 10 makes o2 (09-03) the first
    "orders above a value": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS} "
        "WHERE orders.tax_paid_cents >= 50)",
        "smaller tax", "o2"),
    # every customer's orders in one numbering: a late order of c2 (09-02) shifts c1's o5 (09-05)
    "all orders (no PARTITION BY)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER "
        f"(ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS})",
        "late order", "o5"),
    # a store's orders, numbered by the store and not by the customer (the sequence_key): a late
    # order of c2 at s1 (09-02) shifts c1's o5 (09-05), a day c2 has no order on
    "orders of a store (another entity than the sequence_key)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER "
        f"(PARTITION BY orders.location_id ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS})",
        "late order at s1", "o5"),
    # a customer's tweets: the tweets table declares no sequence_key, so no entity's later days
    # are known; a late tweet of c1 (09-02) shifts its t3 (09-05)
    "tweets of a customer (a table without a sequence_key)": (
        "numbered AS (SELECT tweets.tweet_id AS row_key, tweets.tweeted_on AS ordered_at, ROW_NUMBER() OVER "
        "(PARTITION BY tweets.customer_id ORDER BY tweets.tweeted_on, tweets.tweet_id) AS place "
        "FROM staging.stg_jaffle_shop__tweets AS tweets)",
        "late tweet", "t3"),
    # the same tweets numbered by the customer key of the orders they are joined to: the partition
    # is the orders' sequence_key, but the numbered rows are tweets, which declare none
    "tweets of customers who ordered (the partition joined to the customer of the orders)": (
        "numbered AS (SELECT tweets.tweet_id AS row_key, tweets.tweeted_on AS ordered_at, ROW_NUMBER() OVER "
        "(PARTITION BY buyers.customer_id ORDER BY tweets.tweeted_on, tweets.tweet_id) AS place "
        "FROM staging.stg_jaffle_shop__tweets AS tweets JOIN (SELECT DISTINCT orders.customer_id "
        f"FROM {_ORDERS}) AS buyers ON buyers.customer_id = tweets.customer_id)",
        "late tweet", "t3"),
    # an expression of the customer is coarser than the customer: here every order is in group 'c'
    "orders of a customer group (a partition by an expression of the customer)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER "
        f"(PARTITION BY LEFT(orders.customer_id, 1) ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS})",
        "late order at s1", "o5"),
    # a customer's n-th order at a store: o1 moving from s1 to s2 (same day, same customer) renumbers
    # o2 and o5 at s1
    "orders of a customer at a store (a partition finer than the customer)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER "
        f"(PARTITION BY orders.customer_id, orders.location_id ORDER BY orders.ordered_at, orders.order_id) AS place "
        f"FROM {_ORDERS})",
        "store move", "o2"),
    # ordered by each customer's first order time (one value for all their orders), then by id: a
    # new order with a smaller id on a later day comes first, renumbering earlier days
    "orders by the time of the first order (a grouped column named like the time column)": (
        f"firsts AS (SELECT orders.customer_id, MIN(orders.ordered_at) AS ordered_at FROM {_ORDERS} "
        "GROUP BY orders.customer_id), "
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY firsts.ordered_at, orders.order_id) AS place FROM {_ORDERS} "
        "JOIN firsts ON firsts.customer_id = orders.customer_id)",
        "smaller id later", "o1"),
    # ordered by the order's month, computed in a CTE under the time column's name: a month's
    # orders are peers, ordered by id, so a later order with a smaller id renumbers earlier days
    "orders by month (a CTE truncates the time column to the month)": (
        f"m AS (SELECT orders.order_id, DATE_TRUNC('month', orders.ordered_at) AS ordered_at FROM {_ORDERS}), "
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY m.ordered_at, orders.order_id) AS place FROM {_ORDERS} "
        "JOIN m ON m.order_id = orders.order_id)",
        "smaller id later", "o1"),
    # a CTE column list renames by position: its customer_id is the store
    "orders of a store named customer_id by a CTE column list": (
        f"x(customer_id, location_id, order_id, ordered_at) AS (SELECT orders.location_id, orders.customer_id, "
        f"orders.order_id, orders.ordered_at FROM {_ORDERS}), "
        "numbered AS (SELECT x.order_id AS row_key, x.ordered_at, ROW_NUMBER() OVER (PARTITION BY x.customer_id "
        "ORDER BY x.ordered_at, x.order_id) AS place FROM x)",
        "late order at s1", "o5"),
    # the store's key renamed customer_id in a CTE x, and another x (the real customers) inside the
    # EXISTS: the outer x is the one numbered (a probe's shape: the store's later orders shift)
    "orders of a store renamed customer_id (a CTE name used twice)": (
        f"x AS (SELECT orders.order_id, orders.ordered_at, orders.location_id AS customer_id FROM {_ORDERS}), "
        "numbered AS (SELECT x.order_id AS row_key, x.ordered_at, ROW_NUMBER() OVER (PARTITION BY x.customer_id "
        "ORDER BY x.ordered_at, x.order_id) AS place FROM x WHERE EXISTS (WITH x AS (SELECT orders.customer_id "
        f"FROM {_ORDERS}) SELECT 1 FROM x))",
        "late order at s1", "o5"),
    # a partition by a customer key from the LEFT JOINed side: NULL for every small order, which
    # are numbered together across customers (a late order of c3 shifts c1's o5)
    "small orders together (a partition from the nullable side of a LEFT JOIN)": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"big.big_customer ORDER BY orders.ordered_at, orders.order_id) AS place FROM {_ORDERS} LEFT JOIN "
        f"(SELECT orders.order_id, orders.customer_id AS big_customer FROM {_ORDERS} WHERE orders.order_total_cents "
        ">= 1000) AS big ON big.order_id = orders.order_id)",
        "late order of c3", "o5"),
    # ordered by each customer's first order time kept by a QUALIFY (not an aggregate)
    "orders by the time of the first order kept by QUALIFY": (
        f"firsts AS (SELECT orders.customer_id, orders.ordered_at FROM {_ORDERS} QUALIFY ROW_NUMBER() OVER "
        "(PARTITION BY orders.customer_id ORDER BY orders.ordered_at, orders.order_id) = 1), "
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
        f"orders.customer_id ORDER BY firsts.ordered_at, orders.order_id) AS place FROM {_ORDERS} "
        "JOIN firsts ON firsts.customer_id = orders.customer_id)",
        "smaller id later", "o1"),
    # SELECT * over a join whose two sides both have customer_id: DuckDB takes the first, the store
    "orders of a store under SELECT * (a name both sides of a join have)": (
        f"s AS (SELECT orders.order_id, orders.location_id AS customer_id FROM {_ORDERS}), "
        f"j AS (SELECT * FROM s JOIN {_ORDERS} ON orders.order_id = s.order_id), "
        "numbered AS (SELECT j.order_id AS row_key, j.ordered_at, ROW_NUMBER() OVER (PARTITION BY j.customer_id "
        "ORDER BY j.ordered_at, j.order_id) AS place FROM j)",
        "late order at s1", "o5"),
}


@pytest.mark.parametrize("what", list(NUMBERED_CASES))
def test_a_change_that_lets_a_row_in_or_out_of_a_numbering_restates_the_later_days(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str) -> None:
    """Models that number rows which other rows or values let in or out (found by a probe of
    item-ranking models: each left later days stale, every command green): orders with a drink (by
    EXISTS, or by a grouped LEFT JOIN then filtered), product lines (a LEFT JOIN grouped finer than
    its key: rows multiply), orders above a value, and one numbering of every customer's orders."""
    numbered, change, moved = NUMBERED_CASES[what]
    (settings.project_root / "models" / "marts" / "numbered.sql").write_text(NUMBERED.format(what=what, numbered=numbered))
    orders, items = small_jaffle / "raw_orders.csv", small_jaffle / "raw_items.csv"
    # c1's third order, on a day of its own, with a drink that costs nothing (the orders' audits hold)
    orders.write_text(orders.read_text() + "o5,c1,2018-09-05T09:00:00,s1,0,0,0\n")
    items.write_text(items.read_text() + "i7,o5,BEV-002\n")
    tweets = small_jaffle / "raw_tweets.csv"
    tweets.write_text(tweets.read_text() + "t3,c1,2018-09-05T10:00:00,later\n")
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        before = dict(con.execute("SELECT row_key, place FROM marts.numbered").fetchall())
    if change == "late drink":
        items.write_text(items.read_text() + "i6,o2,BEV-002\n")
    elif change == "smaller tax":
        orders.write_text(orders.read_text().replace("o1,c1,2018-09-01T09:00:00,s1,1700,102,1802",
                                                     "o1,c1,2018-09-01T09:00:00,s1,1700,10,1710"))
    elif change == "late order at s1":
        orders.write_text(orders.read_text() + "o6,c2,2018-09-02T09:00:00,s1,0,0,0\n")
    elif change == "late order of c3":
        orders.write_text(orders.read_text() + "o7,c3,2018-09-02T09:00:00,s1,0,0,0\n")
    elif change == "store move":
        orders.write_text(orders.read_text().replace("o1,c1,2018-09-01T09:00:00,s1,", "o1,c1,2018-09-01T09:00:00,s2,"))
    elif change == "smaller id later":
        orders.write_text(orders.read_text() + "o0,c1,2018-09-06T09:00:00,s1,0,0,0\n")
    elif change == "late tweet":
        tweets.write_text(tweets.read_text() + "t2,c1,2018-09-02T10:00:00,earlier\n")
    else:
        orders.write_text(orders.read_text() + "o6,c2,2018-09-02T09:00:00,s2,0,0,0\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    got, want = _numbered_and_clean(settings, numbered)
    assert got == want, (got, want, summary.restated_windows)
    # a row of a later day than the change's moved: what only restating later days heals
    assert dict(got)[moved] != before[moved], (got, before)
    # marts.orders ranks orders and only sums their items: an item restates its own day there
    if change == "late drink":
        assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-03", summary.restated_windows


_CUSTOMERS = "staging.stg_jaffle_shop__customers AS customers"
_PLACE = "ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {frm}.ordered_at, {frm}.order_id) AS place"
# a customer's orders numbered by a customer key that is not the orders' own column but equal to it
# on every numbered row; True: restated like marts.orders (the customer's later days)
JOINED = {
    "the key of the joined customers": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, "
        f"{_PLACE.format(key='customers.customer_id', frm='orders')} FROM {_ORDERS} JOIN {_CUSTOMERS} "
        "ON customers.customer_id = orders.customer_id)", True),
    # customers.customer_id is NULL where no customer matched: rows of any customer share that
    # partition, so every later day is restated
    "the key of the LEFT JOINed customers": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, "
        f"{_PLACE.format(key='customers.customer_id', frm='orders')} FROM {_ORDERS} LEFT JOIN {_CUSTOMERS} "
        "ON customers.customer_id = orders.customer_id)", False),
    "the key of the customers joined in a CTE": (
        f"enriched AS (SELECT orders.order_id, orders.ordered_at, customers.customer_id FROM {_ORDERS} "
        f"JOIN {_CUSTOMERS} ON customers.customer_id = orders.customer_id), "
        f"numbered AS (SELECT enriched.order_id AS row_key, enriched.ordered_at, "
        f"{_PLACE.format(key='enriched.customer_id', frm='enriched')} FROM enriched)", True),
    # a seed has no query: its column is not followed, the join's other side is
    "the key of a joined seed": (
        f"numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, "
        f"{_PLACE.format(key='segments.customer_id', frm='orders')} FROM {_ORDERS} JOIN staging.segments AS segments "
        "ON segments.customer_id = orders.customer_id)", True),
    "a CTE of SELECT * over a join with the stores": (
        f"j AS (SELECT * FROM {_ORDERS} JOIN staging.stg_jaffle_shop__locations AS l USING (location_id)), "
        f"numbered AS (SELECT j.order_id AS row_key, j.ordered_at, {_PLACE.format(key='j.customer_id', frm='j')} FROM j)",
        True),
}


@pytest.mark.parametrize("what", list(JOINED))
def test_a_numbering_by_a_key_equal_to_the_customer_restates_only_that_customer(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str) -> None:
    """A customer's orders numbered by a customer key that a join makes equal to the orders' own
    (the sequence_key), in the numbering SELECT or in a CTE it reads, or passed on by a SELECT *
    over a join: a late order restates its customer's later days, as marts.orders does, not every
    day up to yesterday as a window over another entity must (a probe found 3,017 days restated
    for the CTE shapes)."""
    numbered, like_orders = JOINED[what]
    (settings.project_root / "models" / "marts" / "numbered.sql").write_text(NUMBERED.format(what=what, numbered=numbered))
    # a seed a team adds (reading it crashed every transform: a seed model has no query)
    (settings.project_root / "models" / "staging" / "segments.csv").write_text("customer_id,segment\nc1,a\nc2,b\nc3,b\n")
    (settings.project_root / "models" / "staging" / "segments.sql").write_text(
        "MODEL (name staging.segments, kind SEED (path 'segments.csv'), grain customer_id, "
        "description 'Customer segments, kept by hand.');\n")
    got, want, summary = _after_a_late_order_of_c2(settings, small_jaffle, numbered)
    assert got == want and ("o3", 2) in got, (got, want)
    windows = summary.restated_windows
    assert (windows["marts.numbered"] == windows["marts.orders"]) == like_orders, windows


def test_a_model_that_names_its_table_by_a_macro_is_restated(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """A numbering whose FROM a macro builds (``FROM @staging_orders() AS orders``): the query named
    no table, so the model read no raw table for the transform and was never restated (a late
    order left the store's later orders numbered as before); SQLMesh's own dependencies are read
    instead, and since the numbered tables cannot be told, every later day is restated."""
    (settings.project_root / "macros" / "user_tables.py").write_text(
        "from sqlglot import exp\nfrom sqlmesh import macro\n\n\n@macro()\ndef staging_orders(evaluator):\n"
        "    return exp.to_table('staging.stg_jaffle_shop__orders')\n")
    numbered = ("numbered AS (SELECT orders.order_id AS row_key, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY "
                "orders.location_id ORDER BY orders.ordered_at, orders.order_id) AS place FROM {orders} AS orders)")
    (settings.project_root / "models" / "marts" / "numbered.sql").write_text(
        NUMBERED.format(what="orders of a store, read through a macro", numbered=numbered.format(orders="@staging_orders()")))
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c1,2018-09-05T09:00:00,s1,0,0,0\n")
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    orders.write_text(orders.read_text() + "o6,c2,2018-09-02T09:00:00,s1,0,0,0\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    got, want = _numbered_and_clean(settings, numbered.format(orders="staging.stg_jaffle_shop__orders"))
    assert got == want and ("o5", 4) in got, (got, want, summary.restated_windows)


def test_a_running_count_over_daily_groups_restates_the_customers_later_days(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """A running count of a customer's orders over their daily groups (GROUP BY customer and day,
    then SUM OVER the days): the day a group carries is its own, so a late order restates its day
    and the customer's later days, as marts.orders does, not the whole model (which a rule against
    times picked from other rows first did to every grouped CTE)."""
    numbered = (f"daily AS (SELECT orders.customer_id, orders.ordered_at, COUNT(*) AS n FROM {_ORDERS} "
                "GROUP BY orders.customer_id, orders.ordered_at), "
                "numbered AS (SELECT daily.customer_id || CAST(CAST(daily.ordered_at AS DATE) AS TEXT) AS row_key, "
                "daily.ordered_at, SUM(daily.n) OVER (PARTITION BY daily.customer_id ORDER BY daily.ordered_at) AS place FROM daily)")
    (settings.project_root / "models" / "marts" / "numbered.sql").write_text(
        NUMBERED.format(what="a running count of daily groups", numbered=numbered))
    got, want, summary = _after_a_late_order_of_c2(settings, small_jaffle, numbered)
    assert got == want and ("c22018-09-04", 3) in got, (got, want)
    windows = summary.restated_windows
    assert windows["marts.numbered"] == windows["marts.orders"], windows


ORDERS_VIEW = """MODEL (
  name staging.orders_view,
  kind {kind},
  description 'Staging as a view, as many teams write it: {what}.'
);

{query}
"""

DAILY_FROM_VIEW = """MODEL (
  name marts.daily_from_view,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain ordered_at,
  description 'Orders and revenue per day, read through a view.'
);

SELECT
  v.ordered_at,
  COUNT(*) AS orders,
  SUM(v.order_total_cents) AS revenue_cents
FROM staging.orders_view AS v
WHERE v.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY v.ordered_at
"""

VIEWS = {
    # an EMBEDDED model is inlined where it is read: a filter of rows keeps them on their days (a
    # probe: the daily model over it restated all history)
    "a filter, as an EMBEDDED model": ("SELECT orders.order_id, orders.ordered_at, orders.order_total_cents FROM "
                                       "staging.stg_jaffle_shop__orders AS orders WHERE orders.order_total_cents >= 0",
                                       "1 day(s): 2018-09-05"),
    # one row per order, as staging has it (a join to a dimension keeps it so): restated by day
    "a projection": ("SELECT orders.order_id, orders.ordered_at, orders.order_total_cents, stores.location_name "
                     "FROM staging.stg_jaffle_shop__orders AS orders LEFT JOIN staging.stg_jaffle_shop__locations AS "
                     "stores ON stores.location_id = orders.location_id", "1 day(s): 2018-09-05"),
    # each order with its customer's total over all days: any order changes every day's rows
    "orders with the customer total": (
        "SELECT orders.order_id, orders.ordered_at, totals.total AS order_total_cents FROM "
        "staging.stg_jaffle_shop__orders AS orders JOIN (SELECT customer_id, SUM(order_total_cents) AS total FROM "
        "staging.stg_jaffle_shop__orders GROUP BY customer_id) AS totals ON totals.customer_id = orders.customer_id",
        "all history"),
    # each customer's first order, by NOT EXISTS over the same CTE: reads the customer's other
    # orders (a late earlier order changes which row is first), so it restates all history
    "first orders (a CTE read twice)": (
        "WITH o AS (SELECT orders.order_id, orders.customer_id, orders.ordered_at, orders.order_total_cents FROM "
        "staging.stg_jaffle_shop__orders AS orders) SELECT a.order_id, a.ordered_at, a.order_total_cents FROM o AS a "
        "WHERE NOT EXISTS (SELECT 1 FROM o AS b WHERE b.customer_id = a.customer_id AND b.ordered_at < a.ordered_at)",
        "all history"),
    # each order's number among its customer's orders (in place of its total), per store, or by
    # amount: any window in a view restates the time models after it whole (passing a numbering
    # view's rows by day was tried: a probe found time models left stale four ways, decision 0053)
    "orders numbered per customer": (
        "SELECT orders.order_id, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY orders.customer_id "
        "ORDER BY orders.ordered_at, orders.order_id) AS order_total_cents FROM staging.stg_jaffle_shop__orders AS orders",
        "all history"),
    "orders numbered per store": (
        "SELECT orders.order_id, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY orders.location_id "
        "ORDER BY orders.ordered_at, orders.order_id) AS order_total_cents FROM staging.stg_jaffle_shop__orders AS orders",
        "all history"),
    "orders numbered by amount": (
        "SELECT orders.order_id, orders.ordered_at, ROW_NUMBER() OVER (PARTITION BY orders.customer_id "
        "ORDER BY orders.order_total_cents, orders.order_id) AS order_total_cents FROM staging.stg_jaffle_shop__orders AS orders",
        "all history"),
}


@pytest.mark.parametrize("what", list(VIEWS))
def test_a_time_model_reading_a_view_that_keeps_rows_is_restated_by_day(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str) -> None:
    """A VIEW (or FULL model) between raw's staging and a time model made every batch restate the
    time model over all history, a new day as much as a full build (a probe of user models). A view
    that keeps each row on its day (no aggregate, window or self-join) now passes the days through;
    one that aggregates across days or numbers rows still restates all history. All stay equal to a
    clean build, also after a late order that renumbers later days."""
    query, restated = VIEWS[what]
    marts = settings.project_root / "models"
    kind = "EMBEDDED" if "EMBEDDED" in what else "VIEW"
    (marts / "staging" / "orders_view.sql").write_text(ORDERS_VIEW.format(what=what, query=query, kind=kind))
    (marts / "marts" / "daily_from_view.sql").write_text(DAILY_FROM_VIEW)
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c1,2018-09-05T09:00:00,s1,0,0,0\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.daily_from_view"] == restated, summary.restated_windows
    # an order moved to another day and a corrected amount: both days change
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03T10:00:00,s1,1100,66,1166",
                                                 "o2,c1,2018-09-04T10:00:00,s1,1100,66,1166")
                      .replace("o4,c2,2018-09-04T12:00:00,s2,0,0,0", "o4,c2,2018-09-04T12:00:00,s2,0,7,7"))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    # a late order of c1 on 09-02: c1's orders of 09-04 and 09-05 are numbered one further
    orders.write_text(orders.read_text() + "o7,c1,2018-09-02T08:00:00,s1,0,0,0\n")
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT ordered_at, orders, revenue_cents FROM marts.daily_from_view ORDER BY 1").fetchall()
        want = con.execute(f"SELECT v.ordered_at, COUNT(*), SUM(v.order_total_cents) FROM ({query}) AS v "
                           "GROUP BY 1 ORDER BY 1").fetchall()
    assert got == want and got, (got, want)


MONTHLY = """MODEL (
  name marts.{name},
  kind INCREMENTAL_BY_TIME_RANGE (time_column period_start),
  {schedule},
  grain (period_start, location_id),
  description 'Orders and revenue per store and {unit}.'
);

SELECT
  DATE_TRUNC('{unit}', orders.ordered_at) AS period_start,
  orders.location_id,
  COUNT(*) AS orders,
  SUM(orders.order_total_cents) AS revenue_cents
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1, 2
"""

MONTHLY_KINDS = {
    "revenue_by_month": ("month", "cron '@monthly'"),
    "revenue_by_month_so_far": ("month", "interval_unit 'month',\n  allow_partials true"),
    "revenue_by_year": ("year", "cron '@yearly'"),
}


def test_a_monthly_model_restates_the_whole_month_of_a_changed_day(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """A model of monthly (or yearly) rows: a late, corrected or deleted order of September must
    reach September's row. With allow_partials, removing the changed day alone left the month
    recorded, and every later transform failed on the read-back (a probe of monthly models); a
    day's slice rebuilt into a month's row would be wrong too. The whole month is restated, and
    the months no change touched are not."""
    marts = settings.project_root / "models" / "marts"
    for name, (unit, schedule) in MONTHLY_KINDS.items():
        (marts / f"{name}.sql").write_text(MONTHLY.format(name=name, unit=unit, schedule=schedule))
    orders, items = small_jaffle / "raw_orders.csv", small_jaffle / "raw_items.csv"
    orders.write_text(orders.read_text() + "o11,c1,2018-10-03T09:00:00,s1,1100,66,1166\n"
                      "o12,c3,2018-11-02T09:00:00,s2,0,0,0\n")
    items.write_text(items.read_text() + "i11,o11,JAF-001\n")
    _load(settings, small_jaffle)
    transform(settings, quiet=True)

    changes = [
        ("a late order", lambda text: text + "o7,c3,2018-09-02T09:00:00,s1,0,0,0\n"),
        ("a corrected amount", lambda text: text.replace(",s2,600,24,624\n", ",s2,600,424,1024\n")),
        ("a deleted order", lambda text: text.replace("o4,c2,2018-09-04T12:00:00,s2,0,0,0\n", "")),
    ]
    for what, change in changes:
        orders.write_text(change(orders.read_text()))
        _load(settings, small_jaffle)
        summary = transform(settings, quiet=True)
        for name, (unit, _schedule) in MONTHLY_KINDS.items():
            whole = "2018-09-01..2018-09-30" if unit == "month" else "2018-01-01..2018-12-31"
            assert summary.restated_windows[f"marts.{name}"].endswith(f", restated as whole {unit}s: {whole}"), (
                what, summary.restated_windows)
        with duckdb.connect(str(settings.warehouse), read_only=True) as con:
            for name, (unit, _schedule) in MONTHLY_KINDS.items():
                got = con.execute(f"SELECT * FROM marts.{name} ORDER BY ALL").fetchall()
                want = con.execute(f"SELECT DATE_TRUNC('{unit}', ordered_at), location_id, COUNT(*), SUM(order_total_cents) "
                                   "FROM staging.stg_jaffle_shop__orders GROUP BY 1, 2 ORDER BY ALL").fetchall()
                assert got == want and len(got) >= 2, (what, name, got, want)
        # what SQLMesh's scheduler evaluated: September (its year), not October or November
        ran = sorted((m, a, b) for m, a, b in summary.evaluated if m in {f"marts.{n}" for n in MONTHLY_KINDS})
        assert ran == [("marts.revenue_by_month", "2018-09-01", "2018-10-01"),
                       ("marts.revenue_by_month_so_far", "2018-09-01", "2018-10-01"),
                       ("marts.revenue_by_year", "2018-01-01", "2019-01-01")], (what, ran)


@pytest.mark.parametrize("unit, schedule, warned", [
    ("month", "cron '@daily'", True), ("week", "cron '@daily'", True), ("month", "cron '@monthly'", False),
    ("year", "interval_unit 'month',\n  allow_partials true", True), ("year", "cron '@yearly'", False),
    ("day", "cron '@hourly'", True),
])
def test_a_time_column_coarser_than_the_models_intervals_is_named(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, caplog: pytest.LogCaptureFixture, unit: str, schedule: str, warned: bool) -> None:
    """A month as the time column of a model whose intervals are days: each day's run writes the
    day as its own slice of the month's row (two rows for September after two days), which SQLMesh
    allows and no command reported (a probe's s31). The transform names the model and the fix."""
    (settings.project_root / "models" / "marts" / "revenue.sql").write_text(
        MONTHLY.format(name="revenue", unit=unit, schedule=schedule))
    _load(settings, small_jaffle)
    caplog.set_level(logging.WARNING, logger="orchestrator.transform.run")
    transform(settings, quiet=True)
    named = [r.getMessage() for r in caplog.records if "its time column period_start is a DATE_TRUNC" in r.getMessage()]
    if not warned:
        assert named == [], named
    else:
        assert len(named) == 1 and named[0].startswith(f"marts.revenue: its time column period_start is a DATE_TRUNC('{unit}')"), named
        assert ("cron '@monthly'" in named[0]) == (unit == "month") and ("no week interval" in named[0]) == (unit == "week"), named
        assert ("cron '@daily'" in named[0]) == (unit == "day"), named


COHORTS = """MODEL (
  name marts.customer_cohorts,
  kind INCREMENTAL_BY_TIME_RANGE (time_column first_order_at),
  grain customer_id,
  description 'Each customer on the day of their first order, with how many orders they have placed since.'
);

{query}
"""

COHORT_QUERIES = {
    "its own GROUP BY": "SELECT customer_id, MIN(ordered_at) AS first_order_at, COUNT(*) AS orders "
                        "FROM staging.stg_jaffle_shop__orders GROUP BY customer_id",
    "a CTE that keeps each customer's first order": (
        "WITH firsts AS (SELECT customer_id, ordered_at FROM staging.stg_jaffle_shop__orders "
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ordered_at) = 1), "
        "counts AS (SELECT customer_id, COUNT(*) AS orders FROM staging.stg_jaffle_shop__orders GROUP BY customer_id) "
        "SELECT firsts.customer_id, CAST(firsts.ordered_at AS TIMESTAMP) AS first_order_at, counts.orders "
        "FROM firsts JOIN counts ON counts.customer_id = firsts.customer_id"),
}


@pytest.mark.parametrize("what", list(COHORT_QUERIES))
def test_a_time_column_made_from_other_rows_restates_the_whole_model(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, what: str) -> None:
    """A cohort model: each customer's row sits on the day of their first order, so a new order of
    c1 on 09-04 changes the row of 09-01. Restating the new order's day left that row stale with
    every command succeeding (found by a probe of monthly models); a time column an aggregate, a
    window or a first-row CTE made says nothing about which days a change reaches, so the model is
    restated whole, as a window that reads later rows is."""
    query = COHORT_QUERIES[what]
    (settings.project_root / "models" / "marts" / "customer_cohorts.sql").write_text(COHORTS.format(query=query))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c1,2018-09-04T09:00:00,s1,0,5300,5300\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.customer_cohorts"] == "all history", (what, summary.restated_windows)
    assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-04", summary.restated_windows
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = con.execute("SELECT customer_id, orders FROM marts.customer_cohorts ORDER BY 1").fetchall()
        want = con.execute(f"SELECT customer_id, orders FROM ({query}) ORDER BY 1").fetchall()
    assert got == want and ("c1", 3) in got, (what, got, want)


# Four shapes a second probe of user models found stale with every command green (2026-12-07)
JINJA_DAILY = """MODEL (
  name marts.jinja_daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_day),
  grain order_day,
  description 'Orders and revenue per day, written in Jinja.'
);

JINJA_QUERY_BEGIN;
SELECT orders.ordered_at AS order_day, COUNT(*) AS orders, SUM(orders.order_total_cents) AS cents
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN '{{ start_ts }}' AND '{{ end_ts }}'
GROUP BY 1
JINJA_END;
"""

# a tweet's count of its customer's orders so far, tagged as add-a-source.md step 6 asks: its rows
# sit on tweets' days, while the entity's later days the tag follows are days of the customer's orders
ORDERS_SO_FAR = """MODEL (
  name marts.tweet_orders_so_far,
  kind INCREMENTAL_BY_TIME_RANGE (time_column tweeted_on),
  grain tweet_id,
  tags ('restate:later_days')
);

SELECT
  tweets.tweet_id,
  tweets.customer_id,
  tweets.tweeted_on,
  (
    SELECT COUNT(*) FROM staging.stg_jaffle_shop__orders AS orders
    WHERE orders.customer_id = tweets.customer_id AND orders.ordered_at <= tweets.tweeted_on
  ) AS orders_so_far
FROM staging.stg_jaffle_shop__tweets AS tweets
WHERE tweets.tweeted_on BETWEEN @start_ts AND @end_ts
"""

LAST_TWEET = """MODEL (
  name marts.order_last_tweet,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ordered_at),
  grain order_id,
  description 'Each order with its customer''s last tweet up to the order''s day.'
);

SELECT
  orders.order_id,
  orders.ordered_at,
  (
    SELECT MAX(tweets.tweeted_at) FROM staging.stg_jaffle_shop__tweets AS tweets
    WHERE tweets.customer_id = orders.customer_id AND tweets.tweeted_at < orders.ordered_at + INTERVAL 1 DAY
  ) AS last_tweet_at
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
"""

BUSINESS_DAYS = """MODEL (
  name marts.business_days,
  kind INCREMENTAL_BY_TIME_RANGE (time_column business_day),
  grain business_day,
  description 'Orders per business day, which starts at 04:00 UTC.'
);

SELECT CAST(orders.ordered_at - INTERVAL 4 HOUR AS DATE) AS business_day, COUNT(*) AS orders,
  SUM(orders.order_total_cents) AS cents
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at - INTERVAL 4 HOUR BETWEEN @start_ts AND @end_ts
GROUP BY 1
"""

CARRIED = """MODEL (
  name marts.daily_running_cents,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_day, batch_size 1),
  end '2018-09-08',
  columns (order_day TIMESTAMP, cents BIGINT, running_cents BIGINT),
  grain order_day,
  description 'Revenue per day and so far, each day carried on from the days before it in this table.'
);

WITH day AS (
  SELECT orders.ordered_at AS order_day, SUM(orders.order_total_cents) AS cents
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
  GROUP BY 1
), before AS (
  SELECT COALESCE(SUM(t.cents), 0) AS cents FROM @this_model AS t WHERE t.order_day < @start_ts
)
SELECT day.order_day, day.cents, CAST(before.cents + day.cents AS BIGINT) AS running_cents
FROM day CROSS JOIN before
"""


def test_jinja_shifted_days_self_references_and_as_of_reads_are_restated_or_named(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A probe of user models found, each with every command green: a model written in Jinja was
    never restated (its query names no table, so no raw table was found beneath it); a time
    shifted off the UTC day (a business day from 04:00) missed the day before the touched one; a
    model carrying each day on from its own earlier rows (@this_model) kept its later days after a
    correction; and an "as of" read (an order's last tweet) compared two different time columns,
    which the warning for untagged history reads did not see. Now the first is restated and named,
    the second and third are restated as far as they need, the fourth is named."""
    marts = settings.project_root / "models" / "marts"
    for name, text in (("jinja_daily", JINJA_DAILY), ("order_last_tweet", LAST_TWEET),
                       ("business_days", BUSINESS_DAYS), ("daily_running_cents", CARRIED),
                       ("tweet_orders_so_far", ORDERS_SO_FAR)):
        (marts / f"{name}.sql").write_text(text)
    tweets = small_jaffle / "raw_tweets.csv"  # c3 tweets on the 5th, after the day of its late order below
    tweets.write_text(tweets.read_text() + "t2,c3,2018-09-05T08:00:00,\"still hungry\"\n")
    _load(settings, small_jaffle)
    caplog.set_level(logging.INFO, logger="orchestrator.transform.run")
    transform(settings, quiet=True)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("marts.jinja_daily is written in Jinja") for m in said), said
    assert any(m.startswith("marts.order_last_tweet compares rows of different times (tweets.tweeted_at < "
                            "orders.ordered_at + INTERVAL '1' DAY)") for m in said), said
    assert not [m for m in said if m.startswith(("marts.business_days compares", "marts.daily_running_cents compares",
                                                 "marts.daily_running_cents reads rows before"))], said

    # a late order on an early day (02:00 UTC on the 2nd: business day the 1st), which every later
    # running total carries
    orders, items = small_jaffle / "raw_orders.csv", small_jaffle / "raw_items.csv"
    orders.write_text(orders.read_text() + "o5,c3,2018-09-02T02:00:00,s1,600,36,636\n")
    items.write_text(items.read_text() + "i6,o5,BEV-001\n")
    _load(settings, small_jaffle)
    summary = transform(settings, quiet=True)
    assert {"marts.jinja_daily", "marts.business_days", "marts.daily_running_cents"} <= set(summary.restated_windows), \
        summary.restated_windows
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        def rows(sql: str) -> list[tuple]:
            return sorted(con.execute(sql).fetchall())

        by_day = ("SELECT ordered_at, COUNT(*), SUM(order_total_cents) FROM staging.stg_jaffle_shop__orders "
                  "GROUP BY 1")
        assert rows("SELECT order_day, orders, cents FROM marts.jinja_daily") == rows(by_day)
        assert rows("SELECT business_day, orders, cents FROM marts.business_days") == rows(
            "SELECT CAST(ordered_at - INTERVAL 4 HOUR AS DATE) AS d, COUNT(*), SUM(order_total_cents) "
            "FROM staging.stg_jaffle_shop__orders GROUP BY 1 HAVING d >= DATE '2018-09-01'")  # the models' start
        carried = rows("SELECT order_day, cents, running_cents FROM marts.daily_running_cents")
        assert carried == rows("SELECT ordered_at, SUM(order_total_cents), SUM(SUM(order_total_cents)) OVER "
                               "(ORDER BY ordered_at) FROM staging.stg_jaffle_shop__orders GROUP BY 1"), carried
        assert carried[-1][2] == 1802 + 636 + 1166 + 624 + 0, carried
        # a later day of the customer's tweets, which no order of theirs is on: it ran with 0 orders
        # (the tag followed the days of c3's orders only, from the 2nd: the 2nd alone)
        so_far = rows("SELECT tweet_id, orders_so_far FROM marts.tweet_orders_so_far")
        assert so_far == rows(
            "SELECT t.tweet_id, (SELECT COUNT(*) FROM staging.stg_jaffle_shop__orders AS o WHERE o.customer_id = "
            "t.customer_id AND o.ordered_at <= t.tweeted_on) FROM staging.stg_jaffle_shop__tweets AS t"), so_far
        assert ("t2", 1) in so_far, so_far
    assert any(m.startswith("marts.tweet_orders_so_far: its time column comes from raw_jaffle_shop.tweets, not from "
                            "raw_jaffle_shop.orders") for m in (r.getMessage() for r in caplog.records)), caplog.text
