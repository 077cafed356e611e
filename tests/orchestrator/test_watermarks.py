"""``transform_watermarks``: the newest load in the ledger and an environment's watermark, asked
of the warehouse in one query (the transform records the first as the second after a success)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
from sqlmesh.core.engine_adapter.duckdb import DuckDBEngineAdapter

from orchestrator.transform.restate import WATERMARKS, transform_watermarks


def test_watermarks_before_any_load_then_per_environment(tmp_path: Path) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    adapter = DuckDBEngineAdapter(lambda: duckdb.connect(path))
    try:
        assert transform_watermarks(adapter, "prod") == (None, None)  # no ledger, no transform yet
        assert adapter.table_exists(WATERMARKS)  # made on first use
        adapter.execute("CREATE TABLE elt_meta.loaded_batches (batch_id TEXT, raw_table TEXT, loaded_at TIMESTAMP)")
        adapter.execute("INSERT INTO elt_meta.loaded_batches VALUES ('b1', 'raw.orders', '2026-12-01 10:00:00'), "
                        "('b2', 'raw.items', '2026-12-02 11:30:00'), ('b3', 'raw.orders', '2026-12-02 09:00:00')")
        assert transform_watermarks(adapter, "prod") == (datetime(2026, 12, 2, 11, 30), None)
        adapter.execute(f"INSERT INTO {WATERMARKS} VALUES ('prod', '2026-12-01 10:00:00', '2026-12-01 10:05:00'), "
                        "('prod', '2026-12-02 09:00:00', '2026-12-02 09:05:00'), "
                        "('dev', '2026-12-02 11:30:00', '2026-12-02 11:35:00')")
        # the newest watermark of the environment asked about, not another environment's
        assert transform_watermarks(adapter, "prod") == (datetime(2026, 12, 2, 11, 30), datetime(2026, 12, 2, 9, 0))
        assert transform_watermarks(adapter, "dev") == (datetime(2026, 12, 2, 11, 30), datetime(2026, 12, 2, 11, 30))
        assert transform_watermarks(adapter, "staging") == (datetime(2026, 12, 2, 11, 30), None)
    finally:
        adapter.close()
