"""What an S3 landing probe found (decision 0079): a rebuild from landing skipped a batch folder
that had lost its manifest and deleted its data file, exit 0; an S3 files source whose bucket did
not exist loaded "unchanged" every day; a files source whose path held the landing store read its
own landed files as new ones on every load; an S3 endpoint with a key in its URL was retried as a
network fault."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources.config import parse_source
from sources.errors import ConfigError, LandingError
from sources.landing.manifest import MANIFEST_NAME
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
from tests.conftest import duck_rows
from tests.sources.test_landing_listing import deliver, shop_at


def test_a_rebuild_from_landing_refuses_a_folder_without_manifest_and_removes_nothing(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    folder, spec, landing = shop_at(tmp_path)
    with DuckDBRaw(tmp_path / "live.duckdb") as raw:
        for n in (1, 2):
            deliver(folder, n)
            (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            assert out.status == "loaded", out.error
    first, second = landing.batch_ids("shop", "orders")
    lost = Path(landing.batch_dir("shop", "orders", second)) / MANIFEST_NAME
    kept = lost.read_bytes()
    lost.unlink()  # a hand clean-up, a lifecycle rule, a bad sync

    with DuckDBRaw(tmp_path / "rebuilt.duckdb") as raw:
        (replay,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert isinstance(replay.error, LandingError), replay.error
    text = str(replay.error)
    assert f"1 batch folder(s) of shop.orders in landing hold data but no manifest (the first: " in text, text
    assert second in text and "restore the manifest" in text and "nothing was removed" in text
    assert not replay.applied  # a rebuild is whole or it stops: not the first batch alone
    assert sorted(p.name for p in lost.parent.iterdir()) != []  # the data file is still there
    assert any(p.suffix == ".parquet" for p in lost.parent.iterdir())

    lost.write_bytes(kept)  # the manifest restored from a backup: the rebuild completes
    with DuckDBRaw(tmp_path / "rebuilt.duckdb") as raw:
        (again,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert again.error is None and again.applied == [first, second]
    assert duck_rows(tmp_path / "rebuilt.duckdb", "SELECT count(DISTINCT id) FROM raw_shop.orders") == [(3,)]

    # a live load still sweeps a write cut short, and says so
    cut = Path(landing.batch_dir("shop", "orders", "29990101T000000000000Z-0000dead"))
    cut.mkdir()
    (cut / "part-00000.parquet").write_bytes(b"half written")
    with caplog.at_level(logging.WARNING, logger="sources.landing"), DuckDBRaw(tmp_path / "live.duckdb") as raw:
        (live,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert live.error is None and not cut.exists()
    assert any("removed batch folder" in r.getMessage() and "0000dead" in r.getMessage() for r in caplog.records)


def _lake_spec(path: str):  # type: ignore[no-untyped-def]
    return parse_source({"name": "lake", "kind": "files", "owner": "x", "format": "parquet", "path": path,
                         "tables": {"orders": {"pattern": "*.parquet", "primary_key": "id",
                                               "columns": {"id": "integer", "amount": "integer"}}}})


def test_an_s3_files_source_whose_bucket_does_not_exist_is_refused(tmp_path: Path, s3_bucket: str, caplog) -> None:  # type: ignore[no-untyped-def]
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (missing,) = ingest(_lake_spec("s3://no-such-bucket-here/exports"), landing=landing, raw=raw, lock_dir=tmp_path)
        with caplog.at_level(logging.WARNING, logger="sources.extract.files"):
            (empty,) = ingest(_lake_spec(f"s3://{s3_bucket}/no-exports-yet"), landing=landing, raw=raw, lock_dir=tmp_path)
    assert isinstance(missing.error, ConfigError), missing.error  # was: "unchanged", exit 0, every day
    assert "source bucket 'no-such-bucket-here' does not exist" in str(missing.error)
    assert empty.error is None and empty.status == "unchanged"  # a prefix with no export yet: said, not refused
    assert any(f"no object under s3://{s3_bucket}/no-exports-yet" in r.getMessage() for r in caplog.records)


def test_a_files_source_whose_path_holds_the_landing_store_never_reads_its_own_batches(tmp_path: Path, s3_bucket: str) -> None:
    """One bucket for exports and landing (s3://lake and s3://lake/landing): each load re-read the
    previous load's landed Parquet file as a new source file, for ever."""
    import io

    s3 = boto3.client("s3", endpoint_url=os.environ["ELT_S3_ENDPOINT"])
    body = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3], "amount": [10, 20, 30]}), body)
    s3.put_object(Bucket=s3_bucket, Key="exports/orders-2026-12-01.parquet", Body=body.getvalue())
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    spec = _lake_spec(f"s3://{s3_bucket}")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        outcomes = [ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)[0] for _ in range(3)]
    assert [o.status for o in outcomes] == ["loaded", "unchanged", "unchanged"], [o.error for o in outcomes]
    assert duck_rows(tmp_path / "wh.duckdb", "SELECT count(*), count(DISTINCT _batch_id) FROM raw_lake.orders") == [(3, 1)]
    assert len(landing.batch_ids("lake", "orders")) == 1


def test_an_s3_endpoint_with_a_key_in_its_url_is_a_setting_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ELT_S3_ENDPOINT", "http://AKIAPROBE:Super/Secret@127.0.0.1:9")
    with pytest.raises(ConfigError) as err:
        Landing.from_url("s3://landing/jaffle")
    text = f"{err.value} {getattr(err.value, 'hint', '')}"
    assert "ELT_S3_ENDPOINT holds credentials" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert "Super" not in text and "AKIAPROBE" not in text


def test_two_warehouses_sharing_one_landing_are_told_apart(tmp_path: Path) -> None:
    """Two warehouses (two machines, an old copy whose cron still runs) on one landing store each
    applied the other's batches and landed a full snapshot on every load; a rebuild from landing
    then held whichever loaded last. Each manifest names the warehouse that landed it."""
    folder, spec, landing = shop_at(tmp_path)
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    deliver(folder, 1)
    with DuckDBRaw(a) as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        ours = raw.identity()
    assert first.status == "loaded" and landing.manifest("shop", "orders", first.landed[0]).origin["landed_by"] == {
        "warehouse": ours, "host": os.uname().nodename}
    deliver(folder, 2)
    with DuckDBRaw(b) as raw:  # a warehouse started afresh applies what landing holds, as a replay does
        (fresh,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        theirs = raw.identity()
    assert fresh.error is None and fresh.applied == [first.landed[0], *fresh.landed] and theirs != ours
    with DuckDBRaw(a) as raw:  # then A finds B's batch pending: refused, named, nothing applied
        (refused,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    text = str(refused.error)
    assert isinstance(refused.error, LandingError), refused.error
    assert f"batch {fresh.landed[0]} of shop.orders was landed by another warehouse (id {theirs[:12]}" in text, text
    assert "two warehouses share the landing store" in text and "elt set-aside" in text
    assert not refused.applied and not refused.landed
    assert duck_rows(a, "SELECT count(DISTINCT id) FROM raw_shop.orders") == [(2,)]  # A's own rows only
    with DuckDBRaw(a) as raw:  # a replay applies them on purpose (this warehouse takes the other's place)
        (replay,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert replay.error is None and replay.applied == fresh.landed


def test_a_postgresql_warehouse_keeps_one_id_and_stamps_its_batches_with_it(tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    from sources.connections import PostgresSettings
    from sources.load.postgres_raw import PostgresRaw

    settings = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    folder, spec, landing = shop_at(tmp_path)
    deliver(folder, 1)
    with PostgresRaw(settings) as raw, PostgresRaw(settings) as other:
        ids = {raw.identity(), other.identity(), raw.identity()}
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert len(ids) == 1 and out.error is None
    assert landing.manifest("shop", "orders", out.landed[0]).origin["landed_by"]["warehouse"] == ids.pop()


def test_the_load_report_shortens_a_table_line_of_thousands_of_batches() -> None:
    """A first load of a pattern table of 1,250 files printed every batch id on one 41 KB line."""
    import io
    from types import SimpleNamespace

    from orchestrator.scheduling.loading import print_load_report
    from sources.pipeline import TableOutcome

    many, few = TableOutcome("clicks"), TableOutcome("orders")
    many.applied, few.applied = [f"2026120{i // 1000}T{i:06d}Z-x" for i in range(1250)], ["b1", "b2"]
    out = io.StringIO()
    print_load_report([many, few], SimpleNamespace(warehouse=Path("/w.duckdb"), gateway="duckdb", pg_prefix="ELT_PG_",
                                                   landing_location="/l"), stream=out)
    lines = out.getvalue().splitlines()
    assert lines[1].endswith(f"{many.applied[0]}, {many.applied[1]}, ... {many.applied[-1]} (1,250 batches)"), lines[1]
    assert len(lines[1]) < 200 and lines[2].endswith("b1, b2"), lines
