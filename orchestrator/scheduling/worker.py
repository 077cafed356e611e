"""One attempt of a load or transform job, in its own process: ``python -m orchestrator.scheduling.worker JOB --result FILE``.

Started by ``orchestrator.scheduling.runner`` (never by hand). It writes a JSON result (rows and bytes per
table, watermarks before and after, audits, error class and first line, whether a retry may help)
and exits 0 (succeeded), 75 (failed, worth retrying) or 1 (failed, not worth retrying).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from orchestrator.scheduling.jobs import RETRYABLE_EXIT, get_job
from orchestrator.settings import Settings
from sources import logs
from sources.errors import ConfigError, ConnectionFailed, ContractError, first_line, first_line_and_next, unreadable_duckdb_file, with_next

_TRANSIENT_TEXT = re.compile(
    r"HTTP 5\d\d|HTTP 429|connection (error|refused|reset)|timed? ?out|could not connect|"
    r"server closed the connection|connection already closed|lost the connection|lock timeout|could not set lock|"
    r"deadlock detected|still failing after|returned a body that is not JSON|where the previous whole read had|"
    r"changed while it was paged|came back empty but the page after it|"  # a REST read refused as shifted (0047)
    r"answered a stale page|an error the API sent with status 200|"  # a REST page a rerun reads again (0078)
    r"conflict with recovery|could not serialize access",  # a hot standby's cancel; a serialization failure
    re.IGNORECASE,
)


# SQLSTATEs a retry can fix: a serialization failure (a hot standby's recovery conflict too), a
# deadlock, too many connections, a server shutting down or starting, a lock not available, and
# the connection exceptions (class 08). Not: a disk full (53100), a program limit (54...), a
# missing file (58P01): each would be retried for nothing, delaying the alert.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03", "55P03",
                                  "08000", "08001", "08003", "08004", "08006"})


def _transient_sqlstate(item: BaseException) -> bool:
    """Whether a psycopg2 error's SQLSTATE is one a retry can fix: its ``pgcode`` when the server
    sent one, else its class (an error built from a SQLSTATE's class, as psycopg2 maps them)."""
    import psycopg2.errors

    code = getattr(item, "pgcode", None)
    if code:
        return code in _TRANSIENT_SQLSTATES
    return isinstance(item, tuple(psycopg2.errors.lookup(c) for c in _TRANSIENT_SQLSTATES))


def is_retryable(exc: BaseException) -> bool:
    """Worth retrying: network, 5xx, lock timeouts. Not: bad input, contracts, config, failed audits.

    >>> is_retryable(ConnectionResetError("peer reset"))
    True
    >>> is_retryable(ContractError("column id missing"))
    False
    >>> is_retryable(ConnectionFailed("not loaded: the connection to the PostgreSQL warehouse was lost while loading orders"))
    True
    >>> import psycopg2.errors
    >>> is_retryable(psycopg2.errors.SerializationFailure("canceling statement due to conflict with recovery"))
    True
    >>> is_retryable(psycopg2.errors.ProgramLimitExceeded("index row size 3000 exceeds btree version 4 maximum"))
    False
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, (ContractError, ConfigError)):
            return False
    for item in chain:
        if isinstance(item, (ConnectionError, TimeoutError, ConnectionFailed)):
            return True
        if type(item).__name__ in ("OperationalError", "URLError", "TransientHTTPError"):
            return True
        # psycopg2's errors by SQLSTATE are subclasses (SerializationFailure...): only those a retry can fix
        if type(item).__module__.startswith("psycopg2") and _transient_sqlstate(item):
            return True
        if _TRANSIENT_TEXT.search(str(item)):
            return True
    return False


def _cursors(settings: Settings, source: str, tables: list[str]) -> dict[str, Any]:
    try:
        with settings.open_raw() as raw:
            return {t: raw.cursor(source, t) for t in tables}
    except Exception:  # noqa: BLE001 - a watermark is informative; an empty warehouse has none
        return {}


def run_load(settings: Settings, source: str) -> tuple[dict[str, Any], bool]:
    from orchestrator.scheduling.loading import load_source_into_warehouse
    from sources.config import load_source

    spec = load_source(source)
    before = _cursors(settings, source, list(spec.tables))
    outcomes = load_source_into_warehouse(source, settings)
    after = _cursors(settings, source, list(spec.tables))
    landing = settings.open_landing()
    tables: dict[str, Any] = {}
    total_bytes = 0
    for o in outcomes:
        nbytes = 0
        if o.landed:
            for batch_id in o.landed:  # only the manifests of this run's batches
                nbytes += sum(f.bytes for f in landing.manifest(source, o.table, batch_id).files)
        total_bytes += nbytes
        tables[o.table] = {"status": o.status, "rows": o.rows_applied, "bytes": nbytes, "batches": o.applied, "set_aside": o.set_aside,
                           "error": first_line(o.error) if o.error else None}
    failed = [o for o in outcomes if o.error]
    result: dict[str, Any] = {
        "tables_json": json.dumps(tables), "rows_loaded": sum(o.rows_applied for o in outcomes),
        "bytes_loaded": total_bytes, "watermark_before": json.dumps(before, default=str),
        "watermark_after": json.dumps(after, default=str),
    }
    if failed:
        first = failed[0].error
        assert first is not None
        names = ", ".join(o.table for o in failed)
        result["error_class"] = type(first).__name__
        result["error"] = f"source {source}: table(s) {names} failed: {first_line_and_next(first)}"
        return result, all(is_retryable(o.error) for o in failed if o.error)
    return result, False


def run_transform(settings: Settings) -> tuple[dict[str, Any], bool]:
    from orchestrator.transform.run import TransformFailed, transform

    try:
        summary = transform(settings, environment="prod", quiet=True)
    except TransformFailed as exc:
        # the failing row and the audit query too: a scheduled run's failure is read in the history, an
        # alert and the report, where "the query above" of a transform run by hand is not (a probe)
        audits = [{"model": f.model, "audit": f.audit, "count": f.count, "query": f.query,
                   "first_failing_row": {k: str(v) for k, v in (f.failing_row or {}).items()}} for f in exc.failures]
        retry = not exc.failures and any(_TRANSIENT_TEXT.search(e) for e in exc.model_errors)
        detail = exc.failures[0].render().splitlines()[0] if exc.failures else (
            exc.model_errors[0] if exc.model_errors else first_line(exc))
        if exc.failures and exc.failures[0].args:  # which of a model's two relationship audits (a probe)
            detail += f"; checks: {exc.failures[0].args[:300]}"
        if exc.failures and exc.failures[0].failing_row:
            row = ", ".join(f"{k}={v!r}" for k, v in exc.failures[0].failing_row.items())
            detail += f"; first failing row: {row[:300]}"
        # a job's rerun is a job's run, recorded in the history and seen by the scheduler that started
        # it: `elt transform` by hand records nothing and left an Airflow task red (a hand-over probe)
        said = with_next(detail, str(exc)).replace(
            "(query above)", "(`elt run-show` of this run prints the audit query)").replace(
            "rerun `elt transform`", "rerun the transform job (`elt run-job transform`, which records the run; "
            "under Airflow, clear the task)")
        return {"error_class": "TransformFailed", "error": f"transform failed during {exc.step}: {said}",
                "audits_json": json.dumps({"failed": audits, "skipped": exc.skipped, "held": exc.held_counts})}, retry
    return {"audits_json": json.dumps({"run": summary.audits_run, "passed": summary.audits_passed,
                                       "restated": summary.restated, "failed": [], "held": summary.held_counts,
                                       "warned": [{"model": m, "audit": a, "count": c}
                                                  for m, a, c in summary.audits_warned]}),
            # counted only after a build that applied a plan or evaluated an interval: the counts of
            # one that did neither are the last record's (the chart's step line holds it), and on
            # PostgreSQL each count reads its whole table (0.5 s per 5M rows, every scheduled transform)
            "tables_json": json.dumps({"restated": summary.restated, "rows_by_layer": _rows_by_layer(settings)
                                       if summary.applied_plan or summary.evaluated else None}),
            "watermark_before": json.dumps({"loaded_through": summary.watermark_before}),
            "watermark_after": json.dumps({"loaded_through": summary.watermark_after})}, False


def _rows_by_layer(settings: Settings) -> dict[str, int] | None:
    """Rows per layer after a build, for the report's rows-over-time chart; ``None`` when the
    warehouse cannot be read now (the report then shows the counts of its own time only)."""
    from orchestrator.observe.report import rows_by_layer

    try:
        return rows_by_layer(settings)
    except Exception as exc:  # a chart's data is never worth failing a transform that succeeded
        logs.get_logger("orchestrator.scheduling.worker").warning(
            "rows per layer not recorded", extra={"fields": {"error": first_line(exc)}})
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator.scheduling.worker")
    parser.add_argument("job")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    logs.configure()
    from orchestrator.observe import logcontext

    logcontext.install()
    settings = Settings.from_env()
    job = get_job(settings, args.job)
    retryable = False
    try:
        if job.kind == "load":
            assert job.source is not None
            result, retryable = run_load(settings, job.source)
        elif job.kind == "transform":
            result, retryable = run_transform(settings)
        else:
            raise ConfigError(f"job {job.name} is a command job; the runner starts its command directly")
    except Exception as exc:  # noqa: BLE001 - classified and recorded, never lost
        from orchestrator.cli import held_duckdb_lock

        retryable = is_retryable(exc)
        # a damaged warehouse or one of another DuckDB version: say so (and what to do) in the history
        unreadable = unreadable_duckdb_file(exc, settings.warehouse)
        error = first_line_and_next(Exception(unreadable)) if unreadable else first_line_and_next(exc)
        result = {"error_class": type(exc).__name__, "error": f"job {job.name}: {error}"}
        held = held_duckdb_lock(exc, f"elt run-job {job.name}")
        if held:  # a notebook, the duckdb CLI, `sqlmesh ui`: named with its PID and command line, retried
            result = {"error_class": "WarehouseBusy", "error": f"job {job.name}: {held.removeprefix('error: ')}"}
            retryable = True
    result["retryable"] = retryable
    Path(args.result).write_text(json.dumps(without_secrets(result)))
    if result.get("error"):
        logs.get_logger("orchestrator.scheduling.worker").error(
            "attempt failed", extra={"fields": {"error": result["error"], "error_class": result.get("error_class"),
                                                "retryable": retryable}})
        return RETRYABLE_EXIT if retryable else 1
    return 0


def without_secrets(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every secret this process read replaced by ``***``. Only a job's worker
    knows its source's secrets (its token, its password: ``secret_from_env`` registers them
    there), so it redacts its result before the supervisor stores it in the run history and sends
    it in alerts; the supervisor redacts again with what it knows. The fields holding JSON
    (``*_json``, ``watermark_*``) are redacted value by value, so they stay JSON: whole, a table
    named ``user_credentials`` read as a credential and the history's JSON no longer parsed.

    >>> without_secrets({"tables_json": '{"user_credentials": {"rows": 1}}', "error": "password=S3CR3T"})
    {'tables_json': '{"user_credentials": {"rows": 1}}', 'error': 'password=***'}
    """
    out: dict[str, Any] = {}
    for key, value in result.items():
        if (key.endswith("_json") or key.startswith("watermark_")) and isinstance(value, str):
            try:
                out[key] = json.dumps(logs.redacted(json.loads(value)), default=str)
                continue
            except ValueError:
                pass
        out[key] = logs.redacted(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
