"""Every refusal says where: the file, the data row and the file line (they differ by the header,
blank lines and line breaks inside quoted values), the field where there is one, and a `next:`
that fits the cause. Values a raw store cannot hold (a NUL byte in text, invalid UTF-8, a date
PostgreSQL cannot store) are refused before landing, for every source kind and both raw stores."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sources.config import parse_source
from sources.connections import PostgresSettings
from sources.contracts import check_values
from sources.errors import ContractError, SourceReadError
from sources.extract.files import _csv_batches, _info
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.load.postgres_raw import PostgresRaw
from sources.pipeline import ingest
from tests.servers import http_server

COLUMNS = {"id": "string", "n": "integer", "note": "string"}
HEADER = b"id,n,note\n"
# data rows 1-4 on file lines 2-6: row 2's note holds a line break, so from row 3 on line = row + 2
GOOD = b'o1,1,plain\no2,2,"two\nlines"\no3,3,"a ""quoted"" word"\no4,4,x\n'


def spec_for(folder: Path, fmt: str = "csv", name: str = "raw_orders.csv", **columns: str):  # type: ignore[no-untyped-def]
    return parse_source({"name": "shop", "kind": "files", "owner": "x", "format": fmt, "path": str(folder),
                         "tables": {"orders": {"file": name, "primary_key": "id", "columns": columns or COLUMNS}}})


def load(folder: Path, tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec_for(folder, **kw), landing=landing, raw=raw, lock_dir=tmp_path)
    return outcome, landing


CASES = [
    # (id, file bytes, error class, data row, file line, field, parts of the message, part of next:)
    ("too-many-fields", HEADER + GOOD + b"o5,5,a,b\n", SourceReadError, 5, 7, None,
     ["4 fields where the header has 3 (id, n, note): o5,5,a,b"], "a value holding a comma must be quoted"),
    ("too-few-fields", HEADER + GOOD + b"o5,5\no6,6,x\n", SourceReadError, 5, 7, "note",
     ["2 fields where the header has 3", "field note and after are missing"], "a line break inside a value must be quoted"),
    ("unclosed-quote", HEADER + GOOD + b'o5,5,x\no6,6,"never closed\no7,7,x\n', SourceReadError, 6, 8, "note",
     ["the quoted value of field note is never closed"], "a quote inside a quoted value is written twice"),
    ("invalid-utf8", HEADER + GOOD + b'o5,5,"caf\xe9\nau lait"\n', SourceReadError, 5, 7, "note",
     ["invalid UTF-8 bytes on file line 7, in field note"], "iconv -f <its encoding> -t UTF-8 raw_orders.csv"),
    ("invalid-utf8-second-line-of-a-value", HEADER + GOOD + b'o5,5,"caf\nau l\xe9it"\n', SourceReadError, 5, 7, "note",
     ["invalid UTF-8 bytes on file line 8, in field note"], "re-export the file as UTF-8"),
    ("truncated-last-row", HEADER + GOOD + b"o5,5,x\no6,6", SourceReadError, 6, 8, "note",
     ["the last row is cut off: 2 fields where the header has 3"], "cut off while being written or copied"),
    ("blank-lines-are-not-rows", HEADER + b"o1,1,x\n\n\no2,2,x,y\n", SourceReadError, 2, 5, None,
     ["4 fields where the header has 3"], "must be quoted"),
    ("crlf-line-ends", HEADER.replace(b"\n", b"\r\n") + b"o1,1,x\r\no2,2\r\no3,3,x\r\n", SourceReadError, 2, 3, "note",
     ["2 fields where the header has 3"], "fix the row"),
    ("cr-line-ends", HEADER.replace(b"\n", b"\r") + b"o1,1,x\ro2,2,x,y\r", SourceReadError, 2, 3, None,
     ["4 fields where the header has 3"], "must be quoted"),
    ("nul-byte-in-text", HEADER + GOOD + b"o5,5,a\x00b\n", ContractError, 5, 7, "note",
     ["text value 'a\\x00b' holds a NUL byte (\\x00), which PostgreSQL text cannot store"], "tr -d '\\000'"),
    ("bad-integer-after-a-multiline-value", HEADER + GOOD + b"o5,5x,x\n", ContractError, 5, 7, "n",
     ["value '5x' is not a valid integer"], "change the column's type"),
]


@pytest.mark.parametrize(("data", "error", "row", "line", "field", "parts", "hint"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_bad_row_is_named_by_data_row_file_line_and_field(
    tmp_path: Path, data: bytes, error: type, row: int, line: int, field: str | None, parts: list[str], hint: str,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(data)
    outcome, landing = load(folder, tmp_path)
    err = outcome.error
    assert isinstance(err, error), err
    message = str(err)
    assert (err.row, err.field) == (row, field), message
    for part in ["source=shop table=orders batch=", f"raw_orders.csv, data row {row} (file line {line})", *parts]:
        assert part in message, f"{part!r} not in {message!r}"
    assert f"field={field}" in message if field else "field=" not in message
    assert message.split("\n  next: ")[1].count(hint) == 1, message
    assert list(landing.batches("shop", "orders")) == []  # nothing of it landed
    assert "nothing of this batch was landed" in message, message  # its batch= id names no batch to look for


FILE_CASES = [
    ("empty", b"", ContractError, "raw_orders.csv is empty (no header line: 0 bytes)",
     "a file without rows still needs its header line"),
    ("gzip", gzip.compress(HEADER + GOOD), SourceReadError, "raw_orders.csv is gzip-compressed, not text (its first bytes are 1f 8b",
     "gzip -dc raw_orders.csv > plain"),
    ("zip", b"PK\x03\x04" + bytes(60), SourceReadError, "raw_orders.csv is a zip archive (or an Excel workbook)",
     "save the workbook as CSV UTF-8"),
    ("binary", bytes(range(256)) * 4, SourceReadError, "raw_orders.csv is not a CSV text file: its first line (the header, file line 1) holds binary bytes",
     "names the CSV export"),
    ("latin1-header", "id,n,note,café\n".encode("latin-1"), SourceReadError,
     "raw_orders.csv is not UTF-8 text: its header (file line 1) has invalid bytes at byte 14", "iconv -f <its encoding>"),
]


@pytest.mark.parametrize(("data", "error", "detail", "hint"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_a_file_that_is_not_csv_text_is_named_with_what_it_is(
    tmp_path: Path, data: bytes, error: type, detail: str, hint: str,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(data)
    outcome, landing = load(folder, tmp_path)
    assert isinstance(outcome.error, error), outcome.error
    message = str(outcome.error)
    assert detail in message and "next: " in message and hint in message.split("next: ")[1], message
    assert list(landing.batches("shop", "orders")) == []


def test_a_header_without_rows_or_line_break_is_an_empty_table(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(b"id,n,note")
    outcome, landing = load(folder, tmp_path)
    assert outcome.error is None and outcome.rows_landed == 0 and len(list(landing.batches("shop", "orders"))) == 1


def test_a_directory_or_a_link_where_a_file_should_be_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "raw_orders.csv").mkdir(parents=True)
    outcome, _ = load(folder, tmp_path)
    assert f"{folder.resolve()}/raw_orders.csv is a directory, not a file" in str(outcome.error)
    assert "give the table a 'pattern'" in str(outcome.error)
    (folder / "raw_orders.csv").rmdir()
    os.symlink(folder / "raw_orders.csv", folder / "raw_orders.csv")  # a link to itself
    outcome, _ = load(folder, tmp_path)
    assert "raw_orders.csv is a symbolic link that loops" in str(outcome.error)
    assert "next: fix the link (ls -l " in str(outcome.error)
    (folder / "raw_orders.csv").unlink()
    os.symlink(folder / "gone.csv", folder / "raw_orders.csv")
    outcome, _ = load(folder, tmp_path)
    assert f"raw_orders.csv is a symbolic link to {folder / 'gone.csv'}, which does not exist" in str(outcome.error)
    (folder / "raw_orders.csv").unlink()
    outcome, _ = load(folder, tmp_path)
    assert "raw_orders.csv does not exist" in str(outcome.error) and "next: check the source path" in str(outcome.error)


def test_a_fault_many_blocks_into_the_file_has_its_exact_row_and_line(tmp_path: Path) -> None:
    """Arrow reads in blocks and its error names neither; the row is the one that is cut off, not
    the first row of the block that failed (the issue's row 58,375 for data row 72,311)."""
    lines = [f'o{i},{i},"two\nlines"' if i % 100 == 0 else f"o{i},{i},note {i}" for i in range(1, 72_311)]
    path = tmp_path / "raw_orders.csv"
    path.write_text("id,n,note\n" + "\n".join(lines) + "\no72311,72311")
    spec = spec_for(tmp_path)
    file = _info(pafs.LocalFileSystem(), str(path), "")
    assert file is not None
    with pytest.raises(SourceReadError) as err:
        for _ in _csv_batches(file, spec.tables["orders"], "shop", 0, ["id", "n", "note"], block_bytes=64 << 10):
            pass
    # the header, then 723 values (rows 100, 200, ..., 72,300) that span two lines
    assert "data row 72,311 (file line 73,035): the last row is cut off" in str(err.value)
    assert (err.value.row, err.value.field) == (72_311, "note")


def test_a_nul_byte_is_refused_before_landing_on_postgres_and_the_table_goes_on(pg_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The issue's poison batch: PostgreSQL failed at apply time, for every later run. Now the
    value is refused before landing, so the fixed file simply loads."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(HEADER + b"o1,1,ok\no2,2,bad\x00value\n")
    spec = spec_for(folder)
    landing = Landing.local(tmp_path / "landing")
    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        (refused,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert isinstance(refused.error, ContractError)
        assert "[source=shop table=orders batch=" in str(refused.error) and "row=2 field=note]" in str(refused.error)
        assert "data row 2 (file line 3)" in str(refused.error)
        assert list(landing.batches("shop", "orders")) == []
        (folder / "raw_orders.csv").write_bytes(HEADER + b"o1,1,ok\no2,2,fixed\n")
        (fixed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert fixed.error is None and fixed.rows_applied == 2
    con = psycopg2.connect(pg_db.dsn)
    with con, con.cursor() as cur:
        cur.execute("SELECT id, note FROM raw_shop.orders ORDER BY id")
        assert cur.fetchall() == [("o1", "ok"), ("o2", "fixed")]
    con.close()


def test_a_nul_byte_from_a_rest_api_is_refused_before_landing(tmp_path: Path) -> None:
    records = [{"sku": "a", "name": "fine"}, {"sku": "b", "name": "nul\u0000inside"}]

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": records}).encode()

    with http_server(respond) as url:
        spec = parse_source({"name": "catalog", "kind": "rest_api", "owner": "x", "base_url": url,
                             "tables": {"products": {"endpoint": "/v1/products", "records_path": "data",
                                                     "primary_key": "sku", "columns": {"sku": "string", "name": "string"}}}})
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert isinstance(outcome.error, ContractError)
    message = str(outcome.error)
    assert "[source=catalog table=products batch=" in message and "row=2 field=name]" in message
    assert "holds a NUL byte" in message and "\n  next: remove the NUL bytes at the source" in message
    assert list(landing.batches("catalog", "products")) == []


def test_parquet_values_postgres_cannot_hold_are_refused(tmp_path: Path) -> None:
    """Parquet carries its bytes unchecked: invalid UTF-8 (here an encoded surrogate) and dates
    before PostgreSQL's first day reach the contract as they are."""
    folder = tmp_path / "in"
    folder.mkdir()
    surrogate = pa.Array.from_buffers(pa.string(), 2, [None, pa.array([0, 2, 5], pa.int32()).buffers()[1],
                                                       pa.py_buffer(b"ok\xed\xa0\x80")])
    pq.write_table(pa.table({"id": ["a", "b"], "note": surrogate, "day": pa.array([0, 1], pa.date32())}), folder / "t.parquet")
    outcome, _ = load(folder, tmp_path, fmt="parquet", name="t.parquet", id="string", note="string", day="date")
    assert isinstance(outcome.error, ContractError)
    assert "row=2 field=note] text value b'\\xed\\xa0\\x80' is not valid UTF-8" in str(outcome.error)
    pq.write_table(pa.table({"id": ["a", "b"], "note": ["x", "y"], "day": pa.array([0, -2_440_589], pa.date32())}),
                   folder / "t.parquet")
    outcome, landing = load(folder, tmp_path, fmt="parquet", name="t.parquet", id="string", note="string", day="date")
    assert "row=2 field=day] value '-4713-11-23' is a date before 4714-11-24 BC or after 5874897-12-31" in str(outcome.error)
    assert "next: fix the value at the source" in str(outcome.error)
    assert list(landing.batches("shop", "orders")) == []


def test_the_value_checks_accept_postgres_own_bounds_and_look_at_a_sliced_column_only() -> None:
    first_day, last_day = -2_440_588, 2_145_042_905  # '4714-11-24 BC' and '5874897-12-31' in PostgreSQL
    check_values(pa.record_batch({
        "day": pa.array([first_day, last_day, None], pa.date32()),
        "at": pa.array([first_day * 86_400_000_000, None, 0], pa.timestamp("us", tz="UTC")),
        "note": pa.array(["a\x00", "b", "c", "d"]).slice(1),  # the NUL byte is outside the slice
        "empty": pa.array([None, None, None], pa.string()),
    }), first_row=1, where={})
    with pytest.raises(ContractError, match=r"row=7 field=day\] value .* is a date before"):
        check_values(pa.record_batch({"day": pa.array([0, last_day + 1], pa.date32())}), first_row=6, where={})
    with pytest.raises(ContractError, match=r"row=1 field=at\] value .* is a timestamp before 4714-11-24 BC"):
        check_values(pa.record_batch({"at": pa.array([(first_day - 1) * 86_400_000_000], pa.timestamp("us"))}),
                     first_row=1, where={})


@pytest.mark.parametrize(("data", "detail", "field", "hint"), [
    (b'{"id": "a", "note": "x"}\n\n{"id": "b", "note": "caf\xe9"}\n', "t.jsonl is not UTF-8 text: line 3 holds invalid bytes",
     None, "iconv -f <its encoding> -t UTF-8 t.jsonl"),
    (b'{"id": "a", "note": "x"}\n{"id": "b", "note": "lone \\ud800 escape"}\n', "t.jsonl, line 2: a text value holds a lone surrogate",
     "note", "fix the escape at the source"),
    (gzip.compress(b'{"id": "a"}\n'), "t.jsonl is gzip-compressed, not text", None, "gzip -dc t.jsonl > plain"),
], ids=["invalid-utf8", "lone-surrogate", "gzip"])
def test_json_lines_that_no_store_can_hold_are_named_by_line(
    tmp_path: Path, data: bytes, detail: str, field: str | None, hint: str,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "t.jsonl").write_bytes(data)
    outcome, landing = load(folder, tmp_path, fmt="jsonl", name="t.jsonl", id="string", note="string")
    message = str(outcome.error)
    assert detail in message and "batch=" in message and hint in message.split("next: ")[1], message
    assert getattr(outcome.error, "field", None) == field
    assert list(landing.batches("shop", "orders")) == []


def test_a_landing_folder_that_cannot_be_made_is_named_with_what_to_do(tmp_path: Path) -> None:
    """Not a traceback: the folder, the reason, and the settings that move it."""
    from sources.errors import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        Landing.local(blocker / "landing")
    assert f"cannot create the landing folder {blocker / 'landing'}" in str(err.value)
    assert "ELT_LANDING_ROOT" in (err.value.hint or "") and "nothing was extracted" in (err.value.hint or "")


def test_a_full_disk_names_the_file_and_says_a_bare_rerun_will_not_do(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's errors while landing (a full disk, a folder it may not write) are not "unexpected":
    the message names the file and the landing, the hint what to free or move. (The disk is made
    full by the test: the spool's write raises what a full disk raises.)"""
    import errno

    import sources.pipeline as pipeline

    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(HEADER + GOOD)
    spool_file = tmp_path / "landing" / ".spool" / "elt-batch-1" / "part-00000.parquet"

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(spool_file))

    monkeypatch.setattr(pipeline, "land", full)
    outcome, _ = load(folder, tmp_path)
    message = str(outcome.error)
    assert f"No space left on device: {spool_file}" in message and "(landing: " in message, message
    assert "unexpected" not in message
    hint = outcome.error.hint or ""
    assert "free space on the disk" in hint and "a rerun alone fails the same way" in hint, hint
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:  # nothing of the table was applied
        assert raw.loaded_batch_ids("shop", "orders") == set()


def test_an_unreachable_s3_landing_is_named_as_such_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real S3 client against a loopback port nobody listens on: not an "unexpected" error, but the
    landing store and what to check; the scheduler still classes it as worth retrying."""
    import socket

    from orchestrator.scheduling.worker import is_retryable

    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    landing = Landing.from_url("s3://landing/shop", endpoint=f"http://127.0.0.1:{port}")
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(HEADER + GOOD)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec_for(folder), landing=landing, raw=raw, lock_dir=tmp_path)
    message = str(outcome.error)
    assert "the landing store s3://landing/shop could not be reached" in message and "unexpected" not in message, message
    assert "ELT_S3_ENDPOINT" in (outcome.error.hint or "")
    assert is_retryable(outcome.error)


def test_batches_lost_from_landing_are_reported_by_the_next_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Landing is what raw is rebuilt from. A batch that raw applied and landing no longer holds (a
    bucket emptied, a folder deleted) is named by the next load, with how to get it back."""
    import logging
    import shutil

    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(HEADER + GOOD)
    outcome, landing = load(folder, tmp_path)
    assert outcome.error is None and len(outcome.applied) == 1
    shutil.rmtree(tmp_path / "landing" / "shop" / "orders" / outcome.applied[0])
    with caplog.at_level(logging.WARNING, logger="sources.pipeline"):
        again, _ = load(folder, tmp_path)
    lost = [r for r in caplog.records if "missing from landing" in r.getMessage()]
    assert len(lost) == 1 and "1 batch(es) of raw_shop.orders" in lost[0].getMessage(), caplog.text
    assert lost[0].fields["examples"] == [outcome.applied[0]]  # type: ignore[attr-defined]
    assert "restore them from a backup of landing" in lost[0].fields["next"]  # type: ignore[attr-defined]
    assert again.notes == [f"1 batch(es) applied to raw are missing from landing (e.g. {outcome.applied[0]}): raw cannot "
                           "be rebuilt from landing without them; restore them from a backup of landing "
                           "(docs/runbook.md#restore-raw-from-landing)"]  # the load report prints it under the table


def test_a_number_too_large_for_a_float_column_is_refused_where_it_stands(tmp_path: Path) -> None:
    """Arrow reads 1e400 as infinity without a word; the source wrote a finite number. An infinity
    written as such (inf, -Infinity) stays one."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(b'id,x\no1,inf\no2,"1.5"\no3,-1e400\n')
    outcome, landing = load(folder, tmp_path, id="string", x="float")
    message = str(outcome.error)
    assert isinstance(outcome.error, ContractError) and (outcome.error.row, outcome.error.field) == (3, "x"), message
    assert "raw_orders.csv, data row 3 (file line 4)" in message and "'-1e400' is too large for a float" in message
    assert "decimal(p,s)" in message.split("next: ")[1]
    assert list(landing.batches("shop", "orders")) == []


def test_json_lines_numbers_are_kept_as_written(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "t.jsonl").write_text('{"id": "a", "amount": 123456789012345678.91, "code": 1.10, "doc": {"w": 2.50}}\n\n'
                                    '{"id": "b", "amount": 7, "code": 1E5, "doc": [1e400]}\n')
    outcome, _ = load(folder, tmp_path, fmt="jsonl", name="t.jsonl", id="string", amount="decimal(38,2)", code="string",
                      doc="json")
    assert outcome.error is None and outcome.rows_applied == 2
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    got = con.execute("SELECT id, amount::VARCHAR, code, doc FROM raw_shop.orders ORDER BY id").fetchall()
    con.close()
    assert got == [("a", "123456789012345678.91", "1.10", '{"w":2.50}'), ("b", "7.00", "1E5", "[1e400]")]


@pytest.mark.parametrize(("text", "kind", "row", "part"), [
    (b"id,v\no1,16\no2,0x10\n", "integer", 2, "'0x10' is hexadecimal"),  # Arrow read 0xFFFFFFFFFFFFFFFF as -1
    (b"id,v\no1,0a0b0c0d-0000-4000-8000-00000000000A\no2,{0a0b0c0d00004000800000000000000a}\no3,not-a-uuid\n", "uuid",
     3, "'not-a-uuid' is not a UUID"),
    (b'id,v\no1,"{""a"": [1, 2.50]}"\no2,\no3,{not json}\n', "json", 3, "'{not json}' is not JSON text"),
    (b'id,v\no1,[1]\no2,"{""a"": NaN}"\n', "json", 2, "is not JSON text"),  # DuckDB's json_valid took these
    (b'id,v\no1,[1]\no2,"[1,]"\n', "json", 2, "'[1,]' is not JSON text"),
], ids=["hex-integer", "uuid", "json", "json-nan", "json-trailing-comma"])
def test_text_that_is_not_of_its_declared_type_is_refused(tmp_path: Path, text: bytes, kind: str, row: int,
                                                          part: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(text)
    outcome, landing = load(folder, tmp_path, id="string", v=kind)
    message = str(outcome.error)
    assert isinstance(outcome.error, ContractError) and (outcome.error.row, outcome.error.field) == (row, "v"), message
    assert part in message and f"data row {row} (file line {row + 1})" in message, message
    assert list(landing.batches("shop", "orders")) == []
    # the same file without its bad row loads, the empty value as NULL (not '') and the rest as written
    (folder / "raw_orders.csv").write_bytes(b"".join(text.splitlines(keepends=True)[:row]))
    outcome, _ = load(folder, tmp_path, id="string", v=kind)
    assert outcome.error is None, outcome.error
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    stored = [v for (v,) in con.execute("SELECT v FROM raw_shop.orders ORDER BY id").fetchall()]
    con.close()
    assert stored == {"integer": [16], "uuid": ["0a0b0c0d-0000-4000-8000-00000000000A", "{0a0b0c0d00004000800000000000000a}"],
                      "json": ['{"a": [1, 2.50]}', None] if row == 3 else ["[1]"]}[kind]


PARQUET_CASES = [
    # (file column, declared, kept as, refused with)
    (pa.array([1.25, 1.239]), "decimal(10,2)", None, "value 1.239 (double in the file) would be stored as 1.24"),
    (pa.array([datetime(2024, 1, 2), datetime(2024, 1, 2, 13)]), "date", None,
     "value 2024-01-02 13:00:00 (timestamp[us] in the file) would be stored as 2024-01-02"),
    (pa.array([0, 1, 2]), "boolean", None, "value 2 (int64 in the file) would be stored as True"),
    (pa.array([1700000000]), "timestamp", None, "is int64 and is declared timestamp: a number is not a point in time"),
    (pa.array([datetime(2024, 1, 2)]), "integer", None, "a number is not a point in time"),
    (pa.array([bytes(range(16))], pa.binary(16)), "uuid", ["00010203-0405-0607-0809-0a0b0c0d0e0f"], None),
    (pa.array(["7", "", None]).dictionary_encode(), "integer", [7, None, None], None),
    (pa.array([1.5, 2.0], pa.float32()), "float", [1.5, 2.0], None),
    (pa.array([1.25, None]), "decimal(10,2)", [Decimal("1.25"), None], None),
    # found by review: each failed (an uncaught error, Arrow's precision rule, bytes read as text)
    (pa.array([1, None], pa.time64("us")), "string", ["00:00:00.000001", None], None),
    (pa.array([1.5, 2.0], pa.float16()), "float", [1.5, 2.0], None),
    (pa.array([12]), "decimal(38,20)", [Decimal("12.00000000000000000000")], None),
    (pa.ExtensionArray.from_storage(pa.uuid(), pa.array([bytes(range(16))], pa.binary(16))), "string",
     ["00010203-0405-0607-0809-0a0b0c0d0e0f"], None),
]


@pytest.mark.parametrize(("values", "kind", "kept", "refused"), PARQUET_CASES,
                         ids=["float-rounded-into-decimal", "time-of-day-into-date", "2-into-boolean",
                              "epoch-number-into-timestamp", "timestamp-into-integer", "uuid-bytes",
                              "dictionary-text", "float32", "exact-decimal", "time-of-day-as-text", "float16",
                              "integer-into-decimal-38-20", "uuid-extension-as-text"])
def test_a_parquet_column_of_another_type_is_cast_only_where_the_value_stays_the_same(
    tmp_path: Path, values: pa.Array, kind: str, kept: list | None, refused: str | None,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": [f"o{i}" for i in range(len(values))], "v": values}), folder / "t.parquet")
    outcome, landing = load(folder, tmp_path, fmt="parquet", name="t.parquet", id="string", v=kind)
    if refused:
        message = str(outcome.error)
        assert isinstance(outcome.error, ContractError) and refused in message and "field=v" in message, message
        assert list(landing.batches("shop", "orders")) == []
        return
    assert outcome.error is None, outcome.error
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert [v for (v,) in con.execute("SELECT v FROM raw_shop.orders ORDER BY id").fetchall()] == kept
    con.close()


def test_corners_a_probe_found_load_or_are_named(tmp_path: Path) -> None:
    """Each of these failed as an "unexpected" error without row or field, or was refused for
    the wrong reason, before: a byte-order mark opening a JSON-lines file, a Parquet int64 12 into
    decimal(10,2) ("precision should be at least 21"), a struct declared json, offsets and bare
    dates mixed in one timestamptz column, and a JSON integer of 5,000 digits."""
    folder = tmp_path / "in"
    folder.mkdir()

    def stored(fmt: str, name: str, **columns: str) -> list:
        (tmp_path / name).mkdir()  # a warehouse of its own: the types differ
        outcome, _ = load(folder, tmp_path / name, fmt=fmt, name=name, id="string", **columns)
        assert outcome.error is None, outcome.error
        con = duckdb.connect(str(tmp_path / name / "wh.duckdb"), read_only=True)
        try:
            return con.execute("SET TimeZone = 'UTC'; SELECT v::VARCHAR FROM raw_shop.orders ORDER BY id").fetchall()
        finally:
            con.close()

    (folder / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "v": "x"}\n')
    assert stored("jsonl", "a.jsonl", v="string") == [("x",)]
    pq.write_table(pa.table({"id": ["b"], "v": [12]}), folder / "b.parquet")
    assert stored("parquet", "b.parquet", v="decimal(10,2)") == [("12.00",)]
    pq.write_table(pa.table({"id": ["c"], "v": [{"k": [1.5, None]}]}), folder / "c.parquet")
    assert stored("parquet", "c.parquet", v="json") == [('{"k":[1.5,null]}',)]
    (folder / "d.csv").write_text("id,v\nd1,2024-02-03T04:05:06+02:00\nd2,2024-02-03\n")
    assert stored("csv", "d.csv", v="timestamptz") == [("2024-02-03 02:05:06+00",), ("2024-02-03 00:00:00+00",)]
    (folder / "e.jsonl").write_text('{"id": "e", "v": 1}\n{"id": "f", "v": ' + "1" * 5000 + "}\n")
    outcome, _ = load(folder, tmp_path, fmt="jsonl", name="e.jsonl", id="string", v="string")
    message = str(outcome.error)
    assert "row=2" in message and "line 2 of e.jsonl holds a number Python cannot read" in message, message
    assert "unexpected" not in message and "sys.set_int_max_str_digits" not in message


@pytest.mark.parametrize(("kind", "value", "reason", "hint"), [
    ("timestamptz", "2024-02-03T04:05:06.123456789Z", "it has 9 fractional digits of a second", "round the value"),
    ("timestamp", "2024-02-03T04:05:06+02:00", "it has a zone offset", "declare the column timestamptz"),
], ids=["nanoseconds", "offset-in-a-timestamp"])
def test_a_refused_time_says_what_is_wrong_with_it(tmp_path: Path, kind: str, value: str, reason: str, hint: str) -> None:
    """Arrow's own words were "expected no zone offset" for both, misleading for the first."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "raw_orders.csv").write_text(f"id,v\no1,2024-02-03 04:05:06\no2,{value}\n")
    outcome, _ = load(folder, tmp_path, id="string", v=kind)
    message = str(outcome.error)
    assert "row=2" in message and reason in message and hint in message.split("next: ")[1], message
    assert "expected no zone offset" not in message
