"""Errors raised by the loader.

Every message says what failed, where (source, table, batch, row, field) and what to do next.
The tree is small on purpose: callers catch ``LoaderError`` for "this table failed, the others go
on"; ``ConfigError`` means nothing ran.
"""

from __future__ import annotations


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
