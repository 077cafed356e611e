MODEL (
  name marts.order_items,
  tags ('freshness:26h'), /* max age for `elt freshness` and stale alerts */
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column ordered_at
  ),
  grain order_item_id,
  depends_on (marts.products),
  description 'Items sold, one row per item, with the product and its supply cost. Incremental by the day of the item''s order: restating a window recomputes only the items of orders placed in it. Money in dollars. Items whose order is missing are kept out by staging.',
  column_descriptions (
    order_item_id = 'Item key (UUID string).',
    order_id = 'Order key; every order_id exists in marts.orders.',
    product_id = 'Product sold (SKU).',
    product_name = 'Menu name of the product.',
    product_price = 'List price of the product, dollars.',
    supply_cost = 'Sum of the cost of every supply row of the product, dollars; NULL when the product has no supplies.',
    is_food_item = 'True when the product is a jaffle.',
    is_drink_item = 'True when the product is a beverage.',
    ordered_at = 'Day the order was placed (UTC midnight).'
  ),
  audits (
    not_null(columns := (order_item_id, order_id, product_id, ordered_at)),
    unique_key(column := order_item_id),
    assert_relationship(column := product_id, to := marts.products, field := product_id)
  )
);

WITH order_items AS (
  SELECT
    order_items.order_item_id,
    order_items.order_id,
    order_items.product_id,
    order_items.ordered_at
  FROM staging.stg_jaffle_shop__order_items AS order_items
  WHERE
    order_items.ordered_at BETWEEN @start_ts AND @end_ts
), products AS (
  SELECT
    products.product_id,
    products.product_name,
    products.product_price,
    products.is_food_item,
    products.is_drink_item
  FROM staging.stg_jaffle_shop__products AS products
), supply_costs AS (
  SELECT
    supply_costs.product_id,
    supply_costs.supply_cost
  FROM intermediate.int_supplies_summed_to_products AS supply_costs
)
SELECT
  order_items.order_item_id,
  order_items.order_id,
  order_items.product_id,
  products.product_name,
  products.product_price,
  supply_costs.supply_cost,
  products.is_food_item,
  products.is_drink_item,
  order_items.ordered_at
FROM order_items
LEFT JOIN products
  ON order_items.product_id = products.product_id
LEFT JOIN supply_costs
  ON order_items.product_id = supply_costs.product_id
