"""Where an early-exit point's compiled wall-clock goes, against the ideal `L / mean layers`.

    python tools/exit_wallclock.py out/rt-ft-full --exits out/rt-ft-full-exits --data rotten_tomatoes \
        --policy de3 --threshold 0.5 [--texts 1000] [--repeat 7] [--threads 1]

Times the compiled C (one library per policy, interleaved rounds, medians) on the first N test
texts at full depth, at Static(1) and Static(L-1), and at the given policy, then explains the
measured speed-up with a cost model built from those timings alone:

  per-layer cost s   = (t[Static(L-1)] - t[Static(1)]) / (L - 2)     per text, at these texts' lengths
  fixed cost c       = t[Static(1)] - s                               (embedding, binding, head)
  last layer l       = t[full] - t[Static(L-1)]                       (the full model's final layer)

When the final classifier reads [CLS] only, the compiled full model runs its last layer's query,
attention output and FFN for the [CLS] row alone (`cls_only` in templates/model.c.j2), so l is a
fraction of s and the full model costs less than L layers. The policy's predicted time weighs each
text by its length (the cost of a layer is linear in the tokens, the attention aside):

  predicted = c + s * sum_i len_i * (e_i if e_i < L else L - 1 + l / s) / sum_i len_i

It prints the measured speed-up as a share of L / mean layers, of the FLOPs ratio, and of the
speed-up the cost model predicts (100% = no overhead beyond the layers the texts run). Not a test:
run it on a quiet machine (`uptime`), pinned (`taskset -c 1`), and quote medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import refexit  # noqa: E402
from refexit.cli import data_args, policy_args  # noqa: E402
from refexit.policies import Static  # noqa: E402


def median_seconds(cm, enc, repeat: int) -> float:
    cm.classify(enc)                                   # warm
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        cm.classify(enc)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--exits", required=True)
    ap.add_argument("--data", required=True, help="a built-in data set name (its test split is timed)")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the minimum of their medians)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "exit_wallclock")
    policy_args.add_policy_args(ap)
    args = ap.parse_args(argv)
    import codegen

    model = refexit.load(args.model_dir, exits=args.exits)
    L = model.num_layers
    policy = policy_args.policy_from_args(args, L)
    if policy is None or L < 3:
        ap.error("give --policy (and its settings), on a model of 3 layers or more")
    ds = data_args.load(argparse.Namespace(data=args.data), quiet=True)
    texts = ds.test.texts[:args.texts]
    pairs = ds.test.pairs[:args.texts] if ds.test.pairs is not None else None
    enc = model.tokenizer(texts, pairs, max_length=args.max_length)
    lens = enc.attention_mask.sum(1)                                   # [N] real tokens
    points = {"full": Static(L), "static1": Static(1), f"static{L - 1}": Static(L - 1), "policy": policy}
    libs = {}
    for name, pol in points.items():
        key = name if name != "policy" else pol.name
        cm = codegen.compile_model(model, pol, args.build / key, prefix="xw_" + key, max_batch=256)
        cm.set_threads(args.threads)
        if name == "policy":
            cm.set_policy(pol)
        libs[name] = cm
    t = {k: [] for k in libs}
    for _ in range(args.rounds):                                       # interleaved
        for k, cm in libs.items():
            t[k].append(median_seconds(cm, enc, args.repeat) / len(texts))
    T = {k: min(v) for k, v in t.items()}
    res = libs["policy"].classify(enc)
    e = np.asarray(res.exit_layers)                                    # [N] 1..L
    s = (T[f"static{L - 1}"] - T["static1"]) / (L - 2)
    c = T["static1"] - s
    last = T["full"] - T[f"static{L - 1}"]
    layers_w = np.where(e < L, e, L - 1 + last / s)                    # [N] layer-equivalents run
    predicted = c + s * float((lens * layers_w).sum() / lens.sum())
    measured = T["full"] / T["policy"]
    ideal = L / e.mean()
    print(f"{len(texts)} test texts of {args.data}, {args.threads} thread(s), {policy!r}")
    print("ms/text (min over rounds of the median of --repeat): " +
          ", ".join(f"{k} {1e3 * v:.3f}" for k, v in T.items()))
    print(f"per layer {1e3 * s:.3f} ms, fixed {1e3 * c:.3f} ms, the full model's last layer {1e3 * last:.3f} ms "
          f"({last / s:.2f} of a layer): the full model costs {L - 1 + last / s:.2f} layers")
    print(f"exit layers 1..{L}: {np.bincount(e, minlength=L + 1)[1:].tolist()}; mean {e.mean():.3f}, "
          f"weighted by tokens {(lens * e).sum() / lens.sum():.3f}")
    print(f"measured speed-up {measured:.3f}x = {100 * measured / ideal:.1f}% of L / mean layers ({ideal:.3f}x), "
          f"{100 * measured / res.flops_ratio:.1f}% of the FLOPs ratio ({res.flops_ratio:.3f}x), "
          f"{100 * measured / (T['full'] / predicted):.1f}% of the cost model's {T['full'] / predicted:.3f}x "
          f"(predicted {1e3 * predicted:.3f} ms/text, measured {1e3 * T['policy']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
