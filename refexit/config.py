"""BertConfig: the few numbers of config.json (+ tokenizer_config.json) the model needs, validated."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")  # erf GELU, tanh GELU (x2), ReLU


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
        return min(self.max_position_embeddings, self.model_max_length)

    def __post_init__(self):
        ints = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config field 'hidden_act': {self.hidden_act!r} is not supported "
                              f"(supported: {', '.join(ACTIVATIONS)})")
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive number, got {eps!r}")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError(f"config field 'id2label' must have keys 0..C-1, got {sorted(self.id2label)}")

    @classmethod
    def from_dict(cls, cfg: dict, tok_cfg: dict | None = None) -> "BertConfig":
        if not isinstance(cfg, dict):
            raise ConfigError("config.json must hold a JSON object")
        mt = cfg.get("model_type", "bert")
        if mt != "bert":
            raise ConfigError(f"config field 'model_type': {mt!r} is not supported (only 'bert')")
        pet = cfg.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ConfigError(f"config field 'position_embedding_type': {pet!r} is not supported")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        for name in required:
            if name not in cfg:
                raise ConfigError(f"config.json lacks the field {name!r}")
        id2label = {}
        archs = tuple(cfg.get("architectures") or ())
        if "id2label" in cfg and any("SequenceClassification" in a for a in archs):
            try:
                id2label = {int(k): str(v) for k, v in cfg["id2label"].items()}
            except (AttributeError, ValueError) as e:
                raise ConfigError(f"config field 'id2label' is malformed: {e}") from None
        tok_cfg = tok_cfg or {}
        kw = dict(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_position_embeddings=cfg.get("max_position_embeddings", 512),
            type_vocab_size=cfg.get("type_vocab_size", 2), hidden_act=cfg.get("hidden_act", "gelu"),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12), pad_token_id=cfg.get("pad_token_id", 0) or 0,
            id2label=id2label, problem_type=cfg.get("problem_type"), architectures=archs,
            do_lower_case=bool(tok_cfg.get("do_lower_case", True)),
            strip_accents=tok_cfg.get("strip_accents"),
            tokenize_chinese_chars=bool(tok_cfg.get("tokenize_chinese_chars", True)),
        )
        mml = tok_cfg.get("model_max_length")
        if isinstance(mml, int) and 0 < mml < 10**9:
            kw["model_max_length"] = mml
        else:
            kw["model_max_length"] = kw["max_position_embeddings"]
        return cls(**kw)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "BertConfig":
        model_dir = Path(model_dir)
        cfg = _read_json(model_dir / "config.json", required=True)
        tok = _read_json(model_dir / "tokenizer_config.json", required=False)
        return cls.from_dict(cfg, tok)


def _read_json(path: Path, required: bool) -> dict | None:
    if not path.exists():
        if required:
            raise ConfigError(f"{path} does not exist (a model folder needs config.json, "
                              f"model.safetensors and vocab.txt)")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
