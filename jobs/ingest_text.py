"""Text inputs of `deparrot ingest`: csv, tsv (plain or gzip'd), json, jsonl and txt.

They are parsed on the driver, in Python, one file front to back, into a per-run scratch
folder of parquet files that Spark then reads like any parquet input. Why:

- A row's identity is (source_file, source_row), so source_row must be the same number
  on every run. Spark's `_metadata.row_index` exists for parquet only; Spark's CSV and
  JSON readers number nothing, and `monotonically_increasing_id` depends on how the files
  were packed into tasks. A CSV with quoted newlines cannot be split by byte ranges
  either (a task cannot tell whether its first newline is inside quotes: Spark reads such
  a file in one task, `multiLine`). Reading each file front to back, as img2dataset's own
  reader does (pyarrow, on the master), numbers the records exactly: `source_row` is the
  0-based index of the record among the file's data records (the header and blank lines
  not counted: the numbering pandas and pyarrow give), a txt file's among its non-blank
  lines.
- Bytes stay bytes: invalid UTF-8 is carried through parsing (surrogateescape) and every
  cell is stored as the bytes it was, so a row with latin-1 bytes in its caption is that
  row's `invalid_utf8:text` reject, as with parquet, instead of being repaired with U+FFFD
  (Spark's text readers) or stopping the whole file (pyarrow's reader).
- A file's problems are found before any table is touched: a truncated gzip, a UTF-16
  file, a first line that is data rather than a header, an unclosed quote at the end are
  one line naming the file. A record the parser can read but that is malformed (a CSV
  row with the wrong number of fields, a jsonl line that is not a JSON object) is that
  row's reject (`bad_field_count`, `bad_json`) with its raw text as the record.

Parsing streams in batches of BATCH_ROWS rows, so memory stays bounded whatever the file
size. The batches go to shared storage (`storage.files`), so executors on other machines
read them, as often as the stage needs (the completeness check, the classification, the
rejects' records) without parsing again; the folder is removed when the stage ends.

Dialect (img2dataset's, which reads with pyarrow's defaults): csv and tsv have a header
row; a field that starts with `"` is quoted and may hold the delimiter, newlines and `""`
(a quote elsewhere is an ordinary character); an empty field is null.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import INPUT_FORMATS
from jobs.errors import UserError, first_line
from udfs import storage

TEXT_FORMATS = tuple(f for f in INPUT_FORMATS if f not in ("auto", "parquet"))
BATCH_ROWS = 50_000
# Columns deparrot adds to every input row; an input column may not take these names.
SOURCE_PREFIX = "_source"
_URL = re.compile(r"(?i)^\s*https?://")

# A record: (values by column, read error or None, raw text kept for a rejected record).
Record = tuple[dict[str, bytes | None], str | None, bytes | None]


@dataclass
class Staged:
    folder: str
    columns: list[str] = field(default_factory=list)  # every file's, first seen first
    file_columns: dict[str, frozenset[str]] = field(default_factory=dict)  # lower-case
    rows: int = 0
    parts: int = 0  # parquet files written


def stage_files(files: list[str], fmt: str, folder: str, name: Callable[[str], str],
                url_col: str = "") -> Staged:
    """Parse `files` (of format `fmt`) into parquet parts under `folder`.

    `name(path)` is the `source_file` recorded for a file. Columns are stored as binary
    (the bytes of the file), plus `_source_file`, `_source_row`, `_source_error` (a read
    error that makes the row a reject) and `_source_text` (the raw record of such a row).
    """
    staged = Staged(folder)
    seen: dict[str, None] = {}
    for index, path in enumerate(files):
        columns: list[str] = []
        batch = _Batch(folder, index, name(path))
        try:
            with _open_text(path, fmt) as text:
                for values, error, raw in _records(text, fmt, path, columns, url_col):
                    batch.add(values, error, raw)
        except UserError:
            raise
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise UserError(
                f"cannot read {fmt} file {path}: it is corrupt or truncated "
                f"({first_line(exc)}). Nothing was written; re-fetch the file or move it "
                "out of the input, then run again") from None
        except OSError as exc:
            raise UserError(f"cannot read {fmt} file {path}: {first_line(exc)}") from None
        batch.flush()
        for column in columns + list(batch.names):
            seen.setdefault(column, None)
        if columns or batch.total:
            staged.file_columns[batch.source] = frozenset(
                c.lower() for c in columns + list(batch.names))
        staged.rows += batch.total
        staged.parts += batch.parts
    staged.columns = list(seen)
    reserved = [c for c in staged.columns if c.startswith(SOURCE_PREFIX)]
    if reserved:
        raise UserError(f"input column {reserved[0]!r}: names starting with {SOURCE_PREFIX} "
                        "are deparrot's own; rename the column")
    if not staged.parts:
        if not staged.columns:
            raise UserError(f"every {fmt} file given is empty (no header, no rows): "
                            f"nothing to ingest from {', '.join(files[:3])}")
        _Batch(folder, 0, "").write_empty(staged.columns)
    return staged


@contextmanager
def _open_text(path: str, fmt: str) -> Iterator[io.TextIOWrapper]:
    """The file as text: gunzipped for *.gz formats, a UTF-8 BOM dropped, invalid UTF-8
    kept as surrogate escapes (restored to the same bytes by `_bytes`)."""
    with storage.open_read(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if fmt.endswith(".gz") else raw
        buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)
        head = buffered.peek(4)[:4]
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise UserError(
                f"{path} is UTF-16 or UTF-32 text (it starts with that byte-order mark): "
                "deparrot reads UTF-8; convert it first, e.g. iconv -f UTF-16 -t UTF-8")
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="surrogateescape",
                                newline="")
        try:
            yield text
        finally:
            text.detach()


def _records(text: io.TextIOWrapper, fmt: str, path: str, columns: list[str],
             url_col: str) -> Iterator[Record]:
    base = fmt.removesuffix(".gz")
    if base in ("csv", "tsv"):
        return _delimited(text, "\t" if base == "tsv" else ",", path, columns)
    if base == "txt":
        columns.append(url_col or "url")
        return _lines(text, url_col or "url")
    if base == "jsonl":
        return _json_lines(text)
    return _json_array(text, path)


def _bytes(value: str) -> bytes:
    """The bytes a parsed string came from (surrogate escapes back to the raw bytes)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a JSON "\\ud800" escape: invalid UTF-8 either way
        return value.encode("utf-8", "surrogatepass")


def _cell(value: str) -> bytes | None:
    return _bytes(value) if value != "" else None


def _delimited(text: io.TextIOWrapper, delimiter: str, path: str,
               columns: list[str]) -> Iterator[Record]:
    consumed: list[str] = []

    def lines() -> Iterator[str]:  # the physical lines of the record being parsed
        for line in text:
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter, quotechar='"', doublequote=True)
    header: list[str] | None = None
    last = ""
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UserError(f"cannot parse {path} at line {reader.line_num}: {exc} (an "
                            "unclosed quote?). Nothing was written; fix the file, or move "
                            "it out of the input, then run again") from None
        raw = "".join(consumed)
        consumed.clear()
        if not cells:
            continue  # a blank line
        last = raw
        if header is None:
            header = _header(cells, path, delimiter)
            columns.extend(header)
            continue
        values = dict(zip(header, map(_cell, cells), strict=False))  # ragged: below
        if len(cells) == len(header):
            yield values, None, None
        else:
            yield values, "bad_field_count", _bytes(raw.rstrip("\r\n"))
    _check_closed(last, delimiter, path)


def _check_closed(last: str, delimiter: str, path: str) -> None:
    """A quote opened in the last record and never closed swallows the rest of the file
    into one field: say so instead of ingesting the file as fewer, longer rows."""
    if "\n" not in last.rstrip("\r\n") and "\r" not in last.rstrip("\r\n"):
        return  # one physical line: nothing was swallowed
    try:
        list(csv.reader(io.StringIO(last, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            line = last.split("\n", 1)[0][:60]
            raise UserError(
                f"cannot parse {path}: a quoted field opened in the record starting "
                f"{line!r} is never closed, so the rest of the file would be one field. "
                "Nothing was written; fix the quote, then run again") from None


def _header(cells: list[str], path: str, delimiter: str) -> list[str]:
    names = []
    for i, cell in enumerate(cells):
        name = cell.strip()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"the header row of {path} is not UTF-8 text; convert the file "
                            "to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from None
        names.append(name or f"_c{i}")  # pandas writes its index under an empty name
    if any(_URL.match(n) for n in names):
        example = delimiter.join("url" if _URL.match(n) else "caption" for n in names)
        raise UserError(
            f"the first line of {path} is data (it holds a URL), not a header: csv and tsv "
            f"files need a header row naming their columns, as img2dataset assumes; add "
            f"one such as {example!r} (and set ingest.caption_col=caption)")
    return names


def _lines(text: io.TextIOWrapper, name: str) -> Iterator[Record]:
    for line in text:
        url = line.strip()
        if url:
            yield {name: _bytes(url)}, None, None


def _json_value(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (int, float)):
        return str(value).encode()
    return _bytes(json.dumps(value, ensure_ascii=False))


def _json_record(record: object, raw: str) -> Record:
    if not isinstance(record, dict):
        return {}, "bad_json", _bytes(raw)
    return {(k or "_c0"): _json_value(v) for k, v in record.items()}, None, None


def _json_lines(text: io.TextIOWrapper) -> Iterator[Record]:
    for line in text:
        if not line.strip():
            continue
        raw = line.rstrip("\r\n")
        try:
            record = json.loads(raw)
        except ValueError:
            yield {}, "bad_json", _bytes(raw)
            continue
        yield _json_record(record, raw)


def _json_array(text: io.TextIOWrapper, path: str) -> Iterator[Record]:
    """A JSON array of objects, or pandas' default `to_json` ({column: {row: value}})."""
    body = text.read()
    if not body.strip():
        return
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UserError(f"cannot read json file {path}: not valid JSON ({exc}); for one "
                        "object per line use input_format jsonl") from None
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        index: dict[str, None] = {}
        for column in data.values():
            index.update(dict.fromkeys(column))
        data = [{name: column.get(i) for name, column in data.items()} for i in index]
    if not isinstance(data, list):
        raise UserError(f"cannot read json file {path}: expected an array of objects (one "
                        "per row) or pandas' {column: {row: value}} form")
    for record in data:
        yield _json_record(record, json.dumps(record, ensure_ascii=False))


class _Batch:
    """One file's rows, written as parquet parts of up to BATCH_ROWS rows."""

    def __init__(self, folder: str, index: int, source: str) -> None:
        self.folder, self.index, self.source = folder, index, source
        self.names: dict[str, None] = {}  # every column this file had, first seen first
        self.total = 0  # rows of the file so far (the next row's source_row)
        self.parts = 0
        self._reset()

    def _reset(self) -> None:
        self.cols: dict[str, list[bytes | None]] = {}
        self.rows: list[int] = []
        self.errors: list[str | None] = []
        self.texts: list[bytes | None] = []

    def add(self, values: dict[str, bytes | None], error: str | None,
            raw: bytes | None) -> None:
        n = len(self.rows)
        for name, value in values.items():
            col = self.cols.get(name)
            if col is None:
                col = self.cols[name] = [None] * n
                self.names.setdefault(name, None)
            col.append(value)
        for col in self.cols.values():
            if len(col) == n:
                col.append(None)
        self.rows.append(self.total)
        self.errors.append(error)
        self.texts.append(raw)
        self.total += 1
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def _table(self, cols: dict[str, list[bytes | None]], n: int) -> pa.Table:
        data = {name: pa.array(values, pa.binary()) for name, values in cols.items()}
        data["_source_file"] = pa.array([self.source] * n, pa.string())
        data["_source_row"] = pa.array(self.rows, pa.int64())
        data["_source_error"] = pa.array(self.errors, pa.string())
        data["_source_text"] = pa.array(self.texts, pa.binary())
        return pa.table(data)

    def flush(self) -> None:
        if not self.rows:
            return
        self._write(self._table(self.cols, len(self.rows)))
        self._reset()

    def write_empty(self, columns: list[str]) -> None:
        """A part with the columns and no rows, so Spark knows the schema."""
        self._write(self._table({c: [] for c in columns}, 0))

    def _write(self, table: pa.Table) -> None:
        path = storage.join(self.folder, f"{self.index:06d}-{self.parts:05d}.parquet")
        if storage.is_remote(path):
            fs, inner = storage.filesystem(path)
            with fs.open(inner, "wb") as f:
                pq.write_table(table, f)
        else:
            storage.makedirs(self.folder)
            pq.write_table(table, storage.local_path(path))
        self.parts += 1
