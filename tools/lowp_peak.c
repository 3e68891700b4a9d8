/* The machine's reduced-precision peaks: GFLOP/s of independent dot-product instructions on
 * registers (or AMX tiles) only, no memory in the timed loop, with n threads (OpenMP). The
 * sibling of fma_peak.c (fp32); tools/bench.py compiles and runs both next to the sgemm
 * measurement:
 *
 *     cc -O2 -fopenmp lowp_peak.c -o lowp_peak && ./lowp_peak 2 [vdpbf16ps tdpbf16ps vpdpbusd tdpbusd]
 *
 * No -m flags: each kernel carries __attribute__((target(...))) and runs only when the CPU (and,
 * for AMX, the kernel's arch_prctl permission) allows it. One line per peak, the best of 5 runs
 * of ~0.1 s, counting 2 flops per multiply-add (int8 included: "GFLOP/s" of int8 operations):
 *
 *     vdpbf16ps 1234.5      AVX512-BF16 VDPBF16PS zmm: 16 fp32 lanes += 2 bf16 products each
 *     tdpbf16ps 9876.5      AMX-BF16 TDPBF16PS: 16x16 fp32 += (16x32 bf16) . (32x16 bf16)
 *     vpdpbusd 2345.6       AVX512-VNNI VPDPBUSD zmm: 16 int32 lanes += 4 u8 x s8 products each
 *     tdpbusd 19753.1       AMX-INT8 TDPBUSD: 16x16 int32 += (16x64 u8) . (64x16 s8)
 *     tdpbf16ps skip: <why> when the compiler, the CPU or the kernel lacks it
 *
 * AMX needs the kernel's permission first: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA), once per
 * process (Linux >= 5.16); each thread then loads its own tile configuration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* What the compiler can target with __attribute__((target)) (older ones lack the intrinsics);
 * AMX also needs Linux's arch_prctl. */
#if defined(__linux__)
#define ON_LINUX 1
#else
#define ON_LINUX 0
#endif
#if defined(__x86_64__) && defined(__clang__)
#define HAVE_BF16 (__clang_major__ >= 9)
#define HAVE_VNNI (__clang_major__ >= 6)
#define HAVE_AMX (__clang_major__ >= 12 && ON_LINUX)
#elif defined(__x86_64__) && defined(__GNUC__)
#define HAVE_BF16 (__GNUC__ >= 10)
#define HAVE_VNNI (__GNUC__ >= 8)
#define HAVE_AMX (__GNUC__ >= 11 && ON_LINUX)
#else
#define HAVE_BF16 0
#define HAVE_VNNI 0
#define HAVE_AMX 0
#endif
#if HAVE_BF16 || HAVE_VNNI || HAVE_AMX
#include <immintrin.h>
#endif
#if HAVE_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define ACC 12                  /* independent accumulators: hide the latency of the vector forms */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One kernel per instruction: `iters` rounds on registers; returns a value that depends on every
 * accumulator, so that the loop stays. struct peak says how many multiply-adds a round does. */
typedef float (*kernel_fn)(long iters);

#if HAVE_BF16
/* 12 x VDPBF16PS zmm per round: each 16 fp32 lanes += 2 bf16 products. */
__attribute__((target("avx512f,avx512bf16"))) static float vdpbf16ps_kernel(long iters) {
    __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.999f), _mm512_set1_ps(0.998f));
    __m512bh c = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(2e-3f));
    __m512 a0 = _mm512_set1_ps(0.0f), a1 = _mm512_set1_ps(1.0f), a2 = _mm512_set1_ps(2.0f),
           a3 = _mm512_set1_ps(3.0f), a4 = _mm512_set1_ps(4.0f), a5 = _mm512_set1_ps(5.0f),
           a6 = _mm512_set1_ps(6.0f), a7 = _mm512_set1_ps(7.0f), a8 = _mm512_set1_ps(8.0f),
           a9 = _mm512_set1_ps(9.0f), a10 = _mm512_set1_ps(10.0f), a11 = _mm512_set1_ps(11.0f);
    for (long i = 0; i < iters; i++) {
        a0 = _mm512_dpbf16_ps(a0, b, c); a1 = _mm512_dpbf16_ps(a1, b, c); a2 = _mm512_dpbf16_ps(a2, b, c);
        a3 = _mm512_dpbf16_ps(a3, b, c); a4 = _mm512_dpbf16_ps(a4, b, c); a5 = _mm512_dpbf16_ps(a5, b, c);
        a6 = _mm512_dpbf16_ps(a6, b, c); a7 = _mm512_dpbf16_ps(a7, b, c); a8 = _mm512_dpbf16_ps(a8, b, c);
        a9 = _mm512_dpbf16_ps(a9, b, c); a10 = _mm512_dpbf16_ps(a10, b, c); a11 = _mm512_dpbf16_ps(a11, b, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
#endif

#if HAVE_VNNI
/* 12 x VPDPBUSD zmm per round: each 16 int32 lanes += 4 products of an unsigned and a signed byte. */
__attribute__((target("avx512f,avx512vnni"))) static float vpdpbusd_kernel(long iters) {
    __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
    __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2),
            a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5),
            a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8),
            a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11);
    for (long i = 0; i < iters; i++) {
        a0 = _mm512_dpbusd_epi32(a0, u, s); a1 = _mm512_dpbusd_epi32(a1, u, s); a2 = _mm512_dpbusd_epi32(a2, u, s);
        a3 = _mm512_dpbusd_epi32(a3, u, s); a4 = _mm512_dpbusd_epi32(a4, u, s); a5 = _mm512_dpbusd_epi32(a5, u, s);
        a6 = _mm512_dpbusd_epi32(a6, u, s); a7 = _mm512_dpbusd_epi32(a7, u, s); a8 = _mm512_dpbusd_epi32(a8, u, s);
        a9 = _mm512_dpbusd_epi32(a9, u, s); a10 = _mm512_dpbusd_epi32(a10, u, s); a11 = _mm512_dpbusd_epi32(a11, u, s);
    }
    __m512i t = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    t = _mm512_add_epi32(t, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    return (float)_mm512_reduce_add_epi32(t);
}
#endif

#if HAVE_AMX
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
/* GCC's tile intrinsics are asm statements that do not say they touch memory: keep the stores
 * to the config and the tiles' source ahead of them, and the tile stores ahead of the reads. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

struct tile_config {                      /* the 64-byte operand of LDTILECFG, palette 1 */
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Every tile 16 rows of 64 bytes; tiles 6 and 7 (the sources) loaded from `src`. */
__attribute__((target("amx-tile"))) static void tiles_setup(struct tile_config *cfg, const uint8_t *src) {
    memset(cfg, 0, sizeof *cfg);
    cfg->palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg->rows[t] = 16;
        cfg->colsb[t] = 64;
    }
    MEMORY_BARRIER();
    _tile_loadconfig(cfg);
    _tile_loadd(6, src, 64);
    _tile_loadd(7, src, 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); _tile_zero(4); _tile_zero(5);
}

/* Stores accumulator tiles 0..5 (16 x 16 of 4 bytes), releases the tiles; returns a value that
 * depends on all six. */
__attribute__((target("amx-tile"))) static float tiles_finish(int is_float) {
    union { float f[256]; int32_t i[256]; } dst;
    float sum = 0.0f;
#define STORE_AND_ADD(t)                                                                          \
    do {                                                                                          \
        _tile_stored(t, dst.f, 64);                                                               \
        MEMORY_BARRIER();                                                                         \
        sum += is_float ? dst.f[0] + dst.f[255] : (float)(dst.i[0] + dst.i[255]);                 \
    } while (0)
    STORE_AND_ADD(0); STORE_AND_ADD(1); STORE_AND_ADD(2); STORE_AND_ADD(3); STORE_AND_ADD(4); STORE_AND_ADD(5);
#undef STORE_AND_ADD
    _tile_release();
    return sum;
}

/* 6 x TDPBF16PS per round on tiles only: C0..C5 (16 x 16 fp32) += A (16 x 32 bf16) . B (32 x 16
 * bf16, stored as 16 rows of 16 pairs); A = B = tile 6 and 7, loaded once before the loop. Six
 * independent accumulators cover the instruction's latency. */
__attribute__((target("amx-tile,amx-bf16"))) static float tdpbf16ps_kernel(long iters) {
    struct tile_config cfg;
    uint16_t src[16 * 32];                     /* bf16 bits, one 16 x 64-byte tile */
    for (int i = 0; i < 16 * 32; i++)
        src[i] = (uint16_t)(0x3a83 + (i & 7));  /* ~1e-3 */
    tiles_setup(&cfg, (const uint8_t *)src);
    for (long i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 6, 7); _tile_dpbf16ps(1, 6, 7); _tile_dpbf16ps(2, 6, 7);
        _tile_dpbf16ps(3, 6, 7); _tile_dpbf16ps(4, 6, 7); _tile_dpbf16ps(5, 6, 7);
    }
    return tiles_finish(1);
}

/* 6 x TDPBUSD per round: C0..C5 (16 x 16 int32) += A (16 x 64 u8) . B (64 x 16 s8, stored as 16
 * rows of 16 groups of 4). */
__attribute__((target("amx-tile,amx-int8"))) static float tdpbusd_kernel(long iters) {
    struct tile_config cfg;
    uint8_t src[16 * 64];
    for (int i = 0; i < 16 * 64; i++)
        src[i] = (uint8_t)(1 + (i & 3));
    tiles_setup(&cfg, src);
    for (long i = 0; i < iters; i++) {
        _tile_dpbusd(0, 6, 7); _tile_dpbusd(1, 6, 7); _tile_dpbusd(2, 6, 7);
        _tile_dpbusd(3, 6, 7); _tile_dpbusd(4, 6, 7); _tile_dpbusd(5, 6, 7);
    }
    return tiles_finish(0);
}

/* CPUID.(EAX=7,ECX=0):EDX bit 24 AMX-TILE, 22 AMX-BF16, 25 AMX-INT8. GCC's __builtin_cpu_supports
 * knows "amx-tile", "amx-bf16" and "amx-int8"; clang before 16 refuses them at compile time, hence
 * CPUID there. */
static int cpu_has_amx(const char *kind) {
#if defined(__clang__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 24 & 1))
        return 0;
    return strcmp(kind, "amx-bf16") == 0 ? (int)(d >> 22 & 1) : (int)(d >> 25 & 1);
#else
    if (!__builtin_cpu_supports("amx-tile"))
        return 0;
    return strcmp(kind, "amx-bf16") == 0 ? __builtin_cpu_supports("amx-bf16") : __builtin_cpu_supports("amx-int8");
#endif
}

/* The kernel's permission to use the tile data state, asked once. 0, or -1 with `why` filled. */
static int amx_permission(char *why, size_t size) {
    static int asked, rc, err;
    if (!asked) {
        asked = 1;
        rc = (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
        err = errno;
    }
    if (rc != 0)
        snprintf(why, size, "arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) failed: %s (Linux < 5.16?)", strerror(err));
    return rc != 0 ? -1 : 0;
}
#endif

struct peak {
    const char *name;
    kernel_fn kernel;             /* NULL: skipped, `why` says why */
    double macs;                  /* multiply-adds per round, per thread */
    char why[160];
};

/* Seconds for one parallel run of `iters` rounds on each of `threads` threads. */
static double run(kernel_fn kernel, long iters, int threads, float *sink) {
    double t0 = now();
    float s = 0.0f;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : s)
#endif
    s += kernel(iters);
    double dt = now() - t0;
    *sink += s;
    (void)threads;
    return dt;
}

static double measure(const struct peak *p, int threads, float *sink) {
    long iters = 1000;
    double dt;
    while ((dt = run(p->kernel, iters, threads, sink)) < 0.02 && iters < (1L << 40))
        iters *= 2;
    iters = (long)((double)iters * 0.1 / dt) + 1;       /* ~0.1 s per run */
    double best = 0.0;
    for (int r = 0; r < 5; r++) {
        double g = (double)threads * (double)iters * p->macs * 2.0 / run(p->kernel, iters, threads, sink) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

static void skip(struct peak *p, const char *why) {
    p->kernel = NULL;
    snprintf(p->why, sizeof p->why, "%s", why);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    enum { VDPBF16PS, TDPBF16PS, VPDPBUSD, TDPBUSD, NPEAKS };
    struct peak peaks[NPEAKS] = {{"vdpbf16ps", NULL, ACC * 16.0 * 2, ""},
                                 {"tdpbf16ps", NULL, 6 * 16.0 * 16 * 32, ""},
                                 {"vpdpbusd", NULL, ACC * 16.0 * 4, ""},
                                 {"tdpbusd", NULL, 6 * 16.0 * 16 * 64, ""}};
    float sink = 0.0f;
    if (threads < 1) {
        fprintf(stderr, "usage: lowp_peak THREADS [vdpbf16ps|tdpbf16ps|vpdpbusd|tdpbusd ...]\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        int known = 0;
        for (int k = 0; k < NPEAKS; k++)
            known |= strcmp(argv[i], peaks[k].name) == 0;
        if (!known) {
            fprintf(stderr, "lowp_peak: unknown peak %s\n", argv[i]);
            return 2;
        }
    }
#if HAVE_BF16 || HAVE_VNNI || HAVE_AMX
    __builtin_cpu_init();
#endif

#if HAVE_BF16
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
        peaks[VDPBF16PS].kernel = vdpbf16ps_kernel;
    else
        skip(&peaks[VDPBF16PS], "the CPU has no AVX512-BF16");
#else
    skip(&peaks[VDPBF16PS], "this compiler cannot target AVX512-BF16 (gcc >= 10 or clang >= 9 on x86-64)");
#endif

#if HAVE_VNNI
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni"))
        peaks[VPDPBUSD].kernel = vpdpbusd_kernel;
    else
        skip(&peaks[VPDPBUSD], "the CPU has no AVX512-VNNI");
#else
    skip(&peaks[VPDPBUSD], "this compiler cannot target AVX512-VNNI (gcc >= 8 or clang >= 6 on x86-64)");
#endif

#if HAVE_AMX
    {
        const char *kinds[2] = {"amx-bf16", "amx-int8"};
        kernel_fn kernels[2] = {tdpbf16ps_kernel, tdpbusd_kernel};
        struct peak *amx[2] = {&peaks[TDPBF16PS], &peaks[TDPBUSD]};
        for (int k = 0; k < 2; k++) {
            char why[160];
            if (!cpu_has_amx(kinds[k])) {
                snprintf(why, sizeof why, "the CPU has no AMX-TILE / %s", k == 0 ? "AMX-BF16" : "AMX-INT8");
                skip(amx[k], why);
            } else if (amx_permission(why, sizeof why) != 0) {
                skip(amx[k], why);
            } else {
                amx[k]->kernel = kernels[k];
            }
        }
    }
#else
    skip(&peaks[TDPBF16PS], "this compiler cannot target AMX-BF16 (gcc >= 11 or clang >= 12 on x86-64 Linux)");
    skip(&peaks[TDPBUSD], "this compiler cannot target AMX-INT8 (gcc >= 11 or clang >= 12 on x86-64 Linux)");
#endif

#ifndef _OPENMP
    if (threads != 1)
        for (int k = 0; k < NPEAKS; k++)
            if (peaks[k].kernel)
                skip(&peaks[k], "built without OpenMP, only 1 thread");
#endif

    for (int k = 0; k < NPEAKS; k++) {
        int wanted = argc <= 2;
        for (int i = 2; i < argc; i++)
            wanted |= strcmp(argv[i], peaks[k].name) == 0;
        if (!wanted)
            continue;
        if (peaks[k].kernel)
            printf("%s %.1f\n", peaks[k].name, measure(&peaks[k], threads, &sink));
        else
            printf("%s skip: %s\n", peaks[k].name, peaks[k].why);
        fflush(stdout);
    }
    return sink == 12345.0f;           /* keeps the kernels' results alive */
}
