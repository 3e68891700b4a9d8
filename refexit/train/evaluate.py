"""Accuracy vs. layers executed, from ONE backbone pass per text (methods.md, "Reporting").

The backbone runs once per text (refexit.train.features, cached); every head's logits and feature
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

from refexit.train import features as F
from refexit.errors import InputError
from refexit.policies import ExitWarning, Policy, Static, make_policy
from refexit.results import ClassifyResult

POLICY_NAMES = ("entropy", "norm_entropy", "max_prob", "patience", "window", "learned", "ponder", "static", "de3", "edgebert",
                "ceebert", "gpf", "dact")
NO_SETTING = ("dact",)          # no threshold: one operating point per trained exits file (DACT: its tau)
POLICY_NAMES += ("smartbert",)       # SmartBERT skip gates: replayed from one gated pass (refexit/train/skipgates.py)
# CeeBERT's per-layer cost o, from the most eager (exits early) to the most cautious
TAU_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)   # regression tau, times the outputs' spread
CEEBERT_COSTS = (0.2, 0.15, 0.1, 0.075, 0.05, 0.03, 0.02, 0.01, 0.005, 0.0)
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


def _ranks(x) -> np.ndarray:                  # [N] -> 1-based ranks, ties get their mean rank
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inv, ranks) / counts)[inv]


def pearson(a, b) -> float:
    """Pearson's r (0 when either side is constant)."""
    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    d = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / d if d > 0 else 0.0


def regression_metrics(pred, y) -> dict:
    """Pearson's r, Spearman's rho (Pearson of the ranks, ties averaged, as scipy) and the MSE."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    return {"pearson": pearson(pred, y), "spearman": pearson(_ranks(pred), _ranks(y)),
            "mse": float(np.mean((pred - y) ** 2))}


def quality(m: dict) -> float:
    """What a threshold is picked on: accuracy, or Pearson's r on a regression task."""
    return m["accuracy"] if "accuracy" in m else m["pearson"]


def metrics(res: ClassifyResult, y) -> dict:
    C = res.logits.shape[1]
    pred = res.labels
    scores = (regression_metrics(res.logits[:, 0], y) if np.asarray(y).dtype.kind == "f"
              else {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, C)})
    return {**scores,
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
            if h.kind == "fastbert":           # every token's states: computed during the backbone pass
                got = feats.head_outputs[layer - 1] if feats.head_outputs is not None else None
                if got is None:
                    raise InputError("fastbert heads read every token's states: evaluate them on features from "
                                     "refexit.train.token_heads.head_outputs_exact")
                self.feats.append(got[0])
                self.logits.append(got[1])
                continue
            vec = feats.mean[layer - 1] if h.kind == "mean_linear" else feats.cls[layer - 1]  # [N, H]
            prev = (lambda n: feats.cls[:layer - 1, n]) if h.kind == "scalar_mix" else (lambda n: None)  # noqa: E731
            f = np.stack([h.features(v[None], pw, pb, prev(n)) for n, v in enumerate(vec)])  # [N, F]
            self.feats.append(f)
            self.logits.append(np.stack([h.logits(fb) for fb in f]))                         # [N, C]
        self.own = {}                   # policy name -> (logits [L-1] x [N, C], feats, flops [L-1]) (own_logits)
        if getattr(model.exits, "gpf", None) is not None and model.num_layers > 1:
            self.own["gpf"] = own_logits_outputs(model, make_policy("gpf", 1.0), feats)

    def __len__(self):
        return len(self.lengths)


def own_logits_outputs(model, policy: Policy, feats: F.Features):
    """The exit logits an own_logits policy (Global Past-Future) computes after each layer < L, for
    every sample, with the policy's own exit_logits on the cached vector its poolers read (the [CLS]
    state or the token mean, exits.gpf_pool, as a one-row x) in layer order -- what Model.classify
    computes -- and their FLOPs."""
    from refexit.gpf import pooled_features
    L, N = model.num_layers, feats.cls.shape[1]
    vec = pooled_features(feats, model.exits.gpf_pool)                       # [L, N, H]
    z = [[None] * N for _ in range(L - 1)]
    fe = [[None] * N for _ in range(L - 1)]
    for n in range(N):
        state = policy.start()
        for layer in range(1, L):
            z[layer - 1][n], fe[layer - 1][n] = policy.exit_logits(layer, vec[layer - 1, n][None], model.exits,
                                                                    state)
    return ([np.stack(a) for a in z], [np.stack(a) for a in fe],
            [policy.exit_flops(layer, model.exits) for layer in range(1, L)])


def simulate(model, policy: Policy, out: LayerOutputs, batch: int | None = None) -> ClassifyResult:
    """What Model.classify(texts, policy) returns, replayed from precomputed layer outputs.
    batch: a stateful policy (CeeBERT) learns after every `batch` samples in order, as Model.classify
    called on consecutive batches of that size (None: one batch of all)."""
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
    step = N if not batch else int(batch)
    states = []
    for b in range(N):
        n = int(out.lengths[b])
        lf, ef = model.layer_flops(n), model.embed_flops(n)
        full[b] = ef + L * lf + head_flops[L - 1](n)
        flops[b] = ef
        state = policy.start()
        if policy.stateful:
            states.append(state)
        for layer in range(1, L + 1):
            flops[b] += lf
            if layer < L and not policy.evaluates_head(layer, state):
                continue
            own = policy.own_logits and layer < L
            if own:                         # the policy's own exit logits (Global Past-Future), replayed
                oz, ofeat, oflops = out.own[policy.name]
                z, feat = oz[layer - 1][b], ofeat[layer - 1][b]
                flops[b] += oflops[layer - 1]
            else:
                z, feat = out.logits[layer - 1][b], (out.feats[layer - 1][b] if layer < L else None)
                flops[b] += head_flops[layer - 1](n)
            if layer == L:
                done = True
            else:
                done, _, margin = policy.decide(layer, z, feat, model.exits, state)
                flops[b] += pflops
                margins[b] = min(margins[b], margin)
            if done:
                logits[b], exit_layers[b] = policy.answer(layer, z, out.feats[layer - 1][b], model.exits, state), layer
                break
        if policy.stateful and ((b + 1) % step == 0 or b + 1 == N):   # the end of a batch
            first = b + 1 - len(states)
            policy.observe(states, logits[first:b + 1], exit_layers[first:b + 1])
            states = []
    return ClassifyResult(logits, exit_layers, L, model.label_names, flops, full, margins,
                          repr(policy), None, msgs)


def simulate_cascade(cascade, out: LayerOutputs) -> ClassifyResult:
    """What cascade.classify(texts) returns, for a cascade whose members all share the backbone the
    layer outputs came from (e.g. Cascade.truncation(model, k)): each member replayed on every
    sample with `simulate`, then the cascade's rule asks member k only about the samples handed to it."""
    if any(s.model is not cascade.stages[0].model for s in cascade.stages):
        raise InputError("replaying a cascade from one backbone's layer outputs needs every member to be that model")
    from refexit.cascade import take
    runs = [simulate(s.model, s.policy if s.policy is not None else Static(s.model.num_layers), out)
            for s in cascade.stages]
    return cascade.assemble(lambda k, todo: take(runs[k], todo), out.lengths)


def sweep_cascade(model, k: int, temperature: float | None = None) -> list:
    """The truncation cascades swept for `--cascade k`: Static(k) with `temperature` (None: the
    model's calibrated one at layer k), then the full model, at hand-off thresholds on max_prob's grid."""
    from refexit.cascade import Cascade
    L, C = model.num_layers, model.num_labels
    if not 1 <= k < L:
        raise InputError(f"--cascade {k}: the truncated member must stop before the last layer (1..{L - 1})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        return [Cascade.truncation(model, k, 1 - (1 - 1 / C) * f, temperature) for f in FRACTIONS[::-1]]


def cascade_temperature(model, k: int, dev: LayerOutputs | None, y_dev) -> tuple[float, str]:
    """The truncated member's temperature: the model's calibrated one at layer k (train-exits fits
    them on dev), or, when the model's are all 1 (not calibrated), one fitted here on the dev split
    (Right Tool: minimum NLL of softmax(z_k / T)); -> (T, where it came from)."""
    temps = model.exits.temperatures
    if temps is not None and not np.all(np.asarray(temps) == 1.0):
        return float(temps[k - 1]), "the model's calibrated temperature"
    if dev is None:
        return 1.0, "1 (no calibration, no dev split)"
    from refexit.train.exits import fit_temperature
    return fit_temperature(dev.logits[k - 1], np.asarray(y_dev)), "fitted on dev (minimum NLL)"


def evaluate_cascades(model, outs: dict, labels: dict, layers, full: dict, max_drop: float, progress=True) -> dict:
    """report["cascades"]: for each k of `layers`, the sweep of sweep_cascade(model, k) on every
    split, a point picked on dev as for the policies, and the test-best point."""
    report = {}
    for k in layers:
        points, t0 = [], time.monotonic()
        T, source = cascade_temperature(model, k, outs.get("dev"), labels.get("dev"))
        for i, casc in enumerate(sweep_cascade(model, k, T)):
            pt = {"policy": repr(casc), "params": {"k": k, "threshold": casc.thresholds[0]}, "index": i}
            for s, o in outs.items():
                res = simulate_cascade(casc, o)
                pt[s] = metrics(res, labels[s]) | {"answered_by_first": float(np.mean(res.members == 0))}
            points.append(pt)
        entry = report[f"cascade{k}"] = {"points": points, "seconds": round(time.monotonic() - t0, 2),
                                         "temperature": T, "temperature_source": source}
        if "dev" in full:
            entry["picked"] = pick(points, quality(full["dev"]), max_drop, "dev")
        if "test" in full:
            entry["best_on_test"] = pick(points, quality(full["test"]), max_drop, "test")
        if progress:
            print(f"evaluate: cascade{k}: {len(points)} thresholds in {entry['seconds']}s", file=sys.stderr)
    return report


def sweep_policies(name: str, num_layers: int, num_labels: int, tau_scale: float | None = None) -> list[Policy]:
    """The thresholds swept for one policy, from most eager to most cautious (roughly). A regression
    head (C = 1) runs patience / window with tau = tau_scale * TAU_FRACTIONS (tau_scale: the spread
    of the full model's outputs, evaluate's report["tau_scale"]), and static."""
    L, C = num_layers, num_labels
    if C == 1 and name in ("patience", "window"):
        if not tau_scale or not math.isfinite(tau_scale):
            raise InputError(f"{name} on a regression head needs tau_scale (the spread of the outputs)")
        counts = range(1, max(L - 1, 1)) if name == "patience" else range(2, L)
        return [make_policy(name, n, tau_scale * f) for f in TAU_FRACTIONS for n in counts]
    if name in ("entropy", "edgebert", "gpf"):
        return [make_policy(name, math.log(C) * f) for f in FRACTIONS[::-1]]
    if name in ("norm_entropy", "de3"):           # both scores lie in [0, 1]
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
    if name == "ceebert":
        return [make_policy(name, o) for o in CEEBERT_COSTS]
    if name in NO_SETTING:
        return [make_policy(name)]
    if name == "smartbert":                       # S = 0 first: the gates alone, no entropy exit
        return [make_policy(name, 0.0)] + [make_policy(name, math.log(C) * f) for f in FRACTIONS[::-1]]
    raise InputError(f"no sweep defined for policy {name!r} (known: {', '.join(POLICY_NAMES)})")


def single_policy(name: str, threshold) -> Policy:
    """The policy `name` at `threshold` (a policy without a setting ignores it)."""
    return make_policy(name) if name in NO_SETTING else make_policy(name, threshold)


def available(model, name: str) -> str | None:
    """None if the model can run policy `name`, else why not."""
    if model.num_labels == 1 and name not in ("patience", "window", "static"):
        return "needs class probabilities; a regression head runs patience, window (with tau) and static"
    if name == "learned" and model.exits.lte is None:
        return "no LTE head (train with --objective lte or the lte extra)"
    if name == "ponder" and model.exits.ponder is None:
        return "no ponder lambda MLP (train with --objective ponder or the ponder extra)"
    if name == "de3" and model.exits.prototypes is None:
        return "no class prototypes (train with the prototypes extra)"
    if name == "edgebert" and model.exits.edge_table is None:
        return "no exit table (train with the edge_table extra)"
    if name == "gpf":
        return None if getattr(model.exits, "gpf", None) is not None else \
            "no Global Past-Future parameters (train with --extras gpf)"
    if name == "dact" and model.exits.dact is None:
        return "no DACT halting units (train with --objective dact)"
    if name == "smartbert" and model.exits.gates is None:
        return "no skip gates (train them with refexit train-gates)"
    if name != "static" and any(h is None for h in model.heads[:-1]):
        return "the model lacks exit heads"
    return None


def pick(points: list[dict], full_accuracy: float, max_drop: float, split: str = "dev") -> dict | None:
    """The fastest point (fewest mean layers on `split`) whose `split` accuracy (regression: Pearson's r)
    is at least full_accuracy - max_drop (a fraction: 0.01 = one point); ties: higher accuracy."""
    ok = [p for p in points if quality(p[split]) >= full_accuracy - max_drop - 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda p: (p[split]["mean_layers"], -quality(p[split])))


def evaluate(model, splits: dict, labels: dict, policies=POLICY_NAMES, max_drop: float = 0.01,
             sweep: bool = True, threshold=None, progress: bool = True, online_batch: int = 1,
             cascades=(), gated: dict | None = None) -> dict:
    """splits: {"dev": Features, "test": Features}; labels: {"dev": y, "test": y}.

    A stateful policy (CeeBERT) starts afresh on each split and learns while it classifies, after
    every `online_batch` samples in the split's order.
    sweep=True: every policy over its grid, a threshold picked on dev (fastest within max_drop of
    the full model's dev accuracy) and its test numbers; also, labelled as such, the fastest
    point within max_drop on test itself. sweep=False: each policy at `threshold` only.
    cascades: truncation layers k; each adds report["cascades"]["cascade<k>"], the sweep of
    "layer-k truncation, then the full model" (CascadeBERT, evaluate_cascades).
    gated: {split: skipgates.GatedOutputs}, the one gated pass per split the smartbert policy is
    replayed from (without it, smartbert is skipped)."""
    outs = {s: LayerOutputs(model, f) for s, f in splits.items()}
    L = model.num_layers
    full = {s: metrics(simulate(model, Static(L), o), labels[s]) for s, o in outs.items()}
    report = {"num_layers": L, "labels": list(model.label_names), "max_drop": max_drop,
              "full": full, "policies": {}, "skipped": {}}
    if model.num_labels == 1:                   # regression: tau's scale, from the outputs alone (no labels)
        ref = outs["dev"] if "dev" in outs else next(iter(outs.values()))
        report["tau_scale"] = float(np.std(ref.logits[L - 1][:, 0])) or 1.0
    for name in policies:
        why = available(model, name)
        if name == "smartbert" and not why and not gated:
            why = "no gated pass (evaluate(..., gated=...))"
        if why:
            report["skipped"][name] = why
            continue
        grid = (sweep_policies(name, L, model.num_labels, report.get("tau_scale")) if sweep
                else [single_policy(name, threshold)])
        points = []
        t0 = time.monotonic()
        for i, pol in enumerate(grid):
            pt = {"policy": repr(pol), "params": pol.params(), "index": i}
            for s, o in outs.items():
                if pol.stateful:
                    pol.reset()                      # each split adapts from scratch
                if pol.skips_layers:
                    from refexit.train import skipgates
                    res = skipgates.simulate(model, pol, gated[s])
                else:
                    res = simulate(model, pol, o, batch=online_batch)
                pt[s] = metrics(res, labels[s])
                if pol.skips_layers:
                    pt[s]["skip_rate"] = skipgates.skip_rates(gated[s], pol.gate, res).tolist()
                pt["warnings"] = res.warnings
                if name == "edgebert":
                    pt[s]["prediction"] = prediction_report(model, pol, o, res)
            points.append(pt)
        entry = {"points": points, "seconds": round(time.monotonic() - t0, 2)}
        if sweep and "dev" in full:
            entry["picked"] = pick(points, quality(full["dev"]), max_drop, "dev")
        if sweep and "test" in full:
            entry["best_on_test"] = pick(points, quality(full["test"]), max_drop, "test")
        report["policies"][name] = entry
        if progress:
            print(f"evaluate: {name}: {len(points)} thresholds in {entry['seconds']}s", file=sys.stderr)
    if cascades:
        report["cascades"] = evaluate_cascades(model, outs, labels, cascades, full, max_drop, progress)
    return report


def prediction_report(model, policy, out: LayerOutputs, res: ClassifyResult) -> dict:
    """EdgeBERT: how the predicted exit layer compares with the layer DeeBERT's entropy rule at the
    same thresholds exits at (that rule checks every head), over the samples that did not exit at
    layer 1 (where both rules agree by construction), and what skipping the heads in between saves."""
    ent = simulate(model, make_policy("entropy", policy.threshold), out)
    later = ent.exit_layers > 1
    pred, want = res.exit_layers[later], ent.exit_layers[later]
    n = int(later.sum())
    return {"predicted": n, "exact": float(np.mean(pred == want)) if n else None,
            "earlier": float(np.mean(pred < want)) if n else None,
            "later": float(np.mean(pred > want)) if n else None,
            "mean_abs_layer_error": float(np.mean(np.abs(pred - want))) if n else None,
            "entropy_mean_layers": ent.mean_layers, "entropy_flops_ratio": ent.flops_ratio,
            "head_flops_saved": float(1 - np.sum(res.flops) / np.sum(ent.flops))}


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
    themselves when classify returns a ClassifyResult, else on the picked point's test numbers;
    with a ClassifyResult also the share of its FLOPs ratio (full / spent FLOPs, which weighs each
    text by its length: long texts that exit late cost more than L / mean layers counts)."""
    L, C = report["num_layers"], len(report["labels"])
    t_full = time_per_example(make_classify(Static(L)), texts, repeat)
    out = {"texts": len(texts), "full_seconds_per_example": t_full, "policies": {}}
    for name, entry in report["policies"].items():
        pt = entry.get("picked")
        if not pt:
            continue
        pol = sweep_policies(name, L, C, report.get("tau_scale"))[pt["index"]]
        classify = make_classify(pol)
        res = classify(texts)
        ideal = getattr(res, "layer_speedup", None) or (pt["test"]["layer_speedup"] if "test" in pt else None)
        t = time_per_example(classify, texts, repeat)
        flops = getattr(res, "flops_ratio", None)     # counts each text's tokens (and the heads)
        out["policies"][name] = {"policy": repr(pol), "seconds_per_example": t, "speedup": t_full / t,
                                 "ideal_layer_speedup": ideal, "flops_ratio": flops,
                                 "fraction_of_ideal": (t_full / t) / ideal if ideal else None,
                                 "fraction_of_flops_ratio": (t_full / t) / flops if flops else None}
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
    for name, entry in {**report["policies"], **report.get("cascades", {})}.items():
        pts = sorted(entry["points"], key=lambda p: p[split]["mean_layers"])
        ax.plot([p[split]["mean_layers"] for p in pts], [100 * quality(p[split]) for p in pts],
                marker="o", ms=3, label=name, ls="--" if name == "static" else "-")
        if entry.get("picked"):
            p = entry["picked"][split]
            ax.plot([p["mean_layers"]], [100 * quality(p)], marker="*", ms=11, color=ax.lines[-1].get_color())
    full = 100 * quality(report["full"][split])
    ax.axhline(full, color="k", lw=0.8)
    ax.axhline(full - 100 * report["max_drop"], color="k", lw=0.8, ls=":")
    ax.set_xlabel("mean layers executed (incl. the exit layer)")
    ax.set_ylabel(f"{split} {'accuracy (%)' if 'accuracy' in report['full'][split] else 'Pearson r (x100)'}")
    ax.set_title(f"{report.get('dataset', '')} {split}: full model {full:.1f}%  (stars: dev-picked, "
                 f"<= {100 * report['max_drop']:g} pt drop)", fontsize=9)
    ax.set_ylim(max(ax.get_ylim()[0], full - 15), min(100, full + 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- precisions: exit agreement
REFERENCE = "fp32"


def parse_precisions(spec) -> tuple[str, ...]:
    """"fp32,bf16" (or a list) -> the precisions to report, the fp32 reference first; an unknown
    name raises InputError naming the allowed ones (refexit.PRECISIONS)."""
    from refexit.model import PRECISIONS
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    bad = [n for n in names if n not in PRECISIONS]
    if bad or not names:
        raise InputError(f"unknown precision {', '.join(map(repr, bad)) or '(none)'}: the allowed ones are "
                         f"{', '.join(PRECISIONS)} (comma-separated)")
    return tuple(dict.fromkeys([REFERENCE, *names]))


def operating_points(report: dict, threshold=None) -> dict[str, Policy]:
    """The points a precision report runs, as picked by the fp32 report: "full" (Static(L)) and,
    per policy, its dev-picked threshold (a sweep) or `threshold` (a single point). A policy
    with nothing picked within max_drop is left out."""
    L, C = report["num_layers"], len(report["labels"])
    points = {"full": Static(L)}
    for name, entry in report["policies"].items():
        if "picked" not in entry:
            points[name] = single_policy(name, threshold)
        elif entry["picked"]:
            points[name] = sweep_policies(name, L, C, report.get("tau_scale"))[entry["picked"]["index"]]
    return points


def emulated_runs(model, precisions, points: dict, texts: list[str], max_length: int,
                  pairs: list[str] | None = None) -> dict:
    """{precision: {point: ClassifyResult}} of the oracle emulating each precision
    (model.with_precision(p)) on `texts` (with `pairs`: the sentence pairs): one backbone pass per
    precision, every point replayed from it. Not cached: the feature cache keys on the fp32 weights,
    which every precision shares."""
    runs = {}
    for p in precisions:
        mp = model.with_precision(p)
        out = LayerOutputs(mp, F.extract(mp, texts, max_length, use_cache=False, progress=False, pairs=pairs))
        runs[p] = {k: simulate(mp, pol, out) for k, pol in points.items()}
    return runs


def agreement(ref: ClassifyResult, res: ClassifyResult, y) -> dict:
    """`res` against the reference run `ref` on the same texts: label and exit-layer agreement
    (with the disagreements counted), and res's accuracy, macro-F1 and mean layers with their
    deltas (res - ref)."""
    y = np.asarray(y)
    if not len(ref.exit_layers) == len(res.exit_layers) == len(y):
        raise InputError(f"runs of {len(ref.exit_layers)} and {len(res.exit_layers)} texts with {len(y)} "
                         f"labels: compare runs on the same texts")
    n, C = len(y), ref.logits.shape[1]
    same = res.labels == ref.labels
    shift = res.exit_layers - ref.exit_layers
    out = {"texts": n, "label_agreement": float(np.mean(same)), "label_disagreements": int(n - same.sum()),
           "exit_agreement": float(np.mean(shift == 0)), "exits_earlier": int(np.sum(shift < 0)),
           "exits_later": int(np.sum(shift > 0))}
    for key, f in (("accuracy", lambda r: accuracy(r.labels, y)), ("macro_f1", lambda r: macro_f1(r.labels, y, C)),
                   ("mean_layers", lambda r: r.mean_layers)):
        out[key], out[f"{key}_delta"] = f(res), f(res) - f(ref)
    out["layer_speedup"] = res.layer_speedup
    out["exit_histogram"] = np.bincount(res.exit_layers, minlength=res.num_layers + 1)[1:].tolist()
    return out


def time_precisions(make_run: Callable[[str, str], Callable], precisions, points, texts: int,
                    repeat: int = 5, warmup: int = 1) -> dict:
    """Wall-clock of make_run(precision, point)() (one call classifying `texts` texts) at every
    point (a name), the precisions interleaved run by run so that a change of machine load hits
    them alike. -> {point: {precision: {"seconds_per_text": median, "speedup_vs_fp32": fp32's / this}}}"""
    out = {}
    for k in points:
        fns = {p: make_run(p, k) for p in precisions}
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        runs = {p: [] for p in precisions}
        for _ in range(repeat):
            for p, fn in fns.items():
                t = time.perf_counter()
                fn()
                runs[p].append((time.perf_counter() - t) / texts)
        med = {p: statistics.median(r) for p, r in runs.items()}
        out[k] = {p: {"seconds_per_text": med[p], "speedup_vs_fp32": med[REFERENCE] / med[p]} for p in precisions}
    return out


def precision_report(points: dict, runs: dict, y, emulated: dict | None = None,
                     timing: dict | None = None) -> dict:
    """runs[precision][point]: ClassifyResult on the texts labelled y (runs[REFERENCE] too).
    -> {"precisions", "reference", "points": {point: {"policy", precision: agreement(...) with,
    when given, "crosscheck" (this run on the first texts against emulated[precision][point]) and
    the "wallclock" of timing[point][precision]}}}."""
    out = {"precisions": list(runs), "reference": REFERENCE, "points": {}}
    for k, pol in points.items():
        ref = runs[REFERENCE][k]
        entry = out["points"][k] = {"policy": repr(pol)}
        for p, by_point in runs.items():
            a = entry[p] = agreement(ref, by_point[k], y)
            if emulated and p in emulated:
                em = emulated[p][k]
                m = len(em.exit_layers)
                a["crosscheck"] = {"texts": m,
                                   "label_agreement": float(np.mean(by_point[k].labels[:m] == em.labels)),
                                   "exit_agreement": float(np.mean(by_point[k].exit_layers[:m] == em.exit_layers))}
            if timing and k in timing:
                a["wallclock"] = timing[k][p]
    return out


def plot_precisions(prec: dict, path, title: str = "") -> bool:
    """Bars per operating point and precision: label / exit-layer agreement with fp32, accuracy
    delta, and (when timed) wall-clock speed-up vs fp32; False (no file) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names, precs = list(prec["points"]), prec["precisions"]
    timed = all("wallclock" in prec["points"][k][p] for k in names for p in precs)
    panels = [("label agreement with fp32 (%)", lambda a: 100 * a["label_agreement"]),
              ("exit-layer agreement with fp32 (%)", lambda a: 100 * a["exit_agreement"]),
              ("test accuracy - fp32's (points)", lambda a: 100 * a["accuracy_delta"])]
    if timed:
        panels.append(("compiled C wall-clock speed-up vs fp32", lambda a: a["wallclock"]["speedup_vs_fp32"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8))
    x, w = np.arange(len(names)), 0.8 / len(precs)
    for ax, (label, f) in zip(axes, panels):
        for i, p in enumerate(precs):
            ax.bar(x + (i - (len(precs) - 1) / 2) * w, [f(prec["points"][k][p]) for k in names], w, label=p)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if "agreement" in label:                 # near 100%: show the differences
            ax.set_ylim(max(0, min(b.get_height() for b in ax.patches) - 2), 100.5)
        else:
            ax.axhline(1 if "speed-up" in label else 0, color="k", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
