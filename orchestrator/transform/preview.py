"""``elt preview ENV``: build local model changes in a dev environment and diff them against prod.

This is ``sqlmesh plan ENV`` followed by ``sqlmesh table_diff prod:ENV`` for every model whose
version differs between the two environments (the changed models and everything downstream),
joined on each model's declared ``grain``. Prod's views and tables are not touched: the dev
environment gets its own views (``marts__dev.*``) over new physical tables for changed models
and prod's physical tables for the rest.

Values are compared the way SQLMesh's table diff compares them, with numbers rounded to
``DECIMALS`` places (SQLMesh's default of 3 would call 0.0625 and 0.063 equal). SQLMesh leaves a
column whose type changed out of its value comparison; this module compares it too: as numbers
(rounded the same way) when both types are numeric, as timestamps when both are dates or
timestamps without a time zone, otherwise as text; the report says which, and shows the type
change even when every value is equal. SQLMesh's ``Executing SQL`` log lines are shown only with
``--verbose``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

from sqlglot import exp

from orchestrator.settings import Settings
from orchestrator.transform.restate import utc_day
from orchestrator.transform.run import TransformFailed, _describe, make_context, schema_table
from sources.errors import ConfigError

DECIMALS = 9  # numbers are equal when equal to this many decimal places


@dataclass
class TypeChange:
    prod_type: str
    dev_type: str
    compared_as: str  # how values of the two types were compared
    pct_equal: float | None = None  # of matched rows; None when no row matched

    def render(self, column: str, environment: str) -> str:
        equal = "" if self.pct_equal is None else f": {self.pct_equal:.1f}% equal"
        return f"{column} {self.prod_type} in prod -> {self.dev_type} in {environment} (values {self.compared_as}{equal})"


@dataclass
class ModelDiff:
    model: str
    grain: list[str]
    prod_rows: int = 0
    dev_rows: int = 0
    matched: int = 0
    changed: int = 0  # matched on the grain, some column differs
    only_prod: int = 0
    only_dev: int = 0
    columns_changed: dict[str, float] = field(default_factory=dict)  # column -> % of matched rows equal
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    columns_retyped: dict[str, TypeChange] = field(default_factory=dict)
    note: str = ""
    same_by_design: bool = False  # reads prod's table unchanged (downstream of a non-breaking change)
    not_compared: bool = False  # built from a windowed preview's partial inputs: its rows say nothing
    window: str = ""  # "(rows with <time column> >= <day>, ...)": only these rows were compared (a windowed preview)

    @property
    def differs(self) -> bool:
        """Whether its rows or columns differ from prod's (a model rebuilt only because it is downstream
        of a change often does not)."""
        if self.same_by_design or self.not_compared:
            return False
        return bool(self.note or self.changed or self.only_prod or self.only_dev or self.columns_added
                    or self.columns_removed or self.columns_retyped or self.prod_rows != self.dev_rows)

    def render(self, environment: str) -> str:
        if self.note:
            return f"{self.model}: {self.note}"
        window = f" {self.window}" if self.window else ""
        head = (f"{self.model}{window}: prod {self.prod_rows:,} rows, {environment} {self.dev_rows:,} rows; "
                f"on {', '.join(self.grain)}: {self.matched:,} matched ({self.changed:,} changed), "
                f"{self.only_prod:,} only in prod, {self.only_dev:,} only in {environment}")
        extra = []
        if self.columns_retyped:
            extra.append("type changed: " + ", ".join(
                t.render(c, environment) for c, t in self.columns_retyped.items()))
        if self.columns_changed:
            extra.append("changed columns: " + ", ".join(f"{c} ({p:.1f}% equal)" for c, p in self.columns_changed.items()))
        if self.columns_added:
            extra.append(f"added columns: {', '.join(self.columns_added)}")
        if self.columns_removed:
            extra.append(f"removed columns: {', '.join(self.columns_removed)}")
        return "\n    ".join([head, *extra])


def changed_models(ctx, environment: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Models whose snapshot differs between prod and ``environment``."""
    from sqlmesh.core.model.kind import ModelKindName

    prod = ctx.state_reader.get_environment("prod")
    env = ctx.state_reader.get_environment(environment)
    if prod is None:
        raise ConfigError("there is no prod environment to compare with", hint="build prod first: `elt transform`")
    if env is None:
        return []
    prod_ids = {s.name: s.snapshot_id for s in prod.snapshots}
    return sorted(
        s.name for s in env.snapshots
        if prod_ids.get(s.name) != s.snapshot_id and s.is_model and s.kind_name != ModelKindName.EXTERNAL
    )


def preview(settings: Settings, environment: str = "dev", *, quiet: bool = True,
            since: date | None = None) -> list[ModelDiff]:
    """Build the local model changes in ``environment`` and diff every rebuilt model against prod.

    With ``since``, changed models partitioned by day are built from that day on only (SQLMesh's
    plan ``start``), which costs the window instead of the history. Their rows are compared from
    that day on; a model that reads such a partial table is built from partial inputs, so its rows
    are reported as not compared rather than as differences.
    """
    from sqlmesh.utils.errors import NoChangesPlanError, PlanError

    if environment == "prod":
        raise ConfigError("preview builds a dev environment, not prod", hint="use `elt transform` to deploy to prod")
    ctx, console = make_context(settings, quiet=quiet)
    try:
        try:
            ctx.plan(environment, auto_apply=True, no_prompts=True,
                     **({"start": since.isoformat()} if since else {}))
        except NoChangesPlanError:
            pass
        except PlanError as exc:
            raise TransformFailed(f"plan {environment}", [_describe(ctx, e) for e in console.audit_errors], str(exc),
                                  console.skipped_models, console.model_errors) from exc
        prod = ctx.state_reader.get_environment("prod")
        env = ctx.state_reader.get_environment(environment)
        prod_tables = {s.name: s.version for s in prod.snapshots} if prod else {}
        shared = {s.name for s in (env.snapshots if env else []) if prod_tables.get(s.name) == s.version}
        names = changed_models(ctx, environment)
        partial = _partially_built(ctx, prod, env, [n for n in names if n not in shared])
        with _sql_echo(shown=not quiet):
            return [_diff(ctx, name, environment, same_table=name in shared, partial=partial) for name in names]
    finally:
        ctx.close()


def _partially_built(ctx, prod, env, rebuilt: list[str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The rebuilt models whose table in ``env`` starts later than prod's (a windowed preview), with
    the first millisecond it holds. Read from SQLMesh's intervals, so a table a full preview built
    earlier counts as whole."""
    if env is None or prod is None or not rebuilt:
        return {}
    dev_ids = {s.name: s.snapshot_id for s in env.snapshots if s.name in rebuilt}
    prod_ids = {s.name: s.snapshot_id for s in prod.snapshots if s.name in dev_ids}
    found = ctx.state_reader.get_snapshots([*dev_ids.values(), *prod_ids.values()])
    out: dict[str, int] = {}
    for name, sid in dev_ids.items():
        dev, old = found.get(sid), found.get(prod_ids.get(name))  # type: ignore[arg-type]
        if dev is None or old is None or not dev.intervals or not old.intervals:
            continue
        if dev.intervals[0][0] > old.intervals[0][0]:
            out[name] = dev.intervals[0][0]
    return out


class _NoSqlEcho(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Executing SQL")


@contextmanager
def _sql_echo(*, shown: bool) -> Iterator[None]:
    """Hide SQLMesh's ``Executing SQL: ...`` records unless ``shown`` (``elt preview --verbose``).

    SQLMesh's table diff logs every statement at its context logger's effective level (WARNING
    when nothing configured logging), so Python's last-resort handler printed them all to stderr.
    """
    loggers = [logging.getLogger(f"sqlmesh.core.engine_adapter.{m}") for m in ("base", "mixins")]
    echo = _NoSqlEcho()
    if not shown:
        for logger in loggers:
            logger.addFilter(echo)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(echo)


def _diff(ctx, name: str, environment: str, *, same_table: bool = False,  # type: ignore[no-untyped-def]
          partial: dict[str, int] | None = None) -> ModelDiff:
    model = ctx.get_model(name)
    grain = [g.sql(dialect=model.dialect) for g in model.grains] if model and model.grains else []
    result = ModelDiff(schema_table(name), grain)
    if same_table:  # an upstream change that is not breaking: SQLMesh reuses prod's table
        result.note = "downstream of a non-breaking change; reads prod's table, so its data is the same"
        result.same_by_design = True
        return result
    partial = partial or {}
    upstream = [a for a in ctx.dag.upstream(name) if a in partial]
    if upstream:
        # name the partial tables that are partial by the window itself, not by reading another one
        first = sorted(schema_table(a) for a in upstream if not any(b in partial for b in ctx.dag.upstream(a)))
        since = utc_day(min(partial[a] for a in upstream)).isoformat()
        result.note = (f"not compared: it reads {', '.join(first)} (directly or through other models), which this "
                       f"preview built from {since} on only, so its rows come from partial inputs; "
                       f"`elt preview {environment}` without --since compares it")
        result.not_compared = True
        return result
    if not grain:
        result.note = "no grain declared; compare by hand with `sqlmesh table_diff prod:" + environment + " " + name + " --on KEY`"
        return result
    where = None
    if name in partial and model.time_column is not None:
        column = model.time_column.column
        since = utc_day(partial[name]).isoformat()
        where = exp.GTE(this=exp.column(column.name),
                        expression=exp.cast(exp.Literal.string(since), exp.DataType.build("TIMESTAMP")))
        result.window = f"(rows with {column.name} >= {since}, the window built)"
    try:
        (diff,) = ctx.table_diff(source="prod", target=environment, select_models=[name], show=False,
                                 decimals=DECIMALS, where=where)
        schema = diff.schema_diff()
        rows = diff.row_diff()
        retyped = _retyped(diff, schema.modified)
    except Exception as exc:  # noqa: BLE001 - a diff that cannot be computed is reported, not fatal
        result.note = f"could not diff: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
        return result
    result.columns_added = [c for c, _ in schema.added]
    result.columns_removed = [c for c, _ in schema.removed]
    result.prod_rows, result.dev_rows = rows.source_count, rows.target_count
    result.matched, result.only_prod, result.only_dev = rows.join_count, rows.s_only_count, rows.t_only_count
    result.changed = rows.partial_match_count
    stats = rows.column_stats
    if stats is not None and len(stats) and "pct_match" in stats:
        result.columns_changed = {str(c): float(p) for c, p in stats["pct_match"].items() if p < 100}
    if retyped:
        result.changed, result.columns_retyped = retyped
    return result


# dates and timestamps without a time zone: compared as TIMESTAMP when one became the other
_DATETIMES = (exp.DataType.Type.DATE, exp.DataType.Type.DATETIME, exp.DataType.Type.TIMESTAMP,
              exp.DataType.Type.TIMESTAMPNTZ, exp.DataType.Type.TIMESTAMP_S, exp.DataType.Type.TIMESTAMP_MS,
              exp.DataType.Type.TIMESTAMP_NS)


def _compared_as(prod: exp.DataType, dev: exp.DataType) -> str:
    """How values of a column whose type changed from ``prod`` to ``dev`` are compared.

    >>> _compared_as(exp.DataType.build("DECIMAL(9,4)"), exp.DataType.build("DOUBLE"))
    'number'
    >>> _compared_as(exp.DataType.build("DATE"), exp.DataType.build("TIMESTAMP"))
    'timestamp'
    >>> _compared_as(exp.DataType.build("INT"), exp.DataType.build("TEXT"))
    'text'
    """
    if prod.is_type(*exp.DataType.NUMERIC_TYPES) and dev.is_type(*exp.DataType.NUMERIC_TYPES):
        return "number"
    if prod.is_type(*_DATETIMES) and dev.is_type(*_DATETIMES):
        return "timestamp"
    return "text"


def _retyped(diff, modified: dict[str, tuple[exp.DataType, exp.DataType]]) -> tuple[int, dict[str, TypeChange]] | None:  # type: ignore[no-untyped-def]
    """Compare the values of columns whose type changed, which SQLMesh's row diff leaves out.

    Returns the number of matched rows in which any common column differs (SQLMesh's count misses
    rows where only a retyped column changed) and each retyped column's change.
    """
    if not modified:
        return None
    adapter = diff.adapter
    _, _, keys = diff.key_columns
    labels = {"number": f"compared as numbers to {diff.decimals} decimal places",
              "timestamp": "compared as timestamps", "text": "compared as text"}

    def normalized(col: exp.Column, dtype: exp.DataType, rule: str | None) -> exp.Expression:
        # one type: as SQLMesh's row diff compares it; a changed type: by the rule for the pair
        if rule == "number" or (rule is None and dtype.is_type(*exp.DataType.REAL_TYPES)):
            return adapter._normalize_decimal_value(col, diff.decimals)
        if rule is not None:
            return exp.cast(col, exp.DataType.build("TIMESTAMP" if rule == "timestamp" else "TEXT"))
        return adapter._normalize_nested_value(col) if dtype.is_type(*exp.DataType.NESTED_TYPES) else col

    equal: dict[str, exp.Expression] = {}
    changes: dict[str, TypeChange] = {}
    for column, prod_type in diff.source_schema.items():
        dev_type = diff.target_schema.get(column)
        if dev_type is None or column in keys:
            continue
        rule = _compared_as(prod_type, dev_type) if column in modified else None
        equal[column] = exp.NullSafeEQ(this=normalized(exp.column(column, "s"), prod_type, rule),
                                       expression=normalized(exp.column(column, "t"), dev_type, rule))
        if rule:
            changes[column] = TypeChange(prod_type.sql(dialect=adapter.dialect), dev_type.sql(dialect=adapter.dialect),
                                         labels[rule])
    if not changes:  # only a grain column's type changed: SQLMesh's join already compared it
        return None
    retyped = list(changes)
    query = (
        exp.select(
            exp.func("COUNT", exp.Star()).as_("matched"),
            exp.func("SUM", exp.case().when(exp.and_(*equal.values()), 0).else_(1)).as_("changed"),
            *(exp.func("SUM", exp.case().when(equal[c], 1).else_(0)).as_(f"equal_{i}") for i, c in enumerate(retyped)),
        )
        .from_(diff.source_table.as_("s"))
        .join(diff.target_table.as_("t"), on=exp.and_(*(exp.column(k, "s").eq(exp.column(k, "t")) for k in keys)))
    )
    matched, changed, *equals = adapter.fetchone(query, quote_identifiers=True)
    for column, n in zip(retyped, equals):
        changes[column].pct_equal = 100.0 * int(n) / int(matched) if matched else None
    return int(changed or 0), changes
