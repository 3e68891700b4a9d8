"""`refexit fine-tune MODEL_DIR --data NAME -o OUT [--objective OBJ]`: fine-tune the backbone with
its classifier (and exit heads) in NumPy (refexit.train.finetune) and write a Hugging Face folder."""
from __future__ import annotations

import sys
from pathlib import Path

from refexit.cli import data_args
from refexit.train import finetune as FT

_D = FT.FinetuneConfig()


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "fine-tune", help="fine-tune the backbone with its classifier and exit heads (NumPy)",
        description="Train backbone, classifier and (objectives other than 'final') exit heads jointly: "
                    "AdamW, linear warm-up and decay, gradient clipping, length-bucketed batches, early "
                    "stopping on dev, a checkpoint every epoch. Writes a Hugging Face "
                    "BertForSequenceClassification folder (+ exits.safetensors) that every refexit command "
                    "and transformers' from_pretrained read. Objectives: " + ", ".join(FT.OBJECTIVES) +
                    " (see refexit/train/finetune.py).")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="HF BERT folder (e.g. `refexit data path all-MiniLM-L6-v2`)")
    data_args.add_arguments(p, required=True)
    p.add_argument("-o", "--out", type=Path, help="output folder (default out/finetune-DATA-OBJECTIVE-seedS)")
    p.add_argument("--objective", default=_D.objective, choices=FT.OBJECTIVES,
                   help="final: the classifier only (then `refexit train-exits OUT`); joint, pabee, elbert, "
                        "palbert, distill, romebert (distill + RomeBERT's gradient projection): exit heads trained "
                        "with the backbone (default final)")
    p.add_argument("--heads", default=_D.heads, choices=FT.EXIT_KINDS, help="exit head kind (default shared_pooler)")
    p.add_argument("--project", choices=("exits", "final"),
                   help="romebert: whose gradient is projected when the exits' and the final classifier's "
                        "conflict on layers 1..L-1 (default exits; RomeBERT's code uses final on small tasks)")
    p.add_argument("--epochs", type=int, default=_D.epochs, help=f"epochs (default {_D.epochs})")
    p.add_argument("--lr", type=float, default=_D.lr, help=f"peak learning rate (default {_D.lr:g})")
    p.add_argument("--head-lr", type=float, help="peak learning rate of the exit heads of layers 1..L-1 "
                                                 "(fresh, small: they may need more than the backbone's; "
                                                 "default: --lr)")
    p.add_argument("--batch", type=int, default=_D.batch_size, help=f"batch size (default {_D.batch_size})")
    p.add_argument("--max-length", type=int, default=_D.max_length, help="tokens per text, truncated (default 128)")
    p.add_argument("--weight-decay", type=float, default=_D.weight_decay, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup", type=float, default=_D.warmup_ratio, help="warm-up fraction of the steps (default 0.1)")
    p.add_argument("--dropout", type=float, default=_D.hidden_dropout, help="hidden and attention dropout (default 0.1)")
    p.add_argument("--patience", type=int, default=_D.patience,
                   help="stop after this many epochs without a better dev score (0: never; default 2)")
    p.add_argument("--seed", type=int, default=_D.seed, help="seed (init, batch order, dropout, --limit subset)")
    p.add_argument("--limit", type=int, metavar="N", help="use at most N examples of each split")
    p.add_argument("--steps", type=int, metavar="N", help="at most N steps per epoch (smoke runs)")
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/{FT.CHECKPOINT} (written every epoch)")
    p.set_defaults(func=run)


def default_out(data: str, objective: str, seed: int) -> Path:
    return Path("out") / f"finetune-{data}-{objective}-seed{seed}"


def run(args) -> int:
    import refexit
    from refexit import userdata
    from refexit.cli.train import limited
    from refexit.train.features import weights_hash
    if args.project and args.objective != "romebert":
        raise refexit.InputError(f"--project is a setting of --objective romebert, not {args.objective}")
    model = refexit.load(args.model_dir)
    ds = limited(data_args.load(args), args.limit, args.seed)
    cfg = FT.FinetuneConfig(objective=args.objective, heads=args.heads, epochs=args.epochs, lr=args.lr,
                            head_lr=args.head_lr, batch_size=args.batch, max_length=args.max_length, weight_decay=args.weight_decay,
                            warmup_ratio=args.warmup, hidden_dropout=args.dropout, attn_dropout=args.dropout,
                            patience=args.patience, seed=args.seed, limit_steps=args.steps,
                            romebert_project=args.project)
    out = args.out or default_out(ds.name, args.objective, args.seed)
    print(f"fine-tune: {ds}; {model}", file=sys.stderr)
    res = FT.fine_tune(model, ds.train, ds.dev, ds.label_names, cfg, test=ds.test, out_dir=out, resume=args.resume)
    extra = {"model": {"dir": str(Path(args.model_dir).resolve()), "weights_sha256": weights_hash(model)},
             "dataset": {**userdata.describe(ds), "limit": args.limit},
             "argv": sys.argv[1:]}
    FT.save(res, model, out, extra)
    table = res.info["per_exit"]
    metric = res.info["metric"]
    splits = [s for s in ("train", "dev", "test") if s in table]
    print(f"{'layer':>5} " + " ".join(f"{s + ' ' + metric:>14}" for s in splits))
    for layer in sorted(table["dev"]):
        cells = [table[s][layer] for s in splits]
        print(f"{layer:>5} " + " ".join(f"{100 * v:>13.2f}%" if not res.regression else f"{v:>14.4f}" for v in cells))
    print(f"best epoch {res.info['best_epoch']} of {res.info['epochs_run']}; {res.info['train_seconds']:.0f} s of "
          f"training, {res.info['tokens_per_s']:,.0f} tokens/s")
    print(f"wrote {out} (Hugging Face BertForSequenceClassification{' + exits.safetensors' if (out / 'exits.safetensors').exists() else ''})")
    if args.objective == "final":
        print(f"exit heads (stage 2, frozen backbone): refexit train-exits {out} --data {args.data}")
    else:
        print(f"evaluate: refexit evaluate {out} --data {args.data} --sweep")
    return 0
