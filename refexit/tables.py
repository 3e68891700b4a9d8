"""The one streaming reader of a user's table files: training data, scoring inputs, anything a
user hands refexit as "my file".

    TABLE_FORMATS                          txt, csv, tsv, jsonl, parquet
    table_format(path, format=None)        the format of a file (its extension, or the override)
    expand_inputs([path|folder|glob, ...]) -> sorted, de-duplicated table files
    iter_rows(path, format=None, start=0)  -> Row(number, values, error), one per data row
    line_offsets(path, every)              where rows 0, every, 2 every, ... begin (.txt / .jsonl),
                                           for iter_rows(..., start=, offset=) to seek there

Formats (`.gz` compresses any text format: `my.csv.gz`):

    .txt                 one text per line, column `text` (no header; an empty line is an empty text)
    .csv                 comma-separated with a header line; RFC 4180 quoting ("" escapes, quoted
                         fields may hold commas and newlines)
    .tsv .tab            tab-separated with a header line, the same quoting rules
    .jsonl .ndjson       one JSON object per line (strictly parsed: refexit.jsonio)
    .parquet             record batches through the optional pyarrow (`pip install pyarrow`)

Rows are streamed: memory stays constant however large the file (one line, or one Parquet record
batch, at a time). `Row.number` is the 0-based data row within the file (the header excluded; a
CSV row whose quoted field spans three lines is still one row). A row that cannot be read (bytes
that are not UTF-8, malformed JSON, the wrong number of fields, a blank CSV line) is yielded with
`values=None` and `error` saying why: never raised, never dropped, and it never shifts the numbers
of the rows after it. Problems with the file as a whole (missing, unreadable, no header, duplicate
column names, a corrupt Parquet file) raise InputError naming the file.
"""
from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from . import jsonio
from .errors import InputError

TABLE_FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
              ".ndjson": "jsonl", ".parquet": "parquet"}
TEXT_COLUMN = "text"                     # the one column of a .txt file
PARQUET_BATCH_ROWS = 4096                # rows per Parquet record batch (bounded memory)
_SURROGATE = re.compile("[\udc80-\udcff]")   # a byte that was not UTF-8 (surrogateescape)
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Row:
    """One data row of a table file: `values` (column -> value) or `error` (why it is unreadable)."""
    number: int                          # 0-based data row within the file, header excluded
    values: dict | None                  # None when the row could not be read
    error: str | None = None             # None, or the reason the row could not be read


def _supported() -> str:
    return ", ".join(sorted(EXTENSIONS)) + " (text formats also .gz-compressed)"


def _is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def table_format(path: str | Path, format: str | None = None) -> str:
    """The format of `path`: `format` when given (one of TABLE_FORMATS), else from the extension
    (`.csv`, `.csv.gz`, ...). An unknown format is an InputError naming the file."""
    path = Path(path)
    if format is not None:
        if format not in TABLE_FORMATS:
            raise InputError(f"{path}: unknown table format {format!r}; supported: {', '.join(TABLE_FORMATS)}")
        if format == "parquet" and _is_gzip(path):
            raise InputError(f"{path}: Parquet files are compressed inside; a .gz Parquet file is not supported")
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
        fmt = EXTENSIONS.get(suffixes[-1]) if suffixes else None
        if fmt == "parquet":
            fmt = None
    else:
        fmt = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(f"{path}: not a table file this reader knows (by its extension); supported: "
                         f"{_supported()}; or name the format explicitly")
    return fmt


def _is_table(path: Path) -> bool:
    try:
        table_format(path)
        return True
    except InputError:
        return False


def _folder_tables(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _is_table(p))
    if not found:
        raise InputError(f"{folder}: a folder without table files (supported: {_supported()})")
    return found


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their table files, not recursive, hidden files skipped) and glob patterns
    (`data/*.csv`, `**` recursive) -> the table files, sorted and de-duplicated. A path that does
    not exist, a pattern that matches nothing, or a folder without table files is an InputError."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input files given")
    found: dict[Path, Path] = {}                     # resolved -> as the user named it
    for item in inputs:
        p = Path(item)
        if p.exists():
            paths = [p]
        elif _GLOB_CHARS.search(str(item)):
            paths = [Path(m) for m in sorted(glob.glob(str(item), recursive=True))]
            if not paths:
                raise InputError(f"{item}: the pattern matches no file")
        else:
            raise InputError(f"{item}: no such file or folder")
        for q in paths:
            for f in (_folder_tables(q) if q.is_dir() else [q]):
                found.setdefault(f.resolve(), f)
    return sorted(found.values(), key=str)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

def iter_rows(path: str | Path, *, format: str | None = None, start: int = 0,
              offset: int | None = None) -> Iterator[Row]:
    """Stream the data rows of one table file (see the module doc); `start`: the first row number
    to yield (rows before it are read and skipped, so numbers stay those of the whole file);
    `offset`: the byte offset at which row `start` begins (line_offsets: an uncompressed .txt or
    .jsonl file), to seek there instead of reading past the rows before it.
    The file, its format and `start` are checked at the call, before the first row."""
    path = Path(path)
    fmt = table_format(path, format)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InputError(f"{path}: start must be a row number >= 0, not {start!r}")
    if offset is not None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InputError(f"{path}: offset must be a byte offset >= 0, not {offset!r}")
        if fmt not in ("txt", "jsonl") or _is_gzip(path):
            raise InputError(f"{path}: offset is for an uncompressed .txt or .jsonl file (rows are lines)")
        return _guarded(path, (_txt_rows if fmt == "txt" else _jsonl_rows)(path, fmt, start, offset))
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if fmt == "parquet":
        _pyarrow_parquet()                             # a missing pyarrow is said now
    reader = {"txt": _txt_rows, "jsonl": _jsonl_rows, "csv": _csv_rows, "tsv": _csv_rows,
              "parquet": _parquet_rows}[fmt]
    return _guarded(path, reader(path, fmt, start))


def _guarded(path: Path, rows: Iterator[Row]) -> Iterator[Row]:
    """I/O failures in the middle of a file (a truncated .gz, a disk error) as InputError."""
    try:
        yield from rows
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    finally:
        rows.close()


def _open_binary(path: Path):
    try:
        return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e})") from None


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    """-> (text, None), or (None, the reason) when `raw` is not UTF-8."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start} of the line)"


def _lines(path: Path, offset: int | None = None) -> Iterator[bytes]:
    """The lines of a text file as bytes, without their line ending (a leading BOM dropped), from
    byte `offset` (a line start) on."""
    with _open_binary(path) as f:
        if offset:
            f.seek(offset)
        for i, raw in enumerate(f):
            if i == 0 and not offset and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield raw.rstrip(b"\n").removesuffix(b"\r")


def line_offsets(path: str | Path, every: int, format: str | None = None) -> list[int] | None:
    """The byte offsets at which rows 0, every, 2 x every, ... of an uncompressed .txt or .jsonl
    file begin (its rows are its lines: b"\n" ends each), found in one pass over the file at C
    speed; [] for an empty file. None for a file whose rows are not found this way (CSV / TSV,
    whose quoted fields may hold newlines; Parquet; gzip): read those with `start` alone."""
    import numpy as np
    path = Path(path)
    if table_format(path, format) not in ("txt", "jsonl") or _is_gzip(path):
        return None
    offsets, n, base, nxt = [0], 0, 0, every          # n: newlines before `base`; nxt: the next row wanted
    try:
        with open(path, "rb") as f:
            while buf := f.read(1 << 22):
                nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)    # [newlines in buf] positions
                while nxt - 1 - n < len(nl):                               # row nxt begins after newline nxt
                    offsets.append(base + int(nl[nxt - 1 - n]) + 1)
                    nxt += every
                n += len(nl)
                base += len(buf)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return [o for o in offsets if o < base]


def _txt_rows(path: Path, fmt: str, start: int, offset: int | None = None) -> Iterator[Row]:
    for number, raw in enumerate(_lines(path, offset), start=0 if offset is None else start):
        if number < start:
            continue
        text, err = _decode(raw)
        yield Row(number, None, err) if err else Row(number, {TEXT_COLUMN: text})


def _jsonl_rows(path: Path, fmt: str, start: int, offset: int | None = None) -> Iterator[Row]:
    for number, raw in enumerate(_lines(path, offset), start=0 if offset is None else start):
        if number < start:
            continue
        text, err = _decode(raw)
        if err:
            yield Row(number, None, err)
        elif not text.strip():
            yield Row(number, None, "blank line (expected a JSON object)")
        else:
            try:
                value = jsonio.loads(text, "line", InputError)
            except InputError as e:
                yield Row(number, None, f"malformed JSON: {str(e).removeprefix('line: ')}")
                continue
            if isinstance(value, dict):
                yield Row(number, value)
            else:
                yield Row(number, None, f"expected a JSON object, got {jsonio.type_name(value)}")


def _csv_rows(path: Path, fmt: str, start: int) -> Iterator[Row]:
    """CSV / TSV: bytes decoded with surrogateescape so that a row with bad bytes is still split
    into fields (and counted) and reported, instead of stopping the file."""
    delimiter = "," if fmt == "csv" else "\t"
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        records = csv.reader(text, delimiter=delimiter, strict=False)
        header = _header(path, records)
        number = 0
        while True:
            try:
                fields = next(records)
            except StopIteration:
                return
            except csv.Error as e:             # a field over csv.field_size_limit(), a NUL byte...
                if number >= start:
                    yield Row(number, None, f"malformed {fmt.upper()} record: {e}")
                number += 1
                continue
            if number >= start:
                yield _csv_row(number, header, fields)
            number += 1


def _header(path: Path, records) -> list[str]:
    try:
        header = next(records)
    except StopIteration:
        raise InputError(f"{path}: empty file, no header line (the first line names the columns)") from None
    except csv.Error as e:
        raise InputError(f"{path}: cannot read the header line: {e}") from None
    if any(_SURROGATE.search(h) for h in header):
        raise InputError(f"{path}: the header line is not valid UTF-8")
    if not header or header == [""]:
        raise InputError(f"{path}: the header line is empty (the first line names the columns)")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"{path}: duplicate column name(s) {dup} in the header line")
    return header


def _csv_row(number: int, header: list[str], fields: list[str]) -> Row:
    if not fields:
        return Row(number, None, "blank line (no fields)")
    for name, value in zip(header, fields):
        if _SURROGATE.search(value):
            raw = value.encode("utf-8", "surrogateescape")
            _, err = _decode(raw)
            return Row(number, None, f"column {name!r}: {err.replace(' of the line', ' of the field')}")
    if len(fields) != len(header):
        return Row(number, None, f"{len(fields)} fields, the header has {len(header)}")
    return Row(number, dict(zip(header, fields)))


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet files needs the optional pyarrow package: "
                         "pip install pyarrow (or pip install 'refexit[parquet]')") from None
    return pq


def _parquet_rows(path: Path, fmt: str, start: int) -> Iterator[Row]:
    pq = _pyarrow_parquet()
    import pyarrow as pa
    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    dup = sorted({n for n in f.schema_arrow.names if f.schema_arrow.names.count(n) > 1})
    if dup:
        raise InputError(f"{path}: duplicate column name(s) {dup}")
    number = 0
    try:
        for group in range(f.num_row_groups):          # skip whole row groups before `start`
            n = f.metadata.row_group(group).num_rows
            if number + n <= start:
                number += n
                continue
            for batch in f.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group]):
                if number + batch.num_rows <= start:
                    number += batch.num_rows
                    continue
                for values in batch.to_pylist():     # dicts of Python values, one batch at a time
                    if number >= start:
                        yield _parquet_row(number, values)
                    number += 1
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: cannot read Parquet row {number} onwards ({e})") from None


def _parquet_row(number: int, values: dict) -> Row:
    """Binary (bytes) cells are text only if they are UTF-8; string cells pyarrow has validated."""
    for name, value in values.items():
        if isinstance(value, (bytes, bytearray)):
            text, err = _decode(bytes(value))
            if err:
                return Row(number, None, f"column {name!r}: {err.replace(' of the line', ' of the field')}")
            values[name] = text
    return Row(number, values)


def write_rows(path: str | Path, rows: Sequence[dict], format: str | None = None) -> Path:
    """Write dict rows (all with the same columns) as a table file of `format` (from the extension
    by default): a small helper for tests, examples and converting a built-in data set."""
    path = Path(path)
    fmt = table_format(path, format)
    columns = list(rows[0]) if rows else [TEXT_COLUMN]
    if fmt == "parquet":
        import pyarrow as pa
        _pyarrow_parquet().write_table(pa.Table.from_pylist(list(rows)), path)
        return path
    opener = (lambda: gzip.open(path, "wt", encoding="utf-8", newline="")) if _is_gzip(path) else \
        (lambda: open(path, "w", encoding="utf-8", newline=""))
    with opener() as f:
        if fmt == "txt":
            for r in rows:
                f.write(f"{r[TEXT_COLUMN]}\n")
        elif fmt == "jsonl":
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            w.writerow(columns)
            w.writerows([r.get(c) for c in columns] for r in rows)
    return path


__all__ = ["TABLE_FORMATS", "EXTENSIONS", "TEXT_COLUMN", "Row", "table_format", "expand_inputs",
           "iter_rows", "line_offsets", "write_rows"]
