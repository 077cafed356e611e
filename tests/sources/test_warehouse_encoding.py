"""A PostgreSQL warehouse whose database is not UTF-8 stores the loader's text right, or refuses
what it cannot hold, with a hint (an on-call probe found it garbled)."""

from __future__ import annotations

from pathlib import Path

from sources.config import parse_source
from sources.landing.store import Landing
from sources.pipeline import TableOutcome, apply_pending
from tests.sources.test_set_aside import land_batch


def test_a_latin1_warehouse_stores_text_right_or_refuses_it(tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    """The loader sends UTF-8 and said nothing of it: a LATIN1 database took the bytes as LATIN1
    and stored 'Zoë Müller' as 'ZoÃ« MÃ¼ller', and an emoji as four characters, exit 0 (an on-call
    probe). Now the session says UTF8: what LATIN1 holds is stored right, the rest fails its batch."""
    import psycopg2

    from sources.connections import PostgresSettings
    from sources.load.postgres_raw import PostgresRaw

    admin = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname=pg_db.dbname)
    admin.autocommit = True
    name = f"{pg_db.dbname[:20]}_l1"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        settings = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, name)
        spec = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
            "customers": {"file": "c.csv", "primary_key": "id", "columns": {"id": "string", "name": "string"}}}})
        landing = Landing.local(tmp_path / "landing")

        def apply() -> TableOutcome:
            outcome = TableOutcome("customers")
            with PostgresRaw(settings) as raw:
                try:
                    apply_pending(spec, spec.tables["customers"], landing, raw, outcome)
                except Exception as exc:  # noqa: BLE001 - what ingest records per table
                    outcome.error = exc
            return outcome

        columns = {"id": "string", "name": "string"}
        land_batch(landing, "shop", "customers", [{"id": "c1", "name": "Zoë Müller"}], columns, key="id")
        assert apply().error is None
        con = settings.connect()
        try:
            with con.cursor() as cur:
                cur.execute("SELECT name, length(name) FROM raw_shop.customers")
                assert cur.fetchall() == [("Zoë Müller", 10)]
        finally:
            con.close()
        land_batch(landing, "shop", "customers", [{"id": "c2", "name": "Donut \U0001F369 Fan"}], columns, key="id")
        text = str(apply().error)
        assert 'has no equivalent in encoding "LATIN1"' in text and "re-create it with ENCODING 'UTF8'" in text, text
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
