"""Freshness: how old the newest data of every source table and every mart is, against a declared
maximum age, evaluated on every tick whether or not anything ran.

- A source table's age is ``now - newest extracted_at`` of its batches that brought rows
  (``elt_meta.loaded_batches``). One measure catches both a dead loader (no batches at all) and a
  stalled source (loads succeed but bring nothing new). Its maximum is the table's ``freshness``,
  else the source's, from the declaration; tables without one are not checked.
- A mart's age is ``now - the last successful transformation of prod``
  (``elt_meta.transform_watermarks``). Its maximum is declared in the model, as the tag
  ``'freshness:26h'`` in its ``MODEL`` block (metadata only: changing it rebuilds nothing), else
  ``ELT_MART_FRESHNESS`` (default 26h).
- Never loaded / never transformed is ``unknown``, not stale: a new deployment does not page anyone.

Which marts a source table feeds comes from the model files (``impact``), so an alert can say
what a stale or failed table breaks downstream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from sources.config import load_source, parse_duration
from sources.logs import get_logger

log = get_logger("orchestrator.freshness")


@dataclass(frozen=True)
class Freshness:
    subject: str  # raw_jaffle_shop.orders or marts.orders
    kind: str  # table | mart
    state: str  # fresh | stale | unknown
    max_age_s: int
    newest: datetime | None
    owner: str
    source: str | None = None

    def age_s(self, now: datetime) -> float | None:
        return None if self.newest is None else (now - self.newest).total_seconds()

    def describe(self, now: datetime) -> str:
        age = self.age_s(now)
        shown = "never" if age is None else _human(age)
        return f"{self.subject}: {self.state} (newest data {shown} old, max {_human(self.max_age_s)})"


def _human(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m"


_REF = re.compile(r"\b(raw_[a-z0-9_]+|staging|intermediate|marts)\.([a-z0-9_]+)\b", re.IGNORECASE)
_NAME = re.compile(r"MODEL\s*\(\s*name\s+([A-Za-z0-9_]+\.[A-Za-z0-9_]+)", re.IGNORECASE)
_TAGS = re.compile(r"(?:^|[,(])\s*tags\s*(\([^)]*\)|'[^']*')", re.IGNORECASE | re.MULTILINE)
_FRESHNESS_TAG = re.compile(r"'freshness:([^']*)'", re.IGNORECASE)


def declared_max_ages(project_root: Path) -> dict[str, int]:
    """Each model's ``'freshness:<duration>'`` tag, in seconds (models without one are absent).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "models").mkdir()
    >>> _ = (root / "models" / "m.sql").write_text("MODEL (name marts.m, tags ('pii', 'freshness:2d')); SELECT 1")
    >>> declared_max_ages(root)
    {'marts.m': 172800}
    """
    ages: dict[str, int] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        text = file.read_text()
        name, tags = _NAME.search(text), _TAGS.search(text)
        if not name or not tags:
            continue
        found = _FRESHNESS_TAG.search(tags.group(1))
        if found:
            try:
                ages[name.group(1).lower()] = parse_duration(found.group(1))
            except Exception as exc:  # noqa: BLE001 - a typo must not stop every other check
                log.error("bad freshness tag; using ELT_MART_FRESHNESS",
                          extra={"fields": {"model": name.group(1), "file": str(file), "error": str(exc)[:160]}})
    return ages


def model_graph(project_root: Path) -> dict[str, set[str]]:
    """Each model's direct inputs (models and raw tables), read from the model files.

    A cheap text read, not a SQLMesh context load, because it runs every minute.
    """
    graph: dict[str, set[str]] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        text = file.read_text()
        match = _NAME.search(text)
        if not match:
            continue
        name = match.group(1).lower()
        graph[name] = {f"{a}.{b}".lower() for a, b in _REF.findall(text)} - {name}
    return graph


def impact(project_root: Path, raw_tables: set[str]) -> list[str]:
    """The marts that read any of ``raw_tables`` (directly or through other models)."""
    graph = model_graph(project_root)
    hit: set[str] = set()
    changed = True
    reached = {t.lower() for t in raw_tables}
    while changed:
        changed = False
        for model, inputs in graph.items():
            if model not in reached and inputs & reached:
                reached.add(model)
                changed = True
    hit = {m for m in reached if m.startswith("marts.")}
    return sorted(hit)


@contextmanager
def _warehouse(settings: Settings) -> Iterator[Any]:
    """A short read-only look at the warehouse; ``None`` if it is busy (a load holds DuckDB)."""
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        conn = PostgresSettings.from_env(settings.pg_prefix).connect()
        try:
            import psycopg2

            def query(sql: str) -> list[tuple[Any, ...]]:
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        return cur.fetchall()
                except psycopg2.errors.UndefinedTable:  # nothing loaded / transformed yet
                    conn.rollback()
                    return []
            yield query
        finally:
            conn.close()
        return
    import duckdb

    if not settings.warehouse.exists():
        yield lambda sql: []
        return
    try:
        con = duckdb.connect(str(settings.warehouse), read_only=True)
    except duckdb.IOException as exc:
        log.info("warehouse busy; freshness is checked on the next tick", extra={"fields": {"error": str(exc)[:120]}})
        yield None
        return
    try:
        def query(sql: str) -> list[tuple[Any, ...]]:
            try:
                return con.execute(sql).fetchall()
            except duckdb.CatalogException:
                return []
        yield query
    finally:
        con.close()


def evaluate(settings: Settings, now: datetime, sources: list[str] | None = None) -> list[Freshness] | None:
    """Freshness of every checked table and mart; ``None`` when the warehouse could not be read."""
    from orchestrator.jobs import all_jobs

    if sources is None:
        sources = [j.source for j in all_jobs(settings).values() if j.kind == "load" and j.source]
    with _warehouse(settings) as query:
        if query is None:
            return None
        newest = {(s, t): ts for s, t, ts in query(
            "SELECT source, table_name, max(extracted_at) FROM elt_meta.loaded_batches WHERE rows > 0 "
            "GROUP BY source, table_name")}
        marks = query("SELECT max(finished_at) FROM elt_meta.transform_watermarks WHERE environment = 'prod'")
    results = []
    for name in sources:
        spec = load_source(name)
        for table in spec.tables.values():
            max_age = table.freshness_s or spec.freshness_s
            if not max_age:
                continue
            ts = _naive(newest.get((spec.name, table.name)))
            results.append(Freshness(f"{spec.raw_schema}.{table.name}", "table", _state(ts, max_age, now), max_age,
                                     ts, spec.owner, spec.name))
    default_max = parse_duration(os.environ.get("ELT_MART_FRESHNESS", "26h"))
    declared = declared_max_ages(settings.project_root)
    last_transform = _naive(marks[0][0]) if marks else None
    owner = os.environ.get("ELT_TRANSFORM_OWNER", "data-team")
    for model in sorted(model_graph(settings.project_root)):
        if model.startswith("marts."):
            mart_max = declared.get(model, default_max)
            results.append(Freshness(model, "mart", _state(last_transform, mart_max, now), mart_max,
                                     last_transform, owner))
    return results


def _naive(ts: datetime | None) -> datetime | None:
    """UTC without zone, as everything in elt_meta is compared."""
    if ts is not None and ts.tzinfo is not None:
        return ts.replace(tzinfo=None) - (ts.utcoffset() or timedelta(0))
    return ts


def _state(newest: datetime | None, max_age_s: int, now: datetime) -> str:
    if newest is None:
        return "unknown"
    return "stale" if (now - newest).total_seconds() > max_age_s else "fresh"
