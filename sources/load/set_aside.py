"""Set a landed batch aside: raw never applies it, and the later batches of its table apply.

A batch that lands but cannot be applied (a value the raw store refuses, a damaged data file) is
otherwise applied first on every run and fails again, so its table is blocked for good. Setting it
aside (``elt set-aside``) is recorded twice, never by touching the batch:

- beside the batch in landing (``.set_aside/<batch_id>.json``): a replay of landing into another
  warehouse honours it;
- in the raw store (``elt_meta.set_aside_batches``, in a transaction that checks the ledger):
  what ``elt status`` and the report show and what a loader checks before it applies a batch.

Landing is written first and raw second; undoing removes them in the other order. A crash in
between leaves the batch set aside, and the next load records it in raw again (sources/pipeline.py).
Setting a batch aside never moves a cursor: see docs/decisions/0015-set-aside-batches.md.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime

import pyarrow.fs as pafs

from sources.config import SourceSpec
from sources.errors import LoaderError, RawLoadError
from sources.landing.manifest import MANIFEST_NAME, Manifest
from sources.landing.store import Landing, SetAside
from sources.load.base import RawStore


def os_user() -> str:
    """Who runs this process (the default of ``--by``)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry
        return f"uid {os.getuid()}"


def landed_batch(spec: SourceSpec, table: str, batch_id: str, landing: Landing, raw: RawStore) -> Manifest:
    """The manifest of one landed batch, or an error listing the table's batches raw lacks."""
    path = f"{landing.batch_dir(spec.name, table, batch_id)}/{MANIFEST_NAME}"
    if landing.fs.get_file_info(path).type == pafs.FileType.File:
        return landing.read_manifest(path)
    done = raw.loaded_batch_ids(spec.name, table)
    pending = [b for b in landing.batch_ids(spec.name, table, applied=done) if b not in done]
    raise LoaderError(
        f"no landed batch {batch_id} in {landing.table_dir(spec.name, table)}", source=spec.name, table=table,
        hint=f"batches of this table that raw lacks: {', '.join(pending[-5:])}" if pending else
        "raw holds every landed batch of this table: nothing to set aside",
    )


def set_aside(spec: SourceSpec, table: str, batch_id: str, *, landing: Landing, raw: RawStore, reason: str,
              by: str | None = None) -> tuple[SetAside, list[str]]:
    """Set one landed batch aside; returns its record and what it means for the table's data.

    Setting aside a batch that is set aside already keeps the first record (who, when, why).
    """
    manifest = landed_batch(spec, table, batch_id, landing, raw)
    where = {"source": spec.name, "table": table, "batch_id": batch_id}
    if batch_id in raw.loaded_batch_ids(spec.name, table):
        raise RawLoadError(
            "the batch is already applied to raw; only a batch raw does not hold can be set aside", **where,
            hint="its rows are in raw; to correct them, land a corrected extract (docs/runbook.md#failed-audit)",
        )
    record = landing.set_asides(spec.name, table).get(batch_id) or SetAside(
        spec.name, table, batch_id, manifest.rows, by or os_user(), datetime.now(UTC).isoformat(), reason)
    landing.write_set_aside(record)
    try:
        raw.record_set_aside(record, spec.raw_schema)
    except BaseException:
        landing.remove_set_aside(spec.name, table, batch_id)
        raise
    return record, consequences(spec, manifest, raw.cursor(spec.name, table))


def bring_back(spec: SourceSpec, table: str, batch_id: str, *, landing: Landing, raw: RawStore) -> bool:
    """Undo a set-aside: the next load applies the batch (in landing order). False if it was not set aside."""
    in_raw = raw.remove_set_aside(spec.name, table, batch_id)
    in_landing = landing.remove_set_aside(spec.name, table, batch_id)
    return in_raw or in_landing


def consequences(spec: SourceSpec, manifest: Manifest, cursor: str | None) -> list[str]:
    """What setting ``manifest`` aside means for raw, said plainly (printed by ``elt set-aside``)."""
    command = f"elt set-aside {spec.name} {manifest.table} {manifest.batch_id} --undo"
    if manifest.snapshot:  # raw gains only a snapshot's differences (sources/load/changes.py)
        which = (f"those of the {manifest.rows:,} row(s) of this snapshot that differ from raw (new and changed "
                 "keys, and the deletions of keys it lacks)")
    elif manifest.changes_only:
        which = f"those of the {manifest.rows:,} row(s) of this batch that differ from raw"
    else:
        which = f"the {manifest.rows:,} row(s) of this batch"
    lines = [f"MISSING FROM RAW: {which} are not in raw until they are "
             f"re-delivered in a new batch, or the batch is brought back with `{command}`"]
    if manifest.cursor.get("field"):
        lines.append(
            f"cursor {manifest.cursor['field']} stays at {cursor or '(none: a full read)'} (this batch would have "
            f"moved it to {manifest.cursor.get('to')}): the next load reads these rows from the source again; "
            "fix them there first, or they land in a new batch that fails the same way")
    if manifest.snapshot:
        lines.append("a snapshot: the next snapshot is compared with what raw holds (without this batch), "
                     "so its changes reach raw with that one")
    if manifest.changes_only:
        lines.append("a re-read (a backfill or a forced load): a later re-read of the same rows brings the changes")
    if spec.kind == "files" and manifest.origin.get("path"):
        table = spec.tables.get(manifest.table)
        if table is not None and table.file:
            lines.append(f"file {manifest.origin['path']}: an unchanged file is not landed again; deliver a corrected "
                         "file, or, if the file itself is sound (the landed copy was damaged), land it again with "
                         f"`{manifest.force_command(table.file)}`")
        else:
            lines.append(f"file {manifest.origin['path']}: a file of the pattern is landed once; deliver a corrected "
                         "file under a new name")
    return lines
