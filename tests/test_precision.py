"""Reduced precision (bf16, int8): the oracle's emulation, the weights format, the GEMM of every
instruction set this machine has, and compiled models against the emulation.

    round_bf16       nearest even, subnormals to signed zero, NaN/inf kept (checked bit by bit)
    quantize_int8    weights: q = rint(x * 127 / amax) in [-127, 127], per output channel
    quantize_uint8   GEMM inputs: u = rint(x * 255 / (hi - lo)) + zp in [0, 255] per row (zero exact);
                     the C's quantize_row gives the same bits (stored as u - 128, zoff = 128 - zp)
    bf16 GEMM        scalar / AVX2 / AVX-512 / AVX512-BF16: the same bits as a NumPy float32
                     replay of VDPBF16PS's sequence (acc += a_odd w_odd, then a_even w_even, per pair);
                     AMX: |error| <= 4 eps Kp sum_k |a_k w_k| of the exact sum (its own order)
    int8 GEMM        every path (AMX, VPDPBUSD with its +128 offset, the emulated ones): the same bits
                     as NumPy's exact integer sums and float32 dequantization
    compiled model   logits within ATOL + RTOL |z| of the float64 oracle emulating the precision
                     (model.with_precision(p).astype(np.float64)); labels and exit layers identical
                     unless the oracle's margin to a threshold is below NEAR; and the C is much closer
                     to that emulation than to the fp32 oracle (it really computes in p)
    errors           a weights file of another precision is refused (ERR_PRECISION), bf16 / int8
                     ISAs are refused for fp32 code, an unknown precision is an InputError
"""
from __future__ import annotations

import shutil
import warnings

import cffi
import numpy as np
import pytest

import refexit
from refexit import nn
from refexit.synthetic import random_model

import codegen
from codegen import build, emit, pack
from codegen.lower import lower

HOST = build.host_isas(build.compiler())
BF16_BUILDS = list(HOST)                                  # every ISA compiles bf16 code
EXACT = [i for i in HOST if i != "amx"]                   # the VDPBF16PS sequence, bit for bit
RTOL, ATOL, NEAR = 2e-3, 2e-4, 1e-3
LOWP = ("bf16", "int8")
EPS32 = float(np.finfo(np.float32).eps)
EPI = {"none": 0, "bias": 1, "act": 2, "add": 3}


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


# ---------------------------------------------------------------------- the oracle's rounding
def test_round_bf16_is_round_to_nearest_even():
    rng = np.random.default_rng(0)
    u = rng.integers(0x00800000, 0x7F7F0000, 200000, dtype=np.uint64).astype(np.uint32)   # normal, finite
    u[:1000] = (u[:1000] & 0xFFFF0000) | 0x8000                                          # exact ties
    u[1000:2000] |= 0x80000000                                                          # negatives
    x = u.view(np.float32)
    r = nn.round_bf16(x)
    assert np.all(bits(r) & 0xFFFF == 0)                                   # a bf16 value
    down = (u & 0xFFFF0000).view(np.float32).astype(np.float64)
    up = ((u & 0xFFFF0000) + 0x10000).view(np.float32).astype(np.float64)
    xd, rd = x.astype(np.float64), r.astype(np.float64)
    d_down, d_up = np.abs(xd - down), np.abs(up - xd)
    nearest = np.where(d_down < d_up, down, np.where(d_up < d_down, up, np.nan))
    tie = np.isnan(nearest)
    assert tie.sum() >= 1000
    assert np.array_equal(rd[~tie], nearest[~tie])
    even = np.where(((u[tie] >> 16) & 1) == 0, down[tie], up[tie])       # ties: the even one
    assert np.array_equal(rd[tie], even)


def test_round_bf16_special_values():
    x = np.array([0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1.0], np.float32)
    r = nn.round_bf16(x)
    assert list(bits(r[:4])) == [0, 0x80000000, 0, 0x80000000]            # subnormals -> signed 0
    assert r[4] == np.inf and r[5] == -np.inf and np.isnan(r[6])
    assert r[7] == np.inf and r[8] == -np.inf                             # past bf16's largest: inf
    assert r[9] == 1.0
    assert nn.round_bf16(x.astype(np.float64)).dtype == np.float64


def test_quantize_int8():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((50, 77)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    x[3] = 0
    q, s = nn.quantize_int8(x)
    assert q.dtype == np.int8 and s.dtype == np.float32 and np.all(np.abs(q) <= 127)
    assert s[3] == 0 and not q[3].any()
    assert np.all(np.max(np.abs(q), axis=1)[np.arange(50) != 3] == 127)            # amax -> 127
    err = np.abs(x - q.astype(np.float64) * s[:, None])
    assert np.all(err <= s[:, None] * 0.5 * (1 + 1e-5) + 1e-30)                     # half a step


@pytest.mark.parametrize("precision", LOWP)
def test_with_precision_changes_the_six_projections_only(precision):
    m = random_model(num_layers=2, hidden=24, heads=2, intermediate=40, seed=3)
    b = m.with_precision(precision)
    assert b.precision == precision and m.precision == "fp32" and f"precision={precision}" in repr(b)
    assert all(b.weights[k] is v for k, v in m.weights.items())      # the fp32 originals: what codegen packs
    for i, layer in enumerate(b._layers):
        for k, v in layer.items():
            orig = m.weights[f"layers.{i}.{k}"]
            if k in ("attn.q.w", "attn.k.w", "attn.v.w", "attn.o.w", "ffn.up.w", "ffn.down.w"):
                if precision == "bf16":
                    assert np.array_equal(v, nn.round_bf16(orig)), k
                elif k[:-2] in nn.INT8_IN_BF16:                             # int8 keeps these in bf16
                    assert isinstance(v, nn.Bf16Weight) and np.array_equal(v.w, nn.round_bf16(orig)), k
                else:
                    q, scale = nn.quantize_int8(orig)
                    assert np.array_equal(v.q, q) and np.array_equal(v.scale, scale), k
            else:
                assert v is orig, k
    assert b.astype(np.float64).precision == precision
    assert b.with_precision("fp32").precision == "fp32"
    if precision == "int8":                                  # the stated list, and the C's one GEMM of it
        assert set(nn.INT8_IN_BF16) == {"attn.q", "attn.k", "attn.v"}
        assert pack.packed_in_bf16() == ("attn.qkv.w",)
    with pytest.raises(refexit.InputError, match="precision must be one of"):
        m.with_precision("int4")


@pytest.mark.parametrize("precision", LOWP)
def test_emulation_differs_from_fp32_only_by_rounding(precision):
    m = random_model(num_layers=2, hidden=24, heads=2, intermediate=40, seed=4).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((7, 24))
    y32, y = m.layer(0, x), m.with_precision(precision).layer(0, x)
    assert 0 < np.max(np.abs(y - y32)) < 0.1


# ---------------------------------------------------------------------- the weights format
def test_bf16_panels_hold_the_rounded_weights_in_pairs_of_k():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((45, 37)).astype(np.float32)                  # N, K: tails on both
    P = pack.pack_panels_bf16(W)
    assert P.shape == (2, 32, 32, 2) and P.dtype == np.uint16              # Kp = 64: 32 pairs
    back = (P.astype(np.uint32) << 16).view(np.float32).transpose(0, 2, 1, 3).reshape(64, 64)
    assert np.array_equal(back[:45, :37], nn.round_bf16(W))
    assert not back[45:].any() and not back[:, 37:].any()


def test_int8_panels_hold_the_quantized_weights_in_fours_of_k():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((45, 70)).astype(np.float32)
    P, scales, sums = pack.quantized(W)
    assert P.shape == (2, 32, 32, 4) and P.dtype == np.int8                 # Kp = 128: 32 fours
    back = P.transpose(0, 2, 1, 3).reshape(64, 128)
    q, s = nn.quantize_int8(W)
    assert np.array_equal(back[:45, :70], q) and not back[45:].any() and not back[:, 70:].any()
    assert np.array_equal(scales[:45], s) and not scales[45:].any()
    assert np.array_equal(sums[:45], q.sum(axis=1)) and sums.dtype == np.int32


def test_weights_file_header_and_size(tmp_path):
    m = random_model(num_layers=2, hidden=64, heads=2, intermediate=128, seed=5)
    plans = {p: lower(m, None, prefix="hdr", precision=p) for p in ("fp32", "bf16", "int8")}
    for p, plan in plans.items():
        path = pack.write_blob(m, plan, tmp_path / f"{p}.weights")
        h = pack.read_header(path)
        assert (h.version, h.precision) == (3, p)
    def nbytes(p, parts):
        return sum(s.nbytes for s in plans[p].tensors if s.name.endswith(parts))
    assert nbytes("bf16", ("qkv.w", "o.w", "up.w", "down.w")) * 2 == nbytes("fp32", ("qkv.w", "o.w", "up.w", "down.w"))
    # int8 keeps the fused qkv in bf16 (nn.INT8_IN_BF16) and quantizes the other three (K = 64, 128: no padding)
    assert nbytes("int8", ("o.w", "up.w", "down.w")) * 4 == nbytes("fp32", ("o.w", "up.w", "down.w"))
    assert nbytes("int8", ("qkv.w",)) == nbytes("bf16", ("qkv.w",))
    assert not any(s.name.endswith(("qkv.ws", "qkv.wsum")) for s in plans["int8"].tensors)
    assert {s.dtype for s in plans["int8"].tensors if s.name.endswith("qkv.w")} == {"<u2"}
    assert len({plan.model_hash for plan in plans.values()}) == 3


# ---------------------------------------------------------------------- the bf16 GEMM kernel
def gemm_replay(Ab, Wb, bias, epi, C0):
    """NumPy float32 replay of the VDPBF16PS sequence on bf16 bits A [M, Kp], W [N, Kp]."""
    A = (Ab.astype(np.uint32) << 16).view(np.float32)
    W = (Wb.astype(np.uint32) << 16).view(np.float32)
    acc = np.zeros((A.shape[0], W.shape[0]), np.float32)
    for kk in range(A.shape[1] // 2):
        acc = acc + np.outer(A[:, 2 * kk + 1], W[:, 2 * kk + 1])            # products exact in fp32
        acc = acc + np.outer(A[:, 2 * kk], W[:, 2 * kk])
    if epi == "none":
        return acc
    acc = acc + bias
    return acc + C0 if epi == "add" else acc


CDEF_INT8 = """
int {p}_test_gemm_int8(const int8_t *A, int lda, const float *as, const int32_t *az, const int8_t *Bp,
                       const float *ws, const int32_t *wsum, int K, int N, float *C, int ldc, const float *bias,
                       int M, int epi, int nth);
void {p}_test_quantize(int8_t *q, float *scale, int32_t *zoff, const float *x, int n);
"""


def kernel_builds(root, precision, prefix, cdef):
    """{isa: (ffi, lib)}: the test entry points (-DREFEXIT_KERNEL_TESTS) of a small model's source
    at `precision`, built for every instruction set of this machine."""
    m = random_model(num_layers=1, hidden=40, heads=2, intermediate=50, num_labels=2, seed=6)
    plan = lower(m, refexit.Static(1), prefix=prefix, max_length=16, precision=precision)
    _, c_path = emit.write_sources(plan, root)
    cc, out = build.compiler(), {}
    for isa in BF16_BUILDS:
        lib = root / f"lib{prefix}_{isa}.so"
        build.compile_c(c_path, lib, cc, build.flags(cc, False, ["-DREFEXIT_KERNEL_TESTS"], isa=isa))
        ffi = cffi.FFI()
        ffi.cdef(cdef.format(p=prefix))
        out[isa] = (ffi, ffi.dlopen(str(lib)))
    return out


@pytest.fixture(scope="module")
def int8_kernels(tmp_path_factory):
    return kernel_builds(tmp_path_factory.mktemp("int8k"), "int8", "qk", CDEF_INT8)


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 45, 96), (5, 64, 31), (12, 33, 32), (13, 64, 33),
                                   (17, 19, 70), (33, 130, 65), (40, 96, 5), (70, 64, 64)])
def test_int8_gemm_of_every_isa(int8_kernels, M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    X = (rng.standard_normal((M, K)) * 3 + rng.uniform(-2, 4, (M, 1))).astype(np.float32)   # skewed rows
    u, zp, s = nn.quantize_uint8(X)
    q, zoff = (u.astype(np.int16) - 128).astype(np.int8), (128 - zp).astype(np.int32)   # as the C stores them
    Kp = -(-K // 64) * 64
    A = np.zeros((M, Kp), np.int8)
    A[:, :K] = q
    W = rng.standard_normal((N, K)).astype(np.float32)
    P, ws, wsum = pack.quantized(W)
    wq, wscale = nn.quantize_int8(W)
    bias = rng.standard_normal(N).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    acc = u.astype(np.int64) @ wq.astype(np.int64).T - zp[:, None] * wq.astype(np.int64).sum(1)   # exact
    acc = acc.astype(np.float32)                                                  # then as the C converts
    y = acc * (s[:, None] * wscale[None, :]) + bias                               # float32, as the C
    want = {"bias": y, "add": y + C0, "act": None}
    for isa, (ffi, lib) in int8_kernels.items():
        for epi in ("bias", "add", "act"):
            C = np.array(C0 if epi == "add" else np.zeros((M, N)), np.float32)
            for nth in (1, 3):
                out = C.copy()
                assert lib.qk_test_gemm_int8(
                    ffi.from_buffer("int8_t[]", A), Kp, ffi.from_buffer("float[]", s), ffi.from_buffer("int32_t[]", zoff),
                    ffi.from_buffer("int8_t[]", P),
                    ffi.from_buffer("float[]", ws), ffi.from_buffer("int32_t[]", wsum), K, N,
                    ffi.from_buffer("float[]", out), N, ffi.from_buffer("float[]", bias), M, EPI[epi], nth) == 0
                if epi == "act":
                    assert np.all(np.abs(out - nn.gelu(y.astype(np.float64))) <= 5e-7 * (1 + np.abs(y))), isa
                else:
                    assert np.array_equal(bits(out), bits(want[epi])), f"{isa} {epi} nth={nth}"


def test_c_quantization_equals_the_oracles(int8_kernels):
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((24, 101)) * rng.uniform(1e-3, 1e3, (24, 1))).astype(np.float32)
    x[4] = 0
    x[5, 7] = 1e30
    x[6] = np.abs(x[6])                                   # all >= 0: zp = 0
    x[7] = -np.abs(x[7])                                  # all <= 0: zp = 255
    x[8] = nn.gelu(x[8].astype(np.float64) / 300).astype(np.float32)   # a GELU row: skewed
    u, zp, s = nn.quantize_uint8(x)
    assert zp[6] == 0 and zp[7] == 255 and s[4] == 0
    for isa, (ffi, lib) in int8_kernels.items():
        for r in range(len(x)):
            got, scale, zoff = np.zeros(101, np.int8), ffi.new("float *"), ffi.new("int32_t *")
            lib.qk_test_quantize(ffi.from_buffer("int8_t[]", got), scale, zoff, ffi.from_buffer("float[]", x[r]), 101)
            assert np.array_equal(got.astype(np.int16) + 128, u[r]), (isa, r)
            assert scale[0] == s[r] and zoff[0] == 128 - zp[r], (isa, r)


def test_quantize_uint8():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((60, 77)) * rng.uniform(0.01, 100, (60, 1)) + rng.uniform(-50, 50, (60, 1)))
    x = x.astype(np.float32)
    x[3] = 0
    x[:, 0] = 0
    u, zp, s = nn.quantize_uint8(x)
    assert u.dtype == np.uint8 and zp.dtype == np.int32 and s.dtype == np.float32
    assert s[3] == 0 and not u[3].any() and zp[3] == 0
    assert np.all((zp >= 0) & (zp <= 255))
    err = np.abs(x - (u.astype(np.float64) - zp[:, None]) * s[:, None])
    assert np.all(err <= s[:, None] * 0.5 * (1 + 1e-4) + 1e-30)                     # half a step
    lo, hi = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)                       # the range is used
    assert np.all(s <= (hi - lo) / 255 * (1 + 1e-6))
    assert np.all(u[:, 0] == zp)                                                    # 0 is exact


CDEF_BF16 = """
int {p}_test_gemm_bf16(const uint16_t *A, int lda, const uint16_t *Bp, int K, int N, float *C, int ldc,
                       const float *bias, int M, int epi, uint16_t *Cb, int ldcb, int nth);
void {p}_test_to_bf16(uint16_t *dst, const float *src, int n);
"""


@pytest.fixture(scope="module")
def bf16_kernels(tmp_path_factory):
    return kernel_builds(tmp_path_factory.mktemp("bf16k"), "bf16", "bk", CDEF_BF16)


def run_gemm(kernel, Ab, W, bias, epi, C0, nth=1):
    ffi, lib = kernel
    M, Kp = Ab.shape
    N, K = W.shape
    Bp = pack.pack_panels_bf16(W)
    C = np.array(C0, np.float32)
    Cb = np.zeros((M, -(-N // 32) * 32), np.uint16)
    st = lib.bk_test_gemm_bf16(ffi.from_buffer("uint16_t[]", Ab), Kp, ffi.from_buffer("uint16_t[]", Bp), K, N,
                               ffi.from_buffer("float[]", C), N, ffi.from_buffer("float[]", bias), M, EPI[epi],
                               ffi.from_buffer("uint16_t[]", Cb), Cb.shape[1], nth)
    assert st == 0
    return C, Cb[:, :N]


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 45, 96), (5, 64, 31), (12, 33, 32), (13, 64, 33),
                                   (17, 19, 70), (33, 130, 65), (40, 96, 5), (70, 32, 64)])
def test_bf16_gemm_of_every_isa(bf16_kernels, M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    Kp = -(-K // 32) * 32
    A = np.zeros((M, Kp), np.float32)
    A[:, :K] = rng.standard_normal((M, K)) * 3
    Ab = pack.bf16_bits(A)
    W = rng.standard_normal((N, K)).astype(np.float32)
    Wb = pack.bf16_bits(np.pad(W, ((0, 0), (0, Kp - K))))
    bias = rng.standard_normal(N).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    Af, Wf = (Ab.astype(np.uint32) << 16).view(np.float32), (Wb.astype(np.uint32) << 16).view(np.float32)
    exact = Af.astype(np.float64) @ Wf.astype(np.float64).T
    bound = 4 * EPS32 * Kp * (np.abs(Af).astype(np.float64) @ np.abs(Wf).astype(np.float64).T) + 1e-30
    for isa, kernel in bf16_kernels.items():
        for epi in ("none", "bias", "add"):
            got, _ = run_gemm(kernel, Ab, W, bias, epi, C0 if epi == "add" else np.zeros((M, N)))
            want = gemm_replay(Ab, Wb, bias, epi, C0)
            if isa in EXACT:
                assert np.array_equal(bits(got), bits(want)), f"{isa} {epi}: not the VDPBF16PS sequence"
            else:
                ref = exact + (bias if epi != "none" else 0) + (C0 if epi == "add" else 0)
                slack = bound + (4 * EPS32 * np.abs(ref) if epi != "none" else 0)
                assert np.all(np.abs(got - ref) <= slack), f"{isa} {epi}: {np.max(np.abs(got - ref)):.3g}"
        # EPI_ACT writes bf16(act(acc + bias)): the activation's approximation, then the rounding
        _, cb = run_gemm(kernel, Ab, W, bias, "act", np.zeros((M, N)))
        pre = (exact + bias) if isa not in EXACT else gemm_replay(Ab, Wb, bias, "bias", C0).astype(np.float64)
        want = nn.gelu(pre)
        got = (cb.astype(np.uint32) << 16).view(np.float32)
        assert np.all(np.abs(got - want) <= 2 ** -8 * np.abs(want) + 1e-5 + bound), isa
        # a thread split changes nothing, bit for bit
        one, _ = run_gemm(kernel, Ab, W, bias, "bias", np.zeros((M, N)))
        three, _ = run_gemm(kernel, Ab, W, bias, "bias", np.zeros((M, N)), nth=3)
        assert np.array_equal(bits(one), bits(three)), isa


def test_c_rounding_equals_the_oracles(bf16_kernels):
    rng = np.random.default_rng(7)
    u = rng.integers(0, 2 ** 32, 100000, dtype=np.uint64).astype(np.uint32)
    u[:5] = [0x7F800000, 0xFF800000, 0x7FC00001, 0x00000001, 0x80000000]
    x = u.view(np.float32)
    want = (nn.round_bf16(x).view(np.uint32) >> 16).astype(np.uint16)
    for isa, (ffi, lib) in bf16_kernels.items():
        got = np.zeros(x.size, np.uint16)
        lib.bk_test_to_bf16(ffi.from_buffer("uint16_t[]", got), ffi.from_buffer("float[]", x), x.size)
        nan = np.isnan(x)
        assert np.array_equal(got[~nan], want[~nan]), isa
        assert np.all((got[nan] & 0x7F80) == 0x7F80) and np.all(got[nan] & 0x7F), isa   # still NaN


# ---------------------------------------------------------------------- compiled models
CONFIGS = {
    "odd": dict(num_layers=3, hidden=40, heads=2, intermediate=50, num_labels=3, seed=21),
    "wide": dict(num_layers=2, hidden=96, heads=4, intermediate=200, num_labels=2, seed=22,
                 final_kind="shared_pooler", hidden_act="gelu_new"),
    "mix": dict(num_layers=3, hidden=40, heads=2, intermediate=50, num_labels=3, seed=23,
                head_kind="scalar_mix"),          # Right Tool's head: kept pooled vectors, fp32
}


def batch(model, B=9, T=33, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, model.config.vocab_size, (B, T))
    mask = np.zeros((B, T), np.int64)
    for b, n in enumerate(rng.integers(1, T + 1, B)):
        mask[b, :n] = 1
    mask[0] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": (rng.random((B, T)) < 0.3) * mask}


def thresholds_between_scores(oracle, enc):
    """Per-layer entropy thresholds at the median of the oracle's scores, so samples exit at
    different layers."""
    L = oracle.num_layers
    out = oracle.classify(enc, refexit.Entropy([0.0] * (L - 1)), trace=True)
    scores = np.array([[t.score for t in tr[:-1]] for tr in out.per_layer])       # [B, L-1]
    return [float(np.median(scores[:, i])) for i in range(L - 1)]


@pytest.mark.parametrize("precision", LOWP)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("isa", BF16_BUILDS)
def test_compiled_model_matches_the_emulation(precision, config, isa, tmp_path):
    m = random_model(**CONFIGS[config], max_position=64)
    enc = batch(m)
    oracle = m.with_precision(precision).astype(np.float64)
    fp32 = m.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        policy = refexit.Entropy(thresholds_between_scores(oracle, enc))
        cm = codegen.compile_model(m, policy, tmp_path, prefix="pb", max_batch=4, max_tokens=64,
                                   precision=precision, isa=isa)
        want = oracle.classify(enc, policy)
        full = oracle.classify(enc, None)
    assert (cm.precision, cm.isa) == (precision, isa)
    got = cm.classify(enc)
    sure = want.margins >= NEAR
    assert np.array_equal(got.exit_layers[sure], want.exit_layers[sure])
    assert np.array_equal(got.labels[sure], want.labels[sure])
    same = got.exit_layers == want.exit_layers
    err = np.abs(got.logits[same] - want.logits[same])
    assert np.all(err <= ATOL + RTOL * np.abs(want.logits[same])), f"max |dz| {err.max():.3g}"
    assert len(set(want.exit_layers)) > 1                                 # exits really happen
    # at full depth (entropy < 0 never holds): far closer to the emulation than to fp32
    cm.set_threshold(0.0)
    zc = cm.classify(enc).logits
    d16 = np.median(np.abs(zc - full.logits))
    d32 = np.median(np.abs(zc - fp32.classify(enc, None).logits))
    assert d16 * 10 < d32, (d16, d32)


@pytest.mark.parametrize("precision", LOWP)
def test_threads_give_the_same_bits(precision, tmp_path):
    m = random_model(**CONFIGS["wide"], max_position=64)
    enc = batch(m, B=6, T=40)
    cm = codegen.compile_model(m, None, tmp_path, prefix="pt", precision=precision)
    outs = []
    for n in (1, 2, 3):
        cm.set_threads(n)
        outs.append(cm.classify(enc).logits)
    assert all(np.array_equal(bits(o), bits(outs[0])) for o in outs[1:])


# ---------------------------------------------------------------------- errors
def test_weights_of_the_other_precision_are_refused(tmp_path):
    m = random_model(num_layers=2, hidden=24, heads=2, intermediate=40, seed=8)
    folders = {p: tmp_path / p for p in ("fp32", "bf16", "int8")}
    for p, d in folders.items():
        codegen.compile_model(m, None, d, prefix="pp", precision=p)
        shutil.copy(d / "pp.weights", tmp_path / f"{p}.weights")
    for p, other in (("fp32", "bf16"), ("bf16", "fp32"), ("int8", "bf16"), ("fp32", "int8")):
        shutil.copy(tmp_path / f"{other}.weights", folders[p] / "pp.weights")
        with pytest.raises(refexit.CheckpointError, match="another precision.*ERR_PRECISION"):
            codegen.load_compiled(folders[p])
    assert emit.ERRORS[18][0] == "ERR_PRECISION"


def test_bad_precision_and_isa_requests(tmp_path):
    m = random_model(num_layers=2, hidden=24, heads=2, intermediate=40, seed=9)
    with pytest.raises(refexit.InputError, match="precision must be one of fp32, bf16, int8"):
        codegen.compile_model(m, None, tmp_path, precision="int4")
    with pytest.raises(codegen.BuildError, match="for bf16 and int8 builds"):
        codegen.compile_model(m, None, tmp_path, isa="amx")
    for p in LOWP:
        with pytest.raises(codegen.BuildError, match="instruction set.*ERR_ISA"):
            codegen.compile_model(m, None, tmp_path, prefix="noisa", precision=p,
                                  extra_flags=["-DREFEXIT_TEST_NO_ISA"])


def test_model_precision_is_the_default(tmp_path):
    m = random_model(num_layers=2, hidden=24, heads=2, intermediate=40, seed=10)
    cm = codegen.compile_model(m.with_precision("bf16"), None, tmp_path, prefix="pd")
    assert cm.precision == "bf16" and cm.manifest["precision"] == "bf16"
    again = codegen.load_compiled(tmp_path)
    assert again.precision == "bf16"
    assert cm.ffi.string(cm.lib.pd_precision()).decode() == "bf16"


@pytest.mark.parametrize("precision", LOWP)
def test_standalone_program_of_a_reduced_precision(precision, tmp_path):
    """`refexit compile --precision P --standalone`: the program says its precision and classifies
    text as the compiled library does."""
    import json
    import subprocess
    import sys
    from refexit.synthetic import save_model
    from codegen.standalone import build_standalone
    m = random_model(num_layers=2, hidden=40, heads=2, intermediate=50, num_labels=2, seed=12, max_position=64)
    src = tmp_path / "model"
    save_model(m, src)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "refexit.cli.main", "compile", str(src), "-o", str(out), "--prefix", "sp",
                        "--policy", "static", "--precision", precision], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{precision} on" in r.stdout
    exe = build_standalone(out, prefix="sp").embedded
    info = json.loads(subprocess.run([str(exe), "--info"], capture_output=True, text=True, check=True).stdout)
    assert info["precision"] == precision
    line = json.loads(subprocess.run([str(exe), "a b c"], capture_output=True, text=True, check=True).stdout)
    cm = codegen.load_compiled(out)
    want = cm.classify(refexit.load(src).tokenizer(["a b c"], max_length=64))
    assert line["label_id"] == int(want.labels[0]) and line["exit_layer"] == int(want.exit_layers[0])
    assert np.allclose(line["logits"], want.logits[0], rtol=1e-5, atol=1e-6)
