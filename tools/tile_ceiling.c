/* How fast can an fp32 GEMM tile go on this CPU, and would Winograd's inner-product trick beat it?
 * The evidence behind "1x64 stays above 0.8x" in docs/benchmarks.md. AVX-512 only, single thread:
 *
 *     cc -O3 -mavx512f -mfma tools/tile_ceiling.c -o /tmp/tile_ceiling && /tmp/tile_ceiling
 *
 * 1. Pipe throughput (ns per 512-bit op, register operands only): FMAs alone, adds alone, and mixed,
 *    to see whether adds run beside the FMAs (on Zen 4 they have pipes of their own).
 * 2. A GEMM of M = 64 rows for each of BERT-base's shapes (q/k/v/o 768x768, up 768x3072, down
 *    3072x768), laid out like the generated code (weights in panels of 32 outputs, tiles of 11 and
 *    10 rows x 32 columns, rows of A broadcast), weights warm in L2/L3 (the same GEMM repeated):
 *      plain     acc += a[k] * b[k]                               2 FMAs per pair of k
 *      winograd  acc += (a[k] + b[k+1]) * (a[k+1] + b[k])         2 adds + 1 FMA per pair of k
 *    Winograd (1968) computes sum a[k] b[k] as that sum minus sum a[k] a[k+1] and sum b[k] b[k+1],
 *    terms which cost O(M K + N K) and are left out here (in its favour): only the main loop is
 *    timed. "mixed" routes one add in two through the FMA pipes (as x * 1 + y) to balance them.
 * Prints GFLOP/s (for Winograd: of the plain GEMM's 2 M K N FLOPs) and the time ratio.
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NR 32                 /* outputs per weight panel, as codegen/pack.py */
#define M 64                  /* rows: the 1x64 case */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---------------------------------------------------------------- 1. pipe throughput */
#define PIPE_LOOP(name, body)                                                                          \
    static void name(long n) {                                                                         \
        __asm__ volatile("vxorps %%zmm20, %%zmm20, %%zmm20\n\tvxorps %%zmm21, %%zmm21, %%zmm21\n\t"    \
                         "1:\n\t" body "dec %0\n\tjnz 1b" : "+r"(n) : : "cc", "xmm0", "xmm1", "xmm2",   \
                         "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",      \
                         "xmm12", "xmm13", "xmm14", "xmm15", "xmm20", "xmm21");                         \
    }
#define F(r) "vfmadd231ps %%zmm20, %%zmm21, %%zmm" #r "\n\t"
#define A(r) "vaddps %%zmm20, %%zmm" #r ", %%zmm" #r "\n\t"
PIPE_LOOP(fma_only, F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7))
PIPE_LOOP(add_only, A(8) A(9) A(10) A(11) A(12) A(13) A(14) A(15))
PIPE_LOOP(fma_add_1_1, F(0) A(8) F(1) A(9) F(2) A(10) F(3) A(11) F(4) A(12) F(5) A(13) F(6) A(14) F(7) A(15))
PIPE_LOOP(fma_add_1_2, F(0) A(8) A(9) F(1) A(10) A(11) F(2) A(12) A(13) F(3) A(14) A(15))

static double ns_per_op(void (*loop)(long), int ops) {
    long n = 20000000;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        loop(n);
        double d = now() - t0;
        best = d < best ? d : best;
    }
    return best / (double)n / ops * 1e9;
}

/* ---------------------------------------------------------------- 2. tiles */
/* C[mr][32] = acc[mr][2] */
#define STORE_TILE(MR)                                                                                 \
    for (int i = 0; i < MR; i++) {                                                                     \
        _mm512_storeu_ps(C + i * ldc, acc[i][0]);                                                      \
        _mm512_storeu_ps(C + i * ldc + 16, acc[i][1]);                                                 \
    }

/* C[mr][32] = A[mr][K] (lda) @ panel B[K][32] */
#define PLAIN_TILE(MR)                                                                                 \
    static __attribute__((noinline)) void plain_##MR(const float *A, size_t lda, const float *B,       \
                                                     int K, float *C, size_t ldc) {                    \
        __m512 acc[MR][2];                                                                             \
        for (int i = 0; i < MR; i++)                                                                   \
            acc[i][0] = acc[i][1] = _mm512_setzero_ps();                                               \
        for (int k = 0; k < K; k++) {                                                                  \
            __m512 b0 = _mm512_loadu_ps(B + (size_t)k * NR), b1 = _mm512_loadu_ps(B + (size_t)k * NR + 16); \
            for (int i = 0; i < MR; i++) {                                                             \
                __m512 a = _mm512_set1_ps(A[i * lda + k]);                                             \
                acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);                                         \
                acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);                                         \
            }                                                                                          \
        }                                                                                              \
        STORE_TILE(MR);                                                                                \
    }
/* the same tile's main Winograd term; MIX: every MIX-th second add goes through the FMA pipes */
#define WINO_TILE(MR, NAME, MIX)                                                                       \
    static __attribute__((noinline)) void NAME##_##MR(const float *A, size_t lda, const float *B,      \
                                                      int K, float *C, size_t ldc) {                   \
        __m512 acc[MR][2], ones = _mm512_set1_ps(1.0f);                                                \
        __asm__("" : "+v"(ones));                  /* opaque: the compiler may not fold x * 1 + y */   \
        for (int i = 0; i < MR; i++)                                                                   \
            acc[i][0] = acc[i][1] = _mm512_setzero_ps();                                               \
        for (int k = 0; k < K; k += 2) {                                                               \
            __m512 b[2][2];                                     /* [k, k + 1][vector] */               \
            for (int j = 0; j < 2; j++) {                                                              \
                b[j][0] = _mm512_loadu_ps(B + (size_t)(k + j) * NR);                                   \
                b[j][1] = _mm512_loadu_ps(B + (size_t)(k + j) * NR + 16);                              \
            }                                                                                          \
            for (int i = 0; i < MR; i++) {                                                             \
                __m512 a0 = _mm512_set1_ps(A[i * lda + k]), a1 = _mm512_set1_ps(A[i * lda + k + 1]);   \
                for (int v = 0; v < 2; v++) {                                                          \
                    __m512 t1 = _mm512_add_ps(b[1][v], a0);                                            \
                    __m512 t2 = MIX && (i * 2 + v) % (MIX ? MIX : 1) == 0                              \
                        ? _mm512_fmadd_ps(b[0][v], ones, a1) : _mm512_add_ps(b[0][v], a1);             \
                    acc[i][v] = _mm512_fmadd_ps(t1, t2, acc[i][v]);                                    \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        STORE_TILE(MR);                                                                                \
    }
PLAIN_TILE(11)
PLAIN_TILE(10)
WINO_TILE(11, wino, 0)
WINO_TILE(10, wino, 0)
WINO_TILE(11, mixed, 2)
WINO_TILE(10, mixed, 2)

typedef void (*tile_fn)(const float *, size_t, const float *, int, float *, size_t);

/* C[M][N] = A[M][K] @ Bp (panels), as the generated gemm_panels: per panel, tiles of 11, 11, 11,
   11, 10, 10 rows */
static void gemm(tile_fn t11, tile_fn t10, const float *A, const float *Bp, float *C, int K, int N) {
    for (int p = 0; p < N / NR; p++)
        for (int i = 0, bi = 0; i < M; bi++) {
            int mr = bi < 4 ? 11 : 10;
            (mr == 11 ? t11 : t10)(A + (size_t)i * K, (size_t)K, Bp + (size_t)p * K * NR, K,
                                   C + (size_t)i * N + (size_t)p * NR, (size_t)N);
            i += mr;
        }
}

static double gemm_seconds(tile_fn t11, tile_fn t10, const float *A, const float *Bp, float *C, int K, int N) {
    double best = 1e30;
    gemm(t11, t10, A, Bp, C, K, N);                                  /* warm-up */
    for (int r = 0; r < 15; r++) {
        double t0 = now();
        for (int q = 0; q < 5; q++)
            gemm(t11, t10, A, Bp, C, K, N);
        double d = (now() - t0) / 5;
        best = d < best ? d : best;
    }
    return best;
}

int main(void) {
    double fma = ns_per_op(fma_only, 8), add = ns_per_op(add_only, 8);
    double mix11 = ns_per_op(fma_add_1_1, 16), mix12 = ns_per_op(fma_add_1_2, 12);
    printf("512-bit ops, ns each: FMA alone %.3f, add alone %.3f, 1 FMA : 1 add %.3f, 1 FMA : 2 adds %.3f\n",
           fma, add, mix11, mix12);
    static const int shapes[3][2] = {{768, 768}, {768, 3072}, {3072, 768}};   /* K, N */
    static const char *names[3] = {"q/k/v/o 768x768", "up 768x3072", "down 3072x768"};
    for (int s = 0; s < 3; s++) {
        int K = shapes[s][0], N = shapes[s][1];
        float *A = aligned_alloc(64, (size_t)M * K * sizeof(float));
        float *B = aligned_alloc(64, (size_t)K * N * sizeof(float));
        float *C = aligned_alloc(64, (size_t)M * N * sizeof(float));
        if (!A || !B || !C)
            return 1;
        srand(1);
        for (size_t i = 0; i < (size_t)M * K; i++)
            A[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        for (size_t i = 0; i < (size_t)K * N; i++)
            B[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * 0.04f;
        double flop = 2.0 * M * K * N;
        double plain = gemm_seconds(plain_11, plain_10, A, B, C, K, N);
        double wino = gemm_seconds(wino_11, wino_10, A, B, C, K, N);
        double mixed = gemm_seconds(mixed_11, mixed_10, A, B, C, K, N);
        printf("M=%d %-16s plain %6.1f GFLOP/s | winograd %6.1f (time x%.3f) | mixed %6.1f (x%.3f)\n", M, names[s],
               flop / plain / 1e9, flop / wino / 1e9, wino / plain, flop / mixed / 1e9, mixed / plain);
        free(A);
        free(B);
        free(C);
    }
    return 0;
}
