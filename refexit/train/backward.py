"""The oracle's forward pass on padded batches, with a hand-written backward for every operation.

Training runs on right-padded batches (a sample's rows beyond its length are padding) so that
every big product is one batched `np.matmul` on contiguous arrays. Rows are tokens: activations
are [N, H] with N = B * T. Attention skips padded keys (as the oracle, which computes on the real
tokens only); padded query rows are computed and never read, so every real row -- and therefore
every loss and every gradient -- equals the oracle's per-sample forward (tested).

Shapes: B samples, T padded length, N = B*T rows, H hidden, I intermediate, nh heads, d = H/nh,
C classes. Each `*_fwd` returns (output, cache) -- the cache is what its `*_bwd` needs -- and each
`*_bwd` takes the output's gradient and the cache and returns the input's gradient (and the
parameters', as a dict of the parameter names). Arithmetic in the dtype of the input (float32 for
training, float64 for the gradient checks). Dropout masks come from the `rng` given (None or
rate 0: no dropout, as in evaluation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refexit import nn


# ================================================================ elementwise and small ops
def linear_fwd(x, w, b):                        # x [M, in], w [out, in] -> [M, out]; cache x
    return nn.linear(x, w, b), x


def linear_bwd(dy, x, w):                       # dy [M, out] -> dx [M, in], {w, b}
    return dy @ w, {"w": dy.T @ x, "b": dy.sum(0)}


def dropout_fwd(x, rate: float, rng):
    """Inverted dropout: zero each element with probability `rate`, scale the rest by 1/(1-rate)."""
    if rng is None or rate == 0:
        return x, None
    keep = (rng.random(x.shape, dtype=np.float32) >= rate).astype(x.dtype) / x.dtype.type(1 - rate)
    return x * keep, keep


def dropout_bwd(dy, keep):
    return dy if keep is None else dy * keep


def layer_norm_fwd(x, w, b, eps: float):
    """nn.layer_norm (the same arithmetic, so the same bits), keeping x-hat and 1/std."""
    mu = x.mean(axis=-1, keepdims=True)                                    # [M, 1]
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)                     # [M, 1]
    std = np.sqrt(var + np.array(eps, x.dtype))                            # [M, 1]
    xhat = (x - mu) / std                                                  # [M, H]
    return xhat * w + b, (xhat, std, w)


def layer_norm_bwd(dy, cache):                  # dy [M, H] -> dx [M, H], {w, b}
    xhat, std, w = cache
    g = {"w": np.einsum("mh,mh->h", dy, xhat), "b": dy.sum(0)}
    dxhat = dy * w                                                         # [M, H]
    dx = (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / std
    return dx, g


# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0: Numerical Recipes' erfcc (Chebyshev
# fit, relative error < 1.2e-7 everywhere), for float32 training: ~20 whole-array operations where
# nn.erf's degree-24 Chebyshev series with masks costs ~200x NumPy's exp on the same array
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
         1.48851587, -0.82215223, 0.17087277)


def erf32(x):
    """erf for float32 arrays: |erf32 - math.erf| < 5e-7 (tested; 8e-8 in float64 arithmetic), so
    the GELU differs from the oracle's by < 2.5e-7 |x|."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = np.full_like(x, _ERFC[-1])
    for c in _ERFC[-2::-1]:
        poly *= t
        poly += c
    return np.copysign(1 - t * np.exp(poly - z * z), x)


def act_fwd(x, act: str):
    """ACTIVATION[act](x) and what its derivative needs. The erf GELU is nn.gelu's formula with its
    erf kept for the backward: nn.erf in float64 (gradient checks: exactly the oracle), erf32 in
    float32 (training speed; the result differs from the oracle's by float32 rounding)."""
    if act == "gelu":
        u = x / np.sqrt(np.array(2, x.dtype))
        e = erf32(u) if x.dtype == np.float32 else nn.erf(u)
        return 0.5 * x * (1 + e), (x, e)
    return nn.ACTIVATION[act](x), (x, None)


def act_bwd(dy, cache, act: str):
    x, e = cache
    if act == "gelu":                           # d/dx x Phi(x) = Phi(x) + x phi(x)
        pdf = np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return dy * (0.5 * (1 + e) + x * pdf)
    if act == "relu":
        return dy * (x > 0)
    c = x.dtype.type(math.sqrt(2 / math.pi))   # tanh GELU
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))


def tanh_fwd(x):
    y = np.tanh(x)
    return y, y


def tanh_bwd(dy, y):
    return dy * (1 - y * y)


# ================================================================ embeddings
def embed_fwd(ids, types, word, pos, typ, ln_w, ln_b, eps: float):
    """ids, types [B, T] int -> [N, H]: word + position + token type, then LayerNorm (nn.embed)."""
    B, T = ids.shape
    e = (word[ids] + pos[:T] + typ[types]).reshape(B * T, -1)             # [N, H]
    y, ln = layer_norm_fwd(e, ln_w, ln_b, eps)
    return y, (ids, types, ln, word.shape, pos.shape, typ.shape)


def embed_bwd(dy, cache):
    """-> {word [V, H], pos [P, H], type [Tt, H], ln.w, ln.b}: the gathers' gradients scatter-added."""
    ids, types, ln, ws, ps, ts = cache
    B, T = ids.shape
    de, g = layer_norm_bwd(dy, ln)                                         # [N, H]
    dword = np.zeros(ws, de.dtype)
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")                                # rows of one id together
    starts = np.flatnonzero(np.r_[True, flat[order][1:] != flat[order][:-1]])
    dword[flat[order][starts]] = np.add.reduceat(de[order], starts, axis=0)   # scatter-add
    dpos = np.zeros(ps, de.dtype)
    dpos[:T] = de.reshape(B, T, -1).sum(0)
    dtyp = np.zeros(ts, de.dtype)
    np.add.at(dtyp, types.reshape(-1), de)
    return {"word": dword, "pos": dpos, "type": dtyp, "ln.w": g["w"], "ln.b": g["b"]}


# ================================================================ attention
def attention_fwd(x, key_mask, p: dict, n_heads: int, attn_rate: float = 0.0, rng=None):
    """Masked multi-head self-attention of a padded batch (nn.attention, batched).
    x [N, D], key_mask [B, T] bool, p: {q.w, q.b, k.w, k.b, v.w, v.b, o.w, o.b}; -> [N, D]."""
    B, T = key_mask.shape
    D = x.shape[1]
    d = D // n_heads
    wqkv = np.concatenate([p["q.w"], p["k.w"], p["v.w"]])                 # [3D, D] one product
    bqkv = np.concatenate([p["q.b"], p["k.b"], p["v.b"]])
    qkv = (x @ wqkv.T + bqkv).reshape(B, T, 3, n_heads, d).transpose(2, 0, 3, 1, 4)  # [3, B, nh, T, d]
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(np.array(d, x.dtype))   # [B, nh, T, T]
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)         # padded keys get weight 0
    prob = nn.softmax(scores)                                              # [B, nh, T, T]
    pd, keep = dropout_fwd(prob, attn_rate, rng)
    ctx = (pd @ v).transpose(0, 2, 1, 3).reshape(B * T, D)                 # [N, D]
    return nn.linear(ctx, p["o.w"], p["o.b"]), (x, wqkv, q, k, v, prob, pd, keep, ctx, n_heads)


def attention_bwd(dy, cache, p: dict):
    """dy [N, D] -> dx [N, D], grads {q.w, ..., o.b}."""
    x, wqkv, q, k, v, prob, pd, keep, ctx, nh = cache
    B, _, T, d = q.shape
    D = nh * d
    dctx, go = linear_bwd(dy, ctx, p["o.w"])                               # [N, D]
    dctx = dctx.reshape(B, T, nh, d).transpose(0, 2, 1, 3)                 # [B, nh, T, d]
    dv = pd.transpose(0, 1, 3, 2) @ dctx                                   # [B, nh, T, d]
    dprob = dropout_bwd(dctx @ v.transpose(0, 1, 3, 2), keep)              # [B, nh, T, T]
    ds = prob * (dprob - np.sum(dprob * prob, axis=-1, keepdims=True))     # softmax backward
    ds /= np.sqrt(np.array(d, x.dtype))
    dq = ds @ k                                                            # [B, nh, T, d]
    dk = ds.transpose(0, 1, 3, 2) @ q                                      # [B, nh, T, d]
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B * T, 3 * D)   # [N, 3D]
    dx = dqkv @ wqkv                                                       # [N, D]
    dw = dqkv.T @ x                                                        # [3D, D]
    db = dqkv.sum(0)
    g = {"o.w": go["w"], "o.b": go["b"]}
    for i, n in enumerate("qkv"):
        g[f"{n}.w"], g[f"{n}.b"] = dw[i * D:(i + 1) * D], db[i * D:(i + 1) * D]
    return dx, g


# ================================================================ the encoder layer
def layer_fwd(x, key_mask, p: dict, n_heads: int, act: str, eps: float,
              hidden_rate: float = 0.0, attn_rate: float = 0.0, rng=None):
    """nn.encoder_layer on a padded batch (post-LN, HF's dropouts). x [N, H], p: the layer's
    weights by short name ('attn.q.w', ...) -> [N, H]."""
    att = {k[5:]: v for k, v in p.items() if k.startswith("attn.")}
    a, c_att = attention_fwd(x, key_mask, att, n_heads, attn_rate, rng)   # [N, H]
    a, k1 = dropout_fwd(a, hidden_rate, rng)
    h, c_ln1 = layer_norm_fwd(x + a, p["attn.ln.w"], p["attn.ln.b"], eps)  # [N, H]
    u = nn.linear(h, p["ffn.up.w"], p["ffn.up.b"])                         # [N, I]
    g, c_act = act_fwd(u, act)                                             # [N, I]
    f = nn.linear(g, p["ffn.down.w"], p["ffn.down.b"])                     # [N, H]
    f, k2 = dropout_fwd(f, hidden_rate, rng)
    y, c_ln2 = layer_norm_fwd(h + f, p["ffn.ln.w"], p["ffn.ln.b"], eps)    # [N, H]
    return y, (c_att, k1, c_ln1, h, c_act, g, k2, c_ln2, act)


def layer_bwd(dy, cache, p: dict):
    """dy [N, H] -> dx [N, H], grads by the layer's short names."""
    c_att, k1, c_ln1, h, c_act, g, k2, c_ln2, act = cache
    grads = {}
    ds2, gl = layer_norm_bwd(dy, c_ln2)
    grads["ffn.ln.w"], grads["ffn.ln.b"] = gl["w"], gl["b"]
    dg, gd = linear_bwd(dropout_bwd(ds2, k2), g, p["ffn.down.w"])         # [N, I]
    grads["ffn.down.w"], grads["ffn.down.b"] = gd["w"], gd["b"]
    dh, gu = linear_bwd(act_bwd(dg, c_act, act), h, p["ffn.up.w"])        # [N, H]
    grads["ffn.up.w"], grads["ffn.up.b"] = gu["w"], gu["b"]
    ds1, gl = layer_norm_bwd(dh + ds2, c_ln1)
    grads["attn.ln.w"], grads["attn.ln.b"] = gl["w"], gl["b"]
    att = {k[5:]: v for k, v in p.items() if k.startswith("attn.")}
    dx, ga = attention_bwd(dropout_bwd(ds1, k1), c_att, att)
    grads.update({f"attn.{k}": v for k, v in ga.items()})
    return dx + ds1, grads


# ================================================================ exit heads (heads.py kinds)
def head_fwd(kind: str, x, key_mask, p: dict, pooler=None, l2norm=False, attn_heads=2,
             rate: float = 0.0, rng=None):
    """Head.features then Head.logits on a padded batch. x [N, H] the layer's states, key_mask
    [B, T]; p the head's parameters; pooler (w, b) for shared_pooler. Dropout on the feature
    before fc (HF's classifier dropout). -> (logits [B, C], feat [B, F], cache)."""
    B, T = key_mask.shape
    xs = x.reshape(B, T, -1)
    if kind in ("pooler_linear", "shared_pooler"):
        w, b = (p["pooler.w"], p["pooler.b"]) if kind == "pooler_linear" else pooler
        feat, fc = tanh_fwd(nn.linear(xs[:, 0], w, b))                       # [B, H]
    elif kind == "mean_linear":
        n = key_mask.sum(1, keepdims=True).astype(x.dtype)                   # [B, 1]
        m = np.einsum("bth,bt->bh", xs, key_mask.astype(x.dtype)) / n        # [B, H]
        norm = np.sqrt(np.sum(m * m, axis=1, keepdims=True)) if l2norm else None
        feat, fc = (m / norm if l2norm else m), (m, n, norm)
    elif kind == "fastbert":
        y, c_t1 = tanh_fwd(nn.linear(x, p["proj.w"], p["proj.b"]))          # [N, W]
        att = {k: p[k] for k in ("q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "o.w", "o.b")}
        a, c_att = attention_fwd(y, key_mask, att, attn_heads)               # [N, W]
        a0 = a.reshape(B, T, -1)[:, 0]                                       # [B, W]
        feat, c_t2 = tanh_fwd(nn.linear(a0, p["pre.w"], p["pre.b"]))        # [B, W]
        fc = (c_t1, att, c_att, a0, c_t2)
    else:
        raise ValueError(f"unknown head kind {kind!r}")
    fd, keep = dropout_fwd(feat, rate, rng)
    z = nn.linear(fd, p["fc.w"], p["fc.b"])                                   # [B, C]
    return z, feat, (kind, x, key_mask, fc, fd, keep, l2norm)


def head_bwd(dz, cache, p: dict, pooler=None, dfeat=None):
    """dz [B, C] (and dfeat [B, F] from a reader of the feature: LTE, ponder) -> (dx [N, H],
    grads of the head's parameters, grads of the shared pooler {w, b} or None)."""
    kind, x, key_mask, fc, fd, keep, l2norm = cache
    B, T = key_mask.shape
    dfd, g = linear_bwd(dz, fd, p["fc.w"])
    grads = {"fc.w": g["w"], "fc.b": g["b"]}
    df = dropout_bwd(dfd, keep)
    if dfeat is not None:
        df = df + dfeat
    dx = np.zeros_like(x).reshape(B, T, -1)
    gpool = None
    if kind in ("pooler_linear", "shared_pooler"):
        w = p["pooler.w"] if kind == "pooler_linear" else pooler[0]
        da = tanh_bwd(df, fc)                                                 # [B, H]
        dx[:, 0], g = linear_bwd(da, x.reshape(B, T, -1)[:, 0], w)
        if kind == "pooler_linear":
            grads["pooler.w"], grads["pooler.b"] = g["w"], g["b"]
        else:
            gpool = g
    elif kind == "mean_linear":
        m, n, norm = fc
        if l2norm:                                                            # d(m/|m|)
            u = m / norm
            df = (df - u * np.sum(df * u, axis=1, keepdims=True)) / norm
        dx[:] = (df / n)[:, None, :] * key_mask[:, :, None]
    else:                                                                     # fastbert
        c_t1, att, c_att, a0, c_t2 = fc
        da0, g = linear_bwd(tanh_bwd(df, c_t2), a0, p["pre.w"])
        grads["pre.w"], grads["pre.b"] = g["w"], g["b"]
        da = np.zeros((B, T, a0.shape[1]), x.dtype)
        da[:, 0] = da0
        dy, ga = attention_bwd(da.reshape(B * T, -1), c_att, att)
        grads.update(ga)
        dxr, g = linear_bwd(tanh_bwd(dy, c_t1), x, p["proj.w"])
        grads["proj.w"], grads["proj.b"] = g["w"], g["b"]
        return dxr, grads, None
    return dx.reshape(B * T, -1), grads, gpool


# ================================================================ losses (mean over the batch)
def cross_entropy(z, y):
    """z [B, C] logits, y [B] int -> (mean CE, dz [B, C], per-sample CE [B])."""
    logp = nn.log_softmax(z)
    rows = np.arange(len(y))
    ce = -logp[rows, y]
    dz = np.exp(logp)
    dz[rows, y] -= 1
    return float(ce.mean()), dz / len(y), ce


def mse(z, y):
    """z [B, 1] (regression), y [B] float -> (mean squared error, dz [B, 1], per-sample [B])."""
    r = z[:, 0] - y.astype(z.dtype)
    return float(np.mean(r * r)), (2 * r / len(y))[:, None], r * r


def distill_kl(z, teacher, T: float):
    """T^2 KL(softmax(teacher/T) || softmax(z/T)) per sample, mean; the teacher is a constant.
    -> (loss, dz [B, C])."""
    q = nn.softmax(teacher / T)
    logq, logp = nn.log_softmax(teacher / T), nn.log_softmax(z / T)
    kl = np.sum(q * (logq - logp), axis=1)
    return float(T * T * kl.mean()), T * (np.exp(logp) - q) / len(z)


# ================================================================ the whole model
@dataclass
class Spec:
    """What the training forward computes besides the weights."""
    n_heads: int
    act: str
    eps: float
    kinds: list                     # [L] head kind after layer i+1, or None (no head)
    l2norm: bool = False
    fastbert_heads: int = 2
    hidden_dropout: float = 0.0
    attn_dropout: float = 0.0

    @classmethod
    def of(cls, config, kinds, **kw) -> "Spec":
        return cls(config.num_attention_heads, config.hidden_act, config.layer_norm_eps, list(kinds), **kw)


def layer_params(P: dict, i: int) -> dict:
    pre = f"layers.{i}."
    return {k[len(pre):]: v for k, v in P.items() if k.startswith(pre)}


def head_params(P: dict, i: int) -> dict:
    pre = f"heads.{i}."
    return {k[len(pre):]: v for k, v in P.items() if k.startswith(pre)}


def model_fwd(P: dict, spec: Spec, ids, types, key_mask, rng=None):
    """P: canonical weights (checkpoint.py names) + 'heads.{i}.<param>' for the head after layer
    i+1 (i = L-1: the final classifier). ids, types [B, T] int, key_mask [B, T] bool.
    -> (logits {i: [B, C]}, features {i: [B, F]}, cache). rng None: evaluation (no dropout)."""
    L = len(spec.kinds)
    hr, ar = spec.hidden_dropout, spec.attn_dropout
    x, c_emb = embed_fwd(ids, types, P["emb.word"], P["emb.pos"], P["emb.type"], P["emb.ln.w"],
                         P["emb.ln.b"], spec.eps)                              # [N, H]
    x, k_emb = dropout_fwd(x, hr, rng)
    pooler = (P["pooler.w"], P["pooler.b"]) if "pooler.w" in P else None
    layers, heads, logits, feats = [], {}, {}, {}
    last = max(i for i, k in enumerate(spec.kinds) if k is not None)
    for i in range(last + 1):                                                 # no layer after the last head
        x, c = layer_fwd(x, key_mask, layer_params(P, i), spec.n_heads, spec.act, spec.eps, hr, ar, rng)
        layers.append(c)
        if spec.kinds[i] is not None:
            logits[i], feats[i], heads[i] = head_fwd(spec.kinds[i], x, key_mask, head_params(P, i), pooler,
                                                     spec.l2norm, spec.fastbert_heads, hr, rng)
    return logits, feats, (c_emb, k_emb, layers, heads, L)


def model_bwd(dlogits: dict, cache, P: dict, dfeats: dict | None = None) -> dict:
    """dlogits {i: [B, C]} (heads without a loss may be left out), dfeats {i: [B, F]} -> the
    gradient of every parameter in P that the loss reaches, by P's names."""
    c_emb, k_emb, layers, heads, L = cache
    dfeats = dfeats or {}
    pooler = (P["pooler.w"], P["pooler.b"]) if "pooler.w" in P else None
    grads: dict = {}

    def add(name, g):
        grads[name] = grads[name] + g if name in grads else g

    dx = None
    for i in range(len(layers) - 1, -1, -1):
        if i in heads and (i in dlogits or i in dfeats):
            hp = head_params(P, i)
            dz = dlogits.get(i)
            if dz is None:
                dz = np.zeros((heads[i][2].shape[0], hp["fc.w"].shape[0]), hp["fc.w"].dtype)
            dh, gh, gp = head_bwd(dz, heads[i], hp, pooler, dfeats.get(i))
            for k, v in gh.items():
                add(f"heads.{i}.{k}", v)
            if gp is not None:
                add("pooler.w", gp["w"])
                add("pooler.b", gp["b"])
            dx = dh if dx is None else dx + dh
        if dx is None:
            continue
        dx, gl = layer_bwd(dx, layers[i], layer_params(P, i))
        for k, v in gl.items():
            grads[f"layers.{i}.{k}"] = v
    if dx is None:
        return grads
    ge = embed_bwd(dropout_bwd(dx, k_emb), c_emb)
    for k, v in ge.items():
        grads[f"emb.{k}"] = v
    return grads


# ================================================================ PALBERT's ponder loss
def ponder_bwd(params: dict, feat, ce, beta: float, prior: float):
    """PALBERT's expected loss, refexit.train.exits.ponder_loss (the same loss and parameter
    gradients), with the gradients of its inputs too, for joint training: feat [K, B, F] the exit
    features of layers 1..K = L-1, ce [L, B] each layer's per-sample loss.
    -> (loss, grads of params, dfeat [K, B, F], dce [L, B])."""
    from refexit.train.exits import ponder_dist, ponder_prior_logp
    logp, lam, (s, h, logr) = ponder_dist(params, feat)                       # [L, B], [K, B]
    L, N = ce.shape
    p = np.exp(logp)                                                          # [L, B] exit distribution
    a = ce + beta * (logp - ponder_prior_logp(L, prior)[:, None].astype(ce.dtype))
    loss = float(np.mean(np.sum(p * a, axis=0)))
    S = np.empty_like(a)                                                      # expected a from layer i on
    S[-1] = a[-1]
    for i in range(L - 2, -1, -1):
        S[i] = lam[i] * a[i] + (1 - lam[i]) * S[i + 1]
    do = np.exp(logr[:-1]) * (a[:-1] - S[1:]) / N * lam * (1 - lam)          # [K, B] d/d(MLP output)
    ds = do[..., None] * params["out.w"][0] * (1 - h * h)                     # [K, B, P]
    K = len(do)
    grads = {"out.w": np.einsum("kn,knp->p", do, h)[None, :], "out.b": np.array([do.sum()], ce.dtype),
             "hid.w": np.einsum("knp,knf->pf", ds, s), "hid.b": ds.sum((0, 1)),
             "pos": np.zeros_like(params["pos"])}
    dfeat = ds @ params["hid.w"]                                              # [K, B, F]
    grads["pos"][:K] = dfeat.sum(1)
    return loss, grads, dfeat, p / N
