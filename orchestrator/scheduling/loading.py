"""Load a declared source into the configured warehouse and report what happened."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.settings import Settings
from sources.config import check_shared_tables, load_source
from sources.errors import ConfigError
from sources.logs import redact_userinfo
from sources.pipeline import TableOutcome, ingest


def load_source_into_warehouse(
    source: str,
    settings: Settings,
    *,
    path: Path | str | None = None,
    tables: list[str] | None = None,
    force: bool = False,
    extract: bool = True,
    window: tuple[str, str] | None = None,
) -> list[TableOutcome]:
    spec = load_source(source)
    check_shared_tables(spec)
    unknown = [t for t in tables or [] if t not in spec.tables]
    if unknown:
        raise ConfigError(
            f"unknown table(s) {unknown}", source=spec.name, hint=f"declared tables: {', '.join(spec.tables)}"
        )
    location = str(path) if path else spec.path
    if spec.kind == "files" and not location.startswith("s3://"):
        folder = Path(location)
        if not folder.is_absolute():
            folder = settings.project_root / folder
        if extract and not folder.is_dir():
            raise ConfigError(
                f"source folder {folder} does not exist",
                source=spec.name,
                hint="pass --path DIR with the folder of the source's files (for jafgen: the jaffle-data folder)",
            )
        location = str(folder)
    with settings.open_raw() as raw:
        return ingest(spec, landing=settings.open_landing(), raw=raw, tables=tables, force=force,
                           extract=extract, location=location, window=window)


SHOWN_BATCHES = 10  # batch ids listed in full on a table's line of the load report


def print_load_report(outcomes: list[TableOutcome], settings: Settings, stream=None) -> None:  # type: ignore[no-untyped-def]
    out = stream or sys.stdout
    print(f"{'table':<12} {'status':<10} {'landed rows':>12} {'applied rows':>13}  batches", file=out)
    for o in outcomes:
        ids = o.applied or o.landed
        # a first load of a pattern table, or a replay, applies thousands: one 41 KB line said nothing more
        batches = (", ".join(ids) if len(ids) <= SHOWN_BATCHES else
                   f"{', '.join(ids[:2])}, ... {ids[-1]} ({len(ids):,} batches)") or "-"
        print(f"{o.table:<12} {o.status:<10} {o.rows_landed:>12,} {o.rows_applied:>13,}  {batches}", file=out)
    for o in outcomes:
        for batch in o.set_aside:
            print(f"set aside (not applied): {o.table} {batch}; see `elt status`", file=out)
        if o.error:
            print(f"\nFAILED {o.table}: {redact_userinfo(str(o.error))}", file=out)
    for o in outcomes:
        for note in o.schema_notes:
            print(f"schema change in {o.table}: {note}", file=out)
        for note in o.notes:
            print(f"{o.table}: {note}", file=out)
    where = {"duckdb": str(settings.warehouse), "spark": "Spark (the `spark` gateway of config.yaml)"}.get(
        settings.gateway, f"PostgreSQL ({settings.pg_prefix}* settings)")
    print(f"\nwarehouse: {where}\nlanding:   {redact_userinfo(settings.landing_location)}", file=out)
