"""A markdown table of `refexit evaluate --sweep` reports side by side (docs/methods.md, FastBERT heads
and RomeBERT): per report, the full model and each policy's dev-picked point on the test split.

    python tools/exits_table.py out/eval-rotten_tomatoes-fastbert/evaluate-rotten_tomatoes.json \
        out/eval-rotten_tomatoes-mean_linear/evaluate-rotten_tomatoes.json [--policy norm_entropy,entropy]

The label of a report is its data set, head kind and objective (from the exits' exits.json, which
evaluate records under "training"). Columns: test accuracy, macro-F1, mean layers executed (exit
layer included), L / mean layers, FLOPs full / spent, and the dev-picked threshold. `--policy all`
lists every policy the report swept. A report written with `evaluate --sweep --wallclock N` adds the
compiled C's measured speed-up over the full model on the first N test texts, and that speed-up as a
share of L / mean layers and of the FLOPs ratio on those texts (from the report's "wallclock").
"""
from __future__ import annotations

import argparse
import json


def fmt_thr(params: dict) -> str:
    v = next(iter(params.values())) if params else ""
    return ",".join(f"{x:.4g}" for x in v) if isinstance(v, list) else (f"{v:.4g}" if isinstance(v, float) else str(v))


def row(ds, heads, what, m, wall=None) -> str:
    fl = (wall or {}).get("fraction_of_flops_ratio")
    w = "" if wall is None else (f" {wall['speedup']:.2f}x ({100 * wall['fraction_of_ideal']:.0f}%"
                                 + (f"; {100 * fl:.0f}%" if fl else "") + ") |" if wall else " |")
    return (f"| {ds} | {heads} | {what} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | "
            f"{m['mean_layers']:.2f} | {m['layer_speedup']:.2f}x | {m['flops_ratio']:.2f}x |{w}")


def table(paths, policies, split: str = "test") -> str:
    reports = [json.load(open(path)) for path in paths]
    timed = any("wallclock" in r for r in reports)
    out = [f"| data set | heads, objective | operating point ({split} split) | acc % | macro-F1 % | mean layers | "
           "L / mean | FLOPs full/spent |" + (" compiled C speed-up (of L / mean; of FLOPs) |" if timed else ""),
           "|---|---|---|---|---|---|---|---|" + ("---|" if timed else "")]
    for r in reports:
        tr = r.get("training", {})
        heads = f"{tr.get('head_kind', '?')}, {tr.get('objective', '?')}"
        walls = r.get("wallclock", {}).get("policies", {}) if timed else None
        out.append(row(r["dataset"], heads, "full model", r["full"][split], {} if timed else None))
        for name in (list(r["policies"]) if policies == ["all"] else policies):
            e = r["policies"].get(name)
            if e is None:
                continue
            pk = e.get("picked")
            if pk:
                out.append(row(r["dataset"], heads, f"{name} {fmt_thr(pk['params'])} (dev-picked)", pk[split],
                               walls.get(name, {}) if timed else None))
            else:
                out.append(f"| {r['dataset']} | {heads} | {name}: no threshold within the drop on dev | | | | | |"
                           + (" |" if timed else ""))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate-DATA.json files written with --sweep")
    ap.add_argument("--policy", default="norm_entropy,entropy,max_prob", help="policies to list, comma-separated, or 'all'")
    ap.add_argument("--split", default="test", choices=("dev", "test"), help="split of the numbers (default test)")
    a = ap.parse_args(argv)
    print(table(a.reports, [p.strip() for p in a.policy.split(",") if p.strip()], a.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
