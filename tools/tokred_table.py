"""Markdown table of the token-reduction sweeps in evaluate-DATA.json files (docs/methods.md).

    python tools/tokred_table.py out/tokred-*/evaluate-*.json

Per data set: the unreduced full model, its policies and each length configuration alone (full
depth) and with each policy, at the threshold picked on dev (fewest mean FLOPs within max_drop of
the unreduced full model's dev accuracy): test accuracy, macro-F1, mean layers and the FLOPs ratio
(the unreduced full model's FLOPs / the FLOPs spent, heads included).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refexit.train.tokred import table_rows  # noqa: E402


def main(paths) -> int:
    for path in paths:
        r = json.loads(Path(path).read_text())
        if "token_reduction" not in r:
            continue
        print(f"\n**{r['dataset']}** (test {r['sizes']['test']} texts):\n")
        print("| tokens | policy (picked on dev) | accuracy | macro-F1 | mean layers | FLOPs ratio |")
        print("|---|---|---|---|---|---|")
        for cfg, pol, m in table_rows(r["full"], r["policies"], r["token_reduction"], r["max_drop"]):
            if m is None:
                print(f"| {cfg} | {pol} | | | | |")
            else:
                print(f"| {cfg} | `{pol}` | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | "
                      f"{m['mean_layers']:.2f} | {m['flops_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
