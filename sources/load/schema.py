"""Compare a batch's columns with its raw table and decide what to do (schema evolution).

Policies (``schema_policy`` on a table declaration):

- ``evolve`` (default): a new source column is added to raw (reported); a raw column absent from
  the batch loads as NULL (reported); a changed type stops the batch with an error.
- ``strict``: any difference stops the batch.
- ``evolve_cast``: as ``evolve``, but a changed type is cast to raw's type on load (reported); a
  value that does not cast, or that the cast would change (12.49 into a BIGINT), fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from sources.errors import RawLoadError

POLICIES = ("evolve", "strict", "evolve_cast")


@dataclass
class SchemaPlan:
    add: list[tuple[str, str]] = field(default_factory=list)  # (column, sql type) to add to raw
    absent: list[str] = field(default_factory=list)  # raw columns the batch lacks -> NULL
    cast: list[tuple[str, str]] = field(default_factory=list)  # (column, raw sql type) to cast to

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(
            [f"added column {c} {t}" for c, t in self.add]
            + [f"column {c} absent from the batch: loaded as NULL" for c in self.absent]
            + [f"column {c} cast to raw type {t}" for c, t in self.cast]
        )


def _quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("postgres")


def plan_schema(
    raw: dict[str, str], batch: list[tuple[str, str]], policy: str, where: dict[str, str], raw_table: str
) -> SchemaPlan:
    """``raw``/``batch``: column -> normalised SQL type (data columns only, metadata excluded)."""
    plan = SchemaPlan()
    changed = []
    into_text = []  # typed columns raw holds as text: a load before the column was declared
    batch_cols = dict(batch)
    # a column whose spelling changed only in case (a file's header went from Note to note): DuckDB
    # refused to add it (it is raw's column), PostgreSQL would add a second one that no model can
    # tell apart; named instead, with the rename that lets the landed batch apply (a probe)
    spelled = {c.lower(): c for c in raw}
    recased = [(name, spelled[name.lower()]) for name, _ in batch if name not in raw and name.lower() in spelled]
    if recased:
        pairs = ", ".join(f"{new!r} (raw has {old!r})" for new, old in recased)
        renames = "; ".join(f"ALTER TABLE {raw_table} RENAME COLUMN {_quoted(old)} TO {_quoted(new)}"
                            for new, old in recased)
        raise RawLoadError(
            f"column(s) {pairs} of the batch differ from raw's only in case: the warehouses and SQLMesh's models "
            "compare names without case, so it would be one column", **where,  # type: ignore[arg-type]
            hint=f"if the source renamed it for good, rename raw's column ({renames}; the models that quote it too), "
                 "then load again: the batch stays in landing; otherwise fix the extract's spelling and set this "
                 "batch aside (docs/runbook.md#a-batch-blocks-its-table)")
    for name, sql_type in batch:
        if name not in raw:
            plan.add.append((name, sql_type))
        elif raw[name] != sql_type:
            if policy == "evolve_cast":
                plan.cast.append((name, raw[name]))
            else:
                changed.append(f"{name}: raw has {raw[name]}, the batch has {sql_type}")
                if raw[name] in ("TEXT", "VARCHAR"):
                    into_text.append(name)
    plan.absent = [name for name in raw if name not in batch_cols]
    if changed:
        if into_text and len(into_text) == len(changed):
            # any value fits text: evolve_cast would always succeed and keep raw text for good
            hint = (f"raw holds {', '.join(into_text)} as text (loaded before the column was declared, or declared "
                    f"as text then): change raw's column to the declared type (ALTER TABLE {raw_table} ALTER COLUMN "
                    "... SET DATA TYPE ...; see docs/runbook.md, 'Schema change'), then load again; not evolve_cast, "
                    "which would keep it text; the batch stays in landing")
        else:
            hint = ("a source type change: migrate the raw table (see docs/runbook.md, 'Schema change'); only when "
                    "raw's type holds every new value unchanged, set schema_policy: evolve_cast on the table to cast "
                    "to it (a value the cast would change fails the batch); the batch stays in landing")
        raise RawLoadError(f"column type changed in {raw_table}: {'; '.join(changed)}",
                           **where, hint=hint)  # type: ignore[arg-type]
    if policy == "strict" and (plan.add or plan.absent):
        added = ", ".join(f"ADD COLUMN {c} {t}" for c, t in plan.add)
        raise RawLoadError(
            f"columns differ from {raw_table} and the table's schema_policy is strict: {'; '.join(plan.notes)}",
            **where,  # type: ignore[arg-type]
            hint=(f"if the declaration is right, give raw the same columns (ALTER TABLE {raw_table} {added}), write the "
                  "statement down for a replay, and load again; " if added else "")
            + "or update the declaration (docs/runbook.md, 'Schema change'), or use schema_policy: evolve",
        )
    return plan
