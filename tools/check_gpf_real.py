"""The compiled Global Past-Future policy on the real model: C vs the float64 oracle on real texts.

    python tools/check_gpf_real.py --exits out/exits-bbc_news-mean_linear-deebert-gpf-seed0 \\
        --data bbc_news --threshold 0.05 --texts 200 --build build/gpf-check

GlobalPastFuture(threshold) on the first N test texts: the compiled library (fp32, one thread) and
the float64 oracle must exit at the same layer with the same label except where the oracle's
entropy is within 1e-4 of the threshold; prints the agreement, the near-threshold count, the largest
logit difference at equal exits, mean layers and the FLOPs ratio of both (the same counting).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import codegen
import refexit
from refexit import data

NEAR = 1e-4


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exits", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", type=Path, default=Path("build/gpf-check"))
    a = ap.parse_args(argv)
    m = refexit.load(data.model_dir("all-MiniLM-L6-v2"),
                     exits=a.exits / "exits.safetensors" if a.exits.is_dir() else a.exits)
    ds = data.load_dataset(a.data)
    texts, y = ds.test.texts[:a.texts], np.asarray(ds.test.labels[:a.texts])
    enc = m.tokenizer(texts, max_length=a.max_length)
    pol = refexit.GlobalPastFuture(a.threshold)
    ref = m.astype(np.float64).classify(enc, pol)
    cm = codegen.compile_model(m, pol, a.build, prefix="gpf_check", max_batch=64)
    cm.set_threads(1)
    got = cm.classify(enc)
    near = ref.margins < NEAR
    differ = (got.exit_layers != ref.exit_layers) | (got.labels != ref.labels)
    same = got.exit_layers == ref.exit_layers
    print(f"{len(texts)} {a.data} test texts, {pol!r}: exit layer and label agree on {int((~differ).sum())}; "
          f"{int(near.sum())} within {NEAR} of the threshold ({int((differ & near).sum())} of them differ); "
          f"{int((differ & ~near).sum())} differ away from it")
    if same.any():
        print(f"largest |logit C - oracle| at equal exits: {np.max(np.abs(got.logits[same] - ref.logits[same])):.2e}")
    for name, r in (("oracle", ref), ("C", got)):
        print(f"{name:>6}: accuracy {100 * np.mean(r.labels == y):.2f}%  mean layers {r.mean_layers:.2f}  "
              f"FLOPs full/spent {r.flops_ratio:.2f}x")
    return 0 if not (differ & ~near).any() else 1


if __name__ == "__main__":
    raise SystemExit(main())
