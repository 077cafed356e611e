"""Logging and progress: readable lines on a terminal, one JSON object per line otherwise.

>>> log = get_logger("sources.example")
>>> log.info("landed", extra={"fields": {"table": "orders", "rows": 3}})

Every record of the pipeline's loggers has the user-info of any URL in it (``user:password@``) and
the value of any credential-named parameter (``;token=``, ``api_key=``, ``password=``) redacted, in
its message, its structured fields and its exception: a defence in depth behind the callers, which
redact what they print (see ``redact_userinfo``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
from datetime import UTC, datetime
from typing import Any, TextIO

_CONFIGURED = False
# scheme://<user-info>@: up to the last "@" before the URL's path, query, fragment or end
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/?#\"'<>]*@", re.IGNORECASE)
# user:password@ whose password holds an unencoded '/', '?' or '#': URL parsers end the host there
# and find no user-info at all. Told from a port (``host:8080/x/@me``) by what follows the colon.
_HIDDEN_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s:/?#@\[\]\"'<>]+:(?![0-9]*(?:[/?#]|$))[^\s@\"'<>]*?[/?#][^\s@\"'<>]*@",
                              re.IGNORECASE)
# A credential carried as a parameter: a URL's query (``?api_key=``, ``&access_token=``, a presigned
# S3 URL's ``X-Amz-Signature=``), Spark Connect's ``sc://host:15002/;token=...``, a libpq
# connection string's ``password=...``, a command line's ``--password=...`` or ``--password ...``,
# an environment assignment (``ELT_PG_PASSWORD=...``, ``AWS_SECRET_ACCESS_KEY=...``), a YAML or
# header line (``password: "..."``, ``Authorization: Bearer ...``). The name is kept, the value
# (quoted, or up to the next separator) goes. A name must end in the credential word:
# ``page_token_count=1`` or ``tokens=3`` are left alone.
_SECRET_NAME = (r"[\w-]*?(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|access[_-]?key|secret[_-]?key"
                r"|private[_-]?key|credentials?|signature|authorization)|sig")
_SECRET_PARAM = re.compile(
    rf"(?<![\w-])(-{{0,2}}(?:{_SECRET_NAME})[\"']?\s*[=:]\s*(?:(?:bearer|basic|token)\s+)?)"
    r"""(?!\.\.\.(?:\s|$))("[^"]*"|'[^']*'|[^\s;&#"'<>,)]+)""",  # "...": a placeholder in a hint
    re.IGNORECASE)
# ``--password VALUE``: a command-line flag and its value, separated by a space
_SECRET_FLAG = re.compile(rf"(?<![\w-])(--?(?:{_SECRET_NAME})\s+)(?!-)(\S+)", re.IGNORECASE)
# Values read from the environment as secrets in this process (``secret_from_env``): replaced
# wherever they appear, whatever surrounds them (a driver's message, a YAML parser's quote of a
# line). Shorter ones are not matched verbatim: they would blank ordinary words out of messages.
_KNOWN_SECRETS: list[str] = []  # longest first: a secret containing another is replaced whole
KNOWN_SECRET_MIN_LENGTH = 6
LIBRARY_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def hides_userinfo(url: str) -> bool:
    """True when ``url`` has a user-info whose password holds an unencoded '/', '?' or '#', which
    URL parsers take for the end of the host (so they find no credentials to keep out of messages).

    >>> hides_userinfo("http://ann:S3CR/3T@api/v1"), hides_userinfo("http://ann:S3CR%2F3T@api/v1"), hides_userinfo("http://api:8080/@me")
    (True, False, False)
    """
    return bool(_HIDDEN_USERINFO.match(url))


def register_secret(value: str | None) -> None:
    """Redact ``value`` (a secret this process read) from everything ``redact_userinfo`` cleans.

    >>> register_secret("pw-\\"quoted\\\\")
    >>> redact_userinfo('in "<unicode string>", line 3: "pw-\\"quoted\\\\" and pw-"quoted\\\\')
    'in "<unicode string>", line 3: "***" and ***'
    """
    if value and len(value.strip()) >= KNOWN_SECRET_MIN_LENGTH:
        forms = {value, value.strip(), value.replace("\\", "\\\\").replace('"', '\\"')}
        _KNOWN_SECRETS[:] = sorted(forms.union(_KNOWN_SECRETS), key=len, reverse=True)


def redact_userinfo(text: str) -> str:
    """``text`` with the user-info of every URL in it (``user:password@``) replaced by ``***@``,
    the value of every credential-named parameter (``token=``, ``password=``, ``api_key=``...) by
    ``***``, and every secret this process read (``register_secret``) by ``***``.

    >>> redact_userinfo("GET http://ann:S3CR3T@api.example.com/v1 failed; postgresql://u:p@ss@db:5432/x")
    'GET http://***@api.example.com/v1 failed; postgresql://***@db:5432/x'
    >>> redact_userinfo("s3://KEY:SECRET@bucket/a@b, mail ops@example.com, https://example.com/@team")
    's3://***@bucket/a@b, mail ops@example.com, https://example.com/@team'
    >>> redact_userinfo("GET http://ann:S3CR/3T@api:8080/v1, http://ann:S3?CR#3T@api/v1, http://api:8080/u/@me")
    'GET http://***@api:8080/v1, http://***@api/v1, http://api:8080/u/@me'
    >>> redact_userinfo("sc://spark:15002/;user_id=etl;token=S3CR3T and https://api/x?page=2&api_key=S3CR3T#f")
    'sc://spark:15002/;user_id=etl;token=*** and https://api/x?page=2&api_key=***#f'
    >>> redact_userinfo("host=db user=etl password='S3 CR3T' dbname=app; tokens=3, page_token_count=1")
    'host=db user=etl password=*** dbname=app; tokens=3, page_token_count=1'
    >>> redact_userinfo("cmd --api-key=S3CR3T ELT_PG_PASSWORD=S3CR3T --password S3CR3T secret_key: 'S3CR3T' x")
    'cmd --api-key=*** ELT_PG_PASSWORD=*** --password *** secret_key: *** x'
    >>> redact_userinfo('password: "S3 CR3T", Authorization: Bearer S3CR3T; primary_key=id, --token-file /run/t')
    'password: ***, Authorization: Bearer ***; primary_key=id, --token-file /run/t'
    >>> redact_userinfo("next: export API_TOKEN=... or API_TOKEN_FILE=/path/to/secret")
    'next: export API_TOKEN=... or API_TOKEN_FILE=/path/to/secret'
    >>> redact_userinfo("{'user': 'etl', 'password': 'S3CR3T'}")
    "{'user': 'etl', 'password': ***}"
    """
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    if "@" in text:
        text = _USERINFO.sub(r"\1***@", _HIDDEN_USERINFO.sub(r"\1***@", text))
    if "=" in text or ":" in text:
        text = _SECRET_PARAM.sub(r"\1***", text)
    if "-" in text:
        text = _SECRET_FLAG.sub(r"\1***", text)
    return text


def redacted(value: Any) -> Any:
    """``value`` (text, or dicts and lists of it) with ``redact_userinfo`` applied to every text in it."""
    if isinstance(value, str):
        return redact_userinfo(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    if value is None or isinstance(value, (int, float, datetime)):
        return value
    text = str(value)  # an object printed as text (a path, an exception): redacted if it has a URL
    clean = redact_userinfo(text)
    return value if clean == text else clean


class RedactFilter(logging.Filter):
    """Redact URL user-info and credential parameters in a record's message, fields and exception,
    whatever handler gets it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return True
        if redact_userinfo(message) != message:
            record.msg, record.args = redact_userinfo(message), None
        if getattr(record, "fields", None):
            record.fields = redacted(record.fields)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_userinfo(logging.Formatter().formatException(record.exc_info))
        return True


_REDACT = RedactFilter()


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
            line["error"] = redact_userinfo(str(record.exc_info[1]))
            line["traceback"] = _traceback(record)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        text = f"{record.levelname.lower():7} {record.getMessage()}"
        text = f"{text}  {extra}" if extra else text
        if record.exc_info and record.exc_info[1] is not None:  # log.exception: ELT_LOG_TRACEBACKS=1, a bug
            text = f"{text}\n{_traceback(record)}"
        return text


def _traceback(record: logging.LogRecord) -> str:
    """The record's traceback (``log.exception``), redacted like every other field."""
    if not record.exc_text:  # set by RedactFilter, which every handler of ours has
        record.exc_text = redact_userinfo(logging.Formatter().formatException(record.exc_info))  # type: ignore[arg-type]
    return record.exc_text


def configure(stream: TextIO | None = None, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Send the pipeline's logs to ``stream`` (stderr): text on a TTY, JSON lines otherwise."""
    global _CONFIGURED
    stream = stream or sys.stderr
    for name in LIBRARY_SECRETS:  # read by boto3 and Arrow themselves, never through secret_from_env
        register_secret(os.environ.get(name))
    if json_lines is None:  # ELT_JSON_LOGS=1 (set by `elt --json-logs` for its child processes) forces JSON
        json_lines = os.environ.get("ELT_JSON_LOGS") == "1" or not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_REDACT)  # also for records of loggers not made by get_logger
    for name in ("sources", "orchestrator"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Libraries' warnings (SQLMesh's linter, its console's warnings in a quiet run) in the same
    # format, once. Without a root handler, SQLMesh's first module-level `logging.info` (its
    # analytics dispatcher, at every Context) made Python install one writing `WARNING:name:msg`:
    # every warning then came out twice on a terminal, and as a line that is not JSON in a log file
    # (a walkthrough)
    library = logging.StreamHandler(stream)
    library.setFormatter(handler.formatter)
    library.addFilter(_REDACT)
    library.setLevel(logging.WARNING)
    library._elt = True  # type: ignore[attr-defined]  # replaced, not added again, by the next configure
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_elt", False)] + [library]
    # SQLMesh's PostgreSQL fetchdf hands pandas a DBAPI connection and silences pandas' warning in a
    # catch_warnings block, which is not thread-safe: with the gateway's 4 concurrent tasks the
    # warning escaped now and then as a bare line in the JSON log stream (two probes, a CI run).
    # A process-wide filter holds in every thread, and survives any block restoring the filters
    warnings.filterwarnings("ignore", message="pandas only supports SQLAlchemy connectable", category=UserWarning)
    _CONFIGURED = True


def _redacting_excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """An uncaught exception's traceback, as Python prints it, redacted (``redact_userinfo``): a
    library's message (a YAML parser quoting a configuration line, a driver quoting a
    connection string) may hold a secret."""
    import traceback

    sys.stderr.write(redact_userinfo("".join(traceback.format_exception(kind, exc, tb))))


def install_excepthook() -> None:
    """Print uncaught exceptions through ``redact_userinfo`` (for commands: `elt`)."""
    sys.excepthook = _redacting_excepthook


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``, whose records are redacted for every handler (pytest's capture too)."""
    logger = logging.getLogger(name)
    logger.addFilter(_REDACT)  # once: addFilter ignores a filter already there
    return logger


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
