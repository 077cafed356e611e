"""A wall clock stepped forward (NTP correcting a clock that was behind, a resumed VM) while a job
runs: the next tick must not take the run for one past its timeout. It did (a probe): the tick
measured the run's age by the wall clock while its supervisor measures its own timeout on a
monotonic clock, so a 10-second-old run was SIGKILLed, recorded `killed by signal 9` and alerted
as failed."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.orchestrator.conftest import Project, wait_for

PY = sys.executable
JUMP = """
import datetime as dt, time_machine
from orchestrator.settings import Settings
from orchestrator.scheduling.tick import tick
with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=3), tick=True):
    print(tick(Settings.from_env()).render())
"""


def test_a_clock_stepped_forward_does_not_kill_a_healthy_run(project: Project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    jobs = tmp_path / "jobs-slow.yaml"
    jobs.write_text(yaml.safe_dump({"jobs": {"slowjob": {
        "command": [PY, "-c", "import time; time.sleep(6)"], "schedule": "@daily", "timeout": "30m", "attempts": 1}}}))
    project.env.update(ELT_JOBS_FILE=str(jobs), ELT_JOBS="slowjob")
    job = project.popen("run-job", "slowjob")
    try:
        wait_for(lambda: [r for r in project.history().running() if r.job == "slowjob" and r.pid], timeout=60,
                 what="the run to be recorded with its attempt's pid")
        jumped = subprocess.run([PY, "-c", JUMP], cwd=project.root, env=project.env, capture_output=True, text=True,
                                timeout=120)
        assert jumped.returncode in (0, 1), jumped.stderr
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert "killing an orphaned run past its timeout" not in jumped.stdout + jumped.stderr, jumped.stderr
    assert job.returncode == 0, out + err
    assert "job slowjob: succeeded" in out, out
