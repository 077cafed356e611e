"""Run history, job state and alert state in the ``elt_meta`` schema: one record per attempt.

Two small backends behind one interface: PostgreSQL (``ELT_GATEWAY=postgres``: the warehouse
database) and a DuckDB file (embedded default). The DuckDB history is its own file next to the
warehouse (``ELT_META_DUCKDB_PATH``, default ``<warehouse folder>/elt_history.duckdb``), because
DuckDB lets one process write a file at a time and a load holds the warehouse for minutes: the
scheduler must record "started", "skipped (locked)" and "abandoned" while a load runs. See
docs/decisions/0009-orchestrator.md. Every connection is short (open, write, close) and retried
briefly when another process holds the file. Text written here has the user-info of any URL in it
redacted (``http://***@host``): errors quote URLs, and the history is printed by `elt runs` and the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from sources.errors import first_line
from sources.logs import get_logger, redact_userinfo

log = get_logger("orchestrator.observe.history")

TABLES = (
    """CREATE TABLE IF NOT EXISTS elt_meta.job_runs (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, job TEXT NOT NULL, source TEXT,
        trigger TEXT NOT NULL, scheduled_for TIMESTAMP, interval_start TIMESTAMP, interval_end TIMESTAMP,
        max_attempts INTEGER, status TEXT NOT NULL, pid INTEGER, host TEXT,
        started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, rows_loaded BIGINT, bytes_loaded BIGINT,
        tables_json TEXT, watermark_before TEXT, watermark_after TEXT, audits_json TEXT,
        error_class TEXT, error TEXT, PRIMARY KEY (run_id, attempt))""",
    """CREATE TABLE IF NOT EXISTS elt_meta.job_state (
        job TEXT PRIMARY KEY, last_slot TIMESTAMP, updated_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS elt_meta.alert_state (
        subject TEXT PRIMARY KEY, state TEXT NOT NULL, changed_at TIMESTAMP NOT NULL, detail TEXT)""",
    # the kept statements already applied (``History._apply_pending``): each applies exactly once
    """CREATE TABLE IF NOT EXISTS elt_meta.kept_applied (name TEXT PRIMARY KEY, applied_at TIMESTAMP)""",
)
RUN_COLUMNS = (
    "run_id", "attempt", "job", "source", "trigger", "scheduled_for", "interval_start", "interval_end",
    "max_attempts", "status", "pid", "host", "started_at", "finished_at", "rows_loaded", "bytes_loaded",
    "tables_json", "watermark_before", "watermark_after", "audits_json", "error_class", "error",
)
# the job_state row holding when `elt tick` last ran (no job can have this name): `elt status` says
# whether the scheduler is alive, which a daily job's last slot cannot (a walkthrough)
TICK_STATE = "(elt tick)"
# statuses: running, succeeded, failed, retrying (failed, another attempt follows), timed_out,
# skipped_locked, abandoned, stopped (SIGTERM or SIGINT to its supervisor; the slot runs again)


@dataclass
class RunRecord:
    run_id: str
    attempt: int
    job: str
    trigger: str
    status: str
    started_at: datetime
    source: str | None = None
    scheduled_for: datetime | None = None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    max_attempts: int | None = None
    pid: int | None = None
    host: str | None = None
    finished_at: datetime | None = None
    rows_loaded: int | None = None
    bytes_loaded: int | None = None
    tables_json: str | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    audits_json: str | None = None
    error_class: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def values(self) -> list[Any]:
        return [_redacted(getattr(self, c)) for c in RUN_COLUMNS]

    @property
    def tables(self) -> dict[str, Any]:
        return json.loads(self.tables_json) if self.tables_json else {}


HELD = "Could not set lock"  # DuckDB's words when another process holds the history file
INSERT_RUN = f"INSERT INTO elt_meta.job_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)})"


def _update_statement(run_id: str, attempt: int, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """The UPDATE of one attempt's ``values`` (keys are our own column names), and its parameters."""
    assert set(values) <= set(RUN_COLUMNS), values
    sets = ", ".join(f"{k} = ?" for k in values)
    return (f"UPDATE elt_meta.job_runs SET {sets} WHERE run_id = ? AND attempt = ?",
            [*map(_redacted, values.values()), run_id, attempt])


def _redacted(value: Any) -> Any:
    """Redacted, and storable: a file name that is not UTF-8 reaches an error text as lone
    surrogates, which DuckDB's binding refuses (shown as backslash escapes instead)."""
    if not isinstance(value, str):
        return value
    return redact_userinfo(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _unreachable(exc: BaseException) -> bool:
    """The PostgreSQL warehouse could not be reached, or went away mid-statement."""
    from sources.errors import ConnectionFailed

    try:
        import psycopg2
    except ImportError:  # pragma: no cover - a dependency
        return isinstance(exc, ConnectionFailed)
    return isinstance(exc, (ConnectionFailed, psycopg2.OperationalError, psycopg2.InterfaceError))


def meta_duckdb_path(settings: Settings) -> Path:
    value = os.environ.get("ELT_META_DUCKDB_PATH")
    if value:
        path = Path(value)
        return path if path.is_absolute() else settings.project_root / path
    return settings.warehouse.parent / "elt_history.duckdb"


# How long a command retries an unreachable PostgreSQL warehouse for the run history, unless
# ELT_HISTORY_CONNECT_WAIT_S says otherwise: a tick or a job's supervisor long enough to outlive a
# server restart; a command a person waits on (elt status, runs, run-show, report) briefly, so that
# during an outage the on-call engineer reads the error in seconds, not after a minute of retries.
CONNECT_WAIT_S = 60.0
INTERACTIVE_CONNECT_WAIT_S = 5.0


class History:
    """``History.open(settings)``; every method opens a short connection of its own."""

    def __init__(self, settings: Settings, *, interactive: bool = False) -> None:
        self.settings = settings
        self.postgres = settings.gateway == "postgres"
        self._ready = False
        self.interactive = interactive

    @classmethod
    def open(cls, settings: Settings, *, interactive: bool = False) -> History:
        """``interactive``: for a command a person waits on, which retries the warehouse briefly."""
        return cls(settings, interactive=interactive)

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        if self.postgres:
            conn = self._pg_connect()
            try:
                with conn:  # one transaction, committed on success
                    with conn.cursor() as cur:
                        yield _PgCursor(cur)
            finally:
                conn.close()
            return
        import duckdb

        path = meta_duckdb_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + float(os.environ.get("ELT_META_LOCK_WAIT_S", "30"))
        while True:
            try:
                conn = duckdb.connect(str(path))
                break
            except duckdb.IOException as exc:  # another process has the file open for writing
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            conn.execute("SET TimeZone = 'UTC'; BEGIN")  # the history's times are UTC, as everywhere
            yield _DuckCursor(conn)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:  # a COMMIT that could not write (a full disk) has ended the transaction
                pass  # already: "cannot rollback - no transaction is active" hid the error that mattered
            raise
        finally:
            conn.close()

    # A supervisor that cannot write the end of an attempt because another process holds the DuckDB
    # history file (someone reading it in the duckdb CLI or a notebook for longer than
    # ELT_META_LOCK_WAIT_S) keeps the update in a file beside it; the next command that opens the
    # history applies it. Without this, the run stayed "running" and the next tick called the
    # succeeded run abandoned, with a FAILED alert.
    def _pending_dir(self) -> Path:
        path = meta_duckdb_path(self.settings)
        return path.with_name(path.name + ".pending")

    def _apply_pending(self) -> None:
        """Apply the kept statements, oldest first, each in a transaction of its own that also records
        its file's name, so each applies exactly once (another command may find the file before it is
        removed). One that cannot apply (a damaged file) is renamed ``.failed`` and named in the log:
        it must never stop every later use of the history."""
        for file in sorted(self._pending_dir().glob("*.json")):
            try:
                with self._conn() as cur:
                    if not cur.fetchall("SELECT 1 FROM elt_meta.kept_applied WHERE name = ?", [file.name]):
                        kept = json.loads(file.read_text())
                        params = [datetime.fromisoformat(v["datetime"]) if isinstance(v, dict) else v
                                  for v in kept["params"]]
                        cur.execute(kept["sql"], params)  # one of our own statements (``_write_or_keep``)
                        cur.execute("INSERT INTO elt_meta.kept_applied VALUES (?, ?)",
                                    [file.name, datetime.now(UTC).replace(tzinfo=None)])
            except FileNotFoundError:  # another command applied and removed it
                continue
            except Exception as exc:  # noqa: BLE001 - a history that cannot open at all is the worse failure
                if HELD in str(exc) or _unreachable(exc):
                    raise
                file.rename(file.with_suffix(".failed"))
                log.error("a kept run-history record could not be applied; set aside", extra={"fields": {
                    "file": str(file.with_suffix(".failed")), "error": first_line(exc)}})
                continue
            file.unlink(missing_ok=True)

    def _write_or_keep(self, sql: str, params: list[Any], what: dict[str, Any]) -> None:
        """Run one of our own write statements; when another process holds the DuckDB history file
        past ``ELT_META_LOCK_WAIT_S``, keep it beside the file for the next command that opens the
        history (logged with the holder) instead of failing the run it records."""
        try:
            with self._cursor() as cur:
                cur.execute(sql, params)
            return
        except Exception as exc:
            if self.postgres and _unreachable(exc):  # past ELT_HISTORY_CONNECT_WAIT_S: recorded, not lost
                holder = f"the PostgreSQL warehouse is unreachable: {first_line(exc)}"
            elif self.postgres or HELD not in str(exc):
                raise
            else:
                holder = first_line(exc)
        folder = self._pending_dir()
        folder.mkdir(parents=True, exist_ok=True)
        kept = {"sql": sql, "params": [{"datetime": v.isoformat()} if isinstance(v, datetime) else v for v in params]}
        target = folder / f"{time.time_ns()}-{os.getpid()}.json"
        partial = target.with_suffix(".part")
        partial.write_text(json.dumps(kept, default=str))
        partial.rename(target)  # whole or absent: a reader never applies half a record
        log.warning(f"run history {'unreachable' if self.postgres else 'busy'}: the record is kept in {folder} and "
                    "written by the next elt command on this machine that opens the history",
                    extra={"fields": {**what, "kept_in": str(target), "holder": holder}})

    def update_or_keep(self, run_id: str, attempt: int, **values: Any) -> None:
        """``update`` of a supervisor's own attempt, kept for later if the history file is held."""
        sql, params = _update_statement(run_id, attempt, values)
        self._write_or_keep(sql, params, {"run_id": run_id, "attempt": attempt})

    def insert_or_keep(self, record: RunRecord) -> None:
        """``insert``, kept for later if the history file is held (a retry's next attempt); a kept
        insert applied twice (a crash before its file was removed) adds nothing."""
        self._write_or_keep(f"{INSERT_RUN} ON CONFLICT DO NOTHING", record.values(),
                            {"run_id": record.run_id, "attempt": record.attempt})

    def _pg_connect(self) -> Any:
        """A connection to the PostgreSQL warehouse, retried with backoff for up to
        ``ELT_HISTORY_CONNECT_WAIT_S`` seconds (read at each connection), else ``CONNECT_WAIT_S``
        (``INTERACTIVE_CONNECT_WAIT_S`` for a command a person waits on). A supervisor whose job is
        running must outlive a restart of the server, or its run is left `running` with nobody to
        record the end."""
        from sources.connections import PostgresSettings
        from sources.errors import ConnectionFailed

        settings = PostgresSettings.from_env(self.settings.pg_prefix)
        configured = os.environ.get("ELT_HISTORY_CONNECT_WAIT_S")
        wait = float(configured) if configured else INTERACTIVE_CONNECT_WAIT_S if self.interactive else CONNECT_WAIT_S
        deadline = time.monotonic() + wait
        delay = 0.5
        while True:
            try:
                return settings.connect()
            except ConnectionFailed as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("run history: the warehouse is unreachable, retrying",
                            extra={"fields": {"delay_s": delay, "error": str(exc).splitlines()[0]}})
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _create_tables(self, cur: Any) -> None:
        if not self._ready:
            cur.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
            for ddl in TABLES:
                cur.execute(ddl)
            self._ready = True

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self._pending_dir().is_dir():  # the writes a held file (or an unreachable server) made wait
            with self._conn() as cur:
                self._create_tables(cur)
            self._apply_pending()
        with self._conn() as cur:
            self._create_tables(cur)
            yield cur

    # --- runs -------------------------------------------------------------------------------
    def insert(self, record: RunRecord) -> None:
        with self._cursor() as cur:
            cur.execute(INSERT_RUN, record.values())

    def update(self, run_id: str, attempt: int, *, only_if_status: str | None = None, **values: Any) -> bool:
        """Set ``values`` on one attempt; with ``only_if_status``, only while it has that status
        (the check and the write are one statement). True if the attempt was updated."""
        sql, params = _update_statement(run_id, attempt, values)
        if only_if_status is not None:
            sql, params = f"{sql} AND status = ?", [*params, only_if_status]
        with self._cursor() as cur:
            rows = cur.fetchall(f"{sql} RETURNING run_id", params)
        return bool(rows)

    def abandon(self, run_id: str, attempt: int, **values: Any) -> bool:
        """Mark an attempt ``abandoned`` only if it is still ``running``; False if it finished first
        (a run that finished between the tick's read of ``running()`` and this call keeps its status)."""
        return self.update(run_id, attempt, only_if_status="running", status="abandoned", **values)

    def _select(self, where: str = "", params: list[Any] | None = None, order: str = "started_at DESC, attempt DESC",
                limit: int | None = None) -> list[RunRecord]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM elt_meta.job_runs"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._cursor() as cur:
            rows = cur.fetchall(sql, params or [])
        return [RunRecord(**dict(zip(RUN_COLUMNS, row))) for row in rows]

    def since(self, start: datetime, limit: int = 50_000) -> list[RunRecord]:
        """Every attempt started at or after ``start``, newest first (at most ``limit``)."""
        return self._select("started_at >= ?", [start], limit=limit)

    def recent(self, limit: int = 20, job: str | None = None) -> list[RunRecord]:
        if job:
            return self._select("job = ?", [job], limit=limit)
        return self._select(limit=limit)

    def run(self, run_id: str) -> list[RunRecord]:
        return self._select("run_id = ?", [run_id], order="attempt")

    def running(self) -> list[RunRecord]:
        return self._select("status = 'running'")

    def last_with_status(self, job: str, statuses: tuple[str, ...]) -> RunRecord | None:
        marks = ", ".join("?" for _ in statuses)
        rows = self._select(f"job = ? AND status IN ({marks})", [job, *statuses], limit=1)
        return rows[0] if rows else None

    # --- job state ------------------------------------------------------------------------
    def last_slot(self, job: str) -> datetime | None:
        """The slot the schedule counts from: the last one claimed, if a run of it was recorded."""
        with self._cursor() as cur:
            return self._last_run_slot(cur, job)[0]

    @staticmethod
    def _last_run_slot(cur: Any, job: str) -> tuple[datetime | None, datetime | None]:
        """(the last claimed slot that a run was recorded for, the last claimed slot). A claim with
        no run after it (the tick died between the two, or the claim's COMMIT was applied and its
        answer lost) skipped the slot for good: a scheduler probe's transform waited for the next
        hour with nothing in the history. Such a slot counts as not taken; a stopped run's slot was
        given back already. So does a slot later than this machine's clock (``elt tick --now`` is
        refused in the future): a tick ran with a clock ahead, and its run's slot held every job
        until the clock passed it (a calendar probe: a day ahead, a day without loads)."""
        rows = cur.fetchall("SELECT last_slot FROM elt_meta.job_state WHERE job = ?", [job])
        claimed = rows[0][0] if rows else None
        if claimed is None:
            return None, None
        bound = min(claimed, utcnow())
        ran = cur.fetchall("SELECT max(scheduled_for) FROM elt_meta.job_runs WHERE job = ? AND attempt >= 1 "
                           "AND status <> 'stopped' AND scheduled_for <= ?", [job, bound])
        latest = ran[0][0] if ran else None
        return (claimed if latest == claimed else latest), claimed

    def release_slot(self, job: str, slot: datetime, previous: datetime | None, now: datetime) -> None:
        """Give back ``slot``, claimed by a run that was stopped before it finished: the job's last
        slot is ``previous`` again, and the next tick finds ``slot`` due (under the job's lock)."""
        self._write_or_keep("UPDATE elt_meta.job_state SET last_slot = ?, updated_at = ? WHERE job = ? AND last_slot = ?",
                            [previous, now, job, slot], {"job": job, "slot": slot})

    def claim_slot(self, job: str, slot: datetime, now: datetime) -> bool:
        """Record ``slot`` as taken by a run of ``job``; False if it (or a later one) already was.

        Called under the job's lock, so the read and the write cannot interleave with another run.
        """
        with self._cursor() as cur:
            last, claimed = self._last_run_slot(cur, job)
            if last is not None and last >= slot:
                return False
            if claimed is not None and claimed > utcnow():
                log.warning(f"slot {claimed} of job {job} is later than this machine's clock ({utcnow():%Y-%m-%d %H:%M} "
                            "UTC): a tick ran with a clock ahead. The schedule counts from the last slot that ran "
                            "before now", extra={"fields": {"job": job, "slot": str(claimed),
                                                            "next": "check the clocks of the machines that run "
                                                                    "`elt tick` (is NTP synchronised?)"}})
            elif claimed is not None and claimed != last:
                log.warning(f"slot {claimed} of job {job} was claimed by a run that left no record (it died before "
                            "starting, or its claim's answer was lost): the schedule counts from the last slot that ran",
                            extra={"fields": {"job": job, "slot": str(claimed)}})
            cur.execute(
                "INSERT INTO elt_meta.job_state (job, last_slot, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET last_slot = excluded.last_slot, updated_at = excluded.updated_at",
                [job, slot, now],
            )
        return True

    def record_tick(self, at: datetime) -> None:
        """Note that `elt tick` ran at ``at`` (this machine's clock). Best effort: a history that
        cannot be written stops nothing here (the tick's runs say so themselves)."""
        try:
            with self._cursor() as cur:
                cur.execute("INSERT INTO elt_meta.job_state (job, last_slot, updated_at) VALUES (?, ?, ?) "
                            "ON CONFLICT (job) DO UPDATE SET last_slot = excluded.last_slot, "
                            "updated_at = excluded.updated_at", [TICK_STATE, at, at])
        except Exception as exc:  # noqa: BLE001 - a heartbeat
            log.info("the tick's time could not be recorded", extra={"fields": {"error": first_line(exc)}})

    def last_tick(self) -> datetime | None:
        """When `elt tick` last ran against this history, or None."""
        with self._cursor() as cur:
            rows = cur.fetchall("SELECT last_slot FROM elt_meta.job_state WHERE job = ?", [TICK_STATE])
        return rows[0][0] if rows else None

    # --- alert state ----------------------------------------------------------------------
    def alert_states(self) -> dict[str, tuple[str, datetime]]:
        with self._cursor() as cur:
            rows = cur.fetchall("SELECT subject, state, changed_at FROM elt_meta.alert_state", [])
        return {r[0]: (r[1], r[2]) for r in rows}

    def set_alert_state(self, subject: str, state: str, now: datetime, detail: str = "") -> None:
        """Kept for the next command when the history cannot be written: the alert was sent, and
        a state left behind made the recovery never announced (a scheduler probe: the PostgreSQL
        server's disk was full when a FAILED alert went out)."""
        self._write_or_keep(
            "INSERT INTO elt_meta.alert_state (subject, state, changed_at, detail) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (subject) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at, "
            "detail = excluded.detail",
            [subject, state, now, _redacted(detail)], {"subject": subject, "state": state})


def utcnow() -> datetime:
    """This machine's clock, as the history stores times (UTC, without a zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


class _DuckCursor:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        self.conn.execute(sql, params or [])

    def fetchall(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


class _PgCursor:
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        self.cur.execute(sql.replace("?", "%s"), params or None)

    def fetchall(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        self.cur.execute(sql.replace("?", "%s"), params or None)
        return self.cur.fetchall()
