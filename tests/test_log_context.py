"""A library's warning line (SQLMesh's failed non-blocking audit) carries the run's id, job and
attempt as the pipeline's own lines do: the runbook says to grep the logs for the run id, and the
one line naming the problem lacked it (an observability probe)."""

from __future__ import annotations

import io
import json
import logging


def test_a_library_warning_carries_the_runs_context(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.observe import logcontext
    from sources import logs

    stream = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("", "sources", "orchestrator")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    monkeypatch.setattr(logs, "_CONFIGURED", False, raising=False)
    monkeypatch.setenv("ELT_JSON_LOGS", "1")
    try:
        logs.configure(stream=stream)
        logcontext.install()
        with logcontext.run_context(run_id="r-123", job="transform", attempt="1"):
            logging.getLogger("sqlmesh.core.console").warning("'forall_non_blocking' audit error: 2 rows failed")
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"].startswith("'forall_non_blocking'") and line["run_id"] == "r-123", line
    assert line["job"] == "transform"
