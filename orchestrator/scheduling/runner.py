"""Run one job: take its lock, claim its slot, run attempts in child processes with a hard timeout,
retry what is worth retrying, and write one history record per attempt.

The supervisor (this module, in the ``elt run-job`` or ``elt tick`` process) never runs the job's
code itself: each attempt is a child process in its own session (process group), so a timeout
kills the job with everything it started (``os.killpg(..., SIGKILL)``). The child dies with its
supervisor (``PR_SET_PDEATHSIG``), and on the embedded gateway it inherits the job's lock file
descriptor, so the lock is free exactly when no process of the run is alive. That is what lets the
next tick, or the next run of the same job, mark a run left "running" by a killed process as abandoned.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.observe.history import History, RunRecord, utcnow
from orchestrator.scheduling.jobs import BACKFILL_JOB, RETRYABLE_EXIT, TRANSFORM, Job
from orchestrator.scheduling.locks import held_by, make_lock
from orchestrator.scheduling import stopping
from orchestrator.scheduling.schedule import retry_delay
from orchestrator.scheduling.worker import without_secrets
from orchestrator.settings import Settings
from sources import forks
from sources.errors import exception_chain
from sources.logs import get_logger, redact_userinfo

log = get_logger("orchestrator.scheduling.runner")


@dataclass
class JobResult:
    run_id: str
    job: str
    status: str  # succeeded, failed, timed_out, skipped_locked, already_ran, stopped, not_started
    attempts: int = 0
    error: str = ""


def _retry_settings() -> tuple[float, float]:
    return float(os.environ.get("ELT_RETRY_BASE_S", "30")), float(os.environ.get("ELT_RETRY_CAP_S", "600"))


def run_job(settings: Settings, job: Job, *, now: Callable[[], datetime] = utcnow, **kwargs: Any) -> JobResult:
    """Run ``job`` to completion (all attempts) unless another run of it holds its lock; alert on a
    change of its state (failed / recovered). ``kwargs``: see ``_run_job``."""
    from orchestrator.observe.logcontext import run_context

    run_id = kwargs.pop("run_id", None) or uuid.uuid4().hex[:12]
    with run_context(run_id=run_id, job=job.name, source=job.source):
        try:
            result = _run_job(settings, job, now=now, run_id=run_id, **kwargs)
        except Exception as exc:
            alert_unrecorded(settings, job, run_id, exc)
            raise
        notify_job(settings, job, result, now())
    return result


# A run whose outcome the history could not record is alerted at most once per this many seconds
# per job (ticks come every minute; the marker lives outside the history, which cannot be written)
UNRECORDED_ALERT_EVERY_S = 3600


def alert_unrecorded(settings: Settings, job: Job, run_id: str, exc: BaseException) -> None:
    """Page on-call when the supervisor itself failed, usually because the run history could not be
    written (a full disk, often the warehouse's, where the DuckDB history lives by default). The
    alert path reads and records its state in that history, so it sent nothing: the run stayed
    `running`, and the next tick blamed a died process. This alert needs no history: it is sent as
    it is, at most once an hour per job once a channel took it (a marker file in this user's
    folder under the temporary folder), or every time if no marker can be kept."""
    from orchestrator.observe.alerts import Alert, send

    try:
        error = redact_userinfo(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        disk_full = any(isinstance(e, OSError) and e.errno == 28 or "No space left on device" in str(e)
                        for e in exception_chain(exc))
        marker = Path(tempfile.gettempdir()) / f"elt-unrecorded-alerts-{os.getuid()}" / (
            uuid.uuid5(uuid.NAMESPACE_URL, f"{settings.project_root}:{job.name}").hex[:16])
        try:
            if 0 <= time.time() - marker.stat().st_mtime < UNRECORDED_ALERT_EVERY_S:  # a future date: stale
                log.error("run not recorded; alert already sent this hour",
                          extra={"fields": {"job": job.name, "run_id": run_id, "error": error}})
                return
        except OSError:
            pass
        from orchestrator.observe.history import meta_duckdb_path

        where = meta_duckdb_path(settings) if settings.gateway != "postgres" else "elt_meta in the PostgreSQL warehouse"
        delivered = send(Alert(
            kind="failed", subject=f"job {job.name}", owner=job.owner,
            what=(f"job {job.name}: its supervisor failed, and the run (run {run_id}) may not be recorded in the run "
                  f"history ({where})"),
            error=error,
            investigate=("free space on the disk holding the run history (`df -h`), then `elt runs`; until then no "
                         "scheduled job can start" if disk_full else
                         "`elt runs` and the supervisor's log (the error above)") + " (runbook: docs/runbook.md#a-job-failed)"))
        if not any(delivered.values()):
            return  # no channel took it: the next failure tries again
        try:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()
            os.utime(marker)
        except OSError:
            pass  # on the same full disk: the alert goes out again next time, never not at all
    except Exception as alert_exc:  # noqa: BLE001 - the job's own error is what the caller raises
        log.error("alerting failed", extra={"fields": {"job": job.name, "error": type(alert_exc).__name__}})


def notify_job(settings: Settings, job: Job, result: JobResult, when: datetime) -> None:
    """Alert on a state change; a broken alert path is logged and never fails the run."""
    try:
        from orchestrator.observe.alerts import on_job_result

        on_job_result(settings, History.open(settings), job, result, when)
    except Exception as exc:  # noqa: BLE001
        log.error("alerting failed", extra={"fields": {"job": job.name, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}})


def _run_job(
    settings: Settings,
    job: Job,
    *,
    trigger: str = "manual",
    slot: datetime | None = None,
    interval_start: datetime | None = None,
    missed: int = 1,
    now: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = stopping.wait,
    run_id: str | None = None,
) -> JobResult:
    history = History.open(settings)
    run_id = run_id or uuid.uuid4().hex[:12]
    base = RunRecord(
        run_id=run_id, attempt=0, job=job.name, trigger=trigger, status="running", started_at=now(),
        source=job.source, scheduled_for=slot, interval_start=interval_start, interval_end=slot,
        max_attempts=job.max_attempts, pid=os.getpid(), host=socket.gethostname(),
    )
    lock = make_lock(settings, job.lock_name)
    if not lock.try_acquire():
        base.status, base.finished_at = "skipped_locked", now()
        base.error = f"another run of job {job.name} holds its lock{held_by(lock)}"
        history.insert(base)
        log.warning("job skipped: another run holds its lock",
                    extra={"fields": {"run_id": run_id, "job": job.name, "holder": lock.holder()}})
        return JobResult(run_id, job.name, "skipped_locked", 0, base.error)
    held: list[Any] = []
    try:
        # a run of this job still recorded as running lost its processes (we hold the job's lock):
        # record it now, without waiting for a tick (a job run only by hand may never see one)
        for record in history.running():
            if record.job == job.name and record.run_id != run_id:
                abandon_record(settings, history, record, job, now())
        last = history.last_slot(job.name) if slot is not None else None
        if slot is not None and last is not None and last >= slot:
            log.info("slot already ran", extra={"fields": {"run_id": run_id, "job": job.name, "slot": slot}})
            return JobResult(run_id, job.name, "already_ran")
        if job.kind == "transform":
            waiting = _transform_locks(settings, job, held)
            if waiting and stopping.requested():
                return JobResult(run_id, job.name, "not_started", 0, f"not started: elt was stopped by {stopping.signal_name()}")
            if waiting:  # the slot stays unclaimed: the next tick runs it
                base.status, base.finished_at = "skipped_locked", now()
                base.error = f"{waiting} stayed locked for {job.timeout_s}s (a load or another plan/run){held_by(make_lock(settings, waiting))}"
                history.insert(base)
                return JobResult(run_id, job.name, "skipped_locked", 0, base.error)
        if stopping.requested():  # stopped before it started (a tick's later job): nothing claimed
            return JobResult(run_id, job.name, "not_started", 0, f"not started: elt was stopped by {stopping.signal_name()}")
        if slot is not None and not history.claim_slot(job.name, slot, now()):  # under the job lock
            return JobResult(run_id, job.name, "already_ran")
        result = _attempts(settings, job, history, base, lock, missed, now, sleep)
        if result.status == "stopped" and slot is not None:  # not done: the next tick runs the slot again
            history.release_slot(job.name, slot, last, now())
        return result
    finally:
        for other in reversed(held):
            other.release()
        lock.release()


def transform_lock_names(settings: Settings) -> list[str]:
    """The locks anything that plans prod over raw holds, in the one order every holder takes them:
    every load job's lock (by name), then ``sqlmesh:prod`` (the lock of `elt transform`)."""
    from orchestrator.scheduling.jobs import all_jobs

    loads = sorted(j.lock_name for j in all_jobs(settings, filtered=False).values() if j.kind == "load")
    return [*loads, "sqlmesh:prod"]


def _transform_locks(settings: Settings, job: Job, held: list[Any]) -> str | None:
    """Wait for running loads, then for ``sqlmesh:prod``; return the lock that stayed busy, if any.

    The transformation waits for the loads it reads (every load job: they share raw schemas) and
    holds their locks while it runs, so no load writes raw under a plan (on DuckDB it could not
    anyway). Locks are always taken in the same order (job locks by name, then sqlmesh:prod, as
    ``elt backfill`` does), so two waiters cannot deadlock. All the waits together take at most
    the job's ``timeout_s``.
    """
    deadline = time.monotonic() + job.timeout_s  # one budget for all the waits, not one per lock
    for name in transform_lock_names(settings):
        other = make_lock(settings, name)
        if not other.try_acquire():
            log.info("transform waits for a lock", extra={"fields": {"job": job.name, "lock": name, "holder": other.holder()}})
            while not other.acquire(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if stopping.requested() or time.monotonic() >= deadline:
                    return name
        held.append(other)
    return None


def _attempts(settings: Settings, job: Job, history: History, base: RunRecord, lock: Any, missed: int,
              now: Callable[[], datetime], sleep: Callable[[float], None]) -> JobResult:
    base_s, cap_s = _retry_settings()
    status, error = "failed", ""
    for attempt in range(1, job.max_attempts + 1):
        record = RunRecord(**{**base.__dict__, "attempt": attempt, "started_at": now()})
        history.insert_or_keep(record)
        fields = {"run_id": base.run_id, "job": job.name, "source": job.source, "attempt": attempt,
                  "max_attempts": job.max_attempts, "missed_slots": missed}
        log.info("attempt started", extra={"fields": fields})
        # for history, logs and the alert text; JSON fields value by value (``without_secrets``)
        outcome = without_secrets(_one_attempt(settings, job, base.run_id, attempt, lock, base.trigger))
        status = outcome.pop("status")
        retryable = bool(outcome.pop("retryable", False)) and attempt < job.max_attempts
        error = outcome.get("error") or ""
        final_status = "retrying" if (status == "failed" and retryable and not stopping.requested()) else status
        history.update_or_keep(base.run_id, attempt, status=final_status, finished_at=now(), **outcome)
        log.info("attempt finished", extra={"fields": {**fields, "status": final_status, "error": error}})
        if final_status != "retrying":
            break
        delay = retry_delay(attempt, base=base_s, cap=cap_s)
        log.info("retrying", extra={"fields": {**fields, "delay_s": round(delay, 2)}})
        sleep(delay)
        if stopping.requested():  # during the backoff: the next attempt is not started
            stop = f"stopped by {stopping.signal_name()} before attempt {attempt + 1}"
            status, error = "stopped", f"{error} (then {stop})" if error else stop
            history.update_or_keep(base.run_id, attempt, status="stopped", error=error)
            break
    return JobResult(base.run_id, job.name, status, attempt, error)


def worker_command(job: Job, result_file: Path) -> list[str]:
    if job.kind == "command":
        return list(job.command)
    return [sys.executable, "-m", "orchestrator.scheduling.worker", job.name, "--result", str(result_file)]


def _runs_again(job: Job, trigger: str) -> str:
    """What reruns a stopped run, by what started it (``--trigger``: schedule is `elt tick`).

    >>> from orchestrator.scheduling.jobs import Job
    >>> _runs_again(Job("shop", "load", "@daily", timeout_s=60, max_attempts=1), "airflow")
    'it runs again when airflow next starts it (its next scheduled run, or the task cleared)'
    """
    if trigger == "schedule":
        return "a scheduled slot runs again at the next tick"
    if trigger == "manual":
        return f"a run started by hand is not repeated: rerun `elt run-job {job.name}`"
    return f"it runs again when {trigger} next starts it (its next scheduled run, or the task cleared)"


def _one_attempt(settings: Settings, job: Job, run_id: str, attempt: int, lock: Any,
                 trigger: str = "schedule") -> dict[str, Any]:
    """Run one attempt in a child process group; kill the whole group at the job's timeout."""
    with tempfile.TemporaryDirectory(prefix="elt-attempt-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**os.environ, "ELT_RUN_ID": run_id, "ELT_JOB": job.name, "ELT_ATTEMPT": str(attempt)}
        if job.source:
            env["ELT_SOURCE"] = job.source
        fd = lock.inheritable_fd()
        try:
            proc = subprocess.Popen(worker_command(job, result_file), env=env, start_new_session=True,
                                    pass_fds=(fd,) if fd is not None else (), preexec_fn=forks.dies_with(),
                                    cwd=settings.project_root)
        except OSError as exc:
            return {"status": "failed", "retryable": False, "error_class": type(exc).__name__,
                    "error": f"job {job.name}: cannot start {worker_command(job, result_file)[0]}: {exc.strerror}"}
        stopping.started(proc.pid)
        try:
            History.open(settings).update_or_keep(run_id, attempt, pid=proc.pid)  # the group to kill if orphaned
            code = _wait(proc, job, lock, run_id)
        finally:
            stopping.ended(proc.pid)
        if stopping.requested() and code != 0:
            kill_run_processes(run_id)  # what left the process group (setsid), as after a timeout
            return {"status": "stopped", "retryable": False, "error_class": "Stopped",
                    "error": f"job {job.name} was stopped by {stopping.signal_name()} sent to its supervisor (an "
                             "operator, systemd's stop, a reboot, a scheduler's timeout or cleared task): what the "
                             "attempt had not committed was rolled back; " + _runs_again(job, trigger)}
        if code == "timed_out":
            return {"status": "timed_out", "retryable": False, "error_class": "Timeout",
                    "error": f"job {job.name} exceeded its timeout of {job.timeout_s}s; its process group was killed"}
        if code == "lock_lost":
            return {"status": "failed", "retryable": False, "error_class": "LockLost",
                    "error": f"job {job.name} lost its lock (the database session holding it ended), so another run "
                             f"could start: the attempt was killed. next: check the PostgreSQL server, then "
                             f"`elt run-job {job.name}`"}
        assert isinstance(code, int)
        result: dict[str, Any] = {}
        if result_file.exists():
            result = json.loads(result_file.read_text())
        if code == 0:
            return {"status": "succeeded", **result}
        result.setdefault("error_class", "ExitStatus")
        if code < 0:
            result.setdefault("error", f"job {job.name} was killed by signal {-code}")
        result.setdefault("error", f"job {job.name} exited with status {code}")
        result.setdefault("retryable", code == RETRYABLE_EXIT)
        return {**result, "status": "failed"}


def _wait(proc: subprocess.Popen[bytes], job: Job, lock: Any, run_id: str) -> int | str:
    """The attempt's exit code; or kill everything of the attempt and say why: ``timed_out`` at the
    job's timeout, ``lock_lost`` as soon as the job's lock is found gone (checked every
    ``ELT_LOCK_CHECK_S`` seconds, default 15; a PostgreSQL advisory lock dies with its session).
    "Everything" is its process group plus what left the group (``setsid``) but carries the run's
    ``ELT_RUN_ID``, which could otherwise keep the job's lock file open."""
    every = float(os.environ.get("ELT_LOCK_CHECK_S", "15"))
    deadline = time.monotonic() + job.timeout_s
    next_check = time.monotonic() + every
    stop_by: float | None = None  # when a stopped attempt that has not ended is killed
    while True:
        now = time.monotonic()
        # woken every second at most, to see a stop (the signal handler only flags it); once stopping,
        # only the grace counts (the lock and the timeout no longer matter: the attempt is ending)
        until = stop_by if stop_by is not None else min(deadline, next_check)
        try:
            return proc.wait(timeout=max(0.0, min(1.0, until - now)))
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if stopping.requested():
                if stop_by is None:
                    grace = float(os.environ.get("ELT_STOP_GRACE_S", "30"))
                    stop_by = now + grace
                    log.warning(f"stopping: the attempt was sent SIGTERM; it is killed in {grace:g} s if it has not "
                                "ended (send the signal again to kill it now)",
                                extra={"fields": {"job": job.name, "pgid": proc.pid}})
                    continue
                if now < stop_by:
                    continue
                log.error("the stopped attempt did not end: killing it", extra={"fields": {"job": job.name,
                                                                                           "pgid": proc.pid}})
                _kill_group(proc.pid)
                kill_run_processes(run_id)
                return proc.wait()
            if now >= deadline:
                reason = "timed_out"
            elif now >= next_check:
                next_check = now + every
                if lock.still_held():
                    continue
                reason = "lock_lost"
                log.error("job lock lost; killing the attempt", extra={"fields": {"job": job.name, "pgid": proc.pid}})
            else:
                continue
            _kill_group(proc.pid)
            kill_run_processes(run_id)
            proc.wait()
            return reason


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_run_processes(run_id: str, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL every process on this host that carries ``ELT_RUN_ID=<run_id>`` in its environment.

    Every process of an attempt inherits that variable, including the ones it started in the
    background, which outlive the attempt's process group leader and its supervisor. This finds
    them exactly (never by a PID or process group number that may have been reused).
    """
    marker = f"ELT_RUN_ID={run_id}".encode()
    killed = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def mark_abandoned(settings: Settings, history: History, now: datetime) -> list[RunRecord]:
    """Runs recorded as running whose job lock is free: their processes are gone.

    The lock is held by every process of a live run (supervisor and inherited by the attempt), and
    the kernel or PostgreSQL releases it when they die, so a free lock is proof of death.
    """
    from orchestrator.scheduling.jobs import all_jobs

    jobs = all_jobs(settings, filtered=False)
    abandoned = []
    for record in history.running():
        job = jobs.get(record.job)
        lock = make_lock(settings, f"job:{record.job}")
        if not lock.try_acquire():
            # alive; but if its supervisor was killed, nobody enforces the timeout: do it here. The
            # attempt's age is read from the kernel (since boot), not the wall clock: a clock stepped
            # forward (NTP, a resumed VM) made a healthy 10-second-old run look hours old, and it was
            # killed with signal 9 and alerted as failed (a probe)
            here = record.host == socket.gethostname()
            age = process_age_s(record.pid) if here and record.pid else None
            elapsed = age if age is not None else (now - record.started_at).total_seconds()
            overdue = job is not None and elapsed > job.timeout_s + 60
            if overdue and here and record.pid:
                log.warning("killing an orphaned run past its timeout",
                            extra={"fields": {"run_id": record.run_id, "job": record.job, "pgid": record.pid}})
                _kill_group(record.pid)
                kill_run_processes(record.run_id)
            continue
        try:
            if abandon_record(settings, history, record, job, now):
                abandoned.append(record)
        finally:
            lock.release()
    return abandoned


def process_age_s(pid: int) -> float | None:
    """How long process ``pid`` has run, in seconds since its start by the kernel's boot-relative
    clock, which no change of the wall clock moves; None where it cannot be read (no such process,
    no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        started_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, after the comm
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def backfill_days(record: RunRecord) -> tuple[date, date] | None:
    """A backfill record's ``--start`` and ``--end`` days (its interval ends the day after ``--end``).

    >>> backfill_days(RunRecord("r", 1, BACKFILL_JOB, "manual", "running", datetime(2026, 1, 1),
    ...                         interval_start=datetime(2026, 1, 1), interval_end=datetime(2026, 1, 8)))
    (datetime.date(2026, 1, 1), datetime.date(2026, 1, 7))
    """
    if record.job != BACKFILL_JOB or not record.interval_start or not record.interval_end:
        return None
    return record.interval_start.date(), (record.interval_end - timedelta(days=1)).date()


def rerun_command(record: RunRecord) -> str:
    """The command that does again what an abandoned run did: a backfill's is its own command
    (orchestrator/transform/backfill.py records it under job ``elt backfill``), not a job's.

    >>> rerun_command(RunRecord("r", 1, BACKFILL_JOB, "manual", "running", datetime(2026, 1, 1), source="shop",
    ...                         interval_start=datetime(2026, 1, 1), interval_end=datetime(2026, 1, 8)))
    '`elt backfill shop --start 2026-01-01 --end 2026-01-07` (its difference still counts from before this attempt)'
    """
    days = backfill_days(record)
    if days:
        return (f"`elt backfill {record.source} --start {days[0]} --end {days[1]}` (its difference still counts "
                "from before this attempt)")
    return f"`elt run-job {record.job}`"


def abandon_record(settings: Settings, history: History, record: RunRecord, job: Job | None, now: datetime) -> bool:
    """Mark ``record`` abandoned, kill what its run left behind on this host, alert; False if it
    finished after it was listed. The caller holds the record's job lock: that is the proof the
    run's processes are gone."""
    if not history.abandon(record.run_id, record.attempt, finished_at=now, error_class="Abandoned",
                           error=f"the process running job {record.job} died (pid {record.pid} on "
                           f"{record.host}) without recording an end; next: look for its last log lines (grep the run id) "
                           "and, on its host, the system log for an OOM kill or a reboot, then " + rerun_command(record)):
        return False  # it finished (and freed its lock) after we listed it: not abandoned
    if record.host == socket.gethostname():
        # the lock died with the supervisor, but a background child of the job may live on
        # (PostgreSQL advisory locks are not inherited the way a lock file descriptor is)
        strays = kill_run_processes(record.run_id)
        if strays:
            log.warning("killed processes left by an abandoned run",
                        extra={"fields": {"run_id": record.run_id, "job": record.job, "pids": strays}})
    if job is not None:
        notify_job(settings, job, JobResult(record.run_id, job.name, "abandoned", record.attempt,
                                            f"the process running job {job.name} died"), now)
    log.warning("run abandoned", extra={"fields": {"run_id": record.run_id, "job": record.job,
                                                   "known_job": job is not None}})
    return True


JOB_ORDER = ("load", "command", "transform")


def is_transform(job: Job) -> bool:
    return job.name == TRANSFORM
