"""Our GEMM kernel alone against NumPy/OpenBLAS sgemm and the fp32 FMA peak, single thread.

For each of the model's GEMM shapes (M = rows: q/k/v/o [H x H], up [H x FFN], down [FFN x H]), times
the generated kernel (`<prefix>_test_gemm`, the model source compiled with -DREFEXIT_KERNEL_TESTS,
weights packed by `codegen.pack.pack_panels`, bias epilogue) and NumPy's `x @ w.T` in the same
run, with the same timing loop (`bench.time_call`: median of 5 batches of >= 0.1 s). Weights are
warm (in L2/L3): this is the kernel's ceiling; `tools/bench.py` measures whole models.

    python tools/bench_gemm.py                                   # bert-base, M = 16, 64, 128, 512, 1024
    python tools/bench_gemm.py --model minilm-l12 --rows 16,128
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: shapes, timing, sgemm, FMA peak)

import refexit  # noqa: E402
from codegen import build, emit, pack  # noqa: E402
from codegen.lower import lower  # noqa: E402

CDEF = """void {p}_test_gemm(const float *A, int lda, const float *Bp, int K, int N, float *C, int ldc,
                   const float *bias, int M, int epi, int nth);"""
EPI_BIAS = 1


def kernel_library(model, workdir: Path, isa: str | None = None):
    """-> (cffi lib, ffi, isa) of the model's source with the kernel test entry points, no OpenMP."""
    import cffi
    plan = lower(model, refexit.Static(model.num_layers), prefix="gk", max_length=16)
    _, c_path = emit.write_sources(plan, workdir)
    cc = build.compiler()
    isa = build.resolve_isa(cc, isa)
    lib_path = workdir / f"libgk_{isa}.so"
    build.compile_c(c_path, lib_path, cc, build.flags(cc, False, ["-DREFEXIT_KERNEL_TESTS"], isa=isa))
    ffi = cffi.FFI()
    ffi.cdef(CDEF.format(p="gk"))
    return ffi.dlopen(str(lib_path)), ffi, isa


def ours_gflops(lib, ffi, M: int, K: int, N: int) -> float:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K), dtype=np.float32)
    Bp = pack.pack_panels(rng.standard_normal((N, K), dtype=np.float32))
    C = np.empty((M, N), np.float32)
    b = np.zeros(N, np.float32)
    bufs = [ffi.from_buffer("float[]", x) for x in (A, Bp, C, b)]
    sec = bench.time_call(lambda: lib.gk_test_gemm(bufs[0], K, bufs[1], K, N, bufs[2], N, bufs[3], M, EPI_BIAS, 1),
                          0.1, 5)
    return 2.0 * M * K * N / sec / 1e9


def main(argv=None, rows_out: list | None = None) -> int:
    """rows_out: when a list, receives one dict per printed row with the unrounded figures
    (name, M, K, N, ours, numpy, ratio, peak share) -- for tests, which must not re-derive a ratio
    from rates printed with one decimal."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="bert-base", choices=[m for m in bench.SHAPES if m != "tiny"])
    p.add_argument("--rows", default="16,64,128,512,1024", help="values of M, comma-separated")
    p.add_argument("--isa", default=None, help="scalar, avx2 or avx512 (default: the best this CPU runs)")
    args = p.parse_args(argv)
    model = bench.build_model(args.model)
    blas = bench.BlasThreads()
    with tempfile.TemporaryDirectory(prefix="refexit-gemm-") as tmp:
        lib, ffi, isa = kernel_library(model, Path(tmp), args.isa)
        peak = bench.measure_fma_peak(1, Path(tmp)).get("gflops")
        print(f"{args.model}, 1 thread, ours = {isa} kernel; fp32 FMA peak "
              + (f"{peak:.1f} GFLOP/s" if peak else "not measured"))
        print(f"{'gemm':6} {'M':>5} {'K':>5} {'N':>5}  {'ours':>7} {'numpy':>7}  {'ours/numpy':>10} {'ours/peak':>9}")
        with blas.limit(1):
            for M in (int(m) for m in args.rows.split(",")):
                for name, m, K, N, _ in bench.gemm_shapes(model, 1, M):
                    o, n = ours_gflops(lib, ffi, m, K, N), bench.sgemm_gflops(m, K, N, 0.1, 5)
                    share = f"{100 * o / peak:8.0f}%" if peak else f"{'-':>9}"
                    print(f"{name:6} {m:5d} {K:5d} {N:5d}  {o:7.1f} {n:7.1f}  {o / n:10.2f} {share}", flush=True)
                    if rows_out is not None:
                        rows_out.append({"name": name, "M": m, "K": K, "N": N, "ours": o, "numpy": n,
                                         "ratio": o / n, "peak_share": o / peak if peak else None})
    if blas.controller is None:
        print("(threadpoolctl not installed: NumPy used its default thread count)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
