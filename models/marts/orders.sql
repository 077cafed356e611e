MODEL (
  name marts.orders,
  tags ('freshness:26h'), /* max age for `elt freshness` and stale alerts */
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column ordered_at
  ),
  grain order_id,
  depends_on (marts.locations),
  description 'Orders, one row per order, with item counts, cost and the order''s rank in its customer''s history. Incremental by order day. Money in dollars. Orders without items (subtotal 0) have NULL item aggregates and zero counts. customer_order_number numbers all of a customer''s orders up to the processed window, so restating a window must also restate later windows if orders were added or removed in it.',
  column_descriptions (
    order_id = 'Order key (UUID string).',
    location_id = 'Store key; see marts.locations.',
    customer_id = 'Customer key; every customer_id exists in marts.customers.',
    subtotal_cents = 'Amount before tax, integer cents.',
    tax_paid_cents = 'Tax charged, integer cents.',
    order_total_cents = 'Total including tax, integer cents.',
    subtotal = 'Amount before tax, dollars.',
    tax_paid = 'Tax charged, dollars.',
    order_total = 'Total including tax, dollars (= subtotal + tax_paid).',
    order_cost = 'Sum of the supply cost of the order''s items, dollars; NULL without items.',
    order_items_subtotal = 'Sum of the list price of the order''s items, dollars; NULL without items, else equal to subtotal.',
    count_order_items = 'Number of items in the order.',
    count_food_items = 'Number of food (jaffle) items.',
    count_drink_items = 'Number of drink (beverage) items.',
    customer_order_number = 'Rank of the order among its customer''s orders by ordered_at, ties broken by order_id (1 = first order).',
    is_food_order = 'True when the order has at least one food item.',
    is_drink_order = 'True when the order has at least one drink item.',
    ordered_at = 'Day the order was placed (UTC midnight).'
  ),
  audits (
    not_null(columns := (order_id, customer_id, location_id, ordered_at, customer_order_number)),
    unique_key(column := order_id),
    forall(criteria := (
      COALESCE(order_items_subtotal, 0) = subtotal,
      order_total = subtotal + tax_paid,
      count_order_items = count_food_items + count_drink_items
    )),
    assert_relationship(column := location_id, to := marts.locations, field := location_id),
    /* every order_id of order_items exists in orders (checked here: orders is built after order_items),
       for the days being processed: a run restating several windows checks each once */
    assert_relationship_in_window(child := marts.order_items, child_time := ordered_at, column := order_id, to := marts.orders, field := order_id)
  )
);

WITH orders AS (
  SELECT
    orders.order_id,
    orders.location_id,
    orders.customer_id,
    orders.subtotal_cents,
    orders.tax_paid_cents,
    orders.order_total_cents,
    orders.subtotal,
    orders.tax_paid,
    orders.order_total,
    orders.ordered_at
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE
    orders.ordered_at BETWEEN @start_ts AND @end_ts
), order_items_summary AS (
  SELECT
    order_items.order_id,
    SUM(order_items.supply_cost) AS order_cost,
    SUM(order_items.product_price) AS order_items_subtotal,
    COUNT(order_items.order_item_id) AS count_order_items,
    COUNT(CASE WHEN order_items.is_food_item THEN 1 END) AS count_food_items,
    COUNT(CASE WHEN order_items.is_drink_item THEN 1 END) AS count_drink_items
  FROM marts.order_items AS order_items
  WHERE
    order_items.ordered_at BETWEEN @start_ts AND @end_ts
  GROUP BY
    order_items.order_id
), earlier_orders AS (
  /* how many orders each of the window's customers placed before the window: the rank of a
     window's order is that count plus its rank inside the window (all earlier orders come first) */
  SELECT
    history.customer_id,
    COUNT(*) AS count_earlier_orders
  FROM staging.stg_jaffle_shop__orders AS history
  WHERE
    history.ordered_at < @start_ts
    /* the window's customers, read from staging again rather than from the orders CTE: a CTE
       named twice is materialized by DuckDB (a copy of the whole window), which took a fifth of
       this model's build over whole history */
    AND history.customer_id IN (
      SELECT
        window_orders.customer_id
      FROM staging.stg_jaffle_shop__orders AS window_orders
      WHERE
        window_orders.ordered_at BETWEEN @start_ts AND @end_ts
    )
  GROUP BY
    history.customer_id
)
SELECT
  orders.order_id,
  orders.location_id,
  orders.customer_id,
  orders.subtotal_cents,
  orders.tax_paid_cents,
  orders.order_total_cents,
  orders.subtotal,
  orders.tax_paid,
  orders.order_total,
  order_items_summary.order_cost::DECIMAL(16, 2) AS order_cost,
  order_items_summary.order_items_subtotal::DECIMAL(16, 2) AS order_items_subtotal,
  COALESCE(order_items_summary.count_order_items, 0) AS count_order_items,
  COALESCE(order_items_summary.count_food_items, 0) AS count_food_items,
  COALESCE(order_items_summary.count_drink_items, 0) AS count_drink_items,
  /* numbered in the final SELECT, not in a CTE joined back by order_id: the same rows (each
     order joins one items summary and one earlier count), one join of the window less, about
     a fifth of this model's build over whole history */
  COALESCE(earlier_orders.count_earlier_orders, 0) + ROW_NUMBER() OVER (PARTITION BY orders.customer_id ORDER BY orders.ordered_at, orders.order_id) AS customer_order_number,
  COALESCE(order_items_summary.count_food_items, 0) > 0 AS is_food_order,
  COALESCE(order_items_summary.count_drink_items, 0) > 0 AS is_drink_order,
  orders.ordered_at
FROM orders
LEFT JOIN order_items_summary
  ON orders.order_id = order_items_summary.order_id
LEFT JOIN earlier_orders
  ON orders.customer_id = earlier_orders.customer_id
