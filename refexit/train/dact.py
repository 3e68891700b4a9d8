"""DACT-BERT on a frozen backbone: the exit classifiers and the halting units trained together on
cached features, in NumPy (docs/methods.md, "DACT-BERT"; the rule is refexit.DACT).

Forward pass for one sample (as DACT-MAC's DACTWrapper.forward without halting in training):
    a_0 = 0, p_0 = 1
    for n = 1..L:  y_n = softmax(z_n)                             z_L: the final classifier (frozen)
                   a_n = p_{n-1} y_n + (1 - p_{n-1}) a_{n-1}
                   n < L: h_n = 1 - sigmoid(w_n . feat_n + b_n),  p_n = p_{n-1} h_n
    loss = -ln max(a_L[y], 1e-8) + tau sum_{n=1}^{L-1} p_n        (mean over the samples)
DACT-MAC's criterion is NLLLoss(log(a.clamp(min=1e-8))) + PENALTY_COEF * mean(ponder cost), the
ponder cost MIN_PENALTY + sum_n p_n over every step; the constant MIN_PENALTY has no gradient and the
last layer has no halting unit here (its h_L would only enter the cost, so it would learn h_L -> 0:
p_L = 0), so the cost is sum_{n<L} p_n.

Trained: the halting units dact.w [L-1, F], dact.b [L-1] (init 0: h = 0.5) and, unless frozen, the
final Linear (fc.w, fc.b) of every exit head 1..L-1, starting from the heads the DeeBERT stage
trained; the head features feat_n (a pooler_linear head's own pooler included) and the final
classifier stay fixed. The paper fine-tunes the backbone with this loss; here only the heads and the
halting units see it.

Backward (checked against finite differences in tests/test_methods_dact.py): with da_L = d loss /
d a_L, for n = L..1: dy_n = p_{n-1} da_n, (dp_{n-1} from a_n) = da_n . (y_n - a_{n-1}),
da_{n-1} = (1 - p_{n-1}) da_n; then for k = L-1..1: dp_k = (from a_{k+1}) + tau + h_{k+1} dp_{k+1}
(no last term for k = L-1), dh_k = p_{k-1} dp_k, dg_k = -h_k (1 - h_k) dh_k.
"""
from __future__ import annotations

import numpy as np

from refexit import nn

CLAMP = 1e-8                    # DACT-MAC: log(a.clamp(min=1e-8))


def halting(params: dict, feat):
    """feat [L-1, N, F] -> h [L-1, N] = 1 - sigmoid(w . feat + b), as refexit.ExitParams.dact_halt."""
    g = np.einsum("lnf,lf->ln", feat, params["w"]) + params["b"][:, None]
    return 0.5 * (1 - np.tanh(0.5 * g))


def forward(params: dict, feat, z_final):
    """feat [L-1, N, F], z_final [N, C] -> (y [L, N, C], a [L+1, N, C] with a[0] = 0, p [L, N] with
    p[0] = 1, h [L-1, N])."""
    K, N, _ = feat.shape
    z = np.einsum("lnf,lcf->lnc", feat, params["fc.w"]) + params["fc.b"][:, None, :]     # [L-1, N, C]
    y = nn.softmax(np.concatenate([z, np.asarray(z_final, np.float64)[None]]))           # [L, N, C]
    h = halting(params, feat)                                                            # [L-1, N]
    p = np.ones((K + 1, N))
    for n in range(1, K + 1):
        p[n] = p[n - 1] * h[n - 1]
    a = np.zeros((K + 2,) + y.shape[1:])
    for n in range(1, K + 2):
        a[n] = p[n - 1][:, None] * y[n - 1] + (1 - p[n - 1])[:, None] * a[n - 1]
    return y, a, p, h


def loss_grad(params: dict, feat, z_final, labels, tau: float, train_heads: bool = True):
    """mean_n [-ln max(a_L[y], 1e-8) + tau sum_{n<L} p_n] and its gradients (halting units; the exit
    heads' fc.w [L-1, C, F], fc.b [L-1, C] too when train_heads)."""
    y, a, p, h = forward(params, feat, z_final)
    K, N = h.shape
    L = K + 1
    rows = np.arange(N)
    ay = a[L][rows, labels]
    loss = float(np.mean(-np.log(np.maximum(ay, CLAMP)) + tau * p[1:].sum(0)))
    da = np.zeros_like(a[L])
    da[rows, labels] = np.where(ay > CLAMP, -1.0 / np.maximum(ay, CLAMP), 0.0) / N
    dy = np.zeros_like(y)
    dpa = np.zeros((L, N))                                  # d loss / d p_k through a (k = 0..L-1)
    for n in range(L, 0, -1):
        dy[n - 1] = p[n - 1][:, None] * da
        dpa[n - 1] = np.sum(da * (y[n - 1] - a[n - 1]), axis=1)
        da = (1 - p[n - 1])[:, None] * da
    dp = np.zeros((L, N))
    for k in range(K, 0, -1):
        dp[k] = dpa[k] + tau / N + (h[k] * dp[k + 1] if k < K else 0.0)
    dh = p[:K] * dp[1:]                                     # [K, N]: dh_k = p_{k-1} dp_k
    dg = -h * (1 - h) * dh
    grads = {"w": np.einsum("ln,lnf->lf", dg, feat), "b": dg.sum(1)}
    if train_heads:
        ye = y[:K]
        dz = ye * (dy[:K] - np.sum(dy[:K] * ye, axis=2, keepdims=True))              # [K, N, C]
        grads["fc.w"] = np.einsum("lnc,lnf->lcf", dz, feat)
        grads["fc.b"] = dz.sum(1)
    return loss, grads


def train_dact(exits, outs, y, outs_dev, y_dev, cfg, rng, fit):
    """Fine-tune the exit heads' fc and train the halting units of `exits` (the heads of layers
    1..L-1 share one feature size F) with the DACT loss; outs / outs_dev: [L] (feat [N, F], logits
    [N, C]) per layer from the DeeBERT-trained heads. Sets exits.dact and the heads' fc in place;
    returns fit's log."""
    import math
    from refexit.errors import InputError
    if not (isinstance(cfg.dact_tau, (int, float)) and math.isfinite(cfg.dact_tau) and cfg.dact_tau >= 0):
        raise InputError(f"the DACT ponder-cost weight tau must be a finite number >= 0, got {cfg.dact_tau!r}")
    L = len(outs)
    feat = np.stack([f for f, _ in outs[:L - 1]])                               # [L-1, N, F]
    feat_d = np.stack([f for f, _ in outs_dev[:L - 1]])
    zf, zf_d = outs[-1][1], outs_dev[-1][1]
    heads = exits.heads[:L - 1]
    params = {"fc.w": np.stack([np.asarray(hd.params["fc.w"], np.float64) for hd in heads]),
              "fc.b": np.stack([np.asarray(hd.params["fc.b"], np.float64) for hd in heads]),
              "w": np.zeros((L - 1, feat.shape[2])), "b": np.zeros(L - 1)}
    tau, heads_too = cfg.dact_tau, cfg.dact_train_heads
    y, y_dev = np.asarray(y), np.asarray(y_dev)
    best, log = fit(params, lambda pr, idx: loss_grad(pr, feat[:, idx], zf[idx], y[idx], tau, heads_too),
                    feat.shape[1], lambda pr: loss_grad(pr, feat_d, zf_d, y_dev, tau, False)[0], cfg, rng)
    for i, hd in enumerate(heads):
        hd.params["fc.w"], hd.params["fc.b"] = best["fc.w"][i], best["fc.b"][i]
    exits.dact = {"w": best["w"], "b": best["b"]}
    return log
