"""Who deployed which model versions to an environment, and from which commit.

SQLMesh's plan applies the models of the checkout it runs in: a transform from a checkout that
is behind the one that last deployed (a second machine nobody updated, a laptop) puts the old
models back into prod without a word. Every transform that applies model changes records the
git commit it ran from in ``elt_meta.deploys`` (with host, OS user, time and the changed
models: the answer to "who touched this?"), and a transform that would apply model changes from
a commit behind the last recorded one, or one this checkout does not have, or one on another
line of history, stops before the plan and says which commits and models are at stake. The
on-call engineer who means it passes ``elt transform --allow-revert``.

A project that is not in a git checkout (or git is missing) records no commit and is not
checked: there is no order to compare.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlglot import exp

DEPLOYS = "elt_meta.deploys"
# the files whose state decides what the plan applies
PROJECT_PATHS = ("models", "audits", "macros", "config.yaml", "external_models.yaml")


@dataclass(frozen=True)
class Checkout:
    commit: str | None  # None: not a git checkout, or git is missing
    dirty: bool  # uncommitted changes to models, audits, macros or config


@dataclass(frozen=True)
class Deploy:
    commit: str | None
    dirty: bool
    host: str
    user: str
    deployed_at: datetime
    changed: str

    def describe(self) -> str:
        commit = (self.commit or "no commit")[:12] + (" with uncommitted changes" if self.dirty else "")
        return f"{commit} by {self.user}@{self.host} at {self.deployed_at:%Y-%m-%d %H:%M} UTC"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def checkout(root: Path) -> Checkout:
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return Checkout(None, False)
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--",
                  *[p for p in PROJECT_PATHS if (root / p).exists()])
    return Checkout(head.stdout.strip(), bool(status and status.stdout.strip()))


def relation(root: Path, here: str, deployed: str) -> str:
    """``same``, ``newer`` (this checkout contains the deployed commit), ``older`` (the deployed
    commit contains this one), ``diverged``, or ``unknown`` (this checkout does not have it)."""
    if here == deployed:
        return "same"
    known = _git(root, "cat-file", "-e", f"{deployed}^{{commit}}")
    if known is None or known.returncode != 0:
        return "unknown"
    newer = _git(root, "merge-base", "--is-ancestor", deployed, here)
    if newer is not None and newer.returncode == 0:
        return "newer"
    older = _git(root, "merge-base", "--is-ancestor", here, deployed)
    if older is not None and older.returncode == 0:
        return "older"
    return "diverged"


def _create(adapter: Any) -> None:
    from orchestrator.transform.windows import create_meta_table

    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, DEPLOYS, "environment TEXT NOT NULL, git_commit TEXT, git_dirty BOOLEAN, "
                                        "host TEXT, os_user TEXT, deployed_at TIMESTAMP NOT NULL, changed TEXT")


def last_deploy(adapter: Any, environment: str) -> Deploy | None:
    if not adapter.table_exists(DEPLOYS):
        return None
    env = exp.Literal.string(environment).sql(adapter.dialect)
    row = adapter.fetchone(f"SELECT git_commit, git_dirty, host, os_user, deployed_at, changed FROM {DEPLOYS} "
                           f"WHERE environment = {env} ORDER BY deployed_at DESC LIMIT 1")
    return None if row is None else Deploy(row[0], bool(row[1]), row[2] or "?", row[3] or "?", row[4], row[5] or "")


def record_deploy(adapter: Any, environment: str, here: Checkout, changed: list[str]) -> None:
    _create(adapter)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        user = "?"
    values = [environment, here.commit, here.dirty, socket.gethostname(), user,
              datetime.now(UTC).replace(tzinfo=None), ", ".join(sorted(changed))]
    literals = ", ".join(exp.convert(v).sql(adapter.dialect) for v in values)
    adapter.execute(f"INSERT INTO {DEPLOYS} (environment, git_commit, git_dirty, host, os_user, deployed_at, changed) "
                    f"VALUES ({literals})")


def refusal(root: Path, environment: str, last: Deploy | None, here: Checkout, changed: list[str]) -> str | None:
    """Why this checkout must not apply ``changed`` models to ``environment``, or None."""
    if last is None or not last.commit or here.commit is None:
        return None
    how = relation(root, here.commit, last.commit)
    if how in ("same", "newer"):
        return None
    models = ", ".join(sorted(changed)[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    why = {"older": "is behind it: applying this checkout's models would put older versions back",
           "unknown": "does not have that commit (not fetched, or from a branch deleted since): its models may be "
                      "older than what the environment serves",
           "diverged": "is on another line of history: applying its models would undo changes made on the other line"
           }[how]
    return (f"{environment} was last deployed from {last.describe()}; this checkout ({here.commit[:12]}) {why}. "
            f"Models it would change: {models}.\n"
            f"  next: update this checkout (`git pull`; `git fetch` for an unknown commit) and rerun `elt transform`; "
            f"if putting these versions into {environment} is what you mean (a rollback), rerun with "
            f"`elt transform --allow-revert`. Nothing was changed: the plan did not run.")
