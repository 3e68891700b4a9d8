"""Fine-tune the backbone together with its classifier and exit heads, in NumPy.

The forward and backward are refexit.train.backward's (the oracle's operations on padded
batches, gradients checked against finite differences and PyTorch autograd). The recipe is Hugging
Face Trainer's: AdamW with decoupled weight decay (none on biases and LayerNorm weights), linear
warm-up then linear decay to 0, global gradient-norm clipping, dropout as the config's (0.1).
Batches are length-bucketed (shuffle, cut into buckets of `bucket` batches, sort each bucket by
length, cut into batches, shuffle the batches): little padding, still random. Everything random
derives from (seed, epoch): a run is repeatable, and a resumed run continues exactly.

Objectives (methods.md; z_i the logits of the head after layer i, L the final classifier; a float
label means regression: MSE where CE is written):
  final    CE(z_L): plain fine-tuning (DeeBERT / FastBERT stage 1); train exit heads on the output
           afterwards with `refexit train-exits` (frozen backbone)
  joint    sum_i CE(z_i) (Right Tool's joint training, unweighted)
  pabee    sum_i i CE(z_i) / sum_i i (PABEE)
  elbert   sum_{i<L} w_i CE(z_i) + (L - sum_{i<L} w_i) CE(z_L), w_i = sigmoid(W_i), W_i = 4 at the
           start, trained with their own lr (`aux_lr`) and no decay (ELBERT; the weights sum to L)
  palbert  PALBERT: sum_i p_i CE(z_i) + beta KL(p || truncated geometric(prior)), p_i = lambda_i
           prod_{j<i} (1 - lambda_j), lambda_i = sigmoid(MLP(feat_i + pos_i)) (exits.ponder_loss),
           backbone, heads and the lambda MLP trained jointly; the MLP with `aux_lr`
  distill  CE(z_L) + sum_{i<L} [(1 - gamma) CE(z_i) + gamma T^2 KL(softmax(z_L/T) || softmax(z_i/T))]
           with the teacher z_L held constant (RomeBERT's self-distillation; gamma 0.9, T 3);
           regression: MSE of z_i to z_L instead of the KL
  romebert distill's loss, with RomeBERT's gradient projection (arXiv 2101.09755; romebert/RomeBERT
           examples/new_run_highway_glue.py, `--gp`): g_last = the gradient of CE(z_L), g_multi =
           that of the exits' terms, each as one vector over the weight matrices of layers 1..L-1
           (no biases, no LayerNorm: `projected_names`); when they conflict (g_multi . g_last < 0)
           g_multi loses its component along g_last: g_multi - (g_multi . g_last / |g_last|^2)
           g_last (PCGrad); the step uses g_last + g_multi there and the plain sum everywhere else
           (two backward passes). romebert_project "final": the roles swapped, g_last projected
           against g_multi (its code does that on SST-2, MRPC, RTE and QNLI, "reverse"; "exits", the
           default, on MNLI and QQP and in the paper's description)
The exit heads are new (kind `heads`, default shared_pooler: the model's pooler, as PABEE, ELBERT
and PALBERT do); the final classifier starts from the checkpoint's when it has one for these labels.

Output (save): a Hugging Face BertForSequenceClassification folder -- config.json,
model.safetensors (HF names), the tokenizer files -- plus exits.safetensors (the exit heads, the
ponder MLP) and finetune.json (recipe, per-epoch log, per-exit table).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from refexit import nn
from refexit.errors import InputError
from refexit.heads import ExitParams, Head, param_shapes
from refexit.train import backward as BW
from refexit.train.optim import AdamW, clip_grad_norm, linear_schedule

OBJECTIVES = ("final", "joint", "pabee", "elbert", "palbert", "distill", "romebert")
EXIT_KINDS = ("shared_pooler", "pooler_linear", "mean_linear", "fastbert")
CHECKPOINT = "checkpoint.npz"
FORMAT = "refexit-finetune/1"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class FinetuneConfig:
    objective: str = "final"
    heads: str = "shared_pooler"       # kind of the exit heads (objectives other than final)
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    hidden_dropout: float = 0.1        # HF BertConfig's hidden_dropout_prob (MiniLM: 0.1)
    attn_dropout: float = 0.1          # attention_probs_dropout_prob
    patience: int = 2                  # epochs without a better dev score before stopping; 0: never stop
    seed: int = 0
    bucket: int = 50                   # batches per length bucket
    eval_batch: int = 64
    aux_lr: float = 1e-3               # ELBERT's loss weights, PALBERT's lambda MLP
    head_lr: float | None = None       # the exit heads of layers 1..L-1 (fresh, small); None: lr
    elbert_init: float = 4.0
    distill_gamma: float = 0.9
    distill_temperature: float = 3.0
    romebert_project: str | None = None   # romebert: whose gradient is projected, exits (None) | final
    ponder_hidden: int = 32
    ponder_beta: float = 0.05
    ponder_prior: float = 0.3
    limit_steps: int | None = None     # stop each epoch after this many steps (smoke runs)

    def check(self):
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown objective {self.objective!r} (known: {', '.join(OBJECTIVES)})")
        if self.romebert_project not in (None, "exits", "final"):
            raise InputError(f"romebert_project must be 'exits' or 'final', got {self.romebert_project!r}")
        if self.heads not in EXIT_KINDS:
            raise InputError(f"unknown exit head kind {self.heads!r} (known: {', '.join(EXIT_KINDS)})")
        for name in ("epochs", "batch_size", "max_length", "bucket", "eval_batch", "ponder_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr", "weight_decay", "warmup_ratio", "max_grad_norm", "hidden_dropout", "attn_dropout",
                     "aux_lr", "distill_gamma", "distill_temperature", "ponder_beta", "ponder_prior"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("hidden_dropout", "attn_dropout"):
            if getattr(self, name) >= 1:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("warmup_ratio", "distill_gamma"):
            if getattr(self, name) > 1:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.head_lr is not None and (isinstance(self.head_lr, bool) or not isinstance(self.head_lr, (int, float))
                                         or not math.isfinite(self.head_lr) or self.head_lr <= 0):
            raise InputError(f"head_lr must be a finite number > 0 (or None: lr), got {self.head_lr!r}")
        if not 0 < self.ponder_prior < 1 or self.distill_temperature <= 0 or self.lr <= 0:
            raise InputError("ponder_prior must be in (0, 1), distill_temperature and lr > 0")


# ================================================================ data
@dataclass
class Encoded:
    ids: list                  # [N] int64 arrays of each sample's tokens
    types: list
    lengths: np.ndarray        # [N]
    labels: np.ndarray         # [N] int64 (classification) or float32 (regression)

    def batch(self, idx):
        """-> ids, types [B, T] right-padded with 0, key_mask [B, T] bool, labels [B]."""
        T = int(self.lengths[idx].max())
        B = len(idx)
        ids, types = np.zeros((B, T), np.int64), np.zeros((B, T), np.int64)
        for r, i in enumerate(idx):
            ids[r, :self.lengths[i]], types[r, :self.lengths[i]] = self.ids[i], self.types[i]
        return ids, types, np.arange(T)[None, :] < self.lengths[idx][:, None], self.labels[idx]


def encode(tokenizer, split, max_length: int, regression: bool) -> Encoded:
    """A split (texts, labels, optional pairs) -> token ids, truncated to max_length."""
    pairs = getattr(split, "pairs", None)
    rows = [tokenizer.encode(t, None if pairs is None else pairs[i], max_length) for i, t in enumerate(split.texts)]
    labels = np.asarray(split.labels, np.float32 if regression else np.int64)
    if len(rows) == 0:
        raise InputError("a split to fine-tune on is empty")
    return Encoded([np.asarray(r[0], np.int64) for r in rows], [np.asarray(r[1], np.int64) for r in rows],
                   np.array([len(r[0]) for r in rows]), labels)


def length_batches(lengths, batch: int, rng, bucket: int = 50) -> list[np.ndarray]:
    """Shuffled indices cut into buckets of `bucket` batches, each sorted by length and cut into
    batches; the batches shuffled. Every index exactly once."""
    perm = rng.permutation(len(lengths))
    out = []
    for s in range(0, len(perm), batch * bucket):
        chunk = perm[s:s + batch * bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch] for i in range(0, len(chunk), batch)]
    return [out[i] for i in rng.permutation(len(out))]


# ================================================================ parameters
def initial_params(model, C: int, cfg: FinetuneConfig, rng) -> tuple[dict, list]:
    """-> (P: float32 canonical weights + heads.{i}.* + elbert.w / ponder.*, head kinds [L])."""
    L, H = model.num_layers, model.config.hidden_size
    P = {k: np.array(v, np.float32) for k, v in model.weights.items()}
    normal = lambda shape: rng.normal(0, 0.02, shape).astype(np.float32)          # noqa: E731  HF init
    if "pooler.w" not in P:
        P["pooler.w"], P["pooler.b"] = normal((H, H)), np.zeros(H, np.float32)
    kinds = [None] * (L - 1) + ["shared_pooler"]
    final = model.heads[L - 1]
    if final is not None and final.kind == "shared_pooler" and final.num_labels == C:
        P[f"heads.{L - 1}.fc.w"] = np.array(final.params["fc.w"], np.float32)
        P[f"heads.{L - 1}.fc.b"] = np.array(final.params["fc.b"], np.float32)
    else:
        P[f"heads.{L - 1}.fc.w"], P[f"heads.{L - 1}.fc.b"] = normal((C, H)), np.zeros(C, np.float32)
    if cfg.objective != "final":
        for i in range(L - 1):
            kinds[i] = cfg.heads
            for n, shape in param_shapes(cfg.heads, H, C).items():
                P[f"heads.{i}.{n}"] = normal(shape) if len(shape) == 2 else np.zeros(shape, np.float32)
            if cfg.heads == "pooler_linear":          # methods.md: a copy of the model's pooler
                P[f"heads.{i}.pooler.w"], P[f"heads.{i}.pooler.b"] = P["pooler.w"].copy(), P["pooler.b"].copy()
    if cfg.objective == "elbert":
        P["elbert.w"] = np.full(L - 1, cfg.elbert_init, np.float32)
    if cfg.objective == "palbert":
        F, Ph = (128 if cfg.heads == "fastbert" else H), cfg.ponder_hidden
        P.update({"ponder.pos": np.zeros((L, F), np.float32),
                  "ponder.hid.w": rng.normal(0, 1 / math.sqrt(F), (Ph, F)).astype(np.float32),
                  "ponder.hid.b": np.zeros(Ph, np.float32),
                  "ponder.out.w": rng.normal(0, 1 / math.sqrt(Ph), (1, Ph)).astype(np.float32),
                  "ponder.out.b": np.zeros(1, np.float32)})
    return P, kinds


def _sub(P: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in P.items() if k.startswith(prefix)}


# ================================================================ objectives
def objective_loss(cfg: FinetuneConfig, z: dict, feats: dict, y, P: dict, L: int, regression: bool,
                   teacher=None):
    """z {i: [B, C]} logits of the heads (0-based layer index; L-1 = final), feats {i: [B, F]};
    teacher: distill's teacher logits, a constant (default z[L-1], whose gradient through the
    teacher role is not taken). -> (loss, dz {i: [B, C]}, dfeat {i: [B, F]}, grads of the
    objective's own parameters)."""
    lossf = BW.mse if regression else BW.cross_entropy
    last = L - 1
    per = {i: lossf(zi, y) for i, zi in z.items()}                  # i -> (mean, dz of the mean, per sample)
    obj = cfg.objective
    own, dfeat = {}, {}
    if obj == "final":
        w = {last: 1.0}
    elif obj == "joint":
        w = {i: 1.0 for i in z}
    elif obj == "pabee":
        w = {i: (i + 1) / (L * (L + 1) / 2) for i in z}
    elif obj == "elbert":
        s = nn.sigmoid(P["elbert.w"])                                # [L-1]
        w = {i: float(s[i]) for i in range(last)}
        w[last] = L - float(s.sum())
        own["elbert.w"] = np.array([(per[i][0] - per[last][0]) * s[i] * (1 - s[i]) for i in range(last)],
                                   P["elbert.w"].dtype)
    elif obj in ("distill", "romebert"):
        g, T = cfg.distill_gamma, cfg.distill_temperature
        teacher = z[last] if teacher is None else teacher
        loss, dz = per[last][0], {last: per[last][1]}
        for i in range(last):
            kl, dkl = (BW.mse(z[i], teacher[:, 0]) if regression else BW.distill_kl(z[i], teacher, T))[:2]
            loss += (1 - g) * per[i][0] + g * kl
            dz[i] = (1 - g) * per[i][1] + g * dkl
        return loss, dz, dfeat, own
    else:                                                            # palbert
        ce = np.stack([per[i][2] for i in range(L)])                 # [L, B]
        feat = np.stack([feats[i] for i in range(last)])             # [L-1, B, F]
        loss, gp, df, dce = BW.ponder_bwd(_sub(P, "ponder."), feat, ce, cfg.ponder_beta, cfg.ponder_prior)
        own = {f"ponder.{k}": v for k, v in gp.items()}
        B = len(y)
        dz = {i: per[i][1] * (B * dce[i])[:, None] for i in range(L)}      # d(mean CE)/dz x B x dLoss/dCE_n
        dfeat = {i: df[i] for i in range(last)}
        return loss, dz, dfeat, own
    loss = sum(wi * per[i][0] for i, wi in w.items())
    dz = {i: wi * per[i][1] for i, wi in w.items()}
    return loss, dz, dfeat, own


# ================================================================ RomeBERT's gradient projection
def projected_names(P: dict, L: int) -> list[str]:
    """The parameters RomeBERT projects: the weight matrices of layers 1..L-1 (its code: the
    encoder's parameters but the last layer's, LayerNorms and biases)."""
    return [k for k in P if k.startswith("layers.") and int(k.split(".")[1]) < L - 1
            and not k.endswith(".b") and ".ln." not in k]


def project_conflict(g_last: dict, g_multi: dict, names) -> tuple[dict, float]:
    """g_last + g_multi, where over `names` (one vector) g_multi is first projected onto the normal
    plane of g_last when they conflict: g_multi - min(0, g_multi . g_last / |g_last|^2) g_last.
    -> (the combined gradients, the coefficient min(0, ...): 0 when nothing was projected)."""
    dot = sum(float(np.vdot(g_multi[n].astype(np.float64), g_last[n])) for n in names if n in g_last and n in g_multi)
    nn2 = sum(float(np.vdot(g_last[n].astype(np.float64), g_last[n])) for n in names if n in g_last)
    c = min(dot / nn2, 0.0) if nn2 > 0 else 0.0
    out = {k: g_last[k] + g_multi[k] if k in g_multi else g_last[k] for k in g_last}
    out.update({k: v for k, v in g_multi.items() if k not in g_last})
    if c < 0:
        for n in names:
            if n in g_last:
                out[n] = out[n] - g_last[n].dtype.type(c) * g_last[n]
    return out, c


def romebert_grads(dz: dict, cache, P: dict, L: int, project: str = "exits") -> tuple[dict, float]:
    """The romebert objective's step direction: the last classifier's and the exits' gradients by
    two backward passes, combined by project_conflict (project "exits": the exits' gradient is
    projected against the last classifier's; "final": the other way). -> (grads, coefficient)."""
    g_last = BW.model_bwd({L - 1: dz[L - 1]}, cache, P)
    g_multi = BW.model_bwd({i: v for i, v in dz.items() if i != L - 1}, cache, P)
    if project == "final":
        return project_conflict(g_multi, g_last, projected_names(P, L))
    return project_conflict(g_last, g_multi, projected_names(P, L))


# ================================================================ evaluation
def predict(P: dict, spec: BW.Spec, data: Encoded, batch: int = 64) -> dict:
    """Every head's logits on every sample (evaluation mode): {i: [N, C]} in data order."""
    order = np.argsort(data.lengths, kind="stable")
    out: dict = {}
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, types, mask, _ = data.batch(idx)
        z, _, _ = BW.model_fwd(P, spec, ids, types, mask)
        for i, zi in z.items():
            out.setdefault(i, np.zeros((len(order), zi.shape[1]), np.float32))[idx] = zi
    return out


def exit_scores(logits: dict, y, regression: bool) -> dict:
    """{1-based layer: accuracy (classification) or -MSE (regression)} of every head."""
    if regression:
        return {i + 1: -float(np.mean((z[:, 0] - y) ** 2)) for i, z in sorted(logits.items())}
    return {i + 1: float(np.mean(nn.argmax(z) == y)) for i, z in sorted(logits.items())}


# ================================================================ the loop
@dataclass
class FinetuneResult:
    params: dict
    kinds: list
    label_names: list
    regression: bool
    info: dict = field(default_factory=dict)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fine_tune(model, train, dev, label_names: list, cfg: FinetuneConfig | None = None, test=None,
              out_dir=None, resume: bool = False, log=None) -> FinetuneResult:
    """Fine-tune `model` (a refexit.Model) on `train` (an object with .texts, .labels, optional
    .pairs: refexit.data.Split) with early stopping on `dev`. Integer labels: classification into
    label_names; float labels: regression (one output, MSE). out_dir: where the per-epoch
    checkpoint goes (and, with resume=True, where it is read from); the caller writes the result
    with `save`. -> the best dev epoch's parameters and the run's log."""
    cfg = cfg or FinetuneConfig()
    cfg.check()
    say = log or (lambda msg: print(f"fine-tune: {msg}", file=sys.stderr, flush=True))
    regression = np.asarray(train.labels).dtype.kind == "f"
    C = 1 if regression else len(label_names)
    L = model.num_layers
    if cfg.objective != "final" and L < 2:
        raise InputError(f"objective {cfg.objective!r} needs exit heads, and the model has one layer")
    max_len = min(cfg.max_length, model.tokenizer.max_length)
    tok = model.tokenizer
    data = {"train": encode(tok, train, max_len, regression), "dev": encode(tok, dev, max_len, regression)}
    if test is not None:
        data["test"] = encode(tok, test, max_len, regression)
    if not regression:
        for name, d in data.items():
            if d.labels.min() < 0 or d.labels.max() >= C:
                raise InputError(f"{name} labels must be class indices in [0, {C}), got {d.labels.min()}..{d.labels.max()}")
    rng = np.random.default_rng(cfg.seed)
    P, kinds = initial_params(model, C, cfg, rng)
    spec = BW.Spec.of(model.config, kinds, hidden_dropout=cfg.hidden_dropout, attn_dropout=cfg.attn_dropout)
    aux = [k for k in P if k.startswith(("elbert.", "ponder."))]
    exit_heads = [k for k in P if k.startswith("heads.") and not k.startswith(f"heads.{L - 1}.")]
    lr_scale = {k: cfg.aux_lr / cfg.lr for k in aux}
    if cfg.head_lr is not None:
        lr_scale.update({k: cfg.head_lr / cfg.lr for k in exit_heads})
    opt = AdamW(P, cfg.lr, cfg.weight_decay, lr_scale=lr_scale,
                decay=[k for k in P if k not in aux and not (k.endswith(".b") or ".ln." in k)])
    n_batches = -(-len(data["train"].lengths) // cfg.batch_size)
    per_epoch = min(n_batches, cfg.limit_steps or n_batches)
    total = per_epoch * cfg.epochs
    warmup = int(math.ceil(cfg.warmup_ratio * total))
    higher = "accuracy" if not regression else "-MSE"
    log_rows, best, best_P, bad, start = [], -math.inf, None, 0, 1
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise InputError(f"--resume: no {CHECKPOINT} in {out_dir}")
        start, best, bad, log_rows, best_P = _load_checkpoint(ckpt, P, opt, cfg)
        say(f"resumed from {ckpt} after epoch {start - 1}")
    say(f"{len(data['train'].lengths)} train / {len(data['dev'].lengths)} dev examples, "
        f"{'regression' if regression else f'{C} classes'}, objective {cfg.objective}, {per_epoch} steps "
        f"per epoch x {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, seed {cfg.seed}")
    t_train = sum(r["seconds"] for r in log_rows)
    tokens_seen = sum(r["tokens"] for r in log_rows)
    for epoch in range(start, cfg.epochs + 1):
        erng = np.random.default_rng([cfg.seed, epoch])
        drop = np.random.default_rng([cfg.seed, epoch, 1])
        batches = length_batches(data["train"].lengths, cfg.batch_size, erng, cfg.bucket)[:per_epoch]
        t0, tok_epoch, loss_sum, n_sum, last_say = time.monotonic(), 0, 0.0, 0, time.monotonic()
        projected = 0                                   # romebert: steps whose gradients conflicted
        for k, idx in enumerate(batches, start=1):
            step = (epoch - 1) * per_epoch + k
            ids, types, mask, y = data["train"].batch(idx)
            z, feats, cache = BW.model_fwd(P, spec, ids, types, mask, drop)
            loss, dz, dfeat, own = objective_loss(cfg, z, feats, y, P, L, regression)
            if not math.isfinite(loss):
                raise InputError(f"epoch {epoch} step {k}: the loss is {loss} (lower the lr?)")
            if cfg.objective == "romebert":
                grads, coef = romebert_grads(dz, cache, P, L, cfg.romebert_project or "exits")
                projected += coef < 0
            else:
                grads = BW.model_bwd(dz, cache, P, dfeat)
            grads.update(own)
            clip_grad_norm(grads, cfg.max_grad_norm)
            opt.step(P, grads, linear_schedule(step - 1, total, warmup))
            tok_epoch += int(mask.sum())
            loss_sum += loss * len(idx)
            n_sum += len(idx)
            now = time.monotonic()
            if now - last_say >= 15 or k == len(batches):
                rate = tok_epoch / (now - t0)
                left = (now - t0) / k * (total - step)
                say(f"epoch {epoch}/{cfg.epochs} step {k}/{len(batches)} loss {loss_sum / n_sum:.4f} "
                    f"{rate:,.0f} tokens/s ETA {_fmt_time(left)}")
                last_say = now
        secs = time.monotonic() - t0
        t_train += secs
        tokens_seen += tok_epoch
        scores = exit_scores(predict(P, spec, data["dev"], cfg.eval_batch), data["dev"].labels, regression)
        final = scores[L]
        row = {"epoch": epoch, "train_loss": loss_sum / n_sum, "dev": scores, "seconds": round(secs, 2),
               "tokens": tok_epoch, "tokens_per_s": round(tok_epoch / secs, 1)}
        if cfg.objective == "romebert":
            row["projected_steps"] = int(projected)
        log_rows.append(row)
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f}, dev {higher} per exit "
            + " ".join(f"{i}:{v:.4f}" for i, v in scores.items()) + f", {row['tokens_per_s']:,.0f} tokens/s, "
            f"{_fmt_time(secs)}")
        if final > best:
            best, bad = final, 0
            best_P = {k: v.copy() for k, v in P.items()}
        else:
            bad += 1
        stop = cfg.patience and bad >= cfg.patience
        if ckpt is not None:
            _save_checkpoint(ckpt, P, opt, cfg, epoch, best, bad, log_rows, best_P)
        if stop:
            say(f"early stop: dev {higher} of the final classifier has not improved for {bad} epochs")
            break
    P = best_P if best_P is not None else P
    best_epoch = max(log_rows, key=lambda r: r["dev"][L])["epoch"] if log_rows else 0
    table = {split: exit_scores(predict(P, spec, d, cfg.eval_batch), d.labels, regression)
             for split, d in data.items() if split != "train"}          # dev, test: the table per exit
    info = {"format": FORMAT, "config": asdict(cfg), "regression": regression, "label_names": list(label_names),
            "max_length": max_len, "sizes": {k: len(d.lengths) for k, d in data.items()},
            "epochs_run": len(log_rows), "best_epoch": best_epoch, "log": log_rows, "per_exit": table,
            "metric": higher, "train_seconds": round(t_train, 1),
            "tokens_per_s": round(tokens_seen / t_train, 1) if t_train else None,
            "exit_layers": [i + 1 for i, k in enumerate(kinds) if k is not None]}
    return FinetuneResult(P, kinds, list(label_names), regression, info)


# ================================================================ checkpoints
def _save_checkpoint(path: Path, P, opt, cfg, epoch, best, bad, log_rows, best_P):
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "epoch": epoch, "best": best, "bad": bad, "log": log_rows, "t": opt.t,
            "config": asdict(cfg), "has_best": best_P is not None}
    arrays = {f"p.{k}": v for k, v in P.items()}
    arrays.update({f"o.{k}": v for k, v in opt.state().items()})
    if best_P is not None and best_P is not P:
        arrays.update({f"b.{k}": v for k, v in best_P.items()})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, P, opt, cfg):
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise InputError(f"{path}: not a refexit fine-tune checkpoint")
        same = {k: v for k, v in meta["config"].items() if k not in ("epochs", "patience")}
        now = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "patience")}
        diff = sorted(k for k in now if now[k] != same.get(k))    # a setting newer than the file: its default
        if diff:
            raise InputError(f"{path}: the checkpoint was made with other settings ({', '.join(diff)})")
        if set(P) != {k[2:] for k in z.files if k.startswith("p.")}:
            raise InputError(f"{path}: the checkpoint's parameters differ from this model's")
        for k in P:
            P[k][...] = z[f"p.{k}"]
        opt.load_state({k[2:]: z[k] for k in z.files if k.startswith("o.")}, meta["t"])
        best_P = {k: np.array(z[f"b.{k}"]) for k in P} if meta["has_best"] else None
    for row in meta["log"]:
        row["dev"] = {int(k): v for k, v in row["dev"].items()}
    return meta["epoch"] + 1, meta["best"], meta["bad"], meta["log"], best_P


# ================================================================ output folder
def exit_params(res: FinetuneResult, L: int) -> ExitParams:
    heads = [None if k is None else Head(k, _sub(res.params, f"heads.{i}.")) for i, k in enumerate(res.kinds)]
    ponder = _sub(res.params, "ponder.") or None
    return ExitParams(heads, None, ponder, np.ones(L))


def save(res: FinetuneResult, model, out_dir, extra: dict | None = None) -> Path:
    """Write a Hugging Face BertForSequenceClassification folder that refexit.load and
    transformers' from_pretrained both read, + exits.safetensors when there are exit heads."""
    from refexit import jsonio, safetensors_io
    from refexit.checkpoint import save_exits
    from refexit.config import BertConfig
    from refexit.errors import ConfigError
    from refexit.synthetic import hf_names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(model.source) if model.source else None
    L = model.num_layers
    backbone = {k: v for k, v in res.params.items() if k.startswith(("emb.", "layers.", "pooler."))}
    tensors = {"bert." + hf: np.asarray(v, np.float32) for hf, v in hf_names(backbone).items()}
    tensors["classifier.weight"] = np.asarray(res.params[f"heads.{L - 1}.fc.w"], np.float32)
    tensors["classifier.bias"] = np.asarray(res.params[f"heads.{L - 1}.fc.b"], np.float32)
    safetensors_io.write(out / "model.safetensors", tensors, {"format": "pt"})
    cfg = jsonio.read_object(src / "config.json", ConfigError) if src and (src / "config.json").is_file() else {}
    c = model.config
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps", "pad_token_id"):
        cfg.setdefault(k, getattr(c, k))
    names = ["LABEL_0"] if res.regression else res.label_names
    cfg.update({"model_type": "bert", "architectures": ["BertForSequenceClassification"],
                "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
                "problem_type": "regression" if res.regression else "single_label_classification",
                "hidden_dropout_prob": res.info["config"]["hidden_dropout"],
                "attention_probs_dropout_prob": res.info["config"]["attn_dropout"]})
    cfg.pop("_name_or_path", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    BertConfig.from_dir(out)                                   # what refexit.load will check
    copied = False
    for f in TOKENIZER_FILES:
        if src and (src / f).is_file() and (src / f).resolve() != (out / f).resolve():
            shutil.copyfile(src / f, out / f)
            copied = copied or f == "vocab.txt"
    if not (out / "vocab.txt").is_file():
        (out / "vocab.txt").write_text("\n".join(model.tokenizer.vocab) + "\n", encoding="utf-8")
    ep = exit_params(res, L)
    if any(h is not None for h in ep.heads[:L - 1]):
        save_exits(out / "exits.safetensors", ep, names, {"objective": res.info["config"]["objective"],
                                                           "seed": str(res.info["config"]["seed"])},
                   include_final=False)
    elif (out / "exits.safetensors").exists():
        (out / "exits.safetensors").unlink()                  # a stale one from an earlier run
    info = dict(res.info, **(extra or {}))
    (out / "finetune.json").write_text(json.dumps(info, indent=1) + "\n")
    return out
