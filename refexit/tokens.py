"""Token reduction at inference (Length-Adaptive Transformer / Dynamic-TinyBERT's length
configuration with PoWER-BERT's significance; docs/methods.md, "Token reduction").

Inside layer i, after its self-attention, each sample keeps the k_i tokens that received the most
attention in that layer; its output projection, feed-forward block, the exit head after layer i and
every later layer see only those tokens. The rule, per sample of n real tokens (no padding: padded
queries never count):

    significance[j] = sum over heads h and query positions q of softmax(attention)[h, q, j]
    k_i = min(tokens entering layer i, max(1, ceil(keep_i * n)))        (float64 product, ceil)
    keep token 0 ([CLS]) always, then the k_i - 1 others with the largest significance; ties go to
    the lower position; the kept tokens keep their original order.

[SEP] is not special (as in Length-Adaptive's code). k_i depends on the sample's own length only,
so a sample's result never depends on its batch mates. `margin` of a selection: the smallest kept
significance minus the largest dropped one (other than [CLS]); inf when nothing was chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


class TokenReduction:
    """A length configuration: keep ratios (0, 1] for layers 1..L (ratio i applies inside layer i,
    after its attention). TokenReduction([1, 0.9, 0.8, 0.7, 0.6, 0.5]); TokenReduction.geometric(0.8, L)
    keeps ceil(0.8**i n) tokens in layer i."""

    def __init__(self, keep):
        vals = np.atleast_1d(np.asarray(keep, dtype=object))
        if vals.ndim != 1 or vals.size == 0:
            raise InputError(f"keep must be one ratio per layer (a non-empty list), got {keep!r}")
        out = []
        for v in vals:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InputError(f"keep ratios must be numbers in (0, 1], got {v!r}")
            v = float(v)
            if math.isnan(v):
                raise InputError("a keep ratio is NaN")
            if not 0.0 < v <= 1.0:
                raise InputError(f"keep ratios must be in (0, 1] (the fraction of a sample's tokens kept), got {v!r}")
            out.append(v)
        self.keep = tuple(out)

    @classmethod
    def geometric(cls, rate: float, num_layers: int) -> "TokenReduction":
        """keep_i = rate**i for i = 1..L (one rate, compounded per layer)."""
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or \
                math.isnan(float(rate)) or not 0.0 < float(rate) <= 1.0:
            raise InputError(f"the keep rate must be a number in (0, 1], got {rate!r}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise InputError(f"num_layers must be a positive integer, got {num_layers!r}")
        return cls([float(rate) ** i for i in range(1, int(num_layers) + 1)])

    def check(self, num_layers: int) -> None:
        if len(self.keep) != num_layers:
            raise InputError(f"the length configuration has {len(self.keep)} keep ratios; the model has "
                             f"{num_layers} layers (give one per layer)")

    def counts(self, n: int) -> list[int]:
        """Tokens kept in layers 1..L by a sample of n real tokens."""
        out, cur = [], int(n)
        for r in self.keep:
            cur = min(cur, max(1, math.ceil(r * float(n))))
            out.append(cur)
        return out

    def __eq__(self, other):
        return isinstance(other, TokenReduction) and self.keep == other.keep

    def __hash__(self):
        return hash(self.keep)

    def __repr__(self):
        return f"TokenReduction(keep=[{', '.join(f'{r:g}' for r in self.keep)}])"


def select(significance: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """significance [n] -> (the kept positions [k], ascending; the selection margin). Token 0 is
    always kept; the others by descending significance, ties to the lower position."""
    n = len(significance)
    if k >= n:
        return np.arange(n), math.inf
    others = np.argsort(-np.asarray(significance[1:], np.float64), kind="stable") + 1     # [n-1]
    chosen = np.sort(np.concatenate([[0], others[:k - 1]]))
    margin = math.inf if k <= 1 else float(significance[others[k - 2]] - significance[others[k - 1]])
    return chosen, margin


# ---------------------------------------------------------------- FLOPs (oracle and compiled alike)
@dataclass(frozen=True)
class LayerCost:
    """FLOPs of one encoder layer run on n tokens that keeps k of them after its attention:
    qkv n + attn n^2 + rest k (+ sig n^2 when the significance is computed)."""
    qkv: int        # per entering token: the q, k, v projections, 2 * 3 H^2
    attn: int       # per n^2: scores and context, 4 H
    rest: int       # per kept token: output projection and feed-forward, 2 (H^2 + 2 H I)
    sig: int        # per n^2 when reducing: the significance sums, one add per head

    @classmethod
    def of(cls, hidden: int, intermediate: int, heads: int) -> "LayerCost":
        H, I = int(hidden), int(intermediate)
        return cls(6 * H * H, 4 * H, 2 * (H * H + 2 * H * I), int(heads))

    def __call__(self, n: int, k: int, reduces: bool) -> int:
        return self.qkv * n + self.attn * n * n + self.rest * k + (self.sig * n * n if reduces else 0)


def spent_flops(cost: LayerCost, tr: TokenReduction, n: int, exit_layer: int, head_flops, heads_run,
                policy_flops: int = 0, num_layers: int | None = None) -> int:
    """FLOPs spent on a sample of n tokens that exits after `exit_layer` under the length
    configuration: its layers (each on the tokens entering it, keeping k_i), the exit heads in
    `heads_run` (1-based layers, each on k_i tokens) and the policy's extra per decided layer.
    head_flops[i](T): FLOPs of the head after layer i + 1 on T tokens."""
    ks = tr.counts(n)
    L = num_layers if num_layers is not None else len(ks)
    total, cur = 0, n
    for i in range(exit_layer):
        total += cost(cur, ks[i], tr.keep[i] < 1.0)
        cur = ks[i]
    total += sum(head_flops[j - 1](ks[j - 1]) for j in heads_run)
    return total + policy_flops * min(exit_layer, L - 1)
