MODEL (
  name marts.products,
  tags ('freshness:7d'), /* max age for `elt freshness`: the catalog changes rarely */
  kind FULL,
  grain product_id,
  description 'Products on the menu, one row per SKU, as staged. Prices in dollars.',
  column_descriptions (
    product_id = 'Product key: the SKU.',
    product_name = 'Menu name.',
    product_type = 'jaffle or beverage.',
    product_description = 'Menu description.',
    product_price = 'List price, dollars.',
    is_food_item = 'True for jaffles.',
    is_drink_item = 'True for beverages.'
  ),
  audits (
    not_null(columns := (product_id, is_food_item, is_drink_item)),
    unique_key(column := product_id)
  )
);

SELECT
  products.product_id,
  products.product_name,
  products.product_type,
  products.product_description,
  products.product_price,
  products.is_food_item,
  products.is_drink_item
FROM staging.stg_jaffle_shop__products AS products
