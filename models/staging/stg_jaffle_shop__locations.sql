MODEL (
  name staging.stg_jaffle_shop__locations,
  kind FULL,
  grain location_id,
  description 'Stores, one row per store (latest extract), including stores that open later. Source: raw_jaffle_shop.stores.',
  column_descriptions (
    location_id = 'Store key (UUID string).',
    location_name = 'City of the store.',
    tax_rate = 'Sales tax rate as a fraction (0.06 = 6%).',
    opened_date = 'Day the store opened (UTC).'
  ),
  audits (
    not_null(columns := (location_id, location_name, tax_rate)),
    not_blank(columns := (location_name)),
    unique_key(column := location_id),
    forall(criteria := (tax_rate >= 0 AND tax_rate < 1))
  )
);

SELECT
  raw.id AS location_id,
  raw.name AS location_name,
  raw.tax_rate AS tax_rate,
  DATE_TRUNC('DAY', raw.opened_at)::DATE AS opened_date
FROM raw_jaffle_shop.stores AS raw
QUALIFY
  @latest_row_per_key(raw.id)
