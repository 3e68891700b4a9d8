"""EdgeBERT exit prediction (methods.md, "Exit rules"): the rule in the oracle, the exit table
(training, the exits file, the weights file), the evaluation report and the compiled C against
the oracle (heads between layer 1 and the predicted layer are not evaluated, in both)."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import nn
from refexit.checkpoint import load_checkpoint, save_exits
from refexit.errors import CheckpointError, InputError
from refexit.heads import ExitParams
from refexit.synthetic import random_model, save_model
from refexit.train import evaluate as E
from refexit.train import features as F
from refexit.train.exits import exit_table

from test_codegen_props import (EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, assert_alone_as_in_batch, batches,
                                compare, cut_between)
from test_policies import decide_seq

L, C = 4, 3


def logits_with_entropy(h: float) -> np.ndarray:
    """Logits [C] whose softmax has entropy h (nats), by bisection on a one-parameter family."""
    lo, hi = 0.0, 60.0
    for _ in range(200):
        mid = (lo + hi) / 2
        z = np.array([mid, 0.0, 0.0])
        lo, hi = (mid, hi) if float(nn.entropy(z[None])[0]) > h else (lo, mid)
    return np.array([lo, 0.0, 0.0])


TABLE = np.array([[0.2, 0.10, 0.05],            # rows: layer-1 entropy, predicted H of layers 2, 3
                  [0.6, 0.50, 0.20],
                  [1.0, 0.90, 0.80]])


def exits_with(table):
    return ExitParams([None] * L, temperatures=np.ones(L), edge_table=np.asarray(table, np.float64))


def path(policy, h1, later=(0.0, 0.0)):
    """Exit decisions of one sample whose layer-1 entropy is h1 (later layers: entropies `later`)."""
    zs = [logits_with_entropy(h1)] + [logits_with_entropy(h) for h in later]
    return decide_seq(policy, zs, exits_with(TABLE))


def test_predicted_layer_from_the_nearest_row():
    S = [0.3, 0.3, 0.3]
    assert path(refexit.PredictedExit(S), 0.25)[0][0] is True               # H1 < S1: exits at 1
    pol = refexit.PredictedExit(S)
    res = path(pol, 0.55)                                                   # row 1: 0.50 >= S2, 0.20 < S3
    assert [r[0] for r in res] == [False, False, True]
    pol = refexit.PredictedExit(S)
    state = pol.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        pol.check(L, C, exits_with(TABLE))
    pol.decide(1, logits_with_entropy(0.9), None, exits_with(TABLE), state)  # row 2: nothing below S
    assert state["target"] == L
    assert not pol.evaluates_head(2, state) and not pol.evaluates_head(3, state)
    # the prediction checks nothing in between: a confident layer 2 does not exit
    assert [r[0] for r in path(refexit.PredictedExit(S), 0.55, later=(0.0, 0.9))] == [False, False, True]
    # check_between: the entropy rule may exit before the predicted layer
    assert [r[0] for r in path(refexit.PredictedExit(S, check_between=True), 0.55, later=(0.0, 0.9))][:2] == \
        [False, True]


def test_strictness_ties_and_margin():
    h = 0.4                                                                 # equidistant to rows 0 and 1
    z = logits_with_entropy(h)
    hz = float(nn.entropy(z[None])[0])
    pol = refexit.PredictedExit([hz, 0.15, 0.3])
    ex, score, margin = decide_seq(pol, [z], exits_with(TABLE))[0]
    assert ex is False and score == hz                                      # H1 == S1: strict, no exit
    pol = refexit.PredictedExit([0.1, 0.15, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        pol.check(L, C, exits_with(TABLE))
    target, m = pol.predict(hz, exits_with(TABLE), L)
    d = np.abs(TABLE[:, 0] - hz)
    r = int(np.argmin(d))
    assert r == int(np.flatnonzero(d == d.min())[0])                       # ties: the first row
    assert target == (2 if TABLE[r, 1] < 0.15 else 3 if TABLE[r, 2] < 0.3 else L)
    assert m <= np.sort(d)[1] - d[r] + 1e-15


def test_edgebert_bad_settings_raise():
    for bad in (float("nan"), [0.2, float("nan"), 0.1]):
        with pytest.raises(InputError, match="NaN"):
            refexit.PredictedExit(bad)
    with pytest.raises(InputError, match="check_between"):
        refexit.PredictedExit(0.3, check_between="yes")
    with pytest.raises(InputError, match="exit table"):
        refexit.PredictedExit(0.3).check(L, C, ExitParams([None] * L, temperatures=np.ones(L)))
    with pytest.raises(InputError, match="shape"):
        refexit.PredictedExit(0.3).check(L, C, exits_with(np.zeros((3, 2))))
    with pytest.raises(InputError, match="2 classes"):
        refexit.PredictedExit(0.3).check(L, 1, exits_with(TABLE))
    with pytest.warns(refexit.ExitWarning, match="never fire"):
        refexit.PredictedExit(0.0).check(L, C, exits_with(TABLE))
    with pytest.warns(refexit.ExitWarning, match="always fires"):
        refexit.PredictedExit(math.log(C) + 0.1).check(L, C, exits_with(TABLE))


def test_exit_table_bins_training_entropies():
    rng = np.random.default_rng(0)
    outs = [(None, rng.normal(size=(50, C)) * (i + 1)) for i in range(L)]
    t = exit_table(outs, rows=7)
    H = np.stack([nn.entropy(z) for _, z in outs[:-1]], axis=1)            # [N, L-1]
    order = np.argsort(H[:, 0], kind="stable")
    assert t.shape == (7, L - 1)
    assert np.all(np.diff(t[:, 0]) >= 0)                                    # rows by rising entropy
    np.testing.assert_allclose(t[0], H[order[:8]].mean(0))                  # 50 = 8 * 1 + 7 * 6
    assert exit_table(outs[:1] * 2 + outs[2:], rows=200).shape == (50, L - 1)


def test_exit_table_round_trip_and_bad_files(tmp_path):
    model = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=3, seed=1,
                         head_kind="mean_linear", edge_rows=4)
    save_model(model, tmp_path / "m")
    _, _, ep, _ = load_checkpoint(tmp_path / "m")
    np.testing.assert_array_equal(ep.edge_table, model.exits.edge_table)
    for bad in (np.zeros((4, 3)), np.full((4, 2), np.inf), np.zeros((0, 2))):
        save_exits(tmp_path / "bad.safetensors",
                   ExitParams(model.exits.heads, None, None, np.ones(3), None, bad), model.label_names)
        with pytest.raises(CheckpointError, match="edge_table"):
            load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")


def test_replay_and_prediction_report():
    m = random_model(num_layers=4, hidden=16, heads=2, intermediate=24, num_labels=3, seed=0,
                     head_kind="mean_linear", edge_rows=6)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(40)]
    y = rng.integers(0, 3, 40)
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    out = E.LayerOutputs(m, f)
    enc = m.tokenizer(texts, max_length=32)
    for pol in E.sweep_policies("edgebert", 4, 3)[::4]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            want = m.classify(enc, pol)
            got = E.simulate(m, pol, out)
        assert np.array_equal(got.exit_layers, want.exit_layers) and np.array_equal(got.flops, want.flops)
    rep = E.evaluate(m, {"dev": f}, {"dev": y}, policies=("edgebert",), progress=False)
    for pt in rep["policies"]["edgebert"]["points"]:
        p = pt["dev"]["prediction"]
        if p["predicted"]:
            assert p["exact"] + p["earlier"] + p["later"] == pytest.approx(1.0)
        assert p["head_flops_saved"] >= -1e-12                               # never more heads than entropy


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
    "d": dict(num_layers=1, hidden=30, heads=1, intermediate=19, num_labels=4, seed=14),
}
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert")
_MODELS, _COMPILED = {}, {}


def get(cfg, kind, build_root, between=False):
    if (cfg, kind) not in _MODELS:
        _MODELS[cfg, kind] = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97,
                                          max_position=40, scale=1.5, edge_rows=5, **CONFIGS[cfg])
    model = _MODELS[cfg, kind]
    if (cfg, kind, between) not in _COMPILED:
        import codegen
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            _COMPILED[cfg, kind, between] = codegen.compile_model(
                model, refexit.PredictedExit(-1.0, check_between=between),
                build_root / f"edge_{cfg}_{kind}_{between}", prefix=f"edge_{cfg}_{kind}_{int(between)}",
                max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    return model, _COMPILED[cfg, kind, between]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("edgebert")


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_edgebert_matches_oracle(kind, build_root):
    """Thresholds cut between the oracle's per-layer entropies and the table's values; C vs the
    float64 oracle per sample (exit layer, logits, FLOPs with the skipped heads, margins), and a
    sample's result does not depend on its batch mates (bitwise)."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        between = data.draw(st.booleans(), label="check_between")
        model, cm = get(cfg, kind, build_root, between)
        Lm = model.num_layers
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            tr = model.astype(np.float64).classify(enc, refexit.Entropy(-1.0), trace=True)
        scores = np.array([[t.score for t in s if t.layer < Lm] for s in tr.per_layer]).reshape(len(tr.per_layer), -1)
        table = model.exits.edge_table.astype(np.float64)
        if Lm == 1:
            thr = 0.5
        else:
            thr = [cut_between(data.draw, np.concatenate([scores[:, i], table[:, i] if i else []]), f"cut {i + 1}")
                   for i in range(Lm - 1)]
        got = compare(cm, model, refexit.PredictedExit(thr, check_between=between), enc,
                      f"config {cfg} {kind} edgebert")
        assert_alone_as_in_batch(cm, enc, got)

    check()


def test_compiled_edgebert_settings(build_root):
    model, cm = get("c", "mean_linear", build_root)
    with pytest.raises(InputError, match="check_between"):
        cm.set_policy(refexit.PredictedExit(0.5, check_between=True))       # compiled in
    with pytest.raises(InputError, match="NaN"):
        cm.set_thresholds([0.1, float("nan"), 0.2])
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    import codegen
    with pytest.raises(InputError, match="exit table"):
        codegen.compile_model(bare, refexit.PredictedExit(0.5), build_root / "edge_bare", prefix="edge_bare")


@pytest.mark.parametrize("policy", [refexit.PredictedExit([0.6, 0.5, 0.4]),
                                    refexit.PredictedExit(0.5, check_between=True),
                                    refexit.DistanceEntropy(0.6, lam=0.5)])
def test_oracle_results_do_not_depend_on_the_batch(policy):
    """Each sample alone gives bit for bit what it gets inside a mixed-length batch."""
    m = random_model(num_layers=4, hidden=16, heads=2, intermediate=24, num_labels=3, seed=3,
                     head_kind="pooler_linear", prototypes=True, edge_rows=6, scale=1.5)
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(9)]
    enc = m.tokenizer(texts, max_length=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        batch = m.classify(enc, policy)
        assert len(set(batch.exit_layers.tolist())) >= 2, batch.exit_layers
        for b, t in enumerate(texts):
            one = m.classify(m.tokenizer([t], max_length=32), policy)
            np.testing.assert_array_equal(one.logits[0], batch.logits[b])
            assert one.exit_layers[0] == batch.exit_layers[b] and one.flops[0] == batch.flops[b]
