"""`refexit train-exits MODEL_DIR --data NAME --heads KIND --objective OBJ`: train exit heads on a
frozen backbone (refexit.train.exits) and write exits.safetensors + exits.json."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from refexit.cli import data_args
from refexit.gpf import POOLS
from refexit.train import exits as T

DEFAULT_EXTRAS = ",".join(T.EXTRAS)


def default_out(data: str, heads: str, objective: str, seed: int) -> Path:
    return Path("out") / f"exits-{data}-{heads}-{objective}-seed{seed}"


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "train-exits", help="train early-exit heads on a frozen backbone (NumPy)",
        description="Extract per-layer features once (cached), then train the final classifier and "
                    "the exit heads with Adam and early stopping on dev. Writes exits.safetensors "
                    "(load with refexit.load(MODEL_DIR, exits=...)) and exits.json.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="HF BERT folder (e.g. `refexit data path all-MiniLM-L6-v2`)")
    data_args.add_arguments(p, required=True)
    p.add_argument("--heads", default="mean_linear", choices=T.TRAINABLE_KINDS, help="head kind (default mean_linear)")
    p.add_argument("--l2norm", action="store_true", help="mean_linear: L2-normalise the mean first")
    p.add_argument("--objective", default="deebert", choices=T.OBJECTIVES, help="exit-head objective (default deebert)")
    p.add_argument("--extras", default=None,
                   help=f"also train these, comma-separated, or 'none' (default {DEFAULT_EXTRAS}; a regression "
                        f"task: none, as they need class probabilities; also known, only when named: "
                        f"{', '.join(T.OPTIONAL_EXTRAS)})")
    p.add_argument("--out", type=Path, help="output folder (default out/exits-DATA-HEADS-OBJECTIVE-seedS)")
    p.add_argument("--seed", type=int, default=0, help="training seed (init, batch order, --limit subset)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text, truncated (default 128)")
    p.add_argument("--limit", type=int, metavar="N", help="use at most N examples of each split")
    p.add_argument("--epochs", type=int, default=T.TrainConfig.max_epochs, help="max epochs per head")
    p.add_argument("--gpf-epochs", type=int, default=0, metavar="N",
                   help="--extras gpf: at most N epochs for the Global Past-Future parameters (default: --epochs)")
    p.add_argument("--gpf-pool", choices=POOLS, default=None,
                   help="--extras gpf: the per-layer vector its poolers read: the [CLS] state (cls, the paper's; "
                        "default) or the mean over the real tokens (mean, as the mean_linear heads)")
    p.add_argument("--dact-tau", type=float, metavar="TAU",
                   help=f"--objective dact: weight of the ponder cost (default {T.TrainConfig.dact_tau}; "
                        f"larger: earlier exits)")
    p.add_argument("--dact-frozen-heads", action="store_true",
                   help="--objective dact: train the halting units only (the exit heads stay as DeeBERT trained them)")
    p.add_argument("--dar-weight", type=float, metavar="W",
                   help=f"--objective cascadebert: weight of the difficulty-aware ranking term (default "
                        f"{T.TrainConfig.dar_weight}, as CascadeBERT's glue_mrpc.sh)")
    p.add_argument("--dar-margin", type=float, metavar="M",
                   help=f"--objective cascadebert: confidence margin between an easy and a hard instance "
                        f"(default {T.TrainConfig.dar_margin})")
    p.add_argument("--dar-seeds", type=int, metavar="S",
                   help=f"--objective cascadebert: an instance is hard for a head when any of S heads trained by "
                        f"cross-entropy (seeds SEED..SEED+S-1) gets it wrong (default {T.TrainConfig.dar_seeds})")
    p.add_argument("--no-cache", action="store_true", help="recompute features (and do not cache them)")
    p.set_defaults(func=run)


def limited(ds, limit, seed):
    if limit is None:
        return ds
    return ds.subset(*(min(limit, len(s)) for s in (ds.train, ds.dev, ds.test)), seed=seed)


def run(args) -> int:
    import refexit
    from refexit import userdata
    from refexit.train import features as F
    extras = tuple(e.strip() for e in (args.extras or DEFAULT_EXTRAS).split(",") if e.strip())
    extras = () if extras == ("none",) else extras
    bad = set(extras) - set(T.EXTRAS) - set(T.OPTIONAL_EXTRAS)
    if bad:
        raise refexit.InputError(f"unknown --extras {sorted(bad)} (known: {', '.join(T.EXTRAS + T.OPTIONAL_EXTRAS)}, or none)")
    dar = {k: getattr(args, k) for k in ("dar_weight", "dar_margin", "dar_seeds") if getattr(args, k) is not None}
    if dar and args.objective != "cascadebert":
        raise refexit.InputError("--dar-weight / --dar-margin / --dar-seeds are settings of --objective cascadebert")
    if args.objective == "cascadebert":
        from refexit.train.cascadebert import check_settings
        d = T.TrainConfig(**dar)
        check_settings(d.dar_weight, d.dar_margin, d.dar_seeds, args.heads)     # before the data and the model load
    if args.gpf_pool is not None and "gpf" not in extras:
        raise refexit.InputError("--gpf-pool is a setting of --extras gpf")
    model = refexit.load(args.model_dir)
    T.check_kind(model, args.heads)      # before the data and any feature extraction (a pooler-less family)
    ds = data_args.load(args)
    if ds.problem_type == "regression" and args.extras is None:
        extras = ()                      # the default extras all read class probabilities
    ds = limited(ds, args.limit, args.seed)
    print(f"train-exits: {ds}; {model}", file=sys.stderr)
    get = lambda split: data_args.extract(model, ds, split, args.max_length,  # noqa: E731
                                          use_cache=not args.no_cache)
    if args.heads == "fastbert":            # every token's states (float16 cache, token_heads.py)
        from refexit.train import token_heads
        get = lambda split: token_heads.extract(model, getattr(ds, split).texts, args.max_length,  # noqa: E731
                                                getattr(ds, split).pairs, use_cache=not args.no_cache,
                                                label=data_args.feature_label(ds, split))
    f_train, f_dev = get("train"), get("dev")
    if args.objective != "dact" and (args.dact_tau is not None or args.dact_frozen_heads):
        raise refexit.InputError("--dact-tau / --dact-frozen-heads are settings of --objective dact")
    if args.dact_tau is not None and not (math.isfinite(args.dact_tau) and args.dact_tau >= 0):
        raise refexit.InputError(f"--dact-tau must be a finite number >= 0, got {args.dact_tau}")
    cfg = T.TrainConfig(seed=args.seed, max_epochs=args.epochs, gpf_epochs=args.gpf_epochs,
                        gpf_pool=args.gpf_pool or T.TrainConfig.gpf_pool,
                        dact_tau=T.TrainConfig.dact_tau if args.dact_tau is None else args.dact_tau,
                        dact_train_heads=not args.dact_frozen_heads, **dar)
    res = T.train_exits(model, f_train, ds.train.labels, f_dev, ds.dev.labels, ds.label_names,
                        kind=args.heads, objective=args.objective, cfg=cfg, l2norm=args.l2norm,
                        extras=extras, log=lambda m: print(f"train-exits: {m}", file=sys.stderr))
    out = args.out or default_out(ds.name, args.heads, args.objective, args.seed)
    extra = {"model": {"dir": str(Path(args.model_dir).resolve()), "weights_sha256": F.weights_hash(model),
                       "num_layers": model.num_layers},
             "dataset": {**userdata.describe(ds), "limit": args.limit},
             "max_length": min(args.max_length, model.tokenizer.max_length),
             "argv": sys.argv[1:]}
    path = T.save(res, out, extra)
    if ds.problem_type == "regression":
        print(f"{'layer':>5} {'dev r':>7} {'rho':>7} {'MSE':>9}")
        for r in res.info["dev_per_layer"]:
            print(f"{r['layer']:>5} {r['pearson']:>7.4f} {r['spearman']:>7.4f} {r['mse']:>9.4g}")
    else:
        print(f"{'layer':>5} {'dev acc':>8} {'macro-F1':>8} {'NLL':>7} {'T':>6}")
        for r in res.info["dev_per_layer"]:
            print(f"{r['layer']:>5} {100 * r['accuracy']:>7.2f}% {100 * r['macro_f1']:>7.2f}% {r['nll']:>7.4f} "
                  f"{r['temperature']:>6.3f}")
    print(f"wrote {path} and {path.parent / T.EXITS_JSON}")
    print(f"evaluate: refexit evaluate {args.model_dir} --exits {path.parent} --sweep"
          + (f" --limit {args.limit}" if args.limit else ""))
    return 0
