MODEL (
  name staging.stg_jaffle_shop__customers,
  kind FULL,
  grain customer_id,
  description 'Jaffle Shop customers, one row per customer (latest extract of each id). Source: raw_jaffle_shop.customers.',
  column_descriptions (
    customer_id = 'Customer key (UUID string from the point-of-sale system).',
    customer_name = 'Full name as entered at the till.'
  ),
  audits (
    not_null(columns := (customer_id)),
    unique_key(column := customer_id)
  )
);

SELECT
  raw.id AS customer_id,
  raw.name AS customer_name
FROM raw_jaffle_shop.customers AS raw
QUALIFY
  @latest_row_per_key(raw.id)
