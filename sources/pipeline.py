"""Load one source: for each table, apply what landing has and raw lacks, extract what is new,
land it as an immutable batch, and apply that batch to raw.

Applying pending batches *first* makes the loader self-healing and keeps the cursor honest: a
batch landed by a run that died before its raw load is applied before anything is re-extracted,
and incremental extraction starts from the cursor committed with the last applied batch.
Replaying landing into an empty warehouse rebuilds raw. A failing table is reported and skipped;
the other tables still load.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sources.config import SourceSpec, TableSpec
from sources.contracts import (check_event_time, check_primary_key, check_soft_delete, check_values,
                               superseded_reads)
from sources.errors import (ConnectionFailed, ContractError, LandingError, LoaderError, SourceReadError, first_line,
                            interrupted,
                            warehouse_write_problem)
from sources import failpoints, forks
from sources.extract.base import Extract
from sources.landing.manifest import Manifest, force_command
from sources.landing.store import LandedBatches, Landing
from sources.landing.writer import newest_stamp
from sources.load.base import RawStore
from sources.logs import Progress, get_logger

log = get_logger("sources.pipeline")



@dataclass
class TableOutcome:
    table: str
    landed: list[str] = field(default_factory=list)  # batch ids landed by this run
    applied: list[str] = field(default_factory=list)  # batch ids appended to raw by this run
    set_aside: list[str] = field(default_factory=list)  # landed batch ids skipped: set aside (`elt set-aside`)
    rows_landed: int = 0
    rows_applied: int = 0
    unchanged: bool = False  # nothing new at the source
    schema_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the rows landed (rows without their event time)
    error: LoaderError | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.landed or self.applied:
            return "loaded"
        return "unchanged"


@contextmanager
def source_lock(source: str, lock_dir: Path | None = None, scope: str = "") -> Iterator[None]:
    """One loader per source and landing location per machine; the OS releases the lock if the
    process dies. ``scope`` (the landing URL) keeps unrelated checkouts, test runs and projects on
    one machine apart: only loaders that would write the same landing folders exclude each other."""
    shared = lock_dir is None  # the system temporary folder: every user of the machine shares it
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / "elt-locks"
    suffix = f"-{hashlib.sha1(scope.encode()).hexdigest()[:12]}" if scope else ""
    path = lock_dir / f"{source}{suffix}.lock"
    try:
        fd = forks.open_lock_file(path, shared_folder=shared)
    except PermissionError as exc:  # a folder another user (root, by hand) created before 1777 was set
        owner = _owner(lock_dir)
        raise LoaderError(
            f"cannot open the load lock {path}: {exc.strerror}", source=source,
            hint=f"the folder {lock_dir} belongs to {owner}, and this user may not create files in it: "
                 f"`chmod 1777 {lock_dir}` as {owner if owner == 'root' else f'{owner} or root'} (loads of every "
                 "user then share the locks), and rerun",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoaderError(
                "another load of this source is running", source=source,
                hint="wait for it to finish; the lock is released when that process exits",
            ) from None
        forks.hold(fd)
        yield
    finally:
        forks.release(fd)
        os.close(fd)


def _owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return "another user"


def _limit_malloc_arenas(arenas: int = 4) -> None:
    """Cap glibc's per-thread malloc arenas (M_ARENA_MAX): the loader's few threads (COPY reader,
    Parquet encoder, DuckDB) otherwise each grow an arena, and peak memory drifts with run time."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def extracts_for(spec: SourceSpec, table: TableSpec, raw: RawStore, landed: LandedBatches, *,
                 location: str | None, force: bool, window: tuple[str, str] | None = None) -> Iterator[Extract]:
    if spec.kind == "files":
        from sources.extract import files

        # a backfill (``window``) lands a table's one file only if it differs from the latest landed
        # batch, as a plain load does: the same bytes again would add nothing to raw, only a copy
        # to landing; each file of a pattern is read again (one may have been corrected in place)
        single_file_backfill = window is not None and table.file is not None
        return files.extracts(spec, table, location=location or spec.path, landed=landed,
                              force=force and not single_file_backfill)
    if spec.kind == "postgres":
        from sources.extract import postgres

        return postgres.extracts(spec, table, cursor=None if force else raw.cursor(spec.name, table.name), window=window)
    if spec.kind == "rest_api":
        from sources.extract import rest

        return rest.extracts(spec, table, cursor=None if force else raw.cursor(spec.name, table.name))
    raise LoaderError(f"unknown source kind {spec.kind!r}", source=spec.name)


def ingest(
    spec: SourceSpec,
    *,
    landing: Landing,
    raw: RawStore,
    tables: list[str] | None = None,
    force: bool = False,
    extract: bool = True,
    location: str | None = None,
    lock_dir: Path | None = None,
    window: tuple[str, str] | None = None,
) -> list[TableOutcome]:
    """Land and load every table of a source; never raises for one table's bad data.

    ``extract=False`` reads nothing from the source and only applies landed batches that raw lacks
    (restoring raw from landing). ``force`` re-extracts files already landed and ignores cursors.
    ``location`` overrides a file source's path (a folder or s3://bucket/prefix).
    ``window`` (start, end exclusive; ISO timestamps) is for backfills: it implies ``force``, and
    PostgreSQL tables with a ``window_column`` read only that window, and their children declared
    with ``event_time_from`` only the rows of the window's parents (files and APIs: everything).
    """
    force = force or window is not None
    selected = [spec.tables[name] for name in (tables or list(spec.tables))]
    # The system allocator returns freed blocks to the OS, so memory stays flat however many
    # batches stream through (measured by bench/loader_postgres.py: jemalloc kept ~40% more).
    pa.set_memory_pool(pa.system_memory_pool())
    _limit_malloc_arenas()
    landing.sweep_spool()
    warehouse = _warehouse_identity(raw)
    outcomes = []
    lost_at = ""  # the table whose load lost the PostgreSQL warehouse's connection, if one did
    with source_lock(spec.name, lock_dir, scope=landing.url):
        for table in selected:
            outcome = TableOutcome(table.name)
            if lost_at:  # the connection is gone: one failure to report, not one per table
                # a connection failure, so the scheduler retries the load (it retries only when every
                # failed table may pass next time: a scheduler probe saw none retried)
                outcome.error = ConnectionFailed(
                    f"not loaded: the connection to the PostgreSQL warehouse was lost while loading {lost_at}",
                    source=spec.name, table=table.name, hint="nothing of this table was touched; rerun the load "
                    "once the server is back")
                outcomes.append(outcome)
                continue
            try:
                done = raw.loaded_batch_ids(spec.name, table.name)
                # one listing of the table per load: its batch folder names, and the contents of
                # those neither raw's ledger nor a set-aside record vouches for (the cost of a load
                # follows its new batches)
                aside = set_aside_ids(spec, table, landing, raw, done)
                landed = landing.landed(spec.name, table.name, applied=done, aside=aside)
                if extract:
                    landing.sweep_incomplete(spec.name, table.name, landed)
                else:  # a rebuild from landing: nothing is removed, and nothing may be missing
                    _refuse_folders_without_manifest(spec, table, landing, landed)
                # a batch another warehouse landed is applied by a replay, or into an empty table
                # (a warehouse rebuilt or started afresh); otherwise two warehouses share landing
                ours = _OnlyOurs(warehouse) if extract and done else None
                apply_pending(spec, table, landing, raw, outcome, done=done, landed=landed, aside=aside, ours=ours)
                if extract:
                    # A full snapshot (a table or endpoint read without a cursor) equal to the latest
                    # landed one is not landed again. Not for files: two files of a pattern with the
                    # same content are two deliveries, and a snapshot file is compared by checksum.
                    snapshot = spec.kind in ("postgres", "rest_api") and not table.cursor_field
                    # compared with the latest batch raw may hold: a set-aside one never reached raw
                    kept = [b for b in landed.ids if b not in outcome.set_aside]
                    # (a backfill too: an unchanged snapshot re-read would only copy landing)
                    previous = landed.manifest(kept[-1]) if (kept and snapshot and (not force or window)) else None
                    # a whole read (no cursor, no backfill window of a windowed table, not one new file
                    # of a pattern) is a snapshot: raw gains its changes and deletions only
                    windowed = bool(window and (table.window_column or spec.window_parent(table)))
                    whole = (not table.cursor_field and not windowed
                             and not (spec.kind == "files" and table.pattern))
                    # a forced re-read of an increment (a backfill): raw gains what differs, nothing more
                    changes_only = force and not whole and bool(table.primary_key)
                    fresh: dict[str, Manifest] = {}  # landed by this run: neither verified nor read back
                    floor = raw.cursor(spec.name, table.name) if table.cursor_field else None  # moves only on apply
                    # the table's newest extraction stamp, landed or in raw's ledger (a batch lost
                    # from landing, a landing moved): a new batch is stamped after it whatever the
                    # clock says (decision 0057). From the ids both lists hold: nothing more is read
                    newest = newest_stamp([*landed.ids, *done])
                    # a snapshot file's latest landed read, read only if a declared column is missing now
                    last_read = ((lambda: landed.manifest(kept[-1])) if spec.kind == "files" and whole and kept
                                 and not force and spec.format in ("csv", "parquet") else None)
                    for item in extracts_for(spec, table, raw, landed, location=location, force=force, window=window):
                        if warehouse:
                            item.origin["landed_by"] = {"warehouse": warehouse, "host": socket.gethostname()}
                        manifest = land(spec, item, landing, seen=_boundary(spec, item, raw), previous=previous,
                                        snapshot=whole, changes_only=changes_only, cursor_floor=floor, after=newest,
                                        last_read=last_read)
                        if manifest is not None:
                            newest = max(manifest.extracted_at_dt, newest or manifest.extracted_at_dt)
                            fresh[manifest.batch_id] = manifest
                            outcome.landed.append(manifest.batch_id)
                            outcome.rows_landed += manifest.rows
                            outcome.schema_notes.extend(drift_notes(manifest.origin.get("schema_drift") or {}))
                            outcome.notes.extend(timeless_notes(manifest.origin.get("without_event_time")))
                            outcome.notes.extend(clock_notes(manifest.origin.get("clock_behind")))
                        elif floor is None and not item.land_if_empty and hasattr(raw, "create_declared"):
                            # an incremental table still empty at the source, never applied: its raw
                            # table is made empty from the extract's contract, as its first batch would
                            # make it; without it every `elt transform` failed saying the source was
                            # never loaded (a backfill probe: an empty app table of the PostgreSQL source)
                            try:
                                raw.create_declared(spec.raw_schema, table.name,
                                                    [{"name": c.name, "type": c.type.name} for c in item.columns],
                                                    list(table.primary_key))
                            except Exception as exc:  # noqa: BLE001 - a convenience: the first rows make it
                                log.warning(f"could not create the empty raw table {spec.raw_schema}.{table.name}: "
                                            f"{first_line(exc)}; its first loaded rows create it, and until then "
                                            "`elt transform` says the source was never loaded",
                                            extra={"fields": {"source": spec.name, "table": table.name}})
                    # what this run landed, added to the listing: a batch another machine lands
                    # meanwhile (S3; the source lock is this machine's) waits for the next load
                    apply_pending(spec, table, landing, raw, outcome, fresh=fresh, landed=landed.with_batches(fresh))
                outcome.unchanged = not outcome.landed
            except Exception as exc:  # one table's failure never stops the others
                if interrupted(exc):  # Ctrl-C during a DuckDB statement: stop the load, not just this table
                    raise KeyboardInterrupt(f"{spec.name}.{table.name}") from exc
                if not isinstance(exc, LoaderError):
                    first = first_line(exc)
                    if getattr(getattr(raw, "con", None), "closed", 0):  # the PostgreSQL warehouse went away
                        from sources.load.postgres_raw import lost_connection_hint, server_reason

                        wrapped = LoaderError(
                            f"lost the connection to the PostgreSQL warehouse: {server_reason(exc)}", source=spec.name,
                            table=table.name, hint=f"nothing of this table was half-applied; {lost_connection_hint(raw.settings)}")
                    elif (store_error := landing.store_error(exc, source=spec.name, table=table.name)):
                        wrapped = store_error  # S3 not reached or busy (retried), or refusing the credentials
                    elif (not isinstance(exc, OSError) and hasattr(raw, "database")  # DuckDB's errors are not OSErrors
                          and (problem := warehouse_write_problem(exc, raw.database))):
                        wrapped = LoaderError(  # DuckDB could not write the warehouse file: a full disk
                            f"the warehouse {raw.database} could not be written: {first}", source=spec.name,
                            table=table.name, hint=f"nothing of this table was half-applied; {problem}")
                    elif isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRNOS:
                        wrapped = LoaderError(
                            f"{exc.strerror or first}" + (f": {exc.filename}" if exc.filename else "")
                            + f" (landing: {landing.url})", source=spec.name, table=table.name,
                            hint=f"nothing of this table was half-applied; {_local_write_hint(exc, landing)}, then "
                                 "rerun (a rerun alone fails the same way)")
                    else:
                        wrapped = LoaderError(
                            f"unexpected {type(exc).__name__}: {first}", source=spec.name, table=table.name,
                            hint="nothing of this table was half-applied; rerun, and report it if it repeats "
                            "(run with ELT_LOG_TRACEBACKS=1 for the traceback)",
                        )
                    wrapped.__cause__ = exc
                    if os.environ.get("ELT_LOG_TRACEBACKS"):
                        log.exception("unexpected error", extra={"fields": {"source": spec.name, "table": table.name}})
                    exc = wrapped
                elif exc.source is None:  # raised below the table's code (the source's connection): say where
                    exc.source, exc.table = spec.name, exc.table or table.name
                outcome.error = exc
                if getattr(getattr(raw, "con", None), "closed", 0):
                    lost_at = table.name
                log.error("table failed", extra={"fields": {"source": spec.name, "table": table.name, "error": str(exc)}})
            outcomes.append(outcome)
    return outcomes


# Errors of the machine, not of the data: the hint says where and what to fix
_DENIED = ("give the user running `elt` access to the file or folder named (a source file must be readable; the "
           "landing folder and the warehouse writable), or point ELT_LANDING_ROOT (ELT_DUCKDB_PATH for the "
           "warehouse) at a folder it can write")
_LOCAL_WRITE_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EACCES: _DENIED, errno.EPERM: _DENIED,
                       errno.EROFS: _DENIED}


def _local_write_hint(exc: OSError, landing: Landing) -> str:
    """What to free or fix for a local write that failed (``exc.errno`` in ``_LOCAL_WRITE_ERRNOS``).
    A full disk is named: a batch is written to the spool folder (beside a local landing, in the
    system temporary folder for S3), then into a local landing's folder; Arrow's error names no file."""
    if _LOCAL_WRITE_ERRNOS[exc.errno] != "full":
        return _LOCAL_WRITE_ERRNOS[exc.errno]
    if landing.is_local:
        return (f"free space on the disk holding the landing folder {landing.root} (ELT_LANDING_ROOT; each batch is "
                f"written to its .spool first), or point ELT_LANDING_ROOT at a larger disk")
    spool = landing.spool_dir or tempfile.gettempdir()
    return (f"free space in {spool}, where each batch is written before its upload to {landing.url} (the system "
            "temporary folder: set TMPDIR to a folder on a larger disk to move it)")


FUTURE_TOLERANCE = timedelta(minutes=5)
# A whole read (a table or endpoint without a cursor) much smaller than the previous one is refused:
# its missing keys would become deletions; the share of rows it may lose, and the rows always allowed
MAX_SHRINK = float(os.environ.get("ELT_SNAPSHOT_MAX_SHRINK", "0.5"))
SHRINK_ALLOWED_ROWS = 10


def _shrank(before: int, now: int) -> bool:
    """Whether a whole read of ``now`` rows, after one of ``before``, lost more than ``MAX_SHRINK`` of
    the rows (and more than a handful).

    >>> _shrank(50, 20), _shrank(50, 30), _shrank(8, 0), _shrank(20, 0)
    (True, False, False, True)
    """
    return before - now > SHRINK_ALLOWED_ROWS and now < before * (1 - MAX_SHRINK)


def _previous_read(last_read: Callable[[], Manifest] | None) -> Manifest | None:
    """A snapshot file's latest landed read, for the checks against it (``_lost_columns``,
    ``_shrank``); None when there is none or its manifest cannot be read: those checks are guards,
    never the reason a load fails (the load reports an unreadable manifest itself where it matters)."""
    if last_read is None:
        return None
    try:
        return last_read()
    except Exception:  # noqa: BLE001 - a guard: never the reason a load fails
        return None


def _lost_columns(item: Extract, before: Manifest) -> list[str]:
    """Declared columns a CSV or Parquet file lacks now (``origin.schema_drift.missing``) that the
    table's latest landed read ``before`` had: in its columns, and not landed as NULL there. A column
    declared since that read, which the file never had, is not lost."""
    missing = (item.origin.get("schema_drift") or {}).get("missing") or []
    if not missing:
        return []
    had = {c["name"] for c in before.columns} - set((before.origin.get("schema_drift") or {}).get("missing") or [])
    return [c for c in missing if c in had]


def _file_name(item: Extract) -> str:
    path = str(item.origin.get("path") or "")
    return path.rsplit("/", 1)[-1] or "the file"


def _bounded_cursor(high: Any, floor: str | None, started: datetime, where: dict[str, str]) -> Any:
    """The cursor to store after an extract whose highest cursor value is ``high``: never before the
    stored one (``floor``), and, for a time, never after the moment the extract began. One row
    stamped a day ahead (a source's clock, a typo) otherwise moved the cursor a day ahead, and
    every change of that day was skipped; its row is loaded, and read again (and dropped as seen)
    until its time comes.

    >>> now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    >>> _bounded_cursor(now + timedelta(days=1), None, now, {}) == now
    True
    >>> _bounded_cursor(datetime(2026, 12, 4, 8, 0), "2026-12-04T09:00:00", now, {})
    datetime.datetime(2026, 12, 4, 9, 0)
    >>> _bounded_cursor(42, "40", now, {})
    42
    >>> _bounded_cursor(date(2024, 1, 1), "2024-02-01", now, {})
    datetime.date(2024, 2, 1)
    """
    if isinstance(high, datetime):
        limit = started if high.tzinfo else started.replace(tzinfo=None)
        if high > limit + FUTURE_TOLERANCE:  # rows written while the extract ran come a little after it began
            log.warning("rows stamped after the extract began: the cursor stops at that time", extra={"fields": {
                **where, "latest_value": high.isoformat(), "cursor_set_to": limit.isoformat(),
                "next": "check the source's clock or those rows' timestamps; they are loaded, and read again until "
                        "their time comes"}})
            high = limit
    if floor is None or high is None:
        return high
    try:
        if isinstance(high, datetime):
            stored = datetime.fromisoformat(floor)
            if high.tzinfo and not stored.tzinfo:
                stored = stored.replace(tzinfo=UTC)
            elif stored.tzinfo and not high.tzinfo:
                stored = stored.astimezone(UTC).replace(tzinfo=None)
        elif isinstance(high, date):  # (not date("2024-01-01"), which raised and let the cursor move back)
            stored = date.fromisoformat(floor[:10])
        else:
            stored = type(high)(floor)
    except (TypeError, ValueError, ArithmeticError):
        return high
    return stored if high < stored else high


def _boundary(spec: SourceSpec, item: Extract, raw: RawStore) -> Callable[[pa.RecordBatch], pa.Array] | None:
    """For an incremental read: a function telling, per extracted batch, which rows raw already
    holds unchanged (same key, same cursor), i.e. the rows the lookback window reads again; with
    ``newest_by_cursor``, also those it holds in a later version (same key, later cursor: an older
    version read from a replica that lags behind the host read before it). The
    check is a semi-join in the warehouse, one extracted batch at a time: memory follows the
    batch, never the number of rows the lookback covers (a bulk update puts every row there)."""
    table = item.table
    if not (table.cursor_field and item.cursor_from):
        return None
    since: Any = item.cursor_from
    cursor_type = next((c.type for c in item.columns if c.name == table.cursor_field), None)
    try:  # compared as what it is: '10' < '9' as text
        arrow = cursor_type.arrow if cursor_type is not None else None
        if arrow is not None and pa.types.is_decimal(arrow):
            since = Decimal(item.cursor_from)
        elif arrow is not None and pa.types.is_integer(arrow):
            since = int(item.cursor_from)
        elif arrow is not None and pa.types.is_floating(arrow):
            since = float(item.cursor_from)
        elif arrow is not None and pa.types.is_date(arrow):
            since = date.fromisoformat(item.cursor_from[:10])
    except (ArithmeticError, ValueError):
        since = item.cursor_from
    if cursor_type is not None and pa.types.is_timestamp(cursor_type.arrow):
        since = datetime.fromisoformat(item.cursor_from)
        since = since.astimezone(UTC) if since.tzinfo else since
        if not cursor_type.arrow.tz:
            since = since.replace(tzinfo=None)
    key, cursor_field = list(table.primary_key), str(table.cursor_field)
    column_type = next((c.type.arrow for c in item.columns if c.name == cursor_field), None)
    try:  # rows older than asked for: an API that ignores its updated-since parameter returns every row
        floor = pa.scalar(since, type=column_type) if column_type is not None else None
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        floor = None

    def seen(batch: pa.RecordBatch) -> pa.Array:
        known = raw.seen_rows(spec.raw_schema, table.name, key, cursor_field, since, pa.Table.from_batches([batch]),
                              table.newest_by_cursor)
        if floor is None:
            return known
        # older than the lower bound: a correct source would not have sent them, and raw holds what
        # earlier reads of them found; appended again they were duplicates (and moved the cursor back)
        older = pc.fill_null(pc.less(batch.column(cursor_field), floor), False)
        return pc.or_(known, older)

    return seen


def _versions_may_repeat(spec: SourceSpec, table: TableSpec) -> bool:
    """An API paged by cursor or next link, ordered by the table's cursor (updated-at) column, hands
    out a record updated while it is paged twice: ``superseded_reads`` keeps its newer version."""
    return (spec.kind == "rest_api" and bool(table.cursor_field) and bool(table.primary_key)
            and dict(table.pagination).get("type") in ("cursor", "next_link"))


def land(spec: SourceSpec, item: Extract, landing: Landing, seen: Callable[[pa.RecordBatch], pa.Array] | None = None,
         previous: Manifest | None = None, snapshot: bool = False, changes_only: bool = False,
         cursor_floor: str | None = None, after: datetime | None = None,
         last_read: Callable[[], Manifest] | None = None) -> Manifest | None:
    """Write one extract as a batch; the manifest (written last) makes it exist.

    ``seen``: tells which rows of a batch raw already holds with the same key and cursor (or a
    later cursor, with ``newest_by_cursor``); such rows (re-read at the lookback boundary, or
    older versions from a lagging replica) are dropped, so overlapping incremental extracts never
    duplicate raw rows.
    ``previous``: the table's latest landed batch; an extract whose data file is byte-identical
    (same rows, same order, same columns: a full snapshot that did not change, e.g. an API without
    an updated-since parameter) is not landed again.
    ``cursor_floor``: the table's stored cursor: the new one never falls below it.
    ``after``: the table's newest extraction stamp: the batch is stamped after it, whatever the
    clock says (``Landing.open_batch``).
    ``last_read``: a snapshot file's latest landed read (a file table read whole, not forced): a
    declared column that read had and this one lacks is refused (``_lost_columns``), and so is a
    file that lost more than ``MAX_SHRINK`` of that read's rows (``_shrank``).
    """
    started = datetime.now(UTC)  # a cursor is never set past the time its extract began
    table = item.table
    where = {"source": spec.name, "table": table.name}
    writer = landing.open_batch(spec.name, table.name, item.schema, datetime.now(UTC), after=after)
    progress = Progress(f"{spec.name}.{table.name} extract", log)
    cursor_to = None
    timeless = (0, 0)  # rows without their event time, and the data row of the first
    try:
        for batch in item.batches:
            if seen is not None and batch.num_rows:
                batch = batch.filter(pc.invert(seen(batch)))
            # values no raw store can hold (a NUL byte in text...) never reach landing, whatever
            # the extractor: files and REST check while casting (``values_checked``), this
            # covers every other source kind
            if not item.values_checked:
                check_values(batch, first_row=writer.rows + 1, where=where)
            if table.soft_delete:
                check_soft_delete(batch, table.soft_delete, where=where)
            if table.event_time and batch.num_rows:
                empty = check_event_time(batch, table.event_time, first_row=writer.rows + 1, where=where)
                if empty:
                    timeless = (timeless[0] + empty[0], timeless[1] or empty[1])
            writer.write(batch)
            progress.advance(batch.num_rows)
            failpoints.hit("extract.mid")
            if table.cursor_field and batch.num_rows:
                high = pc.max(batch.column(table.cursor_field)).as_py()
                if high is not None and (cursor_to is None or high > cursor_to):
                    cursor_to = high
        data = writer.close_data()
        if _versions_may_repeat(spec, table) and not item.key_enforced_by_source:
            found = superseded_reads(data, table)
            if found is not None:  # a record updated while it was paged: its newer version is kept
                positions, example = found
                dropped = writer.drop_rows(positions)
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(table.primary_key, example))
                item.origin["superseded_in_read"] = {"rows": dropped, "first": shown}
                log.warning(f"{dropped:,} record(s) came back later in the same read with a newer {table.cursor_field} "
                            f"(updated while the API was paged; first {shown}): the newer version of each is landed",
                            extra={"fields": {**where, "batch_id": writer.batch_id, "rows": dropped}})
        if previous is not None and snapshot and _shrank(previous.rows, writer.rows):
            raise SourceReadError(
                f"this read returned {writer.rows:,} rows where the previous whole read had {previous.rows:,} "
                f"(batch {previous.batch_id}): applied, it would mark the missing keys deleted; a short read (an "
                "API answering an empty or cut-short page, a table being reloaded) looks like this. Nothing was "
                "landed", **where,
                hint=f"rerun later (a scheduled run retries); if the source really lost those rows, accept it once "
                     f"with `elt load {spec.name} --table {table.name} --force` (ELT_SNAPSHOT_MAX_SHRINK, {MAX_SHRINK:g} "
                     "now, sets how much smaller a read may be)")
        before = _previous_read(last_read) if snapshot else None
        lost = _lost_columns(item, before) if before is not None else []
        if lost:
            raise ContractError(
                f"{_file_name(item)} lacks the declared column(s) {', '.join(lost)}, which the previous read of the "
                f"table had: a snapshot file is the whole table, so applied it would set {', '.join(lost)} to NULL "
                f"in every row ({writer.rows:,}) from now on, and staging and the marts with it. Nothing was landed",
                **where,
                hint=f"if the export lost the column(s) by mistake, fix the file and rerun; if they are gone at the "
                     f"source for good, remove them from the declaration and from the models that read them "
                     f"(docs/runbook.md#schema-change); to load the file as it is, with NULL there from now on, "
                     f"run `{force_command(spec.name, table.name, item.origin, table.file)}` once")
        # a snapshot file much smaller than the table's previous read: the same guard as a whole read
        # of a database or an API (a header-only export wiped the marts, green)
        if before is not None and _shrank(before.rows, writer.rows):
            raise ContractError(
                f"{_file_name(item)} has {writer.rows:,} data rows where the table's previous read had "
                f"{before.rows:,} (batch {before.batch_id}): a snapshot file is the whole table, so applied it "
                f"would mark every key it lacks deleted, in staging and the marts too; an export that stopped "
                f"early or wrote only its header looks like this. Nothing was landed", **where,
                hint=f"if the file is incomplete, have it delivered again and rerun; if the source really lost "
                     f"those rows, load the file as it is once with "
                     f"`{force_command(spec.name, table.name, item.origin, table.file)}` (ELT_SNAPSHOT_MAX_SHRINK, "
                     f"{MAX_SHRINK:g} now, sets how much smaller a read may be)")
        if writer.rows == 0 and not item.land_if_empty:
            writer.abort()
            progress.done()
            log.info("nothing new", extra={"fields": {**where, "cursor_from": item.cursor_from}})
            return None
        if previous is not None and writer.rows and _same_data(previous, data, item.manifest_columns()):
            writer.abort()
            progress.done()
            log.info("unchanged snapshot", extra={"fields": {**where, "same_as_batch": previous.batch_id}})
            return None
        if not item.key_enforced_by_source:
            check_primary_key(data, table, source=spec.name, batch_id=writer.batch_id, file_lines=item.file_lines)
        drift = {k: v for k, v in (item.origin.pop("schema_drift", None) or {}).items() if v}
        if drift:  # recorded in the manifest: the batch says how it differed from the declaration
            item.origin["schema_drift"] = drift
            log.warning("schema drift", extra={"fields": {**where, "batch_id": writer.batch_id, **drift}})
        if timeless[0]:  # landed as the source has them; the transform holds them out of staging
            line = item.file_lines([timeless[1]])[timeless[1]] if item.file_lines else None
            item.origin["without_event_time"] = {"column": table.event_time, "rows": timeless[0],
                                                 "first_data_row": timeless[1], **({"file_line": line} if line else {})}
            outcome = ("warns naming it (held_rows: warn)" if table.held_rows == "warn" else "fails naming it")
            log.warning(f"{timeless[0]:,} row(s) have no {table.event_time}, the table's event_time: landed; "
                        "`elt transform` holds each key whose latest version lacks it out of staging and "
                        f"{outcome} until the source fills it (docs/runbook.md#rows-without-an-event-time)",
                        extra={"fields": {**where, "batch_id": writer.batch_id, "rows": timeless[0],
                                          "data_row": timeless[1], **({"file_line": line} if line else {})}})
        cursor = {}
        if table.cursor_field and item.advances_cursor:
            cursor_to = _bounded_cursor(cursor_to, cursor_floor, started, where)
            to = cursor_to.isoformat() if hasattr(cursor_to, "isoformat") else cursor_to
            to = str(to) if isinstance(to, Decimal) else to  # a numeric(p,s) cursor, as JSON can hold it exactly
            cursor = {"field": table.cursor_field, "from": item.cursor_from, "to": to if to is not None else item.cursor_from}
        manifest = writer.commit(item.manifest_columns(), list(table.primary_key), item.origin, cursor=cursor,
                                 snapshot=snapshot, changes_only=changes_only, soft_delete=table.soft_delete or "")
    except BaseException as exc:
        try:
            writer.abort()
        except Exception as cleanup:  # noqa: BLE001 - the failure to report is exc; a folder left without
            # its manifest is no batch, and the next load of the table sweeps it
            log.warning("could not remove the unfinished batch", extra={"fields": {
                **where, "batch_id": writer.batch_id, "error": first_line(cleanup)}})
        if isinstance(exc, LoaderError) and exc.batch_id in (None, writer.batch_id):
            exc.batch_id = writer.batch_id
            if "landed" not in f"{exc.detail} {exc.hint or ''}":  # the id names no batch anyone can find
                exc.hint = f"{exc.hint}; " if exc.hint else ""
                exc.hint += "nothing of this batch was landed (there is nothing to set aside): the next load reads it again"
        raise
    progress.done()
    log.info("landed", extra={"fields": {**where, "batch_id": manifest.batch_id, "rows": manifest.rows}})
    return manifest


def drift_notes(drift: dict[str, list[str]]) -> list[str]:
    """Report lines for a batch's ``schema_drift`` (see sources/extract/files.py).

    >>> drift_notes({"missing": ["phone"], "undeclared": ["email"]})
    ['column(s) phone not in the source: landed as NULL', 'new column(s) email: landed as text (declare them to type them)']
    """
    notes = []
    if drift.get("missing"):
        notes.append(f"column(s) {', '.join(drift['missing'])} not in the source: landed as NULL")
    if drift.get("undeclared"):
        notes.append(f"new column(s) {', '.join(drift['undeclared'])}: landed as text (declare them to type them)")
    if drift.get("ignored"):
        notes.append(f"undeclared key(s) {', '.join(drift['ignored'])}: not loaded (declare them to load them)")
    if drift.get("not_loaded"):
        notes.append(f"column(s) {', '.join(drift['not_loaded'])} of the source are not declared: not loaded "
                     "(declare them to load them)")
    return notes


def timeless_notes(found: dict[str, Any] | None) -> list[str]:
    """The report line for a batch's rows without their event time (``origin.without_event_time``).

    >>> timeless_notes({"column": "ordered_at", "rows": 2, "first_data_row": 7, "file_line": 8})
    ['2 row(s) without ordered_at (first: data row 7, file line 8): landed, held out of staging until filled']
    """
    if not found:
        return []
    line = f", file line {found['file_line']:,}" if found.get("file_line") else ""
    return [f"{found['rows']:,} row(s) without {found['column']} (first: data row {found['first_data_row']:,}{line}): "
            "landed, held out of staging until filled"]


def clock_notes(found: dict[str, str] | None) -> list[str]:
    """The report line for a batch stamped after the table's newest stamp because the clock was
    behind it (``origin.clock_behind``, written by ``Landing.open_batch``).

    >>> clock_notes({"clock": "2026-12-06T10:00:00+00:00", "newest_stamp": "2026-12-07T10:00:00+00:00",
    ...              "stamped": "2026-12-07T10:00:00.000001+00:00"})
    ["this machine's clock (2026-12-06T10:00:00+00:00) is behind the table's newest extraction stamp (2026-12-07T10:00:00+00:00): stamped 2026-12-07T10:00:00.000001+00:00 so that the batch stays the latest; check the clock (NTP)"]
    """
    if not found:
        return []
    return [f"this machine's clock ({found['clock']}) is behind the table's newest extraction stamp "
            f"({found['newest_stamp']}): stamped {found['stamped']} so that the batch stays the latest; check the clock (NTP)"]


def _same_data(previous: Manifest, data: Path, columns: list[dict[str, str]]) -> bool:
    from pyarrow import fs as pafs

    from sources.landing.store import sha256_of

    files = previous.files
    return (len(files) == 1 and previous.columns == columns and files[0].bytes == data.stat().st_size
            and files[0].sha256 == sha256_of(pafs.LocalFileSystem(), str(data)))


def _warehouse_identity(raw: RawStore) -> str | None:
    """The warehouse's id (``identity`` of the raw store), or None where it has none (Spark) or it
    cannot be read: then nothing is compared."""
    try:
        return raw.identity() if hasattr(raw, "identity") else None
    except Exception as exc:  # noqa: BLE001 - a safeguard, never a reason for a load to fail
        log.warning(f"could not read the warehouse's id: {first_line(exc)}; batches another warehouse landed are "
                    "not told apart in this load")
        return None


@dataclass
class _OnlyOurs:
    """Pending batches must have been landed by this warehouse (``identity``)."""

    warehouse: str | None

    def check(self, spec: SourceSpec, table: TableSpec, landing: Landing, manifest: Manifest) -> None:
        by = manifest.origin.get("landed_by") if isinstance(manifest.origin, dict) else None
        theirs = by.get("warehouse") if isinstance(by, dict) else None
        if not self.warehouse or not theirs or theirs == self.warehouse:
            return
        raise LandingError(
            f"batch {manifest.batch_id} of {spec.name}.{table.name} was landed by another warehouse (id {theirs[:12]}, "
            f"host {by.get('host') or 'unknown'}) than this one (id {self.warehouse[:12]}): two warehouses share the "
            f"landing store {landing.url}, and each applies the other's batches (a rebuild from landing then holds "
            "whichever loaded last); neither it nor the table's later batches were applied", source=spec.name,
            table=table.name,
            batch_id=manifest.batch_id,
            hint="give each warehouse its own landing (ELT_LANDING_URL, another prefix) and stop the scheduler of an "
                 "old copy; set this batch aside here (`elt set-aside SOURCE TABLE BATCH --reason ...`) if it is not "
                 "this warehouse's; if this warehouse replaces the other (a restore), apply landing once with "
                 "`elt load SOURCE --from-landing` (docs/runbook.md#two-warehouses-share-one-landing)")


def _refuse_folders_without_manifest(spec: SourceSpec, table: TableSpec, landing: Landing,
                                     landed: LandedBatches) -> None:
    """A replay (``elt load --from-landing``) into a warehouse whose ledger does not know a batch
    folder without a manifest cannot tell a write cut short from a batch whose manifest was lost:
    it neither skips nor sweeps it (a probe's rebuild skipped such a batch, exit 0, and deleted its
    data file, the one copy a restored manifest could have made whole again)."""
    found = {b: files for b, files in landed.incomplete.items() if files}
    if not found:
        return
    first = sorted(found)[0]
    shown = landing.shown(landing.batch_dir(spec.name, table.name, first))
    raise LandingError(
        f"{len(found)} batch folder(s) of {spec.name}.{table.name} in landing hold data but no manifest "
        f"(the first: {shown}, {len(found[first])} file(s)); a rebuild from landing cannot tell a write cut short "
        "from a batch whose manifest was lost, so nothing of this table was applied and nothing was removed",
        source=spec.name, table=table.name, batch_id=first,
        hint="restore the manifest (`_manifest.json`) from a backup of landing or the bucket's object versions, and "
             "rerun; if the folder is a write cut short (no warehouse ever applied it, its files are from a load that "
             "failed), delete the folder by hand and rerun (docs/runbook.md#restore-raw-from-landing)")


def apply_pending(spec: SourceSpec, table: TableSpec, landing: Landing, raw: RawStore, outcome: TableOutcome,
                  fresh: dict[str, Manifest] | None = None, done: set[str] | None = None,
                  landed: LandedBatches | None = None, aside: set[str] | None = None,
                  ours: _OnlyOurs | None = None) -> LandedBatches:
    """Append, oldest first, every complete landed batch that raw does not hold yet.

    Checksums are verified before applying, except for ``fresh`` batches, landed (and checksummed)
    by this run: their manifests are in hand, not read again.
    Set-aside batches are skipped (listed in ``outcome.set_aside``).
    Returns the table's landed batches (listed once, for the caller to reuse): only the pending
    batches' manifests are read here, so a run with nothing pending reads none, however many
    batches the table has landed. ``done``: the table's batch ids in raw's ledger, when the caller
    has just read them; ``landed`` and ``aside``: the table's listing and its set-aside batches,
    when the caller has them.
    """
    done = raw.loaded_batch_ids(spec.name, table.name) if done is None else done
    aside = set_aside_ids(spec, table, landing, raw, done) if aside is None else aside
    if landed is None:  # ids from one listing; manifests read when needed
        landed = landing.landed(spec.name, table.name, applied=done, aside=aside)
    # said once per table and run: the first pass (the second, after extraction, has ``fresh``)
    lost = sorted(done - set(landed.ids)) if fresh is None else []
    if lost:  # landing is the record raw is rebuilt from: say so while the batches may still be restored
        log.warning(f"{len(lost)} batch(es) of {spec.raw_schema}.{table.name} applied to raw are missing from landing",
                    extra={"fields": {
                        "source": spec.name, "table": table.name, "landing": landing.url, "missing_batches": len(lost),
                        "examples": lost[:3],
                        "next": "raw still holds their rows, but cannot be rebuilt from landing without them: restore "
                                "them from a backup of landing (or the bucket's versions); docs/runbook.md#restore-raw-from-landing"}})
        # in the load report too: the table's line there says `unchanged`, and a restore from this
        # landing would lack these batches' rows without a word
        outcome.notes.append(f"{len(lost)} batch(es) applied to raw are missing from landing (e.g. {lost[0]}): raw "
                             "cannot be rebuilt from landing without them; restore them from a backup of landing "
                             "(docs/runbook.md#restore-raw-from-landing)")
    for batch_id in landed.ids:
        if batch_id in done:  # the ledger says so: its manifest is not even read
            continue
        if batch_id in aside:  # its manifest is not read: the set-aside record says what it was
            if batch_id not in outcome.set_aside:
                outcome.set_aside.append(batch_id)
                log.warning("batch set aside: not applied", extra={"fields": {
                    "source": spec.name, "table": table.name, "batch_id": batch_id,
                    "next": f"elt status lists it; elt set-aside {spec.name} {table.name} {batch_id} --undo "
                            "brings it back"}})
            continue
        manifest = (fresh or {}).get(batch_id) or landed.manifest(batch_id)
        if ours is not None:
            ours.check(spec, table, landing, manifest)
        verify = manifest.batch_id not in (fresh or {})
        if landing.is_local and raw.dialect in ("duckdb", "spark"):  # the engine reads the files itself
            rows: Any = landing.data_files(manifest, verify=verify)
        else:
            rows = landing.open_batch_reader(manifest, verify=verify)
        try:
            result = raw.load(manifest, rows, spec.raw_schema, policy=table.schema_policy)
        except LoaderError as exc:  # reading the batch from S3 failed: the store's fault, never the batch's
            store_error = landing.store_error(exc, applying=True, source=spec.name, table=table.name,
                                              batch_id=manifest.batch_id)
            if store_error is None:
                raise
            raise store_error from exc
        failpoints.hit("raw.after_commit")
        if result.applied:
            outcome.applied.append(result.batch_id)
            outcome.rows_applied += result.rows
            outcome.schema_notes.extend(result.schema_notes)
            fields = {"source": spec.name, "table": table.name, "batch_id": result.batch_id, "rows": result.rows,
                      "raw_table": f"{spec.raw_schema}.{table.name}"}
            for note in result.schema_notes:
                log.warning("schema change", extra={"fields": {**fields, "change": note}})
            log.info("applied to raw", extra={"fields": fields})
    return landed


def set_aside_ids(spec: SourceSpec, table: TableSpec, landing: Landing, raw: RawStore, done: set[str]) -> set[str]:
    """The table's set-aside batches, recorded in landing or in raw (sources/load/set_aside.py).

    A record only landing holds (a replay of landing into a new warehouse, or a set-aside that was
    interrupted before raw recorded it) is recorded in raw now, so status and the report show it.
    """
    marked = landing.set_asides(spec.name, table.name)
    recorded = raw.set_aside_ids(spec.name, table.name)
    for batch_id, record in marked.items():
        if batch_id not in recorded and batch_id not in done:
            raw.record_set_aside(record, spec.raw_schema)
    return recorded | set(marked)


def load_file_source(spec: SourceSpec, *, path: Path, landing: Landing, raw: RawStore, **kwargs: Any) -> list[TableOutcome]:
    """A file source from a local folder (kept for callers of the first version)."""
    return ingest(spec, landing=landing, raw=raw, location=str(path), **kwargs)


def land_file_table(spec: SourceSpec, table: TableSpec, file: Path, landing: Landing, *, force: bool = False) -> Manifest | None:
    """Land one table's file now, without loading it (used by tests simulating a crash before raw)."""
    from sources.extract import files

    landed = landing.landed(spec.name, table.name)
    for item in files.extracts(spec, table, location=str(file.parent), landed=landed, force=force):
        return land(spec, item, landing, after=newest_stamp(landed.ids))
    return None
