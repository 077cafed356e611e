"""A landed batch that cannot be applied blocks its table until it is set aside with
`elt set-aside`; then later batches apply, replays of landing skip it, `elt status` and the
report show it, and `--undo` brings it back. On both raw stores, with the real `elt` command."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pytest
import yaml

from sources.config import load_source
from sources.errors import RawLoadError
from sources.landing.manifest import Manifest
from sources.landing.store import Landing
from sources.pipeline import ingest
from tests.conftest import BIN, copy_project, project_env, run

DECLARATION = {
    "name": "shop", "kind": "files", "owner": "shop-team", "format": "csv",
    "tables": {"orders": {"pattern": "orders-*.csv", "primary_key": "id", "schema_policy": "evolve_cast",
                          "columns": {"id": "string", "name": "string", "amount": "integer"}}},
}


class Stack:
    """A copied project, a file source, landing and one raw store (DuckDB file or PostgreSQL database)."""

    def __init__(self, tmp_path: Path, gateway: str, env: dict[str, str]) -> None:
        self.root = copy_project(tmp_path / "project")
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir()
        self.declaration = tmp_path / "shop.yaml"
        self.declaration.write_text(yaml.safe_dump({**DECLARATION, "path": str(self.inbox)}))
        self.spec = load_source(self.declaration)
        self.landing = Landing.local(tmp_path / "landing")
        self.gateway = gateway
        self.warehouse = tmp_path / "warehouse.duckdb"
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        self.env = project_env(self.root, ELT_GATEWAY=gateway, ELT_DUCKDB_PATH=str(self.warehouse),
                               ELT_LANDING_URL=str(tmp_path / "landing"), TMPDIR=str(tmp), **env)
        self.pg = {k[len("ELT_PG_"):].lower(): v for k, v in env.items() if v}

    def raw(self):  # type: ignore[no-untyped-def]
        if self.gateway == "duckdb":
            from sources.load.duckdb_raw import DuckDBRaw

            return DuckDBRaw(self.warehouse)
        from sources.connections import PostgresSettings
        from sources.load.postgres_raw import PostgresRaw

        return PostgresRaw(PostgresSettings.from_env("ELT_PG_"))

    def load(self, *, extract: bool = True):  # type: ignore[no-untyped-def]
        with self.raw() as raw:
            [outcome] = ingest(self.spec, landing=self.landing, raw=raw, extract=extract,
                               lock_dir=Path(self.env["TMPDIR"]) / "elt-locks")
        return outcome

    def query(self, sql: str) -> list[tuple]:
        if self.gateway == "duckdb":
            con = duckdb.connect(str(self.warehouse), read_only=True)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        con = psycopg2.connect(host=self.pg["host"], port=self.pg["port"], user=self.pg["user"], dbname=self.pg["database"])
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            con.close()

    def elt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "elt"), *args], cwd=self.root, env=self.env, timeout=120, check=False)

    def ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM raw_shop.orders ORDER BY id")]


def land_batch(landing: Landing, source: str, table: str, rows: list[dict], columns: dict[str, str], *,
               key: str, **manifest: object) -> str:
    """Land a batch as an extract would (Parquet, checksum, manifest last), bypassing the contract
    (which may refuse such values before landing): the batches here are ones raw cannot apply."""
    from sources.types import parse_type

    schema = pa.schema([(n, parse_type(t).arrow) for n, t in columns.items()])
    writer = landing.open_batch(source, table, schema, datetime.now(UTC))
    stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    rows = [{k: datetime.fromisoformat(v) if k in stamps else v for k, v in row.items()} for row in rows]
    writer.write(pa.RecordBatch.from_pylist(rows, schema=schema))
    described = [{"name": n, "type": t, "arrow": str(parse_type(t).arrow)} for n, t in columns.items()]
    return writer.commit(described, [key], manifest.pop("origin", {}), **manifest).batch_id  # type: ignore[arg-type]


def land_poison(stack: Stack) -> str:
    """DuckDB: an amount that does not cast to raw's BIGINT (a batch landed before `amount` was
    typed, applied under `evolve_cast`). PostgreSQL: a NUL byte in text."""
    if stack.gateway == "duckdb":
        row, columns = {"id": "o9", "name": "Ann", "amount": "12 apples"}, {"id": "string", "name": "string", "amount": "string"}
    else:
        row, columns = {"id": "o9", "name": "A\x00nn", "amount": 12}, DECLARATION["tables"]["orders"]["columns"]
    return land_batch(stack.landing, "shop", "orders", [row], columns, key="id",
                      origin={"path": str(stack.inbox / "orders-poison.csv")})


@pytest.fixture(params=["duckdb", "postgres"])
def stack(request, tmp_path: Path) -> Stack:  # type: ignore[no-untyped-def]
    if request.param == "duckdb":
        return Stack(tmp_path, "duckdb", {})
    pg = request.getfixturevalue("pg_db")
    env = pg.env("ELT_PG")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Stack(tmp_path, "postgres", env)


def test_a_set_aside_batch_unblocks_its_table_and_a_replay_honours_it(stack: Stack, tmp_path: Path) -> None:
    (stack.inbox / "orders-001.csv").write_text("id,name,amount\no1,Ann,10\no2,Bob,20\n")
    assert stack.load().applied
    poison = land_poison(stack)
    (stack.inbox / "orders-002.csv").write_text("id,name,amount\no3,Cyd,30\n")

    # blocked: the poison batch is applied first on every run and fails again; nothing later lands
    for _ in range(2):
        outcome = stack.load()
        assert isinstance(outcome.error, RawLoadError) and outcome.error.batch_id == poison
        assert not outcome.landed and stack.ids() == ["o1", "o2"]
    message = str(outcome.error)
    assert ("0x00" in message) if stack.gateway == "postgres" else ("12 apples" in message)
    assert f"elt set-aside shop orders {poison} --reason" in message  # the next: names the command

    # refused without a reason, for an applied batch, for an unknown batch (naming the pending one)
    if stack.gateway == "duckdb":
        refusals(stack, poison)

    done = stack.elt("set-aside", str(stack.declaration), "orders", poison).returncode == 2
    applied = stack.query("SELECT batch_id FROM elt_meta.loaded_batches")[0][0]
    refused = stack.elt("set-aside", str(stack.declaration), "orders", applied, "--reason", "x")
    assert refused.returncode == 1 and "already applied to raw" in refused.stderr
    unknown = stack.elt("set-aside", str(stack.declaration), "orders", "20990101T000000000000Z-00000000", "--reason", "x")
    assert unknown.returncode == 1 and poison in unknown.stderr

    done = stack.elt("set-aside", str(stack.declaration), "orders", poison, "--reason", "bad value in amount/name",
                     "--by", "oncall-ann")
    assert done.returncode == 0, done.stderr
    assert f"set aside shop.orders batch {poison}: 1 row(s), by oncall-ann" in done.stdout
    assert "MISSING FROM RAW" in done.stdout and "orders-poison.csv" in done.stdout
    assert "a file of the pattern is landed once" in done.stdout and "--force" not in done.stdout
    batch_dir = Path(stack.landing.batch_dir("shop", "orders", poison))
    assert sorted(p.name for p in batch_dir.iterdir()) == ["_manifest.json", "part-00000.parquet"]  # untouched

    # the table continues: the next file lands and applies, the set-aside batch never does
    outcome = stack.load()
    assert outcome.error is None, outcome.error
    assert outcome.set_aside == [poison] and len(outcome.applied) == 1
    assert stack.ids() == ["o1", "o2", "o3"]
    (stack.inbox / "orders-003.csv").write_text("id,name,amount\no4,Dan,40\n")
    assert stack.load().rows_applied == 1 and stack.ids() == ["o1", "o2", "o3", "o4"]
    assert stack.query(f"SELECT count(*) FROM raw_shop.orders WHERE _batch_id = '{poison}'") == [(0,)]

    # status and the report show who, when and why
    status = stack.elt("status")
    assert status.returncode == 0, status.stderr
    assert f"shop.orders {poison} (1 rows) set aside by oncall-ann" in status.stdout
    assert "bad value in amount/name" in status.stdout
    report = stack.elt("report", "--out", str(tmp_path / "status.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "status.html").read_text()
    section = page[page.index('<section id="set-aside">'):]
    assert poison in section and "oncall-ann" in section and "bad value in amount/name" in section

    # a replay of landing into an empty warehouse skips it too, and records it there
    if stack.gateway == "duckdb":
        stack.warehouse.rename(tmp_path / "old.duckdb")
    else:
        stack.query("DROP SCHEMA raw_shop CASCADE; DROP SCHEMA elt_meta CASCADE; SELECT 1")
    outcome = stack.load(extract=False)
    assert outcome.error is None and outcome.set_aside == [poison]
    assert stack.ids() == ["o1", "o2", "o3", "o4"]
    assert stack.query("SELECT batch_id, set_aside_by, reason FROM elt_meta.set_aside_batches") == [
        (poison, "oncall-ann", "bad value in amount/name")]

    # --undo brings it back: the next load applies it first and fails the same way
    undo = stack.elt("set-aside", str(stack.declaration), "orders", poison, "--undo")
    assert undo.returncode == 0 and "brought back" in undo.stdout, undo.stderr
    assert stack.query("SELECT count(*) FROM elt_meta.set_aside_batches") == [(0,)]
    assert not (batch_dir.parent / ".set_aside").exists() or not any((batch_dir.parent / ".set_aside").iterdir())
    outcome = stack.load(extract=False)
    assert isinstance(outcome.error, RawLoadError) and outcome.error.batch_id == poison
    status = stack.elt("status")
    assert "not checked" not in status.stdout and poison not in status.stdout


def refusals(stack: Stack, poison: str) -> None:
    missing_reason = stack.elt("set-aside", str(stack.declaration), "orders", poison)
    assert missing_reason.returncode == 2 and "--reason is required" in missing_reason.stderr
    applied = stack.query("SELECT batch_id FROM elt_meta.loaded_batches")[0][0]
    refused = stack.elt("set-aside", str(stack.declaration), "orders", applied, "--reason", "x")
    assert refused.returncode == 1 and "already applied to raw" in refused.stderr and "next:" in refused.stderr
    unknown = stack.elt("set-aside", str(stack.declaration), "orders", "20990101T000000000000Z-00000000", "--reason", "x")
    assert unknown.returncode == 1 and f"batches of this table that raw lacks: {poison}" in unknown.stderr


PRODUCTS = {"sku": "string", "name": "string", "price": "integer", "updated_at": "timestamptz"}
UNTYPED = {**PRODUCTS, "price": "string"}  # a batch whose price raw cannot cast (applied under evolve_cast)


def api_spec(url: str, **table: object):  # type: ignore[no-untyped-def]
    from sources.config import parse_source

    return parse_source({
        "name": "catalog", "kind": "rest_api", "owner": "shop-team", "base_url": url, "max_retries": 0, "timeout_s": 5,
        "tables": {"products": {"endpoint": "/v1/products", "records_path": "data", "primary_key": "sku",
                                "pagination": {"type": "none"}, "columns": PRODUCTS, "schema_policy": "evolve_cast",
                                **table}},
    })


def product(sku: str, price: object, day: int) -> dict:
    return {"sku": sku, "name": f"product {sku}", "price": price, "updated_at": f"2024-01-{day:02d}T00:00:00+00:00"}


def test_a_set_aside_incremental_batch_keeps_the_cursor_so_its_rows_are_read_again(tmp_path: Path) -> None:
    """The cursor stays where raw's last applied batch left it: after the source is fixed, the
    next load re-reads the rows the set-aside batch held, and nothing is missing from raw."""
    import json

    from sources.load.duckdb_raw import DuckDBRaw
    from sources.load.set_aside import set_aside
    from tests.servers import http_server

    served, since = [product("p1", 100, 1), product("p2", 200, 2)], []

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        since.append(query.get("since", [None])[0])
        body = {"data": [r for r in served if r["updated_at"] >= (since[-1] or "")]}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    landing = Landing.local(tmp_path / "landing")
    with http_server(respond) as url, DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        spec = api_spec(url, cursor_field="updated_at", updated_since_param="since", lookback="1h")
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert raw.cursor("catalog", "products") == "2024-01-02T00:00:00+00:00"
        poison = land_batch(landing, "catalog", "products", [product("p3", "3 apples", 3)], UNTYPED, key="sku",
                            cursor={"field": "updated_at", "from": "2024-01-02T00:00:00+00:00",
                                    "to": "2024-01-03T00:00:00+00:00"})
        (blocked,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert blocked.error is not None and blocked.error.batch_id == poison

        _, notes = set_aside(spec, "products", poison, landing=landing, raw=raw, reason="price '3 apples'", by="ann")
        assert any("cursor updated_at stays at 2024-01-02T00:00:00+00:00" in n for n in notes)
        assert raw.cursor("catalog", "products") == "2024-01-02T00:00:00+00:00"

        served.append(product("p3", 300, 3))  # fixed at the source
        (fixed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert fixed.error is None and fixed.set_aside == [poison] and fixed.rows_applied == 1
        assert since[-1] == "2024-01-01T23:00:00+00:00"  # read again from the unmoved cursor (minus the lookback)
        assert raw.cursor("catalog", "products") == "2024-01-03T00:00:00+00:00"
        assert raw.con.execute("SELECT sku, price FROM raw_catalog.products ORDER BY sku").fetchall() == [
            ("p1", 100), ("p2", 200), ("p3", 300)]


def test_the_next_snapshot_after_a_set_aside_one_is_compared_with_raw(tmp_path: Path) -> None:
    """A snapshot batch set aside never reached raw: the next snapshot is compared with what raw
    holds (an unchanged one is not landed, a deletion becomes a tombstone)."""
    import json

    from sources.load.duckdb_raw import DuckDBRaw
    from sources.load.set_aside import set_aside
    from tests.servers import http_server

    served = {"rows": [product("a", 1, 1), product("b", 2, 1)]}

    def respond(path, query, headers):  # type: ignore[no-untyped-def]
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": served["rows"]}).encode()

    landing = Landing.local(tmp_path / "landing")
    with http_server(respond) as url, DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        spec = api_spec(url)
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        poison = land_batch(landing, "catalog", "products", [product("a", "one", 2), product("c", "3", 2)], UNTYPED,
                            key="sku", snapshot=True)
        (blocked,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert blocked.error is not None and blocked.error.batch_id == poison
        set_aside(spec, "products", poison, landing=landing, raw=raw, reason="price 'one'")

        (same,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)  # what raw holds: nothing to land
        assert same.error is None and same.landed == [] and same.status == "unchanged"
        served["rows"] = [product("a", 1, 1), product("c", 3, 2)]  # b deleted, c new
        (changed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert changed.error is None and changed.rows_applied == 2  # c, and b's tombstone; a unchanged
        assert raw.con.execute("SELECT sku, price, _deleted FROM raw_catalog.products WHERE _batch_id = ? ORDER BY sku",
                               [changed.applied[0]]).fetchall() == [("b", None, True), ("c", 3, False)]


def test_on_spark_status_and_the_report_list_set_aside_batches_from_landing(tmp_path: Path) -> None:
    """On the Spark gateway, status reads set-aside batches from landing's records (no JVM started),
    with who, when and why; an undone one disappears."""
    import io

    from orchestrator.observe.status import print_set_aside, set_aside_batches
    from orchestrator.settings import Settings
    from sources.landing.store import SetAside

    landing = Landing.local(tmp_path / "landing")
    (tmp_path / "landing" / "shop" / "orders" / "20260101T000000000000Z-00000001").mkdir(parents=True)
    first = SetAside("shop", "orders", "20261201T060000000000Z-0000000a", 3, "oncall-ann", "2026-12-01T06:00:00+00:00", "NUL byte")
    later = SetAside("app", "items", "20261201T070000000000Z-0000000b", 1, "oncall-bob", "2026-12-01T07:30:00+00:00", "bad type")
    landing.write_set_aside(later)
    landing.write_set_aside(first)
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "absent.duckdb", landing_root=tmp_path / "landing",
                        data_dir=tmp_path / "data", gateway="spark")
    assert set_aside_batches(settings) == [
        ("shop", "orders", first.batch_id, 3, "oncall-ann", datetime(2026, 12, 1, 6, 0), "NUL byte"),
        ("app", "items", later.batch_id, 1, "oncall-bob", datetime(2026, 12, 1, 7, 30), "bad type"),
    ]
    out = io.StringIO()
    print_set_aside(settings, out)
    assert f"shop.orders {first.batch_id} (3 rows) set aside by oncall-ann at 2026-12-01 06:00:00 UTC: NUL byte" in out.getvalue()
    landing.remove_set_aside("shop", "orders", first.batch_id)
    assert [r[2] for r in set_aside_batches(settings) or []] == [later.batch_id]


def test_setting_aside_a_single_files_batch_says_how_to_land_the_sound_file_again() -> None:
    """A damaged landed copy of a sound file: waiting for the source owner to deliver a
    "corrected" file would be the wrong advice; --force lands the same file again."""

    from sources.config import load_source
    from sources.load.set_aside import consequences

    manifest = Manifest("b1", "jaffle_shop", "orders", "2026-12-01T00:00:00+00:00", 4, [], ["id"], [],
                        origin={"path": "/data/day 2/raw_orders.csv"}, snapshot=True)
    text = "\n".join(consequences(load_source("jaffle_shop"), manifest, None))
    # the folder it was read from: without --path the load reads the declaration's folder instead
    assert "`elt load jaffle_shop --table orders --force --path '/data/day 2'`" in text, text
    # a snapshot adds to raw only what differs (it said all 2,315,083 rows were missing for 1,633 changes)
    assert "those of the 4 row(s) of this snapshot that differ from raw" in text, text
    # a forced re-read lands every row it read but would have added only those that differ
    reread = dataclasses.replace(manifest, snapshot=False, changes_only=True)
    text = "\n".join(consequences(load_source("jaffle_shop"), reread, None))
    assert "those of the 4 row(s) of this batch that differ from raw are not in raw" in text, text
    increment = dataclasses.replace(manifest, snapshot=False)
    assert "the 4 row(s) of this batch are not in raw" in "\n".join(consequences(load_source("jaffle_shop"), increment, None))
