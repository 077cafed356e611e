MODEL (
  name intermediate.int_supplies_summed_to_products,
  kind FULL,
  grain product_id,
  depends_on (staging.stg_jaffle_shop__products), /* parent of its relationship audit */
  description 'Supply cost per product: one row per product that has supplies, summing the cost of every supply row of that product. Dollars. Feeds marts.order_items.supply_cost.',
  column_descriptions (
    product_id = 'Product key (SKU); key of stg_jaffle_shop__products.',
    count_supplies = 'Number of supply rows of the product.',
    supply_cost = 'Sum of supply_cost over every supply row of the product, dollars.'
  ),
  audits (
    not_null(columns := (product_id, supply_cost)),
    unique_key(column := product_id),
    forall(criteria := (supply_cost >= 0)),
    assert_relationship(column := product_id, to := staging.stg_jaffle_shop__products, field := product_id)
  )
);

SELECT
  supplies.product_id AS product_id,
  COUNT(*) AS count_supplies,
  SUM(supplies.supply_cost)::DECIMAL(16, 2) AS supply_cost
FROM staging.stg_jaffle_shop__supplies AS supplies
GROUP BY
  supplies.product_id
