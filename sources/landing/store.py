"""Immutable landing on a local folder or any S3-compatible endpoint: one layout, one contract.

Layout (``<root>`` is a folder, or ``bucket/prefix`` on S3)::

    <root>/<source>/<table>/<batch_id>/part-00000.parquet
    <root>/<source>/<table>/<batch_id>/_manifest.json      <- written last

A batch exists only once its manifest exists. Locally the manifest is written to a temporary
name, fsynced and renamed; on S3 a PUT is atomic. Data files are written to a local spool first
and checksummed (``writer.py``), then placed (renamed locally, uploaded on S3), so a crash at
any instant leaves either a complete batch or a folder without manifest that no reader sees and
that ``sweep_incomplete`` removes. Nothing here ever rewrites or deletes a batch that has a manifest.

A batch that cannot be applied can be set aside (``elt set-aside``): a small record beside the
batches, ``<root>/<source>/<table>/.set_aside/<batch_id>.json`` (who, when, why), which every
load and every replay of landing honours. The batch itself stays as it was landed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import pyarrow as pa
import pyarrow.fs as pafs

from sources import failpoints
from sources.errors import (ConfigError, LandingError, LoaderError, ManifestMissing, exception_chain,
                           landing_store_error)
from sources.landing.manifest import MANIFEST_NAME, ORIGIN_MARKER, Manifest, origin_marker
from sources.landing.writer import PART_NAME, BatchWriter, new_batch_id, sha256_of, stamp_after
from sources.logs import get_logger, redact_userinfo

__all__ = ["PART_NAME", "BatchWriter", "LandedBatches", "Landing", "LocalLanding", "SetAside", "new_batch_id",
           "s3_filesystem", "sha256_of"]

log = get_logger("sources.landing")

SET_ASIDE_DIR = ".set_aside"  # per table, beside the batches; a dot folder is never listed as a batch
# More batch folders than this to look into (none of them applied): one recursive listing of the
# table instead of one listing per folder (on S3 a request each; a recursive LIST takes 1,000 objects)
FOLDER_LISTINGS_MAX = 32


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def s3_filesystem(endpoint: str | None = None, region: str | None = None,
                  allow_bucket_creation: bool = False) -> pafs.S3FileSystem:
    """An S3 filesystem; credentials come from the standard AWS environment variables/profile."""
    kwargs: dict[str, Any] = {"region": region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                              "allow_bucket_creation": allow_bucket_creation}
    endpoint = endpoint or os.environ.get("ELT_S3_ENDPOINT")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            scheme, host = "https", endpoint
        if "@" in host:  # a key and secret written into the URL (a secret may hold "/"): a setting, not a network fault
            raise ConfigError(
                "ELT_S3_ENDPOINT holds credentials before its host (user:password@); they are not read from there",
                hint="set ELT_S3_ENDPOINT to the endpoint alone (http://host:port) and give the key in "
                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SHARED_CREDENTIALS_FILE)")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    return pafs.S3FileSystem(**kwargs)




@dataclass(frozen=True)
class SetAside:
    """A landed batch that raw must not apply (``elt set-aside``): who set it aside, when and why.

    >>> SetAside("shop", "orders", "B1", 3, "ann", "2026-12-01T06:00:00+00:00", "NUL byte").at_dt.year
    2026
    """

    source: str
    table: str
    batch_id: str
    rows: int
    by: str
    at: str  # ISO 8601, UTC
    reason: str

    @property
    def at_dt(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


CLOCK_BEHIND_NEXT = (
    "check this machine's clock (`timedatectl`, `chronyc tracking`: is NTP synchronised?). If it is right, an "
    "earlier load ran with a clock ahead: this table's batches are stamped just after that stamp until the clock "
    "passes it, and `elt freshness` reads the table's 'newest extraction' from these stamps meanwhile "
    "(docs/decisions/0057-extraction-stamps-never-go-back.md)")

S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rule


class Landing:
    """The landing store. ``Landing.from_url("s3://bucket/prefix")`` or ``Landing.local(path)``."""

    def __init__(self, fs: pafs.FileSystem, root: str, url: str, spool_dir: str | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self.is_local = isinstance(fs, pafs.LocalFileSystem)
        self.spool_dir = spool_dir or (str(Path(self.root) / ".spool") if self.is_local else None)
        if self.spool_dir:
            make_landing_dir(Path(self.spool_dir))

    def shown(self, path: str) -> str:
        """A path on ``self.fs`` as a user finds it: ``s3://bucket/...`` for S3 (the bare ``bucket/...``
        read like a local ``landing/`` folder in an error, a production walkthrough found)."""
        return path if self.is_local else f"s3://{path}"

    @classmethod
    def local(cls, path: Path | str) -> Landing:
        path = Path(path).resolve()
        make_landing_dir(path)
        return cls(pafs.LocalFileSystem(), str(path), str(path))

    @classmethod
    def from_url(cls, url: str, *, endpoint: str | None = None) -> Landing:
        """``s3://bucket/prefix`` (endpoint from ELT_S3_ENDPOINT or ``endpoint``) or a local path."""
        if url.startswith("s3://"):
            bucket_prefix = url[len("s3://"):].strip("/")
            if not bucket_prefix:
                raise ConfigError(f"landing URL {url!r} names no bucket", hint="use s3://<bucket>/<prefix>")
            if "@" in bucket_prefix and not S3_BUCKET.fullmatch(bucket_prefix.split("/")[0]):
                # not a bucket name before the first '/', and an '@' after it: user-info (a secret
                # key may hold '/'), which every landing path, and every message naming one, would
                # carry; not even redacted, the URL is not shown
                raise ConfigError("the landing URL (ELT_LANDING_URL) holds credentials before its bucket",
                                  hint="remove them from the URL: S3 credentials come from AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY (or an AWS profile), never from the landing URL")
            return cls(s3_filesystem(endpoint), bucket_prefix, url)
        scheme = re.match(r"([a-z][a-z0-9+.-]*)://", url, re.IGNORECASE)
        if scheme:  # not a folder: 'gs://key:secret@bucket/x' became a local folder named after it
            raise ConfigError(f"the landing URL (ELT_LANDING_URL) uses {scheme.group(1)}://, which is not supported",
                              hint="use s3://bucket/prefix (any S3-compatible store, with ELT_S3_ENDPOINT) or a "
                                   "local folder path (no file://)")
        return cls.local(url)

    def __repr__(self) -> str:
        return f"Landing({self.url!r})"

    def store_error(self, exc: BaseException, *, applying: bool = False, **where: str | None) -> LoaderError | None:
        """The error to raise when ``exc`` is this S3 landing's own (``landing_store_error``: not
        reached or busy, retried; credentials refused), else None: a local landing, another
        bucket's error (a file source's), or an error S3 did not give."""
        if self.is_local:
            return None
        named = re.search(r"in bucket '([^']+)'", "\n".join(str(e) for e in exception_chain(exc)))
        if named and named.group(1) != self.root.split("/")[0]:
            return None
        return landing_store_error(exc, self.url, applying=applying, **where)

    def missing_bucket(self, exc: BaseException | None = None) -> ConfigError | None:
        """The error to raise when the S3 bucket does not exist: told by ``exc`` (S3's NO_SUCH_BUCKET),
        or, without one, by asking the endpoint. ``None`` on a local landing or when the bucket exists."""
        if self.is_local or (exc is not None and "NO_SUCH_BUCKET" not in str(exc)):
            return None
        bucket = self.root.split("/")[0]
        try:
            if exc is None and self.fs.get_file_info(bucket).type != pafs.FileType.NotFound:
                return None
        except OSError:  # no access to ask: the first write says what is wrong
            return None
        return self._no_bucket(bucket)

    def create_bucket(self) -> str | None:
        """Create the S3 bucket when it is missing (``elt demo --production``); the bucket's name
        when it was created, ``None`` when it exists or landing is local. A refusal (no
        permission, a name taken elsewhere) raises the missing-bucket error with its reason."""
        if self.missing_bucket() is None:
            return None
        bucket = self.root.split("/")[0]
        try:
            s3_filesystem(allow_bucket_creation=True).create_dir(bucket)
        except OSError as exc:
            error = self._no_bucket(bucket)
            raise ConfigError(f"{error.detail}; creating it failed: {redact_userinfo(str(exc).splitlines()[0])}",
                              hint=error.hint) from None
        return bucket

    def _no_bucket(self, bucket: str) -> ConfigError:
        endpoint = redact_userinfo(os.environ.get("ELT_S3_ENDPOINT") or "")
        create = f"aws s3 mb s3://{bucket}" + (f" --endpoint-url {endpoint}" if endpoint else "")
        return ConfigError(f"the landing bucket {bucket!r} of {self.url} does not exist"
                           + (f" at {endpoint}" if endpoint else ""),
                           hint=f"create it (`{create}`, or in the S3 console), or set ELT_LANDING_URL to an "
                                "existing bucket; then rerun")

    # -- paths -------------------------------------------------------------------------------
    def table_dir(self, source: str, table: str) -> str:
        return f"{self.root}/{source}/{table}"

    def batch_dir(self, source: str, table: str, batch_id: str) -> str:
        return f"{self.table_dir(source, table)}/{batch_id}"

    # -- writing -----------------------------------------------------------------------------
    def open_batch(self, source: str, table: str, schema: pa.Schema, extracted_at: datetime | None = None, *,
                   after: datetime | None = None) -> BatchWriter:
        """A writer for a new batch of ``source.table``, stamped ``extracted_at`` (the clock's time
        when not given) and named after the stamp (``new_batch_id``).

        ``after``: the newest extraction stamp the table already has (its newest landed batch, or
        raw's ledger; ``sources.pipeline`` reads it from ids it lists anyway). The batch is stamped
        at least 1 microsecond after it whatever the clock says, so it is the table's latest version
        in staging's dedupe and its id sorts after every landed one (decision 0057). When the clock
        is behind that stamp, a warning names the source, the table, the clock's time and the
        stamp used, and the manifest's ``origin.clock_behind`` records both.
        """
        clock = (extracted_at or datetime.now(UTC)).astimezone(UTC)
        stamp = stamp_after(clock, after)
        writer = BatchWriter(self, source, table, schema, stamp, new_batch_id(stamp))
        if after is not None and clock < after:
            writer.clock_behind = {"clock": clock.isoformat(), "newest_stamp": after.isoformat(),
                                   "stamped": stamp.isoformat()}
            log.warning(f"this machine's clock ({clock.isoformat()}) is behind the newest extraction stamp of "
                        f"{source}.{table} ({after.isoformat()}): the new batch is stamped {stamp.isoformat()}, 1 microsecond "
                        "after it, so that it stays the latest version of its keys", extra={"fields": {
                            "source": source, "table": table, "clock": clock.isoformat(), "stamp": stamp.isoformat(),
                            "batch_id": writer.batch_id, "next": CLOCK_BEHIND_NEXT}})
        return writer

    def _place(self, source: str, table: str, batch_id: str, data: Path, manifest: Manifest,
               sending_manifest: Callable[[], None] = lambda: None) -> None:
        """Put ``data`` and its manifest in the batch's folder; ``sending_manifest()`` is called just
        before the manifest is written (after that, a failure may still have written it)."""
        target = self.batch_dir(source, table, batch_id)
        path = manifest.origin.get("path") if manifest.origin.get("kind") == "file" else None
        marker = origin_marker(str(path)) if path else None
        if self.is_local:
            target_dir = Path(target)
            target_dir.mkdir(parents=True, exist_ok=False)
            with data.open("rb") as handle:
                os.fsync(handle.fileno())
            shutil.move(str(data), target_dir / PART_NAME)
            if marker:  # made durable with the manifest (the folder's fsync); without it, the manifest is read
                (target_dir / marker).touch()
            failpoints.hit("landing.before_manifest")
            tmp = target_dir / (MANIFEST_NAME + ".tmp")
            with tmp.open("w") as handle:
                handle.write(manifest.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target_dir / MANIFEST_NAME)
            _fsync_dir(target_dir)
        else:
            try:
                with data.open("rb") as src, self.fs.open_output_stream(f"{target}/{PART_NAME}") as out:
                    shutil.copyfileobj(src, out, 8 << 20)
            except OSError as exc:
                missing = self.missing_bucket(exc)
                if missing is not None:
                    raise missing from None
                raise
            if marker:
                with self.fs.open_output_stream(f"{target}/{marker}"):
                    pass
            failpoints.hit("landing.before_manifest")
            sending_manifest()
            with self.fs.open_output_stream(f"{target}/{MANIFEST_NAME}") as out:
                out.write(manifest.to_json().encode())

    def _remove_batch_dir(self, source: str, table: str, batch_id: str) -> None:
        path = self.batch_dir(source, table, batch_id)
        info = self.fs.get_file_info(f"{path}/{MANIFEST_NAME}")
        if info.type == pafs.FileType.NotFound:
            try:
                self._remove_folder(path)
            except OSError as exc:
                if self.missing_bucket(exc) is None:
                    raise  # no bucket, nothing to remove

    def _remove_folder(self, path: str) -> None:
        """A batch folder and everything in it. On S3, Arrow's ``delete_dir_contents`` leaves an empty
        ``<batch>/`` marker object behind, which every later load found and "removed" again, one per
        failed upload for ever (a network probe): ``delete_dir`` takes the folder itself."""
        if self.is_local:
            self.fs.delete_dir_contents(path, missing_dir_ok=True)
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            self.fs.delete_dir(path)
        except FileNotFoundError:
            pass

    # -- reading -----------------------------------------------------------------------------
    def _listing(self, source: str, table: str) -> dict[str, list[pafs.FileInfo]]:
        """Every batch folder of a table with the files under it, from one recursive listing (on
        S3, one LIST per 1,000 objects); dot folders (set-aside records) are not batches."""
        base = self.table_dir(source, table)
        folders: dict[str, list[pafs.FileInfo]] = {}
        for info in self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True)):
            batch_id, _, rest = info.path[len(base):].strip("/").partition("/")
            if not batch_id or batch_id.startswith(".") or (not rest and info.type != pafs.FileType.Directory):
                continue
            files = folders.setdefault(batch_id, [])
            if rest and info.type == pafs.FileType.File:
                files.append(info)
        return folders

    def _batch_names(self, source: str, table: str) -> list[str]:
        """The names of a table's batch folders, nothing under them: locally one directory read, on
        S3 one LIST per 1,000 batches (a recursive listing costs a stat, or an entry, per file)."""
        base = self.table_dir(source, table)
        if self.is_local:
            try:
                with os.scandir(base) as entries:
                    return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
            except (FileNotFoundError, NotADirectoryError):
                return []
        return [i.base_name for i in self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")]

    def _folder(self, source: str, table: str, batch_id: str) -> list[pafs.FileInfo]:
        """The files of one batch folder."""
        selector = pafs.FileSelector(self.batch_dir(source, table, batch_id), allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def batch_ids(self, source: str, table: str, applied: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """The ids of a table's complete batches (those with a manifest), oldest first: no manifest
        is read (``applied`` as for ``landed``; set-aside batches are looked into, listed if complete)."""
        return self.landed(source, table, applied).ids

    def landed(self, source: str, table: str, applied: set[str] | frozenset[str] = frozenset(),
               aside: set[str] | frozenset[str] = frozenset()) -> LandedBatches:
        """A table's complete batches, oldest first; a manifest is read only when it is asked for.

        ``applied`` and ``aside``: the ids raw's ledger holds for the table and its set-aside ones,
        batches known to have had a manifest (``elt set-aside`` reads it). Landing never changes a
        complete batch, so those folders are known complete from their names and are never taken
        for an interrupted extract: only the others (new batches, and folders an interrupted
        extract left) are looked into. A load with nothing new reads one directory, whatever the
        table's history (a pattern table of files lists its batches once more, ``has_origin``;
        decision 0059 has the measurements). When many folders are unknown (a replay into an empty
        warehouse), one recursive listing is cheaper than one listing per folder, and is used.
        """
        vouched = applied | aside
        names = self._batch_names(source, table)
        unknown = [b for b in names if b not in vouched]
        if len(unknown) > FOLDER_LISTINGS_MAX:
            folders = self._listing(source, table)
        else:
            folders = {b: self._folder(source, table, b) for b in unknown}
        incomplete = {b: files for b, files in folders.items()
                      if b not in vouched and not any(f.base_name == MANIFEST_NAME for f in files)}
        markers = {b: {f.base_name for f in files if f.base_name.startswith(ORIGIN_MARKER)}
                   for b, files in folders.items() if b not in incomplete}
        ids = sorted(b for b in names if b not in incomplete and (b in vouched or b in markers))
        return LandedBatches(self, source, table, ids, markers, incomplete, applied)

    def batches(self, source: str, table: str) -> Iterator[Manifest]:
        """Every complete batch of a table, oldest first (each manifest read)."""
        yield from self.landed(source, table)

    def manifest(self, source: str, table: str, batch_id: str) -> Manifest:
        return self.read_manifest(f"{self.batch_dir(source, table, batch_id)}/{MANIFEST_NAME}")

    def read_manifest(self, path: str) -> Manifest:
        try:
            with self.fs.open_input_stream(path) as handle:
                return Manifest.from_json(handle.read().decode())
        except FileNotFoundError:  # removed after it was listed, or a folder only the ledger vouches for
            raise ManifestMissing(
                f"manifest {self.shown(path)} is missing", hint="the pipeline never removes a manifest: restore the "
                "batch folder from a backup of landing (or the bucket's versions)") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise LandingError(
                f"manifest {self.shown(path)} is unreadable: {exc}",
                hint="a manifest is written atomically, so this means it was edited or the storage is damaged; "
                "restore it from backup or move the batch folder aside and re-extract",
            ) from exc

    def data_files(self, manifest: Manifest, verify: bool = True) -> list[str]:
        """The batch's data file paths (on ``self.fs``), each checked against the manifest's checksum."""
        batch_dir = self.batch_dir(manifest.source, manifest.table, manifest.batch_id)
        where = {"source": manifest.source, "table": manifest.table, "batch_id": manifest.batch_id}
        paths = []
        for landed in manifest.files:
            path = f"{batch_dir}/{landed.path}"
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                raise LandingError(
                    f"data file {self.shown(path)} listed in the manifest is missing", **where,
                    hint="landing is immutable: restore the file from backup; do not edit the manifest. If no copy "
                    f"exists, `elt set-aside {manifest.source} {manifest.table} {manifest.batch_id} --reason \"...\"` "
                    "lets later batches apply and keeps the table's cursor, so the next load reads those rows again "
                    f"(a file source whose file did not change: `{manifest.force_command()}`); "
                    "runbook: docs/runbook.md#a-batch-blocks-its-table",
                )
            if verify and sha256_of(self.fs, path) != landed.sha256:
                raise LandingError(
                    f"checksum of {self.shown(path)} does not match its manifest", **where,
                    hint="the landed file was changed after landing: restore it from backup; if it cannot be restored, "
                    f"`elt set-aside {manifest.source} {manifest.table} {manifest.batch_id} --reason \"...\"` lets later "
                    "batches apply and keeps the table's cursor, so the next load reads those rows again (a file source "
                    f"whose file did not change: `{manifest.force_command()}`); "
                    "runbook: docs/runbook.md#a-batch-blocks-its-table",
                )
            paths.append(path)
        return paths

    def open_batch_reader(self, manifest: Manifest, verify: bool = True) -> pa.RecordBatchReader:
        """Stream the batch's rows (bounded memory), after checking checksums."""
        files = self.data_files(manifest, verify=verify)
        import pyarrow.dataset as ds

        return ds.dataset(files, format="parquet", filesystem=self.fs).scanner(batch_size=65536).to_reader()

    # -- set-aside batches ------------------------------------------------------------------
    def set_aside_path(self, source: str, table: str, batch_id: str) -> str:
        return f"{self.table_dir(source, table)}/{SET_ASIDE_DIR}/{batch_id}.json"

    def set_asides(self, source: str, table: str) -> dict[str, SetAside]:
        """The table's set-aside batches by batch id (one listing; usually empty)."""
        base = f"{self.table_dir(source, table)}/{SET_ASIDE_DIR}"
        found = {}
        for info in self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=False)):
            if info.type == pafs.FileType.File and info.base_name.endswith(".json"):
                try:
                    with self.fs.open_input_stream(info.path) as handle:
                        record = SetAside(**json.loads(handle.read().decode()))
                except (ValueError, TypeError) as exc:
                    raise LandingError(
                        f"set-aside record {info.path} is unreadable: {exc}", source=source, table=table,
                        hint="it is written atomically by `elt set-aside`; restore it from backup, or remove it "
                        "and run `elt set-aside` again for that batch",
                    ) from exc
                found[record.batch_id] = record
        return found

    def all_set_asides(self) -> list[SetAside]:
        """Every set-aside batch in landing, oldest first: one listing of the sources, one per
        source for its tables, one per table for its records (batch folders are not listed)."""
        found: list[SetAside] = []
        for source in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            if source.type != pafs.FileType.Directory or source.base_name.startswith("."):
                continue
            for table in self.fs.get_file_info(pafs.FileSelector(source.path, allow_not_found=True)):
                if table.type == pafs.FileType.Directory and not table.base_name.startswith("."):
                    found.extend(self.set_asides(source.base_name, table.base_name).values())
        return sorted(found, key=lambda r: (r.at_dt, r.batch_id))

    def write_set_aside(self, record: SetAside) -> None:
        """Record (atomically) that a batch is set aside; the batch's own folder is not touched."""
        path = self.set_aside_path(record.source, record.table, record.batch_id)
        if self.is_local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            with tmp.open("w") as handle:
                handle.write(record.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        else:
            with self.fs.open_output_stream(path) as out:
                out.write(record.to_json().encode())

    def remove_set_aside(self, source: str, table: str, batch_id: str) -> bool:
        """Forget that a batch is set aside (``elt set-aside --undo``); False if it was not."""
        path = self.set_aside_path(source, table, batch_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return False
        self.fs.delete_file(path)
        return True

    def sweep_spool(self) -> list[Path]:
        """Remove spool folders left by loader processes that died (their pid is gone)."""
        removed = []
        base = Path(self.spool_dir or tempfile.gettempdir())
        for folder in base.glob("elt-batch-*-*"):
            try:
                pid = int(folder.name.split("-")[2])
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            except (ValueError, IndexError, PermissionError):
                continue
        return removed

    def sweep_incomplete(self, source: str, table: str, landed: LandedBatches | None = None) -> list[str]:
        """Remove batch folders left without a manifest by an interrupted extract (``landed``: the
        table's listing, when the caller has one; its ``incomplete`` folders are the candidates).

        On S3 a folder is removed only when its newest object is older than
        ``ELT_SWEEP_MIN_AGE_S`` (default 3600): a loader on another machine may be between its
        data upload and its manifest right now (locally, the source lock rules that out). Until
        then such a folder is merely invisible: no manifest, no batch. A folder whose batch raw
        has applied is never a candidate (``landed(applied=...)``), even if its manifest went
        missing: that needs a restore, not a sweep.
        """
        removed = []
        min_age = 0.0 if self.is_local else float(os.environ.get("ELT_SWEEP_MIN_AGE_S", "3600"))
        incomplete = (landed if landed is not None else self.landed(source, table)).incomplete
        for batch_id, files in sorted(incomplete.items()):
            batch_dir = self.batch_dir(source, table, batch_id)
            if min_age and _age_s(files) < min_age:
                continue
            self._remove_folder(batch_dir)
            removed.append(batch_dir)
            # landing is the record raw is rebuilt from: a removal is never silent
            log.warning(f"removed batch folder {self.shown(batch_dir)} ({len(files)} file(s), no manifest): a write "
                        "cut short, never a batch", extra={"fields": {"source": source, "table": table,
                                                                     "batch": batch_id, "files": len(files)}})
        return removed


def _age_s(files: list[pafs.FileInfo]) -> float:
    """Seconds since the newest of ``files`` was written (infinite when none has a time)."""
    times = [f.mtime for f in files if f.mtime is not None]
    if not times:
        return float("inf")
    newest = max(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)
    return (datetime.now(UTC) - newest).total_seconds()


def make_landing_dir(path: Path) -> None:
    """Create a local landing folder, or say which folder could not be made and what to do (a
    landing folder that is not writable, or on a full disk, stops every load until fixed)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the landing folder {path}: {exc.strerror or exc}",
            hint="nothing was extracted or loaded; make the folder writable by the user running `elt` (or free "
                 "space on its disk), or point ELT_LANDING_ROOT (or ELT_LANDING_URL) at a folder it can write, "
                 "then rerun") from None


def LocalLanding(root: Path | str) -> Landing:  # noqa: N802 - kept as the name callers use
    """The landing store on a local folder (the embedded default)."""
    return Landing.local(root)


class LandedBatches(Sequence[Manifest]):
    """A table's complete batches, oldest first, known from one listing (``ids``); each manifest
    is read when first asked for and then kept. A load that finds nothing pending reads none, so
    its cost does not grow with the number of batches a table has landed.

    ``markers``: the origin markers of the batches whose folders were listed (the others are known
    complete from raw's ledger); ``incomplete``: the folders listed that have no manifest, with
    their files."""

    def __init__(self, landing: Landing, source: str, table: str, ids: list[str],
                 markers: dict[str, set[str]] | None = None,
                 incomplete: dict[str, list[pafs.FileInfo]] | None = None,
                 applied: set[str] | frozenset[str] = frozenset()) -> None:
        self.landing, self.source, self.table, self.ids = landing, source, table, ids
        self._markers = dict(markers or {})
        self.incomplete = incomplete or {}
        self._applied = applied
        self._origins: set[str] | None = None  # the markers of every batch, known once asked for
        self._read: dict[str, Manifest] = {}

    def with_batches(self, fresh: dict[str, Manifest]) -> LandedBatches:
        """These batches and ``fresh`` ones, landed since the listing (manifests in hand): no new listing."""
        ids = sorted({*self.ids, *fresh})
        more = LandedBatches(self.landing, self.source, self.table, ids, self._markers, applied=self._applied)
        more._read = {**self._read, **fresh}
        return more

    def has_origin(self, path: str) -> bool:
        """Whether a batch was extracted from the source file ``path``: known from the origin
        markers, listed once for every batch when first asked (a file source with a pattern asks);
        only batches landed without one (by a version before markers) have their manifest read."""
        if self._origins is None:
            if any(b not in self._markers for b in self.ids):  # known complete from the ledger, unlisted
                listed = self.landing._listing(self.source, self.table)
                for b in self.ids:
                    if b not in self._markers:
                        self._markers[b] = {f.base_name for f in listed.get(b, []) if f.base_name.startswith(ORIGIN_MARKER)}
            self._origins = set().union(*self._markers.values()) if self._markers else set()
            unmarked = (self.manifest(b).origin.get("path") for b in self.ids if not self._markers.get(b))
            self._origins |= {origin_marker(str(p)) for p in unmarked if p}
        return origin_marker(path) in self._origins

    def manifest(self, batch_id: str) -> Manifest:
        if batch_id not in self._read:
            try:
                self._read[batch_id] = self.landing.manifest(self.source, self.table, batch_id)
            except ManifestMissing as exc:
                if batch_id not in self._applied:
                    raise
                folder = self.landing.shown(self.landing.batch_dir(self.source, self.table, batch_id))
                raise LandingError(
                    f"{exc.args[0]}; raw has applied the batch", source=self.source, table=self.table,
                    batch_id=batch_id, hint="the pipeline never removes a manifest: restore the batch folder from a "
                    "backup of landing (or the bucket's versions). Without a backup, move the folder out of landing "
                    f"({folder}): raw keeps its rows, loads go on and warn that landing lacks the batch, and a "
                    "rebuild of raw from landing would lack its rows; docs/runbook.md#restore-raw-from-landing",
                ) from None
        return self._read[batch_id]

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Manifest: ...
    @overload
    def __getitem__(self, index: slice) -> list[Manifest]: ...
    def __getitem__(self, index: int | slice) -> Manifest | list[Manifest]:
        if isinstance(index, slice):
            return [self.manifest(i) for i in self.ids[index]]
        return self.manifest(self.ids[index])

    def __iter__(self) -> Iterator[Manifest]:
        return (self.manifest(i) for i in self.ids)
