"""CascadeBERT's difficulty-aware regularisation (DAR) on a frozen backbone: `train-exits --objective
cascadebert` (docs/methods.md, "CascadeBERT's difficulty-aware regularisation"; the cascade itself is
refexit.Cascade).

What the paper's code does (lancopku/CascadeBERT: cascade_bert.py `pair_loss` and `forward`,
run_cascade.py, glue_mrpc.sh):
  - every training instance carries a difficulty label d in {0: easy, 1: hard}, read from a file
    (`<task>.train.dif_5seeds-2level.json`, "the training data with associated data difficulty for a
    2L BERT-Complete model"). Easy means the small member predicts it correctly (the authors,
    lancopku/CascadeBERT issue 1: "easy examples (i.e., the model can predict correctly)"); the
    script that wrote the file is not published, its name says 5 seeds and 2 levels.
  - in every training mini-batch, each easy instance i is paired with one hard instance j drawn
    uniformly, with replacement, from the batch's hard ones (torch.multinomial); conf = max softmax(z)
    of the small member's logits (no temperature); the term is
        mean over the pairs of max(0, margin - (conf_i - conf_j))
    (nn.MarginRankingLoss with target +1: 1/(1 + d_i) = 1 >= 1/(1 + d_j) = 0.5); 0 when the batch has
    no easy or no hard instance.
  - loss = sum over the members of CE + dar_weight * that term on the small member only (the largest
    member's confidence never decides anything); glue_mrpc.sh: margin 0.5, weight 0.5.

Here (frozen backbone): member k < L is the truncation "layers 1..k, then exit head k", so its
trainable part is head k; each exit head 1..L-1 is trained on CE + weight * DAR with its own
difficulty labels (any of them can be a cascade's small member: `evaluate --cascade K`); the last
layer's classifier (the complete model) is trained by CE alone, or is the checkpoint's.
Difficulty labels of head k: `seeds` heads at layer k trained by CE alone (seeds seed .. seed+S-1,
the deebert recipe: same optimiser, batches, early stopping), and an instance is easy when every one
of them predicts its label ("every one" is our reading of "5seeds-2level"). The dev split is labelled
by the same heads: the DAR head is early-stopped on the dev value of its own objective, its dev pairs
drawn once (the paper keeps the checkpoint with the best dev accuracy). Pairs are drawn by a
generator of their own, so the head's initialisation and batch order are deebert's from the same
seed (weight 0 gives the deebert head, bit for bit).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from refexit import nn
from refexit.errors import InputError

WEIGHT, MARGIN, SEEDS = 0.5, 0.5, 5          # glue_mrpc.sh's DAR_WEIGHT, CONF_MARGIN; "5seeds"


def check_settings(weight, margin, seeds, kind: str = "mean_linear") -> None:
    """InputError unless weight and margin are finite numbers >= 0, seeds an integer >= 1 and the head
    kind one trained from the [CLS]/mean feature cache."""
    if kind == "fastbert":
        raise InputError("cascadebert trains heads from the [CLS]/mean feature cache: mean_linear, pooler_linear, "
                         "shared_pooler or scalar_mix, not fastbert")
    for name, v in (("weight", weight), ("margin", margin)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"cascadebert: the DAR {name} must be a finite number >= 0, got {v!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise InputError(f"cascadebert: the number of labelling seeds must be an integer >= 1, got {seeds!r}")


def difficulty(preds, y) -> np.ndarray:
    """preds [S, N] the labels S models predict, y [N] -> d [N]: 0 (easy) when all S predict y, else 1."""
    preds, y = np.asarray(preds), np.asarray(y)
    if preds.ndim != 2 or preds.shape[1] != len(y) or len(preds) == 0:
        raise InputError(f"difficulty: predictions [S >= 1, {len(y)}] expected, got shape {preds.shape}")
    return np.any(preds != y[None, :], axis=0).astype(np.int64)


def pairs(d, rng) -> tuple[np.ndarray, np.ndarray]:
    """d [N] difficulty labels -> (easy [E], hard [E]) row indices: every easy row once, in order, each
    with a hard row drawn uniformly with replacement (pair_loss); empty when either kind is missing."""
    d = np.asarray(d)
    easy, hard = np.flatnonzero(d == 0), np.flatnonzero(d == 1)
    if len(easy) == 0 or len(hard) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return easy, hard[rng.integers(0, len(hard), len(easy))]


def confidence(z) -> tuple[np.ndarray, np.ndarray]:
    """z [N, C] logits -> (conf [N] = max softmax(z), dconf/dz [N, C] = p_a (onehot(a) - p), a = argmax)."""
    p = nn.softmax(np.asarray(z, np.float64))                                  # [N, C]
    a = nn.argmax(p)                                                           # [N], ties to the lower index
    c = p[np.arange(len(p)), a]                                                # [N]
    dc = -c[:, None] * p                                                       # [N, C]
    dc[np.arange(len(p)), a] += c
    return c, dc


def dar_loss(z, easy, hard, margin: float) -> tuple[float, np.ndarray]:
    """mean over the pairs of max(0, margin - (conf[easy] - conf[hard])) and dLoss/dz [N, C]."""
    z = np.asarray(z, np.float64)
    dz = np.zeros_like(z)
    if len(easy) == 0:
        return 0.0, dz
    c, dc = confidence(z)                                                      # [N], [N, C]
    h = margin - (c[easy] - c[hard])                                           # [E]
    g = (h > 0) / len(h)                                                       # [E] dLoss/dh
    dconf = np.zeros(len(z))
    np.add.at(dconf, easy, -g)
    np.add.at(dconf, hard, g)
    return float(np.mean(np.maximum(h, 0))), dconf[:, None] * dc


def rank_auc(conf, correct) -> float:
    """How often a correctly predicted instance has a higher confidence than a wrong one (ties count
    1/2), over all (correct, wrong) pairs: the ROC AUC of conf for correctness; NaN without both kinds."""
    from refexit.train.evaluate import _ranks
    conf, correct = np.asarray(conf, np.float64), np.asarray(correct, bool)
    n1, n0 = int(correct.sum()), int((~correct).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((_ranks(conf)[correct].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def labels(kind, model, x, q, x_dev, q_dev, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Difficulty labels (d [N], d_dev [N_dev]) of one head's training and dev instances: hard (1) when
    any of cfg.dar_seeds heads trained by CE alone (seeds cfg.seed + s, each its own generator)
    predicts a label other than the instance's; q, q_dev one-hot [N, C]."""
    from refexit.train import exits as T
    y, y_dev = nn.argmax(q), nn.argmax(q_dev)
    preds, preds_dev = [], []
    for s in range(cfg.dar_seeds):
        p, _ = T.train_head(kind, model, x, q, x_dev, q_dev, replace(cfg, seed=cfg.seed + s),
                            np.random.default_rng(cfg.seed + s))
        preds.append(nn.argmax(T.head_forward(p, x)[1]))
        preds_dev.append(nn.argmax(T.head_forward(p, x_dev)[1]))
    return difficulty(preds, y), difficulty(preds_dev, y_dev)


def train_member(kind, model, x, y, x_dev, y_dev, C: int, cfg, rng, layer: int):
    """One exit head (a truncated member's trainable part) on CE + cfg.dar_weight * DAR.
    x [N, H] (scalar_mix [N, k, H]) head inputs, y [N] int labels; rng: the run's generator (init and
    batch order, as deebert's train_head). -> (params, fit log, facts for exits.json)."""
    from refexit.train import exits as T
    x, x_dev = np.asarray(x, np.float64), np.asarray(x_dev, np.float64)
    q, q_dev = np.eye(C)[y], np.eye(C)[y_dev]
    d, d_dev = labels(kind, model, x, q, x_dev, q_dev, cfg)
    pair_rng = np.random.default_rng([cfg.seed, layer])
    e_dev, h_dev = pairs(d_dev, pair_rng)
    w, m = cfg.dar_weight, cfg.dar_margin

    def dar(e, h):                                    # z -> the weighted DAR term and its gradient
        def term(z):
            loss, dz = dar_loss(z, e, h, m)
            return w * loss, w * dz
        return term

    def loss_grad(p, idx):
        return T.head_loss(p, x[idx], q[idx], extra=dar(*pairs(d[idx], pair_rng)))
    params = T._init_head(kind, model, x.shape[-1], C, rng, x.shape[1] if x.ndim == 3 else 1)
    params, log = T.fit(params, loss_grad, len(x), lambda p: T.head_loss(p, x_dev, q_dev, extra=dar(e_dev, h_dev))[0],
                        cfg, rng)
    z_dev = T.head_forward(params, x_dev)[1]
    auc = rank_auc(confidence(z_dev)[0], nn.argmax(z_dev) == y_dev)
    facts = {"layer": layer, "hard_train": float(d.mean()), "hard_dev": float(d_dev.mean()),
             "dev_rank_auc": None if math.isnan(auc) else auc,         # None: no right or no wrong dev answer
             "dev_dar": dar_loss(z_dev, e_dev, h_dev, m)[0]}
    return params, log, facts
