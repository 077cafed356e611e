MODEL (
  name staging.stg_jaffle_shop__order_items,
  kind FULL,
  grain order_item_id,
  depends_on (staging.stg_jaffle_shop__orders, staging.stg_jaffle_shop__products), /* parents of its relationship audits */
  description 'Items sold, one row per item (latest extract of each id). The raw items carry no timestamp, so this model is rebuilt in full; the order_items mart is incremental by its order''s day. Source: raw_jaffle_shop.items.',
  column_descriptions (
    order_item_id = 'Item key (UUID string), one per item sold.',
    order_id = 'Order the item belongs to; key of stg_jaffle_shop__orders.',
    product_id = 'Product sold (SKU); key of stg_jaffle_shop__products.'
  ),
  audits (
    not_null(columns := (order_item_id, order_id, product_id)),
    unique_values(columns := (order_item_id)),
    assert_relationship(column := order_id, to := staging.stg_jaffle_shop__orders, field := order_id),
    assert_relationship(column := product_id, to := staging.stg_jaffle_shop__products, field := product_id)
  )
);

SELECT
  raw.id AS order_item_id,
  raw.order_id AS order_id,
  raw.sku AS product_id
FROM raw_jaffle_shop.items AS raw
QUALIFY
  @latest_row_per_key(raw.id)
