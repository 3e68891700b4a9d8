"""The DACT-BERT table of docs/methods.md from `refexit evaluate --sweep` JSON files.

    python tools/dact_table.py OUT/*/evaluate-*.json [--max-drop 1.0]

DACT has no threshold: each exits folder trained with `train-exits --objective dact --dact-tau T` is
one operating point. For every data set, one markdown table row per report with the dact policy
(its tau and whether the exit heads were trained with the units, read from the exits.json beside
the exits file), the full model, and, from the reports that swept the other policies too, their
dev-picked points (fastest within --max-drop points of the full model's dev accuracy, as `evaluate`
picks). The DACT row marked "dev-picked" is the fastest tau within --max-drop on dev among the
reports of the same heads mode, the same rule across taus.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(ds, what, m, dev=None):
    hist = " ".join(str(x) for x in m["exit_histogram"])
    d = "" if dev is None else f"{100 * dev['accuracy']:.2f} / {dev['mean_layers']:.2f}"
    return (f"| {ds} | {what} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | {m['mean_layers']:.2f} | "
            f"{m['layer_speedup']:.2f}x | {m['flops_ratio']:.2f}x | {hist} | {d} |")


def setting(params: dict) -> str:
    """The swept setting of a policy point: its threshold, count, layer or cost."""
    for key in ("threshold", "count", "k", "cost"):
        if key in params:
            v = params[key]
            return " ".join(f"{x:.4g}" for x in v) if isinstance(v, list) else f"{v:.4g}"
    return ""


def tau_of(report) -> tuple[float, str]:
    info = json.loads((Path(report["exits"]).parent / "exits.json").read_text())
    cfg = info.get("train_config", {})
    return float(cfg.get("dact_tau", float("nan"))), "joint" if cfg.get("dact_train_heads", True) else "frozen heads"


def table(paths, max_drop: float) -> str:
    out = ["| data set | policy (test split) | acc % | macro-F1 % | mean layers | L / mean | FLOPs full/spent | "
           "exits at layers 1..L | dev acc % / layers |", "|---|---|---|---|---|---|---|---|---|"]
    by_ds: dict = {}
    for p in paths:
        r = json.loads(Path(p).read_text())
        by_ds.setdefault(r["dataset"], []).append(r)
    for ds, reports in by_ds.items():
        full = reports[0]["full"]
        out.append(row(ds, "full model", full["test"], full["dev"]))
        for r in reports:
            if len(r["policies"]) > 1:
                for name, e in r["policies"].items():
                    if name != "dact" and e.get("picked"):
                        pk = e["picked"]
                        out.append(row(ds, f"{name} {setting(pk['params'])} (dev-picked, DeeBERT heads)", pk["test"],
                                       pk["dev"]))
        dact = sorted(((tau_of(r), r["policies"]["dact"]["points"][0]) for r in reports if "dact" in r["policies"]),
                      key=lambda x: (x[0][1], x[0][0]))
        for mode in ("joint", "frozen heads"):
            pts = [(t, pt) for (t, m), pt in dact if m == mode]
            ok = [(t, pt) for t, pt in pts if pt["dev"]["accuracy"] >= full["dev"]["accuracy"] - max_drop / 100 - 1e-12]
            best = min(ok, key=lambda x: (x[1]["dev"]["mean_layers"], -x[1]["dev"]["accuracy"]))[0] if ok else None
            for t, pt in pts:
                mark = " (dev-picked)" if t == best else ""
                out.append(row(ds, f"DACT tau {t:g}, {mode}{mark}", pt["test"], pt["dev"]))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate-DATA.json files (with the dact policy)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="dev accuracy points a pick may lose (default 1)")
    a = ap.parse_args(argv)
    print(table(a.reports, a.max_drop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
