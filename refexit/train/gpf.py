"""Train the Global Past-Future classifier (refexit/gpf.py) on a frozen backbone's cached [CLS] states
(or token means, refexit.gpf.pooled_features: the poolers' inputs X; nothing below depends on which).

The loss is the paper's (lancopku/Early-Exit, BertForSequenceClassification.forward), on cached
features instead of a backbone being fine-tuned:

  loss = ( sum_i i CE(z_i, y) / sum_i i  +  cos ) / 2,  i = 1..L (every layer's combination)
  cos  = 1/(L-1) sum_{i<L} mean over the samples and the future layers j > i of (1 - cos(v_j, f_ij))

with the real pooled vectors v_j as targets (detached, as `cls_tokens` in its code), and, as in its
code, the past pooled vectors v_j, j < i, detached when exit i's loss flows back (only v_i, through
its own pooler, takes exit i's gradient; the projections of every position take it). cos(a, b) =
a.b / sqrt((|a|^2 + eps)(|b|^2 + eps)) as torch's CosineEmbeddingLoss (eps 1e-12).

What the frozen backbone changes: the paper trains this jointly with the backbone (and detaches the
lower layers' states at random, `--freezed_lower_layer`); here the backbone is fixed, so only the
poolers, imitation layers, projections and gate learn. Dropout is left out. The gradients are
written out by hand (checked against finite differences in tests/test_methods_gpf.py); Adam with
early stopping on the dev loss as every other exit part (refexit.train.exits.fit).
"""
from __future__ import annotations

import numpy as np

from refexit import nn
from refexit.gpf import forward_all, param_shapes

COS_EPS = 1e-12


def init_params(L: int, H: int, C: int, rng, pooler=None) -> dict:
    """Projections, imitation layers and the gate N(0, 0.02) with zero biases (the paper's
    initializer_range); the poolers a copy of the model's pooler when it has one (as refexit's
    pooler_linear heads), else N(0, 0.02)."""
    shapes = param_shapes(L, H, C)
    g = {n: (np.zeros(s) if n.endswith(".b") else rng.normal(0, 0.02, s)) for n, s in shapes.items()}
    if pooler is not None:
        w, b = pooler
        g["pool.w"] = np.repeat(np.asarray(w, np.float64)[None], L, axis=0)
        g["pool.b"] = np.repeat(np.asarray(b, np.float64)[None], L, axis=0)
    return g


def loss_and_grads(g: dict, X, y, want_grads: bool = True):
    """X [L, N, H] float64 poolers' inputs ([CLS] states or means), y [N] int labels -> (loss, grads like g)."""
    L, N, H = X.shape
    C = g["gate.w"].shape[0]
    fw = forward_all(g, X)
    v, past, lam, fut, gate, z, f = fw["v"], fw["past"], fw["lam"], fw["fut"], fw["gate"], fw["z"], fw["f"]
    onehot = np.eye(C)[y]
    wsum = L * (L + 1) / 2
    logp = nn.log_softmax(z)                                                  # [L, N, C]
    ce = -np.sum(onehot * logp, axis=-1).mean(axis=1)                         # [L]
    loss_ce = float(np.sum(np.arange(1, L + 1) * ce) / wsum)
    loss_cos = 0.0
    cosines = {}
    for i in range(L - 1):
        terms = []
        for j in range(i + 1, L):
            t, fij = v[j], f[i, j]
            nt = np.sqrt(np.sum(t * t, axis=1) + COS_EPS)
            nf = np.sqrt(np.sum(fij * fij, axis=1) + COS_EPS)
            c = np.sum(t * fij, axis=1) / (nt * nf)
            cosines[i, j] = (c, nt, nf)
            terms.append(1 - c)
        loss_cos += float(np.mean(np.concatenate(terms)))
    loss_cos = loss_cos / (L - 1) if L > 1 else 0.0
    loss = (loss_ce + loss_cos) / 2
    if not want_grads:
        return loss, None

    gr = {n: np.zeros_like(a) for n, a in g.items()}
    dV = np.zeros_like(v)                                                     # [L, N, H]
    dRw = np.zeros((L, N, 2 * C))                 # gradient on r_j for the projection weights (all j <= i)
    for i in range(L):
        dz = 0.5 * (i + 1) / wsum * (np.exp(logp[i]) - onehot) / N            # [N, C]
        dlam = dz * 2 * (past[i][:, :C] - fut[i])
        dpast = dz * 2 * lam[i]
        dfut = dz * (2 - 2 * lam[i])
        dpre = dlam * lam[i] * (1 - lam[i])                                   # [N, C]
        gr["gate.w"] += dpre.T @ gate[i]
        gr["gate.b"] += dpre.sum(0)
        dgs = (dpre @ g["gate.w"]) * (1 - gate[i] ** 2) / (i + 1)             # [N, C] on the past gate sum
        dr = np.concatenate([dpast, dgs], axis=1)                             # [N, 2C] on every r_j, j <= i
        dRw[:i + 1] += dr
        dV[i] += dr @ g["proj.w"][i]                                          # v_j, j < i: detached
        for j in range(i + 1, L):
            fij = f[i, j]
            gr["proj.w"][j][:C] += dfut.T @ fij
            gr["proj.b"][j][:C] += dfut.sum(0)
            dF = dfut @ g["proj.w"][j][:C]                                    # [N, H]
            if L > 1:
                c, nt, nf = cosines[i, j]
                k = 0.5 / (L - 1) / (N * (L - 1 - i))
                dF = dF - k * (v[j] / (nt * nf)[:, None] - (c / (nf * nf))[:, None] * fij)
            dB = dF * (1 - fij * fij)
            gr["imit.w"][j] += dB.T @ v[i]
            gr["imit.b"][j] += dB.sum(0)
            dV[i] += dB @ g["imit.w"][j]
    for j in range(L):
        gr["proj.w"][j] += dRw[j].T @ v[j]
        gr["proj.b"][j] += dRw[j].sum(0)
        dA = dV[j] * (1 - v[j] ** 2)
        gr["pool.w"][j] += dA.T @ X[j]
        gr["pool.b"][j] += dA.sum(0)
    return loss, gr


def train(X, y, X_dev, y_dev, C: int, cfg, rng, pooler=None, lr: float | None = None) -> tuple[dict, dict]:
    """X [L, N, H] the poolers' inputs, y [N] labels in 0..C-1; dev alike -> (params float64, training log).
    Adam on mini-batches with early stopping on the dev loss (refexit.train.exits.fit), at `lr`
    (default cfg.lr); no weight decay (the paper's default)."""
    from dataclasses import replace

    from refexit.train.exits import fit
    X, X_dev = np.asarray(X, np.float64), np.asarray(X_dev, np.float64)
    y, y_dev = np.asarray(y, np.int64), np.asarray(y_dev, np.int64)
    L, _, H = X.shape
    g = init_params(L, H, C, rng, pooler)
    cfg = replace(cfg, weight_decay=0.0, lr=cfg.lr if lr is None else lr,
                  max_epochs=getattr(cfg, "gpf_epochs", 0) or cfg.max_epochs)
    return fit(g, lambda p, idx: loss_and_grads(p, X[:, idx], y[idx]), X.shape[1],
               lambda p: loss_and_grads(p, X_dev, y_dev, want_grads=False)[0], cfg, rng)
