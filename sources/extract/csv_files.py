"""Read one CSV file as bounded Arrow record batches that meet the table's declared contract.

The file is read as text in blocks (memory stays flat whatever its size), then each column is
cast to its declared type. A value that does not cast stops the table with an error naming the
row and field, so a bad extract never reaches landing.
"""

from __future__ import annotations

import csv as pycsv
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from sources.config import TableSpec
from sources.errors import ContractError, SourceReadError

BLOCK_BYTES = 8 << 20  # bytes of CSV parsed at a time; one Arrow batch each


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def arrow_schema(table: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in table.columns])


def require_file(path: Path, **where: str) -> None:
    if not path.is_file():
        raise SourceReadError(
            f"file {path} does not exist",
            **where,  # type: ignore[arg-type]
            hint="check the source path (--path or 'path' in the declaration) and the table's 'file'",
        )


def read_csv_batches(
    path: Path, table: TableSpec, *, source: str, block_bytes: int = BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of ``path`` typed as ``table`` declares.

    Raises ``SourceReadError`` for an unreadable or malformed file and ``ContractError`` for a
    header that differs from the declaration or a value that does not cast.
    """
    where = {"source": source, "table": table.name}
    require_file(path, **where)
    if _count_quotes(path) % 2:
        raise SourceReadError(
            f"malformed CSV in {path.name}: a quoted value is never closed (odd number of '\"' characters)",
            **where,
            hint="fix or re-export the file; a reader would otherwise swallow the following rows into one value",
        )
    header = _read_header(path, where)
    declared = table.column_names
    if header != declared:
        missing = [c for c in declared if c not in header]
        extra = [c for c in header if c not in declared]
        detail = f"header of {path.name} is {header}, declared columns are {declared}"
        if missing or extra:
            detail += f" (missing: {missing}, not declared: {extra})"
        raise ContractError(
            detail,
            **where,
            hint="update the table's columns in the source declaration, or fix the extract",
        )
    try:
        reader = csv.open_csv(
            path,
            read_options=csv.ReadOptions(block_size=block_bytes, use_threads=True),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types={name: pa.string() for name in declared},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceReadError(f"cannot open {path}: {exc}", **where) from exc

    first_row = 1  # 1-based data row number (the header is not a row)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise SourceReadError(
                f"malformed CSV in {path.name} after data row {first_row - 1}: {exc}",
                **where,
                row=first_row,
                hint="fix or re-export the file; nothing of this table was landed",
            ) from exc
        yield _cast_batch(batch, table, first_row, where)
        first_row += batch.num_rows


def _count_quotes(path: Path) -> int:
    """Quote characters in the file; escaped quotes are doubled, so an odd count means an open quote."""
    count = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            count += chunk.count(b'"')
    return count


def _read_header(path: Path, where: dict[str, str]) -> list[str]:
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            line = handle.readline()
    except UnicodeDecodeError as exc:
        raise SourceReadError(f"{path.name} is not UTF-8 text: {exc}", **where) from exc
    if not line.strip():
        raise ContractError(f"{path.name} is empty (no header line)", **where)
    return _split_header(line)


def _split_header(line: str) -> list[str]:
    return [name.strip() for name in next(pycsv.reader([line]))]


def _cast_batch(batch: pa.RecordBatch, table: TableSpec, first_row: int, where: dict[str, str]) -> pa.RecordBatch:
    arrays = []
    for spec, column in zip(table.columns, batch.columns):
        target = spec.type.arrow
        if pa.types.is_string(target):
            arrays.append(column)
            continue
        # Empty text is "no value" for every non-text type.
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        try:
            arrays.append(pc.cast(column, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            offset, value = _first_bad_value(column, target)
            raise ContractError(
                f"value {value!r} is not a valid {spec.type.name} ({exc})",
                **where,
                row=first_row + offset,
                field=spec.name,
                hint="fix the source row, or change the column's type in the source declaration",
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(table))


def _first_bad_value(column: pa.Array, target: pa.DataType) -> tuple[int, object]:
    """Find the first value that fails the cast (only on the error path, so a loop is fine)."""
    for offset, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            pc.cast(pa.array([value], pa.string()), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return offset, value
    return 0, None
