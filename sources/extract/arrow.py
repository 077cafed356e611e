"""Arrow helpers shared by the extractors (files, REST): the declared schema, casting a batch of
text to the declared types with the first bad row and field named, and JSON records mapped to
the declared columns. Below both extractors, so neither imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sources.config import TableSpec
from sources.contracts import check_values
from sources.errors import ContractError, SourceReadError

ROWS_PER_BATCH = 10_000


def arrow_schema(table: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in table.columns])


def cast_batch(batch: pa.RecordBatch, table: TableSpec, first_row: int, where: dict[str, str],
               utf8_checked: bool = False) -> pa.RecordBatch:
    """Cast every column to its declared type; name the first row and field that do not cast, or
    whose value no raw store can hold (``sources.contracts.check_values``; ``utf8_checked`` as
    there). An extract of such batches is ``Extract(values_checked=True)``: the pipeline does not
    check them again."""
    arrays = []
    for spec in table.columns:
        column = batch.column(spec.name)
        target = spec.type.arrow
        if column.type == target:
            arrays.append(column)
            continue
        if pa.types.is_string(column.type) and not pa.types.is_string(target):
            # Empty text is "no value" for every non-text type. Tested by length, with no Python
            # value in the call: converting one makes pyarrow import pandas (decision 0014).
            empty = pc.invert(pc.cast(pc.binary_length(column), pa.bool_()))
            column = pc.if_else(empty, pa.nulls(len(column), pa.string()), column)
        try:
            arrays.append(_cast(column, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            offset, value = _first_bad_value(column, target)
            raise ContractError(
                f"value {value!r} is not a valid {spec.type.name} ({exc})", **where, row=first_row + offset,
                field=spec.name, hint="fix the source row, or change the column's type in the source declaration "
                     "(docs/runbook.md#failed-load--bad-input)",
            ) from exc
        if pa.types.is_floating(target) and pa.types.is_string(column.type):
            _refuse_overflow(column, arrays[-1], spec.name, first_row, where)
    cast = pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(table))
    check_values(cast, first_row=first_row, where=where, utf8_checked=utf8_checked)  # what the raw stores cannot hold
    return cast


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``pc.cast``, reading zone-less text as UTC for a zone-aware timestamp (all times are UTC),
    also where zone-less values and values with an offset share a column.

    >>> mixed = pa.array(["2019-08-31T01:30:00+02:00", "2019-08-30T10:00:00", None])
    >>> [str(v) for v in _cast(mixed, pa.timestamp("us", "UTC")).to_pylist()]
    ['2019-08-30 23:30:00+00:00', '2019-08-30 10:00:00+00:00', 'None']
    """
    try:
        return pc.cast(column, target)
    except pa.ArrowInvalid:
        if not (pa.types.is_timestamp(target) and target.tz and pa.types.is_string(column.type)):
            raise
    try:
        return pc.cast(pc.cast(column, pa.timestamp(target.unit)), target)
    except pa.ArrowInvalid as naive:  # both kinds in one block (Arrow's parser wants one): Z for the zone-less
        # (no Python value reaches a compute function here: that would import pandas, decision 0014)
        zoned = pc.match_substring_regex(column, pattern=r":\d\d(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$")
        utc = pc.replace_substring_regex(column, pattern="$", replacement="Z", max_replacements=1)
        try:
            return pc.cast(pc.if_else(zoned, column, utc), target)
        except pa.ArrowInvalid:
            raise naive from None  # a value that is no timestamp: the error names it as before


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
    offset = pc.index(overflow, True).as_py()
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
    return low, column[low].as_py()


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


def json_text(value: Any) -> str:
    """``value`` as compact JSON with sorted keys, its ``JsonNumber``s written as the source sent
    them.

    >>> json_text({"b": [JsonNumber("1.10"), 2], "a": "x"})
    '{"a":"x","b":[1.10,2]}'
    """
    try:  # the C encoder, for values without a JsonNumber; the walk below otherwise
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except TypeError:
        pass
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{json_text(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _to_text(value: Any, type_name: str) -> str | None:
    if value is None:
        return None
    if type_name == "json" or isinstance(value, (dict, list)):
        return json_text(value)
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
            texts = [_to_text(r.get(n) if isinstance(r, dict) else None, t) for r in buffer]
            try:
                arrays.append(pa.array(texts, pa.string()))
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800") is no UTF-8 text
                index = next(i for i, v in enumerate(texts) if v is not None and not _encodes(v))
                raise LoneSurrogate("text value holds a lone UTF-16 surrogate (a broken \\uXXXX escape in the "
                                    "JSON), which is not valid UTF-8", **where, row=first_row + index, field=n,
                                    hint="fix the record at the API; nothing of this batch was landed") from None
        return cast_batch(pa.RecordBatch.from_arrays(arrays, schema=text_schema), table, first_row, where)

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
    if buffer:
        yield flush()
    if drift is not None:
        drift["missing"] = [n for n in names if n not in seen] if first_row > 1 or buffer else []
        drift["ignored"] = sorted(ignored)[:100]
