"""The manifest of a landed batch: written last, it is what makes a batch exist.

It records everything needed to trust and trace the batch without opening its data: the rows,
the declared schema, a checksum per file, the extraction time, the batch id and where the data
came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

MANIFEST_NAME = "_manifest.json"
FORMAT_VERSION = 1
# An empty file beside the manifest naming (by hash) the source file a batch was extracted from,
# so that one listing of a table tells which files of a pattern are landed, without reading any
# manifest (sources/extract/files.py). Written before the manifest, part of the immutable batch.
ORIGIN_MARKER = "_origin-"


def origin_marker(path: str) -> str:
    """The marker file name for a source file's URL.

    >>> origin_marker("/data/in/clicks-001.csv")
    '_origin-83cf844a74cf2ee2c291229fa4ce0c64'
    """
    import hashlib

    return ORIGIN_MARKER + hashlib.sha256(path.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LandedFile:
    path: str  # relative to the batch folder
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    batch_id: str
    source: str
    table: str
    extracted_at: str  # ISO 8601, UTC
    rows: int
    columns: list[dict[str, str]]  # name, type (declared vocabulary), arrow
    primary_key: list[str]
    files: list[LandedFile]
    origin: dict[str, Any] = field(default_factory=dict)  # what was extracted (file path, checksum...)
    cursor: dict[str, Any] = field(default_factory=dict)  # incremental sources: field, from, to
    # the whole table as the source had it: raw gains only its changes and tombstones
    # (sources/load/changes.py); False for increments (a cursor, a window, a new file of a pattern)
    snapshot: bool = False
    # a forced re-read of an increment (a backfill window, `elt load --force` of a cursor table or
    # of a pattern's files): raw gains only rows that differ from the key's latest version, and no
    # tombstones (the read is not the whole table)
    changes_only: bool = False
    format_version: int = FORMAT_VERSION
    # the table's soft_delete column when the batch was landed: a row whose value marks it deleted
    # (boolean TRUE, a date or timestamp not NULL) is applied as its key's deletion, in a replay too
    soft_delete: str = ""

    def soft_delete_type(self) -> str:
        """The declared type of the ``soft_delete`` column ("" without one)."""
        return next((c["type"] for c in self.columns if c["name"] == self.soft_delete), "") if self.soft_delete else ""

    @property
    def extracted_at_dt(self) -> datetime:
        return datetime.fromisoformat(self.extracted_at)

    def force_command(self, file: str | None = None) -> str:
        """The `elt load ... --force` that lands this batch's file again (``force_command``).

        >>> m = Manifest("b1", "shop", "orders", "2026-01-01T00:00:00+00:00", 1, [], [], [],
        ...              origin={"path": "/in/day 2/orders.csv"})
        >>> m.force_command("orders.csv")
        "elt load shop --table orders --force --path '/in/day 2'"
        """
        return force_command(self.source, self.table, self.origin, file)

    def to_json(self) -> str:
        data = asdict(self)
        # written only when set: older loaders read the rest (a loader older than soft_delete refuses
        # a manifest that names one, rather than applying its marked rows as live)
        for name in ("changes_only", "soft_delete"):
            if not data[name]:
                del data[name]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["files"] = [LandedFile(**f) for f in data["files"]]
        data.setdefault("cursor", {})
        return cls(**data)


def force_command(source: str, table: str, origin: dict[str, Any], file: str | None = None) -> str:
    """The `elt load ... --force` that reads a file again, from the folder it was read from
    (``origin["path"]``; ``--path``: a load given another folder than the declaration's reads the
    declared one without it). ``file``: the table's declared file name, relative to that folder."""
    import posixpath
    import shlex

    command = f"elt load {source} --table {table} --force"
    path = str(origin.get("path") or "")
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not path:
        return command
    name = (file or posixpath.basename(path)).strip("/")
    folder = path[: -len(name) - 1] if path.endswith("/" + name) else posixpath.dirname(path)
    return f"{command} --path {shlex.quote(folder)}" if folder else command
