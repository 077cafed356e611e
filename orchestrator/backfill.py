"""One-command backfill: ``elt backfill SOURCE --start 2018-09-01 --end 2018-09-08``.

1. Bring prod up to date first (``transform``) if raw holds batches no transform has seen, so the
   watermark advanced in step 5 cannot hide someone else's pending batches.
2. Snapshot every mart (a hash of each row, by the mart's grain).
3. Re-extract the source into new landing batches and load them (``ingest(force=True)``: raw is
   append-only, the earlier batches stay, history shows both).
4. Transform: the new batches are pending for the models reading the source, which restate the
   days the batches' rows touch (orchestrator/windows.py): the window for a table read by window;
   for a source read whole (files, APIs), the days where the source really changed, which may lie
   outside the window: they are restated too and reported, never left stale.
5. (The batches are recorded as consumed with that restatement: a later transform redoes nothing.)
6. Snapshot the marts again and print rows added, changed and removed per mart.

Safe to run twice: the second run lands identical rows, staging keeps one version per key, and the
difference printed is zero. The locks of every load job and ``sqlmesh:prod`` are held throughout
(the transform job's locks, in the same order), so a backfill never overlaps a scheduled load or
transform, and no other source's batch can land between the restatement and the watermark of step 5.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

from orchestrator.locks import make_lock
from orchestrator.runner import transform_lock_names
from orchestrator.settings import Settings
from sources.config import load_source
from sources.errors import ConfigError, LoaderError
from sources.logs import get_logger

log = get_logger("orchestrator.backfill")


@dataclass
class MartDiff:
    mart: str
    added: int
    changed: int
    removed: int


class BackfillFailed(Exception):
    pass


def _snapshot(ctx: Any) -> dict[str, dict[Any, str]]:
    """Per mart: grain key -> hash of the whole row (row position when a mart declares no grain)."""
    snaps: dict[str, dict[Any, str]] = {}
    for model in ctx.models.values():
        name = model.name.replace('"', "")
        schema_table = ".".join(name.split(".")[-2:])
        if not schema_table.startswith("marts."):
            continue
        try:
            df = ctx.engine_adapter.fetchdf(f"SELECT * FROM {schema_table}")
        except Exception:  # noqa: BLE001 - a mart not built yet has no rows to compare
            snaps[schema_table] = {}
            continue
        grain = [g.sql() if hasattr(g, "sql") else str(g) for g in (model.grains or [])]
        grain = [g for g in grain if g in df.columns]
        rows: dict[Any, str] = {}
        for record in df.astype(str).to_dict("records"):
            digest = hashlib.sha256(repr(sorted(record.items())).encode()).hexdigest()
            key = tuple(record[g] for g in grain) if grain else digest
            rows[key] = digest
        snaps[schema_table] = rows
    return snaps


def diff(before: dict[str, dict[Any, str]], after: dict[str, dict[Any, str]]) -> list[MartDiff]:
    out = []
    for mart in sorted(set(before) | set(after)):
        b, a = before.get(mart, {}), after.get(mart, {})
        out.append(MartDiff(mart, len(a.keys() - b.keys()), sum(1 for k in a.keys() & b.keys() if a[k] != b[k]),
                            len(b.keys() - a.keys())))
    return out


def backfill(settings: Settings, source: str, start: date, end: date, *, out: TextIO | None = None) -> list[MartDiff]:
    from sqlmesh.utils.errors import SQLMeshError

    from orchestrator.transform import TransformFailed, make_context, transform

    out = out or sys.stdout
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}", source=source, hint="give --start <= --end")
    spec = load_source(source)
    held: list[Any] = []
    wait_s = float(os.environ.get("ELT_BACKFILL_LOCK_WAIT_S", "3600"))
    try:
        for name in transform_lock_names(settings):
            lock = make_lock(settings, name)
            if not lock.acquire(timeout=wait_s):
                raise LoaderError(f"lock {name} stayed busy for {wait_s:.0f}s (a load, a transform or another backfill)",
                                  source=spec.name, hint="wait for it (see `elt runs`) and rerun the backfill")
            held.append(lock)
        # step 1-2 in a child process: DuckDB allows one writing process per file, and a SQLMesh
        # context keeps its connection open until the process exits; the load (step 3) is another one
        with tempfile.TemporaryDirectory(prefix="elt-backfill-") as tmp:
            snap_file = Path(tmp) / "before.json"
            prep = subprocess.run([sys.executable, "-m", "orchestrator.backfill", "prepare", str(snap_file)],
                                  capture_output=True, text=True, cwd=settings.project_root)
            if prep.returncode != 0:
                raise BackfillFailed(f"backfill of {source}: preparing prod failed; nothing was changed.\n"
                                     f"{prep.stderr.strip()}")
            if prep.stdout.strip():
                print(prep.stdout.rstrip(), file=out)
            before = _load_snapshot(snap_file)
        try:
            # in a child process: DuckDB allows one configuration per file and process, and the
            # SQLMesh context above keeps its connection open
            load = subprocess.run([sys.executable, "-m", "orchestrator.cli", "load", source, "--window",
                                   start.isoformat(), end.isoformat()],
                                  capture_output=True, text=True, cwd=settings.project_root,
                                  env={**os.environ, "ELT_JOB_LOCK_HELD": f"job:{spec.name}"})  # held above
            print(load.stdout.rstrip(), file=out)
            if load.returncode != 0:
                raise BackfillFailed(f"backfill of {source}: re-extracting failed; nothing was restated. "
                                     f"{load.stderr.strip().splitlines()[-1] if load.stderr.strip() else ''}\n"
                                     f"  next: fix the source, then rerun the same `elt backfill` command")
            # the new batches are pending for every model version reading the source: the transform
            # restates exactly the days their rows touch (windows.py), in the window and, for a source
            # re-read whole, wherever else the source changed (reported, never left stale)
            summary = transform(settings, environment="prod", quiet=True)
            restate = [f"{m} ({w})" for m, w in summary.restated_windows.items()]
            ctx, _ = make_context(settings, quiet=True)
            try:
                after = _snapshot(ctx)
            finally:
                ctx.close()
        except (TransformFailed, SQLMeshError) as exc:
            raise BackfillFailed(f"backfill of {source}: restating {start} .. {end} failed: {exc}\n"
                                 "  the new batches are in raw; fix the cause and rerun the same command "
                                 "(runbook: docs/runbook.md#backfill)") from None
    finally:
        for lock in reversed(held):
            lock.release()

    diffs = diff(before, after)
    print(f"re-extracted {source} for {start} .. {end}; restated {'; '.join(restate) or 'nothing'}", file=out)
    outside = [m for m in restate if _outside(m, start, end)]
    if outside:
        print("note: the source also changed outside the window; those days were restated too (raw holds the "
              "changes, and marts never stay stale against raw)", file=out)
    print(f"{'mart':<22} {'added':>8} {'changed':>8} {'removed':>8}", file=out)
    for d in diffs:
        print(f"{d.mart:<22} {d.added:>8,} {d.changed:>8,} {d.removed:>8,}", file=out)
    return diffs


def _outside(restated: str, start: date, end: date) -> bool:
    """True when a restated-windows description names a day outside [start, end].

    >>> _outside("marts.orders (2 day(s): 2018-09-03, 2018-09-20)", date(2018, 9, 1), date(2018, 9, 7))
    True
    """
    import re

    days = [date.fromisoformat(d) for d in re.findall(r"\d{4}-\d{2}-\d{2}", restated)]
    return "all history" in restated or any(d < start or d > end for d in days)


def _load_snapshot(path: Path) -> dict[str, dict[Any, str]]:
    raw = json.loads(path.read_text())
    return {mart: {tuple(k) if isinstance(k, list) else k: v for k, v in rows} for mart, rows in raw.items()}


def prepare(settings: Settings, snapshot_file: Path) -> int:
    """Steps 1-2, in their own process: transform pending batches, then snapshot the marts."""
    from orchestrator.transform import changed_since_last_transform, make_context, transform

    ctx, _ = make_context(settings, quiet=True)
    try:
        pending, _, _ = changed_since_last_transform(ctx.engine_adapter, "prod")
        env_exists = ctx.state_reader.get_environment("prod") is not None
    finally:
        ctx.close()
    if not env_exists:
        print("prod has never been built; run `elt transform` once before backfilling a window", file=sys.stderr)
        return 1
    if pending:
        print(f"prod has batches no transform has seen ({', '.join(sorted(pending))}); transforming first")
        transform(settings, environment="prod", quiet=True)
    ctx, _ = make_context(settings, quiet=True)
    try:
        snap = _snapshot(ctx)
    finally:
        ctx.close()
    snapshot_file.write_text(json.dumps({m: [[list(k) if isinstance(k, tuple) else k, v] for k, v in rows.items()]
                                         for m, rows in snap.items()}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "prepare":
        from sources import logs

        logs.configure()
        try:
            sys.exit(prepare(Settings.from_env(), Path(sys.argv[2])))
        except Exception as exc:  # noqa: BLE001
            print(str(exc), file=sys.stderr)
            sys.exit(1)
    sys.exit("usage: python -m orchestrator.backfill prepare SNAPSHOT_FILE (used by `elt backfill`)")
