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
)


def hit(name: str) -> None:
    if os.environ.get("ELT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
