"""CascadeBERT: a cascade of complete models, small to large (methods.md, "CascadeBERT").

Member k classifies the samples handed to it (with its own exit policy, or at full depth); a sample
is answered by member k when its calibrated confidence max softmax(z / T) is ABOVE member k's
threshold (strict, as the paper's code), else it goes on to member k+1. The last member always
answers. A member runs only on the samples handed to it (the paper's code runs every member on
every sample), and each sample's path is decided on its own, so a result never depends on the
other samples of the batch.

    casc = refexit.Cascade([refexit.Stage(small, refexit.Static(2), threshold=0.9), refexit.Stage(big)])
    casc = refexit.Cascade.truncation(model, 2, threshold=0.9)      # layer-2 truncation, then the full model
    out = casc.classify(enc)   # CascadeResult: logits, labels, members, member_layers, flops, ...

T is the temperature of the layer the member answered at: by default the member model's Right Tool
temperatures (`exits.temperatures` [L], fitted on dev by `train-exits`), else 1.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import nn
from .errors import InputError
from .policies import ExitWarning, Policy, Static
from .results import ClassifyResult
from .tokenizers.wordpiece import unpack


@dataclass
class Stage:
    """One member: a model, its exit policy (None: full depth), the threshold its calibrated
    confidence must exceed for it to answer (None only for the last member, which always answers),
    and its temperatures: None (the model's calibrated ones), one number, or one per layer [L]."""
    model: object
    policy: Policy | None = None
    threshold: float | None = None
    temperatures: object = None


@dataclass
class CascadeResult(ClassifyResult):
    members: np.ndarray = None          # [B] 0-based index of the member that answered
    member_layers: np.ndarray = None    # [B, K] layers run in each member (0: not reached)
    confidences: np.ndarray = None      # [B, K] calibrated max softmax of each member reached (NaN: not reached)

    @property
    def mean_layers(self) -> float:     # layers executed over every member a sample went through
        return float(np.mean(np.sum(self.member_layers, axis=1)))

    def summary(self) -> dict:
        out = super().summary()
        K = self.member_layers.shape[1]
        out["answered_by"] = np.bincount(self.members, minlength=K).tolist()
        out["mean_layers_per_member"] = np.mean(self.member_layers, axis=0).tolist()
        return out

    def records(self, texts=None) -> list[dict]:
        recs = super().records(texts)
        for b, r in enumerate(recs):
            r["member"] = int(self.members[b])
            r["member_layers"] = self.member_layers[b].tolist()
        return recs


def confidence(z, T) -> np.ndarray:
    """Calibrated confidence max softmax(z / T), in float64: z [B, C], T [B] -> [B]."""
    z = np.asarray(z, np.float64) / np.asarray(T, np.float64)[:, None]
    return np.max(nn.softmax(z), axis=-1)


def _temperatures(value, model, k: int) -> np.ndarray:
    L = model.num_layers
    if value is None:
        value = model.exits.temperatures if model.exits.temperatures is not None else 1.0
    try:
        t = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(f"cascade member {k}: temperatures must be numbers, got {value!r}") from None
    if t.size == 1:
        t = np.full(L, t[0])
    if t.shape != (L,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InputError(f"cascade member {k}: temperatures must be one or {L} positive finite numbers, "
                         f"got {value!r}")
    return t


class Cascade:
    """Complete models from small to large; `classify(enc)` -> CascadeResult (see the module)."""

    def __init__(self, stages):
        stages = list(stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise InputError("a Cascade takes a non-empty list of refexit.Stage(model, policy, threshold)")
        first = stages[0].model
        C, K = first.num_labels, len(stages)
        if C < 2:
            raise InputError("a cascade compares max softmax confidences: it needs at least 2 classes")
        self.stages, self.warnings = stages, []
        self._temps, self._thr = [], []
        for k, s in enumerate(stages):
            m = s.model
            if m.num_labels != C:
                raise InputError(f"cascade member {k} has {m.num_labels} labels, member 0 has {C}")
            if list(m.label_names) != list(first.label_names):
                raise InputError(f"cascade member {k} has the labels {m.label_names}, member 0 {first.label_names}")
            if m.config.vocab_size != first.config.vocab_size:
                raise InputError(f"cascade member {k} has a vocabulary of {m.config.vocab_size} tokens, member 0 "
                                 f"{first.config.vocab_size}: members must share the tokenizer")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExitWarning)
                msgs = m.check_policy(s.policy if s.policy is not None else Static(m.num_layers))
            self.warnings += [f"cascade member {k}: {w}" for w in msgs]
            self._temps.append(_temperatures(s.temperatures, m, k))
            self._thr.append(self._threshold(s.threshold, k, K, C))
        for msg in self.warnings:
            warnings.warn(msg, ExitWarning, stacklevel=2)

    def _threshold(self, thr, k: int, K: int, C: int) -> float:
        if k == K - 1:
            return math.inf if thr is None else self._number(thr, k)   # never read: the last one answers
        if thr is None:
            raise InputError(f"cascade member {k} needs a threshold (only the last member answers always)")
        t = self._number(thr, k)
        if t >= 1:
            self.warnings.append(f"cascade member {k}: threshold {t:g} never answers (confidence <= 1)")
        elif t < 1 / C:
            self.warnings.append(f"cascade member {k}: threshold {t:g} always answers (confidence >= 1/{C}): "
                                 f"the members after it never run")
        return t

    @staticmethod
    def _number(thr, k: int) -> float:
        if isinstance(thr, bool) or not isinstance(thr, (int, float, np.integer, np.floating)):
            raise InputError(f"cascade member {k}: the threshold must be a number, got {thr!r}")
        if math.isnan(thr):
            raise InputError(f"cascade member {k}: the threshold is NaN")
        return float(thr)

    @classmethod
    def truncation(cls, model, k: int = 2, threshold: float = 0.9, temperatures=None, then=None) -> "Cascade":
        """The natural baseline cascade: `model` truncated at layer k (Static(k), its exit head k),
        answering when its calibrated confidence > threshold, else `then` (default: `model` itself)
        at full depth. temperatures: of the truncated member (default: the model's calibrated ones)."""
        return cls([Stage(model, Static(k), threshold, temperatures), Stage(model if then is None else then)])

    @property
    def thresholds(self) -> list[float]:
        return self._thr[:-1]

    @property
    def temperatures(self) -> list[np.ndarray]:     # per member [L_k]
        return [t.copy() for t in self._temps]

    def __repr__(self):
        parts = [f"{s.policy!r}" if s.policy is not None else f"full({s.model.num_layers})" for s in self.stages]
        parts = [p + (f" >{t:g}" if k < len(parts) - 1 else "") for k, (p, t) in enumerate(zip(parts, self._thr))]
        return f"Cascade({' -> '.join(parts)})"

    def classify(self, enc) -> CascadeResult:
        """Member by member on the samples still unanswered; -> CascadeResult (no trace)."""
        ids, real, types = unpack(enc)                                  # [B, T] each

        def member(k, todo):                                            # member k on the samples `todo`
            s = self.stages[k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExitWarning)
                return s.model.classify({"input_ids": ids[todo], "attention_mask": real[todo],
                                         "token_type_ids": types[todo]}, s.policy)
        return self.assemble(member, real.sum(axis=1))

    def assemble(self, member, lengths) -> CascadeResult:
        """The cascade's rule over member results: member(k, todo) -> member k's ClassifyResult on
        the samples `todo` (indices into the batch); lengths [B] real tokens per sample. Member k is
        asked only about the samples every member before it handed on."""
        B, K = len(lengths), len(self.stages)
        last = self.stages[-1].model
        C = last.num_labels
        logits = np.zeros((B, C), last.dtype)
        exit_layers = np.zeros(B, np.int64)
        members = np.zeros(B, np.int64)
        layers = np.zeros((B, K), np.int64)
        conf = np.full((B, K), np.nan)
        flops, margins = np.zeros(B), np.full(B, math.inf)
        todo = np.arange(B)                                             # samples not yet answered
        for k in range(K):
            if not todo.size:
                break
            res = member(k, todo)
            c = confidence(res.logits, self._temps[k][res.exit_layers - 1])      # [n]
            layers[todo, k], conf[todo, k] = res.exit_layers, c
            flops[todo] += res.flops
            margins[todo] = np.minimum(margins[todo], res.margins)
            if k == K - 1:
                done = np.ones(len(todo), bool)
            else:
                done = c > self._thr[k]
                margins[todo] = np.minimum(margins[todo], np.abs(c - self._thr[k]))
            ans = todo[done]
            logits[ans], exit_layers[ans], members[ans] = res.logits[done], res.exit_layers[done], k
            todo = todo[~done]
        full = np.array([last.embed_flops(int(n)) + last.num_layers * last.layer_flops(int(n)) +
                         last.heads[-1].flops(int(n)) for n in lengths], np.float64)   # the last member at full depth
        return CascadeResult(logits, exit_layers, last.num_layers, list(last.label_names), flops, full, margins,
                             repr(self), None, list(self.warnings), members=members, member_layers=layers,
                             confidences=conf)


def take(res: ClassifyResult, idx) -> ClassifyResult:
    """The samples idx [n] of a result (no trace): to replay a cascade from results on every sample."""
    return ClassifyResult(res.logits[idx], res.exit_layers[idx], res.num_layers, res.label_names, res.flops[idx],
                          res.full_flops[idx], res.margins[idx], res.policy, None, res.warnings)
