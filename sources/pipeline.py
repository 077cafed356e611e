"""Load one file source: for each table, land a new extract if the file changed, then apply every
landed batch that raw does not have yet.

The second step makes the loader self-healing: a batch landed by a run that died before its raw
load is applied by the next run, and replaying landing into an empty warehouse rebuilds raw.
A failing table is reported and skipped; the other tables still load.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sources.config import SourceSpec, TableSpec
from sources.contracts import check_primary_key
from sources.errors import LoaderError
from sources.extract.csv_files import arrow_schema, file_sha256, read_csv_batches, require_file
from sources.landing.local import LocalLanding
from sources.landing.manifest import Manifest
from sources.load.duckdb_raw import DuckDBRaw
from sources.logs import Progress, get_logger

log = get_logger("sources.pipeline")


@dataclass
class TableOutcome:
    table: str
    landed: list[str] = field(default_factory=list)  # batch ids landed by this run
    applied: list[str] = field(default_factory=list)  # batch ids appended to raw by this run
    rows_landed: int = 0
    rows_applied: int = 0
    unchanged: bool = False  # the source file was already landed
    error: LoaderError | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.landed or self.applied:
            return "loaded"
        return "unchanged"


@contextmanager
def source_lock(landing: LocalLanding, source: str) -> Iterator[None]:
    """One loader per source at a time; the OS releases the lock if the process dies."""
    lock_dir = landing.root / source
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoaderError(
                "another load of this source is running",
                source=source,
                hint="wait for it to finish; the lock is released when that process exits",
            ) from None
        yield
    finally:
        os.close(fd)


def load_file_source(
    spec: SourceSpec,
    *,
    path: Path,
    landing: LocalLanding,
    raw: DuckDBRaw,
    tables: list[str] | None = None,
    force: bool = False,
    extract: bool = True,
) -> list[TableOutcome]:
    """Land and load every table of a file source; never raises for one table's bad data.

    With ``extract=False`` nothing is read from the source: only batches already in landing and
    missing from raw are applied (restoring raw from landing after losing the warehouse).
    """
    selected = [spec.tables[name] for name in (tables or list(spec.tables))]
    outcomes = []
    with source_lock(landing, spec.name):
        for table in selected:
            outcome = TableOutcome(table.name)
            try:
                manifest = land_file_table(spec, table, path / table.file, landing, force=force) if extract else None
                if manifest is None:
                    outcome.unchanged = True
                else:
                    outcome.landed.append(manifest.batch_id)
                    outcome.rows_landed += manifest.rows
                apply_pending(spec, table, landing, raw, outcome)
            except LoaderError as exc:
                outcome.error = exc
                log.error(
                    "table failed",
                    extra={"fields": {"source": spec.name, "table": table.name, "error": str(exc)}},
                )
            outcomes.append(outcome)
    return outcomes


def land_file_table(
    spec: SourceSpec, table: TableSpec, file: Path, landing: LocalLanding, *, force: bool = False
) -> Manifest | None:
    """Land ``file`` as a new batch, or return None when it equals the table's latest extract."""
    landing.sweep_incomplete(spec.name, table.name)
    where = {"source": spec.name, "table": table.name}
    require_file(file, **where)
    digest, stat = file_sha256(file), file.stat()
    landed = list(landing.batches(spec.name, table.name))
    # Compared with the latest extract only: a file reverted to older content is a new extract.
    if not force and landed and landed[-1].origin.get("sha256") == digest:
        log.info("unchanged since the latest extract", extra={"fields": {**where, "file": str(file)}})
        return None
    batches = read_csv_batches(file, table, source=spec.name)
    writer = landing.open_batch(spec.name, table.name, arrow_schema(table), datetime.now(UTC))
    progress = Progress(f"{spec.name}.{table.name} extract", log)
    try:
        for batch in batches:
            writer.write(batch)
            progress.advance(batch.num_rows)
        data = writer.close_data()
        check_primary_key(data, table, source=spec.name, batch_id=writer.batch_id)
        manifest = writer.commit(
            columns=[{"name": c.name, "type": c.type.name, "arrow": str(c.type.arrow)} for c in table.columns],
            primary_key=list(table.primary_key),
            origin={
                "kind": "file",
                "path": str(file.resolve()),
                "sha256": digest,
                "bytes": stat.st_size,
                "modified_at": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
            },
        )
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, LoaderError) and exc.batch_id is None:
            exc.batch_id = writer.batch_id
        raise
    progress.done()
    log.info("landed", extra={"fields": {**where, "batch_id": manifest.batch_id, "rows": manifest.rows}})
    return manifest


def apply_pending(spec: SourceSpec, table: TableSpec, landing: LocalLanding, raw: DuckDBRaw, outcome: TableOutcome) -> None:
    """Append, oldest first, every complete landed batch that raw does not hold yet."""
    done = raw.loaded_batch_ids(spec.name, table.name)
    for manifest in landing.batches(spec.name, table.name):
        if manifest.batch_id in done:
            continue
        result = raw.load(manifest, landing.data_files(manifest), spec.raw_schema)
        if result.applied:
            outcome.applied.append(result.batch_id)
            outcome.rows_applied += result.rows
            log.info(
                "applied to raw",
                extra={"fields": {"source": spec.name, "table": table.name, "batch_id": result.batch_id,
                                  "rows": result.rows, "raw_table": f"{spec.raw_schema}.{table.name}"}},
            )
