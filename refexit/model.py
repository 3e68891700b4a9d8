"""refexit.Model: the oracle forward pass with per-sample early exit.

The batch is processed layer by layer (as the C code does), but every sample's tensors are its own
real tokens only [n_b, H]: no padding compute, and nothing a sample computes depends on its batch
mates. After each layer, each still-active sample's exit head and policy decide; exited samples
leave the batch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import arch, nn
from .checkpoint import load_checkpoint
from .config import BertConfig
from .errors import ConfigError, InputError
from .heads import ExitParams
from .policies import Policy, Static
from .results import ClassifyResult, LayerTrace
from .tokenizers.wordpiece import unpack


PRECISIONS = ("fp32", "bf16", "int8")   # what the layer GEMMs compute in (codegen.compile_model(precision=))
_GEMM_WEIGHTS = ("attn.q.w", "attn.k.w", "attn.v.w", "attn.o.w", "ffn.up.w", "ffn.down.w")


class Model:
    def __init__(self, config: BertConfig, weights: dict, exits: ExitParams, label_names: list,
                 tokenizer=None, source: str | None = None, precision: str = "fp32"):
        self.config = config
        self.precision = precision      # PRECISIONS: how the six projections of every layer compute
        self.weights = weights          # canonical name -> array (see checkpoint.py)
        self.exits = exits              # exit heads [L], LTE, ponder, temperatures
        self.label_names = list(label_names)
        self.tokenizer = tokenizer      # refexit.tokenizer.Tokenizer (None for bare models)
        self.source = source
        self._layers = [{k[len(f"layers.{i}."):]: v for k, v in weights.items() if k.startswith(f"layers.{i}.")}
                        for i in range(arch.num_weight_layers(config))]
        if precision != "fp32":         # the six projections' weights as the C of `precision` holds them
            self._layers = [{k: nn.lowp_weight(precision, k[:-2], v) if k in _GEMM_WEIGHTS else v
                             for k, v in p.items()} for p in self._layers]
        if config.shared_layers:        # ALBERT: one layer's weights, applied num_hidden_layers times
            self._layers = self._layers * config.num_hidden_layers
        self.token_reduction = None     # refexit.tokens.TokenReduction: classify drops tokens (with_token_reduction)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self):
        return self.weights["emb.word"].dtype

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_labels(self) -> int:
        final = self.exits.heads[-1]
        return final.num_labels if final is not None else 0

    @property
    def heads(self):
        return self.exits.heads

    def astype(self, dtype) -> "Model":
        """The same model computing in `dtype` (np.float64 for tight checks)."""
        m = Model(self.config, {k: v.astype(dtype) for k, v in self.weights.items()},
                  self.exits.astype(dtype), self.label_names, self.tokenizer, self.source, self.precision)
        m.token_reduction = self.token_reduction
        return m

    def with_token_reduction(self, reduction) -> "Model":
        """The same model whose classify keeps, inside each layer i after its attention, only the
        tokens of the length configuration `reduction` (refexit.TokenReduction; None: all tokens).
        hidden_states() is unchanged (every token, as HF)."""
        from .tokens import TokenReduction
        if reduction is not None:
            if not isinstance(reduction, TokenReduction):
                raise InputError(f"token reduction must be a refexit.TokenReduction, got {reduction!r}")
            reduction.check(self.num_layers)
        m = Model(self.config, self.weights, self.exits, self.label_names, self.tokenizer, self.source,
                  self.precision)
        m.token_reduction = reduction
        return m

    def with_precision(self, precision: str) -> "Model":
        """The model as the compiled C of `precision` computes it (docs/codegen.md, "Precisions").

        "bf16": the six projections of every layer (q, k, v, o, up, down) use bf16 weights (rounded
        to nearest even) and round their input activations to bf16 where they enter the product;
        products and sums in this model's dtype (float32, or float64 for tight checks), as the C
        accumulates exact bf16 products in fp32.
        "int8": those weights quantized per output channel (symmetric int8, one float32 scale per
        output), their inputs per row (per token, asymmetric: nn.quantize_uint8) where they enter,
        exact integer sums, dequantized as acc * (x_scale * w_scale) + bias (nn.linear_int8), except
        the projections of nn.INT8_IN_BF16 (query, key, value), which compute as in "bf16".
        Embeddings, biases, residuals, LayerNorm, GELU, attention scores and context, pooler, exit
        heads and policies are unchanged. `weights` keeps the fp32 originals (what codegen packs)."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        m = Model(self.config, self.weights, self.exits, self.label_names, self.tokenizer, self.source,
                  precision)
        m.token_reduction = self.token_reduction
        return m

    # ------------------------------------------------------------------ input checking
    def rows(self, enc) -> list[tuple[np.ndarray, np.ndarray]]:
        """Encoding (or dict with input_ids [B,T], attention_mask, token_type_ids) -> per sample
        (ids [n], type_ids [n]) of its real tokens, validated."""
        ids, real, types = unpack(enc)                                 # [B, T] each
        cfg = self.config
        out = []
        for b in range(len(ids)):
            n = int(np.sum(real[b]))
            if n == 0:
                raise InputError(f"sample {b} has no tokens (attention_mask is all 0)")
            if n > cfg.max_positions:
                raise InputError(f"sample {b} has {n} tokens; the model accepts at most "
                                 f"{cfg.max_positions}")
            i, t = ids[b, :n].astype(np.int64), types[b, :n].astype(np.int64)
            if not cfg.token_types:     # DistilBERT has no token types: its tokenizer's are ignored
                t = np.zeros_like(t)
            if i.min() < 0 or i.max() >= cfg.vocab_size:
                raise InputError(f"sample {b}: token id {int(i.max() if i.max() >= cfg.vocab_size else i.min())} "
                                 f"is outside the vocabulary [0, {cfg.vocab_size})")
            if t.min() < 0 or t.max() >= cfg.type_vocab_size:
                raise InputError(f"sample {b}: token type id outside [0, {cfg.type_vocab_size})")
            out.append((i, t))
        return out

    # ------------------------------------------------------------------ forward pieces
    def embed(self, ids, type_ids):                              # [n] -> [n, H]
        w, c = self.weights, self.config
        if c.model_type == "bert":
            return nn.embed(ids, type_ids, w["emb.word"], w["emb.pos"], w["emb.type"],
                            w["emb.ln.w"], w["emb.ln.b"], c.layer_norm_eps)
        pos = arch.position_ids(ids, c)                                         # [n]
        x = nn.embed_at(ids, type_ids, pos, w["emb.word"], w["emb.pos"], w.get("emb.type"),
                        w["emb.ln.w"], w["emb.ln.b"], c.layer_norm_eps)          # [n, E]
        return nn.linear(x, w["emb.proj.w"], w["emb.proj.b"]) if "emb.proj.w" in w else x   # [n, H]

    def layer(self, i: int, x, key_mask=None):                   # 0-based layer i: [n, H] -> [n, H]
        if key_mask is None:
            key_mask = np.ones(len(x), dtype=bool)
        c = self.config
        return nn.encoder_layer(x, key_mask, self._layers[i], c.num_attention_heads, c.hidden_act,
                                c.layer_norm_eps, nn.LINEAR[self.precision])

    def head(self, layer: int, x, cls_prev=None):
        """Exit head after 1-based `layer` on real-token states x [n, H] -> (logits [C], feat [F]).
        cls_prev [layer-1, H]: the earlier layers' [CLS] states (read by scalar_mix heads only)."""
        h = self.exits.heads[layer - 1]
        if h.kind == "scalar_mix" and cls_prev is None:
            raise InputError(f"the scalar_mix head after layer {layer} needs the [CLS] states of layers "
                             f"1..{layer - 1} (cls_prev)")
        feat = h.features(x, self.weights.get("pooler.w"), self.weights.get("pooler.b"), cls_prev)
        return h.logits(feat), feat

    def embed_flops(self, n: int) -> int:
        """FLOPs of the embeddings on n real tokens (ALBERT's / ELECTRA's E -> H projection; arch.embed_flops)."""
        return arch.embed_flops(self.config, n)

    def layer_flops(self, n: int) -> int:
        """Matmul FLOPs (2 x multiply-adds) of one encoder layer on n real tokens."""
        H, I = self.config.hidden_size, self.config.intermediate_size
        return 2 * n * (4 * H * H + 2 * H * I) + 4 * n * n * H

    # ------------------------------------------------------------------ public API
    def hidden_states(self, enc) -> list[np.ndarray]:
        """All L+1 hidden states [B, T, H] (embeddings first), like HF output_hidden_states.

        Padded positions are computed as HF does (they attend to the real keys); they never
        influence the real ones."""
        ids = np.asarray(enc["input_ids"] if isinstance(enc, dict) else enc.input_ids)
        ids = ids[None] if ids.ndim == 1 else ids
        B, T = ids.shape
        rows = self.rows(enc)
        types = np.asarray(enc.get("token_type_ids") if isinstance(enc, dict) else enc.token_type_ids)
        types = np.zeros((B, T), np.int64) if types is None or types.shape != (B, T) or \
            not self.config.token_types else types
        if T > self.config.max_positions:
            raise InputError(f"padded length {T} exceeds {self.config.max_positions} positions")
        states = [np.zeros((B, T, self.config.hidden_size), self.dtype) for _ in range(self.num_layers + 1)]
        for b, (r_ids, _) in enumerate(rows):
            key_mask = np.arange(T) < len(r_ids)                            # [T]
            full_ids = np.where(key_mask, ids[b], self.config.pad_token_id).astype(np.int64)
            x = self.embed(full_ids, np.where(key_mask, types[b], 0).astype(np.int64))  # [T, H]
            states[0][b] = x
            for i in range(self.num_layers):
                x = self.layer(i, x, key_mask)
                states[i + 1][b] = x
        return states

    def check_policy(self, policy: Policy) -> list[str]:
        """Validate `policy` against this model's heads; returns (and warns) its warnings."""
        L, heads = self.num_layers, self.exits.heads
        if heads[L - 1] is None:
            raise InputError("the model has no classifier after its last layer: load a "
                             "BertForSequenceClassification checkpoint, or train one with its exit heads "
                             "(`refexit train-exits MODEL_DIR --data NAME`) and pass the folder it writes "
                             "with --exits (Python: refexit.load(MODEL_DIR, exits=...))")
        if not isinstance(policy, Policy):
            raise InputError(f"policy must be a refexit policy (refexit.Entropy(0.3), ...), got {policy!r}")
        if isinstance(policy, Static) and policy.k > L:
            raise InputError(f"Static({policy.k}): the model has only {L} layers (choose a layer in 1..{L})")
        need = [policy.k] if isinstance(policy, Static) else [] if policy.own_logits else range(1, L)
        missing = [i for i in need if heads[i - 1] is None]
        if missing:
            raise InputError(f"{policy!r} needs exit heads after layer(s) {missing}, which the model "
                             f"lacks: train them (refexit train-exits) or load an exits.safetensors")
        return policy.check(L, self.num_labels, self.exits)

    def classify(self, enc, policy: Policy | None = None, trace: bool = False) -> ClassifyResult:
        """Per-sample early-exit classification. policy None = the full model (Static(L)).
        With a token reduction (with_token_reduction), layer i keeps k_i tokens after its attention;
        the selection's margin joins the sample's margins when it can change the result."""
        L = self.num_layers
        policy = policy if policy is not None else Static(L)
        msgs = self.check_policy(policy)
        rows = self.rows(enc)
        tr = self.token_reduction
        if tr is not None:
            from .tokens import LayerCost
            tr.check(L)
            if policy.skips_layers or policy.own_logits:
                raise InputError(f"token reduction with the {policy.name} policy is not supported (SmartBERT's skip "
                                 f"gates and Global Past-Future's own exit logits were built and tested on "
                                 f"full-length layers)")
            cost = LayerCost.of(self.config.hidden_size, self.config.intermediate_size,
                                self.config.num_attention_heads)
            counts = {b: tr.counts(len(r[0])) for b, r in enumerate(rows)}
            final_cls = self.exits.heads[L - 1].kind in ("pooler_linear", "shared_pooler", "scalar_mix")
        B, C = len(rows), self.num_labels
        logits = np.zeros((B, C), self.dtype)
        exit_layers = np.zeros(B, np.int64)
        flops = np.array([self.embed_flops(len(r[0])) for r in rows], np.float64)   # the embeddings, once
        margins = np.full(B, math.inf)
        traces = [[] for _ in range(B)] if trace else None
        states = [policy.start() for _ in range(B)]
        x = {b: self.embed(ids, types) for b, (ids, types) in enumerate(rows)}   # b -> [n_b, H]
        cls = {b: [] for b in x}                    # b -> [CLS] states of its layers so far (scalar_mix)
        run = np.zeros(B, np.int64)                 # layers executed (SmartBERT's gates skip some)
        for layer in range(1, L + 1):
            for b in list(x):                       # the samples still running
                n = len(x[b])
                skipped = False
                if policy.skips_layers:             # SmartBERT: the gate on the layer's input
                    skipped, _, gm = policy.skip(layer, x[b], self.exits, states[b])
                    flops[b] += self.exits.gate_flops(n)
                    margins[b] = min(margins[b], gm)
                if not skipped and tr is None:
                    x[b] = self.layer(layer - 1, x[b])
                    flops[b] += self.layer_flops(n)
                    run[b] += 1
                elif not skipped:                   # keep k_i tokens after the attention
                    n_in, n = len(x[b]), counts[b][layer - 1]
                    c = self.config
                    x[b], _, gap = nn.encoder_layer_keep(x[b], self._layers[layer - 1], c.num_attention_heads,
                                                         c.hidden_act, c.layer_norm_eps, n,
                                                         nn.LINEAR[self.precision])
                    flops[b] += cost(n_in, n, tr.keep[layer - 1] < 1.0)
                    run[b] += 1
                    if layer < L or not final_cls:  # the final [CLS] head: the selection cannot matter
                        margins[b] = min(margins[b], gap)
                cls[b].append(x[b][0])
                if layer < L and (skipped or not policy.evaluates_head(layer, states[b])):
                    continue                        # e.g. the static baseline evaluates one head only
                if layer < L and policy.own_logits:  # the policy's own exit logits (Global Past-Future)
                    z, feat = policy.exit_logits(layer, x[b], self.exits, states[b])
                    flops[b] += policy.exit_flops(layer, self.exits)
                else:
                    prev = np.array(cls[b][:-1], x[b].dtype).reshape(layer - 1, x[b].shape[1])    # [layer-1, H]
                    z, feat = self.head(layer, x[b], prev)
                    flops[b] += self.exits.heads[layer - 1].flops(n)
                if layer == L:
                    done, score, margin = True, math.nan, math.inf
                else:
                    done, score, margin = policy.decide(layer, z, feat, self.exits, states[b])
                    flops[b] += self._policy_flops(policy)
                    margins[b] = min(margins[b], margin)
                if trace:
                    traces[b].append(LayerTrace(layer, z, score, margin, bool(done)))
                if done:
                    logits[b], exit_layers[b] = policy.answer(layer, z, feat, self.exits, states[b]), layer
                    del x[b]
        full = np.array([self.embed_flops(len(r[0])) + L * self.layer_flops(len(r[0])) +
                         self.exits.heads[L - 1].flops(len(r[0])) for r in rows], np.float64)
        policy.observe(states, logits, exit_layers)  # a stateful policy (CeeBERT) learns from this batch
        return ClassifyResult(logits, exit_layers, L, self.label_names, flops, full, margins,
                              repr(policy), traces, msgs, run if policy.skips_layers else None)

    def _policy_flops(self, policy) -> int:
        F = next((h.feature_size for h in self.exits.heads if h is not None), 0)
        if policy.name == "learned":
            return 2 * F
        if policy.name == "ponder":
            P = self.exits.ponder["hid.w"].shape[0]
            return 2 * P * F + 2 * P
        if policy.name == "de3":                    # squared distances to the C prototypes
            return 3 * self.num_labels * F
        if policy.name == "dact":                   # the halting unit w_i . feat_i
            return 2 * F
        return 0

    def __repr__(self):
        c = self.config
        kinds = sorted({h.kind for h in self.exits.heads[:-1] if h is not None}) or ["none"]
        return (f"<refexit.Model L={c.num_hidden_layers} H={c.hidden_size} heads={c.num_attention_heads} "
                f"labels={self.label_names} exits={'/'.join(kinds)} dtype={np.dtype(self.dtype).name} "
                f"{'' if self.precision == 'fp32' else 'precision=' + self.precision + ' '}"
                f"from {self.source}>")


class NoTokenizer:
    """The tokenizer of a folder that ships none refexit reads (a RoBERTa / XLM-R / ALBERT folder
    without tokenizer.json or vocab.json + merges.txt). False in a test; any use raises a
    ConfigError saying so. Token ids work as for every model."""

    def __init__(self, reason: str):
        self.reason = reason

    def __bool__(self):
        return False

    def __getattr__(self, name):
        if name.startswith("__"):           # copy / pickle protocol lookups: plainly absent
            raise AttributeError(name)
        raise ConfigError(self.reason)

    def __call__(self, *args, **kwargs):
        raise ConfigError(self.reason)


def load(path: str | Path, dtype=np.float32, exits: str | Path | None = None) -> Model:
    """Load a Hugging Face folder (config.json, model.safetensors, vocab.txt) of a family in
    refexit.arch.FAMILIES, plus its exits.safetensors when present (or `exits`).

    RoBERTa / XLM-R / ALBERT folders read their tokenizer.json (or vocab.json + merges.txt, or
    spiece.model / sentencepiece.bpe.model) with refexit.tokenizers.load_tokenizer (byte-level BPE,
    Unigram); without one they load with a
    NoTokenizer (false; using it raises ConfigError) and take token ids."""
    from .tokenizers.wordpiece import Tokenizer
    cfg, weights, exit_params, labels = load_checkpoint(path, dtype=dtype, exits=exits)
    folder = Path(path)
    if cfg.model_type in ("bert", "distilbert", "electra") or (folder / "vocab.txt").is_file():
        tok = Tokenizer.from_dir(path, cfg)
    elif any((folder / n).is_file() for n in ("tokenizer.json", "vocab.json", "spiece.model",
                                               "sentencepiece.bpe.model")):
        from .tokenizers.load import load_tokenizer
        tok = load_tokenizer(folder, cfg)
    else:
        tok = NoTokenizer(
            f"{path}: this {cfg.model_type} folder has no tokenizer refexit reads (tokenizer.json, "
            f"vocab.txt, vocab.json + merges.txt, or spiece.model): classify token ids instead (Python: "
            f"model.classify({{'input_ids': ..., 'attention_mask': ...}}); compiled programs: --ids)")
    return Model(cfg, weights, exit_params, labels, tok, source=str(path))
