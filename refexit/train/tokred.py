"""Token reduction on real data: accuracy vs FLOPs of length configurations (refexit/tokens.py),
alone and combined with exit policies (`refexit evaluate --sweep --token-rates ...`).

A length configuration changes every layer's states, so each one needs its own backbone pass: the
per-layer head inputs ([CLS] state, mean of the KEPT tokens) are computed once per configuration
with the oracle's own functions (nn.encoder_layer_keep, as Model.classify under
with_token_reduction) and cached like refexit.train.features. The policies are then replayed with
refexit.train.evaluate.simulate, and each sample's FLOPs recounted with the tokens it kept
(tokens.spent_flops: layers on the tokens entering them, heads on the kept ones), against the full
model WITHOUT reduction. A threshold is picked on dev: the fewest mean FLOPs whose dev accuracy is
within max_drop of the unreduced full model's dev accuracy.
"""
from __future__ import annotations

import hashlib
import sys
import time
import warnings

import numpy as np

from refexit import nn
from refexit.errors import InputError
from refexit.policies import ExitWarning, Static
from refexit.tokens import LayerCost, TokenReduction, spent_flops
from refexit.train import evaluate as E
from refexit.train import features as F

UNSUPPORTED = ("edgebert",)       # its FLOPs skip heads in between: not recounted here
# the policies that read only the exit logits (engine "c" gives those, no head features)
LOGIT_POLICIES = ("entropy", "norm_entropy", "max_prob", "patience", "window", "ceebert")


class CompiledOutputs:
    """Every layer's exit logits [L] x [N, C] of a split from the compiled C (engine "c"), in the
    shape E.simulate reads (no head features: the policies of LOGIT_POLICIES only)."""

    def __init__(self, lengths, logits):
        self.lengths, self.logits = np.asarray(lengths), logits
        self.feats = [np.zeros((len(self.lengths), 0))] * len(logits)

    def __len__(self):
        return len(self.lengths)


def compiled_outputs(cm, model, tr: TokenReduction, enc) -> CompiledOutputs:
    """Run the compiled library `cm` (compiled with token reduction, any policy kind "static") at
    Static(k) for k = 1..L under tr: head k's logits of every sample, with its tokens reduced as
    Model.classify reduces them (tests/test_methods_tokred.py checks C = oracle)."""
    cm.set_keep(tr)
    lengths = np.asarray(enc["attention_mask"] if isinstance(enc, dict) else enc.attention_mask).sum(axis=1)
    logits = []
    for k in range(1, model.num_layers + 1):
        cm.set_policy(Static(k))
        logits.append(np.asarray(cm.classify(enc).logits, np.float64).astype(model.dtype))
    return CompiledOutputs(lengths, logits)


def compute(model, tr: TokenReduction, texts, max_length: int = 128, pairs=None, progress: bool = True,
            label: str = "features") -> F.Features:
    """Per-layer [CLS] states and kept-token means under the length configuration tr."""
    enc = model.tokenizer(list(texts), None if pairs is None else list(pairs), max_length=max_length)
    return features_of_rows(model, tr, model.rows(enc), progress, label)


def features_of_rows(model, tr: TokenReduction, rows, progress: bool = False, label: str = "features") -> F.Features:
    """rows: Model.rows(enc), per sample (ids, type ids) of its real tokens."""
    tr.check(model.num_layers)
    L, H, c = model.num_layers, model.config.hidden_size, model.config
    N = len(rows)
    lengths = np.array([len(ids) for ids, _ in rows], np.int64)
    cls, mean = np.zeros((L, N, H), model.dtype), np.zeros((L, N, H), model.dtype)
    bar = F.Progress(N, label, progress)
    for done, b in enumerate(np.argsort(lengths, kind="stable"), start=1):
        ids, types = rows[b]
        x = model.embed(ids, types)                                   # [n, H]
        for i, k in enumerate(tr.counts(len(ids))):
            x, _, _ = nn.encoder_layer_keep(x, model._layers[i], c.num_attention_heads, c.hidden_act,
                                            c.layer_norm_eps, k, nn.LINEAR[model.precision])   # [k, H]
            cls[i, b] = x[0]
            mean[i, b] = x.mean(axis=0)
        bar.update(done)
    bar.close()
    return F.Features(cls, mean, lengths)


def extract(model, tr: TokenReduction, texts, max_length: int = 128, pairs=None, use_cache: bool = True,
            progress: bool = True, label: str = "features") -> F.Features:
    max_length = min(int(max_length), model.tokenizer.max_length)
    base = F.cache_key(model, texts, max_length, pairs)
    key = hashlib.sha256(f"{base} tokred {tr.keep!r}".encode()).hexdigest()
    path = F.cache_dir() / f"{key}.npz"
    if use_cache and path.exists():
        got = F._load(path, key, False)
        if got is not None:
            return got
    feats = compute(model, tr, texts, max_length, pairs, progress, label)
    feats.key = key
    if use_cache:
        F._save(path, feats)
    return feats


def simulate(model, policy, out: E.LayerOutputs, tr: TokenReduction, batch=None):
    """E.simulate with each sample's FLOPs recounted under tr (full_flops: the unreduced model)."""
    if policy.name in UNSUPPORTED:
        raise InputError(f"token reduction sweeps do not count the FLOPs of {policy.name}")
    res = E.simulate(model, policy, out, batch)
    L = model.num_layers
    c = model.config
    cost = LayerCost.of(c.hidden_size, c.intermediate_size, c.num_attention_heads)
    hf = [h.flops if h is not None else None for h in model.heads]
    pflops = 0 if isinstance(policy, Static) else model._policy_flops(policy)
    for b, (n, e) in enumerate(zip(out.lengths, res.exit_layers)):
        run = [int(e)] if isinstance(policy, Static) else range(1, int(e) + 1)
        res.flops[b] = model.embed_flops(int(n)) + spent_flops(cost, tr, int(n), int(e), hf, run, pflops, L)
    return res


def pick_flops(points: list, full_accuracy: float, max_drop: float, split: str = "dev"):
    """The point with the fewest mean FLOPs on `split` within max_drop of full_accuracy."""
    ok = [p for p in points if p[split]["accuracy"] >= full_accuracy - max_drop - 1e-12]
    return min(ok, key=lambda p: (p[split]["mean_flops"], -p[split]["accuracy"])) if ok else None


def evaluate_reductions(model, configs, splits: dict, labels: dict, policies, full: dict, max_drop: float,
                        max_length: int = 128, use_cache: bool = True, progress: bool = True,
                        engine: str = "oracle", build_dir=None, threads: int = 1) -> dict:
    """configs: [(name, TokenReduction)]; splits: {"dev": (texts, pairs), "test": ...}; full: the
    unreduced full model's metrics per split (report["full"]). engine "oracle": per-layer head
    inputs from the oracle (cached); "c": per-layer exit logits from the compiled C (one library,
    compiled into build_dir, run at Static(k) for every k; the policies of LOGIT_POLICIES only).
    -> {name: {"keep", "full", "policies": {policy: {"points", "picked"}}}}."""
    out = {}
    L = model.num_layers
    if engine not in ("oracle", "c"):
        raise InputError(f"the token-reduction engine is 'oracle' or 'c', got {engine!r}")
    cm = None
    if engine == "c" and configs:
        import codegen
        if build_dir is None:
            raise InputError("engine 'c' needs a build folder")
        cm = codegen.compile_model(model.with_token_reduction(configs[0][1]), Static(L), build_dir,
                                   prefix="tokred_sweep", max_batch=64, max_length=max_length)
        cm.set_threads(threads)
        encs = {s: model.tokenizer(list(texts), None if pairs is None else list(pairs), max_length=max_length)
                for s, (texts, pairs) in splits.items()}
    for name, tr in configs:
        t0 = time.monotonic()
        if cm is None:
            outs = {s: E.LayerOutputs(model, extract(model, tr, texts, max_length, pairs, use_cache, progress,
                                                     f"{s} keep {name}"))
                    for s, (texts, pairs) in splits.items()}
        else:
            outs = {s: compiled_outputs(cm, model, tr, encs[s]) for s in splits}
        entry = {"keep": list(tr.keep), "engine": engine,
                 "full": {s: E.metrics(simulate(model, Static(L), o, tr), labels[s]) for s, o in outs.items()},
                 "policies": {}}
        for pname in policies:
            if pname in UNSUPPORTED or E.available(model, pname) or pname == "static" or \
                    (cm is not None and pname not in LOGIT_POLICIES):
                continue
            points = []
            for i, pol in enumerate(E.sweep_policies(pname, L, model.num_labels)):
                pt = {"policy": repr(pol), "params": pol.params(), "index": i}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExitWarning)
                    for s, o in outs.items():
                        if pol.stateful:
                            pol.reset()
                        pt[s] = E.metrics(simulate(model, pol, o, tr), labels[s])
                points.append(pt)
            entry["policies"][pname] = {"points": points,
                                        "picked": pick_flops(points, full["dev"]["accuracy"], max_drop)
                                        if "dev" in full else None}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        out[name] = entry
        if progress:
            print(f"evaluate: token reduction {name}: {entry['seconds']}s", file=sys.stderr)
    return out


def parse_configs(rates, keeps, num_layers: int) -> list:
    """--token-rates R[,R...] and --token-keep R1,...,RL (repeatable) -> [(name, TokenReduction)]."""
    configs = []
    for text in rates or ():
        for v in text.split(","):
            if v.strip():
                try:
                    r = float(v)
                except ValueError:
                    raise InputError(f"--token-rates takes comma-separated rates in (0, 1], got {text!r}") from None
                configs.append((f"rate {r:g}", TokenReduction.geometric(r, num_layers)))
    for text in keeps or ():
        try:
            vals = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--token-keep takes comma-separated ratios in (0, 1], got {text!r}") from None
        tr = TokenReduction(vals)
        tr.check(num_layers)
        configs.append(("keep " + ",".join(f"{r:g}" for r in vals), tr))
    return configs


def table_rows(full: dict, base_policies: dict, reductions: dict, max_drop: float, split: str = "test") -> list:
    """Rows (config, policy, metrics) for printing / docs: the unreduced model and its policies
    (re-picked by FLOPs, as the configurations are), then each configuration."""
    rows = [("none", "full model", full[split])]
    for pname, entry in base_policies.items():
        picked = pick_flops(entry["points"], full["dev"]["accuracy"], max_drop) if "dev" in full else None
        if picked:
            rows.append(("none", picked["policy"], picked[split]))
    for name, entry in reductions.items():
        rows.append((name, "full depth", entry["full"][split]))
        for pname, pe in entry["policies"].items():
            if pe["picked"]:
                rows.append((name, pe["picked"]["policy"], pe["picked"][split]))
            else:
                rows.append((name, f"{pname}: none within the drop", None))
    return rows


def print_table(rows, out=sys.stdout) -> None:
    print(f"{'tokens':<30} {'policy':<34} {'acc':>7} {'F1':>7} {'layers':>7} {'FLOPs x':>8}", file=out)
    for cfg, pol, m in rows:
        if m is None:
            print(f"{cfg:<30} {pol:<34}", file=out)
            continue
        print(f"{cfg:<30} {pol[:34]:<34} {100 * m['accuracy']:7.2f} {100 * m['macro_f1']:7.2f} "
              f"{m['mean_layers']:7.2f} {m['flops_ratio']:8.2f}", file=out)
