MODEL (
  name staging.stg_jaffle_shop__products,
  kind FULL,
  grain product_id,
  description 'Products on the menu, one row per SKU (latest extract). Prices in dollars. Source: raw_jaffle_shop.products.',
  column_descriptions (
    product_id = 'Product key: the SKU (JAF-nnn for food, BEV-nnn for drinks).',
    product_name = 'Menu name.',
    product_type = 'jaffle or beverage.',
    product_description = 'Menu description.',
    product_price = 'List price, dollars.',
    is_food_item = 'True when product_type is jaffle; never null.',
    is_drink_item = 'True when product_type is beverage; never null.'
  ),
  audits (
    not_null(columns := (product_id, product_type, product_price, is_food_item, is_drink_item)),
    not_blank(columns := (product_name)),
    unique_key(column := product_id),
    accepted_values(column := product_type, is_in := ('jaffle', 'beverage'))
  )
);

SELECT
  raw.sku AS product_id,
  raw.name AS product_name,
  raw.type AS product_type,
  raw.description AS product_description,
  @cents_to_dollars(raw.price) AS product_price,
  COALESCE(raw.type = 'jaffle', FALSE) AS is_food_item,
  COALESCE(raw.type = 'beverage', FALSE) AS is_drink_item
FROM raw_jaffle_shop.products AS raw
QUALIFY
  @latest_row_per_key(raw.sku)
