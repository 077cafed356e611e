"""Writing one batch: record batches to a local spool file in a thread of their own, then
checksummed and handed to the landing store, which places the file and writes the manifest
(sources/landing/store.py)."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sources.landing.manifest import LandedFile, Manifest
from sources.logs import get_logger

if TYPE_CHECKING:
    from sources.landing.store import Landing

log = get_logger("sources.landing")

PART_NAME = "part-00000.parquet"
ROW_GROUP_ROWS = 32 * 1024
# lz4: about half the CPU of zstd to write and to read back; landing files are ~1.8x larger.
LANDING_COMPRESSION = os.environ.get("ELT_LANDING_COMPRESSION", "lz4")
# A column is dictionary-encoded only if its first row group repeats values (distinct values
# under this share of rows). Keys, UUIDs and timestamps are nearly all distinct: building their
# dictionary costs a hash per value and is then thrown away (Parquet falls back to plain pages),
# which was a third of the encoder's time on the loader benchmark.
DICTIONARY_MAX_DISTINCT = 0.5


def new_batch_id(extracted_at: datetime) -> str:
    """Sortable by extraction time, unique per extract.

    >>> from datetime import UTC
    >>> new_batch_id(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))[:23]
    '20260102T030405000006Z-'
    """
    return f"{extracted_at:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


_BATCH_ID = re.compile(r"(\d{8}T\d{12})Z-[0-9a-f]+")
STAMP_STEP = timedelta(microseconds=1)  # the smallest step of a stamp, as raw and batch ids hold it


def batch_id_time(batch_id: str) -> datetime | None:
    """The extraction stamp a batch id carries (``new_batch_id``: the manifest's ``extracted_at``
    to the microsecond), or None for an id of another form.

    >>> batch_id_time("20260102T030405000006Z-bf178ba4")
    datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)
    >>> batch_id_time("B1") is None
    True
    """
    found = _BATCH_ID.fullmatch(batch_id)
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC) if found else None


def newest_stamp(batch_ids: Iterable[str]) -> datetime | None:
    """The newest extraction stamp among ``batch_ids`` (a table's landed batches, its ledger's),
    read from the ids themselves: no manifest is read, no query is made. Ids of another form
    (not written by ``new_batch_id``) are passed over.

    >>> newest_stamp(["20261206T100000000000Z-aa", "20261207T100000000000Z-bb", "B1"]).day
    7
    >>> newest_stamp(["B1"]) is None
    True
    """
    # the ids' fixed-width time prefix sorts as the time does: the ids are sorted (in C), and only
    # those after the newest of the form are matched (every id's match took 0.2 s at 300,000 ids)
    for batch_id in sorted(batch_ids, reverse=True):
        if _BATCH_ID.fullmatch(batch_id):
            return batch_id_time(batch_id)
    return None


def stamp_after(clock: datetime, newest: datetime | None) -> datetime:
    """A new batch's extraction stamp: the clock's time, or 1 microsecond after ``newest`` (the
    table's newest stamp) when the clock is not past it. Staging keeps the row of the latest
    stamp, and batch ids sort by it: a clock behind (or an earlier load's clock ahead) must not
    make a new extract older than one already landed.

    >>> t = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    >>> stamp_after(t, None) == t, stamp_after(t, t - STAMP_STEP) == t
    (True, True)
    >>> stamp_after(t, t + timedelta(days=1))
    datetime.datetime(2026, 12, 7, 10, 0, 0, 1, tzinfo=datetime.timezone.utc)
    >>> stamp_after(t, t) == t + STAMP_STEP
    True
    """
    clock = clock.astimezone(UTC)
    return clock if newest is None or clock > newest else newest.astimezone(UTC) + STAMP_STEP


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BatchWriter:
    """Write one batch: ``write`` record batches, ``close_data`` to check it, then ``commit`` or ``abort``."""

    landing: Landing
    source: str
    table: str
    schema: pa.Schema
    extracted_at: datetime
    batch_id: str

    def __post_init__(self) -> None:
        self._spool = Path(tempfile.mkdtemp(prefix=f"elt-batch-{os.getpid()}-", dir=self.landing.spool_dir))
        self.data_path = self._spool / PART_NAME  # local copy, readable by checks before commit
        # opened on the first row group, whose values choose the dictionary-encoded columns
        self._writer: pq.ParquetWriter | None = None
        self._closed = False
        self.rows = 0
        self._placed = False
        self._manifest_sent = False  # the manifest's write was started: a failure may still have written it
        # set by ``Landing.open_batch`` when the clock was behind the table's newest stamp: recorded
        # in the manifest's origin (the stamp is then not the clock's time)
        self.clock_behind: dict[str, str] | None = None
        # Parquet encoding runs in its own thread, overlapping with extraction (both release the
        # GIL); the queue holds at most two batches, so memory stays bounded.
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"parquet-{self.table}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        # Small extraction blocks are grouped into row groups of about ROW_GROUP_ROWS rows: fewer,
        # larger row groups read faster later (raw load, checks), at a bounded memory cost.
        pending: list[pa.RecordBatch] = []
        rows = 0
        while True:
            batch = self._queue.get()
            if batch is not None:
                pending.append(batch)
                rows += batch.num_rows
            if rows and (batch is None or rows >= ROW_GROUP_ROWS) and self._error is None and not self._closed:
                try:
                    group = pa.Table.from_batches(pending, schema=self.schema)
                    if self._writer is None:
                        self._writer = self._open_writer(dictionary_columns(group))
                    self._writer.write_table(group, row_group_size=rows)
                except BaseException as exc:  # noqa: BLE001 - re-raised by write/close_data
                    self._error = exc
                pending, rows = [], 0
            if batch is None:
                return

    def _open_writer(self, use_dictionary: list[str] | bool = True) -> pq.ParquetWriter:
        return pq.ParquetWriter(self.data_path, self.schema, compression=LANDING_COMPRESSION, use_dictionary=use_dictionary)

    def write(self, batch: pa.RecordBatch) -> None:
        assert not self._closed, "batch already closed"
        if self._error is not None:
            raise self._error
        self._queue.put(batch)
        self.rows += batch.num_rows

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close_data(self) -> Path:
        self._stop()
        if self._error is not None:
            raise self._error
        if not self._closed:
            (self._writer or self._open_writer()).close()  # an empty batch still gets a file with its schema
            self._writer = None
            self._closed = True
        return self.data_path

    def drop_rows(self, positions: Iterable[int]) -> int:
        """Rewrite the closed data file without the rows at ``positions`` (0-based, in file order),
        row group by row group; returns how many were dropped. Before ``commit``: the manifest's
        row count and checksum are those of the file as it is then."""
        import pyarrow.compute as pc

        assert self._closed, "close_data first"
        gone = pa.array(sorted(set(positions)), pa.int64())
        if not len(gone):
            return 0
        kept_path = self._spool / (PART_NAME + ".kept")
        source = pq.ParquetFile(self.data_path)
        out: pq.ParquetWriter | None = None
        start = kept = 0
        try:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                at = pa.array(range(start, start + table.num_rows), pa.int64())
                start += table.num_rows
                table = table.filter(pc.invert(pc.is_in(at, gone)))
                if out is None:
                    out = pq.ParquetWriter(kept_path, self.schema, compression=LANDING_COMPRESSION,
                                           use_dictionary=dictionary_columns(table))
                out.write_table(table.cast(self.schema), row_group_size=max(1, table.num_rows))
                kept += table.num_rows
        finally:
            if out is not None:
                out.close()
        os.replace(kept_path, self.data_path)
        dropped = self.rows - kept
        self.rows = kept
        return dropped

    def commit(self, columns: list[dict[str, str]], primary_key: list[str], origin: dict[str, Any],
               cursor: dict[str, Any] | None = None, snapshot: bool = False, changes_only: bool = False,
               soft_delete: str = "") -> Manifest:
        data = self.close_data()
        manifest = Manifest(
            batch_id=self.batch_id,
            source=self.source,
            table=self.table,
            extracted_at=self.extracted_at.isoformat(),
            rows=self.rows,
            columns=columns,
            primary_key=primary_key,
            files=[LandedFile(PART_NAME, self.rows, data.stat().st_size, sha256_of(pafs.LocalFileSystem(), str(data)))],
            origin={**origin, "clock_behind": self.clock_behind} if self.clock_behind else origin,
            cursor=cursor or {},
            snapshot=snapshot,
            changes_only=changes_only,
            soft_delete=soft_delete,
        )
        self._placed = True
        self.landing._place(self.source, self.table, self.batch_id, data, manifest,
                            sending_manifest=self._sending_manifest)
        shutil.rmtree(self._spool, ignore_errors=True)
        return manifest

    def _sending_manifest(self) -> None:
        self._manifest_sent = True

    def abort(self) -> None:
        self._stop()
        self._closed = True
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the batch is being discarded anyway
                pass
            self._writer = None
        shutil.rmtree(self._spool, ignore_errors=True)
        if self._manifest_sent and not self.landing.is_local:
            # S3 may still complete a manifest upload the client gave up on (a slow
            # CompleteMultipartUpload): removing the data made a manifest without its file, which
            # blocked the table (a network probe). The folder stays; a manifest that arrives makes it
            # a batch the next load applies, and without one the sweep removes it (ELT_SWEEP_MIN_AGE_S)
            log.warning(f"the manifest upload of batch {self.batch_id} failed without a definite answer: its folder "
                        "is left in landing (the next load applies it if the manifest arrived, the sweep removes it "
                        "if not)", extra={"fields": {"source": self.source, "table": self.table, "batch": self.batch_id}})
            return
        if self._placed:  # the data file may be placed without its manifest: it does not exist
            self.landing._remove_batch_dir(self.source, self.table, self.batch_id)


def dictionary_columns(group: pa.Table) -> list[str]:
    """The columns worth dictionary-encoding, judged on one row group: those that repeat values.

    >>> dictionary_columns(pa.table({"id": ["a", "b", "c", "d"], "status": ["new", "new", "paid", "new"]}))
    ['status']
    """
    import pyarrow.compute as pc

    rows = max(group.num_rows, 1)
    return [name for name, column in zip(group.column_names, group.columns)
            if pc.count_distinct(column, mode="all").as_py() <= DICTIONARY_MAX_DISTINCT * rows]
