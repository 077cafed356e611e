"""Planner statistics for what a model just wrote, on PostgreSQL.

PostgreSQL plans a query from each table's statistics, which only ``ANALYZE`` (or autovacuum,
minutes later) computes. SQLMesh writes a model's table and at once builds the next model from
it: on a first build at 6 years of data, ``stg_jaffle_shop__order_items`` was planned against a
2.3M-row ``stg_jaffle_shop__orders`` that had never been analysed and did not finish in 20
minutes; with statistics the same query took about a minute (found by an on-call walkthrough).

So every model runs ``@analyze_written_table()`` after its query (``model_defaults`` in
config.yaml): on PostgreSQL, after an interval wider than ANALYZE_MIN_DAYS (a first build, a
wide restatement, a full refresh of a whole history), it analyses the physical table. A day's
restatement changes too little of a large table to need it and is left to autovacuum. Other
engines get no statement (DuckDB keeps its statistics as it writes). The macro is metadata
only: adding it does not rebuild existing tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator

ANALYZE_MIN_DAYS = 7


@macro(metadata_only=True)
def analyze_written_table(evaluator: MacroEvaluator) -> exp.Expression | None:
    """``ANALYZE <physical table>`` on PostgreSQL after a write wider than ANALYZE_MIN_DAYS days."""
    # "creating": SQLMesh fills a FULL model's new table as it creates it (an interval of a day or
    # less there is an empty table's creation, skipped below). The engine's dialect:
    # evaluator.dialect is the models' (duckdb), transpiled for the engine.
    if evaluator.runtime_stage not in ("creating", "evaluating") or evaluator.engine_adapter.dialect != "postgres":
        return None
    start, end = evaluator.locals.get("start_ts"), evaluator.locals.get("end_ts")
    if start and end:
        days = (datetime.fromisoformat(str(end)[:19]) - datetime.fromisoformat(str(start)[:19])).days
        if days < ANALYZE_MIN_DAYS:
            return None
    return exp.Analyze(this=evaluator.locals["this_model"].copy())
