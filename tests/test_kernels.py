"""The compute kernels of the generated C, one by one, for every instruction set this machine runs.

The model source is compiled with -DREFEXIT_KERNEL_TESTS, which exports test entry points for the
GEMM (packed panels, every epilogue, a thread split), the vector approximations (exp, erf, both
GELUs), softmax, LayerNorm and attention. Each SIMD path (AVX2, AVX-512) is compared with its scalar
twin (the portable build of the same source) and every path with float64 / libm references:

    exp   relative error <= 4e-7 on [-87, 88] (inputs are clamped to it)
    erf   absolute error <= 5e-7 on all of R
    GELU  absolute error <= 5e-7 (1 + |x|)
    GEMM  |error| <= 4 eps K sum_k |a_ik b_kj| (fp32 accumulation in k order, any tile shape)

plus that no path refuses to open on this CPU, and that a library built for an instruction set the
CPU lacks refuses to open (simulated with -DREFEXIT_TEST_NO_ISA) with ERR_ISA / BuildError.
"""
from __future__ import annotations

import math
import warnings

import cffi
import numpy as np
import pytest

import refexit
from refexit.synthetic import random_model

import codegen
from codegen import build, emit, pack
from codegen.lower import lower

ISAS = [i for i in build.host_isas(build.compiler()) if i not in build.BF16_ISAS]   # fp32 code
EPS32 = float(np.finfo(np.float32).eps)
EXP_REL, ERF_ABS, GELU_ABS = 4e-7, 5e-7, 5e-7
EPI = {"none": 0, "bias": 1, "act": 2, "add": 3}
CDEF = """
void {p}_test_gemm(const float *A, int lda, const float *Bp, int K, int N, float *C, int ldc,
                   const float *bias, int M, int epi, int nth);
void {p}_test_vec(int fn, const float *x, float *y, int n);
void {p}_test_softmax(float *s, int n, float scale);
void {p}_test_layernorm(float *x, const float *w, const float *b, int rows);
int {p}_test_attention(float *ctx, const float *qkv, int n);
int {p}_open(const char *weights_path, void **out);
void {p}_close(void *m);
const char *{p}_isa(void);
"""
DIM, HEADS, MAX_LEN = 45, 3, 70          # head_dim 15: every kernel sees tails


class Kernels:
    """The test entry points of one build (one instruction set)."""

    def __init__(self, lib, ffi, prefix, weights):
        self.lib, self.ffi, self.p, self.weights = lib, ffi, prefix, weights

    def fn(self, name):
        return getattr(self.lib, f"{self.p}_{name}")

    def buf(self, a):
        return self.ffi.from_buffer("float[]", a)

    def gemm(self, A, W, bias=None, epi="bias", C=None, nth=1):
        M, K = A.shape
        N = W.shape[0]
        A = np.ascontiguousarray(A, np.float32)
        Bp = pack.pack_panels(W)
        C = np.zeros((M, N), np.float32) if C is None else np.array(C, np.float32)
        b = np.zeros(N, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        self.fn("test_gemm")(self.buf(A), K, self.buf(Bp), K, N, self.buf(C), N, self.buf(b), M, EPI[epi], nth)
        return C

    def vec(self, fn, x):
        x = np.ascontiguousarray(x, np.float32)
        y = np.zeros_like(x)
        self.fn("test_vec")({"exp": 0, "erf": 1, "gelu_erf": 2, "gelu_tanh": 3, "act": 4}[fn],
                            self.buf(x), self.buf(y), x.size)
        return y

    def softmax(self, s, n, scale):
        s = np.array(s, np.float32)
        self.fn("test_softmax")(self.buf(s), n, scale)
        return s

    def layernorm(self, x, w, b):
        x = np.array(x, np.float32)
        self.fn("test_layernorm")(self.buf(x), self.buf(np.asarray(w, np.float32)),
                                  self.buf(np.asarray(b, np.float32)), x.shape[0])
        return x

    def attention(self, qkv):
        n = qkv.shape[0]
        ctx = np.zeros((n, DIM), np.float32)
        assert self.fn("test_attention")(self.buf(ctx), self.buf(np.ascontiguousarray(qkv, np.float32)), n) == 0
        return ctx


@pytest.fixture(scope="module")
def model():
    return random_model(num_layers=1, hidden=DIM, heads=HEADS, intermediate=50, num_labels=2, seed=5,
                        max_position=MAX_LEN)


@pytest.fixture(scope="module")
def kernels(model, tmp_path_factory):
    """{isa: Kernels} for every instruction set this compiler and CPU have."""
    root = tmp_path_factory.mktemp("kernels")
    plan = lower(model, refexit.Static(1), prefix="kt", max_length=MAX_LEN)
    _, c_path = emit.write_sources(plan, root)
    weights = pack.write_blob(model, plan, root / "kt.weights")
    out = {}
    cc = build.compiler()
    for isa in ISAS:
        lib_path = root / f"libkt_{isa}.so"
        build.compile_c(c_path, lib_path, cc, build.flags(cc, False, ["-DREFEXIT_KERNEL_TESTS"], isa=isa))
        ffi = cffi.FFI()
        ffi.cdef(CDEF.format(p="kt"))
        out[isa] = Kernels(ffi.dlopen(str(lib_path)), ffi, "kt", weights)
    return out


def each_isa(kernels):
    return [(isa, kernels[isa]) for isa in ISAS]


def test_every_isa_of_this_cpu_opens(kernels):
    for isa, k in each_isa(kernels):
        assert k.ffi.string(k.fn("isa")()).decode() == isa
        handle = k.ffi.new("void **")
        assert k.fn("open")(str(k.weights).encode(), handle) == 0
        k.fn("close")(handle[0])


def test_missing_instruction_set_is_refused(model, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        with pytest.raises(codegen.BuildError, match="instruction set.*ERR_ISA"):
            codegen.compile_model(model, refexit.Static(1), tmp_path, prefix="noisa",
                                  extra_flags=["-DREFEXIT_TEST_NO_ISA"])
    assert emit.ERRORS[14][0] == "ERR_ISA"


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 45, 96), (5, 7, 31), (12, 33, 32), (13, 64, 33),
                                   (25, 19, 70), (3, 130, 65), (40, 16, 5)])
def test_gemm_vs_float64_and_scalar_twin(kernels, M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    A = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((N, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    exact = A.astype(np.float64) @ W.astype(np.float64).T
    bound = 4 * EPS32 * K * (np.abs(A).astype(np.float64) @ np.abs(W).astype(np.float64).T) + 1e-30
    refs = {"none": exact, "bias": exact + bias, "add": C0 + exact + bias}
    results = {}
    for isa, k in each_isa(kernels):
        for epi, ref in refs.items():
            got = k.gemm(A, W, bias, epi, C=C0 if epi == "add" else None)
            slack = bound + (4 * EPS32 * np.abs(ref) if epi != "none" else 0)
            assert np.all(np.abs(got - ref) <= slack), f"{isa} {epi}: max error {np.max(np.abs(got - ref)):.3g}"
            results[isa, epi] = got
        # the thread split changes nothing, bit for bit
        np.testing.assert_array_equal(k.gemm(A, W, bias, "bias", nth=3), results[isa, "bias"])
        # the activation epilogue is act(acc + bias) with the vector activation
        np.testing.assert_array_equal(k.gemm(A, W, bias, "act"), k.vec("act", results[isa, "bias"]))
    for isa in ISAS[1:]:                         # each SIMD path against its scalar twin
        np.testing.assert_allclose(results[isa, "bias"], results["scalar", "bias"], rtol=0,
                                   atol=float(np.max(2 * bound)))


def _dense(lo, hi, n=200_001):
    return np.linspace(lo, hi, n, dtype=np.float64).astype(np.float32)


def test_exp_relative_error(kernels):
    x = np.concatenate([_dense(-87.0, 88.0), _dense(-1.0, 1.0), np.float32([0.0, -0.0, 1e-30, -1e-30])])
    ref = np.exp(x.astype(np.float64))
    for isa, k in each_isa(kernels):
        rel = np.abs(k.vec("exp", x) - ref) / ref
        assert rel.max() <= EXP_REL, f"{isa}: exp max relative error {rel.max():.3g} at x={x[np.argmax(rel)]}"
    clamped = kernels["scalar"].vec("exp", np.float32([-200.0, 200.0]))
    assert 0 < clamped[0] < 1e-37 and np.isfinite(clamped[1])


def test_erf_and_gelu_absolute_error(kernels):
    x = np.concatenate([_dense(-6.0, 6.0), _dense(-0.01, 0.01, 2001), np.float32([-30.0, 30.0, 0.0])])
    x64 = x.astype(np.float64)
    erf = np.frompyfunc(math.erf, 1, 1)
    ref_erf = erf(x64).astype(np.float64)
    ref_gelu = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)).astype(np.float64))
    ref_tanh = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    for isa, k in each_isa(kernels):
        e = np.abs(k.vec("erf", x) - ref_erf)
        assert e.max() <= ERF_ABS, f"{isa}: erf max abs error {e.max():.3g} at x={x[np.argmax(e)]}"
        for fn, ref in (("gelu_erf", ref_gelu), ("gelu_tanh", ref_tanh)):
            e = np.abs(k.vec(fn, x) - ref) / (1 + np.abs(x64))
            assert e.max() <= GELU_ABS, f"{isa}: {fn} max error {e.max():.3g} at x={x[np.argmax(e)]}"
        # SIMD twin vs scalar twin: the same polynomials, fused or not (GELU: 1 + erf cancels for
        # x << 0, so there they agree to the error bound only)
        if isa != "scalar":
            for fn in ("exp", "erf"):
                np.testing.assert_allclose(k.vec(fn, x), kernels["scalar"].vec(fn, x), rtol=8 * EPS32,
                                           atol=1e-7, err_msg=f"{isa} {fn}")
            for fn in ("gelu_erf", "gelu_tanh"):
                diff = np.abs(k.vec(fn, x) - kernels["scalar"].vec(fn, x))
                assert np.all(diff <= 2 * GELU_ABS * (1 + np.abs(x64))), f"{isa} {fn}"


@pytest.mark.parametrize("n", [1, 7, 16, 17, 33, 70])
def test_softmax_over_real_keys_only(kernels, n):
    rng = np.random.default_rng(n)
    row = (rng.standard_normal(80) * 4).astype(np.float32)
    row[n:] = 1e30                                   # padding: must be neither read nor written
    scale = 0.25
    z = row[:n].astype(np.float64) * scale
    ref = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    for isa, k in each_isa(kernels):
        got = k.softmax(row, n, scale)
        np.testing.assert_allclose(got[:n], ref, rtol=2e-6, atol=1e-9, err_msg=isa)
        np.testing.assert_array_equal(got[n:], row[n:])


def test_layernorm(kernels, model):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, DIM)) * 3 + 1).astype(np.float32)
    w, b = rng.standard_normal(DIM).astype(np.float32), rng.standard_normal(DIM).astype(np.float32)
    x64 = x.astype(np.float64)
    mu = x64.mean(1, keepdims=True)
    eps = model.config.layer_norm_eps
    ref = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(1, keepdims=True) + eps) * w + b
    for isa, k in each_isa(kernels):
        np.testing.assert_allclose(k.layernorm(x, w, b), ref, rtol=1e-5, atol=1e-5, err_msg=isa)


@pytest.mark.parametrize("n", [1, 5, 32, 49, 70])
def test_attention(kernels, n):
    rng = np.random.default_rng(n)
    qkv = rng.standard_normal((n, 3 * DIM)).astype(np.float32)
    hd = DIM // HEADS
    q, kk, v = (qkv[:, i * DIM:(i + 1) * DIM].astype(np.float64) for i in range(3))
    ref = np.zeros((n, DIM))
    for h in range(HEADS):
        s = slice(h * hd, (h + 1) * hd)
        z = q[:, s] @ kk[:, s].T / math.sqrt(hd)
        p = np.exp(z - z.max(1, keepdims=True))
        ref[:, s] = (p / p.sum(1, keepdims=True)) @ v[:, s]
    outs = {}
    for isa, k in each_isa(kernels):
        outs[isa] = k.attention(qkv)
        np.testing.assert_allclose(outs[isa], ref, rtol=1e-5, atol=2e-6, err_msg=isa)
