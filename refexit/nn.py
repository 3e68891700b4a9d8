"""The building blocks of BERT as pure NumPy functions. Shapes: T tokens, H hidden, I intermediate,
C classes. Linear weights keep Hugging Face's [out, in] layout: y = x @ w.T + b.

Every function computes in the dtype of its input (float32 by default, float64 in tight mode).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.polynomial import chebyshev as _cheb


# ---------------------------------------------------------------- erf (for the exact GELU)
# NumPy has no erf. We interpolate it on Chebyshev points from Python's math.erf/erfc (correctly
# rounded to ~1 ulp) once at import: |z| <= 1 directly, 1 < |z| <= 6 as erfc(z) = exp(-z^2) g(z)
# with g smooth; erf(z) = 1 beyond 6 in float64. Max abs error vs math.erf: < 5e-15 (tested).
_ERF_SPLIT, _ERF_TOP, _ERF_DEG = 1.0, 6.0, 24


def _chebfit(f, lo: float, hi: float, deg: int) -> np.ndarray:
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return _cheb.chebinterpolate(lambda t: np.array([f(mid + half * v) for v in t]), deg)


_ERF_CORE = _chebfit(math.erf, -_ERF_SPLIT, _ERF_SPLIT, _ERF_DEG)
_ERF_CORE[0::2] = 0                 # erf is odd: drop the rounding noise in the even terms
_ERF_TAIL = _chebfit(lambda z: math.erfc(z) * math.exp(z * z), _ERF_SPLIT, _ERF_TOP, _ERF_DEG)


def erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    a = np.abs(x)
    out = np.ones_like(x)
    core = a <= _ERF_SPLIT
    out[core] = _cheb.chebval(a[core] / _ERF_SPLIT, _ERF_CORE.astype(x.dtype))
    tail = ~core & (a < _ERF_TOP)
    at = a[tail]
    mid, half = (_ERF_SPLIT + _ERF_TOP) / 2, (_ERF_TOP - _ERF_SPLIT) / 2
    out[tail] = 1 - np.exp(-at * at) * _cheb.chebval((at - mid) / half, _ERF_TAIL.astype(x.dtype))
    out[np.isnan(a)] = np.nan
    return np.copysign(out, x)


# ---------------------------------------------------------------- activations and norms
def gelu(x):                        # HF "gelu": x * Phi(x), erf form
    return 0.5 * x * (1 + erf(x / np.sqrt(np.array(2, x.dtype))))


def gelu_tanh(x):                   # HF "gelu_new" / "gelu_pytorch_tanh"
    c = np.array(math.sqrt(2 / math.pi), x.dtype)
    return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))


def relu(x):
    return np.maximum(x, 0)


ACTIVATION = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": relu}


def layer_norm(x, w, b, eps: float):            # [..., H] -> [..., H]; variance = mean sq. deviation
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.array(eps, x.dtype)) * w + b


def linear(x, w, b):                            # [..., in] @ [out, in].T + [out] -> [..., out]
    return x @ w.T + b


# ---------------------------------------------------------------- reduced precision (emulated)
def round_bf16(x):
    """x rounded to bfloat16 (round to nearest even), kept in x's dtype: the value the compiled C
    feeds to a bf16 GEMM. Float64 input is first rounded to float32 (the C rounds float32 values);
    subnormal float32 values become signed zero (as VCVTNE2PS2BF16 does); NaN stays NaN."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16                  # round to nearest even
    r = np.where((u & 0x7F800000) == 0, u & 0x80000000, r)            # subnormal -> signed 0
    r = np.where(np.isnan(f), (u | 0x00400000) & 0xFFFF0000, r)       # NaN stays a (quiet) NaN
    return r.astype(np.uint32).view(np.float32).reshape(np.shape(x)).astype(np.asarray(x).dtype)


def linear_bf16(x, w, b):                       # w: already bf16 values; x rounded where it enters
    return round_bf16(x) @ w.T + b


class QuantWeight(NamedTuple):
    """A Linear weight quantized per output channel: W [out, in] ~ q * scale[:, None]."""
    q: np.ndarray                               # [out, in] int8 in [-127, 127]
    scale: np.ndarray                           # [out] float32

    def astype(self, dtype):                    # what the C reads, whatever the oracle's dtype
        return self


def quantize_int8(x):
    """Symmetric int8 over the last axis, computed in float32 exactly as the compiled C does:
    amax = max |x|, q = rint(x * (127 / amax)) clipped to [-127, 127], scale = amax / 127
    (q = 0, scale = 0 for a row of zeros). -> (q int8 [..., K], scale float32 [...])."""
    x = np.asarray(x, np.float32)
    amax = np.max(np.abs(x), axis=-1)                                          # [...]
    inv = np.float32(127) / np.where(amax > 0, amax, np.float32(1))            # float32 division
    inv = np.where(amax > 0, inv, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(x * inv[..., None]), -127, 127).astype(np.int8)        # [..., K]
    return q, (amax / np.float32(127)).astype(np.float32)


class Bf16Weight(NamedTuple):
    """A Linear weight held in bf16 inside an int8 model (INT8_IN_BF16): its values rounded to bf16."""
    w: np.ndarray                               # [out, in] bf16 values in float32

    def astype(self, dtype):
        return self


def quantize_uint8(x):
    """Asymmetric 8-bit over the last axis, as the compiled C quantizes a GEMM's input rows (its
    quantize_row), in float32: lo = min(min x, 0), hi = max(max x, 0) (so 0 is exact),
    inv = 255 / (hi - lo), zp = rint(-lo * inv), u = clip(rint(x * inv) + zp, 0, 255),
    scale = (hi - lo) / 255; x ~ scale * (u - zp). A row of zeros gives u = 0, zp = 0, scale = 0.
    -> (u uint8 [..., K], zp int32 [...], scale float32 [...])."""
    x = np.asarray(x, np.float32)
    lo = np.minimum(np.min(x, axis=-1), np.float32(0))                         # [...]
    hi = np.maximum(np.max(x, axis=-1), np.float32(0))
    rng = (hi - lo).astype(np.float32)
    inv = np.float32(255) / np.where(rng > 0, rng, np.float32(1))              # float32 division
    inv = np.where(rng > 0, inv, np.float32(0)).astype(np.float32)
    zp = np.rint(-lo * inv).astype(np.float32)
    u = np.clip(np.rint(x * inv[..., None]) + zp[..., None], 0, 255).astype(np.uint8)   # [..., K]
    return u, zp.astype(np.int32), (rng / np.float32(255)).astype(np.float32)


def linear_int8(x, w, b):
    """x quantized per row where it enters (asymmetric, quantize_uint8), exact integer sums
    acc = u @ q^T - zp * sum(q) (here in float64), then acc * (x_scale * w_scale) + b; the
    dequantization in x's dtype (float32: as the C, bit for bit). A Bf16Weight (a projection an
    int8 model keeps in bf16) goes through linear_bf16 instead."""
    if isinstance(w, Bf16Weight):
        return linear_bf16(x, w.w, b)
    u, zp, s = quantize_uint8(x)                                               # [..., in], [...], [...]
    wq = w.q.astype(np.float64)                                                # [out, in]
    acc = u.astype(np.float64) @ wq.T - zp[..., None] * wq.sum(axis=1)         # [..., out] exact
    scale = s[..., None] * w.scale                                             # float32 product
    return acc.astype(x.dtype) * scale.astype(x.dtype) + b


# The projections an int8 model keeps in bf16, by the name of their product (q, k, v: the fused
# qkv GEMM of the C). Measured (docs/codegen.md, "Precisions"): the query / key / value products
# read the LayerNorm output whose outlier channels make per-row int8 coarsest; in bf16 they bring
# int8's label agreement with fp32 on the real data sets from 98.4-98.6% to >= 99%.
INT8_IN_BF16 = ("attn.q", "attn.k", "attn.v")

LINEAR = {"fp32": linear, "bf16": linear_bf16, "int8": linear_int8}   # precision -> the layer GEMMs'


def lowp_weight(precision: str, name: str, w):
    """A layer projection's weight `name` ("attn.q", ..., "ffn.down") as the C of `precision` holds it."""
    if precision == "bf16":
        return round_bf16(w)
    if name in INT8_IN_BF16:
        return Bf16Weight(round_bf16(w))
    return QuantWeight(*quantize_int8(w))


def softmax(z, axis=-1):                        # max-subtracted
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def entropy(z):                                 # [N, C] logits -> [N] nats, 0 log 0 = 0
    logp = log_softmax(z)
    p = np.exp(logp)
    return -np.sum(np.where(p > 0, p * logp, 0), axis=-1)


def sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))         # exact identity; no overflow for large |x|


def argmax(z):                                  # [N, C] -> [N]; ties go to the lowest index
    return np.argmax(z, axis=-1)


# ---------------------------------------------------------------- attention and the layer
def attention(x, key_mask, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, n_heads: int, linear=linear,
              return_probs: bool = False):
    """Self-attention of one sequence. x [T, D], key_mask [T] bool (False = padded key, skipped).
    linear: the projections' product (LINEAR[precision]); scores and context stay in x's dtype.
    return_probs: also return the attention probabilities [nh, T (query), T (key)]."""
    T, D = x.shape
    d = D // n_heads
    q = linear(x, q_w, q_b).reshape(T, n_heads, d).transpose(1, 0, 2)   # [nh, T, d]
    k = linear(x, k_w, k_b).reshape(T, n_heads, d).transpose(1, 0, 2)   # [nh, T, d]
    v = linear(x, v_w, v_b).reshape(T, n_heads, d).transpose(1, 0, 2)   # [nh, T, d]
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(np.array(d, x.dtype))    # [nh, T, T]
    scores = np.where(key_mask[None, None, :], scores, -np.inf)         # padded keys get weight 0
    probs = softmax(scores)                                             # [nh, T, T]
    ctx = probs @ v                                                     # [nh, T, d]
    ctx = ctx.transpose(1, 0, 2).reshape(T, D)                          # [T, D]
    out = linear(ctx, o_w, o_b)                                         # [T, D]
    return (out, probs) if return_probs else out


def encoder_layer(x, key_mask, p: dict, n_heads: int, act: str, eps: float, linear=linear):
    """One BERT layer (post-LN). x [T, H], key_mask [T] bool, p: the layer's weights by short name.
    linear: the product of the six projections (LINEAR[precision]); everything else in x's dtype."""
    a = attention(x, key_mask, p["attn.q.w"], p["attn.q.b"], p["attn.k.w"], p["attn.k.b"],
                  p["attn.v.w"], p["attn.v.b"], p["attn.o.w"], p["attn.o.b"], n_heads, linear)  # [T, H]
    x = layer_norm(x + a, p["attn.ln.w"], p["attn.ln.b"], eps)                          # [T, H]
    f = ACTIVATION[act](linear(x, p["ffn.up.w"], p["ffn.up.b"]))                        # [T, I]
    f = linear(f, p["ffn.down.w"], p["ffn.down.b"])                                     # [T, H]
    return layer_norm(x + f, p["ffn.ln.w"], p["ffn.ln.b"], eps)                         # [T, H]


def encoder_layer_keep(x, p: dict, n_heads: int, act: str, eps: float, keep: int, linear=linear):
    """One BERT layer on the real tokens x [T, H] that keeps `keep` of them after its attention
    (token reduction, refexit.tokens): the output projection, LayerNorm and feed-forward block run
    on the kept rows only. -> (out [k, H], kept positions [k] ascending, selection margin)."""
    from .tokens import select
    a, probs = attention(x, np.ones(len(x), dtype=bool), p["attn.q.w"], p["attn.q.b"], p["attn.k.w"],
                         p["attn.k.b"], p["attn.v.w"], p["attn.v.b"], p["attn.o.w"], p["attn.o.b"], n_heads,
                         linear, return_probs=True)                                     # [T, H], [nh, T, T]
    kept, margin = select(probs.sum(axis=(0, 1)), keep)                                # significance [T]
    x = layer_norm(x[kept] + a[kept], p["attn.ln.w"], p["attn.ln.b"], eps)               # [k, H]
    f = ACTIVATION[act](linear(x, p["ffn.up.w"], p["ffn.up.b"]))                        # [k, I]
    f = linear(f, p["ffn.down.w"], p["ffn.down.b"])                                     # [k, H]
    return layer_norm(x + f, p["ffn.ln.w"], p["ffn.ln.b"], eps), kept, margin           # [k, H]


def embed(ids, type_ids, word, pos, typ, ln_w, ln_b, eps: float):
    """ids, type_ids [T] int -> [T, H]: word + position + token type, then LayerNorm."""
    T = ids.shape[0]
    return layer_norm(word[ids] + pos[:T] + typ[type_ids], ln_w, ln_b, eps)


def embed_at(ids, type_ids, positions, word, pos, typ, ln_w, ln_b, eps: float):
    """ids, type_ids, positions [T] int -> [T, E]: word (+ type, when the family has a token type
    table: typ None = DistilBERT) + pos[positions], summed in HF's order, then LayerNorm (at the
    embedding width E)."""
    x = word[ids] if typ is None else word[ids] + typ[type_ids]          # [T, E]
    return layer_norm(x + pos[positions], ln_w, ln_b, eps)
