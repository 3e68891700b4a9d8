"""`refexit compile`: a model folder + an exit policy -> OUT_DIR/<prefix>.h, .c, .weights and the
built library (codegen.compile_model)."""
from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

from .errors import InputError

POLICY_NAMES = ("entropy", "norm_entropy", "max_prob", "patience", "learned", "ponder", "window", "static")
THRESHOLD_POLICIES = ("entropy", "norm_entropy", "max_prob", "learned", "ponder")


def _floats(text: str, what: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be a number or comma-separated numbers, got {text!r}") from None
    if not vals:
        raise InputError(f"{what} is empty")
    return vals[0] if len(vals) == 1 else vals


def policy_from_args(args, num_layers: int | None = None):
    """The refexit policy the command line describes (mirrors the refexit.policies constructors)."""
    from . import policies as P
    name = args.policy
    if name in THRESHOLD_POLICIES:
        if args.threshold is None:
            raise InputError(f"--policy {name} needs --threshold X (or X1,X2,... one per layer)")
        thr = _floats(args.threshold, "--threshold")
        if name == "norm_entropy":
            return P.NormEntropy(thr, inclusive=not args.strict)
        if name == "max_prob":
            temps = None if args.temperatures is None else _floats(args.temperatures, "--temperatures")
            return P.MaxProb(thr, temperatures=temps)
        return {"entropy": P.Entropy, "learned": P.Learned, "ponder": P.Ponder}[name](thr)
    if name == "patience":
        if args.patience is None:
            raise InputError("--policy patience needs --patience T (0 runs the full model)")
        return P.Patience(args.patience, tau=args.tau)
    if name == "window":
        if args.window is None:
            raise InputError("--policy window needs --window N")
        return P.Window(args.window, tau=args.tau)
    if name == "static":
        layer = args.layer if args.layer is not None else num_layers
        if layer is None:
            raise InputError("--policy static needs --layer K")
        return P.Static(layer)
    raise InputError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path)
    p.add_argument("-o", "--out", dest="out_dir", metavar="OUT_DIR", type=Path, required=True)
    p.add_argument("--policy", choices=POLICY_NAMES, default="entropy")
    p.add_argument("--threshold", metavar="X[,X...]",
                   help="threshold (entropy, norm_entropy, max_prob, learned, ponder); comma-separated "
                        "for one per layer 1..L-1")
    p.add_argument("--strict", action="store_true", help="norm_entropy: exit on < instead of <=")
    p.add_argument("--temperatures", metavar="T[,T...]", help="max_prob: per-layer temperatures "
                   "(default: the model's calibrated ones, 1 if none)")
    p.add_argument("--patience", type=int, metavar="T", help="patience: agreeing layers needed")
    p.add_argument("--window", type=int, metavar="N", help="window: same prediction for N layers")
    p.add_argument("--tau", type=float, help="patience/window on a regression head: agreement tolerance")
    p.add_argument("--layer", type=int, metavar="K", help="static: exit at layer K (default: L)")
    p.add_argument("--prefix", help="C symbol prefix (default: from the model folder name)")
    p.add_argument("--max-length", type=int, help="longest sequence (default: the model's)")
    p.add_argument("--max-batch", type=int, default=32, help="samples per internal chunk")
    p.add_argument("--exits", type=Path, help="an exits.safetensors other than MODEL_DIR's")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="what the layer GEMMs compute in: fp32 (default), bf16 (bf16 weights and "
                        "inputs, fp32 sums) or int8 (weights per output channel, inputs per token, "
                        "int32 sums)")
    p.add_argument("--isa", choices=("scalar", "avx2", "avx512", "avx512bf16", "amx"),
                   help="instruction set (default: the best this compiler and CPU have; "
                        "avx512bf16 and amx for bf16 / int8 only)")
    p.add_argument("--cc", help="C compiler (default: $CC or cc)")
    p.add_argument("--no-openmp", action="store_true", help="build without OpenMP")
    p.add_argument("--standalone", action="store_true",
                   help="also build the command-line programs OUT_DIR/<prefix> (weights embedded: one "
                        "file) and OUT_DIR/<prefix>-sidecar (maps <prefix>.weights); see `<prefix> --help`")
    p.set_defaults(func=_cmd_compile)


def _cmd_compile(args) -> int:
    import codegen
    from .model import load
    model = load(args.model_dir, exits=args.exits)
    policy = policy_from_args(args, model.num_layers)
    prefix = args.prefix or _default_prefix(args.model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm = codegen.compile_model(model, policy, args.out_dir, prefix=prefix, max_length=args.max_length,
                                   max_batch=args.max_batch, cc=args.cc,
                                   openmp=False if args.no_openmp else None, precision=args.precision,
                                   isa=args.isa)
    for w in caught:
        print(f"warning: {w.message}")
    m = cm.manifest
    print(f"compiled {args.model_dir} with {m['policy']['repr']} -> {args.out_dir}/")
    for key in ("header", "source", "weights", "library"):
        path = Path(args.out_dir) / m[key]
        print(f"  {m[key]:<32} {path.stat().st_size:>12,} bytes")
    print(f"  model hash {m['model_hash']}; layers {m['num_layers']}, labels {m['num_labels']}, "
          f"max length {m['max_length']}; {m['precision']} on {m['isa']}; OpenMP {'on' if m['openmp'] else 'off'}")
    if getattr(args, "standalone", False):
        from codegen.standalone import build_standalone
        res = build_standalone(args.out_dir, prefix=m["prefix"], cc=args.cc,
                               openmp=False if args.no_openmp else None)
        for exe, what in ((res.embedded, "weights embedded"), (res.sidecar, f"maps {m['weights']}")):
            print(f"  {exe.name:<32} {exe.stat().st_size:>12,} bytes  (program; {what})")
    return 0
