"""Property tests: the compiled C agrees with the float64 oracle.

For every head kind x policy, hypothesis draws a small random model (1-4 layers, hidden sizes that
are not multiples of 8, 1-4 attention heads, 1-5 labels incl. regression where the policy allows
it), a batch of mixed lengths and thresholds taken from the oracle's own per-layer scores (so exits
happen at various layers). Checked per sample: logits within rtol=1e-4, atol=1e-5 of
`model.astype(np.float64).classify(...)` at the exit layer; labels and exit layers identical unless
the oracle's decision margin is below 1e-4 (those are counted and reported at the end). Thresholds
are cut between the oracle's per-layer scores (traced with a policy that never exits early).

One library is compiled per (config, head kind, policy) and cached for the session; thresholds and
counts change at run time (set_policy), so examples reuse it. The libraries are compiled with a tiny
max_batch / max_tokens so batches are split into chunks too.

Instruction sets: the full matrix runs on the default build (the best this compiler and CPU have);
every other instruction set the CPU has (scalar, AVX2, AVX-512) runs a reduced one
(test_other_instruction_sets: every layer of two configs, and real exits of an entropy policy).
"""
from __future__ import annotations

import math
import os
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit.synthetic import random_model

import codegen
from codegen import build

RTOL, ATOL, NEAR = 1e-4, 1e-5, 1e-4
EXAMPLES = int(os.environ.get("REFEXIT_PROPS_EXAMPLES", "6"))      # per head kind x policy
MAX_LEN, MAX_BATCH, MAX_TOKENS = 16, 3, 24

# Small configurations: odd hidden sizes (SIMD tails), 1-4 heads, both GELUs, ReLU, another eps.
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "b": dict(num_layers=2, hidden=30, heads=2, intermediate=37, num_labels=3, hidden_act="gelu_new", seed=12),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
    "d": dict(num_layers=1, hidden=30, heads=1, intermediate=19, num_labels=4, seed=14),
    "r": dict(num_layers=4, hidden=18, heads=2, intermediate=27, num_labels=1, hidden_act="relu", seed=15),
    "s": dict(num_layers=3, hidden=44, heads=4, intermediate=33, num_labels=1, seed=16,
              final_kind="shared_pooler"),
}
FASTBERT = {"a": (20, 2), "b": (12, 4), "c": (20, 4), "d": (9, 3), "r": (12, 2), "s": (20, 4)}
HEAD_KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert", "scalar_mix")
POLICIES = ("entropy", "norm_entropy", "max_prob", "learned", "ponder", "patience", "window", "static")
REGRESSION_OK = ("learned", "ponder", "patience", "window", "static")

DEFAULT_ISA = build.resolve_isa(build.compiler())
OTHER_ISAS = [i for i in build.host_isas(build.compiler()) if i != DEFAULT_ISA and i not in build.BF16_ISAS]

STATS = Counter()
_MODELS: dict = {}
_COMPILED: dict = {}


def _summary() -> str:
    return (f"{STATS['samples']} samples compared with the float64 oracle in {STATS['examples']} "
            f"examples ({STATS['early']} exited before the last layer); {STATS['near']} near the threshold (oracle margin < {NEAR}), of which "
            f"{STATS['near_differ']} exited at another layer or with another label; "
            f"{STATS['compiles']} libraries compiled; near by policy: "
            + (", ".join(f"{k[5:]} {v}" for k, v in sorted(STATS.items()) if k.startswith("near ")) or "none"))


class _Report:
    """Prints the near-threshold count in pytest's terminal summary (after the captured output)."""

    def pytest_terminal_summary(self, terminalreporter):
        if STATS["samples"]:
            terminalreporter.write_sep("-", "codegen property tests")
            terminalreporter.write_line(_summary())


@pytest.fixture(scope="module", autouse=True)
def report_near_threshold(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("codegen-props-report"):
        pm.register(_Report(), "codegen-props-report")
    yield
    print("\ncodegen props: " + _summary())


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("codegen_props")


def configs_for(kind: str, policy: str) -> list[str]:
    """Two configs per case, spread over the pool: a classification one, and a regression one where
    the policy allows it (else another classification one)."""
    cls = ["a", "b", "c", "d"]
    i = HEAD_KINDS.index(kind) + POLICIES.index(policy)
    second = ("r" if i % 2 else "s") if policy in REGRESSION_OK else cls[(i + 2) % 4]
    return [cls[i % 4], second]


def get_model(cfg: str, kind: str):
    key = (cfg, kind)
    if key not in _MODELS:
        c = dict(CONFIGS[cfg])
        w, h = FASTBERT[cfg]
        _MODELS[key] = random_model(head_kind=kind, fastbert_width=w, fastbert_heads=h,
                                    l2norm=(kind == "mean_linear" and cfg in ("a", "c", "r")), vocab_size=97,
                                    max_position=40, ponder_hidden=5, scale=1.5, **c)
    return _MODELS[key]


def base_policy(name: str, C: int, L: int):
    """A policy of kind `name` that never exits early (to trace every layer's score)."""
    tau = 0.05 if C == 1 else None
    return {"entropy": lambda: refexit.Entropy(-1.0), "norm_entropy": lambda: refexit.NormEntropy(-1.0),
            "max_prob": lambda: refexit.MaxProb(2.0, temperatures=np.linspace(0.7, 1.6, L)),
            "learned": lambda: refexit.Learned(-1.0), "ponder": lambda: refexit.Ponder(2.0),
            "patience": lambda: refexit.Patience(0, tau=tau), "window": lambda: refexit.Window(L + 1, tau=tau),
            "static": lambda: refexit.Static(L)}[name]()


def get_compiled(cfg: str, kind: str, policy: str, build_root, isa: str | None = None):
    key = (cfg, kind, policy, isa)
    if key not in _COMPILED:
        model = get_model(cfg, kind)
        pol = base_policy(policy, model.num_labels, model.num_layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            _COMPILED[key] = codegen.compile_model(model, pol, build_root / f"{cfg}_{kind}_{policy}_{isa}",
                                                   prefix=f"p{cfg}_{kind}_{policy}", max_length=MAX_LEN,
                                                   max_batch=MAX_BATCH, max_tokens=MAX_TOKENS, isa=isa)
        STATS["compiles"] += 1
    return _COMPILED[key]


@st.composite
def batches(draw, vocab: int, types: int = 2):
    B = draw(st.integers(1, 7))
    lengths = draw(st.lists(st.integers(1, MAX_LEN), min_size=B, max_size=B))
    T = max(lengths)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = rng.integers(0, vocab, (B, T)) * mask
    ids[:, 0] = 2                                            # [CLS]
    type_ids = rng.integers(0, types, (B, T)) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}


def cut_between(draw, values, label: str) -> float:
    """A threshold between two neighbouring distinct scores (or beyond the extremes), so that
    every exit pattern is reachable and no decision sits exactly on the threshold."""
    u = np.unique(values[np.isfinite(values)])
    if u.size == 0:
        return 0.5
    cuts = np.concatenate([[u[0] - 0.05], (u[:-1] + u[1:]) / 2, [u[-1] + 0.05]])
    return float(cuts[draw(st.integers(0, len(cuts) - 1), label=label)])


def policy_from_scores(draw, name: str, model, scores: np.ndarray, base):
    """A policy of kind `name` whose threshold(s) fall between the oracle's scores [B, L-1]."""
    L = model.num_layers
    if name in ("patience", "window", "static"):
        lo = {"patience": 0, "window": 1, "static": 1}[name]
        n = draw(st.integers(lo, max(lo, L)), label="count")
        return {"patience": lambda: refexit.Patience(n, tau=base.tau),
                "window": lambda: refexit.Window(n, tau=base.tau),
                "static": lambda: refexit.Static(min(n, L))}[name]()
    if L == 1:
        thr = 0.5
    elif draw(st.booleans(), label="per_layer"):
        thr = [cut_between(draw, scores[:, i], f"cut {i + 1}") for i in range(L - 1)]
    else:
        thr = cut_between(draw, scores, "cut")
    if name == "norm_entropy":
        return refexit.NormEntropy(thr, inclusive=base.inclusive)
    if name == "max_prob":
        return refexit.MaxProb(thr, temperatures=base.temperatures)
    return type(base)(thr)


def oracle_scores(model64, enc, base) -> np.ndarray:
    """[B, L-1] per-layer scores of a policy that never exits early."""
    L = model64.num_layers
    out = model64.classify(enc, base, trace=True)
    s = np.full((len(out.exit_layers), max(L - 1, 1)), np.nan)
    for b, tr in enumerate(out.per_layer):
        for t in tr:
            if t.layer < L:
                s[b, t.layer - 1] = t.score
    return s[:, :L - 1]


def compare(cm, model, policy, enc, what: str):
    """C vs float64 oracle on one batch; returns (checked samples, near-threshold samples)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm.set_policy(policy)
        ref = model.astype(np.float64).classify(enc, policy)
    got = cm.classify(enc)
    near = ref.margins < NEAR
    STATS["near"] += int(near.sum())
    differ = (got.exit_layers != ref.exit_layers) | (got.labels != ref.labels)
    STATS["near_differ"] += int((differ & near).sum())
    if near.any():
        STATS[f"near {policy.name}"] += int(near.sum())
    bad = differ & ~near
    assert not bad.any(), (
        f"{what} {policy!r}: samples {np.flatnonzero(bad).tolist()} differ: C exits "
        f"{got.exit_layers[bad].tolist()} labels {got.labels[bad].tolist()}, oracle exits "
        f"{ref.exit_layers[bad].tolist()} labels {ref.labels[bad].tolist()} margins {ref.margins[bad].tolist()}")
    same = got.exit_layers == ref.exit_layers
    np.testing.assert_allclose(got.logits[same], ref.logits[same], rtol=RTOL, atol=ATOL,
                               err_msg=f"{what} {policy!r}: logits at the exit layer")
    np.testing.assert_array_equal(got.flops[same], ref.flops[same], err_msg=f"{what}: flops")
    np.testing.assert_array_equal(got.full_flops, ref.full_flops)
    ok_m = same & np.isfinite(ref.margins)
    np.testing.assert_allclose(got.margins[ok_m], ref.margins[ok_m], rtol=1e-3, atol=1e-4,
                               err_msg=f"{what}: margins")
    assert np.all(np.isinf(got.margins[same & np.isinf(ref.margins)]))
    STATS["samples"] += len(ref.exit_layers)
    STATS["early"] += int(np.sum(ref.exit_layers < model.num_layers))
    return got


def assert_alone_as_in_batch(cm, enc, got):
    """A sample's result does not depend on its batch mates (bitwise): the first and the last sample
    of the batch `enc`, classified alone, give the logits and exit layers the batch gave them (got)."""
    B = len(got.exit_layers)
    for b in sorted({0, B - 1}):
        n = int(enc["attention_mask"][b].sum())
        one = cm.classify({k: v[b:b + 1, :n] for k, v in enc.items()})
        np.testing.assert_array_equal(one.logits[0], got.logits[b])
        assert one.exit_layers[0] == got.exit_layers[b]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_compiled_matches_oracle(kind, policy, build_root):
    cfgs = configs_for(kind, policy)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(cfgs), label="config")
        model = get_model(cfg, kind)
        cm = get_compiled(cfg, kind, policy, build_root)
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        base = base_policy(policy, model.num_labels, model.num_layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            scores = oracle_scores(model.astype(np.float64), enc, base) if policy not in (
                "patience", "window", "static") else None
        pol = policy_from_scores(data.draw, policy, model, scores, base)
        got = compare(cm, model, pol, enc, f"config {cfg} {kind}")
        STATS["examples"] += 1
        assert_alone_as_in_batch(cm, enc, got)

    check()


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_layer_matches_oracle(kind, build_root):
    """Static(k) for every k: the C logits after each layer match the oracle's."""
    for cfg in ("c", "r"):
        model = get_model(cfg, kind)
        cm = get_compiled(cfg, kind, "static", build_root)
        rng = np.random.default_rng(5)
        lengths = np.array([1, 7, MAX_LEN, 3, 11])
        mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
        enc = {"input_ids": rng.integers(0, model.config.vocab_size, mask.shape) * mask,
               "attention_mask": mask, "token_type_ids": rng.integers(0, 2, mask.shape) * mask}
        for k in range(1, model.num_layers + 1):
            got = compare(cm, model, refexit.Static(k), enc, f"config {cfg} {kind} layer {k}")
            assert np.all(got.exit_layers == k)


@pytest.mark.parametrize("isa", OTHER_ISAS)
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_other_instruction_sets(kind, isa, build_root):
    """The reduced matrix on an instruction set other than the default: Static(k) at every layer of
    two configs, then an entropy policy with thresholds between the oracle's scores."""
    for cfg in ("c", "r"):
        model = get_model(cfg, kind)
        cm = get_compiled(cfg, kind, "static", build_root, isa)
        assert cm.ffi.string(getattr(cm.lib, f"{cm.prefix}_isa")()).decode() == isa
        rng = np.random.default_rng(7)
        lengths = np.array([MAX_LEN, 1, 9, 4])
        mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
        enc = {"input_ids": rng.integers(0, model.config.vocab_size, mask.shape) * mask,
               "attention_mask": mask, "token_type_ids": rng.integers(0, 2, mask.shape) * mask}
        for k in range(1, model.num_layers + 1):
            got = compare(cm, model, refexit.Static(k), enc, f"{isa} config {cfg} {kind} layer {k}")
            assert np.all(got.exit_layers == k)
    cfg = "c"
    model = get_model(cfg, kind)
    cm = get_compiled(cfg, kind, "entropy", build_root, isa)
    rng = np.random.default_rng(11)
    mask = (np.arange(MAX_LEN)[None] < rng.integers(1, MAX_LEN + 1, 12)[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, model.config.vocab_size, mask.shape) * mask, "attention_mask": mask}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        scores = oracle_scores(model.astype(np.float64), enc, refexit.Entropy(-1.0))
    thr = [float(np.quantile(scores[:, i], 0.5)) for i in range(model.num_layers - 1)]
    compare(cm, model, refexit.Entropy(thr), enc, f"{isa} entropy")


def test_exits_happen_at_various_layers(build_root):
    """The threshold choice really spreads exits (else the property tests check little)."""
    model = get_model("c", "pooler_linear")
    cm = get_compiled("c", "pooler_linear", "entropy", build_root)
    rng = np.random.default_rng(0)
    mask = np.ones((40, 9), np.int64)
    enc = {"input_ids": rng.integers(0, model.config.vocab_size, mask.shape), "attention_mask": mask}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        scores = oracle_scores(model.astype(np.float64), enc, refexit.Entropy(-1.0))
    thr = [float(np.quantile(scores[:, i], 0.4)) for i in range(model.num_layers - 1)]
    got = compare(cm, model, refexit.Entropy(thr), enc, "spread")
    assert len(set(got.exit_layers.tolist())) >= 3, got.exit_layers


def test_set_threshold_inf_and_edge_values(build_root):
    """Thresholds at +-inf: never / always exit, as the oracle."""
    model = get_model("a", "mean_linear")
    cm = get_compiled("a", "mean_linear", "max_prob", build_root)
    mask = np.ones((3, 5), np.int64)
    enc = {"input_ids": np.arange(15).reshape(3, 5), "attention_mask": mask}
    temps = np.linspace(0.7, 1.6, model.num_layers)
    for thr, layer in ((math.inf, model.num_layers), (-math.inf, 1)):
        got = compare(cm, model, refexit.MaxProb(thr, temperatures=temps), enc, f"thr {thr}")
        assert np.all(got.exit_layers == layer)


def test_argmax_ties_go_to_the_lowest_index(build_root):
    """Exactly tied logits (zero fc weights, equal biases): the label is the lowest tied index, and
    patience compares those labels (lowest-index ties agree across layers; highest would not)."""
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=3,
                         head_kind="pooler_linear")
    biases = {0: [1.0, 1.0, 0.0], 1: [1.0, 0.0, 1.0], 2: [0.5, 0.5, 0.5]}
    for i, head in enumerate(model.exits.heads):
        head.params["fc.w"][:] = 0
        head.params["fc.b"][:] = biases[i]
    enc = {"input_ids": np.array([[2, 5, 7, 3], [2, 9, 3, 0]]), "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]])}
    cm = codegen.compile_model(model, refexit.Patience(1), build_root / "ties", prefix="ties")
    ref = model.astype(np.float64).classify(enc, refexit.Patience(1))
    got = cm.classify(enc)
    assert ref.exit_layers.tolist() == [2, 2] and got.exit_layers.tolist() == [2, 2]
    assert got.labels.tolist() == [0, 0]
    with pytest.warns(refexit.ExitWarning, match="full model"):
        cm.set_policy(refexit.Patience(0))                   # runs the full model: 3-way tie
    full = cm.classify(enc)
    assert full.exit_layers.tolist() == [3, 3] and full.labels.tolist() == [0, 0]
