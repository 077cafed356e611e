"""REST API source against real HTTP servers on loopback: retries honouring Retry-After,
every pagination style, a looping next link, auth errors, bad bodies, secrets redacted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestrator.scheduling.worker import is_retryable

from sources.config import parse_source
from sources.errors import ContractError, SourceReadError
from sources.extract import rest
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
from tests.servers import http_server

TOKEN = "tok-SECRET-123"
PRODUCTS = [{"sku": f"SKU-{i:03d}", "name": f"product {i}", "price": i * 100, "meta": {"tags": ["a", i]},
             "updated_at": f"2024-01-{1 + i % 28:02d}T00:00:00Z"} for i in range(1, 24)]


def spec_for(base_url: str, pagination: dict | None = None, auth: str = "bearer", **table: object):  # type: ignore[no-untyped-def]
    return parse_source({
        "name": "catalog", "kind": "rest_api", "owner": "shop-team", "base_url": base_url, "max_retries": 3,
        "timeout_s": 5, "auth": {"type": auth, "token_env": "CATALOG_TOKEN", "header": "X-API-Key"},
        "tables": {"products": {"endpoint": "/v1/products", "records_path": "data", "primary_key": "sku",
                                "pagination": pagination or {"type": "none"},
                                "columns": {"sku": "string", "name": "string", "price": "integer", "meta": "json",
                                            "updated_at": "timestamptz"}, **table}},
    })


class Recorder:
    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn, self.requests = fn, []

    def __call__(self, path, query, headers):  # type: ignore[no-untyped-def]
        return self.fn(path, query, headers)


def ok(body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


@contextmanager
def serving(tmp_path: Path, served: dict[str, list[dict]], **table: object) -> Iterator[tuple[Any, DuckDBRaw]]:
    """An endpoint answering ``served["rows"]`` (change them between loads), and a load of it into one
    landing and DuckDB warehouse: yields ``(load, raw)``, ``load(**ingest_options)`` giving the outcome."""
    with http_server(lambda p, q, h: ok({"data": served["rows"]})) as url:
        spec = spec_for(url, **table)
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            yield (lambda **options: ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, **options)[0]), raw


@pytest.fixture(autouse=True)
def token(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)


def _records(spec, sleeps=None):  # type: ignore[no-untyped-def]
    table = spec.tables["products"]
    (item,) = list(rest.extracts(spec, table, cursor=None, sleep=(sleeps.append if sleeps is not None else lambda s: None)))
    return [row for batch in item.batches for row in batch.to_pylist()]


def test_429_with_retry_after_then_500_then_data(tmp_path: Path) -> None:
    calls = []

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        calls.append(headers.get("authorization"))
        if len(calls) == 1:
            return 429, {"Retry-After": "3"}, b"slow down"
        if len(calls) == 2:
            return 500, {}, b"oops"
        return ok({"data": PRODUCTS[:2]})

    sleeps: list[float] = []
    with http_server(respond) as url:
        rows = _records(spec_for(url), sleeps)
    assert [r["sku"] for r in rows] == ["SKU-001", "SKU-002"]
    assert len(calls) == 3 and all(c == f"Bearer {TOKEN}" for c in calls)
    assert sleeps[0] >= 3.0  # honoured Retry-After
    assert 0 <= sleeps[1] <= rest.BACKOFF_BASE_S * 2  # second retry: jittered backoff, attempt 1
    assert rows[0]["meta"] == '{"tags":["a",1]}' and str(rows[0]["updated_at"]) == "2024-01-02 00:00:00+00:00"


def test_retries_are_bounded_and_the_error_is_redacted() -> None:
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        return 503, {}, TOKEN.encode()

    sleeps: list[float] = []
    with http_server(respond) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url), sleeps)
    assert len(sleeps) == 3  # max_retries
    assert "after 4 attempts" in str(err.value) and TOKEN not in str(err.value)


@pytest.mark.parametrize("pagination", [
    {"type": "page", "page_size": 5},
    {"type": "offset", "limit": 7},
    {"type": "offset", "limit": 1},  # too small to repeat a record: read without the overlap check
    {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
    {"type": "next_link", "next_path": "links.next"},
    {"type": "next_link", "next_path": "nowhere"},  # falls back to the Link header
], ids=["page", "offset", "offset-of-one", "cursor", "next-link-body", "next-link-header"])
def test_every_pagination_style_reads_every_record_once(pagination: dict) -> None:
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        q = {k: v[0] for k, v in query.items()}
        if "page" in q:
            start = (int(q["page"]) - 1) * int(q["per_page"])
            return ok({"data": PRODUCTS[start:start + int(q["per_page"])]})
        if "offset" in q:
            start = int(q["offset"])
            return ok({"data": PRODUCTS[start:start + int(q["limit"])]})
        start = int(q.get("after", q.get("from", "0")))
        chunk = PRODUCTS[start:start + 6]
        more = start + 6 < len(PRODUCTS)
        body = {"data": chunk, "meta": {"next": str(start + 6) if more else None},
                "links": {"next": f"/v1/products?from={start + 6}" if more else None}}
        link = {"Link": f'</v1/products?from={start + 6}>; rel="next"'} if more else {}
        return ok(body, link)

    with http_server(respond) as url:
        rows = _records(spec_for(url, pagination))
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]


def test_a_looping_next_link_stops_with_an_error() -> None:
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        return ok({"data": PRODUCTS[:2], "next": "/v1/products?page=again"})

    with http_server(respond) as url, pytest.raises(SourceReadError, match="pagination loops") as err:
        _records(spec_for(url, {"type": "next_link"}))
    assert "source=catalog" in str(err.value) and "table=products" in str(err.value)


@pytest.mark.parametrize(("status", "hint"), [(401, "credentials were refused"), (403, "lack permission"), (404, "does not exist")])
def test_client_errors_are_not_retried(status: int, hint: str) -> None:
    responder = Recorder(lambda p, q, h: (status, {}, b"{}"))
    with http_server(responder) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, auth="api_key"))
    assert len(responder.requests) == 1
    assert responder.requests[0][2]["x-api-key"] == TOKEN
    assert f"HTTP {status}" in str(err.value) and hint in str(err.value) and TOKEN not in str(err.value)


def test_a_404_past_the_last_page_is_told_apart_from_a_missing_endpoint() -> None:
    """Many APIs answer 404 for a page past the end: the hint said the endpoint did not exist."""
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page = int(query.get("page", ["1"])[0])
        return ok({"data": PRODUCTS[(page - 1) * 10:page * 10]}) if page <= 3 else (404, {}, b"{}")

    with http_server(respond) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, pagination={"type": "page", "page_size": 10}))
    assert "HTTP 404" in str(err.value) and "some APIs answer 404 past their last page" in str(err.value)
    assert "stop_on_short_page: true" in str(err.value) and "does not exist" not in str(err.value)


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"data": [{"sku": "SKU-001", "na'],
                         ids=["html", "truncated"])
def test_a_body_that_is_not_json_is_named(body: bytes) -> None:
    with http_server(lambda p, q, h: (200, {}, body)) as url, pytest.raises(SourceReadError, match="not JSON") as err:
        _records(spec_for(url))
    assert "table=products" in str(err.value)


def test_a_wrongly_typed_value_names_its_record_and_field() -> None:
    bad = [*PRODUCTS[:3], {**PRODUCTS[3], "price": "twelve"}]
    with http_server(lambda p, q, h: ok({"data": bad})) as url, pytest.raises(Exception) as err:
        _records(spec_for(url))
    assert "row=4" in str(err.value) and "field=price" in str(err.value) and "'twelve'" in str(err.value)
    # the record's key too: a row number in a paged read cannot be looked up at the API (a probe)
    assert "in the record with sku='SKU-004'" in str(err.value), str(err.value)


def test_a_lone_surrogate_in_the_json_names_its_record_and_field() -> None:
    # "\\ud800" is valid JSON but no Unicode text: refused before landing, located
    body = json.dumps({"data": PRODUCTS[:2]})[:-2] + ', {"sku": "X-1", "name": "bad \\ud800 name"}]}'
    with http_server(lambda p, q, h: (200, {"Content-Type": "application/json"}, body.encode())) as url, \
            pytest.raises(ContractError) as err:
        _records(spec_for(url))
    text = str(err.value)
    assert "row=3" in text and "field=name" in text and "surrogate" in text and "next:" in text, text


def test_numbers_reach_raw_and_landing_as_the_api_sent_them(tmp_path: Path) -> None:
    """Read as Python floats, 123456789012345678.91 became ...680.00 in a decimal(38,2) column,
    1.10 became '1.1' in text and JSON columns, and 1e400 became infinity in a float column."""
    body = (b'{"data": [{"sku": "A", "price": 123456789012345678.91, "code": 1.10, "meta": {"w": 1.10, "big": 1e400, '
            b'"n": [2.50, -0.0]}, "ratio": 1E5}, {"sku": "B", "price": 0.1, "code": "1.10", "meta": null, "ratio": -Infinity}]}')
    served = ok({})  # headers as any answer's
    with http_server(lambda p, q, h: (200, served[1], body)) as url:
        spec = spec_for(url, columns={"sku": "string", "price": "decimal(38,2)", "code": "string", "meta": "json",
                                      "ratio": "float"})
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert outcome.error is None and outcome.rows_applied == 2
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    got = con.execute("SELECT sku, price::VARCHAR, code, meta, ratio FROM raw_catalog.products ORDER BY sku").fetchall()
    con.close()
    (landed,) = list(landing.batches("catalog", "products"))
    in_landing = landing.open_batch_reader(landed).read_all().sort_by("sku").to_pylist()
    assert got == [("A", "123456789012345678.91", "1.10", '{"big":1e400,"n":[2.50,-0.0],"w":1.10}', 100000.0),
                   ("B", "0.10", "1.10", None, float("-inf"))]
    assert [(str(r["price"]), r["code"], r["meta"]) for r in in_landing] == [row[1:4] for row in got]


@pytest.mark.parametrize(("value", "kind", "said"), [
    (b"1e400", "float", "'1e400' is too large for a float"),  # Arrow reads it as infinity; refused, with what to do
    (b'{"x": NaN}', "json", "NaN"),  # Python's parser reads NaN; JSON has none, and a json column holds JSON
], ids=["float-overflow", "nan-in-json"])
def test_a_value_its_column_cannot_hold_is_refused_with_its_record_and_field(value: bytes, kind: str, said: str) -> None:
    body = b'{"data": [{"sku": "A", "v": null}, {"sku": "B", "v": ' + value + b"}]}"
    with http_server(lambda p, q, h: (200, {"Content-Type": "application/json"}, body)) as url, \
            pytest.raises(ContractError) as err:
        _records(spec_for(url, columns={"sku": "string", "v": kind}))
    text = str(err.value)
    assert "row=2" in text and "field=v" in text and said in text and "next:" in text, text


def test_incremental_load_sends_updated_since_and_advances_the_cursor(tmp_path: Path) -> None:
    responder = Recorder(lambda p, q, h: ok({"data": [r for r in PRODUCTS if r["updated_at"] >= q.get("since", [""])[0]]}))
    with http_server(responder) as url:
        spec = spec_for(url, cursor_field="updated_at", updated_since_param="since", lookback="1h")
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            assert raw.cursor("catalog", "products") == "2024-01-24T00:00:00+00:00"
            (second,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert first.rows_applied == len(PRODUCTS)
    assert "since" not in responder.requests[0][1]
    assert responder.requests[1][1]["since"] == ["2024-01-23T23:00:00+00:00"]  # cursor minus the 1h lookback
    assert second.rows_applied == 0 and second.status == "unchanged"  # the boundary record is already in raw
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(DISTINCT sku) FROM raw_catalog.products").fetchone() == (len(PRODUCTS),)
    con.close()


def test_an_api_that_ignores_updated_since_neither_duplicates_raw_nor_moves_the_cursor_back(tmp_path: Path) -> None:
    """Every record on every request, whatever `since` says: the records older than asked for were
    appended again (57 raw rows for 27 keys in a probe) and the cursor fell to the newest of them."""
    served = {"rows": PRODUCTS[:10]}
    with serving(tmp_path, served, cursor_field="updated_at", updated_since_param="since", lookback="1h") as (load, raw):
        load()
        assert raw.cursor("catalog", "products") == "2024-01-11T00:00:00+00:00"
        again = load()
        served["rows"] = [PRODUCTS[0], dict(PRODUCTS[1], updated_at="2024-01-10T23:30:00Z"), *PRODUCTS[2:10]]  # late
        late = load()
        cursor = raw.cursor("catalog", "products")
    assert again.status == "unchanged" and again.rows_applied == 0, again
    assert late.rows_applied == 1, late  # inside the lookback: kept
    assert cursor == "2024-01-11T00:00:00+00:00"  # not moved back to the late record's time
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT (sku, updated_at)) FROM raw_catalog.products").fetchone() == (11, 11)
    con.close()


def test_a_record_stamped_in_the_future_does_not_hide_later_changes(tmp_path: Path) -> None:
    """One record a day ahead moved the cursor a day ahead, and every change in that day was skipped."""
    from datetime import UTC, datetime, timedelta

    def stamp(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    served = {"rows": [dict(PRODUCTS[0], updated_at=stamp(timedelta(hours=-2))),
                       dict(PRODUCTS[1], updated_at=stamp(timedelta(days=1)))]}
    responder = Recorder(lambda p, q, h: ok({"data": [r for r in served["rows"]
                                                      if r["updated_at"] >= q.get("since", [""])[0][:19]]}))
    with http_server(responder) as url:
        spec = spec_for(url, cursor_field="updated_at", updated_since_param="since", lookback="15m")
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            stored = datetime.fromisoformat(raw.cursor("catalog", "products"))
            served["rows"].append(dict(PRODUCTS[2], updated_at=stamp(timedelta(minutes=-1))))  # a change now
            (later,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert stored <= datetime.now(UTC)  # the cursor stopped when the extract began, not a day ahead
    assert later.rows_applied == 1, later  # the new change, not skipped; the future record not again


def test_a_whole_read_much_smaller_than_the_last_is_refused_until_forced(tmp_path: Path) -> None:
    """An API answering one empty (or cut-short) response: every key it lacked became a deletion,
    and the marts dropped those rows until the next complete read (found by a REST API probe)."""
    served = {"rows": PRODUCTS[:23]}
    with serving(tmp_path, served) as (load, _):
        first = load()
        served["rows"] = []
        empty = load()
        served["rows"] = PRODUCTS[:20]  # three fewer: a real change, applied
        fewer = load()
        served["rows"] = PRODUCTS[:5]
        short = load()
        forced = load(force=True)
    assert first.rows_applied == 23
    text = str(empty.error)
    assert "this read returned 0 rows where the previous whole read had 23" in text and not empty.landed, text
    assert "`elt load catalog --table products --force`" in text and is_retryable(empty.error), text
    assert fewer.error is None and fewer.rows_applied == 3  # three deletions
    assert "returned 5 rows where the previous whole read had 20" in str(short.error)
    assert forced.error is None and forced.rows_applied == 15  # accepted on purpose: 15 deletions
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FILTER (WHERE _deleted), count(DISTINCT _batch_id) "
                       "FROM raw_catalog.products").fetchone() == (18, 3)  # the refused reads left nothing
    con.close()


def test_an_unchanged_snapshot_is_not_landed_again_but_a_changed_one_is(tmp_path: Path) -> None:
    """An endpoint read in full every run (no cursor) lands a batch only when its data changed."""
    served = {"rows": PRODUCTS[:5]}
    with serving(tmp_path, served) as (load, _):
        first = load()
        same = load()
        served["rows"] = [dict(PRODUCTS[0], price=999), *PRODUCTS[1:5]]
        changed = load()
        forced = load(force=True)
        # `elt backfill` (a window): the same comparison as a plain load, so no copy in landing
        backfilled = load(window=("2018-09-01T00:00:00", "2018-09-08T00:00:00"))
    assert first.rows_applied == 5 and len(first.landed) == 1
    assert same.status == "unchanged" and same.landed == [] and same.rows_applied == 0
    assert changed.rows_applied == 1 and len(changed.landed) == 1  # landed whole, raw gains the change only
    assert len(forced.landed) == 1  # `elt load --force` always lands
    assert backfilled.status == "unchanged" and backfilled.landed == [] and backfilled.rows_applied == 0
    assert len(list(Landing.local(tmp_path / "landing").batches("catalog", "products"))) == 3
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw_catalog.products").fetchone() == (6,)  # 5 + 1 change
    con.close()


def test_a_capped_page_size_does_not_drop_later_pages() -> None:
    """The API serves at most 4 records a page although 10 were asked: paging goes on to the
    first empty page instead of stopping at the first short one."""
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page, size = int(query["page"][0]), min(int(query["per_page"][0]), 4)
        return ok({"data": PRODUCTS[(page - 1) * size: page * size]})

    with http_server(respond) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 10}))
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]


def test_a_body_cut_off_mid_transfer_is_retried_then_named() -> None:
    body = json.dumps({"data": PRODUCTS}).encode()
    calls: list[int] = []

    def cut_once(path, query, headers):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:  # declares the whole body, sends 21 bytes, closes the connection
            return 200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body[:21]
        return ok({"data": PRODUCTS})

    sleeps: list[float] = []
    with http_server(cut_once) as url:
        rows = _records(spec_for(url), sleeps)
    assert len(rows) == len(PRODUCTS) and len(calls) == 2 and len(sleeps) == 1

    def always_cut(path, query, headers):  # type: ignore[no-untyped-def]
        return 200, {"Content-Length": str(len(body))}, body[:21]

    with http_server(always_cut) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url))
    message = str(err.value)
    assert "still failing after 4 attempts" in message and "IncompleteRead" in message
    assert "/v1/products" in message and "table=products" in message and TOKEN not in message


def test_a_server_that_drips_its_body_is_given_up_at_the_request_deadline_and_retried() -> None:
    """``timeout_s`` bounds each wait for data, so a server sending a byte every 0.2 s held a load
    for ever (an on-call probe); ``request_deadline_s`` bounds the whole request."""
    import dataclasses
    import time
    import time

    body = json.dumps({"data": PRODUCTS}).encode()

    def drip(path, query, headers):  # type: ignore[no-untyped-def]
        def chunks() -> Iterator[bytes]:
            for byte in range(len(body)):
                yield body[byte:byte + 1]
                time.sleep(0.2)
        return 200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, chunks()

    sleeps: list[float] = []
    with http_server(drip) as url, pytest.raises(SourceReadError) as err:
        spec = dataclasses.replace(spec_for(url), request_deadline_s=1.0, max_retries=1)
        started = time.monotonic()
        _records(spec, sleeps)
    took = time.monotonic() - started
    message = str(err.value)
    assert "still failing after 2 attempts" in message and "request_deadline_s (1 s)" in message, message
    # the next step names the setting that gave up (it said "raise max_retries", which cannot help)
    assert "raise request_deadline_s in the declaration" in message and "max_retries" not in message, message
    assert len(sleeps) == 1 and took < 30, took  # given up twice at about a second, not after the whole body
    assert is_retryable(err.value)


def test_a_server_that_drips_its_headers_is_given_up_at_the_request_deadline_and_retried() -> None:
    """The deadline also covers the status line and headers, read before the body: a server (or a
    proxy) that sends a header byte every 0.2 s never reached ``timeout_s`` and held the load for
    ever, since only the body was read against the deadline."""
    import dataclasses
    import time
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    stop, served = threading.Event(), []

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
                while not stop.is_set():
                    conn.sendall(b"a")
                    time.sleep(0.2)
            except OSError:
                return  # the client gave up

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            served.append(conn)
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    sleeps: list[float] = []
    try:
        spec = dataclasses.replace(spec_for(f"http://127.0.0.1:{listener.getsockname()[1]}"), request_deadline_s=1.0,
                                   max_retries=1, timeout_s=5.0)
        started = time.monotonic()
        with pytest.raises(SourceReadError) as err:
            _records(spec, sleeps)
        took = time.monotonic() - started
    finally:
        stop.set()
        server.join(5)
        listener.close()
    message = str(err.value)
    assert "still failing after 2 attempts" in message and "request_deadline_s (1 s)" in message, message
    assert "raise request_deadline_s in the declaration" in message, message
    assert len(served) == 2 and len(sleeps) == 1 and took < 10, (len(served), took)
    assert is_retryable(err.value)


def test_a_token_renewed_in_its_file_mid_read_is_sent_after_a_401(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A token that expires within a long paged read: an agent rewrites ``<token_env>_FILE``, and
    the 401 that follows is retried once with the file's new token. Before, the 401 ended the
    table, and the next load read every page again."""
    import logging

    renewed = "tok-RENEWED-456"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("CATALOG_TOKEN")
    monkeypatch.setenv("CATALOG_TOKEN_FILE", str(token_file))
    seen: list[str | None] = []

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        seen.append(headers.get("authorization"))
        page = int(query.get("page", ["1"])[0])
        if page == 1:  # served with the first token; then the agent renews it, and the old one expires
            token_file.write_text(renewed + "\n")
        valid = f"Bearer {TOKEN}" if page == 1 else f"Bearer {renewed}"
        if headers.get("authorization") != valid:
            return 401, {"Content-Type": "application/json"}, b'{"error": "token expired"}'
        return ok({"data": PRODUCTS[(page - 1) * 10:page * 10]})

    sleeps: list[float] = []
    with caplog.at_level(logging.INFO), http_server(respond) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 10}), sleeps)
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]
    assert seen[:3] == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", f"Bearer {renewed}"], seen
    assert len(sleeps) == 1  # the one retry
    logged = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "CATALOG_TOKEN_FILE holds a new token" in logged and "token renewed" in logged, logged
    assert TOKEN not in logged and renewed not in logged

    # the file unchanged: the 401 is final, with its hint, as before
    token_file.write_text("tok-OLD\n")
    with http_server(lambda p, q, h: (401, {}, b"{}")) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, {"type": "page", "page_size": 10}))
    assert "returned HTTP 401" in str(err.value) and "credentials were refused" in str(err.value)
    assert "check the secret in CATALOG_TOKEN (or the file CATALOG_TOKEN_FILE names)" in str(err.value), str(err.value)


def test_credentials_go_only_to_the_base_urls_origin() -> None:
    """A next link or a redirect to another host (here: another port) gets no token."""
    elsewhere = Recorder(lambda p, q, h: ok({"data": PRODUCTS[6:]}))
    with http_server(elsewhere) as other:
        home = Recorder(lambda p, q, h: ok({"data": PRODUCTS[:6], "next": f"{other}/v1/more"}))
        with http_server(home) as url:
            rows = _records(spec_for(url, {"type": "next_link"}))
        assert len(rows) == len(PRODUCTS)
        assert home.requests[0][2]["authorization"] == f"Bearer {TOKEN}"
        assert [r[0] for r in elsewhere.requests] == ["/v1/more"] and "authorization" not in elsewhere.requests[0][2]

        elsewhere.requests.clear()
        moved = Recorder(lambda p, q, h: (302, {"Location": f"{other}/v1/moved"}, b""))
        with http_server(moved) as url:
            assert len(_records(spec_for(url, auth="api_key"))) == len(PRODUCTS) - 6
        assert moved.requests[0][2]["x-api-key"] == TOKEN
        assert [r[0] for r in elsewhere.requests] == ["/v1/moved"] and "x-api-key" not in elsewhere.requests[0][2]


def test_undeclared_and_absent_keys_are_reported_and_kept_in_the_manifest(tmp_path: Path) -> None:
    records = [{k: v for k, v in p.items() if k != "meta"} | {"colour": "red"} for p in PRODUCTS]
    with http_server(lambda p, q, h: ok({"data": records})) as url:
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (out,) = ingest(spec_for(url), landing=landing, raw=raw, lock_dir=tmp_path)
    assert out.status == "loaded" and out.rows_applied == len(PRODUCTS)
    assert out.schema_notes == ["column(s) meta not in the source: landed as NULL",
                                "undeclared key(s) colour: not loaded (declare them to load them)"]
    [manifest] = landing.batches("catalog", "products")
    assert manifest.origin["schema_drift"] == {"missing": ["meta"], "ignored": ["colour"]}


def test_an_api_that_repeats_its_last_page_past_the_end_stops_there() -> None:
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS[min(int(q["page"][0]), 3) * 8 - 8:][:8]}))
    with http_server(responder) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 8}))
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]
    # pages 1-3, page 4 repeats page 3, and page 5 repeats it too: the end (a repeat confirmed, as an empty page is)
    assert len(responder.requests) == 5


def test_user_info_in_the_base_url_is_sent_as_basic_auth_and_never_printed(tmp_path: Path) -> None:
    """``https://user:password@host`` works as curl reads it, and the password is in no error,
    log line or manifest (urllib alone would take the user-info for part of the host name)."""
    import base64
    import urllib.parse

    password = "pa:ss@w/rd-SECRET"
    served = {"status": 200}
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS[:3]}) if served["status"] == 200
                         else (served["status"], {}, b"{}"))
    with http_server(responder) as url:
        base = url.replace("http://", f"http://ann:{urllib.parse.quote(password, safe='')}@")
        spec = spec_for(base, auth="none")
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            served["status"] = 404
            (failed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            served["status"] = 503
            with pytest.raises(SourceReadError) as err:
                _records(spec)
    assert out.status == "loaded" and out.rows_applied == 3
    assert responder.requests[0][2]["authorization"] == "Basic " + base64.b64encode(f"ann:{password}".encode()).decode()
    [manifest] = landing.batches("catalog", "products")
    assert manifest.origin["base_url"] == url  # without the user-info
    for message in (str(failed.error), str(err.value)):
        assert f"GET {url}/v1/products" in message and "SECRET" not in message and "ann" not in message, message
    assert "HTTP 404" in str(failed.error) and "still failing after 4 attempts" in str(err.value)


def test_every_page_of_a_table_reuses_one_connection() -> None:
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS[int(q["page"][0]) * 8 - 8:][:8]}))
    responder.peers = []
    with http_server(responder, keep_alive=True) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 8}))
    # 3 pages, the empty one, and the one after it (an empty page ends the read when the next is empty too)
    assert len(rows) == len(PRODUCTS) and len(responder.requests) == 5
    assert len(set(responder.peers)) == 1, responder.peers  # one TCP connection for all five


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # urllib3 verifies strictly (X509_STRICT): the key identifiers must be present
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_redirect_from_https_to_http_is_refused_and_nothing_travels_in_clear(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The https API is trusted through SSL_CERT_FILE (the system's CA settings, as in production;
    requests' own REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE would take precedence when set)."""
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    plain = Recorder(lambda p, q, h: ok({"data": PRODUCTS}))
    with http_server(plain) as http_url:
        secure = Recorder(lambda p, q, h: ok({"data": PRODUCTS[:2]}) if p == "/v1/products"
                          else (302, {"Location": f"{http_url}/v1/products"}, b""))
        with http_server(secure, tls=(cert, key)) as https_url:
            assert https_url.startswith("https://")
            assert len(_records(spec_for(https_url))) == 2  # https itself works, verified against the CA
            with pytest.raises(SourceReadError) as err:
                _records(spec_for(https_url, endpoint="/v1/old-products"))
    assert "refused redirect from https to http" in str(err.value) and "use its https address" in str(err.value)
    assert secure.requests[-1][2]["authorization"] == f"Bearer {TOKEN}"
    assert plain.requests == []  # neither the token nor the request went to the plain-http address


def test_netrc_is_never_consulted(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """requests would send ~/.netrc's password for the host when no auth is declared: never here."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login ann password NETRC-SECRET\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS[:3]}))
    with http_server(responder) as url:
        assert len(_records(spec_for(url, auth="none"))) == 3
    assert "authorization" not in responder.requests[0][2], responder.requests[0][2]


def test_offset_paging_refuses_a_read_whose_collection_shifted_and_the_rerun_loses_nothing(tmp_path: Path) -> None:
    """Found by a probe: offset paging over records sorted by key, filtered by `since`. One empty
    answer in the middle ended the read early and the cursor moved to the newest record read, past
    records it never read: 14 of 30 new records landed, and every rerun said `unchanged`. A record
    removed between two pages shifts the later ones the same way (one record skipped). Each page
    now starts one record early and must repeat the last one read."""
    rows = [dict(p, updated_at=f"2024-02-{1 + (i * 7) % 23:02d}T00:00:00Z") for i, p in enumerate(PRODUCTS)]  # not in cursor order
    fault = {"kind": None}
    calls: list[int] = []

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        q = {k: v[0] for k, v in query.items()}
        start, limit = int(q["offset"]), int(q["limit"])
        calls.append(start)
        served = [r for r in rows if r["updated_at"] >= q.get("since", "")]
        if fault["kind"] == "empty" and len(calls) == 2:  # one lost page, as an overloaded backend answers
            return ok({"data": []})
        if fault["kind"] == "removed" and len(calls) >= 2:  # a record before the offset went away meanwhile
            served = [r for r in served if r["sku"] != rows[1]["sku"]]
        return ok({"data": served[start:start + limit]})

    with http_server(respond) as url:
        spec = spec_for(url, {"type": "offset", "limit": 5}, cursor_field="updated_at", updated_since_param="since",
                        lookback="1h")
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            outcomes = {}
            for kind in ("empty", "removed"):
                fault["kind"], calls[:] = kind, []
                (outcomes[kind],) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
                assert raw.cursor("catalog", "products") is None, kind  # the cursor did not move
            fault["kind"], calls[:] = None, []
            (healed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            assert calls == [0, 4, 8, 12, 16, 20, 22], calls  # each page from one record before; the last one alone ends it
    empty, removed = str(outcomes["empty"].error), str(outcomes["removed"].error)
    assert "the collection changed while it was paged, or the API lost records" in empty, empty
    assert "(offset=4) should start with the last record of the page before (sku='SKU-005') and came back empty" in empty
    assert "(offset=4) should start with the last record of the page before (sku='SKU-005') and starts with sku='SKU-006'" in removed
    assert "nothing of this read was landed and the cursor did not move" in removed and "next: rerun" in removed, removed
    assert not outcomes["empty"].landed and not outcomes["removed"].landed
    assert is_retryable(outcomes["empty"].error) and is_retryable(outcomes["removed"].error)  # the scheduler's next attempt
    assert healed.error is None and healed.rows_applied == len(PRODUCTS)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT sku) FROM raw_catalog.products").fetchone() == (23, 23)
    con.close()


def test_page_paging_ends_only_where_the_next_page_is_empty_too(tmp_path: Path) -> None:
    """Found by a probe: one empty page in the middle of a whole read ended it, and every later key
    was recorded as deleted (30 of 100 keys, under the shrink guard's half), with exit 0."""
    served = {"lost": None}

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page, size = int(query["page"][0]), int(query["per_page"][0])
        return ok({"data": [] if page == served["lost"] else PRODUCTS[(page - 1) * size:page * size]})

    with http_server(respond) as url:
        spec = spec_for(url, {"type": "page", "page_size": 3})
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            served["lost"] = 6
            (lost,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert first.error is None and first.rows_applied == 23
    text = str(lost.error)
    assert "page 6 of /v1/products came back empty but the page after it holds 3 record(s)" in text, text
    assert "nothing of this read was landed" in text and not lost.landed and is_retryable(lost.error)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FILTER (WHERE _deleted) FROM raw_catalog.products").fetchone() == (0,)
    con.close()


def test_a_record_added_while_paged_by_page_number_says_a_rerun_reads_it_again(tmp_path: Path) -> None:
    """Page paging cannot see the shift: the repeated record fails the batch's key check, whose hint
    pointed only at the source's data and the declaration (a probe's finding; a rerun heals it)."""
    calls: list[int] = []

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page, size = int(query["page"][0]), int(query["per_page"][0])
        calls.append(page)
        rows = PRODUCTS if len(calls) < 2 else [dict(PRODUCTS[0], sku="SKU-000"), *PRODUCTS]  # one added at the head
        return ok({"data": rows[(page - 1) * size:page * size]})

    with http_server(respond) as url:
        spec = spec_for(url, {"type": "page", "page_size": 5})
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (outcome,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    text = str(outcome.error)
    assert "primary key (sku) = 'SKU-005' appears 2 times" in text and "a rerun reads it again" in text, text


def test_a_page_that_never_answers_in_time_names_timeout_s() -> None:
    """A probe's read timeout named our pool's class (`_WatchedHTTPPool(...)`) and advised raising
    max_retries for rate limiting, where timeout_s is the setting that fits."""
    import dataclasses
    import time

    def slow(path, query, headers):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        return ok({"data": PRODUCTS[:2]})

    with http_server(slow) as url, pytest.raises(SourceReadError) as err:
        spec = spec_for(url)
        _records(dataclasses.replace(spec, timeout_s=0.2, max_retries=1))
    text = str(err.value)
    assert "still failing after 2 attempts" in text and "Read timed out" in text, text
    assert "_WatchedHTTPPool" not in text and "raise timeout_s in the declaration" in text and "timeout_s (0.2 s)" in text


def test_a_404_after_the_empty_page_confirms_the_end() -> None:
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page = int(query["page"][0])
        return ok({"data": PRODUCTS[(page - 1) * 10:page * 10]}) if page <= 4 else (404, {}, b"{}")

    with http_server(respond) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 10}))  # pages 1-3, 4 empty, 5 answers 404
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]


# -- a probe of misbehaving APIs (decision 0078) ---------------------------------------------------

def test_a_stale_page_in_the_middle_fails_the_read_instead_of_ending_it(tmp_path: Path) -> None:
    """A page that repeats the page before (a cache, a lagging replica) ended the read, exit 0, and
    the whole read recorded every later key as deleted (400 of 1,000, under the shrink guard)."""
    served = {"stale": None}

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page, size = int(query["page"][0]), int(query["per_page"][0])
        shown = page - 1 if page == served["stale"] else page
        return ok({"data": PRODUCTS[(shown - 1) * size:shown * size]})

    with http_server(respond) as url:
        spec = spec_for(url, {"type": "page", "page_size": 3})
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
            served["stale"] = 5  # page 5 answers page 4's records
            (stale,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert first.error is None and first.rows_applied == 23
    text = str(stale.error)
    assert "answered a stale page" in text and "this one holds 3 other record(s)" in text, text
    assert "nothing of this read was landed" in text and not stale.landed and is_retryable(stale.error)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FILTER (WHERE _deleted) FROM raw_catalog.products").fetchone() == (0,)
    con.close()


@pytest.mark.parametrize("pagination", [{"type": "page", "page_size": 8}, {"type": "offset", "limit": 8},
                                        {"type": "offset", "limit": 8, "check_overlap": False}],
                         ids=["page", "offset", "offset-without-overlap"])
def test_an_api_that_ignores_the_paging_parameter_is_refused_not_read_as_one_page(pagination: dict) -> None:
    """A wrong page_param or offset_param: the API answers its first page to every request. The
    repeat ended the read after one page, status loaded, and a cursor moved past unread records."""
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS[:8]}))
    with http_server(responder) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, pagination))
    text = str(err.value)
    if pagination.get("check_overlap", True) and pagination["type"] == "offset":
        assert "the collection changed while it was paged" in text, text  # the overlap check says it first
    else:
        param = "page" if pagination["type"] == "page" else "offset"
        assert f"the API seems to ignore the parameter '{param}'" in text, text
        assert f"check pagination.{param}_param" in text, text


def test_next_links_are_resolved_against_the_page_that_gave_them() -> None:
    """A base URL with a path: an absolute-path link (/v1/products?...) was pasted after it
    (/v1/v1/...), a query-only link (?from=...) replaced the endpoint, and a Link header whose URL
    holds a comma was cut at it."""
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        start = int(query.get("from", ["0"])[0])
        more = start + 6 < len(PRODUCTS)
        forms = ["/v1/products?from={}", "?from={}", "products?from={}&fields=sku,name"]
        link = forms[(start // 6) % 3].format(start + 6)
        body = {"data": PRODUCTS[start:start + 6]}
        if start // 6 % 3 == 2:  # the third form in a Link header beside another link
            extra = {"Link": f'<{link}>; rel="next", </v1/products?from=0>; rel="first"'} if more else {}
            return ok(body, extra)
        return ok(body | {"next": link if more else None})

    responder = Recorder(respond)
    with http_server(responder) as url:
        rows = _records(spec_for(f"{url}/v1", {"type": "next_link"}, endpoint="products"))
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS]
    assert {r[0] for r in responder.requests} == {"/v1/products"}
    assert len(responder.requests) == 4  # from 0, 6 (an absolute path), 12 (a query only), 18 (a Link header)
    assert responder.requests[-1][1] == {"from": ["18"], "fields": ["sku,name"]}  # the comma kept in the link


def test_with_stop_on_short_page_a_404_after_a_full_last_page_ends_the_read() -> None:
    """Django REST framework and Flask-SQLAlchemy answer 404 past the last page: with the advised
    stop_on_short_page the read still failed whenever the count was a multiple of page_size."""
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page = int(query["page"][0])
        return ok({"data": PRODUCTS[:20][(page - 1) * 10:page * 10]}) if page <= 2 else (404, {}, b"{}")

    with http_server(respond) as url:
        rows = _records(spec_for(url, {"type": "page", "page_size": 10, "stop_on_short_page": True}))
    assert [r["sku"] for r in rows] == [p["sku"] for p in PRODUCTS[:20]]


def test_a_404_on_the_first_page_after_a_retry_says_the_endpoint_does_not_exist() -> None:
    """The past-the-end hint counted attempts: a 503 then a 404 on page 1 got it."""
    answers = iter([(503, {}, b""), (404, {}, b"{}")])
    with http_server(lambda p, q, h: next(answers)) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, {"type": "page", "page_size": 10}))
    assert "the endpoint does not exist" in str(err.value) and "past their last page" not in str(err.value)


def test_a_401_after_a_redirect_to_another_origin_says_no_credentials_were_sent() -> None:
    """An http base URL the API upgrades, or a moved host: elt sends no credentials there (as it
    should), and the 401 that follows blamed the secret."""
    elsewhere = Recorder(lambda p, q, h: (401, {}, b"{}"))
    with http_server(elsewhere) as other:
        moved = Recorder(lambda p, q, h: (301, {"Location": f"{other}/v1/products"}, b""))
        with http_server(moved) as url, pytest.raises(SourceReadError) as err:
            _records(spec_for(url))
    text = str(err.value)
    assert f"(redirected to {other}/v1/products) returned HTTP 401" in text, text
    assert "another origin" in text and "the secret itself was not tried" in text and "check the secret" not in text
    assert "authorization" not in elsewhere.requests[0][2] and TOKEN not in text


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2099 07:28:00", "Wed, 21 Oct 2099 07:28:00 -0000",
                                   "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_retry_after_as_an_http_date_with_or_without_a_zone_is_a_wait(value: str) -> None:
    """A date with -0000 or no zone raised TypeError (naive minus aware): the 429 failed the table."""
    assert rest._retry_after(value) > 1e9 * 0.5  # seconds until 2099


def test_an_untrusted_certificate_is_not_retried_and_says_how_to_trust_a_ca(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed(tmp_path)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    sleeps: list[float] = []
    responder = Recorder(lambda p, q, h: ok({"data": PRODUCTS}))
    with http_server(responder, tls=(cert, key)) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url), sleeps)
    text = str(err.value)
    assert "TLS certificate is not trusted" in text and "SSL_CERT_FILE" in text and "REQUESTS_CA_BUNDLE" in text, text
    assert sleeps == [] and responder.requests == []  # not retried: no retry changes a certificate


def test_an_error_answered_with_status_200_in_the_middle_of_a_read_shows_its_body() -> None:
    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        page = int(query["page"][0])
        if page == 2:
            return ok({"error": {"code": "RATE_LIMIT", "message": "slow down"}})
        return ok({"data": PRODUCTS[(page - 1) * 10:page * 10]})

    with http_server(respond) as url, pytest.raises(SourceReadError) as err:
        _records(spec_for(url, {"type": "page", "page_size": 10}))
    text = str(err.value)
    assert "an error the API sent with status 200" in text and "RATE_LIMIT" in text, text


def _live_api(updates: dict[str, int]):  # type: ignore[no-untyped-def]
    """Keyset paging ordered by (updated_at, sku): each page served updates one record already
    handed out, which moves it behind the position, so the read meets it again later."""
    import threading
    from datetime import datetime, timedelta

    lock = threading.Lock()
    now = datetime(2024, 2, 1)
    records = {p["sku"]: dict(p, updated_at=f"2024-01-{1 + i:02d}T00:00:00Z") for i, p in enumerate(PRODUCTS)}

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        with lock:
            after = query.get("after", [""])[0]
            ordered = sorted(records.values(), key=lambda r: (r["updated_at"], r["sku"]))
            page = [r for r in ordered if f"{r['updated_at']}|{r['sku']}" > after][:5]
            if after and updates["left"] > 0:  # a customer edits a record the read has passed
                updates["left"] -= 1
                passed = next(r for r in ordered if f"{r['updated_at']}|{r['sku']}" <= after)
                stamp = now + timedelta(minutes=updates["left"])
                records[passed["sku"]] = dict(passed, name=f"{passed['name']} (edited)",
                                              updated_at=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
            more = page and page[-1] is not ordered[-1]
            token = f"{page[-1]['updated_at']}|{page[-1]['sku']}" if more else None
            return ok({"data": page, "meta": {"next": token}})
    return respond


def test_a_record_updated_while_paged_by_cursor_lands_once_in_its_newer_version(tmp_path: Path) -> None:
    """The usual incremental export (keyset paging by updated_at) hands out a record updated during
    the read twice: every run failed the key check ('appears 2 times', fix the primary key)."""
    updates = {"left": 2}
    with http_server(_live_api(updates)) as url:
        spec = spec_for(url, {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
                        cursor_field="updated_at", lookback="0s", updated_since_param="since")
        landing = Landing.local(tmp_path / "landing")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert out.error is None, out.error
    assert updates["left"] == 0 and out.rows_applied == len(PRODUCTS)
    [manifest] = landing.batches("catalog", "products")
    assert manifest.origin["superseded_in_read"]["rows"] == 2 and manifest.rows == len(PRODUCTS)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    edited = con.execute("SELECT count(*), count(DISTINCT sku) FROM raw_catalog.products WHERE name LIKE '%(edited)'").fetchone()
    assert edited == (2, 2)  # the newer versions, and only they, for the two records read twice
    assert con.execute("SELECT count(*), count(DISTINCT sku) FROM raw_catalog.products").fetchone() == (23, 23)
    con.close()


def test_a_key_repeated_with_the_same_cursor_and_other_values_is_still_refused(tmp_path: Path) -> None:
    """Two different records under one key at the same cursor value are not versions of one record:
    a primary key that is not one, named as before."""
    rows = [*PRODUCTS[:5], dict(PRODUCTS[2], name="another product")]
    with http_server(lambda p, q, h: ok({"data": rows if not q.get("after") else [], "meta": {"next": None}})) as url:
        spec = spec_for(url, {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
                        cursor_field="updated_at", lookback="0s", updated_since_param="since")
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (out,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    text = str(out.error)
    assert isinstance(out.error, ContractError) and "primary key (sku) = 'SKU-003' appears 2 times" in text, text
    assert "a record updated while it was paged comes back later" in text and not out.landed
