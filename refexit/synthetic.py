"""Random models of any shape: for property tests (tiny odd sizes) and benchmarks (BERT-base
shapes). Built in memory, or written as a real HF folder (+ exits.safetensors) with `save_model`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import safetensors_io
from .checkpoint import backbone_shapes, save_exits
from .config import BertConfig
from .heads import FASTBERT_WIDTH, ExitParams, Head, param_shapes
from .model import Model

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def random_vocab(size: int) -> list[str]:
    """Special tokens, single letters/digits, then made-up word pieces; `size` entries."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab = SPECIAL + chars + ["##" + c for c in chars]
    i = 0
    while len(vocab) < size:
        a, b = chars[i % 26], chars[(i // 26) % 26]
        vocab.append(a + b + str(i // 676) if i >= 676 else a + b)
        i += 1
    return vocab[:size]


def random_model(num_layers=2, hidden=24, heads=2, intermediate=40, num_labels=3, vocab_size=120,
                 max_position=64, type_vocab=2, head_kind="pooler_linear", final_kind=None,
                 hidden_act="gelu", eps=1e-12, l2norm=False, fastbert_width=FASTBERT_WIDTH,
                 fastbert_heads=2, lte=True, ponder=True, ponder_hidden=8, seed=0, scale=0.5,
                 dtype=np.float32, prototypes=False, edge_rows=0, gpf=False, dact=False, gates=0, gate_heads=2,
                 gate_scale=1.0) -> Model:
    """A model with random weights (N(0, scale/sqrt(fan_in))) and exit heads after every layer
    (prototypes=True: also DE3-BERT class prototypes [L-1, C, F], N(0, 1); edge_rows=K: an EdgeBERT
    exit table [K, L-1] of entropies drawn uniformly in [0, ln C], keys sorted; gpf=True: Global
    Past-Future parameters (refexit/gpf.py), weights N(0, 1/sqrt(fan_in)), biases N(0, 0.1); all drawn last;
    dact=True: DACT-BERT halting units w [L-1, F] ~ N(0, 4/F), b [L-1] ~ N(0, 1), drawn after them;
    gates=W: SmartBERT skip gates of width W before every layer, PyTorch's Linear init with out.w
    multiplied by gate_scale (larger: gates further from 1/2), drawn after those)."""
    rng = np.random.default_rng(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=num_layers,
                     num_attention_heads=heads, intermediate_size=intermediate,
                     max_position_embeddings=max_position, type_vocab_size=type_vocab,
                     hidden_act=hidden_act, layer_norm_eps=eps,
                     id2label={i: f"label_{i}" for i in range(num_labels)},
                     architectures=("BertForSequenceClassification",))

    def init(shape):
        if len(shape) == 1:
            return rng.normal(0, 0.1, shape)
        return rng.normal(0, scale / np.sqrt(shape[-1]), shape)

    weights = {n: init(s) for n, s in backbone_shapes(cfg).items()}
    for n in weights:                                 # LayerNorm gains near 1
        if ".ln.w" in n:
            weights[n] = 1 + weights[n]
    weights["pooler.w"], weights["pooler.b"] = init((hidden, hidden)), init((hidden,))
    kinds = [head_kind] * (num_layers - 1) + [final_kind or head_kind]
    head_list = [Head(k, {n: init(s) for n, s in param_shapes(k, hidden, num_labels, fastbert_width,
                                                               layer=i + 1).items()},
                      l2norm=l2norm, attn_heads=fastbert_heads) for i, k in enumerate(kinds)]
    F = head_list[0].feature_size
    ep = ExitParams(head_list,
                    {"w": init((1, F)), "b": init((1,))} if lte else None,
                    {"pos": init((num_layers, F)), "hid.w": init((ponder_hidden, F)), "hid.b": init((ponder_hidden,)),
                     "out.w": init((1, ponder_hidden)), "out.b": init((1,))} if ponder else None,
                    np.ones(num_layers))
    if prototypes:
        ep.prototypes = rng.normal(0, 1, (num_layers - 1, num_labels, F))
    if edge_rows:
        ep.edge_table = rng.uniform(0, np.log(max(num_labels, 2)), (edge_rows, max(num_layers - 1, 1)))
        ep.edge_table[:, 0].sort()
    if gpf:
        from .gpf import param_shapes as gpf_shapes
        ep.gpf = {n: init(s) if len(s) == 1 else rng.normal(0, 1 / np.sqrt(s[-1]), s)
                  for n, s in gpf_shapes(num_layers, hidden, num_labels).items()}
    if dact:
        ep.dact = {"w": rng.normal(0, 2 / np.sqrt(F), (num_layers - 1, F)), "b": rng.normal(0, 1, num_layers - 1)}
    if gates:
        from .skipgates import init_gates
        ep.gates, ep.gate_heads = init_gates(num_layers, hidden, rng, gates), gate_heads
        for g in ep.gates:
            g["out.w"] = g["out.w"] * gate_scale
    from .tokenizers.wordpiece import Tokenizer
    tok = Tokenizer(random_vocab(vocab_size), max_length=max_position)
    weights = {n: a.astype(dtype) for n, a in weights.items()}
    return Model(cfg, weights, ep.astype(dtype), cfg.labels, tok, source=f"random(seed={seed})")


_HF_LAYER = {"attn.q": "attention.self.query", "attn.k": "attention.self.key",
             "attn.v": "attention.self.value", "attn.o": "attention.output.dense",
             "attn.ln": "attention.output.LayerNorm", "ffn.up": "intermediate.dense",
             "ffn.down": "output.dense", "ffn.ln": "output.LayerNorm"}


def hf_names(weights: dict) -> dict:
    """Canonical backbone names -> HF BertModel names (inverse of checkpoint.canonical_name)."""
    out = {}
    emb = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
           "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
           "emb.ln.b": "embeddings.LayerNorm.bias", "pooler.w": "pooler.dense.weight", "pooler.b": "pooler.dense.bias"}
    for n, a in weights.items():
        if n in emb:
            out[emb[n]] = a
        else:
            _, i, part, sub, wb = n.split(".")
            out[f"encoder.layer.{i}.{_HF_LAYER[part + '.' + sub]}.{'weight' if wb == 'w' else 'bias'}"] = a
    return out


def save_model(model: Model, out_dir: str | Path, with_exits: bool = True) -> Path:
    """Write `model` as an HF BertModel folder (config.json, model.safetensors, vocab.txt,
    tokenizer_config.json) + exits.safetensors with all its heads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": c.vocab_size,
           "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
           "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
           "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
           "hidden_act": c.hidden_act, "layer_norm_eps": c.layer_norm_eps, "pad_token_id": c.pad_token_id}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                           "model_max_length": c.max_position_embeddings}))
    (out / "vocab.txt").write_text("\n".join(model.tokenizer.vocab) + "\n", encoding="utf-8")
    safetensors_io.write(out / "model.safetensors",
                         {k: np.asarray(v, np.float32) for k, v in hf_names(model.weights).items()},
                         {"format": "pt"})
    if with_exits:
        save_exits(out / "exits.safetensors", model.exits, model.label_names)
    return out
