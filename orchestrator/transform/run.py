"""Run SQLMesh the way the pipeline needs it: plan+apply an environment, run due intervals,
restate what new raw batches touched, verify every audit, and explain a failure.

A blocking audit failure stops the models downstream of the failing one (SQLMesh's scheduler
skips them); this module turns it into a message that names the model, the audit, how many rows
failed, one failing row, and what to run next.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

from orchestrator.settings import Settings
from orchestrator.transform.restate import (  # schema_table: other modules import it from here
    WATERMARKS,
    query_parents,
    restate_pending,
    schema_table,
    transform_watermarks,
)
from sources.connections import STATEMENT_TIMEOUT
from sources.errors import WAREHOUSE_WRITE_FAILED, first_line, interrupted_text
from sources.logs import get_logger

log = get_logger("orchestrator.transform.run")


@dataclass
class AuditFailure:
    model: str
    audit: str
    count: int
    failing_row: dict[str, Any] | None
    query: str
    heading: str | None = None  # rows held out of staging (no audit ran): what to say instead
    args: str = ""  # the audit's arguments (``criteria := (...)``): which of a model's two `forall` failed

    def render(self) -> str:
        row = ", ".join(f"{k}={v!r}" for k, v in (self.failing_row or {}).items()) or "(could not fetch)"
        if self.heading:
            return f"{self.heading}\n    first held row: {row}\n    query listing them: {self.query}"
        return (
            f"audit '{self.audit}' failed on model {self.model}: {self.count} row(s)\n"
            + (f"    checks: {self.args}\n" if self.args else "")
            + f"    first failing row: {row}\n"
            f"    audit query: {self.query}"
        )


# How psycopg2 (and libpq) word a connection that went away mid-statement
_LOST_CONNECTION = re.compile(
    r"connection already closed|server closed the connection unexpectedly|terminating connection due to"
    r"|could not connect to server|connection to server .* failed|SSL connection has been closed unexpectedly",
    re.IGNORECASE)


# a model reading a column its table lacks: DuckDB's binder, PostgreSQL's UndefinedColumn
# a value a model's cast cannot hold (DuckDB, PostgreSQL): the data is the usual cause, not the SQL
_VALUE_DOES_NOT_FIT = re.compile(
    r"Conversion Error|Out of Range Error|numeric field overflow|invalid input syntax for type"
    r"|out of range for type|value too long for type")
_CAST_FROM_COLUMN = re.compile(r"(?:value|with value) (?P<value>\S+?) (?:to|can't be cast).*?when casting from source "
                               r"column (?P<column>\w+)")
_RAW_COLUMN_MISSING = re.compile(r'Table "[^"]+" does not have a column named|column [\w."]+ does not exist')

# how an orphan's audit query says that its parent was deleted, not missing
DELETED_PARENT = "was deleted by its source"


class TransformFailed(Exception):
    """A plan or run failed; ``failures`` holds the audits that failed, if any."""

    def __init__(self, step: str, failures: list[AuditFailure], detail: str = "", skipped: set[str] | None = None,
                 model_errors: list[str] | None = None, orphans: bool = False, timeless: bool = False,
                 written: list[str] | None = None) -> None:
        self.step = step
        self.failures = failures
        # rows held out of staging, when that is the failure: {table, rows, warn, why} each
        self.held_counts: list[dict[str, Any]] = []
        self.model_errors = model_errors or []
        failed_models = {e.split(":", 1)[0] for e in self.model_errors}
        self.skipped = sorted(set(skipped or ()) - failed_models)  # a failed model is not also "skipped"
        lines = [f"transform failed during {step}." + (f" {detail}" if detail else "")]
        lines += [f"  - {f.render()}" for f in failures]
        lines += [f"  - model failed: {e}" for e in self.model_errors]
        if self.skipped:
            lines.append(f"  skipped (downstream of the failure): {', '.join(self.skipped)}")
        if orphans:
            # The run completed: nothing was skipped, only the orphan rows were held out of staging.
            steps = (["load the missing parent rows (or correct the child rows at the source; if the parent table's "
                      "last load failed, the rows are in what it refused: fix that load first)"]
                     if any(f.audit == "assert_relationship" and DELETED_PARENT not in f.query for f in failures)
                     else [])
            steps += (["delete or mark (soft_delete) the child rows at the source too, bring the parent back, or, "
                       "if the source keeps such rows on purpose, declare the child table held_rows: warn"]
                      if any(DELETED_PARENT in f.query for f in failures) else [])
            steps += ["fill the empty event time at the source (or delete the row there) and load it (a table read "
                      "by cursor: with --force if the row's cursor value is older than the table's cursor)"] if timeless else []
            lines.append(
                f"  next: {'; '.join(steps)} with `elt load ...`, then rerun `elt transform`; until then each transform"
                " fails with this message and the rest of the data stays current."
            )
        elif failures:
            # SQLMesh writes a model's rows before it audits them (docs/runbook.md#failed-audit)
            if step == "run":
                lines.append(
                    "  SQLMesh writes a model's rows before it audits them: the failing model already serves the"
                    " failing rows in prod (an incremental model on the days it processed). Models downstream of"
                    " it were skipped and keep their previous data."
                )
                failed = {f.model for f in failures}
                others = sorted({m for m in written or () if m not in failed})
                if others:  # a wrong price reached two marts that passed their own audits (a probe)
                    lines.append(
                        f"  Also written and served by this run, their own audits passed: {', '.join(others)}. They"
                        " may carry the same source data as the failing rows: check them too."
                    )
            else:
                lines.append(
                    "  SQLMesh writes a model's rows before it audits them. A model the plan added or changed is"
                    " not promoted: prod keeps its previous version. A model whose existing table the plan was"
                    " filling already serves the failing rows. Models downstream of it were skipped."
                )
            if any(f.audit.startswith("assert_relationship") for f in failures):
                lines.append(
                    "  A relationship audit fails when a parent row is missing. If the source deleted it (its latest"
                    " raw row is a tombstone, _deleted), see docs/runbook.md#deleted-rows."
                )
            lines.append(
                "  next: inspect the failing rows in the warehouse (query above), fix the source data or the model,"
                " reload (`elt load ...`), then rerun `elt transform`. Runbook: docs/runbook.md#failed-audit"
            )
        elif any(_LOST_CONNECTION.search(e) for e in self.model_errors):
            lines.append(
                "  The warehouse connection was lost while a model was built (the server stopped or restarted,"
                " or the network dropped); the model's SQL is not the cause. next: check the warehouse server"
                " (PostgreSQL: `pg_isready` with the ELT_PG_* host and port), then rerun `elt transform`: the"
                " intervals that did not complete are still missing in SQLMesh's state and run again."
            )
        elif any("canceling statement due to lock timeout" in e for e in self.model_errors):
            limit = os.environ.get("ELT_PG_LOCK_TIMEOUT_S", "600")
            lines.append(
                f"  A statement waited longer than ELT_PG_LOCK_TIMEOUT_S ({limit} s) for a lock on a warehouse"
                " table or view: usually a BI session left open in a transaction on a mart (a model change"
                " replaces the mart's view, which waits for every transaction that read it). Each model's write"
                " is all or nothing, but when the wait was for a mart's view, the marts re-pointed before it"
                " already serve the new version and the rest the old one, until a transform completes the"
                " deploy (the scheduler retries). next: find the holder (`SELECT pid, usename,"
                " application_name, state, xact_start FROM pg_stat_activity WHERE state LIKE 'idle in"
                " transaction%'`), end it (`SELECT pg_terminate_backend(<pid>)`) or let it finish, then rerun"
                " `elt transform` (docs/runbook.md, \"Production\")."
            )
        elif any(STATEMENT_TIMEOUT in e for e in self.model_errors):
            lines.append(
                "  The warehouse's statement_timeout ended a model's query; the model's SQL is not wrong. The"
                " intervals that did not complete are still missing in SQLMesh's state and run again. next: raise"
                " the timeout for the role that runs elt (`ALTER ROLE ... SET statement_timeout = '2h';`, or"
                " PGOPTIONS='-c statement_timeout=2h' for elt's processes), then rerun `elt transform`"
                " (docs/runbook.md, \"Production\")."
            )
        elif any("permission denied for" in e for e in self.model_errors):
            lines.append(
                "  The warehouse refused the role a privilege; the model's SQL is not the cause. next: give the"
                " role that runs elt and sqlmesh CREATE on the warehouse database (`GRANT CREATE ON DATABASE ..."
                " TO ...;`), and ownership of schemas another role created, then rerun `elt transform`"
                " (docs/runbook.md, \"Production\")."
            )
        elif any(WAREHOUSE_WRITE_FAILED.search(e) for e in self.model_errors):
            lines.append(
                "  The warehouse could not be written: its disk is full (DuckDB: the disk of ELT_DUCKDB_PATH, which"
                " also holds its .wal and its .tmp spill folder; PostgreSQL: the server's data directory), or DuckDB"
                " stopped writing after such a failure. The model's SQL is not the cause. next: free space there or"
                " move the warehouse to a larger disk, then rerun `elt transform`: the intervals that did not"
                " complete are still missing in SQLMesh's state and run again."
            )
        elif any(_RAW_COLUMN_MISSING.search(e) for e in self.model_errors if e.startswith("staging.")):
            lines.append(
                "  A staging model reads a column its raw table does not have yet: a column declared (or renamed)"
                " before a load brought it; for a raw table several sources write, the transform does not add it"
                " itself. The models downstream were skipped; prod still serves the previous data. next: load the"
                " table (`elt load <source> --table <table>`; with --force if the file or cursor has nothing new),"
                " or add the column to raw (docs/runbook.md#schema-change), then rerun `elt transform`."
            )
        elif any(_VALUE_DOES_NOT_FIT.search(e) for e in self.model_errors):
            cast = next((m for e in self.model_errors if (m := _CAST_FROM_COLUMN.search(e))), None)
            column, value = (cast["column"], cast["value"]) if cast else ("<column>", "<value>")
            lines.append(
                "  A value in the data does not fit the type a model casts it to (the error above names it): a"
                " wrong value at the source is the usual cause, not the model's SQL. The models downstream were"
                " skipped; prod still serves the previous data where the run did not complete, and every transform"
                " fails the same way until the value changes. next: find its row in the raw table the model reads"
                f" (a staging model reads raw_<source>.<table>): `sqlmesh fetchdf \"SELECT _batch_id, _batch_row + 1 AS data_row, {column}"
                f" FROM raw_<source>.<table> WHERE {column} = {value}\"`; correct it at the source and load it"
                " (`elt load <source> --table <table>`, with --force if the file or cursor has nothing new), then"
                " rerun `elt transform`; if such values are right, widen the type in the model"
                " (docs/runbook.md#a-value-does-not-fit-a-models-type)."
            )
        elif self.model_errors or self.skipped:
            lines.append(
                "  A model failed (above) and the models downstream of it were skipped; prod still serves the"
                " previous data where the plan did not complete. next: a missing raw table means its source was never loaded here (`elt load <source>`); any other"
                " error is in the model's SQL (or, for a Python model that reads a table it does not name in its"
                " `depends_on`, in that list; or, on a gateway whose engine is not the model's dialect, in"
                " SQLMesh's translation of valid SQL: see what the engine ran with `sqlmesh render <model>"
                " --dialect <engine>` and write the part plainly): fix it and check with `sqlmesh plan dev`, then"
                " rerun `elt transform`."
            )
        elif step in ("deploy", "restate"):
            pass  # the detail says what is at stake and what to do (deploys.refusal, restate's read-back)
        elif "test" in detail.lower():
            lines.append(
                "  A model unit test (tests/models/*.yaml) failed, so nothing was built or changed."
                " next: run `sqlmesh test` (with the same ELT_GATEWAY) to see the failing unit test and its diff,"
                " then fix the model or the test's expectation."
            )
        else:
            lines.append("  Nothing was changed by the failed step. next: read the error above; runbook: docs/runbook.md")
        super().__init__("\n".join(lines))


@dataclass
class TransformSummary:
    environment: str
    applied_plan: bool
    restated: list[str]
    audits_run: int
    audits_passed: int
    models_audited: int
    elapsed_s: float
    run_status: str = ""
    failures: list[AuditFailure] = field(default_factory=list)
    # the environment's transform watermark (newest raw load time it has seen) before and after
    watermark_before: str | None = None
    watermark_after: str | None = None
    # model -> the windows restated for raw batches it had not consumed ("rebuilt" for FULL models)
    restated_windows: dict[str, str] = field(default_factory=dict)
    # (model, start, end) of every interval SQLMesh evaluated in this transform, from its scheduler
    evaluated: list[tuple[str, str, str]] = field(default_factory=list)
    # rows held out of staging, when they did not fail the transform (fail_on_held=False): the failure's text
    held: str = ""
    # rows of tables declaring held_rows: warn, held out of staging: the warning's text
    warned: str = ""
    # every table with rows held out: {table, rows, warn, why}, for the run history
    held_counts: list[dict[str, Any]] = field(default_factory=list)
    # non-blocking audits that failed: (model, audit, failing rows); nothing was stopped
    audits_warned: list[tuple[str, str, int]] = field(default_factory=list)

    def render(self) -> str:
        """One line, the outcome first: the restated models come last, the first
        ``SHOWN_RESTATED`` of them (at 200 tables the whole list made a line of 29,000 characters
        with the audits' result at its very end; a probe)."""
        restated = [f"{m} ({w})" for m, w in self.restated_windows.items()]
        more = len(restated) - SHOWN_RESTATED
        return (
            f"environment {self.environment}: plan {'applied' if self.applied_plan else 'had no changes'}, "
            f"run {self.run_status}, {len(self.evaluated)} interval(s) evaluated; "
            f"audits: {self.audits_passed}/{self.audits_run} passed on {self.models_audited} models"
            + (f", {len(self.audits_warned)} failed without blocking: "
               + ", ".join(f"{a} on {m} ({c:,} rows)" for m, a, c in self.audits_warned) if self.audits_warned else "")
            + f" ({self.elapsed_s:.1f}s); restated "
            + (", ".join(restated[:SHOWN_RESTATED])
               + (f", and {more} more model(s) (the log line 'model(s) restated' lists them all)" if more > 0 else "")
               if restated else "nothing")
        )


# the restated models a transform's summary line names; the rest are counted
SHOWN_RESTATED = 20


# cache entries found to hold this state's table versions (entry -> [version, mtime_ns, size]),
# kept in SQLMesh's cache folder so that clearing the cache clears it too
VERIFIED_CACHE = "elt-verified-snapshots.json"


def make_context(settings: Settings, *, quiet: bool = False):  # type: ignore[no-untyped-def]
    """A SQLMesh Context on the project, pointed at the configured warehouse (absolute path)."""
    from sqlmesh import Context
    from sqlmesh.core.console import set_console

    from orchestrator.transform.collector import tune_collector

    tune_collector()  # once per process (decision 0083); `elt` did it at its start
    forget_sqlglot_dispatch()

    os.environ["ELT_DUCKDB_PATH"] = str(settings.warehouse)
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        warehouse = PostgresSettings.from_env(settings.pg_prefix)
        check_pg_database_name(settings)
        export_pg_password(settings.pg_prefix)
        _check_clients_on_the_server(warehouse)
    if settings.gateway == "spark":
        from sources.spark import session

        # the process's one session, built from the gateway's settings (ELT_SPARK_HOME made
        # absolute, Spark's own logging quieted); SQLMesh's getOrCreate returns it
        session(settings.project_root)
    console = _capturing_console(quiet)
    set_console(console)
    from sqlmesh.utils.errors import ConfigError as ModelConfigError

    try:
        ctx = Context(paths=str(settings.project_root), gateway=settings.gateway)
    except Exception as exc:
        from sources.errors import ConfigError

        if _caused_by_a_file(exc):
            # a file SQLMesh could not read or write (a full disk under its cache, which it raises as
            # a ConfigError too) is neither the configuration's fault nor a model's: it goes on to
            # the handling of such errors, which names the disk
            raise
        if _raised_reading_the_config(exc):
            # config.yaml SQLMesh cannot parse (YAML syntax, Jinja) or refuses (an unknown key):
            # the YAML parser's traceback named no file, and the model-file hint pointed elsewhere
            raise ConfigError(f"SQLMesh could not read the project's configuration, "
                              f"{settings.project_root / 'config.yaml'}: {exc}",
                              hint="fix config.yaml where the error above points (a YAML error's line number counts "
                                   "the file as SQLMesh rendered it, without the `{% if %}` blocks that do not "
                                   "apply, so find the line by the text shown; `sqlmesh info` shows the same "
                                   "error), then rerun the command; nothing was built or changed") from exc
        if not isinstance(exc, ModelConfigError):
            raise
        # a model SQLMesh refuses to load (a self-reference without column types, a bad property):
        # its own message names the file and the fix; it was a 25-line traceback (a probe)
        raise ConfigError(f"SQLMesh could not load the project's models: {exc}",
                          hint="fix the model file named above (`sqlmesh plan` shows the same error), then rerun "
                               "the command; nothing was built or changed") from exc
    skip_usage_wrappers(ctx)
    _keep_metadata_macros_known(ctx)
    if settings.gateway == "duckdb":
        _hold_the_warehouse_file(ctx)
    _check_state_versions(ctx, settings)
    _forget_a_cache_of_another_state(ctx)
    return ctx, console


def _keep_metadata_macros_known(ctx) -> None:  # type: ignore[no-untyped-def]
    """Keep the project's metadata-only macros (``@analyze_written_table``) in SQLMesh's global
    macro registry after the load, which removes them again.

    SQLMesh gives EXTERNAL models (the raw tables of ``external_models.yaml``) the statements of
    ``model_defaults`` but not the macros those statements call. When only an external model's
    metadata changes (a raw column's description, the file it is loaded from), the plan asks
    whether its statements changed too. A statement counts as metadata when its macro is
    metadata-only, and SQLMesh looks the macro up in that registry first. Without the macro there,
    SQLMesh tries to render the statement, which fails. Every `elt transform` and `sqlmesh plan`
    then ended in `Macro 'analyze_written_table' does not exist ... external_models.yaml` (found
    by an upgrade probe).

    The instances are the loader's own. A later load in this process registers the same functions
    again, which SQLMesh accepts, so the models' fingerprints do not change."""
    from sqlmesh.core.macros import macro

    known = macro.get_registry()
    missing = {name: m for name, m in getattr(ctx, "_macros", {}).items()
               if getattr(m, "metadata_only", False) and name not in known}
    if missing:
        known.update(missing)  # dict.update: the registry refuses an item set twice, not an update
        macro.set_registry(known)


def _caused_by_a_file(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a file that could not be read or written (an OSError in its
    chain of causes, or its message quoting one)."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None or isinstance(cause, OSError):
            break
        cause = cause.__cause__ or cause.__context__
    return isinstance(cause, OSError) or "[Errno " in str(exc)


def _raised_reading_the_config(exc: BaseException) -> bool:
    """Whether SQLMesh raised ``exc`` while reading the project's configuration (``config.yaml``),
    not a model: its configuration loader is on the traceback."""
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.replace(os.sep, "/").endswith("sqlmesh/core/config/loader.py"):
            return True
        frame = frame.tb_next
    return False


def _hold_the_warehouse_file(ctx) -> None:  # type: ignore[no-untyped-def]
    """Open the DuckDB warehouse before SQLMesh first looks at its state, so that a file another
    process holds stops the command here, with DuckDB's "Could not set lock" (named by the CLI).

    SQLMesh's first look (``table_exists`` on its versions table) swallows every error, so a file
    held at that instant read as "no state", and SQLMesh ran every migration on the live state as
    soon as the other process let go: a BI refresh that briefly opened the file read-only left
    every snapshot without ``forward_only`` and every later deploy failing (a probe, 1 in 51 runs).
    Once this process has the file open, no other process can open it until the command ends.
    SQLMesh shares one connection per DuckDB file between the models and the state."""
    ctx.engine_adapter.fetchone("SELECT 1")


def _check_state_versions(ctx, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Open SQLMesh's state now, so that state written by another SQLMesh version (the pin was
    upgraded, or another checkout migrated the state) stops the command with what to do, instead
    of a traceback from the first model read. A new warehouse gets its state tables here, as the
    first plan would give them."""
    from sqlmesh.utils.errors import SQLMeshError

    from sources.errors import ConfigError

    try:
        ctx.state_sync  # noqa: B018 - the property opens the state and compares its versions
    except SQLMeshError as exc:
        # the property keeps the unchecked state sync when the comparison fails
        state = getattr(ctx, "_state_sync", None)
        try:
            versions = state.get_versions(validate=False) if state is not None else None
        except Exception:  # noqa: BLE001 - the original error says more than a second failure
            versions = None
        message = state_version_message(versions, _local_versions(), _state_location(settings)) if versions else None
        ctx.close()
        if message is None:
            raise
        raise ConfigError(message) from exc


def _forget_a_cache_of_another_state(ctx) -> int:  # type: ignore[no-untyped-def]
    """Clear SQLMesh's cache (the project's ``.cache``) when it holds a snapshot whose table
    version differs from this state's; returns how many differed.

    SQLMesh keeps every snapshot it reads from state in that folder, keyed by model and
    fingerprint only, and serves the cached copy, with its table version, ever after (0.236:
    ``SnapshotCache.get_or_load`` refreshes a few fields, not the version, and ``put`` never
    replaces an entry). A state built again under the same names (the warehouse restored from
    landing, ``make clean-data``) gives a model edited without breaking its children a new table
    version where the old state kept the children's: runs and restatements then wrote the
    cached versions' tables, which nothing reads, and every load after a restore reached raw and
    no mart while every command succeeded (decision 0052).

    One query of the state's versions; a cache entry is read (about 1 ms) only when it is not yet
    in ``VERIFIED_CACHE`` with that version and the same file: SQLMesh never rewrites an entry
    in place, so one found right stays right."""
    import json

    from orchestrator.transform.restate import _state_beneath_cache

    sync = _state_beneath_cache(ctx)
    snapshot_state = getattr(sync, "snapshot_state", None)
    cache = getattr(getattr(snapshot_state, "_snapshot_cache", None), "_snapshot_cache", None)
    if cache is None or not hasattr(cache, "_cache_entry_path") or not hasattr(cache, "_path"):
        return 0  # another SQLMesh layout: tests/pipeline/test_layer_audits.py fails if this check stops working
    adapter = snapshot_state.engine_adapter
    rows = (adapter.fetchall(exp.select("name", "identifier", "version").from_(snapshot_state.snapshots_table))
            if adapter.table_exists(snapshot_state.snapshots_table) else [])
    if not rows:
        # a new state: the plan about to build it would find the old state's snapshots cached,
        # and SQLMesh never replaces a cached entry with the versions it gives them now
        if any(Path(cache._path).glob("*")):
            _empty_sqlmesh_cache(ctx, "holds model versions while this warehouse's state holds none")
            log.info(f"SQLMesh's cache {ctx.cache_dir} holds model versions while this warehouse's state holds none "
                     "(a new or rebuilt warehouse): cleared", extra={"fields": {"cache": str(ctx.cache_dir)}})
        return 0
    index_path = Path(ctx.cache_dir) / VERIFIED_CACHE
    try:
        verified = json.loads(index_path.read_text())
    except (OSError, ValueError):
        verified = {}
    differing, checked = [], {}
    for name, identifier, version in rows:
        entry = f"{name}_{identifier}"  # SnapshotCache._entry_name
        path = cache._cache_entry_path(entry)
        try:
            stat = path.stat()
        except OSError:
            continue  # not cached: SQLMesh reads it from state
        mark = [version, stat.st_mtime_ns, stat.st_size]
        if verified.get(entry) != mark:
            cached = cache.get(entry)
            if cached is None:
                continue
            if cached.version != version:
                differing.append(f"{name} (cached table version {cached.version}, state {version})")
                continue
        checked[entry] = mark
    if differing:
        _empty_sqlmesh_cache(ctx, f"holds {len(differing)} model version(s) of another state (e.g. {differing[0]})")
        log.warning(f"SQLMesh's cache {ctx.cache_dir} held {len(differing)} model version(s) of another state "
                    "(a warehouse rebuilt under the same name): cleared, so runs write the tables this state "
                    f"serves; e.g. {differing[0]}", extra={"fields": {"cache": str(ctx.cache_dir),
                                                                       "differing": len(differing)}})
    elif checked != verified and index_path.parent.is_dir():
        tmp = index_path.with_name(f"{VERIFIED_CACHE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(checked))
            os.replace(tmp, index_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only project: every command reads the entries again
    return len(differing)


def _empty_sqlmesh_cache(ctx, why: str) -> None:  # type: ignore[no-untyped-def]
    """Delete what SQLMesh's cache folders hold, not the folders: in the container image the project
    folder is read-only for the service user, who owns `.cache` but may not remove it (a review:
    ``Context.clear_caches``'s rmtree failed there with a bare PermissionError). An entry another
    process removes meanwhile is no error. If the cache cannot be emptied the command stops: runs
    would go on writing tables nothing reads."""
    import shutil

    from sources.errors import ConfigError

    folders = {Path(ctx.cache_dir), *(Path(p) / ".cache" for p in getattr(ctx, "configs", {}))}
    for folder in folders:
        try:
            children = list(folder.iterdir()) if folder.is_dir() else []
        except FileNotFoundError:
            continue
        for child in children:
            try:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ConfigError(
                    f"SQLMesh's cache {folder} {why}, and it could not be emptied: {exc}\n"
                    f"  next: delete what {folder} holds as a user allowed to (`rm -rf {folder}/*`), then rerun; "
                    "until then SQLMesh would write tables this warehouse does not serve "
                    "(docs/decisions/0052-sqlmesh-cache-of-a-lost-state.md)") from exc
    sync = getattr(ctx, "_state_sync", None)
    if sync is not None and hasattr(sync, "clear_cache"):
        sync.clear_cache()  # the in-memory copies (CachingStateSync)


def _local_versions() -> tuple[int, str, str]:
    from sqlglot import __version__ as sqlglot_version
    from sqlmesh import __version__ as sqlmesh_version
    from sqlmesh.core.state_sync.base import SCHEMA_VERSION

    return SCHEMA_VERSION, sqlglot_version, sqlmesh_version


def _state_location(settings: Settings) -> str:
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        pg = PostgresSettings.from_env(settings.pg_prefix)
        return f"schema sqlmesh of PostgreSQL database {pg.dbname} on {pg.host}:{pg.port}"
    if settings.gateway == "spark":
        home = os.environ.get("ELT_SPARK_HOME", "data/spark")
        return os.environ.get("ELT_SPARK_STATE_PATH") or f"{home}/state.duckdb"
    return str(settings.warehouse)


def state_version_message(state: Any, local: tuple[int, str, str], where: str) -> str | None:
    """What to do when SQLMesh's state and this installation disagree on versions (SQLMesh
    compares the state schema and the minor versions of SQLMesh and sqlglot); None when they agree.

    >>> from types import SimpleNamespace as S
    >>> print(state_version_message(S(schema_version=101, sqlglot_version="30.7.2", sqlmesh_version="0.235.1"),
    ...                             (102, "30.8.0", "0.236.4"), "data/warehouse.duckdb"))
    SQLMesh's state in data/warehouse.duckdb was written by SQLMesh 0.235.1 (state schema 101, sqlglot 30.7.2); this installation runs SQLMesh 0.236.4 (state schema 102, sqlglot 30.8.0): the state needs one migration before any run
    next: pause scheduled runs, back up the state, then run `sqlmesh migrate` once from the project folder (docs/runbook.md, "Upgrading SQLMesh or DuckDB"); or go back to the commit that pinned SQLMesh 0.235.1 and run `make .venv/.installed`
    >>> state_version_message(S(schema_version=102, sqlglot_version="30.8.1", sqlmesh_version="0.236.0"),
    ...                       (102, "30.8.0", "0.236.4"), "w") is None
    True
    >>> print(state_version_message(S(schema_version=103, sqlglot_version="30.9.0", sqlmesh_version="0.237.0"),
    ...                             (102, "30.8.0", "0.236.4"), "w").splitlines()[1])
    next: update this checkout to the commit that pins SQLMesh 0.237.0 (git pull), then run `make .venv/.installed`; an older SQLMesh must not run on migrated state
    """

    def minor(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version)[:2])

    schema, sqlglot_version, sqlmesh_version = local
    differences = [(state.schema_version, schema), (minor(state.sqlmesh_version), minor(sqlmesh_version)),
                   (minor(state.sqlglot_version), minor(sqlglot_version))]
    if all(theirs == ours for theirs, ours in differences):
        return None
    state_newer = any(theirs > ours for theirs, ours in differences)
    what = (f"SQLMesh's state in {where} was written by SQLMesh {state.sqlmesh_version} (state schema "
            f"{state.schema_version}, sqlglot {state.sqlglot_version}); this installation runs SQLMesh "
            f"{sqlmesh_version} (state schema {schema}, sqlglot {sqlglot_version})")
    if state_newer:
        return (f"{what}: a newer SQLMesh migrated the state (another checkout or machine)\n"
                f"next: update this checkout to the commit that pins SQLMesh {state.sqlmesh_version} (git pull), "
                "then run `make .venv/.installed`; an older SQLMesh must not run on migrated state")
    return (f"{what}: the state needs one migration before any run\n"
            "next: pause scheduled runs, back up the state, then run `sqlmesh migrate` once from the project folder "
            "(docs/runbook.md, \"Upgrading SQLMesh or DuckDB\"); or go back to the commit that pinned SQLMesh "
            f"{state.sqlmesh_version} and run `make .venv/.installed`")


_CHECKED_SERVERS: set[tuple[str, int, str]] = set()


def _check_clients_on_the_server(warehouse) -> None:  # type: ignore[no-untyped-def]
    """Make the warehouse end a query whose `elt` process died (killed by a timeout, the OOM killer,
    SIGKILL) within ``ELT_PG_CLIENT_CHECK_S`` instead of running it to its end, and run SQLMesh's
    sessions in UTC (decision 0033): its connections carry both through PGOPTIONS
    (sources/connections.py). One connection per process and server asks the server's version (the
    check needs PostgreSQL 14+) and the database's default zone, which bare `sqlmesh` would get."""
    from contextlib import closing

    from sources.connections import quote_ident, warehouse_pgoptions

    key = (warehouse.host, warehouse.port, warehouse.dbname)
    if key in _CHECKED_SERVERS:
        return
    with closing(warehouse.connect()) as con:
        version = con.server_version
        with con.cursor() as cur:  # the zone a session gets without elt's setting (it sets UTC)
            cur.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'")
            row = cur.fetchone()
            cur.execute("SHOW server_encoding")
            encoding = str(cur.fetchone()[0])
    warehouse_pgoptions(version)
    _CHECKED_SERVERS.add(key)
    if encoding.upper() not in ("UTF8", "UTF-8"):
        log.warning(
            f"the warehouse database's encoding is {encoding}: text it cannot hold fails the load"
            + (", and SQL_ASCII stores bytes unchecked (length() counts bytes)" if encoding.upper() == "SQL_ASCII" else "")
            + f"; next: create the warehouse database with ENCODING 'UTF8' (docs/runbook.md, \"Production\")",
            extra={"fields": {"database": warehouse.dbname, "encoding": encoding}})
    default_zone = row[0] if row else "UTC"
    if default_zone.upper() not in _UTC_NAMES:
        quoted = quote_ident(warehouse.dbname)
        log.warning(
            f"the warehouse database's default time zone is {default_zone}: elt runs its sessions in UTC, bare "
            "`sqlmesh` (plan, run, ui) would not, and would put a timestamptz column's rows on other days; "
            f"next: ALTER DATABASE {quoted} SET TimeZone = 'UTC' (docs/runbook.md, \"Production\")",
            extra={"fields": {"database": warehouse.dbname, "time_zone": default_zone}})


# names PostgreSQL accepts for UTC (no offset, no daylight saving)
_UTC_NAMES = {"UTC", "ETC/UTC", "UCT", "ETC/UCT", "UNIVERSAL", "ETC/UNIVERSAL", "ZULU", "ETC/ZULU", "GMT", "ETC/GMT",
              "GMT0", "ETC/GMT0", "GMT+0", "ETC/GMT+0", "GMT-0", "ETC/GMT-0", "GREENWICH", "ETC/GREENWICH"}


def forget_sqlglot_dispatch() -> None:
    """Drop the SQL generators' dispatch tables that sqlglot built before SQLMesh registered its
    own expressions (MODEL, AUDIT, macros) with them.

    sqlglot builds a generator class's table on its first use and keeps it. SQLMesh adds its
    expressions to ``TRANSFORMS`` when ``sqlmesh.core.dialect`` is imported, which `elt` does
    after it has already written SQL (the raw tables' DDL): the plan of a changed model then
    failed, printing its diff, with ``Unsupported expression type Model``, on every scheduled
    transform. Tables built after the registration include SQLMesh's expressions.
    """
    import sqlmesh.core.dialect  # noqa: F401 - the registration
    from sqlglot import generator

    cache = getattr(generator, "_DISPATCH_CACHE", None)
    if isinstance(cache, dict):
        cache.clear()


ANALYTICS_WRAPPER = "python_api_analytics.<locals>.wrapper"


def skip_usage_wrappers(ctx) -> list[str]:  # type: ignore[no-untyped-def]
    """Call this Context's API methods without SQLMesh's usage-analytics wrapper when analytics
    are off (config.yaml, decision 0023); returns the names of the methods unwrapped.

    The wrapper does its work before it asks whether analytics are on: on every call it reads the
    source of every frame of the stack (``inspect.stack()``) and, on the first, imports
    ``sqlmesh.magics`` (IPython's machinery), about 0.4 s of each ``elt transform``. With
    analytics off the collector discards what the wrapper sends, so skipping it changes nothing
    else. Only this Context is changed (an instance attribute per method, which SQLMesh's own
    ``self.test(...)`` inside ``plan`` also finds); a method SQLMesh no longer wraps this way is
    left alone.
    """
    if not getattr(ctx.config, "disable_anonymized_analytics", False):
        return []
    import types

    unwrapped = []
    members: dict[str, Any] = {}
    for cls in reversed(type(ctx).__mro__):  # the subclass's definition wins, as attribute lookup does
        members.update(vars(cls))
    for name, member in members.items():
        inner = getattr(member, "__wrapped__", None)
        code = getattr(member, "__code__", None)
        if inner is not None and code is not None and getattr(code, "co_qualname", "") == ANALYTICS_WRAPPER:
            setattr(ctx, name, types.MethodType(inner, ctx))
            unwrapped.append(name)
    return unwrapped


PG_IDENTIFIER_MAX = 63


def unit_test_inputs(project_root: Path) -> list[str]:
    """The models and tables the SQLMesh unit tests (``tests/**/test_*.yaml``) use as inputs."""
    from sources.config import read_yaml

    names: set[str] = set()
    for file in sorted((project_root / "tests").rglob("test_*.yaml")):
        for case in (read_yaml(file.read_text()) or {}).values():
            if isinstance(case, dict) and isinstance(case.get("inputs"), dict):
                names.update(str(name) for name in case["inputs"])
    return sorted(names)


def check_pg_database_name(settings: Settings) -> None:
    """On the PostgreSQL gateway, ``check_name_budget`` for the configured database, before anything
    connects to it: `elt transform` first said to create a database that was missing, and once
    it was created, refused its name (a newcomer walkthrough)."""
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        check_name_budget(PostgresSettings.from_env(settings.pg_prefix).dbname, unit_test_inputs(settings.project_root))


def check_name_budget(database: str, model_names: list[str]) -> None:
    """Refuse a PostgreSQL database whose name makes SQLMesh's unit-test fixture tables too long.

    SQLMesh names a fixture table ``<database>__<schema>__<table>``; PostgreSQL would cut a longer
    name at 63 characters without an error, and two fixtures could then collide. Physical tables
    are md5-named and never at risk; this check is for the unit tests every plan runs.

    >>> check_name_budget("warehouse", ["staging.stg_jaffle_shop__order_items"])
    >>> check_name_budget("analytics_warehouse_eu_west", ["staging.stg_jaffle_shop__order_items"])
    Traceback (most recent call last):
    ...
    sources.errors.ConfigError: the PostgreSQL database name 'analytics_warehouse_eu_west' (27 characters) is too long for this project: SQLMesh's unit-test table analytics_warehouse_eu_west__staging__stg_jaffle_shop__order_items would have 66 > 63 characters
      next: use a database name of at most 24 characters (ELT_PG_DATABASE), or shorten the longest model name
    """
    from sqlglot import exp

    from sources.errors import ConfigError

    longest, name = 0, ""
    for model in model_names:
        table = exp.to_table(model)
        length = len(table.db) + 2 + len(table.name)
        if length > longest:
            longest, name = length, f"{table.db}__{table.name}"
    fixture = f"{database}__{name}"
    if len(fixture) > PG_IDENTIFIER_MAX:
        raise ConfigError(
            f"the PostgreSQL database name {database!r} ({len(database)} characters) is too long for this project: "
            f"SQLMesh's unit-test table {fixture} would have {len(fixture)} > {PG_IDENTIFIER_MAX} characters",
            hint=f"use a database name of at most {PG_IDENTIFIER_MAX - 2 - longest} characters (ELT_PG_DATABASE), "
                 "or shorten the longest model name")


def export_pg_password(prefix: str) -> None:
    """config.yaml reads ``ELT_PG_PASSWORD``; accept ``ELT_PG_PASSWORD_FILE`` too (Docker/K8s secrets).

    The value is the one ``elt``'s own connections use (``secret_from_env``: trimmed), also when
    ``ELT_PG_PASSWORD`` is set: with its trailing newline (a secret file mapped to the variable)
    SQLMesh's login failed where the loader's had just worked. Only this process's environment is
    changed, and the value is never logged.
    """
    from sources.connections import secret_from_env

    name = f"{prefix}PASSWORD"
    secret = secret_from_env(name)
    if secret:
        os.environ[name] = secret


def _capturing_console(quiet: bool):  # type: ignore[no-untyped-def]
    from sqlmesh.core.console import NoopConsole, TerminalConsole
    from sqlmesh.utils.errors import NodeAuditsErrors

    base = NoopConsole if quiet else TerminalConsole

    class CapturingConsole(base):  # type: ignore[valid-type,misc]
        """Keeps the AuditErrors of blocking audit failures, which SQLMesh only prints."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.audit_errors: list[Any] = []
            self.model_errors: list[str] = []  # failures that are not audits (SQL errors, missing tables)
            self.skipped_models: set[str] = set()
            self.audits_run = 0
            self.audits_failed = 0  # audits that failed without stopping anything (non-blocking)
            self.audit_warnings: list[tuple[str, str, int]] = []  # (model, audit, rows) of those
            self.audited_models: set[str] = set()
            self.evaluated: list[tuple[str, str, str]] = []
            self.test_errors: list[str] = []  # the tracebacks of unit tests that errored (not failed)

        def log_test_results(self, result: Any, target_dialect: str) -> None:
            self.test_errors += [str(trace) for _, trace in getattr(result, "errors", [])]
            super().log_test_results(result, target_dialect)

        def update_snapshot_evaluation_progress(self, snapshot: Any, interval: Any, batch_idx: int,
                                                duration_ms: Any, num_audits_passed: int, num_audits_failed: int,
                                                *args: Any, **kwargs: Any) -> None:
            from sqlmesh.utils.date import to_ds

            name = schema_table(snapshot.name)
            self.evaluated.append((name, to_ds(interval[0]), to_ds(interval[1])))
            # a blocking failure raises before this is called; what failed here did not block
            self.audits_run += num_audits_passed + num_audits_failed
            self.audits_failed += num_audits_failed
            if num_audits_passed + num_audits_failed:
                self.audited_models.add(name)
            super().update_snapshot_evaluation_progress(snapshot, interval, batch_idx, duration_ms, num_audits_passed,
                                                        num_audits_failed, *args, **kwargs)

        def log_status_update(self, message: str) -> None:
            super().log_status_update(plain_status(message))

        def log_warning(self, short_message: str, long_message: str | None = None) -> None:
            found = _NON_BLOCKING.match(short_message)
            if found:
                self.audit_warnings.append((schema_table(found[1]), found[2], int(found[3])))
            if quiet:  # SQLMesh's quiet console only logs it: the log handlers show it, once
                super().log_warning(short_message, long_message)
                return
            # the terminal console prints it and logs it too: printed once (the log line repeated it)
            import logging

            console_log = logging.getLogger("sqlmesh.core.console")
            was = console_log.disabled
            console_log.disabled = True
            try:
                super().log_warning(short_message, long_message)
            finally:
                console_log.disabled = was

        def log_skipped_models(self, snapshot_names: set[str]) -> None:
            self.skipped_models |= {schema_table(name) for name in snapshot_names}
            super().log_skipped_models(snapshot_names)

        def log_failed_models(self, errors: list[Any]) -> None:
            for err in errors:
                if isinstance(err.__cause__, NodeAuditsErrors):
                    self.audit_errors.extend(err.__cause__.errors)
                else:
                    cause = str(err.__cause__ or err).strip().splitlines()
                    node = getattr(err, "node", None)
                    name = getattr(node, "snapshot_name", None) or getattr(node, "name", None) or str(node)
                    self.model_errors.append(f"{schema_table(str(name))}: {cause[0] if cause else err}")
            super().log_failed_models(errors)

    return CapturingConsole()


# SQLMesh's warning for a failed non-blocking audit: "\nmarts.orders: 'forall_non_blocking' audit error: 27712 rows failed."
_NON_BLOCKING = re.compile(r"\s*(\S+): '([^']+)' audit error: (\d+) rows? failed")


def plain_status(message: str) -> str:
    """SQLMesh's status line, reworded where it misleads in `elt transform`'s output. Its run prints
    "No models are ready to run. Please wait..." after every transform that had nothing more to
    do, including one whose plan just built every model, which reads as "nothing happened".

    >>> print(plain_status("No models are ready to run. Please wait until a model `cron` interval has elapsed."
    ...                    "\\n\\nNext run will be ready at 2026-12-03 12:00AM UTC."))
    Every model is up to date: no further interval is due yet (the next one is due at 2026-12-03 12:00AM UTC).
    >>> plain_status("Run finished for environment 'prod'")
    "Run finished for environment 'prod'"
    """
    if not message.startswith("No models are ready to run"):
        return message
    _, _, due = message.partition("Next run will be ready at ")
    due = due.strip().rstrip(".")
    return ("Every model is up to date: no further interval is due yet"
            + (f" (the next one is due at {due})." if due else "."))


def _describe(ctx, audit_error) -> AuditFailure:  # type: ignore[no-untyped-def]
    query = audit_error.sql()
    row = None
    try:
        df = ctx.engine_adapter.fetchdf(f"SELECT * FROM ({query}) AS failing LIMIT 1")
        if len(df):
            row = {k: v for k, v in df.iloc[0].to_dict().items() if not str(k).startswith("_")}
    except Exception as exc:  # noqa: BLE001 - the failure report must not fail
        log.warning("could not fetch a failing row", extra={"fields": {"error": str(exc)}})
    return AuditFailure(audit_error.model_name or "?", audit_error.audit_name, audit_error.count, row, query,
                        args=_audit_args(audit_error))


def _last_day(start: str, end: str) -> str:
    """The last day of ``start``..``end`` (SQLMesh's end is exclusive): the log writes day ranges
    inclusive, as its "restating" lines do (an observability probe read one range two ways).

    >>> _last_day("2021-08-01", "2021-08-31")
    '2021-08-30'
    >>> _last_day("2021-08-01", "2021-08-01 06:00:00")
    '2021-08-01 06:00:00'
    """
    from datetime import date, timedelta

    try:
        last = date.fromisoformat(end) - timedelta(days=1)
    except ValueError:
        return end
    return max(last.isoformat(), start)


def _audit_args(audit_error) -> str:  # type: ignore[no-untyped-def]
    """``criteria := (a >= 0)``: the arguments the failing audit was given, as the model writes them."""
    try:
        shown = []
        for name, value in (getattr(audit_error, "audit_args", None) or {}).items():
            text = value.sql(dialect=getattr(audit_error, "adapter_dialect", None)) if hasattr(value, "sql") else str(value)
            shown.append(f"{name} := {text}")
        return ", ".join(shown)[:300]
    except Exception:  # noqa: BLE001 - a description only
        return ""


def transform(
    settings: Settings,
    *,
    environment: str = "prod",
    verify: bool = False,
    quiet: bool = False,
    before_restating: Any = None,
    fail_on_held: bool = True,
    allow_revert: bool = False,
) -> TransformSummary:
    """Apply local models to ``environment``, restate models whose raw input changed, run, audit.

    Model changes are applied only from a checkout at or ahead of the commit that last deployed
    ``environment`` (``deploys``), unless ``allow_revert``; each applied plan is recorded there.

    Rows held out of staging (orphans, rows without their event time) fail the transform after the
    run, unless ``fail_on_held`` is false (`elt backfill`, which they must not block): they are then
    listed in ``summary.held``.

    Raw batches a model version has not consumed yet (the ledger against ``elt_meta``'s consumed
    batches, see ``restate_pending``) have the days their rows touch restated in that model and
    everything downstream: intervals an incremental model already processed do not see rows
    added to raw afterwards. The touched days' intervals are removed from SQLMesh's state before
    the batches are marked consumed, so a failed run leaves them missing and the next
    ``elt transform`` (SQLMesh's run) evaluates them again. ``before_restating(ctx, scope)``, if
    given, is called just before those intervals are removed (``restate_pending``). The watermark
    (``transform_watermarks``, the newest load a success saw) advances only when the whole
    transform succeeds.
    """
    started = time.monotonic()
    check_external_models(settings)
    create_declared_raw_tables(settings)
    ctx, console = make_context(settings, quiet=quiet)
    try:
        return _transform(ctx, console, environment, verify, started, before_restating, fail_on_held, allow_revert)
    finally:
        ctx.close()


def check_external_models(settings: Settings) -> None:
    """Refuse to transform while ``external_models.yaml`` types raw columns otherwise than the
    source declarations: SQLMesh builds staging with the file's types, so a declaration widened
    (``decimal(9,4)`` to ``decimal(12,6)``) and raw migrated, without the file regenerated, had
    staging and the marts round every value back, green (a probe). Nothing is built."""
    from sources import external_models
    from sources.errors import ConfigError

    differing = external_models.type_differences(settings.project_root)
    if differing:
        shown = "; ".join(differing[:5]) + (f"; and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise ConfigError(
            f"external_models.yaml types raw columns otherwise than the source declarations: {shown}. "
            "SQLMesh would build the models with the file's types (a wider decimal rounded back, a text cut)",
            hint="regenerate the file with `elt sources --write-external-models`, review and commit it with the "
                 "declaration (the runbook's Schema change), then rerun; nothing was built or changed")


def create_declared_raw_tables(settings: Settings, specs: list[Any] | None = None) -> list[str]:
    """Give each declared source table its raw table, empty until its first load; the tables
    created. A staging model of a source declared but not loaded yet in this warehouse (a new
    source, a fresh or restored warehouse, a dev copy) then builds empty instead of failing the
    transform on a missing relation; ``elt freshness`` reports the source as never loaded. The
    table is made by the loader's own code from the declared columns and types, as a first batch
    would make it, so that batch applies to it unchanged.

    A declared column an existing raw table lacks is added to it (NULL in its rows), as the next
    batch holding the column would add it: a model reading the new column runs before then.

    Left to the loader: a table declared without columns (a PostgreSQL table typed from its
    catalog at read time), a ``strict`` table (its first batch must match exactly), a raw table
    several sources declare (their columns differ: whichever loads first shapes it), a table a
    load is creating right now, and every table on the Spark gateway. A table that cannot be made
    is logged and skipped: this never fails the transform by itself. ``specs``: the declared
    sources (all of them by default).
    """
    if settings.gateway not in ("duckdb", "postgres"):
        return []
    from sources.config import available_sources, load_source

    specs = [load_source(n) for n in available_sources()] if specs is None else specs
    declaring: dict[str, int] = {}
    for source in specs:
        for table in source.tables.values():
            key = f"{source.raw_schema}.{table.name}".lower()
            declaring[key] = declaring.get(key, 0) + 1
    created = []
    with settings.open_raw() as raw:
        present = raw.column_names(sorted({source.raw_schema for source in specs}))  # one read of the catalog
        for source in specs:
            for table in source.tables.values():
                name = f"{source.raw_schema}.{table.name}"
                if not table.columns or table.schema_policy == "strict" or declaring[name.lower()] > 1:
                    continue
                columns = [{"name": c.name, "type": c.type.name} for c in table.columns]
                held = present.get((source.raw_schema.lower(), table.name.lower()))
                if held and all(c["name"].lower() in held for c in columns):
                    continue  # the usual case: the table holds every declared column already
                fields = {"source": source.name, "table": table.name, "raw_schema": source.raw_schema}
                try:
                    made = not held and raw.create_declared(source.raw_schema, table.name, columns,
                                                            list(table.primary_key))
                    added = [] if made else raw.add_declared_columns(source.raw_schema, table.name, columns)
                except Exception as exc:  # noqa: BLE001 - a convenience: the models say if the table is needed
                    log.warning(f"could not create empty raw table {name} or add its declared columns: "
                                f"{str(exc).splitlines()[0] if str(exc) else exc}", extra={"fields": fields})
                    continue
                if added:
                    log.info(f"added declared column(s) {', '.join(added)} to raw table {name}: NULL in the rows it "
                             f"holds until they are read again (elt load {source.name} --table {table.name} --force "
                             "for a table read by cursor)", extra={"fields": fields})
                if made:
                    created.append(name)
                    log.info(f"created empty raw table {name}: declared by source {source.name}, not loaded yet "
                             f"(elt load {source.name})", extra={"fields": fields})
    return created


def lineage_direct(ctx) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """raw table -> the models whose query reads it directly."""
    out: dict[str, set[str]] = {}
    for fqn, model in ctx.models.items():
        if model.kind.is_external:
            continue
        for parent in query_parents(model):
            out.setdefault(parent, set()).add(schema_table(fqn).lower())
    return out


def _orphan_failure(direct: dict[str, set[str]], found) -> AuditFailure:  # type: ignore[no-untyped-def]
    model = ", ".join(sorted(direct.get(found.raw_table, set()))) or found.raw_table
    if found.event_time:  # windows.timeless
        late = (f"is dated before {found.before}, the first day the models build (their start)" if found.before
                else f"is dated after {found.after} (today in UTC): it reaches the marts on its day" if found.after
                else f"has no {found.event_time}")
        where = f"not in {model} yet" if found.after else f"held out of {model}"
        return AuditFailure(model, "held_out", found.count, found.example, found.query,
                            heading=f"{found.count} key(s) of {found.raw_table} {where}: their latest "
                                    f"version {late}")
    gone = DELETED_PARENT if found.parent_deleted else "is missing"
    return AuditFailure(model, "assert_relationship", found.count, found.example,
                        f"{found.query}  -- rows of {found.raw_table} whose parent in {found.parent_table} {gone}")


def _held_pages(found: list[Any]) -> str:
    """The runbook sections for rows held out of staging."""
    return " and ".join(f"docs/runbook.md#{a}" for a, present in (
        ("orphan-rows", any(not o.event_time for o in found)),
        ("rows-without-an-event-time", any(o.event_time for o in found))) if present)


def _held_out(found: list[Any]) -> str:
    """The first line of the failure for rows held out of staging (orphans, rows without their time)."""
    kinds = [k for k, present in (("whose parent is missing", any(not o.event_time and not o.parent_deleted for o in found)),
                                  ("whose parent was deleted", any(o.parent_deleted for o in found)),
                                  ("without their event time",
                                   any(o.event_time and not o.before and not o.after for o in found))) if present]
    pages = _held_pages(found)
    overdue = "".join(f" {o.overdue}: they fail as under held_rows: fail." for o in found if o.overdue)
    return (f"Rows {' and rows '.join(kinds)} were held out of staging (the rest was built); each transform "
            "checks them again, and fails, until the rows are corrected at the source"
            f"{' or the parent is loaded' if any(not o.event_time and not o.parent_deleted for o in found) else ''}"
            f" (runbook: {pages}).{overdue}")


def _held_why(found: Any) -> str:
    """Why rows were held out, in a few words (the run history, `elt status`, the report)."""
    if found.before:
        return f"{found.event_time} before {found.before}"
    if found.after:
        return f"{found.event_time} after {found.after}"
    if found.event_time:
        return f"no {found.event_time}"
    return f"parent {'deleted' if found.parent_deleted else 'missing'} in {found.parent_table}"


def _held_counts(found: list[Any]) -> list[dict[str, Any]]:
    return [{"table": o.raw_table, "rows": o.count, "warn": o.warn, "why": _held_why(o)} for o in found]


def _held_warning(direct: dict[str, set[str]], found: list[Any]) -> str:
    """The warning for rows held out of staging from tables that declare ``held_rows: warn``."""
    pages = _held_pages(found)
    tables = ", ".join(sorted({o.raw_table for o in found}))
    declared = [o for o in found if not o.before and not o.after]
    tables = ", ".join(sorted({o.raw_table for o in declared}))
    lines = ([f"warning: rows of {tables} were held out of staging and the marts (the rest was built). Their "
              "table declares held_rows: warn, so the transform passed; every transform checks them again and "
              "reports them until they are corrected at the source"
              f"{' or the parent is loaded' if any(not o.event_time and not o.parent_deleted for o in found) else ''}"
              f" (runbook: {pages})."] if declared else [])
    if any(o.before for o in found):
        lines.append("warning: rows dated before the models' start are in no mart (the rest was built). If their date "
                     "is wrong, correct it at the source and load it; if the data really starts earlier, move the "
                     "models' start (model_defaults in config.yaml) and restate the model that reads the table "
                     "(`sqlmesh plan --restate-model <model>`). If the start leaves them out on purpose, ignore this "
                     "warning: it repeats while they are their key's latest version (runbook: "
                     "docs/runbook.md#rows-without-an-event-time).")
    if any(o.after for o in found):
        lines.append("warning: rows dated after today (UTC) are in no mart yet: SQLMesh builds a day once it has ended, "
                     "and reads them then (the rest was built). If the date is a typo, correct it at the source and "
                     "load it; such rows reach the marts on their day. This warning repeats on every transform while "
                     "they wait (runbook: docs/runbook.md#rows-without-an-event-time).")
    for o in found:
        failure = _orphan_failure(direct, o)
        if not failure.heading:  # not an audit that failed: rows held out
            model = failure.model
            failure.heading = f"{o.count} row(s) of {o.raw_table} held out of {model}: {_held_why(o)}"
        lines.append(f"  - {failure.render()}")
    return "\n".join(lines)


# a connection's end in psycopg2's words (and the cursor of a closed connection's)
_CONNECTION_LOST = re.compile(r"server closed the connection|connection already closed|cursor already closed|"
                              r"terminating connection|could not connect to server|connection refused|"
                              r"SSL connection has been closed", re.IGNORECASE)


def _server_failure(step: str, exc: BaseException) -> TransformFailed | None:
    """A PostgreSQL error that SQLMesh did not turn into a model's failure (in the plan's view swap,
    or a state write: `NodeExecutionFailedError` and its traceback) as a ``TransformFailed`` whose
    model error is the server's own words, so it gets the hint of its kind (a lost connection is
    retried by the scheduler); None for any other exception, which is raised as before."""
    import psycopg2

    root: BaseException | None = exc
    seen: set[int] = set()
    while root is not None and id(root) not in seen and not isinstance(root, psycopg2.Error):
        seen.add(id(root))
        root = root.__cause__ or root.__context__
    if root is None or not isinstance(root, psycopg2.Error):
        return None
    where = getattr(exc, "node", None) or type(exc).__name__
    return TransformFailed(step, [], f"SQLMesh's {step} stopped on a warehouse error ({where}).",
                           model_errors=[f"{step}: {type(root).__name__}: {first_line(root)}"])


def _needs_plan(ctx, environment: str, snapshots: dict[str, Any]) -> bool:  # type: ignore[no-untyped-def]
    """True when local models (``ctx.snapshots``) differ from what the environment serves, or it
    does not exist, or a plan promoted it and died before finalizing it: SQLMesh's run then waits
    for that plan (6 hours by default, then fails), and only a plan applied again finalizes it.
    `elt` holds the environment's lock around plan and run, so no other `elt` plan is in flight (a
    bare `sqlmesh plan` at the same time is what the runbook says not to do)."""
    env = ctx.state_reader.get_environment(environment)
    if env is None or not env.finalized_ts:
        return True
    # the project's before_all / after_all (config.yaml): SQLMesh's run executes the environment's
    # stored ones, so a warehouse planned before they changed needs a plan to take them
    if _statements(getattr(ctx, "_environment_statements", None)) != \
            _statements(ctx.state_reader.get_environment_statements(environment)):
        return True
    local = {s.snapshot_id for s in snapshots.values()}
    served = {s.snapshot_id for s in env.snapshots}
    return local != served


def _statements(items: Any) -> list[tuple[list[str], list[str]]]:
    return [(list(s.before_all), list(s.after_all)) for s in items or []]


def _arm_failpoints_inside_sqlmesh(ctx) -> None:  # type: ignore[no-untyped-def]
    """ELT_FAILPOINT=transform.mid_evaluation: SIGKILL after the N-th model interval is written
    (ELT_FAILPOINT_AFTER=N), before SQLMesh records it. ELT_FAILPOINT=transform.before_finalize:
    SIGKILL when a plan has promoted the environment, before it marks it finalized."""
    from sources import failpoints

    if os.environ.get("ELT_FAILPOINT") == "transform.before_finalize":
        from sqlmesh.core.state_sync.db.facade import EngineAdapterStateSync

        finalize = EngineAdapterStateSync.finalize

        def killed_first(self: Any, *args: Any, **kwargs: Any) -> Any:
            failpoints.hit("transform.before_finalize")
            return finalize(self, *args, **kwargs)

        EngineAdapterStateSync.finalize = killed_first  # type: ignore[method-assign]
        return
    if os.environ.get("ELT_FAILPOINT") != "transform.mid_evaluation":
        return
    # On the class: SQLMesh's plan and run evaluate through evaluator instances other than
    # ``ctx.snapshot_evaluator``, so patching that instance never fired (found by counting kills).
    # Only in a run with this failpoint set, which is its own `elt transform` process.
    from sqlmesh.core.snapshot.evaluator import SnapshotEvaluator

    original = SnapshotEvaluator.evaluate

    def evaluate(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        failpoints.hit_after("transform.mid_evaluation")
        return out

    SnapshotEvaluator.evaluate = evaluate  # type: ignore[method-assign]


def _record_served(ctx, environment: str, planned: bool = True) -> None:  # type: ignore[no-untyped-def]
    """What the environment serves after this transform, once per SQLMesh plan (``deploys.SERVED``):
    a later plan not recorded there was made outside `elt`. A record, not the transform's work: a
    failure to write it is logged.

    ``planned`` false (a transform that applied no plan of its own): a plan made outside `elt` that
    changed models stays unrecorded, so that a checkout without its change is still refused. An
    `elt transform` from the checkout that made it (the runbook's step after a bare `sqlmesh
    plan`) recorded it as elt's own, and the scheduler's older checkout then put the change back,
    green (a probe). The first record of an environment (nothing recorded yet) is taken as the base."""
    from orchestrator.transform.deploys import changed_outside, record_served

    try:
        env = ctx.state_reader.get_environment(environment)
        if not planned and changed_outside(ctx.engine_adapter, environment, env) is not None:
            return
        record_served(ctx.engine_adapter, environment, env)
    except Exception as exc:  # noqa: BLE001 - the transform's work is done; the guard then has less to go on
        log.warning(f"could not record what {environment} serves: {first_line(exc)}; a later plan made outside "
                    "`elt transform` will not be told from this one", extra={"fields": {"environment": environment}})


def _prune_consumed(ctx, local: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """After a deploy: forget what versions SQLMesh no longer has consumed (``windows.prune_consumed``),
    from the versions its state holds for every model of this checkout and of every environment.
    Housekeeping, not the transform's work: a failure is logged."""
    from orchestrator.transform.restate import schema_table
    from orchestrator.transform.windows import prune_consumed

    if ctx.engine_adapter.dialect == "spark":  # its Parquet tables cannot delete rows
        return
    try:
        names = {s.name for s in local.values() if s.is_model}
        names |= {i.name for env in ctx.state_reader.get_environments() for i in env.snapshots}
        records = ctx.state_reader.get_snapshots_by_names(names, exclude_expired=False)
        versions, rows = prune_consumed(ctx.engine_adapter, {(schema_table(r.name).lower(), str(r.version)) for r in records},
                                        {schema_table(n).lower() for n in names})
    except Exception as exc:  # noqa: BLE001 - the transform's work is done; the record only stays longer
        log.warning(f"could not forget the consumed batches of model versions SQLMesh no longer has: {first_line(exc)}",
                    extra={"fields": {"next": "nothing is wrong with the data; the next deploy tries again"}})
        return
    if versions:
        log.info(f"forgot {rows} consumed-batch record(s) of {versions} model version(s) SQLMesh no longer has",
                 extra={"fields": {"versions": versions, "rows": rows}})


def _short_name(fqn: str) -> str:
    """``schema.model`` of a snapshot's quoted ``"catalog"."schema"."model"``."""
    table = exp.to_table(fqn)
    return f"{table.db}.{table.name}" if table.db else table.name


def _deploy_guard(ctx, environment: str, local: dict[str, Any], allow_revert: bool):  # type: ignore[no-untyped-def]
    """Before a plan: stop when this checkout would apply models from a commit behind (or beside)
    the one that last deployed ``environment``, or would put back versions a rollback took out
    (``deploys.refusal``). Returns what the transform records just before it plans: (this
    checkout, the changed models, whether it is a rollback, the versions a rollback takes out)."""
    from orchestrator.transform.deploys import (
        ABSENT,
        changed_outside,
        checkout,
        last_deploy,
        outside_refusal,
        own_version,
        refusal,
        rolled_back_versions,
    )

    env = ctx.state_reader.get_environment(environment)
    served = {s.snapshot_id: s.name for s in env.snapshots} if env is not None else {}
    names = {s.name for s in local.values()}
    changed = sorted({_short_name(s.name) for s in local.values() if s.snapshot_id not in served}
                     | {f"{_short_name(n)} (removed)" for n in set(served.values()) - names})
    here = checkout(Path(ctx.path))
    why, rollback, taken_out = None, False, {}
    if changed and env is not None:
        mine = {s.name: own_version(s.fingerprint) for s in local.values()}
        last = last_deploy(ctx.engine_adapter, environment)
        record = rolled_back_versions(ctx.engine_adapter, last) if last is not None and last.reverted else None
        # the rolled-back versions this checkout would put back (a model the rollback brought back
        # is put back out when this checkout lacks it)
        undone = None if record is None else sorted(
            _short_name(name) for name, version in record.items()
            if (name not in mine if version == ABSENT else mine.get(name) == version))
        why, rollback = refusal(Path(ctx.path), environment, last, here, changed, undone)
        outside = changed_outside(ctx.engine_adapter, environment, env) if not why and environment == "prod" else None
        if outside is not None:
            # a bare `sqlmesh plan` changed models: this checkout's plan would put back what they
            # were before it (the scheduled transform of an unmerged checkout did, without a word: a
            # probe). By each model's own definition: a checkout that holds the change, or changed
            # the model again since, is not putting anything back (a review)
            mine_own = {_short_name(s.name): own_version(s.fingerprint) for s in local.values()}
            theirs_own = {_short_name(s.name): own_version(s.fingerprint) for s in env.snapshots}
            at_stake = sorted(m for m, before in outside[1].items()
                              if mine_own.get(m) == before and mine_own.get(m) != theirs_own.get(m))
            if at_stake:
                why, rollback = outside_refusal(environment, outside[0], at_stake, here), True
        if why and not allow_revert:
            raise TransformFailed("deploy", [], why)
        if why:
            log.warning("deploying with --allow-revert", extra={"fields": {"environment": environment, "why": why}})
        if rollback:  # what this rollback takes out: a newer checkout that puts it back is refused
            theirs = {s.name: own_version(s.fingerprint) for s in env.snapshots}
            taken_out = {name: version for name, version in theirs.items() if mine.get(name) != version}
            taken_out.update({name: ABSENT for name in set(mine) - set(theirs)})
    return here, changed, rollback, taken_out


def _transform(ctx, console, environment, verify, started, before_restating=None,  # type: ignore[no-untyped-def]
               fail_on_held=True, allow_revert=False) -> TransformSummary:
    from sqlmesh.utils.errors import NoChangesPlanError, PlanError

    from sources import failpoints

    adapter = ctx.engine_adapter
    loaded_through, before = transform_watermarks(adapter, environment)
    _arm_failpoints_inside_sqlmesh(ctx)
    # ctx.snapshots reads SQLMesh's state on every access: read once, for both questions. The plan
    # question compares snapshot ids only, so it is asked before restating changes intervals.
    local = ctx.snapshots
    needs_plan = _needs_plan(ctx, environment, local)
    deploy = _deploy_guard(ctx, environment, local, allow_revert) if needs_plan else None
    if before_restating is None and environment == "prod":
        from orchestrator.transform import backfill

        if backfill.unfinished(ctx.engine_adapter) is not None:
            # a backfill stopped and not rerun yet: a scheduled transform in between restated its days
            # without recording them, and the rerun then printed "nothing changed" (a backfill probe).
            # Its record takes the days this transform restates too, as the rerun says it counts them.
            def record_for_backfill(ctx: Any, scope: Any) -> None:
                try:
                    backfill.record_before(ctx, scope)
                except Exception as exc:  # noqa: BLE001 - the record is a report; the transform goes on
                    # (a mart that gained a column since reads its served table with the new column:
                    # this failed every scheduled transform until the backfill was rerun, found by a review)
                    log.warning(f"could not add the days this transform restates to the record of the unfinished "
                                f"backfill: {first_line(exc)}; its rerun's difference will not count what this "
                                "transform changed", extra={"fields": {"environment": environment}})

            before_restating = record_for_backfill
    restated = restate_pending(ctx, environment, local=local, before_restating=before_restating)

    applied = False
    if needs_plan:
        from orchestrator.transform.deploys import deploy_applied, forget_deploy, record_deploy

        # before the plan: a plan killed half-way still counts as this commit's deploy
        deploy_id = record_deploy(adapter, environment, *deploy) if deploy is not None and deploy[1] else None
        try:
            plan = ctx.plan(environment, auto_apply=True, no_prompts=True)
            applied = bool(plan.has_changes or plan.requires_backfill)
            if deploy_id:
                deploy_applied(adapter, deploy_id)
            _record_served(ctx, environment)  # at once: this plan is elt's, even if the run is killed
        except NoChangesPlanError:
            applied = False
            if deploy_id:
                forget_deploy(adapter, deploy_id)
        except PlanError as exc:
            if deploy_id:  # a unit test or a model failed: SQLMesh promoted nothing
                forget_deploy(adapter, deploy_id)
            if any(interrupted_text(e) for e in console.model_errors):  # Ctrl-C in a model's query
                raise KeyboardInterrupt("plan") from exc
            lost = next((line.strip() for trace in console.test_errors for line in trace.splitlines()
                         if _CONNECTION_LOST.search(line)), None)
            if lost is not None:
                # the unit tests could not reach the warehouse: no test failed, and the scheduler
                # retries a lost connection (this read "failing test(s)", and was not retried: a
                # scheduler probe)
                raise TransformFailed(
                    "plan", [], "SQLMesh's unit tests lost the warehouse; no test failed.",
                    model_errors=[f"plan: lost the connection to the warehouse while the unit tests ran: {lost}"],
                ) from exc
            raise TransformFailed(
                "plan", [_describe(ctx, e) for e in console.audit_errors], str(exc), console.skipped_models,
                console.model_errors,
            ) from exc
        except Exception as exc:
            failure = _server_failure("plan", exc)
            if failure is None:
                raise
            raise failure from exc
        failpoints.hit("transform.after_plan")
    else:
        from orchestrator.transform.deploys import settle_cut_off

        settle_cut_off(adapter, environment, Path(ctx.path))

    if environment != "prod" and ctx.state_reader.get_environment(environment) is None:
        # a plan with nothing to change makes no dev environment, and SQLMesh's run then raised
        # "Environment 'dev' was not found" in a traceback (a probe)
        from sources.errors import ConfigError

        raise ConfigError(f"environment {environment} does not exist yet: a transform keeps an existing dev environment "
                          "up to date, and this checkout changes no model for the plan to create it with",
                          hint=f"create it with `elt preview {environment}` (or `sqlmesh plan {environment}`); "
                               "nothing was done")
    try:
        status = ctx.run(environment)
    except Exception as exc:
        failure = _server_failure("run", exc)
        if failure is None:
            raise
        raise failure from exc
    if any(interrupted_text(e) for e in console.model_errors):  # Ctrl-C in a model's query
        raise KeyboardInterrupt("run")
    if console.audit_errors or getattr(status, "is_failure", False):
        raise TransformFailed("run", [_describe(ctx, e) for e in console.audit_errors], skipped=console.skipped_models,
                              model_errors=console.model_errors,
                              written=[schema_table(m) for m, _, _ in console.evaluated])
    failpoints.hit("transform.after_run")
    _record_served(ctx, environment, planned=applied)
    # when a deploy has just added records for its versions; a version the janitor removes between
    # deploys (a week after no environment uses it) is forgotten at the next one
    if applied and environment == "prod":
        _prune_consumed(ctx, local)
    direct = lineage_direct(ctx) if restated.orphans else {}
    failing = [o for o in restated.orphans if not o.warn]
    held = TransformFailed("run", [_orphan_failure(direct, o) for o in failing], _held_out(failing), orphans=True,
                           timeless=any(o.event_time and not o.before and not o.after for o in failing)
                           ) if failing else None
    if held is not None:
        held.held_counts = _held_counts(restated.orphans)  # the run history records warned ones too
    if held is not None and fail_on_held:
        raise held
    # tables declaring held_rows: warn: the transform passes and says what it held out
    warned = [o for o in restated.orphans if o.warn]

    summary = TransformSummary(environment, applied, sorted(restated.windows), 0, 0, 0, 0.0,
                               run_status=str(status.name).lower(),
                               watermark_before=None if before is None else str(before))
    summary.restated_windows = restated.windows
    summary.held = str(held) if held is not None else ""
    summary.warned = _held_warning(direct, warned) if warned else ""
    summary.held_counts = _held_counts(restated.orphans)
    summary.evaluated = list(console.evaluated)
    if summary.evaluated:  # what SQLMesh's scheduler evaluated: "which days ran" without reading state
        log.info(f"{len(summary.evaluated)} interval(s) evaluated", extra={"fields": {
            "environment": environment, "intervals": [f"{m} {a}..{_last_day(a, b)}" for m, a, b in summary.evaluated]}})
    if len(restated.windows) > SHOWN_RESTATED:  # the summary line names the first ones only
        log.info(f"{len(restated.windows)} model(s) restated", extra={"fields": {
            "environment": environment, "restated": [f"{m} ({w})" for m, w in restated.windows.items()]}})
    # a non-blocking audit that failed is not passed: it counted as passed, and the summary said
    # "6/6 passed" under SQLMesh's warning of 27,712 failing rows (a probe)
    summary.audits_run, summary.audits_passed, summary.models_audited = (
        console.audits_run, console.audits_run - console.audits_failed - len(console.audit_errors),
        len(console.audited_models))
    # SQLMesh warns per interval: one audit failing on 30 restated days is one audit, its rows summed
    warned: dict[tuple[str, str], list[int]] = {}
    for model, audit, rows in console.audit_warnings:
        warned.setdefault((model, audit), []).append(rows)
    summary.audits_warned = [(m, a, sum(rows)) for (m, a), rows in warned.items()]
    if verify:
        summary.audits_run, summary.audits_passed, summary.models_audited, summary.failures = verify_audits(ctx)
    summary.elapsed_s = time.monotonic() - started
    if summary.failures:
        raise TransformFailed("audit verification", summary.failures)
    if loaded_through is not None:
        when = exp.Literal.string(str(loaded_through)).sql(adapter.dialect)
        env = exp.Literal.string(environment).sql(adapter.dialect)
        adapter.execute(f"INSERT INTO {WATERMARKS} VALUES ({env}, CAST({when} AS TIMESTAMP), CURRENT_TIMESTAMP)")
    summary.watermark_after = str(loaded_through) if loaded_through is not None else summary.watermark_before
    return summary


def verify_audits(ctx) -> tuple[int, int, int, list[AuditFailure]]:  # type: ignore[no-untyped-def]
    """Run every audit of every model over all of its data (not only the last interval)."""
    from sqlmesh.utils.errors import AuditError

    start = ctx.config.model_defaults.start or "2000-01-01"
    end = datetime.now(UTC).date().isoformat()
    run = passed = models = 0
    failures = []
    for snapshot in ctx.snapshots.values():
        if not snapshot.is_model or snapshot.is_external or not snapshot.node.audits_with_args:
            continue
        models += 1
        for result in ctx.snapshot_evaluator.audit(snapshot=snapshot, start=start, end=end, snapshots=ctx.snapshots):
            if result.skipped:
                continue
            run += 1
            if result.count:
                error = AuditError(
                    audit_name=result.audit.name,
                    audit_args=result.audit_args,
                    count=result.count,
                    query=result.query,
                    model=result.model,
                    adapter_dialect=ctx.engine_adapter.dialect,
                )
                failures.append(_describe(ctx, error))
            else:
                passed += 1
    return run, passed, models, failures
