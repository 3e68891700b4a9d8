"""Compiled C against the oracle for trained exits on the real model (e.g. FastBERT heads).

    python tools/check_exits_real.py --exits out/exits-rotten_tomatoes-fastbert-fastbert-seed0 \\
        --data rotten_tomatoes --policy norm_entropy --threshold 0.3 --texts 300 --build build/check-fastbert

The first N test texts of the data set, classified by Model.classify (float32 oracle) and by the
compiled library (fp32, this machine's ISA, one padded batch): the number with the same exit layer
and label, the largest logit difference at the exit, how many the oracle decided within 1e-4 of the
threshold, accuracy and mean layers of both.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import codegen
import refexit
from refexit import data
from refexit.policies import make_policy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exits", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--policy", default="norm_entropy")
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--build", type=Path, default=Path("build/check-exits"))
    a = ap.parse_args(argv)
    model = refexit.load(data.model_dir("all-MiniLM-L6-v2"), exits=a.exits)
    split = data.load_dataset(a.data).test
    texts, y = split.texts[:a.texts], np.asarray(split.labels[:a.texts])
    policy = make_policy(a.policy, a.threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        enc = model.tokenizer(texts, max_length=a.max_length)
        want = model.classify(enc, policy)
        cm = codegen.compile_model(model, policy, a.build, prefix="check", max_length=a.max_length)
        got = cm.classify(enc)
    same = (got.exit_layers == want.exit_layers) & (got.labels == want.labels)
    diff = float(np.abs(got.logits[same] - want.logits[same]).max()) if same.any() else float("nan")
    near = int(np.sum(want.margins < 1e-4))
    print(f"{a.data}, first {len(texts)} test texts, {policy!r}: C = oracle (exit layer and label) for "
          f"{int(same.sum())} / {len(texts)}; largest |logit difference| {diff:.2g}; oracle margin < 1e-4: {near}")
    for name, r in (("oracle", want), ("C", got)):
        print(f"  {name}: accuracy {100 * np.mean(r.labels == y):.2f}%, mean layers {r.mean_layers:.2f}, exits "
              f"per layer {np.bincount(r.exit_layers, minlength=model.num_layers + 1)[1:].tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
