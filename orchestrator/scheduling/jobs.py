"""The jobs the orchestrator schedules: one load job per declared source, the transformation, and
optional extra command jobs.

- ``<source>`` (kind ``load``): land and load every table of the source (``elt load <source>``);
  cron from the declaration's ``schedule``.
- ``transform`` (kind ``transform``): ``orchestrator.transform.run.transform(settings, environment="prod")``;
  cron ``ELT_TRANSFORM_SCHEDULE`` (default ``@hourly``). A tick starts it after the loads due in the
  same tick have finished, whatever their outcome (see docs/decisions/0009-orchestrator.md).
- extra jobs from ``ELT_JOBS_FILE`` (YAML ``jobs: {name: {command: [...], schedule: ..., timeout: ...,
  attempts: ...}}``): any command, e.g. an export. Exit status 75 (EX_TEMPFAIL) means "worth retrying".

Limits come from the environment, per job first: ``ELT_JOB_<NAME>_TIMEOUT`` (a duration: 90s, 15m,
2h), ``ELT_JOB_<NAME>_ATTEMPTS``, ``ELT_JOB_<NAME>_SCHEDULE``; then ``ELT_JOB_TIMEOUT`` (default 2h)
and ``ELT_JOB_ATTEMPTS`` (default 3). ``ELT_JOBS=a,b`` limits the scheduler to those jobs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.scheduling.schedule import Cron, CronError
from orchestrator.settings import Settings
from sources.config import parse_duration
from sources.errors import ConfigError

TRANSFORM = "transform"
# the run-history name of `elt backfill` (orchestrator/transform/backfill.py) and of the lock it holds,
# ``job:elt backfill``, while its record says running: a tick (runner.mark_abandoned) or the next
# backfill calls a killed one abandoned and a live one never. Not a job: a space keeps it apart from
# every job name (a source or an ELT_JOBS_FILE job named "backfill" is fine)
BACKFILL_JOB = "elt backfill"
RETRYABLE_EXIT = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # load | transform | command
    schedule: str
    timeout_s: int
    max_attempts: int
    source: str | None = None
    command: tuple[str, ...] = ()
    owner: str = ""

    @property
    def cron(self) -> Cron:
        return Cron.parse(self.schedule)

    @property
    def lock_name(self) -> str:
        return f"job:{self.name}"


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _limits(name: str, schedule: str, timeout: str | None = None, attempts: int | None = None) -> tuple[str, int, int]:
    key = _env_key(name)
    schedule = os.environ.get(f"ELT_JOB_{key}_SCHEDULE") or schedule
    timeout_text = os.environ.get(f"ELT_JOB_{key}_TIMEOUT") or timeout or os.environ.get("ELT_JOB_TIMEOUT") or "2h"
    attempts_text = os.environ.get(f"ELT_JOB_{key}_ATTEMPTS") or attempts or os.environ.get("ELT_JOB_ATTEMPTS") or "3"
    try:
        Cron.parse(schedule)
        timeout_s = parse_duration(str(timeout_text))
        max_attempts = int(attempts_text)
    except (CronError, ValueError) as exc:
        raise ConfigError(f"job {name}: {exc}", hint=f"fix the schedule/timeout/attempts of job {name} "
                          f"(ELT_JOB_{key}_SCHEDULE, _TIMEOUT, _ATTEMPTS, or its declaration)") from None
    if max_attempts < 1:
        raise ConfigError(f"job {name}: attempts must be at least 1", hint=f"set ELT_JOB_{key}_ATTEMPTS=1 or more")
    return schedule, timeout_s, max_attempts


def all_jobs(settings: Settings, *, filtered: bool = True) -> dict[str, Job]:
    """Every job, by name, in the order a tick starts them (loads, commands, then the transform)."""
    from sources.config import available_sources, load_source

    jobs: dict[str, Job] = {}
    for name in available_sources():
        spec = load_source(name)
        schedule, timeout_s, attempts = _limits(name, spec.schedule)
        jobs[name] = Job(name, "load", schedule, timeout_s, attempts, source=name, owner=spec.owner)
    jobs.update(_extra_jobs(settings))
    schedule, timeout_s, attempts = _limits(TRANSFORM, os.environ.get("ELT_TRANSFORM_SCHEDULE") or "@hourly")
    jobs[TRANSFORM] = Job(TRANSFORM, "transform", schedule, timeout_s, attempts,
                          owner=os.environ.get("ELT_TRANSFORM_OWNER", "data-team"))
    selected = [j.strip() for j in os.environ.get("ELT_JOBS", "").split(",") if j.strip()]
    if selected and filtered:
        unknown = sorted(set(selected) - set(jobs))
        if unknown:
            raise ConfigError(f"ELT_JOBS names unknown job(s) {unknown}", hint=f"jobs: {', '.join(jobs)}")
        jobs = {name: job for name, job in jobs.items() if name in selected}
    return jobs


def _extra_jobs(settings: Settings) -> dict[str, Job]:
    file = os.environ.get("ELT_JOBS_FILE")
    if not file:
        return {}
    import yaml

    from sources.config import read_yaml

    path = Path(file) if Path(file).is_absolute() else settings.project_root / file
    try:
        doc = read_yaml(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"ELT_JOBS_FILE {path} cannot be read: {exc}", hint="fix or unset ELT_JOBS_FILE") from None
    jobs = {}
    for name, spec in (doc.get("jobs") or {}).items():
        command = spec.get("command")
        if not isinstance(command, list) or not command:
            raise ConfigError(f"job {name} in {path}: command must be a non-empty list of arguments",
                              hint="e.g. command: [python, -m, my_export]")
        schedule, timeout_s, attempts = _limits(name, spec.get("schedule", "@daily"), spec.get("timeout"),
                                                spec.get("attempts"))
        jobs[name] = Job(name, "command", schedule, timeout_s, attempts, command=tuple(map(str, command)),
                         owner=str(spec.get("owner", "")))
    return jobs


def get_job(settings: Settings, name: str) -> Job:
    jobs = all_jobs(settings, filtered=False)
    if name not in jobs:
        raise ConfigError(f"unknown job {name!r}", hint=f"jobs: {', '.join(jobs)} (see `elt status`)")
    return jobs[name]
