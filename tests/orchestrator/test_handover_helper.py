"""The `run_elt` helper that the hand-over how-to gives Dagster and Prefect code, run as written.

A scheduler stops a run by interrupting the Python code that waits for `elt` (Dagster raises its
interrupt error on SIGTERM or SIGINT, Prefect its termination signal). With `subprocess.run`, the
interrupt SIGKILLed `elt run-job`: the attempt died with it and its run stayed `running` until the
next tick called it abandoned, alerting as for an OOM kill (found with dagster 1.13.29 by hand,
decision 0087). The helper sends SIGTERM instead, so `elt run-job` records the attempt stopped.
Dagster and Prefect are not dependencies: the helper is plain Python, and the interrupt is an
exception raised by a SIGTERM handler in the process waiting for `elt`, as theirs do."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap

from tests.conftest import ROOT
from tests.orchestrator.conftest import Project, wait_for

HOWTO = ROOT / "docs" / "how-to" / "hand-over-to-airflow-dagster-prefect.md"


def _helper() -> str:
    blocks = re.findall(r"```python\n(.*?)```", HOWTO.read_text(), re.S)
    [helper] = [b for b in blocks if "def run_elt(" in b]
    assert 'GATEWAY = "postgres"' in helper, helper
    return helper.replace('GATEWAY = "postgres"', 'GATEWAY = "duckdb"')


def _scheduler_code(job: str) -> list[str]:
    """A process that runs the job through the how-to's helper, as an op or a task does. As in
    Dagster and Prefect, its own SIGTERM handler turns the stop into an exception (their
    ``DagsterExecutionInterruptedError``, ``TerminationSignal``): a handler of its own, not an
    inherited SIGINT disposition, which a shell starting CI in the background sets to ignore."""
    call = textwrap.dedent(f"""
        class Interrupted(BaseException):
            pass

        def _interrupt(signum, frame):
            raise Interrupted("stopped by the scheduler")

        signal.signal(signal.SIGTERM, _interrupt)
        proc = run_elt("run-job", {job!r}, "--trigger", "dagster")
        print("EXIT", proc.returncode)
    """)
    return [sys.executable, "-c", _helper() + call]


def test_an_interrupted_scheduler_run_is_recorded_stopped_not_left_running(project: Project) -> None:
    waiter = subprocess.Popen(_scheduler_code("slow"), cwd=project.root, env={**project.env, "SLOW_S": "120"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: [r for r in project.history().recent(5, "slow") if r.attempt == 1], timeout=60,
                 what="the job's attempt to start")
        waiter.send_signal(signal.SIGTERM)  # to the waiting process only, as a scheduler stops its run
        _, stderr = waiter.communicate(timeout=90)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert "Interrupted: stopped by the scheduler" in stderr, stderr  # re-raised: the scheduler sees it
    attempts = [r for r in project.history().recent(5, "slow") if r.attempt == 1]
    assert [(r.status, r.trigger) for r in attempts] == [("stopped", "dagster")], attempts
    assert "stopped by SIGTERM" in (attempts[0].error or ""), attempts[0].error


def test_the_helper_returns_the_exit_status_and_output(project: Project) -> None:
    done = subprocess.run(_scheduler_code("quick"), cwd=project.root, env=project.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "EXIT 0" in done.stdout, done.stdout + done.stderr
    assert [r.status for r in project.history().recent(5, "quick") if r.attempt == 1] == ["succeeded"]
