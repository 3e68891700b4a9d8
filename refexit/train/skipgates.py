"""SmartBERT's skip gates on a frozen backbone: training, and the one-pass replay `evaluate` uses.

The paper (Hu et al., IJCAI 2023; HuBoren99/SmartBert, models/SmartBert.py) trains the backbone, the
gates and the final classifier jointly in its first stage:
    h_i = g_i * h_{i-1} + (1 - g_i) * layer_i(h_{i-1})            (soft residual gating)
    loss = CE(classifier_L(h_L), y) + lambda / sum_i mean_batch(g_i)
with the hard gates 1[g_i >= 0.5] in the forward pass and the soft g_i's gradient (straight
through) after its first three of five epochs (`special_training_mode`), plus a small
cross-layer contrastive term (eta1 = 0.01) that shapes the backbone's token states.

Here the backbone (embeddings, every layer) and the final classifier are FROZEN: only the gates
learn. The loss is the paper's CE + lambda / sum mean g (lambda 0.04, its run.sh), soft gating for
the first `soft_epochs` epochs, then straight-through hard gates; the gradient flows through the
frozen layers (refexit/train/backward.py's hand-written backward pass, whose parameter gradients
are simply not used) to every gate, including a gate's effect on the later gates' inputs. Not
copied: the contrastive term (it trains backbone states, which are frozen here), and the updates of
the backbone and the classifier (so a skipped layer's effect cannot be compensated by the layers
around it, as in the joint training). The exit heads are the ones of `train-exits` (trained on the
full, unskipped backbone's states), where the paper trains its exits in a second stage on the
gated backbone.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from refexit import nn
from refexit import skipgates as G
from refexit.errors import InputError
from refexit.policies import ExitWarning
from refexit.results import ClassifyResult
from refexit.train import backward as BW


@dataclass
class GateConfig:
    epochs: int = 3
    soft_epochs: int = 1          # epochs with soft gating, then hard gates (straight through)
    lam: float = 0.04             # lambda of lambda / sum_i mean g_i (SmartBERT's run.sh)
    lr: float = 1e-3
    batch_size: int = 16
    gate: float = 0.5             # the skip threshold of the hard gates (skipped_rate)
    width: int = G.GATE_WIDTH
    heads: int = G.GATE_HEADS
    init_bias: float = 0.0        # added to out.b at initialisation
    seed: int = 0
    max_train: int = 2000         # training examples used (the first N of a shuffled order)
    max_dev: int = 500            # dev examples of the per-epoch report (accuracy, skip rates)

    def check(self):
        for k in ("epochs", "batch_size", "width", "heads", "max_train", "max_dev"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"gate training: {k} must be a positive integer, got {v!r}")
        if not 0 <= self.soft_epochs <= self.epochs:
            raise InputError(f"gate training: soft_epochs must be in 0..epochs, got {self.soft_epochs}")
        for k in ("lam", "lr", "gate", "init_bias"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"gate training: {k} must be a finite number, got {v!r}")
        if self.lam < 0 or self.lr <= 0 or self.gate <= 0:
            raise InputError("gate training: lam >= 0, lr > 0 and gate > 0 are required")
        if self.width % self.heads:
            raise InputError(f"gate training: width {self.width} is not divisible by {self.heads} heads")


# ================================================================ one gate, batched (padded)
def gate_fwd(p: dict, x, key_mask, heads: int):
    """x [N, H] padded rows (N = B T), key_mask [B, T] -> (g [B], cache). skipgates.gate_logit, batched."""
    B, T = key_mask.shape
    W = p["proj.w"].shape[0]
    d = W // heads
    y = np.tanh(nn.linear(x, p["proj.w"], p["proj.b"]))                    # [N, W]
    k = nn.linear(y, p["k.w"], p["k.b"]).reshape(B, T, heads, d)          # [B, T, nh, d]
    v = nn.linear(y, p["v.w"], p["v.b"]).reshape(B, T, heads, d)
    y0 = y.reshape(B, T, W)[:, 0]                                          # [B, W]
    q = nn.linear(y0, p["q.w"], p["q.b"]).reshape(B, heads, d)            # [B, nh, d]
    s = np.einsum("bhd,bthd->bht", q, k) / np.sqrt(d)                      # [B, nh, T]
    s = np.where(key_mask[:, None, :], s, -np.inf)
    pr = nn.softmax(s)                                                     # [B, nh, T]
    c = np.einsum("bht,bthd->bhd", pr, v).reshape(B, W)                    # [B, W]
    a = nn.linear(c, p["out.w"], p["out.b"])[:, 0]                         # [B]
    g = nn.sigmoid(a)
    return g, (x, y, y0, q, k, v, pr, c, g, heads)


def gate_bwd(dg, cache, p: dict):
    """dg [B] -> (dx [N, H], grads of the gate's parameters)."""
    x, y, y0, q, k, v, pr, c, g, heads = cache
    B, T, nh, d = k.shape
    W = nh * d
    da = dg * g * (1 - g)                                                  # [B]
    grads = {"out.w": da[None, :] @ c, "out.b": np.array([da.sum()])}
    dc = (da[:, None] * p["out.w"][0][None, :]).reshape(B, nh, d)         # [B, nh, d]
    dpr = np.einsum("bhd,bthd->bht", dc, v)                                # [B, nh, T]
    dv = np.einsum("bht,bhd->bthd", pr, dc).reshape(B * T, W)
    ds = pr * (dpr - np.sum(dpr * pr, axis=-1, keepdims=True)) / np.sqrt(d)
    dq = np.einsum("bht,bthd->bhd", ds, k).reshape(B, W)
    dk = np.einsum("bht,bhd->bthd", ds, q).reshape(B * T, W)
    grads["q.w"], grads["q.b"] = dq.T @ y0, dq.sum(0)
    grads["k.w"], grads["k.b"] = dk.T @ y, dk.sum(0)
    grads["v.w"], grads["v.b"] = dv.T @ y, dv.sum(0)
    dy = dk @ p["k.w"] + dv @ p["v.w"]                                     # [N, W]
    dy.reshape(B, T, W)[:, 0] += dq @ p["q.w"]
    dpre = dy * (1 - y * y)
    grads["proj.w"], grads["proj.b"] = dpre.T @ x, dpre.sum(0)
    return dpre @ p["proj.w"], grads


# ================================================================ the gated backbone, batched
def _layers(model):
    c = model.config
    return [model._layers[i] for i in range(c.num_hidden_layers)], c.num_attention_heads, c.hidden_act, \
        c.layer_norm_eps


def embed_batch(model, rows):
    """rows: [(ids [n], types [n])] -> x [B T, H] (padded with zeros), key_mask [B, T]."""
    T = max(len(r[0]) for r in rows)
    H = model.config.hidden_size
    x = np.zeros((len(rows), T, H), model.dtype)
    mask = np.zeros((len(rows), T), bool)
    for b, (ids, types) in enumerate(rows):
        x[b, :len(ids)] = model.embed(ids, types)
        mask[b, :len(ids)] = True
    return x.reshape(-1, H), mask


def gated_forward(model, gates, x, mask, heads: int, hard: bool, gate: float = 0.5, keep_cache: bool = True):
    """The backbone with gates on a padded batch. hard: h_i = h_{i-1} where g_i >= gate, else the
    layer's output (forward value of the straight-through gate); soft: g h_{i-1} + (1 - g) layer(h_{i-1}).
    -> (h_L [N, H], g [L, B], per-layer cache)."""
    layers, nh, act, eps = _layers(model)
    B, T = mask.shape
    gs, cache = [], []
    for i, lp in enumerate(layers):
        g, gc = gate_fwd(gates[i], x, mask, heads)                         # [B]
        w = (g >= gate).astype(x.dtype) if hard else g                     # the forward value of the gate
        y, lc = BW.layer_fwd(x, mask, lp, nh, act, eps)                    # [N, H]
        wr = np.repeat(w, T)[:, None]                                       # [N, 1]
        x_new = wr * x + (1 - wr) * y
        if keep_cache:
            cache.append((x, y, w, gc, lc))
        gs.append(g)
        x = x_new
    return x, np.array(gs), cache


def loss_grads(model, gates, x0, mask, labels, cfg: GateConfig, hard: bool):
    """CE(final head(h_L), y) + lam / sum_i mean g_i -> (loss, ce, grads per gate [L] dicts, g [L, B])."""
    L = model.num_layers
    B, T = mask.shape
    head = model.heads[L - 1]
    pooler = (model.weights["pooler.w"], model.weights["pooler.b"]) if "pooler.w" in model.weights else None
    h, gs, cache = gated_forward(model, gates, x0, mask, cfg.heads, hard, cfg.gate)
    z, _, hc = BW.head_fwd(head.kind, h, mask, head.params, pooler, head.l2norm, head.attn_heads)
    ce, dz, _ = BW.cross_entropy(z, labels)
    S = float(np.sum(gs.mean(axis=1)))
    loss = ce + (cfg.lam / S if S > 0 else math.inf)
    dh, _, _ = BW.head_bwd(dz, hc, head.params, pooler)                   # [N, H]
    layers, _, _, _ = _layers(model)
    grads = [None] * L
    for i in range(L - 1, -1, -1):
        x, y, w, gc, lc = cache[i]
        wr = np.repeat(w, T)[:, None]
        dg = np.sum((dh * (x - y)).reshape(B, T, -1), axis=(1, 2))          # straight through in hard mode
        dg = dg - cfg.lam / (S * S) / B                                     # d(lam / S) / d g_b
        dx_gate, grads[i] = gate_bwd(dg, gc, gates[i])
        dx = wr * dh + dx_gate
        if np.any(w < 1):                                                   # the layer ran for someone
            dxl, _ = BW.layer_bwd((1 - wr) * dh, lc, layers[i])
            dx = dx + dxl
        dh = dx
    return loss, ce, grads, gs


def train_gates(model, train_rows, y_train, dev_rows, y_dev, cfg: GateConfig | None = None, progress=True):
    """Train L skip gates on the frozen backbone. train_rows / dev_rows: [(ids, types)] per sample
    (Model.rows). -> (gates [L] dicts of float32 arrays, log)."""
    from refexit.train.exits import Adam
    from refexit.train.finetune import length_batches
    cfg = cfg or GateConfig()
    cfg.check()
    L, H = model.num_layers, model.config.hidden_size
    if model.heads[L - 1] is None:
        raise InputError("training skip gates needs the final classifier (train exits first)")
    if model.heads[L - 1].kind == "fastbert":
        raise InputError("training skip gates through a fastbert final head is not supported")
    rng = np.random.default_rng(cfg.seed)
    gates = G.init_gates(L, H, rng, cfg.width, cfg.init_bias)
    idx = rng.permutation(len(train_rows))[:cfg.max_train]
    rows = [train_rows[i] for i in idx]
    y = np.asarray(y_train)[idx]
    lengths = np.array([len(r[0]) for r in rows])
    flat = {f"{i}.{k}": v for i, g in enumerate(gates) for k, v in g.items()}
    opt = Adam(flat, cfg.lr)
    log = {"config": asdict(cfg), "epochs": []}
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        hard = epoch >= cfg.soft_epochs
        tot, tot_ce, n = 0.0, 0.0, 0
        batches = length_batches(lengths, cfg.batch_size, rng)
        for bi, b in enumerate(batches):
            x0, mask = embed_batch(model, [rows[i] for i in b])
            loss, ce, grads, _ = loss_grads(model, gates, x0, mask, y[b], cfg, hard)
            opt.step(flat, {f"{i}.{k}": v for i, g in enumerate(grads) for k, v in g.items()})
            for i, g in enumerate(gates):                                   # the views of `flat`
                for k in g:
                    g[k] = flat[f"{i}.{k}"]
            tot, tot_ce, n = tot + loss * len(b), tot_ce + ce * len(b), n + len(b)
            if progress and bi % 20 == 0:
                print(f"\rtrain-gates: epoch {epoch + 1}/{cfg.epochs} ({'hard' if hard else 'soft'}) batch "
                      f"{bi + 1}/{len(batches)} loss {tot / n:.4f} ce {tot_ce / n:.4f} "
                      f"{time.monotonic() - t0:.0f}s", end="", flush=True)
        dev = skip_report(model, gates, dev_rows[:cfg.max_dev], np.asarray(y_dev)[:cfg.max_dev], cfg)
        log["epochs"].append({"epoch": epoch + 1, "hard": hard, "train_loss": tot / n, "train_ce": tot_ce / n,
                              "seconds": round(time.monotonic() - t0, 1), "dev": dev})
        if progress:
            print(f"\rtrain-gates: epoch {epoch + 1}: loss {tot / n:.4f} ce {tot_ce / n:.4f}; dev (hard gates, "
                  f"no exit) acc {100 * dev['accuracy']:.2f}% layers run {dev['mean_layers_run']:.2f}, skip rate "
                  f"per layer {[round(r, 3) for r in dev['skip_rate']]}")
    return [{k: np.asarray(v, np.float32) for k, v in g.items()} for g in gates], log


def skip_report(model, gates, rows, y, cfg: GateConfig, batch: int = 64) -> dict:
    """Hard gates, no exit: accuracy of the final classifier, skip rate per layer, mean layers run."""
    out = GatedOutputs(model, rows, batch=batch, gates=gates, heads=cfg.heads, gate=cfg.gate, exit_heads=False)
    pred = nn.argmax(out.final)
    skip = out.g >= cfg.gate                                                 # [N, L]
    return {"accuracy": float(np.mean(pred == np.asarray(y))), "skip_rate": skip.mean(0).tolist(),
            "mean_layers_run": float(model.num_layers - skip.sum(1).mean())}


# ================================================================ one pass, every threshold
class GatedOutputs:
    """One gated pass per sample (hard gates at `gate`, no exit): per layer the gate value g [N, L] and
    the exit head's logits on the state after layer i [L-1] x [N, C] (used only where layer i ran), and
    the final classifier's logits on h_L [N, C]. Since a gate reads the state the sample has when it
    reaches the layer, and an exit only stops the pass, the entropy exit at any threshold is a replay of
    this pass (`simulate`). Batched over padded samples (keys masked), as Model.classify per sample."""

    def __init__(self, model, rows, batch: int = 64, gates=None, heads=None, gate: float = 0.5,
                 exit_heads: bool = True, progress: bool = False):
        gates = gates if gates is not None else model.exits.gates
        heads = heads or model.exits.gate_heads
        L, N = model.num_layers, len(rows)
        self.gate = gate
        self.lengths = np.array([len(r[0]) for r in rows])
        self.g = np.zeros((N, L))
        self.logits = [np.zeros((N, model.num_labels)) for _ in range(L - 1)] if exit_heads else None
        self.final = np.zeros((N, model.num_labels))
        order = np.argsort(self.lengths, kind="stable")
        t0 = time.monotonic()
        for s in range(0, N, batch):
            b = order[s:s + batch]
            x, mask = embed_batch(model, [rows[i] for i in b])
            B, T = mask.shape
            layers, nh, act, eps = _layers(model)
            for i, lp in enumerate(layers):
                g, _ = gate_fwd(gates[i], x, mask, heads)
                self.g[b, i] = g
                y, _ = BW.layer_fwd(x, mask, lp, nh, act, eps)
                w = np.repeat((g >= gate).astype(x.dtype), T)[:, None]
                x = w * x + (1 - w) * y
                if i < L - 1 and exit_heads:
                    self.logits[i][b] = self._head(model, i, y, mask)        # head i on layer i's output
            self.final[b] = self._head(model, L - 1, x, mask)
            if progress:
                print(f"\rsmartbert: gated pass {min(s + batch, N)}/{N} {time.monotonic() - t0:.0f}s", end="",
                      flush=True)
        if progress:
            print()

    @staticmethod
    def _head(model, i, x, mask):
        h = model.heads[i]
        B, T = mask.shape
        xs = x.reshape(B, T, -1)
        return np.stack([h.logits(h.features(xs[b, :int(mask[b].sum())], model.weights.get("pooler.w"),
                                              model.weights.get("pooler.b"))) for b in range(B)])

    def __len__(self):
        return len(self.lengths)


def simulate(model, policy, out: GatedOutputs) -> ClassifyResult:
    """What Model.classify(texts, SkipEntropy(...)) returns, replayed from one gated pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        msgs = model.check_policy(policy)
    if policy.gate != out.gate:
        raise InputError(f"the gated pass was made with gate {out.gate}, the policy has {policy.gate}")
    L, N, C = model.num_layers, len(out), model.num_labels
    logits = np.zeros((N, C), model.dtype)
    exit_layers, run = np.zeros(N, np.int64), np.zeros(N, np.int64)
    flops, full, margins = np.zeros(N), np.zeros(N), np.full(N, math.inf)
    for b in range(N):
        n = int(out.lengths[b])
        lf, gf, ef = model.layer_flops(n), model.exits.gate_flops(n), model.embed_flops(n)
        full[b] = ef + L * lf + model.heads[L - 1].flops(n)
        flops[b] = ef
        for layer in range(1, L + 1):
            g = out.g[b, layer - 1]
            flops[b] += gf
            margins[b] = min(margins[b], abs(g - policy.gate))
            skipped = g >= policy.gate
            if not skipped:
                flops[b] += lf
                run[b] += 1
            if layer == L:
                logits[b], exit_layers[b] = out.final[b], L
                flops[b] += model.heads[L - 1].flops(n)
                break
            if skipped:
                continue
            z = out.logits[layer - 1][b]
            flops[b] += model.heads[layer - 1].flops(n)
            done, _, margin = policy.decide(layer, z, None, model.exits, {})
            margins[b] = min(margins[b], margin)
            if done:
                logits[b], exit_layers[b] = z, layer
                break
    return ClassifyResult(logits, exit_layers, L, model.label_names, flops, full, margins, repr(policy), None,
                          msgs, run)


def skip_rates(out: GatedOutputs, gate: float, res: ClassifyResult) -> np.ndarray:
    """[L] per layer: the share of the samples that reached the layer (did not exit before it) whose
    gate skipped it."""
    L = out.g.shape[1]
    reached = np.arange(1, L + 1)[None, :] <= res.exit_layers[:, None]      # [N, L]
    skipped = (out.g >= gate) & reached
    return skipped.sum(0) / np.maximum(reached.sum(0), 1)
