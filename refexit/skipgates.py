"""SmartBERT's skip gates (Hu et al., IJCAI 2023; code HuBoren99/SmartBert, models/Gate.py).

One gate per encoder layer i = 1..L reads the layer's INPUT (the embeddings for layer 1, else the
state after the last layer that ran) and decides whether the layer runs:

    y = tanh(proj(x))                    [T, W]   (Linear(H -> W), W = 128)
    c = attention(y)[0]                  [W]      (2-head self-attention at width W: query, key and
                                                   value projections, NO output projection; only
                                                   token 0's row is used, so only its query is needed)
    g = sigmoid(out(c))                  scalar   (Linear(W -> 1))

g >= gate (0.5, the paper's `skipped_rate`; inclusive, `torch.ge` in its code): the layer is
skipped, the state passes through unchanged and no exit is checked after it. Parameters per layer
i (0-based in the exits file): gates.{i}.proj.w [W, H], proj.b [W], q.w / k.w / v.w [W, W],
q.b / k.b / v.b [W], out.w [1, W], out.b [1].
"""
from __future__ import annotations

import numpy as np

from . import nn
from .errors import CheckpointError

GATE_WIDTH = 128
GATE_HEADS = 2
PARTS = ("proj.w", "proj.b", "q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "out.w", "out.b")


def param_shapes(H: int, W: int = GATE_WIDTH) -> dict[str, tuple]:
    return {"proj.w": (W, H), "proj.b": (W,), "q.w": (W, W), "q.b": (W,), "k.w": (W, W), "k.b": (W,),
            "v.w": (W, W), "v.b": (W,), "out.w": (1, W), "out.b": (1,)}


def gate_logit(p: dict, x, heads: int = GATE_HEADS) -> float:
    """x [T, H] the real tokens' states entering the layer -> the gate's logit a (g = sigmoid(a))."""
    W = p["proj.w"].shape[0]
    d = W // heads
    y = np.tanh(nn.linear(x, p["proj.w"], p["proj.b"]))                       # [T, W]
    q = nn.linear(y[0], p["q.w"], p["q.b"]).reshape(heads, d)                 # [nh, d] token 0's query
    k = nn.linear(y, p["k.w"], p["k.b"]).reshape(len(x), heads, d)           # [T, nh, d]
    v = nn.linear(y, p["v.w"], p["v.b"]).reshape(len(x), heads, d)           # [T, nh, d]
    s = np.einsum("hd,thd->ht", q, k) / np.sqrt(np.array(d, x.dtype))       # [nh, T]
    c = np.einsum("ht,thd->hd", nn.softmax(s), v).reshape(W)                # [W]
    return nn.linear(c, p["out.w"], p["out.b"])[0]


def gate_prob(p: dict, x, heads: int = GATE_HEADS) -> float:
    return float(nn.sigmoid(np.asarray(gate_logit(p, x, heads), np.float64)))


def flops(T: int, H: int, W: int = GATE_WIDTH) -> int:
    """Multiply-adds x 2 of one gate on T tokens: proj on every token, keys and values on every
    token, token 0's query, its scores and context, the output."""
    return 2 * (T * W * H + 2 * T * W * W + W * W + 2 * T * W + W)


def check(tensors: dict, L: int, H: int, heads: int, where: str, check_shape) -> list | None:
    """gates.{i}.* tensors of an exits file -> [L] parameter dicts (None: no gates); every name and
    shape checked, finite values required."""
    if not tensors:
        return None
    by_layer: dict[int, dict] = {}
    for name, arr in tensors.items():
        parts = name.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 6:
            raise CheckpointError(f"{where}: unexpected tensor {name!r}")
        by_layer.setdefault(int(parts[1]), {})[parts[2]] = arr
    if sorted(by_layer) != list(range(L)):
        raise CheckpointError(f"{where}: skip gates must be given for every layer 0..{L - 1} "
                              f"(gates.{{i}}.*), got layers {sorted(by_layer)[:8]}")
    W = by_layer[0].get("proj.w", np.zeros((0, 0))).shape[0]
    if W < 1 or W % heads:
        raise CheckpointError(f"{where}: skip gates of width {W} cannot be split into metadata "
                              f"'gate_heads' = {heads} attention heads")
    out = []
    for i in range(L):
        p, want = by_layer[i], param_shapes(H, W)
        for n, shape in want.items():
            if n not in p:
                raise CheckpointError(f"{where}: the skip gate of layer {i} lacks 'gates.{i}.{n}'")
            check_shape(f"gates.{i}.{n}", p[n], shape, where)
            if not np.all(np.isfinite(p[n])):
                raise CheckpointError(f"{where}: 'gates.{i}.{n}' holds NaN or infinite values")
        extra = sorted(set(p) - set(want))
        if extra:
            raise CheckpointError(f"{where}: unexpected tensor(s) {[f'gates.{i}.{e}' for e in extra]}")
        out.append(p)
    return out


def init_gates(L: int, H: int, rng, W: int = GATE_WIDTH, bias: float = 0.0) -> list:
    """L gates as PyTorch's nn.Linear initialises them (weights and biases U(-1/sqrt(in), 1/sqrt(in)));
    `bias` is added to out.b (a negative bias starts with the layers running)."""
    out = []
    for _ in range(L):
        g = {}
        for n, shape in param_shapes(H, W).items():
            fan_in = H if n.startswith("proj") else W
            g[n] = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
        g["out.b"] = g["out.b"] + bias
        out.append(g)
    return out
