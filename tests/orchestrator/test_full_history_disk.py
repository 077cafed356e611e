"""The run history's disk is full (on the embedded gateway it sits beside the warehouse, so it
fills with it): a job still pages on-call, and every message names the full disk.

The disk is real: a 2 MB tmpfs mounted by the test (root with mount rights, as on CI; skipped
elsewhere). A probe found that such a run sent no alert at all (the alert path reads and records
its state in the history), stayed `running` until the next tick blamed a process that died, and
that every tick said only `cannot rollback - no transaction is active`.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.orchestrator.conftest import Project
from tests.orchestrator.receivers import WebhookReceiver


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_history_disk_still_pages_and_names_the_disk(project: Project, small_disk: Path) -> None:
    history = small_disk / "elt_history.duckdb"
    with WebhookReceiver() as hook:
        project.env.update(ELT_META_DUCKDB_PATH=str(history), ELT_ALERT_WEBHOOK_URL=hook.url, ELT_JOBS="quick")
        assert project.elt("run-job", "quick").returncode == 0  # the history exists and holds a run
        _fill(small_disk)

        job = project.elt("run-job", "quick")
        text = job.stdout + job.stderr
        assert job.returncode != 0, text
        assert "No space left on device" in text and "cannot rollback" not in text, text
        assert len(hook.received) == 1, hook.received  # paged, though the history could record nothing
        alert = hook.received[0]["text"]
        assert "FAILED" in alert and "job quick" in alert and str(history) in alert and "supervisor failed" in alert, alert
        assert "No space left on device" in alert and "df -h" in alert, alert

        tick = project.elt("tick", ELT_JOB_QUICK_SCHEDULE="* * * * *")
        assert "cannot rollback" not in tick.stdout + tick.stderr, tick.stdout + tick.stderr
        assert "No space left on device" in tick.stdout and "no run recorded" in tick.stdout, tick.stdout
        assert "elt run-show `" not in tick.stdout  # no run to show
        assert len(hook.received) == 1, hook.received  # once an hour per job, not at every tick
