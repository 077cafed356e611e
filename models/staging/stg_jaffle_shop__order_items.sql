MODEL (
  name staging.stg_jaffle_shop__order_items,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column ordered_at
  ),
  grain order_item_id,
  depends_on (staging.stg_jaffle_shop__products), /* parent of its relationship audit */
  description 'Items sold, one row per item (latest version of each id; deleted items are gone), incremental by the day of the item''s order. Raw items carry no time, so the order''s day (from stg_jaffle_shop__orders, the one join in staging; docs/decisions/0011) places each item: restating a day reads only the items of that day''s orders. Items whose order is not in stg_jaffle_shop__orders are left out. Source: raw_jaffle_shop.items.',
  column_descriptions (
    order_item_id = 'Item key (UUID string), one per item sold.',
    order_id = 'Order the item belongs to; key of stg_jaffle_shop__orders.',
    product_id = 'Product sold (SKU); key of stg_jaffle_shop__products.',
    ordered_at = 'Day the item''s order was placed (UTC midnight), from stg_jaffle_shop__orders.'
  ),
  audits (
    not_null(columns := (order_item_id, order_id, product_id, ordered_at)),
    unique_key(column := order_item_id),
    assert_relationship(column := product_id, to := staging.stg_jaffle_shop__products, field := product_id)
  )
);

WITH orders AS (
  SELECT
    orders.order_id,
    orders.ordered_at
  FROM staging.stg_jaffle_shop__orders AS orders
  WHERE
    orders.ordered_at BETWEEN @start_ts AND @end_ts
), window_keys AS (
  /* every item with any version pointing at one of the window's orders */
  SELECT DISTINCT
    raw.id
  FROM raw_jaffle_shop.items AS raw
  WHERE
    raw.order_id IN (
      SELECT
        orders.order_id
      FROM orders
    )
), latest AS (
  SELECT
    raw.id,
    raw.order_id,
    raw.sku
  FROM raw_jaffle_shop.items AS raw
  WHERE
    /* skipped for long windows (a whole-history build), where it costs more than it saves */
    @only_in_narrow_window(raw.id IN (
      SELECT
        window_keys.id
      FROM window_keys
    ))
  QUALIFY
    @latest_row_per_key(raw.id)
)
SELECT
  latest.id AS order_item_id,
  latest.order_id AS order_id,
  latest.sku AS product_id,
  orders.ordered_at AS ordered_at
FROM latest
INNER JOIN orders
  ON latest.order_id = orders.order_id
