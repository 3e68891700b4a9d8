"""Train exit heads on cached per-layer features, in NumPy (methods.md, "Training the exits").

The backbone is frozen, so every loss here is a small function of cached features with its
gradient written out by hand (and checked against finite differences in tests/test_train.py).
Optimiser: Adam on shuffled mini-batches, L2 weight decay on weight matrices, early stopping on
the dev loss (the best epoch's parameters are kept). Everything is deterministic given the seed.

Stages, for a model with L layers:
 1. the final classifier: a head of the same kind on layer L, cross-entropy (skipped when the
    checkpoint has its own classifier, which then stays the teacher and the last-layer answer);
 2. the exit heads on layers 1..L-1, by `objective`:
      deebert   sum_i CE(z_i, y)
      pabee     sum_i i * CE(z_i, y) / sum_j j
      fastbert  sum_i KL(p_L || p_i), teacher p_L = the final head's softmax (labels unused)
      romebert  sum_i [(1 - gamma) CE(z_i, y) + gamma T^2 KL(softmax(z_L/T) || softmax(z_i/T))],
                gamma 0.9, T 3, the teacher z_L a constant (RomeBERT's self-distillation; its
                gradient projection needs parameters shared by the exits and the last layer, and
                with the backbone frozen there are none: nothing is projected; `refexit fine-tune
                --objective romebert` projects)
      lte       BERxiT: heads as deebert, then the LTE head (always, not only as an extra)
      ponder    PALBERT: heads as deebert, then the lambda MLP (always)
      dact      DACT-BERT: heads as deebert, then their fc and the halting units together on
                task CE of the accumulated answer a_L + tau sum_{n<L} p_n (refexit/train/dact.py);
                the extras below see the DACT-tuned heads
      cascadebert  CascadeBERT: each head CE(z_i, y) + dar_weight * its difficulty-aware margin
                ranking term mean max(0, dar_margin - (conf_easy - conf_hard)) over in-batch pairs,
                difficulty = wrong under any of dar_seeds CE-trained heads (refexit/train/cascadebert.py)
    The exit heads share no parameters, so a sum of per-head terms is minimised by minimising
    each term: each head is trained (and early-stopped) on its own term. With a frozen backbone
    PABEE's weights therefore only rescale each head's loss, which Adam all but ignores: expect
    PABEE-trained heads to match DeeBERT-trained ones.
 3. extras (default all, `extras=()` for none):
      lte        one shared u = sigmoid(w . feat_i + b), MSE to 1[argmax z_i != y] over i < L
      ponder     lambda_i = sigmoid(MLP(feat_i + pos_i)); exit distribution
                 p_i = lambda_i prod_{j<i} (1 - lambda_j) for i < L, p_L = prod_{j<L} (1 - lambda_j);
                 objective  sum_i p_i CE_i + beta KL(p || Geometric(prior) truncated at L)
                 (PALBERT's expected-loss form; CE_i of the frozen, already trained heads). The
                 gradient uses S_i = lambda_i a_i + (1 - lambda_i) S_{i+1}, S_L = a_L with
                 a_i = CE_i + beta (log p_i - log g_i): dLoss/dlambda_i = r_i (a_i - S_{i+1}),
                 r_i = prod_{j<i} (1 - lambda_j) -- no division by (1 - lambda).
      calibrate  Right Tool: per layer T_i = argmin dev NLL of softmax(z_i / T_i) (golden-section
                 search on log T; the NLL is convex in 1/T).
      prototypes DE3-BERT: per exit layer i < L and class c, the mean of the trained head's feature
                 vectors feat_i over the training samples of class c ([L-1, C, F]; a class without
                 training samples gets the mean over all samples). Frozen-backbone variant: the
                 paper's distance-aware regulariser shapes the backbone's features while it is
                 fine-tuned; here the heads are trained as above and the prototypes computed after.
      gpf        (only when asked) Global Past-Future: poolers, imitation layers, projections and gate on
                 the cached [CLS] states (or token means: TrainConfig.gpf_pool "mean"), PABEE-weighted
                 CE + cosine imitation (refexit/train/gpf.py).
      edge_table EdgeBERT: the training samples sorted by the layer-1 exit head's entropy and cut
                 into K = 32 equal-count bins; row k = (mean layer-1 entropy of bin k, mean entropy
                 of the exit heads of layers 2..L-1 over bin k) ([K, L-1], rows by rising entropy).
FastBERT's own head kind (`fastbert`, attention over all tokens) reads every token's state, which
the [CLS]/mean cache does not hold: refexit.train.token_heads trains it from a float16 cache of
the per-token states (any objective above).

Regression (float labels, one output): every CE above becomes the mean squared error to the target
(HF's MSELoss), fastbert's KL the squared error to the final head's output; the extras that read
class probabilities (lte, ponder, calibrate, prototypes, edge_table) are refused. Exits of a
regression head run PABEE's regression rule, `patience` / `window` with tau (|y_i - y_{i-1}| < tau).

scalar_mix (Right Tool): the head after layer k mixes the frozen pooled vectors P_j =
tanh(model pooler(h_j[0])), j = 1..k, with w = a / ||a||_2 (a: `mix`, k raw weights, initialised
N(0, 1) as torch.randn in the paper's code), then fc. Right Tool minimises the unweighted sum of
the exits' CEs; with the backbone and the pooler frozen the heads share no parameters, so that sum
is minimised head by head (objective deebert). The gradient through the normalisation:
dL/da = (dL/dw - w (w . dL/dw)) / ||a||.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from refexit.train import features as F
from refexit import nn
from refexit.errors import InputError
from refexit.heads import MODEL_POOLER_KINDS, ExitParams, Head

OBJECTIVES = ("deebert", "pabee", "fastbert", "lte", "ponder", "dact", "romebert", "cascadebert")
REGRESSION_OBJECTIVES = ("deebert", "pabee", "fastbert")
TRAINABLE_KINDS = ("mean_linear", "pooler_linear", "shared_pooler", "scalar_mix", "fastbert")
EXTRAS = ("lte", "ponder", "calibrate", "prototypes", "edge_table")
OPTIONAL_EXTRAS = ("gpf",)      # trained only when asked for (--extras gpf): Global Past-Future, refexit/train/gpf.py
EDGE_ROWS = 32                  # rows of the EdgeBERT exit table (fewer with fewer training samples)
DECAY = ("fc.w", "w", "hid.w", "out.w")      # parameters under L2 weight decay


@dataclass
class TrainConfig:
    lr: float = 2e-3
    batch_size: int = 64
    max_epochs: int = 60
    patience: int = 5               # epochs without a dev improvement before stopping
    weight_decay: float = 1e-4
    seed: int = 0
    ponder_hidden: int = 32
    ponder_beta: float = 0.05       # weight of KL(p || geometric prior)
    ponder_prior: float = 0.3       # lambda of the geometric prior
    gpf_lr: float = 1e-3            # Global Past-Future (extra gpf): Adam learning rate
    gpf_epochs: int = 0             # Global Past-Future: its own epoch cap (0: max_epochs)
    gpf_pool: str = "cls"           # Global Past-Future: what its poolers read, "cls" (the paper) or "mean"
    dact_tau: float = 0.01          # DACT-BERT: weight of the ponder cost sum_{n<L} p_n
    dact_train_heads: bool = True   # DACT-BERT: fine-tune the exit heads' fc with the halting units
    romebert_gamma: float = 0.9     # weight of the distillation term (RomeBERT)
    romebert_temperature: float = 3.0
    dar_weight: float = 0.5         # CascadeBERT: weight of the difficulty-aware ranking term (glue_mrpc.sh)
    dar_margin: float = 0.5         # CascadeBERT: its confidence margin (glue_mrpc.sh)
    dar_seeds: int = 5              # CascadeBERT: CE-trained heads whose mistakes define "hard"


# ================================================================ losses with analytic gradients
def mix_weights(a):                                         # [k] raw -> (w = a / ||a||, ||a||)
    n = math.sqrt(float(np.sum(a * a)))
    return a / n, n


def head_forward(params: dict, x):
    """x [N, H] head input -> (feat [N, F], z [N, C]); a pooler when params has 'pooler.w';
    scalar_mix ('mix' in params): x [N, k, H] the pooled layers 1..k, feat = sum_j w_j x[:, j]."""
    if "mix" in params:
        feat = np.einsum("k,nkh->nh", mix_weights(params["mix"])[0], x)                 # [N, H]
    elif "pooler.w" in params:
        feat = np.tanh(nn.linear(x, params["pooler.w"], params["pooler.b"]))
    else:
        feat = x
    return feat, nn.linear(feat, params["fc.w"], params["fc.b"])


def _kl_rows(q, logp):                      # KL(q || p) per row, 0 log 0 = 0
    qlogq = np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)
    return np.sum(qlogq - q * logp, axis=1)


def target_loss(z, q, scale: float = 1.0, distill=None, mse: bool = False):
    """z [N, C] logits -> (loss, dLoss/dz [N, C]). The loss: scale * mean_n KL(q_n || softmax(z_n))
    (= cross-entropy for one-hot q); with distill = (qT [N, C], T, gamma), RomeBERT's
    scale * mean_n [(1 - gamma) KL(q_n || softmax(z_n)) + gamma T^2 KL(qT_n || softmax(z_n / T))];
    mse: scale * mean_n (z_n - q_n)^2 with q [N, 1] the regression targets (no distill)."""
    if mse:
        return scale * float(np.mean((z - q) ** 2)), scale * 2 * (z - q) / z.size
    logp = nn.log_softmax(z)                                                   # [N, C]
    loss = float(np.mean(_kl_rows(q, logp)))
    dz = (np.exp(logp) - q) / len(z)                                           # [N, C]
    if distill is not None:
        qT, T, g = distill
        logpT = nn.log_softmax(z / T)
        loss = (1 - g) * loss + g * T * T * float(np.mean(_kl_rows(qT, logpT)))
        dz = (1 - g) * dz + g * T * (np.exp(logpT) - qT) / len(z)
    return scale * loss, scale * dz


def _take(distill, idx):                   # the rows idx of a distill tuple (or None)
    return None if distill is None else (distill[0][idx],) + tuple(distill[1:])


def head_loss(params: dict, x, q, scale: float = 1.0, distill=None, mse: bool = False, extra=None):
    """target_loss of the head's logits (scale * mean_n KL(q_n || softmax(z_n)), = cross-entropy
    for one-hot q; RomeBERT's with distill; the MSE with mse) and its gradients; extra(z) -> (loss,
    dLoss/dz) is added (CascadeBERT's ranking term)."""
    feat, z = head_forward(params, x)
    loss, dz = target_loss(z, q, scale, distill, mse)                          # [N, C]
    if extra is not None:
        more, dmore = extra(z)
        loss, dz = loss + more, dz + dmore
    grads = {"fc.w": dz.T @ feat, "fc.b": dz.sum(0)}
    if "pooler.w" in params:
        da = (dz @ params["fc.w"]) * (1 - feat * feat)                         # [N, H]
        grads["pooler.w"], grads["pooler.b"] = da.T @ x, da.sum(0)
    if "mix" in params:
        w, norm = mix_weights(params["mix"])
        dw = np.einsum("nh,nkh->k", dz @ params["fc.w"], x)                            # [k] dLoss/dw
        grads["mix"] = (dw - w * float(w @ dw)) / norm                                 # through w = a / ||a||
    return loss, grads


def lte_loss(params: dict, feat, wrong):
    """mean (sigmoid(w . feat + b) - wrong)^2 over rows; feat [M, F], wrong [M] in {0, 1}."""
    u = nn.sigmoid(nn.linear(feat, params["w"], params["b"])[:, 0])           # [M]
    loss = float(np.mean((u - wrong) ** 2))
    da = 2 * (u - wrong) * u * (1 - u) / len(u)                                # [M]
    return loss, {"w": da[None, :] @ feat, "b": np.array([da.sum()])}


def _log_sigmoid(o):                  # log sigmoid(o), stable for large |o|
    return -np.logaddexp(0, -o)


def ponder_dist(params: dict, feat):
    """feat [K, N, F] for layers 1..K=L-1 -> (log p [L, N], lambda [K, N], cache for backward)."""
    s = feat + params["pos"][:len(feat), None, :]                              # [K, N, F]
    h = np.tanh(nn.linear(s, params["hid.w"], params["hid.b"]))               # [K, N, P]
    o = nn.linear(h, params["out.w"], params["out.b"])[..., 0]                 # [K, N]
    loglam, log1m = _log_sigmoid(o), _log_sigmoid(-o)
    logr = np.concatenate([np.zeros_like(o[:1]), np.cumsum(log1m, axis=0)])    # [L, N] log prod_{j<i}(1-lam_j)
    logp = logr.copy()
    logp[:-1] += loglam
    return logp, np.exp(loglam), (s, h, logr)


def ponder_prior_logp(L: int, prior: float) -> np.ndarray:      # [L] truncated geometric
    k = np.arange(L, dtype=np.float64)
    logg = math.log(prior) + k * math.log1p(-prior)
    logg[-1] = (L - 1) * math.log1p(-prior)
    return logg


def ponder_loss(params: dict, feat, ce, beta: float, prior: float):
    """mean_n [sum_i p_i CE_i + beta KL(p || geometric)]; feat [L-1, N, F], ce [L, N]."""
    logp, lam, (s, h, logr) = ponder_dist(params, feat)
    L, N = ce.shape
    p = np.exp(logp)                                                           # [L, N]
    a = ce + beta * (logp - ponder_prior_logp(L, prior)[:, None])              # dLoss/dp_i - beta
    loss = float(np.mean(np.sum(p * a, axis=0)))
    S = np.empty_like(a)                                                       # expected a from layer i on
    S[-1] = a[-1]
    for i in range(L - 2, -1, -1):
        S[i] = lam[i] * a[i] + (1 - lam[i]) * S[i + 1]
    dlam = np.exp(logr[:-1]) * (a[:-1] - S[1:]) / N                            # [K, N]
    do = dlam * lam * (1 - lam)                                                # [K, N]
    dh = do[..., None] * params["out.w"][0]                                    # [K, N, P]
    ds = dh * (1 - h * h)                                                      # [K, N, P]
    K = len(do)
    grads = {"out.w": np.einsum("kn,knp->p", do, h)[None, :], "out.b": np.array([do.sum()]),
             "hid.w": np.einsum("knp,knf->pf", ds, s), "hid.b": ds.sum((0, 1)),
             "pos": np.zeros_like(params["pos"])}
    grads["pos"][:K] = (ds @ params["hid.w"]).sum(1)
    return loss, grads


def nll(z, y, T: float = 1.0) -> float:                      # mean -log softmax(z / T)[y]
    logp = nn.log_softmax(np.asarray(z, np.float64) / T)
    return float(-np.mean(logp[np.arange(len(y)), y]))


def fit_temperature(z, y, lo: float = 0.05, hi: float = 20.0, iters: int = 60) -> float:
    """Right Tool calibration: T minimising NLL(softmax(z / T), y), golden-section on log T."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(z, y, math.exp(d))
    return math.exp((a + b) / 2)


# ================================================================ optimisation
class Adam:
    def __init__(self, params: dict, lr: float, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict, grads: dict):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def fit(params: dict, loss_grad, n: int, dev_loss, cfg: TrainConfig, rng, batches=None) -> tuple[dict, dict]:
    """Adam over shuffled mini-batches of range(n); loss_grad(params, idx) -> (loss, grads);
    dev_loss(params) -> float. batches(rng) -> list of index arrays (one epoch; default: a
    permutation cut into cfg.batch_size). Returns the parameters of the best dev epoch and a log."""
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    opt = Adam(params, cfg.lr)
    best, best_params, bad = dev_loss(params), {k: v.copy() for k, v in params.items()}, 0
    log = {"dev_loss": [best], "train_loss": [], "best_epoch": 0}
    epoch = 0                                   # max_epochs 0: the initial parameters
    for epoch in range(1, cfg.max_epochs + 1):
        if batches is None:
            perm = rng.permutation(n)
            epoch_batches = [perm[s:s + cfg.batch_size] for s in range(0, n, cfg.batch_size)]
        else:
            epoch_batches = batches(rng)
        total = 0.0
        for idx in epoch_batches:
            loss, grads = loss_grad(params, idx)
            for k in DECAY:
                if k in grads:
                    grads[k] = grads[k] + cfg.weight_decay * params[k]
            opt.step(params, grads)
            total += loss * len(idx)
        d = dev_loss(params)
        log["train_loss"].append(total / n)
        log["dev_loss"].append(d)
        if d < best - 1e-7:
            best, best_params, bad, log["best_epoch"] = d, {k: v.copy() for k, v in params.items()}, 0, epoch
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    log["epochs"] = epoch
    return best_params, log


# ================================================================ the stages
def _one_hot(y, C):
    return np.eye(C)[np.asarray(y)]


_NO_POOLER = {"roberta": "RobertaForSequenceClassification saves no roberta.pooler",
              "xlm-roberta": "XLMRobertaForSequenceClassification saves no roberta.pooler",
              "distilbert": "DistilBERT has no pooler", "electra": "ELECTRA has no pooler"}


def check_kind(model, kind: str) -> None:
    """Refuse, before any feature extraction, heads that read the model's pooler (MODEL_POOLER_KINDS)
    on a checkpoint without one (RoBERTa / DistilBERT / ELECTRA sequence classifiers, whose first
    classifier Linear belongs to their classifier, not a pooler), naming the kinds that work."""
    if kind not in TRAINABLE_KINDS:
        raise InputError(f"cannot train {kind!r} heads (trainable: {', '.join(TRAINABLE_KINDS)})")
    if kind in MODEL_POOLER_KINDS and "pooler.w" not in model.weights:
        fam = model.config.model_type
        why = _NO_POOLER.get(fam, "the checkpoint has no pooler tensors")
        ok = [k for k in TRAINABLE_KINDS if k not in MODEL_POOLER_KINDS]
        raise InputError(f"{kind} heads need the model's pooler, and this {fam} checkpoint has none ({why}): "
                         f"train {', '.join(ok)} heads instead")


def _init_head(kind: str, model, H: int, C: int, rng, layer: int = 1) -> dict:
    p = {"fc.w": rng.normal(0, 0.01, (C, H)), "fc.b": np.zeros(C)}
    if kind == "scalar_mix":
        p["mix"] = rng.normal(0, 1, layer)                     # the paper's torch.randn(k)
    if kind == "pooler_linear" and "pooler.w" in model.weights:   # methods.md: a copy of the model's pooler
        p["pooler.w"] = np.array(model.weights["pooler.w"], np.float64)
        p["pooler.b"] = np.array(model.weights["pooler.b"], np.float64)
    elif kind == "pooler_linear":        # no pooler (RoBERTa, DistilBERT, ELECTRA): a fresh one, HF's init
        p["pooler.w"], p["pooler.b"] = rng.normal(0, 0.02, (H, H)), np.zeros(H)
    return p


def train_head(kind, model, x, q, x_dev, q_dev, cfg, rng, scale=1.0, distill=None, distill_dev=None, mse=False):
    """One head on inputs x [N, H] (scalar_mix: [N, k, H]) with targets q [N, C] (one-hot or a teacher's
    softmax; mse: [N, 1] regression targets or a teacher's outputs).

    Inputs are used raw, not standardised: on MiniLM features, standardising (even by one global
    scale) made Adam overfit noise dimensions and cost up to 20 accuracy points with few examples."""
    x, x_dev = np.asarray(x, np.float64), np.asarray(x_dev, np.float64)
    params = _init_head(kind, model, x.shape[-1], q.shape[1], rng, x.shape[1] if x.ndim == 3 else 1)
    return fit(params, lambda p, idx: head_loss(p, x[idx], q[idx], scale, _take(distill, idx), mse), len(x),
               lambda p: head_loss(p, x_dev, q_dev, scale, distill_dev, mse)[0], cfg, rng)


def _head_outputs(head: Head, model, feats, layer: int):
    """(feat [N, F], logits [N, C]) of one head on every sample, float64."""
    if head.kind == "fastbert":
        from refexit.train import token_heads
        return token_heads.head_outputs(head, feats, layer)
    f = F.exit_features(head, feats, layer, model).astype(np.float64)
    return f, nn.linear(f, head.params["fc.w"].astype(np.float64), head.params["fc.b"].astype(np.float64))


def _layer_outputs(exits: ExitParams, model, feats):
    """[L] list of (feat [N, F], logits [N, C]) of every head."""
    return [_head_outputs(h, model, feats, layer) for layer, h in enumerate(exits.heads, start=1)]


def _ce_rows(z, y):                       # [N, C], [N] -> per-sample CE [N]
    return -nn.log_softmax(z)[np.arange(len(y)), y]


def train_lte(outs, y, outs_dev, y_dev, cfg, rng):
    L = len(outs)
    stack = lambda o, yy: (np.concatenate([f for f, _ in o[:L - 1]]),                    # noqa: E731
                           np.concatenate([(nn.argmax(z) != yy).astype(np.float64) for _, z in o[:L - 1]]))
    f, t = stack(outs, y)
    fd, td = stack(outs_dev, y_dev)
    params = {"w": np.zeros((1, f.shape[1])), "b": np.zeros(1)}
    return fit(params, lambda p, idx: lte_loss(p, f[idx], t[idx]), len(f),
               lambda p: lte_loss(p, fd, td)[0], cfg, rng)


def train_ponder(outs, y, outs_dev, y_dev, cfg, rng):
    L = len(outs)
    feat = np.stack([f for f, _ in outs[:L - 1]])                           # [L-1, N, F]
    ce = np.stack([_ce_rows(z, y) for _, z in outs])                          # [L, N]
    feat_d = np.stack([f for f, _ in outs_dev[:L - 1]])
    ce_d = np.stack([_ce_rows(z, y_dev) for _, z in outs_dev])
    Fdim, P = feat.shape[2], cfg.ponder_hidden
    params = {"pos": np.zeros((L, Fdim)), "hid.w": rng.normal(0, 1 / math.sqrt(Fdim), (P, Fdim)),
              "hid.b": np.zeros(P), "out.w": rng.normal(0, 1 / math.sqrt(P), (1, P)), "out.b": np.zeros(1)}
    b, pr = cfg.ponder_beta, cfg.ponder_prior
    return fit(params, lambda p, idx: ponder_loss(p, feat[:, idx], ce[:, idx], b, pr), feat.shape[1],
               lambda p: ponder_loss(p, feat_d, ce_d, b, pr)[0], cfg, rng)


def class_prototypes(outs, y, C: int) -> np.ndarray:
    """[L] (feat [N, F], logits) per layer, labels y [N] -> [L-1, C, F] class means of feat."""
    feat = np.stack([f for f, _ in outs[:-1]])                                  # [L-1, N, F]
    protos = np.repeat(feat.mean(axis=1, keepdims=True), C, axis=1)              # [L-1, C, F]
    for c in range(C):
        if np.any(y == c):
            protos[:, c] = feat[:, y == c].mean(axis=1)
    return protos


def exit_table(outs, rows: int = EDGE_ROWS) -> np.ndarray:
    """[L] (feat, logits [N, C]) per layer -> [K, L-1]: per bin of layer-1 entropy, its mean layer-1
    entropy, then the mean entropies of layers 2..L-1 (K = min(rows, N) equal-count bins)."""
    H = np.stack([nn.entropy(z) for _, z in outs[:-1]], axis=1)               # [N, L-1]
    order = np.argsort(H[:, 0], kind="stable")
    bins = np.array_split(order, min(rows, len(order)))
    return np.stack([H[b].mean(axis=0) for b in bins])                        # [K, L-1]


@dataclass
class TrainResult:
    exits: ExitParams
    label_names: list
    info: dict                      # what exits.json records
    include_final: bool             # False: the last layer answers with the checkpoint's classifier


def train_exits(model, train_feats, y_train, dev_feats, y_dev, label_names, kind="mean_linear",
                objective="deebert", cfg: TrainConfig | None = None, l2norm=False,
                extras=EXTRAS, train_final: bool | None = None, log=None) -> TrainResult:
    """Train heads (and extras) from cached features (refexit.train.features.extract) and int labels
    (float labels: regression, one output trained by MSE; label_names then one name).

    train_final None: train the last-layer head unless the checkpoint has its own classifier."""
    cfg = cfg or TrainConfig()
    say = log or (lambda msg: None)
    check_kind(model, kind)
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    if objective == "romebert":
        g, temp = cfg.romebert_gamma, cfg.romebert_temperature
        if not (isinstance(g, (int, float)) and 0 <= g <= 1) or not (isinstance(temp, (int, float))
                                                                  and math.isfinite(temp) and temp > 0):
            raise InputError(f"romebert needs 0 <= romebert_gamma <= 1 and a finite romebert_temperature > 0, "
                             f"got {g!r} and {temp!r}")
    if objective == "cascadebert":
        from refexit.train import cascadebert as CB
        CB.check_settings(cfg.dar_weight, cfg.dar_margin, cfg.dar_seeds, kind)
    extras = tuple(extras) + ((objective,) if objective in ("lte", "ponder") else ())
    bad = set(extras) - set(EXTRAS) - set(OPTIONAL_EXTRAS)
    if bad:
        raise InputError(f"unknown extras {sorted(bad)} (known: {', '.join(EXTRAS + OPTIONAL_EXTRAS)})")
    if "gpf" in extras:
        from refexit.gpf import check_pool
        check_pool(cfg.gpf_pool, "TrainConfig.gpf_pool", InputError)
    regression = np.asarray(y_train).dtype.kind == "f"
    if regression:
        if objective not in REGRESSION_OBJECTIVES:
            raise InputError(f"objective {objective!r} needs class probabilities; a regression task (float labels) "
                             f"trains with {', '.join(REGRESSION_OBJECTIVES)}")
        if extras:
            raise InputError(f"extras {', '.join(sorted(set(extras)))} need class probabilities; a regression task "
                             f"(float labels) trains none (--extras none)")
        if kind == "fastbert":
            raise InputError("fastbert heads train on classification data only (their cache and loss read class "
                             "probabilities); a regression task takes mean_linear, pooler_linear, shared_pooler "
                             "or scalar_mix heads")
        label_names = list(label_names)[:1]
    rng = np.random.default_rng(cfg.seed)
    L, C = model.num_layers, len(label_names)
    target = (lambda y: np.asarray(y, np.float64)[:, None]) if regression else (lambda y: _one_hot(y, C))  # noqa: E731
    y_train, y_dev = ((np.asarray(y_train, np.float64), np.asarray(y_dev, np.float64)) if regression
                      else (np.asarray(y_train, np.int64), np.asarray(y_dev, np.int64)))
    have_final = model.heads[L - 1] is not None and bool(model.config.id2label)
    train_final = (not have_final) if train_final is None else train_final
    inputs = lambda fe, layer: F.head_input(fe, layer, kind, model, l2norm)            # noqa: E731
    if kind == "fastbert":
        from refexit.train import token_heads
        token_heads.check_features(train_feats, dev_feats, L)

    def train_one(layer, q, q_dev, scale=1.0, distill=None, distill_dev=None):
        if kind == "fastbert":
            return token_heads.train_head(train_feats, dev_feats, layer, q, q_dev, cfg, rng, scale, distill,
                                          distill_dev)
        return train_head(kind, model, inputs(train_feats, layer), q, inputs(dev_feats, layer), q_dev, cfg, rng,
                          scale, distill, distill_dev, mse=regression)
    heads: list = [None] * L
    logs = {}
    t0 = time.monotonic()

    if train_final:
        say(f"layer {L}: final {'regression head' if regression else 'classifier'} ({kind}, "
            f"{'MSE' if regression else 'cross-entropy'})")
        params, logs[L] = train_one(L, target(y_train), target(y_dev))
        heads[L - 1] = Head(kind, params, l2norm=l2norm)
    else:
        heads[L - 1] = model.heads[L - 1].astype(np.float64)
        if heads[L - 1].num_labels != C:
            raise InputError(f"the model's classifier has {heads[L - 1].num_labels} outputs, the data {C} labels")
        label_names = list(model.label_names)

    if objective == "fastbert":                  # the teacher: the final head's softmax (regression: output)
        teach = (lambda z: z) if regression else nn.softmax                                # noqa: E731
        q_tr = teach(_head_outputs(heads[L - 1], model, train_feats, L)[1])
        q_dev = teach(_head_outputs(heads[L - 1], model, dev_feats, L)[1])
    else:
        q_tr, q_dev = target(y_train), target(y_dev)
    d_tr = d_dev = None
    if objective == "romebert":                  # the teacher: softmax(z_L / T), a constant
        T, g = cfg.romebert_temperature, cfg.romebert_gamma
        d_tr = (nn.softmax(_head_outputs(heads[L - 1], model, train_feats, L)[1] / T), T, g)
        d_dev = (nn.softmax(_head_outputs(heads[L - 1], model, dev_feats, L)[1] / T), T, g)
    dar_facts = []
    for layer in range(1, L):
        scale = layer / sum(range(1, L)) if objective == "pabee" else 1.0
        say(f"layer {layer}: exit head ({kind}, {objective})")
        if objective == "cascadebert":          # CE + difficulty-aware ranking (refexit/train/cascadebert.py)
            params, logs[layer], facts = CB.train_member(kind, model, inputs(train_feats, layer), y_train,
                                                         inputs(dev_feats, layer), y_dev, C, cfg, rng, layer)
            dar_facts.append(facts)
        else:
            params, logs[layer] = train_one(layer, q_tr, q_dev, scale, d_tr, d_dev)
        heads[layer - 1] = Head(kind, params, l2norm=l2norm)

    exits = ExitParams(heads, None, None, np.ones(L))
    outs, outs_dev = _layer_outputs(exits, model, train_feats), _layer_outputs(exits, model, dev_feats)
    if objective == "dact":
        from refexit.train.dact import train_dact
        if L < 2:
            raise InputError("DACT needs at least one exit layer (L >= 2)")
        say(f"DACT halting units{' and exit heads' if cfg.dact_train_heads else ''} (tau {cfg.dact_tau:g})")
        logs["dact"] = train_dact(exits, outs, y_train, outs_dev, y_dev, cfg, rng, fit)
        outs, outs_dev = _layer_outputs(exits, model, train_feats), _layer_outputs(exits, model, dev_feats)
    if "lte" in extras:
        say("LTE head (BERxiT, MSE to 'this layer is wrong')")
        params, logs["lte"] = train_lte(outs, y_train, outs_dev, y_dev, cfg, rng)
        exits.lte = params
    if "ponder" in extras:
        say("ponder lambda MLP (PALBERT, expected loss + KL to a geometric prior)")
        params, logs["ponder"] = train_ponder(outs, y_train, outs_dev, y_dev, cfg, rng)
        exits.ponder = params
    if "prototypes" in extras:
        say("class prototypes (DE3-BERT, class means of the exit heads' features)")
        exits.prototypes = class_prototypes(outs, y_train, C)
    if "edge_table" in extras:
        say("exit table (EdgeBERT, layer-1 entropy -> entropies of the later layers)")
        exits.edge_table = exit_table(outs)
    if "gpf" in extras:
        say("Global Past-Future (poolers, imitation layers, projections, gate; weighted CE + cosine imitation)")
        from refexit.train import gpf as G
        from refexit.gpf import pooled_features
        pooler = (model.weights["pooler.w"], model.weights["pooler.b"]) if "pooler.w" in model.weights else None
        pool = exits.gpf_pool = cfg.gpf_pool
        exits.gpf, logs["gpf"] = G.train(pooled_features(train_feats, pool), y_train, pooled_features(dev_feats, pool),
                                         y_dev, C, cfg, rng, pooler, lr=cfg.gpf_lr)
    if "calibrate" in extras:
        exits.temperatures = np.array([fit_temperature(z, y_dev) for _, z in outs_dev])

    info = {"label_names": list(label_names), "head_kind": kind, "l2norm": bool(l2norm),
            "objective": objective, "extras": sorted(set(extras)), "seed": cfg.seed,
            "trained_final": bool(train_final), "train_config": asdict(cfg),
            "sizes": {"train": int(len(y_train)), "dev": int(len(y_dev))},
            "train_seconds": round(time.monotonic() - t0, 2),
            "problem_type": "regression" if regression else "single_label_classification",
            "dev_per_layer": (regression_dev_metrics(outs_dev, y_dev) if regression
                              else dev_metrics(outs_dev, y_dev, exits.temperatures, C)),
            **({"gpf_pool": exits.gpf_pool,
                "gpf_dev_per_layer": gpf_dev_metrics(exits.gpf, dev_feats, y_dev, C, exits.gpf_pool)}
               if "gpf" in extras else {}),
            **({"cascadebert_dev_per_layer": dar_facts} if dar_facts else {}),
            "log": {str(k): _short_log(v) for k, v in logs.items()}}
    return TrainResult(exits.astype(model.dtype), list(label_names), info, include_final=bool(train_final))


def dev_metrics(outs_dev, y, temperatures, C) -> list[dict]:
    from refexit.train.evaluate import accuracy, macro_f1
    rows = []
    for layer, (_, z) in enumerate(outs_dev, start=1):
        pred = nn.argmax(z)
        rows.append({"layer": layer, "accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, C),
                     "nll": nll(z, y), "temperature": float(temperatures[layer - 1])})
    return rows


def gpf_dev_metrics(g: dict, feats, y, C, pool: str = "cls") -> list[dict]:
    """Dev accuracy of the Global Past-Future combination after every layer (the last: its own, not the
    model's classifier, which is what answers at L)."""
    from refexit.gpf import forward_all, pooled_features
    from refexit.train.evaluate import accuracy, macro_f1
    z = forward_all(g, np.asarray(pooled_features(feats, pool), np.float64))["z"]
    return [{"layer": i + 1, "accuracy": accuracy(nn.argmax(zi), y), "macro_f1": macro_f1(nn.argmax(zi), y, C),
             "nll": float(np.mean(_ce_rows(zi, y)))} for i, zi in enumerate(z)]


def regression_dev_metrics(outs_dev, y) -> list[dict]:
    from refexit.train.evaluate import regression_metrics
    return [{"layer": layer, **regression_metrics(z[:, 0], y)} for layer, (_, z) in enumerate(outs_dev, start=1)]


def _short_log(log: dict) -> dict:
    return {"epochs": log["epochs"], "best_epoch": log["best_epoch"],
            "dev_loss": [round(float(v), 6) for v in log["dev_loss"]],
            "train_loss": [round(float(v), 6) for v in log["train_loss"]]}


# ================================================================ output folder
EXITS_JSON = "exits.json"


def save(result: TrainResult, out_dir, extra: dict | None = None):
    """Write <out_dir>/exits.safetensors (refexit.load(model_dir, exits=...) reads it) and
    <out_dir>/exits.json (labels, head kind, objective, data, seed, dev metrics per layer)."""
    import json
    from pathlib import Path

    from refexit.checkpoint import save_exits
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(result.info, **(extra or {}))
    meta = {"objective": info["objective"], "seed": str(info["seed"])}
    if "dataset" in info:
        meta["dataset"] = str(info["dataset"].get("name", ""))
    save_exits(out / "exits.safetensors", result.exits, result.label_names, meta,
               include_final=result.include_final)
    info = {"format": "refexit-exits/1", "exits_file": "exits.safetensors", **info}
    (out / EXITS_JSON).write_text(json.dumps(info, indent=1) + "\n")
    return out / "exits.safetensors"
