"""The PostgreSQL warehouse role a DBA hands out: each missing privilege is named with the statement
that grants it, and that statement is enough.

A role with CONNECT only (a database the DBA owns) got a traceback from `elt load` and
`elt transform` (`InsufficientPrivilege: permission denied for database`); a raw schema the DBA
created got `appending ... failed` with a hint to set the batch aside, which is wrong: the batch is
fine, the role is not.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import BIN, copy_project, project_env, run

pytestmark = pytest.mark.slow


def test_the_warehouse_role_is_told_what_to_grant_and_that_is_enough(pg_db, small_jaffle: Path,
                                                                     tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    role = f"etl_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_db.dsn)  # the superuser owns the database
    admin.autocommit = True
    admin.cursor().execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        project = copy_project(tmp_path / "project")
        env = project_env(project, **{**pg_db.env("ELT_PG"), "ELT_PG_USER": role}, ELT_GATEWAY="postgres",
                          ELT_LANDING_ROOT=str(tmp_path / "landing"))
        load = [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)]

        # CONNECT only: nothing can be created
        for command in (load, [str(BIN / "elt"), "transform"]):
            proc = run(command, cwd=project, env=env, check=False)
            assert proc.returncode == 2, proc.stderr
            assert "Traceback" not in proc.stderr, proc.stderr
            assert (f"error: the PostgreSQL role {role} lacks a privilege in database {pg_db.dbname}: "
                    f"permission denied for database {pg_db.dbname}") in proc.stderr, proc.stderr
            assert f'next: as the database\'s owner or a superuser, run `GRANT CREATE ON DATABASE "{pg_db.dbname}" TO "{role}";`' \
                in proc.stderr, proc.stderr

        # the grant named, and a raw schema the DBA made beforehand, owned by the DBA
        admin.cursor().execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(pg_db.dbname), sql.Identifier(role)))
        admin.cursor().execute("CREATE SCHEMA raw_jaffle_shop")
        proc = run(load, cwd=project, env=env, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        report = proc.stdout + proc.stderr
        assert "permission denied for schema raw_jaffle_shop" in report, report
        assert f'run `ALTER SCHEMA "raw_jaffle_shop" OWNER TO "{role}";`' in report, report
        assert "set-aside" not in report, report  # the batches are fine

        # the statement named: the landed batches apply, once, and the models build
        admin.cursor().execute(sql.SQL("ALTER SCHEMA raw_jaffle_shop OWNER TO {}").format(sql.Identifier(role)))
        run(load, cwd=project, env=env)
        run([str(BIN / "elt"), "transform"], cwd=project, env=env)
        with admin.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT order_id) FROM marts.orders")
            orders, distinct = cur.fetchone()
            cur.execute("SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = 'orders'")
            batches = cur.fetchone()[0]
        assert orders == distinct == small_jaffle.joinpath("raw_orders.csv").read_text().count("\n") - 1
        assert batches == 1
    finally:
        with admin.cursor() as cur:  # the role owns what it made: drop that with it
            cur.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


def test_a_read_only_warehouse_is_named_as_such(pg_db, small_jaffle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ELT_PG_HOST pointed at a standby (simulated: the database defaults to read-only transactions)."""
    with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(pg_db.dbname)))
    con.close()
    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_db.env("ELT_PG"), ELT_GATEWAY="postgres", ELT_LANDING_ROOT=str(tmp_path / "landing"))
    for command in (["load", "jaffle_shop", "--path", str(small_jaffle)], ["transform"]):
        proc = run([str(BIN / "elt"), *command], cwd=project, env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"/{pg_db.dbname} accepts no writes: cannot execute CREATE SCHEMA in a read-only transaction" in proc.stderr, \
            proc.stderr
        assert "next: ELT_PG_HOST must name the primary server, not a standby or read replica" in proc.stderr, proc.stderr
    # the statement the message gives, from another database, makes it writable: the load goes through
    with psycopg2.connect(pg_db.dsn.replace(f"dbname={pg_db.dbname}", "dbname=postgres")) as con, con.cursor() as cur:
        con.autocommit = True
        cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(pg_db.dbname)))
    con.close()
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)


def test_a_statement_timeout_of_the_role_is_named_with_how_to_raise_it(pg_db, small_jaffle: Path,
                                                                       tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A DBA's statement_timeout on the warehouse role (1 ms here: some statement of the load exceeds
    it, whichever) is a limit to raise, not a batch to set aside; PGOPTIONS raises it for elt alone."""
    import shutil

    folder = tmp_path / "files"
    shutil.copytree(small_jaffle, folder)
    with (folder / "raw_orders.csv").open("w") as orders:  # enough rows that the raw insert takes well over 1 ms
        orders.write("id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n")
        orders.writelines(f"o{n},c1,2018-09-01T12:00:00,s1,0,0,0\n" for n in range(50_000))
    role = f"etl_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_db.dsn)
    admin.autocommit = True
    admin.cursor().execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    admin.cursor().execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(pg_db.dbname),
                                                                              sql.Identifier(role)))
    admin.cursor().execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '1ms'").format(sql.Identifier(role)))
    try:
        project = copy_project(tmp_path / "project")
        env = project_env(project, **{**pg_db.env("ELT_PG"), "ELT_PG_USER": role}, ELT_GATEWAY="postgres",
                          ELT_LANDING_ROOT=str(tmp_path / "landing"))
        load = [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(folder)]
        proc = run(load, cwd=project, env=env, check=False)
        report = proc.stdout + proc.stderr
        assert proc.returncode == 1, report
        assert "Traceback" not in report and "set-aside" not in report, report
        assert "canceling statement due to statement timeout" in report, report
        assert f"Raise it for the pipeline's role (`ALTER ROLE \"{role}\" SET statement_timeout = '2h';`)" in report, report

        run(load, cwd=project, env={**env, "PGOPTIONS": "-c statement_timeout=0"})  # the message's other way
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM raw_jaffle_shop.orders")
            assert cur.fetchone()[0] == 50_000
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()
