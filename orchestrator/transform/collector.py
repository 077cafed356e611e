"""Python's garbage collector, set for the work SQLMesh does (docs/decisions/0083-garbage-collector.md).

Rendering and planning models builds and copies sqlglot syntax trees: millions of short-lived
objects whose parent links make reference cycles. With CPython's default thresholds the cyclic
collector ran about 4,600 times in four transforms of the demo's models, and each of its full
collections walked every object the process had imported (SQLMesh, sqlglot, pandas, pyarrow:
about 170,000): a sixth of the transforms' CPU time.

``tune_collector`` (once per process: `elt` at its start, and the first SQLMesh context made in a
process) collects the youngest generation after 10,000 allocations instead of 700. Garbage is
still collected, in fewer and larger passes; the process holds a little more of it between them
(up to about 25 MB more at its peak in a loop of small transforms; the first build of a year of
data peaked at the same 410-420 MB either way). ``ELT_GC_TUNING=0`` leaves Python's collector as it is.

``gc.freeze()`` was measured too and left out: it saves a little more in a process that runs many
transforms, but its collection first (so that no garbage is frozen for good) cost more than it
saved in a command that runs one.
"""

from __future__ import annotations

import gc
import os

# allocations between collections of the youngest generation, and collections of each generation
# between collections of the next (CPython's defaults: 700, 10, 10)
THRESHOLDS = (10_000, 10, 10)

_tuned = False


def tune_collector() -> bool:
    """Raise the collector's first threshold, once per process; False when it was done before or
    ``ELT_GC_TUNING=0`` turns it off (then Python's own thresholds stay)."""
    global _tuned
    if _tuned or os.environ.get("ELT_GC_TUNING", "1").strip() == "0":
        return False
    _tuned = True
    gc.set_threshold(*THRESHOLDS)
    return True
