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
import os
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from sources import forks
from sources.errors import ConnectionFailed, first_line


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
        return True

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
            raise LockBusy(self.name)
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
        return True

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
            raise LockBusy(self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockBusy(Exception):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"lock {name!r} is held by another run; it is released when that process exits")


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
        raise LockBusy(name)
    try:
        yield
    finally:
        lock.release()
