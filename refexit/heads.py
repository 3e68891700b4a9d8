"""Exit heads ("off-ramps"): what turns the hidden state after layer i into logits z_i.

Every head computes a feature vector `feat` [F] from the layer's hidden states x [T, H] (real
tokens only), then logits = fc(feat) [C]. BERxiT's LTE and PALBERT's lambda read that same
feature vector. Kinds (methods.md):
  pooler_linear  feat = tanh(own_pooler(x[0]))                 F = H   (DeeBERT, BERxiT)
  shared_pooler  feat = tanh(model_pooler(x[0]))               F = H   (PABEE; the HF classifier)
  mean_linear    feat = mean_t x[t]  (optionally L2-normalised) F = H
  fastbert       feat = tanh(pre(attn_W(tanh(proj(x)))[0]))     F = W = 128 (FastBERT)
  scalar_mix     feat = sum_j w_j tanh(model_pooler(h_j[0])), j = 1..k, w = mix / ||mix||_2
                                                                F = H   (Right Tool)
The scalar_mix head after layer k reads the [CLS] states of layers 1..k, not only x: the caller
passes the earlier ones (`cls_prev` [k-1, H]); its parameter `mix` has k entries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import nn
from .errors import CheckpointError

HEAD_KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert", "scalar_mix")
MODEL_POOLER_KINDS = ("shared_pooler", "scalar_mix")   # read the model's own pooler
FASTBERT_WIDTH = 128
POOLER_ACT = {"tanh": np.tanh, "relu": nn.relu, "gelu": nn.gelu}   # Head.act (arch.CLASSIFIER_ACTS)


def mean_pool(x):
    """x [T, H] the real tokens' states -> their mean [H] (the mean_linear heads' pooling; Global
    Past-Future with pool "mean" reads the same)."""
    return x.mean(axis=0)


def param_shapes(kind: str, H: int, C: int, width: int = FASTBERT_WIDTH, layer: int = 1) -> dict[str, tuple]:
    """Expected parameter shapes of one head of `kind` after 1-based `layer` (Linear weights are
    [out, in]; scalar_mix: one mix weight per layer 1..layer)."""
    if kind == "pooler_linear":
        return {"pooler.w": (H, H), "pooler.b": (H,), "fc.w": (C, H), "fc.b": (C,)}
    if kind in ("shared_pooler", "mean_linear"):
        return {"fc.w": (C, H), "fc.b": (C,)}
    if kind == "fastbert":
        W = width
        shapes = {"proj.w": (W, H), "proj.b": (W,)}
        for n in ("q", "k", "v", "o", "pre"):
            shapes[f"{n}.w"], shapes[f"{n}.b"] = (W, W), (W,)
        shapes.update({"fc.w": (C, W), "fc.b": (C,)})
        return shapes
    if kind == "scalar_mix":
        return {"mix": (layer,), "fc.w": (C, H), "fc.b": (C,)}
    raise ValueError(f"unknown head kind {kind!r} (known: {', '.join(HEAD_KINDS)})")


@dataclass
class Head:
    kind: str
    params: dict                 # short name -> array, shapes from param_shapes()
    l2norm: bool = False         # mean_linear: L2-normalise the mean before fc
    attn_heads: int = 2          # fastbert: heads of its self-attention (FastBERT 2, SmartBERT 4)
    act: str = "tanh"            # pooler_linear: after its pooler (the final classifier of RoBERTa: tanh,
                                 # DistilBERT: relu, ELECTRA: gelu; refexit/arch.py)

    def __post_init__(self):
        if self.kind == "fastbert":
            a, W = self.attn_heads, self.params["proj.w"].shape[0]
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 1 or W % a:
                raise CheckpointError(f"a fastbert head of width {W} cannot have {a!r} attention heads "
                                      f"(a positive divisor of the width is needed)")
        if self.kind == "scalar_mix":
            a = np.asarray(self.params["mix"], np.float64)
            if not np.all(np.isfinite(a)) or not np.any(a != 0):
                raise CheckpointError(f"a scalar_mix head's 'mix' weights must be finite and not all zero "
                                      f"(they are L2-normalised), got {a.tolist()}")

    @property
    def mix_weights(self):                                  # scalar_mix: [k] mix / ||mix||_2
        a = self.params["mix"]
        return a / np.sqrt(np.sum(a * a))

    @property
    def num_labels(self) -> int:
        return self.params["fc.w"].shape[0]

    @property
    def feature_size(self) -> int:
        return self.params["fc.w"].shape[1]

    def features(self, x, pooler_w=None, pooler_b=None, cls_prev=None):
        """x [T, H] hidden states of the real tokens -> feat [F]. scalar_mix: cls_prev [k-1, H] the
        [CLS] states h_1[0] .. h_{k-1}[0] of the earlier layers (x[0] is h_k[0])."""
        p = self.params
        if self.kind == "pooler_linear":
            return POOLER_ACT[self.act](nn.linear(x[0], p["pooler.w"], p["pooler.b"]))   # [H]
        if self.kind == "shared_pooler":
            return np.tanh(nn.linear(x[0], pooler_w, pooler_b))                    # [H]
        if self.kind == "mean_linear":
            m = mean_pool(x)                                                        # [H]
            return m / np.sqrt(np.sum(m * m)) if self.l2norm else m
        if self.kind == "fastbert":
            y = np.tanh(nn.linear(x, p["proj.w"], p["proj.b"]))                     # [T, W]
            mask = np.ones(len(x), dtype=bool)
            a = nn.attention(y, mask, p["q.w"], p["q.b"], p["k.w"], p["k.b"], p["v.w"], p["v.b"],
                             p["o.w"], p["o.b"], self.attn_heads)                   # [T, W]
            return np.tanh(nn.linear(a[0], p["pre.w"], p["pre.b"]))                 # [W]
        if self.kind == "scalar_mix":
            k = len(p["mix"])
            prev = np.zeros((0, x.shape[1]), x.dtype) if cls_prev is None else np.asarray(cls_prev)
            if len(prev) != k - 1:
                raise ValueError(f"a scalar_mix head over {k} layers needs the {k - 1} earlier [CLS] "
                                 f"states, got {len(prev)}")
            pooled = [np.tanh(nn.linear(v, pooler_w, pooler_b)) for v in list(prev) + [x[0]]]   # k x [H]
            w = self.mix_weights                                                    # [k]
            feat = w[0] * pooled[0]
            for j in range(1, k):                                                   # in layer order, as the C
                feat = feat + w[j] * pooled[j]
            return feat                                                             # [H]
        raise ValueError(f"unknown head kind {self.kind!r}")

    def logits(self, feat):                                                         # [F] -> [C]
        return nn.linear(feat, self.params["fc.w"], self.params["fc.b"])

    def flops(self, T: int) -> int:
        """Multiply-adds x 2 of this head on a sequence of T real tokens."""
        H, C = self.params["fc.w"].shape[1], self.num_labels
        if self.kind == "fastbert":
            W, Hin = self.params["proj.w"].shape
            return 2 * (T * W * Hin + 4 * T * W * W + 2 * T * T * W + W * W + C * W)
        pool = 2 * H * H if self.kind in ("pooler_linear", "shared_pooler", "scalar_mix") else 0
        mix = 2 * len(self.params["mix"]) * H if self.kind == "scalar_mix" else 0   # earlier layers' pooled kept
        return pool + mix + 2 * C * H

    def astype(self, dtype) -> "Head":
        return Head(self.kind, {k: v.astype(dtype) for k, v in self.params.items()},
                    self.l2norm, self.attn_heads, self.act)


@dataclass
class ExitParams:
    """Everything beyond the backbone that the exit policies read."""
    heads: list                   # L entries: Head or None (no head after that layer); [L-1] = final
    lte: dict | None = None       # BERxiT: {"w": [1, F], "b": [1]}
    ponder: dict | None = None    # PALBERT: {"pos": [L, F], "hid.w": [P, F], "hid.b": [P], "out.w": [1, P], "out.b": [1]}
    temperatures: np.ndarray = field(default=None)   # [L] Right-Tool calibration, 1 = none
    prototypes: np.ndarray | None = None  # DE3-BERT: [L-1, C, F] class means of the exit heads' features
    edge_table: np.ndarray | None = None  # EdgeBERT: [K, L-1] layer-1 entropy, then predicted entropies of layers 2..L-1
    gpf: dict | None = None       # Global Past-Future: refexit.gpf.param_shapes (poolers, imitation, projection, gate)
    dact: dict | None = None      # DACT-BERT halting units {"w": [L-1, F], "b": [L-1]}: h_i = 1 - sigmoid(w_i . feat_i + b_i)
    gates: list | None = None     # SmartBERT skip gates: [L] dicts (refexit/skipgates.py), gate i before layer i+1
    gate_heads: int = 2           # their attention heads
    gpf_pool: str = "cls"         # Global Past-Future: the per-layer vector its poolers read (refexit.gpf.POOLS)

    def gate_prob(self, layer: int, x) -> float:     # 1-based layer, x [T, H] its input -> g in (0, 1)
        from . import skipgates
        return skipgates.gate_prob(self.gates[layer - 1], x, self.gate_heads)

    def gate_flops(self, T: int) -> int:             # one skip gate on T tokens
        from . import skipgates
        W, H = self.gates[0]["proj.w"].shape
        return skipgates.flops(T, H, W)

    def lte_score(self, feat):                       # [F] -> u in (0, 1)
        return nn.sigmoid(nn.linear(feat, self.lte["w"], self.lte["b"]))[0]

    def ponder_lambda(self, layer: int, feat):       # 1-based layer, [F] -> lambda in (0, 1)
        p = self.ponder
        h = np.tanh(nn.linear(feat + p["pos"][layer - 1], p["hid.w"], p["hid.b"]))  # [P]
        return nn.sigmoid(nn.linear(h, p["out.w"], p["out.b"]))[0]

    def dact_halt(self, layer: int, feat):          # 1-based layer < L, [F] -> h in (0, 1) (DACT-BERT)
        g = nn.linear(feat, self.dact["w"][layer - 1:layer], self.dact["b"][layer - 1:layer])[0]
        return 0.5 * (1 - np.tanh(0.5 * g))         # 1 - sigmoid(g), as the C computes it

    def prototype_distances(self, layer: int, feat):  # 1-based layer < L, [F] -> Euclidean distances [C]
        d = self.prototypes[layer - 1] - feat[None, :]                              # [C, F]
        return np.sqrt(np.sum(d * d, axis=1))                                       # [C]

    def astype(self, dtype) -> "ExitParams":
        conv = (lambda d: None if d is None else {k: v.astype(dtype) for k, v in d.items()})
        return ExitParams([h.astype(dtype) if h else None for h in self.heads], conv(self.lte),
                          conv(self.ponder), self.temperatures.astype(dtype),
                          None if self.prototypes is None else self.prototypes.astype(dtype),
                          None if self.edge_table is None else self.edge_table.astype(dtype),
                          conv(self.gpf), dact=conv(self.dact),
                          gates=None if self.gates is None else [conv(g) for g in self.gates],
                          gate_heads=self.gate_heads, gpf_pool=self.gpf_pool)
