"""``elt``: the pipeline's own commands.

    elt demo                         generate Jaffle Shop data, load it, build and audit every model
    elt demo --production            the same through the production path: PostgreSQL app DB + catalog API
                                     -> S3 landing -> PostgreSQL raw, models and state (ELT_PG_*, ELT_LANDING_URL)
    elt load SOURCE [--path DIR]     land and load a declared source (e.g. a folder of jafgen CSVs)
    elt load SOURCE --from-landing   apply landed batches that raw lacks (restore raw from landing)
    elt set-aside SOURCE TABLE BATCH --reason TEXT
                                     never apply a landed batch that cannot be applied, so later batches
                                     of the table do (--undo brings it back; see docs/runbook.md)
    elt transform                    plan prod if models changed, recompute the days new batches touch, audit them
    elt preview [ENV]                build local model changes in a dev environment, diff it against prod
    elt bi-role                      create/update the read-only BI role on marts (PostgreSQL; ELT_BI_*)
    elt sources                      list the declared sources and their tables

Scheduling (see README "Running on a schedule"):
    elt tick                         mark abandoned runs, start due jobs (call every minute from cron/systemd)
    elt serve                        the same in a foreground loop, once a minute
    elt run-job JOB                  run one job now (lock, attempts, retries, timeout, history)
    elt runs [--limit N] [--job J]   recent attempts from the run history
    elt run-show RUN_ID              every attempt of one run
    elt status                       each job: schedule, last slot, last run, last success
    elt freshness                    age of every source table and mart against its declared maximum
    elt backfill SOURCE --start D --end D   re-extract a source, restate the days it changed, print the difference
    elt report --out FILE            a static HTML status page (runs, freshness, rows per layer, audits)
    elt airflow --out DIR            one Airflow DAG file per job, each calling `elt run-job`

Exit status: 0 success, 1 a table or model failed (details on stderr), 2 bad usage or config,
75 another process holds a lock the command needs (a job lock, the DuckDB warehouse file, local
Spark's metastore): rerun later,
141 the reader of stdout went away (`elt runs | head`), as for any command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from datetime import date, datetime, timezone
from pathlib import Path

from orchestrator.settings import GATEWAYS, Settings
from sources import forks, logs
from sources.errors import (ConfigError, LoaderError, ResourceBusy, exception_chain, first_line,
                            full_disk_elsewhere, interrupted, unreadable_duckdb_file, warehouse_write_problem)
from sources.logs import redact_userinfo

# DuckDB's text when another process has the file open read-write (one writer per file)
_DUCKDB_LOCK = re.compile(r'Could not set lock on file "(?P<file>[^"]+)": Conflicting lock is held in '
                          r"(?P<program>.*?) \(PID (?P<pid>\d+)\)")


def _window(days: list[str]) -> tuple[str, str]:
    """``--window 2018-10-08 2018-10-14``: whole days, the end day included."""
    from datetime import timedelta

    try:
        start, end = (date.fromisoformat(d) for d in days)
    except ValueError:
        raise ConfigError(f"--window {' '.join(days)}: give two days as YYYY-MM-DD") from None
    if end < start:
        raise ConfigError(f"--window {start} {end}: the end is before the start")
    return f"{start.isoformat()}T00:00:00+00:00", f"{(end + timedelta(days=1)).isoformat()}T00:00:00+00:00"


def _from_cwd(path: str | None) -> str | None:
    """A ``--path`` as the user meant it: relative to the current directory (an s3:// URL as given)."""
    if not path or "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _source_lock_busy(source: str, name: str, holder: str | None = None) -> int:
    """What `elt load` and `elt set-aside` say when another load of the source holds its job lock."""
    by = f" by {holder}" if holder else ""
    print(f"error: {name} is held{by}: by another load of {source} (by hand, scheduled or a backfill's), or by a "
          f"scheduled transform, which holds every source's lock while it reads raw (`elt runs --job {source}` and "
          "`elt runs --job transform` list the scheduled ones); rerun when it ends, or set ELT_LOAD_LOCK_WAIT_S to "
          "wait", file=sys.stderr)
    return 75


def _cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from contextlib import nullcontext

    from orchestrator.scheduling.locks import LockBusy, holding
    from orchestrator.scheduling.loading import load_source_into_warehouse, print_load_report

    # the source's job lock, as the scheduler takes it: a hand-run load never overlaps a scheduled
    # one or a backfill, on any machine (an advisory lock on the PostgreSQL gateway). A backfill
    # holds it already and runs its load with ELT_JOB_LOCK_HELD naming it.
    source = Path(args.source).stem  # jobs, and so their locks, are named by the declaration's file
    name = f"job:{source}"
    wait_s = float(os.environ.get("ELT_LOAD_LOCK_WAIT_S", "0"))
    lock = nullcontext() if os.environ.get("ELT_JOB_LOCK_HELD") == name else holding(settings, name, wait_s)
    try:
        with lock:
            outcomes = load_source_into_warehouse(
                args.source,
                settings,
                path=_from_cwd(args.path),
                tables=args.table,
                force=args.force,
                extract=not args.from_landing,
                window=_window(args.window) if args.window else None,
            )
    except LockBusy as exc:
        return _source_lock_busy(source, name, exc.holder)
    print_load_report(outcomes, settings)
    return 1 if any(o.error for o in outcomes) else 0


def _cmd_set_aside(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.scheduling.locks import LockBusy, holding
    from sources.config import load_source
    from sources.load.set_aside import bring_back, set_aside
    from sources.pipeline import source_lock

    spec = load_source(args.source)
    if args.table not in spec.tables:
        raise ConfigError(f"unknown table {args.table!r}", source=spec.name, hint=f"declared tables: {', '.join(spec.tables)}")
    reason = (args.reason or "").strip()
    if not args.undo and not reason:
        raise ConfigError("--reason is required: say why the batch cannot be applied (it is recorded)",
                          source=spec.name, table=args.table, batch_id=args.batch_id)
    source = Path(args.source).stem  # the job lock, as `elt load` takes it: no load of this source runs meanwhile
    name = f"job:{source}"
    landing = settings.open_landing()
    try:
        with holding(settings, name, float(os.environ.get("ELT_LOAD_LOCK_WAIT_S", "0"))), \
                source_lock(spec.name, scope=landing.url), settings.open_raw() as raw:
            where = f"{spec.name}.{args.table} batch {args.batch_id}"
            if args.undo:
                if not bring_back(spec, args.table, args.batch_id, landing=landing, raw=raw):
                    print(f"{where} was not set aside; nothing changed")
                    return 0
                print(f"brought back {where}{f' ({reason})' if reason else ''}: the next `elt load {args.source}` "
                      "applies it, in landing order (if it fails again, it blocks the table again)")
                return 0
            record, notes = set_aside(spec, args.table, args.batch_id, landing=landing, raw=raw, reason=reason,
                                      by=args.by)
    except LockBusy as exc:
        return _source_lock_busy(source, name, exc.holder)
    print(f"set aside {where}: {record.rows:,} row(s), by {record.by} at {record.at_dt:%Y-%m-%d %H:%M:%S} UTC")
    print(f"  reason: {record.reason}")
    print("  the batch stays in landing untouched; loads and replays of landing skip it, and later batches of "
          "the table apply (`elt status` lists it)")
    for note in notes:
        print(f"  {note}")
    return 0


def _environment_lock(settings: Settings, environment: str):  # type: ignore[no-untyped-def]
    """The lock of ``environment``'s plans and runs, or None (after an error on stderr) when another
    process held it for ELT_SQLMESH_LOCK_WAIT_S seconds. A wait is announced, not silent."""
    import os

    from orchestrator.scheduling.locks import FileLock, held_by, make_lock

    lock = make_lock(settings, f"sqlmesh:{environment}")
    if lock.try_acquire():
        return lock
    wait_s = float(os.environ.get("ELT_SQLMESH_LOCK_WAIT_S", "3600"))
    where = f"the file {lock.path}" if isinstance(lock, FileLock) else "a PostgreSQL advisory lock"
    holder = lock.holder()
    where += f", held by {holder}" if holder else ""
    print(f"waiting up to {wait_s:.0f}s for environment {environment}: another plan or run of it holds its lock "
          f"({where}; `elt runs` lists scheduled ones, `pgrep -af 'elt (transform|preview|demo|backfill)'` "
          "those started by hand)", file=sys.stderr, flush=True)
    if lock.acquire(timeout=wait_s):
        return lock
    print(f"error: another plan or run of environment {environment} held its lock for {wait_s:.0f}s{held_by(lock)}\n"
          "  next: let it finish (`elt runs`), or stop it if it is stuck; the lock is released when the process "
          "holding it exits (docs/runbook.md)", file=sys.stderr)
    return None


def _cmd_transform(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.transform.run import TransformFailed, check_pg_database_name, transform

    check_pg_database_name(settings)  # before the lock's connection to that database
    # plan and run on one environment are serialized with the scheduler's transform job
    lock = _environment_lock(settings, args.environment)
    if lock is None:
        return 75  # busy, not failed: a scheduler retries later (`elt --help`)
    try:
        summary = transform(settings, environment=args.environment, verify=args.audit_all,
                            allow_revert=args.allow_revert)
    except TransformFailed as exc:
        if held_duckdb_lock(exc):
            raise  # main() says which process holds the warehouse
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(summary.render())
    if summary.warned:  # held_rows: warn: passed, but not silently
        print(summary.warned, file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.production:
        from orchestrator.demo.production import run_production_demo

        return run_production_demo(settings, years=args.years, as_of=args.as_of)
    if args.as_of:
        raise ConfigError("--as-of only applies to `elt demo --production`")
    from orchestrator.demo.embedded import run_demo

    return run_demo(settings, years=args.years)


def _since(value: str | None) -> date | None:
    """``elt preview --since``: a day, not in the future.

    >>> _since("2019-03-04")
    datetime.date(2019, 3, 4)
    """
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not a day", hint="give it as YYYY-MM-DD, e.g. --since 2024-06-01") from None
    if day > datetime.now(timezone.utc).date():
        raise ConfigError(f"--since {value} is in the future", hint="give a day up to today")
    return day


def _cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.transform.preview import preview
    from orchestrator.transform.run import TransformFailed

    # serialized with other plans of the same environment (two developers previewing into one dev)
    lock = _environment_lock(settings, args.environment)
    if lock is None:
        return 75  # busy (as `elt transform`)
    notes: list[str] = []
    try:
        diffs = preview(settings, args.environment, quiet=not args.verbose, since=_since(args.since), notes=notes)
    except TransformFailed as exc:
        if held_duckdb_lock(exc):
            raise  # main() says which process holds the warehouse
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        lock.release()
    for note in notes:
        print(note)
    if not diffs:
        print(f"environment {args.environment}: no model differs from prod")
        return 0
    differ = sum(1 for d in diffs if d.differs)
    unknown = sum(1 for d in diffs if d.not_compared)
    # downstream of a non-breaking change, SQLMesh reuses prod's table: not rebuilt (a newcomer
    # walkthrough read "3 model(s) rebuilt" above two lines saying they read prod's table)
    reused = sum(1 for d in diffs if d.same_by_design)
    print(f"environment {args.environment}: {len(diffs) - reused} model(s) rebuilt (changed, or downstream of a "
          "breaking change)" + (f", {reused} reuse prod's table (downstream of a non-breaking change)" if reused else "")
          + f"; {differ} of them differ from prod in rows or columns"
          + (f", {unknown} not compared (built from partial inputs)" if unknown else "") + " (prod untouched)")
    for diff in diffs:
        print(f"  {diff.render(args.environment)}")
    # a bare `sqlmesh plan` promotes these tables as they are: batches loaded after this preview
    # reach them at the next `elt transform`, and until then prod serves them without those rows
    print(f"\ndeploy with `elt transform` from the checkout that holds the change (after `sqlmesh plan`, run "
          f"`elt transform` at once: batches loaded since this preview reach the promoted tables only through it); "
          f"drop it with `sqlmesh invalidate {args.environment}`")
    return 0


def _cmd_bi_role(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.integrations.bi import bi_role_settings, ensure_bi_role
    from sources.connections import PostgresSettings

    if settings.gateway != "postgres":
        raise ConfigError("the BI role is for the PostgreSQL warehouse", hint="set ELT_GATEWAY=postgres and ELT_PG_*")
    role, password = bi_role_settings()
    for line in ensure_bi_role(PostgresSettings.from_env(settings.pg_prefix), args.role or role, password):
        print(line)
    return 0


def _cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    from sources import external_models
    from sources.config import available_sources, load_source
    from sources.specs import format_duration

    if args.write_external_models:
        print(f"wrote {external_models.write(settings.project_root)}")
        return 0
    if args.write_staging:
        from sources import staging_models

        spec = load_source(args.write_staging)
        for path, what in staging_models.write(settings.project_root, spec):
            print(f"{path.relative_to(settings.project_root)}: {what}")
        print("next: review each draft (names, units, audits; docs/how-to/add-a-source.md, step 6), then "
              "`sqlmesh format <files>` and `sqlmesh plan dev`")
        return 0

    for name in available_sources():
        spec = load_source(name)
        where = {"files": spec.path, "postgres": f"${spec.env_prefix}*", "rest_api": redact_userinfo(spec.base_url) if spec.base_url else f"${spec.base_url_env}"}[spec.kind]
        print(f"{spec.name} ({spec.kind} {where}, owner {spec.owner}, schedule {spec.schedule!r})")
        for table in spec.tables.values():
            origin = table.file or table.pattern or table.source_table or table.endpoint
            cursor = f" cursor={table.cursor_field}" if table.cursor_field else ""
            cursor += f" soft_delete={table.soft_delete}" if table.soft_delete else ""
            cursor += " held_rows=warn" if table.held_rows == "warn" else ""
            if table.held_rows_fail_after_s:
                cursor += f" held_rows_fail_after={format_duration(table.held_rows_fail_after_s)}"
            print(f"  {table.name:<12} {origin} key={','.join(table.primary_key)}{cursor} -> {spec.raw_schema}.{table.name}")
    return 0


def _parse_now(text: str | None):  # type: ignore[no-untyped-def]
    """``--now`` as a UTC time without zone, as the run history keeps times. An offset is
    converted, not dropped (``10:00+02:00`` was taken as 10:00 UTC, two hours off).

    >>> _parse_now("2026-11-25T10:00+02:00"), _parse_now("2026-11-25T06:00")
    (datetime.datetime(2026, 11, 25, 8, 0), datetime.datetime(2026, 11, 25, 6, 0))
    """
    from datetime import UTC, datetime

    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
    except ValueError:
        raise ConfigError(f"--now {text!r} is not an ISO timestamp", hint="e.g. --now 2026-11-25T06:00") from None


def _cmd_tick(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from orchestrator.scheduling.runner import utcnow
    from orchestrator.scheduling.tick import tick

    now = _parse_now(args.now)
    if now is not None and now > utcnow() + timedelta(minutes=1):
        # A tick "in the future" records slots that real ticks then skip as done, and judges running jobs
        # past their timeout (it kills them as orphaned).
        raise ConfigError(f"--now {args.now!r} is later than this machine's clock (UTC)",
                          hint="--now replays past ticks only; to run a job now, use `elt run-job JOB`")
    from orchestrator.scheduling import stopping

    stopping.install()  # SIGTERM (systemd's stop, a reboot), SIGINT: stop the attempts, record them, give back slots
    report = tick(settings, now)
    print(report.render())
    if stopping.requested():
        return _stopped()
    return 1 if any(r.status in ("failed", "timed_out") for r in report.started) else 0


def _stopped() -> int:
    from orchestrator.scheduling import stopping

    print(f"stopped by {stopping.signal_name()}: the running attempts were stopped and recorded as stopped, no new "
          "one was started; a scheduled slot runs again at the next tick, a run another scheduler started (Airflow) "
          "at its next run or when its task is cleared, and a run started by hand is not repeated "
          "(`elt status`, `elt runs`)", file=sys.stderr)
    return stopping.die()


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.scheduling.serve import serve

    return serve(settings, interval_s=args.interval, max_ticks=args.max_ticks)


def _cmd_run_job(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.scheduling.jobs import get_job
    from orchestrator.scheduling.runner import run_job

    from sources.logs import get_logger

    from orchestrator.scheduling import stopping

    job = get_job(settings, args.job)
    stopping.install()
    try:
        result = run_job(settings, job, trigger=args.trigger)
    except Exception as exc:
        # Exit 75 means one thing to a scheduler (the generated Airflow DAGs skip on it): another run
        # of this job holds its lock. A DuckDB file held by another process (the run history or the
        # warehouse, past its wait) before any attempt ran is a failure to show: under 75 an Airflow
        # task went "skipped" and its DAG run green while nothing ran (an Airflow hand-over probe).
        held = None if interrupted(exc) or _TERMINATED else held_duckdb_lock(exc, f"elt run-job {args.job}")
        if held is None:
            raise
        print(held + f"\n  job {args.job}: failed before any attempt ran (exit 1; exit 75 is only for a run of "
              "the job that another run's lock skipped)", file=sys.stderr)
        return 1
    print(f"job {result.job}: {result.status} (run {result.run_id}, {result.attempts} attempt(s))")
    if stopping.requested():
        return _stopped()
    if result.status == "skipped_locked":  # a skip, not a failure: another run of the job is under way
        get_logger("orchestrator.cli").warning(
            "job skipped: another run holds its lock", extra={"fields": {
                "run_id": result.run_id, "job": result.job, "source": job.source, "status": result.status,
                "error": result.error, "next": "nothing to do: the run holding the lock does this work (exit 75)"}})
    elif result.error:  # a log line: JSON with run id, job and source when stderr is not a terminal
        get_logger("orchestrator.cli").error(
            "job did not succeed", extra={"fields": {"run_id": result.run_id, "job": result.job, "source": job.source,
                                                     "status": result.status, "error": result.error,
                                                     "next": f"elt run-show {result.run_id}"}})
    return {"succeeded": 0, "already_ran": 0, "skipped_locked": 75}.get(result.status, 1)


def _cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.observe.status import print_runs

    print_runs(settings, limit=args.limit, job=args.job)
    return 0


def _cmd_run_show(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.observe.status import print_run

    return print_run(settings, args.run_id)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.observe.status import print_status

    print_status(settings, _parse_now(args.now))
    return 0


def _cmd_freshness(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.observe.freshness import evaluate, render
    from orchestrator.scheduling.runner import utcnow

    now = _parse_now(args.now) or utcnow()
    results = evaluate(settings, now)
    if results is None:  # held by another process: not known, not stale (exit 75, as `elt --help` says)
        from orchestrator.observe import freshness

        said = held_duckdb_lock(freshness.last_busy, "elt freshness") if freshness.last_busy else None
        print(said or "error: the warehouse's DuckDB file is held by another process; try again in a minute",
              file=sys.stderr)
        return 75
    print(render(results, now))
    return 1 if any(f.state == "stale" for f in results) else 0


def _cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from orchestrator.transform.backfill import BackfillFailed, BackfillLocked, backfill

    try:
        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    except ValueError:
        raise ConfigError("--start and --end must be dates like 2018-09-01", source=args.source) from None
    try:
        backfill(settings, args.source, start, end, path=_from_cwd(args.path), trigger=args.trigger)
    except BackfillFailed as exc:
        print(f"error: {redact_userinfo(str(exc))}", file=sys.stderr)
        return 75 if isinstance(exc, BackfillLocked) else 1
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.observe.report import write

    print(f"wrote {write(settings, Path(args.out).resolve())}")
    return 0


def _cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.integrations.airflow import write_dags

    written, removed = write_dags(settings, Path(args.out).resolve(), elt_command=args.elt_command)
    for path in written:
        print(f"wrote {path}")
    for path in removed:
        print(f"removed {path} (generated before for a job that no longer exists)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-logs", action="store_true", default=None, help="JSON log lines even on a terminal")
    gateway_help = ("where raw tables and models live (default: ELT_GATEWAY, else duckdb); "
                    "also passed to every process this one starts")
    parser.add_argument("--gateway", choices=GATEWAYS, help=gateway_help)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole Jaffle Shop demo end to end")
    demo.add_argument("--years", type=int, default=None,
                      help="years of data jafgen generates (default 1); data generated before is reused as it is")
    demo.add_argument("--production", action="store_true",
                      help="PostgreSQL app DB + catalog API -> S3 landing -> PostgreSQL warehouse (see README)")
    demo.add_argument("--as-of", type=date.fromisoformat, metavar="YYYY-MM-DD",
                      help="with --production: release the sources' data up to this day (default: all)")
    demo.set_defaults(func=_cmd_demo)

    load = sub.add_parser("load", help="land and load a declared source")
    load.add_argument("source", help="source name (sources/declarations/<name>.yaml) or a declaration file")
    load.add_argument("--path", help="folder holding the source's files, relative to the current directory "
                                   "(overrides the declaration's path)")
    load.add_argument("--table", action="append", help="load only this table (repeatable)")
    load.add_argument("--force", action="store_true", help="re-extract files already landed (makes new batches)")
    load.add_argument(
        "--from-landing", action="store_true",
        help="read nothing from the source; apply landed batches missing from raw (restore raw from landing)",
    )
    load.add_argument(
        "--window", nargs=2, metavar=("START", "END"),
        help="backfill: re-extract only the rows of these days (END included) from PostgreSQL tables that "
             "declare window_column, and from their children declared with event_time_from only the rows of "
             "the window's parents; other tables are re-read whole. Implies --force; cursors do not move.",
    )
    load.set_defaults(func=_cmd_load)

    aside = sub.add_parser("set-aside", help="never apply a landed batch that cannot be applied; later batches do",
                           description="Set a landed batch aside: loads and replays of landing skip it, later batches "
                           "of its table apply. The batch stays in landing. See docs/runbook.md#a-batch-blocks-its-table.")
    aside.add_argument("source", help="source name (sources/declarations/<name>.yaml) or a declaration file")
    aside.add_argument("table", help="the blocked table")
    aside.add_argument("batch_id", help="the batch named by the failure (batch=...)")
    aside.add_argument("--reason", help="why it cannot be applied (required; recorded with who and when)")
    aside.add_argument("--by", help="who sets it aside (default: the OS user)")
    aside.add_argument("--undo", action="store_true", help="bring the batch back: the next load applies it")
    aside.set_defaults(func=_cmd_set_aside)

    transform = sub.add_parser("transform", help="plan+apply models to an environment, then run due intervals")
    transform.add_argument("--environment", default="prod",
                           help="the SQLMesh environment to plan and run (default: prod); another one restates only "
                                "its own tables, for batches prod has applied")
    transform.add_argument("--audit-all", action="store_true",
                           help="afterwards, run every audit over all data (slow; after a restatement by hand)")
    transform.add_argument("--allow-revert", action="store_true",
                           help="apply this checkout's models even though the environment was last deployed from a "
                                "commit it does not contain (a deliberate rollback)")
    transform.set_defaults(func=_cmd_transform)

    prev = sub.add_parser("preview", help="build model changes in a dev environment and diff against prod")
    prev.add_argument("environment", nargs="?", default="dev",
                      help="the dev environment to build the changes in (default: dev; never prod)")
    prev.add_argument("--since", metavar="YYYY-MM-DD",
                      help="build changed day-partitioned models from this day on only (faster on long histories); "
                           "their rows are compared from that day, models reading them are not compared")
    prev.add_argument("--verbose", action="store_true", help="show SQLMesh's plan output and the SQL statements it runs")
    prev.set_defaults(func=_cmd_preview)

    bi = sub.add_parser("bi-role", help="create/update the read-only BI role (PostgreSQL gateway)")
    bi.add_argument("--role", help="role name (default: ELT_BI_ROLE or bi_reader)")
    bi.set_defaults(func=_cmd_bi_role)

    tick = sub.add_parser("tick", help="mark abandoned runs, start due jobs (call every minute)")
    tick.add_argument("--now", help="replay a tick as of this past UTC time (ISO; for replays and tests; "
                      "a time later than the clock is refused)")
    tick.set_defaults(func=_cmd_tick)

    serve = sub.add_parser("serve", help="tick once a minute in the foreground")
    serve.add_argument("--interval", type=float, default=60.0, help="seconds between ticks (default 60)")
    serve.add_argument("--max-ticks", type=int, default=None, help="stop after N ticks (default: run until stopped)")
    serve.set_defaults(func=_cmd_serve)

    run_job = sub.add_parser("run-job", help="run one job now, with its lock, retries, timeout and history")
    run_job.add_argument("job", help="a source name, 'transform', or a job of ELT_JOBS_FILE (see `elt status`)")
    run_job.add_argument("--trigger", default="manual", help="recorded in the history (default manual)")
    run_job.set_defaults(func=_cmd_run_job)

    runs = sub.add_parser("runs", help="recent attempts from the run history")
    runs.add_argument("--limit", type=int, default=20, help="how many attempts to show, newest first (default 20)")
    runs.add_argument("--job", help="only this job's attempts (a job name from `elt status`)")
    runs.set_defaults(func=_cmd_runs)

    run_show = sub.add_parser("run-show", help="every attempt of one run")
    run_show.add_argument("run_id", help="the run's id, as `elt runs` and job failures print it")
    run_show.set_defaults(func=_cmd_run_show)

    status = sub.add_parser("status", help="each job's schedule, last slot, last run and last success")
    status.add_argument("--now", help=argparse.SUPPRESS)
    status.set_defaults(func=_cmd_status)

    fresh = sub.add_parser("freshness", help="age of each source table and mart against its maximum (exit 1 if stale, 75 if the DuckDB file is held)")
    fresh.add_argument("--now", help=argparse.SUPPRESS)
    fresh.set_defaults(func=_cmd_freshness)

    bf = sub.add_parser("backfill", help="re-extract a source for a time window and restate the days its changes touch")
    bf.add_argument("source", help="source name (sources/declarations/<name>.yaml) or a declaration file")
    bf.add_argument("--start", required=True, help="first day of the window (YYYY-MM-DD)")
    bf.add_argument("--end", required=True, help="last day of the window, inclusive (YYYY-MM-DD)")
    bf.add_argument("--path", help="folder holding the source's files (overrides the declaration's path; "
                                   "relative to the current directory)")
    bf.add_argument("--trigger", default="manual",
                    help="recorded with the backfill in the run history (default manual; e.g. airflow)")
    bf.set_defaults(func=_cmd_backfill)

    report = sub.add_parser("report", help="write a static HTML status report")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=_cmd_report)

    airflow = sub.add_parser("airflow", help="write one Airflow DAG file per job (hand-over)")
    airflow.add_argument("--out", required=True, help="folder for the DAG files (e.g. the Airflow dags/ folder)")
    airflow.add_argument("--elt-command", default="elt", help="how Airflow workers call elt (default: elt on PATH)")
    airflow.set_defaults(func=_cmd_airflow)

    srcs = sub.add_parser("sources", help="list declared sources")
    srcs.add_argument("--write-external-models", action="store_true", help="regenerate external_models.yaml")
    srcs.add_argument("--write-staging", metavar="SOURCE", help="write a first draft of the staging model of each "
                      "table of SOURCE that has none (models/staging/stg_<source>__<table>.sql; never overwritten)")
    srcs.set_defaults(func=_cmd_sources)
    for command in sub.choices.values():  # `elt demo --gateway spark` as well as `elt --gateway spark demo`
        command.add_argument("--gateway", choices=GATEWAYS, default=argparse.SUPPRESS, help=gateway_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    previous = _stop_on_sigterm()
    code: int | None = None
    try:
        code = _main(argv)
        return code
    except KeyboardInterrupt:  # before _main's own handling (parsing the arguments, setting up logs)
        code = _interrupted(" ".join(["elt", *(sys.argv[1:] if argv is None else argv)]))
        return code
    finally:
        if previous is not None and argv is None and code is not None:
            # the work is done and the interpreter exits (0.1-0.6 s of teardown): a SIGTERM then would
            # report a finished command as killed (-15, no word: a SIGTERM probe); end with its status
            signal.signal(signal.SIGTERM, lambda signum, frame: _exit_now(code))
        elif previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    from orchestrator.transform.collector import tune_collector

    tune_collector()  # decision 0083
    args = build_parser().parse_args(argv)
    if args.json_logs:
        os.environ["ELT_JSON_LOGS"] = "1"  # and for every process this one starts (job attempts)
    logs.configure(json_lines=True if args.json_logs else None)
    logs.install_excepthook()  # an unexpected error's traceback is printed redacted too
    if args.gateway:
        os.environ["ELT_GATEWAY"] = args.gateway  # read by Settings, sqlmesh's config.yaml and job attempts
    from orchestrator.observe import logcontext

    logcontext.install()
    settings: Settings | None = None
    command = " ".join(["elt", *(sys.argv[1:] if argv is None else argv)])
    if not os.environ.get("ELT_PROJECT_DIR"):
        from orchestrator.settings import PROJECT_ROOT, other_checkout

        try:
            other = other_checkout(Path.cwd())
        except OSError:  # the current directory was deleted (a shell left in a removed release folder)
            other = None
        if other is not None:
            logs.get_logger("orchestrator.cli").warning(f"this elt runs the checkout at {PROJECT_ROOT} (where it is installed), with its code, warehouse "
                        f"and landing; the current directory is in another checkout, {other}, which is not used. "
                        f"next: run {other}/.venv/bin/elt (`make .venv/.installed` there creates it), or set "
                        "ELT_PROJECT_DIR if this is meant")
    try:
        settings = Settings.from_env()
        code = int(args.func(args, settings))
        sys.stdout.flush()  # a reader that stopped early (`| head`) breaks the pipe here, not at exit
        if _TERMINATED and code != 0:  # the command caught the interrupt's failure and reported it
            code = _interrupted(command)
        elif _TERMINATED:  # the signal came as the work ended (or a finalizer swallowed it): it is done
            print(f"note: `{redact_userinfo(command)}` received SIGTERM as it finished; it had completed",
                  file=sys.stderr)
        return code
    except ConfigError as exc:
        print(f"error: {redact_userinfo(str(exc))}", file=sys.stderr)
        return 2
    except ResourceBusy as exc:  # held by another process (local Spark's metastore): rerun when it lets go
        print(f"error: {redact_userinfo(str(exc))}", file=sys.stderr)
        return 75
    except LoaderError as exc:
        print(f"error: {redact_userinfo(str(exc))}", file=sys.stderr)
        return _interrupted(command) if _TERMINATED else 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT from a supervisor: stop, and say what stands
        return _interrupted(command)
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a socket's broken pipe, not ours to hide
        # `elt runs | head`: the reader has what it wanted. Exit as a tool killed by SIGPIPE does (141,
        # so `set -o pipefail` scripts see the same as for `cat | head`), with stdout pointed at
        # /dev/null so Python's last flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if interrupted(exc) or _TERMINATED:
            # DuckDB turns a Ctrl-C during one of its queries into its own error: one of SQLMesh's
            # state queries in the middle of a plan showed a traceback and exited 1 (an interrupt probe)
            return _interrupted(command)
        if type(exc).__name__ == "LinterError":  # SQLMesh printed each model's errors just before
            print("error: SQLMesh's linter refused the models listed above; no model was built\n"
                  "  next: fix each model named there, or the declaration it reads: a column a source no longer "
                  "declares must leave the models too (or be declared again, then `elt sources "
                  "--write-external-models`); `sqlmesh lint` checks without running anything", file=sys.stderr)
            return 2
        known = _warehouse_failure(exc, settings, command)
        if known is None:
            raise
        message, code = known
        print(message, file=sys.stderr)
        return code


# SIGTERM received by this command (see _stop_on_sigterm)
_TERMINATED: list[int] = []


def _stop_on_sigterm():  # type: ignore[no-untyped-def]
    """Let SIGTERM stop a command as Ctrl-C does: Airflow's task timeout, Kubernetes, `docker stop`,
    `timeout` and systemd send it. Without a handler `elt load` died with status -15 and no word
    (nothing half-applied: its transaction died with it); now the interrupt unwinds through the same
    paths as a Ctrl-C (the load stops at its table, the transaction rolls back, locks are let go)
    and the command says what stands. A second SIGTERM kills at once. The supervisors (`elt tick`,
    `elt run-job`, `elt serve`) replace this with their own handler (orchestrator/scheduling/stopping.py).
    Returns the handler to restore (None outside the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _TERMINATED.clear()

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        _TERMINATED.append(signum)
        if _in_finalizer(frame):
            # Python discards an exception raised in __del__ (the regex package frees its objects in
            # bulk while SQLMesh starts): the command ran on to the end (a SIGTERM probe). Send it again
            # in a moment, to land outside the finalizer.
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one kills
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, stop)


def _in_finalizer(frame) -> bool:  # type: ignore[no-untyped-def]
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _interrupted(command: str) -> int:
    by = " by SIGTERM" if _TERMINATED else ""
    print(f"interrupted: `{redact_userinfo(command)}` stopped{by}; what it had not committed was rolled back\n"
          "  next: rerun it when you want: a load applies the landed batches raw lacks first, a transform runs "
          "the intervals that did not complete", file=sys.stderr)
    return 128 + signal.SIGTERM if _TERMINATED else 130



def _project_folders(settings: Settings | None) -> tuple[Path, ...]:
    """Where SQLMesh writes in the project, for a full disk whose error names no file (SQLMesh's
    worker processes): its ``.cache`` first when that is a mount of its own, then the project."""
    if settings is None:
        return ()
    cache, root = settings.project_root / ".cache", settings.project_root
    try:
        if cache.stat().st_dev != root.stat().st_dev:
            return cache, root
    except OSError:
        pass
    return (root,)


def _warehouse_failure(exc: BaseException, settings: Settings | None, command: str) -> tuple[str, int] | None:
    """The message and exit status for a failure of the warehouse itself, not of the command's data:
    a DuckDB file held by another process (75), one DuckDB refuses, a role without a privilege, a
    read-only server (2), a statement timeout, a full disk; None for anything else (a traceback)."""
    message = held_duckdb_lock(exc, command)
    if message is not None:
        return message, 75
    warehouse = settings.warehouse if settings else "(not known)"
    unreadable = unreadable_duckdb_file(exc, warehouse)
    if unreadable is not None:
        return f"error: {unreadable}", 1
    # the disk of a file that is not the warehouse's (the project's, where SQLMesh writes its .cache);
    # a PostgreSQL server's full disk names its own files (base/16384/16397): not this machine's
    on_duckdb = settings is None or settings.gateway != "postgres"
    elsewhere = full_disk_elsewhere(exc, warehouse, _project_folders(settings)) if on_duckdb else None
    if elsewhere is not None:
        where, error = elsewhere
        return (f"error: the disk holding {where} is full: {redact_userinfo(error)}\n  next: free space there "
                f"(`df -h {where}`), then rerun `{redact_userinfo(command)}`: what failed was rolled back, and what "
                "committed before it is kept"), 1
    if settings and settings.gateway == "postgres":
        from sources.connections import (STATEMENT_TIMEOUT, PostgresSettings, statement_timeout_hint,
                                         warehouse_privilege_error)

        w = PostgresSettings.from_env(settings.pg_prefix)
        denied = warehouse_privilege_error(exc, w)
        if denied is not None:
            return f"error: {redact_userinfo(str(denied))}", 2
        gone = next((e for e in exception_chain(exc) if type(e).__name__ in ("OperationalError", "InterfaceError")
                     and re.search(r"could not connect|connection refused|server closed the connection|connection "
                                   r"already closed|terminating connection", str(e), re.IGNORECASE)), None)
        if gone is not None:  # `elt transform` by hand while the server was down: a traceback (a scheduler probe)
            check = f"pg_isready -h {w.host} -p {w.port}"
            return (f"error: cannot reach the PostgreSQL warehouse {w.host}:{w.port}/{w.dbname}: {first_line(gone)}\n"
                    f"  next: check the server (`{check}`), then rerun `{redact_userinfo(command)}`: what failed was "
                    "rolled back, and a transform runs the intervals that did not complete; a scheduled run is retried"), 1
        full = next((e for e in exception_chain(exc) if getattr(e, "pgcode", None) == "53100"), None)  # disk_full
        if full is not None:
            return (f"error: the PostgreSQL warehouse {w.host}:{w.port}/{w.dbname} has no disk space left: "
                    f"{first_line(full)}\n  next: free space on the server's data disk (or ask its administrator), then "
                    f"rerun `{redact_userinfo(command)}`: what failed was rolled back, and what committed before it is "
                    "kept"), 1
        if STATEMENT_TIMEOUT in str(exc):
            return (f"error: the PostgreSQL warehouse {w.host}:{w.port}/{w.dbname} ended a statement of role {w.user}: "
                    f"{first_line(exc)}\n  next: {statement_timeout_hint(w.user)}"), 1
    full = warehouse_write_problem(exc, warehouse) if settings and settings.gateway == "duckdb" else None
    if full is None:
        return None
    return f"error: the warehouse {warehouse} could not be written: {first_line(exc)}\n  next: {full}", 1


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader closed it (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


# a pipeline command holding the file: `elt <command>`, `sqlmesh <command>` (not the UI, a viewer)
_PIPELINE_COMMAND = re.compile(r"(^|[/ ])(elt|sqlmesh)( |$)")
_SQLMESH_UI = re.compile(r"(^|[/ ])sqlmesh ui( |$)")


def held_duckdb_lock(exc: BaseException, command: str = "the command") -> str | None:
    """The message for DuckDB's "Could not set lock" anywhere in ``exc``'s chain (SQLMesh wraps it), else None.

    >>> held_duckdb_lock(OSError('IO Error: Could not set lock on file "/w.duckdb": Conflicting lock is '
    ...                          'held in /usr/bin/python3 (PID 99999999). See also ...')).splitlines()[0]
    'error: the warehouse /w.duckdb is open in another process, PID 99999999 (/usr/bin/python3)'
    >>> held_duckdb_lock(OSError('IO Error: Could not set lock on file "/w.duckdb": Conflicting lock is '
    ...                          'held in /srv/.venv/bin/elt transform (PID 99999999). See also ...')).splitlines()[-1][:45]
    '  next: wait for that command to finish (`elt'
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    match = None
    while match is None and current is not None and current not in seen:
        seen.append(current)
        match = _DUCKDB_LOCK.search(str(current))
        current = current.__cause__ or current.__context__
    if match is None:
        return None
    pid = match["pid"]
    # the full command line says which program it is (`sqlmesh ui`, `elt serve`, a notebook)
    program = forks.command_line(pid, fallback=match["program"])
    history = Path(os.environ.get("ELT_META_DUCKDB_PATH") or "elt_history.duckdb").name
    what = "the run history" if Path(match["file"]).name == history else "the warehouse"
    head = (f"error: {what} {match['file']} is open in another process, PID {pid} ({program})\n"
            "  DuckDB lets one process at a time write the file, and none while another holds it open, read-only "
            "ones (a BI tool, a notebook) included.\n")
    if _PIPELINE_COMMAND.search(program) and not _SQLMESH_UI.search(program):
        # a load, a transform, a plan: killing it is the one wrong answer (a probe was told to)
        return head + (f"  next: wait for that command to finish (`elt runs` lists the scheduler's; a `sqlmesh plan` "
                       f"waiting at its prompt holds the file until it is answered), then rerun "
                       f"`{redact_userinfo(command)}`")
    return head + (f"  next: close that program (for `sqlmesh ui`, stop it with Ctrl-C; a BI tool or a notebook: close "
                   f"its connection; or `kill {pid}`), then rerun `{redact_userinfo(command)}`; "
                   "docs/runbook.md#bi-tools-on-a-duckdb-warehouse says how BI tools read a DuckDB warehouse")


if __name__ == "__main__":
    sys.exit(main())
