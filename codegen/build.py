"""Building: `<prefix>.c` -> a shared library, cached under a hash of the source and the flags.

    cc -O3 -std=c99 -fPIC -shared -Wall -Wextra -Werror [-fopenmp] [-DREFEXIT_ISA_AVX2 | -DREFEXIT_ISA_AVX512]
       -I<dir> <prefix>.c -o lib<prefix>.so -lm

The compiler is $CC or `cc`; OpenMP is used when a probe (run once per compiler) shows the
compiler accepts -fopenmp. No -march flag: the kernels for AVX2 / AVX-512 carry
`__attribute__((target(...)))` and are compiled in only with their -D flag (`isa`); without one
the source is portable C99 (the default of a hand build, for distribution). `isa=None` picks the
best instruction set that both the compiler and this CPU have (a probe, run once per compiler);
a library built for AVX2 / AVX-512 refuses to open (ERR_ISA) on a CPU without it.
Libraries are cached in $REFEXIT_BUILD_CACHE (default $REFEXIT_CACHE/build, i.e.
~/.cache/refexit/build) as <sha256 of compiler, flags, header, source>.so; every file is written
to a temporary name and renamed into place, so concurrent builds never see half a library.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from refexit import files
from refexit.errors import RefexitError

BASE_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
LIBS = ("-lm",)
# portable C99, x86-64 AVX2+FMA, AVX-512F; for bf16 / int8 builds also AVX-512 with BF16 and VNNI
# (VDPBF16PS, VPDPBUSD: Zen 4, Sapphire Rapids) and AMX (BF16 and INT8 tiles: Sapphire Rapids)
ISAS = ("scalar", "avx2", "avx512", "avx512bf16", "amx")
ISA_FLAGS = {"scalar": (), "avx2": ("-DREFEXIT_ISA_AVX2",), "avx512": ("-DREFEXIT_ISA_AVX512",),
             "avx512bf16": ("-DREFEXIT_ISA_AVX512", "-DREFEXIT_ISA_BF16"),
             "amx": ("-DREFEXIT_ISA_AVX512", "-DREFEXIT_ISA_AMX")}
BF16_ISAS = ("avx512bf16", "amx")                   # only bf16 / int8 code uses their instructions


class BuildError(RefexitError):
    """The C compiler is missing or rejected the generated code (the message has its output)."""


@dataclass
class BuildResult:
    library: Path        # the library in the output folder
    cached: Path         # its copy in the cache
    flags: list
    compiler: str
    openmp: bool
    isa: str
    from_cache: bool
    key: str             # sha256 of compiler, flags, header and source: names the cached library


def compiler(cc: str | None = None) -> str:
    return cc or os.environ.get("CC") or "cc"


@functools.lru_cache(maxsize=None)
def compiler_id(cc: str) -> str:
    """First line of `cc --version` (part of the cache key)."""
    try:
        out = subprocess.run(shlex.split(cc) + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"C compiler {cc!r} not usable: {e} (set $CC or install gcc/clang)") from None
    if out.returncode != 0:
        raise BuildError(f"C compiler {cc!r} failed `--version`: {out.stderr.strip()}")
    return (out.stdout.strip().splitlines() or [cc])[0]


@functools.lru_cache(maxsize=None)
def openmp_supported(cc: str) -> bool:
    """Can `cc` build and link a shared library with -fopenmp? (probed once per compiler)"""
    src = "#include <omp.h>\nint refexit_probe(void) { return omp_get_max_threads(); }\n"
    with tempfile.TemporaryDirectory(prefix="refexit-omp-") as d:
        c = Path(d) / "probe.c"
        c.write_text(src)
        try:
            r = subprocess.run(shlex.split(cc) + list(BASE_FLAGS) + ["-fopenmp", str(c), "-o",
                               str(Path(d) / "probe.so")], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0


_ISA_PROBE = r"""
#include <stdio.h>
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static float f2(const float *p) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p), _mm256_setzero_ps());
    return _mm_cvtss_f32(_mm256_castps256_ps128(v));
}
__attribute__((target("avx2,fma,avx512f"))) static float f5(const float *p) {
    return _mm512_reduce_add_ps(_mm512_scalef_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p)));
}
#if defined(__linux__) && (defined(__clang__) || __GNUC__ >= 11)
#include <cpuid.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni"))) static float fb(const float *p) {
    __m512i one = _mm512_set1_epi32(0x3F803F80);            /* bf16 pairs (1, 1) */
    __m512i q = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, one);
    return _mm512_reduce_add_ps(_mm512_dpbf16_ps(_mm512_loadu_ps(p), (__m512bh)one, (__m512bh)one)) +
           (float)_mm512_reduce_add_epi32(q);
}
typedef struct { unsigned char palette, start, r[14]; unsigned short colsb[16]; unsigned char rows[16]; } cfg_t;
__attribute__((target("amx-tile,amx-bf16,amx-int8"))) static int fa(void) {
    static float c[16 * 16];
    cfg_t g;
    memset(&g, 0, sizeof g);
    g.palette = 1;
    for (int t = 0; t < 3; t++) { g.rows[t] = 16; g.colsb[t] = 64; }
    _tile_loadconfig(&g);
    _tile_zero(0); _tile_zero(1); _tile_zero(2);
    _tile_dpbf16ps(0, 1, 2);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
    return (int)c[0];
}
#define HAVE_BF16_PROBE 1
#endif
int main(void) {
    float x[16] = {0};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        printf("avx2 %g\n", f2(x));
        if (__builtin_cpu_supports("avx512f"))
            printf("avx512 %g\n", f5(x));
#ifdef HAVE_BF16_PROBE
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") &&
                __builtin_cpu_supports("avx512vnni")) {
            printf("avx512bf16 %g\n", fb(x));
            unsigned a, b, c, d;         /* AMX-TILE, -BF16, -INT8: CPUID 7 EDX bits 24, 22, 25 */
            if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1u) && (d >> 22 & 1u) &&
                    (d >> 25 & 1u) && syscall(SYS_arch_prctl, 0x1023, 18) == 0)
                printf("amx %d\n", fa());
        }
#endif
    }
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def host_isas(cc: str) -> tuple:
    """The instruction sets that `cc` can compile for and this CPU runs (scalar always)."""
    found = ["scalar"]
    with tempfile.TemporaryDirectory(prefix="refexit-isa-") as d:
        c, exe = Path(d) / "probe.c", Path(d) / "probe"
        c.write_text(_ISA_PROBE)
        try:
            r = subprocess.run(shlex.split(cc) + ["-O1", "-std=c99", str(c), "-o", str(exe)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return tuple(found)
            out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return tuple(found)
    found += [isa for isa in ISAS[1:] if any(l.split()[:1] == [isa] for l in out.splitlines())]
    return tuple(found)


def resolve_isa(cc: str, isa: str | None = None, precision: str = "fp32") -> str:
    """isa None / "auto" / "native": the best of host_isas(cc) for `precision` (fp32 code has no use
    for avx512bf16 / amx: its best is avx512); else one of ISAS, as given."""
    if isa in (None, "auto", "native"):
        env = os.environ.get("REFEXIT_ISA")
        if env and env not in ("auto", "native"):
            if precision == "fp32" and env in BF16_ISAS:
                env = "avx512"
            return resolve_isa(cc, env, precision)
        usable = [i for i in host_isas(cc) if precision != "fp32" or i not in BF16_ISAS]
        return usable[-1]
    if isa not in ISAS:
        raise BuildError(f"isa must be one of {', '.join(ISAS)} (or None for this CPU's best), got {isa!r}")
    if precision == "fp32" and isa in BF16_ISAS:
        raise BuildError(f"isa {isa!r} is for bf16 and int8 builds (precision=\"bf16\" or \"int8\"); "
                         f"fp32 code uses avx512")
    return isa


def flags(cc: str, openmp: bool | None = None, extra=(), isa: str = "scalar") -> list[str]:
    use_omp = openmp_supported(cc) if openmp is None else bool(openmp)
    return list(BASE_FLAGS) + (["-fopenmp"] if use_omp else []) + list(ISA_FLAGS[isa]) + list(extra)


def link_flags(flag_list) -> list[str]:
    """Extra flags of the shared library's link: with OpenMP on Linux, -z nodelete (a dlclose at
    interpreter exit would otherwise unmap libgomp under its still-spinning worker threads: a
    crash at exit with OMP_WAIT_POLICY=active)."""
    return ["-Wl,-z,nodelete"] if "-fopenmp" in flag_list and sys.platform.startswith("linux") else []


def cache_dir() -> Path:
    explicit = os.environ.get("REFEXIT_BUILD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("REFEXIT_CACHE") or "~/.cache/refexit").expanduser() / "build"


def library_name(prefix: str) -> str:
    return f"lib{prefix}.dylib" if sys.platform == "darwin" else f"lib{prefix}.so"


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        files.set_mode(tmp, executable=True)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compile_c(c_path: Path, out: Path, cc: str, flag_list: list[str], include_dir: Path | None = None) -> None:
    """Run the compiler once (no caching); raises BuildError with its output."""
    # -iquote, not -I: the folder holds <prefix>.h, which must never shadow a system header
    # (a prefix named math, omp, string or stdio) that the source includes as <...>
    cmd = shlex.split(cc) + flag_list + ["-iquote", str(include_dir or c_path.parent), str(c_path), "-o",
                                         str(out)] + list(LIBS)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except OSError as e:
        raise BuildError(f"cannot run the C compiler {cc!r}: {e} (set $CC or install gcc/clang)") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"the C compiler took more than 600 s on {c_path}") from None
    if r.returncode != 0:
        raise BuildError(f"{' '.join(shlex.quote(c) for c in cmd)} failed ({r.returncode}):\n"
                         f"{(r.stderr or r.stdout).strip()[:8000]}")


def build(c_path: str | Path, out_dir: str | Path, prefix: str, cc: str | None = None,
          openmp: bool | None = None, extra_flags=(), isa: str | None = None,
          precision: str = "fp32") -> BuildResult:
    """Compile `c_path` (its header beside it) into out_dir/lib<prefix>.so, through the cache.
    isa: "scalar", "avx2", "avx512", or None for the best this compiler and CPU have
    ($REFEXIT_ISA overrides that default)."""
    c_path, out_dir = Path(c_path), Path(out_dir)
    cc = compiler(cc)
    isa = resolve_isa(cc, isa, precision)
    flag_list = flags(cc, openmp, extra_flags, isa)
    flag_list += link_flags(flag_list)
    h_path = c_path.with_suffix(".h")
    key = hashlib.sha256()
    for part in (compiler_id(cc), cc, " ".join(flag_list), " ".join(LIBS), prefix):
        key.update(part.encode() + b"\0")
    key.update(h_path.read_bytes() if h_path.exists() else b"")
    key.update(b"\0" + c_path.read_bytes())
    digest = key.hexdigest()
    cached = cache_dir() / f"{digest}{Path(library_name(prefix)).suffix}"
    from_cache = cached.is_file()
    if not from_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cached.name + ".", suffix=".tmp.so", dir=cached.parent)
        os.close(fd)
        try:
            compile_c(c_path, Path(tmp), cc, flag_list)
            files.set_mode(tmp, executable=True)
            os.replace(tmp, cached)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    library = out_dir / library_name(prefix)
    _copy_atomic(cached, library)
    return BuildResult(library, cached, flag_list, cc, "-fopenmp" in flag_list, isa, from_cache, digest)


def cached_library(key: str, fallback: Path) -> Path:
    """The content-addressed copy of a library (restored from `fallback` when the cache lost it).

    Libraries are loaded from here, never from the output folder: the dynamic loader reuses an
    already-loaded library of the same path, so a rebuilt lib<prefix>.so at the same path would
    silently keep the old code in a running process."""
    path = cache_dir() / f"{key}{Path(fallback).suffix}"
    if not path.is_file():
        if not Path(fallback).is_file():
            raise BuildError(f"{fallback} does not exist (recompile the model)")
        try:
            _copy_atomic(Path(fallback), path)
        except OSError:                 # no writable cache: load it where it is
            return Path(fallback)
    return path
