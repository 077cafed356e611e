"""Latest row per key: how staging turns an append-only raw table into one row per key.

Raw tables keep every extract of every row (one batch per extract). Staging wants the current
version of each key: the row from the most recent extract; ties are broken by the later batch,
then the later row inside the batch, so the choice is deterministic.
"""

from __future__ import annotations

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator

# Load metadata that every raw table carries (see sources/load/duckdb_raw.py).
LATEST_FIRST = ("_extracted_at", "_batch_id", "_batch_row")


@macro()
def latest_row_per_key(evaluator: MacroEvaluator, *key: exp.Expression) -> exp.Expression:
    """A QUALIFY condition keeping, for each ``key``, only the most recently extracted row.

    Usage in a staging model::

        SELECT raw.id AS customer_id, raw.name AS customer_name
        FROM raw_jaffle_shop.customers AS raw
        QUALIFY @latest_row_per_key(raw.id)

    Expands to ``ROW_NUMBER() OVER (PARTITION BY <key> ORDER BY _extracted_at DESC, _batch_id
    DESC, _batch_row DESC) = 1 AND NOT FIRST_VALUE(COALESCE(_deleted, FALSE)) OVER (...)``: a key whose latest version is
    a tombstone (absent from the latest snapshot, sources/load/changes.py) is gone. Engines without QUALIFY (PostgreSQL) get an equivalent
    subquery from SQLMesh's transpiler.
    """
    if not key:
        raise ValueError("@latest_row_per_key needs at least one key column")
    table = next((k.table for k in key if isinstance(k, exp.Column) and k.table), None)
    order = exp.Order(
        expressions=[exp.Ordered(this=exp.column(c, table=table), desc=True, nulls_first=False) for c in LATEST_FIRST]
    )
    window = exp.Window(this=exp.RowNumber(), partition_by=[k.copy() for k in key], order=order)
    # the latest row's tombstone flag, as a window too: PostgreSQL has no QUALIFY, and the
    # transpiler moves only window functions into the subquery it writes instead
    deleted = exp.Window(this=exp.func("FIRST_VALUE", exp.func("COALESCE", exp.column("_deleted", table=table), exp.false())),
                         partition_by=[k.copy() for k in key], order=order.copy())
    return exp.and_(exp.EQ(this=window, expression=exp.Literal.number(1)), exp.Not(this=deleted))


# Up to this many days, a window's dedupe first narrows raw to the keys that have a version in
# the window (a daily run reads a day's keys, not history). Past it, the narrowing costs more than
# it saves: at 6 years of orders, a whole-history build took 3.1 s with it and 2.1 s without
# (bench/transform.py, docs/decisions/0011). Both give the same rows for any window: a key whose
# latest version falls in the window always has a version in the window.
NARROW_WINDOW_DAYS = 62


@macro()
def only_in_narrow_window(evaluator: MacroEvaluator, predicate: exp.Expression) -> exp.Expression:
    """``predicate`` when the window being built spans at most NARROW_WINDOW_DAYS days, else TRUE.

    Usage (the key-narrowing filter of an incremental staging model)::

        WHERE @only_in_narrow_window(raw.id IN (SELECT window_keys.id FROM window_keys))

    A pruning filter only: the model's result must not depend on it.
    """
    start, end = evaluator.locals.get("start_dt"), evaluator.locals.get("end_dt")
    if start is None or end is None or (end - start).days < NARROW_WINDOW_DAYS:
        return predicate
    return exp.true()
