"""Column names a PostgreSQL raw store must take as they are (a probe of identifiers)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from sources.config import parse_source
from sources.landing.store import Landing
from sources.pipeline import TableOutcome, apply_pending
from tests.sources.test_set_aside import land_batch


def test_a_percent_sign_in_a_key_or_cursor_column_does_not_block_the_next_load(tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    """A cursor source whose key is "Row%Id" and cursor "Updated %": the first load applied, and
    every later one failed with `unexpected IndexError: list index out of range`, because the
    lookback's query passed its bound as a parameter and psycopg2 read the quoted names' % as
    placeholders. The rows a lookback re-reads are now found under such names too."""
    from sources.connections import PostgresSettings
    from sources.load.postgres_raw import PostgresRaw

    settings = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    columns = {"Row%Id": "string", "Updated %": "timestamp", "note": "string"}
    spec = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
        "pct": {"file": "p.csv", "primary_key": "Row%Id", "columns": columns}}})
    landing = Landing.local(tmp_path / "landing")
    land_batch(landing, "shop", "pct", [{"Row%Id": "r1", "Updated %": "2024-01-02T09:00:00", "note": "a"},
                                        {"Row%Id": "r2", "Updated %": "2024-01-02T10:00:00", "note": "b"}],
               columns, key="Row%Id")
    outcome = TableOutcome("pct")
    with PostgresRaw(settings) as raw:
        apply_pending(spec, spec.tables["pct"], landing, raw, outcome)
        assert outcome.error is None and len(outcome.applied) == 1, outcome
        again = pa.table({"Row%Id": ["r1", "r2", "r3"],
                          "Updated %": pa.array([datetime(2024, 1, 2, 9), datetime(2024, 1, 2, 11),
                                                 datetime(2024, 1, 2, 12)], pa.timestamp("us"))})
        seen = raw.seen_rows("raw_shop", "pct", ["Row%Id"], "Updated %", "2024-01-02T08:00:00", again)
    assert seen.to_pylist() == [True, False, False]
