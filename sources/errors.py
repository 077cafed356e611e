"""Errors raised by the loader.

Every message says what failed, where (source, table, batch, row, field) and what to do next.
The tree is small on purpose: callers catch ``LoaderError`` for "this table failed, the others go
on"; ``ConfigError`` means nothing ran.
"""

from __future__ import annotations

import re
from pathlib import Path


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span many lines), or its type.

    >>> first_line(ValueError("bad value\\nDETAIL: more"))
    'bad value'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def first_line_and_next(exc: BaseException) -> str:
    """The first line of an exception's message and, when a later line says what to do next, that
    line too: the run history keeps one line, and an on-call engineer reading `elt runs` or `elt
    run-show` needs the step as much as the cause (a walkthrough found it dropped).

    >>> first_line_and_next(ValueError("bad value\\nDETAIL: more\\n  next: fix the row"))
    'bad value; next: fix the row'
    >>> first_line_and_next(ValueError("bad value; next: fix it\\n  next: fix it"))
    'bad value; next: fix it'
    """
    return with_next(first_line(exc), str(exc))


def with_next(summary: str, text: str) -> str:
    """``summary`` with the first ``next:`` line of ``text`` after its first line, unless it has it.

    >>> with_next("audit failed on model m", "transform failed during run.\\n  - audit ...\\n  next: inspect the rows")
    'audit failed on model m; next: inspect the rows'
    """
    step = next((line.strip() for line in text.splitlines()[1:] if line.strip().startswith("next:")), None)
    return summary if step is None or step in summary else f"{summary}; {step}"


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, each once."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


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


class ManifestMissing(LandingError):
    """A batch folder's manifest is not there (``LandedBatches.manifest`` says more for a batch raw
    has applied)."""


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
    match = next((m for m in map(_DUCKDB_FILE_PROBLEMS.search, map(str, exception_chain(exc))) if m), None)
    if match is None:
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
    if match["path"] and _empty_file(match["path"]):
        # DuckDB creates the file before it writes its header, and leaves it when that write fails
        # (a full disk): it holds nothing, and it is not the warehouse's damage a restore would mend
        return (f"the DuckDB file {where} is empty (0 bytes): its creation failed, usually on a full disk, and it "
                "holds nothing\n"
                f"  next: check the disk has room again (`df -h {Path(str(where)).parent}`), then delete the empty file "
                f"(`rm {where}`) and rerun: the command creates it again")
    if match["corrupt"]:  # DuckDB does not say which file
        what = f"a DuckDB file this command opened is damaged ({match['corrupt']}); the warehouse is {path}"
    else:
        what = f"the DuckDB file {where} is damaged or is not a DuckDB database"
    return (f"{what}\n"
            "  next: stop scheduled runs and keep the file for inspection (`mv` it aside); restore it from a backup, "
            "or rebuild the warehouse from landing: `elt load SOURCE --from-landing` for every source, then "
            "`elt transform` (docs/runbook.md, \"Restore raw from landing\")")


def _empty_file(path: str) -> bool:
    try:
        return Path(path).stat().st_size == 0
    except OSError:
        return False


# DuckDB's words when it could not write a database file: the OS's (a full disk), or its own after
# such a failure, when it refuses every later statement of the process. When its spill file (the
# warehouse's ``.tmp``) cannot grow, DuckDB says "Out of Memory Error: failed to offload data block"
# (the disk, or max_temp_directory_size, is full: a larger memory limit is not the fix)
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|failed to offload data block", re.IGNORECASE)
_INVALIDATED = "database has been invalidated because of a previous fatal error"
# either, in a model's error (SQLMesh's, as text)
WAREHOUSE_WRITE_FAILED = re.compile(f"{_DISK_FULL.pattern}|{re.escape(_INVALIDATED)}", re.IGNORECASE)


# DuckDB names the file it could not write: IO Error: Could not write file "/w.duckdb.wal": No space left on device
_FULL_FILE = re.compile(r'"(?P<file>[^"\n]+)"[^\n]*?(?:No space left on device|Disk quota exceeded)', re.IGNORECASE)


def full_disk_elsewhere(exc: BaseException, database: object, folders: tuple[object, ...] = ()) -> tuple[str, str] | None:
    """(where, the error) when a full disk stopped a write that was not to the DuckDB warehouse
    ``database`` (nor its ``.wal``/``.tmp``): the file the error names, else the first of
    ``folders`` (the project, where SQLMesh writes its ``.cache``) that lies on another disk than the
    warehouse and has (almost) no room left. None when the warehouse's disk is the one. A probe filled
    the project's disk and was told to free space beside a warehouse that had gigabytes free.

    >>> full = OSError(28, "No space left on device"); full.filename = "/p/.cache/model_definition/x"
    >>> full_disk_elsewhere(full, "/d/w.duckdb")
    ('/p/.cache/model_definition/x', "[Errno 28] No space left on device: '/p/.cache/model_definition/x'")
    >>> full_disk_elsewhere(OSError('IO Error: Could not write file "/d/w.duckdb.wal": No space left on device'), "/d/w.duckdb")
    """
    import os
    import shutil
    from pathlib import Path

    warehouse = str(database)
    full = None
    for e in exception_chain(exc):
        file = None
        if isinstance(e, OSError) and e.errno in (28, 122) and e.filename:  # ENOSPC, EDQUOT
            file = str(e.filename)
        elif (found := _FULL_FILE.search(str(e))) is not None:
            file = found["file"]
        if file is not None:
            if file == warehouse or (file.startswith(warehouse) and file[len(warehouse):] in (".wal", ".tmp")) \
                    or file.startswith(warehouse + ".tmp/"):
                return None
            return file, str(e).strip()
        if full is None and isinstance(e, OSError) and e.errno in (28, 122):
            full = str(e).strip()
    if full is None:
        return None
    try:
        beside = os.stat(Path(warehouse).parent).st_dev
    except OSError:
        return None
    for folder in folders:
        try:
            usage = shutil.disk_usage(str(folder))
            if os.stat(str(folder)).st_dev != beside and usage.free < max(16 * 2**20, usage.total // 100):
                return str(folder), full
        except OSError:
            continue
    return None


def warehouse_write_problem(exc: BaseException, database: object) -> str | None:
    """The next step when DuckDB could not write the warehouse ``database`` (anywhere in ``exc``'s
    chain): its disk is full, or an earlier failed write this run made DuckDB refuse the rest.

    >>> print(warehouse_write_problem(OSError('IO Error: Could not write file "/w.duckdb.wal": No space left on device'),
    ...                               "/w.duckdb"))
    free space on the disk holding the warehouse /w.duckdb (DuckDB also writes /w.duckdb.wal and spills to /w.duckdb.tmp beside it), or set ELT_DUCKDB_PATH to a larger disk, then rerun: what failed was rolled back, and what committed before it is kept
    >>> warehouse_write_problem(ValueError("Binder Error: no such column"), "/w.duckdb") is None
    True
    """
    text = "\n".join(str(e) for e in exception_chain(exc))
    room = (f"free space on the disk holding the warehouse {database} (DuckDB also writes {database}.wal and spills "
            f"to {database}.tmp beside it), or set ELT_DUCKDB_PATH to a larger disk, then rerun: what failed was "
            "rolled back, and what committed before it is kept")
    if "failed to offload data block" in text and not re.search(r"No space left|Disk quota", text):
        # DuckDB's words for a spill file that cannot grow: its disk is full, unless someone set
        # max_temp_directory_size (a larger memory limit is not the fix)
        return (f"DuckDB could not spill to {database}.tmp: the disk holding it is full (or its "
                f"max_temp_directory_size was reached), though DuckDB calls it 'Out of Memory'; {room}")
    if _DISK_FULL.search(text):
        return room
    if _INVALIDATED in text:
        import shutil
        from pathlib import Path

        try:
            free = f"{shutil.disk_usage(Path(str(database)).parent).free / 2**20:,.0f} MB free now"
        except OSError:
            free = "free space not known"
        return f"an earlier write to the warehouse failed in this run, usually for a full disk ({free}); {room}"
    return None


class LandingUnreachable(ConnectionFailed):
    """The S3 landing store did not answer, or answered "busy" (slow down, 5xx): worth retrying; the
    batch, landed or not, is untouched."""


# Arrow's words for an S3 error: "AWS Error <CODE> [(HTTP status NNN)] during <Operation> operation"
_AWS_ERROR = re.compile(r"(?:When [^:\n]*: )?AWS Error (?P<code>[A-Z_]+)(?: \(HTTP status (?P<status>\d{3})\))? during "
                        r"(?P<op>\w+) operation[^\n]*")
# the endpoint is unreachable or busy: the same request may pass in a minute
_AWS_TRANSIENT = frozenset({"NETWORK_CONNECTION", "SLOW_DOWN", "INTERNAL_FAILURE", "SERVICE_UNAVAILABLE", "THROTTLING",
                            "REQUEST_TIMEOUT"})
# the endpoint answered, and refused these credentials or this request: no retry helps
_AWS_REFUSED = frozenset({"ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "INVALID_CLIENT_TOKEN_ID",
                          "UNRECOGNIZED_CLIENT", "MISSING_AUTHENTICATION_TOKEN", "INVALID_SIGNATURE",
                          "INCOMPLETE_SIGNATURE", "REQUEST_EXPIRED", "REQUEST_TIME_TOO_SKEWED"})
# an expired session token: Arrow has no code for it (UNKNOWN, HTTP status 400), only S3's words
_EXPIRED = re.compile(r"ExpiredToken|token has expired|token is expired", re.IGNORECASE)
S3_PERMISSIONS = "s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload"


def landing_store_error(exc: BaseException, url: str, *, applying: bool = False, **where: str | None) -> LoaderError | None:
    """The error to raise when ``exc`` (anywhere in its chain) is the S3 landing store's at ``url``,
    else None: ``LandingUnreachable`` (retried) when it could not be reached or was busy, a
    ``ConfigError`` naming the credentials when it refused them. ``applying``: while a landed batch
    was read into raw (the batch is fine: never a reason to set it aside).

    >>> e = OSError("When listing objects under key 'l/' in bucket 'b': AWS Error NETWORK_CONNECTION during "
    ...             "ListObjectsV2 operation: curlCode: 6, Could not resolve hostname")
    >>> print(landing_store_error(e, "s3://b/l", source="shop", table="orders"))
    [source=shop table=orders] the landing store s3://b/l could not be reached (NETWORK_CONNECTION during ListObjectsV2): When listing objects under key 'l/' in bucket 'b': AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: curlCode: 6, Could not resolve hostname
      next: nothing of this table was half-applied; check the S3 endpoint (ELT_S3_ENDPOINT) and the network to it; the orchestrator retries, and a rerun applies the landed batches raw lacks first (docs/runbook.md#a-job-failed)
    >>> type(landing_store_error(OSError("AWS Error UNKNOWN (HTTP status 503) during HeadObject operation: x"), "s3://b")).__name__
    'LandingUnreachable'
    >>> print(landing_store_error(OSError("AWS Error SIGNATURE_DOES_NOT_MATCH during PutObject operation: x"), "s3://b").hint)
    nothing of this table was half-applied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile or role elt runs with) and that they allow s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on s3://b, then rerun
    >>> landing_store_error(OSError("No space left on device"), "s3://b") is None
    True
    """
    for item in reversed(exception_chain(exc)):  # the cause first: a wrapper repeats its text among its own
        found = _AWS_ERROR.search(str(item))
        if found:
            break
    else:
        return None
    code, status, operation = found["code"], found["status"] or "", found["op"]
    # Arrow's sentence, without a driver's prefix ("arrow_scan: get_next failed(): ...") or the
    # "Detail: Python exception: Traceback" DuckDB appends when it read through Arrow
    detail = found.group(0).split(". Detail: Python exception")[0]
    during = "reading a landed batch into raw from" if applying else "the landing store"
    kept = ("nothing of the batch was applied (it stays in landing and the rerun applies it)" if applying
            else "nothing of this table was half-applied")
    if code in _AWS_TRANSIENT or status.startswith("5") or status == "429":
        what = "could not be reached" if code == "NETWORK_CONNECTION" else "answered busy or failing"
        return LandingUnreachable(
            f"{during} {url} {what} ({code} during {operation}): {detail}" if not applying
            else f"{during} the landing store {url} failed: it {what} ({code} during {operation}): {detail}",
            hint=f"{kept}; check the S3 endpoint (ELT_S3_ENDPOINT) and the network to it; the orchestrator retries, "
                 "and a rerun applies the landed batches raw lacks first (docs/runbook.md#a-job-failed)", **where)
    if code in _AWS_REFUSED or status == "403" or _EXPIRED.search(detail):
        return ConfigError(
            f"the landing store {url} refused the request ({code} during {operation}): {detail}",
            hint=f"{kept}; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile or role elt runs with) "
                 f"and that they allow {S3_PERMISSIONS} on {url}, then rerun", **where)
    return None


INTERRUPTED = "Query interrupted"  # DuckDB's words for a statement a SIGINT stopped


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C (SIGINT) that DuckDB turned into its own error: DuckDB interrupts
    the running query and raises ``Query interrupted`` instead of ``KeyboardInterrupt``, which a
    caller would take for a failure of the data or the SQL and go on after.

    A Ctrl-C while pydantic builds a model's schema (during SQLMesh's import) comes back as its
    ``SchemaError`` whose text names the interrupt (an interrupt probe).

    >>> interrupted(RuntimeError("Query interrupted")), interrupted(ValueError("bad value"))
    (True, False)
    >>> class SchemaError(Exception): pass
    >>> interrupted(SchemaError("Error building 'model' serializer: KeyboardInterrupt"))
    True
    >>> interrupted(ValueError("'KeyboardInterrupt' is not a valid integer (row 3, field subtotal)"))
    False

    An interrupt raised while DuckDB calls back into Python (scanning a pandas frame that SQLMesh's
    state writes hand it) comes back as DuckDB's ``Error`` whose text starts with it (a SIGTERM
    probe: a traceback and exit 1).

    >>> Error = type("Error", (Exception,), {"__module__": "_duckdb"})
    >>> interrupted(Error("KeyboardInterrupt: SIGTERM")), interrupted(Error("Conversion Error: KeyboardInterrupt"))
    (True, False)
    """
    return any(isinstance(e, KeyboardInterrupt) or interrupted_text(str(e))
               or (type(e).__name__ == "SchemaError" and "KeyboardInterrupt" in str(e))  # not a value in data
               or ("duckdb" in type(e).__module__ and str(e).startswith("KeyboardInterrupt"))
               for e in exception_chain(exc))


def interrupted_text(text: str) -> bool:
    """Whether an error's text (``model: first line``, as the transform records a model's error) is
    an interrupt: DuckDB's ``Query interrupted``, or a KeyboardInterrupt that DuckDB wrapped.

    >>> interrupted_text("marts.orders: KeyboardInterrupt: SIGTERM"), interrupted_text("KeyboardInterrupt: SIGTERM")
    (True, True)
    >>> interrupted_text("marts.orders: Conversion Error: Could not convert 'KeyboardInterrupt'")
    False
    """
    return INTERRUPTED in text or re.match(r'([\w."]+: )?KeyboardInterrupt\b', text) is not None
