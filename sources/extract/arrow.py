"""Arrow helpers shared by the extractors (files, REST): the declared schema, casting a batch of
text to the declared types with the first bad row and field named, and JSON records mapped to
the declared columns. Below both extractors, so neither imports the other.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sources.config import TableSpec
from sources.contracts import check_values
from sources.errors import ContractError, SourceReadError

ROWS_PER_BATCH = 10_000
FLUSH_AFTER_S = 5.0  # records of a slow API are handed on at least this often (progress, memory)


def arrow_schema(table: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in table.columns])


def cast_batch(batch: pa.RecordBatch, table: TableSpec, first_row: int, where: dict[str, str],
               utf8_checked: bool = False, json_written: bool = False) -> pa.RecordBatch:
    """Cast every column to its declared type; name the first row and field that do not cast, whose
    value the cast would change, or whose value no raw store can hold
    (``sources.contracts.check_values``; ``utf8_checked`` as there). An extract of such batches is
    ``Extract(values_checked=True)``: the pipeline does not check them again. ``json_written``:
    the ``json`` columns were written by ``json_text`` (records), so they are JSON already.

    Text (CSV, JSON, a Parquet text column) is parsed strictly: empty text is NULL for every type
    but ``string``, hexadecimal integers are refused, a ``uuid`` must be one and a ``json`` value
    must parse. A typed column of another type (a Parquet file) is cast only where the cast gives
    the value back unchanged: never a number into a time or a time into a number (no unit says
    which), and never with rounding (1.239 into ``decimal(10,2)``) or truncation (a time of day
    into a ``date``) (decision 0050)."""
    arrays = []
    for spec in table.columns:
        column, target, kind = _as_text_if_text(batch.column(spec.name), spec.type.name), spec.type.arrow, spec.type.name
        text = pa.types.is_string(column.type)
        if text and kind != "string":
            # Empty text is "no value" for every type but string. Tested by length, with no Python
            # value in the call: converting one makes pyarrow import pandas (decision 0014).
            empty = pc.invert(pc.cast(pc.binary_length(column), pa.bool_()))
            if pc.any(empty).as_py():
                column = pc.if_else(empty, pa.nulls(len(column), pa.string()), column)
        located = {**where, "first_row": first_row, "field": spec.name}
        if column.type == target:
            cast = column
        else:
            if not text and _unitless(column.type, target):
                raise ContractError(
                    f"the file's column is {column.type} and is declared {kind}: a number is not a point in time (nor "
                    "a time a number); no unit says how to read one as the other", **where, field=spec.name,
                    hint=f"declare the column as {_declared_name(column.type)} and convert it in the staging model "
                         "(for epoch seconds: to_timestamp(col)), or write the file with the declared type")
            if text and pa.types.is_integer(target) and pc.any(pc.or_(  # the only form Arrow reads: 0x.. / 0X..
                    pc.starts_with(column, "0x"), pc.starts_with(column, "0X"))).as_py():
                _refuse_matching(column, r"^0[xX]", "is hexadecimal; an integer column reads decimal digits only",
                                 "declare the column as string, or write the value in decimal digits", located)
            try:
                cast = _cast(column, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                offset, value = _first_bad_value(column, target)
                try:  # the reason of this value (the block's error may quote another one)
                    _cast(column.slice(offset, 1), target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as single:
                    exc = single
                why, hint = _time_reason(value, kind) or (str(exc), "fix the source row, or change the column's "
                                                          "type in the source declaration")
                raise ContractError(
                    f"value {value!r} is not a valid {kind} ({why}){_key_of(batch, table, offset)}", **where,
                    row=first_row + offset, field=spec.name, hint=f"{hint} (docs/runbook.md#failed-load--bad-input)",
                ) from exc
            if text and pa.types.is_floating(target):
                _refuse_overflow(column, cast, spec.name, first_row, where)
            if not text and not (pa.types.is_floating(target) and pa.types.is_decimal(column.type)):
                _refuse_changed(column, cast, kind, located)  # (a decimal declared float takes a float's rounding)
        if kind == "uuid":
            _refuse_matching(cast, _UUID, "is not a UUID", "fix the value at the source, or declare the column as "
                             "string", located, invert=True)
        elif kind == "json" and not json_written:
            _refuse_invalid_json(cast, located)
        arrays.append(cast)
    cast = pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(table))
    check_values(cast, first_row=first_row, where=where, utf8_checked=utf8_checked)  # what the raw stores cannot hold
    return cast


def _key_of(batch: pa.RecordBatch, table: TableSpec, offset: int) -> str:
    """`` in the record with id=7`` for the row at ``offset``: a row number in a paged API read (or a
    cursor read) cannot be looked up at the source, its key can."""
    names = [k for k in table.primary_key if k in batch.schema.names]
    if not names or len(names) != len(table.primary_key):
        return ""
    shown = ", ".join(f"{k}={batch.column(k)[offset].as_py()!r}" for k in names)
    return f" in the record with {shown[:200]}"


# a UUID as PostgreSQL reads one: 32 hex digits, hyphens between groups of four, braces around
_UUID = r"^\{?[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}?$"
_TEXT_LIKE = (pa.types.is_large_string, pa.types.is_string_view)


def _as_text_if_text(column: pa.Array, declared: str) -> pa.Array:
    """Text stored another way (dictionary-encoded, large or view strings) as plain text, so every
    rule for text applies to it alike; a 16-byte binary (Parquet's UUID) declared ``uuid`` as
    its canonical text; a nested value (struct, list, map) declared ``json`` or ``string`` (also
    a new column landed as text) as JSON text, written by DuckDB.

    >>> _as_text_if_text(pa.array([bytes(range(16))], pa.binary(16)), "uuid").to_pylist()
    ['00010203-0405-0607-0809-0a0b0c0d0e0f']
    >>> _as_text_if_text(pa.array([{"a": 1, "b": [1.5, None]}, None]), "json").to_pylist()
    ['{"a":1,"b":[1.5,null]}', None]
    """
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    uuid_type = getattr(column.type, "extension_name", None) == "arrow.uuid"
    if isinstance(column, pa.ExtensionArray):  # Arrow's UUID and other extension types: their stored values
        column = column.storage
    if any(test(column.type) for test in _TEXT_LIKE):
        column = pc.cast(column, pa.string())
    if declared in ("json", "string") and pa.types.is_nested(column.type):  # a struct, list or map: as JSON text
        import duckdb  # only for such files (Arrow data handed to DuckDB imports pandas)

        with duckdb.connect() as con:
            con.register("_nested", pa.table({"v": column}))
            written = con.execute("SELECT to_json(v)::VARCHAR AS v FROM _nested").to_arrow_table()
        column = written.column(0).combine_chunks()
    if (declared == "uuid" or (uuid_type and declared == "string")) and pa.types.is_fixed_size_binary(column.type) \
            and column.type.byte_width == 16:
        import uuid  # only for such files

        column = pa.array([None if b is None else str(uuid.UUID(bytes=b)) for b in column.to_pylist()], pa.string())
    return column


def _declared_name(arrow: pa.DataType) -> str:
    if pa.types.is_time(arrow) or pa.types.is_duration(arrow) or pa.types.is_interval(arrow):
        return "string"  # no such type in the vocabulary: Arrow's text of it
    if pa.types.is_integer(arrow):
        return "integer"
    if pa.types.is_floating(arrow):
        return "float"
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_date(arrow):
        return "date"
    return "timestamptz" if getattr(arrow, "tz", None) else "timestamp"


def _unitless(source: pa.DataType, target: pa.DataType) -> bool:
    """A number read as a time or a time as a number: Arrow would take 1700000000 as microseconds."""
    def number(t: pa.DataType) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)

    def time(t: pa.DataType) -> bool:
        return pa.types.is_temporal(t)

    return (number(source) and time(target)) or (time(source) and number(target))


def _refuse_matching(column: pa.Array, pattern: str, what: str, hint: str, located: dict[str, Any],
                     invert: bool = False) -> None:
    """Refuse the first non-NULL text value that matches ``pattern`` (or does not, ``invert``)."""
    matched = pc.match_substring_regex(column, pattern=pattern)
    if invert:
        matched = pc.invert(matched)
    matched = _false_if_null(matched)
    if not pc.any(matched).as_py():
        return
    offset = _first_true(matched)
    where = {k: v for k, v in located.items() if k not in ("first_row", "field")}
    raise ContractError(f"value {column[offset].as_py()!r} {what}", **where, row=located["first_row"] + offset,
                        field=located["field"], hint=hint)


def _refuse_changed(column: pa.Array, cast: pa.Array, declared: str, located: dict[str, Any]) -> None:
    """Refuse a typed value that the cast changed: cast back, it must be the value again (1.239
    into ``decimal(10,2)`` comes back 1.24; a time of day into a ``date`` comes back midnight; 2
    into a ``boolean`` comes back 1).

    >>> _refuse_changed(pa.array([1.5, None, float("nan")]), pa.array([1.5, None, float("nan")]), "float", {})
    >>> _refuse_changed(pa.array([1.25, 1.239]), pc.cast(pa.array([1.25, 1.239]), pa.decimal128(10, 2), safe=False),
    ...                 "decimal(10,2)", {"table": "t", "first_row": 1, "field": "x"})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: [table=t row=2 field=x] value 1.239 (double in the file) would be stored as 1.24 in a decimal(10,2) column
      next: declare a type that holds the value as it is (decimal(p,s) with more scale, float, timestamp...), or fix the file
    """
    text = pa.types.is_string(cast.type)
    try:
        back = pc.cast(cast, column.type)
        left, right = column, back
        if pa.types.is_floating(column.type):  # float16 has no comparison of its own
            left, right = pc.cast(column, pa.float64()), pc.cast(back, pa.float64())
        differs = _false_if_null(pc.not_equal(right, left))
        if pa.types.is_floating(column.type):
            differs = pc.and_(differs, pc.invert(_false_if_null(pc.and_(pc.is_nan(left), pc.is_nan(right)))))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if text:  # Arrow's text of a type it cannot read back (a time of day, a duration): kept as it wrote it
            return
        differs = pc.is_valid(column)
    if not pc.any(differs).as_py():
        return
    offset = _first_true(differs)
    where = {k: v for k, v in located.items() if k not in ("first_row", "field")}
    raise ContractError(
        f"value {_shown(column[offset])} ({column.type} in the file) would be stored as {_shown(cast[offset])} in "
        f"a {declared} column", **where, row=located["first_row"] + offset, field=located["field"],
        hint="declare a type that holds the value as it is (decimal(p,s) with more scale, float, timestamp...), or fix "
             "the file")


def _false_if_null(mask: pa.Array) -> pa.Array:
    # not pc.fill_null(mask, False): a Python value given to a compute function imports pandas (0014)
    return pc.and_kleene(mask, pc.is_valid(mask))


def _first_true(mask: pa.Array) -> int:
    return int(pc.indices_nonzero(mask)[0].as_py())


def _shown(scalar: pa.Scalar) -> str:
    value = _value(scalar)
    return repr(value) if isinstance(value, (str, bytes)) else str(value)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# JSON as the standard has it: NaN and Infinity (which Python's parser and DuckDB's json_valid
# accept) are refused; a PostgreSQL json column would refuse them later
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant)


def _refuse_invalid_json(column: pa.Array, located: dict[str, Any]) -> None:
    """Refuse the first value of a ``json`` column (read as text: CSV, Parquet) that is not JSON
    text. Python's parser, value by value (about 3 s per million small documents): DuckDB's
    ``json_valid`` is 20 times faster, but handing Arrow data to DuckDB imports pandas, and it
    accepts NaN and trailing commas."""
    if column.null_count == len(column):
        return
    for offset, text in enumerate(column.to_pylist()):
        if text is None:
            continue
        try:
            _STRICT_JSON.decode(text)
        except ValueError:
            where = {k: v for k, v in located.items() if k not in ("first_row", "field")}
            raise ContractError(f"value {text[:80]!r} is not JSON text", **where, row=located["first_row"] + offset,
                                field=located["field"], hint="fix the value at the source, or declare the column as "
                                "string") from None


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``pc.cast``, reading zone-less text as UTC for a zone-aware timestamp (all times are UTC),
    also where zone-less values and values with an offset share a column.

    >>> mixed = pa.array(["2019-08-31T01:30:00+02:00", "2019-08-30T10:00:00", None, "2019-08-30"])
    >>> [str(v) for v in _cast(mixed, pa.timestamp("us", "UTC")).to_pylist()]
    ['2019-08-30 23:30:00+00:00', '2019-08-30 10:00:00+00:00', 'None', '2019-08-30 00:00:00+00:00']
    >>> _cast(pa.array([12, None]), pa.decimal128(10, 2)).to_pylist()  # Arrow alone asks int64 for 21 digits
    [Decimal('12.00'), None]
    >>> _cast(pa.array([12]), pa.decimal128(38, 20)).to_pylist()
    [Decimal('12.00000000000000000000')]
    """
    if pa.types.is_integer(column.type) and pa.types.is_decimal(target):
        return pc.cast(pc.cast(column, pa.decimal256(76, target.scale)), target)  # each value checked to fit
    try:
        return pc.cast(column, target)
    except pa.ArrowInvalid:
        if not (pa.types.is_timestamp(target) and target.tz and pa.types.is_string(column.type)):
            raise
    try:
        return pc.cast(pc.cast(column, pa.timestamp(target.unit)), target)
    except pa.ArrowInvalid as naive:  # both kinds in one block (Arrow's parser wants one): each on its own
        # (no Python value reaches a compute function here: that would import pandas, decision 0014)
        zoned = pc.match_substring_regex(column, pattern=r":\d\d(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$")
        nothing = pa.nulls(len(column), pa.string())
        try:
            with_zone = pc.cast(pc.if_else(zoned, column, nothing), target)
            without = pc.cast(pc.cast(pc.if_else(zoned, nothing, column), pa.timestamp(target.unit)), target)
        except pa.ArrowInvalid:
            raise naive from None  # a value that is no timestamp: the error names it as before
        return pc.if_else(zoned, with_zone, without)


_FRACTION = re.compile(r"[T ]\d\d:\d\d:\d\d\.(\d{7,})")
_OFFSET = re.compile(r"[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$")


def _time_reason(value: object, kind: str) -> tuple[str, str] | None:
    """What is wrong with a time value Arrow refused, where its own words mislead (it says
    "expected no zone offset" for nanoseconds).

    >>> _time_reason("2024-02-03T04:05:06.123456789Z", "timestamptz")[0]
    'it has 9 fractional digits of a second; microseconds (6) are the finest this column holds'
    >>> _time_reason("2024-02-03T04:05:06+02:00", "timestamp")[1]
    'declare the column timestamptz (a time with its offset), or write the value in UTC without one'
    """
    if not isinstance(value, str) or kind not in ("timestamp", "timestamptz"):
        return None
    fraction = _FRACTION.search(value)
    if fraction:
        return (f"it has {len(fraction.group(1))} fractional digits of a second; microseconds (6) are the finest "
                "this column holds", "round the value to microseconds at the source, or declare the column string")
    if kind == "timestamp" and _OFFSET.search(value.strip()):
        return ("it has a zone offset, and a timestamp column holds times without one",
                "declare the column timestamptz (a time with its offset), or write the value in UTC without one")
    return None


_INFINITY = r"^\s*[+-]?(?i:inf|infinity)\s*$"


def _refuse_overflow(text: pa.Array, cast: pa.Array, field: str, first_row: int, where: dict[str, str]) -> None:
    """Refuse a finite number too large for a ``float`` column (``1e400``): Arrow reads it as
    infinity without a word, which would store a value the source never sent. An infinity the
    source wrote as such (``inf``, ``-Infinity``) stays one.

    >>> _refuse_overflow(pa.array(["1.5", "-inf"]), pa.array([1.5, float("-inf")]), "x", 1, {})
    >>> _refuse_overflow(pa.array(["1.5", "1e400"]), pa.array([1.5, float("inf")]), "x", 7, {"table": "t"})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: [table=t row=8 field=x] number '1e400' is too large for a float (double precision); it would be stored as infinity
      next: declare the column as decimal(p,s) (up to 38 digits) or string in the source declaration, or fix the source value
    """
    infinite = pc.is_inf(cast)
    if not pc.any(infinite).as_py():  # the usual case: one vectorised pass
        return
    overflow = pc.and_(infinite, pc.invert(pc.match_substring_regex(text, pattern=_INFINITY)))
    if not pc.any(overflow).as_py():
        return
    offset = _first_true(overflow)
    raise ContractError(
        f"number {text[offset].as_py()!r} is too large for a float (double precision); it would be stored as infinity",
        **where, row=first_row + offset, field=field,
        hint="declare the column as decimal(p,s) (up to 38 digits) or string in the source declaration, or fix the "
             "source value")


def _first_bad_value(column: pa.Array, target: pa.DataType) -> tuple[int, object]:
    """Find the first value that fails the cast (only on the error path): halves the column
    until one value is left, a few dozen casts whatever its length."""
    low, high = 0, len(column)  # the first bad value is at low..high-1
    while high - low > 1:
        middle = (low + high) // 2
        try:
            _cast(column.slice(low, middle - low), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            high = middle
        else:
            low = middle
    return low, _value(column[low])


def _value(scalar: pa.Scalar) -> object:
    """A scalar as Python, or as Arrow prints it where Python cannot hold it (a year past 9999)."""
    try:
        return scalar.as_py()
    except (OverflowError, ValueError):
        return str(scalar.cast(pa.int64()) if pa.types.is_temporal(scalar.type) else scalar) + f" ({scalar.type})"


class LoneSurrogate(ContractError):
    """A text value with a lone UTF-16 surrogate (a JSON ``"\\ud800"`` escape): not UTF-8 text."""


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class JsonNumber:
    """A JSON number with a fraction or an exponent, kept as the text the source sent: the
    ``parse_float`` (and ``parse_constant``) of every ``json.loads`` that reads records. Read as a
    Python float, ``123456789012345678.91`` became ``123456789012345680`` in a ``decimal(38,2)``
    column, ``1.10`` became ``'1.1'`` in a ``string`` column and ``1e400`` became infinity; as
    text, each column's own cast decides (exact for decimals, refused where it cannot hold it)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __bool__(self) -> bool:  # as the float it stands for (a cursor token 0.0 ends paging, as before)
        return float(self.text) != 0


# reads a JSON record (a line of a JSON-lines file) with its numbers as sent; built once: json.loads
# with arguments builds a decoder per call, which cost more than the numbers themselves
RECORD_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_constant=JsonNumber)


class NotJson(ValueError):
    """A JSON value holding ``NaN`` or ``Infinity``: Python's parser reads them, JSON has none."""


def json_text(value: Any, strict: bool = False) -> str:
    """``value`` as compact JSON with sorted keys, its ``JsonNumber``s written as the source sent
    them. ``strict``: refuse ``NaN`` and ``Infinity`` (``NotJson``), which a ``json`` column
    cannot hold as JSON.

    >>> json_text({"b": [JsonNumber("1.10"), 2], "a": "x"})
    '{"a":"x","b":[1.10,2]}'
    >>> json_text([JsonNumber("NaN")], strict=True)
    Traceback (most recent call last):
    ...
    sources.extract.arrow.NotJson: NaN is not JSON
    """
    if not isinstance(value, JsonNumber):
        try:  # the C encoder, for values without a JsonNumber (once: the walk below never retries it)
            return json.dumps(value, separators=(",", ":"), sort_keys=True)
        except TypeError:
            pass
    return _json_walk(value, strict)


def _json_walk(value: Any, strict: bool) -> str:
    if isinstance(value, JsonNumber):
        if strict and value.text in ("NaN", "Infinity", "-Infinity"):
            raise NotJson(f"{value.text} is not JSON")
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_json_walk(v, strict)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_walk(v, strict) for v in value) + "]"
    return json.dumps(value)  # text, an integer, true, false, null


def _not_json(value: Any) -> bool:
    try:
        _to_text(value, "json")
    except NotJson:
        return True
    return False


def _to_text(value: Any, type_name: str) -> str | None:
    if value is None:
        return None
    if type_name == "json" or isinstance(value, (dict, list)):
        return json_text(value, strict=type_name == "json")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def records_to_batches(pages_: Iterator[list[dict[str, Any]]], table: TableSpec, where: dict[str, str],
                       drift: dict[str, list[str]] | None = None) -> Iterator[pa.RecordBatch]:
    """Map records to the declared columns in batches of ROWS_PER_BATCH (missing keys -> NULL).

    ``drift``, when given, is filled once every record is read: ``missing``, declared keys that no
    record had (their column is all NULL); ``ignored``, keys no column is declared for (at most 100).
    """
    names = table.column_names
    declared, seen, ignored = set(names), set(), set()
    types = [c.type.name for c in table.columns]
    text_schema = pa.schema([pa.field(n, pa.string()) for n in names])
    buffer: list[dict[str, Any]] = []
    first_row = 1

    def flush() -> pa.RecordBatch:
        arrays = []
        for n, t in zip(names, types):
            try:
                texts = [_to_text(r.get(n) if isinstance(r, dict) else None, t) for r in buffer]
            except NotJson as exc:
                index = next(i for i, r in enumerate(buffer) if _not_json(r.get(n) if isinstance(r, dict) else None))
                raise ContractError(f"JSON value holds {str(exc).split()[0]}, which JSON has no way to write", **where,
                                    row=first_row + index, field=n,
                                    hint="fix the record at the source, or declare the column string") from None
            try:
                arrays.append(pa.array(texts, pa.string()))
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800") is no UTF-8 text
                index = next(i for i, v in enumerate(texts) if v is not None and not _encodes(v))
                raise LoneSurrogate("text value holds a lone UTF-16 surrogate (a broken \\uXXXX escape in the "
                                    "JSON), which is not valid UTF-8", **where, row=first_row + index, field=n,
                                    hint="fix the record at the API; nothing of this batch was landed") from None
        return cast_batch(pa.RecordBatch.from_arrays(arrays, schema=text_schema), table, first_row, where,
                          json_written=True)

    flushed = time.monotonic()
    for records in pages_:
        for record in records:
            if not isinstance(record, dict):
                raise SourceReadError(f"record {first_row + len(buffer)} is a {type(record).__name__}, not an object",
                                      **where, row=first_row + len(buffer))
            if drift is not None:
                if len(seen) < len(declared):
                    seen.update(declared.intersection(record))
                if len(ignored) < 100 and not declared.issuperset(record):
                    ignored.update(k for k in record if k not in declared)
            buffer.append(record)
            if len(buffer) >= ROWS_PER_BATCH:
                yield flush()
                first_row += len(buffer)
                buffer = []
                flushed = time.monotonic()
        if buffer and time.monotonic() - flushed >= FLUSH_AFTER_S:  # a slow API: 10,000 records took 30 s
            yield flush()
            first_row += len(buffer)
            buffer = []
            flushed = time.monotonic()
    if buffer:
        yield flush()
    if drift is not None:
        drift["missing"] = [n for n in names if n not in seen] if first_row > 1 or buffer else []
        drift["ignored"] = sorted(ignored)[:100]
