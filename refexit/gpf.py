"""Global Past-Future early exit (Liao et al., NAACL 2021; code lancopku/Early-Exit, model/modeling_bert.py).

The exit classifier after layer i (1-based) reads every layer, the ones run so far and imitations of
the ones not run yet (docs/methods.md, "Global Past-Future"):

  v_j     = tanh(pool.w[j] u_j + pool.b[j])            [H]  j <= i: layer j's own pooler on its vector u_j
  u_j     = h_j[0] (pool "cls", the paper's [CLS])  or  mean over the real tokens of h_j (pool "mean",
            heads.mean_pool, the mean_linear heads' pooling; padding is never part of x)
  f_ij    = tanh(imit.w[j] v_i + imit.b[j])            [H]  j > i: layer j's imitation of its pooled
                                                            vector, from the CURRENT pooled v_i
  r_j     = proj.w[j] v_j + proj.b[j]                  [2C] every position j has its own projection
  q_ij    = proj.w[j] f_ij + proj.b[j]                 [2C] (the same one for an imitated vector)
  past    = sum_{j<=i} r_j[:C]        future = sum_{j>i} q_ij[:C]               (sums, not means)
  lambda  = sigmoid(gate.w tanh(sum_{j<=i} r_j[C:] / i) + gate.b)          [C]  (a vector: one per class)
  z_i     = 2 lambda past + (2 - 2 lambda) future                          [C]
  exit after layer i < L when H(softmax(z_i)) < S_i (strict, nats; the code's `patience`).

Parameters (canonical names in exits.safetensors, Linear weights [out, in] as everywhere in refexit;
the paper stores imit and proj as [L, in, out] and multiplies on the right):
  gpf.pool.w [L,H,H]  gpf.pool.b [L,H]   per-layer poolers (the paper's bert.poolers)
  gpf.imit.w [L,H,H]  gpf.imit.b [L,H]   per-target-layer imitation (CLSPredLayer; row 0 is never used)
  gpf.proj.w [L,2C,H] gpf.proj.b [L,2C]  per-position projection (ClassifierWithGate.weight/bias)
  gpf.gate.w [C,C]    gpf.gate.b [C]     ClassifierWithGate.gate_proj

The pooling is a setting of the trained parameters (ExitParams.gpf_pool, metadata 'gpf_pool' of
exits.safetensors; absent: "cls"), not a tensor: the shapes and the FLOPs count are the same for both
(the mean's T x H additions are not multiply-adds, and are not counted, as for the mean_linear heads).

Per sample the past part is kept incrementally (`step`: the running sum of the r_j), so a check
after layer i costs one pooler, one projection, the gate, and (L - i) imitations + projections.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .heads import mean_pool

PARTS = ("pool.w", "pool.b", "imit.w", "imit.b", "proj.w", "proj.b", "gate.w", "gate.b")
POOLS = ("cls", "mean")         # the per-layer vector the poolers read: the [CLS] state (the paper) or the mean


def check_pool(pool, where: str, error) -> str:
    """A known pooling name, else `error` naming the value."""
    if not isinstance(pool, str) or pool not in POOLS:
        raise error(f"{where}: the Global Past-Future pooling must be one of {', '.join(map(repr, POOLS))}, "
                    f"got {pool!r}")
    return pool


def pool_input(x, pool: str):
    """x [n, H] one sample's real-token states after a layer -> the vector its pooler reads [H]."""
    return x[0] if pool == "cls" else mean_pool(x)


def pooled_features(feats, pool: str):
    """Cached features (refexit.train.features.Features) -> X [L, N, H] the poolers' inputs of every layer."""
    return feats.cls if pool == "cls" else feats.mean


def param_shapes(L: int, H: int, C: int) -> dict[str, tuple]:
    return {"pool.w": (L, H, H), "pool.b": (L, H), "imit.w": (L, H, H), "imit.b": (L, H),
            "proj.w": (L, 2 * C, H), "proj.b": (L, 2 * C), "gate.w": (C, C), "gate.b": (C,)}


def check_params(g: dict, L: int, H: int, C: int, where: str, error) -> dict:
    """Every part present with its shape and finite; raises `error` naming the tensor."""
    shapes = param_shapes(L, H, C)
    missing = [n for n in shapes if n not in g]
    if missing:
        raise error(f"{where}: the Global Past-Future parameters lack 'gpf.{missing[0]}'")
    extra = sorted(set(g) - set(shapes))
    if extra:
        raise error(f"{where}: unexpected Global Past-Future tensor(s) {['gpf.' + e for e in extra]}")
    for n, shape in shapes.items():
        a = np.asarray(g[n])
        if a.shape != shape:
            raise error(f"{where}: tensor 'gpf.{n}' has shape {list(a.shape)}, expected {list(shape)} "
                        f"(L={L}, H={H}, C={C})")
        if not np.all(np.isfinite(a)):
            raise error(f"{where}: tensor 'gpf.{n}' holds NaN or infinite values")
    return g


def step(g: dict, layer: int, x0, past):
    """One sample after 1-based `layer`: its pooler's input x0 [H] (pool_input: the [CLS] state or the
    mean) and the running sum `past` [2C] of
    the projections of layers < layer (None at layer 1) -> (z [C], v [H] the pooled vector, past
    [2C] including this layer). In x0's dtype, in this order (the C does the same)."""
    L = g["pool.w"].shape[0]
    C = g["gate.w"].shape[0]
    i = layer - 1
    v = np.tanh(nn.linear(x0, g["pool.w"][i], g["pool.b"][i]))                   # [H]
    r = nn.linear(v, g["proj.w"][i], g["proj.b"][i])                              # [2C]
    past = r if past is None else past + r                                        # [2C]
    gate = np.tanh(past[C:] / np.asarray(layer, past.dtype))                      # [C]
    lam = nn.sigmoid(nn.linear(gate, g["gate.w"], g["gate.b"]))                   # [C]
    fut = np.zeros(C, past.dtype)
    for j in range(layer, L):                                                     # 0-based future layers
        f = np.tanh(nn.linear(v, g["imit.w"][j], g["imit.b"][j]))                 # [H]
        fut = fut + nn.linear(f, g["proj.w"][j][:C], g["proj.b"][j][:C])          # [C]
    two = np.asarray(2, past.dtype)
    return two * lam * past[:C] + (two - two * lam) * fut, v, past


def flops(layer: int, L: int, H: int, C: int) -> int:
    """Multiply-adds x 2 of one check after `layer`: the pooler, the projection, the gate, and the
    imitation + the logits half of the projection of each of the L - layer future layers."""
    return 2 * H * H + 2 * 2 * C * H + 2 * C * C + (L - layer) * (2 * H * H + 2 * C * H)


def forward_all(g: dict, X, detach_past: bool = True) -> dict:
    """Batch forward for training and analysis, float64: X [L, N, H] the poolers' inputs of every layer
    (pooled_features: the [CLS] states or the means)
    -> dict with v [L, N, H], r [L, N, 2C], f {(i, j): [N, H]} (0-based, j > i), z [L, N, C]
    (z[i] = the combination after 1-based layer i + 1), and the gate / lambda / past / future parts."""
    L, N, _ = X.shape
    C = g["gate.w"].shape[0]
    v = np.tanh(X @ np.swapaxes(g["pool.w"], 1, 2) + g["pool.b"][:, None])           # [L, N, H] (batched BLAS)
    r = v @ np.swapaxes(g["proj.w"], 1, 2) + g["proj.b"][:, None]                    # [L, N, 2C]
    f, q = {}, {}
    past = np.cumsum(r, axis=0)                                                       # [L, N, 2C]
    z, gate, lam, fut = np.zeros((L, N, C)), np.zeros((L, N, C)), np.zeros((L, N, C)), np.zeros((L, N, C))
    for i in range(L):
        gate[i] = np.tanh(past[i][:, C:] / (i + 1))
        lam[i] = nn.sigmoid(nn.linear(gate[i], g["gate.w"], g["gate.b"]))
        for j in range(i + 1, L):
            f[i, j] = np.tanh(nn.linear(v[i], g["imit.w"][j], g["imit.b"][j]))       # [N, H]
            q[i, j] = nn.linear(f[i, j], g["proj.w"][j], g["proj.b"][j])             # [N, 2C]
            fut[i] += q[i, j][:, :C]
        z[i] = 2 * lam[i] * past[i][:, :C] + (2 - 2 * lam[i]) * fut[i]
    return {"v": v, "r": r, "f": f, "q": q, "past": past, "gate": gate, "lam": lam, "fut": fut, "z": z}
