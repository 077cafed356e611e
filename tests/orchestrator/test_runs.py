"""Jobs run by the real `elt` command in subprocesses, recorded in the real history store:
locks, abandoned runs, timeouts that kill a process group, retries, and the tick's catch-up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.scheduling.locks import FileLock, lock_dir
from tests.orchestrator.conftest import Project, wait_for


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _statuses(project: Project, job: str) -> list[str]:
    return sorted(r.status for r in project.history().recent(50, job))


def test_two_concurrent_runs_give_one_run_and_one_skipped_locked(project: Project) -> None:
    first = project.popen("run-job", "slow", SLOW_S="5")
    wait_for(lambda: any(r.status == "running" for r in project.history().recent(5, "slow")), what="first run")
    second = project.elt("run-job", "slow")
    assert second.returncode == 75, second.stderr
    assert "skipped_locked" in second.stdout
    # a skip, not a failure: logged as a warning that says so, never as "did not succeed"
    assert "job skipped: another run holds its lock" in second.stderr and "did not succeed" not in second.stderr
    assert '"level": "error"' not in second.stderr, second.stderr
    # the holder is named, as the first run's supervisor wrote it into the lock file
    assert f"held by pid {first.pid} (elt run-job) on " in second.stderr, second.stderr
    assert first.wait(timeout=60) == 0
    assert _statuses(project, "slow") == ["skipped_locked", "succeeded"]


def test_sigkilled_run_is_marked_abandoned_and_its_lock_freed(project: Project) -> None:
    supervisor = project.popen("run-job", "slow", SLOW_S="120")
    record = wait_for(lambda: next((r for r in project.history().recent(5, "slow") if r.status == "running"
                                    and r.pid != supervisor.pid), None), what="attempt started")
    child = record.pid
    assert _alive(child)
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(timeout=10)
    wait_for(lambda: not _alive(child), timeout=20, what="the attempt to die with its supervisor")

    tick = project.elt("tick", "--now", "2026-11-25T06:00", ELT_JOBS="quick")
    assert tick.returncode == 0, tick.stderr
    assert "abandoned: slow" in tick.stdout
    [abandoned] = project.history().recent(5, "slow")
    assert abandoned.status == "abandoned" and abandoned.finished_at is not None
    assert "elt run-job slow" in (abandoned.error or "")
    # when the tick found it dead is not how long it ran (a walkthrough read it as a timeout)
    shown = project.elt("run-show", abandoned.run_id).stdout
    assert "abandoned, started " in shown and ", found dead at " in shown, shown
    [line] = [x for x in project.elt("runs", "--job", "slow").stdout.splitlines() if x.startswith(abandoned.run_id)]
    assert line.split()[7] == "-", line  # the 'took' column (the start is a date and a time)
    lock = FileLock("job:slow", lock_dir(project.settings()))
    assert lock.try_acquire()
    lock.release()
    # a second tick does not mark it again
    assert "abandoned" not in project.elt("tick", "--now", "2026-11-25T06:01", ELT_JOBS="quick").stdout


def test_hung_job_is_killed_at_its_timeout_with_its_children(project: Project, tmp_path: Path) -> None:
    proc = project.elt("run-job", "hang", timeout=60)
    assert proc.returncode == 1
    assert "timed_out" in proc.stdout and "timeout of 2s" in proc.stderr
    grandchild = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not _alive(grandchild), timeout=10, what="the job's child to be killed")
    # a timeout is not retried (the next slot is): one attempt although the job allows two
    [record] = project.history().recent(5, "hang")
    assert (record.status, record.attempt, record.error_class) == ("timed_out", 1, "Timeout")
    assert 1.5 <= (record.finished_at - record.started_at).total_seconds() < 30


def test_retryable_failures_are_retried_and_bad_input_is_not(project: Project, tmp_path: Path) -> None:
    flaky = project.elt("run-job", "flaky")
    assert flaky.returncode == 0, flaky.stderr
    attempts = project.history().recent(10, "flaky")
    assert sorted((r.attempt, r.status) for r in attempts) == [(1, "retrying"), (2, "retrying"), (3, "succeeded")]
    assert len({r.run_id for r in attempts}) == 1

    bad = project.elt("run-job", "bad")
    assert bad.returncode == 1
    [record] = project.history().recent(10, "bad")
    assert (record.status, record.attempt, record.max_attempts) == ("failed", 1, 3)
    shown = project.elt("run-show", record.run_id)
    assert "attempt 1/3: failed" in shown.stdout
    # a failed job in a tick's output (often a file nobody reads until it breaks) says where to look
    toggle = tmp_path / "broken"
    toggle.touch()
    tick = project.elt("tick", "--now", "2026-11-25T06:01", ELT_JOBS="toggle").stdout
    [run_id] = [r.run_id for r in project.history().recent(5, "toggle")]
    assert f"toggle: failed (run {run_id}, 1 attempt(s))" in tick and \
        f"    next: `elt run-show {run_id}` (its output and exit code); docs/runbook.md#a-job-failed" in tick, tick
    # elt status says a failed job's status stays until its next recorded run (loads run by hand are not)
    status = project.elt("status", ELT_JOBS="toggle").stdout
    assert "last run not successful: toggle. Only runs of `elt run-job` and `elt tick` are recorded" in status, status


def test_missed_slots_give_one_catch_up_run_and_a_slot_never_runs_twice(project: Project) -> None:
    env = {"ELT_JOBS": "quick"}
    assert "quick: succeeded" in project.elt("tick", "--now", "2026-11-25T00:10", **env).stdout
    # five hourly slots missed (01:00 .. 05:00): one combined run
    assert "quick: succeeded" in project.elt("tick", "--now", "2026-11-25T05:30", **env).stdout
    assert "nothing due" in project.elt("tick", "--now", "2026-11-25T05:59", **env).stdout
    runs = sorted(project.history().recent(10, "quick"), key=lambda r: r.started_at)
    assert [(r.scheduled_for.hour, r.interval_start.hour if r.interval_start else None) for r in runs] == \
        [(0, None), (5, 0)]
    status = project.elt("status", **env)
    assert "quick" in status.stdout and "2026-11-25 05:00:00" in status.stdout
    # whether the scheduler is alive: when a tick last ran (the wall clock, also for a replay)
    assert "\nscheduler: last `elt tick` at " in status.stdout and "m ago" in status.stdout, status.stdout
    assert "none since" not in status.stdout, status.stdout
    quiet = project.elt("status", "--now", (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"), **env)
    assert "3.0h ago: none since, where cron or the systemd timer calls it every minute" in quiet.stdout, quiet.stdout
    listing = project.elt("runs", "--job", "quick")
    assert listing.stdout.count("succeeded") == 2


def test_each_policy_runs_every_missed_slot(project: Project) -> None:
    env = {"ELT_JOBS": "quick", "ELT_CATCHUP": "each"}
    project.elt("tick", "--now", "2026-11-25T00:10", **env)
    out = project.elt("tick", "--now", "2026-11-25T03:10", **env).stdout
    assert out.count("quick: succeeded") == 3


def test_every_json_log_line_of_a_run_carries_run_id_job_and_source(project: Project, small_jaffle: Path) -> None:
    import json
    import shutil

    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    proc = project.elt("--json-logs", "run-job", "jaffle_shop", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) >= 3
    run_ids = {line.get("run_id") for line in lines}
    assert len(run_ids) == 1 and None not in run_ids
    assert all(line["job"] == "jaffle_shop" and line["source"] == "jaffle_shop" for line in lines)
    # lines of the attempt's child process (the loader's own loggers) carry them too
    assert any(line["logger"].startswith("sources.") for line in lines)
    # with one JSON type per field, whichever process wrote the line (a log store maps a field once)
    assert {type(line["attempt"]) for line in lines if "attempt" in line} == {int}
    assert any(line["logger"].startswith("sources.") and "attempt" in line for line in lines)

    # a failing run too: the attempt's error and the next step are JSON lines, not loose text
    shutil.rmtree(project.root / "data" / "jaffle-data")
    failed = project.elt("--json-logs", "run-job", "jaffle_shop", timeout=300)
    assert failed.returncode == 1
    lines = [json.loads(line) for line in failed.stderr.splitlines() if line.strip()]
    assert all(line["job"] == "jaffle_shop" and line["source"] == "jaffle_shop" and line["run_id"] for line in lines)
    [last] = [line for line in lines if line["event"] == "job did not succeed"]
    assert last["next"] == f"elt run-show {last['run_id']}" and "does not exist" in last["error"]
    assert any(line["event"] == "attempt failed" and line["logger"] == "orchestrator.scheduling.worker" for line in lines)


def test_serve_ticks_in_a_loop_and_stops_on_sigterm(project: Project) -> None:
    proc = project.elt("serve", "--interval", "0.2", "--max-ticks", "3", ELT_JOBS="quick")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("tick at") == 3
    assert proc.stdout.count("quick: succeeded") == 1  # the current slot runs once, not once per tick

    server = project.popen("serve", "--interval", "0.2", ELT_JOBS="quick")
    assert server.stdout is not None and server.stdout.readline().startswith("tick at")  # it is serving
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == -signal.SIGTERM  # ends by the signal: systemd counts that as a clean stop


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_tick_records_its_attempt_as_stopped_and_the_next_tick_runs_the_slot_again(
        project: Project, stop: signal.Signals) -> None:
    """systemd's stop (SIGTERM to the tick), a reboot, Ctrl-C. Before, the tick died at once: the
    attempt's record stayed "running" until the next tick called it abandoned (a FAILED alert
    blaming an OOM kill), and that tick said "nothing due": a daily job waited for the next day."""
    tick = project.popen("tick", "--now", "2026-11-25T06:00", ELT_JOBS="slow", SLOW_S="120")
    record = wait_for(lambda: next((r for r in project.history().recent(5, "slow") if r.status == "running"
                                    and r.pid != tick.pid), None), what="attempt started")
    tick.send_signal(stop)
    assert tick.wait(timeout=30) == -stop  # ends by the signal, as without a handler
    assert tick.stderr is not None
    err = tick.stderr.read()
    assert f"stopped by {stop.name}: the running attempts were stopped and recorded as stopped" in err, err
    wait_for(lambda: not _alive(record.pid), timeout=10, what="the attempt to be stopped")
    [stopped] = project.history().recent(5, "slow")
    assert stopped.status == "stopped" and stopped.finished_at is not None, stopped
    assert f"stopped by {stop.name}" in (stopped.error or "") and "runs again at the next tick" in (stopped.error or "")

    again = project.elt("tick", "--now", "2026-11-25T06:01", ELT_JOBS="slow", SLOW_S="0")
    assert again.returncode == 0, again.stderr
    assert "abandoned" not in again.stdout and "slow: succeeded" in again.stdout, again.stdout
    assert [r.status for r in project.history().recent(5, "slow")] == ["succeeded", "stopped"]


@pytest.mark.parametrize("escalation", ["grace", "second signal"])
def test_an_attempt_that_ignores_sigterm_is_killed_after_the_grace_or_at_a_second_signal(
        project: Project, escalation: str) -> None:
    """A job that ignores SIGTERM kept a stopped supervisor waiting for ever (systemd would SIGKILL
    everything, the run left `running`; an operator's second Ctrl-C did nothing)."""
    grace = "2" if escalation == "grace" else "300"
    tick = project.popen("tick", "--now", "2026-11-25T06:00", ELT_JOBS="stubborn", ELT_STOP_GRACE_S=grace)
    record = wait_for(lambda: next((r for r in project.history().recent(5, "stubborn") if r.status == "running"
                                    and r.pid != tick.pid), None), what="attempt started")
    time.sleep(0.5)  # the job's shell has set its trap
    tick.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        tick.wait(timeout=1)  # SIGTERM alone does not end this attempt
    assert _alive(record.pid)
    if escalation == "second signal":
        tick.send_signal(signal.SIGTERM)
    assert tick.wait(timeout=30) == -signal.SIGTERM
    assert tick.stderr is not None
    err = tick.stderr.read()
    assert f"it is killed in {float(grace):g} s if it has not ended (send the signal again to kill it now)" in err, err
    wait_for(lambda: not _alive(record.pid), timeout=10, what="the attempt to be killed")
    [stopped] = project.history().recent(5, "stubborn")
    assert stopped.status == "stopped" and stopped.finished_at is not None, stopped


def test_a_stopped_attempt_is_waited_for_without_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for a stopped attempt sleeps in steps (a first version spun on a zero timeout once
    the lock check was due: a busy core for the whole grace of every systemd stop)."""
    from orchestrator.scheduling import runner, stopping
    from orchestrator.scheduling.jobs import Job

    waits: list[float | None] = []

    class Attempt:  # ignores SIGTERM: only the grace ends it
        pid = 2 ** 22 + 1

        def wait(self, timeout: float | None = None) -> int:
            waits.append(timeout)
            if timeout is None:
                return -signal.SIGKILL
            time.sleep(timeout)
            raise subprocess.TimeoutExpired("attempt", timeout)

    class Lock:
        def still_held(self) -> bool:
            return True

    monkeypatch.setenv("ELT_LOCK_CHECK_S", "0.2")
    monkeypatch.setenv("ELT_STOP_GRACE_S", "1.5")
    killed: list[int] = []
    monkeypatch.setattr(runner, "_kill_group", killed.append)
    monkeypatch.setattr(runner, "kill_run_processes", lambda run_id: [])
    stopping.request(signal.SIGTERM)
    try:
        code = runner._wait(Attempt(), Job("stubborn", "command", "@daily", 60, 1), Lock(), "run-x")  # type: ignore[arg-type]
    finally:
        stopping.reset()
    assert code == -signal.SIGKILL and killed == [Attempt.pid]
    assert len(waits) < 10, f"{len(waits)} waits"  # about 4: 0.2 s, 1 s, 0.5 s, then the kill's wait


def test_a_run_that_finishes_while_the_tick_looks_is_not_marked_abandoned(project: Project) -> None:
    """The tick lists running records, then tries each job's lock. A run that finishes in between
    frees its lock after writing its status: the tick must keep that status, and alert nobody."""
    from datetime import datetime

    from orchestrator.observe.history import RunRecord
    from orchestrator.scheduling.runner import mark_abandoned

    history = project.history()
    started = datetime(2026, 11, 25, 6, 0)
    history.insert(RunRecord(run_id="r-finished", attempt=1, job="quick", trigger="manual", status="running",
                             started_at=started))
    listed = history.running()  # what the tick saw ...
    history.update("r-finished", 1, status="succeeded", finished_at=started)  # ... then the run finished

    class StaleView:  # the history as the tick saw it a moment earlier
        def running(self):  # type: ignore[no-untyped-def]
            return listed

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(history, name)

    assert [r.run_id for r in listed] == ["r-finished"]
    assert mark_abandoned(project.settings(), StaleView(), started) == []  # type: ignore[arg-type]
    [record] = history.run("r-finished")
    assert record.status == "succeeded" and record.error is None
    # and a run that really is still recorded as running (its lock free) is marked abandoned
    history.insert(RunRecord(run_id="r-dead", attempt=1, job="quick", trigger="manual", status="running",
                             started_at=started))
    assert [r.run_id for r in mark_abandoned(project.settings(), history, started)] == ["r-dead"]
    assert history.run("r-dead")[0].status == "abandoned"


def test_a_timed_out_job_loses_even_the_children_that_left_its_process_group(project: Project, tmp_path: Path) -> None:
    """`setsid` takes a child out of the job's process group, and on the embedded gateway it would
    keep the job's lock file open: the timeout finds it by its ELT_RUN_ID instead."""
    proc = project.elt("run-job", "escape", timeout=60)
    assert proc.returncode == 1 and "timed_out" in proc.stdout, proc.stdout + proc.stderr
    escaped = int((tmp_path / "escape.pid").read_text())
    wait_for(lambda: not _alive(escaped), timeout=10, what="the escaped child to be killed")
    lock = FileLock("job:escape", lock_dir(project.settings()))
    assert lock.try_acquire()  # nothing of the run holds the job's lock any more
    lock.release()


def test_the_transform_waits_for_all_its_locks_within_one_timeout(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Three busy locks, each freed after 0.4 of the transform's timeout: waiting for each up to the
    timeout would take 1.2 timeouts in all; the waits share one deadline, so the third is reported
    busy. (A fake clock: the locks advance it as a real wait would.)"""
    from orchestrator.scheduling import runner
    from orchestrator.scheduling.jobs import Job

    clock = {"now": 1000.0}
    timeout = 100

    class BusyLock:  # freed 0.4 timeouts after the transform first asks for it, however it polls
        def __init__(self, name: str) -> None:
            self.name, self.free_at = name, None

        def try_acquire(self) -> bool:
            self.free_at = self.free_at or clock["now"] + 0.4 * timeout
            return False

        def acquire(self, timeout: float) -> bool:
            clock["now"] = min(clock["now"] + timeout, max(clock["now"], self.free_at))
            return clock["now"] >= self.free_at

        def holder(self) -> str | None:
            return None

    monkeypatch.setattr(runner.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(runner, "make_lock", lambda settings, name: BusyLock(name))
    monkeypatch.setattr(runner, "transform_lock_names", lambda settings: ["load:a", "load:b", "sqlmesh:prod"])
    held: list[object] = []
    job = Job("transform", "transform", "@hourly", timeout_s=timeout, max_attempts=1)
    assert runner._transform_locks(None, job, held) == "sqlmesh:prod"  # type: ignore[arg-type]
    assert [lock.name for lock in held] == ["load:a", "load:b"]  # type: ignore[attr-defined]
    assert clock["now"] - 1000.0 == timeout  # waited the one budget, not more


def test_the_next_run_of_a_job_marks_its_killed_run_abandoned_without_a_tick(project: Project) -> None:
    """A job run only by hand (`elt run-job`, or another scheduler calling it) never sees a tick:
    the next run of the job holds its lock, which proves the recorded run's processes are gone."""
    supervisor = project.popen("run-job", "slow", SLOW_S="120")
    record = wait_for(lambda: next((r for r in project.history().recent(5, "slow") if r.status == "running"
                                    and r.pid != supervisor.pid), None), what="attempt started")
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(timeout=10)
    wait_for(lambda: not _alive(record.pid), timeout=20, what="the attempt to die with its supervisor")
    assert [r.status for r in project.history().recent(5, "slow")] == ["running"]

    rerun = project.elt("run-job", "slow", SLOW_S="0")
    assert rerun.returncode == 0, rerun.stderr
    assert "run abandoned" in rerun.stderr
    statuses = {r.run_id: r.status for r in project.history().recent(5, "slow")}
    assert statuses[record.run_id] == "abandoned"
    assert sorted(statuses.values()) == ["abandoned", "succeeded"]


def test_a_slot_claimed_by_a_run_that_left_no_record_runs_at_the_next_tick(project: Project) -> None:
    """A tick claimed 01:00 for the job and died before its run was recorded (or the claim's COMMIT
    was applied and its answer lost, as a scheduler probe on PostgreSQL found): the slot counted as
    taken, the next tick said "nothing due", and nothing ran until 02:00."""
    from datetime import datetime

    env = {"ELT_JOBS": "quick"}
    assert "quick: succeeded" in project.elt("tick", "--now", "2026-11-25T00:10", **env).stdout
    history = project.history()
    assert history.claim_slot("quick", datetime(2026, 11, 25, 1, 0), datetime(2026, 11, 25, 1, 0, 5))
    out = project.elt("tick", "--now", "2026-11-25T01:30", **env)
    assert "quick: succeeded" in out.stdout, out.stdout + out.stderr
    assert "was claimed by a run that left no record" in out.stderr, out.stderr
    runs = sorted(project.history().recent(10, "quick"), key=lambda r: r.started_at)
    assert [r.scheduled_for.hour for r in runs] == [0, 1], runs
    assert "nothing due" in project.elt("tick", "--now", "2026-11-25T01:40", **env).stdout  # and once only


def test_a_slot_a_tick_ran_with_a_clock_ahead_does_not_hold_the_schedule(project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Found by a calendar probe: one `elt tick` on a machine whose clock was a day ahead recorded
    its runs' slots a day ahead, and every later tick said "nothing due" until the clock passed
    them: a day without loads or transforms, with `elt status` showing a last slot in the future."""
    from datetime import timedelta

    from orchestrator.scheduling.runner import utcnow
    from orchestrator.scheduling.tick import tick

    env = {"ELT_JOBS": "quick"}
    for key, value in {**project.env, **env}.items():  # the in-process tick reads them as `elt` does
        monkeypatch.setenv(key, value)
    ahead = tick(project.settings(), clock=lambda: utcnow() + timedelta(days=1))
    assert [r.status for r in ahead.started] == ["succeeded"], ahead.render()
    out = project.elt("tick", **env)  # the machine's clock again
    assert "quick: succeeded" in out.stdout, out.stdout + out.stderr
    assert "is later than this machine's clock" in out.stderr and "a tick ran with a clock ahead" in out.stderr, out.stderr
    assert "nothing due" in project.elt("tick", **env).stdout  # once only


def test_a_job_that_cannot_be_started_does_not_stop_the_tick(project: Project, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """The run history's connection went while one job was being started: the tick ended in a
    traceback, and the jobs after it (the transform too) never started (a scheduler probe)."""
    from datetime import datetime

    from orchestrator.scheduling import tick as ticking

    for key, value in {**project.env, "ELT_JOBS": "quick,flaky"}.items():
        monkeypatch.setenv(key, value)
    real = ticking.run_job

    def history_gone_for_flaky(settings, job, **kwargs):  # type: ignore[no-untyped-def]
        if job.name == "flaky":
            raise ConnectionResetError("server closed the connection unexpectedly")
        return real(settings, job, **kwargs)

    monkeypatch.setattr(ticking, "run_job", history_gone_for_flaky)
    report = ticking.tick(project.settings(), datetime(2026, 11, 25, 0, 10))
    by_job = {r.job: r for r in report.started}
    assert by_job["quick"].status == "succeeded", report.render()
    assert by_job["flaky"].status == "failed" and "not started: server closed the connection" in by_job["flaky"].error, \
        report.render()


def test_a_tick_that_finds_another_tick_running_names_it(project: Project) -> None:
    """Two ticks at once: the second starts nothing and says which process holds the scheduler lock
    (a systemd timer and a hand-run tick; before, it said only "another tick")."""
    from orchestrator.scheduling.locks import FileLock, lock_dir

    running = FileLock("scheduler", lock_dir(project.settings()))
    assert running.try_acquire()
    try:
        tick = project.elt("tick", "--now", "2026-11-25T06:00", ELT_JOBS="quick")
    finally:
        running.release()
    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert f"another tick holds the scheduler lock (pid {os.getpid()} (" in tick.stdout, tick.stdout
    assert "nothing started here" in tick.stdout and not project.history().recent(5, "quick")


def test_a_run_job_stopped_by_its_scheduler_says_that_scheduler_runs_it_again(project: Project) -> None:
    """`elt run-job --trigger airflow` stopped by SIGTERM (Airflow's timeout, a cleared task): the
    record said "a scheduled slot runs again at the next tick", and under Airflow there is no tick
    (an Airflow hand-over probe). It names what started the run."""
    job = project.popen("run-job", "slow", "--trigger", "airflow", SLOW_S="120")
    record = wait_for(lambda: next((r for r in project.history().recent(5, "slow") if r.status == "running"
                                    and r.pid != job.pid), None), what="attempt started")
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=30)
    wait_for(lambda: not _alive(record.pid), timeout=10, what="the attempt to be stopped")
    [stopped] = project.history().recent(5, "slow")
    assert stopped.status == "stopped", stopped
    assert "it runs again when airflow next starts it (its next scheduled run, or the task cleared)" in \
        (stopped.error or "") and "next tick" not in (stopped.error or ""), stopped.error
