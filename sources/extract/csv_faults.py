"""Locating a fault in a CSV file that Arrow refused: the data row, the file line and the field.

Arrow's CSV reader is fast but says only "Expected 7 columns, got 8" for a whole block. On that
error path alone, ``find_csv_fault`` reads the file a second time with Python's csv module (about
30 MB/s) and names the first broken record: its data row (records under the header, what ``row=``
holds) and the file line it starts on (what an editor shows; they differ by the header, blank
lines and line breaks inside quoted values), the field, and what to do.
"""

from __future__ import annotations

import csv as pycsv
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sources.errors import SourceReadError

if TYPE_CHECKING:
    from sources.extract.files import SourceFile

# Fed to Python's csv reader after the last line: inside a quoted value that is never closed it
# becomes part of that value, otherwise a record of its own.
_END = "\ue000end of file\ue000"
_MAX_VALUE = 16 << 20  # characters a value may have in the locating pass (bounds its memory)


@dataclass(frozen=True)
class CsvFault:
    """Where a CSV file breaks and why: what a refusal of it says."""

    row: int  # data row, 1-based: the header and blank lines are not rows (as Arrow counts them)
    line: int  # file line the row starts on, 1-based: the header is line 1 (as editors count them)
    problem: str
    hint: str
    field: str | None = None

    def error(self, name: str, where: dict[str, str]) -> SourceReadError:
        return SourceReadError(f"malformed CSV in {name}, data row {self.row:,} (file line {self.line:,}): "
                               f"{self.problem}", **where, row=self.row, field=self.field, hint=self.hint)


def text_chunks(file: SourceFile) -> Iterator[tuple[str, bool]]:
    """The file as text in blocks of whole lines, each with whether it held invalid UTF-8 (kept
    as surrogates, U+DC80-U+DCFF). Decoding a block at once is ~5x faster than line by line."""
    with file.fs.open_input_stream(file.path) as handle:
        rest = b""
        for block in iter(lambda: handle.read(1 << 20), b""):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield _decode(data[:cut])
            rest = data[cut:]
        if rest:
            yield _decode(rest)


def _decode(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


UNDECODED = re.compile("[\udc80-\udcff]")


class _Unparsable(Exception):
    def __init__(self, row: int, line: int, reason: str) -> None:
        super().__init__(reason)
        self.row, self.line, self.reason = row, line, reason


def csv_records(file: SourceFile, width: int | None = None) -> Iterator[tuple[int, int, list[str], int | None, bool]]:
    """The data records as Arrow reads them (blank lines skipped): each one's data row, the file
    line it starts on, its fields, the file line of its first invalid UTF-8 byte (or None), and
    whether the file ends right after it without a line break. Given ``width``, only the records
    that do not have that many fields, hold invalid UTF-8 or run to the end inside quotes."""
    bad: list[int] = []  # file lines holding invalid UTF-8, in order
    tail = [""]  # the last block of text read

    def blocks() -> Iterator[Iterator[str]]:
        before = 0  # lines before this block
        for text, broken in text_chunks(file):
            text = text if before else text.removeprefix("\ufeff")
            if broken:
                bad.extend(number for number, line in enumerate(io.StringIO(text, newline=""), start=before + 1)
                           if UNDECODED.search(line))
            before += text.count("\n") + text.count("\r") - text.count("\r\n")
            tail[0] = text
            yield io.StringIO(text, newline="")  # lines end at \n, \r\n or \r, as in Arrow
        yield iter([_END])

    reader = pycsv.reader(itertools.chain.from_iterable(blocks()))  # no Python call per line
    row, start, held = -1, 1, None  # the header is row 0
    fields: list[str] = []
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if len(fields) == width and not bad:  # the common case, kept short
                row += 1
                if held:
                    yield (*held, False)
                    held = None
                continue
            at_end = fields == [_END]
            if held:
                yield (*held, at_end and not tail[0].endswith(("\n", "\r")))
                held = None
            broken = bad[0] if bad and bad[0] < start else None
            while bad and bad[0] < start:
                bad.pop(0)
            if at_end or not fields:  # the end; a blank line
                continue
            row += 1
            if row > 0:
                held = (row, line, fields, broken)
    except pycsv.Error as exc:  # the record after the last one read cannot be parsed
        if held:
            yield (*held, False)
        raise _Unparsable(row + 1, start, str(exc)) from exc
    if held:
        yield (*held, fields == [_END] and not tail[0].endswith(("\n", "\r")))
    elif fields and fields != [_END]:  # inside a quoted value at the end of the file
        yield (row, line, fields, None, False)


def find_csv_fault(file: SourceFile, header: list[str], name: str) -> CsvFault | None:
    """The first row Arrow refuses: invalid UTF-8, a field count other than the header's, a quote
    never closed; None if the file has none of these.

    >>> import tempfile
    >>> from pathlib import Path
    >>> import pyarrow.fs as pafs
    >>> from sources.extract.files import _info
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "t.csv").write_text('id,note\\n1,"two\\nlines"\\n2,a,b\\n')
    ...     find_csv_fault(_info(pafs.LocalFileSystem(), f"{folder}/t.csv", ""), ["id", "note"], "t.csv").error("t.csv", {})
    SourceReadError('malformed CSV in t.csv, data row 2 (file line 4): 3 fields where the header has 2 (id, note): 2,a,b')
    """
    limit = pycsv.field_size_limit()
    pycsv.field_size_limit(max(limit, _MAX_VALUE))
    try:
        for row, line, fields, bad, truncated in csv_records(file, len(header)):
            if bad is not None:
                field = next((h for h, v in zip(header, fields) if any("\udc80" <= c <= "\udcff" for c in v)), None)
                return CsvFault(row, line, f"invalid UTF-8 bytes on file line {bad:,}" + (f", in field {field}" if field else ""),
                                f"re-export the file as UTF-8, or convert it: iconv -f <its encoding> -t UTF-8 {name}", field)
            if fields[-1].endswith(_END):
                field = header[len(fields) - 1] if len(fields) <= len(header) else None
                return CsvFault(row, line, f"the quoted value of field {field or len(fields)} is never closed "
                                "(it runs to the end of the file)",
                                "close the quote (a quote inside a quoted value is written twice: \"\"), or re-export "
                                "the file" + ("; the file ends without a line break, so it may also be cut off" if
                                              not fields[-1].endswith("\n" + _END) else ""), field)
            if len(fields) == len(header):
                continue
            text = ",".join(fields)
            shown = text if len(text) <= 80 else text[:77] + "..."
            count = f"{len(fields)} field{'s' * (len(fields) != 1)} where the header has {len(header)} ({', '.join(header)}): {shown}"
            if len(fields) > len(header):
                return CsvFault(row, line, count, "a value holding a comma must be quoted (\"a, b\"): fix the row, "
                                "or re-export the file with quoting")
            field = header[len(fields)]
            if truncated:
                return CsvFault(row, line, f"the last row is cut off: {count}",
                                "the file ends inside this row, without a line break: it was probably cut off while "
                                "being written or copied; copy or export it again", field)
            return CsvFault(row, line, f"{count}; field {field} and after are missing",
                            "fix the row (a line break inside a value must be quoted), or re-export the file", field)
    except _Unparsable as exc:
        return CsvFault(exc.row, exc.line, f"a value from here on cannot be read ({exc.reason})",
                        "a quote that is never closed makes one value of the rest of the file: close it, "
                        "or re-export the file")
    finally:
        pycsv.field_size_limit(limit)
    return None


def file_line(file: SourceFile, row: int) -> int:
    """The file line data row ``row`` starts on (they differ by the header, blank lines and line
    breaks inside quoted values)."""
    return file_lines(file, [row])[row]


def file_lines(file: SourceFile, rows: Iterable[int]) -> dict[int, int]:
    """The file line each data row of ``rows`` starts on, in one pass that stops at the last of
    them (the error path only: the csv module reads about 20 MB a second); a row past the end
    gets ``row + 1``."""
    wanted = set(rows)
    found: dict[int, int] = {}
    if wanted:
        for r, line, *_ in csv_records(file):
            if r in wanted:
                found[r] = line
                if len(found) == len(wanted):
                    break
    return {r: found.get(r, r + 1) for r in wanted}
