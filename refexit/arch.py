"""The model families beyond BERT: their config.json fields and tensor names, in BERT's terms.

Every family is read into one BertConfig (BERT's field names, plus the few quirks below) and one
set of canonical tensor names (refexit.checkpoint), so that the oracle and the compiler see one
architecture with switches, not five. From the transformers 5.x modelling code:

  family       embeddings                          layers                final classifier (token 0)
  bert         word + pos + type, LN               L own                 pooler (tanh) + classifier
  roberta      the same; positions start after     L own (BERT's names)  classifier.dense + tanh
  xlm-roberta  pad_token_id (fairseq), 1 type                             + classifier.out_proj
  distilbert   word + pos (sinusoidal or learned), L own (q_lin, ...)    pre_classifier + ReLU
               LN; no token types                                        + classifier
  albert       word + pos + type at width E, LN,   ONE shared layer      pooler (tanh) + classifier
               then Linear(E -> H)                 applied L times
  electra      word + pos + type at width E, LN,   L own (BERT's names)  classifier.dense + GELU
               then Linear(E -> H) when E != H                           + classifier.out_proj

The quirks, as BertConfig fields: model_type, embedding_size (E), position_offset (RoBERTa:
pad_token_id + 1; positions of real tokens are offset + t, a real token equal to the pad id gets
position pad_token_id and does not advance the count, as create_position_ids_from_input_ids),
token_types (False: DistilBERT, type ids are ignored), shared_layers (ALBERT), classifier_act
(the activation between the final classifier's two Linears: tanh, relu or gelu).

Canonical names the families add to refexit.checkpoint's: emb.proj.{w [H,E], b [H]} (ALBERT, ELECTRA
with E != H), classifier.pooler.{w [H,H], b [H]} (the first Linear of a two-Linear classifier:
RoBERTa's and ELECTRA's classifier.dense, DistilBERT's pre_classifier) beside classifier.{w, b}.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import CheckpointError, ConfigError

FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra")
CLASSIFIER_ACTS = ("tanh", "relu", "gelu")

_PREFIX = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "distilbert": "distilbert",
           "albert": "albert", "electra": "electra"}
# tensors of other heads (masked LM, pre-training, discriminator) and buffers: known, not read
_IGNORED = {
    "roberta": r"^lm_head\.|^roberta\.embeddings\.(position_ids|token_type_ids)$",
    "distilbert": r"^vocab_(transform|layer_norm|projector)\.|^distilbert\.embeddings\.position_ids$",
    "albert": r"^predictions\.|^sop_classifier\.|^albert\.embeddings\.(position_ids|token_type_ids)$",
    "electra": r"^discriminator_predictions\.|^generator_|^electra\.embeddings\.(position_ids|token_type_ids)$",
}
_BERT_LAYER = {"attn.q": "attention.self.query", "attn.k": "attention.self.key",
               "attn.v": "attention.self.value", "attn.o": "attention.output.dense",
               "attn.ln": "attention.output.LayerNorm", "ffn.up": "intermediate.dense",
               "ffn.down": "output.dense", "ffn.ln": "output.LayerNorm"}
_DISTILBERT_LAYER = {"attn.q": "attention.q_lin", "attn.k": "attention.k_lin", "attn.v": "attention.v_lin",
                     "attn.o": "attention.out_lin", "attn.ln": "sa_layer_norm", "ffn.up": "ffn.lin1",
                     "ffn.down": "ffn.lin2", "ffn.ln": "output_layer_norm"}
_ALBERT_LAYER = {"attn.q": "attention.query", "attn.k": "attention.key", "attn.v": "attention.value",
                 "attn.o": "attention.dense", "attn.ln": "attention.LayerNorm", "ffn.up": "ffn",
                 "ffn.down": "ffn_output", "ffn.ln": "full_layer_layer_norm"}


def family(cfg: dict) -> str:
    """config.json's model_type (default bert), checked against the supported families."""
    mt = cfg.get("model_type", "bert")
    if mt not in FAMILIES:
        raise ConfigError(f"config field 'model_type': {mt!r} is not supported "
                          f"(supported: {', '.join(FAMILIES)})")
    return mt


def _positive_int(cfg: dict, name: str, default):
    v = cfg.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"config field {name!r} must be a positive integer, got {v!r}")
    return v


def bert_fields(cfg: dict) -> tuple[dict, dict]:
    """A family's config.json -> (the same in BERT's field names, the family's BertConfig quirks).

    Fields that only some families have are checked here; the shared ones (sizes, eps, labels) are
    checked by BertConfig itself."""
    mt = family(cfg)
    quirks = {"model_type": mt}
    if mt == "bert":
        return cfg, quirks
    out = dict(cfg)
    if mt == "distilbert":
        ren = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
               "hidden_dim": "intermediate_size", "activation": "hidden_act"}
        for old, new in ren.items():
            if old in cfg:
                out[new] = cfg[old]
        out.setdefault("hidden_act", "gelu")
        out["layer_norm_eps"] = 1e-12                     # fixed in modeling_distilbert
        out["type_vocab_size"] = 1
        quirks.update(token_types=False, classifier_act="relu")
        sin = cfg.get("sinusoidal_pos_embds", False)
        if not isinstance(sin, bool):
            raise ConfigError(f"config field 'sinusoidal_pos_embds' must be true or false, got {sin!r}")
        quirks["sinusoidal"] = sin
        return out, quirks
    if mt in ("roberta", "xlm-roberta"):
        pad = cfg.get("pad_token_id", 1)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ConfigError(f"config field 'pad_token_id' must be a token id, got {pad!r}")
        out["pad_token_id"] = pad
        quirks.update(position_offset=pad + 1, classifier_act="tanh")
        return out, quirks
    if mt == "albert":
        for name in ("num_hidden_groups", "inner_group_num"):
            if cfg.get(name, 1) != 1:
                raise ConfigError(f"config field {name!r} is {cfg[name]!r}: only ALBERT with one shared "
                                  f"layer (num_hidden_groups = inner_group_num = 1, as every released "
                                  f"ALBERT) is supported")
        out.setdefault("hidden_act", "gelu_new")          # AlbertConfig's default
        quirks.update(embedding_size=_positive_int(cfg, "embedding_size", 128), shared_layers=True)
        return out, quirks
    # electra
    quirks.update(embedding_size=_positive_int(cfg, "embedding_size", 128), classifier_act="gelu")
    return out, quirks


def has_projection(c) -> bool:
    """Does the family map the embeddings E -> H with a Linear (ALBERT always, ELECTRA when E != H)?"""
    return c.model_type == "albert" or (c.model_type == "electra" and c.embedding_size != c.hidden_size)


def hf_names(c) -> dict[str, str]:
    """canonical name -> the family's HF tensor name, for every tensor a non-BERT family may have
    (classifier.pooler.* only in the families whose classifier has two Linears)."""
    mt, p = c.model_type, _PREFIX[c.model_type]
    sfx = {"w": "weight", "b": "bias"}
    names = {}
    emb = f"{p}.embeddings"
    names.update({"emb.word": f"{emb}.word_embeddings.weight", "emb.pos": f"{emb}.position_embeddings.weight",
                  "emb.ln.w": f"{emb}.LayerNorm.weight", "emb.ln.b": f"{emb}.LayerNorm.bias"})
    if c.token_types:
        names["emb.type"] = f"{emb}.token_type_embeddings.weight"
    if mt == "albert":
        names.update({f"emb.proj.{s}": f"albert.encoder.embedding_hidden_mapping_in.{v}" for s, v in sfx.items()})
    elif has_projection(c):
        names.update({f"emb.proj.{s}": f"electra.embeddings_project.{v}" for s, v in sfx.items()})
    if mt == "distilbert":
        layer_names, stem = _DISTILBERT_LAYER, "distilbert.transformer.layer.{i}"
    elif mt == "albert":
        layer_names, stem = _ALBERT_LAYER, "albert.encoder.albert_layer_groups.0.albert_layers.{i}"
    else:
        layer_names, stem = _BERT_LAYER, p + ".encoder.layer.{i}"
    for i in range(num_weight_layers(c)):
        for part, hf in layer_names.items():
            for s, v in sfx.items():
                names[f"layers.{i}.{part}.{s}"] = f"{stem.format(i=i)}.{hf}.{v}"
    for s, v in sfx.items():
        if mt in ("roberta", "xlm-roberta"):               # RobertaModel's pooler; not in ...ForSequenceClassification
            names[f"pooler.{s}"] = f"roberta.pooler.dense.{v}"
        elif mt == "albert":
            names[f"pooler.{s}"] = f"albert.pooler.{v}"
        if mt in ("roberta", "xlm-roberta", "electra"):
            names[f"classifier.pooler.{s}"] = f"classifier.dense.{v}"
            names[f"classifier.{s}"] = f"classifier.out_proj.{v}"
        elif mt == "distilbert":
            names[f"classifier.pooler.{s}"] = f"pre_classifier.{v}"
            names[f"classifier.{s}"] = f"classifier.{v}"
        else:
            names[f"classifier.{s}"] = f"classifier.{v}"
    return names


def canonical_names(c) -> tuple[dict[str, str], re.Pattern]:
    """(HF name -> canonical name, the pattern of the family's known but unread tensors)."""
    return {hf: can for can, hf in hf_names(c).items()}, re.compile(_IGNORED[_PREFIX[c.model_type]])


def embed_flops(c, n: int) -> int:
    """FLOPs (2 x multiply-adds) of the embeddings on n tokens: the E -> H projection of ALBERT and of
    ELECTRA with E != H (2 n E H); 0 for the families without one (table lookups and LayerNorm are not
    counted, as LayerNorm is not in a layer's count). Every FLOPs count adds it once per sample."""
    return 2 * int(n) * c.embedding_size * c.hidden_size if has_projection(c) else 0


def num_weight_layers(c) -> int:
    """How many layers' weights the checkpoint holds (ALBERT: one, applied num_hidden_layers times)."""
    return 1 if c.shared_layers else c.num_hidden_layers


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """DistilBERT's sinusoidal position table [n_pos, dim] (create_sinusoidal_embeddings), float32."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]                      # [P, 1]
    j = np.arange(dim)
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)                     # [P, dim]
    out = np.empty((n_pos, dim), np.float32)
    out[:, 0::2] = np.sin(angle[:, 0::2])
    out[:, 1::2] = np.cos(angle[:, 1::2])
    return out


def position_ids(ids: np.ndarray, c) -> np.ndarray:
    """ids [T] -> position ids [T]: 0..T-1, or RoBERTa's (offset > 0): cumsum(ids != pad) * (ids != pad) + pad."""
    if not c.position_offset:
        return np.arange(len(ids))
    real = (ids != c.pad_token_id).astype(np.int64)                         # [T]
    return np.cumsum(real) * real + c.pad_token_id


def check_quirks(c) -> None:
    """The BertConfig quirk fields, bounded (called from BertConfig.__post_init__)."""
    if c.model_type not in FAMILIES:
        raise ConfigError(f"config field 'model_type': {c.model_type!r} is not supported "
                          f"(supported: {', '.join(FAMILIES)})")
    if c.classifier_act not in CLASSIFIER_ACTS:
        raise ConfigError(f"classifier activation {c.classifier_act!r} (supported: {', '.join(CLASSIFIER_ACTS)})")
    E = c.embedding_size
    if isinstance(E, bool) or not isinstance(E, int) or not 0 < E <= 1 << 15:
        raise ConfigError(f"config field 'embedding_size' must be a positive integer (at most 32,768), got {E!r}")
    off = c.position_offset
    if isinstance(off, bool) or not isinstance(off, int) or not 0 <= off < c.max_position_embeddings - 1:
        raise ConfigError(f"config: position offset {off!r} (pad_token_id + 1) leaves no room in "
                          f"max_position_embeddings={c.max_position_embeddings}")


# ---------------------------------------------------------------- the papers' own exit tensors
# Early-exit checkpoints of these families as the papers' code saves them (names -> refexit.checkpoint's
# canonical names; every tensor's shape is checked there as for BERT's):
#   PABEE on ALBERT (JetRunner/PABEE pabee/modeling_albert.py:798 `self.classifiers = nn.ModuleList(...)`,
#     read at :645-646 as classifiers[i](tanh(albert.pooler(h_i[:, 0])))): classifiers.{i}.{weight,bias},
#     i = 0..L-1, beside albert.pooler.* -> heads.{i}.fc.* (shared_pooler; the one after layer L is the
#     final classifier). tinkoff-ai/palbert's AlbertPABEEForSequenceClassification saves the same names.
#   DeeBERT on RoBERTa (castorini/DeeBERT transformers/modeling_highway_bert.py:59 `self.highway`, :318-320
#     BertHighway's pooler + classifier; modeling_highway_roberta.py:108-110): roberta.encoder.highway.{i}.
#     pooler.dense.* and .classifier.* -> heads.{i}.pooler.*, heads.{i}.fc.* (pooler_linear; i = L-1, the
#     untrained off-ramp at the last layer, is ignored as in BERT checkpoints, docs/methods.md), and a
#     final classifier that is ONE Linear `classifier.*` over roberta.pooler.dense (BERT's head, not
#     RobertaClassificationHead's dense + out_proj).
#   ELBERT on ALBERT (shakeley/ELBERT test_ver/modeling_albert.py, ExitLayer and AlbertTransformer's
#     `self.exit_out_layer` with num_exit_layers = 1, as its released config.json): one exit layer shared by
#     every layer, albert.encoder.exit_out_layer.classifier.* over albert.pooler (use_out_pooler: true) or
#     over its own .pooler.* -> shared.fc.* / shared.pooler.* (a copy per layer: refexit.checkpoint).
#     Its other settings (exit_out_layers.{k}: several shared layers; classifier1/2: use_fc2) are refused.
#   PALBERT (tinkoff-ai/palbert src/modeling/palbert_fast.py, PAlbertForSequenceClassification): NOT read --
#     one cls_head for every layer is expressible, but its lambda (LambdaLayer: Linear(H -> 1), or
#     tanh Linear(H -> H) stacks, over the pooled vector + a layer embedding, concatenated with the
#     previous layer's under use_prev_hiddens) is not refexit's ponder MLP (Linear(F -> P), tanh,
#     Linear(P -> 1)); its tensors are refused by name.
_SFX = {"weight": "w", "bias": "b"}
_REFUSED_EXITS = (
    (r"albert\.encoder\.exit_out_layers\.", "ELBERT with num_exit_layers > 1 (several shared exit layers)"),
    (r"albert\.encoder\.exit_out_layer\.classifier[12]\.", "ELBERT with use_fc2 (a two-Linear exit classifier)"),
    (r"classifiers\.(cls_head|exit_head)\.|albert\.layer_positional_embeddings\.",
     "PALBERT's ponder classifier (its lambda layer is not refexit's ponder MLP)"),
)


def exit_name(c, hf: str) -> str | None:
    """A family's HF tensor name from the papers' early-exit code (above) -> canonical name; '' = known
    but ignored; None = unknown. Raises CheckpointError for the papers' layouts refexit cannot express."""
    mt, L = c.model_type, c.num_hidden_layers
    for pattern, what in _REFUSED_EXITS:
        if re.match(pattern, hf):
            raise CheckpointError(f"tensor {hf!r}: {what} is not supported (supported exits in {mt} "
                                  f"checkpoints: PABEE classifiers.{{i}}, ELBERT exit_out_layer, DeeBERT highway)")
    if mt == "albert":
        m = re.fullmatch(r"classifiers\.(\d{1,6})\.(weight|bias)", hf)                    # PABEE
        if m:
            return f"heads.{int(m.group(1))}.fc.{_SFX[m.group(2)]}"
        m = re.fullmatch(r"albert\.encoder\.exit_out_layer\.(pooler|classifier)\.(weight|bias)", hf)   # ELBERT
        if m:
            return f"shared.{'pooler' if m.group(1) == 'pooler' else 'fc'}.{_SFX[m.group(2)]}"
    if mt in ("roberta", "xlm-roberta"):
        m = re.fullmatch(r"roberta\.encoder\.highway\.(\d{1,6})\.(pooler\.dense|classifier)\.(weight|bias)", hf)
        if m:                                                                                   # DeeBERT
            i = int(m.group(1))
            if i == L - 1:
                return ""            # DeeBERT's untrained off-ramp at layer L, ignored as in BERT checkpoints
            return f"heads.{i}.{'pooler' if m.group(2) == 'pooler.dense' else 'fc'}.{_SFX[m.group(3)]}"
        m = re.fullmatch(r"classifier\.(weight|bias)", hf)               # DeeBERT's one-Linear final classifier
        if m:
            return f"classifier.{_SFX[m.group(1)]}"
    return None
