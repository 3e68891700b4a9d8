"""The CascadeBERT comparison table of docs/methods.md from `refexit evaluate --sweep --cascade K` JSON.

    python tools/cascade_table.py OUT/evaluate-rotten_tomatoes.json OUT/evaluate-tweets.json ... [--at 0.7,0.9]

One markdown table: per data set, test accuracy, macro-F1, mean layers executed (a cascade counts
every member a text went through), full / spent FLOPs, and the share answered by the first member,
for the full model, Static(2), the dev-picked max_prob and entropy points, every cascade's
dev-picked point (fastest within --max-drop of the full model on dev, as `evaluate` picks), and
cascade2 at the hand-off thresholds of --at (the nearest swept ones). --by-objective names each report's
data set with the objective its exits were trained with (e.g. to compare exits with and without
CascadeBERT's ranking loss).
"""
from __future__ import annotations

import argparse
import json


def row(ds, what, m, first=None):
    f = "" if first is None else f"{100 * first:.1f}%"
    return (f"| {ds} | {what} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | {m['mean_layers']:.2f} | "
            f"{m['flops_ratio']:.2f}x | {f} |")


def table(paths, at, by_objective: bool = False) -> str:
    out = ["| data set | method (test split) | acc % | macro-F1 % | mean layers | FLOPs full/spent | 1st member answers |",
           "|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.load(open(path))
        ds, pol, casc = r["dataset"], r["policies"], r.get("cascades", {})
        if by_objective:
            ds = f"{ds} ({r.get('training', {}).get('objective', '?')})"
        out.append(row(ds, "full model", r["full"]["test"]))
        static2 = next((p for p in pol.get("static", {}).get("points", []) if p["params"]["k"] == 2), None)
        if static2:
            out.append(row(ds, "Static(2)", static2["test"]))
        for name in ("max_prob", "entropy"):
            pk = pol.get(name, {}).get("picked")
            if pk:
                thr = pk["params"]["threshold"]
                out.append(row(ds, f"{name} {thr if isinstance(thr, list) else round(thr, 4)} (dev-picked)", pk["test"]))
        for name, e in casc.items():
            pk = e.get("picked")
            if pk:
                out.append(row(ds, f"{name} >{pk['params']['threshold']:.4g} (dev-picked, T={e['temperature']:.3g})",
                               pk["test"], pk["test"]["answered_by_first"]))
        for t in at:
            pts = casc.get("cascade2", {}).get("points", [])
            if pts:
                p = min(pts, key=lambda q: abs(q["params"]["threshold"] - t))
                out.append(row(ds, f"cascade2 >{p['params']['threshold']:.4g}", p["test"], p["test"]["answered_by_first"]))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate-DATA.json files written with --sweep --cascade 2")
    ap.add_argument("--at", default="0.7,0.9", help="cascade2 thresholds to list (default 0.7,0.9)")
    ap.add_argument("--by-objective", action="store_true", help="add the exits' training objective to the data set")
    a = ap.parse_args(argv)
    print(table(a.reports, [float(x) for x in a.at.split(",") if x.strip()], a.by_objective))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
