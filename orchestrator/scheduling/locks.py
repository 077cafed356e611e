"""Locks that a killed process releases: ``fcntl.flock`` files (embedded) or PostgreSQL advisory
locks (production, ``ELT_GATEWAY=postgres``).

Both are released by someone other than the process itself when it dies: the kernel closes the
file descriptor, the server ends the session. So a SIGKILL, an OOM kill or a power cut never leaves
a lock behind, and "is the lock free?" is a reliable "is a run of this job alive?".

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with FileLock("job:demo", d) as first:
...     FileLock("job:demo", d).try_acquire()
False
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from sources import forks
from sources.errors import ConnectionFailed, first_line


def _command() -> str:
    """What this process is, for a holder's description: ``elt transform``, ``elt run-job`` (the
    program and its subcommand only: later arguments may carry paths or URLs a log should not show)."""
    argv = sys.argv or [""]
    program = Path(argv[0]).name
    if program.startswith(("elt", "sqlmesh")):
        return " ".join([program, *argv[1:2]])
    if program == "__main__.py":  # python -m package
        return Path(argv[0]).parent.name
    return program if program.endswith(".py") else Path(sys.executable).name  # python -c


def _label() -> str:
    """The application name of a lock's session: it starts with ``elt`` (the runbook's queries
    find elt's sessions by it)."""
    command = _command()
    return command if command.startswith("elt") else f"elt ({command})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class FileLock:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.path = directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        fd = forks.open_lock_file(self.path)  # another user's lock file is opened read-only
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        forks.hold(fd)  # a forked child orphaned by a kill would keep the lock for ever
        self._write_holder(fd)
        return True

    def _write_holder(self, fd: int) -> None:
        """Say in the lock file who holds it, so a process that finds it busy can name the holder
        (``holder``). Best effort: another user's lock file is open read-only, and a disk may be full."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        except OSError:
            pass

    def holder(self) -> str | None:
        """Who holds this lock, as its holder wrote it (``pid 123 (elt transform) on host since ... UTC``),
        or None when that is not known. Read when the lock was found busy."""
        try:
            record = json.loads(self.path.read_text())
            pid, host = int(record["pid"]), str(record["host"])
            text = f"pid {pid} ({record['command']}) on {host}, since {record['since']} UTC"
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host == socket.gethostname() and not _alive(pid):
            # the lock is still held, so a process that inherited it lives on (a run's attempt)
            return f"{text}; that process has exited and a process it started holds the lock (`pgrep -af elt`)"
        return text

    def acquire(self, timeout: float, poll: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def still_held(self) -> bool:
        return self.fd is not None  # a flock lives as long as its descriptor: nothing can take it away

    def inheritable_fd(self) -> int | None:
        """The descriptor a child process may inherit, so the lock lives as long as either lives."""
        if self.fd is not None:
            os.set_inheritable(self.fd, True)
        return self.fd

    def release(self) -> None:
        if self.fd is not None:
            forks.release(self.fd)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        if not self.try_acquire():
            raise LockBusy(self.name, self.holder())
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` from a lock name."""
    return int(struct.unpack(">q", hashlib.sha256(f"elt:{name}".encode()).digest()[:8])[0])


class PgAdvisoryLock:
    """A session-level advisory lock held on its own connection for the life of the run."""

    def __init__(self, name: str, settings: Any) -> None:  # settings: sources.connections.PostgresSettings
        self.name = name
        self.settings = settings
        self.conn: Any = None
        self.fd = -1

    def try_acquire(self) -> bool:
        import psycopg2

        conn = self.settings.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(self.name),))
                ok = bool(cur.fetchone()[0])
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # whether the server granted it is not known: if it did, it frees it when it finds the
            # session gone (its keepalives, about a minute: sources/connections.py)
            conn.close()
            s = self.settings
            raise ConnectionFailed(
                f"lost the connection to PostgreSQL {s.user}@{s.host}:{s.port}/{s.dbname} while taking the lock "
                f"{self.name}: {first_line(exc)}",
                hint=("nothing was read or written; the orchestrator retries, or rerun. If the rerun says the lock is "
                      "held and no elt process runs, the server frees it within about a minute")) from None
        if not ok:
            conn.close()
            return False
        self.conn = conn
        self.fd = conn.fileno()  # kept: a connection the server dropped has no fileno() any more
        forks.hold(self.fd)  # the session ends only when every copy of its socket is closed
        try:  # who holds it, for `holder` in another process (pg_stat_activity shows it)
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('application_name', %s, false)",
                            (f"{_label()} pid {os.getpid()} on {socket.gethostname()}"[:63],))
        except psycopg2.Error:
            pass
        return True

    def holder(self) -> str | None:
        """Who holds this lock: the session holding the advisory lock, from ``pg_locks`` and
        ``pg_stat_activity`` (its application name says the command, pid and host of the `elt`
        process), or None when that is not known."""
        import psycopg2

        unsigned = advisory_key(self.name) & 0xFFFFFFFFFFFFFFFF  # pg_locks shows a bigint key as two oids
        try:
            conn = self.settings.connect()
        except Exception:  # noqa: BLE001 - a description only; the caller says the lock is busy anyway
            return None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT a.application_name, a.pid, to_char(a.backend_start AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD HH24:MI:SS'), host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND l.classid::bigint = %s AND l.objid::bigint = %s "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (unsigned >> 32, unsigned & 0xFFFFFFFF))
                row = cur.fetchone()
        except psycopg2.Error:
            return None
        finally:
            conn.close()
        if row is None:
            return None
        name, backend, since, client = row
        who = name or "a session that did not name itself"
        where = f" from {client}" if client else ""
        return f"{who} (server backend {backend}{where}), since {since} UTC"

    def acquire(self, timeout: float, poll: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def still_held(self) -> bool:
        """False once the session holding the lock is gone (server restart, failover, a dropped
        connection, ``pg_terminate_backend``): the server has released the lock by then."""
        if self.conn is None:
            return False
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure of the session means the lock is gone
            return False

    def inheritable_fd(self) -> int | None:
        return None  # held by this process's session; the child is killed with its supervisor

    def release(self) -> None:
        if self.conn is not None:
            try:
                forks.release(self.fd)
                self.conn.close()  # ends the session, which releases the lock
            finally:
                self.conn = None

    def __enter__(self) -> PgAdvisoryLock:
        if not self.try_acquire():
            raise LockBusy(self.name, self.holder())
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockBusy(Exception):
    def __init__(self, name: str, holder: str | None = None) -> None:
        self.name = name
        self.holder = holder
        by = f" (held by {holder})" if holder else ""
        super().__init__(f"lock {name!r} is held by another run{by}; it is released when that process exits")


def held_by(lock: FileLock | PgAdvisoryLock) -> str:
    """`` (held by pid 123 (elt transform) on host, since ...)`` for a busy lock, or ``""``."""
    holder = lock.holder()
    return f" (held by {holder})" if holder else ""


def lock_dir(settings: Settings) -> Path:
    return Path(os.environ.get("ELT_LOCK_DIR") or settings.warehouse.parent / "locks")


def make_lock(settings: Settings, name: str) -> FileLock | PgAdvisoryLock:
    """The lock for ``name`` (``job:jaffle_shop``, ``sqlmesh:prod``) on the configured gateway."""
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        return PgAdvisoryLock(name, PostgresSettings.from_env(settings.pg_prefix))
    return FileLock(name, lock_dir(settings))


@contextmanager
def holding(settings: Settings, name: str, timeout_s: float) -> Iterator[None]:
    """Hold lock ``name`` for a block; ``LockBusy`` if it stays busy for ``timeout_s``."""
    lock = make_lock(settings, name)
    if not lock.acquire(timeout=timeout_s):
        raise LockBusy(name, lock.holder())
    try:
        yield
    finally:
        lock.release()
