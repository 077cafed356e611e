"""Checks a batch must pass before it lands.

``check_values`` runs on every record batch as it is read, after the cast to the declared types
(``sources.extract.files.cast_batch``, which the file and REST extractors call; a PostgreSQL
source's values are PostgreSQL's own, except invalid UTF-8 in a SQL_ASCII database): it refuses
values that a raw store cannot hold, so a batch that lands can always be applied, on either raw
store (DuckDB would take some of them silently, PostgreSQL would fail at apply time, for good):

- text (``string`` and ``json`` columns) holding a NUL byte (``\\x00``): PostgreSQL's text cannot;
- text that is not valid UTF-8, including encoded surrogate code points (U+D800-U+DFFF), which a
  Parquet file can carry unchecked;
- a date or timestamp before 4714-11-24 BC (Julian day 0), PostgreSQL's lower bound, or a date
  after 5874897-12-31, its upper bound (a timestamp in microseconds cannot pass PostgreSQL's
  upper bound, year 294276).

Each check is vectorised (one pass of Arrow compute over a column's buffers, about 10 GB/s for the
NUL byte); the row is looked for only when a check fails. Not checked because nothing can break
it: integers are 64-bit (PostgreSQL ``bigint``), decimals have at most 38 digits, floats may be NaN
or infinite in both stores, and a text value over PostgreSQL's 1 GB limit does not occur in
batches of bounded size.

``check_primary_key`` runs on the batch's Parquet file before its manifest is written (not in
Python memory), so it costs one scan whatever the table's size: the primary key is present and
unique. Column names and types are enforced while reading (see ``extract``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sources.config import TableSpec
from sources.errors import ContractError
from sources.load.duckdb_raw import lit, q

# PostgreSQL's range: from Julian day 0 (4714-11-24 BC) to 5874897-12-31 for dates; as days and
# microseconds since 1970-01-01
_PG_FIRST_DAY = -2440588
_PG_DATE_END = 2147483494 - 2440588  # exclusive
_US_PER_DAY = 86_400_000_000


def check_values(batch: pa.RecordBatch, *, first_row: int, where: dict[str, str], utf8_checked: bool = False) -> None:
    """Raise ``ContractError`` naming the first row and field whose value no raw store can hold.

    ``first_row`` is the number of the batch's first row in its extract (1-based).
    ``utf8_checked``: the text columns come from a reader that already refused invalid UTF-8 (Arrow's
    CSV reader does by default), so the full validation pass over every value is skipped.

    >>> check_values(pa.record_batch({"note": ["ok", "a\\x00b"]}), first_row=10, where={"table": "t"})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: [table=t row=11 field=note] text value 'a\\x00b' holds a NUL byte (\\x00), which PostgreSQL text cannot store
      next: remove the NUL bytes at the source (for a file: tr -d '\\000' < in > out) and rerun the load; nothing of this batch was landed
    """
    for name, column in zip(batch.schema.names, batch.columns):
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            _check_text(column, name, first_row, where, utf8_checked)
        elif pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
            _check_range(column, name, first_row, where)


def check_event_time(batch: pa.RecordBatch, column: str, *, first_row: int, where: dict[str, str]) -> tuple[int, int] | None:
    """How many rows of ``batch`` have an empty event time (the table's declared ``event_time``),
    and the data row of the first: ``None`` when every row has one. Such rows are landed (raw
    keeps what the source said, and they must not block their table); the transform holds each
    key whose latest version has no event time out of staging and fails naming it, until the
    source fills it (docs/runbook.md#rows-without-an-event-time). Refuses, with ``ContractError``,
    a batch that lacks the column altogether: a source that lost or renamed it.

    >>> check_event_time(pa.record_batch({"at": pa.array([1, None, None], pa.timestamp("us"))}), "at", first_row=5,
    ...                  where={"table": "orders"})
    (2, 6)
    >>> check_event_time(pa.record_batch({"id": [1]}), "at", first_row=1, where={"table": "orders"})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: [table=orders field=at] the source has no column at, the table's event_time
      next: fix the source; or, if it really renamed the column, change event_time in the source declaration and the models that read it; nothing of this batch was landed
    """
    if column not in batch.schema.names:  # a table typed from its source's catalog, which lost the column
        raise ContractError(f"the source has no column {column}, the table's event_time", **where, field=column,
                            hint="fix the source; or, if it really renamed the column, change event_time in the "
                                 "source declaration and the models that read it; nothing of this batch was landed")
    values = batch.column(column)
    if not values.null_count:  # kept by Arrow with the array: no scan
        return None
    import pyarrow.compute as pc

    return values.null_count, first_row + int(pc.index(pc.is_null(values), True).as_py())


def check_soft_delete(batch: pa.RecordBatch, column: str, *, where: dict[str, str]) -> None:
    """Refuses, with ``ContractError``, a batch without the table's ``soft_delete`` column: its
    deletions would be applied as live rows.

    >>> check_soft_delete(pa.record_batch({"id": [1]}), "deleted_at", where={"table": "orders"})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: [table=orders field=deleted_at] the source has no column deleted_at, the table's soft_delete
      next: fix the source; or, if it really renamed the column, change soft_delete in the source declaration; nothing of this batch was landed
    """
    if column not in batch.schema.names:
        raise ContractError(f"the source has no column {column}, the table's soft_delete", **where, field=column,
                            hint="fix the source; or, if it really renamed the column, change soft_delete in the "
                                 "source declaration; nothing of this batch was landed")
    kind = batch.schema.field(column).type
    if not (pa.types.is_boolean(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind) or pa.types.is_null(kind)):
        raise ContractError(f"{column}, the table's soft_delete, is {kind}: only a boolean (TRUE marks a row deleted) "
                            "or a date or timestamp (a value marks it) can mark deletions", **where, field=column,
                            hint="declare the column as boolean, date or timestamp (a 0/1 or 'Y'/'N' flag: expose "
                                 "it as a boolean through a view at the source); nothing of this batch was landed")


def _check_text(column: pa.Array, name: str, first_row: int, where: dict[str, str], utf8_checked: bool = False) -> None:
    try:
        if not utf8_checked:
            column.validate(full=True)  # UTF-8 (surrogates included) and offsets, in C++
    except pa.ArrowInvalid:
        offset, value = next((i, v) for i, v in enumerate(column.cast(pa.binary()).to_pylist())
                             if v is not None and not _is_utf8(v))
        raise ContractError(
            f"text value {value[:60]!r} is not valid UTF-8", **where, row=first_row + offset, field=name,
            hint="re-export the data as UTF-8 at the source and rerun the load; nothing of this batch was landed",
        ) from None
    data = column.buffers()[2]
    if data is None or data.size == 0:
        return
    # The smallest byte of all the values at once: 0 only when some value holds a NUL byte
    if pc.min(pa.Array.from_buffers(pa.uint8(), data.size, [None, data])).as_py() != 0:
        return
    found = pc.match_substring(column, "\x00")  # the buffer may extend past a sliced column
    if not pc.any(found).as_py():
        return
    offset = pc.index(found, True).as_py()
    value = column[offset].as_py()
    raise ContractError(
        f"text value {value[:60]!r} holds a NUL byte (\\x00), which PostgreSQL text cannot store", **where,
        row=first_row + offset, field=name,
        hint="remove the NUL bytes at the source (for a file: tr -d '\\000' < in > out) and rerun the load; "
             "nothing of this batch was landed",
    )


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_range(column: pa.Array, name: str, first_row: int, where: dict[str, str]) -> None:
    if column.null_count == len(column):
        return
    kind, span = "timestamp", "before 4714-11-24 BC"
    if pa.types.is_date32(column.type):
        kind, span = "date", "before 4714-11-24 BC or after 5874897-12-31"
        low, high, ints = _PG_FIRST_DAY, _PG_DATE_END, column.cast(pa.int32())
    elif column.type.unit == "us":  # the declared unit; 64 bits of it end before PostgreSQL's year 294276
        low, high, ints = _PG_FIRST_DAY * _US_PER_DAY, None, column.cast(pa.int64())
    else:
        return
    bounds = pc.min_max(ints)
    if bounds["min"].as_py() >= low and (high is None or bounds["max"].as_py() < high):
        return
    outside = pc.less(ints, low) if high is None else pc.or_(pc.less(ints, low), pc.greater_equal(ints, high))
    offset = pc.index(outside, True).as_py()
    raise ContractError(
        f"value {column.slice(offset, 1).cast(pa.string())[0].as_py()!r} is a {kind} {span}, outside PostgreSQL's range", **where,
        row=first_row + offset, field=name,
        hint="fix the value at the source (often a placeholder or a unit mix-up) and rerun the load; "
             "nothing of this batch was landed",
    )


# at most this share of a read may be earlier versions of records read again later (``superseded_reads``):
# more is a primary key that is not one, which the key check names
SUPERSEDED_MAX_SHARE = 0.10


def superseded_reads(data_file: Path, table: TableSpec) -> tuple[list[int], tuple[object, ...]] | None:
    """The rows of a batch that a later version of the same record, read later in the same read,
    supersedes: 0-based positions, and one such key as an example; ``None`` when there are none, or
    when a repeat is not a newer version (then ``check_primary_key`` names it).

    An API paged by cursor or next link and ordered by an updated-at column hands out a record
    updated while it is paged a second time, behind the position already read: the batch holds
    its old and its new version. The version with the greater ``cursor_field`` is kept (the later
    row when they are identical). A repeat with the same cursor value and other content, or more
    repeats than ``SUPERSEDED_MAX_SHARE`` of the rows, is not explained so, and stays an error.
    """
    if not table.cursor_field or not table.primary_key:
        return None
    keys = ", ".join(q(c) for c in table.primary_key)
    cursor = q(str(table.cursor_field))
    rows_of = f"read_parquet({lit(str(data_file))}, file_row_number = true)"
    con = duckdb.connect(config={"memory_limit": "64MB", "threads": 2, "preserve_insertion_order": False})
    try:
        names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({lit(str(data_file))})").fetchall()]
        whole = ", ".join(q(n) for n in names)
        rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT hash({keys})) FROM {rows_of}").fetchone()
        if rows == distinct:
            return None
        ranked = (f"SELECT {keys}, file_row_number AS pos, {cursor} AS c, hash({whole}) AS h, "
                  f"first_value({cursor}) OVER w AS kept_c, first_value(hash({whole})) OVER w AS kept_h, "
                  f"row_number() OVER w AS n FROM {rows_of} "
                  f"WINDOW w AS (PARTITION BY {keys} ORDER BY {cursor} DESC NULLS LAST, file_row_number DESC)")
        older, other = con.execute(
            "SELECT count(*) FILTER (WHERE c < kept_c OR h = kept_h), "
            f"count(*) FILTER (WHERE (c < kept_c OR h = kept_h) IS NOT TRUE) FROM ({ranked}) WHERE n > 1").fetchone()
        if other or not older or older > SUPERSEDED_MAX_SHARE * rows:
            return None
        found = con.execute(f"SELECT pos, {keys} FROM ({ranked}) WHERE n > 1 ORDER BY pos").fetchall()
        return [int(r[0]) for r in found], tuple(found[0][1:])
    finally:
        con.close()


def check_primary_key(data_file: Path, table: TableSpec, *, source: str, batch_id: str,
                      file_lines: Callable[[Iterable[int]], dict[int, int]] | None = None) -> None:
    """Raise ``ContractError`` naming the first row with a missing or duplicated key (and, given
    ``file_lines`` for a CSV file, the file lines those data rows start on).

    One scan answers the common case: no key is missing and the keys' 64-bit hashes are all
    distinct (distinct hashes mean distinct keys). Only when a key is missing, or two hashes meet
    (a duplicate, or rarely two keys with one hash), the exact queries run to find the row. The
    distinct count holds 8-byte hashes where grouping by the keys held the key text and row
    numbers, and spilled: the 6-year items file (3.45M UUID keys) 1.4 s -> 0.25 s."""
    where = {"source": source, "table": table.name, "batch_id": batch_id}
    keys = [q(c) for c in table.primary_key]
    key_list = ", ".join(keys)
    # blank counts as empty: a key of spaces loaded, became a customer of its own in the marts (a probe)
    missing = " OR ".join(f"{k} IS NULL OR TRIM(CAST({k} AS TEXT), ' \t\r\n') = ''" for k in keys)
    rows_of = f"read_parquet({lit(str(data_file))}, file_row_number = true)"
    # Bounded memory whatever the batch size: DuckDB spills to disk past the limit.
    con = duckdb.connect(config={"memory_limit": "64MB", "threads": 2, "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false; SET TimeZone = 'UTC'")  # a timestamptz key's text: UTC
    dup = None
    try:
        empty, rows, distinct = con.execute(
            f"SELECT count(*) FILTER (WHERE {missing}), count(*), count(DISTINCT hash({key_list})) "
            f"FROM read_parquet({lit(str(data_file))})"
        ).fetchone()
        if empty:
            bad = con.execute(f"SELECT file_row_number FROM {rows_of} WHERE {missing} ORDER BY file_row_number LIMIT 1").fetchone()
            row = int(bad[0]) + 1
            raise ContractError(
                f"primary key ({', '.join(table.primary_key)}) is empty or blank"
                + (f" (data row {row:,}, file line {file_lines([row])[row]:,})" if file_lines else ""),
                **where,
                row=row,
                field=",".join(table.primary_key),
                hint="every row needs its key: fix the extract at the source; nothing of this batch was applied",
            )
        if distinct != rows:
            dup = con.execute(
                f"SELECT {key_list}, min(file_row_number), max(file_row_number), count(*) "
                f"FROM {rows_of} GROUP BY {key_list} HAVING count(*) > 1 "
                "ORDER BY min(file_row_number) LIMIT 1"
            ).fetchone()
    finally:
        con.close()
    if dup:
        n = len(keys)
        key_value = dup[:n] if n > 1 else dup[0]
        first, again = int(dup[n]) + 1, int(dup[n + 1]) + 1
        if file_lines:
            line = file_lines([first, again])
            at = (f": first at data row {first:,} (file line {line[first]:,}), "
                  f"again at data row {again:,} (file line {line[again]:,})")
        else:
            at = f" (first at row {first:,}, again at row {again:,})"
        raise ContractError(
            f"primary key ({', '.join(table.primary_key)}) = {key_value!r} appears {dup[n + 2]} times{at}",
            **where,
            row=again,
            field=",".join(table.primary_key),
            hint="a batch must hold each key once: deduplicate at the source or fix the declared primary_key"
                 + ("; from an API paged by page number, a record added while it was paged repeats one on the next "
                    "page: a rerun reads it again (decision 0047)" if dict(table.pagination).get("type") == "page" else "")
                 + ("; from an API paged by cursor or next link, a record updated while it was paged comes back later "
                    "in the read: with the table's cursor_field declared (its updated-at column), elt keeps the newer "
                    "version (docs/reference/sources.md#rest_api)"
                    if dict(table.pagination).get("type") in ("cursor", "next_link") else ""),
        )
