"""Trainable FastBERT heads on a frozen backbone (refexit.train.token_heads: the float16 per-token
cache, the head's loss and gradients, training, exact evaluation, the compiled C of trained heads)
and RomeBERT's objective (train-exits `romebert`; fine-tune `romebert`: the gradient projection)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import refexit
from refexit import nn, synthetic
from refexit.data import Split
from refexit.errors import InputError
from refexit.train import backward as BW
from refexit.train import evaluate as E
from refexit.train import exits as T
from refexit.train import features as F
from refexit.train import finetune as FT
from refexit.train import token_heads as TH

from test_train import assert_grads


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))


def tiny(num_layers=3, C=3, seed=0, kind="fastbert", **kw):
    return synthetic.random_model(num_layers=num_layers, hidden=16, heads=2, intermediate=24, num_labels=C,
                                  seed=seed, head_kind=kind, vocab_size=60, **kw)


def texts_of(m, n, seed=0, longest=10):
    rng = np.random.default_rng(seed)
    vocab = m.tokenizer.vocab[5:]
    return [" ".join(rng.choice(vocab, rng.integers(1, longest))) for _ in range(n)]


def toy(n=240, C=3, seed=0, num_layers=3):
    """A random model, texts, and labels learnable from layer 1's token mean (roughly balanced)."""
    m = tiny(num_layers, C, seed)
    texts = texts_of(m, n, seed)
    tr, dv = texts[:n * 3 // 4], texts[n * 3 // 4:]
    ftr, fdv = TH.extract(m, tr, 32, progress=False), TH.extract(m, dv, 32, progress=False)
    w = np.random.default_rng(seed + 1).normal(size=(C, 16))
    score = lambda fe: fe.mean[0].astype(np.float64) @ w.T                 # noqa: E731
    mu, sd = score(ftr).mean(0), score(ftr).std(0)
    y = lambda fe: np.argmax((score(fe) - mu) / sd, axis=1)                # noqa: E731
    return m, tr, dv, ftr, y(ftr), fdv, y(fdv)


# ---------------------------------------------------------------- the float16 token cache
def test_token_cache_is_every_real_token_in_float16_and_is_reused():
    m = tiny()
    texts = texts_of(m, 30)
    exact = F.extract(m, texts, 32, tokens=True, use_cache=False, progress=False)
    got = TH.extract(m, texts, 32, progress=False)
    assert np.array_equal(got.lengths, exact.lengths)
    np.testing.assert_allclose(got.cls, exact.cls, rtol=1e-5, atol=1e-5)    # the batched float32 forward
    np.testing.assert_allclose(got.mean, exact.mean, rtol=1e-5, atol=1e-5)
    for a, b in zip(got.tokens, exact.tokens):
        assert a.dtype == np.float16 and a.shape == b.shape
        # the oracle's states to float16 rounding (half an ulp), plus float32 noise of the batched forward
        ulp = np.spacing(np.abs(b).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(a.astype(np.float32) - b) <= 0.5 * ulp + 1e-5 * (1 + np.abs(b)))
        assert np.mean(a == b.astype(np.float16)) > 0.99                    # nearly all rounded alike
    again = TH.extract(m, texts, 32, progress=False)                         # from the cache: memory-mapped
    assert isinstance(again.tokens[0], np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(again.tokens, got.tokens))
    off = again.offsets()
    x, mask = TH.batch(again, 2, np.array([3, 0]))
    assert mask.sum(1).tolist() == [again.lengths[3], again.lengths[0]]
    T_ = mask.shape[1]
    np.testing.assert_array_equal(x.reshape(2, T_, -1)[0, :again.lengths[3]], again.tokens[1][off[3]:off[4]])
    assert not x.reshape(2, T_, -1)[1, again.lengths[0]:].any()              # padding is zero
    nocache = TH.extract(m, texts, 32, progress=False, use_cache=False)
    assert all(np.array_equal(a, b) for a, b in zip(nocache.tokens, got.tokens))


def test_token_cache_refuses_states_beyond_float16():
    m = tiny()
    m._layers[1] = dict(m._layers[1], **{"ffn.ln.b": m._layers[1]["ffn.ln.b"] + 1e5})   # layer 2 overflows
    with pytest.raises(InputError, match="float16"):
        TH.extract(m, texts_of(m, 3), 32, progress=False, use_cache=False)


# ---------------------------------------------------------------- loss and gradients
@pytest.mark.parametrize("target", ["onehot", "soft", "romebert"])
def test_fastbert_head_loss_gradient_with_padding(target):
    """float64, a padded batch of mixed lengths: every parameter's gradient against finite differences."""
    rng = np.random.default_rng(5)
    B, Tm, H, C = 4, 5, 6, 3
    lens = np.array([5, 2, 3, 1])
    mask = np.arange(Tm)[None, :] < lens[:, None]
    x = rng.normal(size=(B * Tm, H)) * mask.reshape(-1, 1)
    q = rng.dirichlet(np.ones(C), B) if target == "soft" else np.eye(C)[rng.integers(0, C, B)]
    distill = (rng.dirichlet(np.ones(C), B), 3.0, 0.9) if target == "romebert" else None
    p = {k: rng.normal(0, 0.5, v.shape) for k, v in TH.init_params(H, C, rng, width=4).items()}
    assert_grads(lambda pp: TH.head_loss(pp, x, mask, q, 0.7, distill, attn_heads=2, dtype=np.float64), p)
    # the padded rows' values do not matter
    x2 = x + rng.normal(size=x.shape) * ~mask.reshape(-1, 1)
    assert TH.head_loss(p, x2, mask, q, 0.7, distill, 2, np.float64, grad=False) == \
        pytest.approx(TH.head_loss(p, x, mask, q, 0.7, distill, 2, np.float64, grad=False), rel=1e-12)


def test_fastbert_head_loss_is_the_oracle_head_per_sample():
    rng = np.random.default_rng(2)
    H, C = 6, 3
    p = {k: rng.normal(0, 0.5, v.shape) for k, v in TH.init_params(H, C, rng, width=4).items()}
    head = refexit.heads.Head("fastbert", p)
    lens = [3, 1, 4]
    xs = [rng.normal(size=(n, H)) for n in lens]
    x = np.zeros((3, 4, H))
    for b, xb in enumerate(xs):
        x[b, :len(xb)] = xb
    mask = np.arange(4)[None, :] < np.array(lens)[:, None]
    q = np.eye(C)[[0, 2, 1]]
    want = np.mean([-nn.log_softmax(head.logits(head.features(xb)))[k] for xb, k in zip(xs, [0, 2, 1])])
    assert TH.head_loss(p, x.reshape(12, H), mask, q, dtype=np.float64, grad=False) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("soft", [False, True])
def test_romebert_target_loss_gradient_and_its_parts(soft):
    rng = np.random.default_rng(3)
    N, H, C, Tt, g = 7, 5, 3, 3.0, 0.9
    x = rng.normal(size=(N, H))
    q = rng.dirichlet(np.ones(C), N) if soft else np.eye(C)[rng.integers(0, C, N)]
    teacher = rng.normal(size=(N, C)) * 2
    qT = nn.softmax(teacher / Tt)
    p = {"fc.w": rng.normal(size=(C, H)), "fc.b": rng.normal(size=C)}
    assert_grads(lambda pp: T.head_loss(pp, x, q, 0.5, (qT, Tt, g)), p)
    z = nn.linear(x, p["fc.w"], p["fc.b"])
    ce = np.mean(np.sum(q * (np.log(np.where(q > 0, q, 1)) - nn.log_softmax(z)), 1))
    kl = np.mean(np.sum(qT * (np.log(qT) - nn.log_softmax(z / Tt)), 1))
    assert T.target_loss(z, q, 1.0, (qT, Tt, g))[0] == pytest.approx((1 - g) * ce + g * Tt * Tt * kl, rel=1e-12)


# ---------------------------------------------------------------- training
def test_fastbert_heads_train_and_fit_a_learnable_task():
    m, _, _, ftr, ytr, fdv, ydv = toy()
    cfg = T.TrainConfig(max_epochs=25, batch_size=32, lr=1e-2, patience=6)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="fastbert", cfg=cfg, train_final=True,
                        extras=("prototypes", "calibrate"))
    for key, log in res.info["log"].items():
        assert log["train_loss"][-1] < log["train_loss"][0], key
    assert all(h.kind == "fastbert" for h in res.exits.heads)
    majority = np.mean(ydv == np.bincount(ytr).argmax())
    acc1 = res.info["dev_per_layer"][0]["accuracy"]
    assert acc1 > majority + 0.1, (acc1, majority)
    assert res.exits.prototypes.shape == (2, 3, 128)


def test_fastbert_training_is_deterministic_and_distillation_uses_no_labels():
    m, _, _, ftr, ytr, fdv, ydv = toy(n=80)
    cfg = T.TrainConfig(max_epochs=3, batch_size=16, seed=2)
    run = lambda y, obj, c=cfg: T.train_exits(m, ftr, y, fdv, ydv, m.label_names, kind="fastbert",  # noqa: E731
                                              objective=obj, cfg=c, extras=(), train_final=False)
    a, b = run(ytr, "fastbert"), run(ytr, "fastbert")
    shuffled = run(np.random.default_rng(0).permutation(ytr), "fastbert")
    for ha, hb, hs in zip(a.exits.heads[:-1], b.exits.heads[:-1], shuffled.exits.heads[:-1]):
        for k in ha.params:
            assert np.array_equal(ha.params[k], hb.params[k]) and np.array_equal(ha.params[k], hs.params[k])
    other = run(ytr, "fastbert", T.TrainConfig(max_epochs=3, batch_size=16, seed=3))
    assert not np.array_equal(other.exits.heads[0].params["fc.w"], a.exits.heads[0].params["fc.w"])


def test_fastbert_training_needs_the_token_states():
    m, _, _, ftr, ytr, fdv, ydv = toy(n=40)
    plain = F.Features(ftr.cls, ftr.mean, ftr.lengths)
    with pytest.raises(InputError, match="every token"):
        T.train_exits(m, plain, ytr, fdv, ydv, m.label_names, kind="fastbert", train_final=True)


@pytest.mark.parametrize("kind", ["mean_linear", "fastbert"])
def test_romebert_with_gamma_0_is_deebert_and_uses_the_teacher_otherwise(kind):
    m, _, _, ftr, ytr, fdv, ydv = toy(n=80)
    if kind == "mean_linear":
        m = tiny(kind="mean_linear")
        ftr, fdv = F.Features(ftr.cls, ftr.mean, ftr.lengths), F.Features(fdv.cls, fdv.mean, fdv.lengths)
    run = lambda obj, g: T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind=kind, objective=obj,  # noqa: E731
                                       cfg=T.TrainConfig(max_epochs=3, batch_size=16, romebert_gamma=g),
                                       extras=(), train_final=False)
    dee, rome0, rome = run("deebert", 0.9), run("romebert", 0.0), run("romebert", 0.9)
    for a, b, c in zip(dee.exits.heads[:-1], rome0.exits.heads[:-1], rome.exits.heads[:-1]):
        for k in a.params:
            np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-6, atol=1e-9)
        assert not np.allclose(c.params["fc.w"], a.params["fc.w"])
    assert rome.info["objective"] == "romebert"


# ---------------------------------------------------------------- evaluation: exact states
def test_evaluate_replays_trained_fastbert_heads_as_model_classify(tmp_path):
    m, _, dv, ftr, ytr, fdv, ydv = toy(n=120)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="fastbert",
                        cfg=T.TrainConfig(max_epochs=4, batch_size=16), extras=(), train_final=True)
    T.save(res, tmp_path / "ex")
    synthetic.save_model(m, tmp_path / "model", with_exits=False)
    model = refexit.load(tmp_path / "model", exits=tmp_path / "ex")
    assert [h.kind for h in model.heads] == ["fastbert"] * 3
    with pytest.raises(InputError, match="every token"):
        E.LayerOutputs(model, fdv)
    out = E.LayerOutputs(model, TH.head_outputs_exact(model, dv, 32, progress=False))
    enc = model.tokenizer(dv, max_length=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        for pol in (refexit.Static(1), refexit.Static(2), refexit.NormEntropy(0.9), refexit.Static(3)):
            want = model.classify(enc, pol)
            got = E.simulate(model, pol, out)
            np.testing.assert_array_equal(got.exit_layers, want.exit_layers)
            np.testing.assert_array_equal(got.logits, want.logits)            # bit for bit
            np.testing.assert_array_equal(got.flops, want.flops)
    # the batched float32 forward (what `refexit evaluate` uses): the oracle's outputs to float32 rounding
    fast = E.LayerOutputs(model, TH.head_outputs_exact(model, dv, 32, progress=False, exact=False))
    for i in range(3):
        np.testing.assert_allclose(fast.logits[i], out.logits[i], rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        pol = refexit.NormEntropy(0.9)
        want, got = model.classify(enc, pol), E.simulate(model, pol, fast)
    sure = want.margins > 1e-4
    np.testing.assert_array_equal(got.exit_layers[sure], want.exit_layers[sure])
    # the float16 cache gives nearly the same head outputs (what train-exits records)
    approx = TH.head_outputs(model.heads[0], TH.extract(m, dv, 32, progress=False), 1)[1]
    np.testing.assert_allclose(approx, out.logits[0], atol=2e-3)


def test_cli_train_exits_fastbert_and_evaluate_sweep(tmp_path, capsys):
    from refexit.cli.main import main
    from refexit import tables
    m = tiny(C=2)
    mdir = synthetic.save_model(m, tmp_path / "model", with_exits=False)
    texts = texts_of(m, 90, seed=4)
    rows = [{"text": t, "label": ["neg", "pos"][len(t.split()) % 2], "split": ["train", "dev", "test"][i % 3]}
            for i, t in enumerate(texts)]
    tables.write_rows(tmp_path / "d.csv", rows)
    out = tmp_path / "ex"
    assert main(["train-exits", str(mdir), "--data", str(tmp_path / "d.csv"), "--split-column", "split",
                 "--heads", "fastbert", "--objective", "romebert", "--epochs", "2", "--out", str(out)]) == 0
    info = json.loads((out / "exits.json").read_text())
    assert info["head_kind"] == "fastbert" and info["objective"] == "romebert"
    assert main(["evaluate", str(mdir), "--exits", str(out), "--sweep", "--policy", "norm_entropy",
                 "--out", str(tmp_path / "ev"), "--no-plot"]) == 0
    rep = json.loads(next((tmp_path / "ev").glob("evaluate-*.json")).read_text())
    assert rep["policies"]["norm_entropy"]["points"] and rep["training"]["head_kind"] == "fastbert"


# ---------------------------------------------------------------- the compiled C of trained heads
def test_trained_fastbert_heads_compile_and_match_the_oracle(tmp_path):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    import codegen
    from test_codegen_props import compare
    m, _, dv, ftr, ytr, fdv, ydv = toy(n=80)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="fastbert",
                        cfg=T.TrainConfig(max_epochs=3, batch_size=16), extras=(), train_final=True)
    T.save(res, tmp_path / "ex")
    synthetic.save_model(m, tmp_path / "model", with_exits=False)
    model = refexit.load(tmp_path / "model", exits=tmp_path / "ex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(model, refexit.NormEntropy(0.5), tmp_path / "c", prefix="fastrome",
                                   max_length=16, max_batch=3, max_tokens=24)
        enc = model.tokenizer(dv[:12], max_length=16)
        tr = model.astype(np.float64).classify(enc, refexit.NormEntropy(-1.0), trace=True)
        scores = np.array([[t.score for t in s if t.layer < 3] for s in tr.per_layer])
        thr = float(np.median(scores))                                      # exits at several layers
        compare(cm, model, refexit.NormEntropy(thr), enc, "trained fastbert heads")


# ---------------------------------------------------------------- RomeBERT's gradient projection
def test_projection_hand_worked():
    names = ["a"]
    g_last = {"a": np.array([1.0, 0.0]), "b": np.array([2.0])}
    conflict = {"a": np.array([-1.0, 1.0]), "b": np.array([5.0]), "c": np.array([7.0])}
    out, c = FT.project_conflict(g_last, conflict, names)
    assert c == -1.0
    np.testing.assert_array_equal(out["a"], [1.0, 1.0])      # g_last + (g_multi - (-1) g_last) = [1,0] + [0,1]
    assert out["b"].tolist() == [7.0] and out["c"].tolist() == [7.0]       # not projected: plain sums
    agree = {"a": np.array([1.0, 1.0])}
    out, c = FT.project_conflict(g_last, agree, names)
    assert c == 0.0 and out["a"].tolist() == [2.0, 1.0]
    # one vector over all the names: a conflict in one tensor outweighed by another is no conflict
    g2 = {"a": np.array([1.0]), "w": np.array([1.0])}
    out, c = FT.project_conflict(g2, {"a": np.array([-1.0]), "w": np.array([3.0])}, ["a", "w"])
    assert c == 0.0 and out["a"].tolist() == [0.0]
    out, c = FT.project_conflict(g2, {"a": np.array([-3.0]), "w": np.array([1.0])}, ["a", "w"])
    assert c == -1.0 and out["a"].tolist() == [-1.0] and out["w"].tolist() == [3.0]   # [-3,1] -> [-2,2], + g2
    out, c = FT.project_conflict({"a": np.zeros(2)}, conflict, names)                 # |g_last| = 0
    assert c == 0.0


def test_projected_names_are_the_weight_matrices_of_layers_before_the_last():
    P = {"layers.0.attn.q.w": 0, "layers.0.attn.q.b": 0, "layers.0.attn.ln.w": 0, "layers.1.ffn.up.w": 0,
         "layers.2.ffn.up.w": 0, "emb.word": 0, "heads.0.fc.w": 0, "pooler.w": 0}
    assert FT.projected_names(P, 3) == ["layers.0.attn.q.w", "layers.1.ffn.up.w"]


def test_romebert_gradients_are_the_two_losses_gradients_projected():
    """g_last (CE of the final classifier) and g_multi (the exits' terms, teacher constant) each
    against finite differences; the step is their projected sum; the projected part of the exits'
    gradient is orthogonal to g_last when they conflicted."""
    from test_backward import check, directional
    m = synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=2,
                               head_kind="shared_pooler", lte=False, ponder=False)
    c = FT.FinetuneConfig(objective="romebert", heads="mean_linear", max_length=12)
    P, kinds = FT.initial_params(m, 2, c, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    P = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float64) for k, v in P.items()}
    spec = BW.Spec.of(m.config, kinds)
    data = FT.encode(m.tokenizer, Split(texts_of(m, 6, 3), np.array([0, 1, 1, 0, 1, 0])), 12, False)
    ids, types, mask, y = data.batch(np.arange(6))
    teacher = BW.model_fwd(P, spec, ids, types, mask)[0][2].copy()
    L = 3

    def part(which):
        def loss(grad=False):
            z, feats, cache = BW.model_fwd(P, spec, ids, types, mask)
            _, dz, _, _ = FT.objective_loss(c, z, feats, y, P, L, False, teacher)
            val = BW.cross_entropy(z[2], y)[0] if which == "last" else \
                sum((1 - c.distill_gamma) * BW.cross_entropy(z[i], y)[0]
                    + c.distill_gamma * BW.distill_kl(z[i], teacher, c.distill_temperature)[0] for i in range(2))
            if not grad:
                return val
            keep = {2: dz[2]} if which == "last" else {i: dz[i] for i in range(2)}
            g = BW.model_bwd(keep, cache, P)
            return val, {k: g.get(k, np.zeros_like(v)) for k, v in P.items()}    # not reached: 0
        return loss

    for which in ("last", "multi"):
        _, g = part(which)(True)
        check(directional(part(which), P, g), rtol=1e-5, atol=1e-8)
    g_last, g_multi = part("last")(True)[1], part("multi")(True)[1]
    z, feats, cache = BW.model_fwd(P, spec, ids, types, mask)
    _, dz, _, _ = FT.objective_loss(c, z, feats, y, P, L, False)
    names = FT.projected_names(P, L)
    swapped, scoef = FT.romebert_grads(dz, cache, P, L, "final")       # the code's "reverse" tasks
    want, wcoef = FT.project_conflict(g_multi, g_last, names)
    assert scoef == pytest.approx(wcoef, rel=1e-9)
    for k in want:
        np.testing.assert_allclose(swapped[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)
    got, coef = FT.romebert_grads(dz, cache, P, L)
    want, wcoef = FT.project_conflict(g_last, g_multi, names)
    assert coef == pytest.approx(wcoef, rel=1e-9)
    assert (coef < 0) == (scoef < 0)                                    # one conflict, seen from both sides
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)
    resid = sum(float(np.vdot(got[n] - g_last[n], g_last[n])) for n in names)
    if coef < 0:
        assert abs(resid) < 1e-9 * sum(float(np.vdot(g_last[n], g_last[n])) for n in names)
    else:
        assert resid >= 0
    for k in set(got) - set(names):
        np.testing.assert_allclose(got[k], g_last.get(k, 0) + g_multi.get(k, 0), rtol=1e-12, atol=1e-15)


def test_fine_tune_romebert_projects_every_step_and_logs_the_conflicts(monkeypatch):
    from test_finetune import toy as ft_toy
    m = synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=2,
                               head_kind="shared_pooler", lte=False, ponder=False)
    calls = []
    real = FT.project_conflict
    monkeypatch.setattr(FT, "project_conflict", lambda *a: calls.append(real(*a)[1]) or real(*a))
    cfg = FT.FinetuneConfig(objective="romebert", epochs=2, lr=3e-3, batch_size=16, max_length=16, seed=0,
                            patience=0, heads="mean_linear")
    res = FT.fine_tune(m, ft_toy(64, 0), ft_toy(16, 1), ["n", "p"], cfg, log=lambda s: None)
    assert len(calls) == 8                                                  # 4 steps x 2 epochs
    assert [r["projected_steps"] for r in res.info["log"]] == [sum(c < 0 for c in calls[:4]),
                                                               sum(c < 0 for c in calls[4:])]
    assert all(np.isfinite(v).all() for v in res.params.values())
    dist = FT.fine_tune(m, ft_toy(64, 0), ft_toy(16, 1), ["n", "p"], FT.FinetuneConfig(**{**cfg.__dict__,
                        "objective": "distill"}), log=lambda s: None)
    assert "projected_steps" not in dist.info["log"][0] and len(calls) == 8


def test_romebert_settings_are_checked(capsys):
    m, _, _, ftr, ytr, fdv, ydv = toy(n=40)
    for bad in (dict(romebert_gamma=float("nan")), dict(romebert_gamma=1.5), dict(romebert_temperature=0.0),
                dict(romebert_temperature=float("inf"))):
        with pytest.raises(InputError, match="romebert"):
            T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="fastbert", objective="romebert",
                          cfg=T.TrainConfig(**bad))
    with pytest.raises(InputError, match="romebert_project"):
        FT.FinetuneConfig(objective="romebert", romebert_project="both").check()
    from refexit.cli.main import main
    assert main(["fine-tune", "nowhere", "--data", "sms_spam", "--objective", "distill", "--project", "final"]) == 1
    assert "--project is a setting of --objective romebert" in capsys.readouterr().err
