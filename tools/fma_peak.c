/* The machine's fp32 FMA peak: GFLOP/s of independent vector FMAs on registers only (no memory),
 * with n threads (OpenMP). tools/bench.py compiles and runs it next to the sgemm measurement:
 *
 *     cc -O2 -fopenmp [-mavx512f | -mavx2 -mfma] fma_peak.c -o fma_peak && ./fma_peak 2
 *
 * prints one number (GFLOP/s, the best of 5 runs of ~0.1 s). 12 accumulators hide the FMA latency
 * (4 cycles at 2 per cycle, or 1 per cycle on 512-bit vectors split in two halves).
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
typedef __m512 vf;
#define LANES 16
#define SET1(x) _mm512_set1_ps(x)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define HSUM(v) _mm512_reduce_add_ps(v)
#elif defined(__FMA__)
typedef __m256 vf;
#define LANES 8
#define SET1(x) _mm256_set1_ps(x)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float HSUM(__m256 v) {
    float f[8], s = 0.0f;
    _mm256_storeu_ps(f, v);
    for (int i = 0; i < 8; i++)
        s += f[i];
    return s;
}
#else
#error "fma_peak.c needs -mavx512f or -mavx2 -mfma"
#endif
#define ACC 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = 20000000L / (LANES / 8);
    double best = 0.0;
    float sink = 0.0f;
#ifndef _OPENMP
    if (threads != 1) {
        fprintf(stderr, "fma_peak: built without OpenMP, only 1 thread\n");
        return 2;
    }
#endif
    if (threads < 1)
        return 2;
    for (int run = 0; run < 5; run++) {
        double t0 = now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
#endif
        {
            vf b = SET1(0.999999f), c = SET1(1e-7f);
            vf a0 = SET1(0.0f), a1 = SET1(1.0f), a2 = SET1(2.0f), a3 = SET1(3.0f), a4 = SET1(4.0f),
               a5 = SET1(5.0f), a6 = SET1(6.0f), a7 = SET1(7.0f), a8 = SET1(8.0f), a9 = SET1(9.0f),
               a10 = SET1(10.0f), a11 = SET1(11.0f);      /* named, so that they stay in registers */
            for (long i = 0; i < iters; i++) {
                a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);
                a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);
                a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);
            }
            sink += HSUM(a0) + HSUM(a1) + HSUM(a2) + HSUM(a3) + HSUM(a4) + HSUM(a5) + HSUM(a6) + HSUM(a7)
                    + HSUM(a8) + HSUM(a9) + HSUM(a10) + HSUM(a11);
        }
        double gflops = (double)threads * (double)iters * ACC * LANES * 2.0 / (now() - t0) / 1e9;
        best = gflops > best ? gflops : best;
    }
    printf("%.1f\n", best);
    return sink == 12345.0f;           /* keeps the loop from being optimised away */
}
