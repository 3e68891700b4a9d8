"""The compiled CascadeBERT cascade on the real model: C vs oracle, and wall-clock against the full model.

    python tools/check_cascade_real.py --exits out/exits-rotten_tomatoes-mean_linear-deebert-seed0 \\
        --data rotten_tomatoes --k 2 --threshold 0.9 --temperature 1.07 --texts 400 --build build/cascade-rt

Cascade.truncation(model, k, threshold) on the first N test texts: the oracle and the compiled
cascade (codegen.compile_cascade; one thread per member) must pick the same member and label except
within 1e-4 of the threshold; prints the agreement, the largest logit difference, accuracy, mean
layers, the FLOPs ratio, and the seconds per text of the compiled cascade and of the compiled full
model (median of 5 runs, interleaved, one padded batch each).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import codegen
import refexit
from refexit import data


def median_seconds(fns, texts: int, repeat: int = 5) -> list[float]:
    """Seconds per text of each callable, median of `repeat` runs, the callables interleaved run by run
    (a change of machine load hits them alike)."""
    for fn in fns:                                         # warm-up
        fn()
    runs = [[] for _ in fns]
    for _ in range(repeat):
        for r, fn in zip(runs, fns):
            t = time.perf_counter()
            fn()
            r.append(time.perf_counter() - t)
    return [sorted(r)[repeat // 2] / texts for r in runs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exits", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, help="of the truncated member (default: the model's)")
    ap.add_argument("--texts", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", type=Path, default=Path("build/cascade-check"))
    a = ap.parse_args(argv)
    m = refexit.load(data.model_dir("all-MiniLM-L6-v2"), exits=a.exits / "exits.safetensors" if a.exits.is_dir() else a.exits)
    ds = data.load_dataset(a.data)
    texts, y = ds.test.texts[:a.texts], np.asarray(ds.test.labels[:a.texts])
    enc = m.tokenizer(texts, max_length=a.max_length)
    casc = refexit.Cascade.truncation(m, a.k, a.threshold, a.temperature)
    ref = casc.classify(enc)
    cc = codegen.compile_cascade(casc, a.build, prefix="check", max_batch=64)
    for member in cc.members:
        member.set_threads(1)
    got = cc.classify(enc)
    same = got.members == ref.members
    near = ref.margins < 1e-4
    print(f"{casc!r} on {len(texts)} {a.data} test texts")
    print(f"C vs oracle: same member {np.mean(same):.4f}, same label {np.mean(got.labels == ref.labels):.4f}, "
          f"{int(near.sum())} near the threshold, largest logit difference "
          f"{float(np.abs(got.logits - ref.logits)[same].max()):.2g}")
    print(f"accuracy {np.mean(got.labels == y):.4f}, answered by the truncation {np.mean(got.members == 0):.3f}, "
          f"mean layers {got.mean_layers:.2f}, FLOPs full/spent {got.flops_ratio:.2f}x")
    full = codegen.load_compiled(a.build / "check1")          # the full-depth member's library, own handle
    full.set_threads(1)
    t_full, t_casc = median_seconds([lambda: full.classify(enc), lambda: cc.classify(enc)], len(texts))
    print(f"compiled full model {1e3 * t_full:.3f} ms/text (accuracy {np.mean(full.classify(enc).labels == y):.4f}), "
          f"compiled cascade {1e3 * t_casc:.3f} ms/text: {t_full / t_casc:.2f}x (L / mean layers "
          f"{m.num_layers / got.mean_layers:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
