"""Exit policies: after layer i < L, does this sample stop? (methods.md, "Exit rules")

A policy decides for ONE sample at a time, from that sample's exit logits z_i [C], its head
feature vector feat_i [F] and its own running state, so a sample's result never depends on the
other samples of its batch. `decide` returns (exit?, score, margin): `score` is the number compared
with the threshold, `margin` how far the decision is from flipping (|score - threshold|, or for
argmax-based rules the smallest top-2 logit gap the decision rests on). The model always exits
at layer L with the final classifier; policies are only asked about layers 1..L-1.
"""
from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod

import numpy as np

from . import gpf as _gpf
from . import nn
from .errors import InputError


class ExitWarning(UserWarning):
    """A threshold that can never fire, or always fires at layer 1."""


def _thresholds(value, name: str, num_layers: int) -> np.ndarray:
    """Scalar or per-layer sequence (L-1 values for layers 1..L-1, or L with the last ignored) -> [L-1]."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise InputError(f"{name} must be a number or a 1-D sequence, got shape {arr.shape}")
    if arr.size == 1:
        arr = np.full(max(num_layers - 1, 0), arr[0])
    elif arr.size == num_layers:
        arr = arr[:-1]
    elif arr.size != num_layers - 1:
        raise InputError(f"{name} has {arr.size} values; give one, or one per layer "
                         f"({num_layers - 1} for layers 1..{num_layers - 1})")
    if np.any(np.isnan(arr)):
        raise InputError(f"{name} contains NaN")
    return arr


def _top2_gap(z) -> float:                          # [C] -> top-1 minus top-2 logit (inf if C = 1)
    if z.shape[0] < 2:
        return math.inf
    s = np.sort(z)
    return float(s[-1] - s[-2])


class Policy(ABC):
    name = "policy"
    needs_heads = True

    def check(self, num_layers: int, num_labels: int, exits) -> list[str]:
        """Validate against a model; return warnings (also issued as ExitWarning)."""
        return []

    def start(self) -> dict:
        return {}

    def evaluates_head(self, layer: int, state: dict) -> bool:
        """Is the exit head after `layer` < L computed (and `decide` asked) for this sample?"""
        return True

    @abstractmethod
    def decide(self, layer: int, z, feat, exits, state: dict) -> tuple[bool, float, float]:
        """z [C] exit logits, feat [F] head features, state: this sample's -> (exit?, score, margin)."""

    stateful = False            # True: the policy learns across calls (CeeBERT); results depend on input order
    skips_layers = False        # True: `skip` is asked before every layer (SmartBERT's skip gates)

    def skip(self, layer: int, x, exits, state: dict) -> tuple[bool, float, float]:
        """Before 1-based `layer`, on x [T, H] (the sample's state entering it) -> (skip?, score, margin)."""
        return False, math.nan, math.inf

    own_logits = False          # True: the policy computes the exit logits of layers < L itself from the
                                # layer's states (`exit_logits`; Global Past-Future), the exit heads are unused

    def exit_logits(self, layer: int, x, exits, state: dict):
        """own_logits policies: the layer's real-token states x [n, H] -> (z [C], feat [F])."""
        raise NotImplementedError

    def exit_flops(self, layer: int, exits) -> int:
        """own_logits policies: FLOPs of exit_logits after `layer`."""
        return 0
    def answer(self, layer: int, z, feat, exits, state: dict):
        """The logits [C] a sample reports when it exits after `layer` (L included): the exit head's
        own z, except for policies that answer with something they accumulate (DACT)."""
        return z

    def observe(self, states: list, logits, exit_layers) -> None:
        """After a batch (one classify call): the samples' states, logits [B, C] and exit layers [B],
        in input order. Stateless policies ignore it."""

    def _warn(self, msgs: list[str]) -> list[str]:
        for m in msgs:
            warnings.warn(m, ExitWarning, stacklevel=3)
        return msgs

    def params(self) -> dict:
        """The policy's parameters (for provenance, JSON and codegen)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()
                if not k.startswith("_")}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


class _Threshold(Policy):
    """Policies that compare one score per layer with a threshold."""

    def __init__(self, threshold):
        try:
            arr = np.asarray(threshold, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{type(self).__name__} threshold must be numeric, got {threshold!r}") from None
        if np.any(np.isnan(arr)):
            raise InputError(f"{type(self).__name__} threshold contains NaN")
        self.threshold = arr.tolist()                        # length is checked against the model in check()

    def thr(self, layer: int) -> float:
        return float(self._thr[layer - 1])

    def check(self, num_layers, num_labels, exits):
        self._thr = _thresholds(self.threshold, f"{type(self).__name__} threshold", num_layers)
        msgs = []
        for i, t in enumerate(self._thr, start=1):
            if self._never(t, num_labels):
                msgs.append(f"{self!r}: threshold {t:g} at layer {i} can never fire")
            elif i == 1 and self._always(t, num_labels):
                msgs.append(f"{self!r}: threshold {t:g} always fires at layer 1")
        return self._warn(msgs)


class Entropy(_Threshold):
    """DeeBERT: exit when H(softmax(z_i)) < S_i (strict), in nats."""
    name = "entropy"

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("entropy exit needs at least 2 classes")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t <= 0
    def _always(self, t, C): return t > math.log(C)

    def decide(self, layer, z, feat, exits, state):
        h = float(nn.entropy(z[None])[0])
        t = self.thr(layer)
        return h < t, h, abs(h - t)


class NormEntropy(_Threshold):
    """FastBERT: exit when H(p_i) / ln C <= speed (inclusive by default; inclusive=False: strict)."""
    name = "norm_entropy"

    def __init__(self, speed, inclusive: bool = True):
        super().__init__(speed)
        self.inclusive = bool(inclusive)

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("normalised entropy is undefined for C = 1 (regression)")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t < 0 if self.inclusive else t <= 0
    def _always(self, t, C): return t >= 1 if self.inclusive else t > 1

    def decide(self, layer, z, feat, exits, state):
        s = float(nn.entropy(z[None])[0]) / math.log(z.shape[0])
        t = self.thr(layer)
        return (s <= t if self.inclusive else s < t), s, abs(s - t)


class MaxProb(_Threshold):
    """Right Tool / CascadeBERT: exit when max softmax(z_i / T_i) >= thr (inclusive).

    temperatures: per-layer T_i ([L] or [L-1]); None = the model's calibrated ones (1 if none)."""
    name = "max_prob"

    def __init__(self, threshold, temperatures=None):
        super().__init__(threshold)
        self.temperatures = None if temperatures is None else list(np.atleast_1d(temperatures).astype(float))

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("max-probability exit needs at least 2 classes")
        temps = exits.temperatures if self.temperatures is None else self.temperatures
        t = np.asarray(temps, dtype=np.float64)
        if t.size == 1:
            t = np.full(num_layers, t[0])
        if t.size == num_layers - 1:
            t = np.append(t, 1.0)
        if t.shape != (num_layers,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise InputError(f"temperatures must be {num_layers} positive finite numbers, got {temps!r}")
        self._temps = t
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t > 1
    def _always(self, t, C): return t <= 1 / C

    def decide(self, layer, z, feat, exits, state):
        T = np.asarray(self._temps[layer - 1], dtype=z.dtype)
        p = float(np.max(nn.softmax(z / T)))
        t = self.thr(layer)
        return p >= t, p, abs(p - t)


class Learned(_Threshold):
    """BERxiT learning-to-exit: u_i = sigmoid(w . feat_i + b); exit when u_i < thr (strict)."""
    name = "learned"

    def check(self, num_layers, num_labels, exits):
        if exits.lte is None:
            raise InputError("the learned (LTE) policy needs an LTE head: train one "
                             "(refexit train-exits --objective lte) or load a BERxiT checkpoint")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t <= 0
    def _always(self, t, C): return t > 1

    def decide(self, layer, z, feat, exits, state):
        u = float(exits.lte_score(feat))
        t = self.thr(layer)
        return u < t, u, abs(u - t)


class Ponder(_Threshold):
    """PALBERT Q-exit: exit when sum_{j<=i} p_j > q (strict), p_j = lambda_j prod_{k<j} (1 - lambda_k).

    Running form (the C code does the same): cum += lambda * rem; rem *= 1 - lambda."""
    name = "ponder"

    def check(self, num_layers, num_labels, exits):
        if exits.ponder is None:
            raise InputError("the ponder policy needs a PALBERT lambda head: train one "
                             "(refexit train-exits --objective ponder)")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t >= 1
    def _always(self, t, C): return t < 0

    def start(self):
        return {"cum": 0.0, "rem": 1.0}

    def decide(self, layer, z, feat, exits, state):
        lam = float(exits.ponder_lambda(layer, feat))
        state["cum"] += lam * state["rem"]
        state["rem"] *= 1.0 - lam
        c, t = state["cum"], self.thr(layer)
        return c > t, c, abs(c - t)


class DistanceEntropy(_Threshold):
    """DE3-BERT: exit when EDR_i = (lam + 1) / (lam / DR_i + 1 / H_i) < thr (strict).

    H_i = H(p_i) / ln C (normalised entropy, in [0, 1]); DR_i = 0.5 (1 + (r1 - r2) / max(r1, r2)) in
    [0, 1], r1 the Euclidean distance of the head's feature vector feat_i to the prototype of the
    predicted class argmax z_i, r2 the smallest distance to another class's prototype (r1 = r2 = 0:
    DR = 0.5). EDR is the lam-weighted harmonic mean of DR and H; 0 when either is 0."""
    name = "de3"

    def __init__(self, threshold, lam: float = 1.0):
        super().__init__(threshold)
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) \
                or not math.isfinite(lam) or lam < 0:
            raise InputError(f"DistanceEntropy lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("the DE3-BERT exit needs at least 2 classes")
        if getattr(exits, "prototypes", None) is None:
            raise InputError("the de3 policy needs class prototypes: train exits with the 'prototypes' "
                             "extra (refexit train-exits, default) or pass an exits file that has them")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t <= 0
    def _always(self, t, C): return t > 1

    @staticmethod
    def ratio(r, k: int) -> float:
        """DR from distances r [C] and the predicted class k."""
        r1 = float(r[k])
        r2 = float(np.min(np.delete(r, k)))
        top = max(r1, r2)
        return 0.5 if top == 0 else 0.5 * (1.0 + (r1 - r2) / top)

    def score(self, layer, z, feat, exits) -> float:
        h = float(nn.entropy(z[None])[0]) / math.log(z.shape[0])
        dr = self.ratio(exits.prototype_distances(layer, feat), int(nn.argmax(z)))
        if h <= 0 or dr <= 0:
            return 0.0
        return (self.lam + 1.0) / (self.lam / dr + 1.0 / h)

    def decide(self, layer, z, feat, exits, state):
        e, t = self.score(layer, z, feat, exits), self.thr(layer)
        return e < t, e, abs(e - t)


class PredictedExit(_Threshold):
    """EdgeBERT exit prediction: after layer 1, exit if H(p_1) < S_1 (strict, nats); else look up the
    row of the exit table whose layer-1 entropy is nearest to H(p_1) (ties: the first row) and
    predict the exit layer as the first j in 2..L-1 whose tabled entropy is < S_j (else L). The
    model runs straight to that layer and exits there; the heads in between are not evaluated
    (check_between=True: they are, and the entropy rule may exit earlier).

    margin at layer 1: the smallest of |H - S_1|, the distance gap to the second-nearest row, and
    |table - S_j| of every table entry compared."""
    name = "edgebert"

    def __init__(self, threshold, check_between: bool = False):
        super().__init__(threshold)
        if not isinstance(check_between, (bool, np.bool_)):
            raise InputError(f"check_between must be True or False, got {check_between!r}")
        self.check_between = bool(check_between)

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("the EdgeBERT exit predictor needs at least 2 classes")
        table = getattr(exits, "edge_table", None)
        if table is None:
            raise InputError("the edgebert policy needs an exit table: train exits with the 'edge_table' "
                             "extra (refexit train-exits, default) or pass an exits file that has one")
        if isinstance(table, np.ndarray) and (table.ndim != 2 or table.shape[1] != max(num_layers - 1, 1)):
            raise InputError(f"the exit table has shape {table.shape}, expected [rows, {num_layers - 1}]")
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t <= 0
    def _always(self, t, C): return t > math.log(C)

    def start(self):
        return {"target": 0, "margin": math.inf}

    def evaluates_head(self, layer, state):
        return layer == 1 or layer == state["target"] or self.check_between

    def predict(self, h: float, exits, num_layers: int) -> tuple[int, float]:
        """Layer-1 entropy h -> (predicted exit layer in 2..L, margin of the prediction)."""
        table = exits.edge_table                                              # [K, L-1]
        d = np.abs(table[:, 0].astype(np.float64) - h)                        # [K]
        r = int(np.argmin(d))
        margin = float(np.min(np.delete(d, r)) - d[r]) if len(d) > 1 else math.inf
        for j in range(2, num_layers):
            pj, tj = float(table[r, j - 1]), self.thr(j)
            margin = min(margin, abs(pj - tj))
            if pj < tj:
                return j, margin
        return num_layers, margin

    def decide(self, layer, z, feat, exits, state):
        h = float(nn.entropy(z[None])[0])
        if layer == 1:
            t = self.thr(1)
            if h < t:
                return True, h, abs(h - t)
            target, m = self.predict(h, exits, len(self._thr) + 1)
            state["target"], state["margin"] = target, min(abs(h - t), m)
            return False, h, state["margin"]
        if layer == state["target"]:
            return True, h, state["margin"]
        if not self.check_between:              # the model does not evaluate this head (evaluates_head)
            return False, h, math.inf
        t = self.thr(layer)
        return h < t, h, abs(h - t)


class GlobalPastFuture(_Threshold):
    """Global Past-Future (Liao et al. 2021): after layer i < L the exit logits are the gated combination
    z_i = 2 lambda past + (2 - 2 lambda) future of the past layers' pooled [CLS] vectors (or token means:
    exits.gpf_pool) and imitations of the future layers' (refexit/gpf.py); exit when H(softmax(z_i)) < S_i
    (strict, nats). The exit heads are not used before L; the last layer answers with the model's
    classifier. State per sample: the running sum of the past layers' projections."""
    name = "gpf"
    own_logits = True

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("the Global Past-Future exit needs at least 2 classes")
        if getattr(exits, "gpf", None) is None:
            raise InputError("the gpf policy needs Global Past-Future parameters: train them "
                             "(refexit train-exits --extras gpf) or pass an exits file that has them")
        if isinstance(exits.gpf, dict):        # (a compiled model's stub says True: checked when compiled)
            H = np.shape(exits.gpf.get("pool.b", np.zeros((0, 0))))[-1]
            _gpf.check_params(exits.gpf, num_layers, H, num_labels, "the exits' Global Past-Future parameters",
                         InputError)
        _gpf.check_pool(getattr(exits, "gpf_pool", "cls"), "the exits' Global Past-Future parameters", InputError)
        return super().check(num_layers, num_labels, exits)

    def _never(self, t, C): return t <= 0
    def _always(self, t, C): return t > math.log(C)

    def start(self):
        return {"past": None}

    def exit_logits(self, layer, x, exits, state):
        u = _gpf.pool_input(x, exits.gpf_pool)                                      # [H]: x[0] or the mean
        z, v, state["past"] = _gpf.step(exits.gpf, layer, u, state["past"])
        return z, v

    def exit_flops(self, layer, exits) -> int:
        L, C, H = exits.gpf["pool.w"].shape[0], exits.gpf["gate.w"].shape[0], exits.gpf["pool.w"].shape[1]
        return _gpf.flops(layer, L, H, C)

    def decide(self, layer, z, feat, exits, state):
        h = float(nn.entropy(z[None])[0])
        t = self.thr(layer)
        return h < t, h, abs(h - t)


class DACT(Policy):
    """DACT-BERT (Eyzaguirre et al., arXiv 2109.11745; DACT from ceyzaguirre4/DACT-MAC): the answer is
    accumulated over the layers and the sample stops when the remaining layers cannot change it.

    Per sample: a_0 = 0, p_0 = 1; after layer n: y_n = softmax(z_n), a_n = p_{n-1} y_n + (1 - p_{n-1}) a_{n-1},
    and for n < L the halting unit h_n = 1 - sigmoid(w_n . feat_n + b_n), p_n = p_{n-1} h_n. With
    d = L - n layers remaining, exit when a_n[top1] (1 - p_n)^d - a_n[top2] - d p_n > 0 (strict; top1,
    top2 the two largest entries of a_n). The sample's answer is a_n: the reported logits are ln a_n
    (entries floored at FLOOR), so softmax(logits) = a_n and the label is argmax a_n. At layer L it
    answers with a_L (the final classifier's y_L mixed in with weight p_{L-1}). No threshold: the
    trade-off is trained (the ponder cost tau of `train-exits --objective dact`)."""
    name = "dact"
    FLOOR = 1e-300              # ln(FLOOR) = -690.8: the logit of an entry of a_n that underflowed to 0

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("DACT's halting test needs at least 2 classes")
        if num_layers > 1 and getattr(exits, "dact", None) is None:     # (L = 1: no exit layer, no unit)
            raise InputError("the dact policy needs DACT halting units: train them "
                             "(refexit train-exits --objective dact [--dact-tau T])")
        if isinstance(exits.dact, dict):                         # a compiled model's stub holds True
            heads = [h for h in exits.heads[:num_layers - 1] if h is not None]
            w, b = np.asarray(exits.dact.get("w")), np.asarray(exits.dact.get("b"))
            want = (num_layers - 1, heads[0].feature_size if heads else w.shape[-1])
            if w.shape != want or b.shape != want[:1]:
                raise InputError(f"DACT halting units have shapes w {list(w.shape)}, b {list(b.shape)}; "
                                 f"expected {list(want)} and {list(want[:1])}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise InputError("DACT halting units hold NaN or infinite values")
        self._L = num_layers
        return []

    def start(self):
        return {"a": None, "p": 1.0, "n": 0}

    def _accumulate(self, layer, z, feat, exits, state):
        if state["n"] == layer:                                  # already done by decide
            return
        y = nn.softmax(np.asarray(z, np.float64))                # [C]
        p = state["p"]
        state["a"] = y if state["a"] is None else p * y + (1.0 - p) * state["a"]
        if layer < self._L:
            state["p"] = p * float(exits.dact_halt(layer, feat))
        state["n"] = layer

    @staticmethod
    def score(a, p: float, d: int) -> float:
        """a_n[top1] (1 - p_n)^d - a_n[top2] - d p_n."""
        s = np.sort(a)
        return float(s[-1] * (1.0 - p) ** d - s[-2] - d * p)

    def decide(self, layer, z, feat, exits, state):
        self._accumulate(layer, z, feat, exits, state)
        s = self.score(state["a"], state["p"], self._L - layer)
        return s > 0, s, abs(s)

    def answer(self, layer, z, feat, exits, state):
        self._accumulate(layer, z, feat, exits, state)
        return np.log(np.maximum(state["a"], self.FLOOR)).astype(np.asarray(z).dtype)


class SkipEntropy(Entropy):
    """SmartBERT (IJCAI 2023): before layer i (every i = 1..L, the first and the last too, as its code
    does), the skip gate g_i = sigmoid(gate_i(x)) on the layer's input; g_i >= gate (inclusive):
    skip layer i (the state passes through unchanged, no exit check after it). Else run it, then
    exit when H(softmax(z_i)) < S_i (strict, nats; DeeBERT's rule) for i < L. A sample that skips
    layer L answers with the final classifier on its current state. gate > 1 never skips (the
    paper's `skipped_rate = 1.0` baseline)."""
    name = "smartbert"
    skips_layers = True

    def __init__(self, threshold, gate: float = 0.5):
        super().__init__(threshold)
        if isinstance(gate, bool) or not isinstance(gate, (int, float, np.floating, np.integer)) \
                or not math.isfinite(gate) or not 0 < gate:
            raise InputError(f"SkipEntropy gate must be a finite number > 0, got {gate!r}")
        self.gate = float(gate)

    def check(self, num_layers, num_labels, exits):
        gates = getattr(exits, "gates", None)
        if gates is None:
            raise InputError("the smartbert policy needs skip gates: train them (refexit train-gates) or pass an "
                             "exits file that has them (gates.{i}.*)")
        if isinstance(gates, list) and len(gates) != num_layers:
            raise InputError(f"the exits have {len(gates)} skip gates, the model {num_layers} layers")
        return super().check(num_layers, num_labels, exits)

    def skip(self, layer, x, exits, state):
        g = exits.gate_prob(layer, x)
        return g >= self.gate, g, abs(g - self.gate)


def max_softmax(z) -> float:
    """max softmax(z) in float64 from a max-subtracted sum, as the C computes it: 1 / sum exp(z - max)."""
    z = np.asarray(z, np.float64)
    return float(1.0 / np.sum(np.exp(z - np.max(z))))


class CeeBERT(Policy):
    """CeeBERT: exit at the first layer i with max softmax(z_i) >= alpha_i (inclusive), each alpha_i
    chosen online, without labels, by its own UCB bandit over the arms (default 0.50, 0.55, ..., 0.95).

    State per exit layer i: Q [K] mean rewards, N [K] observation counts, t rounds (samples that
    reached exit i), arm (the arm in force). The arms are chosen between batches: one classify call
    uses the thresholds in force at its start, then `observe` updates the bandits with its samples in
    input order and chooses the next arms (argmax Q + c sqrt(ln t / N), N = 0 first, ties lowest).
    Reward of bandit i for a sample that reached exit i and exited at layer j >= i: 0 if j == i, else
    conf_j - conf_i - cost (j - i). Side observations (as in the paper's code): exited -> every arm
    below the chosen one gets 0 too; continued -> every arm above it gets the same reward."""
    name = "ceebert"
    stateful = True
    ARMS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

    def __init__(self, cost: float, arms=ARMS, c: float = 2.0):
        if isinstance(cost, bool) or not isinstance(cost, (int, float, np.floating, np.integer)) \
                or not math.isfinite(cost) or cost < 0:
            raise InputError(f"CeeBERT cost must be a finite number >= 0, got {cost!r}")
        if isinstance(c, bool) or not isinstance(c, (int, float, np.floating, np.integer)) \
                or not math.isfinite(c) or c < 0:
            raise InputError(f"CeeBERT exploration constant c must be a finite number >= 0, got {c!r}")
        try:
            a = np.asarray(arms, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"CeeBERT arms must be numbers, got {arms!r}") from None
        if a.ndim != 1 or a.size == 0:
            raise InputError(f"CeeBERT needs a non-empty 1-D list of arms (thresholds), got {arms!r}")
        if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
            raise InputError(f"CeeBERT arms must be numbers in [0, 1], got {a.tolist()}")
        if np.any(np.diff(a) <= 0):
            raise InputError(f"CeeBERT arms must be strictly increasing, got {a.tolist()}")
        self.cost, self.arms, self.c = float(cost), a.tolist(), float(c)
        self._bandit = None                                 # set by check() / reset(num_layers)

    def check(self, num_layers, num_labels, exits):
        if num_labels < 2:
            raise InputError("CeeBERT's confidence exit needs at least 2 classes")
        if num_layers < 2:
            raise InputError("CeeBERT needs at least one exit layer (L >= 2)")
        if self._bandit is None:
            self.reset(num_layers)
        elif self._bandit["q"].shape[0] != num_layers - 1:
            raise InputError(f"this CeeBERT state is for {self._bandit['q'].shape[0] + 1} layers, the model has "
                             f"{num_layers}: reset() it first")
        return []

    # ------------------------------------------------------------------ the bandits' state
    def reset(self, num_layers: int | None = None) -> None:
        """Forget everything learned (num_layers: the model's L; default: the state's)."""
        if num_layers is None:
            if self._bandit is None:
                return
            num_layers = self._bandit["q"].shape[0] + 1
        E, K = num_layers - 1, len(self.arms)
        self._bandit = {"q": np.zeros((E, K)), "n": np.zeros((E, K), np.int64), "t": np.zeros(E, np.int64),
                        "arm": np.zeros(E, np.int64)}
        self._choose()

    def state(self) -> dict:
        """Copies of q [L-1, K] float64, n [L-1, K] int64, t [L-1] int64, arm [L-1] int64."""
        if self._bandit is None:
            raise InputError("this CeeBERT policy has no state yet: use it with a model or reset(num_layers)")
        return {k: v.copy() for k, v in self._bandit.items()}

    def set_state(self, q, n, t) -> None:
        """Restore a state read by state() (here or from a compiled model); the arms are re-chosen."""
        q, n, t = np.asarray(q, np.float64), np.asarray(n), np.asarray(t)
        K = len(self.arms)
        if q.ndim != 2 or q.shape[1] != K or q.shape[0] < 1 or n.shape != q.shape or t.shape != q.shape[:1]:
            raise InputError(f"CeeBERT state shapes q {q.shape}, n {n.shape}, t {t.shape}: expected "
                             f"[L-1, {K}], [L-1, {K}], [L-1]")
        if not np.all(np.isfinite(q)):
            raise InputError("CeeBERT state q must be finite")
        if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)) \
                or np.any(n < 0) or np.any(n > t[:, None]):
            raise InputError("CeeBERT state counts must be integers with 0 <= n <= t")
        self._bandit = {"q": q.copy(), "n": n.astype(np.int64), "t": t.astype(np.int64),
                        "arm": np.zeros(len(t), np.int64)}
        self._choose()

    @property
    def _thr(self) -> np.ndarray:                            # [L-1] the thresholds in force
        return np.asarray(self.arms)[self.state()["arm"]]

    def thresholds(self) -> list[float]:
        """The per-layer thresholds the next batch will use."""
        return self._thr.tolist()

    def _choose(self) -> None:
        b = self._bandit
        for i in range(len(b["t"])):
            lt = math.log(b["t"][i]) if b["t"][i] > 0 else 0.0
            ucb = [math.inf if n == 0 else q + self.c * math.sqrt(lt / n) for q, n in zip(b["q"][i], b["n"][i])]
            b["arm"][i] = int(np.argmax(ucb))                # first maximum: ties to the lowest arm

    def ucb_gap(self) -> float:
        """The smallest gap between the best and second-best UCB index over the bandits (inf if none):
        how close the next choice is to flipping (the C-vs-oracle tests skip near-ties)."""
        b, gap = self._bandit, math.inf
        for i in range(len(b["t"])):
            lt = math.log(b["t"][i]) if b["t"][i] > 0 else 0.0
            q, n, best = b["q"][i], b["n"][i], int(b["arm"][i])
            if n[best] == 0:
                continue                                     # an unobserved arm: chosen exactly
            top = q[best] + self.c * math.sqrt(lt / n[best])
            for k in range(len(q)):                          # arms with the best one's history tie exactly
                if (q[k], n[k]) != (q[best], n[best]):
                    gap = min(gap, top - q[k] - self.c * math.sqrt(lt / n[k]))
        return gap

    # ------------------------------------------------------------------ deciding and learning
    def start(self):
        return {"conf": {}}                                  # layer -> max softmax at that exit

    def decide(self, layer, z, feat, exits, state):
        p, t = max_softmax(z), float(self._thr[layer - 1])
        state["conf"][layer] = p
        return p >= t, p, abs(p - t)

    def observe(self, states, logits, exit_layers):
        b = self._bandit
        L = len(b["t"]) + 1
        for st, z, j in zip(states, logits, exit_layers):    # input order
            j = int(j)
            conf = st["conf"]
            cj = conf[j] if j < L else max_softmax(z)
            for i in range(1, min(j, L - 1) + 1):
                a = int(b["arm"][i - 1])
                if i == j:                                   # exited here: the lower arms exit too
                    r, arms = 0.0, range(0, a + 1)
                else:                                        # went on: the higher arms go on too
                    r, arms = cj - conf[i] - self.cost * (j - i), range(a, len(self.arms))
                for k in arms:
                    n = b["n"][i - 1, k]
                    b["q"][i - 1, k] = (n * b["q"][i - 1, k] + r) / (n + 1)
                    b["n"][i - 1, k] = n + 1
                b["t"][i - 1] += 1
        self._choose()


class _Agreement(Policy):
    """Counting consecutive layers that agree: argmax equality, or |y_i - y_{i-1}| < tau for C = 1."""

    def __init__(self, count: int, tau: float | None = None):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise InputError(f"{type(self).__name__} count must be a non-negative integer, got {count!r}")
        if tau is not None and (not isinstance(tau, (int, float)) or math.isnan(tau)):
            raise InputError(f"tau must be a number, got {tau!r}")
        self.count, self.tau = int(count), tau

    def check(self, num_layers, num_labels, exits):
        if num_labels == 1 and self.tau is None:
            raise InputError(f"{type(self).__name__} on a regression head (C = 1) needs tau")
        self._C = num_labels
        return []

    def start(self):
        return {"prev": None, "run": 0, "margin": math.inf}

    def _agree(self, z, state) -> tuple[bool, float]:
        """Update the run with z; return (agrees with previous layer, margin of that comparison)."""
        prev = state["prev"]
        state["prev"] = z
        if prev is None:
            return False, _top2_gap(z) if self._C > 1 else math.inf
        if self._C == 1:
            d = abs(float(z[0]) - float(prev[0]))
            return d < self.tau, abs(d - self.tau)
        return int(nn.argmax(z)) == int(nn.argmax(prev)), min(_top2_gap(z), _top2_gap(prev))


class Patience(_Agreement):
    """PABEE: c reset to 0 when the layer disagrees with the previous one, else c += 1; exit when
    c == t. Earliest exit at layer t+1; t = 0 runs the full model."""
    name = "patience"

    def __init__(self, patience: int, tau: float | None = None):
        super().__init__(patience, tau)

    def check(self, num_layers, num_labels, exits):
        super().check(num_layers, num_labels, exits)
        msgs = []
        if self.count == 0:
            msgs.append(f"{self!r}: patience 0 runs the full model (PABEE convention)")
        elif self.count >= num_layers - 1:
            msgs.append(f"{self!r}: patience {self.count} can never fire before the last layer "
                        f"(L = {num_layers})")
        if num_labels == 1 and self.tau is not None and self.tau <= 0:
            msgs.append(f"{self!r}: tau {self.tau} can never fire")
        return self._warn(msgs)

    def decide(self, layer, z, feat, exits, state):
        agree, m = self._agree(z, state)
        state["run"] = state["run"] + 1 if agree else 0
        state["margin"] = min(state["margin"], m) if agree else m
        return self.count > 0 and state["run"] == self.count, state["run"], state["margin"]


class Window(_Agreement):
    """ELBERT (generalised to argmax agreement): exit when the prediction has been the same for
    N consecutive layers (counting this one)."""
    name = "window"

    def __init__(self, n: int, tau: float | None = None):
        super().__init__(n, tau)
        if self.count < 1:
            raise InputError("Window size must be >= 1")

    def check(self, num_layers, num_labels, exits):
        super().check(num_layers, num_labels, exits)
        msgs = []
        if self.count == 1:
            msgs.append(f"{self!r}: a window of 1 always fires at layer 1")
        elif self.count > num_layers - 1:
            msgs.append(f"{self!r}: a window of {self.count} can never fire before the last layer")
        return self._warn(msgs)

    def decide(self, layer, z, feat, exits, state):
        agree, m = self._agree(z, state)
        state["run"] = state["run"] + 1 if agree else 1
        state["margin"] = min(state["margin"], m) if agree else m
        return state["run"] >= self.count, state["run"], state["margin"]


class Static(Policy):
    """Truncation baseline: every sample exits at layer k (k = L: the full model)."""
    name = "static"

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"Static layer must be an integer >= 1, got {k!r}")
        self.k = int(k)

    def check(self, num_layers, num_labels, exits):
        if self.k > num_layers:
            raise InputError(f"Static({self.k}): the model has only {num_layers} layers")
        return []

    @property
    def needs_heads(self):
        return False

    def evaluates_head(self, layer, state):
        return layer == self.k

    def decide(self, layer, z, feat, exits, state):
        return layer == self.k, float(layer), math.inf


POLICIES = {cls.name: cls for cls in (Entropy, NormEntropy, MaxProb, Patience, Learned, Ponder, Window, Static,
                                       DistanceEntropy, PredictedExit, CeeBERT, GlobalPastFuture, DACT,
                                       SkipEntropy)}


def make_policy(name: str, *args, **kwargs) -> Policy:
    """Policy by its CLI name (entropy, norm_entropy, max_prob, patience, learned, ponder, window, static,
    de3, edgebert, ceebert, gpf, dact)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise InputError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
    return cls(*args, **kwargs)
