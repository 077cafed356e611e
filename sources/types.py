"""The loader's column type vocabulary and its mapping to Arrow and to warehouse SQL types.

Declarations name types in a small, engine-neutral vocabulary; the loader converts it once, so
no batch ever guesses a type from its data.

>>> parse_type("decimal(9,4)").arrow
Decimal128Type(decimal128(9, 4))
>>> parse_type("timestamp").sql("duckdb")
'TIMESTAMP'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

_DECIMAL = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")

_SIMPLE: dict[str, tuple[pa.DataType, str]] = {
    "string": (pa.string(), "TEXT"),
    "integer": (pa.int64(), "BIGINT"),
    "float": (pa.float64(), "DOUBLE"),
    "boolean": (pa.bool_(), "BOOLEAN"),
    "date": (pa.date32(), "DATE"),
    "timestamp": (pa.timestamp("us"), "TIMESTAMP"),
    "timestamptz": (pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
    "json": (pa.string(), "TEXT"),  # JSON text, parsed downstream by the models that need it
    "uuid": (pa.string(), "TEXT"),
}

TYPE_NAMES = (*_SIMPLE, "decimal(p,s)")


@dataclass(frozen=True)
class ColumnType:
    """A declared column type: its name in the vocabulary, its Arrow type and its SQL type."""

    name: str
    arrow: pa.DataType
    sql_type: str

    def sql(self, dialect: str) -> str:
        return exp.DataType.build(self.sql_type).sql(dialect)


def parse_type(name: str) -> ColumnType:
    """Parse a declared type name; raise ``ValueError`` naming the allowed types."""
    key = name.strip().lower()
    if key in _SIMPLE:
        arrow, sql_type = _SIMPLE[key]
        return ColumnType(key, arrow, sql_type)
    match = _DECIMAL.match(key)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if 1 <= precision <= 38 and scale <= precision:
            return ColumnType(key, pa.decimal128(precision, scale), f"DECIMAL({precision}, {scale})")
    raise ValueError(f"unknown type {name!r}; use one of: {', '.join(TYPE_NAMES)}")
