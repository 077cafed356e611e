"""Named crash points for the crash tests: ``ELT_FAILPOINT=<name>`` kills the process there.

Killing with SIGKILL (not an exception) is the point: nothing runs after it, no ``finally``, no
rollback by Python, exactly like a power cut or the OOM killer. In normal runs the variable is
unset and ``hit`` costs one dictionary lookup per batch.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "extract.mid",  # after the first record batch of an extract was written to the spool
    "landing.before_manifest",  # data file placed in landing, manifest not written
    "raw.mid_load",  # rows inserted into raw, transaction not committed
    "raw.after_commit",  # batch committed to raw, before anything else
    # the transform (orchestrator/transform/run.py)
    "transform.after_windows",  # pending batches turned into windows, nothing changed yet
    "transform.mid_invalidate",  # some model versions' intervals removed, not all
    "transform.after_invalidate",  # every window removed from SQLMesh state, batches not marked consumed
    "transform.after_consumed",  # batches marked consumed, plan/run not started
    "transform.mid_evaluation",  # inside SQLMesh: a model's interval written, later ones not (see ELT_FAILPOINT_AFTER)
    "transform.before_finalize",  # inside SQLMesh: a plan promoted the environment, not finalized it
    "transform.after_plan",  # plan applied, run not started
    "transform.after_run",  # run finished, watermark not written
)


def _signal() -> int:
    """SIGKILL, or the signal ``ELT_FAILPOINT_SIGNAL`` names (``TERM``, ``INT``): a scheduler's
    timeout or a Ctrl-C at the same instant, which lets the process unwind."""
    name = os.environ.get("ELT_FAILPOINT_SIGNAL", "KILL").upper().removeprefix("SIG")
    return int(getattr(signal, f"SIG{name}", signal.SIGKILL))


def hit_after(name: str, count_var: str = "ELT_FAILPOINT_AFTER") -> bool:
    """For a failpoint hit many times: kill at the N-th hit (``ELT_FAILPOINT_AFTER=N``, default 1)."""
    if os.environ.get("ELT_FAILPOINT") != name:
        return False
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(os.environ.get(count_var, "1")):
        os.kill(os.getpid(), _signal())
    return True


_counts: dict[str, int] = {}


def hit(name: str) -> None:
    if os.environ.get("ELT_FAILPOINT") == name:
        os.kill(os.getpid(), _signal())
