"""The compiled DACT-BERT policy on the real model: C vs oracle, and wall-clock against the full model.

    python tools/check_dact_real.py --exits out/exits-sms_spam-mean_linear-dact-tau0.01-seed0 \\
        --data sms_spam --texts 300 --build build/dact-check

refexit.DACT() on the first N test texts: Model.classify (fp32 oracle) and the compiled library (one
thread, one padded batch) must give the same exit layer and label except where the oracle's halting
score is within 1e-4 of 0; prints the agreement, the largest difference of the answers ln a_n,
accuracy, mean layers, the FLOPs ratio, and the seconds per text of the compiled DACT library and of
the compiled full model (median of 5 runs, interleaved).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import codegen
import refexit
from refexit import data

from check_cascade_real import median_seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exits", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", type=Path, default=Path("build/dact-check"))
    a = ap.parse_args(argv)
    m = refexit.load(data.model_dir("all-MiniLM-L6-v2"), exits=a.exits / "exits.safetensors" if a.exits.is_dir() else a.exits)
    ds = data.load_dataset(a.data)
    texts, y = ds.test.texts[:a.texts], np.asarray(ds.test.labels[:a.texts])
    enc = m.tokenizer(texts, max_length=a.max_length)
    ref = m.classify(enc, refexit.DACT())
    cm = codegen.compile_model(m, refexit.DACT(), a.build / "dact", prefix="dact_check", max_batch=64)
    full = codegen.compile_model(m, None, a.build / "full", prefix="full_check", max_batch=64)
    cm.set_threads(1)
    full.set_threads(1)
    got = cm.classify(enc)
    same = got.exit_layers == ref.exit_layers
    near = ref.margins < 1e-4
    print(f"DACT() on {len(texts)} {a.data} test texts ({a.exits})")
    print(f"C vs oracle: same exit layer {int(same.sum())} / {len(texts)}, same label "
          f"{int(np.sum(got.labels == ref.labels))} / {len(texts)}, {int(near.sum())} within 1e-4 of the halting "
          f"test, largest answer difference {float(np.abs(got.logits - ref.logits)[same].max()):.2g}")
    print(f"accuracy {np.mean(got.labels == y):.4f} (oracle {np.mean(ref.labels == y):.4f}), mean layers "
          f"{got.mean_layers:.2f} (oracle {ref.mean_layers:.2f}), FLOPs full/spent {got.flops_ratio:.2f}x, exits at "
          f"layers 1..L {np.bincount(got.exit_layers, minlength=m.num_layers + 1)[1:].tolist()}")
    t_full, t_dact = median_seconds([lambda: full.classify(enc), lambda: cm.classify(enc)], len(texts))
    print(f"compiled full model {1e3 * t_full:.3f} ms/text, compiled DACT {1e3 * t_dact:.3f} ms/text: "
          f"{t_full / t_dact:.2f}x (L / mean layers {m.num_layers / got.mean_layers:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
