"""What a load looks into in landing: the batch folder names of each table, and the contents only
of the folders raw's ledger does not hold (new batches, and folders an interrupted extract left).
The recursive listings it replaced made a load with nothing new take 12.2 s and 457 MB at 150,000
batches (decision 0059); here the folders looked into are counted, at 1 and at 100 landed batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from sources.config import parse_source
from sources.landing import store
from sources.landing.manifest import MANIFEST_NAME
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest, land_file_table
from tests.sources.test_batch_contract import _rows


def shop(folder: Path):  # type: ignore[no-untyped-def]
    return parse_source({"name": "shop", "kind": "files", "owner": "x", "path": str(folder),
                         "tables": {"orders": {"file": "orders.csv", "primary_key": "id",
                                               "columns": {"id": "integer", "total": "integer"}}}})


def shop_at(tmp_path: Path, landing: Landing | None = None):  # type: ignore[no-untyped-def]
    """The source's folder, the source, and its landing (a local folder unless given)."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder, shop(folder), landing or Landing.local(tmp_path / "landing")


def deliver(folder: Path, n: int) -> None:
    """The source file's ``n``-th version: one more order than the one before (a whole file: raw
    gains the new order only)."""
    (folder / "orders.csv").write_text("id,total\n" + "".join(f"{i},{i * 10}\n" for i in range(n + 1)))


@pytest.fixture
def looked_into(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """The batch folders whose contents were listed one by one, and the tables listed recursively."""
    seen: dict[str, list] = {"folders": [], "recursive": []}
    folder, listing = Landing._folder, Landing._listing
    monkeypatch.setattr(Landing, "_folder", lambda self, s, t, b: seen["folders"].append(b) or folder(self, s, t, b))
    monkeypatch.setattr(Landing, "_listing", lambda self, s, t: seen["recursive"].append(t) or listing(self, s, t))
    return seen


def raw_ids(tmp_path: Path) -> int:
    """The orders raw holds (distinct ids, tombstones aside)."""
    return _rows(tmp_path, "SELECT count(DISTINCT id) FROM raw_shop.orders WHERE NOT _deleted")[0][0]


@pytest.mark.parametrize("batches", [1, 100])
def test_a_load_looks_into_the_folders_raw_lacks_only(tmp_path: Path, looked_into: dict[str, list], batches: int) -> None:
    folder, spec, landing = shop_at(tmp_path)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        for n in range(batches):
            deliver(folder, n)
            (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            assert out.status == "loaded", out.error
        assert len(landing.batch_ids("shop", "orders")) == batches
        looked_into["folders"].clear(), looked_into["recursive"].clear()

        (same,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)  # nothing new
        assert same.status == "unchanged" and looked_into == {"folders": [], "recursive": []}

        deliver(folder, batches)  # a new batch, landed and applied by this run: not listed back
        (new,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert new.applied == new.landed != [] and looked_into == {"folders": [], "recursive": []}

        # landed, then the process died before raw: the next load looks into that folder alone
        deliver(folder, batches + 1)
        pending = land_file_table(spec, spec.tables["orders"], folder / "orders.csv", landing)
        assert pending is not None
        # and an extract that died before its manifest: looked into, and swept
        left = Path(landing.batch_dir("shop", "orders", "29990101T000000000000Z-0000dead"))
        left.mkdir()
        (left / "part-00000.parquet").write_bytes(b"half written")
        looked_into["folders"].clear(), looked_into["recursive"].clear()  # (land_file_table lists for itself)
        (after,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert after.applied == [pending.batch_id] and after.error is None
        assert sorted(looked_into["folders"]) == sorted([pending.batch_id, left.name]) and not looked_into["recursive"]
        assert not left.exists()
    assert raw_ids(tmp_path) == batches + 2  # every order, from the batch applied late too


def test_a_replay_into_an_empty_warehouse_lists_the_table_once(tmp_path: Path, looked_into: dict[str, list],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Many folders to look into (landing replayed into a new warehouse): one recursive listing of
    the table, not one listing per folder (on S3, one request each)."""
    folder, spec, landing = shop_at(tmp_path)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        for n in range(4):
            deliver(folder, n)
            ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    monkeypatch.setattr(store, "FOLDER_LISTINGS_MAX", 3)
    looked_into["folders"].clear(), looked_into["recursive"].clear()
    with DuckDBRaw(tmp_path / "replayed.duckdb") as raw:
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert len(out.applied) == 4 and looked_into == {"folders": [], "recursive": ["orders"]}
    monkeypatch.setattr(store, "FOLDER_LISTINGS_MAX", 4)
    with DuckDBRaw(tmp_path / "replayed-again.duckdb") as raw:
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert len(out.applied) == 4 and len(looked_into["folders"]) == 4


def test_an_applied_batch_whose_manifest_went_missing_is_not_swept(tmp_path: Path) -> None:
    """The ledger says the batch was complete: a folder without its manifest is damage to restore,
    not an interrupted extract to remove (the recursive listing removed it, data and all)."""
    folder, spec, landing = shop_at(tmp_path)
    deliver(folder, 0)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        batch = Path(landing.batch_dir("shop", "orders", first.applied[0]))
        (batch / MANIFEST_NAME).unlink()
        (again,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert (batch / "part-00000.parquet").exists()
    # the file source compares its file with the newest landed batch, whose manifest is gone: said so
    assert again.error is not None and "is missing; raw has applied the batch" in str(again.error), again.error
    assert f"batch={first.applied[0]}" in str(again.error) and "backup of landing" in str(again.error)
    assert "move the folder out of landing" in str(again.error) and "restore-raw-from-landing" in str(again.error)
    assert raw_ids(tmp_path) == 1


def test_an_applied_batch_is_not_swept_when_the_table_is_listed_recursively(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Many folders to look into (here three pending batches, over a limit of two) make one recursive
    listing: the ledger still vouches for the applied batches (a review found the recursive path
    sweeping an applied batch's data when its manifest had gone)."""
    folder, spec, landing = shop_at(tmp_path)
    deliver(folder, 0)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        for n in range(1, 4):  # landed, not applied (the process died before raw)
            deliver(folder, n)
            assert land_file_table(spec, spec.tables["orders"], folder / "orders.csv", landing) is not None
        batch = Path(landing.batch_dir("shop", "orders", first.applied[0]))
        (batch / MANIFEST_NAME).unlink()
        monkeypatch.setattr(store, "FOLDER_LISTINGS_MAX", 2)
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
    assert (batch / "part-00000.parquet").exists()
    assert out.error is None and len(out.applied) == 3
    assert raw_ids(tmp_path) == 4


def test_set_aside_batches_are_not_looked_into_on_every_load(tmp_path: Path, looked_into: dict[str, list]) -> None:
    """A set-aside batch had its manifest when it was set aside: like an applied one, its folder is
    known from its name (a review: 33 of them sent every load of the table to a recursive listing)."""
    from sources.load.set_aside import set_aside

    folder, spec, landing = shop_at(tmp_path)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        deliver(folder, 0)
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        deliver(folder, 1)
        stuck = land_file_table(spec, spec.tables["orders"], folder / "orders.csv", landing)
        assert stuck is not None
        set_aside(spec, "orders", stuck.batch_id, landing=landing, raw=raw, reason="a test")
        looked_into["folders"].clear(), looked_into["recursive"].clear()
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert out.set_aside == [stuck.batch_id] and out.error is None
        assert looked_into == {"folders": [], "recursive": []}
        # its manifest gone: the apply step does not read it (a review found every load failing
        # there, told that raw had applied the batch); a file source still compares its file with
        # the newest landed batch, set aside or not, and says that manifest is missing
        (Path(landing.batch_dir("shop", "orders", stuck.batch_id)) / MANIFEST_NAME).unlink()
        (again,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, extract=False)
        assert again.error is None and again.set_aside == [stuck.batch_id], again.error
        (compared,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert "is missing" in str(compared.error) and "raw has applied" not in str(compared.error), compared.error


def test_on_s3_a_load_looks_into_the_folders_raw_lacks_only(tmp_path: Path, looked_into: dict[str, list],
                                                            s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on S3 landing, whose folder names come from a listing with a delimiter (one LIST
    per 1,000 batches): a load with nothing new looks into no batch folder; an old folder without a
    manifest is looked into and swept."""
    import pyarrow.fs as pafs

    folder, spec, landing = shop_at(tmp_path, Landing.from_url(f"s3://{s3_bucket}/landing"))
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        for n in range(3):
            deliver(folder, n)
            (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            assert out.status == "loaded", out.error
        looked_into["folders"].clear(), looked_into["recursive"].clear()
        (same,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert same.status == "unchanged" and looked_into == {"folders": [], "recursive": []}
        left = landing.batch_dir("shop", "orders", "29990101T000000000000Z-0000dead")
        with landing.fs.open_output_stream(f"{left}/part-00000.parquet") as out_file:
            out_file.write(b"half written")
        monkeypatch.setenv("ELT_SWEEP_MIN_AGE_S", "0")  # as if its writer had died an hour ago
        (after,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert after.status == "unchanged" and looked_into == {"folders": [left.rsplit("/", 1)[1]], "recursive": []}
    assert landing.fs.get_file_info(f"{left}/part-00000.parquet").type == pafs.FileType.NotFound
    assert len(landing.batch_ids("shop", "orders")) == 3
