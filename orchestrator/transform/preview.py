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
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from sqlglot import exp

from orchestrator.settings import Settings
from orchestrator.transform.restate import utc_day
from orchestrator.transform.run import TransformFailed, _describe, make_context, schema_table
from orchestrator.transform.windows import _lit
from sources.errors import ConfigError
from sources.logs import get_logger

log = get_logger("orchestrator.transform.preview")

DECIMALS = 9  # numbers are equal when equal to this many decimal places


@dataclass
class TypeChange:
    prod_type: str
    dev_type: str
    compared_as: str  # how values of the two types were compared
    pct_equal: float | None = None  # of matched rows; None when no row matched

    def render(self, column: str, environment: str) -> str:
        equal = "" if self.pct_equal is None else f": {_share_equal(self.pct_equal)} equal"
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
            extra.append("changed columns: " + ", ".join(
                f"{c} ({_differing(p, self.matched)})" for c, p in self.columns_changed.items()))
        if self.columns_added:
            extra.append(f"added columns: {', '.join(self.columns_added)}")
        if self.columns_removed:
            extra.append(f"removed columns: {', '.join(self.columns_removed)}")
        return "\n    ".join([head, *extra])


def _share_equal(pct: float) -> str:
    """A share of equal values that never reads 100% unless all are (18 of 61,445 rows differing
    read "100.0% equal"), nor 0% unless none is.

    >>> [_share_equal(p) for p in (100.0, 99.97, 50.0, 0.01, 0.0)]
    ['100%', '>99.9%', '50.0%', '<0.1%', '0%']
    """
    if pct >= 100 or pct <= 0:
        return f"{pct:.0f}%"
    return ">99.9%" if pct > 99.9 else "<0.1%" if pct < 0.1 else f"{pct:.1f}%"


def _differing(pct_equal: float, matched: int) -> str:
    """How many matched rows differ in a column, from SQLMesh's share of equal values.

    >>> _differing(99.97070550898, 61445), _differing(12.5, 0)
    ('18 of 61,445 matched rows differ', '12.5% equal')
    """
    if not matched:
        return f"{_share_equal(pct_equal)} equal"
    return f"{round(matched * (100 - pct_equal) / 100):,} of {matched:,} matched rows differ"


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
            since: date | None = None, notes: list[str] | None = None) -> list[ModelDiff]:
    """Build the local model changes in ``environment`` and diff every rebuilt model against prod.

    With ``since``, changed models partitioned by day are built from that day on only (SQLMesh's
    plan ``start``), which costs the window instead of the history. Their rows are compared from
    that day on; a model that reads such a partial table is built from partial inputs, so its rows
    are reported as not compared rather than as differences.

    A model of ``environment`` built by an earlier preview misses the batches loaded since (SQLMesh
    alone never reads them again): it is restated in ``environment`` first, and ``notes`` gets a
    line saying so.
    """
    from sqlmesh.utils.errors import NoChangesPlanError, PlanError

    if environment == "prod":
        raise ConfigError("preview builds a dev environment, not prod", hint="use `elt transform` to deploy to prod")
    ctx, console = make_context(settings, quiet=quiet)
    try:
        built_now: set[tuple[str, str]] = set()  # versions this preview's plan built
        try:
            plan = ctx.plan(environment, auto_apply=True, no_prompts=True,
                            **({"start": since.isoformat()} if since else {}))
            built_now = {(s.name, s.version) for s in plan.new_snapshots}
        except NoChangesPlanError:
            pass
        except PlanError as exc:
            raise TransformFailed(f"plan {environment}", [_describe(ctx, e) for e in console.audit_errors], str(exc),
                                  console.skipped_models, console.model_errors) from exc
        prod = ctx.state_reader.get_environment("prod")
        env = ctx.state_reader.get_environment(environment)
        prod_tables = {s.name: s.version for s in prod.snapshots} if prod else {}
        shared = {s.name for s in (env.snapshots if env else []) if prod_tables.get(s.name) == s.version}
        behind = _behind_raw(ctx, environment, env, shared, built_now)
        if behind:
            # built before batches loaded since: bring them up to date before comparing, or their
            # staleness reads as the change's effect (and a promotion would serve it: a probe)
            batches = sum(n for n, _ in behind.values())
            known = [at for _, at in behind.values() if at is not None]
            ctx.plan(environment, restate_models=sorted(behind), auto_apply=True, no_prompts=True,
                     **({"start": since.isoformat()} if since else {}))
            said = (f"{len(behind)} model(s) of {environment} ({', '.join(sorted(schema_table(n) for n in behind))}) "
                    + (f"were built by a preview from {min(known):%Y-%m-%d %H:%M} UTC on" if known else
                       "were built by an earlier plan")
                    + f", and {batches} batch(es) of their raw tables were loaded or applied to prod from an hour "
                    f"before that on, which a build may miss: restated in {environment} before comparing"
                    + (f", from {since} on" if since else ""))
            log.info(said, extra={"fields": {"environment": environment, "models": sorted(behind), "batches": batches}})
            if notes is not None:
                notes.append(said)
        _record_builds(ctx.engine_adapter, environment, env, shared)
        names = changed_models(ctx, environment)
        partial = _partially_built(ctx, prod, env, [n for n in names if n not in shared])
        infos = {s.name: s for s in (env.snapshots if env else [])}
        with _sql_echo(shown=not quiet):
            return [_diff(ctx, name, environment, same_table=name in shared, partial=partial, info=infos.get(name))
                    for name in names]
    finally:
        ctx.close()


# a batch loaded (or applied to prod) this long before a preview built a table may have committed
# after the build read raw (a load during the preview, or the loading machine's clock ahead)
BUILD_MARGIN = timedelta(hours=1)
# per environment: when `elt preview` last built or restated each model version of its own (not
# prod's). SQLMesh's interval records do not say: its janitor rewrites their times (a review)
BUILDS = "elt_meta.preview_builds"


def _record_builds(adapter: Any, environment: str, env: Any, shared: set[str]) -> None:
    """After the preview's plans: each of ``env``'s own model versions is current as of now."""
    if env is None:
        return
    from orchestrator.transform.windows import create_meta_table

    own = sorted((s.name, s.version) for s in env.snapshots if s.name not in shared and s.is_model)
    if not own:
        return
    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, BUILDS, "environment TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, "
                                       "built_at TIMESTAMP NOT NULL")
    lit = partial(_lit, dialect=adapter.dialect)
    now = lit(f"{datetime.now(UTC).replace(tzinfo=None):%Y-%m-%d %H:%M:%S.%f}")
    rows = ", ".join(f"({lit(environment)}, {lit(name)}, {lit(version)}, CAST({now} AS TIMESTAMP))" for name, version in own)
    adapter.execute(f"INSERT INTO {BUILDS} (environment, model, version, built_at) VALUES {rows}")


def _behind_raw(ctx, environment: str, env, shared: set[str],  # type: ignore[no-untyped-def]
                built_now: set[tuple[str, str]]) -> dict[str, tuple[int, datetime | None]]:
    """The models of ``env`` on a table of their own (not prod's), not built by this preview's
    plan, that may miss batches: model -> (batches, when a preview last built it; None when no
    preview did: a bare `sqlmesh plan dev`, or before this record existed, and every batch counts).
    A batch counts when it was loaded, or applied to prod (which dev's own tables may read through
    prod's staging), from ``BUILD_MARGIN`` before that build on."""
    if env is None:
        return {}
    from sqlmesh.core.model.kind import ModelKindName

    from orchestrator.transform.windows import CONSUMED, LEDGER

    adapter = ctx.engine_adapter
    lit = partial(_lit, dialect=adapter.dialect)
    recorded: dict[tuple[str, str], datetime] = {}
    if adapter.table_exists(BUILDS):
        recorded = {(str(m), str(v)): at for m, v, at in adapter.fetchall(
            f"SELECT model, version, max(built_at) FROM {BUILDS} WHERE environment = {lit(environment)} GROUP BY 1, 2")}
    if not adapter.table_exists(LEDGER):
        return {}
    consumed = adapter.table_exists(CONSUMED)
    behind: dict[str, tuple[int, datetime | None]] = {}
    for info in env.snapshots:
        if (info.name in shared or (info.name, info.version) in built_now or not info.is_model
                or info.kind_name in (None, ModelKindName.EXTERNAL)):
            continue
        raws = sorted({schema_table(a).lower() for a in ctx.dag.upstream(info.name)
                       if schema_table(a).lower().startswith("raw_")})
        if not raws:
            continue
        built = recorded.get((info.name, info.version))
        tables = ", ".join(lit(t) for t in raws)
        cutoff = "" if built is None else f"CAST({lit(str(built - BUILD_MARGIN))} AS TIMESTAMP)"
        since = "" if built is None else (
            f" AND (l.loaded_at > {cutoff}" + (f" OR l.batch_id IN (SELECT c.batch_id FROM {CONSUMED} AS c "
                                               f"WHERE c.consumed_at > {cutoff})" if consumed else "") + ")")
        found = adapter.fetchone(f"SELECT count(*) FROM {LEDGER} AS l WHERE l.rows > 0 "
                                 f"AND lower(l.raw_table) IN ({tables}){since}")
        if found and found[0]:
            behind[info.name] = (int(found[0]), built)
    return behind


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


def _reused_table(info: Any, environment: str) -> str:
    """Why a changed model of ``environment`` reads prod's table, from its snapshot's change
    category. A forward-only change was said to be "downstream of a non-breaking change ... its
    data is the same" (a probe): prod's table is kept, but the days built after the deploy use it.

    >>> from types import SimpleNamespace as Info
    >>> from sqlmesh.core.snapshot import SnapshotChangeCategory as Category
    >>> _reused_table(Info(forward_only=True, change_category=Category.NON_BREAKING), "dev").split(":")[0]
    'forward-only change'
    >>> _reused_table(Info(forward_only=False, change_category=Category.METADATA), "dev").split(" (")[0]
    'metadata-only change'
    >>> _reused_table(Info(forward_only=False, change_category=Category.INDIRECT_NON_BREAKING), "dev").split(";")[0]
    'downstream of a non-breaking change'
    """
    from sqlmesh.core.snapshot import SnapshotChangeCategory as Category

    category = getattr(info, "change_category", None)
    if getattr(info, "forward_only", False) or category == Category.FORWARD_ONLY:
        return ("forward-only change: prod's table is kept, so this preview shows no difference; after the "
                "deploy, every day built or restated (new days, days a late batch touches) uses the new "
                "logic and the days before keep the old. To rebuild all of history, make the change breaking")
    if category == Category.METADATA:
        return "metadata-only change (description, tags, audits, owner...): reads prod's table, so its data is the same"
    return "downstream of a non-breaking change; reads prod's table, so its data is the same"


def _diff(ctx, name: str, environment: str, *, same_table: bool = False,  # type: ignore[no-untyped-def]
          partial: dict[str, int] | None = None, info: Any = None) -> ModelDiff:
    model = ctx.get_model(name)
    grain = [g.sql(dialect=model.dialect) for g in model.grains] if model and model.grains else []
    result = ModelDiff(schema_table(name), grain)
    if same_table:  # SQLMesh reuses prod's table: the change rebuilds nothing
        result.note = _reused_table(info, environment)
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
        diffs = ctx.table_diff(source="prod", target=environment, select_models=[name], show=False,
                               decimals=DECIMALS, where=where)
        if not diffs:  # SQLMesh compares nothing for a model prod does not have
            result.note = f"a new model: prod has no {schema_table(name)} to compare with (it is built in {environment})"
            return result
        (diff,) = diffs
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
