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
  Written as an anti-join (LEFT JOIN ... WHERE parent.@field IS NULL): the same rows as NOT EXISTS
  (a matched row has a non-null parent.@field; a duplicated parent key only repeats rows that are
  filtered out), but DuckDB plans NOT EXISTS as a delim join, 2-3x slower over whole history.
*/
AUDIT (
  name assert_relationship_in_window
);

SELECT
  child.*
FROM @child AS child
LEFT JOIN @to AS parent
  ON parent.@field = child.@column
WHERE
  child.@child_time BETWEEN @start_ts AND @end_ts
  AND NOT child.@column IS NULL
  AND parent.@field IS NULL
