"""What classify returns: per-sample exit results plus the run summary (methods.md, "Reporting")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from . import nn


@dataclass
class LayerTrace:
    layer: int              # 1-based
    logits: np.ndarray      # [C] this layer's exit logits
    score: float            # what the policy compared (entropy, max prob, counter, ...)
    margin: float           # distance of the decision from flipping
    exited: bool


@dataclass
class ClassifyResult:
    logits: np.ndarray          # [B, C] logits of the layer each sample exited at
    exit_layers: np.ndarray     # [B] int, 1-based
    num_layers: int             # L
    label_names: list
    flops: np.ndarray           # [B] FLOPs spent on each sample (backbone + every head evaluated)
    full_flops: np.ndarray      # [B] FLOPs of the full model (L layers + final head) on the same input
    margins: np.ndarray         # [B] smallest decision margin along the sample's path (inf: none)
    policy: str = ""
    per_layer: list | None = None   # [B] lists of LayerTrace, when trace=True
    warnings: list = field(default_factory=list)
    layers_run: np.ndarray | None = None   # [B] layers executed when some were skipped (SmartBERT), else None

    @property
    def labels(self) -> np.ndarray:              # [B]; ties to the lowest index
        return nn.argmax(self.logits)

    @property
    def probs(self) -> np.ndarray:               # [B, C] softmax (regression: the value itself)
        return self.logits if self.logits.shape[1] == 1 else nn.softmax(self.logits.astype(np.float64))

    @property
    def mean_layers(self) -> float:              # mean layers executed, including the exit layer
        return float(np.mean(self.exit_layers if self.layers_run is None else self.layers_run))

    @property
    def layer_speedup(self) -> float:            # L / mean layers (PALBERT's convention)
        return self.num_layers / self.mean_layers if self.mean_layers else float("inf")   # every layer skipped

    @property
    def flops_ratio(self) -> float:              # full-model FLOPs / spent FLOPs
        return float(np.sum(self.full_flops) / np.sum(self.flops))

    def summary(self) -> dict:
        return {"samples": int(len(self.exit_layers)), "num_layers": self.num_layers,
                "mean_layers": self.mean_layers, "layer_speedup": self.layer_speedup,
                "mean_flops": float(np.mean(self.flops)), "flops_ratio": self.flops_ratio,
                "policy": self.policy, "warnings": list(self.warnings)}

    def records(self, texts=None) -> list[dict]:
        """One JSON-ready dict per sample: the fields of the standalone program's lines (without
        time_ms): label, label_id, probability, probabilities (value for regression), logits,
        exit_layer (and layers_run when the skip gates skipped layers); text first when `texts` are given."""
        out = []
        probs = self.probs
        for b in range(len(self.exit_layers)):
            C = self.logits.shape[1]
            lab = int(self.labels[b])
            rec = {}
            if texts is not None:
                rec["text"] = texts[b]
            if C == 1:
                rec["value"] = float(self.logits[b, 0])
            else:
                names = self.label_names if len(self.label_names) == C else [f"LABEL_{c}" for c in range(C)]
                rec["label"] = names[lab]
                rec["label_id"] = lab
                rec["probability"] = float(probs[b, lab])
                rec["probabilities"] = {names[c]: float(probs[b, c]) for c in range(C)}
            rec["logits"] = [float(z) for z in self.logits[b]]
            rec["exit_layer"] = int(self.exit_layers[b])
            if self.layers_run is not None and self.layers_run[b] != self.exit_layers[b]:
                rec["layers_run"] = int(self.layers_run[b])     # skip gates skipped some (as the standalone program)
            out.append(rec)
        return out

    def to_json_lines(self, texts=None) -> str:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in self.records(texts))
