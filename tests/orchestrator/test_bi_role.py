"""`elt bi-role` with the warehouse user the README recommends (a database owner with CREATEROLE,
not a superuser), a role a DBA over-granted, and a `marts` schema another user owns (a probe,
decision 0080). The superuser path is tests/production/test_postgres_gateway.py."""

from __future__ import annotations

import uuid

import psycopg2
import pytest
from psycopg2 import sql

from orchestrator.integrations.bi import ensure_bi_role
from sources.connections import PostgresSettings
from sources.errors import ConfigError


@pytest.fixture
def owner_db(pg_db):  # type: ignore[no-untyped-def]
    """A database owned by a non-superuser warehouse user with CREATEROLE; the admin connection."""
    suffix = uuid.uuid4().hex[:6]
    owner, bi = f"elt_{suffix}", f"bi_{suffix}"
    admin = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname=pg_db.dbname)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner)))
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(pg_db.dbname), sql.Identifier(owner)))
        cur.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
    try:
        yield PostgresSettings(pg_db.host, pg_db.port, owner, pg_db.dbname), bi, admin
    finally:
        with admin.cursor() as cur:
            for role in (bi, owner):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
                if cur.fetchone():
                    cur.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(pg_db.dbname),
                                                                         sql.Identifier(pg_db.user)))
        admin.close()
        admin = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            for role in (bi, owner):
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


def _as(settings: PostgresSettings, role: str, query: str) -> list[tuple[object, ...]]:
    con = psycopg2.connect(host=settings.host, port=settings.port, user=role, dbname=settings.dbname)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")  # a refused write proves a missing privilege
            cur.execute(query)
            return cur.fetchall() if cur.description else []
    finally:
        con.close()


def test_a_createrole_owner_reruns_bi_role_and_it_converges_to_read_marts_only(owner_db) -> None:  # type: ignore[no-untyped-def]
    settings, bi, admin = owner_db
    with psycopg2.connect(host=settings.host, port=settings.port, user=settings.user, dbname=settings.dbname) as con, \
            con.cursor() as cur:
        cur.execute("CREATE SCHEMA marts; CREATE VIEW marts.customers AS SELECT 1 AS customer_id")
        cur.execute("CREATE SCHEMA raw_shop; CREATE TABLE raw_shop.orders (id int); INSERT INTO raw_shop.orders VALUES (1)")
    con.close()
    first = ensure_bi_role(settings, bi, "pw-first")
    assert f"created role {bi}" in first
    # a DBA over-grants the role; the documented rerun must take it back (it printed "revoked everything")
    with admin.cursor() as cur:
        cur.execute(sql.SQL("GRANT pg_read_all_data, pg_write_all_data TO {}").format(sql.Identifier(bi)))
        cur.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(settings.dbname),
                                                                        sql.Identifier(bi)))
    again = ensure_bi_role(settings, bi, None)  # failed before: ALTER ROLE ... NOSUPERUSER needs a superuser
    assert f"updated role {bi}" in again and not any(line.startswith("WARNING") for line in again), again
    assert any("revoked membership in pg_read_all_data, pg_write_all_data" in line for line in again), again
    assert _as(settings, bi, "SELECT customer_id FROM marts.customers") == [(1,)]
    # a BI session left in an open transaction cannot hold a deploy's view for hours
    assert _as(settings, bi, "SHOW idle_in_transaction_session_timeout") == [("15min",)]
    for forbidden in ("SELECT * FROM raw_shop.orders", "CREATE SCHEMA bi_scratch", "DELETE FROM raw_shop.orders"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            _as(settings, bi, forbidden)


def test_bi_role_refuses_to_report_grants_postgresql_did_not_make(owner_db) -> None:  # type: ignore[no-untyped-def]
    """A DBA made schema marts (owned by the superuser): GRANT USAGE only warned, and the command said
    "granted SELECT on 1 relation(s)" while the BI user got "permission denied"."""
    settings, bi, admin = owner_db
    with admin.cursor() as cur:
        cur.execute("CREATE SCHEMA marts")
        cur.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA marts TO {}").format(sql.Identifier(settings.user)))
    with psycopg2.connect(host=settings.host, port=settings.port, user=settings.user, dbname=settings.dbname) as con, \
            con.cursor() as cur:
        cur.execute("CREATE VIEW marts.customers AS SELECT 1 AS customer_id")  # the warehouse user's view
    con.close()
    with pytest.raises(ConfigError) as err:
        ensure_bi_role(settings, bi, None)
    text = f"{err.value} {err.value.hint}"
    assert f"{bi} cannot read schema marts (owned by {admin.info.user})" in text, text
    assert f'ALTER SCHEMA "marts" OWNER TO "{settings.user}";' in text, text


def test_bi_role_without_createrole_says_what_to_grant(owner_db) -> None:  # type: ignore[no-untyped-def]
    settings, bi, admin = owner_db
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(settings.user)))
    with pytest.raises(ConfigError) as err:
        ensure_bi_role(settings, bi, None)
    text = f"{err.value} {err.value.hint}"
    assert f"the warehouse user {settings.user} may not create the role {bi}" in text, text
    assert f'ALTER ROLE "{settings.user}" CREATEROLE;' in text and "GRANT CREATE ON DATABASE" not in text, text
