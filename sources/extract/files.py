"""File sources: CSV, JSON lines and Parquet, from a local folder or an S3 prefix.

A table names one ``file`` (a snapshot: re-extracted whenever its content changes) or a
``pattern`` (each new file is extracted once). Files are read in blocks as bounded Arrow record
batches and cast to the declared types; a value that does not cast, or that no raw store can hold
(``sources.contracts.check_values``), stops the table with an error naming the file, row and field,
so a bad extract never reaches landing. For CSV the error says both numbers, ``data row 72,311
(file line 73,035)``: rows count records under the header (what ``row=`` holds), lines count what
an editor shows (they differ by the header, blank lines and line breaks inside quoted values). A
file Arrow cannot parse is read a second time with Python's csv module to find the row, line and
field (``find_csv_fault``, on the error path only, about 30 MB/s).

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
import errno
import fnmatch
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow import csv

from sources.config import ColumnSpec, SourceSpec, TableSpec
from sources.declaration_models import MAX_IDENTIFIER_BYTES, RESERVED_COLUMNS, case_clashes
from sources.types import parse_type
from sources.errors import ConfigError, ContractError, SourceReadError
from sources.logs import get_logger
from sources.extract.arrow import RECORD_DECODER, LoneSurrogate, cast_batch, records_to_batches
from sources.extract.base import Extract
from sources.extract.csv_faults import UNDECODED, csv_records, file_line, file_lines, find_csv_fault, text_chunks
from sources.landing.store import LandedBatches, s3_filesystem

BLOCK_BYTES = 8 << 20  # bytes of CSV/JSON parsed at a time; one Arrow batch each

log = get_logger("sources.extract.files")


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


def _info(fs: pafs.FileSystem, path: str, prefix: str) -> SourceFile | None:
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime.astimezone(UTC) if info.mtime else None
    return SourceFile(fs, path, prefix + path, info.size or 0, mtime)


def _not_a_file(fs: pafs.FileSystem, path: str, prefix: str, where: dict[str, str]) -> SourceReadError:
    """Why a declared file cannot be read: a folder, a link that loops or leads nowhere, or absent."""
    shown = prefix + path
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return SourceReadError(f"{shown} is a directory, not a file", **where,
                               hint="point the table's 'file' at a file in it, or give the table a 'pattern' "
                                    "to load each file of the folder")
    if isinstance(fs, pafs.LocalFileSystem) and Path(path).is_symlink():
        try:
            Path(path).resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a loop as RuntimeError, later ones as OSError
            loop = True
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
        else:
            loop = False
        if loop:
            return SourceReadError(f"{shown} is a symbolic link that loops (it leads back to itself)", **where,
                                   hint=f"fix the link (ls -l {shown}) so that it points at the file to load")
        return SourceReadError(f"{shown} is a symbolic link to {os.readlink(path)}, which does not exist", **where,
                               hint=f"deliver the file the link points at, or fix the link (ls -l {shown})")
    return SourceReadError(f"file {shown} does not exist", **where,
                           hint="check the source path (--path or 'path' in the declaration) and the table's 'file'")


def scan(file: SourceFile) -> tuple[str, int]:
    """One pass over the bytes: the sha256 and the number of quote characters."""
    digest = hashlib.sha256()
    quotes = 0
    with file.fs.open_input_stream(file.path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            if b'"' in chunk:  # a memchr pass; counting is a slower loop, and most chunks have none
                quotes += chunk.count(b'"')
    return digest.hexdigest(), quotes


def declared_as_landed(table: TableSpec, landed_columns: list[dict[str, str]]) -> bool:
    """True when every declared column of ``table`` is in a landed batch's columns with the same
    type (an undeclared column lands as text; a declared one missing from the file lands as NULL
    of its type, so it is listed too)."""
    had = {c["name"]: c["type"] for c in landed_columns}
    return all(had.get(c.name) == c.type.name for c in table.columns)


def extracts(spec: SourceSpec, table: TableSpec, *, location: str, landed: LandedBatches, force: bool = False) -> Iterator[Extract]:
    """The extracts to land for ``table``: its file if it changed (compared with the latest landed
    batch's manifest only), or each new file of its pattern (known from the landing listing's
    origin markers, ``LandedBatches.has_origin``: no manifest read)."""
    where = {"source": spec.name, "table": table.name}
    fs, base, prefix = resolve_location(location)
    if table.file:
        file = _info(fs, f"{base}/{table.file}", prefix)
        if file is None:
            raise _not_a_file(fs, f"{base}/{table.file}", prefix, where)
        digest, quotes = scan(file)
        # Compared with the latest extract only: a file reverted to older content is a new extract.
        # The same bytes under a changed declaration (a column newly declared, a type changed) are
        # extracted again: the batch the declaration now gives is not the one landed.
        if not force and landed and landed[-1].origin.get("sha256") == digest:
            if declared_as_landed(table, landed[-1].columns):
                return
            log.info("file unchanged, its declaration changed: extracted again",
                     extra={"fields": {**where, "path": file.url, "same_as_batch": landed[-1].batch_id}})
        yield _extract(spec, table, file, digest, quotes)
        return
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    if not infos and prefix == "s3://":
        _check_bucket(fs, base, where)  # locally, a missing folder is refused before (elt load)
    # the pipeline's own landing, when the source's path holds it (one bucket for exports and
    # landing): its Parquet files are batches, never source files (a probe re-read its own landed
    # file as a new one on every load, for ever)
    own = landed.landing.root if landed.landing.is_local == (prefix == "") else None
    if own is not None and (own == base or own.startswith(base.rstrip("/") + "/")):
        kept = [i for i in infos if not (i.path == own or i.path.startswith(own + "/"))]
        if len(kept) != len(infos):
            log.info("the source's path holds the landing store: its files are left out",
                     extra={"fields": {**where, "landing": landed.landing.url}})
        infos = kept
    matching = sorted(i.path for i in infos if i.type == pafs.FileType.File
                      and fnmatch.fnmatch(i.path[len(base):].lstrip("/"), str(table.pattern)))
    for path in matching:
        file = _info(fs, path, prefix)
        if file is None:  # vanished between listing and reading: picked up next run if it returns
            continue
        if not force and landed.has_origin(file.url):
            continue
        digest, quotes = scan(file)
        yield _extract(spec, table, file, digest, quotes)


def _check_bucket(fs: pafs.FileSystem, base: str, where: dict[str, str]) -> None:
    """Nothing listed under an ``s3://`` path: refused when its bucket does not exist (a typo that a
    scheduled load reported as "unchanged" every day), said when the prefix holds nothing."""
    bucket = base.split("/", 1)[0]
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError:  # no right to look at the bucket itself: the listing's answer stands
        missing = False
    if missing:
        raise ConfigError(
            f"source bucket {bucket!r} does not exist (path s3://{base})", **where,
            hint="check the source's path (or --path) and ELT_S3_ENDPOINT; nothing was loaded")
    log.warning(f"no object under s3://{base}: nothing to load (a path that is wrong, or no export yet)",
                extra={"fields": {**where, "path": f"s3://{base}"}})


def _lines_or_rows(file: SourceFile, rows: Iterable[int]) -> dict[int, int]:
    """``file_lines``, or, when the file cannot be read again (gone, changed), ``row + 1``: locating
    a refusal must never replace it."""
    rows = list(rows)
    try:
        return file_lines(file, rows)
    except Exception:  # noqa: BLE001 - the refusal being raised is what matters
        return {r: r + 1 for r in rows}


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
        return Extract(table, list(table.columns), _raise(exc), origin, values_checked=True)
    if spec.format == "jsonl":
        drift = {"missing": [], "ignored": []}
        batches = _jsonl_batches(file, table, spec.name, quotes, drift)
    origin["schema_drift"] = drift  # known now (CSV, Parquet) or filled in while reading (JSON lines)
    lines = (lambda rows: _lines_or_rows(file, rows)) if spec.format == "csv" else None
    return Extract(table, list(table.columns), batches, origin, values_checked=True,  # by cast_batch
                   file_lines=lines)


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
    if table.event_time in missing:  # landed as NULL, every row would fall outside every window
        raise ContractError(f"{detail}; {table.event_time!r}, the table's event_time, is missing", **where,
                            field=table.event_time,
                            hint="fix the extract; or, if the source really renamed it, change event_time in the "
                                 "source declaration and the models that read the column")
    if table.soft_delete in missing:  # landed as NULL, every deleted row would be applied as live
        raise ContractError(f"{detail}; {table.soft_delete!r}, the table's soft_delete, is missing", **where,
                            field=table.soft_delete,
                            hint="fix the extract; or, if the source really renamed it, change soft_delete in the "
                                 "source declaration")
    if table.schema_policy == "strict":
        raise ContractError(f"{detail}; the table's schema_policy is strict", **where,
                            hint="update the table's columns in the source declaration, or fix the extract")
    lowered = {c.lower() for c in declared}
    clash = [c for c in undeclared if c.lower() in lowered]
    if clash:  # raw would get two columns one engine cannot tell apart
        raise ContractError(f"{detail}; {clash} differ from declared columns only in case", **where,
                            hint="rename the column in the extract, or declare it with the file's spelling")
    # among themselves too: note, NOTE and Note were landed, and every apply failed (a probe)
    recased = case_clashes(undeclared)
    if recased:
        raise ContractError(f"{detail}; {list(recased)} differ from {list(recased.values())} only in case", **where,
                            hint="rename the columns in the extract so that no two differ only in case; nothing "
                                 "was landed")
    reserved = [c for c in undeclared if c.startswith("_") or not c.strip() or c.lower() in RESERVED_COLUMNS
                or len(c.encode()) > MAX_IDENTIFIER_BYTES]
    if reserved:
        raise ContractError(f"{detail}; column names {reserved} are reserved, empty or longer than "
                            f"{MAX_IDENTIFIER_BYTES} bytes", **where,
                            hint="rename them in the extract (names starting with '_' and file_row_number are the "
                                 f"loader's own; PostgreSQL cuts names after {MAX_IDENTIFIER_BYTES} bytes)")
    columns = (*table.columns, *(ColumnSpec(c, parse_type("string")) for c in undeclared))
    return replace(table, columns=columns), drift


def _where(source: str, table: TableSpec) -> dict[str, str]:
    return {"source": source, "table": table.name}


# First bytes of files often delivered where a CSV is expected: what they are, what to do
_UNPACK = "decompress it ({tool} -dc {name} > plain) and deliver the plain file under the declared name"
_MAGIC = {
    b"\x1f\x8b": ("gzip-compressed", _UNPACK.replace("{tool}", "gzip")),
    b"BZh": ("bzip2-compressed", _UNPACK.replace("{tool}", "bzip2")),
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", _UNPACK.replace("{tool}", "zstd")),
    b"\xfd7zXZ\x00": ("xz-compressed", _UNPACK.replace("{tool}", "xz")),
    b"PK\x03\x04": ("a zip archive (or an Excel workbook)", "extract the CSV from the archive, or save the workbook as CSV UTF-8"),
    b"PAR1": ("a Parquet file", "declare the source with format: parquet, or deliver the text export"),
}


def _refuse_packed(start: bytes, name: str, where: dict[str, str]) -> None:
    """Refuse a compressed file, an archive or a Parquet file by its first bytes."""
    for magic, (kind, hint) in _MAGIC.items():
        if start.startswith(magic):
            raise SourceReadError(f"{name} is {kind}, not text (its first bytes are {start[:4].hex(' ')})",
                                  **where, hint=hint.replace("{name}", name))


def _csv_header(file: SourceFile, name: str, where: dict[str, str]) -> list[str]:
    try:
        with file.fs.open_input_stream(file.path) as handle:
            start = handle.read(1 << 16)
    except OSError as exc:  # vanished or unreadable since it was listed
        raise SourceReadError(f"cannot read {name}: {exc}", **where,
                              hint="check the file is still there and readable; rerun the load") from exc
    _refuse_packed(start, name, where)
    first = re.split(rb"\r\n|\n|\r", start, maxsplit=1)[0]  # lines may end in \r alone, as Arrow reads them
    if any(b < 32 and b not in b"\t\r" for b in first[:4096]):
        raise SourceReadError(f"{name} is not a CSV text file: its first line (the header, file line 1) holds "
                              "binary bytes", **where,
                              hint="check that the table's 'file' names the CSV export, and that the export finished")
    try:
        # utf-8-sig: a byte-order mark is not part of the first name; names are stripped, and Arrow
        # is given these exact names (column_names + skip_rows) so both agree
        header = [h.strip() for h in next(pycsv.reader([first.decode("utf-8-sig")]))] if first.strip() else []
    except UnicodeDecodeError as exc:
        raise SourceReadError(f"{name} is not UTF-8 text: its header (file line 1) has invalid bytes at byte "
                              f"{exc.start + 1} ({exc.reason})", **where,
                              hint=f"re-export the file as UTF-8, or convert it: iconv -f <its encoding> -t UTF-8 {name}") from exc
    if not header:
        what = "0 bytes" if not start else "its first line is blank"
        raise ContractError(f"{name} is empty (no header line: {what})", **where,
                            hint="the export wrote nothing: run it again; a file without rows still needs its header line")
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
    """The rows under ``header`` (read once by ``_csv_header``; Arrow is given the same names).

    Arrow's errors say neither row nor line: when it refuses the file, a second pass with Python's
    csv module (``find_csv_fault``, on the error path only) names the data row, file line and field.
    """
    where = _where(source, table)
    name = file.url.rsplit("/", 1)[-1]
    if quotes % 2:
        fault = find_csv_fault(file, header, name)
        if fault:
            raise fault.error(name, where)
        raise SourceReadError(
            f"malformed CSV in {name}: a quoted value is never closed (odd number of '\"' characters)", **where,
            hint="fix or re-export the file; a reader would otherwise swallow the following rows into one value",
        )
    first_row = 1  # 1-based data row number (the header is not a row)
    try:
        reader = csv.open_csv(
            file.fs.open_input_stream(file.path),
            read_options=csv.ReadOptions(block_size=block_bytes, use_threads=True, column_names=header, skip_rows=1),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=False
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            try:
                # Arrow's CSV reader refuses invalid UTF-8 itself (ConvertOptions.check_utf8, on by
                # default; the error is located below by find_csv_fault)
                yield cast_batch(_with_nulls(batch, missing or []), table, first_row, where, utf8_checked=True)
            except ContractError as exc:
                if exc.row is not None:  # say which file line the data row is, as editors count
                    exc.detail = f"{name}, data row {exc.row:,} (file line {file_line(file, exc.row):,}): {exc.detail}"
                raise
            first_row += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        fault = find_csv_fault(file, header, name)
        if fault:
            raise fault.error(name, where) from None
        if first_row == 1 and next(csv_records(file), None) is None:
            return  # the header alone, without a line break: Arrow cannot skip it, there are no rows
        raise SourceReadError(
            f"malformed CSV in {name} after data row {first_row - 1:,}: {exc}", **where, row=first_row,
            hint="fix or re-export the file; nothing of this table was landed",
        ) from exc


def _jsonl_batches(file: SourceFile, table: TableSpec, source: str, quotes: int,
                   drift: dict[str, list[str]] | None = None) -> Iterator[pa.RecordBatch]:
    """One JSON object per line, mapped to the declared columns (nested values of json columns kept
    as JSON text); a line that is not a JSON object is named by its line number."""
    where = _where(source, table)
    name = file.url.rsplit("/", 1)[-1]

    def records() -> Iterator[list[dict[str, object]]]:
        chunk: list[dict[str, object]] = []
        number = 0
        for text, broken in text_chunks(file):
            if not number:
                _refuse_packed(text.encode("utf-8", "surrogateescape")[:8], name, where)
            for number, line in enumerate(io.StringIO(text, newline=""), start=number + 1):
                if broken and UNDECODED.search(line):
                    raise SourceReadError(f"{name} is not UTF-8 text: line {number} holds invalid bytes", **where,
                                          row=number, hint=f"re-export the file as UTF-8, or convert it: "
                                                           f"iconv -f <its encoding> -t UTF-8 {name}")
                if number == 1 and line.startswith("\ufeff"):  # a byte-order mark, as CSV and REST allow
                    line = line[1:]
                if not line.strip():
                    continue
                try:
                    record = RECORD_DECODER.decode(line)
                except json.JSONDecodeError as exc:
                    raise SourceReadError(f"malformed JSON lines in {name} at line {number}: {exc.msg}", **where,
                                          row=number, hint="every line must be one JSON object; fix or re-export the file") from None
                except ValueError as exc:  # an integer of more than 4,300 digits (Python's limit)
                    raise SourceReadError(f"line {number} of {name} holds a number Python cannot read "
                                          f"({str(exc).split(';')[0]})", **where,
                                          row=number, hint="write such a number as a JSON string (and declare the "
                                                           "column string), or fix the file") from None
                if not isinstance(record, dict):
                    raise SourceReadError(f"line {number} of {name} is not a JSON object", **where, row=number,
                                          hint="every line must be one JSON object; fix or re-export the file")
                chunk.append(record)
                if len(chunk) >= 10_000:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def located() -> Iterator[pa.RecordBatch]:
        try:
            yield from records_to_batches(records(), table, where, drift)
        except LoneSurrogate:  # a "\\ud800" escape: text no store can hold; find its line
            number, field = _lone_surrogate(file)
            raise ContractError(f"{name}, line {number}: a text value holds a lone surrogate escape (such as "
                                "\\ud800), which is not a character and cannot be stored as UTF-8", **where,
                                row=number, field=field,
                                hint="fix the escape at the source (pairs such as \\ud83d\\ude00 are fine) and "
                                     "rerun the load; nothing of this table was landed") from None

    return located()


def _lone_surrogate(file: SourceFile) -> tuple[int | None, str | None]:
    """The line and key of the first JSON value that cannot be encoded as UTF-8 (error path only)."""
    number = 0
    for text, _ in text_chunks(file):
        for number, line in enumerate(io.StringIO(text, newline=""), start=number + 1):
            try:
                record = json.loads(line[1:] if number == 1 and line.startswith("\ufeff") else line)
            except ValueError:
                continue
            for key, value in (record.items() if isinstance(record, dict) else []):
                try:
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    return number, key
    return None, None


def _open_parquet(file: SourceFile, name: str, where: dict[str, str]) -> pq.ParquetFile:
    try:
        # UUID and JSON logical types as Arrow's extension types, whoever wrote the file (not bare bytes)
        return pq.ParquetFile(file.fs.open_input_file(file.path), arrow_extensions_enabled=True)
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


