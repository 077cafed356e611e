/*
  Referential integrity, written once and reused: every non-null @column of @child must exist as
  @field in @to. Returns the orphan rows; any row fails the audit.

  @child defaults to the audited model, so the usual form is:
    assert_relationship(column := order_id, to := staging.stg_jaffle_shop__orders, field := order_id)
  When the parent is built after the child (marts.orders aggregates marts.order_items), attach the
  audit to the parent and name the child:
    assert_relationship(child := marts.order_items, column := order_id, to := marts.orders, field := order_id)

  Every model named here must be an upstream of the audited model (its query or its depends_on),
  or SQLMesh cannot map it to the environment's table. For an incremental model, @this_model is
  only the interval being processed; a named model is read whole.
  Written as an anti-join (LEFT JOIN ... WHERE parent.@field IS NULL): the same rows as NOT EXISTS
  (a matched row has a non-null parent.@field; a duplicated parent key only repeats rows that are
  filtered out), but DuckDB plans NOT EXISTS as a delim join, 2-3x slower over whole history.
*/
AUDIT (
  name assert_relationship,
  defaults (
    child = @this_model
  )
);

SELECT
  child.*
FROM @child AS child
LEFT JOIN @to AS parent
  ON parent.@field = child.@column
WHERE
  NOT child.@column IS NULL
  AND parent.@field IS NULL
