"""`load_tokenizer(folder)`: the tokenizer a model folder ships, with one call interface
(`tok(texts, pairs, max_length)` -> Encoding; `tok.encode(text, pair, max_length)` -> (ids, type ids)).

What a folder may hold, in the order looked for:

    tokenizer.json             the Rust `tokenizers` serialisation (RoBERTa, ALBERT, DistilBERT, ELECTRA,
                               BERT folders of the hub): a TokenizerJson pipeline; when it is exactly the
                               BERT WordPiece pipeline (BertNormalizer, BertPreTokenizer, WordPiece "##",
                               [CLS] A [SEP] B [SEP]) the equivalent wordpiece.Tokenizer, which the
                               compiler also has in C
    vocab.txt                  BERT WordPiece with the settings of tokenizer_config.json (as today)
    vocab.json + merges.txt    RoBERTa byte-level BPE (add_prefix_space from tokenizer_config.json;
                               <s> A </s> </s> B </s>; <mask> lstrip, as transformers' RobertaTokenizer)

`spiece.model` alone (SentencePiece protobuf) is not read: a CheckpointError says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from refexit import jsonio
from refexit.errors import CheckpointError, ConfigError
from refexit.tokenizers.tokenizer_json import TokenizerJson
from refexit.tokenizers.wordpiece import SPECIAL_TOKENS, Tokenizer

HUGE = 1 << 40            # tokenizer_config's model_max_length for "no limit" is 1e30


def _read_optional(path: Path) -> dict:
    return jsonio.read_object(path, ConfigError, required=False) or {}


def _max_length(folder: Path, config, tok_cfg: dict, max_length: int | None) -> int:
    """The explicit max_length, else the model config's, else tokenizer_config's model_max_length
    when it is a real limit, else config.json's max_position_embeddings, else 512."""
    if max_length is not None:
        return max_length
    if config is not None and getattr(config, "max_length", None):
        return int(config.max_length)
    mml = tok_cfg.get("model_max_length")
    if isinstance(mml, (int, float)) and not isinstance(mml, bool) and 0 < mml < HUGE:
        return int(mml)
    mpe = _read_optional(folder / "config.json").get("max_position_embeddings")
    if isinstance(mpe, int) and not isinstance(mpe, bool) and mpe > 0:
        return mpe
    return 512


def load_tokenizer(folder: str | Path, config=None, max_length: int | None = None):
    """The tokenizer of an HF model folder (see the module docstring for what is read). `config`
    (the model's config object, optional) gives max_length, pad_token_id and vocab_size checks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    tok_cfg = _read_optional(folder / "tokenizer_config.json")
    ml = _max_length(folder, config, tok_cfg, max_length)
    pad_id = getattr(config, "pad_token_id", None) if config is not None else None
    pad_token = tok_cfg.get("pad_token") if isinstance(tok_cfg.get("pad_token"), str) else None
    if (folder / "tokenizer.json").is_file():
        tok = TokenizerJson.from_file(folder / "tokenizer.json", max_length=ml, pad_token=pad_token,
                                      pad_token_id=None if pad_token is not None else pad_id)
        tok = as_wordpiece(tok) or tok
    elif (folder / "vocab.txt").is_file():
        if config is None:
            from refexit.config import BertConfig
            config = BertConfig.from_dir(folder)
        tok = Tokenizer.from_dir(folder, config)
        if max_length is not None:
            tok.max_length = min(tok.max_length, max_length)
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        tok = TokenizerJson(_roberta_spec(folder, tok_cfg), source=str(folder / "vocab.json"), max_length=ml,
                            pad_token=pad_token or "<pad>", pad_token_id=None)
    elif (folder / "spiece.model").is_file():
        raise CheckpointError(f"{folder} has spiece.model but no tokenizer.json: SentencePiece model files are "
                              f"not read; save the tokenizer with transformers (save_pretrained writes "
                              f"tokenizer.json)")
    else:
        raise CheckpointError(f"{folder} has no tokenizer: looked for tokenizer.json, vocab.txt, "
                              f"vocab.json + merges.txt")
    vocab_size = getattr(config, "vocab_size", None) if config is not None else None
    if vocab_size is not None and tok.vocab_size > vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has {tok.vocab_size} tokens but config field 'vocab_size' "
                          f"is {vocab_size}: token ids would run past the embedding table")
    return tok


def as_wordpiece(tok: TokenizerJson) -> Tokenizer | None:
    """The wordpiece.Tokenizer that encodes every text as `tok` does, when tok's tokenizer.json is
    the BERT WordPiece pipeline; None otherwise."""
    spec = tok.spec
    norm, pre, model, post = (spec.get(k) for k in ("normalizer", "pre_tokenizer", "model", "post_processor"))
    if not (isinstance(norm, dict) and norm.get("type") == "BertNormalizer" and norm.get("clean_text", True)
            and pre == {"type": "BertPreTokenizer"} and model.get("type") == "WordPiece"
            and model.get("unk_token", "[UNK]") == "[UNK]" and model.get("continuing_subword_prefix", "##") == "##"
            and model.get("max_input_chars_per_word", 100) == 100):
        return None
    vocab = tok.vocab
    if "" in vocab or any(t not in tok.token_to_id for t in SPECIAL_TOKENS):
        return None
    ids = {t: tok.token_to_id[t] for t in SPECIAL_TOKENS}
    added = {a["content"]: a for a in spec.get("added_tokens", [])}
    if set(added) != set(SPECIAL_TOKENS) or any(
            a["id"] != ids[c] or a.get("single_word") or a.get("lstrip") or a.get("rstrip") or a.get("normalized")
            for c, a in added.items()):
        return None
    cls, sep = [ids["[CLS]"]], [ids["[SEP]"]]
    if (tok.post.single != [(cls, 0), ("A", 0), (sep, 0)]
            or tok.post.pair != [(cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)]):
        return None
    lower = norm.get("lowercase", True)
    return Tokenizer(list(vocab), do_lower_case=lower, strip_accents=norm.get("strip_accents"),
                     tokenize_chinese_chars=norm.get("handle_chinese_chars", True), max_length=tok.max_length,
                     pad_token_id=tok.pad_id, source=tok.source)


def _roberta_spec(folder: Path, tok_cfg: dict) -> dict:
    """vocab.json + merges.txt -> the tokenizer.json transformers' RobertaTokenizer would build."""
    vocab = jsonio.read_object(folder / "vocab.json", CheckpointError)
    try:
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{folder / 'merges.txt'} is not UTF-8 text: {e}") from None
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    prefix = tok_cfg.get("add_prefix_space", False)
    if not isinstance(prefix, bool):
        raise ConfigError(f"tokenizer_config.json field 'add_prefix_space' must be true or false, got {prefix!r}")
    for t in ("<s>", "</s>"):
        if t not in vocab:
            raise CheckpointError(f"{folder / 'vocab.json'} lacks the special token {t}")
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": t == "<mask>", "rstrip": False,
              "normalized": False, "special": True}
             for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if t in vocab]
    return {"added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": prefix, "use_regex": True},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges, "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                      "byte_fallback": False},
            "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", vocab["</s>"]],
                               "cls": ["<s>", vocab["<s>"]]},
            "decoder": None}
