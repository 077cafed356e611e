"""An S3 landing store that fails, as the on-call engineer meets it: each failure is named as the
store's (not the batch's, not "unexpected"), retried by the scheduler when it may pass by itself,
not retried when the credentials are refused; nothing is half-applied and the rerun applies the
batch once. Real HTTP endpoints on loopback: moto's S3 server, and a server answering every
request with one S3 error, as a busy or refusing endpoint does."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import duckdb
import pytest

from orchestrator.scheduling.worker import is_retryable
from sources.config import load_source
from sources.errors import LandingUnreachable
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import _local_write_hint, load_file_source
from tests.servers import s3_server

SPEC = load_source("jaffle_shop")


@contextmanager
def answering(status: int, code: str) -> Iterator[str]:
    """An endpoint answering every S3 request with error ``code`` (HTTP ``status``)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>test</Message></Error>"
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body.encode())

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _load(landing: Landing, folder: Path, tmp_path: Path, raw_class: type[DuckDBRaw] = DuckDBRaw):  # type: ignore[no-untyped-def]
    with raw_class(tmp_path / "wh.duckdb") as raw:
        (outcome,) = load_file_source(SPEC, path=folder, landing=landing, raw=raw, lock_dir=tmp_path / "locks",
                                      tables=["customers"])
    return outcome


def _raw_customers(tmp_path: Path) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw_jaffle_shop' "
                           "AND table_name = 'customers'").fetchone()[0]:
            return []
        return con.execute("SELECT id, _batch_id FROM raw_jaffle_shop.customers ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(("status", "code", "retried", "words"), [
    (503, "SlowDown", True, "answered busy or failing (SLOW_DOWN during"),
    (500, "InternalError", True, "answered busy or failing (INTERNAL_FAILURE during"),
    (403, "SignatureDoesNotMatch", False, "refused the request (SIGNATURE_DOES_NOT_MATCH during"),
    (403, "AccessDenied", False, "refused the request (ACCESS_DENIED during"),
])
def test_a_failing_landing_store_is_named_and_retried_only_when_it_may_pass(  # type: ignore[no-untyped-def]
        status: int, code: str, retried: bool, words: str, small_jaffle: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with answering(status, code) as endpoint:
        outcome = _load(Landing.from_url("s3://landing/files", endpoint=endpoint), small_jaffle, tmp_path)
    text = str(outcome.error)
    assert text.startswith("[source=jaffle_shop table=customers"), text
    assert f"the landing store s3://landing/files {words}" in text, text
    assert "unexpected" not in text and "set-aside" not in text, text
    assert "nothing of this table was half-applied" in text, text
    if retried:
        assert "ELT_S3_ENDPOINT" in text and isinstance(outcome.error, LandingUnreachable), text
    else:
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in text and "s3:PutObject" in text, text
    assert is_retryable(outcome.error) is retried
    assert _raw_customers(tmp_path) == []


def test_the_store_failing_while_a_batch_is_applied_is_not_the_batch(small_jaffle: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     monkeypatch) -> None:
    """The endpoint goes away after the batch landed, while raw reads it: before, the message blamed
    the raw table and offered to set a healthy batch aside, and the scheduler did not retry."""
    with s3_server() as first:
        for key, value in first.env().items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=first.endpoint).create_bucket(Bucket="landing")
        stopped = threading.Event()

        class StopsTheStore(DuckDBRaw):
            def load(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                import socket
                from urllib.parse import urlsplit

                if not stopped.is_set():
                    stopped.set()
                    host = urlsplit(first.endpoint)
                    first.stop()  # the port answers nothing from here on
                    with pytest.raises(OSError):
                        socket.create_connection((host.hostname, host.port), timeout=2).close()
                return super().load(*args, **kwargs)

        outcome = _load(Landing.from_url("s3://landing/files", endpoint=first.endpoint), small_jaffle, tmp_path,
                        StopsTheStore)
    assert stopped.is_set() and outcome.landed, outcome
    text = str(outcome.error)
    assert isinstance(outcome.error, LandingUnreachable), text
    assert f"batch={outcome.landed[0]}" in text, text
    assert "reading a landed batch into raw from the landing store s3://landing/files failed: it could not be reached" \
        in text, text
    assert "set-aside" not in text and "Traceback" not in text, text
    assert "it stays in landing and the rerun applies it" in text and is_retryable(outcome.error), text
    assert _raw_customers(tmp_path) == []

    with s3_server() as second:  # moto keeps its buckets per process: the same landing, another port
        monkeypatch.setenv("ELT_S3_ENDPOINT", second.endpoint)
        rerun = _load(Landing.from_url("s3://landing/files", endpoint=second.endpoint), small_jaffle, tmp_path)
    assert rerun.error is None and rerun.applied == outcome.landed and not rerun.landed, rerun
    rows = _raw_customers(tmp_path)
    assert len(rows) == len(set(rows)) == 3 and {batch for _, batch in rows} == set(outcome.landed), rows


def test_a_full_disk_names_where_the_batch_was_written(tmp_path: Path) -> None:
    """Arrow's "No space left on device" names no file: the hint says which disk (the spool of an
    S3 landing is in the system temporary folder, not in landing)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    local = Landing.local(tmp_path / "landing")
    assert f"the landing folder {tmp_path / 'landing'} (ELT_LANDING_ROOT" in _local_write_hint(full, local)
    s3 = Landing.from_url("s3://landing/files", endpoint="http://127.0.0.1:9")
    import tempfile

    hint = _local_write_hint(full, s3)
    assert f"free space in {tempfile.gettempdir()}" in hint and "TMPDIR" in hint and "s3://landing/files" in hint, hint


def test_a_manifest_upload_that_completes_after_the_loader_gave_up_becomes_a_batch(  # type: ignore[no-untyped-def]
        small_jaffle: Path, tmp_path: Path, s3_bucket: str, monkeypatch) -> None:
    """S3 can complete an upload whose request timed out on the client (a slow
    CompleteMultipartUpload). The loader gave up, removed the batch's data file, and then the
    manifest arrived: every later load failed on "data file ... listed in the manifest is missing"
    and the table was blocked (a network probe with a proxy that held the request 60 s)."""
    from sources.landing.manifest import MANIFEST_NAME

    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    place = Landing._place
    late: list[tuple[str, bytes]] = []

    def manifest_times_out(self, source, table, batch_id, data, manifest, sending_manifest=lambda: None):  # type: ignore[no-untyped-def]
        def sent_then_timed_out() -> None:
            sending_manifest()
            late.append((f"{self.batch_dir(source, table, batch_id)}/{MANIFEST_NAME}", manifest.to_json().encode()))
            raise OSError("When completing multiple part upload for key '_manifest.json' in bucket: AWS Error "
                          "NETWORK_CONNECTION during CompleteMultipartUpload operation: curlCode: 28, Timeout was reached")
        return place(self, source, table, batch_id, data, manifest, sending_manifest=sent_then_timed_out)

    monkeypatch.setattr(Landing, "_place", manifest_times_out)
    first = _load(landing, small_jaffle, tmp_path)
    assert first.error is not None and not first.landed and _raw_customers(tmp_path) == [], first
    monkeypatch.setattr(Landing, "_place", place)

    (path, body), = late  # the held request reaches S3 after all
    with landing.fs.open_output_stream(path) as out:
        out.write(body)
    rerun = _load(landing, small_jaffle, tmp_path)
    assert rerun.error is None, rerun.error
    batch = path.split("/")[-2]
    assert rerun.applied == [batch], rerun
    rows = _raw_customers(tmp_path)
    assert len(rows) == 3 and {b for _, b in rows} == {batch}, rows


def test_a_damaged_batch_in_s3_is_named_by_its_s3_url(small_jaffle: Path, tmp_path: Path, s3_bucket: str) -> None:
    """A landed file changed after landing is refused by its checksum; on S3 the message named it
    `landing/.../part-00000.parquet`, which reads like a local folder (a production walkthrough)."""
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    outcome = _load(landing, small_jaffle, tmp_path)
    assert outcome.error is None and len(outcome.landed) == 1, outcome
    manifest = landing.manifest("jaffle_shop", "customers", outcome.landed[0])
    [path] = landing.data_files(manifest)
    with landing.fs.open_output_stream(path) as out:
        out.write(b"not the landed bytes")
    with pytest.raises(Exception) as refused:
        landing.data_files(manifest)
    assert f"checksum of s3://{path} does not match its manifest" in str(refused.value), refused.value
    assert path.startswith(f"{s3_bucket}/landing/jaffle_shop/customers/"), path
