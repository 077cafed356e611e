MODEL (
  name staging.stg_jaffle_shop__orders,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column ordered_at
  ),
  grain order_id,
  depends_on (staging.stg_jaffle_shop__customers, staging.stg_jaffle_shop__locations), /* parents of its relationship audits */
  description 'Jaffle Shop orders, one row per order (latest version of each id; deleted orders are gone), incremental by order day: a window holds the orders whose latest version falls on its days. Money in cents (_cents, integer) and in dollars (DECIMAL(16,2)). ordered_at is truncated to the day (UTC). Source: raw_jaffle_shop.orders.',
  column_descriptions (
    order_id = 'Order key (UUID string).',
    location_id = 'Store where the order was placed; key of stg_jaffle_shop__locations.',
    customer_id = 'Customer who placed the order; key of stg_jaffle_shop__customers.',
    subtotal_cents = 'Order amount before tax, integer cents.',
    tax_paid_cents = 'Tax charged, integer cents (as truncated by the till; never recompute from the rate).',
    order_total_cents = 'subtotal_cents + tax_paid_cents, integer cents.',
    subtotal = 'Order amount before tax, dollars.',
    tax_paid = 'Tax charged, dollars.',
    order_total = 'Order total including tax, dollars.',
    ordered_at = 'Day the order was placed (timestamp truncated to midnight UTC).'
  ),
  audits (
    not_null(columns := (order_id, customer_id, location_id, ordered_at, subtotal_cents, tax_paid_cents, order_total_cents)),
    unique_key(column := order_id),
    forall(criteria := (order_total_cents - tax_paid_cents = subtotal_cents)),
    forall(criteria := (subtotal_cents >= 0 AND tax_paid_cents >= 0)),
    assert_relationship(column := customer_id, to := staging.stg_jaffle_shop__customers, field := customer_id),
    assert_relationship(column := location_id, to := staging.stg_jaffle_shop__locations, field := location_id)
  )
);

WITH window_keys AS (
  /* every order with any version on the window's days: its latest version may have moved */
  SELECT DISTINCT
    raw.id
  FROM raw_jaffle_shop.orders AS raw
  WHERE
    raw.ordered_at BETWEEN @start_ts AND @end_ts
), latest AS (
  /* the latest version of those orders only: the dedupe never scans other keys */
  SELECT
    raw.id,
    raw.store_id,
    raw.customer,
    raw.subtotal,
    raw.tax_paid,
    raw.order_total,
    raw.ordered_at
  FROM raw_jaffle_shop.orders AS raw
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
  latest.id AS order_id,
  latest.store_id AS location_id,
  latest.customer AS customer_id,
  latest.subtotal AS subtotal_cents,
  latest.tax_paid AS tax_paid_cents,
  latest.order_total AS order_total_cents,
  @cents_to_dollars(latest.subtotal) AS subtotal,
  @cents_to_dollars(latest.tax_paid) AS tax_paid,
  @cents_to_dollars(latest.order_total) AS order_total,
  DATE_TRUNC('DAY', latest.ordered_at)::TIMESTAMP AS ordered_at
FROM latest
WHERE
  /* an order whose latest version is on another day belongs to that day; a deleted one (its
     tombstone has no ordered_at) to none */
  latest.ordered_at BETWEEN @start_ts AND @end_ts
