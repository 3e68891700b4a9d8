"""CeeBERT's domain-shift case: exits trained on one data set, thresholds adapting on another.

Exit heads trained on SOURCE (default: Rotten Tomatoes) classify the positive and negative texts of
TARGET (default: the tweets, neutral left out; positive -> the source's positive label). Compared on
the target's test texts, in a fixed random order (--orders of them):

  - the full model;
  - max_prob at a fixed threshold picked on the SOURCE dev set (the fastest within --max-drop points
    of the full model's source dev accuracy; refexit evaluate's rule);
  - CeeBERT with its cost picked the same way on the source dev set (adapting there from scratch),
    then adapting online on the target from scratch, no target labels, learning after every
    --online-batch samples (1: the paper's per-sample rule; 32: a compiled library called with
    batches of 32);
  - for reference, the best fixed threshold on the target test itself (needs target labels).

Replays from per-layer features (refexit.train.evaluate.simulate: the oracle's own decide/observe),
cached under ~/.cache/refexit/features. --check-c N also runs the compiled C on the first N target
texts with the same order and batch boundaries and counts agreeing exit layers.

  PYTHONPATH=$PWD python tools/ceebert_shift.py \\
      --exits /work/main/out/exits-rotten_tomatoes-mean_linear-deebert-seed0 --orders 3 --check-c 512
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

import refexit
from refexit import data as D
from refexit.train import evaluate as E
from refexit.train import features as F

POSITIVE = {"rotten_tomatoes": "fresh", "tweets": "positive", "sms_spam": None}
NEGATIVE = {"rotten_tomatoes": "rotten", "tweets": "negative"}


def subset(feats: F.Features, idx) -> F.Features:
    return F.Features(feats.cls[:, idx], feats.mean[:, idx], feats.lengths[idx])


def target_split(ds, split: str, source_labels: list[str]):
    """The positive / negative rows of the target split, their labels in the source's label ids."""
    s = getattr(ds, split)
    names = [ds.label_names[i] for i in s.labels]
    to_source = {POSITIVE[ds.name]: source_labels.index(POSITIVE["rotten_tomatoes"]),
                 NEGATIVE[ds.name]: source_labels.index(NEGATIVE["rotten_tomatoes"])}
    idx = np.array([i for i, n in enumerate(names) if n in to_source])
    return idx, np.array([to_source[names[i]] for i in idx])


def run(model, pol, out, y, batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        if pol.stateful:
            pol.reset()
        res = E.simulate(model, pol, out, batch=batch)
    m = E.metrics(res, y)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "mean_layers": m["mean_layers"],
            "flops_ratio": m["flops_ratio"], "exit_histogram": m["exit_histogram"],
            "final_thresholds": pol.thresholds() if pol.stateful else None}, res


def pick_on(model, grid, out, y, full_acc, max_drop, batch):
    pts = [{"policy": p, "dev": run(model, p, out, y, batch)[0]} for p in grid]
    return E.pick(pts, full_acc, max_drop, "dev")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exits", type=Path, required=True, help="exits folder trained on the source")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--target", default="tweets")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy points (default 1)")
    ap.add_argument("--online-batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--orders", type=int, default=3, help="random orders of the target texts")
    ap.add_argument("--check-c", type=int, default=0, metavar="N", help="compiled C on the first N target texts")
    ap.add_argument("--check-cost", type=float, default=0.02, help="the cost of the --check-c run (default 0.02)")
    ap.add_argument("--out", type=Path, help="JSON report")
    args = ap.parse_args(argv)

    meta = json.loads((args.exits / "exits.json").read_text())
    source = meta["dataset"]["name"]
    model = refexit.load(D.model_dir(args.model), exits=args.exits / "exits.safetensors")
    src = D.load_dataset(source)
    tgt = D.load_dataset(args.target)
    L, drop = model.num_layers, args.max_drop / 100
    feats = lambda ds, s: F.extract(model, getattr(ds, s).texts, args.max_length, label=f"{ds.name}/{s}")  # noqa: E731
    src_out, src_y = E.LayerOutputs(model, feats(src, "dev")), src.dev.labels
    idx, tgt_y = target_split(tgt, "test", list(model.label_names))
    tgt_all = feats(tgt, "test")

    full_src = run(model, refexit.Static(L), src_out, src_y, None)[0]["accuracy"]
    fixed = pick_on(model, E.sweep_policies("max_prob", L, model.num_labels), src_out, src_y, full_src, drop, None)
    report = {"source": source, "target": f"{args.target} (positive/negative, test)", "texts": len(idx),
              "num_layers": L, "max_drop": drop, "source_dev_full_accuracy": full_src,
              "fixed": {"policy": repr(fixed["policy"]), "source_dev": fixed["dev"]}, "ceebert": {}, "orders": args.orders}
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(idx)) for _ in range(args.orders)]
    splits = [(E.LayerOutputs(model, subset(tgt_all, idx[o])), tgt_y[o]) for o in orders]   # [orders]
    report["full"] = run(model, refexit.Static(L), *splits[0], None)[0]
    report["fixed"]["target"] = run(model, fixed["policy"], *splits[0], None)[0]  # independent of the order
    fine = [refexit.MaxProb(t) for t in np.round(np.arange(0.5, 1.0, 0.005), 3)]
    fixed_src = [run(model, p, src_out, src_y, None)[0] for p in fine]
    fixed_tgt = [run(model, p, *splits[0], None)[0] for p in fine]
    report["ceebert"] = {}
    for batch in args.online_batch:
        cee = pick_on(model, [refexit.CeeBERT(o) for o in E.CEEBERT_COSTS], src_out, src_y, full_src, drop, batch)
        report["ceebert"][str(batch)] = {"picked_cost": cee["policy"].cost, "costs": []}
        for o in E.CEEBERT_COSTS:
            s_dev = run(model, refexit.CeeBERT(o), src_out, src_y, batch)[0]
            rows = [run(model, refexit.CeeBERT(o), out, y, batch)[0] for out, y in splits]
            # the fixed threshold with the same source-dev mean layers (what picking on the source would give)
            k = int(np.argmin([abs(f["mean_layers"] - s_dev["mean_layers"]) for f in fixed_src]))
            # the most accurate fixed threshold on the target within CeeBERT's target mean layers (needs labels)
            within = [j for j, f in enumerate(fixed_tgt) if f["mean_layers"] <= np.mean([r["mean_layers"] for r in rows])]
            b = max(within, key=lambda j: fixed_tgt[j]["accuracy"]) if within else None
            report["ceebert"][str(batch)]["costs"].append({
                "cost": o, "source_dev": s_dev, "target": rows,
                "matched_fixed": {"threshold": fine[k].threshold, "source_dev": fixed_src[k], "target": fixed_tgt[k]},
                "best_fixed_within_layers": None if b is None else {"threshold": fine[b].threshold,
                                                                     "target": fixed_tgt[b]}})
        print(f"ceebert online batch {batch}: cost {cee['policy'].cost} picked on {source} dev", file=sys.stderr)
    if args.check_c:
        rows = idx[orders[0]][:args.check_c]
        report["check_c"] = check_c(model, [tgt.test.texts[i] for i in rows], subset(tgt_all, rows), args.check_cost,
                                    args.online_batch[-1], args.max_length)
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


def check_c(model, texts, feats, cost, batch, max_length):
    """The compiled C on `texts` in batches of `batch` against the oracle's replay on their features."""
    import tempfile

    import codegen
    with tempfile.TemporaryDirectory() as d:
        cm = codegen.compile_model(model, refexit.CeeBERT(cost), Path(d), prefix="cee_shift", max_batch=batch)
        got = np.concatenate([cm.classify(model.tokenizer(texts[i:i + batch], max_length=max_length)).exit_layers
                              for i in range(0, len(texts), batch)])
        st = cm.bandit_state()
    pol = refexit.CeeBERT(cost)
    ref = E.simulate(model, pol, E.LayerOutputs(model, feats), batch=batch)
    return {"texts": len(texts), "batch": batch, "exit_agreement": float(np.mean(got == ref.exit_layers)),
            "near_threshold": int(np.sum(ref.margins < 1e-4)), "c_thresholds": [float(pol.arms[a]) for a in st["arm"]],
            "oracle_thresholds": pol.thresholds(), "same_counts": bool(np.array_equal(st["n"], pol.state()["n"]))}


def _mean_sd(rows, key):
    v = np.array([r[key] for r in rows], np.float64)
    return f"{v.mean() * (100 if key == 'accuracy' else 1):6.2f} ± {v.std() * (100 if key == 'accuracy' else 1):4.2f}"


def print_report(r):
    pc = lambda m: f"{100 * m['accuracy']:6.2f} {m['mean_layers']:5.2f}"             # noqa: E731
    print(f"\n{r['source']} exits on {r['target']}: {r['texts']} texts, L={r['num_layers']}; acc % and mean layers")
    print(f"full model: source dev {100 * r['source_dev_full_accuracy']:.2f}, target {pc(r['full'])}")
    print(f"evaluate's rule on source dev (fastest within {100 * r['max_drop']:g} pt): fixed {r['fixed']['policy'][:30]} "
          f"-> target {pc(r['fixed']['target'])}")
    for b, e in r["ceebert"].items():
        print(f"\nCeeBERT learning after every {b} sample(s) (target: mean ± sd over {r['orders']} orders; evaluate's "
              f"rule picks cost {e['picked_cost']})")
        print(f"{'cost':>6} | {'source dev':>12} | {'CeeBERT on target':>26} | {'same-source fixed thr':>30} | "
              f"{'best fixed on target (labels)':>24} | final thresholds (order 1)")
        for c in e["costs"]:
            t = c["target"]
            acc = np.array([x["accuracy"] for x in t]) * 100
            lay = np.array([x["mean_layers"] for x in t])
            mf, bf = c["matched_fixed"], c["best_fixed_within_layers"]
            print(f"{c['cost']:6.3f} | {pc(c['source_dev'])} | {acc.mean():6.2f}±{acc.std():4.2f} {lay.mean():5.2f}±{lay.std():4.2f} | "
                  f"{mf['threshold']:5.3f}: {pc(mf['source_dev'])} -> {pc(mf['target'])} | "
                  + (f"{bf['threshold']:5.3f}: {pc(bf['target'])}" if bf else f"{'-':>24}")
                  + f" | {t[0]['final_thresholds']}")
    if "check_c" in r:
        print(f"\ncompiled C vs oracle replay: {r['check_c']}")


if __name__ == "__main__":
    sys.exit(main())
