"""`refexit classify MODEL_DIR [TEXT ...]`: classify texts with the NumPy oracle, one JSON line each.

Texts come from the arguments, or from stdin one per line when none are given (or '-'). Each line
has the fields of the compiled standalone program's:

  {"label": "positive", "label_id": 1, "probability": 0.93, "probabilities": {...},
   "logits": [...], "exit_layer": 3, "time_ms": 1.7}

(a regression model gives "value" instead of the label fields), plus "truncated": true and
"n_tokens": N (the tokens the text has) when a text is longer than the maximum length and was cut.
An empty or whitespace-only text gives {"error": "empty text"}. --echo adds "text" (and "pair");
--pairs reads each text as a sentence pair FIRST<TAB>SECOND."""
from __future__ import annotations

import argparse
import json
import sys
import time

from refexit.cascade import Cascade
from refexit.cli.policy_args import add_policy_args, policy_from_args  # noqa: F401  (policy_from_args: old import path)


def read_texts(texts: list[str]):
    """The texts of the arguments, or the lines of stdin (lazily); undecodable bytes read as U+FFFD
    (as the standalone program reads them)."""
    if texts and texts != ["-"]:
        yield from (_clean(t) for t in texts)
        return
    for line in sys.stdin:
        yield _clean(line.rstrip("\n").rstrip("\r"))


def _clean(text: str) -> str:
    # argv and stdin decode invalid UTF-8 to lone surrogates (surrogateescape): make them U+FFFD
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _chunks(items, size):
    chunk = []
    for it in items:
        chunk.append(it)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def records(model, policy, texts: list[str], pairs: list | None, max_length: int | None, echo: bool) -> list[dict]:
    """One JSON-ready record per text (see the module doc); pairs[i] None: text i is a single text.
    policy may also be a refexit.Cascade over `model` (its records add "member", "member_layers")."""
    tok = model.tokenizer
    pairs = pairs if pairs is not None else [None] * len(texts)
    limit = tok.max_length if max_length is None else max_length
    full = [len(tok.tokenize(t)) + (0 if p is None else len(tok.tokenize(p))) + tok.num_special_tokens(p is not None)
            for t, p in zip(texts, pairs)]
    empty = [n <= tok.num_special_tokens(p is not None) for n, p in zip(full, pairs)]
    out: list[dict] = [{"error": "empty text"} for _ in texts]
    for with_pair in (False, True):           # single texts and pairs: one batch each
        todo = [i for i in range(len(texts)) if not empty[i] and (pairs[i] is not None) == with_pair]
        if not todo:
            continue
        t0 = time.perf_counter()
        enc = tok([texts[i] for i in todo], [pairs[i] for i in todo] if with_pair else None, max_length=max_length)
        res = policy.classify(enc) if isinstance(policy, Cascade) else model.classify(enc, policy)
        ms = (time.perf_counter() - t0) * 1e3 / len(todo)
        for i, rec in zip(todo, res.records()):
            rec["time_ms"] = round(ms, 3)
            if full[i] > limit:
                rec["truncated"], rec["n_tokens"] = True, full[i]
            out[i] = rec
    if echo:
        out = [{"text": t} | ({} if p is None else {"pair": p}) | r for t, p, r in zip(texts, pairs, out)]
    return out


def run(args) -> int:
    import refexit
    from refexit.cli.main import write_out
    from refexit.errors import InputError
    if args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    from refexit.cli.token_args import apply_token_args
    model = apply_token_args(args, refexit.load(args.model_dir, exits=args.exits))
    policy = policy_from_args(args, model.num_layers)
    model.check_policy(policy if policy is not None else refexit.Static(model.num_layers))   # errors before input
    if args.cascade is not None:
        if policy is not None:
            raise InputError("--cascade runs its own members (a truncation, then the full model): give it "
                             "without --policy")
        policy = cascade_from_arg(model, args.cascade)
    if args.max_length is not None:
        model.tokenizer.encode("a", None if not args.pairs else "b", max_length=args.max_length)  # range check
    for chunk in _chunks(read_texts(args.texts), args.batch):
        if args.pairs:
            split = [t.split("\t", 1) for t in chunk]
            texts, pairs = [s[0] for s in split], [s[1] if len(s) > 1 else None for s in split]
        else:
            texts, pairs = chunk, None
        lines = [json.dumps(r, ensure_ascii=False) for r in records(model, policy, texts, pairs, args.max_length,
                                                                     args.echo)]
        write_out("\n".join(lines) + "\n")
    return 0


def cascade_from_arg(model, text: str):
    """"K:THR" -> refexit.Cascade.truncation(model, K, THR) (the model's calibrated temperatures)."""
    import refexit
    k, sep, thr = text.partition(":")
    try:
        k, thr = int(k), float(thr)
    except ValueError:
        raise refexit.InputError(f"--cascade takes K:THRESHOLD (e.g. 2:0.9), got {text!r}") from None
    if not sep or not 1 <= k < model.num_layers:
        raise refexit.InputError(f"--cascade K:THRESHOLD needs a truncation layer K in 1..{model.num_layers - 1}, "
                                 f"got {text!r}")
    return refexit.Cascade.truncation(model, k, thr)


def add_subcommand(sub):
    p = sub.add_parser("classify", help="classify text with the NumPy oracle (JSON lines out)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: refexit classify MODEL_DIR --exits out/exits-sst2 --policy entropy "
                              "--threshold 0.3 \"a gripping film\" \"dull and far too long\"")
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: stdin, one per line)")
    p.add_argument("--exits", default=None, metavar="PATH",
                   help="exit heads: the folder `refexit train-exits` wrote, or an exits.safetensors file "
                        "(default: MODEL_DIR/exits.safetensors when present)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="truncate to N tokens (default: the model's maximum)")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="texts per forward batch (default 32)")
    p.add_argument("--pairs", action="store_true", help="each text is a sentence pair: FIRST<TAB>SECOND")
    p.add_argument("--echo", action="store_true", help="repeat each text in its line (\"text\", \"pair\")")
    p.add_argument("--cascade", metavar="K:THR",
                   help="CascadeBERT: the model truncated at layer K answers when its calibrated max softmax "
                        "> THR, the full model answers the rest (lines add \"member\", \"member_layers\")")
    add_policy_args(p)
    from refexit.cli.token_args import add_token_args
    add_token_args(p)
    p.set_defaults(func=run)
