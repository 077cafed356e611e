"""Restating what new raw batches touched: the windows of each model version's unconsumed
batches become missing intervals in SQLMesh's state, then the batches are recorded as consumed
(the order is why a kill loses nothing: orchestrator/transform/windows.py,
docs/decisions/0011-windowed-restatement.md). ``run.transform`` calls ``restate_pending`` before
its plan and run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlglot import exp

from sources.logs import get_logger
from sources.specs import format_duration

# the transform's logger: its "restating ..." lines read as one step of `elt transform`
log = get_logger("orchestrator.transform.run")


def schema_table(name: str) -> str:
    """``'"warehouse"."raw_x"."t"'`` -> ``'raw_x.t'``: how people name tables (no catalog)."""
    return ".".join(name.replace('"', "").split(".")[-2:])


WATERMARKS = "elt_meta.transform_watermarks"


def transform_watermarks(adapter, environment: str) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    """The newest load time in the ledger (None before the first load) and ``environment``'s
    watermark: the newest load its last successful transform saw (None before its first). One
    query where the ledger exists."""
    from orchestrator.transform.windows import LEDGER, create_meta_table

    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, WATERMARKS, "environment TEXT NOT NULL, loaded_through TIMESTAMP, finished_at TIMESTAMP NOT NULL")
    env = exp.Literal.string(environment).sql(adapter.dialect)
    last = f"SELECT max(loaded_through) FROM {WATERMARKS} WHERE environment = {env}"
    if not adapter.table_exists(LEDGER):
        return None, adapter.fetchone(last)[0]
    newest, previous = adapter.fetchone(f"SELECT (SELECT max(loaded_at) FROM {LEDGER}), ({last})")
    return newest, previous


def query_parents(model) -> set[str]:  # type: ignore[no-untyped-def]
    """``schema.table`` of every table the model's query reads (not the audit-only ``depends_on``)."""
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression) or not hasattr(model, "render_query") or any(
            not isinstance(t.this, exp.Identifier) for t in query.find_all(exp.Table)) or not any(
            True for _ in query.find_all(exp.Table)):
        # no SQL, a macro names a table (FROM @orders() AS o), or no table at all (a query written
        # in Jinja, JINJA_QUERY_BEGIN: its SQL is one opaque string): SQLMesh's dependencies, read
        # from the rendered query (with any audit-only depends_on); the query alone named none of
        # them, and its model was never restated (a probe: late rows never reached a Jinja model)
        return {schema_table(d).lower() for d in model.depends_on}
    return {f"{t.db}.{t.name}".lower() for t in query.find_all(exp.Table) if t.db}


LATER_DAYS_TAG = "restate:later_days"
ALL_LATER_DAYS_TAG = "restate:all_later_days"

# How a time model's rows of a day depend on rows of other days (Lineage.later_days), weakest first:
OWN_DAYS = 0  # a row's own day only
NUMBERS = 1  # ranks within the sequence_key entity by time (ROW_NUMBER, RANK, COUNT(*) OVER ...):
#              a row that appears, goes or moves shifts the entity's later rows
VALUES = 2  # aggregates the entity's earlier values (a running SUM, LAG, the later-days tag):
#             any change to a row shifts the entity's later rows
ALL_LATER = 3  # every day after the first touched one: a window without PARTITION BY, or over
#                another entity than a sequence_key (Lineage.of), or the tag 'restate:all_later_days'
#                (a trailing N-day sum has 'restate:next_days:N')
ALL_DAYS = 4  # reads later rows (LEAD, a frame reaching FOLLOWING rows, a window without ORDER BY,
#               NTILE, PERCENT_RANK, CUME_DIST): a change shifts earlier days too


def numbers_rows(model) -> int:  # type: ignore[no-untyped-def]
    """How a model's rows of a day depend on the rows of other days (the levels above), from the
    window functions in its query and its tags: ``'restate:later_days'`` declares a dependence on
    the entity's earlier rows written without a window function (a self-join counting earlier
    rows, a running total by correlated subquery), ``'restate:all_later_days'`` one on every
    earlier row of any entity. Only the tags can say it for a model that reads history otherwise:
    nothing finds that in SQL (decision 0053).

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> def level(sql, tags=()): return numbers_rows(M(tags=list(tags), query=parse_one(sql, read="duckdb")))
    >>> level("SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM x"), level("SELECT COUNT(*) OVER (PARTITION BY c ORDER BY t) FROM x")
    (1, 1)
    >>> level("SELECT SUM(v) OVER (PARTITION BY c ORDER BY t) FROM x"), level("SELECT LAG(t) OVER (PARTITION BY c ORDER BY t) FROM x")
    (2, 2)
    >>> level("SELECT SUM(v) OVER w FROM x WINDOW w AS (PARTITION BY c ORDER BY t)")
    2
    >>> level("SELECT LEAD(t) OVER (PARTITION BY c ORDER BY t) FROM x"), level("SELECT LEAD(t) IGNORE NULLS OVER (PARTITION BY c ORDER BY t) FROM x")
    (4, 4)
    >>> level("SELECT COUNT(*) OVER (PARTITION BY c) FROM x"), level("SELECT NTILE(4) OVER (PARTITION BY c ORDER BY t) FROM x")
    (4, 4)
    >>> level("SELECT SUM(v) OVER (ORDER BY t ROWS BETWEEN CURRENT ROW AND 2 FOLLOWING) FROM x")
    4
    >>> level("SELECT v FROM x", ["restate:later_days"]), level("SELECT v FROM x", ["restate:all_later_days"]), level("SELECT v FROM x")
    (2, 3, 0)

    Without PARTITION BY a window numbers every entity's rows together: every later day.

    >>> level("SELECT ROW_NUMBER() OVER (ORDER BY t) FROM x"), level("SELECT SUM(v) OVER w FROM x WINDOW w AS (ORDER BY t)")
    (3, 3)

    A time model's window must number its rows from the earliest on, day by day: latest first,
    ordered by another column or by a month reads later days too. Ordered by the loader's version
    columns, latest first, it is the dedupe of @latest_row_per_key written out.

    >>> def timed(sql): return numbers_rows(M(tags=[], query=parse_one(sql, read="duckdb"), time_column=M(column=exp.column("t"))))
    >>> timed("SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM x"), timed("SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY x.t DESC) FROM x")
    (1, 4)
    >>> timed("SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY amount) FROM x"), timed("SELECT CAST(s AS DATE) AS t, SUM(v) OVER (PARTITION BY c ORDER BY s) FROM x")
    (4, 2)
    >>> timed("SELECT SUM(v) OVER (PARTITION BY c ORDER BY DATE_TRUNC('month', t)) FROM x"), timed("SELECT SUM(v) OVER (PARTITION BY c ORDER BY -epoch(t)) FROM x")
    (4, 4)
    >>> timed("SELECT SUM(v) OVER (PARTITION BY c ORDER BY CAST(t AS DATE), id) FROM x"), timed("SELECT CASE WHEN f THEN s ELSE t END AS t, ROW_NUMBER() OVER (PARTITION BY c ORDER BY s) FROM x")
    (2, 4)
    >>> timed("SELECT COUNT(*) OVER (PARTITION BY CAST(t AS DATE)) FROM x")
    4
    >>> timed("WITH f AS (SELECT c, MIN(t) AS t FROM x GROUP BY c) SELECT ROW_NUMBER() OVER (PARTITION BY x.c ORDER BY f.t, x.id) FROM x JOIN f USING (c)")
    4
    >>> timed("WITH d AS (SELECT c, t, SUM(v) AS s FROM x GROUP BY c, t) SELECT SUM(d.s) OVER (PARTITION BY d.c ORDER BY d.t) FROM d")
    2
    >>> timed("WITH f AS (SELECT DISTINCT ON (c) c, t FROM x ORDER BY c, t) SELECT ROW_NUMBER() OVER (PARTITION BY x.c ORDER BY f.t, x.id) FROM x JOIN f USING (c)")
    4
    >>> timed("SELECT * FROM x QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC) = 1")
    0

    A time column made from other rows (``time_from_other_rows``) reads every day, unless the tag
    ``'restate:own_days'`` says each row sits on its own day.

    >>> cohort = parse_one("SELECT c, MIN(s) AS t FROM x GROUP BY c", read="duckdb")
    >>> [numbers_rows(M(tags=tags, query=cohort, time_column=M(column=exp.column("t")))) for tags in ([], ["restate:own_days"])]
    [4, 0]

    A model that reads its own table (``@this_model``) carries its earlier days forward:

    >>> carried = parse_one("SELECT t, v FROM x", read="duckdb")
    >>> [numbers_rows(M(tags=tags, query=carried, depends_on_self=True)) for tags in ([], ["restate:own_days"])]
    [3, 0]
    """
    level = _numbers_rows(model)
    tags = getattr(model, "tags", None) or []
    if getattr(model, "depends_on_self", False) is True and OWN_DAYS_TAG not in tags:
        # it reads its own table (@this_model): a day's rows are made from the rows of the days
        # before (a balance carried forward, ids not seen yet), so a changed day shifts every later
        # one (a probe: a correction left 41 of 45 later rows stale)
        return max(level, ALL_LATER)
    return level


def _numbers_rows(model) -> int:  # type: ignore[no-untyped-def]
    tags = getattr(model, "tags", None) or []
    level = ALL_LATER if ALL_LATER_DAYS_TAG in tags else VALUES if LATER_DAYS_TAG in tags else OWN_DAYS
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression):
        return level
    # NTILE, PERCENT_RANK and CUME_DIST divide by the partition's size: later rows change them
    whole_partition = (exp.Lead, exp.Ntile, exp.PercentRank, exp.CumeDist)
    if OWN_DAYS_TAG not in tags and time_from_other_rows(model):
        return ALL_DAYS  # a cohort's row sits on its first day: a later change reaches an earlier day
    named = {w.this.name: w for w in query.find_all(exp.Window) if isinstance(w.this, exp.Identifier)}
    times = _time_names(model, query)
    for window in query.find_all(exp.Window):
        func = window.this
        if isinstance(func, exp.Identifier):
            continue  # a WINDOW clause's definition, read through the windows that name it
        while isinstance(func, (exp.IgnoreNulls, exp.RespectNulls)):
            func = func.this
        alias = window.args.get("alias")
        base = named.get(alias.name) if alias is not None else None
        spec_of = base if base is not None and not window.args.get("order") else window
        spec = spec_of.args.get("spec")
        order = spec_of.args.get("order")
        if order is not None and _latest_version_first(order):
            # the latest version of each key (what @latest_row_per_key expands to, written out):
            # every version of a changed key is read with it, whatever its day (windows.window_sql)
            continue
        if (isinstance(func, whole_partition) or not order
                or (spec is not None and "FOLLOWING" in str(spec.args.get("end_side") or "").upper())):
            return ALL_DAYS  # without ORDER BY a window covers the whole partition, later rows too
        first_key = _same_time(order.expressions[0].this)
        select = window.find_ancestor(exp.Select)
        if times and (not _earliest_first(order.expressions[0], times) or (
                isinstance(first_key, exp.Column) and select is not None and _not_own_time(select, first_key))):
            # latest first (ORDER BY ordered_at DESC), in another order than time (ORDER BY
            # amount), by a coarser time (a month's rows are peers), or by a time of the same name
            # that a GROUP BY or a window made (each customer's first order time): a row's number or
            # running value reads rows of later days too
            return ALL_DAYS
        partition = window.args.get("partition_by") or (base.args.get("partition_by") if base is not None else None)
        if not partition:
            # one numbering over every entity's rows (a global rank, a running total of all
            # orders): a change shifts every later day, not only its entity's (an item probe)
            level = max(level, ALL_LATER)
        level = max(level, NUMBERS if _ranks(window) else VALUES)
    return level


def _same_time(expression: exp.Expression) -> exp.Expression:
    """The column inside an expression that keeps a time's order and its day: a cast to a date or a
    timestamp, or a truncation to the day or finer; anything else as it is."""
    while True:
        if isinstance(expression, exp.Cast) and expression.to.this in (
                exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ,
                exp.DataType.Type.TIMESTAMPNTZ, exp.DataType.Type.TIMESTAMPLTZ, exp.DataType.Type.DATETIME,
                exp.DataType.Type.TIMESTAMP_S, exp.DataType.Type.TIMESTAMP_MS, exp.DataType.Type.TIMESTAMP_NS):
            expression = expression.this
        elif isinstance(expression, (exp.TimestampTrunc, exp.DateTrunc)) and str(
                getattr(expression.args.get("unit"), "name", expression.args.get("unit")) or "").strip("'").upper() in (
                "DAY", "HOUR", "MINUTE", "SECOND", "MILLISECOND", "MICROSECOND"):
            expression = expression.this
        elif isinstance(expression, exp.Paren):
            expression = expression.this
        else:
            return expression


def _any_grain(expression: exp.Expression) -> exp.Expression:
    """The column inside casts and truncations to any grain (a month's first day is still the
    month of the row's own time), or the expression as it is."""
    while True:
        expression = _same_time(expression)
        if isinstance(expression, (exp.TimestampTrunc, exp.DateTrunc)):
            expression = expression.this
        else:
            return expression


def time_from_other_rows(model) -> str | None:  # type: ignore[no-untyped-def]
    """What makes a time model's rows sit on other days than their own, or None: its time column
    in the top SELECT (each branch of a UNION) is made by an aggregate or a window
    (``MIN(ordered_at)``: each customer on their first order's day), or followed by name through
    CTEs and subqueries to one, or to a CTE that keeps one row of several; or the top SELECT keeps
    one row of several (DISTINCT ON, LIMIT). A change on one day then changes or moves a row of
    another day (a cohort's count, a customer's first day), which restating the changed days never
    reaches: such a model is restated whole. None for a row's own time: cast or truncated to any
    grain (a month's row: ``coarser_time_column``), a row-wise function of its own columns, a day's
    MIN or MAX grouped by that day (each followed to its source), the latest version of each key
    by QUALIFY (the staging dedupe). A DISTINCT ON or ARG_MAX dedupe is not told from a customer's
    latest order: it is flagged, and ``'restate:own_days'`` says otherwise. A QUALIFY in the top
    SELECT is read by ``numbers_rows`` as a window. SQL this cannot read gives the cautious answer
    (a reason, so: whole).

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> def of(sql): return time_from_other_rows(M(query=parse_one(sql, read="duckdb"), time_column=M(column=exp.column("t"))))
    >>> of("SELECT c, MIN(o) AS t, COUNT(*) AS n FROM x GROUP BY c")
    'MIN(o)'
    >>> of("WITH f AS (SELECT c, MIN(o) AS first FROM x GROUP BY c) SELECT c, CAST(f.first AS DATE) AS t FROM f")
    'CAST(f.first AS DATE), made in a CTE or subquery'
    >>> of("WITH f AS (SELECT c, o AS t FROM x QUALIFY ROW_NUMBER() OVER (PARTITION BY c ORDER BY o) = 1) SELECT * FROM f")
    't, made in a CTE or subquery'
    >>> of("SELECT DISTINCT ON (c) c, o AS t FROM x ORDER BY c, o")
    'DISTINCT ON (c)'
    >>> of("SELECT a AS t FROM x UNION ALL SELECT MIN(o) AS t FROM y GROUP BY c")
    'MIN(o)'
    >>> of("WITH f AS (SELECT c, MIN(o) AS t FROM x GROUP BY c) SELECT CAST(t AS DATE) AS d, MAX(t) AS t FROM f GROUP BY 1")
    'MAX(t), made in a CTE or subquery'
    >>> of("SELECT DISTINCT ON (c) c, o AS t FROM x ORDER BY c, _loaded_at DESC"), of("SELECT c, ARG_MAX(o, _loaded_at) AS t FROM x GROUP BY c")
    ('DISTINCT ON (c)', 'ARG_MAX(o, _loaded_at)')

    Left alone:

    >>> of("SELECT DATE_TRUNC('month', o) AS t, SUM(v) AS v FROM x GROUP BY 1"), of("SELECT CAST(o AS DATE) AS t FROM x")
    (None, None)
    >>> of("WITH m AS (SELECT DATE_TRUNC('month', o) AS t, v FROM x) SELECT t, SUM(v) AS v FROM m GROUP BY t")
    >>> of("SELECT * FROM x QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY _extracted_at DESC) = 1")
    >>> of("WITH a AS (SELECT id, COALESCE(s, o) AS t FROM x) SELECT id, t FROM a UNION ALL SELECT id, t FROM y")
    >>> of("SELECT CAST(o AS DATE) AS d, MAX(o) AS t FROM x GROUP BY 1")
    """
    column = getattr(getattr(model, "time_column", None), "column", None)
    query = getattr(model, "query", None)
    if not isinstance(column, exp.Expression) or not column.name or not isinstance(query, exp.Expression):
        return None
    name = column.name.lower()
    try:
        branches = list(_branches(query))
        # a UNION's later branches name their columns by position: the first branch's name holds
        first = [p.alias_or_name.lower() for p in branches[0].expressions] if branches else []
        at = first.index(name) if name in first else None
        for number, top in enumerate(branches):
            made = _made_in(top, name, at if number else None)
            if made:
                return made
    except Exception as exc:  # noqa: BLE001 - it runs on every model of every transform: the cautious answer
        return f"its time column could not be read ({type(exc).__name__}: {exc})"
    return None


def _branches(node: exp.Expression) -> Iterator[exp.Select]:
    """The SELECTs of a query: itself, or each branch of a UNION (INTERSECT, EXCEPT)."""
    while isinstance(node, exp.Subquery):
        node = node.this
    if isinstance(node, exp.SetOperation):
        yield from _branches(node.left)
        yield from _branches(node.right)
    elif isinstance(node, exp.Select):
        yield node


def _made_in(top: exp.Select, name: str, at: int | None) -> str | None:
    """``time_from_other_rows`` for one SELECT, the time column's name, and for a UNION's later
    branch its position."""
    distinct = top.args.get("distinct")
    if distinct is not None and distinct.args.get("on"):
        return f"DISTINCT ON {distinct.args['on'].sql()}"
    if top.args.get("limit"):
        return top.args["limit"].sql()
    for position, projection in enumerate(top.expressions):
        if _is_star(projection):
            if _not_own_time(top, exp.column(name), any_grain=True):
                return f"{name}, made in a CTE or subquery"
            continue
        if projection.alias_or_name.lower() != name and position != at:
            continue
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if any(isinstance(n, (exp.AggFunc, exp.Window)) for n in value.walk()):
            kept = _own_time_aggregate(top, value)
            if kept is None:
                return value.sql()
            return f"{value.sql()}, made in a CTE or subquery" if _not_own_time(top, kept, any_grain=True) else None
        if any(isinstance(n, exp.Query) for n in value.walk()):
            return value.sql()  # a scalar subquery reads other rows
        shift = _shifted(value)
        if shift is not None:
            # a local day (AT TIME ZONE) or a business day (minus 4 hours): a row's day here is not
            # the UTC day of its source row, which is the day a batch touches (a probe: a late order
            # at 03:00 UTC belongs to the day before in Los Angeles, which was never restated)
            return f"{value.sql()}, shifted off its rows' UTC day by {shift}"
        columns = [_any_grain(value)] if isinstance(_any_grain(value), exp.Column) else list(value.find_all(exp.Column))
        if any(_not_own_time(top, c, any_grain=True) for c in columns):
            return f"{value.sql()}, made in a CTE or subquery"
        return None
    return None


_ZONE_SHIFTS = (exp.AtTimeZone, exp.ConvertTimezone, exp.DateAdd, exp.DateSub, exp.TimestampAdd, exp.TimestampSub,
                exp.DatetimeAdd, exp.DatetimeSub, exp.TsOrDsAdd)


def _shifted(value: exp.Expression) -> str | None:
    """The part of a time column's expression that moves an instant (a zone conversion, an added
    or subtracted interval), or None.

    >>> from sqlglot import parse_one
    >>> def of(sql): return _shifted(parse_one(sql, read="duckdb"))
    >>> of("CAST(ordered_at AT TIME ZONE 'America/Los_Angeles' AS DATE)"), of("DATE_TRUNC('day', t - INTERVAL 4 HOUR)")
    ("ordered_at AT TIME ZONE 'America/Los_Angeles'", "t - INTERVAL '4' HOUR")
    >>> of("CAST(t AS DATE)"), of("DATE_TRUNC('month', t)"), of("COALESCE(s, t)")
    (None, None, None)
    """
    for node in value.walk():
        if isinstance(node, _ZONE_SHIFTS) or (isinstance(node, exp.Anonymous) and node.name.lower() in ("timezone", "convert_tz")):
            return _shown(node)
        if isinstance(node, (exp.Add, exp.Sub)) and any(isinstance(side, exp.Interval) for side in (node.left, node.right)):
            return _shown(node)
    return None


def _time_names(model, query: exp.Expression) -> set[str]:  # type: ignore[no-untyped-def]
    """The names of a time model's time column and of the columns it is renamed or cast from in its
    query (``CAST(o.created_at AS DATE) AS order_day`` adds ``created_at``; a CASE or COALESCE over
    other columns adds nothing), lower case; empty for a model without a time column."""
    column = getattr(getattr(model, "time_column", None), "column", None)
    if not isinstance(column, exp.Expression) or not column.name:
        return set()
    names = {column.name.lower()}
    aliases = list(query.find_all(exp.Alias))
    grew = True
    while grew:
        grew = False
        for alias in aliases:
            source = _same_time(alias.this)
            if (alias.alias.lower() in names and isinstance(source, exp.Column)
                    and source.name.lower() not in names):
                names.add(source.name.lower())
                grew = True
    return names


def _earliest_first(first: exp.Ordered, times: set[str]) -> bool:
    """Whether a window's first ORDER BY key numbers rows from the earliest on, day by day: the time
    column (or one it is renamed or cast from), its date or a finer truncation, ascending. A month
    (its rows are peers), ``-epoch(t)`` or DESC is not."""
    if first.args.get("desc"):
        return False
    key = _same_time(first.this)
    return isinstance(key, exp.Column) and key.name.lower() in times


# the loader's version columns (sources/load): ordered by them, a window picks each key's latest
# version, as the @latest_row_per_key macro does
_VERSION_COLUMNS = frozenset({"_extracted_at", "_batch_id", "_batch_row", "_loaded_at"})


def _latest_version_first(order: exp.Order) -> bool:
    first = order.expressions[0]
    return bool(first.args.get("desc")) and isinstance(first.this, exp.Column) and \
        first.this.name.lower() in _VERSION_COLUMNS


_RANKING = (exp.RowNumber, exp.Rank, exp.DenseRank)


def _ranks(window: exp.Window) -> bool:
    """Whether a window numbers rows (a rank or ``COUNT(*)``): NUMBERS in ``numbers_rows``."""
    func = window.this
    while isinstance(func, (exp.IgnoreNulls, exp.RespectNulls)):
        func = func.this
    return isinstance(func, _RANKING) or (isinstance(func, exp.Count) and isinstance(func.this, exp.Star))


def ranked_sources(model) -> tuple[set[str], set[str]]:  # type: ignore[no-untyped-def]
    """The tables whose rows the model's ranking windows number, and those of them whose rows a value
    lets in or out of the numbering (``schema.table``, lower case).

    Numbered: the tables in the FROM and JOINs of each ranking window's SELECT and in the subqueries
    of its WHERE, QUALIFY and HAVING (``EXISTS``), through CTEs and subqueries; not a grouped CTE or
    subquery that is LEFT JOINed on every one of its grouping keys and filtered by nothing (at most
    one row per ranked row: ``marts.orders`` ranks orders and only sums their items).
    By value: every numbered table of a SELECT that a value decides rows of: a WHERE, QUALIFY,
    HAVING or inner join condition on a column that is not the time column or a join key
    (``WHERE order_total >= 2500``: a corrected amount adds or removes a ranked order), a subquery
    condition, or a PARTITION BY on an expression. A probe of item-ranking models found each.

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> def ranked(sql): return [sorted(s) for s in ranked_sources(M(query=parse_one(sql, read="duckdb")))]
    >>> items = "WITH s AS (SELECT order_id, COUNT(*) AS n FROM m.items GROUP BY order_id) "
    >>> ranked(items + "SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM m.orders AS o LEFT JOIN s USING (order_id)")
    [['m.orders'], []]
    >>> ranked(items + "SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM m.orders AS o LEFT JOIN s USING (order_id) WHERE s.n > 0")
    [['m.items', 'm.orders'], ['m.items', 'm.orders']]
    >>> ranked("SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM m.orders AS o LEFT JOIN (SELECT order_id, sku "
    ...        "FROM m.items GROUP BY order_id, sku) AS s ON s.order_id = o.order_id")
    [['m.items', 'm.orders'], []]
    >>> ranked("SELECT ROW_NUMBER() OVER (PARTITION BY o.c ORDER BY o.t, i.id) FROM m.items AS i JOIN m.orders AS o USING (order_id)")
    [['m.items', 'm.orders'], []]
    >>> ranked("SELECT ROW_NUMBER() OVER (PARTITION BY o.c ORDER BY o.t) FROM m.orders AS o WHERE EXISTS (SELECT 1 FROM m.items AS i WHERE i.order_id = o.id)")
    [['m.items', 'm.orders'], ['m.items', 'm.orders']]
    >>> ranked("WITH r AS (SELECT COUNT(*) OVER (PARTITION BY c ORDER BY t) AS n, t FROM (SELECT * FROM m.items WHERE v > 1) AS i) SELECT * FROM r")
    [['m.items'], ['m.items']]
    >>> ranked("SELECT ROW_NUMBER() OVER (PARTITION BY c, v > 1 ORDER BY t) FROM m.orders"), ranked("SELECT SUM(v) OVER (PARTITION BY c ORDER BY t) FROM m.items")
    ([['m.orders'], ['m.orders']], [[], []])
    >>> ranked("SELECT ROW_NUMBER() OVER (PARTITION BY c, store ORDER BY t) FROM m.orders")
    [['m.orders'], ['m.orders']]
    >>> ranked("WITH o AS (SELECT c, t, v > 1 AS big FROM m.orders) SELECT ROW_NUMBER() OVER (PARTITION BY o.c, o.big ORDER BY o.t) FROM o")
    [['m.orders'], ['m.orders']]
    >>> ranked("SELECT ROW_NUMBER() OVER w FROM m.orders WINDOW w AS (PARTITION BY c, v > 1 ORDER BY t)")
    [['m.orders'], ['m.orders']]
    >>> ranked(items + "SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) FROM m.orders AS o LEFT JOIN s USING (order_id) WHERE n > 0")
    [['m.items', 'm.orders'], ['m.items', 'm.orders']]
    >>> ranked(items + ", w AS (SELECT o.c, o.t, COALESCE(s.n, 0) AS n FROM m.orders AS o LEFT JOIN s USING (order_id)) "
    ...        "SELECT ROW_NUMBER() OVER (PARTITION BY w.c ORDER BY w.t) FROM w WHERE w.n > 0")
    [['m.items', 'm.orders'], ['m.items', 'm.orders']]
    """
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression):
        return set(), set()
    ctes = {cte.alias_or_name.lower(): cte.this for cte in query.find_all(exp.CTE)}
    times = _time_names(model, query)
    by_value: set[str] = set()

    def of_query(node: exp.Expression, seen: frozenset[str]) -> set[str]:
        if isinstance(node, exp.Subquery):
            return of_query(node.this, seen)
        if isinstance(node, exp.SetOperation):
            return of_query(node.left, seen) | of_query(node.right, seen)
        if isinstance(node, exp.Select):
            return of_select(node, seen, ranking=False)
        return set()

    def resolved(node: exp.Expression, seen: frozenset[str]) -> exp.Expression | None:
        """The query a FROM or JOIN item stands for (a CTE's or a subquery's), or None for a table."""
        if isinstance(node, exp.Table) and not node.db and node.name.lower() in ctes and node.name.lower() not in seen:
            return ctes[node.name.lower()]
        return node if isinstance(node, exp.Subquery) else None

    def of_item(node: exp.Expression, seen: frozenset[str]) -> set[str]:
        inner = resolved(node, seen)
        if inner is not None:
            return of_query(inner, seen | {node.name.lower()} if isinstance(node, exp.Table) else seen)
        return {f"{node.db}.{node.name}".lower()} if isinstance(node, exp.Table) and node.db else set()

    def grouping_keys(node: exp.Expression | None) -> set[str] | None:
        """The output names a grouped (or DISTINCT) query is grouped by; None when not grouped."""
        while isinstance(node, exp.Subquery):
            node = node.this
        if not isinstance(node, exp.Select):
            return None
        if node.args.get("group"):
            return {e.alias_or_name.lower() for e in node.args["group"].expressions}
        if node.args.get("distinct"):
            return {e.alias_or_name.lower() for e in node.expressions}
        return None

    def join_keys(join: exp.Join, alias: str) -> set[str]:
        """The joined item's columns that an ON equality or USING matches."""
        keys = {i.name.lower() for i in join.args.get("using") or []}
        on = join.args.get("on")
        for eq in on.find_all(exp.EQ) if on is not None else []:
            keys |= {c.name.lower() for c in (eq.left, eq.right) if isinstance(c, exp.Column) and c.table.lower() == alias}
        return keys

    def decides_by_value(select: exp.Select, condition: exp.Expression) -> bool:
        """Whether a condition of ``select`` tests a value of its rows: a column of this SELECT (not
        of a subquery, not inside a window) that is not the time column nor one side of an equality
        between columns of two tables (a join key); any subquery in it counts too."""
        if any(sub is not select for sub in condition.find_all(exp.Select)):
            return True
        keys = {id(c) for eq in condition.find_all(exp.EQ) if isinstance(eq.left, exp.Column)
                and isinstance(eq.right, exp.Column) and eq.left.table != eq.right.table for c in (eq.left, eq.right)}
        return any(id(c) not in keys and c.name.lower() not in times and c.find_ancestor(exp.Window) is None
                   for c in condition.find_all(exp.Column))

    def of_select(select: exp.Select, seen: frozenset[str], ranking: bool = True) -> set[str]:
        """``ranking``: the window's own SELECT; below it (a CTE or subquery it reads), a LEFT JOINed
        grouped item whose columns the SELECT passes on may be filtered further out, where this
        walk does not look (`WHERE o.n_items > 0` on a CTE's `COALESCE(ic.n_items, 0) AS n_items`)."""
        found: set[str] = set()
        source = select.args.get("from_")
        if source is not None:
            found |= of_item(source.this, seen)
        conditions = [select.args[key] for key in ("where", "qualify", "having") if select.args.get(key) is not None]
        for join in select.args.get("joins") or []:
            alias = join.this.alias_or_name.lower()
            if str(join.side).upper() == "LEFT":
                inner = resolved(join.this, seen)
                keys = grouping_keys(inner)
                # its columns named in a filter, with its alias or without one (`WHERE n_drinks > 0`)
                provided = {e.alias_or_name.lower() for e in _select_of(inner).expressions} if _select_of(inner) else set()
                def reads_it(node: exp.Expression) -> bool:
                    return any(c.table.lower() == alias or (not c.table and c.name.lower() in provided)
                               for c in node.find_all(exp.Column))

                filtered = any(reads_it(condition) for condition in conditions) or (not ranking and any(
                    _is_star(e) or reads_it(e) for e in select.expressions))
                if keys is not None and keys <= join_keys(join, alias) and not filtered:
                    continue  # at most one row per ranked row, and none is let out: the ranked rows stay
            elif join.args.get("on") is not None:
                conditions.append(join.args["on"])  # an inner join keeps the rows its condition matches
            found |= of_item(join.this, seen)
        for condition in conditions:  # EXISTS, IN (SELECT ...): the subquery's rows decide which rows are ranked
            for sub in condition.find_all(exp.Select):
                if sub is not select:
                    found |= of_query(sub, seen) | {f"{t.db}.{t.name}".lower() for t in sub.find_all(exp.Table) if t.db}
        if any(decides_by_value(select, condition) for condition in conditions):
            by_value.update(found)
        return found

    def computed(select: exp.Select, column: exp.Column, depth: int = 0) -> bool:
        """Whether ``column`` is computed from values (``amount >= 2500 AS is_big``) in the CTE or
        subquery of ``select``'s FROM or JOINs it comes from, through renames."""
        items = [select.args["from_"].this] if select.args.get("from_") is not None else []
        items += [join.this for join in select.args.get("joins") or []]
        for item in items:
            if column.table and item.alias_or_name.lower() != column.table.lower():
                continue
            inner = _select_of(resolved(item, frozenset()))
            if inner is None or depth > 8:
                continue
            for projection in inner.expressions:
                if projection.alias_or_name.lower() == column.name.lower():
                    source = projection.this if isinstance(projection, exp.Alias) else projection
                    if not isinstance(source, exp.Column):
                        return True
                    return computed(inner, source, depth + 1)
        return False

    named = {w.this.name: w for w in query.find_all(exp.Window) if isinstance(w.this, exp.Identifier)}
    numbered: set[str] = set()
    for window in query.find_all(exp.Window):
        if isinstance(window.this, exp.Identifier) or not _ranks(window):
            continue
        alias = window.args.get("alias")
        base = named.get(alias.name) if alias is not None else None  # OVER w: the WINDOW clause's definition
        order = window.args.get("order") or (base.args.get("order") if base is not None else None)
        if order is not None and _latest_version_first(order):
            continue  # a hand-written dedupe (the latest version of each key) numbers no rows of a day
        select = window.find_ancestor(exp.Select)
        if select is not None:
            found = of_select(select, frozenset())
            numbered |= found
            partition = window.args.get("partition_by") or (base.args.get("partition_by") if base is not None else None)
            if len(partition or []) > 1 or any(not isinstance(e, exp.Column) or computed(select, e) for e in partition or []):
                # PARTITION BY customer_id, amount >= 100 or customer_id, store: a changed value
                # moves a row between numberings without moving it in time or entity
                by_value.update(found)
    return numbered, by_value & numbered


def _select_of(node: exp.Expression | None) -> exp.Select | None:
    while isinstance(node, exp.Subquery):
        node = node.this
    return node if isinstance(node, exp.Select) else None


def _is_star(projection: exp.Expression) -> bool:
    return isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star))


def _visible_ctes(node: exp.Expression) -> dict[str, exp.Expression]:
    """The CTEs a SELECT can name, innermost first (a nested WITH's ``x`` hides an outer ``x``).

    >>> from sqlglot import parse_one
    >>> q = parse_one("WITH x AS (SELECT 1 AS a) SELECT * FROM x WHERE EXISTS (WITH x AS (SELECT 2 AS a) SELECT a FROM x)", read="duckdb")
    >>> _visible_ctes(q)["x"].sql(), _visible_ctes(q.find(exp.Exists).this)["x"].sql()
    ('SELECT 1 AS a', 'SELECT 2 AS a')
    """
    found: dict[str, exp.Expression] = {}
    current: exp.Expression | None = node
    while current is not None:
        with_ = current.args.get("with_")
        for cte in with_.expressions if with_ is not None else []:
            # a column list (WITH x(a, b) AS ...) renames by position: not followed (VALUES reads as unknown)
            found.setdefault(cte.alias_or_name.lower(), exp.Values() if _renames_columns(cte) else cte.this)
        current = current.parent
    return found


def _renames_columns(node: exp.Expression) -> bool:
    """Whether a CTE, a table or a subquery renames its columns by position (``AS r(a, b)``)."""
    alias = node.args.get("alias")
    return isinstance(alias, exp.TableAlias) and bool(alias.columns)


def _reshapes_star(projection: exp.Expression) -> bool:
    """Whether a star renames or replaces columns (``* REPLACE (store_id AS customer_id)``)."""
    nodes = [projection, projection.this] if isinstance(projection, exp.Column) else [projection]
    return any(isinstance(n, exp.Expression) and (n.args.get("replace") or n.args.get("rename")) for n in nodes)


def _keeps_some_rows(select: exp.Select) -> bool:
    """Whether a SELECT keeps one row of several, whose plain columns then stand for the others:
    DISTINCT ON, LIMIT, or a QUALIFY other than the latest version of each key (the dedupe, or its
    macro unexpanded). Not GROUP BY: a grouped column is each group's own value (a customer's
    day), and an aggregated one is found by itself."""
    distinct = select.args.get("distinct")
    if select.args.get("limit"):
        return True
    if distinct is not None and distinct.args.get("on"):
        return True
    qualify = select.args.get("qualify")
    return qualify is not None and any(
        w.args.get("order") is None or not _latest_version_first(w.args["order"]) for w in qualify.find_all(exp.Window))


_WITHIN_GROUP = (exp.Min, exp.Max, exp.AnyValue, exp.First, exp.Last)


def _own_time_aggregate(select: exp.Select, value: exp.Expression) -> exp.Column | None:
    """The time an aggregate keeps within one day, or None: MIN, MAX, ANY_VALUE, FIRST or LAST of a
    time grouped by that time or its day (a day's latest order stays on its day). The caller still
    follows the returned column (a day's MAX of a cohort's first days is still a cohort's).

    >>> from sqlglot import parse_one
    >>> def own(sql): q = parse_one(sql, read="duckdb"); return _own_time_aggregate(q, q.expressions[-1].this)
    >>> own("SELECT CAST(t AS DATE) AS d, MAX(t) AS t FROM x GROUP BY 1").sql(), own("SELECT c, MIN(t) AS t FROM x GROUP BY c")
    ('t', None)
    >>> own("SELECT id, ARG_MAX(t, _extracted_at) AS t FROM x GROUP BY id")
    """
    while isinstance(value, (exp.Cast, exp.Paren)):
        value = value.this
    if not isinstance(value, _WITHIN_GROUP):
        return None
    time = _same_time(value.this)
    group = select.args.get("group")
    if not isinstance(time, exp.Column) or group is None:
        return None
    for key in group.expressions:
        if isinstance(key, exp.Literal) and key.is_int and 0 < int(key.name) <= len(select.expressions):
            key = select.expressions[int(key.name) - 1]  # GROUP BY 1
        key = _same_time(key.this if isinstance(key, exp.Alias) else key)
        if isinstance(key, exp.Column) and key.name.lower() == time.name.lower():
            return time
    return None


def _not_own_time(select: exp.Select, column: exp.Column, depth: int = 0, any_grain: bool = False,
                  seen: dict[tuple[int, str, int], bool] | None = None) -> bool:
    """Whether ``column`` of ``select`` (named like the time column) is not each row's own time,
    followed through CTEs and subqueries by name: computed by an aggregate or a window (``MIN(ordered_at)
    AS ordered_at``), by anything but a cast or a truncation to the day or finer (``DATE_TRUNC('month',
    ordered_at) AS ordered_at``; with ``any_grain``, a truncation to any grain is a row's own time), or
    taken from a CTE that keeps one row of several (``QUALIFY ROW_NUMBER() OVER (PARTITION BY c ORDER
    BY t) = 1``).

    >>> from sqlglot import parse_one
    >>> q = parse_one("WITH f AS (SELECT c, MIN(t) AS t FROM x GROUP BY c), g AS (SELECT * FROM f), "
    ...               "h AS (SELECT c, t FROM x QUALIFY ROW_NUMBER() OVER (PARTITION BY c ORDER BY t) = 1), "
    ...               "d AS (SELECT * FROM x QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY _loaded_at DESC) = 1), "
    ...               "m AS (SELECT c, DATE_TRUNC('month', t) AS t FROM x), e AS (SELECT c, CAST(t AS DATE) AS t FROM x) "
    ...               "SELECT 1 FROM x JOIN g USING (c) JOIN h USING (c) JOIN d USING (c) JOIN m USING (c) JOIN e USING (c)", read="duckdb")
    >>> [_not_own_time(q, exp.column("t", a)) for a in ("g", "x", "h", "d", "m", "e")]
    [True, False, True, False, True, False]
    >>> [_not_own_time(q, exp.column("t", a), any_grain=True) for a in ("g", "h", "m")]
    [True, True, False]

    With ``any_grain`` (the model's own time column, ``time_from_other_rows``), a row-wise function
    of the row's own columns is its own time (``epoch_ms(ms)``, ``COALESCE(shipped_at,
    ordered_at)``), and so is an aggregate that ``_own_time_aggregate`` accepts.

    >>> q = parse_one("WITH a AS (SELECT id, epoch_ms(ms) AS t FROM x), b AS (SELECT id, CAST(t AS DATE) AS d, "
    ...               "MAX(t) AS t FROM x GROUP BY 1, 2), c AS (SELECT id, (SELECT MIN(t) FROM y) AS t FROM x) "
    ...               "SELECT 1 FROM a JOIN b USING (id) JOIN c USING (id)", read="duckdb")
    >>> [_not_own_time(q, exp.column("t", a), any_grain=True) for a in ("a", "b", "c")]
    [False, False, True]
    >>> q = parse_one("WITH s AS (SELECT id, o - INTERVAL 4 HOUR AS t FROM x) SELECT 1 FROM s", read="duckdb")
    >>> _not_own_time(q, exp.column("t", "s"), any_grain=True)  # shifted off the row's UTC day
    True
    """
    if depth > 16:
        return False
    seen = {} if seen is None else seen
    key = (id(select), column.sql().lower(), depth)  # with the depth: the same answer as without the memo
    if key not in seen:  # a chain of self-joined CTEs would otherwise be read once per path
        seen[key] = False
        seen[key] = _not_own_time_once(select, column, depth, any_grain, seen)
    return seen[key]


def _not_own_time_once(select: exp.Select, column: exp.Column, depth: int, any_grain: bool,
                       seen: dict[tuple[int, str, int], bool]) -> bool:
    ctes, items = _visible_ctes(select), _items(select, column)
    for item in items:
        inner_select = _inner(item, ctes)
        if inner_select is None:
            continue
        match = next((p for p in inner_select.expressions if not _is_star(p)
                      and p.alias_or_name.lower() == column.name.lower()), None)
        if (match is not None or any(_is_star(p) for p in inner_select.expressions)) and _keeps_some_rows(inner_select):
            return True  # one row of several (each customer's first order, by QUALIFY or DISTINCT ON)
        if match is not None:
            value = match.this if isinstance(match, exp.Alias) else match
            if any(isinstance(n, (exp.AggFunc, exp.Window)) for n in match.walk()):
                kept = _own_time_aggregate(inner_select, value) if any_grain else None
                if kept is None or _not_own_time(inner_select, kept, depth + 1, any_grain, seen):
                    return True
                continue
            source = _any_grain(value) if any_grain else _same_time(value)
            if any_grain and not isinstance(source, exp.Column):
                # a row-wise function of the row's columns (epoch_ms(ms), COALESCE(a, b)): the row's
                # own time when each column it reads is; a subquery reads other rows
                if any(isinstance(n, exp.Query) for n in source.walk()) or _shifted(source) is not None or any(
                        _not_own_time(inner_select, c, depth + 1, any_grain, seen) for c in source.find_all(exp.Column)):
                    return True
            elif not isinstance(source, exp.Column) or _not_own_time(inner_select, source, depth + 1, any_grain, seen):
                return True
        elif any(_is_star(p) for p in inner_select.expressions) and \
                _not_own_time(inner_select, exp.column(column.name), depth + 1, any_grain, seen):
            return True
    return False


def _inner(item: exp.Expression, ctes: dict[str, exp.Expression]) -> exp.Select | None:
    """The SELECT a FROM or JOIN item stands for (a CTE's or a subquery's); None for a table, or a
    UNION and the like."""
    if isinstance(item, exp.Table) and not item.db:
        return _select_of(ctes.get(item.name.lower()))
    return _select_of(item) if isinstance(item, exp.Subquery) else None


def _items(select: exp.Select, column: exp.Column | None = None) -> list[exp.Expression]:
    """The FROM item and the JOINed items of a SELECT, in order; with ``column``, those it may come
    from (the one its qualifier names, or all)."""
    items = [select.args["from_"].this] if select.args.get("from_") is not None else []
    items += [join.this for join in select.args.get("joins") or []]
    if column is not None and column.table:
        items = [item for item in items if item.alias_or_name.lower() == column.table.lower()]
    return items


def _nullable(select: exp.Select) -> set[int]:
    """The ids of a SELECT's items whose columns are NULL on rows where the join found no match:
    the joined side of a LEFT JOIN, the earlier items of a RIGHT JOIN, both sides of a FULL JOIN."""
    found: set[int] = set()
    earlier = _items(select)[:1]
    for join in select.args.get("joins") or []:
        side = str(join.side or "").upper()
        if side in ("LEFT", "FULL"):
            found.add(id(join.this))
        if side in ("RIGHT", "FULL"):
            found.update(id(e) for e in earlier)
        earlier.append(join.this)
    return found


def column_sources(select: exp.Select, column: exp.Column, depth: int = 0,
                   columns_of: Any = None) -> set[tuple[str, str]] | None:
    """The ``(schema.table, column)`` pairs (lower case) a column read by ``select`` comes from,
    followed through the CTEs and subqueries it can name, by name and rename (``customer AS
    customer_id``, ``SELECT *``). None when it is computed on the way (``amount >= 100 AS big``),
    comes from a set operation or from the side of an outer join that may be NULL, is one of two
    columns of one name under a ``SELECT *`` join, or cannot be followed: the caller assumes
    nothing about it. ``columns_of(table)``: a table's column names, or None when unknown.

    >>> from sqlglot import parse_one
    >>> q = parse_one("WITH o AS (SELECT r.customer AS customer_id, r.amount > 1 AS big FROM raw.orders AS r), "
    ...               "a AS (SELECT * FROM o) SELECT a.customer_id, a.big, x.store FROM a JOIN s.stores AS x ON TRUE", read="duckdb")
    >>> [column_sources(q, c) for c in q.expressions]
    [{('raw.orders', 'customer')}, None, {('s.stores', 'store')}]

    The joined side of a LEFT JOIN is NULL where nothing matched; under ``SELECT *`` over a join,
    a name that two sides have is the first one's in DuckDB, and which one is not followed here:

    >>> q = parse_one("WITH b AS (SELECT customer AS c FROM raw.orders), s AS (SELECT store AS c, id FROM raw.orders), "
    ...               "j AS (SELECT * FROM s JOIN raw.orders AS o USING (id)) "
    ...               "SELECT b.c, j.c FROM raw.orders AS o LEFT JOIN b ON TRUE JOIN j ON TRUE", read="duckdb")
    >>> [column_sources(q, c, columns_of=lambda t: {"id", "c"}) for c in q.expressions]
    [None, None]

    Renamed by position (a column list) or by ``* REPLACE``: not followed by name.

    >>> q = parse_one("WITH x(customer, store) AS (SELECT store, customer FROM raw.orders), "
    ...               "y AS (SELECT * REPLACE (store AS customer) FROM raw.orders) SELECT x.customer, y.customer FROM x, y", read="duckdb")
    >>> [column_sources(q, c) for c in q.expressions]
    [None, None]
    """
    if depth > 16:
        return None
    ctes, items = _visible_ctes(select), _items(select, column)
    nullable = _nullable(select)
    name = column.name.lower()
    found: set[tuple[str, str]] = set()
    for item in items:
        if _renames_columns(item):
            return None  # raw.orders AS r(a, b): names by position, not followed
        inner: exp.Expression | None = None
        if isinstance(item, exp.Table) and not item.db and item.name.lower() in ctes:
            inner = ctes[item.name.lower()]
        elif isinstance(item, exp.Subquery):
            inner = item
        if inner is None:
            if isinstance(item, exp.Table) and item.db:
                if id(item) in nullable:
                    if column.table:
                        return None
                    continue  # an unqualified name: the other items' column, if any
                found.add((f"{item.db}.{item.name}".lower(), name))
            continue  # a table function, VALUES: nothing to follow
        inner_select = _select_of(inner)
        if inner_select is None:
            return None  # UNION and the like: not followed
        match = next((p for p in inner_select.expressions if not _is_star(p) and p.alias_or_name.lower() == name), None)
        stars = [p for p in inner_select.expressions if _is_star(p)]
        if any(_reshapes_star(p) for p in stars):
            return None
        if match is None and not stars:
            continue  # not this item's column (an unqualified name of another item)
        if id(item) in nullable:
            return None
        if match is not None:
            source = match.this if isinstance(match, exp.Alias) else match
            sub = column_sources(inner_select, source, depth + 1, columns_of) \
                if isinstance(source, exp.Column) else None
        else:
            source = exp.column(name)
            using = {i.name.lower() for j in inner_select.args.get("joins") or [] for i in j.args.get("using") or []}
            if name not in using:  # USING's column is one column, equal on both sides
                sides = _having(inner_select, name, stars, columns_of)
                if len(sides) > 1:
                    return None
                source = exp.column(name, sides[0]) if sides else source
            sub = column_sources(inner_select, source, depth + 1, columns_of)
        if sub is None:
            return None
        found |= sub
        for same in _equated(inner_select, source) if isinstance(source, exp.Column) else []:
            found |= column_sources(inner_select, same, depth + 1, columns_of) or set()  # equal on every row
    return found or None


def _having(select: exp.Select, name: str, stars: list[exp.Expression], columns_of: Any) -> list[str]:
    """The aliases of the items of a ``SELECT *`` (or ``t.*``) that may have a column ``name``."""
    ctes = _visible_ctes(select)
    starred = {p.table.lower() for p in stars if isinstance(p, exp.Column) and p.table}
    found = []
    for item in _items(select):
        alias = item.alias_or_name
        if starred and alias.lower() not in starred and not any(isinstance(p, exp.Star) for p in stars):
            continue
        inner_select = _inner(item, ctes)
        if inner_select is not None:
            may = any(_is_star(p) or p.alias_or_name.lower() == name for p in inner_select.expressions)
        elif isinstance(item, exp.Table) and item.db:
            columns = columns_of(f"{item.db}.{item.name}".lower()) if columns_of is not None else None
            may = columns is None or name in columns
        else:
            may = True  # a UNION, a table function: unknown
        if may:
            found.append(alias)
    return found


def _equated(select: exp.Select, column: exp.Column) -> list[exp.Column]:
    """Columns that ``select``'s joins make equal to ``column`` on every row it reads: the other side
    of an ``=`` in an inner join's ON or in the WHERE. ``PARTITION BY c.customer_id`` with ``JOIN
    customers AS c ON c.customer_id = o.customer_id`` numbers within ``o.customer_id``. An outer
    join's ON is not: its nullable side is NULL where nothing matched (and ``column_sources`` does
    not follow such a side's columns).

    >>> from sqlglot import parse_one
    >>> q = parse_one("SELECT 1 FROM o JOIN c ON c.id = o.cid AND c.k = 1 LEFT JOIN s ON s.id = o.sid WHERE o.x = s.y", read="duckdb")
    >>> [[e.sql() for e in _equated(q, exp.column(n, t))] for t, n in (("c", "id"), ("s", "id"), ("o", "sid"), ("o", "x"))]
    [['o.cid'], [], [], ['s.y']]
    """
    def same(a: exp.Column, b: exp.Column) -> bool:
        return a.name.lower() == b.name.lower() and (not a.table or not b.table or a.table.lower() == b.table.lower())

    conditions = [join.args["on"] for join in select.args.get("joins") or [] if join.args.get("on") is not None
                  and str(join.side or "").upper() in ("", "INNER") and str(join.kind or "").upper() in ("", "INNER")]
    if select.args.get("where") is not None:
        conditions.append(select.args["where"].this)
    found: list[exp.Column] = []
    for condition in conditions:
        for eq in condition.flatten() if isinstance(condition, exp.And) else [condition]:
            if isinstance(eq, exp.EQ) and isinstance(eq.left, exp.Column) and isinstance(eq.right, exp.Column):
                found += [other for mine, other in ((eq.left, eq.right), (eq.right, eq.left)) if same(mine, column)]
    return found


def partition_columns(model) -> list[list[exp.Column]]:  # type: ignore[no-untyped-def]
    """The PARTITION BY columns of each window of the model's query that numbers rows or adds up
    earlier values within a partition (``numbers_rows``' NUMBERS and VALUES), with the SELECT they
    are read in: not the latest-version dedupe, not a window without PARTITION BY."""
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression):
        return []
    named = {w.this.name: w for w in query.find_all(exp.Window) if isinstance(w.this, exp.Identifier)}
    found: list[list[exp.Column]] = []
    for window in query.find_all(exp.Window):
        if isinstance(window.this, exp.Identifier):
            continue
        alias = window.args.get("alias")
        base = named.get(alias.name) if alias is not None else None
        order = window.args.get("order") or (base.args.get("order") if base is not None else None)
        if order is not None and _latest_version_first(order):
            continue
        partition = window.args.get("partition_by") or (base.args.get("partition_by") if base is not None else None)
        if partition:
            # an expression is no entity, even over its column (LEFT(customer_id, 1) is coarser)
            found.append([e for e in partition if isinstance(e, exp.Column)])
    return found


def passes_rows_through(model, keys: list[tuple[str, ...]] | None = None) -> bool:  # type: ignore[no-untyped-def]
    """Whether a model not partitioned by time (a VIEW, a FULL table) keeps each input row as it is,
    on its day: no aggregate, GROUP BY, DISTINCT, HAVING, LIMIT, window (but the latest-version
    dedupe), restate tag, or table read twice (a self-join reads other rows). A time model reading
    such a model is restated by the days of the raw rows beneath it, as if it read them directly;
    through any other such model (a customer's totals) it is restated whole. Staging written as
    views, as many teams do, made every batch restate every later model over all history (a probe
    of item-ranking models). Read from the rendered query (macros expanded). ``keys``: the declared
    primary keys (lower case), which a dedupe window must partition by (None: not checked).

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> def through(sql): return passes_rows_through(M(kind=M(is_view=True, is_full=False), tags=[],
    ...                                                  render_query=lambda: parse_one(sql, read="duckdb")))
    >>> through("SELECT o.id, o.ordered_at, c.name FROM raw.orders AS o JOIN raw.customers AS c ON c.id = o.customer "
    ...         "QUALIFY ROW_NUMBER() OVER (PARTITION BY o.id ORDER BY o._extracted_at DESC) = 1")
    True
    >>> through("SELECT customer, COUNT(*) AS n FROM raw.orders GROUP BY customer"), through("SELECT DISTINCT customer FROM raw.orders")
    (False, False)
    >>> through("SELECT o.id, ROW_NUMBER() OVER (PARTITION BY o.customer ORDER BY o.ordered_at) AS n FROM raw.orders AS o")
    False
    >>> through("SELECT o.id FROM raw.orders AS o JOIN raw.orders AS e ON e.customer = o.customer AND e.ordered_at < o.ordered_at")
    False
    >>> through("WITH o AS (SELECT * FROM raw.orders) SELECT a.id FROM o AS a WHERE NOT EXISTS "
    ...         "(SELECT 1 FROM o AS b WHERE b.customer = a.customer AND b.ordered_at < a.ordered_at)")
    False
    >>> passes_rows_through(M(kind=M(is_view=True, is_full=False), tags=[], render_query=lambda: parse_one(
    ...     "SELECT * FROM raw.orders QUALIFY ROW_NUMBER() OVER (PARTITION BY customer ORDER BY _loaded_at DESC) = 1")),
    ...     keys=[("id",)])
    False
    >>> passes_rows_through(M(kind=M(is_view=False, is_full=False, is_embedded=True), tags=[],
    ...                       render_query=lambda: parse_one("SELECT * FROM raw.orders WHERE order_total > 1000")))
    True
    """
    kind = getattr(model, "kind", None)
    # an EMBEDDED model is inlined into the queries that read it: a filter of rows passes them
    # through as a view does (a probe: a daily model over one was restated over all history)
    if not (getattr(kind, "is_view", False) or getattr(kind, "is_full", False) or getattr(kind, "is_embedded", False)):
        return False
    if any(tag.startswith("restate:") for tag in getattr(model, "tags", None) or []):
        return False
    try:
        query = model.render_query()
    except Exception:  # a model SQLMesh cannot render alone: taken as reshaping its rows
        return False
    if not isinstance(query, exp.Query):
        return False
    for node in query.walk():
        if isinstance(node, (exp.Group, exp.Having, exp.Limit, exp.Offset, exp.Fetch, exp.Pivot, exp.Except,
                             exp.Intersect)):
            return False
        if isinstance(node, (exp.Select, exp.Union)) and node.args.get("distinct"):
            return False
        if isinstance(node, exp.Window):
            order = node.args.get("order")
            if order is None or not _latest_version_first(order) or not _by_a_key(node, keys):
                return False
        elif isinstance(node, exp.Anonymous) or (isinstance(node, exp.AggFunc) and node.find_ancestor(exp.Window) is None):
            return False  # an aggregate, or a function sqlglot does not know (it may be one)
    # a table or a CTE read twice (a self-join, NOT EXISTS over the same CTE) reads other rows
    read = [f"{t.db}.{t.name}".lower() if t.db else t.name.lower() for t in query.find_all(exp.Table)]
    return len(read) == len(set(read))


def _by_a_key(window: exp.Window, keys: list[tuple[str, ...]] | None) -> bool:
    """Whether a latest-version window is partitioned by a declared table's whole primary key (the
    dedupe of each key), not by fewer columns (``PARTITION BY customer``: the latest row of each
    customer, which a new row of another key replaces). ``keys``: every declared primary key."""
    names = {e.name.lower() for e in window.args.get("partition_by") or [] if isinstance(e, exp.Column)}
    return bool(names) and (keys is None or any(set(key) <= names for key in keys))


NEXT_DAYS_TAG = "restate:next_days:"


def next_days_tagged(model) -> int:  # type: ignore[no-untyped-def]
    """N of a model's ``'restate:next_days:N'`` tag (0 without one): a trailing N-day sum's row of a
    day reads the N days before it, so a change on a day also restates the N days after it.

    >>> from types import SimpleNamespace as M
    >>> next_days_tagged(M(tags=["restate:next_days:6"])), next_days_tagged(M(tags=["freshness:26h"]))
    (6, 0)
    """
    for tag in getattr(model, "tags", None) or []:
        if tag.startswith(NEXT_DAYS_TAG) and tag[len(NEXT_DAYS_TAG):].isdigit():
            return int(tag[len(NEXT_DAYS_TAG):])
    return 0


OWN_DAYS_TAG = "restate:own_days"


# truncation units by size, DuckDB's spellings included (its plural and short forms)
_GRAINS = {**dict.fromkeys(("MINUTE", "MINUTES", "MIN", "MINS", "M"), -2),
           **dict.fromkeys(("HOUR", "HOURS", "HR", "HRS", "H"), -1),
           **dict.fromkeys(("DAY", "DAYS", "D", "DD"), 0), **dict.fromkeys(("WEEK", "WEEKS", "W", "WK", "WKS"), 1),
           **dict.fromkeys(("MONTH", "MONTHS", "MON", "MONS", "MM"), 2),
           **dict.fromkeys(("QUARTER", "QUARTERS", "Q", "QTR", "QTRS"), 3),
           **dict.fromkeys(("YEAR", "YEARS", "Y", "YR", "YRS", "YY", "YYYY"), 4)}
_GRAIN_NAMES = {-2: "minute", -1: "hour", 0: "day", 1: "week", 2: "month", 3: "quarter", 4: "year"}


def coarser_time_column(model) -> str | None:  # type: ignore[no-untyped-def]
    """The truncation (``month``) of a time model's time column when it is coarser than the
    model's SQLMesh intervals, else None. Such a model's run of a day deletes that day's rows and
    writes the day as a slice of its month's row, which the next day's run never replaces: it is
    wrong in SQLMesh itself, so ``elt transform`` names it (decision 0053). Only the column's own
    value is read (through casts), in the model's top SELECT.

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> from sqlmesh.core.node import IntervalUnit
    >>> def of(sql, unit): return coarser_time_column(M(query=parse_one(f"SELECT {sql} AS m FROM x", read="duckdb"),
    ...                                                 interval_unit=unit, time_column=M(column=exp.column("m"))))
    >>> of("DATE_TRUNC('month', t)", IntervalUnit.DAY), of("DATE_TRUNC('month', t)", IntervalUnit.MONTH)
    ('month', None)
    >>> of("CAST(DATE_TRUNC('years', t) AS DATE)", IntervalUnit.MONTH), of("CAST(t AS DATE)", IntervalUnit.DAY)
    ('year', None)
    >>> of("DATE_TRUNC('day', t)", IntervalUnit.HOUR), of("DATE_TRUNC('hour', t)", IntervalUnit.HOUR)
    ('day', None)
    >>> of("CASE WHEN DATE_TRUNC('month', t) = DATE '2020-01-01' THEN t END", IntervalUnit.DAY) is None
    True
    """
    column = getattr(getattr(model, "time_column", None), "column", None)
    top = _select_of(getattr(model, "query", None)) if isinstance(getattr(model, "query", None), exp.Expression) else None
    if column is None or top is None:
        return None
    unit = getattr(model, "interval_unit", None)
    interval = {"year": 4, "month": 2, "day": 0, "hour": -1}.get(getattr(unit, "value", "day"), -2)
    for projection in top.expressions:
        if projection.alias_or_name.lower() != column.name.lower():
            continue
        value = projection.this if isinstance(projection, exp.Alias) else projection
        while isinstance(value, exp.Cast):
            value = value.this
        if isinstance(value, (exp.DateTrunc, exp.TimestampTrunc)):
            grain = _GRAINS.get(value.text("unit").upper())
            if grain is not None and grain > interval:
                return _GRAIN_NAMES[grain]
    return None


def compares_times_of_two_rows(model, times: frozenset[str] | set[str] = frozenset()) -> str | None:  # type: ignore[no-untyped-def]
    """The first comparison in a model's query of the times of two different tables: one column of
    both (``e.ordered_at < o.ordered_at``), or two columns named in ``times`` (the declared event
    times and the time models' time columns: ``t.tweeted_at < o.ordered_at + INTERVAL 1 DAY``, an
    ASOF join's condition, ``t.at BETWEEN o.at - INTERVAL 7 DAY AND o.at``). That is how a
    self-join, a correlated subquery or an "as of" join reads a row's earlier or later rows. Such
    a model's day depends on other days, which only a tag tells the transform (decision 0053).

    >>> from types import SimpleNamespace as M
    >>> from sqlglot import parse_one
    >>> q = "SELECT o.id FROM o WHERE NOT EXISTS (SELECT 1 FROM o AS e WHERE e.c = o.c AND e.ordered_at < o.ordered_at)"
    >>> compares_times_of_two_rows(M(query=parse_one(q)))
    'e.ordered_at < o.ordered_at'
    >>> compares_times_of_two_rows(M(query=parse_one("SELECT o.id FROM o JOIN i ON i.day = o.day WHERE o.ordered_at < i.at")))
    >>> times = {"ordered_at", "tweeted_at"}
    >>> asof = "SELECT o.id FROM o ASOF LEFT JOIN t ON t.c = o.c AND t.tweeted_at <= o.ordered_at + INTERVAL 1 DAY"
    >>> compares_times_of_two_rows(M(query=parse_one(asof, read="duckdb")), times)
    "t.tweeted_at <= o.ordered_at + INTERVAL '1' DAY"
    >>> week = "SELECT o.id FROM o JOIN t ON t.c = o.c AND t.tweeted_at BETWEEN o.ordered_at - INTERVAL 7 DAY AND o.ordered_at"
    >>> compares_times_of_two_rows(M(query=parse_one(week, read="duckdb")), times)
    "t.tweeted_at BETWEEN o.ordered_at - INTERVAL '7' DAY AND o.ordered_at"
    >>> compares_times_of_two_rows(M(query=parse_one("SELECT o.id FROM o JOIN t ON o.amount < t.limit_cents")), times)
    """
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression):
        return None
    names = {n.lower() for n in times}

    def columns(node: exp.Expression) -> list[exp.Column]:
        return [node] if isinstance(node, exp.Column) else list(node.find_all(exp.Column))

    def of_two_rows(one: exp.Expression, other: exp.Expression) -> bool:
        if (isinstance(one, exp.Column) and isinstance(other, exp.Column) and one.name == other.name
                and one.table and other.table and one.table != other.table):
            return True
        return any(a.table and b.table and a.table != b.table and a.name.lower() in names and b.name.lower() in names
                   for a in columns(one) for b in columns(other))

    for comparison in query.find_all(exp.LT, exp.LTE, exp.GT, exp.GTE, exp.Between):
        if isinstance(comparison, exp.Between):
            if any(of_two_rows(comparison.this, comparison.args[bound]) for bound in ("low", "high")
                   if comparison.args.get(bound) is not None):
                return _shown(comparison)
        elif of_two_rows(comparison.left, comparison.right):
            return _shown(comparison)
    return None


def _shown(node: exp.Expression, dialect: str = "duckdb") -> str:
    """SQL of ``node`` for a message, its macro variables written as ``@name``: a dialect whose
    generator was made before SQLMesh's import registered macros cannot write them."""
    from sqlmesh.core.dialect import MacroVar

    return node.transform(lambda n: exp.var(f"@{n.name}") if isinstance(n, MacroVar) else n).sql(dialect)


def _window_bound(node: exp.Expression) -> str | None:
    """``start`` or ``end`` when ``node`` is one of SQLMesh's window macros (``@start_ts``,
    ``@end_ds``, ...), through casts; ``shifted`` when such a macro is inside an expression (``@start_ts
    - INTERVAL 7 DAY``); else None."""
    from sqlmesh.core.dialect import MacroVar

    bare = node
    while isinstance(bare, exp.Cast):
        bare = bare.this
    if isinstance(bare, MacroVar):
        return bare.name.lower().split("_", 1)[0] if bare.name.lower().startswith(("start_", "end_")) else None
    inner = [v for v in node.find_all(MacroVar) if v.name.lower().startswith(("start_", "end_"))]
    return "shifted" if inner else None


def reads_rows_before_the_window(model) -> str | None:  # type: ignore[no-untyped-def]
    """The first condition of a model's query that reads rows before its window: a column bounded
    above by a window macro (``o.ordered_at <= @end_ts``, ``< @start_ts``) with no lower bound at
    ``@start_*`` in the same SELECT, or bounded below by a shifted start (``BETWEEN @start_ts -
    INTERVAL 7 DAY AND @end_ts``). A customer's spend so far or a trailing week written this way
    makes a day depend on earlier days, which only a tag tells the transform (decision 0053).

    >>> from types import SimpleNamespace as M
    >>> from sqlmesh.core import dialect as d
    >>> def of(where): return reads_rows_before_the_window(M(query=d.parse_one(f"SELECT o.id FROM o WHERE {where}")))
    >>> of("o.at BETWEEN @start_ts AND @end_ts"), of("o.at >= @start_ds AND o.at < @end_ds"), of("o.day = @start_ds")
    (None, None, None)
    >>> of("o.at <= @end_ts"), of("@end_dt > o.at AND o.kind = 'x'"), of("o.at < CAST(@start_ts AS TIMESTAMP)")
    ('o.at <= @end_ts', '@end_dt > o.at', 'o.at < CAST(@start_ts AS TIMESTAMP)')
    >>> of("o.at BETWEEN @start_ts - INTERVAL '7' DAY AND @end_ts")
    "o.at BETWEEN @start_ts - INTERVAL '7' DAY AND @end_ts"
    >>> of("o.at >= @start_ts AND o.other <= @end_ts")  # another column: no lower bound of its own
    'o.other <= @end_ts'
    """
    query = getattr(model, "query", None)
    if not isinstance(query, exp.Expression):
        return None
    dialect = getattr(model, "dialect", None) or "duckdb"
    for select in query.find_all(exp.Select):
        conditions = [c for where in [select.args.get("where"), *(j.args.get("on") for j in select.args.get("joins") or [])]
                      if where is not None for c in where.find_all(exp.LT, exp.LTE, exp.GT, exp.GTE, exp.Between)
                      if c.parent_select is select]
        lower: set[str] = set()
        upper: list[tuple[str, str]] = []
        for c in conditions:
            if isinstance(c, exp.Between):
                if isinstance(c.this, exp.Column):
                    low = _window_bound(c.args["low"])
                    if low == "shifted":
                        return _shown(c, dialect)
                    if low == "start":
                        lower.add(_shown(c.this, dialect))
                    elif _window_bound(c.args["high"]):
                        upper.append((_shown(c.this, dialect), _shown(c, dialect)))
                continue
            column, bound, below = ((c.left, c.right, isinstance(c, (exp.LT, exp.LTE))) if isinstance(c.left, exp.Column)
                                    else (c.right, c.left, isinstance(c, (exp.GT, exp.GTE))))
            if not isinstance(column, exp.Column):
                continue
            kind = _window_bound(bound)
            if kind is None:
                continue
            if below:
                upper.append((_shown(column, dialect), _shown(c, dialect)))
            elif kind == "start":
                lower.add(_shown(column, dialect))
            elif kind == "shifted":
                return _shown(c, dialect)
        for column, condition in upper:
            if column not in lower:
                return condition
    return None


@dataclass
class Lineage:
    """Data lineage of the project's models: by query, not by audit ``depends_on``, except what
    makes a model that is rebuilt whole run again (``upstream_raw``)."""

    is_time: dict[str, bool]  # model -> partitioned by time (INCREMENTAL_BY_TIME_RANGE)
    # model -> every raw table it reads, directly or through models (and, for a model not
    # partitioned by time, the raw tables of the parents it names in depends_on for its audits)
    upstream_raw: dict[str, set[str]]
    via_untimed: dict[str, set[str]]  # model -> raw tables that reach it through a model not partitioned by time
    # model -> restates the later days of an entity whose rows appeared, went or moved (windows.py's
    # sequence_key): it numbers rows within an entity by time (a window function in its query, or
    # the LATER_DAYS_TAG tag), or reads a model that does. The others restate only the rows' own days.
    later_days: dict[str, int] = field(default_factory=dict)
    # raw table -> the earliest start of the time-partitioned models reading it: rows dated before
    # it are in no interval of any model (windows.timeless with first_day)
    first_day: dict[str, date] = field(default_factory=dict)
    # model -> how many days after each touched day it also restates (the tag 'restate:next_days:N',
    # a trailing N-day sum), or a time model it reads does
    next_days: dict[str, int] = field(default_factory=dict)
    # model -> the raw tables whose rows a ranking window of it (or of a model it reads) numbers,
    # directly or through models (ranked_sources): a child table (items placed by their order) among
    # them shifts the later days of its parent's entity when an item appears, goes or moves
    ranked_raw: dict[str, set[str]] = field(default_factory=dict)
    # model -> those of ranked_raw whose rows a value lets in or out of the numbering (ranked_sources):
    # any changed row of them shifts its entity's later days
    ranked_by_value: dict[str, set[str]] = field(default_factory=dict)
    # raw tables a time-partitioned model reads through time models: rows dated after today are in
    # no interval of those models until their day comes (windows.timeless with after)
    read_by_time: set[str] = field(default_factory=set)
    # model -> raw tables whose entity's later days (windows.py: the days of the entity's rows in that
    # table, or in its parent) are not the model's days: its time column comes from other tables (a
    # tweet's count of its customer's orders so far, on the tweet's day). A change there restates
    # every later day (a probe: a late order left a tweet after the customer's last order stale)
    off_time: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx) -> Lineage:  # type: ignore[no-untyped-def]
        # external models are the raw tables: lineage stops there
        models = {schema_table(fqn).lower(): m for fqn, m in ctx.models.items() if not m.kind.is_external}
        is_time = {n: bool(m.kind.is_incremental_by_time_range) for n, m in models.items()}
        rendered: dict[str, bool] = {}

        specs: dict[str, Any] = {}  # raw table -> its WindowSpec, read from the declarations once, if needed

        def declared() -> dict[str, Any]:
            if "" not in specs:
                from orchestrator.transform.windows import window_specs

                specs.update(window_specs())
                specs[""] = None  # read (no raw table has an empty name)
            return specs

        def rows_through(parent: str) -> bool:  # rendered once, and only for a model read by another
            if parent not in rendered:
                keys = [tuple(k.lower() for k in spec.key) for spec in declared().values() if spec is not None]
                rendered[parent] = passes_rows_through(models[parent], keys)
            return rendered[parent]

        every_model = {schema_table(fqn).lower(): m for fqn, m in ctx.models.items()}  # raw tables too

        def columns_of(table: str) -> set[str] | None:
            """A model's or a raw table's column names (lower case), None when SQLMesh does not know them."""
            known = getattr(every_model.get(table), "columns_to_types", None)
            return {c.lower() for c in known} if known else None

        raw_columns: dict[tuple[str, str, bool], set[tuple[str, str]] | None] = {}

        def to_raw(pairs: set[tuple[str, str]] | None, depth: int,
                   same_time: bool = False) -> set[tuple[str, str]] | None:
            """(table, column) pairs with every model's column replaced by the raw columns beneath it;
            ``same_time``: also through casts and truncations to the day or finer (a time's day)."""
            if pairs is None or depth > 32:
                return None
            found: set[tuple[str, str]] = set()
            for table, column in pairs:
                if table not in models:
                    found.add((table, column))
                    continue
                if (table, column, same_time) not in raw_columns:
                    raw_columns[(table, column, same_time)] = None  # a cycle reads as unknown
                    query = getattr(models[table], "query", None)  # a seed or a Python model has none
                    top = _select_of(query) if isinstance(query, exp.Expression) else None
                    source: exp.Expression | None = None
                    traced: set[tuple[str, str]] | None = None
                    if top is not None:
                        match = next((p for p in top.expressions if not _is_star(p) and p.alias_or_name.lower() == column), None)
                        if match is not None:
                            source = match.this if isinstance(match, exp.Alias) else match
                            source = _same_time(source) if same_time else source
                        elif any(_is_star(p) for p in top.expressions):
                            source = exp.column(column)
                        else:
                            traced = set()  # not a column of this model (a name asked of every item of a join)
                    if isinstance(source, exp.Column):
                        traced = column_sources(top, source, columns_of=columns_of)  # type: ignore[arg-type]
                        for same in _equated(top, source):  # type: ignore[arg-type]
                            traced = None if traced is None else traced | (column_sources(top, same, columns_of=columns_of) or set())  # type: ignore[arg-type]
                    raw_columns[(table, column, same_time)] = to_raw(traced, depth + 1, same_time)
                beneath = raw_columns[(table, column, same_time)]
                if beneath is None:
                    return None
                found |= beneath
            return found

        def other_entity(name: str, tables: set[str]) -> str | None:
            """Why the model's numberings or running values are not all within the entities the
            transform knows, or None: no raw table found beneath them (a macro that builds the
            FROM), a raw table among ``tables`` with event days but no entity, or a PARTITION BY
            that is not each such table's entity (followed through renames, models and inner-join
            equalities). A table's entity is its own sequence_key, or its parent's for a child
            table (items: their order's customer), or for a child table its parent key (items
            numbered within their order, all on the order's day)."""
            spec_of = declared()
            if not tables:
                return "the tables its windows read cannot be told from its SQL (a macro that builds the FROM?)"
            accepted: dict[str, set[tuple[str, str]]] = {}
            for table in sorted(tables):
                spec = spec_of.get(table)
                if spec is None or not (spec.event_time or spec.parent):
                    continue  # no days of its own: a change restates the model whole anyway
                owner = table if spec.sequence_key else spec.parent[0] if spec.parent else None
                entity = spec_of[owner].sequence_key if spec_of.get(owner) else None
                accepted[table] = ({(owner, entity.lower())} if entity else set()) | \
                    ({(table, spec.parent[1].lower())} if spec.parent else set())
                if not accepted[table]:
                    return f"it numbers or adds up rows of {table}, which declares no sequence_key"
            reasons = []
            for columns in partition_columns(models[name]):
                found: set[tuple[str, str]] = set()
                for column in columns:
                    select = column.find_ancestor(exp.Select)
                    for same in [column, *(_equated(select, column) if select is not None else [])]:
                        found |= (to_raw(column_sources(select, same, columns_of=columns_of), 0)
                                  if select is not None else None) or set()
                # each table's rows must be numbered within its own entity: tweets joined to the
                # orders of their customer and numbered by the orders' key shift by a late tweet
                missing = sorted(t for t, pairs in accepted.items() if not pairs & found)
                if missing:
                    written = ", ".join(c.sql() for c in columns) or "an expression"
                    reasons.append(f"PARTITION BY {written} is not the entity of " + ", ".join(missing))
            return "; ".join(reasons) or None

        upstream: dict[str, set[str]] = {}
        via: dict[str, set[str]] = {}
        later: dict[str, int] = {}
        following: dict[str, int] = {}
        ranked: dict[str, set[str]] = {}
        by_value: dict[str, set[str]] = {}
        for fqn in ctx.dag.sorted:
            name = schema_table(fqn).lower()
            if name not in models:
                continue
            up: set[str] = set()
            through: set[str] = set()
            later[name] = own = numbers_rows(models[name])
            following[name] = next_days_tagged(models[name])
            sources, valued = ranked_sources(models[name])
            numbered = {t for source in sources for t in (upstream.get(source, set()) if source in models else {source})}
            decided = {t for source in valued for t in (upstream.get(source, set()) if source in models else {source})}
            own_numbered = set(numbered)
            for parent in query_parents(models[name]):
                if parent in models:
                    up |= upstream.get(parent, set())
                    through |= via.get(parent, set())
                    numbered |= ranked.get(parent, set())
                    decided |= by_value.get(parent, set())
                    later[name] = max(later[name], later.get(parent, OWN_DAYS))
                    following[name] = max(following[name], following.get(parent, 0))
                    if not is_time[parent] and not rows_through(parent):
                        through |= upstream.get(parent, set())
                else:
                    up.add(parent)
            if is_time[name] and OWN_DAYS < own < ALL_LATER and LATER_DAYS_TAG not in (models[name].tags or []):
                # the raw tables whose changed rows shift the numbered or summed rows: those its
                # ranking windows number, or for a running value any it reads by day
                shifting = own_numbered if own == NUMBERS else up - through
                try:
                    # nothing to shift when every table reaches it through a model rebuilt whole
                    other = other_entity(name, shifting) if shifting or not up <= through else None
                except Exception as exc:  # noqa: BLE001 - any SQL this reading misses: the cautious answer
                    other = f"its windows could not be read ({type(exc).__name__}: {exc})"
                if other:
                    # a product's n-th sale: a change shifts that product's later rows, which
                    # belong to any customer, so every later day (decision 0053)
                    later[name] = max(later[name], ALL_LATER)
                    log.info(f"{name}: {other}; a change restates every later day from the first day it touches. "
                             "If each partition is the sequence_key entity under a name that cannot be followed, tag "
                             "the model 'restate:later_days' (the tag vouches for every window of the model); if a "
                             "raw table has no sequence_key, declare it (docs/how-to/add-a-source.md, step 6)",
                             extra={"fields": {"model": name}})
            upstream[name], via[name], ranked[name], by_value[name] = up, through, numbered, decided
        off_time: dict[str, set[str]] = {}
        for name in models:
            if not is_time[name] or not OWN_DAYS < later[name] < ALL_LATER:
                continue
            column = getattr(getattr(models[name], "time_column", None), "column", None)
            try:
                pairs = to_raw({(name, column.name.lower())}, 0, same_time=True) if column is not None else None
            except Exception:  # noqa: BLE001 - SQL this reading misses: as before, the entity's days
                pairs = None
            if not pairs:
                continue
            times = {table for table, _ in pairs}
            spec_of = declared()
            off = set()
            for table in upstream.get(name, set()) - via.get(name, set()):
                spec = spec_of.get(table)
                if spec is None:
                    continue
                # the table whose days windows.py follows for the entity: its own, or its parent's
                parent = spec.parent[0] if spec.parent else None
                owner = table if spec.sequence_key else parent if parent and getattr(spec_of.get(parent), "sequence_key",
                                                                                     None) else None
                if owner and owner not in times:
                    off.add(table)
            if off:
                off_time[name] = off
                log.info(f"{name}: its time column comes from {', '.join(sorted(times))}, not from "
                         f"{', '.join(sorted(off))}, whose entity's later days are days of that table: a change "
                         f"there restates every later day from the first day it touches (a change of "
                         f"{', '.join(sorted(times))}: the entity's later days, as the model's level says)",
                         extra={"fields": {"model": name}})
        # A model rebuilt whole (not partitioned by time) is also rebuilt when the raw input of an
        # audit-only parent (its depends_on) changes: marts.customers' whole-history store audit
        # must run when a store is deleted (decision 0022). Only for the model itself: its
        # children inherit the query lineage above, so a time-partitioned model is never restated
        # whole for a table it only audits against.
        triggers = {name: set(up) for name, up in upstream.items()}
        for fqn in ctx.dag.sorted:
            name = schema_table(fqn).lower()
            if name not in models or is_time[name]:
                continue
            audited = {schema_table(d).lower() for d in models[name].depends_on} - query_parents(models[name])
            for parent in audited:
                triggers[name] |= upstream.get(parent, set()) if parent in models else {parent}
        from sqlmesh.utils.date import to_date

        first: dict[str, date] = {}
        read_by_time = {t for name in models if is_time[name] for t in upstream.get(name, set()) - via.get(name, set())}
        for name, model in models.items():
            # a relative start ('1 year ago') leaves older rows out on purpose, and moves daily
            relative = isinstance(model.start, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", model.start.strip())
            if is_time[name] and model.start is not None and not relative:
                start = to_date(model.start)
                # only tables the model reads through time models: a FULL model in between keeps every row
                for raw_table in upstream.get(name, set()) - via.get(name, set()):
                    first[raw_table] = min(first.get(raw_table, start), start)
        try:
            from sqlmesh.core.dialect import JinjaQuery
        except ImportError:  # pragma: no cover - SQLMesh 0.236 has it
            JinjaQuery = None  # noqa: N806
        # the names of times: the declared event times and every time model's time column, so a
        # comparison of an order's time with a tweet's is read as one of two rows' times
        time_names = {spec.event_time.lower() for spec in declared().values() if spec is not None and spec.event_time}
        time_names |= {m.time_column.column.name.lower() for n, m in models.items()
                       if is_time[n] and getattr(getattr(m, "time_column", None), "column", None) is not None}
        for name, model in models.items():
            unit = coarser_time_column(model) if is_time[name] else None
            if unit:
                crons = {"hour": "@hourly", "day": "@daily", "month": "@monthly", "year": "@yearly"}
                fix = (f"declare the {unit} as its interval (cron '{crons[unit]}', or interval_unit '{unit}' with "
                       "allow_partials true)" if unit in crons else
                       f"SQLMesh has no {unit} interval: keep the model's rows by day and sum them by {unit} in a "
                       "VIEW over it")
                log.warning(f"{name}: its time column {model.time_column.column.name} is a DATE_TRUNC('{unit}') but its "
                            f"intervals are {model.interval_unit.value}s: each run writes its {model.interval_unit.value} "
                            f"as a separate slice of the {unit}'s row, which later runs never replace. To fix it, {fix}, "
                            "and restate it (docs/how-to/add-a-source.md, step 6)", extra={"fields": {"model": name}})
            made = time_from_other_rows(model) if is_time[name] and OWN_DAYS_TAG not in (model.tags or []) else None
            if made:
                log.info(f"{name}: its time column {model.time_column.column.name} may not be each row's own time "
                         f"({made}): a change on one day can change or move a row of another day (a cohort's first "
                         "day), so any change restates the whole model and the time models after it. If every row "
                         "sits on the day of the rows it reads (an order's items rolled up to the order), tag it "
                         "'restate:own_days'; otherwise a FULL model costs the same, and partitioned by each row's own "
                         "event time it is restated by day (docs/how-to/add-a-source.md, step 6)",
                         extra={"fields": {"model": name}})
            tags = getattr(model, "tags", None) or []
            if is_time[name] and later.get(name) == OWN_DAYS and not following.get(name) and OWN_DAYS_TAG not in tags:
                if JinjaQuery is not None and isinstance(getattr(model, "query", None), JinjaQuery):
                    log.warning(f"{name} is written in Jinja (JINJA_QUERY_BEGIN), whose SQL elt transform cannot "
                                "read: it restates the days its input rows touch, through the tables SQLMesh finds "
                                "it reads. If a day's rows depend on other days (a rank, a total so far, a trailing "
                                "week), tag it 'restate:later_days', 'restate:all_later_days' or "
                                "'restate:next_days:N'; 'restate:own_days' says they do not (docs/how-to/"
                                "add-a-source.md, step 6)", extra={"fields": {"model": name}})
                    continue
                try:
                    found = compares_times_of_two_rows(model, time_names)
                    before = None if found else reads_rows_before_the_window(model)
                except Exception as exc:  # noqa: BLE001 - reading SQL for a warning never stops a transform
                    log.info(f"{name}: its SQL could not be read for reads of other days ({type(exc).__name__}: "
                             f"{str(exc)[:200]})", extra={"fields": {"model": name}})
                    found = before = None
                if found:
                    log.warning(f"{name} compares rows of different times ({found}) and has no restate tag: if a "
                                "day's rows depend on other days, a change restates only its own days and the others "
                                "keep stale values. Tag it 'restate:later_days' (the sequence_key entity's earlier "
                                "rows) or 'restate:all_later_days', or 'restate:own_days' if it reads only its own "
                                "days (docs/how-to/add-a-source.md, step 6)", extra={"fields": {"model": name}})
                if before:
                    log.warning(f"{name} reads rows before its window ({before}) and has no restate tag: if a day's "
                                "rows depend on earlier days (a total so far, a trailing week), a change restates only "
                                "its own days and the later ones keep stale values. Tag it 'restate:later_days' (the "
                                "sequence_key entity's later days), 'restate:all_later_days', 'restate:next_days:N' (a "
                                "trailing N days), or 'restate:own_days' if each day's rows do not depend on the rows "
                                "read before the window (docs/how-to/add-a-source.md, step 6)",
                                extra={"fields": {"model": name}})
        return cls(is_time, triggers, via, later, first, following, ranked, by_value, read_by_time, off_time)


def expected_version(snapshot) -> str:  # type: ignore[no-untyped-def]
    """The table version of ``snapshot``: its own, or, for one the plan has not versioned yet, the
    one SQLMesh will give a new model (0.236, ``Snapshot.categorize_as``): a pinned
    ``physical_version``; for a new forward-only model (SCD type 2, INCREMENTAL_UNMANAGED,
    ``forward_only true``) a hash of its name and kind; else its fingerprint's. A probe found
    batches consumed under the fingerprint's version for a new forward-only model, a table that
    never exists, and the next transform restating all of its history. An edit the plan finds
    non-breaking for a model's children keeps their served version; that version is a target of
    its own (the environment's), so a guess here costs nothing."""
    if snapshot.version:
        return str(snapshot.version)
    model = snapshot.model if snapshot.is_model else None
    if model is not None:
        if not snapshot.virtual_environment_mode.is_full:
            return "novde"
        if model.physical_version:
            return str(model.physical_version)
        if model.forward_only and not snapshot.previous_versions:
            from sqlmesh.utils.hashing import hash_data

            return str(hash_data([snapshot.name, *model.kind.data_hash_values]))
    return str(snapshot.fingerprint.to_version())


@dataclass
class Restatement:
    """What one transform restated: model -> human description of its windows."""

    windows: dict[str, str] = field(default_factory=dict)
    orphans: list[Any] = field(default_factory=list)  # windows.Orphans
    intervals_removed: int = 0
    batches_consumed: int = 0
    # models whose kind disables restatement (SCD type 2, INCREMENTAL_UNMANAGED, disable_restatement
    # true): their batches are consumed without removing any of their intervals
    kept: list[tuple[str, str]] = field(default_factory=list)  # (model, scd2 | unmanaged | disabled)


def restate_pending(ctx, environment: str, lineage: Lineage | None = None,  # type: ignore[no-untyped-def]
                    local: dict[str, Any] | None = None, before_restating: Any = None) -> Restatement:
    """Turn raw batches that model versions have not consumed into missing intervals, then record
    them as consumed (orchestrator/transform/windows.py explains why this order loses nothing).

    ``local``: ``ctx.snapshots`` if the caller has it (each read of it asks SQLMesh's state).
    ``before_restating(ctx, scope)``: called once, before any interval is removed, with what is
    about to be restated: model -> its interval spans (epoch ms), None for all of it (a FULL
    model, or a time model restated whole). `elt backfill` records the marts' rows there."""
    from orchestrator.transform import windows as w
    from sources import failpoints

    adapter = ctx.engine_adapter
    first_use = not adapter.table_exists(w.CONSUMED)
    w.ensure_tables(adapter)
    w.ensure_raw_tombstone_column(adapter)
    lineage = lineage or Lineage.of(ctx)
    # every model version (physical table) the environment serves now or will serve after the plan
    # -> its snapshots, local and served: a metadata-only change makes a new snapshot of the same
    # table, which must not be mistaken for a new table
    targets: dict[tuple[str, str], list[Any]] = {}
    local = ctx.snapshots if local is None else local
    for snapshot in local.values():
        if snapshot.is_model and not snapshot.is_external:
            version = expected_version(snapshot)
            targets.setdefault((schema_table(snapshot.name).lower(), version), []).append(snapshot.snapshot_id)
    env = ctx.state_reader.get_environment(environment)
    for info in (env.snapshots if env else []):
        name = schema_table(info.name).lower()
        if name in lineage.is_time:
            targets.setdefault((name, info.version), []).append(info.snapshot_id)
    served: set[tuple[str, str]] = set()
    if environment != "prod":
        # another environment restates only its own tables: a version prod serves is prod's to
        # restate and to mark consumed. `elt transform --environment dev` took prod's batches for
        # them and removed prod's intervals, and `elt freshness` then saw nothing waiting for the
        # prod marts that lacked those rows (a dev-environment probe)
        prod = ctx.state_reader.get_environment("prod")
        served = {(schema_table(i.name).lower(), i.version) for i in (prod.snapshots if prod else [])}
        targets = {mv: ids for mv, ids in targets.items() if mv not in served}
    pending = w.pending_batches(adapter, {mv: lineage.upstream_raw.get(mv[0], set()) for mv in targets})
    pending = {mv: tables for mv, tables in pending.items() if tables}
    if environment != "prod" and pending and served:
        # and it applies a batch to a table it reads through a model prod serves (staging) once a
        # successful prod transform has: that shared table holds the batch's rows only then, and
        # consumed before, a dev mart kept the rows of before for good. A raw table its own models
        # read directly (dev changed staging too) waits for nothing; without prod nothing waits
        _, prod_through = transform_watermarks(adapter, "prod")
        later = set() if prod_through is None else {str(b) for (b,) in adapter.fetchall(
            f"SELECT batch_id FROM {w.LEDGER} WHERE loaded_at > "
            f"CAST({exp.Literal.string(str(prod_through)).sql(adapter.dialect)} AS TIMESTAMP)")}
        env_versions = {info.name: info.version for info in (env.snapshots if env else [])}

        def through_prod(mv: tuple[str, str]) -> set[str]:
            """The raw tables ``mv`` reads through a model whose version prod serves."""
            fqns = {sid.name for sid in targets.get(mv, [])}
            shared = {u for f in fqns if f in ctx.dag for u in ctx.dag.upstream(f)
                      if (schema_table(u).lower(), env_versions.get(u, "")) in served}
            return set().union(*(lineage.upstream_raw.get(schema_table(u).lower(), set()) for u in shared))

        def applied(batches: set[str]) -> set[str]:
            return set() if prod_through is None else batches - later

        pending = {mv: {t: (applied(b) if t in via else b) for t, b in tables.items()}
                   for mv, tables in pending.items() for via in [through_prod(mv)]}
        pending = {mv: {t: b for t, b in tables.items() if b} for mv, tables in pending.items()}
        pending = {mv: tables for mv, tables in pending.items() if tables}
    held_before = w.held_batches(adapter)
    if not pending:
        if not held_before:
            return Restatement()
        # nothing new: the batches that held rows out of staging are checked again, and fail again
        # (or are released) without restating anything
        result = Restatement()
        held = _check_held_out(adapter, w.window_specs(), held_before, result, lineage.first_day,
                               lineage.read_by_time)
        w.set_held(adapter, held, held_before)
        return result
    wanted = {sid for mv in pending for sid in targets[mv]}
    # ctx.snapshots holds the stored snapshot (with its intervals) of every local model state
    # knows, and only those have a version; the served snapshots of other versions are read
    stored = {s.snapshot_id: s for s in local.values() if s.version and s.snapshot_id in wanted}
    if wanted - set(stored):
        stored.update(ctx.state_reader.get_snapshots(sorted(wanted - set(stored), key=str)))
    # the table's snapshot in state (any of them: intervals are shared by version), if it was built
    in_state = {mv: next((stored[sid] for sid in targets[mv] if sid in stored), None) for mv in pending}
    if first_use:
        # upgrading from the watermark design: what the environment's last success saw is consumed
        _, watermark = transform_watermarks(adapter, environment)
        if watermark is not None:
            seen = w.batches_loaded_before(adapter, watermark, inclusive=True)
            w.mark_consumed(adapter, {mv: {t: b & seen for t, b in tables.items()}
                                      for mv, tables in pending.items() if in_state[mv] is not None})
            pending = {mv: {t: b - seen for t, b in tables.items() if b - seen} if in_state[mv] is not None
                       else tables for mv, tables in pending.items()}
            pending = {mv: tables for mv, tables in pending.items() if tables}
    # recorded as consumed with the pending batches, after their held rows are recorded
    pending, read_by_build, unchecked = _built_outside_elt(adapter, pending, targets, stored, in_state, ctx.dag)
    specs = w.window_specs()
    cache: dict[tuple[str, frozenset[str]], w.Windows] = {}
    # The last day each model version can have built: SQLMesh's run ends now, and builds a day once
    # it has ended (today's part only with allow_partials), so no interval after today exists; a
    # version whose record reaches further (written by a machine whose clock was ahead) up to its
    # last recorded day. Later days are not restated: there is nothing to remove, and SQLMesh
    # reads their rows when it builds them. They are left out in the windows' query already (the
    # latest of these days), so a 9999-12-31 placeholder never reaches Python's date arithmetic.
    today = sqlmesh_today()
    last_built = {mv: max(today, utc_day(s.intervals[-1][1]) - timedelta(days=1)) if s is not None and s.intervals
                  else today for mv, s in in_state.items()}
    latest = max(last_built.values(), default=today)

    def level_of(name: str, raw_table: str) -> int:
        """How ``name``'s days depend on other days for changes of ``raw_table``. A model that ranks
        rows restates the later days of the entity for any changed row, as a value aggregate does,
        of a table whose values let rows in or out of the numbering (a filter on an amount), and of
        a child table it numbers (items placed by their order, ``event_time_from``: the child's
        query has no 'appeared, went or moved' test of its own)."""
        level = lineage.later_days.get(name, VALUES)
        if level != NUMBERS:
            return level
        spec = specs.get(raw_table)
        if raw_table in lineage.ranked_by_value.get(name, set()) or (
                spec is not None and spec.parent and raw_table in lineage.ranked_raw.get(name, set())):
            return VALUES
        return level

    # the raw tables whose changed values (not only rows that appeared, went or moved) shift later
    # days for some model: only their window query looks for them
    values_of = {t for (name, _), tables in pending.items() if lineage.is_time.get(name)
                 for t in tables if VALUES <= level_of(name, t) < ALL_LATER}

    def days(raw_table: str, batches: set[str]) -> w.Windows:
        key = (raw_table, frozenset(batches))
        if key not in cache:
            cache[key] = w.raw_windows(adapter, raw_table, specs, batches, values=raw_table in values_of, last=latest)
        return cache[key]

    with_rows: dict[str, set[str]] = {}  # raw table -> its pending batches that added rows

    def filled(raw_table: str, batches: set[str]) -> set[str]:
        if raw_table not in with_rows:
            every = set().union(*(tables.get(raw_table, set()) for tables in pending.values()))
            with_rows[raw_table] = w.batches_with_rows(adapter, raw_table, every)
        return with_rows[raw_table] & batches

    row_counts: dict[str, int] = {}

    def rows(raw_table: str) -> int:
        if raw_table not in row_counts:
            row_counts[raw_table] = w.raw_rows(adapter, raw_table)
        return row_counts[raw_table]

    result = Restatement()
    every: dict[str, set[str]] = {t: set(b) for t, b in held_before.items()}
    for tables in [*pending.values(), *unchecked.values()]:
        for raw_table, batches in tables.items():
            every.setdefault(raw_table, set()).update(batches)
    held = _check_held_out(adapter, specs, every, result, lineage.first_day, lineage.read_by_time, today)
    removals: dict[tuple[int, int], list[Any]] = {}
    scope: dict[str, list[tuple[int, int]] | None] = {}
    for (name, version), tables in sorted(pending.items()):
        snapshot = in_state[(name, version)]
        if snapshot is None:  # not built yet: the plan builds it whole from raw as it is now
            continue
        windows = w.Windows()
        off_time = False  # a changed table whose entity's later days are not this model's days
        for raw_table, batches in tables.items():
            if not lineage.is_time.get(name) or raw_table in lineage.via_untimed.get(name, set()):
                windows.whole = windows.whole or bool(filled(raw_table, batches))
            else:
                found = days(raw_table, batches)
                windows.merge(found, later=level_of(name, raw_table))
                off_time = off_time or bool(found.days and raw_table in lineage.off_time.get(name, set()))
        windows.until(last_built[(name, version)])  # days not built yet (rows dated after today wait)
        if not windows or not snapshot.intervals:
            continue
        if snapshot.is_model and snapshot.model.disable_restatement:
            # SQLMesh refuses to restate it (`sqlmesh plan --restate-model` says so): an SCD type 2
            # table holds history its source no longer has, and removing its interval rebuilt it
            # from today's rows, erasing every earlier version (a probe of user-written models).
            # An SCD type 2 model's next interval records the changes; other such models never
            # get late rows of days they built (the log line below says which)
            kind = snapshot.model.kind
            result.kept.append((name, "scd2" if kind.is_scd_type_2 else "unmanaged" if kind.is_incremental_unmanaged
                                else "disabled"))
            continue
        if lineage.is_time.get(name) and not windows.whole:
            level = lineage.later_days.get(name, VALUES)
            last_day = datetime.fromtimestamp(snapshot.intervals[-1][1] / 1000, UTC).date()  # exclusive
            if level >= ALL_DAYS:
                windows.whole = True  # it reads later rows: a change shifts the days before it too
            elif level >= ALL_LATER or off_time:
                windows.through(last_day)  # every day from the first touched one
            elif lineage.next_days.get(name):
                windows.following(lineage.next_days[name], last_day)
        most, widened = None, ""
        if not lineage.is_time.get(name):
            spans = [snapshot.intervals[-1]]  # a full rebuild: one interval is enough to trigger it
        elif windows.whole:
            spans = [(snapshot.intervals[0][0], snapshot.intervals[-1][1])]
        else:
            # how many separate ranges are worth restating depends on how much raw a wide one rescans
            if len(w.join_ranges(windows.ranges(), max_ranges=1 << 30)) > w.MIN_RANGES:
                most = w.max_ranges_for(max((rows(t) for t in lineage.upstream_raw.get(name, set())), default=0))
            spans = [(to_ms(a), to_ms(b)) for a, b in windows.restated(most)]
            unit = snapshot.node.interval_unit
            if unit.is_month or unit.is_year:  # a month's or a year's rows: restate whole intervals of its unit
                spans = whole_intervals(spans, unit)
                widened = f", restated as whole {unit.value}s: " + ", ".join(
                    f"{utc_day(a)}..{utc_day(b - 1)}" for a, b in spans[:4]) + (
                    f" and {len(spans) - 4} more ranges" if len(spans) > 4 else "")
        for span in spans:
            removals.setdefault(tuple(span), []).append(snapshot)
        whole = not lineage.is_time.get(name) or windows.whole
        scope[name] = None if whole or scope.get(name, []) is None else [*scope.get(name, []), *spans]  # type: ignore[list-item]
        result.windows[name] = windows.describe(most) + widened if lineage.is_time.get(name) else "rebuilt"
    if before_restating is not None and scope:
        before_restating(ctx, scope)
    failpoints.hit("transform.after_windows")
    for i, (span, snapshots) in enumerate(sorted(removals.items())):
        _state_beneath_cache(ctx).remove_intervals([(s, span) for s in snapshots], remove_shared_versions=True)
        result.intervals_removed += len(snapshots)
        if i == 0 and len(removals) > 1:
            failpoints.hit("transform.mid_invalidate")
    if removals:
        _refuse_ignored_removals(ctx, removals)
    if adapter.dialect == "spark":
        # Spark overwrites only the partitions a restated day writes: a day left with no rows
        # (its orders deleted or moved) would keep its old rows. Drop the restated days first.
        spans_of: dict[Any, tuple[Any, list[tuple[int, int]]]] = {}
        for span, snapshots in sorted(removals.items()):
            for snapshot in snapshots:
                spans_of.setdefault(snapshot.snapshot_id, (snapshot, []))[1].append(span)
        for snapshot, spans in spans_of.values():
            drop_day_partitions(adapter, snapshot, spans)
    failpoints.hit("transform.after_invalidate")
    # recorded before the batches are consumed: a kill in between leaves them pending, checked again
    w.set_held(adapter, held, held_before)
    consumed = {mv: {t: set(b) for t, b in tables.items()} for mv, tables in pending.items()}
    for mv, tables in read_by_build.items():
        for t, b in tables.items():
            consumed.setdefault(mv, {}).setdefault(t, set()).update(b)
    result.batches_consumed = w.mark_consumed(adapter, consumed)
    failpoints.hit("transform.after_consumed")
    for name, text in sorted(result.windows.items()):
        log.info(f"restating {name}: {text}", extra={"fields": {"model": name, "windows": text}})
    for name, kind in sorted(set(result.kept)):
        if kind == "scd2":
            text = ("it is an SCD type 2 model, which SQLMesh never restates (that would erase its history); its "
                    "next scheduled interval records the changes")
        elif kind == "unmanaged":
            # a probe: the line said "days" and "remove disable_restatement" of a model that has neither
            text = ("it is INCREMENTAL_UNMANAGED, which SQLMesh never restates: its next scheduled run appends what "
                    "its query returns then, so changed or late rows reach it only if that query selects them. To "
                    f"rebuild it from today's data, `sqlmesh plan --restate-model {name}` (it is rebuilt whole)")
        else:
            text = ("it sets disable_restatement true: changed or late rows of days it has already built never reach "
                    "it, only rows of days it has yet to build. If they must, remove disable_restatement and restate "
                    f"it (`sqlmesh plan --restate-model {name}`)")
        log.info(f"not restating {name}: {text}", extra={"fields": {"model": name, "windows": "kept"}})
    return result


def _refuse_ignored_removals(ctx: Any, removals: dict[tuple[int, int], list[Any]]) -> None:
    """Fail, before any batch is consumed, when SQLMesh's state still holds an interval just removed.

    SQLMesh merges a model version's interval records in the order of their ``created_ts``, the
    clock of the machine that wrote each one (0.236: ``state_sync/db/interval.py``). A removal
    stamped before the record it removes (this machine's clock went back, or machines whose clocks
    differ share the state) is ignored: the run found nothing to do, the batches were marked
    consumed, and the change never reached the marts while every command succeeded (an on-call
    probe). Read back, the removed days must be missing; the batches then stay pending."""
    sync = _state_beneath_cache(ctx)
    snapshots = {s.snapshot_id: s for group in removals.values() for s in group}
    fresh = {s.snapshot_id: s for s in sync.refresh_snapshot_intervals(list(snapshots.values()))}
    for (start, end), group in sorted(removals.items()):
        for snapshot in group:
            intervals = fresh.get(snapshot.snapshot_id, snapshot).intervals
            if any(a < end and b > start for a, b in intervals):
                from orchestrator.transform.run import TransformFailed

                from sqlmesh.core.state_sync.db import interval as sqlmesh_intervals

                # the clock SQLMesh stamps interval records with (its removal just now was stamped so)
                now = datetime.fromtimestamp(sqlmesh_intervals.now_timestamp() / 1000, UTC)
                recorded = _recorded_at(sync, snapshot, start, end)
                days = f"{schema_table(snapshot.name)} as built for {utc_day(start)}..{utc_day(end - 1)}"
                if recorded is None or recorded > now:
                    at = f" ({recorded:%Y-%m-%d %H:%M:%S} UTC)" if recorded else ""
                    why = (f"SQLMesh's state still records {days} after elt removed those days to restate them: its "
                           f"interval records carry a later time{at} than this machine's clock ({now:%Y-%m-%d %H:%M:%S} "
                           "UTC), and SQLMesh ignores a removal stamped earlier. Nothing was marked consumed: every "
                           "transform tries again, and succeeds once the clock has passed the recorded time. Check the "
                           "clock (NTP) of every machine that runs transforms on this state (docs/runbook.md#a-job-failed).")
                else:
                    why = (f"SQLMesh's state records {days} again, written at {recorded:%Y-%m-%d %H:%M:%S} UTC, after "
                           "elt removed those days: another transform (another environment sharing this model version) "
                           "ran at the same time. Nothing was marked consumed: rerun, and the days are restated.")
                raise TransformFailed("restate", [], why)


def _recorded_at(sync: Any, snapshot: Any, start: int, end: int) -> datetime | None:
    """When the newest interval record of ``snapshot``'s version overlapping ``start``..``end`` was
    written (SQLMesh's ``created_ts``, the writer's clock), or None if it cannot be read."""
    try:
        state = sync.interval_state
        where = exp.and_(exp.column("name").eq(snapshot.name), exp.column("version").eq(snapshot.version),
                         exp.column("start_ts") < end, exp.column("end_ts") > start,
                         exp.not_(exp.column("is_removed")))
        rows = state.engine_adapter.fetchall(
            exp.select(exp.func("max", exp.column("created_ts"))).from_(state.intervals_table).where(where))
        return datetime.fromtimestamp(rows[0][0] / 1000, UTC) if rows and rows[0][0] is not None else None
    except Exception:  # noqa: BLE001 - a courtesy for the message; the failure itself stands
        return None


def outside_plan_margin_s() -> int:
    """``ELT_OUTSIDE_PLAN_MARGIN`` (default 24h): how long before a version's snapshot was created
    a batch must have been loaded for ``_built_outside_elt`` to take it as read by the version's
    build. It covers a load still committing when the plan read raw, and clocks apart."""
    import os

    from sources.config import parse_duration

    return parse_duration(os.environ.get("ELT_OUTSIDE_PLAN_MARGIN", "24h"))


def _built_outside_elt(adapter: Any, pending: dict[tuple[str, str], dict[str, set[str]]],
                       targets: dict[tuple[str, str], list[Any]], stored: dict[Any, Any],
                       in_state: dict[tuple[str, str], Any], dag: Any = None,
                       ) -> tuple[dict[tuple[str, str], dict[str, set[str]]],
                                                                       dict[tuple[str, str], dict[str, set[str]]],
                                                                       dict[tuple[str, str], dict[str, set[str]]]]:
    """``pending`` without the batches that a version built outside `elt transform` already read;
    those batches (the caller records them as consumed, not restated); and those of them that no
    version had consumed before, whose rows are still to be checked for held rows.

    `elt transform` records a version's batches as consumed before its plan builds the version, so
    a built version with no consumed batch at all was built by something else: a bare `sqlmesh
    plan` (the review workflow) or `sqlmesh run`. Every batch of its raw tables then looks pending,
    and restating them all would rebuild its whole history a second time (at 6 years, the cost of
    a full build after every such deploy). Its table read raw after its snapshot was created, so
    batches loaded more than ``outside_plan_margin_s`` before that are in it: they are recorded as
    consumed without restating. Later ones stay pending and restate their days.

    Only when that snapshot created the version: a metadata-only, forward-only or indirect
    non-breaking change makes a newer snapshot of an older table (its ``previous_versions`` name
    the same version), whose creation says nothing about when the table read raw. Those versions
    keep every batch pending, as before.

    And only what its inputs held: a version that reads other models (a mart over staging) read
    a batch only if every model it reads through had taken it in by then. A batch still pending
    for one of them (every model upstream of it in ``dag``, SQLMesh's), and not read by that
    model's own outside build, stays pending here too: a mart deployed by a bare plan while
    batches waited for a transform was built from staging without them, and kept them out for
    good (a probe)."""
    from orchestrator.transform import windows as w

    built = [mv for mv in pending if in_state.get(mv) is not None]
    if not built:
        return pending, {}, {}
    # every model upstream of each built version's model (by name), read only when one is built
    ancestors = {mv[0]: {schema_table(u).lower() for sid in targets[mv][:1] if dag is not None and sid.name in dag
                         for u in dag.upstream(sid.name)} for mv in built}
    # upstream first: a model's ancestors are a strict subset of each of its descendants'
    built.sort(key=lambda mv: len(ancestors[mv[0]]))
    recorded = w.consumed_versions(adapter, built)
    margin = timedelta(seconds=outside_plan_margin_s())
    taken: dict[tuple[str, str], dict[str, set[str]]] = {}
    ledger: dict[datetime, set[str]] = {}
    for mv in built:
        if mv in recorded:
            continue
        snapshots = [stored[sid] for sid in targets[mv] if sid in stored]
        if not snapshots or any(p.version == mv[1] for s in snapshots for p in s.previous_versions):
            continue
        created = datetime.fromtimestamp(min(s.created_ts for s in snapshots) / 1000, UTC).replace(tzinfo=None)
        before = created - margin
        if before not in ledger:
            ledger[before] = w.batches_loaded_before(adapter, before)
        unread: dict[str, set[str]] = {}  # batches a model it reads through has not taken in
        for up, tables in pending.items():
            if up[0] in ancestors[mv[0]]:
                for t, b in tables.items():
                    unread.setdefault(t, set()).update(b - taken.get(up, {}).get(t, set()))
        read = {t: (b & ledger[before]) - unread.get(t, set()) for t, b in pending[mv].items()}
        read = {t: b for t, b in read.items() if b}
        if read:
            taken[mv] = read
            log.info(f"{mv[0]}: its version {mv[1]} was built outside `elt transform` (snapshot created "
                     f"{created:%Y-%m-%d %H:%M} UTC); {sum(len(b) for b in read.values())} batch(es) loaded before "
                     f"{before:%Y-%m-%d %H:%M} are in its table and are not restated",
                     extra={"fields": {"model": mv[0], "version": mv[1], "batches": sum(len(b) for b in read.values())}})
    if not taken:
        return pending, {}, {}
    # to check for held rows: the batches no version had consumed. The others were checked when a
    # version first consumed them (those holding rows are in windows.HELD, checked every time);
    # checking them again would scan all history after each outside deploy
    fresh = {str(b) for (b,) in adapter.fetchall(
        f"SELECT l.batch_id FROM {w.LEDGER} AS l WHERE NOT EXISTS "
        f"(SELECT 1 FROM {w.CONSUMED} AS c WHERE c.batch_id = l.batch_id)")}
    unchecked = {mv: {t: b & fresh for t, b in tables.items() if b & fresh} for mv, tables in taken.items()}
    left = {mv: {t: b - taken.get(mv, {}).get(t, set()) for t, b in tables.items()} for mv, tables in pending.items()}
    return ({mv: {t: b for t, b in tables.items() if b} for mv, tables in left.items() if any(left[mv].values())},
            taken, {mv: tables for mv, tables in unchecked.items() if tables})


def _check_held_out(adapter: Any, specs: dict[str, Any], batches_of: dict[str, set[str]],  # type: ignore[no-untyped-def]
                    result: Restatement, first_days: dict[str, date] | None = None,
                    read_by_time: set[str] | None = None, today: date | None = None) -> dict[str, set[str]]:
    """Rows of ``batches_of`` (raw table -> batches: the pending ones and those held before) that
    staging holds out: orphans, rows whose parent was deleted, keys without their event time, and
    (warned) keys dated before the models' start or after ``today`` in the tables that time models
    read (``read_by_time``): the latter wait for their day. Adds
    them to ``result.orphans`` and returns raw table -> the batches holding them, which the next
    transform checks again (windows.HELD) while the batches themselves are consumed: their days were
    restated when they were new, and the correction that releases them comes as a batch of its own,
    which restates its days. (Kept pending instead, a held first load restated all history on every
    transform, for as long as the rows stayed.)"""
    from orchestrator.transform import windows as w

    held: dict[str, set[str]] = {}

    def hold(found: Any, raw_table: str, message: str, fields: dict[str, Any]) -> None:
        result.orphans.append(found)
        held.setdefault(raw_table, set()).update(found.batches)
        log.warning(message, extra={"fields": {**fields, "example": str(found.example)}})

    again = "held out of staging, checked again by every transform"
    for raw_table in sorted(batches_of):
        batches = batches_of[raw_table]
        parent = specs[raw_table].parent if raw_table in specs else None
        # the parent table's batches that deleted_parents checks below: their rows are reported there
        found = w.orphans(adapter, raw_table, specs, batches, batches_of.get(parent[0], set()) if parent else None)
        if found:
            hold(found, raw_table, f"{found.count} row(s) of {raw_table} reference a missing {found.parent_table} "
                 f"row; {again}", {"raw_table": raw_table, "orphans": found.count})
        empty = w.timeless(adapter, raw_table, specs, batches)
        if empty:
            hold(empty, raw_table, f"{empty.count} key(s) of {raw_table} have no {empty.event_time} in their latest "
                 f"version; {again}", {"raw_table": raw_table, "rows": empty.count})
        first_day = (first_days or {}).get(raw_table)
        early = w.timeless(adapter, raw_table, specs, batches, first_day) if first_day else None
        if early:
            hold(early, raw_table, f"{early.count} key(s) of {raw_table} are dated before {first_day}, the first day "
                 f"the models build; {again}", {"raw_table": raw_table, "rows": early.count})
        if raw_table in (read_by_time or set()):
            # after today: SQLMesh builds their day once it has ended and reads them then; until then
            # they are in no mart, and every transform names them (a typo, or a 9999-12-31 placeholder)
            today = today or sqlmesh_today()
            late = w.timeless(adapter, raw_table, specs, batches, after=today)
            if late:
                hold(late, raw_table, f"{late.count} key(s) of {raw_table} are dated after {today} (today in UTC): "
                     f"they reach the marts on their day; checked again by every transform",
                     {"raw_table": raw_table, "rows": late.count})
    for raw_table in sorted(batches_of):
        # a parent deleted while rows still name it: as a clean build of the same data would fail
        for found in w.deleted_parents(adapter, raw_table, specs, batches_of[raw_table]):
            hold(found, raw_table, f"{found.count} row(s) of {found.raw_table} name a {raw_table} row that its source "
                 "deleted; the deleting batches are checked again by every transform",
                 {"raw_table": found.raw_table, "orphans": found.count})
    since: dict[tuple[str, str], datetime] | None = None
    now = datetime.now(UTC).replace(tzinfo=None)  # sessions are in UTC (decision 0033), so is held_at
    for found in result.orphans:  # the table whose rows are held out decides: fail (default) or warn
        spec = specs.get(found.raw_table)
        found.warn = bool(spec and spec.warn_held)
        if found.before is not None or found.after is not None:
            # rows dated before the models' start warn, and keep warning: a start set to leave older
            # history out is as likely as a wrong date, and must not fail every transform (0051); rows
            # dated after today warn until their day comes, when SQLMesh builds it with them
            found.warn = True
            continue
        if found.warn and spec is not None and spec.fail_after_s:
            # warned until held longer than held_rows_fail_after: from the first transform that held
            # their batch (a batch held only now has waited nothing)
            since = w.held_since(adapter) if since is None else since
            table = found.parent_table if found.parent_deleted else found.raw_table
            first = min((since.get((table, b), now) for b in found.batches), default=now)
            if now - first > timedelta(seconds=spec.fail_after_s):
                found.warn = False
                found.overdue = (f"{found.raw_table} declares held_rows: warn, but its rows have been held since "
                                 f"{first:%Y-%m-%d %H:%M} UTC, longer than held_rows_fail_after "
                                 f"({format_duration(spec.fail_after_s)}) allows")
    return held


def _state_beneath_cache(ctx):  # type: ignore[no-untyped-def]
    """The state sync under SQLMesh's in-memory snapshot cache, to remove intervals through.

    Removing through the cache drops the snapshots from it, and the run then reads each one from
    state again (about 20 ms a model, most of the SQLMesh cost of a new day after the models
    themselves). The cached snapshots can keep their old intervals: the run's scheduler and the
    plan read every snapshot's intervals from state before using them
    (``refresh_snapshot_intervals`` in ``Scheduler._run_or_audit`` and ``Context._plan``, SQLMesh
    0.236), and the transform reads no intervals of its own after this point. The daily replay
    tests check, from SQLMesh's record of evaluated intervals, that every removed window runs.
    """
    from sqlmesh.core.state_sync.cache import CachingStateSync

    sync = ctx.state_sync
    return sync.state_sync if isinstance(sync, CachingStateSync) else sync


def drop_day_partitions(adapter, snapshot, spans: list[tuple[int, int]]) -> int:  # type: ignore[no-untyped-def]
    """Drop the partitions of ``snapshot``'s table whose time value falls in one of ``spans`` (ms,
    end exclusive), listing the table's partitions once. Spark tables only: a time-partitioned
    model is partitioned by its time column."""
    from urllib.parse import unquote

    model = snapshot.model
    if not model.time_column:
        return 0
    column = model.time_column.column.name
    table = snapshot.table_name()
    if not adapter.table_exists(table):
        return 0
    ranges = [tuple(datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None) for ms in span) for span in spans]
    dropped = 0
    for (spec,) in adapter.fetchall(f"SHOW PARTITIONS {table}"):
        values = dict(part.split("=", 1) for part in spec.split("/"))
        raw = unquote(values.get(column, ""))
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            continue
        if any(start <= value < end for start, end in ranges):
            literal = exp.Literal.string(raw).sql("spark")
            ident = exp.to_identifier(column, quoted=True).sql("spark")
            adapter.execute(f"ALTER TABLE {table} DROP IF EXISTS PARTITION ({ident} = {literal})")
            dropped += 1
    return dropped


def whole_intervals(spans: list[tuple[int, int]], unit: Any) -> list[tuple[int, int]]:
    """Day spans widened to the whole intervals of a coarser unit, overlaps merged.

    A model of monthly rows (``cron '@monthly'``, or ``interval_unit 'month'`` with
    ``allow_partials``) writes a touched day's change into its month's row. Removing the day alone
    from SQLMesh's record left the month recorded for ``allow_partials`` (every transform then
    failed on the read-back) and would rebuild a day's slice into a month's row: the whole month
    is restated instead (a probe of monthly models). Days after the last one SQLMesh can have built
    are dropped before (``Windows.until``): croniter has no month after December 9999.

    >>> from sqlmesh.core.node import IntervalUnit
    >>> sept_2, sept_3, oct_5, oct_6 = 1535846400000, 1535932800000, 1538697600000, 1538784000000
    >>> [(utc_day(a), utc_day(b)) for a, b in whole_intervals([(sept_2, sept_3), (oct_5, oct_6)], IntervalUnit.MONTH)]
    [(datetime.date(2018, 9, 1), datetime.date(2018, 11, 1))]
    """
    from sqlmesh.utils.date import to_timestamp

    widened = []
    for start, end in spans:
        floor = to_timestamp(unit.cron_floor(end))
        widened.append((to_timestamp(unit.cron_floor(start)), end if floor == end else to_timestamp(unit.cron_next(floor))))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(widened):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def sqlmesh_today() -> date:
    """Today in UTC by SQLMesh's clock: its run ends now (``sqlmesh.utils.date.now``), and no
    interval after today's can be built. Days after it are not restated (restate_pending)."""
    from sqlmesh.utils.date import now

    return now().date()


def to_ms(day) -> int:  # type: ignore[no-untyped-def]
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def utc_day(ms: int):  # type: ignore[no-untyped-def]
    """The UTC day of an interval boundary in epoch milliseconds (SQLMesh's unit); ``to_ms`` reversed.

    >>> utc_day(1_546_300_800_000)
    datetime.date(2019, 1, 1)
    """
    return datetime.fromtimestamp(ms / 1000, UTC).date()
