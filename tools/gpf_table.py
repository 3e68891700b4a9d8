"""The Global Past-Future table of docs/methods.md from `refexit evaluate --sweep` reports.

    python tools/gpf_table.py out/eval-*/evaluate-*.json [--policies entropy,max_prob,patience,de3,gpf]
    python tools/gpf_table.py --per-layer out/exits-*-gpf-seed0/exits.json

One markdown row per data set and policy: the test split at the threshold picked on dev (the fastest
within --max-drop of the full model's dev accuracy), plus the full model; for gpf also the fastest
test point within that drop of the full model's test accuracy (marked "test-best", picked with test
labels). FLOPs are the report's full / spent ratio (layers + heads + the policy's own computation:
for gpf its pooler, projection, gate and imitations).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def label(name: str, params: dict) -> str:
    for key in ("threshold", "count", "k", "cost"):
        v = params.get(key)
        if v is not None:
            return f"{name} {v:.4g}" if isinstance(v, float) else f"{name} {v}"
    return name


def row(ds, name, m, note=""):
    return (f"| {ds} | {name}{note} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | "
            f"{m['mean_layers']:.2f} | {m['flops_ratio']:.2f}x |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--policies", default="static,entropy,max_prob,patience,gpf")
    ap.add_argument("--per-layer", action="store_true",
                    help="the reports are exits.json files: dev accuracy per layer of the GPF combination "
                         "and of the exit heads")
    args = ap.parse_args(argv)
    if args.per_layer:
        print("| data set | dev accuracy % per layer: GPF combination / exit head (layer L: the final classifier) |")
        print("|---|---|")
        for path in args.reports:
            info = json.loads(path.read_text())
            cells = [f"{100 * g['accuracy']:.1f} / {100 * h['accuracy']:.1f}"
                     for g, h in zip(info["gpf_dev_per_layer"], info["dev_per_layer"])]
            pool = info.get("gpf_pool", "cls")
            name = info.get('dataset', {}).get('name', path.parent.name) + ("" if pool == "cls" else f" (pool {pool})")
            print(f"| {name} | {' · '.join(cells)} |")
        return 0
    print("| data set | method (test split) | acc % | macro-F1 % | mean layers | FLOPs full/spent |")
    print("|---|---|---|---|---|---|")
    for path in args.reports:
        rep = json.loads(path.read_text())
        ds = rep.get("dataset") or path.stem.replace("evaluate-", "")
        print(row(ds, "full model", rep["full"]["test"]))
        for name in args.policies.split(","):
            entry = rep["policies"].get(name)
            if entry is None:
                continue
            pick = entry.get("picked")
            if pick:
                print(row(ds, label(name, pick["params"]), pick["test"], " (dev-picked)"))
            else:
                print(f"| {ds} | {name} | nothing within {100 * rep['max_drop']:g} point on dev | | | |")
            best = entry.get("best_on_test")
            if name == "gpf" and best and best is not pick and best.get("index") != (pick or {}).get("index"):
                print(row(ds, label(name, best["params"]), best["test"], " (test-best)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
