"""Progress and log format: a redrawn progress line on a terminal, structured lines otherwise."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

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


@pytest.mark.parametrize("json_lines", [True, False])
def test_a_logged_exception_carries_its_traceback_redacted(json_lines: bool) -> None:
    """``log.exception`` (ELT_LOG_TRACEBACKS=1, which the runbook's hints ask for) shows the
    traceback, in JSON lines and on a terminal; before, both formats dropped it."""
    out = io.StringIO()
    logs.configure(stream=out, json_lines=json_lines)
    try:
        try:
            raise ValueError("cannot reach http://etl:hunter2@db.internal/x")
        except ValueError:
            logs.get_logger("sources.test").exception("unexpected error", extra={"fields": {"table": "orders"}})
    finally:
        logging.getLogger("sources").handlers[:] = []
    text = json.loads(out.getvalue())["traceback"] if json_lines else out.getvalue()
    assert "Traceback (most recent call last):" in text and "in test_a_logged_exception_carries" in text, text
    assert "ValueError: cannot reach http://***@db.internal/x" in text and "hunter2" not in out.getvalue(), text


def test_url_user_info_is_redacted_in_every_part_of_a_record() -> None:
    """Message, arguments, structured fields (nested too) and the exception: for the pipeline's own
    handler and for any other handler (pytest's capture, a library's) alike."""
    out, records = io.StringIO(), []
    logs.configure(stream=out, json_lines=True)
    other = logging.Handler()
    other.emit = records.append  # type: ignore[method-assign]
    log = logs.get_logger("sources.test.redact")
    log.addHandler(other)
    try:
        try:
            raise ConnectionError("cannot reach postgresql://loader:pw-SECRET@db:5432/app")
        except ConnectionError:
            log.exception("GET %s failed", "http://ann:pw-SECRET@api.example.com/v1?page=2",
                          extra={"fields": {"url": "s3://KEY:pw-SECRET@bucket/prefix", "rows": 3,
                                            "urls": ["https://token-pw-SECRET@host/x"], "path": Path("/tmp/a")}})
        logs.get_logger("sources.test.plain").info("landed", extra={"fields": {"owner": "ops@example.com"}})
    finally:
        logging.getLogger("sources").handlers[:] = []
        log.removeHandler(other)
    text = out.getvalue()
    assert "SECRET" not in text and "ann:" not in text and "loader" not in text, text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["event"] == "GET http://***@api.example.com/v1?page=2 failed"
    assert (first["url"], first["urls"], first["rows"]) == ("s3://***@bucket/prefix", ["https://***@host/x"], 3)
    assert first["error"] == "cannot reach postgresql://***@db:5432/app" and first["path"] == "/tmp/a"
    assert second["owner"] == "ops@example.com"  # an address is no URL: kept
    [record] = records
    assert "SECRET" not in logging.Formatter().format(record) + str(record.fields)  # type: ignore[attr-defined]
    assert "postgresql://***@db:5432/app" in logging.Formatter().format(record)  # the traceback, redacted


def test_credential_parameters_are_redacted_in_every_part_of_a_record() -> None:
    """A Spark Connect URL's ``;token=``, a query's ``api_key=`` and a libpq connection string's
    ``password=`` lose their values in the message, the fields and the exception; their names and
    everything around them stay, so the line still says where it went wrong."""
    out = io.StringIO()
    logs.configure(stream=out, json_lines=True)
    log = logs.get_logger("sources.test.redact_params")
    try:
        try:
            raise ConnectionError("connection to host=db user=etl password=pw-SECRET dbname=app failed")
        except ConnectionError:
            log.exception("cannot reach %s", "sc://spark:15002/;user_id=etl;token=pw-SECRET",
                          extra={"fields": {"url": "https://api.example.com/v1?page=2&api_key=pw-SECRET"}})
    finally:
        logging.getLogger("sources").handlers[:] = []
    text = out.getvalue()
    assert "SECRET" not in text, text
    line = json.loads(text)
    assert line["event"] == "cannot reach sc://spark:15002/;user_id=etl;token=***"
    assert line["url"] == "https://api.example.com/v1?page=2&api_key=***"
    assert line["error"] == "connection to host=db user=etl password=*** dbname=app failed"


def test_the_pandas_warning_sqlmesh_silences_per_thread_is_silenced_for_the_process() -> None:
    """SQLMesh's PostgreSQL fetchdf silences pandas' "only supports SQLAlchemy connectable" warning
    in a catch_warnings block, which is not thread-safe: with 4 concurrent tasks it escaped as a bare
    line in the JSON log stream (two probes and a CI run saw it). The filter `configure` installs
    holds for the whole process; other warnings still show."""
    import threading
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        logs.configure(stream=io.StringIO())
        try:
            def fetch() -> None:  # as from a SQLMesh task thread
                warnings.warn("pandas only supports SQLAlchemy connectable (engine/connection) or database string "
                              "URI or sqlite3 DBAPI2 connection. Other DBAPI2 objects are not tested.", UserWarning)
                warnings.warn("another warning", UserWarning)

            thread = threading.Thread(target=fetch)
            thread.start()
            thread.join()
        finally:
            for name in ("sources", "orchestrator"):
                logging.getLogger(name).handlers[:] = []
                logging.getLogger(name).propagate = True
            logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_elt", False)]
    assert [str(w.message) for w in seen] == ["another warning"], [str(w.message) for w in seen]


def test_a_librarys_warning_is_one_line_of_the_pipelines_log() -> None:
    """SQLMesh's analytics dispatcher calls the module-level `logging.info`, which made Python give
    the root logger a handler of its own (`WARNING:sqlmesh.core.console:...`): every library warning
    then came out in that format, a line that is not JSON in a log file, and twice on a terminal
    beside SQLMesh's console (a walkthrough). The pipeline's handler takes it, once."""
    out = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    logs.configure(stream=out, json_lines=True)
    try:
        logs.configure(stream=out, json_lines=True)  # again (a forked child): still one handler of ours
        logging.info("Shutting down the event dispatcher")  # as SQLMesh's dispatcher does
        logging.getLogger("sqlmesh.core.console").warning("Linter warnings for models/x.sql")
        logging.getLogger("sqlmesh.core.console").info("not shown: below WARNING")
        assert len([h for h in root.handlers if getattr(h, "_elt", False)]) == 1
    finally:
        for name in ("sources", "orchestrator"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True
        root.handlers[:] = before
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["level"], x["logger"], x["event"]) for x in lines] == [
        ("warning", "sqlmesh.core.console", "Linter warnings for models/x.sql")], out.getvalue()
