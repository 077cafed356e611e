MODEL (
  name marts.supplies,
  tags ('freshness:7d'), /* max age for `elt freshness`: the catalog changes rarely */
  kind FULL,
  grain supply_uuid,
  description 'Supplies, one row per (supply_id, product_id), as staged. Costs in dollars.',
  column_descriptions (
    supply_uuid = 'Surrogate key over supply_id and product_id.',
    supply_id = 'Supply code (SUP-nnn); not unique on its own.',
    product_id = 'Product the supply is used for.',
    supply_name = 'Supply name.',
    supply_cost = 'Cost per product sold, dollars.',
    is_perishable_supply = 'True when perishable.'
  ),
  audits (
    not_null(columns := (supply_uuid, supply_id, product_id)),
    unique_key(column := supply_uuid)
  )
);

SELECT
  supplies.supply_uuid,
  supplies.supply_id,
  supplies.product_id,
  supplies.supply_name,
  supplies.supply_cost,
  supplies.is_perishable_supply
FROM staging.stg_jaffle_shop__supplies AS supplies
