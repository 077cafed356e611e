"""Who deployed which model versions to an environment, and from which commit.

SQLMesh's plan applies the models of the checkout it runs in: a transform from a checkout that
is behind the one that last deployed (a second machine nobody updated, a laptop) puts the old
models back into prod without a word. Every transform that applies model changes records the
git commit it ran from in ``elt_meta.deploys`` (with host, OS user, time and the changed
models: the answer to "who touched this?"), and a transform that would apply model changes from
a commit behind the last recorded one, or one this checkout does not have, or one on another
line of history, stops before the plan and says which commits and models are at stake. The
on-call engineer who means it passes ``elt transform --allow-revert``.

A project that is not in a git checkout (or git is missing, as in the container image) records
``ELT_GIT_COMMIT`` if set (the image's build argument) and is not checked: there is no order to
compare. A deploy made with ``--allow-revert`` is a rollback: it records the model versions it
took out (``elt_meta.rolled_back_versions``), and a newer checkout that would put one of them back
needs the flag once more, so the scheduler's checkout, still on the bad commit, does not quietly
undo it. A newer checkout whose models no longer hold those versions (the branch reverted the bad
change) deploys as usual.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlglot import exp

from orchestrator.transform.windows import _lit
from sources.logs import get_logger

log = get_logger("orchestrator.transform.deploys")
DEPLOYS = "elt_meta.deploys"
# per rollback (deploy_id): each model whose version it took out of the environment, and that
# version (the model's own definition, not its parents': ``own_version``), or ABSENT for a model
# the rollback brought back (the rolled-back commit had removed it)
ROLLED_BACK = "elt_meta.rolled_back_versions"
ABSENT = "-"
# the files whose state decides what the plan applies
PROJECT_PATHS = ("models", "audits", "macros", "config.yaml", "external_models.yaml")


@dataclass(frozen=True)
class Checkout:
    commit: str | None  # None: not a git checkout, or git is missing (and no ELT_GIT_COMMIT)
    dirty: bool  # uncommitted changes to models, audits, macros or config
    ordered: bool = True  # git can tell this commit's order against another (False: ELT_GIT_COMMIT)


@dataclass(frozen=True)
class Deploy:
    commit: str | None
    dirty: bool
    host: str
    user: str
    deployed_at: datetime
    changed: str
    reverted: bool = False  # made with --allow-revert
    deploy_id: str = ""

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
        given = os.environ.get("ELT_GIT_COMMIT", "").strip()  # the image's build argument (REVISION)
        return Checkout(given if given and given != "unknown" else None, False, ordered=False)
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
    create_meta_table(adapter, DEPLOYS, "deploy_id TEXT NOT NULL, environment TEXT NOT NULL, git_commit TEXT, "
                                        "git_dirty BOOLEAN, host TEXT, os_user TEXT, deployed_at TIMESTAMP NOT NULL, "
                                        "changed TEXT, reverted BOOLEAN, status TEXT")
    create_meta_table(adapter, ROLLED_BACK, "deploy_id TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL")


def last_deploy(adapter: Any, environment: str) -> Deploy | None:
    """The environment's newest deploy, applied or cut off while planning (a killed plan may have
    promoted some of it); plans that failed are deleted (``forget_deploy``)."""
    if not adapter.table_exists(DEPLOYS):
        return None
    env = exp.Literal.string(environment).sql(adapter.dialect)
    row = adapter.fetchone(f"SELECT git_commit, git_dirty, host, os_user, deployed_at, changed, reverted, deploy_id "
                           f"FROM {DEPLOYS} WHERE environment = {env} ORDER BY deployed_at DESC LIMIT 1")
    return None if row is None else Deploy(row[0], bool(row[1]), row[2] or "?", row[3] or "?", row[4], row[5] or "",
                                           bool(row[6]), row[7] or "")


def own_version(fingerprint: Any) -> str:
    """A model's own definition (query, kind, audits, description...) from its SQLMesh
    fingerprint, without its parents': a downstream model whose query the rolled-back commit did
    not touch keeps it across that commit, and a later edit upstream does not disguise a model
    that still holds the rolled-back query."""
    return f"{fingerprint.data_hash}/{fingerprint.metadata_hash}"


def record_rolled_back(adapter: Any, deploy_id: str, versions: dict[str, str]) -> None:
    """With the rollback's ``planning`` row: the versions it takes out (model -> ``own_version``,
    or ABSENT). None to take out (only parents' versions moved) records nothing, and a newer
    checkout is then judged by commit ancestry alone, as before this record existed."""
    if not versions:
        return
    rows = ", ".join(f"({', '.join(exp.convert(v).sql(adapter.dialect) for v in (deploy_id, model, version))})"
                     for model, version in sorted(versions.items()))
    adapter.execute(f"INSERT INTO {ROLLED_BACK} (deploy_id, model, version) VALUES {rows}")


def rolled_back_versions(adapter: Any, deploy: Deploy) -> dict[str, str] | None:
    """What the rollback ``deploy`` took out (model -> version), or None when it recorded nothing
    (made before this record existed): then only commit ancestry can tell."""
    if not deploy.deploy_id or not adapter.table_exists(ROLLED_BACK):
        return None
    key = exp.Literal.string(deploy.deploy_id).sql(adapter.dialect)
    rows = adapter.fetchall(f"SELECT model, version FROM {ROLLED_BACK} WHERE deploy_id = {key}")
    return {model: version for model, version in rows} or None


def record_deploy(adapter: Any, environment: str, here: Checkout, changed: list[str], reverted: bool,
                  taken_out: dict[str, str] | None = None) -> str:
    """Record the deploy as ``planning`` before the plan (a plan killed half-way still counts);
    ``deploy_applied`` or ``forget_deploy`` settles it. A rollback's ``taken_out`` versions are
    written first, so a rollback row never lacks them (a kill between the two leaves rows no deploy
    names, which nothing reads). Returns its id."""
    _create(adapter)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        user = "?"
    deploy_id = uuid.uuid4().hex
    record_rolled_back(adapter, deploy_id, taken_out or {})
    values = [deploy_id, environment, here.commit, here.dirty, socket.gethostname(), user,
              datetime.now(UTC).replace(tzinfo=None), ", ".join(sorted(changed)), reverted, "planning"]
    literals = ", ".join(exp.convert(v).sql(adapter.dialect) for v in values)
    adapter.execute(f"INSERT INTO {DEPLOYS} (deploy_id, environment, git_commit, git_dirty, host, os_user, deployed_at, "
                    f"changed, reverted, status) VALUES ({literals})")
    return deploy_id


def _settle(adapter: Any, statement: str) -> None:
    """The record only informs: failing to settle it never fails a transform whose plan ran."""
    try:
        adapter.execute(statement)
    except Exception as exc:  # noqa: BLE001 - logged; the row stays 'planning', which counts as a deploy
        log.warning("deploy record not updated (it stays 'planning', which `elt status` shows as cut off; the next "
                    "transform of the same checkout marks it applied if the plan took effect)",
                    extra={"fields": {"error": str(exc).splitlines()[0][:300]}})


def deploy_applied(adapter: Any, deploy_id: str) -> None:
    if adapter.dialect == "spark":  # plain Parquet: no UPDATE; the row says planning, which counts the same
        return
    key = exp.Literal.string(deploy_id).sql(adapter.dialect)
    _settle(adapter, f"UPDATE {DEPLOYS} SET status = 'applied' WHERE deploy_id = {key}")


def settle_cut_off(adapter: Any, environment: str, root: Path) -> None:
    """After a transform that had nothing to plan: the environment serves this checkout's models,
    so a last deploy from this commit still marked ``planning`` (its transform was killed after the
    plan promoted them) did take effect, and is marked ``applied``; it showed as cut off in
    ``elt status`` for good (an on-call probe). Not on Spark (no UPDATE on its Parquet table)."""
    if adapter.dialect == "spark" or not adapter.table_exists(DEPLOYS):
        return
    env = exp.Literal.string(environment).sql(adapter.dialect)
    row = adapter.fetchone(f"SELECT deploy_id, git_commit, git_dirty, status FROM {DEPLOYS} WHERE environment = {env} "
                           "ORDER BY deployed_at DESC LIMIT 1")
    if row is None or row[3] != "planning" or not row[1]:
        return
    here = checkout(root)
    if here.commit == row[1] and here.dirty == bool(row[2]):
        key = exp.Literal.string(row[0]).sql(adapter.dialect)
        _settle(adapter, f"UPDATE {DEPLOYS} SET status = 'applied' WHERE deploy_id = {key}")


def forget_deploy(adapter: Any, deploy_id: str) -> None:
    """A plan that failed (a unit test, a model's SQL) promoted nothing: it is no deploy, and the
    checkout the on-call goes back to must not be refused as behind it."""
    if adapter.dialect == "spark":  # plain Parquet: no DELETE; the failed plan's row stays and counts
        return
    key = exp.Literal.string(deploy_id).sql(adapter.dialect)
    _settle(adapter, f"DELETE FROM {DEPLOYS} WHERE deploy_id = {key}")
    _settle(adapter, f"DELETE FROM {ROLLED_BACK} WHERE deploy_id = {key}")


# per environment and SQLMesh plan: the model versions (snapshot ids, and each model's own
# definition) the environment served after an `elt transform` whose plan it had not recorded yet.
# A later plan id not recorded here was made outside `elt` (a bare `sqlmesh plan`, the review
# workflow the README allows)
SERVED = "elt_meta.served_by_plan"


def _short(fqn: str) -> str:
    table = exp.to_table(fqn)
    return f"{table.db}.{table.name}" if table.db else table.name


def record_served(adapter: Any, environment: str, env: Any) -> None:
    """After a transform: what ``env`` (SQLMesh's environment record) serves, once per plan id
    (rows grow with plans, not with transforms). Insert-only, so every gateway can write it."""
    if env is None or not getattr(env, "plan_id", None):
        return
    from orchestrator.transform.windows import create_meta_table

    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, SERVED, "environment TEXT NOT NULL, plan_id TEXT NOT NULL, model TEXT NOT NULL, "
                                       "snapshot TEXT NOT NULL, own TEXT NOT NULL, recorded_at TIMESTAMP NOT NULL")
    lit = partial(_lit, dialect=adapter.dialect)
    if adapter.fetchone(f"SELECT 1 FROM {SERVED} WHERE environment = {lit(environment)} "
                        f"AND plan_id = {lit(env.plan_id)} LIMIT 1"):
        return
    now = lit(datetime.now(UTC).replace(tzinfo=None))
    rows = ", ".join(f"({lit(environment)}, {lit(env.plan_id)}, {lit(_short(s.name))}, {lit(s.identifier)}, "
                     f"{lit(own_version(s.fingerprint))}, CAST({now} AS TIMESTAMP))"
                     for s in sorted(env.snapshots, key=lambda s: s.name))
    if rows:
        adapter.execute(f"INSERT INTO {SERVED} (environment, plan_id, model, snapshot, own, recorded_at) VALUES {rows}")


def changed_outside(adapter: Any, environment: str, env: Any) -> tuple[str, dict[str, str | None]] | None:
    """When ``env``'s current plan was not made by `elt transform` (its plan id is not recorded by
    ``record_served``): (when it was finalized, model -> its own definition before the plans
    made outside, None for a model they added) for every model whose own definition they changed.
    "Before" is the record of the environment's previous plan if elt recorded it, else elt's
    latest record. None when the current plan is recorded, or nothing is."""
    if env is None or not adapter.table_exists(SERVED):
        return None
    lit = partial(_lit, dialect=adapter.dialect)
    where = f"environment = {lit(environment)}"
    if adapter.fetchone(f"SELECT 1 FROM {SERVED} WHERE {where} AND plan_id = {lit(env.plan_id)} LIMIT 1"):
        return None  # elt recorded this plan (whatever the clocks of the machines that wrote the rows)
    previous = getattr(env, "previous_plan_id", None)
    base = previous if previous and adapter.fetchone(
        f"SELECT 1 FROM {SERVED} WHERE {where} AND plan_id = {lit(previous)} LIMIT 1") else None
    if base is None:
        last = adapter.fetchone(f"SELECT plan_id FROM {SERVED} WHERE {where} ORDER BY recorded_at DESC LIMIT 1")
        if last is None:
            return None
        base = last[0]
    before = dict(adapter.fetchall(f"SELECT model, own FROM {SERVED} WHERE {where} AND plan_id = {lit(base)}"))
    now = {_short(s.name): own_version(s.fingerprint) for s in env.snapshots}
    changed = {m: before.get(m) for m in set(before) | set(now) if before.get(m) != now.get(m)}
    if not changed:
        return None
    finalized = getattr(env, "finalized_ts", None)
    when = (datetime.fromtimestamp(finalized / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC") if finalized else "an unknown time")
    return when, changed


def outside_refusal(environment: str, when: str, at_stake: list[str], here: Checkout) -> str:
    """Why this checkout must not replace what a plan outside `elt` deployed (one line, ending
    with what to do)."""
    commit = (here.commit or "no commit")[:12]
    return (f"{environment} was changed at {when} by a plan outside `elt transform` (a bare `sqlmesh plan`), which "
            f"deployed versions of {_models(at_stake)} that this checkout ({commit}) does not hold: its plan would "
            f"replace them. Nothing ran. next: bring that change into this checkout (merge it, `git pull` here) and "
            f"rerun `elt transform`; to replace it on purpose, run `elt transform --allow-revert` once "
            f"(docs/runbook.md#who-deployed-the-models)")


def _models(names: list[str]) -> str:
    return ", ".join(sorted(names)[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def refusal(root: Path, environment: str, last: Deploy | None, here: Checkout,
            changed: list[str], undone: list[str] | None = None) -> tuple[str | None, bool]:
    """Why this checkout must not apply ``changed`` models to ``environment`` (None: it may), and
    whether applying them anyway puts older versions back (a rollback, recorded as such). After a
    rollback, ``undone`` names the models whose rolled-back versions this checkout would put back
    (None: the rollback recorded no versions, and a newer checkout is taken to undo it). The
    reason is one line (the scheduler's alert shows a failure's first line), ending with what to do."""
    if last is None or not last.commit or here.commit is None or not here.ordered:
        return None, False
    models = _models(changed)
    how = relation(root, here.commit, last.commit)
    if last.reverted and how == "newer":
        if undone is not None and not undone:  # the branch holds the rollback (the bad change reverted)
            return None, False
        return (f"{environment} was rolled back to {last.describe()} with --allow-revert; this checkout "
                f"({here.commit[:12]}) would undo the rollback (models: {_models(undone or changed)}). Nothing ran. "
                f"next: make the deploy branch hold the rollback (`git revert` the bad change, push, `git pull` here); "
                f"{'if this commit holds the fix, run' if undone is None else 'to put these versions back on purpose, run'} "
                f"`elt transform --allow-revert` once from it (docs/runbook.md#who-deployed-the-models)"), False
    if how in ("same", "newer"):
        return None, False
    why, step = {
        "older": ("is behind it: its models would put older versions back",
                  "`git pull` here (this checkout is stale)"),
        "unknown": ("does not have that commit: its models may be older than what the environment serves",
                    "`git fetch` (`git fetch --unshallow` in a shallow clone) and rerun; if the commit is gone "
                    "(amended, rebased or squash-merged) and this checkout holds its changes"),
        "diverged": ("is on another line of history: its models would undo what the other line changed",
                     "merge the other line (or check out the deployed branch) and rerun; if this line already holds "
                     "its changes (a squash-merge)"),
    }[how]
    ending = (" and rerun `elt transform`; to put these versions back on purpose (a rollback), run "
              "`elt transform --allow-revert`" if how == "older" else
              ", run `elt transform --allow-revert` once")
    return (f"{environment} was last deployed from {last.describe()}; this checkout ({here.commit[:12]}) {why} "
            f"(models: {models}). Nothing ran. next: {step}{ending} (docs/runbook.md#who-deployed-the-models)"), True
