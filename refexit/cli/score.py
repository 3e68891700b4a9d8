"""`refexit score SOURCE INPUT... -o OUTPUT`: score table files with the compiled model.

SOURCE is a compiled folder (`refexit compile` output) or a model folder (compiled on the fly,
cached). INPUTs are files, folders or globs of .txt (one text per line), .jsonl, .csv/.tsv and
.parquet (optional pyarrow), also .gz-compressed. OUTPUT gets one row per input row, in input order
(file by file): row, id, label, label_id, probability, exit_layer (+ logits), error; its extension
picks the format (.jsonl, .csv, .parquet). Bad rows keep their place (fields null, `error` set)
and are listed in OUTPUT.errors.jsonl. Chunks are committed to OUTPUT.parts/ as they finish;
after a crash or kill, the same command with --resume continues where it stopped.

OUTPUT may also be a folder (a path ending in /, or a URI such as s3://bucket/dir/): one Parquet
file per part of each input file, written and committed where the part is scored (every Ray node),
the bad rows in OUTPUT/_errors.jsonl; --resume redoes only the parts not committed."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from refexit.cli.policy_args import add_policy_args, policy_from_args


def add_subcommand(sub) -> None:
    p = sub.add_parser("score", help="score table files (txt, jsonl, csv, parquet) with the compiled model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: refexit score build/m reviews/*.jsonl -o scores.parquet --text-column body "
                              "--id-column review_id")
    p.add_argument("source", metavar="SOURCE", help="compiled folder, or HF model folder (compiled, cached)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, folders or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output file: .jsonl, .csv or .parquet; or a folder (a path ending in /, or a "
                        "URI such as s3://bucket/dir/) of Parquet files, one per part of each input file, "
                        "unmerged")
    p.add_argument("--text-column", default="text", metavar="NAME", help="column holding the text (default: text)")
    p.add_argument("--pair-column", metavar="NAME", help="column holding the second text of a sentence pair")
    p.add_argument("--id-column", metavar="NAME", help="column copied to `id` (default: the row number)")
    p.add_argument("--format", dest="input_format", choices=("txt", "csv", "tsv", "jsonl", "parquet"),
                   help="input format (default: from each file's extension)")
    p.add_argument("--exits", type=Path, metavar="PATH", help="exit heads for a model-folder SOURCE")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="texts per C call (default 32)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local: worker threads, one C handle each (default: cores / threads per worker); "
                        "ray: actors (default: the cluster's CPUs / threads per worker)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help="threads inside each C call (OpenMP builds; default 1)")
    p.add_argument("--logits", action="store_true", help="add the exit logits to each row")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: a thread pool on this machine) or ray (Ray Data; pip install '.[ray]')")
    p.add_argument("--address", metavar="ADDR", help="ray: a running cluster (default: RAY_ADDRESS, or a cluster `ray start` began on this "
                        "machine, else a new local Ray; `local`: always a new local Ray)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (OUTPUT.parts/, or a "
                                                              "folder OUTPUT's committed parts)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line (none either when stderr is "
                                                               "not a terminal)")
    p.add_argument("--chunk-rows", type=int, default=4096, help=argparse.SUPPRESS)
    p.add_argument("--part-rows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--summary", type=Path, metavar="PATH", help="also write the summary as JSON to PATH")
    add_policy_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from refexit import tables
    from refexit.errors import InputError
    from refexit.score import engine
    from refexit.score.folder import is_folder_output, score_folder_local
    from refexit.score.output import output_format
    from refexit.score.source import open_source
    if args.address and args.engine != "ray":
        raise InputError("--address is for --engine ray")
    folder_output = is_folder_output(args.output)
    args.output = args.output if folder_output else Path(args.output)
    output_format(Path("part.parquet") if folder_output else args.output)      # before any work
    inputs = tables.expand_inputs(args.inputs)
    opt = engine.Options(text_column=args.text_column, pair_column=args.pair_column, id_column=args.id_column,
                         batch=args.batch, workers=args.workers, threads_per_worker=args.threads_per_worker,
                         logits=args.logits, resume=args.resume, quiet=args.quiet, chunk_rows=args.chunk_rows,
                         part_rows=args.part_rows, input_format=args.input_format)
    engine.check_options(opt)
    folder, cm = open_source(args.source, policy_from_args(args), args.exits)
    if args.engine == "ray":
        from refexit.score.ray_engine import score_ray
        summary = score_ray(folder, cm, inputs, args.output, opt, address=args.address)
    elif folder_output:
        summary = score_folder_local(cm, inputs, args.output, opt)
    else:
        summary = engine.score_local(cm, inputs, args.output, opt)
    print_summary(summary)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


def print_summary(s: dict) -> None:
    """The end-of-run summary on stderr (stdout stays free for pipes)."""
    w = sys.stderr.write
    rate = f"{s['texts_per_s']:,.0f} texts/s" if s.get("texts_per_s") else "-"
    w(f"score: {s['rows']:,} rows -> {s['output']} ({s['scored']:,} scored, {s['errors']:,} errors"
      f"{' in ' + s['errors_file'] if s['errors'] else ''}); {s['rows_this_run']:,} rows this run in "
      f"{s['seconds']:.1f} s, {rate}\n")
    if s["mean_exit_layer"] is not None:
        dist = ", ".join(f"{k}: {v:,}" for k, v in s["exit_layers"].items() if v)
        run = f" ({s['mean_layers_run']:.2f} layers run: the skip gates skipped some)" \
            if s.get("mean_layers_run") is not None else ""
        w(f"score: mean exit layer {s['mean_exit_layer']:.2f}{run}; exit layers {{{dist}}}\n")
