"""``elt preview ENV``: build local model changes in a dev environment and diff them against prod.

This is ``sqlmesh plan ENV`` followed by ``sqlmesh table_diff prod:ENV`` for every model whose
version differs between the two environments (the changed models and everything downstream),
joined on each model's declared ``grain``. Prod's views and tables are not touched: the dev
environment gets its own views (``marts__dev.*``) over new physical tables for changed models
and prod's physical tables for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.settings import Settings
from orchestrator.transform import TransformFailed, _describe, make_context
from sources.errors import ConfigError


@dataclass
class ModelDiff:
    model: str
    grain: list[str]
    prod_rows: int = 0
    dev_rows: int = 0
    matched: int = 0
    changed: int = 0  # matched on the grain, some column differs
    only_prod: int = 0
    only_dev: int = 0
    columns_changed: dict[str, float] = field(default_factory=dict)  # column -> % of matched rows equal
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    note: str = ""

    def render(self, environment: str) -> str:
        if self.note:
            return f"{self.model}: {self.note}"
        head = (f"{self.model}: prod {self.prod_rows:,} rows, {environment} {self.dev_rows:,} rows; "
                f"on {', '.join(self.grain)}: {self.matched:,} matched ({self.changed:,} changed), "
                f"{self.only_prod:,} only in prod, {self.only_dev:,} only in {environment}")
        extra = []
        if self.columns_changed:
            extra.append("changed columns: " + ", ".join(f"{c} ({p:.1f}% equal)" for c, p in self.columns_changed.items()))
        if self.columns_added:
            extra.append(f"added columns: {', '.join(self.columns_added)}")
        if self.columns_removed:
            extra.append(f"removed columns: {', '.join(self.columns_removed)}")
        return "\n    ".join([head, *extra])


def changed_models(ctx, environment: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Models whose snapshot differs between prod and ``environment``."""
    from sqlmesh.core.model.kind import ModelKindName

    prod = ctx.state_reader.get_environment("prod")
    env = ctx.state_reader.get_environment(environment)
    if prod is None:
        raise ConfigError("there is no prod environment to compare with", hint="build prod first: `elt transform`")
    if env is None:
        return []
    prod_ids = {s.name: s.snapshot_id for s in prod.snapshots}
    return sorted(
        s.name for s in env.snapshots
        if prod_ids.get(s.name) != s.snapshot_id and s.is_model and s.kind_name != ModelKindName.EXTERNAL
    )


def preview(settings: Settings, environment: str = "dev", *, quiet: bool = True) -> list[ModelDiff]:
    from sqlmesh.utils.errors import NoChangesPlanError, PlanError

    if environment == "prod":
        raise ConfigError("preview builds a dev environment, not prod", hint="use `elt transform` to deploy to prod")
    ctx, console = make_context(settings, quiet=quiet)
    try:
        try:
            ctx.plan(environment, auto_apply=True, no_prompts=True)
        except NoChangesPlanError:
            pass
        except PlanError as exc:
            raise TransformFailed(f"plan {environment}", [_describe(ctx, e) for e in console.audit_errors], str(exc),
                                  console.skipped_models, console.model_errors) from exc
        prod = ctx.state_reader.get_environment("prod")
        env = ctx.state_reader.get_environment(environment)
        prod_tables = {s.name: s.version for s in prod.snapshots} if prod else {}
        shared = {s.name for s in (env.snapshots if env else []) if prod_tables.get(s.name) == s.version}
        return [_diff(ctx, name, environment, same_table=name in shared) for name in changed_models(ctx, environment)]
    finally:
        ctx.close()


def _diff(ctx, name: str, environment: str, *, same_table: bool = False) -> ModelDiff:  # type: ignore[no-untyped-def]
    model = ctx.get_model(name)
    grain = [g.sql(dialect=model.dialect) for g in model.grains] if model and model.grains else []
    result = ModelDiff(name.replace('"', ""), grain)
    if same_table:  # an upstream change that is not breaking: SQLMesh reuses prod's table
        result.note = "downstream of a non-breaking change; reads prod's table, so its data is the same"
        return result
    if not grain:
        result.note = "no grain declared; compare by hand with `sqlmesh table_diff prod:" + environment + " " + name + " --on KEY`"
        return result
    try:
        (diff,) = ctx.table_diff(source="prod", target=environment, select_models=[name], show=False)
    except Exception as exc:  # noqa: BLE001 - a diff that cannot be computed is reported, not fatal
        result.note = f"could not diff: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
        return result
    schema = diff.schema_diff()
    result.columns_added = [c for c, _ in schema.added]
    result.columns_removed = [c for c, _ in schema.removed]
    rows = diff.row_diff()
    result.prod_rows, result.dev_rows = rows.source_count, rows.target_count
    result.matched, result.only_prod, result.only_dev = rows.join_count, rows.s_only_count, rows.t_only_count
    result.changed = rows.partial_match_count
    stats = rows.column_stats
    if stats is not None and len(stats) and "pct_match" in stats:
        result.columns_changed = {str(c): float(p) for c, p in stats["pct_match"].items() if p < 100}
    return result
