"""Snapshots become changes: what a full snapshot adds to an append-only raw table.

A source read whole each time (a snapshot file, a PostgreSQL table without a cursor, an API
without updated-since) lands the whole snapshot in landing, untouched. Raw gains only the
difference against the current state of the table (the latest version of every key):

- a row whose key is new, or whose values differ from the key's current version, is appended;
- a key whose current version is live but that the snapshot lacks gets a tombstone: a row with
  the key, NULL in every other column and ``_deleted = TRUE``; staging drops the key;
- an unchanged row appends nothing.

So raw grows with the changes, every version stays traceable to its batch, and a replay of landing
in order rebuilds the same raw. One statement per batch, inside the batch's transaction.
"""

from __future__ import annotations

from sqlglot import exp, parse_one

DELETED = "_deleted"
ORDER = ("_extracted_at", "_batch_id", "_batch_row")


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def snapshot_insert_sql(raw_table: str, batch: str, data_cols: list[str], key: list[str], batch_id: str,
                        extracted_at: object, loaded_at: object, dialect: str, *, tombstones: bool = True) -> str:
    """``INSERT INTO raw_table`` the changes of ``batch`` (a relation holding ``data_cols`` and
    ``_batch_row``) against the table's current state, rendered for ``dialect``. Without
    ``tombstones`` (a re-read of part of a table: a backfill window, a forced re-read of an
    increment), keys the batch lacks are left alone: only new and changed rows are appended.

    >>> sql = snapshot_insert_sql('"raw"."t"', "b", ["id", "v"], ["id"], "B1", "2020-01-01", "2020-01-01", "duckdb")
    >>> "IS NOT DISTINCT FROM" in sql and "TRUE AS" in sql
    True
    """
    def lit(value: object) -> str:
        return exp.convert(value).sql("duckdb")

    cols = ", ".join(_q(c) for c in data_cols)
    batch_lit = lit(batch_id)
    times = f"CAST({lit(str(extracted_at))} AS TIMESTAMP), CAST({lit(str(loaded_at))} AS TIMESTAMP)"
    key_match = " AND ".join(f"c.{_q(k)} = b.{_q(k)}" for k in key)
    same = " AND ".join(f"c.{_q(c)} IS NOT DISTINCT FROM b.{_q(c)}" for c in data_cols if c not in key)
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    partition = ", ".join(_q(k) for k in key)
    tombstone = ", ".join(f"c.{_q(c)}" if c in key else f"NULL AS {_q(c)}" for c in data_cols)
    # without tombstones only the batch's keys matter: their versions alone are ranked
    in_batch = " AND ".join(f"r.{_q(k)} = b.{_q(k)}" for k in key)
    keys_of_batch = f" AS r WHERE EXISTS (SELECT 1 FROM {batch} AS b WHERE {in_batch})"
    sql = (
        f"INSERT INTO {raw_table} ({cols}, {_q('_batch_id')}, {_q('_batch_row')}, {_q('_extracted_at')}, "
        f"{_q('_loaded_at')}, {_q(DELETED)}) "
        f"WITH current_rows AS (SELECT {cols}, {_q(DELETED)} FROM ("
        f"SELECT {cols}, {_q(DELETED)}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) AS _rn "
        f"FROM {raw_table}{'' if tombstones else keys_of_batch}) AS versions WHERE _rn = 1) "
        f"SELECT {', '.join(f'b.{_q(c)}' for c in data_cols)}, {batch_lit}, b.{_q('_batch_row')}, "
        f"{times}, FALSE AS {_q(DELETED)} "
        f"FROM {batch} AS b WHERE NOT EXISTS (SELECT 1 FROM current_rows AS c WHERE {key_match} "
        f"AND NOT COALESCE(c.{_q(DELETED)}, FALSE){' AND ' + same if same else ''}) "
    )
    deletions = (
        f"UNION ALL SELECT {tombstone}, {batch_lit}, CAST(NULL AS BIGINT), {times}, TRUE AS {_q(DELETED)} "
        f"FROM current_rows AS c WHERE NOT COALESCE(c.{_q(DELETED)}, FALSE) "
        f"AND NOT EXISTS (SELECT 1 FROM {batch} AS b WHERE {key_match})"
    )
    return parse_one(sql + (deletions if tombstones else ""), read="duckdb").sql(dialect)
