"""Which failures the runner retries: network, HTTP 5xx/429, lock timeouts; never bad input,
contracts, configuration or a failed audit (retrying those only delays the alert)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors as pg_errors

from orchestrator.scheduling import worker
from orchestrator.transform.run import AuditFailure, TransformFailed
from sources.errors import ConfigError, ContractError, RawLoadError, SourceReadError, landing_store_error


def _caused_by(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as exc:  # noqa: BLE001
        return exc


@pytest.mark.parametrize("exc", [
    SourceReadError("GET https://api/x still failing after 6 attempts: HTTP 503", source="s", table="t"),
    SourceReadError("GET https://api/x still failing after 6 attempts: HTTP 429", source="s", table="t"),
    pg_errors.LockNotAvailable("canceling statement due to lock timeout"),
    psycopg2.OperationalError("could not connect to server: Connection refused"),
    ConnectionResetError("peer reset"),
    TimeoutError("read timed out"),
    _caused_by(RawLoadError("raw load failed", source="s", table="t"), ConnectionResetError("reset")),
    # an error page served with 200 ("Service temporarily unavailable"): a later attempt may get JSON
    SourceReadError("GET https://api/x returned a body that is not JSON (or was cut off): ...", source="s", table="t"),
    # what the loader makes of a DNS failure of the S3 landing (not retried before: no retry wording matched)
    landing_store_error(OSError("When getting information for key 'l/x' in bucket 'b': AWS Error NETWORK_CONNECTION "
                                "during HeadObject operation: curlCode: 6, Could not resolve hostname"), "s3://b/l"),
], ids=["http-503", "http-429", "pg-lock-timeout", "pg-connect", "conn-reset", "timeout", "wrapped-network",
        "api-error-page", "landing-dns"])
def test_retried(exc: BaseException) -> None:
    assert worker.is_retryable(exc)


@pytest.mark.parametrize("exc", [
    SourceReadError("GET https://api/x returned HTTP 401", source="s", table="t"),
    SourceReadError("GET https://api/x returned HTTP 404", source="s", table="t"),
    SourceReadError("a value of app.orders does not fit its catalog type", source="s", table="t"),
    ContractError("row 3, field id: NULL in the primary key", source="s", table="t"),
    ConfigError("environment variable JAFFLE_APP_HOST is not set"),
    # bad input stays bad input even when the message mentions a timeout
    _caused_by(ContractError("column subtotal: expected integer", source="s", table="t"), TimeoutError("x")),
    ValueError("could not parse '12,5'"),
], ids=["http-401", "http-404", "bad-value", "null-key", "config", "contract-over-timeout", "other"])
def test_not_retried(exc: BaseException) -> None:
    assert not worker.is_retryable(exc)


def test_a_failed_audit_is_not_retried_but_a_dropped_connection_is(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from orchestrator.transform import run as transform_module

    failure = AuditFailure("marts.orders", "unique_values", 2, {"order_id": "o1"}, "SELECT ...",
                           args="columns := (order_id)")
    raised: list[TransformFailed] = [
        TransformFailed("run", [failure], skipped={"marts.customers"}),
        TransformFailed("run", [], model_errors=["marts.orders: server closed the connection unexpectedly"]),
    ]
    monkeypatch.setattr(transform_module, "transform", lambda *a, **k: (_ for _ in ()).throw(raised.pop(0)))
    result, retry = worker.run_transform(settings=None)  # type: ignore[arg-type]
    assert retry is False and json.loads(result["audits_json"])["failed"][0]["audit"] == "unique_values"
    assert "unique_values" in result["error"]
    assert "; checks: columns := (order_id); first failing row" in result["error"], result["error"]  # which audit
    # what a scheduled failure is read by (history, alert, report) holds the row and the query, and
    # points at no "query above" that only a transform run by hand prints (an observability probe)
    assert "first failing row: order_id='o1'" in result["error"] and "(query above)" not in result["error"]
    # a job's rerun is a job's run: `elt transform` by hand records nothing and leaves an Airflow
    # task red (an Airflow hand-over probe)
    assert "rerun the transform job (`elt run-job transform`, which records the run; under Airflow, clear the task)" \
        in result["error"] and "rerun `elt transform`" not in result["error"], result["error"]
    assert json.loads(result["audits_json"])["failed"][0] == {
        "model": "marts.orders", "audit": "unique_values", "count": 2, "query": "SELECT ...",
        "first_failing_row": {"order_id": "o1"}}
    result, retry = worker.run_transform(settings=None)  # type: ignore[arg-type]
    assert retry is True and "server closed the connection" in result["error"]


def test_an_unreachable_database_is_retried_but_a_refused_login_is_not(pg_db) -> None:  # type: ignore[no-untyped-def]
    import socket

    from sources.connections import PostgresSettings
    from sources.errors import ConnectionFailed

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = PostgresSettings("127.0.0.1", closed, "postgres", "warehouse", origin="TEST_PG_* environment variables")
    with pytest.raises(ConnectionFailed) as err:
        down.connect()
    assert worker.is_retryable(err.value) and "Connection refused" in str(err.value)

    nobody = PostgresSettings(pg_db.host, pg_db.port, "nobody", pg_db.dbname, origin="TEST_PG_*")
    with pytest.raises(ConfigError) as refused:
        nobody.connect()
    assert not worker.is_retryable(refused.value) and 'role "nobody" does not exist' in str(refused.value)


def test_a_model_that_failed_on_a_lost_connection_is_not_blamed_on_its_sql() -> None:
    """`pg_ctl -m immediate stop` during a transform: psycopg2 says 'connection already closed'. The
    message must send on-call to the server, not to the model's SQL."""
    lost = TransformFailed("run", [], model_errors=["staging.stg_jaffle_shop__order_items: connection already closed"])
    assert "The warehouse connection was lost" in str(lost) and "pg_isready" in str(lost)
    assert "error is in the model's SQL" not in str(lost)
    broken = TransformFailed("run", [], model_errors=["marts.orders: Binder Error: column x not found"])
    assert "error is in the model's SQL" in str(broken) and "connection was lost" not in str(broken)
