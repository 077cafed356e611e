"""Read the run history: recent attempts, one run, and each job's current state; and the landed
batches set aside (``elt set-aside``), from the warehouse."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from orchestrator.observe.history import History, RunRecord
from orchestrator.scheduling.jobs import all_jobs
from orchestrator.scheduling.runner import utcnow
from orchestrator.settings import Settings
from sources.logs import redact_userinfo


def _ts(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def _duration(r: RunRecord) -> str:
    # an abandoned attempt's finish is when a tick found its process gone, not when it died
    if not r.finished_at or r.status == "abandoned":
        return "-"
    return f"{(r.finished_at - r.started_at).total_seconds():.1f}s"


def print_runs(settings: Settings, *, limit: int = 20, job: str | None = None, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    records = History.open(settings, interactive=True).recent(limit, job)
    print(f"{'run':<12} {'job':<16} {'try':>5} {'status':<15} {'trigger':<9} {'started (UTC)':<19} {'took':>8} "
          f"{'rows':>10}  error", file=out)
    for r in records:
        attempt = f"{r.attempt}/{r.max_attempts or '-'}" if r.attempt else "-"
        rows = f"{r.rows_loaded:,}" if r.rows_loaded is not None else "-"
        # one line per attempt: an error of several lines (a backfill's names the failed table and its
        # `next:` below) broke the table; `elt run-show` prints it whole
        error, *more = redact_userinfo(r.error or "").splitlines() or [""]
        if more:
            error += f" (more: `elt run-show {r.run_id}`)"
        print(f"{r.run_id:<12} {r.job:<16} {attempt:>5} {r.status:<15} {r.trigger:<9} {_ts(r.started_at):<19} "
              f"{_duration(r):>8} {rows:>10}  {error}", file=out)
    if not records:
        print("(no runs recorded yet: `elt tick`, `elt run-job JOB` and `elt backfill` record them)", file=out)


def print_run(settings: Settings, run_id: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    records = History.open(settings, interactive=True).run(run_id)
    if not records:
        print(f"error: no run {run_id!r} in the history; list runs with `elt runs`", file=sys.stderr)
        return 1
    first = records[0]
    print(f"run {run_id}: job {first.job} (source {first.source or '-'}), trigger {first.trigger}", file=out)
    print(f"  scheduled slot {_ts(first.scheduled_for)}, interval {_ts(first.interval_start)} .. "
          f"{_ts(first.interval_end)}", file=out)
    for r in records:
        span = (f"started {_ts(r.started_at)}, found dead at {_ts(r.finished_at)}" if r.status == "abandoned" else
                f"{_ts(r.started_at)} .. {_ts(r.finished_at)} ({_duration(r)})")
        print(f"  attempt {r.attempt}/{r.max_attempts or '-'}: {r.status}, {span}, pid {r.pid} on {r.host}", file=out)
        if r.rows_loaded is not None:
            print(f"    rows {r.rows_loaded:,}, bytes {r.bytes_loaded or 0:,}", file=out)
        for table, info in r.tables.items() if isinstance(r.tables, dict) else ():
            print(f"    {table}: {json.dumps(info)}", file=out)
        if r.watermark_before or r.watermark_after:
            print(f"    watermark before {r.watermark_before}, after {r.watermark_after}", file=out)
        if r.audits_json:
            print(f"    audits {_audits_shown(r.audits_json)}", file=out)
            for failed in _failed_audits(r.audits_json):  # a scheduled failure: its row and query are here
                print(f"    audit {failed.get('audit')} failed on {failed.get('model')}: {failed.get('count')} row(s)",
                      file=out)
                if failed.get("first_failing_row"):
                    row = ", ".join(f"{k}={v!r}" for k, v in failed["first_failing_row"].items())
                    print(f"      first failing row: {redact_userinfo(row)}", file=out)
                if failed.get("query"):
                    print(f"      audit query: {failed['query']}", file=out)
        if r.error:  # its later lines (a `next:`) indented under it, as a part of this attempt
            print(f"    error ({r.error_class}): " + redact_userinfo(r.error).replace("\n", "\n      "), file=out)
    return 0


def _failed_audits(audits_json: str) -> list[dict[str, Any]]:
    try:
        return [a for a in json.loads(audits_json).get("failed", []) if isinstance(a, dict)]
    except (ValueError, AttributeError):
        return []


def _audits_shown(audits_json: str) -> str:
    """The run's audit record without the failures' rows and queries (printed below it)."""
    try:
        record = json.loads(audits_json)
        record["failed"] = [{k: v for k, v in a.items() if k not in ("query", "first_failing_row")}
                            for a in record.get("failed", []) if isinstance(a, dict)]
        return json.dumps(record)
    except (ValueError, AttributeError, TypeError):
        return audits_json


def job_states(settings: Settings, now: datetime | None = None) -> list[dict[str, object]]:
    now = now or utcnow()
    history = History.open(settings, interactive=True)
    states = []
    for job in all_jobs(settings).values():
        last = history.recent(1, job.name)
        success = history.last_with_status(job.name, ("succeeded",))
        states.append({
            "job": job.name, "kind": job.kind, "schedule": job.schedule, "owner": job.owner,
            "last_slot": history.last_slot(job.name), "latest_due_slot": job.cron.previous(now),
            "last_status": last[0].status if last else "never ran", "last_run": last[0].run_id if last else None,
            "last_success": success.finished_at if success else None,
        })
    return states


def print_status(settings: Settings, now: datetime | None = None, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    states = job_states(settings, now)  # first: an unreachable warehouse is an error, not an empty table
    print(f"{'job':<16} {'kind':<9} {'schedule':<14} {'last slot':<19} {'last status':<15} {'last success':<19} run",
          file=out)
    for s in states:
        print(f"{s['job']:<16} {s['kind']:<9} {s['schedule']:<14} {_ts(s['last_slot']):<19} "  # type: ignore[arg-type]
              f"{s['last_status']:<15} {_ts(s['last_success']):<19} {s['last_run'] or '-'}", file=out)  # type: ignore[arg-type]
    print_scheduler(settings, now or utcnow(), out)
    print_backfill(settings, out)
    failed = [str(s["job"]) for s in states if s["last_status"] in ("failed", "timed_out", "abandoned")]
    if failed:
        print(f"\nlast run not successful: {', '.join(failed)}. Only runs of `elt run-job` and `elt tick` are recorded: "
              "a load or transform run by hand since then is not, and the job shows this status until its next "
              "recorded run (`elt run-job <job>` records one now). `elt run-show <run>` shows the failure.", file=out)
    if any(s["last_status"] == "never ran" for s in states):
        fresh = ("docs/how-to/run-on-a-spark-cluster.md#freshness-and-the-report" if settings.gateway == "spark"
                 else "`elt freshness`")
        print("\nnever ran: no run of the job is recorded here. The run history holds runs of `elt run-job` and "
              "`elt tick` (or of a scheduler calling them), and backfills (`elt runs --job 'elt backfill'`); "
              "`elt load`, `elt transform` and `elt demo` run by hand "
              f"are not recorded. How fresh the data is: {fresh}.", file=out)
    print_held(settings, out)
    print_set_aside(settings, out)
    print_deploys(settings, out)


def print_backfill(settings: Settings, out: TextIO) -> None:
    """The latest backfill that got its locks (recorded under job ``elt backfill``), and what to do
    when it did not finish: a failed or killed one left its new batches in raw, on which scheduled
    transforms may fail until its rerun (docs/runbook.md#backfill)."""
    from orchestrator.scheduling.jobs import BACKFILL_JOB
    from orchestrator.scheduling.runner import backfill_days, rerun_command

    history = History.open(settings, interactive=True)
    latest = next((r for r in history.recent(20, BACKFILL_JOB) if r.status != "skipped_locked"), None)
    if latest is None:
        return
    first, last = backfill_days(latest) or ("-", "-")
    what = f"run {latest.run_id} of {latest.source} for {first} .. {last}"
    if latest.status == "succeeded":
        print(f"\nbackfill: the latest, {what}, succeeded at {_ts(latest.finished_at)} UTC (`elt run-show "
              f"{latest.run_id}`: what it changed)", file=out)
    elif latest.status == "running":
        print(f"\nbackfill: {what} is running since {_ts(latest.started_at)} UTC (pid {latest.pid} on {latest.host}; "
              "if that process is gone, the next backfill or `elt tick` records it abandoned)", file=out)
    else:
        error = redact_userinfo(latest.error or "").splitlines()[:1]
        print(f"\nbackfill: the latest, {what}, {latest.status.replace('_', ' ')} at {_ts(latest.finished_at)} UTC"
              + (f": {error[0]}" if error else "") + f". Its new batches may be in raw, where scheduled transforms "
              f"can fail on them until it is rerun: {rerun_command(latest)}; `elt run-show {latest.run_id}` shows "
              "its error (docs/runbook.md#backfill)", file=out)


# cron and the systemd timer call `elt tick` every minute: older than this, it is worth a look
TICK_QUIET_S = 10 * 60


def print_scheduler(settings: Settings, now: datetime, out: TextIO) -> None:
    """When `elt tick` last ran: a daily job's last slot can be 23 hours old on a healthy
    scheduler, so it cannot say whether the scheduler is alive (a walkthrough)."""
    last = History.open(settings, interactive=True).last_tick()
    if last is None:
        print("\nscheduler: no `elt tick` recorded in this history (jobs run only by hand, by `elt run-job` or by "
              "another scheduler; docs/how-to/schedule-with-cron-systemd.md)", file=out)
        return
    age = (now - last).total_seconds()
    said = f"\nscheduler: last `elt tick` at {_ts(last)} UTC" + (f", {_ago(age)} ago" if age >= 0 else "")
    if age > TICK_QUIET_S:
        said += (f": none since, where cron or the systemd timer calls it every minute. Check its cron entry "
                 "or `systemctl list-timers elt-tick.timer`, and the tick log; under systemd a "
                 "tick still running its jobs holds the next one back (`elt runs` shows what runs)")
    print(said, file=out)


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes}m" if minutes < 120 else f"{minutes / 60:.1f}h" if minutes < 2880 else f"{minutes / 1440:.1f}d"


def print_held(settings: Settings, out: TextIO) -> None:
    """Rows the last successful scheduled transform held out of staging (tables declaring
    ``held_rows: warn`` pass with them, so the job's status alone does not show them)."""
    last = History.open(settings, interactive=True).last_with_status("transform", ("succeeded",))
    try:
        held = json.loads(last.audits_json).get("held", []) if last and last.audits_json else []
    except ValueError:
        held = []
    if held:
        print(f"\nheld out of staging and the marts at transform run {last.run_id} (held_rows: warn; "  # type: ignore[union-attr]
              "docs/runbook.md#rows-without-an-event-time, #orphan-rows):", file=out)
        for h in held:
            print(f"  {h.get('table')}: {h.get('rows'):,} row(s), {h.get('why')}", file=out)


def set_aside_batches(settings: Settings) -> list[tuple[Any, ...]] | None:
    """(source, table, batch id, rows, by, at, reason) of every set-aside batch, oldest first, as the
    warehouse records them; ``None`` if the warehouse is busy (a load holds DuckDB) or unreachable.

    On Spark they are read from landing's records instead (the same records every load honours and
    copies into raw): a status check must not start a JVM and a Spark session."""
    from orchestrator.observe.freshness import _warehouse

    try:
        if settings.gateway == "spark":
            return [(r.source, r.table, r.batch_id, r.rows, r.by, r.at_dt.astimezone(UTC).replace(tzinfo=None), r.reason)
                    for r in settings.open_landing().all_set_asides()]
        with _warehouse(settings) as query:
            if query is None:
                return None
            return query("SELECT source, table_name, batch_id, rows, set_aside_by, set_aside_at, reason "
                         "FROM elt_meta.set_aside_batches ORDER BY set_aside_at, batch_id")
    except Exception:  # noqa: BLE001 - status (the container's health check) must answer anyway
        return None


def print_deploys(settings: Settings, out: TextIO) -> None:
    """Each environment's last model deploy (``orchestrator.transform.deploys``): the commit, who,
    where and when, and the models it changed. Not on Spark (a status check starts no JVM)."""
    from orchestrator.observe.freshness import _warehouse

    try:
        if settings.gateway == "spark":
            return
        with _warehouse(settings) as query:
            if query is None:
                return
            rows = query("SELECT environment, git_commit, git_dirty, host, os_user, deployed_at, changed, reverted, status "
                         "FROM elt_meta.deploys d WHERE deployed_at = (SELECT max(deployed_at) FROM elt_meta.deploys e "
                         "WHERE e.environment = d.environment) ORDER BY environment")
    except Exception:  # noqa: BLE001 - no deploy recorded yet (no table), or a busy warehouse
        return
    if not rows:
        return
    print("\nlast model deploys (`elt transform`; docs/runbook.md#who-deployed-the-models):", file=out)
    for environment, commit, dirty, host, user, at, changed, reverted, status in rows:
        names = [n for n in (changed or "").split(", ") if n]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        commit_text = ((commit[:12] if commit else "no git commit") + (" (uncommitted changes)" if dirty else "")
                       + (" (a rollback: --allow-revert)" if reverted else ""))
        print(f"  {environment}: {commit_text} by {user}@{host} at {_ts(at)} UTC: {shown or '-'}", file=out)
        if status == "planning":  # killed mid-plan, or running now: some of it may be in place
            print(f"    its plan has not finished (still running, or the transform was killed): the next "
                  f"`elt transform` from that commit finishes it (docs/runbook.md#who-deployed-the-models)", file=out)


def print_set_aside(settings: Settings, out: TextIO) -> None:
    aside = set_aside_batches(settings)
    if aside is None:
        print("\nset-aside batches: not checked (the warehouse is busy, unreachable or unreadable: "
              "`elt freshness` says which)", file=out)
    elif aside:
        print(f"\nset-aside batches ({len(aside)}): landed, never applied; later batches of their tables apply. "
              "Bring one back with `elt set-aside SOURCE TABLE BATCH --undo`", file=out)
        for source, table, batch, rows, by, at, reason in aside:
            print(f"  {source}.{table} {batch} ({rows:,} rows) set aside by {by} at {_ts(at)} UTC: {reason}", file=out)
