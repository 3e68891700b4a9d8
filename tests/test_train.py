"""Training exit heads in NumPy: analytic gradients vs finite differences, determinism, loss going
down, the safetensors round trip, and (realmodel) beating the majority class on real SMS data."""
from __future__ import annotations

import numpy as np
import pytest

import refexit
from refexit.train import features as F
from refexit import synthetic
from refexit.train import exits as T
from refexit.model import Model


# ---------------------------------------------------------------- gradient checks
def numeric_grad(f, params, key, eps=1e-6):
    g = np.zeros_like(params[key])
    for i in np.ndindex(params[key].shape):
        old = params[key][i]
        params[key][i] = old + eps
        up = f(params)
        params[key][i] = old - eps
        down = f(params)
        params[key][i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def assert_grads(loss_fn, params):
    _, grads = loss_fn(params)
    assert set(grads) == set(params)
    for k in params:
        num = numeric_grad(lambda p: loss_fn(p)[0], params, k)
        assert grads[k].shape == params[k].shape, k
        np.testing.assert_allclose(grads[k], num, atol=1e-7, rtol=1e-5, err_msg=k)


@pytest.mark.parametrize("pooler", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_head_loss_gradient(pooler, soft):
    rng = np.random.default_rng(1)
    N, H, C = 7, 5, 3
    x = rng.normal(size=(N, H))
    q = rng.dirichlet(np.ones(C), N) if soft else np.eye(C)[rng.integers(0, C, N)]
    p = {"fc.w": rng.normal(size=(C, H)), "fc.b": rng.normal(size=C)}
    if pooler:
        p["pooler.w"], p["pooler.b"] = rng.normal(size=(H, H)), rng.normal(size=H)
    assert_grads(lambda pp: T.head_loss(pp, x, q, scale=0.7), p)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_scalar_mix_head_loss_gradient_through_the_l2_normalisation(k, soft):
    rng = np.random.default_rng(3 + k)
    N, H, C = 6, 5, 3
    x = rng.normal(size=(N, k, H))                                   # pooled layers 1..k
    q = rng.dirichlet(np.ones(C), N) if soft else np.eye(C)[rng.integers(0, C, N)]
    p = {"mix": rng.normal(size=k), "fc.w": rng.normal(size=(C, H)), "fc.b": rng.normal(size=C)}
    assert_grads(lambda pp: T.head_loss(pp, x, q, scale=0.7), p)
    if k > 1:                                  # the loss ignores the scale of the mix: grad _|_ mix
        _, g = T.head_loss(p, x, q)
        assert abs(g["mix"] @ p["mix"]) < 1e-10 and np.abs(g["mix"]).max() > 1e-4
        p2 = dict(p, mix=3.5 * p["mix"])
        assert T.head_loss(p2, x, q)[0] == pytest.approx(T.head_loss(p, x, q)[0], rel=1e-12)


def test_scalar_mix_features_are_the_normalised_mix_of_the_pooled_cls_states():
    m = synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, head_kind="scalar_mix",
                               dtype=np.float64, seed=5)
    enc = m.tokenizer(["w1 w2 w3", "w4"], max_length=16)
    hs = m.hidden_states(enc)
    pw, pb = m.weights["pooler.w"], m.weights["pooler.b"]
    for k in (1, 2, 3):
        h = m.exits.heads[k - 1]
        w = h.params["mix"] / np.linalg.norm(h.params["mix"])
        for b in range(2):
            pooled = np.stack([np.tanh(pw @ hs[j][b, 0] + pb) for j in range(1, k + 1)])    # [k, H]
            z, _ = m.head(k, hs[k][b, :1], np.array([hs[j][b, 0] for j in range(1, k)]).reshape(k - 1, 16))
            np.testing.assert_allclose(z, h.logits(w @ pooled), rtol=1e-12, atol=1e-12)
        assert m.classify(enc, refexit.Static(k)).exit_layers.tolist() == [k, k]
    with pytest.raises(ValueError, match="earlier"):
        m.exits.heads[2].features(hs[3][0], pw, pb, np.zeros((1, 16)))
    with pytest.raises(refexit.errors.CheckpointError, match="mix"):
        refexit.heads.Head("scalar_mix", {"mix": np.zeros(2), "fc.w": np.zeros((3, 16)), "fc.b": np.zeros(3)})


def test_head_loss_is_kl_and_zero_at_the_target():
    rng = np.random.default_rng(2)
    x, C = rng.normal(size=(4, 3)), 3
    p = {"fc.w": rng.normal(size=(C, 3)), "fc.b": rng.normal(size=C)}
    _, z = T.head_forward(p, x)
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    loss, grads = T.head_loss(p, x, q)
    assert abs(loss) < 1e-12 and all(np.abs(g).max() < 1e-12 for g in grads.values())


def test_lte_loss_gradient():
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(9, 4)), rng.integers(0, 2, 9).astype(float)
    assert_grads(lambda pp: T.lte_loss(pp, x, t), {"w": rng.normal(size=(1, 4)), "b": rng.normal(size=1)})


@pytest.mark.parametrize("L", [2, 4])
def test_ponder_loss_gradient(L):
    rng = np.random.default_rng(4)
    N, Fd, P = 6, 5, 4
    feat, ce = rng.normal(size=(L - 1, N, Fd)), rng.exponential(size=(L, N))
    p = {"pos": rng.normal(size=(L, Fd)), "hid.w": rng.normal(size=(P, Fd)), "hid.b": rng.normal(size=P),
         "out.w": rng.normal(size=(1, P)), "out.b": rng.normal(size=1)}
    assert_grads(lambda pp: T.ponder_loss(pp, feat, ce, beta=0.3, prior=0.2), p)


def test_ponder_distribution_sums_to_one_and_matches_the_policy_recurrence():
    rng = np.random.default_rng(5)
    L, N, Fd, P = 5, 3, 4, 3
    feat = rng.normal(size=(L - 1, N, Fd))
    p = {"pos": rng.normal(size=(L, Fd)), "hid.w": rng.normal(size=(P, Fd)), "hid.b": rng.normal(size=P),
         "out.w": rng.normal(size=(1, P)), "out.b": rng.normal(size=1)}
    logp, lam, _ = T.ponder_dist(p, feat)
    np.testing.assert_allclose(np.exp(logp).sum(0), 1, atol=1e-12)
    from refexit.heads import ExitParams
    ep = ExitParams([None] * L, None, p, np.ones(L))
    for n in range(N):                      # the oracle's lambda and its running cumulative sum
        cum, rem = 0.0, 1.0
        for i in range(1, L):
            lo = ep.ponder_lambda(i, feat[i - 1, n])
            assert lo == pytest.approx(lam[i - 1, n], rel=1e-12)
            cum += lo * rem
            rem *= 1 - lo
            assert cum == pytest.approx(np.exp(logp[:i, n]).sum(), rel=1e-10)


def test_temperature_minimises_nll():
    rng = np.random.default_rng(6)
    z, y = rng.normal(size=(200, 4)) * 3, rng.integers(0, 4, 200)
    T_star = T.fit_temperature(z, y)
    grid = np.geomspace(0.05, 20, 400)
    best_grid = min(T.nll(z, y, t) for t in grid)
    assert T.nll(z, y, T_star) <= best_grid + 1e-9


# ---------------------------------------------------------------- training on a random model
def toy_task(num_layers=3, kind="mean_linear", n=160, seed=0, C=3, dtype=np.float32):
    """A random model, random texts, and labels that are a linear function of the layer-1 head
    input (so they are learnable from the features), roughly balanced."""
    m = synthetic.random_model(num_layers=num_layers, hidden=16, heads=2, intermediate=24, num_labels=C,
                               seed=seed, head_kind=kind, dtype=dtype)
    rng = np.random.default_rng(seed)
    vocab = m.tokenizer.vocab[5:]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 10))) for _ in range(n)]
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    w = rng.normal(size=(C, 16))
    x1 = F.head_input(feats, 1, kind, m).astype(np.float64)
    score = (x1[:, -1] if x1.ndim == 3 else x1) @ w.T            # scalar_mix: [N, 1, H]
    y = np.argmax((score - score.mean(0)) / score.std(0), axis=1)
    tr, dv = np.arange(n) < n * 3 // 4, np.arange(n) >= n * 3 // 4
    sub = lambda f, mask: F.Features(f.cls[:, mask], f.mean[:, mask], f.lengths[mask])  # noqa: E731
    return m, texts, sub(feats, tr), y[tr], sub(feats, dv), y[dv]


FAST = T.TrainConfig(max_epochs=60, batch_size=32, lr=3e-2, patience=8)
CACHED_KINDS = [k for k in T.TRAINABLE_KINDS if k != "fastbert"]   # fastbert: tests/test_methods_fastrome.py


@pytest.mark.parametrize("kind", CACHED_KINDS)
def test_training_reduces_loss_and_fits_a_learnable_task(kind):
    m, _, ftr, ytr, fdv, ydv = toy_task(kind=kind, n=400)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind=kind, cfg=FAST, train_final=True)
    for key, log in res.info["log"].items():
        if key.isdigit():                     # lte / ponder have nothing to learn on a toy model
            assert log["train_loss"][-1] < log["train_loss"][0], key
    log1 = res.info["log"]["1"]               # the labels are a function of layer 1's head input
    assert min(log1["dev_loss"]) < log1["dev_loss"][0]
    layer1 = res.info["dev_per_layer"][0]
    majority = np.mean(ydv == np.bincount(ytr).argmax())
    assert layer1["accuracy"] > majority + 0.1, (layer1, majority)


@pytest.mark.parametrize("objective", T.OBJECTIVES)
def test_deterministic_with_a_seed(objective):
    m, _, ftr, ytr, fdv, ydv = toy_task()
    cfg = T.TrainConfig(max_epochs=4, batch_size=16, seed=3)
    a, b = (T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective=objective, cfg=cfg,
                          train_final=True) for _ in range(2))
    for ha, hb in zip(a.exits.heads, b.exits.heads):
        for k in ha.params:
            assert np.array_equal(ha.params[k], hb.params[k])
    for part in ("lte", "ponder"):
        for k in getattr(a.exits, part):
            assert np.array_equal(getattr(a.exits, part)[k], getattr(b.exits, part)[k])
    assert np.array_equal(a.exits.temperatures, b.exits.temperatures)
    other = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective=objective,
                          cfg=T.TrainConfig(max_epochs=4, batch_size=16, seed=4), train_final=True)
    assert not np.array_equal(other.exits.heads[0].params["fc.w"], a.exits.heads[0].params["fc.w"])


def test_fastbert_distillation_uses_no_labels():
    m, _, ftr, ytr, fdv, ydv = toy_task()
    cfg = T.TrainConfig(max_epochs=3, batch_size=16)
    a = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="fastbert", cfg=cfg, extras=(),
                      train_final=False)              # teacher: the model's own classifier
    shuffled = np.random.default_rng(0).permutation(ytr)
    b = T.train_exits(m, ftr, shuffled, fdv, ydv, m.label_names, objective="fastbert", cfg=cfg, extras=(),
                      train_final=False)
    for ha, hb in zip(a.exits.heads[:-1], b.exits.heads[:-1]):
        assert np.array_equal(ha.params["fc.w"], hb.params["fc.w"])


def test_pabee_weights_only_rescale_the_head_losses():
    m, _, ftr, ytr, fdv, ydv = toy_task(num_layers=4)
    cfg = T.TrainConfig(max_epochs=3, batch_size=16)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="pabee", cfg=cfg, extras=(),
                        train_final=True)
    deebert = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="deebert", cfg=cfg, extras=(),
                            train_final=True)
    for layer in (1, 2, 3):                          # dev loss logged = weight * CE
        w = layer / 6
        assert res.info["log"][str(layer)]["dev_loss"][0] == pytest.approx(
            w * deebert.info["log"][str(layer)]["dev_loss"][0], rel=1e-5)     # logged to 6 decimals


@pytest.mark.parametrize("pooler", [False, True])
def test_head_loss_mse_gradient(pooler):
    rng = np.random.default_rng(2)
    N, H = 7, 5
    x, q = rng.normal(size=(N, H)), rng.normal(size=(N, 1))
    p = {"fc.w": rng.normal(size=(1, H)), "fc.b": rng.normal(size=1)}
    if pooler:
        p["pooler.w"], p["pooler.b"] = rng.normal(size=(H, H)), rng.normal(size=H)
    assert_grads(lambda pp: T.head_loss(pp, x, q, scale=0.7, mse=True), p)
    z = T.head_forward(p, x)[1]
    assert T.head_loss(p, x, q, mse=True)[0] == pytest.approx(float(np.mean((z - q) ** 2)), rel=1e-12)


def regression_task(num_layers=3, n=300, seed=0):
    """toy_task's model and features with a float target: a linear function of layer 1's head input."""
    m, _, ftr, _, fdv, _ = toy_task(num_layers=num_layers, n=n, seed=seed, C=1)
    w = np.random.default_rng(seed + 1).normal(size=16)
    target = lambda f: F.head_input(f, 1, "mean_linear", m).astype(np.float64) @ w          # noqa: E731
    return m, ftr, target(ftr), fdv, target(fdv)


@pytest.mark.parametrize("objective", T.REGRESSION_OBJECTIVES)
def test_regression_heads_train_by_mse_and_learn_a_linear_target(objective):
    m, ftr, ytr, fdv, ydv = regression_task()
    cfg = T.TrainConfig(max_epochs=80, batch_size=32, lr=3e-2, patience=10)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, ["score"], objective=objective, cfg=cfg, extras=(), train_final=True)
    assert res.label_names == ["score"] and res.info["problem_type"] == "regression"
    assert all(h.num_labels == 1 for h in res.exits.heads)
    layer1 = res.info["dev_per_layer"][0]
    assert set(layer1) == {"layer", "pearson", "spearman", "mse"}
    if objective != "fastbert":               # fastbert imitates the final head, not the target
        assert layer1["pearson"] > 0.9 and layer1["mse"] < 0.2 * np.var(ydv), layer1
    final = res.info["dev_per_layer"][-1]
    assert final["pearson"] > 0.5, final
    if objective == "fastbert":               # the target is unused below the last layer
        other = T.train_exits(m, ftr, np.random.default_rng(5).permutation(ytr), fdv, ydv, ["score"],
                              objective="fastbert", cfg=T.TrainConfig(max_epochs=3), extras=(),
                              train_final=False)
        again = T.train_exits(m, ftr, ytr, fdv, ydv, ["score"], objective="fastbert",
                              cfg=T.TrainConfig(max_epochs=3), extras=(), train_final=False)
        assert np.array_equal(other.exits.heads[0].params["fc.w"], again.exits.heads[0].params["fc.w"])


def test_regression_refuses_what_needs_class_probabilities():
    m, ftr, ytr, fdv, ydv = regression_task()
    with pytest.raises(refexit.InputError, match="objective 'lte' needs class probabilities"):
        T.train_exits(m, ftr, ytr, fdv, ydv, ["score"], objective="lte", extras=())
    with pytest.raises(refexit.InputError, match="extras calibrate, prototypes need class probabilities"):
        T.train_exits(m, ftr, ytr, fdv, ydv, ["score"], extras=("prototypes", "calibrate"))


def test_regression_evaluation_sweeps_patience_with_tau_and_picks_on_pearson():
    from refexit.train import evaluate as E
    m, ftr, ytr, fdv, ydv = regression_task(num_layers=4)
    cfg = T.TrainConfig(max_epochs=40, batch_size=32, lr=3e-2, patience=8)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, ["score"], cfg=cfg, extras=(), train_final=True)
    model = Model(m.config, m.weights, res.exits.astype(m.dtype), ["score"], m.tokenizer)
    rep = E.evaluate(model, {"dev": fdv, "test": fdv}, {"dev": ydv, "test": ydv}, progress=False)
    assert set(rep["policies"]) == {"patience", "window", "static"}
    assert all("regression head" in why for why in rep["skipped"].values()) and "entropy" in rep["skipped"]
    outs = E.LayerOutputs(model, fdv)
    assert rep["tau_scale"] == pytest.approx(float(np.std(outs.logits[-1][:, 0])))
    full = rep["full"]["dev"]
    z = outs.logits[-1][:, 0].astype(np.float64)
    assert full["mse"] == pytest.approx(float(np.mean((z - ydv) ** 2)), rel=1e-6)
    assert full["pearson"] == pytest.approx(float(np.corrcoef(z, ydv)[0, 1]), abs=1e-9)
    for name, entry in rep["policies"].items():
        taus = {p["params"].get("tau") for p in entry["points"]} - {None}
        assert name == "static" or len(taus) == len(E.TAU_FRACTIONS)
        pk = entry["picked"]
        if pk is not None:                     # within 1 point of Pearson's r, and the fastest such
            assert pk["dev"]["pearson"] >= full["pearson"] - 0.01 - 1e-12
            ok = [p for p in entry["points"] if p["dev"]["pearson"] >= full["pearson"] - 0.01 - 1e-12]
            assert pk["dev"]["mean_layers"] == min(p["dev"]["mean_layers"] for p in ok)
    static = rep["policies"]["static"]["points"]      # Static(k) runs layer k's head on everyone
    for p in static:
        k = p["params"]["k"]
        zk = outs.logits[k - 1][:, 0].astype(np.float64)
        assert p["dev"]["mse"] == pytest.approx(float(np.mean((zk - ydv) ** 2)), rel=1e-6)


def test_spearman_averages_ties_and_pearson_is_numpys():
    """Spearman's rho = Pearson's r of the ranks, a tied group sharing the mean of its positions
    (the definition, computed by brute force here; scipy.stats.spearmanr does the same)."""
    from refexit.train import evaluate as E
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)

    def ranks(x):                              # 1 + (number below) + (ties - 1) / 2
        return np.array([1 + np.sum(x < v) + (np.sum(x == v) - 1) / 2 for v in x])
    got = E.regression_metrics(a, b)
    assert got["spearman"] == pytest.approx(float(np.corrcoef(ranks(a), ranks(b))[0, 1]), abs=1e-12)
    assert got["pearson"] == pytest.approx(float(np.corrcoef(a, b)[0, 1]), abs=1e-12)
    assert got["mse"] == pytest.approx(float(np.mean((a - b) ** 2)), rel=1e-12)
    assert E.regression_metrics(np.ones(5), np.arange(5.0))["pearson"] == 0.0       # constant side


def test_unknown_kind_objective_and_extras_are_refused():
    m, _, ftr, ytr, fdv, ydv = toy_task()
    for kw in ({"kind": "nope"}, {"kind": "fastbert"}, {"objective": "nope"}, {"extras": ("bogus",)}):
        with pytest.raises(ValueError):
            T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, **kw)


def test_scalar_mix_training_needs_the_models_pooler():
    m, _, ftr, ytr, fdv, ydv = toy_task(kind="scalar_mix")
    bare = Model(m.config, {k: v for k, v in m.weights.items() if not k.startswith("pooler.")}, m.exits,
                 m.label_names, m.tokenizer)
    with pytest.raises(refexit.InputError, match="scalar_mix heads need the model's pooler"):
        T.train_exits(bare, ftr, ytr, fdv, ydv, m.label_names, kind="scalar_mix", train_final=True)


def test_scalar_mix_heads_learn_their_mix_and_keep_one_weight_per_layer():
    m, _, ftr, ytr, fdv, ydv = toy_task(kind="scalar_mix", num_layers=4)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="scalar_mix", cfg=FAST, extras=(),
                        train_final=True)
    import dataclasses
    start = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, kind="scalar_mix", extras=(), train_final=True,
                          cfg=dataclasses.replace(FAST, max_epochs=0))          # the initial parameters
    for k, (h, h0) in enumerate(zip(res.exits.heads, start.exits.heads), start=1):
        assert h.kind == "scalar_mix" and h.params["mix"].shape == (k,)
        if k > 1:                                  # the mix is trained, not left at its random start
            assert np.abs(h.mix_weights - h0.mix_weights).max() > 1e-3, k


# ---------------------------------------------------------------- save / load round trip
@pytest.mark.parametrize("kind", CACHED_KINDS)
def test_trained_exits_round_trip_through_safetensors(tmp_path, kind):
    m, texts, ftr, ytr, fdv, ydv = toy_task(kind=kind, num_layers=4)
    res = T.train_exits(m, ftr, ytr, fdv, ydv, ["a", "b", "c"], kind=kind, l2norm=kind == "mean_linear",
                        cfg=T.TrainConfig(max_epochs=3, batch_size=16), train_final=True)
    synthetic.save_model(m, tmp_path / "model", with_exits=False)
    path = T.save(res, tmp_path / "exits", {"dataset": {"name": "toy"}})
    loaded = refexit.load(tmp_path / "model", exits=path)
    assert loaded.label_names == ["a", "b", "c"]
    for ha, hb in zip(res.exits.heads, loaded.heads):
        assert ha.kind == hb.kind and ha.l2norm == hb.l2norm
        for k in ha.params:
            assert np.array_equal(ha.params[k], hb.params[k])
    for part in ("lte", "ponder"):
        for k, v in getattr(res.exits, part).items():
            assert np.array_equal(v, getattr(loaded.exits, part)[k])
    np.testing.assert_allclose(loaded.exits.temperatures, res.exits.temperatures, rtol=1e-15)
    in_memory = Model(m.config, m.weights, res.exits, res.label_names, m.tokenizer)
    enc = m.tokenizer(texts[:12], max_length=32)
    for pol in (None, refexit.Entropy(0.5), refexit.Learned(0.5), refexit.Ponder(0.5), refexit.MaxProb(0.6)):
        a, b = in_memory.classify(enc, pol), loaded.classify(enc, pol)
        assert np.array_equal(a.logits, b.logits) and np.array_equal(a.exit_layers, b.exit_layers)
    import json
    info = json.loads((tmp_path / "exits" / T.EXITS_JSON).read_text())
    assert info["head_kind"] == kind and info["label_names"] == ["a", "b", "c"]
    assert len(info["dev_per_layer"]) == 4 and info["dataset"]["name"] == "toy"


# ---------------------------------------------------------------- the real model on real data
def test_real_sms_training_beats_the_majority_class_and_round_trips(minilm_dir, tmp_path):
    from refexit import data
    from refexit.train.evaluate import accuracy
    ds = data.load_dataset("sms_spam").subset(200, 60, 120, seed=0)
    model = refexit.load(minilm_dir)
    get = lambda s: F.extract(model, s.texts, 64, use_cache=False, progress=False)  # noqa: E731
    ftr, fdv, fte = get(ds.train), get(ds.dev), get(ds.test)
    res = T.train_exits(model, ftr, ds.train.labels, fdv, ds.dev.labels, ds.label_names,
                        cfg=T.TrainConfig(max_epochs=40, seed=0))
    for key, log in res.info["log"].items():
        assert log["train_loss"][-1] < log["train_loss"][0], key
        assert min(log["dev_loss"]) < log["dev_loss"][0], key
    majority = np.mean(ds.test.labels == np.bincount(ds.train.labels).argmax())
    L = model.num_layers
    for layer in (1, L):
        h = res.exits.heads[layer - 1]
        pred = np.argmax(h.logits(F.exit_features(h, fte, layer, model)), axis=1)
        assert accuracy(pred, ds.test.labels) > majority + 0.03, layer
    path = T.save(res, tmp_path / "exits")
    loaded = refexit.load(minilm_dir, exits=path)
    in_memory = Model(model.config, model.weights, res.exits, res.label_names, model.tokenizer)
    enc = model.tokenizer(ds.test.texts[:6], max_length=64)
    for pol in (None, refexit.Entropy(0.3)):
        a, b = in_memory.classify(enc, pol), loaded.classify(enc, pol)
        assert np.array_equal(a.logits, b.logits) and np.array_equal(a.exit_layers, b.exit_layers)
    assert loaded.label_names == ds.label_names
