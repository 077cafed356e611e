"""File sources beyond one CSV: JSON lines and Parquet, a pattern of files (each new one loaded
once), from a local folder or an S3 prefix."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest


def events_spec(path: str, fmt: str):  # type: ignore[no-untyped-def]
    return parse_source({
        "name": "events", "kind": "files", "owner": "x", "format": fmt, "path": path,
        "tables": {"clicks": {"pattern": f"clicks-*.{fmt}", "primary_key": "id",
                              "columns": {"id": "integer", "url": "string", "at": "timestamp", "props": "json"}}},
    })


def write(folder: Path, name: str, fmt: str, rows: list[dict]) -> bytes:
    path = folder / name
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        table = pa.table({"id": [r["id"] for r in rows], "url": [r["url"] for r in rows],
                          "at": [r["at"] for r in rows],  # text in the file; the loader casts to the declared type
                          "props": [json.dumps(r["props"]) for r in rows]})
        pq.write_table(table, path)
    return path.read_bytes()


def rows(start: int, n: int) -> list[dict]:
    return [{"id": i, "url": f"/p/{i}", "at": f"2024-01-01T00:00:{i % 60:02d}", "props": {"k": i}} for i in range(start, start + n)]


def _count(tmp_path: Path) -> tuple:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*), count(DISTINCT id), count(DISTINCT _batch_id) FROM raw_events.clicks").fetchone()
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_each_new_file_of_a_pattern_is_loaded_once(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder, f"clicks-001.{fmt}", fmt, rows(0, 5))
    spec = events_spec(str(folder), fmt)
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        write(folder, f"clicks-002.{fmt}", fmt, rows(5, 3))
        (second,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        (third,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert (first.rows_applied, second.rows_applied, third.status) == (5, 3, "unchanged")
    assert _count(tmp_path) == (8, 8, 2)


def test_files_from_an_s3_prefix(tmp_path: Path, s3_bucket: str) -> None:
    import os

    s3 = boto3.client("s3", endpoint_url=os.environ["ELT_S3_ENDPOINT"])
    local = tmp_path / "src"
    local.mkdir()
    s3.put_object(Bucket=s3_bucket, Key="exports/clicks-001.jsonl", Body=write(local, "a.jsonl", "jsonl", rows(0, 4)))
    s3.put_object(Bucket=s3_bucket, Key="exports/other.jsonl", Body=b"not matched\n")
    spec = events_spec(f"s3://{s3_bucket}/exports", "jsonl")
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        s3.put_object(Bucket=s3_bucket, Key="exports/clicks-002.jsonl", Body=write(local, "b.jsonl", "jsonl", rows(4, 2)))
        (second,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert first.error is None and (first.rows_applied, second.rows_applied) == (4, 2)
    manifests = list(landing.batches("events", "clicks"))
    assert [m.origin["path"] for m in manifests] == [f"s3://{s3_bucket}/exports/clicks-001.jsonl",
                                                     f"s3://{s3_bucket}/exports/clicks-002.jsonl"]
    assert _count(tmp_path) == (6, 6, 2)


def test_a_malformed_json_line_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clicks-001.jsonl").write_text('{"id": 1, "url": "/a", "at": "2024-01-01T00:00:00", "props": {}}\n{"id": 2, "url\n')
    spec = events_spec(str(folder), "jsonl")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    assert outcome.status == "failed" and "malformed JSON lines in clicks-001.jsonl" in str(outcome.error)
    assert "table=clicks" in str(outcome.error)


def _drift_file(folder: Path, name: str, fmt: str, records: list[dict]) -> None:
    path = folder / name
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        cols = list(records[0])
        path.write_text(",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in records))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_schema_drift_evolves_raw_and_is_reported_and_strict_refuses(tmp_path: Path, fmt: str) -> None:
    """Day 1 has the declared columns. Day 2 drops `url` and brings a new `referrer`: under the
    default policy the batch loads with url NULL; CSV and Parquet add `referrer` to raw as text,
    JSON lines report it as not loaded; both are in the report and in the batch's manifest.
    Under `strict` the same file stops the table."""
    folder = tmp_path / "in"
    folder.mkdir()
    declared = {"id": "integer", "url": "string", "at": "timestamp"}

    def spec(policy: str):  # type: ignore[no-untyped-def]
        return parse_source({"name": "events", "kind": "files", "owner": "x", "format": fmt, "path": str(folder),
                             "tables": {"clicks": {"pattern": f"clicks-*.{fmt}", "primary_key": "id",
                                                   "schema_policy": policy, "columns": declared}}})

    _drift_file(folder, f"clicks-001.{fmt}", fmt, [{"id": 1, "url": "/a", "at": "2024-01-01T00:00:00"}])
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec("evolve"), landing=landing, raw=raw, lock_dir=tmp_path)
        assert first.status == "loaded" and first.schema_notes == []
        _drift_file(folder, f"clicks-002.{fmt}", fmt, [{"id": 2, "at": "2024-01-02T00:00:00", "referrer": "ads"}])
        (strict,) = ingest(spec("strict"), landing=landing, raw=raw, lock_dir=tmp_path)
        (second,) = ingest(spec("evolve"), landing=landing, raw=raw, lock_dir=tmp_path)

    if fmt == "jsonl":  # keys are per record: declared columns only; the new key is reported
        assert strict.status == "loaded"  # nothing to refuse: JSON lines never add columns
        assert "undeclared key(s) referrer: not loaded (declare them to load them)" in strict.schema_notes
        assert second.status == "unchanged"
    else:
        assert strict.status == "failed" and "schema_policy is strict" in str(strict.error)
        assert "missing: ['url']" in str(strict.error) and "batch=" in str(strict.error)
        assert second.status == "loaded", second.error
        assert "column(s) url not in the source: landed as NULL" in second.schema_notes
        assert "new column(s) referrer: landed as text (declare them to type them)" in second.schema_notes
        assert "added column referrer TEXT" in second.schema_notes  # raw's own report of the change
        [manifest] = [m for m in landing.batches("events", "clicks") if m.batch_id in second.landed]
        assert manifest.origin["schema_drift"] == {"missing": ["url"], "undeclared": ["referrer"]}
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'clicks' "
                                          "AND NOT starts_with(column_name, '_') ORDER BY column_index").fetchall()]
        got = con.execute("SELECT id, url FROM raw_events.clicks ORDER BY id").fetchall()
    finally:
        con.close()
    assert got == [(1, "/a"), (2, None)]
    assert cols == (["id", "url", "at"] if fmt == "jsonl" else ["id", "url", "at", "referrer"])


def test_on_s3_a_young_batch_without_manifest_is_left_to_its_writer(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another machine may be between its data upload and its manifest: only an old folder without
    a manifest is swept; a young one is merely invisible (no manifest, no batch)."""
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    folder = landing.batch_dir("events", "clicks", "20260101T000000000000Z-0000dead")
    with landing.fs.open_output_stream(f"{folder}/part-00000.parquet") as out:
        out.write(b"data being written by another loader")
    assert landing.sweep_incomplete("events", "clicks") == []
    assert list(landing.batches("events", "clicks")) == []  # invisible meanwhile
    monkeypatch.setenv("ELT_SWEEP_MIN_AGE_S", "0")  # as if an hour had passed
    assert landing.sweep_incomplete("events", "clicks") == [folder]
    assert landing.fs.get_file_info(f"{folder}/part-00000.parquet").type == pafs.FileType.NotFound
    # the folder goes too: Arrow left an empty marker object, which every later load swept again
    # (a network probe), as did an upload that failed before its manifest
    assert landing.sweep_incomplete("events", "clicks") == []
    aborted = landing.batch_dir("events", "clicks", "20260101T000000000000Z-0000beef")
    with landing.fs.open_output_stream(f"{aborted}/part-00000.parquet") as out:
        out.write(b"an upload whose manifest failed")
    landing._remove_batch_dir("events", "clicks", "20260101T000000000000Z-0000beef")
    assert landing.sweep_incomplete("events", "clicks") == []
    left = landing.fs.get_file_info(pafs.FileSelector(landing.batch_dir("events", "clicks", "x").rsplit("/", 1)[0],
                                                      recursive=True, allow_not_found=True))
    assert [f.path for f in left] == [], left


def test_csv_header_with_byte_order_mark_and_spaces_and_a_case_only_clash(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    spec = parse_source({"name": "events", "kind": "files", "owner": "x", "format": "csv", "path": str(folder),
                         "tables": {"clicks": {"pattern": "clicks-*.csv", "primary_key": "id",
                                               "columns": {"id": "integer", "url": "string"}}}})
    (folder / "clicks-001.csv").write_bytes("\ufeffurl , id\n/a,1\n".encode())  # BOM, spaces, another order
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert first.status == "loaded" and first.schema_notes == [], (first.error, first.schema_notes)
        (folder / "clicks-002.csv").write_text("id,url,URL\n2,/b,/B\n")  # URL differs from url only in case
        (second,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert second.status == "failed" and "['URL'] differ from declared columns only in case" in str(second.error)
    assert "batch=" in str(second.error)
    # undeclared columns that differ only in case among themselves (a probe: landed, then every
    # apply failed) and undeclared names the loader cannot take are refused before landing too
    (folder / "clicks-002.csv").unlink()
    (folder / "clicks-003.csv").write_text("id,url,note,NOTE,Note\n3,/c,x,y,z\n")
    long = "n" * 64
    (folder / "clicks-004.csv").write_text(f"id,url,file_row_number,{long}\n4,/d,1,w\n")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (third,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    text = str(third.error)
    assert third.status == "failed" and "['NOTE', 'Note'] differ from ['note', 'note'] only in case" in text, text
    assert third.landed == [], third
    (folder / "clicks-003.csv").unlink()
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (fourth,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    text = str(fourth.error)
    assert fourth.status == "failed" and f"['file_row_number', '{long}'] are reserved, empty or longer than 63" in text, text
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT id, url FROM raw_events.clicks").fetchall() == [(1, "/a")]
    finally:
        con.close()


@pytest.mark.parametrize("files", [1, 100])
def test_a_pattern_table_knows_its_landed_files_without_reading_manifests(tmp_path: Path, monkeypatch, files: int) -> None:  # type: ignore[no-untyped-def]
    """Which files of a pattern are landed comes from the one landing listing (each batch's origin
    marker), so a run reads no manifest at 1 or at 100 landed files; a batch landed without a
    marker (by an older version) is still recognised, from its manifest."""
    folder = tmp_path / "in"
    folder.mkdir()
    spec = events_spec(str(folder), "jsonl")
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        for n in range(files):
            write(folder, f"clicks-{n:03d}.jsonl", "jsonl", rows(n * 2, 2))
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert first.error is None and len(first.landed) == files
        reads: list[str] = []
        original = Landing.read_manifest
        monkeypatch.setattr(Landing, "read_manifest", lambda self, path: reads.append(path) or original(self, path))
        (again,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert again.status == "unchanged" and reads == []
        write(folder, "clicks-new.jsonl", "jsonl", rows(1000, 3))
        (new,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert new.rows_applied == 3 and reads == []  # the new batch was landed by this run: not read back
        # a batch landed before markers existed: its manifest tells its file
        oldest = landing.batch_ids("events", "clicks")[0]
        (marker,) = (tmp_path / "landing" / "events" / "clicks" / oldest).glob("_origin-*")
        marker.unlink()
        (after,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert after.status == "unchanged" and len(reads) == 1 and f"/{oldest}/" in reads[0], reads
    assert _count(tmp_path) == (files * 2 + 3, files * 2 + 3, files + 1)


# A child process: what a CSV load imports (a fresh interpreter, as `elt load` is).
NO_PANDAS = """
import sys
from pathlib import Path
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
folder = Path(sys.argv[1])
spec = parse_source({"name": "shop", "kind": "files", "owner": "x", "path": str(folder),
                     "tables": {"orders": {"file": "orders.csv", "primary_key": "id",
                                           "columns": {"id": "integer", "at": "timestamp", "total": "decimal(12,2)",
                                                       "code": "uuid", "meta": "json", "x": "float"}}}})
with DuckDBRaw(folder / "wh.duckdb") as raw:
    out = ingest(spec, landing=Landing.local(folder / "landing"), raw=raw, lock_dir=folder)
assert [o.rows_applied for o in out] == [3] and not out[0].error, out
print("pandas" in sys.modules)
"""


def test_a_csv_load_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (a quarter of a second and about 60 MB per `elt load`) the first time
    a compute function is given a Python value; casting empty text to NULL once did that."""
    import subprocess
    import sys

    # every kind of check on the common path: empty text, uuid, json, a float's overflow check
    (tmp_path / "orders.csv").write_text('id,at,total,code,meta,x\n1,2024-01-01 00:00:00,9.50,'
                                         '0a0b0c0d-0000-4000-8000-00000000000a,"{""a"": 1}",1.5\n2,,,,,\n'
                                         '3,2024-01-02 10:00:00,,,[1],inf\n')
    proc = subprocess.run([sys.executable, "-c", NO_PANDAS, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False", "the load imported pandas"


MIXED_ZONES = """
import sys
from pathlib import Path
import duckdb
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
folder = Path(sys.argv[1])
spec = parse_source({"name": "shop", "kind": "files", "owner": "x", "path": str(folder),
                     "tables": {"orders": {"file": "orders.csv", "primary_key": "id",
                                           "columns": {"id": "integer", "at": "timestamptz"}}}})
with DuckDBRaw(folder / "wh.duckdb") as raw:
    out = ingest(spec, landing=Landing.local(folder / "landing"), raw=raw, lock_dir=folder)
assert not out[0].error, out[0].error
con = duckdb.connect(str(folder / "wh.duckdb"))
con.execute("SET TimeZone = 'UTC'")
print([str(v) for (v,) in con.execute('SELECT "at" FROM raw_shop.orders ORDER BY id').fetchall()])
print("pandas" in sys.modules)
"""


def test_a_timestamptz_column_may_mix_zone_less_and_offset_values(tmp_path: Path) -> None:
    """Zone-less text is read as UTC, and a value with an offset keeps it, also in one column of one
    file (Arrow's parser wants one form per block: such a file was refused, or not, depending on
    where its 8 MB blocks began; found by a schema-evolution probe)."""
    import subprocess
    import sys

    (tmp_path / "orders.csv").write_text("id,at\n1,2019-08-31T01:30:00+02:00\n2,2019-08-30T10:00:00\n3,\n"
                                         "4,2019-08-30 12:00:00Z\n")
    proc = subprocess.run([sys.executable, "-c", MIXED_ZONES, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    values, pandas = proc.stdout.strip().splitlines()[-2:]
    assert values == str(["2019-08-30 23:30:00+00:00", "2019-08-30 10:00:00+00:00", "None",
                          "2019-08-30 12:00:00+00:00"]), values
    assert pandas == "False", "the load imported pandas"


def test_an_undeclared_column_whose_case_changed_between_deliveries_is_named_with_its_rename(tmp_path: Path) -> None:
    """A file's undeclared `Note` came as `note` in the next delivery: the batch was landed and
    every apply failed with DuckDB's `Column with name note already exists!` (a probe). It is now
    named, with the rename that lets the landed batch apply, and after that rename it applies."""
    folder = tmp_path / "in"
    folder.mkdir()
    spec = parse_source({"name": "events", "kind": "files", "owner": "x", "format": "csv", "path": str(folder),
                         "tables": {"clicks": {"pattern": "clicks-*.csv", "primary_key": "id",
                                               "columns": {"id": "integer"}}}})
    (folder / "clicks-001.csv").write_text("id,Note\n1,a\n")
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert first.status == "loaded", first.error
        (folder / "clicks-002.csv").write_text("id,note\n2,b\n")
        (second,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    text = f"{second.error}\n{second.error.hint}"
    assert second.status == "failed" and "column(s) 'note' (raw has 'Note') of the batch differ from raw's only in case" in text, text
    assert 'ALTER TABLE raw_events.clicks RENAME COLUMN "Note" TO "note"' in text, text
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        con.execute('ALTER TABLE raw_events.clicks RENAME COLUMN "Note" TO "note"')
    finally:
        con.close()
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (third,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert third.error is None and len(third.applied) == 1, third
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT id, note FROM raw_events.clicks ORDER BY id").fetchall() == [(1, "a"), (2, "b")]
    finally:
        con.close()
