"""Token reduction compiled on the real model: C vs oracle, and wall-clock against the unreduced library.

    python tools/check_tokred_real.py --exits /work/main/out/exits-bbc_news-mean_linear-deebert-seed0 \\
        --data bbc_news --rate 0.8 --texts 200 --build build/tokred-bbc

On the first N test texts: the float32 oracle with the length configuration (geometric `--rate`,
or `--keep R1,...,RL`) and the compiled library with the same configuration must give the same
label and exit layer except where the oracle's margin (decision or token selection) is below 1e-4;
prints the agreement, the largest logit difference, accuracy, FLOPs ratio, and the seconds per text
of the compiled library with and without the reduction (median of 5 runs, interleaved, one padded
batch each, one thread), at the full depth and with `--policy entropy --threshold S` when given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import codegen  # noqa: E402
import refexit  # noqa: E402
from refexit import data  # noqa: E402
from check_cascade_real import median_seconds  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: refexit data path all-MiniLM-L6-v2)")
    ap.add_argument("--exits", required=True)
    ap.add_argument("--data", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=float)
    g.add_argument("--keep")
    ap.add_argument("--threshold", type=float, help="also an entropy exit at this threshold")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", default="build/tokred-real")
    args = ap.parse_args(argv)
    folder = args.model or str(data.model_dir("all-MiniLM-L6-v2"))
    model = refexit.load(folder, exits=args.exits)
    L = model.num_layers
    tr = refexit.TokenReduction.geometric(args.rate, L) if args.rate is not None else \
        refexit.TokenReduction([float(v) for v in args.keep.split(",")])
    red = model.with_token_reduction(tr)
    ds = data.load_dataset(args.data)
    texts, y = ds.test.texts[:args.texts], np.asarray(ds.test.labels[:args.texts])
    enc = model.tokenizer(texts, max_length=args.max_length)
    n = np.asarray(enc.attention_mask).sum(axis=1)
    print(f"{args.data}: {len(texts)} test texts, mean {n.mean():.1f} tokens; {tr!r} keeps "
          f"{np.mean([tr.counts(int(k))[-1] for k in n]):.1f} at layer {L}")
    policies = [refexit.Static(L)] + ([refexit.Entropy(args.threshold)] if args.threshold is not None else [])
    build = Path(args.build)
    for pol in policies:
        cm_red = codegen.compile_model(red, pol, build / f"{pol.name}-keep", prefix=f"tk_{pol.name}_keep",
                                       max_batch=256)
        cm_all = codegen.compile_model(model, pol, build / f"{pol.name}-all", prefix=f"tk_{pol.name}_all",
                                       max_batch=256)
        for cm in (cm_red, cm_all):
            cm.set_threads(1)
        ref = red.classify(enc, pol)
        got = cm_red.classify(enc)
        near = ref.margins < 1e-4
        differ = (got.labels != ref.labels) | (got.exit_layers != ref.exit_layers)
        same = got.exit_layers == ref.exit_layers
        plain = cm_all.classify(enc)                       # the unreduced library (= oracle: test_codegen_props)
        t_red, t_all = median_seconds([lambda: cm_red.classify(enc), lambda: cm_all.classify(enc)], len(texts))
        print(f"{pol!r}: C = oracle on {int((~differ).sum())}/{len(texts)} texts ({int(near.sum())} near, "
              f"{int((differ & ~near).sum())} differ beyond), max |logit diff| "
              f"{float(np.max(np.abs(got.logits[same] - ref.logits[same]))):.2e}")
        print(f"  accuracy {100 * np.mean(ref.labels == y):.2f}% (unreduced {100 * np.mean(plain.labels == y):.2f}%), "
              f"mean layers {ref.mean_layers:.2f} ({plain.mean_layers:.2f}), FLOPs ratio {ref.flops_ratio:.2f}")
        print(f"  compiled, 1 thread: {1e3 * t_red:.3f} ms/text with the reduction, {1e3 * t_all:.3f} without: "
              f"speed-up {t_all / t_red:.2f}x (FLOPs {float(np.sum(plain.flops) / np.sum(ref.flops)):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
