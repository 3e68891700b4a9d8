"""The Python side of a compiled model: compile_model / load_compiled and CompiledModel (cffi, ABI
mode: the declarations between the `cffi begin/end` markers of the generated header, `ffi.dlopen`).

A compiled folder holds <prefix>.h, <prefix>.c, <prefix>.weights, lib<prefix>.so and
<prefix>.manifest.json (what `load_compiled` needs to reopen it without the model or a compiler:
dimensions, labels, policy, FLOP coefficients, build key).

Inputs and outputs cross the ABI without copies (`ffi.from_buffer` on NumPy arrays); cffi releases
the GIL during C calls, so CompiledModels (one C handle each) run in parallel from Python threads.
One CompiledModel serialises its own calls with a lock (a C handle is single-threaded).
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
import types
import zlib
from pathlib import Path

import cffi
import numpy as np

import refexit
from refexit import jsonio, validate
from refexit.errors import CheckpointError, InputError
from refexit.results import ClassifyResult
from refexit.tokens import LayerCost
from refexit.tokenizers.wordpiece import input_arrays, unpack

from . import build as _build
from . import emit as _emit
from . import pack as _pack
from .lower import COUNT_POLICIES, head_flops_coeffs, is_integral, lower
from .text import TOKENIZERS

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1
_EXC = {"checkpoint": CheckpointError, "input": InputError, "memory": MemoryError, "isa": _build.BuildError}
_ERR_BY_CODE = {code: (name, kind) for name, code, _, kind in _emit.ERRORS}
_CODES = {name: code for name, code, _, _ in _emit.ERRORS}
_LIBS: dict = {}                      # (library path, prefix) -> (ffi, lib): cdef + dlopen once
_LIBS_LOCK = threading.Lock()


def cdef_of(header_text: str) -> str:
    m = re.search(r"/\* --- cffi begin.*?\*/(.*?)/\* --- cffi end --- \*/", header_text, re.S)
    if not m:
        raise CheckpointError("the generated header has no cffi section (regenerate it)")
    return m.group(1)


def _open_library(lib_path: Path, header_path: Path, prefix: str):
    key = (str(lib_path), prefix)
    with _LIBS_LOCK:
        if key not in _LIBS:
            ffi = cffi.FFI()
            ffi.cdef(cdef_of(header_path.read_text(encoding="utf-8")))
            _LIBS[key] = (ffi, ffi.dlopen(str(lib_path)))
        return _LIBS[key]


class CompiledModel:
    """One open C handle of a compiled model. `classify(enc)` -> refexit.ClassifyResult."""

    def __init__(self, out_dir: str | Path, manifest: dict):
        self.out_dir = Path(out_dir)
        self.manifest = manifest = check_manifest(manifest, self.out_dir)
        self.prefix = p = manifest["prefix"]
        lib_path = _build.cached_library(manifest["build_key"], self.out_dir / manifest["library"])
        try:
            self.ffi, self.lib = _open_library(lib_path, self.out_dir / manifest["header"], p)
            self._fn = types.SimpleNamespace(**{n: getattr(self.lib, f"{p}_{n}") for n in (
                "open", "close", "set_threads", "set_threshold", "set_thresholds", "get_thresholds",
                "classify_batch", "classify_padded", "strerror", "model_hash")})
            if "token_reduction" in manifest:                  # the length configuration (model.c.j2)
                for n in ("set_keep", "get_keep"):
                    setattr(self._fn, n, getattr(self.lib, f"{p}_{n}"))
            if manifest.get("gate_width"):                    # SmartBERT: the calls that report the layers run
                for n in ("classify_batch_run", "classify_padded_run"):
                    setattr(self._fn, n, getattr(self.lib, f"{p}_{n}"))
            if manifest["policy"]["name"] == "ceebert":       # the bandits' state (policy.c.j2)
                for n in ("bandit_num_arms", "bandit_state", "bandit_set_state", "bandit_reset"):
                    setattr(self._fn, n, getattr(self.lib, f"{p}_{n}"))
            dims = {k: int(getattr(self.lib, f"{p}_{k}")(self.ffi.NULL))
                    for k in ("num_layers", "hidden", "num_labels", "max_length", "vocab_size")}
            lib_hash = self.ffi.string(self._fn.model_hash()).decode("ascii", "replace")
        except (OSError, UnicodeDecodeError, AttributeError, cffi.FFIError, cffi.CDefError) as e:
            raise CheckpointError(f"{self.out_dir}: cannot open the compiled library {lib_path.name} with "
                                  f"header {manifest['header']} and prefix {p!r} ({e}); compile again") from None
        if lib_hash != manifest["model_hash"]:
            raise CheckpointError(f"{lib_path}: library was built for model {lib_hash[:12]}, the manifest "
                                  f"says {manifest['model_hash'][:12]} (recompile)")
        for key, got in dims.items():
            if got != manifest[key]:
                raise CheckpointError(f"{self.out_dir}: the manifest says {key} = {manifest[key]}, its library "
                                      f"{got} (compile again)")
        self.weights_path = self.out_dir / manifest["weights"]
        handle = self.ffi.new(f"{p}_model **")
        st = self._fn.open(str(self.weights_path).encode(), handle)
        if st != 0:
            raise self._error(st, f"{self.weights_path}")
        self._m = self.ffi.gc(handle[0], self._fn.close)
        self._lock = threading.Lock()
        self.num_layers = int(manifest["num_layers"])
        self.num_labels = int(manifest["num_labels"])
        self.hidden = int(manifest["hidden"])
        self.max_length = int(manifest["max_length"])
        self.vocab_size = int(manifest["vocab_size"])
        self.label_names = list(manifest["label_names"])
        self.policy_name = manifest["policy"]["name"]
        self.policy_repr = manifest["policy"]["repr"]
        self.precision = manifest.get("precision", "fp32")     # what the layer GEMMs compute in
        self.isa = manifest["isa"]
        self.warnings = list(manifest["warnings"])
        self._count = manifest["policy"]["count"]
        self._skips = bool(manifest.get("gate_width"))     # SmartBERT's skip gates: results carry layers_run
        tr = manifest.get("token_reduction")
        self.keep = tuple(tr["keep"]) if tr else None       # token reduction: keep ratio per layer (None: off)
        self._set_flops()
        C = self.num_labels
        self._dtype = np.dtype([("logits", "<f4", (C,)), ("label", "<i4"), ("exit_layer", "<i4"),
                                ("score", "<f4"), ("margin", "<f4")])
        if self.ffi.sizeof(f"{p}_result") != self._dtype.itemsize:
            raise CheckpointError(f"{p}_result is {self.ffi.sizeof(f'{p}_result')} bytes, expected "
                                  f"{self._dtype.itemsize}")
        self._tokenizer = None

    def _set_flops(self) -> None:
        m = self.manifest
        self._flops = flops_table(m["flops"], self.num_layers, self.policy_name, self.max_length,
                                  bool(m["policy"].get("check_between", False)))
        if self.keep is not None:
            reduced_flops(self._flops, m["flops"], m["token_reduction"]["cost"], self.keep, self.policy_name,
                          bool(m["policy"].get("check_between", False)))
        if self._skips:
            self._skip_costs = skip_costs(m["flops"], self.num_layers, self.max_length)

    def set_keep(self, reduction) -> None:
        """Change the length configuration of a library compiled with token reduction:
        a refexit.TokenReduction or one keep ratio per layer."""
        from refexit.tokens import TokenReduction
        if self.keep is None:
            raise InputError("this library was compiled without token reduction (compile it from "
                             "model.with_token_reduction(...) or with --keep)")
        tr = reduction if isinstance(reduction, TokenReduction) else TokenReduction(reduction)
        tr.check(self.num_layers)
        vals = self.ffi.new("double[]", list(tr.keep))
        with self._lock:
            st = self._fn.set_keep(self._handle(), vals, len(tr.keep))
        if st:
            raise self._error(st, "set_keep")
        self.keep = tr.keep
        self._set_flops()

    def get_keep(self) -> tuple:
        """The keep ratios in force in the C handle (token reduction)."""
        if self.keep is None:
            raise InputError("this library was compiled without token reduction")
        out = self.ffi.new("double[]", self.num_layers)
        st = self._fn.get_keep(self._handle(), out, self.num_layers)
        if st:
            raise self._error(st, "get_keep")
        return tuple(out[i] for i in range(self.num_layers))

    # ------------------------------------------------------------------ errors
    def _error(self, status: int, context: str = "") -> Exception:
        name, kind = _ERR_BY_CODE.get(status, ("?", "input"))
        msg = self.ffi.string(self._fn.strerror(status)).decode()
        if not context:
            text = msg
        else:                          # "<file>: <what is wrong>" / "<what is wrong>: <where>"
            text = f"{context}: {msg}" if kind == "checkpoint" else f"{msg}: {context}"
        return _EXC.get(kind, InputError)(f"{text} [{self.prefix}_{name}]")

    # ------------------------------------------------------------------ settings
    def close(self) -> None:
        """Release the C handle now (else when the object is collected)."""
        with self._lock:
            if self._m is not None:
                self.ffi.release(self._m)
                self._m = None

    def _handle(self):
        if self._m is None:
            raise InputError("this CompiledModel is closed")
        return self._m

    def set_threads(self, n: int) -> None:
        with self._lock:
            st = self._fn.set_threads(self._handle(), int(n))
        if st:
            raise self._error(st, f"set_threads({n!r})")

    def set_threshold(self, value: float) -> None:
        """One threshold for every layer (patience / window / static: the whole-number count)."""
        v = float(value)
        if self.policy_name in COUNT_POLICIES and not is_integral(v):
            raise InputError(f"{self.policy_name}: the setting is a whole number, got {value!r}")
        with self._lock:
            st = self._fn.set_threshold(self._handle(), v)
        if st:
            raise self._error(st, f"set_threshold({value!r})")
        if self.policy_name in COUNT_POLICIES:
            self._count = int(v)

    def set_thresholds(self, values) -> None:
        """One threshold per layer: L-1 values (or L, the last ignored)."""
        arr = np.ascontiguousarray(np.atleast_1d(np.asarray(values, dtype=np.float32)))
        if arr.ndim != 1:
            raise InputError(f"thresholds must be 1-D, got shape {arr.shape}")
        with self._lock:
            st = self._fn.set_thresholds(self._handle(), self.ffi.from_buffer("float[]", arr), arr.size)
        if st:
            raise self._error(st, f"set_thresholds({arr.size} values; the model has "
                                  f"{self.num_layers - 1} exit layers)")

    @property
    def thresholds(self) -> np.ndarray:
        """The thresholds in force, [L-1] float32 (counting policies: the count)."""
        out = np.zeros(max(self.num_layers - 1, 1), np.float32)
        with self._lock:
            st = self._fn.get_thresholds(self._handle(), self.ffi.from_buffer("float[]", out), out.size)
        if st:
            raise self._error(st, "get_thresholds")
        return out[:self.num_layers - 1]

    def set_policy(self, policy) -> list[str]:
        """Switch to `policy`, which must be of the compiled kind with the same compiled-in settings
        (inclusive flag, temperatures, tau); its threshold(s) / count are set at run time. Returns
        the policy's warnings (as the oracle's check gives them)."""
        pol = self.manifest["policy"]
        if policy.name != pol["name"]:
            raise InputError(f"this library was compiled for the {pol['name']} policy, not {policy.name} "
                             f"(compile again for another policy)")
        stub = types.SimpleNamespace(lte=True if self.manifest["has_lte"] else None,
                                     ponder=True if self.manifest["has_ponder"] else None,
                                     temperatures=np.asarray(self.manifest["model_temperatures"]),
                                     prototypes=True if self.manifest.get("has_prototypes") else None,
                                     edge_table=True if self.manifest.get("edge_rows") else None,
                                     gpf=True if self.manifest.get("has_gpf") else None,
                                     gpf_pool=self.manifest.get("gpf_pool", "cls"),
                                     dact=True if self.manifest.get("has_dact") else None,
                                     gates=True if self.manifest.get("gate_width") else None)
        msgs = policy.check(self.num_layers, self.num_labels, stub)
        if policy.name == "norm_entropy" and bool(policy.inclusive) != bool(pol["inclusive"]):
            raise InputError(f"compiled with inclusive={pol['inclusive']}; recompile to change it")
        if policy.name == "max_prob" and not np.array_equal(
                np.asarray(policy._temps, np.float64).astype(np.float32), np.asarray(pol["temperatures"], np.float32)):
            raise InputError("compiled with other temperatures; recompile to change them")
        if policy.name in ("patience", "window") and self.num_labels == 1 and policy.tau != pol["tau"]:
            raise InputError(f"compiled with tau={pol['tau']}; recompile to change it")
        lam = pol["params"].get("lam") if isinstance(pol["params"], dict) else None
        if policy.name == "de3" and policy.lam != lam:
            raise InputError(f"compiled with lam={lam}; recompile to change it")
        if policy.name == "smartbert" and policy.gate != pol["params"].get("gate"):
            raise InputError(f"compiled with gate={pol['params'].get('gate')}; recompile to change it")
        between = bool(pol.get("check_between", False))
        if policy.name == "edgebert" and policy.check_between != between:
            raise InputError(f"compiled with check_between={between}; recompile to change it")
        if policy.name == "ceebert":
            if policy.arms != pol["params"].get("arms") or policy.c != pol["params"].get("c"):
                raise InputError(f"compiled with arms={pol['params'].get('arms')} and c={pol['params'].get('c')}; "
                                 f"recompile to change them")
            self.set_threshold(policy.cost)                 # the cost is a run-time setting
            st = policy.state()                             # and the handle continues from the policy's state
            self.set_bandit_state(st["q"], st["n"], st["t"])
            self.policy_repr, self.warnings = repr(policy), list(msgs)
            return msgs
        if policy.name == "dact":                           # no run-time setting
            self.policy_repr, self.warnings = repr(policy), list(msgs)
            return msgs
        if policy.name in COUNT_POLICIES:
            self.set_threshold(policy.k if policy.name == "static" else policy.count)
        elif self.num_layers > 1:
            self.set_thresholds(policy._thr)
        self.policy_repr, self.warnings = repr(policy), list(msgs)
        return msgs

    # ------------------------------------------------------------------ CeeBERT's bandits
    def _bandit_fn(self, name):
        if self.policy_name != "ceebert":
            raise InputError(f"this library was compiled for the {self.policy_name} policy, which has no "
                             f"bandit state (compile with refexit.CeeBERT)")
        return getattr(self._fn, name)

    def bandit_state(self) -> dict:
        """The handle's CeeBERT state: q [L-1, K] float64 mean rewards, n [L-1, K] int64 counts, t [L-1]
        int64 rounds, arm [L-1] int64 arms in force (as refexit.CeeBERT.state())."""
        fn = self._bandit_fn("bandit_state")
        E, K = self.num_layers - 1, int(self._fn.bandit_num_arms())
        q, n = np.zeros((E, K)), np.zeros((E, K), np.int64)
        t, arm = np.zeros(E, np.int64), np.zeros(E, np.int32)
        f = self.ffi.from_buffer
        with self._lock:
            st = fn(self._handle(), f("double[]", q, require_writable=True), f("int64_t[]", n, require_writable=True),
                    f("int64_t[]", t, require_writable=True), f("int32_t[]", arm, require_writable=True))
        if st:
            raise self._error(st, "bandit_state")
        return {"q": q, "n": n, "t": t, "arm": arm.astype(np.int64)}

    def set_bandit_state(self, q, n, t) -> None:
        """Restore a CeeBERT state (from bandit_state() or refexit.CeeBERT.state()); the arms are re-chosen."""
        fn = self._bandit_fn("bandit_set_state")
        E, K = self.num_layers - 1, int(self._fn.bandit_num_arms())
        q = np.ascontiguousarray(q, np.float64)
        n, t = np.asarray(n), np.asarray(t)
        if q.shape != (E, K) or n.shape != (E, K) or t.shape != (E,):
            raise InputError(f"bandit state shapes q {q.shape}, n {n.shape}, t {t.shape}: expected "
                             f"({E}, {K}), ({E}, {K}), ({E},)")
        if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
            raise InputError("bandit state counts n and t must be integers")
        n, t = np.ascontiguousarray(n, np.int64), np.ascontiguousarray(t, np.int64)
        f = self.ffi.from_buffer
        with self._lock:
            st = fn(self._handle(), f("double[]", q), f("int64_t[]", n), f("int64_t[]", t))
        if st:
            raise self._error(st, "set_bandit_state (q must be finite, 0 <= n <= t)")

    def reset_bandit(self) -> None:
        """Forget what CeeBERT's bandits learned (every threshold back to the first arm)."""
        fn = self._bandit_fn("bandit_reset")
        with self._lock:
            st = fn(self._handle())
        if st:
            raise self._error(st, "bandit_reset")

    # ------------------------------------------------------------------ inference
    def _input_context(self, status, ids, types_, lengths) -> str:
        """Which sample is at fault (for the exception message)."""
        name = _ERR_BY_CODE.get(status, ("",))[0]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        sample = lambda i: int(np.searchsorted(starts, i, side="right") - 1)   # noqa: E731
        if name == "ERR_EMPTY":
            return f"sample {int(np.argmax(lengths <= 0))} has no tokens"
        if name == "ERR_TOO_LONG":
            b = int(np.argmax(lengths > self.max_length))
            return f"sample {b} has {int(lengths[b])} tokens; compiled for at most {self.max_length}"
        if name == "ERR_TOKEN":
            i = int(np.argmax((ids < 0) | (ids >= self.vocab_size)))
            return f"sample {sample(i)}: token id {int(ids[i])} is outside [0, {self.vocab_size})"
        if name == "ERR_TYPE":
            i = int(np.argmax((types_ < 0) | (types_ >= self.manifest["type_vocab_size"])))
            return f"sample {sample(i)}: token type id {int(types_[i])}"
        return "classify"

    def classify_raw(self, ids, type_ids, lengths, layers_run=None, layer_ran=None) -> np.ndarray:
        """Back-to-back int32 ids/type_ids and lengths [B] -> the C results as a structured array
        (fields logits [C], label, exit_layer, score, margin), written in place by the C code.
        Libraries compiled for smartbert also fill, when given, layers_run (int32 [B]: the layers each
        sample ran) and layer_ran (uint8 [B, L]: 1 where sample b ran layer i + 1)."""
        B = int(len(lengths))
        out = np.zeros(B, self._dtype)
        if B == 0:
            return out
        f = self.ffi.from_buffer
        res = f(f"{self.prefix}_result[]", out, require_writable=True)
        args = (f("int32_t[]", ids), f("int32_t[]", type_ids), f("int32_t[]", lengths), B, res)
        with self._lock:
            if layers_run is None and layer_ran is None:
                st = self._fn.classify_batch(self._handle(), *args)
            else:
                fn = self._skip_fn("classify_batch_run")
                st = fn(self._handle(), *args, *self._run_outputs(layers_run, layer_ran))
        if st:
            raise self._error(st, self._input_context(st, ids, type_ids, lengths))
        return out

    def classify(self, enc) -> ClassifyResult:
        """Per-sample early-exit classification of a batch, as Model.classify (no trace). The padded
        [B, T] arrays go to the C code as they are when they are int64 in C order (no copy); it
        checks them (right padding, ranges) and gathers the tokens."""
        arrays = input_arrays(enc)                    # ids, mask, types: [B, T] each (mask, types: or None)
        B, T = arrays[0].shape
        if max(B, T) >= 2**31:                        # before any conversion copies the arrays
            raise InputError(f"input_ids of shape {arrays[0].shape}: batch and width must be below 2**31")
        ids, mask, types_ = (_int64_c(a) for a in arrays)
        C = self.num_labels
        out = np.empty((B, C + 4), np.float32)        # [B] results: logits [C], label, exit_layer, score, margin
        lengths = np.empty(B, np.int32)
        ran = np.empty((B, self.num_layers), np.uint8) if self._skips else None   # SmartBERT: the layers run
        run = np.empty(B, np.int32) if self._skips else None                        # and their count
        if B:
            f, null = self.ffi.from_buffer, self.ffi.NULL
            args = (f("int64_t[]", ids), null if mask is None else f("int64_t[]", mask),
                    null if types_ is None else f("int64_t[]", types_), B, T, f("int32_t[]", lengths),
                    f(f"{self.prefix}_result[]", out, require_writable=True))
            with self._lock:
                args = (self._handle(), *args)
                if ran is None:
                    st = self._fn.classify_padded(*args)
                else:
                    st = self._fn.classify_padded_run(*args, *self._run_outputs(run, ran))
            if st:
                ids, real, types_ = unpack(enc)       # a padding error raises here, naming the sample
                raise self._error(st, self._input_context(st, ids[real], types_[real], real.sum(axis=1)))
        # The C call leaves the caches cold, and then each NumPy call costs ~10-40 us (a MiniLM 1x16
        # call is ~4 ms): few of them, plain columns rather than structured fields, the FLOPs looked up.
        exits = out.view(np.int32)[:, C + 1]                  # [B] 1-based exit layers
        spent = self._flops[exits, lengths]                   # [B, 2] (spent, full model)
        return ClassifyResult(out[:, :C].copy(), exits.astype(np.int64), self.num_layers, self.label_names,
                              *self._spent(spent, exits, lengths, ran), out[:, C + 3].astype(np.float64),
                              self.policy_repr, None, list(self.warnings),
                              None if run is None else run.astype(np.int64))

    def _spent(self, spent, exits, lengths, ran) -> tuple:
        """(FLOPs spent [B], full-model FLOPs [B]): from the exit layer, or with skip gates from the
        layers each sample ran (skip_flops)."""
        if ran is None:
            return spent[:, 0], spent[:, 1]
        return skip_flops(self._skip_costs, exits, lengths, ran), spent[:, 1]

    def _run_outputs(self, layers_run, layer_ran) -> tuple:
        """The C pointers of the optional outputs of the _run calls (NULL for None)."""
        f, null = self.ffi.from_buffer, self.ffi.NULL
        return (null if layers_run is None else f("int32_t[]", layers_run, require_writable=True),
                null if layer_ran is None else f("uint8_t[]", layer_ran, require_writable=True))

    def _skip_fn(self, name):
        if not self._skips:
            raise InputError(f"this library was compiled for the {self.policy_name} policy, which skips no layer "
                             f"(layer_ran is reported by libraries compiled for smartbert)")
        return getattr(self._fn, name)

    # ------------------------------------------------------------------ text, tokenized in C
    @property
    def tokenizer_kind(self) -> str:
        """The tokenizer compiled into the library: "wordpiece", "bpe", "unigram" or "none" (token ids only)."""
        return self.manifest["tokenizer"].get("kind", "wordpiece")

    def special_tokens(self, pair: bool = False) -> int:
        """How many special tokens the C tokenizer adds around a text (pair: around a pair)."""
        return int(self.manifest["tokenizer"].get("special_tokens", [2, 3])[int(bool(pair))])

    def encode_text(self, text: str | bytes, pair: str | bytes | None = None, max_length: int = 0
                    ) -> tuple[list[int], list[int]]:
        """(ids, type ids) of text (and pair) from the library's own tokenizer (`<prefix>_tokenize`),
        truncated to max_length (0: the compiled maximum; larger values are allowed, up to 2**31 - 1).
        str is encoded as UTF-8 (a lone surrogate as its bytes, which are invalid UTF-8); bytes go as they
        are; invalid UTF-8 reads as U+FFFD in C, as bytes.decode("utf-8", "replace")."""
        text, pair = _utf8(text), None if pair is None else _utf8(pair)
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or \
                not 0 <= max_length < 2**31:
            raise InputError(f"max_length must be an integer in [0, 2**31), got {max_length!r}")
        fn, null, n = getattr(self.lib, f"{self.prefix}_tokenize"), self.ffi.NULL, self.ffi.new("int *")
        args = (text, len(text), null if pair is None else pair, 0 if pair is None else len(pair), int(max_length))
        cap = self.max_length + 8
        for _ in range(2):                         # the second time with the capacity the C asked for
            ids, types_ = self.ffi.new("int32_t[]", cap), self.ffi.new("int32_t[]", cap)
            st = fn(self._handle(), *args, ids, types_, cap, n)
            if st != _CODES["ERR_CAPACITY"]:
                break
            cap = n[0]
        if st:
            raise self._error(st, "tokenize")
        return list(ids[0:n[0]]), list(types_[0:n[0]])

    def classify_text(self, texts, pairs=None) -> ClassifyResult:
        """Tokenize each text (and pair) in C, truncating to the compiled maximum length, and classify
        them as one batch: the C library's own text path, as `<prefix>_classify_text` takes it."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if pairs is not None and (isinstance(pairs, (str, bytes)) or len(pairs) != len(texts)):
            raise InputError(f"pairs must be a list as long as texts ({len(texts)}) or None")
        rows = [self.encode_text(t, None if pairs is None else pairs[i],
                                 max(self.max_length, self.special_tokens(pairs is not None)))
                for i, t in enumerate(texts)]
        lengths = np.array([len(r[0]) for r in rows], np.int32)
        ids = np.array([i for r in rows for i in r[0]], np.int32)
        types_ = np.array([t for r in rows for t in r[1]], np.int32)
        ran = np.empty((len(rows), self.num_layers), np.uint8) if self._skips else None
        run = np.empty(len(rows), np.int32) if self._skips else None
        out = self.classify_raw(ids, types_, lengths, run, ran)
        spent = self._flops[out["exit_layer"], lengths]
        return ClassifyResult(out["logits"].copy(), out["exit_layer"].astype(np.int64), self.num_layers,
                              self.label_names, *self._spent(spent, out["exit_layer"], lengths, ran),
                              out["margin"].astype(np.float64), self.policy_repr, None, list(self.warnings),
                              None if run is None else run.astype(np.int64))

    @property
    def tokenizer(self):
        """A refexit Tokenizer over the vocabulary stored in the weights file (WordPiece models; a
        byte-level BPE or Unigram model's text goes through encode_text / classify_text, in C)."""
        if self._tokenizer is None:
            from refexit.tokenizers.wordpiece import Tokenizer
            if self.tokenizer_kind in ("bpe", "unigram"):
                raise CheckpointError(f"{self.weights_path} holds a {self.tokenizer_kind} tokenizer, tokenized in C: "
                                      f"use encode_text / classify_text (or the model folder's tokenizer)")
            t = self.manifest["tokenizer"]
            vocab = _pack.read_vocab(self.weights_path)
            if not vocab:
                raise CheckpointError(f"{self.weights_path} holds no vocabulary")
            try:
                self._tokenizer = Tokenizer(vocab, do_lower_case=t["do_lower_case"],
                                            strip_accents=t["strip_accents"],
                                            tokenize_chinese_chars=t["tokenize_chinese_chars"],
                                            max_length=min(t["max_length"], self.max_length),
                                            pad_token_id=t["pad_token_id"], source=str(self.weights_path))
            except (KeyError, ValueError, TypeError) as e:      # not a RefexitError: a broken vocabulary
                if isinstance(e, refexit.RefexitError):
                    raise
                raise CheckpointError(f"{self.weights_path}: its vocabulary is not usable ({e!r})") from None
        return self._tokenizer

    def __repr__(self):
        return (f"<CompiledModel {self.prefix} L={self.num_layers} H={self.hidden} C={self.num_labels} "
                f"policy={self.policy_repr} max_length={self.max_length} in {self.out_dir}>")


# ---------------------------------------------------------------------- the manifest, checked
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,255}")
_HEX = re.compile(r"[0-9a-f]{8,128}")


def check_manifest(manifest, where) -> dict:
    """Every manifest field CompiledModel reads, with its type and bounds (a hand-edited or foreign
    manifest is a CheckpointError naming the field, never a KeyError or a huge allocation)."""
    E = CheckpointError
    if not isinstance(manifest, dict):
        raise E(f"{where}: the manifest must be a JSON object")

    def get(d, key, ctx="manifest"):
        if key not in d:
            raise E(f"{where}: {ctx} lacks the field {key!r} (compile again)")
        return d[key]

    def integer(key, lo, hi, d=manifest, ctx="manifest"):
        return validate.integer(get(d, key, ctx), f"{where}: {ctx} field {key!r}", lo, hi, E)

    def string(key, pattern=None, d=manifest, ctx="manifest"):
        v = validate.string(get(d, key, ctx), f"{where}: {ctx} field {key!r}", E)
        if pattern is not None and not pattern.fullmatch(v):
            raise E(f"{where}: {ctx} field {key!r} = {v[:40]!r} is not a plain name")
        return v

    def obj(key, d=manifest):
        v = get(d, key)
        if not isinstance(v, dict):
            raise E(f"{where}: manifest field {key!r} must be an object")
        return v

    def numbers(v, what, n=None, whole=False):
        if not isinstance(v, list) or (n is not None and len(v) != n):
            raise E(f"{where}: manifest field {what} must be a list of {n if n is not None else ''} numbers")
        for x in v:
            if whole:
                validate.integer(x, f"{where}: manifest field {what}", -(1 << 62), 1 << 62, E)
            else:
                validate.number(x, f"{where}: manifest field {what}", E)
        return v

    string("prefix", _IDENT)
    for key in ("header", "source", "weights", "library"):
        string(key, _FILE)
    for key in ("build_key", "model_hash"):
        string(key, _HEX)
    string("isa")
    L = integer("num_layers", 1, 256)
    C = integer("num_labels", 1, 1 << 16)
    integer("hidden", 1, 1 << 15)
    integer("max_length", 3, 1 << 17)
    integer("vocab_size", 1, 1 << 22)
    integer("type_vocab_size", 1, 1 << 10)
    validate.label_names(get(manifest, "label_names"), C, f"{where}: manifest field 'label_names'", E)
    for key in ("has_lte", "has_ponder"):
        validate.boolean(get(manifest, key), f"{where}: manifest field {key!r}", E)
    if "has_prototypes" in manifest:                   # absent in manifests before DE3-BERT
        validate.boolean(manifest["has_prototypes"], f"{where}: manifest field 'has_prototypes'", E)
    if "edge_rows" in manifest:                        # absent in manifests before EdgeBERT
        integer("edge_rows", 0, 4096)
    if "has_gpf" in manifest:                          # absent in manifests before Global Past-Future
        validate.boolean(manifest["has_gpf"], f"{where}: manifest field 'has_gpf'", E)
    if "gpf_pool" in manifest:                         # absent in manifests before its pooling choice: "cls"
        from refexit.gpf import check_pool
        check_pool(manifest["gpf_pool"], f"{where}: manifest field 'gpf_pool'", E)
    if "has_dact" in manifest:                         # absent in manifests before DACT-BERT
        validate.boolean(manifest["has_dact"], f"{where}: manifest field 'has_dact'", E)
    if "gate_width" in manifest:                       # absent in manifests before SmartBERT
        integer("gate_width", 0, 1 << 16)
    validate.string_list(get(manifest, "warnings"), f"{where}: manifest field 'warnings'", E)
    numbers(get(manifest, "model_temperatures"), "'model_temperatures'", L)
    if "precision" in manifest:
        string("precision")
    pol = obj("policy")
    string("name", d=pol, ctx="manifest policy")
    string("repr", d=pol, ctx="manifest policy")
    for key in ("params", "inclusive", "tau", "thresholds"):
        get(pol, key, "manifest policy")
    if get(pol, "count", "manifest policy") is not None:
        integer("count", 0, 1 << 20, d=pol, ctx="manifest policy")
    numbers(get(pol, "temperatures", "manifest policy"), "'policy.temperatures'")
    fl = obj("flops")
    numbers(get(fl, "layer", "manifest flops"), "'flops.layer'", 3, whole=True)
    heads = get(fl, "heads", "manifest flops")
    if not isinstance(heads, list) or len(heads) != L:
        raise E(f"{where}: manifest field 'flops.heads' must hold {L} lists")
    for h in heads:
        numbers(h, "'flops.heads'", 3, whole=True)
    validate.integer(get(fl, "policy", "manifest flops"), f"{where}: manifest field 'flops.policy'", 0, 1 << 62, E)
    if "embed" in fl:                                  # the E -> H projection (ALBERT, ELECTRA); older manifests: none
        numbers(fl["embed"], "'flops.embed'", 3, whole=True)
    if "token_reduction" in manifest:                  # present when compiled with token reduction
        tr = obj("token_reduction")
        keep = numbers(get(tr, "keep", "manifest token_reduction"), "'token_reduction.keep'", L)
        if not all(0.0 < float(x) <= 1.0 for x in keep):
            raise E(f"{where}: manifest field 'token_reduction.keep' must hold ratios in (0, 1]")
        numbers(get(tr, "cost", "manifest token_reduction"), "'token_reduction.cost'", 4, whole=True)
    if "gate" in fl:                                   # SmartBERT: FLOPs of one skip gate (c0, c1, c2 in n)
        numbers(fl["gate"], "'flops.gate'", 3, whole=True)
    elif manifest.get("gate_width"):
        raise E(f"{where}: manifest field 'flops.gate' is missing (the FLOPs of a skip gate; compile again)")
    if "gpf" in fl:                                    # Global Past-Future: FLOPs of its check after layers 1..L-1
        numbers(fl["gpf"], "'flops.gpf'", max(L - 1, 0), whole=True)
    elif pol["name"] == "gpf":
        raise E(f"{where}: manifest field 'flops.gpf' is missing (the gpf policy's FLOPs per exit check)")
    tok = obj("tokenizer")
    for key in ("do_lower_case", "tokenize_chinese_chars"):
        validate.boolean(get(tok, key, "manifest tokenizer"), f"{where}: manifest field 'tokenizer.{key}'", E)
    if get(tok, "strip_accents", "manifest tokenizer") is not None:
        validate.boolean(tok["strip_accents"], f"{where}: manifest field 'tokenizer.strip_accents'", E)
    integer("max_length", 1, 1 << 40, d=tok, ctx="manifest tokenizer")
    integer("pad_token_id", 0, 1 << 22, d=tok, ctx="manifest tokenizer")
    if tok.get("kind", "wordpiece") not in TOKENIZERS:            # absent in manifests before the C BPE
        raise E(f"{where}: manifest field 'tokenizer.kind' must be one of {TOKENIZERS}, got {tok['kind']!r}")
    sp = tok.get("special_tokens", [2, 3])
    if not isinstance(sp, list) or len(sp) != 2:
        raise E(f"{where}: manifest field 'tokenizer.special_tokens' must be a list of two counts")
    for x in sp:
        validate.integer(x, f"{where}: manifest field 'tokenizer.special_tokens'", 0, 1 << 10, E)
    return manifest


def flops_polynomials(fl: dict, L: int, policy_name: str, check_between: bool = False):
    """FLOPs as the oracle counts them (every layer run, every head evaluated, the policy's extra) as
    polynomials (c0, c1, c2) in a sample's length n, from the manifest's coefficients:
    (by_exit [L], full) where by_exit[e - 1] is a sample that exits after layer e and full is the
    whole model (L layers + the final head); both include the embeddings' E -> H projection ("embed",
    ALBERT / ELECTRA; absent in older manifests: 0)."""
    add = lambda *ps: tuple(map(sum, zip(*ps)))                   # noqa: E731
    layers = lambda e: tuple(e * c for c in fl["layer"])          # noqa: E731
    heads = [tuple(h) for h in fl["heads"]]                       # [L]
    embed = tuple(fl.get("embed", (0, 0, 0)))                     # once per sample, whatever its exit

    def spent(e):
        return add(embed, exits(e))

    def exits(e):
        if policy_name == "gpf":                                  # its own exit logits before L, the final head at L
            own = (sum(fl["gpf"][:min(e, L - 1)]), 0, 0)
            return add(layers(e), own, *heads[L - 1:L] if e == L else ())
        if policy_name == "static":                               # only the head it exits at runs
            return add(layers(e), heads[e - 1])
        if policy_name == "edgebert" and not check_between:       # layer 1's head and the exit's
            return add(layers(e), *heads[:1], *heads[e - 1:e] if e > 1 else ())
        return add(layers(e), *heads[:e], (fl["policy"] * min(e, L - 1), 0, 0))
    return [spent(e) for e in range(1, L + 1)], add(embed, layers(L), heads[L - 1])


def skip_costs(fl: dict, L: int, max_length: int) -> np.ndarray:
    """SmartBERT: [max_length + 1, L + 2] int64, per length n: one layer's FLOPs, one skip gate's,
    then the head after each layer 1..L (exact integers, from the manifest's coefficients)."""
    c = np.array([fl["layer"], fl["gate"], *fl["heads"]], np.int64)    # [L + 2, 3] (c0, c1, c2)
    n = np.arange(max_length + 1, dtype=np.int64)[:, None]           # [N, 1]
    return c[:, 0] + n * (c[:, 1] + n * c[:, 2])                      # [N, L + 2]


def skip_flops(costs: np.ndarray, exits, lengths, ran) -> np.ndarray:
    """FLOPs spent per sample with skip gates, as Model.classify counts them: every layer it ran, a
    gate before every layer it reached (1..exit), the head after every layer it ran before L, and the
    final head when it reached L. costs: skip_costs; exits [B] 1-based; lengths [B]; ran [B, L] 0/1."""
    c = costs[lengths]                                                # [B, L + 2]
    L = ran.shape[1]
    heads = ran.astype(bool)                                          # [B, L]
    heads[:, L - 1] = exits == L                                      # the final head: whoever reached L
    spent = ran.sum(axis=1, dtype=np.int64) * c[:, 0] + exits * c[:, 1] + np.sum(c[:, 2:] * heads, axis=1)
    return spent.astype(np.float64)


def reduced_flops(table: np.ndarray, fl: dict, cost, keep, policy_name: str, check_between: bool = False) -> None:
    """Overwrite the spent FLOPs table[e, n, 0] of flops_table with token reduction (refexit.tokens:
    layer i runs on the tokens entering it and keeps k_i; the heads read k_i tokens), as
    Model.classify counts them; the full-model column stays the unreduced model."""
    from refexit.tokens import LayerCost, TokenReduction, spent_flops
    lc, tr = LayerCost(*(int(c) for c in cost)), TokenReduction(list(keep))
    L = len(tr.keep)
    heads = [(lambda c: (lambda T: c[0] + T * (c[1] + T * c[2])))(tuple(int(v) for v in h)) for h in fl["heads"]]
    e0, e1, e2 = (int(v) for v in fl.get("embed", (0, 0, 0)))
    for e in range(1, L + 1):
        if policy_name == "static":
            run = [e]
        elif policy_name == "edgebert" and not check_between:
            run = [1] + ([e] if e > 1 else [])
        else:
            run = list(range(1, e + 1))
        for n in range(table.shape[1]):
            table[e, n, 0] = e0 + n * (e1 + n * e2) + spent_flops(lc, tr, n, e, heads, run, int(fl["policy"]), L)


def flops_table(fl: dict, L: int, policy_name: str, max_length: int, check_between: bool = False) -> np.ndarray:
    """[L + 1, max_length + 1, 2] float64: [e, n] = (FLOPs spent on a sample of n tokens that exits
    after layer e, FLOPs of the full model on it), computed exactly in integers (row 0: unused)."""
    by_exit, full = flops_polynomials(fl, L, policy_name, check_between)
    c = np.array([by_exit[0], *by_exit, full], np.int64)            # [L + 2, 3] (c0, c1, c2)
    n = np.arange(max_length + 1, dtype=np.int64)                   # [N]
    exact = c[:, :1] + n * (c[:, 1:2] + n * c[:, 2:3])              # [L + 2, N] (< 2**63 for any BERT)
    return np.stack([exact[:-1], np.broadcast_to(exact[-1], exact[:-1].shape)], axis=-1).astype(np.float64)


def _utf8(text) -> bytes:
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise InputError(f"a text must be str or bytes, got {type(text).__name__}")
    return text.encode("utf-8", "surrogatepass")


def _int64_c(a):
    """An integer or bool array as int64 in C order (itself when it already is; None stays None).
    uint64 values >= 2**63 wrap to negative ids, which the C code refuses."""
    if a is None or (a.dtype == np.int64 and a.flags.c_contiguous):
        return a
    return np.ascontiguousarray(a, dtype=np.int64)


# ---------------------------------------------------------------------- compile / reopen
def _blob_is_current(path: Path, plan) -> bool:
    """An existing weights file with this model hash, the right size and a good checksum."""
    try:
        h = _pack.read_header(path)
        if h.model_hash != plan.model_hash or h.file_size != _pack.file_size(plan) or \
                path.stat().st_size != h.file_size:
            return False
        crc = 0
        with open(path, "rb") as f:
            f.seek(h.payload_offset)
            while chunk := f.read(1 << 22):
                crc = zlib.crc32(chunk, crc)
        return crc == h.checksum
    except (OSError, CheckpointError, ValueError):
        return False


def _manifest(model, plan, res) -> dict:
    cfg = model.config
    pol = plan.policy
    H, I = cfg.hidden_size, cfg.intermediate_size
    policy_flops = model._policy_flops(types.SimpleNamespace(name=pol.name))     # as the oracle counts
    return {
        "refexit_compiled": MANIFEST_FORMAT, "codegen_format": _emit.CODEGEN_FORMAT,
        "tool_version": refexit.__version__, "prefix": plan.prefix,
        "header": f"{plan.prefix}.h", "source": f"{plan.prefix}.c", "weights": f"{plan.prefix}.weights",
        "library": res.library.name, "build_key": res.key, "flags": res.flags, "compiler": res.compiler,
        "openmp": res.openmp, "isa": res.isa, "precision": plan.precision, "model_hash": plan.model_hash, "model_source": plan.source,
        "num_layers": plan.num_layers, "hidden": plan.hidden, "num_labels": plan.num_labels,
        "label_names": plan.label_names, "vocab_size": plan.vocab_size, "type_vocab_size": plan.type_vocab,
        "max_length": plan.max_length, "max_batch": plan.max_batch, "max_tokens": plan.max_tokens,
        "heads": [h.kind for h in plan.heads], "has_lte": plan.lte, "has_ponder": bool(plan.ponder_hidden),
        "has_prototypes": bool(plan.prototypes), "edge_rows": plan.edge_rows, "has_gpf": bool(plan.gpf),
        **({"gpf_pool": plan.gpf_pool} if plan.gpf else {}),
        "has_dact": bool(plan.dact), "gate_width": plan.gate_width,
        "model_temperatures": [float(t) for t in model.exits.temperatures],
        "policy": {"name": pol.name, "repr": pol.repr, "params": pol.params,
                   "thresholds": [float(t) for t in pol.thresholds], "count": pol.count,
                   "inclusive": pol.inclusive, "tau": pol.tau, "check_between": pol.check_between,
                   "temperatures": [float(t) for t in pol.temperatures]},
        "warnings": plan.warnings,
        "flops": {"layer": [0, 2 * (4 * H * H + 2 * H * I), 4 * H], "embed": [0, model.embed_flops(1), 0],
                  "heads": [list(head_flops_coeffs(h)) for h in model.exits.heads],
                  "policy": int(policy_flops),
                  **({"gpf": [int(_gpf_flops(layer, plan)) for layer in range(1, plan.num_layers)]}
                     if plan.gpf else {}),
                  **({"gate": _gate_flops(model)} if plan.gate_width else {})},
        **({"token_reduction": {"keep": list(plan.keep), "cost": list(dataclasses.astuple(
            LayerCost.of(H, I, cfg.num_attention_heads)))}} if plan.keep else {}),
        "tokenizer": {"kind": plan.tokenizer, "special_tokens": list(plan.special_tokens),
                      "do_lower_case": cfg.do_lower_case, "strip_accents": cfg.strip_accents,
                      "tokenize_chinese_chars": cfg.tokenize_chinese_chars, "max_length": cfg.max_length,
                      "pad_token_id": cfg.pad_token_id},
    }


def _gate_flops(model) -> list[int]:
    """One SmartBERT skip gate's FLOPs on n tokens as (c0, c1, c2): c0 + c1 n (skipgates.flops)."""
    g0 = int(model.exits.gate_flops(0))
    return [g0, int(model.exits.gate_flops(1)) - g0, 0]


def _gpf_flops(layer: int, plan) -> int:
    from refexit.gpf import flops
    return flops(layer, plan.num_layers, plan.hidden, plan.num_labels)


def compile_model(model, policy=None, out_dir="build/refexit_model", prefix: str | None = None,
                  max_length: int | None = None, max_batch: int = 32, max_tokens: int | None = None,
                  cc: str | None = None, openmp: bool | None = None, extra_flags=(),
                  isa: str | None = None, precision: str | None = None) -> CompiledModel:
    """Lower, pack, emit and build `model` with `policy` into out_dir; -> the opened CompiledModel.

    Writes out_dir/<prefix>.h, <prefix>.c, <prefix>.weights (skipped when an identical one is
    there), lib<prefix>.so and <prefix>.manifest.json. isa: "scalar", "avx2", "avx512",
    "avx512bf16", "amx" (the last two for bf16) or None (the best this compiler and CPU have; see
    codegen.build). precision: "fp32" (default) or "bf16" (the layer GEMMs in bf16; None: the
    model's own, model.precision)."""
    plan = lower(model, policy, prefix, max_length, max_batch, max_tokens, precision)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{out} is a file; out_dir must be a folder (it is created when missing)") from None
    except OSError as e:
        raise InputError(f"cannot create the output folder {out}: {e.strerror}") from None
    _, c_path = _emit.write_sources(plan, out)
    weights = out / f"{plan.prefix}.weights"
    if not _blob_is_current(weights, plan):
        _pack.write_blob(model, plan, weights)
    res = _build.build(c_path, out, plan.prefix, cc=cc, openmp=openmp, extra_flags=extra_flags, isa=isa,
                       precision=plan.precision)
    manifest = _manifest(model, plan, res)
    _emit.write_text_atomic(out / f"{plan.prefix}{MANIFEST_SUFFIX}", json.dumps(manifest, indent=1))
    return CompiledModel(out, manifest)


def load_compiled(out_dir: str | Path, prefix: str | None = None) -> CompiledModel:
    """Reopen a compiled folder (no model, no compiler needed)."""
    out = Path(out_dir)
    if prefix is None:
        found = sorted(out.glob(f"*{MANIFEST_SUFFIX}"))
        if not found:
            raise CheckpointError(f"{out} holds no compiled model (no *{MANIFEST_SUFFIX})")
        if len(found) > 1:
            names = [f.name[:-len(MANIFEST_SUFFIX)] for f in found]
            raise CheckpointError(f"{out} holds several compiled models {names}: pass prefix=")
        path = found[0]
    else:
        path = out / f"{prefix}{MANIFEST_SUFFIX}"
    manifest = jsonio.read_object(path, CheckpointError, what="the manifest of a compiled model")
    if manifest.get("refexit_compiled") != MANIFEST_FORMAT or manifest.get("codegen_format") != _emit.CODEGEN_FORMAT:
        raise CheckpointError(f"{path}: compiled by another refexit version (format "
                              f"{manifest.get('codegen_format')}); compile again")
    return CompiledModel(out, manifest)
