"""AdamW (decoupled weight decay, as torch.optim.AdamW), the linear warm-up / decay schedule and
global-norm gradient clipping (as torch.nn.utils.clip_grad_norm_) of Hugging Face's Trainer.

Updates are in place on the parameter arrays (float32 in training): a handful of whole-array
NumPy operations per tensor, no copies of the ~100 MB of MiniLM's weights per step.
"""
from __future__ import annotations

import math

import numpy as np


def no_decay(name: str) -> bool:
    """HF's rule: biases and LayerNorm weights get no weight decay (canonical names: '.b' = bias,
    '.ln.' = a LayerNorm)."""
    return name.endswith(".b") or ".ln." in name


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """transformers.get_linear_schedule_with_warmup: 0 -> 1 over `warmup` steps, then down to 0 at `total`."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most max_norm; -> the norm before."""
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads.values():
            g *= g.dtype.type(scale)
    return total


class AdamW:
    """torch.optim.AdamW: p -= lr * wd * p; m, v moments; p -= lr * m_hat / (sqrt(v_hat) + eps).
    lr_scale: per-parameter multiplier of the scheduled lr (name -> factor, default 1);
    decay: the parameters that get weight decay (default: all but `no_decay` ones)."""

    def __init__(self, params: dict, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps=1e-8,
                 lr_scale: dict | None = None, decay=None):
        self.lr, self.wd, (self.b1, self.b2), self.eps, self.t = lr, weight_decay, betas, eps, 0
        self.lr_scale = dict(lr_scale or {})
        self.decay = set(decay) if decay is not None else {n for n in params if not no_decay(n)}
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._tmp = {}                  # scratch per shape: no allocation per step

    def step(self, params: dict, grads: dict, lr_factor: float = 1.0):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            p, m, v = params[k], self.m[k], self.v[k]
            lr = self.lr * lr_factor * self.lr_scale.get(k, 1.0)
            if k in self.decay and self.wd:
                p *= p.dtype.type(1 - lr * self.wd)
            tmp = self._tmp.get(p.shape)
            if tmp is None or tmp.dtype != p.dtype:
                tmp = self._tmp[p.shape] = np.empty_like(p)
            m -= g                                            # m = b1 m + (1 - b1) g
            m *= self.b1
            m += g
            np.multiply(g, g, out=tmp)                        # v = b2 v + (1 - b2) g^2
            v -= tmp
            v *= self.b2
            v += tmp
            np.sqrt(v, out=tmp)                               # p -= lr/c1 m / (sqrt(v / c2) + eps)
            tmp *= 1 / math.sqrt(c2)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= lr / c1
            p -= tmp

    def state(self) -> dict:
        out = {f"m.{k}": v for k, v in self.m.items()}
        out.update({f"v.{k}": v for k, v in self.v.items()})
        return out

    def load_state(self, arrays: dict, t: int):
        for k in self.m:
            self.m[k][...] = arrays[f"m.{k}"]
            self.v[k][...] = arrays[f"v.{k}"]
        self.t = t
