"""``elt``: the pipeline's own commands.

    elt demo                         generate Jaffle Shop data, load it, build and audit every model
    elt demo --production            the same through the production path: PostgreSQL app DB + catalog API
                                     -> S3 landing -> PostgreSQL raw, models and state (ELT_PG_*, ELT_LANDING_URL)
    elt load SOURCE [--path DIR]     land and load a declared source (e.g. a folder of jafgen CSVs)
    elt load SOURCE --from-landing   apply landed batches that raw lacks (restore raw from landing)
    elt transform                    plan+apply prod, restate models whose raw tables got new batches, run, audit
    elt preview [ENV]                build local model changes in a dev environment, diff it against prod
    elt bi-role                      create/update the read-only BI role on marts (PostgreSQL; ELT_BI_*)
    elt sources                      list the declared sources and their tables

Exit status: 0 success, 1 a table or model failed (details on stderr), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from orchestrator.settings import Settings
from sources import logs
from sources.errors import ConfigError, LoaderError


def _cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.loading import load_source_into_warehouse, print_load_report

    outcomes = load_source_into_warehouse(
        args.source,
        settings,
        path=args.path,
        tables=args.table,
        force=args.force,
        extract=not args.from_landing,
    )
    print_load_report(outcomes, settings)
    return 1 if any(o.error for o in outcomes) else 0


def _cmd_transform(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.transform import TransformFailed, transform

    try:
        summary = transform(settings, environment=args.environment)
    except TransformFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary.render())
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.production:
        from orchestrator.production_demo import run_production_demo

        return run_production_demo(settings, years=args.years, as_of=args.as_of)
    if args.as_of:
        raise ConfigError("--as-of only applies to `elt demo --production`")
    from orchestrator.demo import run_demo

    return run_demo(settings, years=args.years)


def _cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.preview import preview
    from orchestrator.transform import TransformFailed

    try:
        diffs = preview(settings, args.environment, quiet=not args.verbose)
    except TransformFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if not diffs:
        print(f"environment {args.environment}: no model differs from prod")
        return 0
    print(f"environment {args.environment}: {len(diffs)} model(s) differ from prod (prod untouched)")
    for diff in diffs:
        print(f"  {diff.render(args.environment)}")
    print(f"\npromote with `sqlmesh plan` (prod), or drop it with `sqlmesh invalidate {args.environment}`")
    return 0


def _cmd_bi_role(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.serving import bi_role_settings, ensure_bi_role
    from sources.connections import PostgresSettings

    if settings.gateway != "postgres":
        raise ConfigError("the BI role is for the PostgreSQL warehouse", hint="set ELT_GATEWAY=postgres and ELT_PG_*")
    role, password = bi_role_settings()
    for line in ensure_bi_role(PostgresSettings.from_env(settings.pg_prefix), args.role or role, password):
        print(line)
    return 0


def _cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    from sources import external_models
    from sources.config import available_sources, load_source

    if args.write_external_models:
        print(f"wrote {external_models.write(settings.project_root)}")
        return 0

    for name in available_sources():
        spec = load_source(name)
        where = {"files": spec.path, "postgres": f"${spec.env_prefix}*", "rest_api": spec.base_url or f"${spec.base_url_env}"}[spec.kind]
        print(f"{spec.name} ({spec.kind} {where}, owner {spec.owner}, schedule {spec.schedule!r})")
        for table in spec.tables.values():
            origin = table.file or table.pattern or table.source_table or table.endpoint
            cursor = f" cursor={table.cursor_field}" if table.cursor_field else ""
            print(f"  {table.name:<12} {origin} key={','.join(table.primary_key)}{cursor} -> {spec.raw_schema}.{table.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-logs", action="store_true", default=None, help="JSON log lines even on a terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole Jaffle Shop demo end to end")
    demo.add_argument("--years", type=int, default=1, help="years of data jafgen generates (default 1)")
    demo.add_argument("--production", action="store_true",
                      help="PostgreSQL app DB + catalog API -> S3 landing -> PostgreSQL warehouse (see README)")
    demo.add_argument("--as-of", type=date.fromisoformat, metavar="YYYY-MM-DD",
                      help="with --production: release the sources' data up to this day (default: all)")
    demo.set_defaults(func=_cmd_demo)

    load = sub.add_parser("load", help="land and load a declared source")
    load.add_argument("source", help="source name (sources/declarations/<name>.yaml) or a declaration file")
    load.add_argument("--path", help="folder holding the source's files (overrides the declaration's path)")
    load.add_argument("--table", action="append", help="load only this table (repeatable)")
    load.add_argument("--force", action="store_true", help="re-extract files already landed (makes new batches)")
    load.add_argument(
        "--from-landing", action="store_true",
        help="read nothing from the source; apply landed batches missing from raw (restore raw from landing)",
    )
    load.set_defaults(func=_cmd_load)

    transform = sub.add_parser("transform", help="plan+apply models to an environment, then run due intervals")
    transform.add_argument("--environment", default="prod")
    transform.set_defaults(func=_cmd_transform)

    prev = sub.add_parser("preview", help="build model changes in a dev environment and diff against prod")
    prev.add_argument("environment", nargs="?", default="dev")
    prev.add_argument("--verbose", action="store_true", help="show SQLMesh's plan output")
    prev.set_defaults(func=_cmd_preview)

    bi = sub.add_parser("bi-role", help="create/update the read-only BI role (PostgreSQL gateway)")
    bi.add_argument("--role", help="role name (default: ELT_BI_ROLE or bi_reader)")
    bi.set_defaults(func=_cmd_bi_role)

    srcs = sub.add_parser("sources", help="list declared sources")
    srcs.add_argument("--write-external-models", action="store_true", help="regenerate external_models.yaml")
    srcs.set_defaults(func=_cmd_sources)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(json_lines=True if args.json_logs else None)
    try:
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LoaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
