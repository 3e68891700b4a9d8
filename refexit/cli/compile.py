"""`refexit compile`: a model folder + an exit policy -> OUT_DIR/<prefix>.h, .c, .weights and the
built library (codegen.compile_model)."""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

from refexit.errors import InputError

from refexit.cli.policy_args import POLICY_NAMES, THRESHOLD_POLICIES, add_policy_args, policy_from_args  # noqa: F401


def _default_prefix(model_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", model_dir.resolve().name).lower().strip("_") or "model"
    return name if re.match(r"[A-Za-z_]", name) else "m_" + name


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "compile", help="compile a model + exit policy into a C library (.h, .c, .weights, .so)",
        description="Lower, pack, emit and build MODEL_DIR (an HF BERT folder, with exits.safetensors "
                    "when present) with an exit policy into OUT_DIR: <prefix>.h, <prefix>.c, "
                    "<prefix>.weights, lib<prefix>.so and <prefix>.manifest.json (for "
                    "codegen.load_compiled). Thresholds can still be changed at run time.",
        epilog="example: refexit compile MODEL_DIR -o build/m --policy entropy --threshold 0.3 --standalone "
               "--isa avx2 --openmp static")
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="Hugging Face BERT folder")
    p.add_argument("-o", "--out", dest="out_dir", metavar="OUT_DIR", type=Path, required=True,
                   help="output folder (created; files of the same prefix in it are replaced)")
    p.add_argument("--exits", type=Path, metavar="PATH",
                   help="exit heads: the folder `refexit train-exits` wrote, or an exits.safetensors file "
                        "(default: MODEL_DIR/exits.safetensors when present)")
    add_policy_args(p)
    from refexit.cli.token_args import add_token_args
    add_token_args(p)
    b = p.add_argument_group("build")
    b.add_argument("--prefix", help="C symbol prefix (default: from the model folder name)")
    b.add_argument("--max-length", type=int, metavar="N", help="longest sequence in tokens (default: the model's)")
    b.add_argument("--max-batch", type=int, default=32, metavar="N", help="samples per internal chunk (default 32)")
    b.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="what the layer GEMMs compute in: fp32 (default), bf16 (bf16 weights and "
                        "inputs, fp32 sums) or int8 (weights per output channel, inputs per token, "
                        "int32 sums)")
    b.add_argument("--isa", choices=("auto", "scalar", "avx2", "avx512", "avx512bf16", "amx"), default="auto",
                   help="instruction set the code may use: auto (default: the best of this compiler and CPU; "
                        "the result refuses to run on a CPU without it), scalar (portable C, any CPU), "
                        "avx2, avx512; avx512bf16 and amx for bf16 / int8 only")
    b.add_argument("--openmp", choices=("auto", "on", "off", "static"), default="auto",
                   help="threads inside a call: auto (default: when the compiler has OpenMP), on, off "
                        "(single-threaded, no OpenMP run-time needed), static (--standalone programs link "
                        "the OpenMP run-time into the executable; the library uses it as 'on')")
    b.add_argument("--no-openmp", action="store_true", help=argparse.SUPPRESS)    # old spelling of --openmp off
    b.add_argument("--cc", help="C compiler (default: $CC or cc)")
    b.add_argument("--standalone", action="store_true",
                   help="also build the command-line programs OUT_DIR/<prefix> (weights embedded: one "
                        "file) and OUT_DIR/<prefix>-sidecar (maps <prefix>.weights); see `<prefix> --help`")
    p.set_defaults(func=_cmd_compile)


def _cmd_compile(args) -> int:
    import codegen
    from refexit.model import load
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: this is a file; the output must be a folder (it is created when missing)")
    from refexit.cli.token_args import apply_token_args
    model = apply_token_args(args, load(args.model_dir, exits=args.exits))
    policy = policy_from_args(args, model.num_layers)
    prefix = args.prefix or _default_prefix(args.model_dir)
    openmp = {"auto": None, "on": True, "off": False, "static": True}[args.openmp]
    if args.no_openmp:
        openmp = False
    isa = None if args.isa == "auto" else args.isa
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm = codegen.compile_model(model, policy, out, prefix=prefix, max_length=args.max_length,
                                   max_batch=args.max_batch, cc=args.cc, openmp=openmp, precision=args.precision,
                                   isa=isa)
    for msg in dict.fromkeys(str(w.message) for w in caught):
        print(f"refexit: warning: {msg}", file=sys.stderr)
    m = cm.manifest
    print(f"compiled {args.model_dir} with {m['policy']['repr']}"
          + (f" and token reduction keep {m['token_reduction']['keep']}" if "token_reduction" in m else "")
          + f" -> {out}/")
    for key in ("header", "source", "weights", "library"):
        path = out / m[key]
        print(f"  {m[key]:<32} {path.stat().st_size:>12,} bytes")
    print(f"  model hash {m['model_hash']}; layers {m['num_layers']}, labels {m['num_labels']}, "
          f"max length {m['max_length']}; {m['precision']} on {m['isa']}; OpenMP {'on' if m['openmp'] else 'off'}")
    kind = m["tokenizer"].get("kind", "wordpiece")
    print("  tokenizer in C: " + {"wordpiece": "WordPiece", "bpe": "byte-level BPE", "unigram": "Unigram"}.get(
        kind, "none (text calls return ERR_VOCAB; the programs take token ids with --ids)"))
    if getattr(args, "standalone", False):
        from codegen.standalone import build_standalone
        res = build_standalone(out, prefix=m["prefix"], cc=args.cc,
                               openmp="static" if args.openmp == "static" and m["openmp"] else m["openmp"])
        for exe, what in ((res.embedded, "weights embedded"), (res.sidecar, f"maps {m['weights']}")):
            print(f"  {exe.name:<32} {exe.stat().st_size:>12,} bytes  (program; {what})")
        print(f"  the programs need: {res.needs}")
    return 0
