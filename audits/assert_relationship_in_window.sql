/*
  Referential integrity for the window being processed: every non-null @column of @child whose
  @child_time lies in the audited interval must exist as @field in @to.

  For an incremental parent that is restated in several separate windows in one run (marts.orders
  aggregates marts.order_items), the child's other windows may be ahead of the parent while the
  run is under way; checking the whole child would fail on rows the parent has not reached yet,
  and would read all history for a one-day change. Checked per window, every window the run
  processes is checked once, against the whole parent table:
    assert_relationship_in_window(child := marts.order_items, child_time := ordered_at,
                                  column := order_id, to := marts.orders, field := order_id)
*/
AUDIT (
  name assert_relationship_in_window
);

SELECT
  child.*
FROM @child AS child
WHERE
  child.@child_time BETWEEN @start_ts AND @end_ts
  AND NOT child.@column IS NULL
  AND NOT EXISTS(
    SELECT
      1
    FROM @to AS parent
    WHERE
      parent.@field = child.@column
  )
