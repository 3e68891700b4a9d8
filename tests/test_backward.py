"""The hand-written backward (refexit.train.backward) against float64 central finite differences,
op by op over random shapes (hypothesis), and for whole tiny random models; the batched training
forward against the oracle; and the gradients of a tiny BertForSequenceClassification against
PyTorch autograd (golden file from tools/make_golden.py)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refexit
from conftest import GOLDEN
from refexit import synthetic
from refexit.train import backward as BW

EPS = 1e-6
RTOL = 1e-6


def directional(f, arrays: dict, grads: dict, seed=0, eps=EPS):
    """For each array: the central finite-difference slope of f along a random direction V against
    sum(grad * V), and how far the slope moves when the step is halved or doubled: the
    difference quotient's own rounding noise, which dominates where the true slope is ~0 and f
    is ill-conditioned (a LayerNorm over 2 values, whose output is +-w + b whatever x is).
    f() reads the arrays in place. -> {name: (numeric, analytic, noise)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, a in arrays.items():
        v = rng.normal(size=a.shape)
        slopes = []
        for h in (eps, eps / 2, 2 * eps):
            a += h * v
            fp = f()
            a -= 2 * h * v
            fm = f()
            a += h * v
            slopes.append((fp - fm) / (2 * h))
        noise = max(slopes) - min(slopes)
        out[name] = (slopes[0], float(np.sum(grads[name] * v)), noise)
    return out


def check(pairs: dict, rtol=RTOL, atol=1e-8):
    """|numeric - analytic| within atol + rtol * scale, widened by 4x the measured noise of the
    numeric slope (an error of the backward is O(slope) and the same at every step size)."""
    for name, (num, ana, noise) in pairs.items():
        bound = atol + 4 * noise + rtol * max(abs(num), abs(ana))
        assert abs(num - ana) <= bound, f"{name}: numeric {num!r} analytic {ana!r} (noise {noise:.2g})"


def rnd(rng, *shape):
    return rng.normal(size=shape)


def masks(rng, B, T):
    n = rng.integers(1, T + 1, B)
    n[0] = T                                          # one full row: T is the batch's length
    return np.arange(T)[None, :] < n[:, None]         # [B, T]


shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4))   # B, T, nh, d


# ---------------------------------------------------------------- op by op
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(1, 5), st.integers(0, 10**6))
def test_linear(M, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    x, w, b, R = rnd(rng, M, n_in), rnd(rng, n_out, n_in), rnd(rng, n_out), rnd(rng, M, n_out)
    y, cache = BW.linear_fwd(x, w, b)
    dx, g = BW.linear_bwd(R, cache, w)
    f = lambda: float(np.sum(BW.linear_fwd(x, w, b)[0] * R))           # noqa: E731
    check(directional(f, {"x": x, "w": w, "b": b}, {"x": dx, "w": g["w"], "b": g["b"]}))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(2, 9), st.sampled_from([1e-12, 1e-5, 0.1]), st.integers(0, 10**6))
def test_layer_norm(M, H, eps, seed):
    rng = np.random.default_rng(seed)
    x, w, b, R = rnd(rng, M, H), 1 + rnd(rng, H), rnd(rng, H), rnd(rng, M, H)
    y, cache = BW.layer_norm_fwd(x, w, b, eps)
    assert np.array_equal(y, refexit.nn.layer_norm(x, w, b, eps))          # the oracle's bits
    dx, g = BW.layer_norm_bwd(R, cache)
    f = lambda: float(np.sum(BW.layer_norm_fwd(x, w, b, eps)[0] * R))      # noqa: E731
    check(directional(f, {"x": x, "w": w, "b": b}, {"x": dx, "w": g["w"], "b": g["b"]}), rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["gelu", "gelu_new", "relu"]), st.integers(1, 40), st.integers(0, 10**6))
def test_activation(act, n, seed):
    rng = np.random.default_rng(seed)
    x, R = 3 * rnd(rng, n), rnd(rng, n)
    y, cache = BW.act_fwd(x, act)
    assert np.array_equal(y, refexit.nn.ACTIVATION[act](x))                # the oracle's bits
    dx = BW.act_bwd(R, cache, act)
    check(directional(lambda: float(np.sum(BW.act_fwd(x, act)[0] * R)), {"x": x}, {"x": dx}))


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 30), st.sampled_from([0.1, 0.5]), st.integers(0, 10**6))
def test_dropout(n, rate, seed):
    rng = np.random.default_rng(seed)
    x, R = rnd(rng, n), rnd(rng, n)
    y, keep = BW.dropout_fwd(x, rate, np.random.default_rng(seed))
    assert set(np.unique(keep)) <= {0.0, 1 / (1 - rate)}
    dx = BW.dropout_bwd(R, keep)
    f = lambda: float(np.sum(BW.dropout_fwd(x, rate, np.random.default_rng(seed))[0] * R))   # noqa: E731
    check(directional(f, {"x": x}, {"x": dx}))
    assert BW.dropout_fwd(x, rate, None)[0] is x and BW.dropout_fwd(x, 0.0, rng)[0] is x   # evaluation


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(2, 6), st.integers(0, 10**6))
def test_embeddings(B, T, H, seed):
    rng = np.random.default_rng(seed)
    V, P, Tt = 7, 8, 2
    ids, types = rng.integers(0, V, (B, T)), rng.integers(0, Tt, (B, T))
    ids[0, :2] = 3                                    # a repeated id: the scatter must add
    arrs = {"word": rnd(rng, V, H), "pos": rnd(rng, P, H), "type": rnd(rng, Tt, H),
            "ln.w": 1 + rnd(rng, H), "ln.b": rnd(rng, H)}
    R = rnd(rng, B * T, H)
    fwd = lambda: BW.embed_fwd(ids, types, arrs["word"], arrs["pos"], arrs["type"], arrs["ln.w"],  # noqa: E731
                               arrs["ln.b"], 1e-12)
    y, cache = fwd()
    for b in range(B):                                # the oracle's embedding, row by row
        np.testing.assert_array_equal(y.reshape(B, T, H)[b], refexit.nn.embed(
            ids[b], types[b], arrs["word"], arrs["pos"], arrs["type"], arrs["ln.w"], arrs["ln.b"], 1e-12))
    g = BW.embed_bwd(R, cache)
    check(directional(lambda: float(np.sum(fwd()[0] * R)), arrs, g), rtol=1e-5)


def attn_params(rng, D):
    return {f"{n}.{wb}": rnd(rng, D, D) / np.sqrt(D) if wb == "w" else 0.1 * rnd(rng, D)
            for n in "qkvo" for wb in "wb"}


@settings(max_examples=20, deadline=None)
@given(shapes, st.sampled_from([0.0, 0.3]), st.integers(0, 10**6))
def test_attention(shape, rate, seed):
    B, T, nh, d = shape
    rng = np.random.default_rng(seed)
    D = nh * d
    mask = masks(rng, B, T)
    p, x, R = attn_params(rng, D), rnd(rng, B * T, D), rnd(rng, B * T, D)
    R *= np.repeat(mask.reshape(-1, 1), D, 1)          # the loss reads the real rows only
    fwd = lambda: BW.attention_fwd(x, mask, p, nh, rate, np.random.default_rng(seed))   # noqa: E731
    y, cache = fwd()
    if rate == 0:                                      # the oracle's attention on the real tokens
        for b in range(B):
            n = int(mask[b].sum())
            ref = refexit.nn.attention(x.reshape(B, T, D)[b, :n], np.ones(n, bool), *[
                p[f"{a}.{wb}"] for a in "qkvo" for wb in "wb"], nh)
            np.testing.assert_allclose(y.reshape(B, T, D)[b, :n], ref, rtol=1e-12, atol=1e-12)
    dx, g = BW.attention_bwd(R, cache, p)
    check(directional(lambda: float(np.sum(fwd()[0] * R)), dict(p, x=x), dict(g, x=dx)), rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shapes, st.integers(1, 9), st.sampled_from(["gelu", "gelu_new", "relu"]),
       st.sampled_from([0.0, 0.2]), st.integers(0, 10**6))
def test_encoder_layer(shape, I, act, rate, seed):
    B, T, nh, d = shape
    rng = np.random.default_rng(seed)
    H = nh * d
    mask = masks(rng, B, T)
    p = {f"attn.{k}": v for k, v in attn_params(rng, H).items()}
    p.update({"attn.ln.w": 1 + 0.1 * rnd(rng, H), "attn.ln.b": rnd(rng, H), "ffn.ln.w": 1 + 0.1 * rnd(rng, H),
              "ffn.ln.b": rnd(rng, H), "ffn.up.w": rnd(rng, I, H), "ffn.up.b": rnd(rng, I),
              "ffn.down.w": rnd(rng, H, I) / np.sqrt(I), "ffn.down.b": rnd(rng, H)})
    x, R = rnd(rng, B * T, H), rnd(rng, B * T, H) * np.repeat(mask.reshape(-1, 1), H, 1)
    fwd = lambda: BW.layer_fwd(x, mask, p, nh, act, 1e-12, rate, rate, np.random.default_rng(seed))  # noqa: E731
    y, cache = fwd()
    if rate == 0:
        for b in range(B):
            n = int(mask[b].sum())
            ref = refexit.nn.encoder_layer(x.reshape(B, T, H)[b, :n], np.ones(n, bool), p, nh, act, 1e-12)
            np.testing.assert_allclose(y.reshape(B, T, H)[b, :n], ref, rtol=1e-10, atol=1e-10)
    dx, g = BW.layer_bwd(R, cache, p)
    check(directional(lambda: float(np.sum(fwd()[0] * R)), dict(p, x=x), dict(g, x=dx)), rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["pooler_linear", "shared_pooler", "mean_linear", "mean_l2", "fastbert"]),
       st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.sampled_from([0.0, 0.2]), st.integers(0, 10**6))
def test_heads(kind, B, T, C, rate, seed):
    from refexit.heads import Head, param_shapes
    rng = np.random.default_rng(seed)
    H, W = 6, 4
    l2 = kind == "mean_l2"
    kind = "mean_linear" if l2 else kind
    mask = masks(rng, B, T)
    p = {n: rnd(rng, *s) / np.sqrt(s[-1]) for n, s in param_shapes(kind, H, C, W).items()}
    pool = {"w": rnd(rng, H, H) / np.sqrt(H), "b": rnd(rng, H)}
    x = rnd(rng, B * T, H)
    R, RF = rnd(rng, B, C), rnd(rng, B, W if kind == "fastbert" else H)
    fwd = lambda: BW.head_fwd(kind, x, mask, p, (pool["w"], pool["b"]), l2, 2, rate,  # noqa: E731
                              np.random.default_rng(seed))
    z, feat, cache = fwd()
    if rate == 0:                                      # the oracle's head on each sample's real tokens
        h = Head(kind, p, l2norm=l2)
        for b in range(B):
            xb = x.reshape(B, T, H)[b, :int(mask[b].sum())]
            np.testing.assert_allclose(z[b], h.logits(h.features(xb, pool["w"], pool["b"])), rtol=1e-12, atol=1e-12)
    dx, g, gp = BW.head_bwd(R, cache, p, (pool["w"], pool["b"]), dfeat=RF)
    grads = dict(g, x=dx, **({"pool.w": gp["w"], "pool.b": gp["b"]} if gp else {}))
    arrays = dict(p, x=x, **({"pool.w": pool["w"], "pool.b": pool["b"]} if gp else {}))
    def f():
        z, feat, _ = fwd()
        return float(np.sum(z * R) + np.sum(feat * RF))
    check(directional(f, arrays, grads), rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 10**6))
def test_losses(B, C, seed):
    rng = np.random.default_rng(seed)
    z, y = 2 * rnd(rng, B, C), rng.integers(0, C, B)
    loss, dz, ce = BW.cross_entropy(z, y)
    assert loss == pytest.approx(float(np.mean(ce)))
    check(directional(lambda: BW.cross_entropy(z, y)[0], {"z": z}, {"z": dz}))
    r, t = rnd(rng, B, 1), rnd(rng, B)
    _, dr, _ = BW.mse(r, t)
    check(directional(lambda: BW.mse(r, t)[0], {"r": r}, {"r": dr}))
    teacher = rnd(rng, B, C)
    _, dz = BW.distill_kl(z, teacher, 3.0)
    check(directional(lambda: BW.distill_kl(z, teacher, 3.0)[0], {"z": z}, {"z": dz}))
    assert BW.distill_kl(teacher, teacher, 3.0)[0] == pytest.approx(0, abs=1e-12)


# ---------------------------------------------------------------- whole models
def train_params(model) -> dict:
    P = {k: np.array(v, np.float64) for k, v in model.weights.items()}
    for i, h in enumerate(model.heads):
        if h is not None:
            P.update({f"heads.{i}.{k}": np.array(v, np.float64) for k, v in h.params.items()})
    return P


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 3), st.sampled_from(["pooler_linear", "shared_pooler", "mean_linear", "fastbert"]),
       st.sampled_from(["gelu", "gelu_new"]), st.sampled_from([0.0, 0.1]), st.integers(0, 10**6))
def test_whole_model(L, kind, act, rate, seed):
    """Every parameter of a tiny random model, one CE per head (summed), against finite differences."""
    model = synthetic.random_model(num_layers=L, hidden=8, heads=2, intermediate=12, head_kind=kind,
                                   final_kind="shared_pooler", hidden_act=act, fastbert_width=4, seed=seed % 1000,
                                   vocab_size=60, dtype=np.float64)
    rng = np.random.default_rng(seed)
    B, T = 3, 5
    mask = masks(rng, B, T)
    ids = np.where(mask, rng.integers(5, 60, (B, T)), 0)
    types = np.where(mask, rng.integers(0, 2, (B, T)), 0)
    y = rng.integers(0, 3, B)
    P = train_params(model)
    spec = BW.Spec.of(model.config, [h.kind for h in model.heads], hidden_dropout=rate, attn_dropout=rate)

    def loss(grad=False):
        z, _, cache = BW.model_fwd(P, spec, ids, types, mask, np.random.default_rng(seed))
        out = [BW.cross_entropy(z[i], y) for i in z]
        total = sum(o[0] for o in out)
        return (total, BW.model_bwd({i: o[1] for i, o in zip(z, out)}, cache, P)) if grad else total

    _, grads = loss(True)
    assert set(grads) == set(P)                                      # every parameter is reached
    check(directional(loss, P, grads), rtol=1e-5, atol=1e-9)


def test_eval_forward_is_the_oracle():
    """float32: the batched training forward (no dropout) gives the oracle's logits at every layer."""
    model = synthetic.random_model(num_layers=3, hidden=16, heads=4, intermediate=24, head_kind="mean_linear",
                                   final_kind="shared_pooler")
    enc = model.tokenizer(["a bc def", "xyz", "hello there general kenobi"])
    P = {**model.weights, **{f"heads.{i}.{k}": v for i, h in enumerate(model.heads) for k, v in h.params.items()}}
    spec = BW.Spec.of(model.config, [h.kind for h in model.heads])
    z, _, _ = BW.model_fwd(P, spec, enc.input_ids, enc.token_type_ids, enc.attention_mask.astype(bool))
    for layer in (1, 2, 3):
        ref = model.classify(enc, refexit.Static(layer)).logits
        assert z[layer - 1].dtype == np.float32
        np.testing.assert_allclose(z[layer - 1], ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- PyTorch autograd (golden file)
@pytest.mark.parametrize("name", ["tiny_seqcls", "tiny_regression"])
def test_gradients_match_pytorch_autograd(name):
    """tools/make_golden.py (grad_golden): a tiny BertForSequenceClassification in eval mode
    (dropout off), float64, one batch; its loss (cross-entropy; MSE for the regression model) and
    every parameter's gradient from autograd (stored in float32). Ours (float64) within 1e-5 of the
    largest |gradient| of each tensor (measured: ~1e-7, the storage rounding); loss and logits to 1e-9."""
    path = GOLDEN / f"{name}_grads.npz"
    if not path.exists():
        pytest.skip(f"{path.name} missing: run tools/make_golden.py --only grads")
    z = np.load(path)
    model = refexit.load(GOLDEN / name, dtype=np.float64)
    from refexit.synthetic import hf_names
    to_hf = {c: "bert." + h for h, c in hf_names({k: k for k in model.weights}).items()}
    to_hf.update({f"heads.{model.num_layers - 1}.fc.w": "classifier.weight",
                  f"heads.{model.num_layers - 1}.fc.b": "classifier.bias"})
    P = train_params(model)
    assert set(to_hf) == set(P)
    spec = BW.Spec.of(model.config, [None] * (model.num_layers - 1) + ["shared_pooler"])
    mask = z["attention_mask"].astype(bool)
    logits, _, cache = BW.model_fwd(P, spec, z["input_ids"], z["token_type_ids"], mask)
    L = model.num_layers - 1
    np.testing.assert_allclose(logits[L], z["logits"], rtol=1e-9, atol=1e-12)
    lossf = BW.mse if model.config.problem_type == "regression" else BW.cross_entropy
    loss, dz, _ = lossf(logits[L], z["labels"])
    assert loss == pytest.approx(float(z["loss"]), rel=1e-9)
    grads = BW.model_bwd({L: dz}, cache, P)
    for name, hf in to_hf.items():
        ref = z["grad." + hf]
        scale = max(np.max(np.abs(ref)), 1e-7)         # the key bias: exactly 0 in theory (softmax shift)
        err = np.max(np.abs(grads[name] - ref)) / scale
        assert err <= 1e-5, f"{name} ({hf}): max error {err:.2g} of the largest |gradient|"


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 4), st.integers(1, 4), st.integers(0, 10**6))
def test_ponder_loss(L, B, seed):
    """PALBERT's loss with its inputs' gradients: the frozen-backbone trainer's loss and parameter
    gradients (refexit.train.exits.ponder_loss), and finite differences for all of them."""
    from refexit.train.exits import ponder_loss
    rng = np.random.default_rng(seed)
    F, P_ = 5, 3
    params = {"pos": rnd(rng, L, F), "hid.w": rnd(rng, P_, F), "hid.b": rnd(rng, P_), "out.w": rnd(rng, 1, P_),
              "out.b": rnd(rng, 1)}
    feat, ce = rnd(rng, L - 1, B, F), np.abs(rnd(rng, L, B))
    loss, g, dfeat, dce = BW.ponder_bwd(params, feat, ce, 0.05, 0.3)
    ref_loss, ref_g = ponder_loss(params, feat, ce, 0.05, 0.3)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for k in ref_g:
        np.testing.assert_allclose(g[k], ref_g[k], rtol=1e-10, atol=1e-14)
    f = lambda: BW.ponder_bwd(params, feat, ce, 0.05, 0.3)[0]               # noqa: E731
    check(directional(f, dict(params, feat=feat, ce=ce), dict(g, feat=dfeat, ce=dce)), rtol=1e-5)


def test_erf32():
    import math
    x = np.concatenate([np.linspace(-8, 8, 20001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(BW.erf32(x).astype(np.float64) - ref)) < 5e-7     # float32 arithmetic: 3.4e-7 near 0
    assert BW.erf32(x).dtype == np.float32
