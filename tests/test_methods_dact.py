"""DACT-BERT (docs/methods.md, "DACT-BERT"): the accumulated answer and its halting test in the
oracle, the halting units (training on frozen features, the exits file, the weights file) and the
compiled C against the oracle."""
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
from refexit.heads import ExitParams, Head
from refexit.synthetic import random_model, save_model
from refexit.train import dact as D
from refexit.train import evaluate as E
from refexit.train import features as F

from test_codegen_props import (EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, assert_alone_as_in_batch, batches,
                                compare)


def reference(zs, gates, L):
    """An independent transcription of the rule (methods.md): zs [n] exit logits of layers 1..n,
    gates [n] pre-activations g (layer n < L) -> per layer (a_n, p_n, score_n)."""
    a, p, out = None, 1.0, []
    for n, z in enumerate(zs, start=1):
        y = np.exp(z - np.max(z))
        y = y / y.sum()
        a = y if a is None else p * y + (1 - p) * a
        if n < L:
            p = p * (1 - 1 / (1 + math.exp(-gates[n - 1])))
        d = L - n
        top = np.sort(a)[::-1]
        out.append((a.copy(), p, top[0] * (1 - p) ** d - top[1] - d * p))
    return out


def dact_exits(L, F_, w, b):
    heads = [Head("mean_linear", {"fc.w": np.zeros((3, F_)), "fc.b": np.zeros(3)}) for _ in range(L)]
    return ExitParams(heads, temperatures=np.ones(L),
                      dact={"w": np.asarray(w, np.float64), "b": np.asarray(b, np.float64)})


def run(policy, zs, feats, exits, L):
    """decide over layers 1..L-1 until exit, then the answer: -> (exit layer, logits, [(exit, score, margin)])."""
    policy.check(L, len(zs[0]), exits)
    state, steps = policy.start(), []
    for n in range(1, L + 1):
        if n == L:
            return n, policy.answer(n, zs[n - 1], feats[n - 1], exits, state), steps
        steps.append(policy.decide(n, zs[n - 1], feats[n - 1], exits, state))
        if steps[-1][0]:
            return n, policy.answer(n, zs[n - 1], feats[n - 1], exits, state), steps


def test_rule_matches_an_independent_transcription():
    rng = np.random.default_rng(0)
    L, C, F_ = 5, 3, 4
    for trial in range(200):
        zs = [rng.normal(0, 3, C) for _ in range(L)]
        feats = [rng.normal(size=F_) for _ in range(L)]
        w, b = rng.normal(0, 1, (L - 1, F_)), rng.normal(rng.choice([-2, 0, 3]), 1, L - 1)
        gates = [float(w[i] @ feats[i] + b[i]) for i in range(L - 1)]
        want = reference(zs, gates, L)
        layer, logits, steps = run(refexit.DACT(), zs, feats, dact_exits(L, F_, w, b), L)
        for n, (ex, score, margin) in enumerate(steps, start=1):
            assert score == pytest.approx(want[n - 1][2], rel=1e-9, abs=1e-12)
            assert margin == abs(score) and ex == (score > 0)
        exits_at = next((n for n in range(1, L) if want[n - 1][2] > 0), L)
        assert layer == exits_at
        np.testing.assert_allclose(np.exp(logits), want[layer - 1][0], rtol=1e-9, atol=1e-300)
        assert np.argmax(logits) == np.argmax(want[layer - 1][0])


def test_halting_test_uses_one_minus_p_to_the_power_d_and_is_strict():
    L, F_ = 4, 1
    # p_1 = h_1 = 0.5 (gate 0): with a = (0.9, 0.1) after layer 1, d = 3: 0.9 * 0.5^3 - 0.1 - 1.5 < 0
    z = np.log(np.array([0.9, 0.1]))
    ex = dact_exits(L, F_, np.zeros((L - 1, F_)), np.zeros(L - 1))
    _, _, steps = run(refexit.DACT(), [z] * L, [np.zeros(F_)] * L, ex, L)
    want = 0.9 * 0.5 ** 3 - 0.1 - 3 * 0.5
    assert steps[0][1] == pytest.approx(want, rel=1e-12)
    assert steps[0][1] != pytest.approx(0.9 * 0.5 ** 3 - 0.1 - 3 * 0.5 ** 3)   # not the p^d of a re-implementation
    # a gate so large that h = 1 - sigmoid(g) is exactly 0: p_1 = 0, the score is a1 - a2
    big = dact_exits(L, F_, np.zeros((L - 1, F_)), np.full(L - 1, 100.0))
    tie = np.zeros(2)                                                        # a = (0.5, 0.5): score 0 exactly
    n, logits, steps = run(refexit.DACT(), [tie] * L, [np.zeros(F_)] * L, big, L)
    assert steps[0][1] == 0.0 and steps[0][0] is False and n == L              # strict: 0 does not exit
    n, _, steps = run(refexit.DACT(), [np.array([1e-9, 0.0])] * L, [np.zeros(F_)] * L, big, L)
    assert steps[0][1] > 0 and n == 1


def test_the_answer_is_the_accumulated_one_and_the_last_layer_mixes_in():
    """A sample that never halts answers ln a_L, a_L = p_{L-1} y_L + (1 - p_{L-1}) a_{L-1}, not z_L."""
    L, F_ = 3, 2
    ex = dact_exits(L, F_, np.zeros((L - 1, F_)), np.full(L - 1, -3.0))   # h ~ 0.95: p stays large
    zs = [np.array([0.0, 1.0, 0.2]), np.array([1.0, 0.0, 0.3]), np.array([2.0, 0.0, 0.1])]
    n, logits, _ = run(refexit.DACT(), zs, [np.zeros(F_)] * L, ex, L)
    want = reference(zs, [-3.0, -3.0], L)[-1][0]
    assert n == L
    np.testing.assert_allclose(np.exp(logits), want, rtol=1e-12)
    assert not np.allclose(logits, nn.log_softmax(zs[-1][None])[0])


def test_model_classify_answers_ln_a_and_is_batch_independent():
    m = random_model(num_layers=4, hidden=16, heads=2, intermediate=24, num_labels=3, seed=3,
                     head_kind="pooler_linear", scale=1.5, dact=True)
    m.exits.dact["b"] = m.exits.dact["b"] + np.float32(2.5)        # halt early enough for a mix of exit layers
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(12)]
    enc = m.tokenizer(texts, max_length=32)
    batch = m.classify(enc, refexit.DACT(), trace=True)
    assert len(set(batch.exit_layers.tolist())) >= 2, batch.exit_layers
    np.testing.assert_allclose(np.exp(batch.logits.astype(np.float64)).sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(batch.labels, np.argmax(batch.logits, 1))
    for b, t in enumerate(texts):
        one = m.classify(m.tokenizer([t], max_length=32), refexit.DACT())
        np.testing.assert_array_equal(one.logits[0], batch.logits[b])
        assert one.exit_layers[0] == batch.exit_layers[b] and one.flops[0] == batch.flops[b]
        tr = batch.per_layer[b]                  # the trace keeps the heads' own logits
        assert tr[-1].layer == batch.exit_layers[b]
        assert not np.allclose(tr[-1].logits, batch.logits[b]) or batch.exit_layers[b] == 1


def test_replay_matches_classify():
    m = random_model(num_layers=4, hidden=16, heads=2, intermediate=24, num_labels=3, seed=0,
                     head_kind="mean_linear", dact=True, scale=1.5)
    m.exits.dact["b"] = m.exits.dact["b"] + np.float32(2.0)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(30)]
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    out = E.LayerOutputs(m, f)
    want = m.classify(m.tokenizer(texts, max_length=32), refexit.DACT())
    got = E.simulate(m, refexit.DACT(), out)
    assert np.array_equal(got.exit_layers, want.exit_layers) and np.array_equal(got.flops, want.flops)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
    assert E.sweep_policies("dact", 4, 3)[0].name == "dact" and len(E.sweep_policies("dact", 4, 3)) == 1
    y = rng.integers(0, 3, 30)
    rep = E.evaluate(m, {"dev": f}, {"dev": y}, policies=("dact", "entropy"), progress=False)
    assert rep["policies"]["dact"]["points"][0]["dev"]["mean_layers"] == pytest.approx(want.mean_layers)
    bare = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    assert "DACT" in E.available(bare, "dact")


def test_dact_bad_settings_raise():
    L, F_ = 3, 2
    ok = dact_exits(L, F_, np.zeros((L - 1, F_)), np.zeros(L - 1))
    with pytest.raises(InputError, match="halting units"):
        refexit.DACT().check(L, 3, ExitParams(ok.heads, temperatures=np.ones(L)))
    with pytest.raises(InputError, match="2 classes"):
        refexit.DACT().check(L, 1, ok)
    for w, b, match in ((np.zeros((L, F_)), np.zeros(L - 1), "shapes"), (np.zeros((L - 1, F_)), np.zeros(L), "shapes"),
                        (np.full((L - 1, F_), np.nan), np.zeros(L - 1), "NaN"),
                        (np.zeros((L - 1, F_)), np.array([0.0, np.inf]), "NaN")):
        with pytest.raises(InputError, match=match):
            refexit.DACT().check(L, 3, dact_exits(L, F_, w, b))
    with pytest.raises(TypeError):
        refexit.DACT(0.5)                                     # no threshold: the trade-off is trained
    assert isinstance(refexit.make_policy("dact"), refexit.DACT)


def test_halting_units_round_trip_through_the_exits_file(tmp_path):
    model = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=3, seed=1,
                         head_kind="mean_linear", dact=True)
    save_model(model, tmp_path / "m")
    _, _, ep, _ = load_checkpoint(tmp_path / "m")
    for k in ("w", "b"):
        np.testing.assert_array_equal(ep.dact[k], model.exits.dact[k])
    old = ExitParams(model.exits.heads, model.exits.lte, model.exits.ponder, model.exits.temperatures)
    save_exits(tmp_path / "old.safetensors", old, model.label_names)
    _, _, ep, _ = load_checkpoint(tmp_path / "m", exits=tmp_path / "old.safetensors")
    assert ep.dact is None
    for bad in ({"w": np.zeros((3, 12)), "b": np.zeros(2)}, {"w": np.zeros((2, 12)), "b": np.zeros(3)},
                {"w": np.full((2, 12), np.nan), "b": np.zeros(2)}, {"w": np.zeros((2, 12))},
                {"w": np.zeros((2, 12)), "b": np.zeros(2), "x": np.zeros(1)}):
        ex = ExitParams(model.exits.heads, None, None, np.ones(3), dact=bad)
        save_exits(tmp_path / "bad.safetensors", ex, model.label_names)
        with pytest.raises(CheckpointError, match="dact"):
            load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- training on frozen features
def test_dact_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    L, N, F_, C = 4, 5, 6, 3
    feat, zf, y = rng.normal(size=(L - 1, N, F_)), rng.normal(size=(N, C)), rng.integers(0, C, N)
    params = {"fc.w": rng.normal(size=(L - 1, C, F_)), "fc.b": rng.normal(size=(L - 1, C)),
              "w": rng.normal(size=(L - 1, F_)), "b": rng.normal(size=L - 1)}
    for tau, heads in ((0.3, True), (0.0, True), (0.05, False)):
        _, g = D.loss_grad(params, feat, zf, y, tau, heads)
        assert ("fc.w" in g) == heads
        for k in g:
            num = np.zeros_like(params[k])
            for i in np.ndindex(params[k].shape):
                q = {kk: v.copy() for kk, v in params.items()}
                q[k][i] += 1e-6
                lp = D.loss_grad(q, feat, zf, y, tau, heads)[0]
                q[k][i] -= 2e-6
                num[i] = (lp - D.loss_grad(q, feat, zf, y, tau, heads)[0]) / 2e-6
            np.testing.assert_allclose(g[k], num, rtol=1e-5, atol=1e-8, err_msg=f"{k} tau {tau}")


def test_training_forward_is_the_policy_rule():
    """a_L and p_n of the training forward pass are what refexit.DACT accumulates."""
    rng = np.random.default_rng(2)
    L, N, F_, C = 4, 6, 5, 3
    feat, zf = rng.normal(size=(L - 1, N, F_)), rng.normal(size=(N, C))
    params = {"fc.w": rng.normal(size=(L - 1, C, F_)), "fc.b": rng.normal(size=(L - 1, C)),
              "w": rng.normal(size=(L - 1, F_)), "b": rng.normal(size=L - 1)}
    _, a, p, _ = D.forward(params, feat, zf)
    ex = dact_exits(L, F_, params["w"], params["b"])
    pol = refexit.DACT()
    pol.check(L, C, ex)
    for n in range(N):
        st_ = pol.start()
        for layer in range(1, L):
            z = params["fc.w"][layer - 1] @ feat[layer - 1, n] + params["fc.b"][layer - 1]
            pol.decide(layer, z, feat[layer - 1, n], ex, st_)
            np.testing.assert_allclose(st_["a"], a[layer, n], rtol=1e-12)
            assert st_["p"] == pytest.approx(p[layer, n], rel=1e-12)
        np.testing.assert_allclose(np.exp(pol.answer(L, zf[n], None, ex, st_)), a[L, n], rtol=1e-12)


def test_train_exits_dact_objective_trades_layers_for_tau():
    """On a frozen random backbone: the DACT objective writes halting units; a larger tau gives a
    smaller ponder cost sum p_n (fewer layers) on the training data."""
    from refexit.train.exits import TrainConfig, train_exits
    m = random_model(num_layers=4, hidden=16, heads=2, intermediate=24, num_labels=2, seed=5,
                     head_kind="mean_linear", scale=1.5, lte=False, ponder=False)
    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 10))) for _ in range(60)]
    f = F.extract(m, texts, 16, use_cache=False, progress=False)
    y = (np.asarray(f.mean[1][:, 0]) > np.median(f.mean[1][:, 0])).astype(np.int64)   # learnable labels
    cost = {}
    for tau in (0.0, 0.5):
        cfg = TrainConfig(max_epochs=30, dact_tau=tau)
        res = train_exits(m, f, y, f, y, ["a", "b"], objective="dact", cfg=cfg, extras=())
        assert res.exits.dact["w"].shape == (3, 16) and res.info["objective"] == "dact" and "dact" in res.info["log"]
        outs = [(F.exit_features(h, f, i, m).astype(np.float64), None) for i, h in enumerate(res.exits.heads, 1)]
        feat = np.stack([o[0] for o in outs[:3]])
        h = D.halting({k: np.asarray(v, np.float64) for k, v in res.exits.dact.items()}, feat)
        cost[tau] = float(np.mean(np.sum(np.cumprod(h, axis=0), axis=0)))
    assert cost[0.5] < cost[0.0]
    with pytest.raises(InputError, match="tau"):
        train_exits(m, f, y, f, y, ["a", "b"], objective="dact", cfg=TrainConfig(max_epochs=1, dact_tau=float("nan")),
                    extras=())


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
    "d": dict(num_layers=1, hidden=30, heads=1, intermediate=19, num_labels=4, seed=14),
}
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert", "scalar_mix")
SHIFTS = (0.0, 3.0)             # added to the halting units' biases: h smaller, earlier exits
_MODELS, _COMPILED = {}, {}


def get(cfg, kind, shift, build_root):
    if (cfg, kind, shift) not in _MODELS:
        m = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97, max_position=40,
                         scale=1.5, dact=True, l2norm=kind == "mean_linear", **CONFIGS[cfg])
        m.exits.dact["b"] = m.exits.dact["b"] + np.float32(shift)
        _MODELS[cfg, kind, shift] = m
    model = _MODELS[cfg, kind, shift]
    if (cfg, kind, shift) not in _COMPILED:
        import codegen
        _COMPILED[cfg, kind, shift] = codegen.compile_model(
            model, refexit.DACT(), build_root / f"dact_{cfg}_{kind}_{int(shift)}",
            prefix=f"dact_{cfg}_{kind}_{int(shift)}", max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    return model, _COMPILED[cfg, kind, shift]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("dact")


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_dact_matches_oracle(kind, build_root):
    """C vs the float64 oracle per sample: exit layer and label exactly (except where the oracle's
    halting score is within 1e-4 of 0), the answer ln a_n within rtol 1e-4 / atol 1e-5, FLOPs, margins;
    and a sample's result does not depend on its batch mates (bitwise)."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        shift = data.draw(st.sampled_from(SHIFTS), label="bias shift")
        model, cm = get(cfg, kind, shift, build_root)
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        got = compare(cm, model, refexit.DACT(), enc, f"config {cfg} {kind} shift {shift} dact")
        assert_alone_as_in_batch(cm, enc, got)

    check()


def test_compiled_dact_exits_early_somewhere(build_root):
    """The shifted halting units really exit before the last layer (the property test is not vacuous)."""
    model, cm = get("c", "mean_linear", 3.0, build_root)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 97, (7, 12))
    ids[:, 0] = 2
    enc = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    got = compare(cm, model, refexit.DACT(), enc, "early")
    assert np.any(got.exit_layers < model.num_layers), got.exit_layers


def test_compiled_dact_settings(build_root):
    import codegen
    model, cm = get("a", "mean_linear", 0.0, build_root)
    assert cm.manifest["has_dact"] is True
    with pytest.raises(InputError, match="compiled for the dact policy"):
        cm.set_policy(refexit.Entropy(0.5))
    assert cm.set_policy(refexit.DACT()) == []
    for f in (lambda: cm.set_threshold(0.5), lambda: cm.set_thresholds([0.5, 0.5])):
        with pytest.raises(InputError):                      # no threshold to set: never silently ignored
            f()
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="halting units"):
        codegen.compile_model(bare, refexit.DACT(), build_root / "dact_bare", prefix="dact_bare")


def test_command_line_settings_of_dact():
    import argparse
    from refexit.cli.policy_args import add_policy_args, policy_from_args
    p = argparse.ArgumentParser()
    add_policy_args(p)
    assert isinstance(policy_from_args(p.parse_args(["--policy", "dact"])), refexit.DACT)
    with pytest.raises(InputError, match="not a setting"):
        policy_from_args(p.parse_args(["--policy", "dact", "--threshold", "0.1"]))


def test_command_line_classify_compile_and_standalone_program(tmp_path, capsys):
    """`refexit classify --policy dact` is the oracle; `refexit compile --policy dact --standalone` gives a
    program whose records (exit layer, label, the answer ln a_n as logits) agree with the float64 oracle;
    a threshold given to it is refused."""
    import json
    import shutil
    from refexit.cli.main import main
    from test_standalone import CC, TEXTS, compare, oracle, records, run
    if not shutil.which(CC):
        pytest.skip(f"no C compiler ({CC})")
    model = random_model(num_layers=4, hidden=24, heads=2, intermediate=40, num_labels=3, vocab_size=300,
                         max_position=48, head_kind="mean_linear", seed=5, scale=1.5, dact=True)
    folder = save_model(model, tmp_path / "m")
    model = refexit.load(folder)
    ref = oracle(model, refexit.DACT(), TEXTS, 48)
    assert main(["classify", str(folder), "--policy", "dact", *TEXTS]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    got = [r for r in lines if "error" not in r]
    keep = [i for i, r in enumerate(lines) if "error" not in r]
    assert [r["exit_layer"] for r in got] == ref.exit_layers[keep].tolist()
    assert len(set(r["exit_layer"] for r in got)) >= 2
    out = tmp_path / "out"
    assert main(["compile", str(folder), "-o", str(out), "--policy", "dact", "--prefix", "dact_sa", "--standalone"]) == 0
    compare(records(run(out / "dact_sa", *TEXTS).stdout), ref, TEXTS)
    r = run(out / "dact_sa", "--threshold", "0.5", "a", check=False)
    assert r.returncode == 2 and b"dact policy has no --threshold" in r.stderr
