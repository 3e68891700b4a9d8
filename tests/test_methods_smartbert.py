"""SmartBERT skip gates (methods.md, "SmartBERT"): the gate and the rule in the oracle, the exits file,
training on the frozen backbone (gradients, the loss's push towards skipping), the one-pass replay
`evaluate` uses, and the compiled C against the float64 oracle (per sample, batch-independent)."""
import importlib.util
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import nn, skipgates
from refexit.checkpoint import load_checkpoint, save_exits
from refexit.errors import CheckpointError, InputError
from refexit.synthetic import random_model, save_model
from refexit.train import skipgates as SG

from test_codegen_props import (ATOL, EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, NEAR, RTOL,
                                assert_alone_as_in_batch, batches, cut_between)


def model(L=3, H=16, C=3, seed=1, gate_scale=8.0, **kw):
    args = dict(num_layers=L, hidden=H, heads=2, intermediate=20, num_labels=C, seed=seed, head_kind="mean_linear",
                vocab_size=60, max_position=40, gates=8, gate_scale=gate_scale)
    args.update(kw)
    return random_model(**args)


def enc_of(rows):
    T = max(len(r) for r in rows)
    ids, mask = np.zeros((len(rows), T), np.int64), np.zeros((len(rows), T), np.int64)
    for b, r in enumerate(rows):
        ids[b, :len(r)], mask[b, :len(r)] = r, 1
    return {"input_ids": ids, "attention_mask": mask}


def random_enc(seed, B=6, vocab=60):
    rng = np.random.default_rng(seed)
    return enc_of([np.r_[2, rng.integers(4, vocab, rng.integers(1, 12))] for _ in range(B)])


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


# ---------------------------------------------------------------- the gate and the rule
def test_gate_is_smartberts_module():
    """Linear(H->W), tanh, attention WITHOUT an output projection (q, k, v only), token 0's row,
    Linear(W->1), sigmoid; written out here with full attention over every query."""
    rng = np.random.default_rng(0)
    H, W, nh, T = 10, 8, 2, 5
    p = skipgates.init_gates(1, H, rng, W)[0]
    x = rng.normal(size=(T, H))
    y = np.tanh(x @ p["proj.w"].T + p["proj.b"])
    q, k, v = (y @ p[f"{n}.w"].T + p[f"{n}.b"] for n in "qkv")
    d = W // nh
    ctx = np.concatenate([nn.softmax(q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / np.sqrt(d))
                          @ v[:, h * d:(h + 1) * d] for h in range(nh)], axis=1)          # [T, W]
    want = 1 / (1 + np.exp(-(ctx[0] @ p["out.w"][0] + p["out.b"][0])))
    assert skipgates.gate_prob(p, x, nh) == pytest.approx(want, rel=1e-12)
    # the batched (padded) training forward gives the same
    xp = np.zeros((2, 7, H))
    xp[1, :T] = x
    g, _ = SG.gate_fwd(p, xp.reshape(-1, H), np.arange(7)[None, :] < np.array([[2], [T]]), nh)
    assert g[1] == pytest.approx(want, rel=1e-12)


def test_skip_is_inclusive_and_a_skipped_layer_leaves_the_state_and_checks_nothing():
    m = model().astype(np.float64)
    enc = random_enc(3, B=1)
    (ids, types), = m.rows(enc)
    x0 = m.embed(ids, types)
    g1 = m.exits.gate_prob(1, x0)
    # gate exactly at g_1: skipped (>=); just above: runs
    r = m.classify(enc, quiet(lambda: refexit.SkipEntropy(0.0, gate=g1)), trace=True)
    assert r.layers_run[0] <= 2 and not any(t.layer == 1 for t in r.per_layer[0])
    r2 = m.classify(enc, quiet(lambda: refexit.SkipEntropy(0.0, gate=float(np.nextafter(g1, 2)))), trace=True)
    assert any(t.layer == 1 for t in r2.per_layer[0])
    # every layer skipped (gate tiny): the final classifier on the embeddings, no layer run
    r = quiet(m.classify, enc, refexit.SkipEntropy(10.0, gate=1e-300))
    z, _ = m.head(m.num_layers, x0, np.zeros((m.num_layers - 1, x0.shape[1])))
    np.testing.assert_array_equal(r.logits[0], z)
    assert r.exit_layers.tolist() == [m.num_layers] and r.layers_run.tolist() == [0] and r.mean_layers == 0
    assert r.flops[0] == m.num_layers * m.exits.gate_flops(len(ids)) + m.heads[-1].flops(len(ids))
    # gate > 1: never skips -> DeeBERT's entropy rule exactly
    for S in (0.0, 0.5, 2.0):
        a = quiet(m.classify, enc, refexit.SkipEntropy(S, gate=1.5))
        b = quiet(m.classify, enc, refexit.Entropy(S))
        np.testing.assert_array_equal(a.logits, b.logits)
        assert a.exit_layers.tolist() == b.exit_layers.tolist() and a.layers_run.tolist() == b.exit_layers.tolist()


def test_path_by_hand():
    """The oracle's path for one sample written out: gate on the input, skip or run, strict entropy."""
    m = model(L=4, seed=5).astype(np.float64)
    for seed in range(6):
        enc = random_enc(seed, B=1)
        (ids, types), = m.rows(enc)
        x = m.embed(ids, types)
        S = 0.9
        run, exit_layer, z = 0, None, None
        for i in range(1, m.num_layers + 1):
            g = m.exits.gate_prob(i, x)
            if g < 0.5:
                x = m.layer(i - 1, x)
                run += 1
                if i < m.num_layers:
                    zi, _ = m.head(i, x)
                    if float(nn.entropy(zi[None])[0]) < S:
                        exit_layer, z = i, zi
                        break
            if i == m.num_layers:
                exit_layer, z = i, m.head(i, x, np.zeros((i - 1, x.shape[1])))[0]
        r = m.classify(enc, refexit.SkipEntropy(S))
        assert (r.exit_layers[0], r.layers_run[0]) == (exit_layer, run), seed
        np.testing.assert_array_equal(r.logits[0], z)


def test_results_do_not_depend_on_the_batch():
    m = model(L=4, seed=2)
    enc = random_enc(7, B=7)
    pol = refexit.SkipEntropy(0.8)
    full = m.classify(enc, pol)
    assert 0 < np.mean(full.layers_run) < m.num_layers            # the gates really skip some layers
    for b in range(7):
        n = int(enc["attention_mask"][b].sum())
        one = m.classify({k: v[b:b + 1, :n] for k, v in enc.items()}, pol)
        np.testing.assert_array_equal(one.logits[0], full.logits[b])
        assert one.exit_layers[0] == full.exit_layers[b] and one.layers_run[0] == full.layers_run[b]


def test_bad_settings_raise():
    for bad in (float("nan"), [0.2, float("nan")]):
        with pytest.raises(InputError, match="NaN"):
            refexit.SkipEntropy(bad)
    for gate in (float("nan"), 0.0, -1.0, float("inf"), "0.5", True):
        with pytest.raises(InputError, match="gate"):
            refexit.SkipEntropy(0.3, gate=gate)
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="skip gates"):
        bare.classify(enc_of([[2, 5, 3]]), refexit.SkipEntropy(0.3))
    with pytest.raises(InputError, match="2 classes"):
        model(C=1).check_policy(refexit.SkipEntropy(0.3))
    with pytest.warns(refexit.ExitWarning, match="never fire"):
        model().check_policy(refexit.SkipEntropy(0.0))
    assert refexit.make_policy("smartbert", 0.3, gate=0.7).gate == 0.7


def test_gates_round_trip_through_the_exits_file_and_bad_files_are_refused(tmp_path):
    m = model()
    save_model(m, tmp_path / "m")
    _, _, ep, _ = load_checkpoint(tmp_path / "m")
    assert len(ep.gates) == 3 and ep.gate_heads == 2
    for a, b in zip(ep.gates, m.exits.gates):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    enc = random_enc(1)
    r1, r2 = m.classify(enc, refexit.SkipEntropy(0.5)), refexit.load(tmp_path / "m").classify(enc, refexit.SkipEntropy(0.5))
    np.testing.assert_array_equal(r1.logits, r2.logits)

    def refused(gates, match, heads=2):
        ep2 = refexit.ExitParams(m.exits.heads, None, None, np.ones(3), gates=gates, gate_heads=heads)
        save_exits(tmp_path / "bad.safetensors", ep2, m.label_names)
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")
    g = m.exits.gates
    refused(g[:2], "every layer")                                                     # a layer missing
    refused([g[0], g[1], {**g[2], "q.w": np.zeros((8, 7))}], r"gates\.2\.q\.w")       # misshaped
    refused([g[0], {k: v for k, v in g[1].items() if k != "out.b"}, g[2]], r"gates\.1\.out\.b")   # missing
    refused([g[0], g[1], {**g[2], "proj.b": np.full(8, np.nan)}], r"gates\.2\.proj\.b")         # not finite
    refused([g[0], g[1], {**g[2], "extra": np.zeros(3)}], r"gates\.2\.extra")       # unexpected
    refused(g, "attention heads", heads=3)                                            # 8 % 3 != 0


# ---------------------------------------------------------------- training on the frozen backbone
def test_gate_gradients_match_finite_differences():
    m = model(L=3, seed=4, gate_scale=1.0).astype(np.float64)
    rng = np.random.default_rng(0)
    gates = [{k: v.copy() for k, v in g.items()} for g in m.exits.gates]
    rows = m.rows(random_enc(2, B=4))
    x0, mask = SG.embed_batch(m, rows)
    y = rng.integers(0, 3, 4)
    cfg = SG.GateConfig(width=8, heads=2, lam=0.3)
    _, _, grads, _ = SG.loss_grads(m, gates, x0, mask, y, cfg, hard=False)
    for i in range(3):
        for k in skipgates.PARTS:
            p = gates[i][k]
            for _ in range(2):
                idx = tuple(int(rng.integers(0, s)) for s in p.shape)
                old, e = p[idx], 1e-6
                p[idx] = old + e
                lp = SG.loss_grads(m, gates, x0, mask, y, cfg, False)[0]
                p[idx] = old - e
                lm = SG.loss_grads(m, gates, x0, mask, y, cfg, False)[0]
                p[idx] = old
                assert grads[i][k][idx] == pytest.approx((lp - lm) / (2 * e), rel=1e-4, abs=1e-8), (i, k, idx)


def test_lambda_pushes_towards_skipping_and_training_is_deterministic():
    m = model(L=3, seed=6, gate_scale=1.0)
    rows = m.rows(random_enc(5, B=24))
    y = np.random.default_rng(1).integers(0, 3, 24)
    rates = {}
    for lam in (0.0, 5.0):
        cfg = SG.GateConfig(epochs=3, soft_epochs=1, lam=lam, lr=3e-2, batch_size=8, width=8, init_bias=-1.0)
        gates, log = SG.train_gates(m, rows, y, rows, y, cfg, progress=False)
        rates[lam] = log["epochs"][-1]["dev"]["mean_layers_run"]
        assert len(gates) == 3 and gates[0]["proj.w"].shape == (8, 16) and gates[0]["proj.w"].dtype == np.float32
        again, _ = SG.train_gates(m, rows, y, rows, y, cfg, progress=False)
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(gates, again) for k in a)
    assert rates[5.0] < rates[0.0]                     # a large lambda / sum g term: fewer layers run


def test_one_pass_replay_equals_classify():
    m = model(L=4, seed=8).astype(np.float64)
    enc = random_enc(11, B=9)
    out = SG.GatedOutputs(m, m.rows(enc), batch=4)
    for S in (0.0, 0.3, 0.7, 1.2):
        pol = quiet(refexit.SkipEntropy, S)
        a, b = quiet(m.classify, enc, pol), SG.simulate(m, pol, out)
        np.testing.assert_array_equal(a.exit_layers, b.exit_layers)
        np.testing.assert_array_equal(a.layers_run, b.layers_run)
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.flops, b.flops)
        np.testing.assert_allclose(a.margins, b.margins, rtol=1e-9, atol=1e-12)
    rates = SG.skip_rates(out, 0.5, SG.simulate(m, quiet(refexit.SkipEntropy, 0.0), out))
    np.testing.assert_allclose(rates, np.mean(out.g >= 0.5, axis=0))


def test_evaluate_sweeps_smartbert_from_the_gated_pass():
    from refexit.train import evaluate as E
    from refexit.train import features as F
    m = model(L=3, seed=9)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], int(rng.integers(1, 9)))) for _ in range(10)]
    y = rng.integers(0, 3, 10)
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    enc = m.tokenizer(texts, max_length=32)
    rep = E.evaluate(m, {"dev": f}, {"dev": y}, policies=("entropy", "smartbert"), progress=False,
                     gated={"dev": SG.GatedOutputs(m, m.rows(enc))})
    pts = rep["policies"]["smartbert"]["points"]
    assert len(pts) == len(rep["policies"]["entropy"]["points"]) + 1 and pts[0]["params"]["threshold"] == 0.0
    for pt in pts[::5]:
        res = quiet(m.classify, enc, refexit.SkipEntropy(pt["params"]["threshold"]))
        assert pt["dev"]["mean_layers"] == pytest.approx(res.mean_layers)
        assert pt["dev"]["accuracy"] == pytest.approx(float(np.mean(res.labels == y)))
        assert len(pt["dev"]["skip_rate"]) == 3
    rep = E.evaluate(m, {"dev": f}, {"dev": y}, policies=("smartbert",), progress=False)
    assert "gated pass" in rep["skipped"]["smartbert"]


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
}
KINDS = ("pooler_linear", "mean_linear", "fastbert")
_MODELS, _COMPILED = {}, {}


def get(cfg, kind, build_root, precision="fp32"):
    if (cfg, kind) not in _MODELS:
        _MODELS[cfg, kind] = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97,
                                          max_position=40, scale=1.5, gates=6, gate_heads=3, gate_scale=6.0,
                                          l2norm=kind == "mean_linear", **CONFIGS[cfg])
    m = _MODELS[cfg, kind]
    if (cfg, kind, precision) not in _COMPILED:
        import codegen
        _COMPILED[cfg, kind, precision] = quiet(codegen.compile_model, m, refexit.SkipEntropy(-1.0),
                                                build_root / f"sb_{cfg}_{kind}_{precision}",
                                                prefix=f"sb_{cfg}_{kind}_{precision}", max_length=MAX_LEN,
                                                max_batch=MAX_BATCH, max_tokens=MAX_TOKENS, precision=precision)
    return m, _COMPILED[cfg, kind, precision]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("smartbert")


def compare(cm, m, pol, enc, what):
    """C vs float64 oracle: exit layers, labels, layers run and FLOPs equal except where the oracle's
    margin (to the entropy threshold or to the gate's 1/2) is below NEAR; logits at equal exits
    within tolerance."""
    quiet(cm.set_policy, pol)
    ref = quiet(m.astype(np.float64).classify, enc, pol)
    got = cm.classify(enc)
    near = ref.margins < NEAR
    bad = ((got.exit_layers != ref.exit_layers) | (got.labels != ref.labels)
           | (got.layers_run != ref.layers_run)) & ~near
    assert not bad.any(), f"{what} {pol!r}: samples {np.flatnonzero(bad).tolist()} differ"
    # the compiled result counts the layers it ran (not its exit layer), and its FLOPs are the
    # oracle's: every layer run, every gate evaluated, the heads after the layers run
    assert got.layers_run.dtype == np.int64 and got.mean_layers == np.mean(got.layers_run)
    np.testing.assert_array_equal(got.flops[~near], ref.flops[~near], err_msg=f"{what}: flops")
    np.testing.assert_array_equal(got.full_flops, ref.full_flops)
    same = got.exit_layers == ref.exit_layers
    np.testing.assert_allclose(got.logits[same], ref.logits[same], rtol=RTOL, atol=ATOL, err_msg=what)
    ok = same & np.isfinite(ref.margins)
    np.testing.assert_allclose(got.margins[ok], ref.margins[ok], rtol=1e-3, atol=1e-4, err_msg=what)
    return got, ref


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_smartbert_matches_oracle(kind, build_root):
    """Entropy thresholds cut between the oracle's own entropies (per layer or one), the gates as
    drawn (some layers skipped, some not); C vs the float64 oracle per sample; a sample alone gives
    the bits it gets in the batch."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        m, cm = get(cfg, kind, build_root)
        enc = data.draw(batches(m.config.vocab_size), label="batch")
        tr = quiet(m.astype(np.float64).classify, enc, refexit.SkipEntropy(-1.0), trace=True)
        scores = np.array([t.score for s in tr.per_layer for t in s if t.layer < m.num_layers])
        L = m.num_layers
        thr = ([cut_between(data.draw, scores, f"cut {i + 1}") for i in range(L - 1)]
               if data.draw(st.booleans(), label="per_layer") else cut_between(data.draw, scores, "cut"))
        got, ref = compare(cm, m, refexit.SkipEntropy(thr), enc, f"config {cfg} {kind}")
        assert_alone_as_in_batch(cm, enc, got)
        assert_layers_alone_as_in_batch(cm, enc, got)

    check()


def assert_layers_alone_as_in_batch(cm, enc, got):
    """The layers a sample ran (and its FLOPs) do not depend on its batch mates."""
    for b in sorted({0, len(got.exit_layers) - 1}):
        n = int(enc["attention_mask"][b].sum())
        one = cm.classify({k: v[b:b + 1, :n] for k, v in enc.items()})
        assert one.layers_run[0] == got.layers_run[b] and one.flops[0] == got.flops[b]


def test_compiled_skips_really_happen_and_mixed_batches_agree(build_root):
    """Over many random texts: some samples skip some layers and others not in the same batch, and
    the C agrees with the oracle on every exit away from a threshold."""
    m, cm = get("c", "mean_linear", build_root)
    rng = np.random.default_rng(0)
    enc = enc_of([np.r_[2, rng.integers(4, 97, rng.integers(1, MAX_LEN - 1))] for _ in range(40)])
    got, ref = compare(cm, m, refexit.SkipEntropy(0.0), enc, "no exits")
    assert 0 < ref.layers_run.min() < m.num_layers and len(set(ref.layers_run.tolist())) > 1
    assert np.all(got.exit_layers == m.num_layers)
    assert np.any(got.layers_run < got.exit_layers)                 # the compiled count is not the exit layer
    compare(cm, m, refexit.SkipEntropy(1.2), enc, "exits")


def test_compiled_layer_flags_and_the_run_calls_of_other_policies(build_root):
    """`_classify_batch_run`: layer_ran [B, L] marks the layers run (their count is layers_run; none
    after the exit; the exit layer itself ran unless it is the last); the text path (classify_text)
    reports what the padded path does. Libraries of other policies export the same calls, with
    layers_run = exit layer and every layer up to it marked."""
    import codegen
    m, cm = get("c", "mean_linear", build_root)
    rng = np.random.default_rng(3)
    rows = [np.r_[2, rng.integers(4, 97, rng.integers(1, MAX_LEN - 1))] for _ in range(25)]
    enc = enc_of(rows)
    quiet(cm.set_policy, refexit.SkipEntropy(1.2))
    want = cm.classify(enc)
    lengths = np.array([len(r) for r in rows], np.int32)
    ids = np.concatenate(rows).astype(np.int32)
    run, ran = np.full(len(rows), -1, np.int32), np.full((len(rows), m.num_layers), 7, np.uint8)
    out = cm.classify_raw(ids, np.zeros_like(ids), lengths, run, ran)
    np.testing.assert_array_equal(out["exit_layer"], want.exit_layers)
    np.testing.assert_array_equal(run, want.layers_run)
    assert set(np.unique(ran).tolist()) <= {0, 1}
    np.testing.assert_array_equal(ran.sum(axis=1), run)
    L = m.num_layers
    for b, e in enumerate(out["exit_layer"]):
        assert not ran[b, e:].any() and (e == L or ran[b, e - 1] == 1)
    assert any((ran[b, :e - 1] == 0).any() for b, e in enumerate(out["exit_layer"]))   # skips before an exit
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], int(rng.integers(1, 9)))) for _ in range(8)]
    text = cm.classify_text(texts)
    pad = cm.classify(enc_of([cm.encode_text(t)[0] for t in texts]))
    for f in ("exit_layers", "layers_run", "flops", "full_flops"):
        np.testing.assert_array_equal(getattr(text, f), getattr(pad, f), err_msg=f)
    # another policy's library: the same calls, layers_run = exit layer
    other = quiet(codegen.compile_model, m, refexit.Entropy(0.8), build_root / "sb_entropy", prefix="sb_entropy",
                  max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    res = other.classify(enc)
    assert res.layers_run is None
    fn = getattr(other.lib, "sb_entropy_classify_batch_run")
    f = other.ffi.from_buffer
    out = np.zeros(len(rows), other._dtype)
    run, ran = np.full(len(rows), -1, np.int32), np.full((len(rows), L), 7, np.uint8)
    st_ = fn(other._handle(), f("int32_t[]", ids), other.ffi.NULL, f("int32_t[]", lengths), len(rows),
             f("sb_entropy_result[]", out, require_writable=True), f("int32_t[]", run, require_writable=True),
             f("uint8_t[]", ran, require_writable=True))
    assert st_ == 0
    np.testing.assert_array_equal(out["exit_layer"], res.exit_layers)
    np.testing.assert_array_equal(run, res.exit_layers)
    np.testing.assert_array_equal(ran, np.arange(L)[None, :] < res.exit_layers[:, None])
    with pytest.raises(InputError, match="skips no layer"):
        other.classify_raw(ids, np.zeros_like(ids), lengths, run)


def test_compiled_results_feed_evaluate_and_the_standalone_program(build_root):
    """evaluate's compiled numbers (mean layers, the --wallclock ideal, FLOPs) come from the layers
    run; the standalone program prints "layers_run" after "exit_layer" exactly when it differs, as
    ClassifyResult.records (refexit classify) does."""
    import json
    import subprocess
    from codegen.standalone import build_standalone
    from refexit.train import evaluate as E
    m, cm = get("c", "mean_linear", build_root)
    rng = np.random.default_rng(4)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], int(rng.integers(1, 9)))) for _ in range(12)]
    enc = m.tokenizer(texts, max_length=MAX_LEN)
    L = m.num_layers
    grid = E.sweep_policies("smartbert", L, m.num_labels)
    k = 3
    pol = grid[k]
    ref = quiet(m.astype(np.float64).classify, enc, pol)

    def make_classify(p):
        if p.name != "smartbert":                       # the full model: not what is checked here
            return lambda texts: None
        quiet(cm.set_policy, p)
        return lambda texts: cm.classify(enc)
    report = {"num_layers": L, "labels": m.label_names, "policies": {"smartbert": {"picked": {"index": k}}}}
    w = quiet(E.add_wallclock, report, make_classify, texts, repeat=1)["policies"]["smartbert"]
    got = cm.classify(enc)
    if np.all(ref.margins >= NEAR):
        assert w["ideal_layer_speedup"] == pytest.approx(L / np.mean(ref.layers_run))
        assert w["flops_ratio"] == pytest.approx(ref.flops_ratio)
    assert w["ideal_layer_speedup"] == pytest.approx(L / np.mean(got.layers_run))
    # the standalone program
    res = build_standalone(cm.out_dir, embedded=False)
    quiet(cm.set_policy, pol)
    thr = ",".join(repr(float(t)) for t in cm.thresholds)
    r = subprocess.run([str(res.sidecar), "--threshold", thr, *texts], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    text = cm.classify_text(texts)
    mine = text.records()
    assert [rec.get("layers_run", rec["exit_layer"]) for rec in recs] == text.layers_run.tolist()
    assert [rec["exit_layer"] for rec in recs] == text.exit_layers.tolist()
    assert [set(rec) - {"time_ms", "truncated", "n_tokens"} for rec in recs] == [set(rec) for rec in mine]
    assert any("layers_run" in rec for rec in recs) and any("layers_run" not in rec for rec in recs)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_compile_and_do_not_depend_on_the_batch(precision, build_root):
    """The rows a partition moves get their bf16 / int8 copies recomputed: a sample gives the same
    bits alone and in a batch; the exits agree with the oracle emulating the precision away from the
    thresholds."""
    m, cm = get("c", "mean_linear", build_root, precision)
    rng = np.random.default_rng(1)
    enc = enc_of([np.r_[2, rng.integers(4, 97, rng.integers(1, MAX_LEN - 1))] for _ in range(9)])
    pol = refexit.SkipEntropy(1.0)
    quiet(cm.set_policy, pol)
    got = cm.classify(enc)
    for b in range(9):
        n = int(enc["attention_mask"][b].sum())
        one = cm.classify({k: v[b:b + 1, :n] for k, v in enc.items()})
        np.testing.assert_array_equal(one.logits[0], got.logits[b])
    ref = quiet(m.with_precision(precision).classify, enc, pol)
    ok = ref.margins > 1e-2
    np.testing.assert_array_equal(got.exit_layers[ok], ref.exit_layers[ok])


def test_compiled_settings(build_root):
    m, cm = get("a", "mean_linear", build_root)
    with pytest.raises(InputError, match="gate"):
        cm.set_policy(refexit.SkipEntropy(0.5, gate=0.7))                    # compiled in
    with pytest.raises(InputError, match="NaN"):
        cm.set_threshold(float("nan"))
    with pytest.raises(InputError, match="compiled for the smartbert policy"):
        cm.set_policy(refexit.Entropy(0.5))
    import codegen
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="skip gates"):
        codegen.compile_model(bare, refexit.SkipEntropy(0.5), build_root / "sb_bare")


def test_command_line_settings():
    import argparse
    from refexit.cli.policy_args import add_policy_args, policy_from_args
    p = argparse.ArgumentParser()
    add_policy_args(p)
    pol = policy_from_args(p.parse_args(["--policy", "smartbert", "--threshold", "0.2", "--gate", "0.6"]))
    assert isinstance(pol, refexit.SkipEntropy) and pol.gate == 0.6 and pol.threshold == 0.2
    assert policy_from_args(p.parse_args(["--policy", "smartbert", "--threshold", "0.2"])).gate == 0.5
    for argv, match in ((["--policy", "entropy", "--threshold", "0.1", "--gate", "0.5"], "not a setting"),
                        (["--policy", "smartbert"], "needs --threshold"),
                        (["--policy", "smartbert", "--threshold", "0.1", "--gate", "nan"], "gate"),
                        (["--gate", "0.5"], "needs --policy")):
        with pytest.raises(InputError, match=match):
            policy_from_args(p.parse_args(argv))


def test_score_reports_the_layers_run(build_root, tmp_path):
    """`refexit score`'s summary counts the layers the skip gates let run (mean_layers_run, below the
    mean exit layer), equal to the compiled model's own count on the same texts, for a file output
    and (with pyarrow) a folder output."""
    import json

    import codegen
    from refexit.cli.main import main
    m, cm = get("c", "mean_linear", build_root)
    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], int(rng.integers(1, 9)))) for _ in range(50)]
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    want = codegen.load_compiled(cm.out_dir).classify_text(texts)        # the compiled folder's own policy
    assert np.mean(want.layers_run) < np.mean(want.exit_layers)
    outs = ["out.jsonl"] + (["dir/"] if importlib.util.find_spec("pyarrow") else [])
    for i, out in enumerate(outs):
        assert main(["score", str(cm.out_dir), str(tmp_path / "in.txt"), "-o", f"{tmp_path}/{out}", "--batch", "7",
                     "--chunk-rows", "20", "--summary", str(tmp_path / f"s{i}.json"), "--quiet"]) == 0
        s = json.loads((tmp_path / f"s{i}.json").read_text())
        assert s["mean_layers_run"] == pytest.approx(np.mean(want.layers_run), abs=1e-4), out
        assert s["mean_exit_layer"] == pytest.approx(np.mean(want.exit_layers), abs=1e-4), out
