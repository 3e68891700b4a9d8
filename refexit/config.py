"""BertConfig: the few numbers of config.json (+ tokenizer_config.json) the model needs, validated."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from . import arch, jsonio, validate
from .errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")  # erf GELU, tanh GELU (x2), ReLU
# sane upper bounds, checked before anything is sized from a field (the largest BERTs are far below)
BOUNDS = {"vocab_size": 1 << 22, "hidden_size": 1 << 15, "num_hidden_layers": 256,
          "num_attention_heads": 1 << 10, "intermediate_size": 1 << 17,
          "max_position_embeddings": 1 << 17, "type_vocab_size": 1 << 10}
MAX_LABELS = 1 << 16


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # classification (BertForSequenceClassification); empty id2label = no classifier in the checkpoint
    id2label: dict = field(default_factory=dict)
    problem_type: str | None = None          # "regression" / "single_label_classification" / None
    architectures: tuple = ()
    # tokenizer_config.json
    do_lower_case: bool = True
    strip_accents: bool | None = None        # None: follow do_lower_case (HF BertTokenizer rule)
    tokenize_chinese_chars: bool = True
    model_max_length: int = 512
    # the model family and its quirks (refexit/arch.py); the defaults are BERT's
    model_type: str = "bert"
    embedding_size: int = 0                  # E of the embedding tables; 0: = hidden_size
    position_offset: int = 0                 # RoBERTa: pad_token_id + 1 (positions start after it)
    token_types: bool = True                 # False: DistilBERT (no token type table, type ids ignored)
    shared_layers: bool = False              # ALBERT: one layer's weights applied num_hidden_layers times
    classifier_act: str = "tanh"             # between the final classifier's two Linears
    sinusoidal: bool = False                 # DistilBERT sinusoidal_pos_embds

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def max_length(self) -> int:
        """Longest sequence (in tokens, incl. [CLS]/[SEP]) the model accepts."""
        return min(self.max_positions, self.model_max_length)

    @property
    def max_positions(self) -> int:
        """Position embeddings a sequence can use (RoBERTa: those after the offset)."""
        return self.max_position_embeddings - self.position_offset

    def __post_init__(self):
        for name, hi in BOUNDS.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= hi:
                raise ConfigError(f"config field {name!r} must be a positive integer (at most {hi:,}), "
                                  f"got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config field 'hidden_act': {self.hidden_act!r} is not supported "
                              f"(supported: {', '.join(ACTIVATIONS)})")
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or \
                not 0 < eps <= 1:
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive number (at most 1), got {eps!r}")
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool) or \
                not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"config field 'pad_token_id' must be a token id in [0, {self.vocab_size}), "
                              f"got {self.pad_token_id!r}")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError(f"config field 'id2label' must have keys 0..C-1, got {sorted(self.id2label)}")
        validate.label_names(self.labels, None, "config field 'id2label'", ConfigError)
        if self.embedding_size == 0:
            object.__setattr__(self, "embedding_size", self.hidden_size)
        arch.check_quirks(self)

    @classmethod
    def from_dict(cls, cfg: dict, tok_cfg: dict | None = None) -> "BertConfig":
        """config.json (+ tokenizer_config.json) as parsed JSON -> BertConfig; every field we read is
        type-checked and bounded here, before anything is sized from it."""
        if not isinstance(cfg, dict):
            raise ConfigError("config.json must hold a JSON object")
        if tok_cfg is not None and not isinstance(tok_cfg, dict):
            raise ConfigError("tokenizer_config.json must hold a JSON object")
        cfg, quirks = arch.bert_fields(cfg)         # a family's fields in BERT's names (refexit/arch.py)
        pet = cfg.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ConfigError(f"config field 'position_embedding_type': {pet!r} is not supported")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        for name in required:
            if name not in cfg:
                raise ConfigError(f"config.json lacks the field {name!r}")
        id2label = {}
        archs = tuple(validate.string_list(cfg.get("architectures") or [], "config field 'architectures'"))
        if "id2label" in cfg and any("SequenceClassification" in a for a in archs):
            raw = cfg["id2label"]
            if not isinstance(raw, dict) or len(raw) > MAX_LABELS:
                raise ConfigError(f"config field 'id2label' must be an object of at most {MAX_LABELS} "
                                  f"labels, got {validate._show(raw)}")
            for k, v in raw.items():
                if not k.strip().isdigit() or len(k) > 9:
                    raise ConfigError(f"config field 'id2label' is malformed: key {k!r} is not a class index")
                id2label[int(k)] = validate.string(v, f"config field 'id2label' entry {k!r}")
        tok_cfg = tok_cfg or {}
        tc = "tokenizer_config.json field"
        pad = cfg.get("pad_token_id", 0)
        kw = dict(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_position_embeddings=cfg.get("max_position_embeddings", 512),
            type_vocab_size=cfg.get("type_vocab_size", 2), hidden_act=cfg.get("hidden_act", "gelu"),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12), pad_token_id=0 if pad is None else pad,
            id2label=id2label,
            problem_type=validate.string(cfg.get("problem_type"), "config field 'problem_type'", optional=True),
            architectures=archs,
            do_lower_case=validate.boolean(tok_cfg.get("do_lower_case", True), f"{tc} 'do_lower_case'"),
            strip_accents=None if tok_cfg.get("strip_accents") is None else
            validate.boolean(tok_cfg["strip_accents"], f"{tc} 'strip_accents'"),
            tokenize_chinese_chars=validate.boolean(tok_cfg.get("tokenize_chinese_chars", True),
                                                    f"{tc} 'tokenize_chinese_chars'"),
        )
        kw.update(quirks)
        if not isinstance(kw["hidden_act"], str):
            raise ConfigError(f"config field 'hidden_act' must be a string, got {kw['hidden_act']!r}")
        mml = tok_cfg.get("model_max_length")
        if mml is not None and (isinstance(mml, bool) or not isinstance(mml, (int, float))):
            raise ConfigError(f"{tc} 'model_max_length' must be a number, got {validate._show(mml)}")
        if isinstance(mml, int) and 0 < mml < 10**9:
            kw["model_max_length"] = mml
        else:                       # HF writes int(1e30) for "no limit": the position table decides
            kw["model_max_length"] = kw["max_position_embeddings"]
        return cls(**kw)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "BertConfig":
        model_dir = Path(model_dir)
        cfg = _read_json(model_dir / "config.json", required=True)
        tok = _read_json(model_dir / "tokenizer_config.json", required=False)
        return cls.from_dict(cfg, tok)


def _read_json(path: Path, required: bool) -> dict | None:
    return jsonio.read_object(path, ConfigError, required=required,
                              what="a model folder needs config.json, model.safetensors and vocab.txt")
