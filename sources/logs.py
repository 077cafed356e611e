"""Logging and progress: readable lines on a terminal, one JSON object per line otherwise.

>>> log = get_logger("sources.example")
>>> log.info("landed", extra={"fields": {"table": "orders", "rows": 3}})
"""

from __future__ import annotations

import json
import os
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

_CONFIGURED = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}) or {})
        if record.exc_info and record.exc_info[1] is not None:
            line["error"] = str(record.exc_info[1])
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        text = f"{record.levelname.lower():7} {record.getMessage()}"
        return f"{text}  {extra}" if extra else text


def configure(stream: TextIO | None = None, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Send the pipeline's logs to ``stream`` (stderr): text on a TTY, JSON lines otherwise."""
    global _CONFIGURED
    stream = stream or sys.stderr
    if json_lines is None:  # ELT_JSON_LOGS=1 (set by `elt --json-logs` for its child processes) forces JSON
        json_lines = os.environ.get("ELT_JSON_LOGS") == "1" or not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    for name in ("sources", "orchestrator"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


class Progress:
    """Rows, batches and elapsed time of a long step.

    On a TTY it redraws one line at most every 0.2 s; otherwise it logs a structured line at most
    every ``interval`` seconds, and always once at the end.
    """

    def __init__(self, label: str, logger: logging.Logger, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.label = label
        self.logger = logger
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.rows = 0
        self.batches = 0
        self.started = time.monotonic()
        self._last = self.started

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def advance(self, rows: int, batches: int = 1) -> None:
        self.rows += rows
        self.batches += batches
        now = time.monotonic()
        if self.tty and now - self._last >= 0.2:
            self.stream.write(f"\r  {self.label}: {self.rows:,} rows, {self.batches} batches, {self.elapsed:.1f}s")
            self.stream.flush()
            self._last = now
        elif not self.tty and now - self._last >= self.interval:
            self._log("progress")
            self._last = now

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
        self._log("done")

    def _log(self, event: str) -> None:
        self.logger.info(
            f"{self.label} {event}",
            extra={"fields": {"rows": self.rows, "batches": self.batches, "elapsed_s": round(self.elapsed, 3)}},
        )
