"""Accuracy vs. layers executed, from ONE backbone pass per text (methods.md, "Reporting").

The backbone runs once per text (refexit.features, cached); every head's logits and feature
vector are computed for every layer; then each policy at each threshold is replayed sample by
sample with the policy's own `decide` -- the oracle's semantics, not a re-implementation. The
replay builds a ClassifyResult (exit layers, logits, FLOPs incl. heads and policy extras, counted
as Model.classify counts them), so the metrics are those of a real run. Reported, separately:
accuracy, macro-F1, mean layers executed (exit layer included), L / mean layers, FLOPs ratio
(full / spent), and -- when a `classify` callable is given (the compiled C) -- wall-clock.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from typing import Callable

import numpy as np

from . import features as F
from .errors import InputError
from .policies import ExitWarning, Policy, Static, make_policy
from .results import ClassifyResult

POLICY_NAMES = ("entropy", "norm_entropy", "max_prob", "patience", "window", "learned", "ponder", "static")
# sweep grid for entropy-like thresholds, as a fraction of the largest meaningful value: geometric
# near 0 (confident exits on easy data) plus linear steps (hard data, where scores stay mid-range)
FRACTIONS = np.unique(np.concatenate([np.geomspace(1e-4, 1.0, 17), np.linspace(0.1, 0.9, 9)]).round(12))


# ---------------------------------------------------------------- metrics from raw predictions
def accuracy(pred, y) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def macro_f1(pred, y, num_labels: int) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN); a class absent from both the
    predictions and the labels is left out (as scikit-learn does)."""
    pred, y = np.asarray(pred), np.asarray(y)
    scores = []
    for c in range(num_labels):
        tp = np.sum((pred == c) & (y == c))
        denom = 2 * tp + np.sum((pred == c) & (y != c)) + np.sum((pred != c) & (y == c))
        if denom:
            scores.append(2 * tp / denom)
    return float(np.mean(scores)) if scores else 0.0


def metrics(res: ClassifyResult, y) -> dict:
    C = res.logits.shape[1]
    pred = res.labels
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, C),
            "mean_layers": res.mean_layers, "layer_speedup": res.layer_speedup,
            "flops_ratio": res.flops_ratio, "mean_flops": float(np.mean(res.flops)),
            "exit_histogram": np.bincount(res.exit_layers, minlength=res.num_layers + 1)[1:].tolist()}


# ---------------------------------------------------------------- replaying policies
class LayerOutputs:
    """Every layer's exit logits [L] x [N, C] and head features [L] x [N, F] for one split.

    Computed sample by sample with the oracle's own Head.features / Head.logits, fed the cached
    vector the head reads (its [CLS] state or token mean, as a one-row x), so they are
    bit-identical to what Model.classify computes."""

    def __init__(self, model, feats: F.Features):
        self.lengths = feats.lengths
        pw, pb = model.weights.get("pooler.w"), model.weights.get("pooler.b")
        self.feats, self.logits = [], []
        for layer, h in enumerate(model.heads, start=1):
            if h is None:
                self.feats.append(None)
                self.logits.append(None)
                continue
            if h.kind == "fastbert":
                raise InputError("evaluating fastbert heads from cached features is not supported")
            vec = feats.mean[layer - 1] if h.kind == "mean_linear" else feats.cls[layer - 1]  # [N, H]
            f = np.stack([h.features(v[None], pw, pb) for v in vec])                         # [N, F]
            self.feats.append(f)
            self.logits.append(np.stack([h.logits(fb) for fb in f]))                         # [N, C]

    def __len__(self):
        return len(self.lengths)


def simulate(model, policy: Policy, out: LayerOutputs) -> ClassifyResult:
    """What Model.classify(texts, policy) returns, replayed from precomputed layer outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        msgs = model.check_policy(policy)
    L, N, C = model.num_layers, len(out), model.num_labels
    static = isinstance(policy, Static)
    pflops = 0 if static else model._policy_flops(policy)
    logits = np.zeros((N, C), model.dtype)
    exit_layers = np.zeros(N, np.int64)
    flops, full, margins = np.zeros(N), np.zeros(N), np.full(N, math.inf)
    head_flops = [h.flops if h is not None else None for h in model.heads]
    for b in range(N):
        n = int(out.lengths[b])
        lf = model.layer_flops(n)
        full[b] = L * lf + head_flops[L - 1](n)
        state = policy.start()
        for layer in range(1, L + 1):
            flops[b] += lf
            if layer < L and static and layer != policy.k:
                continue
            z = out.logits[layer - 1][b]
            flops[b] += head_flops[layer - 1](n)
            if layer == L:
                done = True
            else:
                done, _, margin = policy.decide(layer, z, out.feats[layer - 1][b], model.exits, state)
                flops[b] += pflops
                margins[b] = min(margins[b], margin)
            if done:
                logits[b], exit_layers[b] = z, layer
                break
    return ClassifyResult(logits, exit_layers, L, model.label_names, flops, full, margins,
                          repr(policy), None, msgs)


def sweep_policies(name: str, num_layers: int, num_labels: int) -> list[Policy]:
    """The thresholds swept for one policy, from most eager to most cautious (roughly)."""
    L, C = num_layers, num_labels
    if name == "entropy":
        return [make_policy(name, math.log(C) * f) for f in FRACTIONS[::-1]]
    if name == "norm_entropy":
        return [make_policy(name, f) for f in FRACTIONS[::-1]]
    if name == "max_prob":
        return [make_policy(name, 1 - (1 - 1 / C) * f) for f in FRACTIONS[::-1]]
    if name == "learned":
        return [make_policy(name, t) for t in np.concatenate([[0.9, 0.8, 0.7, 0.6], np.geomspace(0.5, 1e-3, 13)])]
    if name == "ponder":
        return [make_policy(name, q) for q in np.concatenate([np.arange(0.05, 0.96, 0.1), [0.98, 0.995, 0.999]])]
    if name == "patience":
        return [make_policy(name, t) for t in range(1, max(L - 1, 1))]
    if name == "window":
        return [make_policy(name, n) for n in range(2, L)]
    if name == "static":
        return [make_policy(name, k) for k in range(1, L + 1)]
    raise InputError(f"no sweep defined for policy {name!r} (known: {', '.join(POLICY_NAMES)})")


def available(model, name: str) -> str | None:
    """None if the model can run policy `name`, else why not."""
    if name == "learned" and model.exits.lte is None:
        return "no LTE head (train with --objective lte or the lte extra)"
    if name == "ponder" and model.exits.ponder is None:
        return "no ponder lambda MLP (train with --objective ponder or the ponder extra)"
    if name != "static" and any(h is None for h in model.heads[:-1]):
        return "the model lacks exit heads"
    return None


def pick(points: list[dict], full_accuracy: float, max_drop: float, split: str = "dev") -> dict | None:
    """The fastest point (fewest mean layers on `split`) whose `split` accuracy is at least
    full_accuracy - max_drop (a fraction: 0.01 = one point); ties: higher accuracy."""
    ok = [p for p in points if p[split]["accuracy"] >= full_accuracy - max_drop - 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda p: (p[split]["mean_layers"], -p[split]["accuracy"]))


def evaluate(model, splits: dict, labels: dict, policies=POLICY_NAMES, max_drop: float = 0.01,
             sweep: bool = True, threshold=None, progress: bool = True) -> dict:
    """splits: {"dev": Features, "test": Features}; labels: {"dev": y, "test": y}.

    sweep=True: every policy over its grid, a threshold picked on dev (fastest within max_drop of
    the full model's dev accuracy) and its test numbers; also, labelled as such, the fastest
    point within max_drop on test itself. sweep=False: each policy at `threshold` only."""
    outs = {s: LayerOutputs(model, f) for s, f in splits.items()}
    L = model.num_layers
    full = {s: metrics(simulate(model, Static(L), o), labels[s]) for s, o in outs.items()}
    report = {"num_layers": L, "labels": list(model.label_names), "max_drop": max_drop,
              "full": full, "policies": {}, "skipped": {}}
    for name in policies:
        why = available(model, name)
        if why:
            report["skipped"][name] = why
            continue
        grid = sweep_policies(name, L, model.num_labels) if sweep else [make_policy(name, threshold)]
        points = []
        t0 = time.monotonic()
        for i, pol in enumerate(grid):
            pt = {"policy": repr(pol), "params": pol.params(), "index": i}
            for s, o in outs.items():
                res = simulate(model, pol, o)
                pt[s] = metrics(res, labels[s])
                pt["warnings"] = res.warnings
            points.append(pt)
        entry = {"points": points, "seconds": round(time.monotonic() - t0, 2)}
        if sweep and "dev" in full:
            entry["picked"] = pick(points, full["dev"]["accuracy"], max_drop, "dev")
        if sweep and "test" in full:
            entry["best_on_test"] = pick(points, full["test"]["accuracy"], max_drop, "test")
        report["policies"][name] = entry
        if progress:
            print(f"evaluate: {name}: {len(points)} thresholds in {entry['seconds']}s", file=sys.stderr)
    return report


# ---------------------------------------------------------------- wall-clock hook
def time_per_example(classify: Callable[[list], object], texts: list[str], repeat: int = 3,
                     warmup: int = 1) -> float:
    """Median over `repeat` runs of wall-clock seconds per text of classify(texts)."""
    for _ in range(warmup):
        classify(texts)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        classify(texts)
        runs.append((time.perf_counter() - t) / len(texts))
    return statistics.median(runs)


def add_wallclock(report: dict, make_classify: Callable[[Policy], Callable], texts: list[str],
                  repeat: int = 3) -> dict:
    """Time the full model and every picked policy with make_classify(policy)(texts) (e.g. the
    compiled C); adds report["wallclock"] with seconds per example, the measured speed-up and
    how much of the ideal L / mean layers it reaches. The ideal is taken on the timed texts
    themselves when classify returns a ClassifyResult, else on the picked point's test numbers."""
    L, C = report["num_layers"], len(report["labels"])
    t_full = time_per_example(make_classify(Static(L)), texts, repeat)
    out = {"texts": len(texts), "full_seconds_per_example": t_full, "policies": {}}
    for name, entry in report["policies"].items():
        pt = entry.get("picked")
        if not pt:
            continue
        pol = sweep_policies(name, L, C)[pt["index"]]
        classify = make_classify(pol)
        res = classify(texts)
        ideal = getattr(res, "layer_speedup", None) or (pt["test"]["layer_speedup"] if "test" in pt else None)
        t = time_per_example(classify, texts, repeat)
        out["policies"][name] = {"policy": repr(pol), "seconds_per_example": t, "speedup": t_full / t,
                                 "ideal_layer_speedup": ideal,
                                 "flops_ratio": getattr(res, "flops_ratio", None),
                                 "fraction_of_ideal": (t_full / t) / ideal if ideal else None}
    report["wallclock"] = out
    return out


# ---------------------------------------------------------------- plot
def plot(report: dict, path, split: str = "test") -> bool:
    """Accuracy vs mean layers, one line per policy; False (no file) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, entry in report["policies"].items():
        pts = sorted(entry["points"], key=lambda p: p[split]["mean_layers"])
        ax.plot([p[split]["mean_layers"] for p in pts], [100 * p[split]["accuracy"] for p in pts],
                marker="o", ms=3, label=name, ls="--" if name == "static" else "-")
        if entry.get("picked"):
            p = entry["picked"][split]
            ax.plot([p["mean_layers"]], [100 * p["accuracy"]], marker="*", ms=11, color=ax.lines[-1].get_color())
    full = 100 * report["full"][split]["accuracy"]
    ax.axhline(full, color="k", lw=0.8)
    ax.axhline(full - 100 * report["max_drop"], color="k", lw=0.8, ls=":")
    ax.set_xlabel("mean layers executed (incl. the exit layer)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_title(f"{report.get('dataset', '')} {split}: full model {full:.1f}%  (stars: dev-picked, "
                 f"<= {100 * report['max_drop']:g} pt drop)", fontsize=9)
    ax.set_ylim(max(ax.get_ylim()[0], full - 15), min(100, full + 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
