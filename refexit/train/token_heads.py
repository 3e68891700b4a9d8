"""FastBERT heads (`fastbert`: a small self-attention over every token) on a frozen backbone.

The [CLS]/mean feature cache (refexit.train.features) is not enough for them: the head's first
step, tanh(Linear(H -> 128)), is trained and reads every token's state of its layer. Two ways
were possible, and the cache is the one taken:
  - recompute the frozen backbone for every batch of every epoch (the oracle's forward): about
    21 MFLOP per token for MiniLM-L6 against ~0.75 MFLOP per token for the head's forward and
    backward, i.e. ~30x the work of training the heads, at every epoch of every head;
  - cache every real token's state of every layer once, compactly: float16 (11-bit mantissa,
    relative rounding < 4.9e-4; a state beyond float16's range is refused), one `.npy` file per
    layer of [sum of the real lengths, H] rows (no padding), memory-mapped. Rotten Tomatoes'
    train split (8,927 texts, 241,609 real tokens) is 6 x 186 MB = 1.1 GB on disk instead of
    5.3 GB as float32 padded to 64 tokens or 2.2 GB as unpadded float32; training reads one
    layer at a time (the heads are trained one after the other), so the resident memory is one
    layer's file at most. The states are computed once, by the fine-tuning code's batched
    float32 forward (`_batched_states`: its rows equal the oracle's to float32 rounding, far
    below float16's), ~6x faster than the oracle's exact-erf pass sample by sample.
The float16 states train the heads (and give the heads' outputs that `train-exits` records:
dev metrics, prototypes, exit table, temperatures); `refexit evaluate` runs the backbone once
more per split and evaluates the heads on float32 states (`head_outputs_exact`: the batched
forward's, equal to the oracle's to float32 rounding; exact=True: the oracle's own pass).

Training: refexit.train.exits.fit (Adam, early stopping on the dev loss) with length-bucketed
batches (refexit.train.finetune.length_batches: little padding); the forward and backward of the
head are refexit.train.backward.head_fwd / head_bwd (the fine-tuning code's, checked against
finite differences), in float32 with the parameters kept in float64 by the optimiser. The loss on
the logits is any of train-exits' objectives (exits.target_loss). Initialisation: BERT's, N(0,
0.02) weights and zero biases, as FastBERT's classifiers.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from refexit.errors import InputError
from refexit.heads import FASTBERT_WIDTH, param_shapes
from refexit.train import backward as BW
from refexit.train import features as F

STORE_DTYPE = np.float16
FORMAT = 1                     # bump when the stored files change meaning
EVAL_BATCH = 256


# ---------------------------------------------------------------- the float16 token cache
def _store_dir(key: str) -> Path:
    return F.cache_dir() / f"{key}-tokens16-{FORMAT}"


def _open_store(d: Path, L: int):
    """(Features with tokens = [L] read-only float16 memory maps), or None when absent / incomplete."""
    if not (d / "done").is_file():
        return None
    try:
        with np.load(d / "pooled.npz") as z:
            feats = F.Features(z["cls"], z["mean"], z["lengths"])
        feats.tokens = [np.load(d / f"layer_{i}.npy", mmap_mode="r") for i in range(L)]
    except (OSError, ValueError, KeyError):
        return None
    if any(len(t) != int(feats.lengths.sum()) for t in feats.tokens):
        return None
    return feats


def _batched_states(model, rows, lengths, keep, progress: bool, label: str, batch: int = 64):
    """Every layer's states of every sample, keep(i, b, x [n, H]): the embeddings from the oracle
    (Model.embed, per sample: every family's positions), then the layers as the fine-tuning forward
    computes them (refexit.train.backward.layer_fwd on length-sorted, right-padded float32 batches,
    erf32 GELU): each real row equals the oracle's to float32 rounding (|erf32 - erf| < 5e-7), far
    below the float16 rounding of the cache (4.9e-4 relative), and ~6x faster than the oracle's
    exact erf sample by sample (MiniLM, Rotten Tomatoes: 25 vs 150 ms a text on the shared machine)."""
    c, H = model.config, model.config.hidden_size
    order = np.argsort(lengths, kind="stable")
    bar = F.Progress(len(order), label, progress)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        lens = lengths[idx]
        B, T = len(idx), int(lens.max())
        x = np.zeros((B, T, H), np.float32)
        for r, b in enumerate(idx):
            x[r, :lens[r]] = model.embed(*rows[b])
        mask = np.arange(T)[None, :] < lens[:, None]
        x = x.reshape(B * T, H)
        for i in range(model.num_layers):
            x = BW.layer_fwd(x, mask, model._layers[i], c.num_attention_heads, c.hidden_act, c.layer_norm_eps)[0]
            xs = x.reshape(B, T, H)
            for r, b in enumerate(idx):
                keep(i, b, xs[r, :lens[r]])
        bar.update(s + B)
    bar.close()


def extract(model, texts: list[str], max_length: int = 128, pairs: list[str] | None = None,
            use_cache: bool = True, progress: bool = True, label: str = "features") -> F.Features:
    """Features of `texts` with `tokens`: [L] float16 memory maps [sum(lengths), H] of every real
    token's state (rows of sample b: offsets()[b]:offsets()[b + 1]); `cls` and `mean` from the same
    states (float32). Cached under the features cache's key (its own folder; the exact [CLS]/mean
    cache is left alone); one backbone pass when absent."""
    max_length = min(int(max_length), model.tokenizer.max_length)
    key = F.cache_key(model, texts, max_length, pairs)
    L, H = model.num_layers, model.config.hidden_size
    d = _store_dir(key)
    if use_cache:
        got = _open_store(d, L)
        if got is not None:
            got.key = key
            return got
    enc = model.tokenizer(list(texts), None if pairs is None else list(pairs), max_length=max_length)
    rows = model.rows(enc)
    lengths = np.array([len(ids) for ids, _ in rows], np.int64)
    offs = np.concatenate([[0], np.cumsum(lengths)])
    N = len(rows)
    cls, mean = np.zeros((L, N, H), np.float32), np.zeros((L, N, H), np.float32)
    F.cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=F.cache_dir() if use_cache else None, prefix=f"{key}-tmp"))
    try:
        maps = [np.lib.format.open_memmap(tmp / f"layer_{i}.npy", "w+", STORE_DTYPE, (int(offs[-1]), H))
                for i in range(L)]
        top = float(np.finfo(STORE_DTYPE).max)

        def keep(i, b, x):
            if not np.all(np.abs(x) <= top):
                raise InputError(f"layer {i + 1}'s hidden states of text {b} are beyond float16's range "
                                 f"(or not finite): fastbert heads cannot be trained from the float16 cache")
            maps[i][offs[b]:offs[b + 1]] = x
            cls[i, b], mean[i, b] = x[0], x.mean(axis=0)

        if getattr(model, "precision", "fp32") == "fp32":
            _batched_states(model, rows, lengths, keep, progress, label)
        else:                                   # the oracle's emulation of a lower precision
            F.compute(model, texts, max_length, False, progress, label, pairs, on_state=keep)
        for m in maps:
            m.flush()
        del maps
        np.savez(tmp / "pooled.npz", cls=cls, mean=mean, lengths=lengths)
        (tmp / "done").write_text(f"{N} texts, {int(offs[-1])} tokens\n")
        if use_cache:
            if d.exists():
                shutil.rmtree(d)
            os.replace(tmp, d)
            feats = _open_store(d, L)
        else:
            feats = _open_store(tmp, L)         # mapped: the files stay readable after the removal
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    feats.key = key
    return feats


def check_features(train, dev, L: int):
    for name, fe in (("train", train), ("dev", dev)):
        if fe.tokens is None or len(fe.tokens) != L:
            raise InputError(f"fastbert heads are trained on every token's states: the {name} features need "
                             f"them (refexit.train.token_heads.extract)")


def batch(feats: F.Features, layer: int, idx, dtype=np.float32):
    """Samples idx of 1-based `layer`, right-padded: x [B*T, H], key_mask [B, T]."""
    toks, offs = feats.tokens[layer - 1], feats.offsets()
    lens = feats.lengths[idx]
    T, B = int(lens.max()), len(idx)
    x = np.zeros((B, T, toks.shape[1]), dtype)
    for r, i in enumerate(idx):
        x[r, :lens[r]] = toks[offs[i]:offs[i + 1]]
    return x.reshape(B * T, -1), np.arange(T)[None, :] < lens[:, None]


def _chunks(feats: F.Features, size: int = EVAL_BATCH):
    order = np.argsort(feats.lengths, kind="stable")                   # little padding
    return [order[s:s + size] for s in range(0, len(order), size)]


# ---------------------------------------------------------------- loss, training, outputs
def init_params(H: int, C: int, rng, width: int = FASTBERT_WIDTH) -> dict:
    return {n: rng.normal(0, 0.02, s) if len(s) == 2 else np.zeros(s)
            for n, s in param_shapes("fastbert", H, C, width).items()}


def head_loss(params: dict, x, key_mask, q, scale: float = 1.0, distill=None, attn_heads: int = 2,
              dtype=np.float32, grad: bool = True):
    """exits.target_loss of a fastbert head's logits on a padded batch (x [B*T, H], key_mask
    [B, T]) and the gradients of its parameters (float64; grad=False: the loss only). Computed in
    `dtype`."""
    from refexit.train.exits import target_loss
    p = {k: np.asarray(v, dtype) for k, v in params.items()}
    z, _, cache = BW.head_fwd("fastbert", np.asarray(x, dtype), key_mask, p, attn_heads=attn_heads)
    loss, dz = target_loss(np.asarray(z, np.float64), q, scale, distill)
    if not grad:
        return loss
    _, grads, _ = BW.head_bwd(dz.astype(dtype), cache, p)
    return loss, {k: np.asarray(g, np.float64) for k, g in grads.items()}


def train_head(train: F.Features, dev: F.Features, layer: int, q, q_dev, cfg, rng, scale: float = 1.0,
               distill=None, distill_dev=None, attn_heads: int = 2):
    """One fastbert head on 1-based `layer`'s token states, targets q [N, C] (one-hot or a
    teacher's softmax), RomeBERT's distill tuples as exits.train_head. -> (params, log)."""
    from refexit.train.exits import _take, fit
    from refexit.train.finetune import length_batches
    H, C = train.tokens[layer - 1].shape[1], q.shape[1]
    params = init_params(H, C, rng)

    def loss_grad(p, idx):
        x, m = batch(train, layer, idx)
        return head_loss(p, x, m, q[idx], scale, _take(distill, idx), attn_heads)

    chunks = _chunks(dev)

    def dev_loss(p):
        total = 0.0
        for idx in chunks:
            x, m = batch(dev, layer, idx)
            total += len(idx) * head_loss(p, x, m, q_dev[idx], scale, _take(distill_dev, idx), attn_heads,
                                          grad=False)
        return total / len(dev)

    return fit(params, loss_grad, len(train), dev_loss, cfg, rng,
               batches=lambda r: length_batches(train.lengths, cfg.batch_size, r))


def head_outputs(head, feats: F.Features, layer: int):
    """(feat [N, W], logits [N, C]) float64 of a trained head on the cached (float16) states."""
    if feats.head_outputs is not None and feats.head_outputs[layer - 1] is not None:
        f, z = feats.head_outputs[layer - 1]
        return np.asarray(f, np.float64), np.asarray(z, np.float64)
    if feats.tokens is None:
        raise InputError("fastbert heads read every token's states, which these features lack")
    p = {k: np.asarray(v, np.float32) for k, v in head.params.items()}
    N = len(feats)
    f_out, z_out = np.zeros((N, head.feature_size)), np.zeros((N, head.num_labels))
    for idx in _chunks(feats):
        x, m = batch(feats, layer, idx)
        z, f, _ = BW.head_fwd("fastbert", x, m, p, attn_heads=head.attn_heads)
        f_out[idx], z_out[idx] = f, z
    return f_out, z_out


def head_outputs_exact(model, texts: list[str], max_length: int = 128, pairs: list[str] | None = None,
                       progress: bool = True, label: str = "features", exact: bool = True) -> F.Features:
    """Features of `texts` with head_outputs: every fastbert head of `model` applied, sample by
    sample, to the float32 states of one backbone pass (Head.features / Head.logits on the real
    tokens); not cached (they depend on the heads). exact=True: the oracle's pass (Model.layer, as
    Model.classify computes: the same bits); exact=False: the batched float32 forward of
    `_batched_states` (~6x faster; the states equal the oracle's to float32 rounding), with `cls`
    and `mean` from the same states."""
    max_length = min(int(max_length), model.tokenizer.max_length)
    heads = [h if h is not None and h.kind == "fastbert" else None for h in model.heads]
    N, L = len(texts), model.num_layers
    outs = [None if h is None else (np.zeros((N, h.feature_size), model.dtype),
                                    np.zeros((N, h.num_labels), model.dtype)) for h in heads]

    def apply(i, b, x):
        if heads[i] is not None:
            f = heads[i].features(x)
            outs[i][0][b], outs[i][1][b] = f, heads[i].logits(f)

    if exact or getattr(model, "precision", "fp32") != "fp32":
        feats = F.compute(model, texts, max_length, False, progress, label, pairs, on_state=apply)
    else:
        enc = model.tokenizer(list(texts), None if pairs is None else list(pairs), max_length=max_length)
        rows = model.rows(enc)
        lengths = np.array([len(ids) for ids, _ in rows], np.int64)
        H = model.config.hidden_size
        cls, mean = np.zeros((L, N, H), np.float32), np.zeros((L, N, H), np.float32)

        def both(i, b, x):
            cls[i, b], mean[i, b] = x[0], x.mean(axis=0)
            apply(i, b, x)

        _batched_states(model, rows, lengths, both, progress, label)
        feats = F.Features(cls, mean, lengths)
    feats.key = F.cache_key(model, texts, max_length, pairs)
    feats.head_outputs = outs
    return feats


def has_token_heads(model) -> bool:
    return any(h is not None and h.kind == "fastbert" for h in model.heads)

