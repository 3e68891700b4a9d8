"""How well each exit head's confidence ranks its right answers above its wrong ones, for exits trained
with and without CascadeBERT's difficulty-aware regularisation (docs/methods.md, "CascadeBERT's
difficulty-aware regularisation").

    python tools/cascade_rank_table.py MODEL_DIR --exits DIR [--exits DIR ...] [--split test] [--header]

One markdown row per exits folder: per exit layer k < L (the truncated cascade member k), the split's
accuracy and the ranking AUC of max softmax(z_k): the share of (right, wrong) pairs of texts whose right
one is the more confident (ties 1/2; a temperature does not change it with two labels). With --shares,
a second table: the accuracy of the cascade "truncation k, then the full model" when member k answers
exactly that share of the texts, its most confident ones (what a hand-off threshold at that quantile
of its confidence does; equal shares = equal cost, k + (1 - share) L layers per text), for k in
--members. The data is the one exits.json records (or --data and its table options); features come
from the cache `train-exits` and `evaluate` fill (extracted otherwise).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def share_accuracy(conf, right_k, right_full, share: float) -> float:
    """Accuracy when the round(share N) most confident texts (stable order) take member k's answer."""
    n = int(round(share * len(conf)))
    first = np.zeros(len(conf), bool)
    first[np.argsort(-np.asarray(conf), kind="stable")[:n]] = True
    return float(np.mean(np.where(first, right_k, right_full)))


def rows(args) -> tuple[list[str], list[str]]:
    import refexit
    from refexit import nn
    from refexit.cli import data_args
    from refexit.train.cascadebert import confidence, rank_auc
    from refexit.train.evaluate import LayerOutputs
    out, shared = [], []
    for d in args.exits:
        info = json.loads((Path(d) / "exits.json").read_text())
        ds = data_args.load(args, recorded=info.get("dataset"), quiet=True)
        y = np.asarray(getattr(ds, args.split).labels)
        model = refexit.load(args.model_dir, exits=d)
        o = LayerOutputs(model, data_args.extract(model, ds, args.split, info.get("max_length", 128)))
        cells = []
        for z in o.logits[:-1]:
            right = nn.argmax(z) == y
            cells.append(f"{100 * right.mean():.2f} / {rank_auc(confidence(z)[0], right):.3f}")
        cfg = info.get("train_config", {})
        what = info["objective"] + (f" (w {cfg['dar_weight']:g}, m {cfg['dar_margin']:g}, S {cfg['dar_seeds']})"
                                    if info["objective"] == "cascadebert" else "")
        out.append(f"| {ds.name} | {what} | " + " | ".join(cells) + " |")
        right_full = nn.argmax(o.logits[-1]) == y
        for k in args.members:
            z = o.logits[k - 1]
            accs = [share_accuracy(confidence(z)[0], nn.argmax(z) == y, right_full, f) for f in args.shares]
            shared.append(f"| {ds.name} | {what} | cascade{k} | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |")
    return out, shared


def main(argv=None) -> int:
    from refexit.cli import data_args
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--exits", action="append", required=True, help="a train-exits folder (repeat to compare)")
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--header", action="store_true", help="print the tables' headers")
    ap.add_argument("--shares", type=lambda v: [float(x) for x in v.split(",")], default=[],
                    help="comma-separated shares answered by the truncated member (e.g. 0.5,0.7,0.9)")
    ap.add_argument("--members", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3],
                    help="truncation layers k of the cascades of --shares (default 1,2,3)")
    data_args.add_arguments(ap, data_help="the data (default: the one each exits.json records)")
    a = ap.parse_args(argv)
    lines, shared = rows(a)
    if a.header:
        n = lines[0].count("|") - 3
        print("| data set | exits | " + " | ".join(f"layer {k}: acc % / AUC" for k in range(1, n + 1)) + " |")
        print("|---|---|" + "---|" * n)
    print("\n".join(lines))
    if a.shares:
        print()
        if a.header:
            print("| data set | exits | cascade | " + " | ".join(f"acc % at {100 * f:g}% answered by member k"
                                                            for f in a.shares) + " |")
            print("|---|---|---|" + "---|" * len(a.shares))
        print("\n".join(shared))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
