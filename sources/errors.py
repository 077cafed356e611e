"""Errors raised by the loader.

Every message says what failed, where (source, table, batch, row, field) and what to do next.
The tree is small on purpose: callers catch ``LoaderError`` for "this table failed, the others go
on"; ``ConfigError`` means nothing ran.
"""

from __future__ import annotations

import re


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span many lines), or its type.

    >>> first_line(ValueError("bad value\\nDETAIL: more"))
    'bad value'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LoaderError(Exception):
    """Base class: one table of one source could not be loaded; nothing of it was applied.

    ``row`` is a data row, 1-based, in the extract or the landed batch: records, not file lines
    (a CSV error's message gives both, ``data row 7 (file line 9)``).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        table: str | None = None,
        batch_id: str | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.table = table
        self.batch_id = batch_id
        self.row = row
        self.field = field
        self.hint = hint
        self.detail = message
        super().__init__(message)

    def __str__(self) -> str:
        return self._render()

    def _render(self) -> str:
        where = [
            f"{label}={value}"
            for label, value in (
                ("source", self.source),
                ("table", self.table),
                ("batch", self.batch_id),
                ("row", self.row),
                ("field", self.field),
            )
            if value is not None
        ]
        text = self.detail
        if where:
            text = f"[{' '.join(where)}] {text}"
        if self.hint:
            text = f"{text}\n  next: {self.hint}"
        return text


class ConfigError(LoaderError):
    """A source declaration is invalid. Raised before anything is extracted."""


class ContractError(LoaderError):
    """Extracted data breaks the declared contract (columns, types, primary key).

    The batch is discarded before its manifest is written, so it never existed.
    """


class ConnectionFailed(LoaderError):
    """A database could not be reached (refused, timed out, DNS): worth retrying, unlike a refused
    login or a missing database, which are ``ConfigError``."""


class ResourceBusy(ConnectionFailed):
    """Another process holds something the command needs (a lock, a single-user metastore): worth
    retrying once it lets go; `elt` exits 75 (EX_TEMPFAIL), as for its own locks."""


class SourceReadError(LoaderError):
    """The source could not be read (missing file, malformed CSV, unreadable bytes)."""


class LandingError(LoaderError):
    """A landed batch is unusable (checksum mismatch, unreadable manifest)."""


class RawLoadError(LoaderError):
    """Appending a landed batch to its raw table failed; the transaction was rolled back."""


class WarehouseUnreadable(LoaderError):
    """DuckDB refuses a file itself: damaged, not a database, or another storage version
    (``unreadable_duckdb_file`` words it). No retry helps."""


# DuckDB's words for a file it will not open: damaged, not a database, or another storage version
_DUCKDB_FILE_PROBLEMS = re.compile(
    r'The file "(?P<path>[^"]+)" exists, but it is not a valid DuckDB database file'
    r"|(?P<corrupt>Corrupt database file[^\n]*)"
    r"|Trying to read a database file with version number (?P<found>\d+), but we can only read versions? "
    r"(?:between )?(?P<low>\d+)(?: and (?P<high>\d+))?")


def unreadable_duckdb_file(exc: BaseException, path: object) -> str | None:
    """What to do when DuckDB refuses ``path`` itself (anywhere in ``exc``'s chain), else None: a
    file written by another DuckDB version, or a damaged one. A held lock is not this (75, rerun).

    >>> print(unreadable_duckdb_file(OSError('IO Error: Trying to read a database file with version number 99, '
    ...                                      'but we can only read versions between 64 and 67.'), "w.duckdb"))
    the DuckDB file w.duckdb has storage version 99; this installation's DuckDB reads versions 64 to 67: a newer DuckDB wrote it
      next: run the DuckDB version pinned by the checkout that wrote it (`git pull`, then `make .venv/.installed`), or restore the copy made before an upgrade (docs/runbook.md, "Upgrading SQLMesh or DuckDB")
    >>> unreadable_duckdb_file(OSError('IO Error: Could not set lock on file "w.duckdb"'), "w.duckdb") is None
    True
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        match = _DUCKDB_FILE_PROBLEMS.search(str(current))
        if match:
            break
        current = current.__cause__ or current.__context__
    else:
        return None
    where = match["path"] or path
    if match["found"]:
        found, low, high = int(match["found"]), int(match["low"]), int(match["high"] or match["low"])
        if found > high:
            return (f"the DuckDB file {where} has storage version {found}; this installation's DuckDB reads versions "
                    f"{low} to {high}: a newer DuckDB wrote it\n"
                    "  next: run the DuckDB version pinned by the checkout that wrote it (`git pull`, then "
                    "`make .venv/.installed`), or restore the copy made before an upgrade "
                    "(docs/runbook.md, \"Upgrading SQLMesh or DuckDB\")")
        return (f"the DuckDB file {where} has storage version {found}; this installation's DuckDB reads versions "
                f"{low} to {high}: an older DuckDB wrote it\n"
                "  next: open it once with a DuckDB release that reads both versions and export it "
                "(`EXPORT DATABASE`), or rebuild it from landing (docs/runbook.md, \"Restore raw from landing\")")
    if match["corrupt"]:  # DuckDB does not say which file
        what = f"a DuckDB file this command opened is damaged ({match['corrupt']}); the warehouse is {path}"
    else:
        what = f"the DuckDB file {where} is damaged or is not a DuckDB database"
    return (f"{what}\n"
            "  next: stop scheduled runs and keep the file for inspection (`mv` it aside); restore it from a backup, "
            "or rebuild the warehouse from landing: `elt load SOURCE --from-landing` for every source, then "
            "`elt transform` (docs/runbook.md, \"Restore raw from landing\")")
