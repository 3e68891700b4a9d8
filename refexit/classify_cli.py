"""`refexit classify MODEL_DIR "text" ...`: label, probability and exit layer as JSON lines.

Texts come from the arguments, or from stdin one per line when none are given (or '-')."""
from __future__ import annotations

import argparse
import sys

from .policies import POLICIES


def add_policy_args(p: argparse.ArgumentParser):
    """Policy options shared by classify / compile / evaluate."""
    p.add_argument("--policy", choices=sorted(POLICIES), default=None,
                   help="exit policy (default: the full model, no early exit)")
    p.add_argument("--threshold", default=None,
                   help="threshold, or comma-separated per-layer thresholds (entropy, norm_entropy, "
                        "max_prob, learned, ponder)")
    p.add_argument("--patience", type=int, default=None, help="patience t (patience policy)")
    p.add_argument("--window", type=int, default=None, help="window N (window policy)")
    p.add_argument("--tau", type=float, default=None, help="regression agreement tolerance")
    p.add_argument("--layer", type=int, default=None, help="exit layer k (static policy)")
    p.add_argument("--strict", action="store_true", help="norm_entropy: strict < instead of <=")


def policy_from_args(args):
    """argparse namespace -> Policy (or None for the full model); errors are InputError."""
    from .errors import InputError
    from .policies import make_policy
    name = args.policy
    if name is None:
        return None

    def need(value, flag):
        if value is None:
            raise InputError(f"--policy {name} needs {flag}")
        return value

    if name in ("entropy", "norm_entropy", "max_prob", "learned", "ponder"):
        raw = need(args.threshold, "--threshold")
        try:
            vals = [float(v) for v in str(raw).split(",")]
        except ValueError:
            raise InputError(f"--threshold must be numbers, got {raw!r}") from None
        thr = vals[0] if len(vals) == 1 else vals
        return make_policy(name, thr, inclusive=not args.strict) if name == "norm_entropy" else make_policy(name, thr)
    if name == "patience":
        return make_policy(name, need(args.patience, "--patience"), tau=args.tau)
    if name == "window":
        return make_policy(name, need(args.window, "--window"), tau=args.tau)
    return make_policy(name, need(args.layer, "--layer"))


def read_texts(texts: list[str]) -> list[str]:
    if not texts or texts == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin]
    return texts


def run(args) -> int:
    import refexit
    model = refexit.load(args.model_dir, exits=args.exits)
    policy = policy_from_args(args)
    texts = read_texts(args.texts)
    for start in range(0, len(texts), args.batch):
        chunk = texts[start:start + args.batch]
        enc = model.tokenizer(chunk, max_length=args.max_length)
        res = model.classify(enc, policy)
        print(res.to_json_lines(chunk), flush=True)
    return 0


def add_subcommand(sub):
    p = sub.add_parser("classify", help="classify text with the NumPy oracle (JSON lines out)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)")
    p.add_argument("texts", nargs="*", help="texts to classify (default: stdin, one per line)")
    p.add_argument("--exits", default=None, help="exits.safetensors to use (default: the model folder's)")
    p.add_argument("--max-length", type=int, default=None, help="truncate to this many tokens")
    p.add_argument("--batch", type=int, default=32, help="samples per forward batch")
    add_policy_args(p)
    p.set_defaults(func=run)
