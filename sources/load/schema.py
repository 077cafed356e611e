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


def plan_schema(
    raw: dict[str, str], batch: list[tuple[str, str]], policy: str, where: dict[str, str], raw_table: str
) -> SchemaPlan:
    """``raw``/``batch``: column -> normalised SQL type (data columns only, metadata excluded)."""
    plan = SchemaPlan()
    changed = []
    batch_cols = dict(batch)
    for name, sql_type in batch:
        if name not in raw:
            plan.add.append((name, sql_type))
        elif raw[name] != sql_type:
            if policy == "evolve_cast":
                plan.cast.append((name, raw[name]))
            else:
                changed.append(f"{name}: raw has {raw[name]}, the batch has {sql_type}")
    plan.absent = [name for name in raw if name not in batch_cols]
    if changed:
        raise RawLoadError(
            f"column type changed in {raw_table}: {'; '.join(changed)}",
            **where,  # type: ignore[arg-type]
            hint="a source type change: migrate the raw table (see docs/runbook.md, 'Schema change'); only when "
            "raw's type holds every new value unchanged, set schema_policy: evolve_cast on the table to cast to it "
            "(a value the cast would change fails the batch); the batch stays in landing",
        )
    if policy == "strict" and (plan.add or plan.absent):
        raise RawLoadError(
            f"columns differ from {raw_table} and the table's schema_policy is strict: {'; '.join(plan.notes)}",
            **where,  # type: ignore[arg-type]
            hint="update the declaration and migrate raw, or use schema_policy: evolve",
        )
    return plan
