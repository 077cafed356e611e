MODEL (
  name marts.locations,
  tags ('freshness:7d'), /* max age for `elt freshness`: the catalog changes rarely */
  kind FULL,
  grain location_id,
  description 'Stores, one row per store, as staged, including stores not open yet.',
  column_descriptions (
    location_id = 'Store key (UUID string).',
    location_name = 'City of the store.',
    tax_rate = 'Sales tax rate as a fraction.',
    opened_date = 'Day the store opened (UTC).'
  ),
  audits (
    not_null(columns := (location_id, location_name)),
    unique_key(column := location_id)
  )
);

SELECT
  locations.location_id,
  locations.location_name,
  locations.tax_rate,
  locations.opened_date
FROM staging.stg_jaffle_shop__locations AS locations
