"""`--data NAME_OR_PATH` and the table options, one set for every command that takes a data set
(train-exits, evaluate, demo): a built-in name, or your own table file(s) read by refexit.userdata."""
from __future__ import annotations

import sys

from refexit import tables, userdata
from refexit.errors import InputError

# option -> load_table keyword (defaults None: "not given", so a recorded value can fill it in)
OPTIONS = {"text_column": "text", "pair_column": None, "label_column": "label", "split_column": None,
           "dev_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "format": None}


def add_arguments(p, required: bool = False, default: str | None = None, data_help: str = "") -> None:
    p.add_argument("--data", required=required, default=default, metavar="NAME_OR_PATH",
                   help=data_help or "a built-in data set (refexit data list) or your own labelled table: a "
                                     "file (.csv .tsv .jsonl .parquet, .gz), a folder of them or a glob")
    g = p.add_argument_group("your own data (--data FILE, FOLDER or GLOB)")
    g.add_argument("--text-column", metavar="COL", help="column of the texts (default text)")
    g.add_argument("--pair-column", metavar="COL", help="column of the second texts of sentence pairs "
                                                        "(tokenized as [CLS] text [SEP] pair [SEP])")
    g.add_argument("--label-column", metavar="COL", help="column of the labels: class names or integer ids; "
                                                         "numbers with fractions = regression (default label)")
    g.add_argument("--split-column", metavar="COL", help="column naming each row's split: train, "
                                                         "dev|validation, test (instead of the fractions)")
    g.add_argument("--dev-fraction", type=float, metavar="F", help="stratified dev share (default 0.1)")
    g.add_argument("--test-fraction", type=float, metavar="F", help="stratified test share (default 0.2)")
    g.add_argument("--split-seed", type=int, metavar="S",
                   help="seed of the stratified split (default 0, as the built-in sets)")
    g.add_argument("--format", choices=tables.TABLE_FORMATS, help="table format (default: from the extension)")


def given_options(args) -> dict:
    return {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}


def load(args, recorded: dict | None = None, quiet: bool = False):
    """The Dataset `args` names. `recorded`: the "dataset" entry a command wrote before (exits.json):
    without --data, the same data with the same options is read again; options given now win."""
    opts = given_options(args)
    if opts.get("split_column") and ({"dev_fraction", "test_fraction"} & set(opts)):
        raise InputError("give --split-column or --dev-fraction/--test-fraction, not both")
    name = args.data
    recorded = recorded or {}
    if name is None:
        if not recorded.get("name"):
            raise InputError("--data is required (the exits have no exits.json naming their data set)")
        if recorded.get("files"):
            table = {k: v for k, v in (recorded.get("table") or {}).items() if k in OPTIONS and v is not None}
            name, opts = recorded["files"], {**table, **opts}
        else:
            name = recorded["name"]
            opts.setdefault("split_seed", recorded.get("split_seed") or 0)
    elif recorded.get("files") and userdata.looks_like_path(name) and _same_files(name, recorded["files"]):
        table = {k: v for k, v in (recorded.get("table") or {}).items() if k in OPTIONS and v is not None}
        opts = {**table, **opts}
    if opts.get("split_column"):
        opts.pop("dev_fraction", None)
        opts.pop("test_fraction", None)
    ds = userdata.load_data(name, **opts)
    if not quiet:
        text = userdata.summary(ds)
        if text:
            print(text, file=sys.stderr)
    return ds


def _same_files(name, files) -> bool:
    try:
        return [str(p.resolve()) for p in tables.expand_inputs([name])] == list(files)
    except InputError:
        return False


def feature_label(ds, split: str) -> str:
    return f"{ds.name}/{split}"


def extract(model, ds, split: str, max_length: int, **kw):
    """Per-layer features of one split (its sentence pairs too), cached (refexit.train.features)."""
    from refexit.train import features as F
    s = getattr(ds, split)
    return F.extract(model, s.texts, max_length, pairs=s.pairs, label=feature_label(ds, split), **kw)


