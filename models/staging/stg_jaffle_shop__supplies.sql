MODEL (
  name staging.stg_jaffle_shop__supplies,
  kind FULL,
  grain supply_uuid,
  description 'Supplies used per product, one row per (supply_id, product_id): a supply id maps to several products. Costs in dollars. Source: raw_jaffle_shop.supplies.',
  column_descriptions (
    supply_uuid = 'Surrogate key: md5 over supply_id and product_id.',
    supply_id = 'Supply code (SUP-nnn); not unique on its own.',
    product_id = 'Product the supply is used for; key of stg_jaffle_shop__products.',
    supply_name = 'Supply name.',
    supply_cost = 'Cost of the supply per product sold, dollars.',
    is_perishable_supply = 'True when the supply is perishable (raw text True/False; other text is NULL, and fails the not_null audit).'
  ),
  audits (
    not_null(columns := (supply_uuid, supply_id, product_id, supply_cost, is_perishable_supply)),
    unique_key(column := supply_uuid)
  )
);

SELECT
  @GENERATE_SURROGATE_KEY(raw.id, raw.sku) AS supply_uuid,
  raw.id AS supply_id,
  raw.sku AS product_id,
  raw.name AS supply_name,
  @cents_to_dollars(raw.cost) AS supply_cost,
  /* only the two words the source uses: another encoding (1/0, yes/no) is NULL, which the
     not_null audit refuses, rather than every supply silently not perishable */
  CASE LOWER(TRIM(raw.perishable)) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END AS is_perishable_supply
FROM raw_jaffle_shop.supplies AS raw
QUALIFY
  @latest_row_per_key(raw.id, raw.sku)
