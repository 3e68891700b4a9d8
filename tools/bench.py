#!/usr/bin/env python
"""Side-by-side latency of refexit and the CPU runtimes a user would pick instead.

Every contender computes the same thing on the same random weights: the BERT backbone at full
depth (no early exit), then the final head (pooler + classifier), on fp32 inputs of batch B x
sequence T with no padding. Contenders (each optional, skipped with the reason when missing):

  ours              the compiled C (`codegen.compile_model(model, policy=None)`), full depth
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

Measured in one run and interleaved: for each case, every repetition calls each contender once
(round robin, the starting contender rotating), after warm-up; the median, p10 and p90 of the
repetitions are reported. Achieved GFLOP/s counts the model's matmul FLOPs
(`L * model.layer_flops(T) + final_head.flops(T)` per sample) and is set against NumPy/OpenBLAS
sgemm measured in the same run: 2048^3, and the model's own GEMM shapes (M = B*T; the layer's
q, k, v, o [HxH], up [HxI] and down [IxH] products), at the same thread count.

Threads: ours `cm.set_threads(n)`, torch `torch.set_num_threads(n)`, ORT intra_op_num_threads,
OpenVINO INFERENCE_NUM_THREADS, NumPy through threadpoolctl (BLAS pool) when installed; without
threadpoolctl each thread count runs in its own subprocess with OPENBLAS_NUM_THREADS=n. The
measurement always runs in a child process started with OPENBLAS_THREAD_TIMEOUT=4 (see CHILD_ENV).

    python tools/bench.py                         # everything (BERT-base and MiniLM-L12 shapes)
    python tools/bench.py --quick                 # smoke run
    python tools/bench.py --models bert-base --cases 1x128,1x16 --threads 2 --json out.json

Peers: `pip install .[bench]` (torch==2.13.0 pinned, transformers, onnx, onnxruntime, openvino).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
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
CONTENDERS = ["ours", "ours-c", "numpy", "torch", "onnxruntime", "onnxruntime-bertopt", "openvino-f32", "openvino-default"]


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


# ====================================================================== contenders
@dataclass
class Contender:
    """One way to run the model. `setup` once per model, `set_threads` once per thread count,
    `call` is what is timed, `logits` turns its result into [B, C] for the agreement check."""
    name: str
    info: dict = field(default_factory=dict)

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
    def __init__(self):
        super().__init__("ours")

    def setup(self, model, workdir, shared):
        try:
            import codegen
        except Exception as e:
            raise Skip(f"codegen is not importable: {type(e).__name__}: {e}") from None
        if not hasattr(codegen, "compile_model"):
            raise Skip("codegen has no compile_model yet")
        t0 = time.perf_counter()
        try:
            self.cm = shared.get("ours_cm") or codegen.compile_model(model, None, out_dir=str(workdir / "ours"))
        except Exception as e:
            raise Skip(f"codegen.compile_model failed: {type(e).__name__}: {e}") from None
        shared["ours_cm"] = self.cm          # ours-c calls the same library
        self.info = {"compile_s": round(time.perf_counter() - t0, 2)}
        manifest = getattr(self.cm, "manifest", None) or {}
        for key in ("tool_version", "codegen_format", "compiler", "flags", "openmp", "isa", "max_length",
                    "max_batch"):
            if key in manifest:
                self.info[key] = manifest[key]

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

    def __init__(self, bert_fusion: bool = False):
        super().__init__("onnxruntime-bertopt" if bert_fusion else "onnxruntime")
        self.bert_fusion = bert_fusion
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
    def __init__(self, precision: str | None):
        super().__init__("openvino-f32" if precision == "f32" else "openvino-default")
        self.precision = precision
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
                     "precision_hint": self.precision or "default"}

    def set_threads(self, n):
        if n not in self.compiled:
            cfg = {"INFERENCE_NUM_THREADS": n}
            if self.precision:
                cfg["INFERENCE_PRECISION_HINT"] = self.precision
            cm = self.core.compile_model(self.ov_model, "CPU", cfg)
            for prop in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"):
                with contextlib.suppress(Exception):
                    v = cm.get_property(prop)
                    v = v.get_type_name() if hasattr(v, "get_type_name") else str(v)
                    self.info.setdefault("effective", {}).setdefault(str(n), {})[prop] = v
            self.compiled[n] = (cm, cm.create_infer_request())
        self.request = self.compiled[n][1]

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
            "openvino-default": lambda: OpenVino(None)}[name]()


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


def measure_case(model, contenders: list[Contender], batch: int, seq: int, reps: int, warmup: int,
                 gap_ms: float = 0.0, reference=None) -> dict:
    """Time every contender on one input, interleaved: rep r calls contenders[r % k:] + [:r % k].
    Returns {name: {"times_ms": [...], "median_ms", "p10_ms", "p90_ms", "max_abs_diff"}}; a
    contender whose first (untimed) call raises gets {"error": ...} instead and is left out."""
    enc = make_input(model, batch, seq)
    if reference is None:
        reference = np.asarray(model.classify(enc).logits, np.float64)
    failed = {}
    for c in list(contenders):
        try:
            c.prepare(enc)
            c.call()
        except Exception as e:
            failed[c.name] = {"error": f"{type(e).__name__}: {e}"}
    contenders = [c for c in contenders if c.name not in failed]
    out = {c.name: {"times_ms": []} for c in contenders}
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
                    z = np.asarray(c.logits(res), np.float64)
                    out[c.name]["max_abs_diff"] = (float(np.max(np.abs(z - reference)))
                                                   if z.shape == reference.shape else None)
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
    for n in threads:
        log(f"sgemm peak at {n} thread(s) ...")
        doc["sgemm"].append(measure_sgemm(models, cases, n, blas, peak_size, sgemm_samples))
        if fma_peak:
            doc["sgemm"][-1]["fma_peak"] = measure_fma_peak(n, Path(workdir))
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
            try:
                for n in threads:
                    for c in ready:
                        c.set_threads(n)
                    for B, T in cases:
                        log(f"{mname} {B}x{T} threads={n}: {reps} reps x {len(ready)} contenders ...")
                        res = measure_case(model, ready, B, T, reps, warmup, gap_ms)
                        for cname in [k for k, d in res.items() if "error" in d]:
                            log(f"  {cname} failed on {B}x{T}: {res[cname]['error']}")
                            doc["failures"].append({"model": mname, "batch": B, "seq": T, "threads": n,
                                                    "contender": cname, "error": res.pop(cname)["error"]})
                        flops = case_flops(model, B, T)
                        shape = next(s for s in sgemm[n]["shapes"] if s["model"] == mname
                                     and (s["batch"], s["seq"]) == (B, T))
                        for cname, d in res.items():
                            g = flops / (d["median_ms"] / 1e3) / 1e9
                            doc["results"].append({
                                "model": mname, "batch": B, "seq": T, "threads": n, "contender": cname,
                                **{k: d[k] for k in ("median_ms", "p10_ms", "p90_ms")},
                                "flops": flops, "gflops": g,
                                "pct_sgemm_square": 100 * g / sgemm[n]["square"]["gflops"],
                                "pct_sgemm_model_shapes": 100 * g / shape["layer_mix_gflops"],
                                "max_abs_diff_vs_oracle": d.get("max_abs_diff"),
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
                                                 "avx512_vnni", "avx512_bf16", "amx_tile")}
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
    for p in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "onnxscript", "threadpoolctl"):
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
            f"{'GFLOP/s':>8} {'%sq':>5} {'%shape':>6} {base + '/x':>8} {'max|dz|':>8}")
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
        lines.append(f"{r['model']:<11} {str(r['batch']) + 'x' + str(r['seq']):>6} {r['threads']:>3}  "
                     f"{r['contender']:<20} {r['median_ms']:>10.2f} {r['p10_ms']:>9.2f} {r['p90_ms']:>9.2f} "
                     f"{r['gflops']:>8.1f} {r['pct_sgemm_square']:>5.0f} {r['pct_sgemm_model_shapes']:>6.0f} "
                     f"{rts:>8} {('%.1e' % dz) if dz is not None else '-':>8}")
    lines.append("")
    lines.append(f"%sq / %shape: achieved GFLOP/s as % of sgemm at {doc['settings']['peak_size']}^3 / on the "
                 f"model's own GEMM shapes, same thread count. {base}/x: median ratio (< 1: {base} faster). "
                 f"max|dz|: largest logit difference from the NumPy oracle.")
    return "\n".join(lines)


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
    p.add_argument("--json", default="bench-results.json", help="where to write the results (default bench-results.json)")
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


def markdown_summary(doc: dict) -> str:
    """Per model and thread count: a row per case with every contender's median ms, ours / the best
    fp32 peer, and ours as a share of the fp32 FMA peak (model FLOPs; docs/benchmarks.md)."""
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
    return "\n".join(out)


def run(args) -> int:
    """Parent: run the measurement in child process(es) with CHILD_ENV (one child, or one per thread
    count with OPENBLAS_NUM_THREADS=n when threadpoolctl is missing), merge, print, write JSON."""
    if args.summary:
        print(markdown_summary(json.loads(Path(args.summary).read_text())))
        return 0
    args = resolve(args)
    if args._child:
        return _measure(args)
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
    write_json(doc, args.json)
    print(f"\nwrote {args.json}")
    return 0


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
