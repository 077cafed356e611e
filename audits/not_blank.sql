/*
  No empty or blank text in the listed columns: returns each row where one of @columns is '' or
  only spaces. A CSV source keeps an empty field of a text column as '' (not NULL, docs/reference/
  sources.md), so not_null alone let a store without a name reach the marts (a data-quality probe).

    not_blank(columns := (location_id, location_name))

  NULL passes here (not_null says that); use both on a required text column.
*/
AUDIT (
  name not_blank
);

SELECT
  *
FROM @this_model
WHERE
  @REDUCE(@EACH(@columns, c -> TRIM(CAST(c AS TEXT)) = ''), (l, r) -> l OR r)
