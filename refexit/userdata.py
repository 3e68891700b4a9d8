"""Your own labelled data: a table file (or a folder / glob of them) read into the same
refexit.data.Dataset the built-in data sets give, so training, evaluation and the demo take it as
they are.

    load_data(name_or_path, **options)   a built-in name (refexit.data) or table files (below)
    load_table(paths, text_column="text", label_column="label", pair_column=None,
               split_column=None, dev_fraction=0.1, test_fraction=0.2, split_seed=0, format=None)

Rows are read by refexit.tables (CSV, TSV, JSON lines, Parquet, .txt; .gz). Each row gives a
text (and with `pair_column` a second text: the example is a sentence pair, tokenized as
`[CLS] text [SEP] pair [SEP]`) and a label:

- labels that are all integers >= 0 (JSON / Parquet ints, or CSV cells like `0`, `3`) are class
  ids: label names "0" .. str(max id);
- labels with a fractional number among only numbers (`0.5`, a JSON float, a Parquet float column)
  are regression targets: problem_type "regression", float64 labels, label_names [label_column];
- anything else are class names, sorted (as the built-in sets' names are).

Splits: with `split_column`, its value names the split of each row (train; dev, validation, valid
or val; test; any case); otherwise the rows are split by the same deterministic stratified rule as
the built-in sets (refexit.data.stratified_split with numpy default_rng(split_seed); regression:
unstratified), train = 1 - dev_fraction - test_fraction.

Bad rows are never silently dropped and never stop the run: a row that cannot be read (bad bytes,
malformed JSON, wrong field count), that has no label, an empty text or pair, a label that does
not occur in the train split (a dev/test row, with a split column), a non-finite regression target,
or an unknown split name is left out of the splits and recorded in Dataset.info["bad_rows"] with
its file, row number (0-based data row, header not counted) and reason; `summary()` words it.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from . import data, tables
from .errors import InputError

SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev",
               "test": "test"}
MAX_LISTED_BAD_ROWS = 1000          # rows listed one by one in info["bad_rows"]["rows"]
_INT = re.compile(r"[+-]?\d+")
_GLOB_CHARS = re.compile(r"[*?\[]")

# the table options a Dataset read from files records in info["table"], and load_data takes
TABLE_OPTIONS = ("text_column", "pair_column", "label_column", "split_column", "dev_fraction",
                 "test_fraction", "split_seed", "format")


def looks_like_path(name) -> bool:
    """True if `name` names files rather than a built-in data set: a Path, an existing path, a
    glob pattern, something with a folder separator or a table extension."""
    if isinstance(name, Path):
        return True
    s = str(name)
    if Path(s).exists() or _GLOB_CHARS.search(s) or "/" in s or "\\" in s:
        return True
    try:
        tables.table_format(s)
        return True
    except InputError:
        return False


def load_data(name_or_path, split_seed: int = 0, **table_options) -> "data.Dataset":
    """A built-in data set (refexit.data.DATASETS; then no table options may be given) or the
    table files `name_or_path` names (load_table with `table_options`). A built-in name given as a
    str is the built-in set even if a file of that name exists (write ./NAME for the file)."""
    given = {k: v for k, v in table_options.items() if v is not None}
    if isinstance(name_or_path, str) and name_or_path in data.DATASETS:
        if given:
            raise InputError(f"{name_or_path} is a built-in data set with its own columns and splits: "
                             f"{', '.join('--' + k.replace('_', '-') for k in given)} apply only to "
                             f"your own files")
        return data.load_dataset(str(name_or_path), seed=split_seed)
    if not looks_like_path(name_or_path):
        raise InputError(f"{name_or_path!r} is neither a built-in data set ({', '.join(data.DATASETS)}) "
                         f"nor a table file, folder or glob (supported: {', '.join(sorted(tables.EXTENSIONS))})")
    return load_table(name_or_path, split_seed=split_seed, **given)


class _Bad:
    """The rows left out, with where and why."""

    def __init__(self):
        self.rows: list[dict] = []
        self.kinds: Counter = Counter()

    def add(self, file: Path, number: int, kind: str, detail: str = ""):
        self.kinds[kind] += 1
        if len(self.rows) < MAX_LISTED_BAD_ROWS:
            self.rows.append({"file": str(file), "row": number, "kind": kind,
                              "error": f"{kind}: {detail}" if detail else kind})

    def report(self) -> dict:
        n = sum(self.kinds.values())
        rows = sorted(self.rows, key=lambda r: (r["file"], r["row"]))
        return {"count": n, "by_kind": dict(sorted(self.kinds.items())), "rows": rows,
                "rows_listed": len(self.rows), "row_numbers": "0-based data rows, header not counted"}


class _BadRow(Exception):
    """A row left out: its kind (for counting) and the detail."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind)
        self.kind, self.detail = kind, detail


def _missing(v) -> bool:
    """None, a blank string, or NaN (how pandas writes a missing cell)."""
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def _cell(values: dict, column: str, what: str, missing: str):
    if column not in values:
        raise _BadRow(f"no {what} field", f"the row has no field {column!r}")
    v = values[column]
    if _missing(v):
        raise _BadRow(missing, f"column {column!r}")
    return v


def _text(values: dict, column: str, what: str) -> str:
    v = _cell(values, column, what, f"empty {what}")
    if not isinstance(v, str):
        raise _BadRow(f"{what} is not a string", f"column {column!r} holds {type(v).__name__} {str(v)[:40]!r}")
    return v


def _label_kind(v) -> str:
    """'int' (a class id, or an integer name), 'float' (a number with a fraction, or any float
    value: a float column means regression) or 'name', for one raw label value."""
    if isinstance(v, bool):
        return "name"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        s = v.strip()
        if _INT.fullmatch(s):
            return "int"
        try:
            float(s)
            return "float"
        except ValueError:
            return "name"
    return "name"


def _read_row(values: dict, text_column, label_column, pair_column, split_column):
    """-> (text, pair, label, split); a bad row raises _BadRow."""
    text = _text(values, text_column, "text")
    pair = None if pair_column is None else _text(values, pair_column, "pair")
    label = _cell(values, label_column, "label", "missing label")
    if isinstance(label, (list, dict)):
        raise _BadRow("label is not a number or name", f"column {label_column!r} holds a {type(label).__name__}")
    split = "train"
    if split_column is not None:
        s = _cell(values, split_column, "split", "unknown split")
        split = SPLIT_NAMES.get(str(s).strip().lower())
        if split is None:
            raise _BadRow("unknown split", f"{s!r} is not train, dev/validation or test")
    return text, pair, label, split


def _check_columns(path: Path, seen: set, options: dict):
    """A column named in the options that no row of the file has: an error naming the columns."""
    for opt, col in options.items():
        if col is not None and col not in seen:
            raise InputError(f"{path}: no column {col!r} ({opt}); its columns are {sorted(seen)}")


def load_table(paths, text_column: str = "text", label_column: str = "label", pair_column: str | None = None,
               split_column: str | None = None, dev_fraction: float = 0.1, test_fraction: float = 0.2,
               split_seed: int = 0, format: str | None = None, name: str | None = None) -> "data.Dataset":
    """Read labelled rows from table files into a refexit.data.Dataset (see the module doc)."""
    files = tables.expand_inputs(paths if isinstance(paths, (list, tuple)) else [paths])
    if split_column is None:
        _check_fractions(dev_fraction, test_fraction)
    bad = _Bad()
    texts, pairs, raw_labels, splits, where = [], [], [], [], []
    wanted = {"--text-column": text_column, "--label-column": label_column,
              "--pair-column": pair_column, "--split-column": split_column}
    for f in files:
        fixed = tables.table_format(f, format) != "jsonl"    # every row has the same columns
        seen: set = set()
        for row in tables.iter_rows(f, format=format):
            if row.error is not None:
                bad.add(f, row.number, "bad bytes" if "UTF-8" in row.error else "unreadable row", row.error)
                continue
            if fixed and not seen:
                _check_columns(f, set(row.values), wanted)
            seen.update(row.values)
            try:
                text, pair, label, split = _read_row(row.values, text_column, label_column, pair_column,
                                                     split_column)
            except _BadRow as e:
                bad.add(f, row.number, e.kind, e.detail)
                continue
            texts.append(text)
            pairs.append(pair)
            raw_labels.append(label)
            splits.append(split)
            where.append((f, row.number))
        if seen:
            _check_columns(f, seen, wanted)
    raw_size = len(texts) + sum(bad.kinds.values())           # every data row of every file
    if not texts:
        raise InputError(f"{', '.join(map(str, files))}: no usable rows "
                         f"({sum(bad.kinds.values())} bad rows: {dict(bad.kinds) or 'none'})")

    kinds = {_label_kind(v) for v in raw_labels}
    if kinds <= {"int", "float"} and "float" in kinds:
        problem_type = "regression"
    else:
        problem_type = "single_label_classification"

    keep = np.ones(len(texts), bool)
    if problem_type == "regression":
        y = np.array([float(v) for v in raw_labels], np.float64)
        for i in np.flatnonzero(~np.isfinite(y)):
            bad.add(*where[i], "label is not a finite number", f"{raw_labels[i]!r}")
            keep[i] = False
        label_names = [label_column]
    else:
        ids = kinds == {"int"} and all(int(str(v).strip()) >= 0 for v in raw_labels)
        keys = [int(str(v).strip()) if ids else str(v).strip() for v in raw_labels]
        known = keys if split_column is None else [k for k, s in zip(keys, splits) if s == "train"]
        if ids:
            label_names = [str(k) for k in range(max(known) + 1)] if known else []
            index = {k: k for k in range(len(label_names))}
        else:
            label_names = sorted(set(known), key=_name_order(kinds))
            index = {k: i for i, k in enumerate(label_names)}
        y = np.zeros(len(keys), np.int64)
        for i, k in enumerate(keys):
            if k in index:
                y[i] = index[k]
            else:                                   # only dev/test rows can get here
                bad.add(*where[i], "unknown label", f"{raw_labels[i]!r} does not occur in the train split")
                keep[i] = False

    if split_column is not None:
        part = {s: np.flatnonzero(keep & (np.array(splits) == s)) for s in ("train", "dev", "test")}
    else:
        rows = np.flatnonzero(keep)
        strata = y[rows] if problem_type != "regression" else np.zeros(len(rows), np.int64)
        fr = (1.0 - dev_fraction - test_fraction, dev_fraction, test_fraction)
        idx = data.stratified_split(strata, fr, np.random.default_rng(split_seed))
        part = dict(zip(("train", "dev", "test"), (rows[i] for i in idx)))
    if len(part["train"]) == 0:
        raise InputError(f"{', '.join(map(str, files))}: no usable rows in the train split")

    with_pairs = pair_column is not None

    def split(idx):
        return data.Split([texts[i] for i in idx], y[idx], [pairs[i] for i in idx] if with_pairs else None)

    name = name or _default_name(files)
    counts = Counter(texts[i] if not with_pairs else (texts[i], pairs[i]) for i in np.flatnonzero(keep))
    options = {"text_column": text_column, "pair_column": pair_column, "label_column": label_column,
               "split_column": split_column, "dev_fraction": dev_fraction if split_column is None else None,
               "test_fraction": test_fraction if split_column is None else None, "split_seed": split_seed,
               "format": format}
    info = {"source": "files", "files": [str(f.resolve()) for f in files], "table": options,
            "seed": split_seed, "problem_type": problem_type,
            "raw_size": raw_size, "size": int(keep.sum()),
            "duplicate_texts": sum(c - 1 for c in counts.values()),
            "bad_rows": bad.report()}
    return data.Dataset(name, label_names, split(part["train"]), split(part["dev"]), split(part["test"]),
                        info=info, problem_type=problem_type)


def _check_fractions(dev: float, test: float):
    for n, v in (("dev_fraction", dev), ("test_fraction", test)):
        if not isinstance(v, (int, float)) or not (0.0 <= v < 1.0) or math.isnan(v):
            raise InputError(f"{n} must be a number in [0, 1), not {v!r}")
    if dev + test >= 1.0:
        raise InputError(f"dev_fraction + test_fraction = {dev + test:g} leaves nothing to train on")


def _name_order(kinds):
    """Class names sort as text, except all-integer names (some negative) sort by value."""
    if kinds == {"int"}:
        return lambda k: (int(k), k)
    return lambda k: k


def _default_name(files: Sequence[Path]) -> str:
    """A short name for output paths: the file's stem (its folder's name for several files)."""
    p = files[0] if len(files) == 1 else files[0].parent
    stem = p.name
    for suffix in (".gz",) + tuple(tables.EXTENSIONS):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "data"


def summary(ds: "data.Dataset") -> str:
    """Lines for stderr: the rows left out and why (empty when none)."""
    bad = ds.info.get("bad_rows") or {}
    if not bad.get("count"):
        return ""
    lines = [f"{ds.name}: {bad['count']} bad row(s) left out (row numbers: 0-based data rows, header not "
             f"counted): " + ", ".join(f"{k} {n}" for k, n in bad["by_kind"].items())]
    for r in bad["rows"][:10]:
        lines.append(f"  {r['file']} row {r['row']}: {r['error']}")
    if bad["count"] > 10:
        lines.append(f"  ... {bad['count'] - 10} more (all listed in the JSON output, up to {MAX_LISTED_BAD_ROWS})")
    return "\n".join(lines)


def require_classification(ds: "data.Dataset", what: str) -> None:
    """Regression data where only classification is implemented: a clear error."""
    if ds.problem_type == "regression":
        raise InputError(f"{ds.name}: the labels are numbers with fractions, a regression task "
                         f"(problem_type regression); {what} handles classification only (train-exits, "
                         f"fine-tune and evaluate --sweep take regression). Integer labels are class ids.")


def describe(ds: "data.Dataset") -> dict:
    """What a command records about its data in JSON: name, source, options, sizes, bad rows."""
    out = {"name": ds.name, "sizes": {k: len(v) for k, v in ds.splits().items()},
           "split_seed": ds.info.get("seed"), "problem_type": ds.problem_type}
    if ds.info.get("source") == "files":
        out.update({"files": ds.info["files"], "table": ds.info["table"], "bad_rows": ds.info["bad_rows"],
                    "pairs": ds.train.pairs is not None})
    return out
