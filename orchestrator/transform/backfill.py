"""One-command backfill: ``elt backfill SOURCE --start 2018-09-01 --end 2018-09-08``.

1. Bring prod up to date first (``transform``; nothing to do when no batch is pending), so the
   difference printed in step 6 is the backfill's alone.
2. Mark the backfill unfinished (``elt_meta.backfill_unfinished``: source and window) and start an
   empty record of the marts' rows before it (``elt_meta.backfill_before``, and the days it covers
   in ``elt_meta.backfill_scope``). A rerun of the same backfill after a failure or a kill keeps
   that record: its difference counts from before the first attempt, whose batches may already be
   in raw and in the marts.
3. Re-extract the source into new landing batches and load them (``ingest(force=True)``: raw is
   append-only, the earlier batches stay, history shows both).
4. Transform: the new batches are pending for the models reading the source, which restate the
   days the batches' rows touch (orchestrator/transform/windows.py): the window for a table read by window;
   for a source read whole (files, APIs), the days where the source really changed, which may lie
   outside the window: they are restated too and reported, never left stale. Just before SQLMesh's
   intervals of those days are removed, each mart's rows on those days (a FULL mart: all its rows)
   are added to the record, as keys and row hashes, unless the record has them already: so the
   record costs the restated days, not the marts' history, and a rerun's transform of the first
   attempt's batches records their days before restating them.
5. (The batches are recorded as consumed with that restatement: a later transform redoes nothing.)
6. Count rows added, changed and removed per mart against the record, over the days it covers, in
   the warehouse (SQL, not Python memory), and print them; the backfill is no longer unfinished.
   Marts on days that nothing restated are unchanged by construction (SQLMesh writes a time
   model's restated intervals only); a model change deployed by the same transform (a plan) is
   not counted.

Safe to run twice: the second run lands identical rows, staging keeps one version per key, and the
difference printed is zero. The locks of every load job and ``sqlmesh:prod`` are held throughout
(the transform job's locks, in the same order), so a backfill never overlaps a scheduled load or
transform, and no other source's batch can land between the restatement and the watermark of step 5.
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TextIO

from sqlglot import exp

from orchestrator.scheduling.jobs import BACKFILL_JOB
from orchestrator.scheduling.locks import held_by, make_lock
from orchestrator.scheduling.runner import transform_lock_names
from orchestrator.settings import Settings
from orchestrator.transform.windows import create_meta_table
from sources import forks
from sources.config import load_source
from sources.errors import ConfigError, first_line
from sources.logs import get_logger

log = get_logger("orchestrator.transform.backfill")


@dataclass
class MartDiff:
    mart: str
    added: int
    changed: int | None  # None: compared as whole rows (no unique grain), a change is a removal and an addition
    removed: int
    why_whole_rows: str = ""  # why no key was used (no grain, a grain that is not unique)


class BackfillFailed(Exception):
    pass


class BackfillLocked(BackfillFailed):
    """A lock the backfill needs stayed busy: nothing was done (`elt backfill` exits 75)."""


def child_error(stderr: str, returncode: int = 1) -> str:
    """What a failed `elt` child said: its last ``error:`` (or ``interrupted:``, a child stopped by
    SIGTERM) line and the lines after it (its ``next:``), or its last line; for a child killed by a
    signal, that (its last line would be an unrelated log line, or nothing).

    >>> print(child_error('{"level": "info"}\\nerror: no folder\\n  next: pass --path DIR\\n'))
    error: no folder
      next: pass --path DIR
    >>> print(child_error('{"event": "landed customers"}', returncode=-9))
    error: the child process was killed (SIGKILL: the kernel's out-of-memory killer, or a person or supervisor); nothing it was doing was half-applied
    """
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = ": the kernel's out-of-memory killer, or a person or supervisor" if name == "SIGKILL" else ""
        return f"error: the child process was killed ({name}{why}); nothing it was doing was half-applied"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith(("error:", "interrupted:"))]
    return "\n".join(lines[errors[-1]:errors[-1] + 6] if errors else lines[-1:])


def failed_table(report: str) -> str | None:
    """The first table error of a load's report (its ``FAILED table: ...`` line and the indented
    lines after it, the ``next:``), as an ``error:``; None when no table failed.

    >>> print(failed_table("table  status\\nitems  failed\\n\\nFAILED items: bad row 6\\n  next: fix it\\n\\nwarehouse: w"))
    error: items: bad row 6
      next: fix it
    """
    lines = report.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("FAILED ")), None)
    if first is None:
        return None
    block = [f"error: {lines[first][len('FAILED '):]}"]
    for line in lines[first + 1:]:
        if not line.startswith(" "):
            break
        block.append(line)
    return "\n".join(block)


BEFORE = "elt_meta.backfill_before"  # mart, row key, row hash, record id: rows as they were before
SCOPE = "elt_meta.backfill_scope"  # mart, day (NULL: the whole mart), record id: what BEFORE covers
UNFINISHED = "elt_meta.backfill_unfinished"  # one row while a backfill's difference is owed; dropped after it


@dataclass(frozen=True)
class Mart:
    name: str
    grain: list[str]  # the key of its rows: the declared grain, else every column
    columns: list[str]
    time_column: str | None  # None: a FULL mart, rebuilt whole
    declared_grain: bool = True


def _grain_columns(model: Any) -> list[str]:
    """The columns of a model's first grain: ``grain (location_id, order_day)`` is one grain of two
    columns (SQLMesh keeps it as a tuple, whose text named no column, so every column became the
    key and each changed row counted as one removed and one added: a probe of user models)."""
    grains = list(getattr(model, "grains", None) or [])
    if not grains:
        return []
    first = grains[0]
    parts = first.expressions if isinstance(first, (exp.Tuple, exp.Array)) else \
        [first.this] if isinstance(first, exp.Paren) else [first]
    return [p.name if isinstance(p, exp.Column) else p.sql() for p in parts]


def _marts(ctx: Any) -> list[Mart]:
    """Every mart model: its grain, columns and time column."""
    out = []
    for model in ctx.models.values():
        if model.kind.is_external:
            continue
        name = ".".join(model.name.replace('"', "").split(".")[-2:])
        if not name.startswith("marts."):
            continue
        columns = list(model.columns_to_types or {})
        grain = _grain_columns(model)
        time_column = getattr(model, "time_column", None)
        key = [g for g in grain if g in columns]
        out.append(Mart(name, key or columns, columns, time_column.column.name if time_column is not None else None,
                        declared_grain=bool(key)))
    return sorted(out, key=lambda m: m.name)


def _on_days(mart: Mart, days: set[str] | None, *, inside: bool = True) -> exp.Expression | None:
    """A condition on the mart's rows: the day of its time column is (not) one of ``days``;
    None for all rows (no days given, or a FULL mart)."""
    if days is None or mart.time_column is None or (not inside and not days):
        return None
    day = exp.cast(exp.column(mart.time_column, quoted=True), "DATE")
    cond: exp.Expression = exp.In(this=day, expressions=[exp.cast(exp.Literal.string(d), "DATE") for d in sorted(days)])
    return cond if inside else exp.not_(cond)


def _keyed_rows(mart: Mart, dialect: str, where: exp.Expression | None = None) -> str:
    """SELECT mart, key, hash of the whole row: rendered for the warehouse's dialect."""
    def text(column: str) -> exp.Expression:
        # escaped, so that joining with '|' is unambiguous: a '|' moved from one column to the
        # next, or a value '\N', never gives another row's text
        value = exp.cast(exp.column(column, quoted=True), "TEXT")
        for char in ("\\", "|"):
            value = exp.func("REPLACE", value, exp.Literal.string(char), exp.Literal.string("\\" + char))
        return exp.func("COALESCE", value, exp.Literal.string("\\N"))

    def joined(cols: list[str]) -> exp.Expression:
        return exp.func("CONCAT_WS", exp.Literal.string("|"), *[text(c) for c in cols])

    schema, table = mart.name.split(".")
    query = exp.select(
        exp.alias_(exp.Literal.string(mart.name), "mart"),
        exp.alias_(joined(mart.grain), "row_key"),
        exp.alias_(exp.func("MD5", joined(mart.columns)), "row_hash"),
    ).from_(exp.table_(table, db=schema, quoted=True))
    return (query.where(where) if where is not None else query).sql(dialect)


def start_record(adapter: Any) -> None:
    """An empty record (step 2): nothing restated yet, so nothing to keep."""
    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, BEFORE, "mart TEXT NOT NULL, row_key TEXT, row_hash TEXT, record_id TEXT NOT NULL",
                      replace=True)
    create_meta_table(adapter, SCOPE, "mart TEXT NOT NULL, day DATE, record_id TEXT NOT NULL", replace=True)


def legacy_record(adapter: Any) -> bool:
    """Whether the record is one made before record ids and scopes (decision 0030): every mart's
    rows, whole, from before the backfill began. A backfill left unfinished by that code and rerun
    by this one counts its difference from it (it printed 0 for every mart before)."""
    return (not adapter.table_exists(SCOPE) and adapter.table_exists(BEFORE)
            and "record_id" not in {c.lower() for c in adapter.columns(BEFORE)})


def recorded(adapter: Any) -> dict[str, set[str] | None]:
    """mart -> the days the record covers (None: the whole mart)."""
    out: dict[str, set[str] | None] = {}
    if legacy_record(adapter):
        return {str(m): None for (m,) in adapter.fetchall(f"SELECT DISTINCT mart FROM {BEFORE}")}
    if not adapter.table_exists(SCOPE):
        return out
    for mart, day in adapter.fetchall(f"SELECT DISTINCT mart, day FROM {SCOPE}"):
        if day is None or out.get(mart, set()) is None:
            out[mart] = None
        else:
            out.setdefault(mart, set()).add(str(day)[:10])  # type: ignore[union-attr]
    return out


def days_of(spans: list[tuple[int, int]]) -> set[str]:
    """The UTC days of SQLMesh interval spans (epoch milliseconds, end exclusive).

    >>> sorted(days_of([(1535760000000, 1535932800000)]))
    ['2018-09-01', '2018-09-02']
    """
    from datetime import timedelta

    from orchestrator.transform.restate import utc_day

    days: set[str] = set()
    for start, end in spans:
        day, last = utc_day(start), utc_day(end - 1)
        while day <= last:
            days.add(day.isoformat())
            day += timedelta(days=1)
    return days


def record_before(ctx: Any, scope: dict[str, list[tuple[int, int]] | None]) -> None:
    """Step 4's hook (``restate_pending``'s ``before_restating``): add to the record each mart's
    rows on the days about to be restated (``scope``: model -> interval spans, None for all of
    it), unless the record covers them already. Insert-only and kill-safe: rows count only once
    their record id is in ``SCOPE``, written last, so a kill in between leaves rows nobody reads
    and the rerun records those days again."""
    import uuid

    adapter = ctx.engine_adapter
    if not adapter.table_exists(SCOPE):
        return
    have = recorded(adapter)
    record_id = uuid.uuid4().hex
    covered: list[tuple[str, str | None]] = []
    for mart in _marts(ctx):
        if mart.name not in scope or not adapter.table_exists(mart.name):
            continue
        done = have.get(mart.name, set())
        if done is None:  # the whole mart is recorded already
            continue
        spans = scope[mart.name]
        if spans is None or mart.time_column is None:
            where = _on_days(mart, done, inside=False)  # what the record does not hold yet
            covered.append((mart.name, None))
        else:
            new = days_of(spans) - done
            if not new:
                continue
            where = _on_days(mart, new)
            covered += [(mart.name, d) for d in sorted(new)]
        rows = _keyed_rows(mart, adapter.dialect, where)
        adapter.execute(f"INSERT INTO {BEFORE} SELECT mart, row_key, row_hash, "
                        f"{exp.Literal.string(record_id).sql(adapter.dialect)} FROM ({rows}) AS r")
    if covered:
        def lit(v: str | None) -> str:
            return "CAST(NULL AS DATE)" if v is None else f"CAST({exp.Literal.string(v).sql(adapter.dialect)} AS DATE)"

        rid = exp.Literal.string(record_id).sql(adapter.dialect)
        for i in range(0, len(covered), 500):
            values = ", ".join(f"({exp.Literal.string(m).sql(adapter.dialect)}, {lit(d)}, {rid})"
                               for m, d in covered[i:i + 500])
            adapter.execute(f"INSERT INTO {SCOPE} VALUES {values}")
        log.info("backfill recorded the marts' rows on the days about to be restated", extra={"fields": {
            "marts": sorted({m for m, _ in covered}), "days": len([d for _, d in covered if d is not None])}})


def diff_marts(ctx: Any) -> list[MartDiff]:
    """Rows added, changed and removed per mart since the record began, over the days it covers
    (a mart the record does not cover was not restated: 0, 0, 0), counted in the warehouse."""
    adapter = ctx.engine_adapter
    have = recorded(adapter)
    legacy = legacy_record(adapter)
    out = []
    for mart in _marts(ctx):
        if not adapter.table_exists(mart.name):
            continue
        if mart.name not in have:
            out.append(MartDiff(mart.name, 0, 0, 0))
            continue
        after = _keyed_rows(mart, adapter.dialect, _on_days(mart, have[mart.name]))
        lit = exp.Literal.string(mart.name).sql(adapter.dialect)
        scoped = "" if legacy else f" AND record_id IN (SELECT record_id FROM {SCOPE} WHERE mart = {lit})"
        before = f"SELECT row_key, row_hash FROM {BEFORE} WHERE mart = {lit}{scoped}"
        why = "" if mart.declared_grain else "no grain declared"
        if not why:
            # a grain two rows share would fan the join out: 154 "changed" for one changed row (a probe)
            shared = [int(adapter.fetchone(f"SELECT count(*) - count(DISTINCT row_key) FROM ({rows}) AS r")[0] or 0)
                      for rows in (after, before)]
            if any(shared):
                why = f"its grain ({', '.join(mart.grain)}) is not unique: {max(shared):,} row(s) share a key"
        if why:
            # whole rows, counted as multisets: a changed row is one removed and one added
            added, removed = adapter.fetchone(
                "SELECT COALESCE(SUM(CASE WHEN COALESCE(a.n, 0) > COALESCE(b.n, 0) THEN COALESCE(a.n, 0) - COALESCE(b.n, 0) "
                "ELSE 0 END), 0), COALESCE(SUM(CASE WHEN COALESCE(b.n, 0) > COALESCE(a.n, 0) THEN COALESCE(b.n, 0) - "
                f"COALESCE(a.n, 0) ELSE 0 END), 0) FROM (SELECT row_hash, count(*) AS n FROM ({after}) AS r GROUP BY "
                f"row_hash) AS a FULL OUTER JOIN (SELECT row_hash, count(*) AS n FROM ({before}) AS r GROUP BY row_hash) "
                "AS b ON a.row_hash = b.row_hash")
            out.append(MartDiff(mart.name, int(added), None, int(removed), why))
            continue
        added, changed, removed = adapter.fetchone(
            f"SELECT count(CASE WHEN b.row_key IS NULL THEN 1 END), "
            f"count(CASE WHEN a.row_key IS NOT NULL AND b.row_key IS NOT NULL AND a.row_hash <> b.row_hash THEN 1 END), "
            f"count(CASE WHEN a.row_key IS NULL THEN 1 END) "
            f"FROM ({after}) AS a FULL OUTER JOIN ({before}) AS b ON a.row_key = b.row_key"
        )
        out.append(MartDiff(mart.name, int(added), int(changed), int(removed)))
    return out


class _Record:
    """One attempt in ``elt_meta.job_runs`` for one `elt backfill` command: who (pid, host, trigger),
    when, the window (as its interval, the end day included), the outcome, and each mart's
    difference. A history that cannot be written is logged and kept for later (History's
    ``*_or_keep``), never the reason a backfill fails."""

    def __init__(self, settings: Settings, source: str, start: date, end: date, trigger: str) -> None:
        import socket
        import uuid
        from datetime import time as clock, timedelta

        from orchestrator.observe.history import History, RunRecord, utcnow

        self.settings, self.history, self.now, self.started = settings, History.open(settings), utcnow, False
        self.record = RunRecord(
            run_id=uuid.uuid4().hex[:12], attempt=1, max_attempts=1, job=BACKFILL_JOB, source=source,
            trigger=trigger, status="running", started_at=utcnow(), pid=os.getpid(), host=socket.gethostname(),
            interval_start=datetime.combine(start, clock()),
            interval_end=datetime.combine(end + timedelta(days=1), clock()))

    def _write(self, what: str, fn: Any, *args: Any, **values: Any) -> None:
        try:
            fn(*args, **values)
        except Exception as exc:  # noqa: BLE001 - the backfill's own outcome is what matters
            log.error(f"the run history could not record the backfill {what}", extra={"fields": {
                "run_id": self.record.run_id, "error": first_line(exc)}})

    def skipped(self, error: str) -> None:
        self.record.status, self.record.finished_at, self.record.error = "skipped_locked", self.now(), error
        self._write("skipped", self.history.insert_or_keep, self.record)

    def start(self) -> None:
        """Under the backfill's lock: a backfill recorded as running before is dead (its lock was free)."""
        from orchestrator.scheduling.runner import abandon_record

        try:
            for earlier in self.history.running():
                if earlier.job == BACKFILL_JOB:
                    abandon_record(self.settings, self.history, earlier, None, self.now())
        except Exception as exc:  # noqa: BLE001
            log.error("the run history could not be read for earlier backfills", extra={"fields": {"error": first_line(exc)}})
        self.record.started_at = self.now()
        self._write("start", self.history.insert_or_keep, self.record)
        self.started = True
        print(f"backfill of {self.record.source}: run {self.record.run_id} in the run history "
              f"(`elt run-show {self.record.run_id}`)", file=sys.stderr, flush=True)

    def end(self, status: str, *, error: str | None = None, error_class: str | None = None,
            diffs: list[MartDiff] | None = None, restated: dict[str, str] | None = None) -> None:
        import json

        from orchestrator.scheduling.worker import without_secrets

        if not self.started:
            return
        tables: dict[str, Any] = {d.mart: {"added": d.added, "changed": d.changed, "removed": d.removed}
                                  for d in diffs or []}
        if restated:
            tables["restated"] = restated
        # every secret this process read (a PostgreSQL source's password on a server warehouse,
        # where the backfill extracts in-process) is redacted, as a job's worker does for its result
        values = without_secrets({"error": error, "error_class": error_class,
                                  "tables_json": json.dumps(tables) if tables else None})
        self._write(status, self.history.update_or_keep, self.record.run_id, self.record.attempt, status=status,
                    finished_at=self.now(), **values)


def backfill(settings: Settings, source: str, start: date, end: date, *, path: str | None = None,
             out: TextIO | None = None, trigger: str = "manual") -> list[MartDiff]:
    """Run one backfill (the module's steps 1-6) under its locks, recorded in the run history."""
    out = out or sys.stdout
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}", source=source, hint="give --start <= --end")
    today = datetime.now(UTC).date()
    if start > today:  # it printed a difference of nothing and exited 0 (a probe)
        raise ConfigError(f"--start {start} is after today ({today} in UTC): no day of that window has begun",
                          source=source, hint="check the year of --start and --end; rows dated after today reach the "
                                              "marts on their day, with no backfill")
    spec = load_source(source)
    record = _Record(settings, source, start, end, trigger)
    held: list[Any] = []
    try:
        diffs, restated = _backfill(settings, source, start, end, path, out, spec, record, held)
        record.end("succeeded", diffs=diffs, restated=restated)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli._stop_on_sigterm)
        record.end("stopped", error_class="Stopped",
                   error=f"backfill of {source} for {start} .. {end} was stopped; next: rerun the same `elt backfill` "
                         "command: its difference still counts from before this attempt")
        raise
    except BackfillFailed as exc:
        record.end("failed", error=str(exc), error_class=type(exc).__name__)
        raise
    except BaseException as exc:
        record.end("failed", error=f"{type(exc).__name__}: {first_line(exc)}", error_class=type(exc).__name__)
        raise
    finally:
        for lock in reversed(held):
            lock.release()
    return diffs


def _backfill(settings: Settings, source: str, start: date, end: date, path: str | None, out: TextIO, spec: Any,
              record: _Record, held: list[Any]) -> tuple[list[MartDiff], dict[str, str]]:
    """Steps 1-6 under the locks it takes into ``held``, which the caller releases once it has
    recorded the outcome: a tick that saw the record `running` with the lock free would call a
    backfill that had just finished abandoned."""
    from sqlmesh.utils.errors import SQLMeshError

    from orchestrator.transform.run import TransformFailed, make_context, transform

    wait_s = float(os.environ.get("ELT_BACKFILL_LOCK_WAIT_S", "3600"))
    # its own lock first (nothing else takes it, so the order cannot deadlock), then the transform's
    for name in [f"job:{BACKFILL_JOB}", *transform_lock_names(settings)]:
        lock = make_lock(settings, name)
        if not lock.try_acquire():  # announced, not silent: the wait may be long
            holder = lock.holder() or "a running load, transform or backfill"
            print(f"backfill of {source}: waiting up to {wait_s:.0f}s (ELT_BACKFILL_LOCK_WAIT_S) for lock {name}, "
                  f"held by {holder} (`elt runs` lists scheduled runs and backfills; `pgrep -af 'elt '` loads and transforms started by hand)",
                  file=sys.stderr, flush=True)
            if not lock.acquire(timeout=wait_s):
                locked = BackfillLocked(
                    f"backfill of {source}: lock {name} stayed busy for {wait_s:.0f}s{held_by(lock)} (a backfill waits for every "
                    "load job, whatever its source, for `elt transform` and for another backfill); nothing was done\n"
                    "  next: wait for it (`elt runs` lists scheduled runs and backfills; `pgrep -af 'elt '` shows "
                    "loads and transforms started by hand), then rerun the backfill")
                record.skipped(str(locked))
                raise locked
        held.append(lock)
    record.start()
    if settings.gateway == "duckdb":
        _prepare_and_load_in_children(settings, source, start, end, path, spec.name, out)
    else:
        _prepare_and_load_here(settings, source, start, end, path, out)
    try:
        # the new batches are pending for every model version reading the source: the transform
        # restates exactly the days their rows touch (windows.py), in the window and, for a source
        # re-read whole, wherever else the source changed (reported, never left stale)
        summary = transform(settings, environment="prod", quiet=True, before_restating=record_before,
                            fail_on_held=False)
        _note_held(summary, out)
        restate = [f"{m} ({w})" for m, w in summary.restated_windows.items()]
        ctx, _ = make_context(settings, quiet=True)
        try:
            diffs = diff_marts(ctx)
            _report(out, source, start, end, spec, restate, diffs, settings.gateway, _reading_raw(ctx))
            # only once the difference is out: a backfill killed before this line reruns
            # against the same record
            ctx.engine_adapter.execute(f"DROP TABLE IF EXISTS {UNFINISHED}")
        finally:
            ctx.close()
    except (TransformFailed, SQLMeshError) as exc:
        # the audit advice only where rows failed an audit or a model failed: a lost connection
        # or a lock says its own next step, and the rerun is the way on
        from orchestrator.transform.run import _LOST_CONNECTION
        from sources.errors import WAREHOUSE_WRITE_FAILED

        # nor a full disk: its own next step (free space) and then the same command
        failed_rows = isinstance(exc, TransformFailed) and bool(
            exc.failures or any(not (_LOST_CONNECTION.search(e) or WAREHOUSE_WRITE_FAILED.search(e))
                                for e in exc.model_errors))
        next_step = (_failed_next(source, start, end, path) if failed_rows or not isinstance(exc, TransformFailed)
                     else "  next: rerun the same `elt backfill` command once the cause above is fixed: its "
                          "difference still counts from before this attempt")
        said = str(exc)
        if "next:" in next_step:  # one way on: the transform's own (reload, then `elt transform`) is not it
            said = "\n".join(line for line in said.splitlines() if not line.lstrip().startswith("next:"))
        raise BackfillFailed(f"backfill of {source}: restating {start} .. {end} failed: {said}\n{next_step}") from None
    return diffs, dict(summary.restated_windows)


# A failed backfill leaves its new batches in raw. Its rerun (the same source and window) re-reads
# the window before it transforms anything, so rows corrected at the source supersede the failing
# ones: a bare rerun gets past them (it used to transform the pending batch first, which failed
# again: found by an on-call probe, and again by a backfill probe for a rerun after a kill between
# tables). Until then every scheduled `elt transform` fails on those rows; a load re-reading the
# backfill's window (a plain `elt load` reads a cursor_field table from its cursor, and a correction
# that did not move the cursor is not seen) and a transform get past them without the backfill.
def _failed_next(source: str, start: date, end: date, path: str | None) -> str:
    load = f"elt load {source} --window {start} {end}" + (f" --path {shlex.quote(path)}" if path else "")
    return ("  the new batches are in raw. next: if the failing rows came from the source, correct them there and"
            " rerun the same `elt backfill` command: it re-reads its window before it transforms, so the corrected"
            " rows supersede the failing ones, and its difference still counts from before this attempt; if the"
            " cause is a model, fix it, then rerun. Until then scheduled transforms fail on those rows;"
            f" `{load}` and `elt transform` get past them without the backfill (runbook: docs/runbook.md#backfill)")


def _prepare_failed(source: str, said: str, start: date, end: date, path: str | None) -> BackfillFailed:
    hint = ""
    if "audit '" in said:  # a pending batch fails its audits: the same way out as a failed restatement
        hint = "\n" + _failed_next(source, start, end, path)
    # its first step transforms the batches already loaded, which may have written rows before failing
    return BackfillFailed(f"backfill of {source}: preparing prod (transforming the batches already loaded) failed; "
                          f"nothing was re-extracted or restated.\n{said}{hint}")


def _load_failed(source: str, said: str, *, before_any_table: bool = False) -> BackfillFailed:
    """Steps 1-2 done, step 3 failed: ``said`` (an ``error:`` and its ``next:`` when it has one);
    ``before_any_table``: it failed before reading any table (a declaration, the source's folder)."""
    loaded = ("nothing was read" if before_any_table else
              "tables that did load are in raw: rerun this backfill, whose difference will count them")
    return BackfillFailed(
        f"backfill of {source}: re-extracting failed; nothing was restated ({loaded}).\n{said}" + ("" if "next:" in said else (
            "\n  next: fix the source, then rerun the same `elt backfill` command (a file source's folder: --path DIR)")))


def _child(args: list[str], *, cwd: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one step in a child process, its output kept for the report and the failure message;
    the warnings it logs are logged here too as they come (a swept batch folder, a clock behind):
    they were thrown away with the rest of its stderr when the step succeeded (a probe)."""
    import json
    import threading

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                            preexec_fn=forks.dies_with())
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    err: list[str] = []
    for line in proc.stderr:
        err.append(line)
        try:
            said = json.loads(line)
        except ValueError:
            continue
        if isinstance(said, dict) and said.get("level") == "warning":  # errors: the failure message says them
            fields = {k: v for k, v in said.items() if k not in ("ts", "level", "logger", "event")}
            log.warning(str(said.get("event", "")), extra={"fields": fields})
    proc.wait()
    reader.join()
    return subprocess.CompletedProcess(args, proc.returncode, "".join(out), "".join(err))


def _prepare_and_load_in_children(settings: Settings, source: str, start: date, end: date, path: str | None,
                                  job: str, out: TextIO) -> None:
    """Steps 1-3 on DuckDB, each in a child process: DuckDB allows one writing process per file and
    one configuration per file and process (the loader's differs from SQLMesh's), and a SQLMesh
    context keeps its connection open until the process exits. The children work under this
    process's locks: they die with it (a killed backfill's child went on transforming or loading
    unprotected, and held the warehouse against the rerun)."""
    prep = _child([sys.executable, "-m", "orchestrator.transform.backfill", "prepare", source,
                   start.isoformat(), end.isoformat()], cwd=settings.project_root)
    if prep.returncode != 0:
        raise _prepare_failed(source, prep.stderr.strip() if prep.returncode > 0 else child_error("", prep.returncode),
                              start, end, path)
    if prep.stdout.strip():
        print(prep.stdout.rstrip(), file=out)
    load = _child([sys.executable, "-m", "orchestrator.cli", "load", source, "--window",
                   start.isoformat(), end.isoformat(), *(["--path", path] if path else [])], cwd=settings.project_root,
                  env={**os.environ, "ELT_JOB_LOCK_HELD": f"job:{job}"})  # the lock is held by the caller
    if load.stdout.strip():
        print(load.stdout.rstrip(), file=out)
    if load.returncode != 0:
        # a table's error is in the report (stdout); the log lines on stderr repeat it, as log lines
        said = (load.returncode == 1 and failed_table(load.stdout)) or child_error(load.stderr, load.returncode)
        # exit 2: refused before any table was read (a declaration, the source's folder), as `elt load` says
        raise _load_failed(source, said, before_any_table=load.returncode == 2 and not load.stdout.strip())


def _prepare_and_load_here(settings: Settings, source: str, start: date, end: date, path: str | None,
                           out: TextIO) -> None:
    """Steps 1-3 in this process, on a server warehouse (PostgreSQL, Spark): nothing there limits a
    process to one connection or one configuration. On Spark this matters most: a process starts
    one JVM and its session (15-20 s before the first query; the loader and SQLMesh share it,
    sources/spark.py), and a child per step started two more."""
    from sqlmesh.utils.errors import SQLMeshError

    from orchestrator.cli import _window
    from orchestrator.scheduling.loading import load_source_into_warehouse, print_load_report
    from orchestrator.transform.run import TransformFailed
    from sources.errors import LoaderError
    from sources.logs import redact_userinfo

    try:
        prepare(settings, source, start.isoformat(), end.isoformat(), out)
    except (BackfillFailed, TransformFailed, SQLMeshError) as exc:
        raise _prepare_failed(source, str(exc), start, end, path) from None
    except Exception as exc:  # the warehouse went away, a bug: the traceback goes to the log, as a child's did
        log.exception("preparing prod failed")
        raise _prepare_failed(source, f"{type(exc).__name__}: {exc}", start, end, path) from None
    try:
        outcomes = load_source_into_warehouse(source, settings, path=path,
                                              window=_window([start.isoformat(), end.isoformat()]))
    except LoaderError as exc:  # before any table was tried (a declaration, the source's folder)
        raise _load_failed(source, f"error: {redact_userinfo(str(exc))}", before_any_table=True) from None
    except Exception as exc:
        log.exception("re-extracting failed")
        raise _load_failed(source, f"error: {type(exc).__name__}: {redact_userinfo(str(exc))}") from None
    report = io.StringIO()
    print_load_report(outcomes, settings, stream=report)
    print(report.getvalue().rstrip(), file=out)
    said = failed_table(report.getvalue())
    if said:
        raise _load_failed(source, said)


def _reading_raw(ctx: Any) -> set[str]:
    """The models whose query reads a declared raw table."""
    from orchestrator.transform.run import lineage_direct
    from orchestrator.transform.windows import window_specs

    raw = set(window_specs())
    return {m for table, models in lineage_direct(ctx).items() if table in raw for m in models}


def _report(out: TextIO, source: str, start: date, end: date, spec: Any, restate: list[str],
            diffs: list[MartDiff], gateway: str, reading_raw: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    print(f"re-extracted {source} for {start} .. {end}; restated {'; '.join(restate) or 'nothing'}", file=out)
    outside = [m.split(" (", 1)[0] for m in restate if _outside(m, start, end)]
    if outside:
        # which of the causes it was: a probe read the three listed together as "the source changed
        # outside my window" where only later order numbers had
        direct = [m for m in outside if m.lower() in reading_raw]
        if direct:
            why = (f"the new batches changed rows there ({', '.join(direct)} read them from raw: a table re-read "
                   "whole brings every change it holds, wherever it lies), and the models after them follow those days")
        else:
            why = (f"the raw rows changed only inside it, but {', '.join(outside)} restate other days from them: "
                   "a model of monthly (yearly) rows restates each touched day's whole month (year), and a model "
                   "that numbers rows in time (an order's place among its customer's orders) the later days")
        print(f"note: days outside the window were restated too: {why}; marts never stay stale against raw", file=out)
    if spec.kind == "postgres":
        # children read through their parent's window: items of the window's orders
        through = {t.name: p.name for t in spec.tables.values() if (p := spec.window_parent(t)) is not None}
        windowed = [t.name + (f" (through {through[t.name]})" if t.name in through else "")
                    for t in spec.tables.values() if t.window_column or t.name in through]
        whole = [t.name for t in spec.tables.values() if t.cursor_field and not t.window_column and t.name not in through]
        if windowed:
            print(f"note: {', '.join(windowed)} were re-read for the window only: rows deleted at the source or moved out "
                  "of the window, and changes outside it, are not seen by this backfill "
                  "(docs/runbook.md#backfill)", file=out)
        if whole and gateway == "spark":  # the Spark raw store appends a re-read as read
            print(f"note: {', '.join(whole)} (read by cursor, without window_column) were re-read whole and "
                  "appended as read (Spark raw): raw keeps one more version of each row; staging keeps the latest",
                  file=out)
        elif whole:
            print(f"note: {', '.join(whole)} (read by cursor, without window_column) were re-read whole: raw "
                  "gained only rows that differ from its latest version of their key (tables with a primary_key); "
                  "deletions are not seen", file=out)
    width = max([22, *(len(d.mart) for d in diffs)])
    print(f"{'mart':<{width}} {'added':>8} {'changed':>8} {'removed':>8}", file=out)
    for d in diffs:
        changed = "-" if d.changed is None else f"{d.changed:,}"
        print(f"{d.mart:<{width}} {d.added:>8,} {changed:>8} {d.removed:>8,}", file=out)
    for d in diffs:
        if d.why_whole_rows and (d.added or d.removed):
            print(f"note: {d.mart} was compared as whole rows ({d.why_whole_rows}): a changed row counts as one removed "
                  "and one added. Declare a unique `grain` in its MODEL block (and a `unique_values` audit on it) to "
                  "count changes", file=out)
    out.flush()


def _outside(restated: str, start: date, end: date) -> bool:
    """True when a restated-windows description names a day outside [start, end].

    >>> _outside("marts.orders (2 day(s): 2018-09-03, 2018-09-20)", date(2018, 9, 1), date(2018, 9, 7))
    True
    """
    import re

    days = [date.fromisoformat(d) for d in re.findall(r"\d{4}-\d{2}-\d{2}", restated)]
    return "all history" in restated or any(d < start or d > end for d in days)


def unfinished(adapter: Any) -> tuple[str, str, str, str] | None:
    """(source, start, end, started_at) of a backfill whose difference was never printed."""
    if not adapter.table_exists(UNFINISHED) or not adapter.table_exists(BEFORE):
        return None
    row = adapter.fetchone(f"SELECT source, window_start, window_end, started_at FROM {UNFINISHED}")
    return tuple(str(v) for v in row) if row else None  # type: ignore[return-value]


def _note_held(summary: Any, out: TextIO | None) -> None:
    """Rows held out of staging do not stop a backfill (the rest is built, as by `elt transform`,
    which fails on them): said, so that the backfill's report is not read as all of the data."""
    if summary.held:
        # the transform's failure text, which began "transform failed during run." above a backfill
        # that then succeeded (a probe read it as the backfill failing)
        first, _, rest = summary.held.partition("\n")
        first = first.replace("transform failed during run.", "").strip()
        print(f"note: the backfill went on without rows held out of staging, on which every `elt transform` fails "
              f"until they are fixed: {first}" + (f"\n{rest}" if rest else ""), file=out or sys.stdout)
    if summary.warned:
        print(summary.warned, file=out or sys.stdout)


def prepare(settings: Settings, source: str, start: str, end: str, out: TextIO | None = None) -> None:
    """Steps 1-2 (in a child process on DuckDB, in the backfill's own process on the other
    gateways): transform pending batches, then start an empty record of the marts' rows
    (``start_record``; step 4 fills it) and mark this backfill unfinished; or,
    when this same backfill was left unfinished (a failure or a kill after step 2), keep the
    record it made, so that the difference printed covers the first attempt's changes too."""
    from orchestrator.transform.run import make_context, transform

    ctx, _ = make_context(settings, quiet=True)
    try:
        env_exists = ctx.state_reader.get_environment("prod") is not None
        earlier = unfinished(ctx.engine_adapter) if env_exists else None
    finally:
        ctx.close()
    if not env_exists:
        raise BackfillFailed("prod has never been built; run `elt transform` once before backfilling a window")
    same = earlier is not None and earlier[:3] == (source, start, end)
    if same:
        # Nothing is transformed first: the first attempt may have stopped between tables (orders
        # in raw, their items not yet), and transforming that half failed the orders' audits on
        # every rerun, so the re-extract that completes it never ran (a backfill probe). Step 4
        # transforms those batches with the re-extract's, adding their days to the record first.
        print(f"this backfill was started before (at {earlier[3]}) and did not finish: the difference below "  # type: ignore[index]
              "counts from before that first attempt, on the days the backfill restated", file=out)
        return
    # batches no model has consumed yet
    summary = transform(settings, environment="prod", quiet=True, fail_on_held=False)
    _note_held(summary, out)
    if summary.evaluated:  # batches no transform had taken in, or intervals that had come due
        print(f"prod was brought up to date first: {summary.render()}", file=out)
    if earlier is not None:
        where = "were transformed above" if summary.evaluated else "had been transformed"
        print(f"note: a backfill of {earlier[0]} for {earlier[1]} .. {earlier[2]} (started at {earlier[3]}) did not "
              f"finish; whatever batches it loaded {where}, so its changes are not counted below", file=out)
    ctx, _ = make_context(settings, quiet=True)
    try:
        adapter = ctx.engine_adapter
        # the mark goes first and comes back last: a kill while the record is being rewritten
        # leaves no mark pointing at a record of another backfill, or at half of one
        adapter.execute(f"DROP TABLE IF EXISTS {UNFINISHED}")
        start_record(adapter)
        create_meta_table(adapter, UNFINISHED, "source TEXT NOT NULL, window_start TEXT NOT NULL, "
                          "window_end TEXT NOT NULL, started_at TEXT NOT NULL")  # dropped above
        values = ", ".join(exp.Literal.string(v).sql(adapter.dialect)
                           for v in (source, start, end, datetime.now(UTC).isoformat(timespec="seconds")))
        adapter.execute(f"INSERT INTO {UNFINISHED} VALUES ({values})")
    finally:
        ctx.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "prepare":
        from sources import logs

        logs.configure()
        try:
            prepare(Settings.from_env(), *sys.argv[2:5])
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001
            print(str(exc), file=sys.stderr)
            sys.exit(1)
    sys.exit("usage: python -m orchestrator.transform.backfill prepare SOURCE START END (used by `elt backfill`)")
