"""The scoring side of a compiled model: C handles opened over ONE read-only mapping of the weights
file (`<prefix>_open_memory`), each tokenizing in C (`<prefix>_tokenize`) and classifying a batch
(`<prefix>_classify_batch`). cffi releases the GIL during every C call (tests/test_score.py checks
it on this binding's own ffi), so one Python thread per handle keeps every core busy.

A Scorer is used by one thread at a time; make one per worker thread (they share the mapping)."""
from __future__ import annotations

import mmap
import threading

import numpy as np

from refexit.errors import InputError
from refexit.nn import softmax


class SharedWeights:
    """The weights file of an opened CompiledModel, mapped once (read-only, page-aligned: the C code
    wants 64-byte alignment) for every handle of this process."""

    def __init__(self, cm):
        self.cm = cm
        with open(cm.weights_path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.ptr = cm.ffi.from_buffer("char[]", self.map)
        self.thresholds = cm.thresholds if cm.num_layers > 1 else None       # [L-1] in force
        self.lock = threading.Lock()


class Scorer:
    """One C handle over SharedWeights, with its own token buffers for batches of up to `batch` texts."""

    def __init__(self, shared: SharedWeights, batch: int = 32, threads: int = 1):
        cm = shared.cm
        self.shared, self.ffi, self.lib, p = shared, cm.ffi, cm.lib, cm.prefix
        self.cm, self.batch = cm, int(batch)
        self._tokenize = getattr(self.lib, f"{p}_tokenize")
        self._classify_batch = getattr(self.lib, f"{p}_classify_batch")
        handle = self.ffi.new(f"{p}_model **")
        st = getattr(self.lib, f"{p}_open_memory")(shared.ptr, len(shared.map), handle)
        if st:
            raise cm._error(st, str(cm.weights_path))
        self._m = self.ffi.gc(handle[0], getattr(self.lib, f"{p}_close"))
        self._check(getattr(self.lib, f"{p}_set_threads")(self._m, int(threads)), f"set_threads({threads})")
        thr = shared.thresholds
        if thr is not None:                           # the policy in force on the opened model (overrides)
            if cm.policy_name in ("patience", "window", "static"):
                st = getattr(self.lib, f"{p}_set_threshold")(self._m, float(thr[0]))
            else:
                st = getattr(self.lib, f"{p}_set_thresholds")(self._m, self.ffi.from_buffer("float[]", thr),
                                                              thr.size)
            self._check(st, "set_thresholds")
        T = cm.max_length
        self.ids = np.zeros(self.batch * T, np.int32)             # [batch * T] back to back
        self.types = np.zeros(self.batch * T, np.int32)
        self.lengths = np.zeros(self.batch, np.int32)             # [batch]
        self.out = np.zeros(self.batch, cm._dtype)                # [batch] C results
        f = self.ffi.from_buffer
        self._ids_p, self._types_p = f("int32_t[]", self.ids), f("int32_t[]", self.types)
        self._len_p = f("int32_t[]", self.lengths)
        self._out_p = f(f"{p}_result[]", self.out, require_writable=True)
        self._n = self.ffi.new("int *")
        self.layers_run = None                                    # [batch] the layers each ran (skip gates)
        if cm._skips:                                             # SmartBERT: the call that reports them
            self._classify_run = getattr(self.lib, f"{p}_classify_batch_run")
            self.layers_run = np.zeros(self.batch, np.int32)
            self._run_p = f("int32_t[]", self.layers_run, require_writable=True)
        self.specials = (cm.special_tokens(False), cm.special_tokens(True))   # a text of only these is empty

    def _check(self, st: int, what: str) -> None:
        if st:
            raise self.cm._error(st, what)

    def close(self) -> None:
        if self._m is not None:
            self.ffi.release(self._m)
            self._m = None

    def classify(self, texts: list[bytes], pairs: list | None = None):
        """UTF-8 texts (pairs[i]: None or the second text) -> (results [n] structured array of
        logits/label/exit_layer/score/margin, empty [n] bool: no token besides the special ones,
        layers run [n] int32 when the model has skip gates (SmartBERT; 0 for an empty text), else
        None). len(texts) <= batch. Texts are truncated to the compiled maximum length."""
        n = len(texts)
        if n > self.batch:
            raise InputError(f"{n} texts for a batch of {self.batch}")
        T, null = self.cm.max_length, self.ffi.NULL
        empty = np.zeros(n, bool)
        k = 0                                          # sequences packed so far
        off = 0
        for i, t in enumerate(texts):
            pair = None if pairs is None else pairs[i]
            st = self._tokenize(self._m, t, len(t), null if pair is None else pair, 0 if pair is None else len(pair),
                                0, self._ids_p + off, self._types_p + off, T, self._n)
            self._check(st, f"tokenize (text {i})")
            m = self._n[0]
            if m <= self.specials[pair is not None]:
                empty[i] = True
                continue
            self.lengths[k] = m
            k += 1
            off += m
        args = (self._m, self._ids_p, self._types_p, self._len_p, k, self._out_p)
        if k and self.layers_run is None:
            self._check(self._classify_batch(*args), "classify_batch")
        elif k:
            self._check(self._classify_run(*args, self._run_p, null), "classify_batch_run")
        res = np.zeros(n, self.cm._dtype)
        res[~empty] = self.out[:k]
        if self.layers_run is None:
            return res, empty, None
        run = np.zeros(n, np.int32)
        run[~empty] = self.layers_run[:k]
        return res, empty, run


def probabilities(logits: np.ndarray) -> np.ndarray:
    """[n, C] float32 logits -> [n, C] softmax (the same as the oracle's records)."""
    return softmax(logits.astype(np.float64), axis=-1)
