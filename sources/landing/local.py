"""Immutable landing on a local folder.

Layout::

    <root>/<source>/<table>/<batch_id>/part-00000.parquet
    <root>/<source>/<table>/<batch_id>/_manifest.json      <- written last, atomically

A batch folder without ``_manifest.json`` is an interrupted write: it does not exist for any
reader and is swept by ``sweep_incomplete``. Nothing here ever rewrites or deletes a batch that
has its manifest.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sources.errors import LandingError
from sources.landing.manifest import MANIFEST_NAME, LandedFile, Manifest

PART_NAME = "part-00000.parquet"


def new_batch_id(extracted_at: datetime) -> str:
    """Sortable by extraction time, unique per extract.

    >>> new_batch_id(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))[:23]
    '20260102T030405000006Z-'
    """
    return f"{extracted_at:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BatchWriter:
    """Write one batch: ``write`` record batches, then ``commit`` (manifest) or ``abort``."""

    landing: LocalLanding
    source: str
    table: str
    schema: pa.Schema
    extracted_at: datetime
    batch_id: str

    def __post_init__(self) -> None:
        self.dir = self.landing.batch_dir(self.source, self.table, self.batch_id)
        self.dir.mkdir(parents=True, exist_ok=False)
        self._tmp = self.dir / (PART_NAME + ".tmp")
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self.rows = 0

    @property
    def data_path(self) -> Path:
        return self.dir / PART_NAME

    def write(self, batch: pa.RecordBatch) -> None:
        assert self._writer is not None, "batch already closed"
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close_data(self) -> Path:
        """Finish the data file (durably) so it can be checked before the manifest is written."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            with self._tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self._tmp, self.data_path)
        return self.data_path

    def commit(self, columns: list[dict[str, str]], primary_key: list[str], origin: dict[str, Any]) -> Manifest:
        data = self.close_data()
        manifest = Manifest(
            batch_id=self.batch_id,
            source=self.source,
            table=self.table,
            extracted_at=self.extracted_at.isoformat(),
            rows=self.rows,
            columns=columns,
            primary_key=primary_key,
            files=[LandedFile(PART_NAME, self.rows, data.stat().st_size, _sha256(data))],
            origin=origin,
        )
        tmp = self.dir / (MANIFEST_NAME + ".tmp")
        with tmp.open("w") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.dir / MANIFEST_NAME)
        _fsync_dir(self.dir)
        return manifest

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the batch is being discarded anyway
                pass
            self._writer = None
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalLanding:
    """The landing store on a local (or mounted) folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalLanding({str(self.root)!r})"

    def table_dir(self, source: str, table: str) -> Path:
        return self.root / source / table

    def batch_dir(self, source: str, table: str, batch_id: str) -> Path:
        return self.table_dir(source, table) / batch_id

    def open_batch(self, source: str, table: str, schema: pa.Schema, extracted_at: datetime | None = None) -> BatchWriter:
        extracted_at = extracted_at or datetime.now(UTC)
        return BatchWriter(self, source, table, schema, extracted_at, new_batch_id(extracted_at))

    def batches(self, source: str, table: str) -> Iterator[Manifest]:
        """Every complete batch of a table, oldest first."""
        base = self.table_dir(source, table)
        if not base.is_dir():
            return
        for batch_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            manifest_path = batch_dir / MANIFEST_NAME
            if manifest_path.is_file():
                yield self.read_manifest(manifest_path)

    def read_manifest(self, path: Path) -> Manifest:
        try:
            return Manifest.from_json(path.read_text())
        except (ValueError, TypeError, KeyError) as exc:
            raise LandingError(
                f"manifest {path} is unreadable: {exc}",
                hint="a manifest is written atomically, so this means it was edited or the disk is damaged; "
                "restore the file from backup or move the batch folder aside and re-extract",
            ) from exc

    def data_files(self, manifest: Manifest, verify: bool = True) -> list[Path]:
        """The batch's data files, each checked against the manifest's checksum."""
        batch_dir = self.batch_dir(manifest.source, manifest.table, manifest.batch_id)
        paths = []
        for landed in manifest.files:
            path = batch_dir / landed.path
            if not path.is_file():
                raise LandingError(
                    f"data file {path} listed in the manifest is missing",
                    source=manifest.source, table=manifest.table, batch_id=manifest.batch_id,
                    hint="landing is immutable: restore the file from backup; do not edit the manifest",
                )
            if verify and _sha256(path) != landed.sha256:
                raise LandingError(
                    f"checksum of {path} does not match its manifest",
                    source=manifest.source, table=manifest.table, batch_id=manifest.batch_id,
                    hint="the landed file was changed after landing; restore it from backup or re-extract",
                )
            paths.append(path)
        return paths

    def sweep_incomplete(self, source: str, table: str) -> list[Path]:
        """Remove batch folders left without a manifest by an interrupted extract."""
        base = self.table_dir(source, table)
        removed = []
        if base.is_dir():
            for batch_dir in base.iterdir():
                if batch_dir.is_dir() and not (batch_dir / MANIFEST_NAME).exists():
                    shutil.rmtree(batch_dir, ignore_errors=True)
                    removed.append(batch_dir)
        return removed
