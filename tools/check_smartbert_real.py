"""SmartBERT compiled on the real model: the C's layers run, exits and FLOPs vs the oracle, and wall-clock.

    python tools/check_smartbert_real.py --exits out/gates-sms_spam --data sms_spam --threshold 0.35 \\
        --texts 200 --build build/smartbert-sms

On the first N test texts: the float32 oracle and the library compiled for `smartbert` at entropy
threshold S (gates at 1/2) must give the same label, exit layer and layers run except where the
oracle's margin (entropy or gate) is below 1e-4; prints the agreement, the mean layers run, the
FLOPs ratio (C's and the oracle's), and the seconds per text of the compiled smartbert, entropy (the
same S, no gates) and full-depth libraries (median of 5 runs, interleaved, one padded batch each,
one thread).
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
    ap.add_argument("--exits", required=True, help="an exits folder with skip gates (refexit train-gates)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--threshold", type=float, required=True, help="the entropy threshold S")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", default="build/smartbert-real")
    args = ap.parse_args(argv)
    folder = args.model or str(data.model_dir("all-MiniLM-L6-v2"))
    model = refexit.load(folder, exits=args.exits)
    L = model.num_layers
    ds = data.load_dataset(args.data)
    texts, y = ds.test.texts[:args.texts], np.asarray(ds.test.labels[:args.texts])
    enc = model.tokenizer(texts, max_length=args.max_length)
    build = Path(args.build)
    libs = {}
    for pol in (refexit.SkipEntropy(args.threshold), refexit.Entropy(args.threshold), refexit.Static(L)):
        libs[pol.name] = cm = codegen.compile_model(model, pol, build / pol.name, prefix=f"sbr_{pol.name}",
                                                    max_batch=256)
        cm.set_threads(1)
    pol = refexit.SkipEntropy(args.threshold)
    ref = model.classify(enc, pol)
    got = libs["smartbert"].classify(enc)
    near = ref.margins < 1e-4
    differ = (got.labels != ref.labels) | (got.exit_layers != ref.exit_layers) | (got.layers_run != ref.layers_run)
    same = ~differ
    print(f"{args.data}: {len(texts)} test texts; {pol!r}: C = oracle (label, exit layer, layers run) on "
          f"{int(same.sum())}/{len(texts)} texts ({int(near.sum())} near a threshold, "
          f"{int((differ & ~near).sum())} differ beyond), FLOPs equal on {int(np.sum(got.flops[same] == ref.flops[same]))}"
          f"/{int(same.sum())} of those, max |logit diff| {float(np.max(np.abs(got.logits[same] - ref.logits[same]))):.2e}")
    print(f"  accuracy {100 * np.mean(got.labels == y):.2f}% (oracle {100 * np.mean(ref.labels == y):.2f}%), "
          f"mean layers run {got.mean_layers:.3f} (oracle {ref.mean_layers:.3f}; mean exit layer "
          f"{np.mean(got.exit_layers):.3f}), FLOPs full/spent {got.flops_ratio:.3f} (oracle {ref.flops_ratio:.3f})")
    ent = libs["entropy"].classify(enc)
    t_sb, t_ent, t_full = median_seconds([lambda n=n: libs[n].classify(enc) for n in ("smartbert", "entropy", "static")],
                                         len(texts))
    print(f"  compiled, 1 thread: smartbert {1e3 * t_sb:.3f} ms/text ({t_full / t_sb:.2f}x the full model; ideal "
          f"L / mean layers run {got.layer_speedup:.2f}x), entropy {1e3 * t_ent:.3f} ms/text ({t_full / t_ent:.2f}x; "
          f"ideal {ent.layer_speedup:.2f}x, accuracy {100 * np.mean(ent.labels == y):.2f}%), full {1e3 * t_full:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
