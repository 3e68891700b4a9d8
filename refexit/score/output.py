"""The final output: the committed chunks, in input order, as one file of the output's format
(from its extension: .jsonl / .ndjson / .json JSON lines, .csv, .parquet through the optional
pyarrow), written to a temporary name and renamed into place; and the errors file beside it
(OUTPUT's name + .errors.jsonl: one JSON line per bad row, with its file, row, id and reason)."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from refexit import files
from refexit.errors import InputError, OutputError

OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"-o {path}: the output's extension says its format: "
                         f"{', '.join(OUTPUT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("Parquet output needs pyarrow (pip install pyarrow)") from None
    return fmt


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def _tmp(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _place(tmp: Path, path: Path) -> None:
    files.set_mode(tmp)
    os.replace(tmp, path)


def write_output(path: Path, chunk_files: list[Path], cols: list[str]) -> None:
    """Concatenate the chunks (JSON lines) into `path` in the output's format, atomically."""
    fmt = output_format(path)
    tmp = _tmp(path)
    try:
        if fmt == "jsonl":
            with open(tmp, "wb") as out:
                for c in chunk_files:
                    with open(c, "rb") as f:
                        while buf := f.read(1 << 22):
                            out.write(buf)
        elif fmt == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                w = csv.writer(out, lineterminator="\n")
                w.writerow(cols)
                for c in chunk_files:
                    for rec in _records(c):
                        w.writerow(["" if rec.get(k) is None else
                                    json.dumps(rec[k]) if isinstance(rec.get(k), list) else rec[k] for k in cols])
        else:
            _write_parquet(tmp, chunk_files, cols)
        _place(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _records(chunk: Path):
    with open(chunk, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _write_parquet(tmp: Path, chunk_files: list[Path], cols: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    writer = None
    try:
        for c in chunk_files:
            recs = list(_records(c))
            if not recs:
                continue
            table = pa.Table.from_pylist(recs).select(cols) if all(k in recs[0] for k in cols) else \
                pa.Table.from_pylist([{k: r.get(k) for k in cols} for r in recs])
            if writer is None:
                schema = _schema(table.schema)
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            pq.write_table(pa.table({k: pa.array([], pa.null()) for k in cols}), tmp)
    finally:
        if writer is not None:
            writer.close()


def _schema(schema):
    """The first chunk's schema with null-typed columns (all rows bad, or no error yet) as strings
    / float32 lists, so that later chunks fit it."""
    import pyarrow as pa
    fields = []
    for f in schema:
        if pa.types.is_null(f.type):
            f = f.with_type(pa.list_(pa.float64()) if f.name == "logits" else
                            pa.int64() if f.name in ("label_id", "exit_layer", "row") else
                            pa.float64() if f.name in ("probability", "value") else pa.string())
        fields.append(f)
    return pa.schema(fields)


def write_errors(path: Path, errors) -> int:
    """The errors file (JSON lines), atomically; -> how many."""
    tmp = _tmp(path)
    n = 0
    try:
        with io.open(tmp, "w", encoding="utf-8") as out:
            for e in errors:
                out.write(json.dumps(e, ensure_ascii=False, default=str) + "\n")
                n += 1
        _place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
