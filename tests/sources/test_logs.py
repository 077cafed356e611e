"""Progress and log format: a redrawn progress line on a terminal, structured lines otherwise."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sources import logs


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    screen, records = FakeTTY(), io.StringIO()
    logger = logging.getLogger("tests.progress.tty")
    logger.handlers[:] = [logging.StreamHandler(records)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    progress = logs.Progress("app.orders extract", logger, stream=screen)
    for at in (0.1, 0.5, 0.6, 1.2):  # redrawn at most every 0.2 s
        clock[0] = at
        progress.advance(32_768)
    progress.done()
    drawn = [part for part in screen.getvalue().split("\r") if part.strip()]
    assert drawn == ["  app.orders extract: 65,536 rows, 2 batches, 0.5s",
                     "  app.orders extract: 131,072 rows, 4 batches, 1.2s"]
    assert screen.getvalue().endswith("\r")  # the line is cleared when the step ends
    assert records.getvalue().strip() == "app.orders extract done"


def test_progress_off_a_terminal_is_structured_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    logs.configure(stream=out)  # not a TTY: JSON lines
    try:
        progress = logs.Progress("app.orders extract", logs.get_logger("sources.test"), stream=io.StringIO())
        clock[0] = 4.0
        progress.advance(10)
        clock[0] = 11.0
        progress.advance(10)  # 10 s since the last line: one progress line
        clock[0] = 12.0
        progress.advance(10)
        progress.done()
    finally:
        logging.getLogger("sources").handlers[:] = []
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["event"], x["rows"], x["batches"]) for x in lines] == [
        ("app.orders extract progress", 20, 2), ("app.orders extract done", 30, 3)]


def test_json_logs_can_be_forced_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = FakeTTY()
    monkeypatch.setenv("ELT_JSON_LOGS", "1")  # what `elt --json-logs` hands to the jobs it starts
    logs.configure(stream=screen)
    try:
        logs.get_logger("sources.test").info("landed", extra={"fields": {"rows": 3}})
    finally:
        logging.getLogger("sources").handlers[:] = []
    assert json.loads(screen.getvalue())["rows"] == 3
