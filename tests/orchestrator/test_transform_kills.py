"""A transform killed at any of its failpoints, first or later, loses nothing: after more loads
and a normal transform, the marts equal one clean build of the final data on the same gateway.

The data and helpers are test_incremental_transform.py's (a Jaffle Shop written by the tests); the
kill tests have a file of their own so that pytest-xdist can run them beside the daily replays.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from sources import failpoints
from tests.conftest import BIN, project_env, run
from tests.orchestrator.test_incremental_transform import (  # noqa: F401 (gateway: the fixture)
    Gateway, Shop, _clean_build, gateway, more_days_loaded, six_days_loaded)

pytestmark = pytest.mark.slow

TRANSFORM_POINTS = [p for p in failpoints.POINTS if p.startswith("transform.")]


# pending -> what six_days_loaded made once in this test process on DuckDB (its shop, settings and
# source folder): the DuckDB kill tests start from copies of it, each in a folder of its own.
_PREPARED: dict[bool, tuple[Shop, Settings, Path]] = {}


def _six_days(tmp_path: Path, gateway: Gateway, *, pending: bool) -> tuple[Shop, Settings, Path, dict[str, str]]:
    """``six_days_loaded(seed 11)``; on DuckDB made once per ``pending`` in a test process and
    copied for each test (the build it holds costs seconds, a copy milliseconds)."""
    if gateway.name != "duckdb":
        return six_days_loaded(tmp_path, gateway, 11, pending=pending)
    if pending not in _PREPARED:
        shop, settings, folder, _ = six_days_loaded(tmp_path / "prepared", gateway, 11, pending=pending)
        _PREPARED[pending] = (shop, settings, folder)
    shop, prepared, prepared_folder = _PREPARED[pending]
    settings = gateway.copy_of(prepared, tmp_path, "killed")
    folder = tmp_path / "files"
    shutil.copytree(prepared_folder, folder)
    env = project_env(settings.project_root, ELT_DUCKDB_PATH=str(settings.warehouse),
                      ELT_LANDING_ROOT=str(settings.landing_root))
    return copy.deepcopy(shop), settings, folder, env


def _killed_then_healed(tmp_path: Path, gateway: Gateway, point: str, *, first: bool, after: str,
                        expect: tuple[int, ...], signal: str = "KILL") -> str:
    """Start from six days loaded (and, for a later transform, built, then a new day, a late
    correction and a deletion loaded; on DuckDB a copy of what ``six_days_loaded`` made once); kill `elt
    transform` at ``point`` (its ``after``-th pass) and check its exit status is in ``expect``; then
    more days and corrections arrive and a normal transform runs: the marts must equal one clean
    build of the final data on the same gateway. ``signal`` is what the failpoint sends (TERM: a
    scheduler's timeout); returns the killed transform's stderr."""
    shop, settings, folder, env = _six_days(tmp_path, gateway, pending=not first)
    killed = run([str(BIN / "elt"), "transform"], cwd=settings.project_root,
                 env={**env, "ELT_FAILPOINT": point, "ELT_FAILPOINT_AFTER": after, "ELT_FAILPOINT_SIGNAL": signal},
                 check=False)
    assert killed.returncode in expect, killed.stderr[-2000:]
    # then more days and corrections arrive, and the scheduled transforms run normally
    more_days_loaded(shop, settings, folder)
    run([str(BIN / "elt"), "transform"], cwd=settings.project_root, env=env)
    assert gateway.marts(settings) == _clean_build(tmp_path, shop, gateway)
    return killed.stderr


@pytest.mark.parametrize("first", [True, False], ids=["first-transform", "later-transform"])
@pytest.mark.parametrize("point", TRANSFORM_POINTS)
def test_a_transform_killed_at_any_step_loses_nothing(tmp_path: Path, point: str, first: bool) -> None:
    # a point a path never reaches (no removal to interrupt in a first build) lets it finish;
    # every build evaluates intervals, so mid_evaluation always kills
    _killed_then_healed(tmp_path, Gateway("duckdb"), point, first=first, after="3",
                        expect=(-9,) if point == "transform.mid_evaluation" else (-9, 0))


@pytest.mark.parametrize("point", TRANSFORM_POINTS)
def test_a_later_transform_stopped_by_sigterm_at_any_step_says_so_and_loses_nothing(tmp_path: Path, point: str) -> None:
    """SIGTERM (Airflow's task timeout, Kubernetes, `timeout`) at each failpoint of a later
    transform: it unwinds as a Ctrl-C does and says so, with no traceback (before, it died with
    status -15 and no word); then more loads and a normal transform equal one clean build. A point
    the path does not reach (a later transform without model changes needs no plan) lets it finish."""
    err = _killed_then_healed(tmp_path, Gateway("duckdb"), point, first=False, after="1", expect=(143, 0),
                              signal="TERM")
    if "transform.before_finalize" != point != "transform.after_plan":
        assert "interrupted: `elt transform` stopped by SIGTERM; what it had not committed was rolled back" in err, err
    assert "Traceback" not in err, err


# A later transform with no model change reaches every point but the plan's (no plan is needed).
PLAN_POINTS = ("transform.before_finalize", "transform.after_plan")
LATER_POINTS = [p for p in TRANSFORM_POINTS if p not in PLAN_POINTS]


@pytest.mark.parametrize("gateway", ["postgres"], indirect=True)
@pytest.mark.parametrize("point", LATER_POINTS)
def test_a_later_transform_killed_on_postgres_loses_nothing(tmp_path: Path, point: str, gateway: Gateway) -> None:
    """The same kill, on the PostgreSQL gateway (raw, models and SQLMesh state in one database):
    a later transform (new days, a correction, a deletion pending) killed at its first pass of each
    failpoint, then more loads and a normal transform, equal one clean build on PostgreSQL."""
    _killed_then_healed(tmp_path, gateway, point, first=False, after="1", expect=(-9,))


@pytest.mark.parametrize("gateway", ["postgres"], indirect=True)
def test_a_first_plan_killed_before_it_finalized_prod_heals_on_postgres(tmp_path: Path, gateway: Gateway) -> None:
    """Found by bench/kill_transform.py on PostgreSQL: a plan killed after promoting prod and before
    finalizing it left SQLMesh's run waiting for that dead plan (6 hours, then an error) in every
    later transform. The next transform applies the plan again, which finalizes prod."""
    _killed_then_healed(tmp_path, gateway, "transform.before_finalize", first=True, after="1", expect=(-9,))
