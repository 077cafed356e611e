"""Run id, job and source on every log line of a run, whichever module writes it.

The supervisor sets the context for the run it supervises (a ``contextvars`` value, so parallel
runs in threads of one tick keep theirs apart); an attempt's child process gets it from
``ELT_RUN_ID``, ``ELT_JOB`` and ``ELT_SOURCE``. A filter on the log handlers adds it to every
record's structured fields, so the JSON lines of the loader and of SQLMesh's wrapper carry it too.

>>> with run_context(run_id="abc", job="jaffle_shop", source="jaffle_shop"):
...     current()["run_id"]
'abc'
>>> current()
{}
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

_CONTEXT: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("elt_log_context", default={})
ENV = {"run_id": "ELT_RUN_ID", "job": "ELT_JOB", "source": "ELT_SOURCE", "attempt": "ELT_ATTEMPT"}


def current() -> dict[str, object]:
    return dict(_CONTEXT.get())


@contextmanager
def run_context(**values: str | None) -> Iterator[None]:
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in values.items() if v}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        if context:
            record.fields = {**context, **(getattr(record, "fields", None) or {})}
        return True


def install() -> None:
    """Add the context to the pipeline's log handlers (call after ``sources.logs.configure``).

    An attempt's child process starts with the context of its run from the environment.
    """
    from_env: dict[str, object] = {key: os.environ[var] for key, var in ENV.items() if os.environ.get(var)}
    if str(from_env.get("attempt", "")).isdigit():  # a number, as the supervisor's own lines write it
        from_env["attempt"] = int(str(from_env["attempt"]))
    if from_env:
        _CONTEXT.set(from_env)
    # and the root's handler for libraries' warnings: SQLMesh's line naming a failed non-blocking
    # audit lacked the run id the runbook says to grep for (an observability probe)
    handlers = [h for name in ("sources", "orchestrator") for h in logging.getLogger(name).handlers]
    handlers += [h for h in logging.getLogger().handlers if getattr(h, "_elt", False)]
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
