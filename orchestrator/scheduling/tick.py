"""One scheduler tick: mark abandoned runs, evaluate freshness, start what is due.

``elt tick`` is meant to be called every minute (cron, a systemd timer); ``elt serve`` calls it in
a loop. A tick takes the ``scheduler`` lock without waiting: while a previous tick is still running
its jobs, the new one only does the cheap part (abandoned runs, freshness) and returns; slots that
came due meanwhile are caught up by the next tick that gets the lock, by the catch-up policy
(``ELT_CATCHUP``: ``combined`` by default, ``each`` or ``latest``; see orchestrator.scheduling.schedule).

Order inside a tick: due load and command jobs first (in parallel on PostgreSQL, one after the
other on DuckDB, which has one writer per file, and on Spark, whose local metastore admits one
process), then the transformation if due, so a
transformation always sees the loads of its tick. A failed load does not stop the others nor the
transformation: models reading the failed source simply see its previous raw data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.observe.freshness import Freshness
from orchestrator.observe.history import History, RunRecord
from orchestrator.scheduling.jobs import Job, all_jobs
from orchestrator.scheduling.locks import make_lock
from orchestrator.scheduling.runner import JobResult, mark_abandoned, run_job, utcnow
from orchestrator.scheduling.schedule import Due, due_runs
from orchestrator.settings import Settings
from sources.errors import ConfigError
from sources.logs import get_logger, redact_userinfo

log = get_logger("orchestrator.scheduling.tick")


@dataclass
class TickReport:
    now: datetime
    abandoned: list[RunRecord] = field(default_factory=list)
    started: list[JobResult] = field(default_factory=list)
    busy: bool = False  # another tick held the scheduler lock
    busy_holder: str | None = None  # that tick, as its lock says
    freshness: list[Freshness] | None = None  # None: the warehouse was busy, checked next tick

    def render(self) -> str:
        lines = [f"tick at {self.now:%Y-%m-%d %H:%M} UTC"]
        stale = [f.subject for f in self.freshness or [] if f.state == "stale"]
        if stale:
            lines.append(f"  stale: {', '.join(stale)}")
        lines += [f"  abandoned: {r.job} run {r.run_id} attempt {r.attempt}" for r in self.abandoned]
        if self.busy:
            by = f" ({self.busy_holder})" if self.busy_holder else ""
            lines.append(f"  another tick holds the scheduler lock{by} (it runs the due jobs); nothing started here")
        for r in self.started:
            run = f"run {r.run_id}" if r.run_id else "no run recorded"
            lines.append(f"  {r.job}: {r.status} ({run}, {r.attempts} attempt(s)){' - ' + r.error if r.error else ''}")
            if r.status in ("failed", "timed_out") and not r.run_id:
                lines.append("    next: the supervisor failed before recording the run (the error above; a run history on "
                             "a full disk: `df -h`): fix that, then `elt runs`; docs/runbook.md#a-job-failed")
            elif r.status in ("failed", "timed_out"):  # the output often lands in a file nobody reads until it breaks
                lines.append(f"    next: `elt run-show {r.run_id}` (its output and exit code); docs/runbook.md#a-job-failed")
        if not self.started and not self.busy:
            lines.append("  nothing due")
        return "\n".join(lines)


def _parallelism(settings: Settings) -> int:
    # one writer: a DuckDB file, or Spark local mode's embedded metastore (one JVM at a time)
    if settings.gateway in ("duckdb", "spark"):
        return 1
    return max(1, int(os.environ.get("ELT_MAX_PARALLEL_LOADS", "2")))


def tick(settings: Settings, now: datetime | None = None, *, clock: Callable[[], datetime] = utcnow) -> TickReport:
    now = now or clock()
    history = History.open(settings)
    history.record_tick(clock())  # the wall clock, also for a replay (--now): `elt status` shows it
    report = TickReport(now)
    report.abandoned = mark_abandoned(settings, history, now)
    report.freshness = check_freshness(settings, history, now)
    scheduler = make_lock(settings, "scheduler")
    if not scheduler.try_acquire():
        report.busy, report.busy_holder = True, scheduler.holder()
        return report
    try:
        policy = os.environ.get("ELT_CATCHUP", "combined")
        jobs = all_jobs(settings)
        plans: list[tuple[Job, Due]] = []
        for job in jobs.values():
            for due in due_runs(job.cron, history.last_slot(job.name), now, policy):
                plans.append((job, due))
        first = [(j, d) for j, d in plans if j.kind != "transform"]
        last = [(j, d) for j, d in plans if j.kind == "transform"]

        def start(item: tuple[Job, Due]) -> JobResult:
            job, due = item
            try:
                return run_job(settings, job, trigger="schedule", slot=due.slot, interval_start=due.interval_start,
                               missed=due.missed, now=clock)
            except ConfigError:
                raise  # the configuration, not this job: every job would fail the same way (exit 2)
            except Exception as exc:  # noqa: BLE001 - one job's bookkeeping must not stop the others
                # the run history's connection went while the job was started (a scheduler probe: the
                # tick ended in a traceback, and the loads after it and the transform never started).
                # Its slot stays due unless a run was recorded (History.last_slot): the next tick runs it
                error = redact_userinfo(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                log.error("job could not be started", extra={"fields": {"job": job.name, "error": error}})
                return JobResult("", job.name, "failed", 0, f"not started: {error}")

        with ThreadPoolExecutor(max_workers=_parallelism(settings)) as pool:
            report.started += list(pool.map(start, first))
        report.started += [start(item) for item in last]
    finally:
        scheduler.release()
    return report


def _alert_freshness_once(settings: Settings, history: History, results: list[Freshness], now: datetime) -> None:
    """Send the freshness alerts of ``results`` unless another tick is sending them right now.
    Alerting reads each subject's previous state, sends, then records the new one: ticks started
    together (a systemd timer and a manual tick, one cron tick per host) each read the old state
    and each paged, once per tick, as soon as a channel took longer than the gap between them
    (a probe: 4 ticks, a webhook answering in 1 s, every STALE alert 4 times). The tick that holds
    the lock sends what both would; the others skip alerting, not the check."""
    from orchestrator.observe import alerts
    from orchestrator.scheduling.locks import make_lock

    lock = make_lock(settings, "alerts")
    if not lock.try_acquire():
        log.info("freshness alerts skipped: another tick is sending them", extra={"fields": {}})
        return
    try:
        alerts.on_freshness(settings, history, results, now)
    finally:
        lock.release()


def check_freshness(settings: Settings, history: History, now: datetime) -> list[Freshness] | None:
    """Evaluate freshness and alert on changes; never fails the tick."""
    from orchestrator.observe import alerts, freshness

    if settings.gateway == "spark":  # not read on Spark (freshness.SPARK_NOT_READ); said by the how-to
        return None
    try:
        results = freshness.evaluate(settings, now)
        if results is not None:
            _alert_freshness_once(settings, history, results, now)
        return results
    except Exception as exc:  # noqa: BLE001 - a freshness problem must not stop the jobs
        log.error("freshness check failed", extra={"fields": {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}})
        return None
