"""The loader's batch contract: atomic, idempotent, traceable; bad input named and never applied."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from sources.config import load_source
from sources.errors import ContractError, RawLoadError, SourceReadError
from sources.landing.store import LocalLanding
from sources.landing.manifest import MANIFEST_NAME
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import land_file_table, load_file_source

SPEC = load_source("jaffle_shop")


def _load(folder: Path, tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    landing = LocalLanding(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        return load_file_source(SPEC, path=folder, landing=landing, raw=raw, lock_dir=tmp_path / "locks", **kw)


def _rows(tmp_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_table_lands_with_a_manifest_and_loads_traceably(small_jaffle: Path, tmp_path: Path) -> None:
    outcomes = _load(small_jaffle, tmp_path)
    assert [o.status for o in outcomes] == ["loaded"] * 7
    orders = next(o for o in outcomes if o.table == "orders")
    (batch_id,) = orders.applied
    batch_dir = tmp_path / "landing" / "jaffle_shop" / "orders" / batch_id
    manifest = json.loads((batch_dir / MANIFEST_NAME).read_text())
    assert manifest["rows"] == 4
    assert manifest["primary_key"] == ["id"]
    assert [c["name"] for c in manifest["columns"]] == ["id", "customer", "ordered_at", "store_id", "subtotal", "tax_paid", "order_total"]
    assert manifest["origin"]["path"] == str((small_jaffle / "raw_orders.csv").resolve())
    assert len(manifest["files"][0]["sha256"]) == 64
    # every raw row names its batch, its row in the landed file, and when it was extracted and loaded
    rows = _rows(tmp_path, "SELECT id, _batch_id, _batch_row, _extracted_at IS NOT NULL, _loaded_at IS NOT NULL FROM raw_jaffle_shop.orders ORDER BY _batch_row")
    assert rows == [(f"o{i + 1}", batch_id, i, True, True) for i in range(4)]
    ledger = _rows(tmp_path, "SELECT batch_id, rows, raw_table FROM elt_meta.loaded_batches WHERE table_name = 'orders'")
    assert ledger == [(batch_id, 4, "raw_jaffle_shop.orders")]
    # the landed Parquet holds the typed source rows exactly
    landed = duckdb.sql(f"SELECT id, ordered_at::VARCHAR, subtotal FROM read_parquet('{batch_dir / 'part-00000.parquet'}')").fetchall()
    assert landed[0] == ("o1", "2018-09-01 09:00:00", 1700)


def test_loading_the_same_files_again_changes_nothing(small_jaffle: Path, tmp_path: Path) -> None:
    _load(small_jaffle, tmp_path)
    before = _rows(tmp_path, "SELECT table_name, batch_id FROM elt_meta.loaded_batches ORDER BY ALL")
    again = _load(small_jaffle, tmp_path)
    assert {o.status for o in again} == {"unchanged"}
    assert _rows(tmp_path, "SELECT table_name, batch_id FROM elt_meta.loaded_batches ORDER BY ALL") == before
    assert _rows(tmp_path, "SELECT count(*) FROM raw_jaffle_shop.orders") == [(4,)]
    assert len(list((tmp_path / "landing" / "jaffle_shop" / "orders").iterdir())) == 1


def test_applying_an_already_loaded_batch_is_a_no_op(small_jaffle: Path, tmp_path: Path) -> None:
    _load(small_jaffle, tmp_path)
    landing = LocalLanding(tmp_path / "landing")
    (manifest,) = list(landing.batches("jaffle_shop", "customers"))
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        result = raw.load(manifest, landing.open_batch_reader(manifest), "raw_jaffle_shop")
    assert result.applied is False
    assert _rows(tmp_path, "SELECT count(*) FROM raw_jaffle_shop.customers") == [(3,)]


def test_a_new_extract_of_the_same_file_is_a_new_batch(small_jaffle: Path, tmp_path: Path) -> None:
    _load(small_jaffle, tmp_path)
    (small_jaffle / "raw_customers.csv").write_text("id,name\nc1,Ann Changed\nc2,Bob\nc3,Cyd\nc4,Dee\n")
    outcomes = _load(small_jaffle, tmp_path, tables=["customers"])
    assert outcomes[0].status == "loaded" and len(outcomes[0].applied) == 1
    # a snapshot file: landed whole, but raw gains only its changes (c1 renamed, c4 new)
    assert outcomes[0].rows_landed == 4 and outcomes[0].rows_applied == 2
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT _batch_id) FROM raw_jaffle_shop.customers") == [(5, 2)]
    forced = _load(small_jaffle, tmp_path, tables=["customers"], force=True)
    assert len(forced[0].applied) == 1 and forced[0].rows_applied == 0  # landed and recorded, nothing changed
    assert _rows(tmp_path, "SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = 'customers'") == [(3,)]
    # a key the next snapshot lacks gets a tombstone: the key, NULLs, _deleted
    (small_jaffle / "raw_customers.csv").write_text("id,name\nc1,Ann Changed\nc2,Bob\nc4,Dee\n")
    gone = _load(small_jaffle, tmp_path, tables=["customers"])
    assert gone[0].rows_applied == 1
    assert _rows(tmp_path, "SELECT id, name, _batch_row FROM raw_jaffle_shop.customers WHERE _deleted") == [("c3", None, None)]


def test_a_batch_landed_but_not_loaded_is_applied_by_the_next_run(small_jaffle: Path, tmp_path: Path) -> None:
    """A crash between landing and the raw load: the batch exists in landing only; the next run heals."""
    landing = LocalLanding(tmp_path / "landing")
    manifest = land_file_table(SPEC, SPEC.tables["orders"], small_jaffle / "raw_orders.csv", landing)
    assert manifest is not None
    outcomes = _load(small_jaffle, tmp_path, tables=["orders"])
    assert outcomes[0].unchanged and outcomes[0].applied == [manifest.batch_id]
    assert _rows(tmp_path, "SELECT count(*) FROM raw_jaffle_shop.orders") == [(4,)]


def test_a_batch_without_manifest_does_not_exist_and_is_swept(small_jaffle: Path, tmp_path: Path) -> None:
    """A crash after writing Parquet but before the manifest leaves a folder no reader sees."""
    orphan = tmp_path / "landing" / "jaffle_shop" / "orders" / "20260101T000000000000Z-dead"
    orphan.mkdir(parents=True)
    (orphan / "part-00000.parquet").write_bytes(b"half a file")
    outcomes = _load(small_jaffle, tmp_path, tables=["orders"])
    assert outcomes[0].error is None
    assert not orphan.exists()
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT _batch_id) FROM raw_jaffle_shop.orders") == [(4, 1)]


def test_replaying_landing_into_an_empty_warehouse_rebuilds_raw(small_jaffle: Path, tmp_path: Path) -> None:
    _load(small_jaffle, tmp_path)
    original = _rows(tmp_path, "SELECT * EXCLUDE (_loaded_at) FROM raw_jaffle_shop.items ORDER BY id")
    (tmp_path / "wh.duckdb").unlink()
    replay = _load(small_jaffle, tmp_path)
    assert {o.status for o in replay} == {"loaded"}
    assert all(o.unchanged for o in replay)  # nothing re-extracted, everything re-applied from landing
    assert _rows(tmp_path, "SELECT * EXCLUDE (_loaded_at) FROM raw_jaffle_shop.items ORDER BY id") == original


def test_a_failing_raw_insert_rolls_back_rows_and_ledger(small_jaffle: Path, tmp_path: Path) -> None:
    _load(small_jaffle, tmp_path, tables=["customers"])
    landing = LocalLanding(tmp_path / "landing")
    (small_jaffle / "raw_customers.csv").write_text("id,name\nc9,Zed\n")
    manifest = land_file_table(SPEC, SPEC.tables["customers"], small_jaffle / "raw_customers.csv", landing)
    assert manifest is not None
    # Make the batch lie about its row count: the insert happens, then the check fails -> rollback.
    from dataclasses import replace

    lying = replace(manifest, rows=manifest.rows + 1)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw, pytest.raises(RawLoadError) as err:
        raw.load(lying, landing.open_batch_reader(manifest), "raw_jaffle_shop")
    assert f"batch={manifest.batch_id}" in str(err.value) and "next:" in str(err.value)
    assert _rows(tmp_path, "SELECT count(*) FROM raw_jaffle_shop.customers") == [(3,)]
    assert _rows(tmp_path, f"SELECT count(*) FROM elt_meta.loaded_batches WHERE batch_id = '{manifest.batch_id}'") == [(0,)]


def test_a_tampered_landing_file_is_refused(small_jaffle: Path, tmp_path: Path) -> None:
    landing = LocalLanding(tmp_path / "landing")
    manifest = land_file_table(SPEC, SPEC.tables["stores"], small_jaffle / "raw_stores.csv", landing)
    assert manifest is not None
    data = Path(landing.batch_dir("jaffle_shop", "stores", manifest.batch_id)) / "part-00000.parquet"
    data.write_bytes(data.read_bytes() + b"x")
    outcomes = _load(small_jaffle, tmp_path, tables=["stores"])
    assert outcomes[0].status == "failed"
    message = str(outcomes[0].error)
    assert "checksum" in message
    # the hint names the command that unblocks the table; following it, the next load re-lands the file
    assert f"elt set-aside jaffle_shop stores {manifest.batch_id} --reason" in message
    # or, the file being sound, lands it again from the folder it was read from (not the declared one)
    assert f"`elt load jaffle_shop --table stores --force --path {small_jaffle}`" in message, message
    from sources.load.set_aside import set_aside

    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        set_aside(SPEC, "stores", manifest.batch_id, landing=landing, raw=raw, reason="damaged file")
    assert "elt load jaffle_shop --table stores --force" in message  # the file did not change: without
    assert _load(small_jaffle, tmp_path, tables=["stores"])[0].status == "unchanged"  # --force, nothing lands
    again = _load(small_jaffle, tmp_path, tables=["stores"], force=True)
    assert again[0].status == "loaded" and manifest.batch_id not in again[0].applied, again[0].error
    expected = sum(1 for _ in open(small_jaffle / "raw_stores.csv")) - 1
    assert _rows(tmp_path, "SELECT count(*) FROM raw_jaffle_shop.stores") == [(expected,)]


@pytest.mark.parametrize(
    ("file", "text", "error", "expected"),
    [
        ("raw_orders.csv", "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\no1,c1,2018-09-01T09:00:00,s1,17x0,102,1802\n",
         ContractError, ["table=orders", "row=1", "field=subtotal", "'17x0' is not a valid integer"]),
        ("raw_orders.csv", "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\no1,c1,2018-09-01T09:00:00,s1,1,1,2\no2,c1,yesterday,s1,1,1,2\n",
         ContractError, ["row=2", "field=ordered_at", "'yesterday' is not a valid timestamp"]),
        ("raw_customers.csv", "id,name\nc1,Ann\nc2,Bob\nc1,Ann again\n",
         ContractError, ["table=customers", "field=id", "'c1' appears 2 times", "row=3",
                         "first at data row 1 (file line 2), again at data row 3 (file line 4)"]),
        # a value holding a line break and a blank line: data rows and file lines part ways
        ("raw_customers.csv", 'id,name\nc1,"Ann\nSmith"\n\nc2,Bob\nc1,Ann again\n',
         ContractError, ["'c1' appears 2 times", "row=3",
                         "first at data row 1 (file line 2), again at data row 3 (file line 6)"]),
        ("raw_customers.csv", "id,name\nc1,Ann\n,Nobody\n",
         ContractError, ["field=id", "row=2", "primary key (id) is empty or blank (data row 2, file line 3)"]),
        ("raw_customers.csv", "id,name\nc1,Ann\nc2,Bob\n  \t ,Nobody\n",
         ContractError, ["field=id", "row=3", "primary key (id) is empty or blank (data row 3, file line 4)"]),
        ("raw_customers.csv", "customer_id,name\nc1,Ann\n",
         ContractError, ["table=customers", "missing: ['id']", "not declared: ['customer_id']",
                         "primary key column(s) ['id'] are missing"]),
        ("raw_customers.csv", 'id,name\nc1,"Ann\nc2,Bob\n',
         SourceReadError, ["table=customers", "malformed CSV"]),
        # a row with an empty event time is landed (test_a_row_without_its_event_time_is_landed_and_reported);
        # a file without the column is refused: a source that lost or renamed it
        ("raw_orders.csv", "id,customer,store_id,subtotal,tax_paid,order_total\no1,c1,s1,1,1,2\n",
         ContractError, ["field=ordered_at", "missing: ['ordered_at']", "'ordered_at', the table's event_time, is missing"]),
    ],
    ids=["bad-integer", "bad-timestamp", "duplicate-key", "duplicate-key-after-multiline-value", "empty-key", "blank-key", "key-column-missing",
         "unterminated-quote", "event-time-column-missing"],
)
def test_bad_input_is_named_and_nothing_of_it_is_applied(
    small_jaffle: Path, tmp_path: Path, file: str, text: str, error: type, expected: list[str]
) -> None:
    (small_jaffle / file).write_text(text)
    outcomes = _load(small_jaffle, tmp_path)
    failed = [o for o in outcomes if o.error]
    assert len(failed) == 1, "only the bad table fails"
    err = failed[0].error
    assert isinstance(err, error)
    message = str(err)
    for part in ["source=jaffle_shop", "batch=", "next:", *expected]:
        assert part in message, f"{part!r} not in {message!r}"
    table = failed[0].table
    # nothing of the bad table landed or reached raw; the other tables loaded
    table_dir = tmp_path / "landing" / "jaffle_shop" / table
    assert not (table_dir.exists() and any(table_dir.iterdir()))
    assert _rows(tmp_path, f"SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = '{table}'") == [(0,)]
    assert sum(1 for o in outcomes if o.status == "loaded") == 6


def test_a_row_without_its_event_time_is_landed_and_reported(small_jaffle: Path, tmp_path: Path) -> None:
    """Landed as the source has it, so it never blocks its table (refused before, a PostgreSQL table
    holding such a row failed every load); the load says where it is, and the transform holds the
    key out of staging (tests/orchestrator/test_rows_without_event_time.py)."""
    (small_jaffle / "raw_orders.csv").write_text(
        "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\no1,c1,2018-09-01T09:00:00,s1,1,1,2\n"
        'o2,"c\n1",,s1,1,1,2\no3,c1,,s1,1,1,2\n')
    outcomes = _load(small_jaffle, tmp_path, tables=["orders"])
    (orders,) = outcomes
    assert orders.status == "loaded" and not orders.error, orders.error
    assert orders.notes == ["2 row(s) without ordered_at (first: data row 2, file line 3): landed, "
                                   "held out of staging until filled"], orders.notes
    assert _rows(tmp_path, "SELECT id FROM raw_jaffle_shop.orders WHERE ordered_at IS NULL ORDER BY id") == [("o2",), ("o3",)]
    manifest = json.loads(next((tmp_path / "landing" / "jaffle_shop" / "orders").glob(f"*/{MANIFEST_NAME}")).read_text())
    assert manifest["origin"]["without_event_time"] == {"column": "ordered_at", "rows": 2, "first_data_row": 2,
                                                        "file_line": 3}


def test_a_vanished_file_fails_only_its_table(small_jaffle: Path, tmp_path: Path) -> None:
    (small_jaffle / "raw_tweets.csv").unlink()
    outcomes = _load(small_jaffle, tmp_path)
    (failed,) = [o for o in outcomes if o.error]
    assert failed.table == "tweets" and isinstance(failed.error, SourceReadError)
    assert "does not exist" in str(failed.error)


def test_spool_folders_of_dead_loaders_are_swept(tmp_path: Path) -> None:
    landing = LocalLanding(tmp_path / "landing")
    spool = Path(landing.spool_dir)
    dead = spool / "elt-batch-999999999-abc"  # no such pid
    alive = spool / f"elt-batch-{__import__('os').getpid()}-abc"
    dead.mkdir()
    alive.mkdir()
    assert landing.sweep_spool() == [dead]
    assert alive.exists() and not dead.exists()


@pytest.mark.parametrize("batches", [1, 100])
def test_a_load_reads_manifests_of_pending_batches_only(small_jaffle: Path, tmp_path: Path, monkeypatch, batches: int) -> None:  # type: ignore[no-untyped-def]
    """With 1 or 100 batches landed and applied, a load whose file did not change reads one manifest
    (the latest, to compare the file's checksum), and a replay with nothing pending reads none:
    the cost of a run does not grow with the table's history. A batch raw lacks is still found."""
    from sources.landing.store import Landing
    from sources.pipeline import ingest

    stores = small_jaffle / "raw_stores.csv"
    header = stores.read_text().splitlines()[0]
    for n in range(batches):  # each version of the file is one batch
        stores.write_text(f"{header}\ns{n},Store {n},2018-09-01T00:00:00,0.06\n")
        (outcome,) = _load(small_jaffle, tmp_path, tables=["stores"])
        assert outcome.status == "loaded", outcome.error
    reads: list[str] = []
    original = Landing.read_manifest
    monkeypatch.setattr(Landing, "read_manifest", lambda self, path: reads.append(path) or original(self, path))
    (unchanged,) = _load(small_jaffle, tmp_path, tables=["stores"])
    landing = LocalLanding(tmp_path / "landing")
    latest = landing.batch_ids("jaffle_shop", "stores")[-1]
    assert len(landing.batch_ids("jaffle_shop", "stores")) == batches
    assert unchanged.status == "unchanged" and len(reads) == 1 and f"/{latest}/" in reads[0], reads
    reads.clear()
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (replay,) = ingest(SPEC, landing=landing, raw=raw, extract=False, tables=["stores"], lock_dir=tmp_path / "locks")
    assert replay.error is None and reads == []
    assert _rows(tmp_path, "SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = 'stores'") == [(batches,)]
    # a batch landed but not applied (a crash before raw) is found and applied: its manifest alone is read
    stores.write_text(f"{header}\ns-late,Late store,2018-09-01T00:00:00,0.06\n")
    pending = land_file_table(SPEC, SPEC.tables["stores"], stores, landing)
    assert pending is not None
    reads.clear()  # landing it read the latest manifest, to compare checksums
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (healed,) = ingest(SPEC, landing=landing, raw=raw, extract=False, tables=["stores"], lock_dir=tmp_path / "locks")
    assert healed.applied == [pending.batch_id] and len(reads) == 1 and f"/{pending.batch_id}/" in reads[0], reads


def test_the_same_file_under_a_changed_declaration_is_extracted_again(small_jaffle: Path, tmp_path: Path) -> None:
    """docs/runbook.md#schema-change, file source: a column loaded as text before it was declared.
    Declaring it must not leave raw as it is behind an "unchanged" file: the file is extracted
    again under the declaration, and the load stops on the type as the runbook says."""
    import dataclasses

    from sources.config import ColumnSpec
    from sources.types import parse_type

    stores = small_jaffle / "raw_stores.csv"
    stores.write_text("id,name,opened_at,tax_rate,seats\ns1,Philadelphia,2018-09-01T00:00:00,0.06,40\n"
                      "s2,Brooklyn,2018-09-02T00:00:00,0.04,25\n")
    (first,) = _load(small_jaffle, tmp_path, tables=["stores"])
    assert first.status == "loaded"
    assert _rows(tmp_path, "SELECT data_type FROM information_schema.columns WHERE table_name = 'stores' "
                           "AND column_name = 'seats'") == [("VARCHAR",)]
    landing = LocalLanding(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        assert load_file_source(SPEC, path=small_jaffle, landing=landing, raw=raw, tables=["stores"])[0].status == "unchanged"

    table = SPEC.tables["stores"]
    declared = dataclasses.replace(SPEC, tables={**SPEC.tables, "stores": dataclasses.replace(
        table, columns=(*table.columns, ColumnSpec("seats", parse_type("integer"))))})
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (stopped,) = load_file_source(declared, path=small_jaffle, landing=landing, raw=raw, tables=["stores"])
    assert stopped.status != "unchanged" and stopped.error is not None
    assert "column type changed in raw_jaffle_shop.stores: seats: raw has TEXT" in str(stopped.error), stopped.error
    # any value fits text: evolve_cast would always pass and keep raw text, so it is not offered (a probe)
    hint = stopped.error.hint or ""
    assert "ALTER TABLE raw_jaffle_shop.stores ALTER COLUMN" in hint and "not evolve_cast" in hint, hint

    # the runbook's next step: migrate raw's column, load again; the waiting batch applies
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("ALTER TABLE raw_jaffle_shop.stores ALTER COLUMN seats SET DATA TYPE BIGINT")
    con.close()
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (applied,) = load_file_source(declared, path=small_jaffle, landing=landing, raw=raw, tables=["stores"])
        assert applied.error is None and len(applied.applied) == 1
        # and the same file under the same declaration is unchanged again
        assert load_file_source(declared, path=small_jaffle, landing=landing, raw=raw, tables=["stores"])[0].status == "unchanged"


def test_a_strict_table_whose_batch_adds_a_column_is_told_the_statement_that_gives_raw_it() -> None:
    """`strict` stopped with 'update the declaration and migrate raw', naming no command: a probe
    declared the column and met the same refusal (raw still lacked it)."""
    from sources.errors import RawLoadError
    from sources.load.schema import plan_schema

    where = {"source": "shop", "table": "orders"}
    with pytest.raises(RawLoadError) as stopped:
        plan_schema({"id": "TEXT"}, [("id", "TEXT"), ("channel", "TEXT")], "strict", where, "raw_shop.orders")
    assert "schema_policy is strict: added column channel TEXT" in str(stopped.value), stopped.value
    assert "ALTER TABLE raw_shop.orders ADD COLUMN channel TEXT" in (stopped.value.hint or ""), stopped.value.hint
    with pytest.raises(RawLoadError) as dropped:
        plan_schema({"id": "TEXT", "gone": "TEXT"}, [("id", "TEXT")], "strict", where, "raw_shop.orders")
    assert "ALTER TABLE" not in (dropped.value.hint or "") and "schema_policy: evolve" in (dropped.value.hint or "")
