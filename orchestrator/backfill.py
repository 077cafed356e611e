"""One-command backfill: ``elt backfill SOURCE --start 2018-09-01 --end 2018-09-08``.

1. Bring prod up to date first (``transform``) if raw holds batches no transform has seen, so the
   watermark advanced in step 5 cannot hide someone else's pending batches.
2. Snapshot every mart (a hash of each row, by the mart's grain).
3. Re-extract the source into new landing batches and load them (``ingest(force=True)``: raw is
   append-only, the earlier batches stay, history shows both).
4. Restate the models that read the source's raw tables, and everything downstream, for the window
   only (``plan(restate_models=..., start, end)``). Intervals outside the window are not recomputed
   (FULL models are recomputed whole, as SQLMesh always does).
5. Advance ``elt_meta.transform_watermarks`` past the backfill's batches, so the next
   ``elt transform`` does not restate whole models for them again.
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

    from orchestrator.transform import WATERMARKS, TransformFailed, make_context, models_reading

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
            raw_tables = {f"{spec.raw_schema}.{t}" for t in spec.tables}

            ctx, _ = make_context(settings, quiet=True)
            try:
                restate = models_reading(ctx, raw_tables)
                ctx.plan("prod", restate_models=restate, start=start.isoformat(), end=end.isoformat(),
                         auto_apply=True, no_prompts=True)
                adapter = ctx.engine_adapter
                newest = adapter.fetchone("SELECT max(loaded_at) FROM elt_meta.loaded_batches")[0]
                if newest is not None:
                    from sqlglot import exp

                    when = exp.Literal.string(str(newest)).sql(adapter.dialect)
                    adapter.execute(f"INSERT INTO {WATERMARKS} VALUES ('prod', CAST({when} AS TIMESTAMP), CURRENT_TIMESTAMP)")
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
    print(f"restated {', '.join(restate) or 'nothing'} (and downstream) for {start} .. {end}", file=out)
    print(f"{'mart':<22} {'added':>8} {'changed':>8} {'removed':>8}", file=out)
    for d in diffs:
        print(f"{d.mart:<22} {d.added:>8,} {d.changed:>8,} {d.removed:>8,}", file=out)
    return diffs


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
