"""``elt bi-role``: the read-only role BI tools log in with (PostgreSQL gateway).

What the role can do, and why that holds after every deploy:

* ``CONNECT`` on the warehouse database, ``USAGE`` on schema ``marts`` and ``SELECT`` on every
  view in it. ``marts`` is SQLMesh's virtual layer for prod: stable names (``marts.customers``),
  re-pointed at new physical tables by each deploy. PostgreSQL checks the view owner's rights on
  the physical tables behind a view, so the role needs (and gets) nothing in ``sqlmesh__*``.
* ``ALTER DEFAULT PRIVILEGES`` for the warehouse user in ``marts``: a view SQLMesh creates later
  (a new mart, or a view re-created by a deploy) is readable without rerunning this command.
* Nothing anywhere else: every privilege the role may hold on any other schema and its tables is
  revoked (raw, staging, intermediate, dev environments, SQLMesh state and physical schemas).
* ``default_transaction_read_only`` on, no superuser/createdb/createrole: writes fail twice over.
* What every role inherits from ``PUBLIC`` is closed too: ``CREATE`` on schema ``public`` (still
  granted to PUBLIC by PostgreSQL 14 and older, and by databases upgraded from them) and
  ``TEMPORARY`` on the warehouse database. The warehouse user keeps both by an explicit grant. If
  the warehouse user may not revoke them (it does not own the database or the schema), the command
  says so and prints the statements for a database owner to run.

Idempotent: run it after the first deploy and whenever you like; it converges to the above.
Password from ``ELT_BI_PASSWORD`` or ``ELT_BI_PASSWORD_FILE``; role name ``ELT_BI_ROLE``
(default ``bi_reader``). Column and view comments are written by SQLMesh (register_comments) and
are readable by the role through the standard catalogs.
"""

from __future__ import annotations

import os

from psycopg2 import errors, sql

from sources.connections import PostgresSettings, secret_from_env
from sources.logs import get_logger

log = get_logger("orchestrator.integrations.bi")
SERVED_SCHEMA = "marts"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
BI_IDLE_IN_TRANSACTION = "15min"  # how long a BI session may sit in an open transaction


def bi_role_settings() -> tuple[str, str | None]:
    return os.environ.get("ELT_BI_ROLE") or "bi_reader", secret_from_env("ELT_BI_PASSWORD")


def ensure_bi_role(warehouse: PostgresSettings, role: str, password: str | None, schema: str = SERVED_SCHEMA) -> list[str]:
    """Create or update ``role`` so it reads ``schema`` and nothing else; returns what it did."""
    ident = sql.Identifier(role)
    done: list[str] = []
    con = warehouse.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            owner, database = cur.fetchone()
            if role == owner:
                from sources.errors import ConfigError

                raise ConfigError(f"ELT_BI_ROLE is {role!r}, the warehouse user itself", hint="choose another role name")
            done.append(_create_or_update_role(cur, role, owner))
            if password:
                # sent as the hash the server stores (SCRAM or md5, as its password_encryption says), never
                # as clear text: a server logging DDL (log_statement = ddl or all) keeps the statement
                from psycopg2.extensions import encrypt_password

                verifier = encrypt_password(password, role, con)
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
                done.append("set its password (from ELT_BI_PASSWORD)")
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
            # a BI tool in manual-commit mode left a transaction open on a mart for hours, which held a
            # deploy's re-pointing of that mart's view, the marts half on the new version (a probe)
            cur.execute(sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = {}").format(
                ident, sql.Literal(BI_IDLE_IN_TRANSACTION)))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident))
            cur.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(sql.Identifier(database), ident))
            cur.execute("SELECT has_database_privilege(%s, %s, 'CREATE')", [role, database])
            if cur.fetchone()[0]:  # granted by another user (or to PUBLIC): not this user's to revoke
                done.append(f"WARNING: {role} can still create schemas in database {database}; its owner must run: "
                            f'REVOKE CREATE ON DATABASE "{database}" FROM "{role}", PUBLIC')
            done += _drop_memberships(cur, role)

            cur.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg_temp%%' "
                "AND nspname NOT LIKE 'pg_toast_temp%%' AND nspname <> %s ORDER BY 1",
                [list(SYSTEM_SCHEMAS), schema],
            )
            others = [r[0] for r in cur.fetchall()]
            for other in others:
                s = sql.Identifier(other)
                cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, ident))
                cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, ident))
            done.append(f"revoked everything on {len(others)} other schema(s)")

            s = sql.Identifier(schema)
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            cur.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(s, ident))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident))
            try:
                cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, ident))
                cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, ident))
            except errors.InsufficientPrivilege as exc:  # a relation of the schema another user owns
                from sources.errors import ConfigError

                raise ConfigError(f"{owner} may not grant on every relation of {schema}: "
                                  f"{str(exc).strip().splitlines()[0]} (another user owns it)",
                                  hint=f"as a superuser or that relation's owner, run `ALTER VIEW \"{schema}\".<name> "
                                       f"OWNER TO \"{owner}\";` (views elt creates are the warehouse user's), then "
                                       "rerun `elt bi-role`; nothing was changed") from None
            cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                sql.Identifier(owner), s, ident))
            done.append(_check_grants(cur, role, owner, schema))
            done += _close_public(cur, role, owner, database)
    finally:
        con.close()
    log.info("bi role ensured", extra={"fields": {"role": role, "schema": schema}})
    return done


def _create_or_update_role(cur, role: str, owner: str) -> str:  # type: ignore[no-untyped-def]
    """Create ``role`` (LOGIN, nothing more), or bring an existing one there by changing only the
    attributes that differ: ``ALTER ROLE ... NOSUPERUSER`` needs a superuser even when it changes
    nothing, so a warehouse user with CREATEROLE failed every rerun (a probe)."""
    from psycopg2 import errors

    from sources.errors import ConfigError

    cur.execute("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                "FROM pg_roles WHERE rolname = %s", [role])
    found = cur.fetchone()
    if found and (found[1] or found[4] or found[5]):
        raise ConfigError(f"the role {role} (ELT_BI_ROLE) is a superuser, a replication role or bypasses row "
                          "security: it cannot be made read-only by this command",
                          hint="choose another ELT_BI_ROLE, or have a superuser take those attributes away "
                               f"(`ALTER ROLE \"{role}\" NOSUPERUSER NOREPLICATION NOBYPASSRLS;`)")
    if found:
        change = [a for a, wrong in (("LOGIN", not found[0]), ("NOCREATEDB", found[2]), ("NOCREATEROLE", found[3]))
                  if wrong]
        statement = sql.SQL("ALTER ROLE {} " + " ".join(change)) if change else None
    else:
        statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION")
    if statement is not None:
        cur.execute("SAVEPOINT elt_bi_role")
        try:
            cur.execute(statement.format(sql.Identifier(role)))
        except errors.InsufficientPrivilege as exc:
            cur.execute("ROLLBACK TO SAVEPOINT elt_bi_role")
            raise ConfigError(
                f"the warehouse user {owner} may not {'alter' if found else 'create'} the role {role}: "
                f"{str(exc).strip().splitlines()[0]}",
                hint=f"as a superuser, run `ALTER ROLE \"{owner}\" CREATEROLE;`, or create the role yourself "
                     f"(`CREATE ROLE \"{role}\" LOGIN;`), then rerun `elt bi-role`") from None
    return f"{'updated' if found else 'created'} role {role}"


def _drop_memberships(cur, role: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Revoke every role ``role`` is a member of (``pg_read_all_data`` reads raw, ``pg_write_all_data``
    writes it): the command promised "nothing else" and left them (a probe). What the warehouse user
    may not revoke is said, with the statement for a superuser."""
    cur.execute("SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s ORDER BY 1", [role])
    groups = [r[0] for r in cur.fetchall()]
    if not groups:
        return []
    for group in groups:  # a role the user may not revoke gets a WARNING or an error: checked below
        cur.execute("SAVEPOINT elt_bi_member")
        try:
            cur.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(role)))
            cur.execute("RELEASE SAVEPOINT elt_bi_member")
        except Exception:  # noqa: BLE001 - said below with the statement to run
            cur.execute("ROLLBACK TO SAVEPOINT elt_bi_member")
    cur.execute("SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s ORDER BY 1", [role])
    left = [r[0] for r in cur.fetchall()]
    said = [f"revoked membership in {', '.join(g for g in groups if g not in left)}"] if len(left) < len(groups) else []
    if left:
        log.warning("bi role is still a member of other roles", extra={"fields": {"role": role, "roles": left}})
        said.append(f"WARNING: {role} is still a member of {', '.join(left)}, which may read or write beyond the "
                    "marts; a superuser must run: " + "; ".join(f'REVOKE "{g}" FROM "{role}"' for g in left))
    return said


def _check_grants(cur, role: str, owner: str, schema: str) -> str:  # type: ignore[no-untyped-def]
    """What the role can read now, checked: a GRANT on a schema or view another user owns is only
    a WARNING from PostgreSQL ("no privileges were granted"), and the command said "granted" while
    the BI user got "permission denied" (a probe)."""
    from sources.errors import ConfigError

    cur.execute("SELECT has_schema_privilege(%s, %s, 'USAGE'), nspowner::regrole::text FROM pg_namespace "
                "WHERE nspname = %s", [role, schema, schema])
    usage, schema_owner = cur.fetchone()
    cur.execute("SELECT c.relname, c.relowner::regrole::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm') AND NOT has_table_privilege(%s, c.oid, 'SELECT') "
                "ORDER BY 1", [schema, role])
    unreadable = cur.fetchall()
    if not usage or unreadable:
        what = (f"schema {schema} (owned by {schema_owner})" if not usage else
                f"{len(unreadable)} relation(s) of {schema} ({', '.join(f'{n} owned by {o}' for n, o in unreadable[:3])})")
        fix = (f'ALTER SCHEMA "{schema}" OWNER TO "{owner}";' if not usage else
               "; ".join(f'ALTER VIEW "{schema}"."{n}" OWNER TO "{owner}"' for n, _ in unreadable[:3]) + ";")
        raise ConfigError(f"{role} cannot read {what}: PostgreSQL granted nothing there, because {owner} does not "
                          "own it", hint=f"as a superuser or that owner, run `{fix}` (or grant it to {role} "
                                         "yourself), then rerun `elt bi-role`")
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm')", [schema])
    return f"granted SELECT on {cur.fetchone()[0]} relation(s) in {schema} and on future ones created by {owner}"


def _close_public(cur, role: str, owner: str, database: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Take from PUBLIC what would let ``role`` write: CREATE on schema public, TEMPORARY on the
    database. Grants both to ``owner`` first so the warehouse user keeps them. Returns what it did,
    or what a database owner must still run."""
    db, me = sql.Identifier(database), sql.Identifier(owner)
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'public'")
    has_public = cur.fetchone() is not None
    statements = [sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, me),
                  sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(db)]
    if has_public:
        statements += [sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(me),
                       sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC")]
    for statement in statements:  # a non-owner gets a WARNING, not an error: checked below
        cur.execute(statement)
    cur.execute("SELECT has_database_privilege(%s, %s, 'TEMPORARY'), "
                "coalesce(has_schema_privilege(%s, (SELECT oid FROM pg_namespace WHERE nspname = 'public'), 'CREATE'), false)",
                [role, database, role])
    temp, create = cur.fetchone()
    if not temp and not create:
        return [f"revoked from PUBLIC: TEMPORARY on database {database}"
                + (", CREATE on schema public" if has_public else "") + f" (kept by {owner}; this applies to "
                "every role of the database: GRANT them back to any other role that needs them)"]
    left = [s.as_string(cur) for s in statements if "REVOKE" in s.as_string(cur)]
    log.warning("bi role can still create objects through PUBLIC", extra={"fields": {"role": role}})
    return [f"WARNING: {role} can still create {'temporary tables' if temp else ''}{' and ' if temp and create else ''}"
            f"{'tables in schema public' if create else ''} through PUBLIC; a database owner must run: "
            + "; ".join(left)]
