"""File sources: CSV, JSON lines and Parquet, from a local folder or an S3 prefix.

A table names one ``file`` (a snapshot: re-extracted whenever its content changes) or a
``pattern`` (each new file is extracted once). Files are read in blocks as bounded Arrow record
batches and cast to the declared types; a value that does not cast stops the table with an error
naming the file, row and field, so a bad extract never reaches landing.

Schema drift (CSV and Parquet, whose columns are known before reading): under the default
``schema_policy: evolve`` (and ``evolve_cast``) a column the file has but the declaration lacks is
landed as text and added to raw; a declared column the file lacks is landed as NULL; both are
recorded in the batch manifest (``origin.schema_drift``) and reported. A missing primary-key
column, or any difference under ``strict``, stops the table. JSON lines keep to the declared
columns (keys are per record, so the columns of a batch cannot be known before it is read):
undeclared keys and declared keys absent from every record are reported, not loaded.
"""

from __future__ import annotations

import csv as pycsv
import fnmatch
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow import csv

from sources.config import ColumnSpec, SourceSpec, TableSpec
from sources.types import parse_type
from sources.errors import ContractError, SourceReadError
from sources.extract.base import Extract
from sources.landing.manifest import Manifest
from sources.landing.store import s3_filesystem

BLOCK_BYTES = 8 << 20  # bytes of CSV/JSON parsed at a time; one Arrow batch each


@dataclass(frozen=True)
class SourceFile:
    fs: pafs.FileSystem
    path: str  # on fs
    url: str  # what people see: a local path or s3://bucket/key
    size: int
    mtime: datetime | None


def resolve_location(location: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path on it, display prefix) for a folder or an ``s3://bucket/prefix``."""
    if location.startswith("s3://"):
        base = location[len("s3://"):].strip("/")
        return s3_filesystem(), base, "s3://"
    return pafs.LocalFileSystem(), str(Path(location).resolve()), ""


def arrow_schema(table: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in table.columns])


def _info(fs: pafs.FileSystem, path: str, prefix: str) -> SourceFile | None:
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime.astimezone(UTC) if info.mtime else None
    return SourceFile(fs, path, prefix + path, info.size or 0, mtime)


def scan(file: SourceFile) -> tuple[str, int]:
    """One pass over the bytes: the sha256 and the number of quote characters."""
    digest = hashlib.sha256()
    quotes = 0
    with file.fs.open_input_stream(file.path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            quotes += chunk.count(b'"')
    return digest.hexdigest(), quotes


def extracts(spec: SourceSpec, table: TableSpec, *, location: str, landed: list[Manifest], force: bool = False) -> Iterator[Extract]:
    """The extracts to land for ``table``: its file if it changed, or each new file of its pattern."""
    where = {"source": spec.name, "table": table.name}
    fs, base, prefix = resolve_location(location)
    if table.file:
        file = _info(fs, f"{base}/{table.file}", prefix)
        if file is None:
            raise SourceReadError(
                f"file {prefix}{base}/{table.file} does not exist", **where,
                hint="check the source path (--path or 'path' in the declaration) and the table's 'file'",
            )
        digest, quotes = scan(file)
        # Compared with the latest extract only: a file reverted to older content is a new extract.
        if not force and landed and landed[-1].origin.get("sha256") == digest:
            return
        yield _extract(spec, table, file, digest, quotes)
        return
    seen = {m.origin.get("path") for m in landed}
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    matching = sorted(i.path for i in infos if i.type == pafs.FileType.File
                      and fnmatch.fnmatch(i.path[len(base):].lstrip("/"), str(table.pattern)))
    for path in matching:
        file = _info(fs, path, prefix)
        if file is None:  # vanished between listing and reading: picked up next run if it returns
            continue
        if file.url in seen and not force:
            continue
        digest, quotes = scan(file)
        yield _extract(spec, table, file, digest, quotes)


def _extract(spec: SourceSpec, table: TableSpec, file: SourceFile, digest: str, quotes: int) -> Extract:
    origin: dict[str, object] = {"kind": "file", "path": file.url, "sha256": digest, "bytes": file.size,
                                 "modified_at": file.mtime.isoformat() if file.mtime else None}
    where = _where(spec.name, table)
    name = file.url.rsplit("/", 1)[-1]
    try:
        if spec.format == "csv":
            header = _csv_header(file, name, where)
            table, drift = drifted_table(header, table, name, where)
            batches = _csv_batches(file, table, spec.name, quotes, header, missing=drift["missing"])
        elif spec.format == "parquet":
            parquet = _open_parquet(file, name, where)
            table, drift = drifted_table(parquet.schema_arrow.names, table, name, where)
            batches = _parquet_batches(parquet, table, name, where, missing=drift["missing"])
    except (ContractError, SourceReadError) as exc:
        # raised when the batch is read, so the error names the batch like every other bad input
        return Extract(table, list(table.columns), _raise(exc), origin)
    if spec.format == "jsonl":
        drift = {"missing": [], "ignored": []}
        batches = _jsonl_batches(file, table, spec.name, quotes, drift)
    origin["schema_drift"] = drift  # known now (CSV, Parquet) or filled in while reading (JSON lines)
    return Extract(table, list(table.columns), batches, origin)


def _raise(exc: Exception) -> Iterator[pa.RecordBatch]:
    raise exc
    yield  # a generator: raises on the first read  # noqa: unreachable


def drifted_table(present: list[str], table: TableSpec, name: str,
                  where: dict[str, str]) -> tuple[TableSpec, dict[str, list[str]]]:
    """The columns this file lands: every declared column (NULL where the file lacks it), then the
    file's undeclared columns as text. Refused under ``strict``, or when a key column is missing.

    >>> from sources.config import parse_source
    >>> t = parse_source({"name": "s", "kind": "files", "owner": "o", "path": ".", "tables": {"t": {
    ...     "file": "t.csv", "primary_key": "id", "columns": {"id": "string", "n": "integer"}}}}).tables["t"]
    >>> table, drift = drifted_table(["id", "note"], t, "t.csv", {})
    >>> [(c.name, c.type.name) for c in table.columns], drift
    ([('id', 'string'), ('n', 'integer'), ('note', 'string')], {'missing': ['n'], 'undeclared': ['note']})
    """
    declared = table.column_names
    missing = [c for c in declared if c not in present]
    undeclared = [c for c in present if c not in declared]
    drift = {"missing": missing, "undeclared": undeclared}
    if not missing and not undeclared:
        return table, drift
    detail = f"columns of {name} differ from the declaration (missing: {missing}, not declared: {undeclared})"
    keys = [c for c in table.primary_key if c in missing]
    if keys:
        raise ContractError(f"{detail}; the primary key column(s) {keys} are missing", **where,
                            hint="fix the extract, or change the table's primary_key in the source declaration")
    if table.schema_policy == "strict":
        raise ContractError(f"{detail}; the table's schema_policy is strict", **where,
                            hint="update the table's columns in the source declaration, or fix the extract")
    lowered = {c.lower() for c in declared}
    clash = [c for c in undeclared if c.lower() in lowered]
    if clash:  # raw would get two columns one engine cannot tell apart
        raise ContractError(f"{detail}; {clash} differ from declared columns only in case", **where,
                            hint="rename the column in the extract, or declare it with the file's spelling")
    reserved = [c for c in undeclared if c.startswith("_") or not c.strip()]
    if reserved:
        raise ContractError(f"{detail}; column names {reserved} are reserved or empty", **where,
                            hint="rename them in the extract (names starting with '_' are the loader's own)")
    columns = (*table.columns, *(ColumnSpec(c, parse_type("string")) for c in undeclared))
    return replace(table, columns=columns), drift


def _where(source: str, table: TableSpec) -> dict[str, str]:
    return {"source": source, "table": table.name}


def _csv_header(file: SourceFile, name: str, where: dict[str, str]) -> list[str]:
    try:
        with file.fs.open_input_stream(file.path) as handle:
            first = handle.read(1 << 16).split(b"\n", 1)[0]
    except OSError as exc:  # vanished or unreadable since it was listed
        raise SourceReadError(f"cannot read {name}: {exc}", **where,
                              hint="check the file is still there and readable; rerun the load") from exc
    try:
        # utf-8-sig: a byte-order mark is not part of the first name; names are stripped, and Arrow
        # is given these exact names (column_names + skip_rows) so both agree
        header = [h.strip() for h in next(pycsv.reader([first.decode("utf-8-sig").rstrip("\r")]))] if first.strip() else []
    except UnicodeDecodeError as exc:
        raise SourceReadError(f"{name} is not UTF-8 text: {exc}", **where) from exc
    if not header:
        raise ContractError(f"{name} is empty (no header line)", **where)
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise ContractError(f"header of {name} repeats column(s) {dupes}", **where, hint="fix or re-export the file")
    return header


def _with_nulls(batch: pa.RecordBatch, missing: list[str]) -> pa.RecordBatch:
    """Add the declared columns a file lacks, as NULL text (cast to their types with the rest)."""
    if not missing:
        return batch
    arrays = [*batch.columns, *(pa.nulls(batch.num_rows, pa.string()) for _ in missing)]
    return pa.RecordBatch.from_arrays(arrays, names=[*batch.schema.names, *missing])


def _csv_batches(file: SourceFile, table: TableSpec, source: str, quotes: int, header: list[str],
                 block_bytes: int = BLOCK_BYTES, missing: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows under ``header`` (read once by ``_csv_header``; Arrow is given the same names)."""
    where = _where(source, table)
    name = file.url.rsplit("/", 1)[-1]
    if quotes % 2:
        raise SourceReadError(
            f"malformed CSV in {name}: a quoted value is never closed (odd number of '\"' characters)", **where,
            hint="fix or re-export the file; a reader would otherwise swallow the following rows into one value",
        )
    try:
        reader = csv.open_csv(
            file.fs.open_input_stream(file.path),
            read_options=csv.ReadOptions(block_size=block_bytes, use_threads=True, column_names=header, skip_rows=1),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceReadError(f"cannot open {name}: {exc}", **where) from exc
    first_row = 1  # 1-based data row number (the header is not a row)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise SourceReadError(
                f"malformed CSV in {name} after data row {first_row - 1}: {exc}", **where, row=first_row,
                hint="fix or re-export the file; nothing of this table was landed",
            ) from exc
        yield cast_batch(_with_nulls(batch, missing or []), table, first_row, where)
        first_row += batch.num_rows


def _jsonl_batches(file: SourceFile, table: TableSpec, source: str, quotes: int,
                   drift: dict[str, list[str]] | None = None) -> Iterator[pa.RecordBatch]:
    """One JSON object per line, mapped to the declared columns (nested values of json columns kept
    as JSON text); a line that is not a JSON object is named by its line number."""
    from sources.extract.rest import records_to_batches

    where = _where(source, table)
    name = file.url.rsplit("/", 1)[-1]

    def records() -> Iterator[list[dict[str, object]]]:
        chunk: list[dict[str, object]] = []
        with file.fs.open_input_stream(file.path) as handle:
            for number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceReadError(f"malformed JSON lines in {name} at line {number}: {exc.msg}", **where,
                                          row=number, hint="every line must be one JSON object; fix or re-export the file") from None
                if not isinstance(record, dict):
                    raise SourceReadError(f"line {number} of {name} is not a JSON object", **where, row=number)
                chunk.append(record)
                if len(chunk) >= 10_000:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    return records_to_batches(records(), table, where, drift)


def _open_parquet(file: SourceFile, name: str, where: dict[str, str]) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file.fs.open_input_file(file.path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceReadError(f"{name} is not a readable Parquet file (or vanished): {exc}", **where,
                              hint="check the file; re-export it if it is damaged, then rerun the load") from exc


def _parquet_batches(parquet: pq.ParquetFile, table: TableSpec, name: str, where: dict[str, str],
                     missing: list[str]) -> Iterator[pa.RecordBatch]:
    present = [c for c in table.column_names if c not in missing]  # matched by name, in any order
    first_row = 1
    for batch in parquet.iter_batches(batch_size=65536, columns=present):
        yield cast_batch(_with_nulls(batch, missing), table, first_row, where)
        first_row += batch.num_rows


def cast_batch(batch: pa.RecordBatch, table: TableSpec, first_row: int, where: dict[str, str]) -> pa.RecordBatch:
    """Cast every column to its declared type; name the first row and field that do not cast."""
    arrays = []
    for spec in table.columns:
        column = batch.column(spec.name)
        target = spec.type.arrow
        if column.type == target:
            arrays.append(column)
            continue
        if pa.types.is_string(column.type) and not pa.types.is_string(target):
            # Empty text is "no value" for every non-text type.
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        try:
            arrays.append(_cast(column, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            offset, value = _first_bad_value(column, target)
            raise ContractError(
                f"value {value!r} is not a valid {spec.type.name} ({exc})", **where, row=first_row + offset,
                field=spec.name, hint="fix the source row, or change the column's type in the source declaration",
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(table))


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``pc.cast``, reading zone-less text as UTC for a zone-aware timestamp (all times are UTC)."""
    try:
        return pc.cast(column, target)
    except pa.ArrowInvalid:
        if not (pa.types.is_timestamp(target) and target.tz and pa.types.is_string(column.type)):
            raise
        return pc.cast(pc.cast(column, pa.timestamp(target.unit)), target)


def _first_bad_value(column: pa.Array, target: pa.DataType) -> tuple[int, object]:
    """Find the first value that fails the cast (only on the error path, so a loop is fine)."""
    for offset, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            _cast(pa.array([value], column.type), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return offset, value
    return 0, None


