"""The SmartBERT rows of docs/methods.md from `refexit evaluate --sweep` reports (tools/smartbert_real.sh).

    python tools/smartbert_table.py out/gates-*/evaluate-*.json
Per data set (test split): the full model, DeeBERT's entropy exit at its dev-picked threshold, the
gates alone (S = 0: no exit), SmartBERT at its dev-picked threshold; accuracy, macro-F1, mean layers
run, L / mean, FLOPs full / spent, and the skip rate per layer (share of the samples reaching a layer
whose gate skipped it)."""
import argparse
import json


def row(name, what, m, L):
    skip = " ".join(f"{r:.2f}" for r in m.get("skip_rate", [])) or ""
    return (f"| {name} | {what} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | {m['mean_layers']:.2f} | "
            f"{L / m['mean_layers'] if m['mean_layers'] else float('inf'):.2f}x | {m['flops_ratio']:.2f}x | {skip} |")


def main(paths):
    print("| data set | method (test split) | acc % | macro-F1 % | mean layers run | L / mean | FLOPs full/spent "
          "| skip rate, layers 1..L |")
    print("|---|---|---|---|---|---|---|---|")
    for p in paths:
        r = json.load(open(p))
        L, d = r["num_layers"], r["dataset"]
        print(row(d, "full model", r["full"]["test"], L))
        ent = r["policies"].get("entropy", {})
        if ent.get("picked"):
            print(row(d, f"entropy {ent['picked']['params']['threshold']:.4g} (dev-picked)", ent["picked"]["test"], L))
        sb = r["policies"].get("smartbert")
        if not sb:
            print(f"| {d} | smartbert: {r['skipped'].get('smartbert', 'absent')} |")
            continue
        alone = sb["points"][0]
        print(row(d, "gates alone (S = 0, no exit)", alone["test"], L))
        if sb.get("picked"):
            pk = sb["picked"]
            print(row(d, f"smartbert S={pk['params']['threshold']:.4g} (dev-picked)", pk["test"], L))
        else:
            print(f"| {d} | smartbert: no threshold within {100 * r['max_drop']:g} pt of the full model on dev |")
        if sb.get("best_on_test"):
            bt = sb["best_on_test"]
            print(row(d, f"smartbert S={bt['params']['threshold']:.4g} (test-best)", bt["test"], L))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate-DATA.json files written with --sweep")
    main(ap.parse_args().reports)
