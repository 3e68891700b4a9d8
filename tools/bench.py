#!/usr/bin/env python
"""Side-by-side latency of refexit and the CPU runtimes a user would pick instead.

Every contender computes the same thing on the same random weights: the BERT backbone at full
depth (no early exit), then the final head (pooler + classifier), on inputs of batch B x sequence
T with no padding, in fp32 unless its name says otherwise. Contenders (each optional, skipped with
the reason when missing):

  ours              the compiled C (`codegen.compile_model(model, policy=None)`), full depth
  ours-bf16         the same with `precision="bf16"`; its max|dz| is taken against the oracle's
                    bf16 emulation (`model.with_precision("bf16")`), every other row's against fp32
  ours-int8         the same with `precision="int8"`, checked against `model.with_precision("int8")`
  ours-c            the same library's `classify_padded` called through cffi on int64 arrays prepared
                    beforehand (ours / ours-c: the cost of the Python API)
  numpy             the NumPy oracle `model.classify(enc)`
  torch             PyTorch eager, transformers BertModel (eager attention) + pooler + classifier
  onnxruntime       that torch module exported to ONNX (opset 17, dynamic batch/sequence),
                    ORT_ENABLE_ALL, intra-op threads = n, inter-op threads = 1
  onnxruntime-bertopt  the same file through ORT's offline BERT optimizer first (fused
                    Attention, SkipLayerNormalization, BiasGelu), then as above
  openvino-f32      the same ONNX file in OpenVINO, INFERENCE_PRECISION_HINT=f32
  openvino-default  OpenVINO with its default precision (bf16 on CPUs with AVX512-BF16)
  onnxruntime-int8  the ONNX file through `onnxruntime.quantization.quantize_dynamic` (int8
                    weights, weight_type QInt8; activations quantized per call), then as onnxruntime
  openvino-int8     the OpenVINO model through `nncf.quantize` (int8, model_type TRANSFORMER,
                    calibrated on random inputs of the benchmark's kind); needs `pip install nncf`

Measured in one run and interleaved: for each case, every repetition calls each contender once
(round robin, the starting contender rotating), after warm-up; the median, p10 and p90 of the
repetitions are reported. Achieved GFLOP/s counts the model's matmul FLOPs
(`L * model.layer_flops(T) + final_head.flops(T)` per sample) and is set against NumPy/OpenBLAS
sgemm measured in the same run: 2048^3, and the model's own GEMM shapes (M = B*T; the layer's
q, k, v, o [HxH], up [HxI] and down [IxH] products), at the same thread count. Each row also
says its share of its own instruction peak (registers only, same thread count): fp32 rows of the
FMA peak (tools/fma_peak.c), bf16 rows of the AMX TDPBF16PS peak when the runtime's GEMMs run on
AMX tiles and of the VDPBF16PS peak otherwise, int8 rows of the AMX TDPBUSD peak when the CPU has
AMX-INT8 and of the VPDPBUSD peak otherwise (tools/lowp_peak.c).

Threads: ours `cm.set_threads(n)`, torch `torch.set_num_threads(n)`, ORT intra_op_num_threads,
OpenVINO INFERENCE_NUM_THREADS, NumPy through threadpoolctl (BLAS pool) when installed; without
threadpoolctl each thread count runs in its own subprocess with OPENBLAS_NUM_THREADS=n. The
measurement always runs in a child process started with OPENBLAS_THREAD_TIMEOUT=4 (see CHILD_ENV).

    python tools/bench.py                         # everything (BERT-base and MiniLM-L12 shapes)
    python tools/bench.py --quick                 # smoke run
    python tools/bench.py --models bert-base --cases 1x128,1x16 --threads 2 --json out.json

Peers: `pip install .[bench]` (torch==2.13.0 pinned, transformers, onnx, onnxruntime, openvino);
`pip install nncf` for openvino-int8.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:                  # run from a source checkout: python tools/bench.py
    sys.path.insert(0, str(ROOT))

import refexit  # noqa: E402
from refexit import synthetic  # noqa: E402

JSON_FORMAT = 1

# name -> random_model keyword arguments (vocab 30522, 512 positions, 2 labels for the real shapes)
SHAPES = {
    "bert-base": dict(num_layers=12, hidden=768, heads=12, intermediate=3072),
    "minilm-l12": dict(num_layers=12, hidden=384, heads=12, intermediate=1536),
    "tiny": dict(num_layers=2, hidden=32, heads=2, intermediate=64),           # smoke tests only
}
DEFAULT_MODELS = ["bert-base", "minilm-l12"]
DEFAULT_CASES = [(1, 16), (1, 64), (1, 128), (1, 512), (8, 128)]
DEFAULT_THREADS = [1, 2]
CONTENDERS = ["ours", "ours-bf16", "ours-int8", "ours-c", "numpy", "torch", "onnxruntime", "onnxruntime-bertopt", "openvino-f32",
              "openvino-default", "onnxruntime-int8", "openvino-int8"]
# the instruction peaks of tools/lowp_peak.c, in the order it prints them
LOWP_PEAK_NAMES = {"vdpbf16ps": "AVX512-BF16", "tdpbf16ps": "AMX-BF16", "vpdpbusd": "AVX512-VNNI int8",
                   "tdpbusd": "AMX-INT8"}
LOWP_PEAKS = tuple(LOWP_PEAK_NAMES)


class Skip(Exception):
    """A contender cannot run here; the message says why."""


# ====================================================================== models and inputs
def build_model(shape: str, seed: int = 0, scale: float = 0.5) -> refexit.Model:
    kw = dict(SHAPES[shape])
    if shape != "tiny":
        kw.update(vocab_size=30522, max_position=512)
    return synthetic.random_model(**kw, num_labels=2, head_kind="pooler_linear", seed=seed, scale=scale,
                                  lte=False, ponder=False)


def make_input(model: refexit.Model, batch: int, seq: int, seed: int = 0) -> dict:
    """[CLS] random word pieces [SEP], no padding: int64 input_ids / attention_mask / token_type_ids [B, T]."""
    rng = np.random.default_rng(seed)
    V = model.config.vocab_size
    ids = rng.integers(len(synthetic.SPECIAL), V, size=(batch, seq), dtype=np.int64)   # [B, T]
    ids[:, 0] = 2
    ids[:, -1] = 3
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64),
            "token_type_ids": np.zeros((batch, seq), np.int64)}


def case_flops(model: refexit.Model, batch: int, seq: int) -> int:
    """Matmul FLOPs of the full-depth run: L layers + the final head, per sample, summed."""
    final = model.exits.heads[-1]
    return batch * (model.num_layers * model.layer_flops(seq) + final.flops(seq))


def gemm_shapes(model: refexit.Model, batch: int, seq: int) -> list[tuple[str, int, int, int, int]]:
    """The layer's GEMMs as (name, M, K, N, count): y [M, N] = x [M, K] @ w.T."""
    H, I = model.config.hidden_size, model.config.intermediate_size
    M = batch * seq
    return [("qkvo", M, H, H, 4), ("up", M, H, I, 1), ("down", M, I, H, 1)]


# ====================================================================== thread control for NumPy
def _threadpoolctl():
    try:
        import threadpoolctl
        return threadpoolctl
    except ImportError:
        return None


class BlasThreads:
    """Sets the BLAS pool (OpenBLAS under NumPy) to n threads for the duration of a `with`."""

    def __init__(self):
        tpc = _threadpoolctl()
        self.controller = tpc.ThreadpoolController() if tpc else None
        if self.controller is not None:
            self.method = "threadpoolctl (BLAS pool limited per thread count)"
        elif os.environ.get("OPENBLAS_NUM_THREADS"):
            self.method = f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} (subprocess per thread count)"
        else:
            self.method = "none (process default; install threadpoolctl)"

    @contextlib.contextmanager
    def limit(self, n: int):
        if self.controller is None:
            yield
            return
        with self.controller.limit(limits=n, user_api="blas"):
            yield

    def info(self) -> list:
        if self.controller is None:
            return []
        return [{k: v for k, v in d.items() if k in ("internal_api", "version", "num_threads", "threading_layer",
                                                     "architecture", "filepath")}
                for d in self.controller.info()]


# ====================================================================== sgemm peak
def time_call(fn, min_time: float = 0.02, samples: int = 5) -> float:
    """Median seconds per call of fn(), from `samples` batches each lasting >= min_time."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1 << 20:
            break
        n = max(n * 2, int(n * min_time / max(dt, 1e-9) * 1.1))
    per = [dt / n]
    for _ in range(samples - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n)
    return float(np.median(per))


def sgemm_gflops(M: int, K: int, N: int, min_time: float = 0.02, samples: int = 5) -> float:
    """NumPy float32 x [M, K] @ w.T (w [N, K], the oracle's layout) in GFLOP/s."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    sec = time_call(lambda: np.matmul(x, w.T, out=out), min_time, samples)
    return 2.0 * M * K * N / sec / 1e9


def measure_sgemm(models: dict, cases, threads: int, blas: BlasThreads, peak_size: int = 2048,
                  samples: int = 5) -> dict:
    """sgemm GFLOP/s at peak_size^3 and on every model's GEMM shapes, at `threads` BLAS threads."""
    out = {"threads": threads, "square": {"size": peak_size}, "shapes": []}
    with blas.limit(threads):
        out["square"]["gflops"] = sgemm_gflops(peak_size, peak_size, peak_size, 0.1, samples)
        seen = {}
        for mname, model in models.items():
            for B, T in cases:
                parts, total_flops, total_sec = [], 0.0, 0.0
                for name, M, K, N, count in gemm_shapes(model, B, T):
                    key = (M, K, N)
                    if key not in seen:
                        seen[key] = sgemm_gflops(M, K, N, 0.02, samples)
                    g = seen[key]
                    f = 2.0 * M * K * N * count
                    total_flops += f
                    total_sec += f / (g * 1e9)
                    parts.append({"gemm": name, "M": M, "K": K, "N": N, "count": count, "gflops": g})
                out["shapes"].append({"model": mname, "batch": B, "seq": T, "gemms": parts,
                                      "layer_mix_gflops": total_flops / total_sec / 1e9})
    return out


def measure_fma_peak(threads: int, workdir: Path) -> dict:
    """The fp32 FMA peak (register-only FMAs, tools/fma_peak.c) at `threads` threads: what a GEMM
    kernel could reach at best. {"gflops": ...} or {"gflops": None, "why": ...} (no compiler, no
    AVX2/AVX-512)."""
    src = Path(__file__).resolve().parent / "fma_peak.c"
    exe = Path(workdir) / "fma_peak"
    try:
        from codegen import build
        cc = build.compiler()
        isa = build.resolve_isa(cc)
        if isa == "scalar":
            return {"gflops": None, "why": "no AVX2/AVX-512 (or the compiler cannot target it)"}
        if not exe.exists():
            arch = ["-mavx512f"] if isa == "avx512" else ["-mavx2", "-mfma"]
            omp = ["-fopenmp"] if build.openmp_supported(cc) else []
            r = subprocess.run(shlex.split(cc) + ["-O2", *omp, *arch, str(src), "-o", str(exe)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return {"gflops": None, "why": f"{cc} failed on {src.name}: {r.stderr.strip()[:300]}"}
        out = subprocess.run([str(exe), str(threads)], capture_output=True, text=True, timeout=120)
        return {"gflops": float(out.stdout.split()[0]), "isa": isa, "source": "tools/fma_peak.c"}
    except Exception as e:              # noqa: BLE001 - the peak is context, never a reason to stop
        return {"gflops": None, "why": f"{type(e).__name__}: {e}"}


def parse_lowp_peaks(text: str) -> dict:
    """tools/lowp_peak.c's output ("NAME GFLOPS" or "NAME skip: WHY" per line) ->
    {name: {"gflops": float} or {"gflops": None, "why": str}}."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name not in LOWP_PEAKS:
            continue
        if rest.startswith("skip:"):
            out[name] = {"gflops": None, "why": rest[len("skip:"):].strip()}
        else:
            try:
                out[name] = {"gflops": float(rest)}
            except ValueError:
                out[name] = {"gflops": None, "why": f"unreadable output: {line.strip()!r}"}
    return out


def measure_lowp_peaks(threads: int, workdir: Path) -> dict:
    """The bf16 and int8 peaks (register/tile-only dot products, tools/lowp_peak.c) at `threads`
    threads: {"vdpbf16ps": {"gflops": ...}, "tdpbf16ps": ..., "vpdpbusd": ..., "tdpbusd": ...},
    each {"gflops": None, "why": ...} when the compiler, the CPU or the kernel lacks it. Built
    without -m flags: each kernel has its own __attribute__((target)) and runtime CPU check."""
    src = Path(__file__).resolve().parent / "lowp_peak.c"
    exe = Path(workdir) / "lowp_peak"

    def everywhere(why):
        return {name: {"gflops": None, "why": why} for name in LOWP_PEAKS}
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return everywhere(f"not an x86-64 CPU ({platform.machine()})")
    try:
        from codegen import build
        cc = build.compiler()
        if not exe.exists():
            omp = ["-fopenmp"] if build.openmp_supported(cc) else []
            r = subprocess.run(shlex.split(cc) + ["-O2", *omp, str(src), "-o", str(exe)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return everywhere(f"{cc} failed on {src.name}: {r.stderr.strip()[:300]}")
        out = subprocess.run([str(exe), str(threads)], capture_output=True, text=True, timeout=300)
        peaks = parse_lowp_peaks(out.stdout)
        if out.returncode != 0 or set(peaks) != set(LOWP_PEAKS):
            return everywhere(f"{src.name} exited {out.returncode}: {(out.stderr or out.stdout).strip()[:300]}")
        for p in peaks.values():
            p["source"] = "tools/lowp_peak.c"
        return peaks
    except Exception as e:              # noqa: BLE001 - the peaks are context, never a reason to stop
        return everywhere(f"{type(e).__name__}: {e}")


def peak_gflops(sgemm_entry: dict, kind: str | None):
    """The measured peak `kind` ("fma" or one of LOWP_PEAKS) of one thread count's sgemm entry,
    or None when it was not measured."""
    if kind == "fma":
        return (sgemm_entry.get("fma_peak") or {}).get("gflops")
    return ((sgemm_entry.get("lowp_peaks") or {}).get(kind) or {}).get("gflops")


# ====================================================================== contenders
@dataclass
class Contender:
    """One way to run the model. `setup` once per model, `set_threads` once per thread count,
    `call` is what is timed, `logits` turns its result into [B, C] for the agreement check."""
    name: str
    info: dict = field(default_factory=dict)
    precision = "fp32"      # what its GEMMs compute in: fp32, bf16 or int8
    oracle = "fp32"         # the oracle its logits are checked against: model.with_precision(oracle)
    isa = None              # "amx" when its GEMMs are known to run on AMX tiles, else what is known

    def setup(self, model, workdir: Path, shared: dict):
        pass

    def set_threads(self, n: int):
        pass

    def prepare(self, enc: dict):
        """Per case, untimed: convert the inputs to this contender's own types."""
        self.enc = enc

    def call(self):
        raise NotImplementedError

    def logits(self, out) -> np.ndarray:
        return np.asarray(getattr(out, "logits", out))

    def observe(self, batch: int, seq: int, threads: int):
        """After a case, untimed: learn what ran (e.g. which GEMM primitives a runtime picked)."""

    def peak_kinds(self) -> tuple:
        """The instruction peaks ("fma" or LOWP_PEAKS) to set the GFLOP/s against, the first one
        measured wins: the AMX peak when the GEMMs run on AMX tiles, the vector one otherwise."""
        if self.precision == "bf16":
            return ("tdpbf16ps",) if self.isa == "amx" else ("vdpbf16ps",)
        if self.precision == "int8":        # unknown: the best int8 instruction this CPU has
            return ("tdpbusd",) if self.isa == "amx" else ("vpdpbusd",) if self.isa else ("tdpbusd", "vpdpbusd")
        return ("fma",)

    def close(self):
        pass


class NumpyOracle(Contender):
    def __init__(self, blas: BlasThreads | None = None):
        super().__init__("numpy")
        self.blas = blas or BlasThreads()
        self._limit = None

    def setup(self, model, workdir, shared):
        self.model = model
        self.info = {"numpy": np.__version__, "threads_via": self.blas.method}

    def set_threads(self, n):
        if self._limit is not None:
            self._limit.__exit__(None, None, None)
        self._limit = self.blas.limit(n)
        self._limit.__enter__()

    def call(self):
        return self.model.classify(self.enc)

    def close(self):
        if self._limit is not None:
            self._limit.__exit__(None, None, None)
            self._limit = None


class Ours(Contender):
    """The compiled C at `precision` ("fp32": `ours`; "bf16": `ours-bf16`, checked against the
    oracle's bf16 emulation)."""

    def __init__(self, precision: str = "fp32"):
        super().__init__("ours" if precision == "fp32" else f"ours-{precision}")
        self.precision = self.oracle = precision

    def setup(self, model, workdir, shared):
        try:
            import codegen
        except Exception as e:
            raise Skip(f"codegen is not importable: {type(e).__name__}: {e}") from None
        if not hasattr(codegen, "compile_model"):
            raise Skip("codegen has no compile_model yet")
        fp32 = self.precision == "fp32"
        if not fp32 and self.precision not in getattr(refexit, "PRECISIONS", ("fp32",)):
            raise Skip(f"the oracle cannot emulate {self.precision} (refexit.PRECISIONS)")
        key = "ours_cm" if fp32 else f"ours_{self.precision}_cm"
        t0 = time.perf_counter()
        try:
            if fp32:
                self.cm = shared.get(key) or codegen.compile_model(model, None, out_dir=str(workdir / "ours"))
            else:
                self.cm = shared.get(key) or codegen.compile_model(model, None, out_dir=str(workdir / self.name),
                                                                   precision=self.precision)
        except Exception as e:
            what = "" if fp32 else f"(precision={self.precision!r}) "
            raise Skip(f"codegen.compile_model {what}failed: {type(e).__name__}: {e}") from None
        built = getattr(self.cm, "precision", "fp32")
        if built != self.precision:
            raise Skip(f"codegen.compile_model(precision={self.precision!r}) built a {built} library")
        shared[key] = self.cm                # ours-c calls the same library as ours
        self.info = {"compile_s": round(time.perf_counter() - t0, 2)}
        manifest = getattr(self.cm, "manifest", None) or {}
        for key in ("tool_version", "codegen_format", "compiler", "flags", "openmp", "isa", "max_length",
                    "max_batch", "precision"):
            if key in manifest:
                self.info[key] = manifest[key]
        self.isa = getattr(self.cm, "isa", None) or self.info.get("isa")
        if not fp32:
            self.info.update(precision=self.precision, isa=self.isa,
                             oracle=f"model.with_precision({self.precision!r})")

    def set_threads(self, n):
        self.cm.set_threads(n)

    def call(self):
        return self.cm.classify(self.enc)


class OursC(Ours):
    """The same compiled library called straight through cffi (`classify_padded`, the C entry
    `CompiledModel.classify` calls) on buffers prepared once: `ours` / `ours-c` is the cost of the
    Python API."""

    def __init__(self):
        Contender.__init__(self, "ours-c")

    def prepare(self, enc):
        ids, mask, types_ = (np.ascontiguousarray(a, dtype=np.int64) for a in
                             (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
        B, T = ids.shape
        self.out = np.zeros(B, self.cm._dtype)
        self.arrays = (ids, mask, types_, np.zeros(B, np.int32))
        f = self.cm.ffi.from_buffer
        self.args = (f("int64_t[]", ids), f("int64_t[]", mask), f("int64_t[]", types_), B, T,
                     f("int32_t[]", self.arrays[3]), f(f"{self.cm.prefix}_result[]", self.out, require_writable=True))
        self.fn, self.handle = self.cm._fn.classify_padded, self.cm._handle()

    def call(self):
        if self.fn(self.handle, *self.args):
            raise RuntimeError("classify_padded failed")
        return self.out

    def logits(self, out):
        return np.ascontiguousarray(out["logits"]).reshape(len(out), -1)


# ---------------------------------------------------------------------- torch (+ the shared export)
def torch_module(model):
    """transformers BertModel (eager attention) with the model's weights + the final head's
    pooler and classifier: the same work as our full-depth run."""
    import torch
    import transformers

    c = model.config
    hf_cfg = transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    final = model.exits.heads[-1]
    if final.kind == "pooler_linear":
        pw, pb = final.params["pooler.w"], final.params["pooler.b"]
    elif final.kind == "shared_pooler":
        pw, pb = model.weights["pooler.w"], model.weights["pooler.b"]
    else:
        raise Skip(f"torch peer supports pooler heads only, not {final.kind!r}")
    H, C = c.hidden_size, final.num_labels

    class BertClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(hf_cfg, add_pooling_layer=False)
            self.pooler = torch.nn.Linear(H, H)
            self.classifier = torch.nn.Linear(H, C)

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state          # [B, T, H]
            return self.classifier(torch.tanh(self.pooler(h[:, 0])))              # [B, C]

    m = BertClassifier()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
          for k, v in synthetic.hf_names(model.weights).items() if not k.startswith("pooler.")}
    missing, unexpected = m.bert.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        m.pooler.weight.copy_(torch.from_numpy(np.asarray(pw, np.float32)))
        m.pooler.bias.copy_(torch.from_numpy(np.asarray(pb, np.float32)))
        m.classifier.weight.copy_(torch.from_numpy(np.asarray(final.params["fc.w"], np.float32)))
        m.classifier.bias.copy_(torch.from_numpy(np.asarray(final.params["fc.b"], np.float32)))
    return m.eval()


def check_hf_folder(model, workdir: Path) -> dict:
    """save_model writes an HF folder: BertModel.from_pretrained must load it with identical tensors."""
    import torch
    import transformers
    folder = synthetic.save_model(model, workdir / "hf", with_exits=True)
    hf = transformers.BertModel.from_pretrained(str(folder), attn_implementation="eager")
    sd = hf.state_dict()
    ours = synthetic.hf_names(model.weights)
    missing = sorted(set(ours) - set(sd))
    diff = max(float(torch.max(torch.abs(sd[k] - torch.from_numpy(np.asarray(v, np.float32)))))
               for k, v in ours.items() if k in sd)
    out = {"folder_loads": True, "tensors": len(ours), "missing": missing, "max_abs_weight_diff": diff}
    del hf
    return out


class TorchEager(Contender):
    def __init__(self):
        super().__init__("torch")

    def setup(self, model, workdir, shared):
        try:
            import torch
            import transformers
        except ImportError as e:
            raise Skip(f"not installed: {e.name}") from None
        self.torch = torch
        self.module = shared.get("torch_module") or torch_module(model)
        shared["torch_module"] = self.module
        self.info = {"torch": torch.__version__, "transformers": transformers.__version__,
                     "attn_implementation": self.module.bert.config._attn_implementation}

    def set_threads(self, n):
        self.torch.set_num_threads(n)

    def prepare(self, enc):
        self.args = [self.torch.from_numpy(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]

    def call(self):
        with self.torch.inference_mode():
            return self.module(*self.args)

    def logits(self, out):
        return out.detach().numpy()


INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def export_onnx(model, workdir: Path, shared: dict) -> Path:
    """Export the torch module once (opset 17, dynamic batch and sequence); cached in `shared`."""
    if "onnx_path" in shared:
        return shared["onnx_path"]
    if "onnx_error" in shared:
        raise Skip(shared["onnx_error"])
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        shared["onnx_error"] = f"the ONNX export needs {e.name}"
        raise Skip(shared["onnx_error"]) from None
    module = shared.get("torch_module") or torch_module(model)
    shared["torch_module"] = module
    path = workdir / "model.onnx"
    enc = make_input(model, 2, 8)
    args = tuple(torch.from_numpy(enc[k]) for k in INPUT_NAMES)
    axes = {k: {0: "batch", 1: "seq"} for k in INPUT_NAMES}
    axes["logits"] = {0: "batch"}
    errors = []
    # The TorchScript exporter (dynamo=False) needs nothing beyond torch; the dynamo exporter
    # needs onnxscript. Try the first, fall back to the second.
    for dynamo in (False, True):
        try:
            with warnings_quiet():
                if dynamo:
                    b, s = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.config.max_position_embeddings)
                    torch.onnx.export(module, args, str(path), input_names=INPUT_NAMES, output_names=["logits"],
                                      opset_version=17, dynamo=True, external_data=False,
                                      dynamic_shapes={k: {0: b, 1: s} for k in INPUT_NAMES})
                else:
                    torch.onnx.export(module, args, str(path), input_names=INPUT_NAMES, output_names=["logits"],
                                      opset_version=17, dynamo=False, dynamic_axes=axes,
                                      do_constant_folding=True)
            shared["onnx_path"] = path
            shared["onnx_exporter"] = "dynamo" if dynamo else "torchscript"
            return path
        except Exception as e:
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(e).__name__}: {e}")
    shared["onnx_error"] = "ONNX export failed: " + " | ".join(errors)
    raise Skip(shared["onnx_error"])


@contextlib.contextmanager
def warnings_quiet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class OnnxRuntime(Contender):
    """ORT on the exported graph; with bert_fusion=True, first through ORT's own offline BERT
    optimizer (onnxruntime.transformers.optimizer, model_type="bert"), which fuses
    EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu: what a user chasing
    speed would run. ORT_ENABLE_ALL alone does not fuse attention on this export."""

    def __init__(self, bert_fusion: bool = False, int8: bool = False):
        super().__init__("onnxruntime-bertopt" if bert_fusion else "onnxruntime-int8" if int8 else "onnxruntime")
        self.bert_fusion = bert_fusion
        self.int8 = int8
        if int8:
            self.precision = "int8"
        self.sessions = {}

    def setup(self, model, workdir, shared):
        try:
            import onnxruntime
        except ImportError as e:
            raise Skip(f"not installed: {e.name}") from None
        self.ort = onnxruntime
        self.workdir = workdir
        self.path = export_onnx(model, workdir, shared)
        self.info = {"onnxruntime": onnxruntime.__version__, "exporter": shared.get("onnx_exporter"),
                     "opset": 17, "graph_optimization_level": "ORT_ENABLE_ALL", "inter_op_num_threads": 1}
        if self.bert_fusion:
            from onnxruntime.transformers import optimizer
            c = model.config
            with warnings_quiet():
                opt = optimizer.optimize_model(str(self.path), model_type="bert", num_heads=c.num_attention_heads,
                                               hidden_size=c.hidden_size, opt_level=0)
            self.path = workdir / "model_bertopt.onnx"
            opt.save_model_to_file(str(self.path))
            self.info["offline_optimizer"] = "onnxruntime.transformers.optimizer (model_type=bert)"
            self.info["fused"] = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        if self.int8:
            # what a user gets from the documented one-liner: int8 weights (per tensor, symmetric),
            # activations quantized at run time (DynamicQuantizeLinear / MatMulInteger)
            from onnxruntime.quantization import QuantType, quantize_dynamic
            path = workdir / "model_int8.onnx"
            with warnings_quiet():
                quantize_dynamic(str(self.path), str(path), weight_type=QuantType.QInt8)
            self.path = path
            self.info["quantization"] = "onnxruntime.quantization.quantize_dynamic(weight_type=QuantType.QInt8)"

    def _session(self, n):
        ort = self.ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        first = not self.sessions
        if first:                       # once: keep the optimized graph to report what ORT ran
            so.log_severity_level = 3   # (its warning that the dump is machine-specific is expected)
            so.optimized_model_filepath = str(self.workdir / f"{self.name}_optimized.onnx")
        sess = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        if first:
            self.info["session_ops"] = _onnx_op_counts(self.workdir / f"{self.name}_optimized.onnx")
        return sess

    def set_threads(self, n):
        if n not in self.sessions:
            self.sessions[n] = self._session(n)
        self.sess = self.sessions[n]

    def prepare(self, enc):
        self.feed = {k: enc[k] for k in INPUT_NAMES}

    def call(self):
        return self.sess.run(None, self.feed)[0]


def _onnx_op_counts(path: Path) -> dict:
    try:
        import onnx
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    counts = {}
    for node in g.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class OpenVino(Contender):
    """OpenVINO on the exported ONNX file: hint "f32" (`openvino-f32`), None (`openvino-default`:
    bf16 where the CPU has it), or int8=True (`openvino-int8`: quantized by NNCF first)."""

    def __init__(self, hint: str | None, int8: bool = False):
        super().__init__("openvino-int8" if int8 else "openvino-f32" if hint == "f32" else "openvino-default")
        self.hint = hint
        self.int8 = int8
        if int8:
            self.precision = "int8"
        self.compiled = {}

    def setup(self, model, workdir, shared):
        try:
            import openvino
        except ImportError as e:
            raise Skip(f"not installed: {e.name}") from None
        self.ov = openvino
        path = export_onnx(model, workdir, shared)
        self.core = shared.get("ov_core") or openvino.Core()
        shared["ov_core"] = self.core
        self.ov_model = shared.get("ov_model") or self.core.read_model(str(path))
        shared["ov_model"] = self.ov_model
        self.info = {"openvino": openvino.__version__, "exporter": shared.get("onnx_exporter"),
                     "precision_hint": self.hint or "default"}
        if self.int8:
            self.ov_model = self.quantize(model, self.core.read_model(str(path)))

    def quantize(self, model, ov_model):
        """nncf.quantize (post-training int8, OpenVINO's documented path for BERT), calibrated on
        random inputs like the benchmark's but with other seeds and lengths."""
        try:
            import nncf
        except ImportError as e:
            raise Skip(f"not installed: {e.name} (pip install nncf)") from None
        top = model.config.max_position_embeddings
        calib = [make_input(model, 1, min(t, top), seed=100 + i)
                 for i, t in enumerate((8, 16, 32, 48, 64, 96, 128, 128))]
        with warnings_quiet(), contextlib.redirect_stdout(io.StringIO()):    # its progress bars
            q = nncf.quantize(ov_model, nncf.Dataset(calib, lambda e: {k: e[k] for k in INPUT_NAMES}),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib))
        self.info.update(nncf=nncf.__version__, quantization="nncf.quantize(model_type=TRANSFORMER), "
                         f"{len(calib)} random calibration inputs of 8-128 tokens")
        return q

    def set_threads(self, n):
        if n not in self.compiled:
            cfg = {"INFERENCE_NUM_THREADS": n}
            if self.hint:
                cfg["INFERENCE_PRECISION_HINT"] = self.hint
            cm = self.core.compile_model(self.ov_model, "CPU", cfg)
            for prop in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"):
                with contextlib.suppress(Exception):
                    v = cm.get_property(prop)
                    v = v.get_type_name() if hasattr(v, "get_type_name") else str(v)
                    self.info.setdefault("effective", {}).setdefault(str(n), {})[prop] = v
            self.compiled[n] = (cm, cm.create_infer_request())
        if not self.int8:                   # what the default hint resolved to on this CPU
            hint = self.info.get("effective", {}).get(str(n), {}).get("INFERENCE_PRECISION_HINT", "")
            self.precision = "bf16" if "bf16" in hint.lower() else "fp32"
        self.cm, self.request = self.compiled[n]

    def observe(self, batch, seq, threads):
        """The primitives OpenVINO's CPU plugin picked for the model's matrix products in this case
        (e.g. brgemm_avx512_amx_bf16): known only after an inference, shapes being dynamic."""
        kinds = {}
        for op in self.cm.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and rt["layerType"].astype(str) in ("FullyConnected", "MatMul"):
                prim = rt["primitiveType"].astype(str)
                kinds[prim] = kinds.get(prim, 0) + 1
        self.info.setdefault("gemm_primitives", {})[f"{threads}thr {batch}x{seq}"] = kinds
        if kinds:
            self.isa = "amx" if any("amx" in k for k in kinds) else "vector"

    def prepare(self, enc):
        self.feed = {k: enc[k] for k in INPUT_NAMES}

    def call(self):
        return self.request.infer(self.feed)

    def logits(self, out):
        return np.array(out[0])


def make_contender(name: str, blas: BlasThreads) -> Contender:
    return {"ours": Ours, "ours-c": OursC, "numpy": lambda: NumpyOracle(blas), "torch": TorchEager,
            "onnxruntime": OnnxRuntime, "onnxruntime-bertopt": lambda: OnnxRuntime(bert_fusion=True),
            "openvino-f32": lambda: OpenVino("f32"),
            "openvino-default": lambda: OpenVino(None),
            "ours-bf16": lambda: Ours("bf16"), "ours-int8": lambda: Ours("int8"), "onnxruntime-int8": lambda: OnnxRuntime(int8=True),
            "openvino-int8": lambda: OpenVino(None, int8=True)}[name]()


# ====================================================================== measurement
def setup_contenders(model, contenders: list[Contender], workdir: Path, log=print) -> tuple[list, dict]:
    """Set each contender up; returns (ready contenders, {name: {available, why|info}})."""
    shared, ready, status = {}, [], {}
    for c in contenders:
        t0 = time.perf_counter()
        try:
            c.setup(model, workdir, shared)
        except Skip as e:
            log(f"  skip {c.name}: {e}")
            status[c.name] = {"available": False, "why": str(e)}
            continue
        except Exception as e:
            log(f"  skip {c.name}: setup failed: {type(e).__name__}: {e}")
            status[c.name] = {"available": False, "why": f"setup failed: {type(e).__name__}: {e}",
                              "traceback": traceback.format_exc(limit=4)}
            continue
        status[c.name] = {"available": True, "setup_s": round(time.perf_counter() - t0, 2), **c.info}
        ready.append(c)
    return ready, status


def percentiles(times_ms: list[float]) -> dict:
    p10, p50, p90 = np.percentile(np.asarray(times_ms, np.float64), [10, 50, 90])
    return {"median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90)}


def oracle_logits(model, enc: dict, precisions, oracles: dict | None = None) -> dict:
    """{precision: [B, C] float64 logits of the oracle emulating it, or the exception}; `oracles`
    caches the emulating models (precision -> refexit.Model) across cases."""
    oracles = {} if oracles is None else oracles
    out = {}
    for p in precisions:
        try:
            if p not in oracles:
                oracles[p] = model if p == "fp32" else model.with_precision(p)
            out[p] = np.asarray(oracles[p].classify(enc).logits, np.float64)
        except Exception as e:
            out[p] = e
    return out


def measure_case(model, contenders: list[Contender], batch: int, seq: int, reps: int, warmup: int,
                 gap_ms: float = 0.0, reference=None, oracles: dict | None = None) -> dict:
    """Time every contender on one input, interleaved: rep r calls contenders[r % k:] + [:r % k].
    Returns {name: {"times_ms": [...], "median_ms", "p10_ms", "p90_ms", "max_abs_diff", "oracle"}};
    a contender whose first (untimed) call raises gets {"error": ...} instead and is left out.
    max_abs_diff is against the oracle at the contender's `oracle` precision (`reference`: the fp32
    logits, if already known; `oracles`: see oracle_logits)."""
    enc = make_input(model, batch, seq)
    wanted = sorted({"fp32"} | {c.oracle for c in contenders})
    references = oracle_logits(model, enc, [p for p in wanted if p != "fp32" or reference is None], oracles)
    if reference is not None:
        references["fp32"] = np.asarray(reference, np.float64)
    if isinstance(references["fp32"], Exception):
        raise references["fp32"]
    failed = {}
    for c in list(contenders):
        ref = references[c.oracle]
        if isinstance(ref, Exception):
            failed[c.name] = {"error": f"the {c.oracle} oracle failed: {type(ref).__name__}: {ref}"}
            continue
        try:
            c.prepare(enc)
            c.call()
        except Exception as e:
            failed[c.name] = {"error": f"{type(e).__name__}: {e}"}
    contenders = [c for c in contenders if c.name not in failed]
    out = {c.name: {"times_ms": [], "oracle": c.oracle} for c in contenders}
    k = len(contenders)
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + reps):
            order = contenders[r % k:] + contenders[:r % k] if k else []
            for c in order:
                if gap_ms:
                    time.sleep(gap_ms / 1000)      # lets other runtimes' spinning workers go idle
                t0 = time.perf_counter_ns()
                res = c.call()
                dt = (time.perf_counter_ns() - t0) / 1e6
                if r >= warmup:
                    out[c.name]["times_ms"].append(dt)
                if r == warmup + reps - 1:
                    z, ref = np.asarray(c.logits(res), np.float64), references[c.oracle]
                    out[c.name]["max_abs_diff"] = (float(np.max(np.abs(z - ref)))
                                                   if z.shape == ref.shape else None)
    finally:
        if gc_was:
            gc.enable()
    for name, d in out.items():
        d.update(percentiles(d["times_ms"]))
    return {**out, **failed}


def run_bench(models: dict, cases, threads: list[int], contender_names=None, contenders_by_model=None,
              reps: int = 20, warmup: int = 3, gap_ms: float = 100.0, peak_size: int = 2048,
              sgemm_samples: int = 5, baseline: str = "ours", workdir: Path | None = None,
              blas: BlasThreads | None = None, fma_peak: bool = True, log=print) -> dict:
    """Measure everything; returns the results document (see write_json / the JSON format in docs).

    models: name -> refexit.Model. contender_names: which of CONTENDERS to build, or
    contenders_by_model: name -> [Contender] (tests pass their own)."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    blas = blas or BlasThreads()
    cases = [tuple(c) for c in cases]
    load = os.getloadavg()
    if load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f} before the run: other processes share the "
            f"{os.cpu_count()} cores, timings will be noisy")
    doc = {"format": JSON_FORMAT, "tool": "tools/bench.py", "machine": machine_info(blas),
           "settings": {"models": list(models), "cases": [f"{b}x{t}" for b, t in cases], "threads": threads,
                        "reps": reps, "warmup": warmup, "gap_ms": gap_ms, "peak_size": peak_size,
                        "baseline": baseline, "numpy_threads_via": blas.method,
                        "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS",
                                                               "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
                        "order": "interleaved round robin, starting contender rotating per repetition",
                        "loadavg_before": list(load)},
           "models": {}, "contenders": {}, "sgemm": [], "results": [], "ratios": [], "failures": []}
    for name, m in models.items():
        c = m.config
        doc["models"][name] = {"layers": c.num_hidden_layers, "hidden": c.hidden_size,
                               "heads": c.num_attention_heads, "intermediate": c.intermediate_size,
                               "vocab": c.vocab_size, "labels": m.num_labels, "final_head": m.exits.heads[-1].kind}
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="refexit-bench-")
        workdir = Path(tmp.name)
    Path(workdir).mkdir(parents=True, exist_ok=True)        # --workdir may name a folder not made yet
    for n in threads:
        log(f"sgemm peak at {n} thread(s) ...")
        doc["sgemm"].append(measure_sgemm(models, cases, n, blas, peak_size, sgemm_samples))
        if fma_peak:
            doc["sgemm"][-1]["fma_peak"] = measure_fma_peak(n, Path(workdir))
            log(f"bf16 / int8 peaks at {n} thread(s) ...")
            doc["sgemm"][-1]["lowp_peaks"] = measure_lowp_peaks(n, Path(workdir))
    sgemm = {s["threads"]: s for s in doc["sgemm"]}
    try:
        for mname, model in models.items():
            log(f"{mname}: setting up contenders ...")
            mdir = Path(workdir) / mname
            mdir.mkdir(parents=True, exist_ok=True)
            if contenders_by_model is not None:
                wanted = contenders_by_model[mname]
            else:
                wanted = [make_contender(n, blas) for n in contender_names or CONTENDERS]
            ready, status = setup_contenders(model, wanted, mdir, log)
            doc["contenders"][mname] = status
            if any(c.name == "torch" or c.name.startswith(("onnx", "openvino")) for c in ready):
                with contextlib.suppress(Exception):
                    doc["models"][mname]["hf_folder_check"] = check_hf_folder(model, mdir)
            oracles = {"fp32": model}               # the oracle per precision, emulated once per model
            by_name = {c.name: c for c in ready}
            try:
                for n in threads:
                    for c in ready:
                        c.set_threads(n)
                    for B, T in cases:
                        log(f"{mname} {B}x{T} threads={n}: {reps} reps x {len(ready)} contenders ...")
                        res = measure_case(model, ready, B, T, reps, warmup, gap_ms, oracles=oracles)
                        for cname in [k for k, d in res.items() if "error" in d]:
                            log(f"  {cname} failed on {B}x{T}: {res[cname]['error']}")
                            doc["failures"].append({"model": mname, "batch": B, "seq": T, "threads": n,
                                                    "contender": cname, "error": res.pop(cname)["error"]})
                        flops = case_flops(model, B, T)
                        shape = next(s for s in sgemm[n]["shapes"] if s["model"] == mname
                                     and (s["batch"], s["seq"]) == (B, T))
                        for cname, d in res.items():
                            c = by_name[cname]
                            with contextlib.suppress(Exception):
                                c.observe(B, T, n)
                            g = flops / (d["median_ms"] / 1e3) / 1e9
                            peak = next((k for k in c.peak_kinds() if peak_gflops(sgemm[n], k)), None)
                            doc["results"].append({
                                "model": mname, "batch": B, "seq": T, "threads": n, "contender": cname,
                                **{k: d[k] for k in ("median_ms", "p10_ms", "p90_ms")},
                                "flops": flops, "gflops": g,
                                "pct_sgemm_square": 100 * g / sgemm[n]["square"]["gflops"],
                                "pct_sgemm_model_shapes": 100 * g / shape["layer_mix_gflops"],
                                "max_abs_diff_vs_oracle": d.get("max_abs_diff"),
                                "oracle": d["oracle"], "precision": c.precision, "peak": peak,
                                "pct_peak": 100 * g / peak_gflops(sgemm[n], peak) if peak else None,
                                "times_ms": d["times_ms"]})
                        doc["ratios"] += ratios_for(res, baseline, mname, B, T, n)
            finally:
                for c in ready:
                    status[c.name].update(c.info)      # what set_threads learned (sessions, precisions)
                    c.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    doc["settings"]["loadavg_after"] = list(os.getloadavg())
    return doc


def ratios_for(res: dict, baseline: str, model: str, batch: int, seq: int, threads: int) -> list[dict]:
    """baseline median / each other contender's median (< 1: the baseline is faster)."""
    if baseline not in res:
        return []
    b = res[baseline]["median_ms"]
    return [{"model": model, "batch": batch, "seq": seq, "threads": threads, "baseline": baseline,
             "peer": name, "ratio": b / d["median_ms"]}
            for name, d in res.items() if name != baseline]


# ====================================================================== machine info
def machine_info(blas: BlasThreads | None = None) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "nproc": os.cpu_count(),
            "numpy": np.__version__, "refexit": refexit.__version__}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        flags = set(fields.get("Flags", "").split())
        info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                                                 "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                                                 "amx_int8")}
        for k in ("Thread(s) per core", "Core(s) per socket", "L2 cache", "L3 cache"):
            if k in fields:
                info[k.lower().replace("(s)", "s").replace(" ", "_")] = fields[k].strip()
    except Exception as e:
        info["cpu"] = f"lscpu failed: {e}"
    with contextlib.suppress(Exception):
        cfg = np.show_config(mode="dicts")
        info["blas"] = cfg.get("Build Dependencies", {}).get("blas", {})
        info["simd"] = cfg.get("SIMD Extensions", {})
    sched = {"nice": os.getpriority(os.PRIO_PROCESS, 0)} if hasattr(os, "getpriority") else {}
    with contextlib.suppress(AttributeError, OSError):
        pol = os.sched_getscheduler(0)
        names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
                 if hasattr(os, n)}
        sched["policy"] = names.get(pol, str(pol))
        sched["rt_priority"] = os.sched_getparam(0).sched_priority
    with contextlib.suppress(OSError):
        sched["autogroup"] = Path("/proc/self/autogroup").read_text().strip()   # Linux: "/autogroup-N nice K"
    info["scheduling"] = sched
    if blas is not None:
        info["blas_runtime"] = blas.info()
    peers = {}
    from importlib import metadata
    for p in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "onnxscript", "nncf", "threadpoolctl"):
        try:
            peers[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            peers[p] = None
    info["packages"] = peers
    return info


# ====================================================================== report
def format_table(doc: dict) -> str:
    lines = []
    base = doc["settings"]["baseline"]
    lines.append("sgemm (NumPy/OpenBLAS fp32, x @ w.T), GFLOP/s:")
    for s in doc["sgemm"]:
        fma = s.get("fma_peak") or {}
        peak = (f"; fp32 FMA peak (registers only, tools/fma_peak.c) {fma['gflops']:.1f}" if fma.get("gflops")
                else f"; FMA peak not measured ({fma['why']})" if fma.get("why") else "")
        lines.append(f"  threads={s['threads']}: {s['square']['size']}^3 {s['square']['gflops']:.1f}{peak}")
        if s.get("lowp_peaks"):
            lines.append("    bf16 / int8 peaks (registers or AMX tiles only, tools/lowp_peak.c, 2 per multiply-add): "
                         + ", ".join(f"{k} ({LOWP_PEAK_NAMES[k]}) " + (f"{p['gflops']:.1f}" if p.get("gflops")
                                                                       else f"skipped: {p.get('why')}")
                                     for k, p in s["lowp_peaks"].items()))
        for sh in s["shapes"]:
            parts = ", ".join(f"{g['gemm']} {g['M']}x{g['K']}x{g['N']} {g['gflops']:.1f}" for g in sh["gemms"])
            lines.append(f"    {sh['model']} {sh['batch']}x{sh['seq']}: layer mix {sh['layer_mix_gflops']:.1f} ({parts})")
    for mname, st in doc["contenders"].items():
        for cname, s in st.items():
            if not s.get("available"):
                lines.append(f"{mname}: {cname} skipped: {s.get('why')}")
    for f in doc.get("failures", []):
        lines.append(f"{f['model']} {f['batch']}x{f['seq']} threads={f['threads']}: {f['contender']} failed: {f['error']}")
    ratio = {(r["model"], r["batch"], r["seq"], r["threads"], r["peer"]): r["ratio"] for r in doc["ratios"]}
    head = (f"{'model':<11} {'case':>6} {'thr':>3}  {'contender':<20} {'median ms':>10} {'p10':>9} {'p90':>9} "
            f"{'GFLOP/s':>8} {'%sq':>5} {'%shape':>6} {'%peak':>16} {base + '/x':>8} {'max|dz|':>8} {'oracle':>6}")
    lines += ["", head, "-" * len(head)]
    prev = None
    for r in doc["results"]:
        key = (r["model"], r["batch"], r["seq"], r["threads"])
        if prev is not None and key != prev:
            lines.append("")
        prev = key
        rt = ratio.get(key + (r["contender"],))
        rts = f"{rt:.2f}" if rt is not None else ("1.00" if r["contender"] == base else "-")
        dz = r.get("max_abs_diff_vs_oracle")
        pk = f"{r['pct_peak']:.0f}% {r['peak']}" if r.get("pct_peak") is not None else "-"
        lines.append(f"{r['model']:<11} {str(r['batch']) + 'x' + str(r['seq']):>6} {r['threads']:>3}  "
                     f"{r['contender']:<20} {r['median_ms']:>10.2f} {r['p10_ms']:>9.2f} {r['p90_ms']:>9.2f} "
                     f"{r['gflops']:>8.1f} {r['pct_sgemm_square']:>5.0f} {r['pct_sgemm_model_shapes']:>6.0f} "
                     f"{pk:>16} {rts:>8} {('%.1e' % dz) if dz is not None else '-':>8} {r.get('oracle', 'fp32'):>6}")
    bf16 = bf16_ratios(doc)
    if bf16:
        lines += ["", "bf16: ours-bf16 / openvino-default (medians; < 1: ours-bf16 faster):"]
        lines += [f"  {m} {b}x{t} threads={n}: {q:.2f}" for (m, n, b, t), q in bf16.items()]
    lines.append("")
    lines.append(f"%sq / %shape: achieved GFLOP/s as % of sgemm at {doc['settings']['peak_size']}^3 / on the "
                 f"model's own GEMM shapes, same thread count. %peak: of the row's own instruction peak (fma: "
                 f"fp32 FMA; {', '.join(f'{k}: {v}' for k, v in LOWP_PEAK_NAMES.items())}). {base}/x: median "
                 f"ratio (< 1: {base} faster). max|dz|: largest logit difference from the NumPy oracle; oracle: "
                 f"which one (bf16 / int8: ours against the oracle's emulation of that precision, "
                 f"model.with_precision(p); the peers' int8 and bf16 rows against fp32).")
    return "\n".join(lines)


def bf16_ratios(doc: dict) -> dict:
    """{(model, threads, batch, seq): ours-bf16 median / openvino-default median} for the cases
    where both ran (< 1: ours-bf16 faster)."""
    med = {(r["model"], r["threads"], r["batch"], r["seq"], r["contender"]): r["median_ms"] for r in doc["results"]}
    return {k[:4]: v / med[k[:4] + ("openvino-default",)] for k, v in med.items()
            if k[4] == "ours-bf16" and k[:4] + ("openvino-default",) in med}


def write_json(doc: dict, path: str | Path):
    Path(path).write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ====================================================================== command line
def parse_cases(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            b, t = part.lower().split("x")
            out.append((int(b), int(t)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"case {part!r} is not BATCHxSEQ (e.g. 1x128)") from None
    return out


def parse_list(kind):
    def parse(text):
        items = [kind(v) for v in text.split(",") if v]
        return items
    return parse


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--models", type=parse_list(str), default=None,
                   help=f"shapes to run, comma-separated from {', '.join(SHAPES)} (default: bert-base,minilm-l12)")
    p.add_argument("--cases", type=parse_cases, default=None,
                   help="BATCHxSEQ list (default: 1x16,1x64,1x128,1x512,8x128)")
    p.add_argument("--threads", type=parse_list(int), default=None, help="thread counts (default: 1,2)")
    p.add_argument("--contenders", type=parse_list(str), default=None,
                   help=f"subset of {','.join(CONTENDERS)} (default: all; missing peers are skipped)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per case (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repetitions first (default 3)")
    p.add_argument("--gap-ms", type=float, default=100.0,
                   help="sleep before each timed call so other runtimes' spinning threads idle (default 100: "
                        "ONNX Runtime's workers spin ~40 ms after a call)")
    p.add_argument("--peak-size", type=int, default=None, help="square sgemm size for the peak (default 2048)")
    p.add_argument("--baseline", default="ours",
                   help="contender the ratios are taken against (default ours; numpy when ours is unavailable)")
    p.add_argument("--seed", type=int, default=0, help="weights seed")
    p.add_argument("--scale", type=float, default=0.5, help="weights scale (random_model)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the results as JSON to PATH (a file of yours; a file tracked by git is "
                        "never overwritten). Default: print the table only")
    p.add_argument("--workdir", default=None, help="keep compiled/exported models here (default: a temp dir)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: minilm-l12, 1x16, threads 1, 3 reps, 1 warm-up, 512^3 peak")
    p.add_argument("--summary", metavar="JSON", default=None,
                   help="print the markdown summary tables of an earlier run's JSON, and measure nothing")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)


def resolve(args) -> argparse.Namespace:
    q = args.quick
    args.models = args.models or (["minilm-l12"] if q else DEFAULT_MODELS)
    args.cases = args.cases or ([(1, 16)] if q else DEFAULT_CASES)
    args.threads = args.threads or ([1] if q else DEFAULT_THREADS)
    args.contenders = args.contenders or CONTENDERS
    args.reps = args.reps if args.reps is not None else (3 if q else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    args.peak_size = args.peak_size or (512 if q else 2048)
    for m in args.models:
        if m not in SHAPES:
            raise SystemExit(f"bench: unknown model shape {m!r} (known: {', '.join(SHAPES)})")
    for c in args.contenders:
        if c not in CONTENDERS:
            raise SystemExit(f"bench: unknown contender {c!r} (known: {', '.join(CONTENDERS)})")
    return args


# OpenBLAS workers busy-wait ~2^28 cycles (~0.1 s) after each call before they sleep: interleaved,
# they would take a core from whichever runtime runs after the NumPy oracle (measured: PyTorch at
# 2 threads 10-100x slower right after it). 2^4 cycles makes them sleep at once; this changes only
# the oracle, and OpenBLAS reads it when it loads, hence the child process.
CHILD_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def _child_argv(args, threads: list[int], json_path: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--_child",
            "--models", ",".join(args.models), "--cases", ",".join(f"{b}x{t}" for b, t in args.cases),
            "--threads", ",".join(map(str, threads)), "--contenders", ",".join(args.contenders),
            "--reps", str(args.reps), "--warmup", str(args.warmup), "--gap-ms", str(args.gap_ms),
            "--peak-size", str(args.peak_size), "--baseline", args.baseline, "--seed", str(args.seed),
            "--scale", str(args.scale), "--json", json_path]
    if args.workdir:
        argv += ["--workdir", str(Path(args.workdir) / ("threads" + "-".join(map(str, threads))))]
    return argv


def merge(docs: list[dict]) -> dict:
    out = dict(docs[0])
    out["settings"] = dict(out["settings"], threads=[t for d in docs for t in d["settings"]["threads"]])
    for k in ("sgemm", "results", "ratios", "failures"):
        out[k] = [x for d in docs for x in d[k]]
    return out


FP32_PEERS = ("torch", "onnxruntime", "onnxruntime-bertopt", "openvino-f32")
LOWP_CONTENDERS = ("ours-bf16", "ours-int8", "openvino-default", "onnxruntime-int8", "openvino-int8")
BF16_ROWS = ("ours-bf16", "openvino-default")


def markdown_summary(doc: dict) -> str:
    """Per model and thread count: a row per case with every contender's median ms, ours / the best
    fp32 peer, and ours as a share of the fp32 FMA peak (model FLOPs; docs/benchmarks.md). When
    bf16 / int8 contenders ran, a second table: their medians, ours-bf16 / openvino-default, and
    each bf16 row's share of its own bf16 peak (the row's `pct_peak`: AMX or AVX512-BF16)."""
    rows = {(r["model"], r["threads"], r["batch"], r["seq"], r["contender"]): r for r in doc["results"]}
    names = [c for c in ("ours", "numpy", *FP32_PEERS, "openvino-default")
             if any(k[4] == c for k in rows)]
    peaks = {s["threads"]: (s.get("fma_peak") or {}).get("gflops") for s in doc["sgemm"]}
    out = []
    for model in doc["settings"]["models"]:
        for n in doc["settings"]["threads"]:
            cases = [(b, t) for b, t in (map(int, c.split("x")) for c in doc["settings"]["cases"])
                     if (model, n, b, t, "ours") in rows]
            if not cases:
                continue
            out.append(f"**{model}, {n} thread{'s' if n > 1 else ''}** (median ms)\n")
            head = ["case", *[c.replace("openvino-default", "openvino bf16") for c in names],
                    "ours / best fp32 peer", "ours, % of FMA peak"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" + "---:|" * (len(head) - 1))
            for b, t in cases:
                cells, ours = [f"{b}x{t}"], rows[(model, n, b, t, "ours")]
                for c in names:
                    r = rows.get((model, n, b, t, c))
                    cells.append(f"{r['median_ms']:.1f}" if r else "-")
                peers = [rows[(model, n, b, t, c)] for c in FP32_PEERS if (model, n, b, t, c) in rows]
                best = min(peers, key=lambda r: r["median_ms"]) if peers else None
                cells.append(f"{ours['median_ms'] / best['median_ms']:.2f} ({best['contender']})" if best else "-")
                cells.append(f"{100 * ours['gflops'] / peaks[n]:.0f}%" if peaks.get(n) else "-")
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    for model in doc["settings"]["models"]:
        for n in doc["settings"]["threads"]:
            out += _lowp_table(doc, rows, model, n)
    return "\n".join(out)


def _lowp_table(doc: dict, rows: dict, model: str, n: int) -> list[str]:
    """The bf16 / int8 table of one model and thread count (empty when none of them ran)."""
    names = [c for c in LOWP_CONTENDERS if any(k[:2] == (model, n) and k[4] == c for k in rows)]
    cases = [(b, t) for b, t in (map(int, c.split("x")) for c in doc["settings"]["cases"])
             if any((model, n, b, t, c) in rows for c in names)]
    if not cases:
        return []
    both = all(c in names for c in BF16_ROWS)
    label = {"openvino-default": "openvino bf16"}
    head = ["case", *[label.get(c, c) for c in names]]
    head += ["ours-bf16 / openvino bf16"] if both else []
    int8_ratios = [(c, label.get(c, c)) for c in ("openvino-default", "onnxruntime-int8")
                   if "ours-int8" in names and c in names]
    head += [f"ours-int8 / {lab}" for _, lab in int8_ratios]
    head += [f"{label.get(c, c)}, % of bf16 peak" for c in BF16_ROWS if c in names]
    out = [f"**{model}, {n} thread{'s' if n > 1 else ''}, bf16 / int8** (median ms)\n",
           "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for b, t in cases:
        got = {c: rows.get((model, n, b, t, c)) for c in names}
        cells = [f"{b}x{t}"] + [f"{r['median_ms']:.1f}" if r else "-" for r in got.values()]
        if both:
            ours, ov = got["ours-bf16"], got["openvino-default"]
            cells.append(f"{ours['median_ms'] / ov['median_ms']:.2f}" if ours and ov else "-")
        for c, _ in int8_ratios:
            q, peer = got["ours-int8"], got[c]
            cells.append(f"{q['median_ms'] / peer['median_ms']:.2f}" if q and peer else "-")
        for c in BF16_ROWS:
            if c in names:
                r = got[c]
                ok = r and r.get("pct_peak") is not None
                cells.append(f"{r['pct_peak']:.0f}% ({r['peak']})" if ok else "-")
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def run(args) -> int:
    """Parent: run the measurement in child process(es) with CHILD_ENV (one child, or one per thread
    count with OPENBLAS_NUM_THREADS=n when threadpoolctl is missing), merge, print, write JSON."""
    if args.summary:
        print(markdown_summary(json.loads(Path(args.summary).read_text())))
        return 0
    args = resolve(args)
    if args._child:
        return _measure(args)
    if args.json:
        refuse_tracked(args.json)
    per_thread = _threadpoolctl() is None and "numpy" in args.contenders
    if per_thread:
        print("threadpoolctl not installed: one subprocess per thread count (OPENBLAS_NUM_THREADS=n)")
    groups = [[n] for n in args.threads] if per_thread else [args.threads]
    docs = []
    with tempfile.TemporaryDirectory(prefix="refexit-bench-") as tmp:
        for threads in groups:
            path = str(Path(tmp) / f"threads{'-'.join(map(str, threads))}.json")
            env = dict(os.environ)
            for k, v in CHILD_ENV.items():
                env.setdefault(k, v)
            if per_thread:
                env["OPENBLAS_NUM_THREADS"] = str(threads[0])
            rc = subprocess.run(_child_argv(args, threads, path), env=env).returncode
            if rc != 0:
                print(f"bench: the measurement at {threads} thread(s) failed (exit {rc})", file=sys.stderr)
                return rc or 1
            docs.append(json.loads(Path(path).read_text()))
    doc = merge(docs)
    doc["command"] = shlex.join([Path(sys.executable).name] + sys.argv)
    print()
    print(format_table(doc))
    if args.json:
        write_json(doc, args.json)
        print(f"\nwrote {args.json}")
    else:
        print("\n(results not saved: pass --json PATH to keep them)")
    return 0


def refuse_tracked(path) -> None:
    """A results file must be the user's own: refuse a path git tracks (a run would modify the
    checkout), before anything is measured."""
    p = Path(path).resolve()
    try:
        r = subprocess.run(["git", "ls-files", "--error-unmatch", p.name], cwd=p.parent, capture_output=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return                                   # no git (or not a folder): nothing is tracked
    if r.returncode == 0:
        raise SystemExit(f"bench: --json {path} is a file tracked by git; write the results to a path of "
                         f"your own (e.g. --json /tmp/bench.json)")


def _measure(args) -> int:
    models = {}
    for name in args.models:
        print(f"building random {name} (seed {args.seed}) ...", flush=True)
        models[name] = build_model(name, args.seed, args.scale)
    baseline = args.baseline
    doc = run_bench(models, args.cases, args.threads, args.contenders, reps=args.reps, warmup=args.warmup,
                    gap_ms=args.gap_ms, peak_size=args.peak_size, baseline=baseline,
                    workdir=Path(args.workdir) if args.workdir else None, blas=BlasThreads(),
                    log=lambda s: print(s, flush=True))
    avail = {n for st in doc["contenders"].values() for n, s in st.items() if s.get("available")}
    if baseline not in avail and "numpy" in avail and baseline == "ours":
        print("ours is unavailable: ratios are taken against the NumPy oracle instead", flush=True)
        doc["settings"]["baseline"] = "numpy"
        doc["ratios"] = _recompute_ratios(doc, "numpy")
    write_json(doc, args.json)
    return 0


def _recompute_ratios(doc: dict, baseline: str) -> list[dict]:
    groups = {}
    for r in doc["results"]:
        groups.setdefault((r["model"], r["batch"], r["seq"], r["threads"]), {})[r["contender"]] = r
    out = []
    for (m, b, t, n), res in groups.items():
        out += ratios_for(res, baseline, m, b, t, n)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
