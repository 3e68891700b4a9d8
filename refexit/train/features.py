"""Per-layer head inputs of a frozen backbone, extracted once per list of texts and cached.

With the backbone frozen, every exit head kind we train reads only two vectors per layer:
  cls[i-1]  = h_i[0], the [CLS] state after layer i       [N, H]   (pooler_linear, shared_pooler)
  mean[i-1] = mean over the real tokens of h_i            [N, H]   (mean_linear)
so training and threshold sweeps never run the backbone again. FastBERT heads need every token's
state; those are stored only when asked (`tokens=True`: they are ~T times bigger).

The states come from the oracle's own functions (Model.embed / Model.layer on each sample's real
tokens, exactly as Model.classify computes them), so exit logits computed from these features
are the oracle's. Samples are visited shortest first; there is no padding to waste, and
batching padded rows was measured no faster in NumPy (the exact-erf GELU dominates).

Cache: <$REFEXIT_CACHE or ~/.cache/refexit>/features/<key>.npz, key = sha256 of the backbone
weights, the tokenizer vocabulary, settings and behaviour (Tokenizer.behaviour: bumped whenever
the tokens of some text change), max_length and the texts. Written atomically.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refexit import nn
from refexit.errors import InputError

FORMAT = 1                 # bump when the stored arrays change meaning


@dataclass
class Features:
    cls: np.ndarray            # [L, N, H] h_i[0] after layer i (index i-1)
    mean: np.ndarray           # [L, N, H] mean of h_i over the sample's real tokens
    lengths: np.ndarray        # [N] real tokens per sample (after truncation to max_length)
    tokens: list | None = None     # [L] arrays [sum(lengths), H], all real tokens, when asked
    key: str = ""
    head_outputs: list | None = None   # [L] (feat [N, F], logits [N, C]) or None: heads that read every
                                       # token (fastbert), computed during the pass (token_heads.py)

    @property
    def num_layers(self) -> int:
        return self.cls.shape[0]

    def __len__(self) -> int:
        return self.cls.shape[1]

    def offsets(self) -> np.ndarray:       # [N+1] row ranges of each sample in tokens[i]
        return np.concatenate([[0], np.cumsum(self.lengths)])


# ---------------------------------------------------------------- cache
def cache_dir() -> Path:
    root = Path(os.environ.get("REFEXIT_CACHE") or "~/.cache/refexit").expanduser()
    return root / "features"


_WEIGHTS_HASH: dict[int, tuple] = {}


def weights_hash(model) -> str:
    """sha256 of the backbone weights as computed (names, dtype, shapes, bytes); memoised per model."""
    got = _WEIGHTS_HASH.get(id(model))
    if got and got[0] is model.weights:
        return got[1]
    h = hashlib.sha256()
    for name in sorted(model.weights):
        a = np.ascontiguousarray(model.weights[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    _WEIGHTS_HASH[id(model)] = (model.weights, h.hexdigest())
    return h.hexdigest()


def cache_key(model, texts: list[str], max_length: int, pairs: list[str] | None = None) -> str:
    h = hashlib.sha256(f"refexit-features-{FORMAT}|{weights_hash(model)}|{max_length}|".encode())
    tok = model.tokenizer
    h.update("\n".join(tok.vocab).encode())
    h.update(f"|{tok.do_lower_case}|{getattr(tok, 'strip_accents', None)}|{len(texts)}|".encode())
    # what the tokenizer does (its mode and, for the default mode, the behaviour it copies):
    # features cached under an older tokenizer are not served for the new one
    h.update(f"tokenizer={tok.behaviour}|cjk={tok.tokenize_chinese_chars}|".encode())
    if getattr(model, "precision", "fp32") != "fp32":     # with_precision keeps the fp32 weights
        h.update(f"precision={model.precision}|".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    if pairs is not None:                                 # sentence pairs: the second texts too
        h.update(b"pairs\0")
        for t in pairs:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
    return h.hexdigest()[:32]


def _save(path: Path, feats: Features):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"cls": feats.cls, "mean": feats.mean, "lengths": feats.lengths}
    for i, t in enumerate(feats.tokens or []):
        arrays[f"tokens_{i}"] = t
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path, key: str, tokens: bool) -> Features | None:
    try:
        with np.load(path) as z:
            L = z["cls"].shape[0]
            toks = [z[f"tokens_{i}"] for i in range(L)] if tokens else None
            return Features(z["cls"], z["mean"], z["lengths"], toks, key)
    except (OSError, KeyError, ValueError):
        return None                        # unreadable or partial: recompute


# ---------------------------------------------------------------- progress
class Progress:
    """A plain progress bar on stderr (\\r-updated on a terminal, a line per 10% otherwise)."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.monotonic()
        self.next_pct = 10

    def update(self, done: int):
        if not self.enabled:
            return
        now = time.monotonic()
        pct = 100 * done // self.total
        if self.tty and (now - self.last < 0.2 and done < self.total):
            return
        if not self.tty and pct < self.next_pct and done < self.total:
            return
        self.last, self.next_pct = now, pct // 10 * 10 + 10
        el = now - self.t0
        eta = el / done * (self.total - done) if done else 0.0
        bar = "#" * (30 * done // self.total)
        msg = f"{self.label} [{bar:<30}] {done}/{self.total} {el:.0f}s eta {eta:.0f}s"
        print(("\r" + msg) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


# ---------------------------------------------------------------- extraction
def compute(model, texts: list[str], max_length: int = 128, tokens: bool = False,
            progress: bool = True, label: str = "features", pairs: list[str] | None = None,
            on_state=None) -> Features:
    """Run the frozen backbone once per text (or text pair; oracle functions, real tokens only).
    on_state(i, b, x): called with every layer's states x [n, H] of sample b (0-based layer i)."""
    L, H = model.num_layers, model.config.hidden_size
    enc = model.tokenizer(list(texts), None if pairs is None else list(pairs), max_length=max_length)
    rows = model.rows(enc)
    N = len(rows)
    lengths = np.array([len(ids) for ids, _ in rows], np.int64)
    cls = np.zeros((L, N, H), model.dtype)
    mean = np.zeros((L, N, H), model.dtype)
    offs = np.concatenate([[0], np.cumsum(lengths)])
    toks = [np.zeros((offs[-1], H), model.dtype) for _ in range(L)] if tokens else None
    bar = Progress(N, label, progress)
    for done, b in enumerate(np.argsort(lengths, kind="stable"), start=1):   # shortest first
        ids, types = rows[b]
        x = model.embed(ids, types)                           # [n, H]
        for i in range(L):
            x = model.layer(i, x)                             # [n, H]
            cls[i, b] = x[0]
            mean[i, b] = x.mean(axis=0)                       # as Head.features(mean_linear)
            if tokens:
                toks[i][offs[b]:offs[b + 1]] = x
            if on_state is not None:
                on_state(i, b, x)
        bar.update(done)
    bar.close()
    return Features(cls, mean, lengths, toks)


def extract(model, texts: list[str], max_length: int = 128, tokens: bool = False,
            use_cache: bool = True, progress: bool = True, label: str = "features",
            pairs: list[str] | None = None) -> Features:
    """Features of `texts` (with `pairs`: of the sentence pairs), from the cache when present
    (computed and cached otherwise). max_length is clipped to the tokenizer's maximum."""
    max_length = min(int(max_length), model.tokenizer.max_length)
    key = cache_key(model, texts, max_length, pairs)
    plain, full = cache_dir() / f"{key}.npz", cache_dir() / f"{key}-tokens.npz"
    if use_cache:
        for path in ((full,) if tokens else (plain, full)):
            if path.exists():
                got = _load(path, key, tokens)
                if got is not None:
                    return got
    feats = compute(model, texts, max_length, tokens, progress, label, pairs)
    feats.key = key
    if use_cache:
        _save(full if tokens else plain, feats)
    return feats


# ---------------------------------------------------------------- head inputs
def head_input(feats: Features, layer: int, kind: str, model=None, l2norm: bool = False) -> np.ndarray:
    """What a head of `kind` after 1-based `layer` is trained on, [N, H]:
    mean_linear: the (optionally L2-normalised) mean; pooler_linear: h_i[0] (the head owns its
    pooler); shared_pooler: tanh(model pooler(h_i[0])), fixed because the pooler is frozen;
    scalar_mix: [N, layer, H], the same pooled vector of every layer 1..layer (the head mixes them)."""
    if kind == "mean_linear":
        m = feats.mean[layer - 1]
        return m / np.sqrt(np.sum(m * m, axis=-1, keepdims=True)) if l2norm else m
    if kind == "pooler_linear":
        return feats.cls[layer - 1]
    if kind in ("shared_pooler", "scalar_mix"):
        if model is None or "pooler.w" not in model.weights:
            raise InputError(f"{kind} heads need the model's pooler")
        pool = lambda c: np.tanh(nn.linear(c, model.weights["pooler.w"], model.weights["pooler.b"]))  # noqa: E731
        if kind == "shared_pooler":
            return pool(feats.cls[layer - 1])                                             # [N, H]
        return np.stack([pool(feats.cls[j]) for j in range(layer)], axis=1)               # [N, layer, H]
    raise InputError(f"head kind {kind!r} is not trainable from cached [CLS]/mean features "
                     f"(fastbert heads need the per-token states)")


def exit_features(head, feats: Features, layer: int, model=None) -> np.ndarray:
    """Head.features for every sample at once, [N, F]: the vector the head's fc, the LTE head and
    the ponder MLP read (pooler_linear: its own tanh pooler over h_i[0])."""
    x = head_input(feats, layer, head.kind, model, head.l2norm)
    if head.kind == "pooler_linear":
        return np.tanh(nn.linear(x, head.params["pooler.w"], head.params["pooler.b"]))
    if head.kind == "scalar_mix":
        return np.einsum("k,nkh->nh", head.mix_weights, x)                                # [N, H]
    return x
