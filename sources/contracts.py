"""Checks a batch must pass before its manifest is written: the primary key is present and unique.

They run on the batch's Parquet file (not in Python memory), so they cost one scan whatever the
table's size. Column names and types are enforced while reading (see ``extract``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from sources.config import TableSpec
from sources.errors import ContractError
from sources.load.duckdb_raw import lit, q


def check_primary_key(data_file: Path, table: TableSpec, *, source: str, batch_id: str) -> None:
    """Raise ``ContractError`` naming the first row with a missing or duplicated key."""
    where = {"source": source, "table": table.name, "batch_id": batch_id}
    keys = [q(c) for c in table.primary_key]
    missing = " OR ".join(f"{k} IS NULL OR CAST({k} AS TEXT) = ''" for k in keys)
    # Bounded memory whatever the batch size: DuckDB spills the GROUP BY to disk past the limit.
    con = duckdb.connect(config={"memory_limit": "64MB", "threads": 1, "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    try:
        bad = con.execute(
            f"SELECT file_row_number FROM read_parquet({lit(str(data_file))}, file_row_number = true) WHERE {missing} "
            "ORDER BY file_row_number LIMIT 1"
        ).fetchone()
        if bad:
            raise ContractError(
                f"primary key ({', '.join(table.primary_key)}) is empty",
                **where,
                row=int(bad[0]) + 1,
                field=",".join(table.primary_key),
                hint="every row needs its key: fix the extract at the source; nothing of this batch was applied",
            )
        key_list = ", ".join(keys)
        dup = con.execute(
            f"SELECT {key_list}, min(file_row_number), max(file_row_number), count(*) "
            f"FROM read_parquet({lit(str(data_file))}, file_row_number = true) GROUP BY {key_list} HAVING count(*) > 1 "
            "ORDER BY min(file_row_number) LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    if dup:
        n = len(keys)
        key_value = dup[:n] if n > 1 else dup[0]
        raise ContractError(
            f"primary key ({', '.join(table.primary_key)}) = {key_value!r} appears {dup[n + 2]} times "
            f"(first at row {dup[n] + 1}, again at row {dup[n + 1] + 1})",
            **where,
            row=int(dup[n + 1]) + 1,
            field=",".join(table.primary_key),
            hint="a batch must hold each key once: deduplicate at the source or fix the declared primary_key",
        )
