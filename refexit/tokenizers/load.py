"""`load_tokenizer(folder)`: the tokenizer a model folder ships, with one call interface
(`tok(texts, pairs, max_length)` -> Encoding; `tok.encode(text, pair, max_length)` -> (ids, type ids)).

What a folder may hold, in the order looked for:

    tokenizer.json             the Rust `tokenizers` serialisation (RoBERTa, ALBERT, DistilBERT, ELECTRA,
                               BERT folders of the hub): a TokenizerJson pipeline; when it is exactly the
                               BERT WordPiece pipeline (BertNormalizer, BertPreTokenizer, WordPiece "##",
                               [CLS] A [SEP] B [SEP]) the equivalent wordpiece.Tokenizer, which the
                               compiler also has in C;
                               ALBERT, XLM-R and T5 (SentencePiece) folders: the normalizer and
                               pre-tokenizer transformers 5 builds for that class (sentencepiece_spec)
    vocab.txt                  BERT WordPiece with the settings of tokenizer_config.json (as today)
    vocab.json + merges.txt    RoBERTa byte-level BPE as transformers 5's RobertaTokenizer builds it from
                               them (add_prefix_space from tokenizer_config.json; <s> A </s> </s> B </s>;
                               the special tokens without lstrip / rstrip)
    spiece.model               ALBERT and T5 SentencePiece models (sentencepiece.bpe.model: XLM-R) when
                               there is no tokenizer.json: the Unigram tokenizer transformers 5's class
                               builds from it (spm_model.py reads the protobuf; the class from
                               tokenizer_config.json's tokenizer_class, else config.json's model_type),
                               completed by sentencepiece_spec as a tokenizer.json would be
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from refexit import jsonio
from refexit.errors import CheckpointError, ConfigError
from refexit.tokenizers import spm_model
from refexit.tokenizers.tokenizer_json import TokenizerJson
from refexit.tokenizers.wordpiece import SPECIAL_TOKENS, Tokenizer

HUGE = 1 << 40            # tokenizer_config's model_max_length for "no limit" is 1e30


def _read_optional(path: Path) -> dict:
    return jsonio.read_object(path, ConfigError, required=False) or {}


def _max_length(folder: Path, config, tok_cfg: dict, max_length: int | None) -> int:
    """The explicit max_length, else the model config's, else tokenizer_config's model_max_length
    when it is a real limit, else config.json's max_position_embeddings (less RoBERTa's position
    offset), else 512."""
    if max_length is not None:
        return max_length
    if config is not None and getattr(config, "max_length", None):
        return int(config.max_length)
    mml = tok_cfg.get("model_max_length")
    if isinstance(mml, (int, float)) and not isinstance(mml, bool) and 0 < mml < HUGE:
        return int(mml)
    cfg = _read_optional(folder / "config.json")
    mpe, pad = cfg.get("max_position_embeddings"), cfg.get("pad_token_id", 1)
    if isinstance(mpe, int) and not isinstance(mpe, bool) and mpe > 0:
        if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert") and isinstance(pad, int):
            mpe -= pad + 1                     # RoBERTa's positions start after padding_idx: 514 -> 512
        if mpe > 0:
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
        check_config_agrees(tok.spec, tok_cfg, folder)
        rebuilt = sentencepiece_spec(tok.spec, tok_cfg, folder)
        if rebuilt is not None:
            tok = TokenizerJson(rebuilt, source=tok.source, max_length=ml, pad_token=pad_token,
                                pad_token_id=None if pad_token is not None else pad_id,
                                text=(folder / "tokenizer.json").read_text(encoding="utf-8")
                                + json.dumps([rebuilt["normalizer"], rebuilt["pre_tokenizer"]]))
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
    elif any((folder / n).is_file() for n in spm_model.FILE_NAMES):
        tok = _sentencepiece_tokenizer(folder, tok_cfg, ml, pad_token, pad_id)
    else:
        raise CheckpointError(f"{folder} has no tokenizer: looked for tokenizer.json, vocab.txt, "
                              f"vocab.json + merges.txt, spiece.model, sentencepiece.bpe.model")
    vocab_size = getattr(config, "vocab_size", None) if config is not None else None
    if vocab_size is not None and tok.vocab_size > vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has {tok.vocab_size} tokens but config field 'vocab_size' "
                          f"is {vocab_size}: token ids would run past the embedding table")
    return tok


_BERT_CLASSES = {"BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer"}


def check_config_agrees(spec: dict, tok_cfg: dict, folder: Path) -> None:
    """transformers 5 does not run a folder's tokenizer.json as written when tokenizer_config.json
    names a class with its own set-up (BertTokenizer, DistilBertTokenizer, ElectraTokenizer,
    RobertaTokenizer, AlbertTokenizer): it takes the vocabulary (and merges) from tokenizer.json
    and rebuilds the normalizer and pre-tokenizer from tokenizer_config.json's settings. refexit
    reads tokenizer.json; when the two disagree on a setting that changes ids, that is a
    ConfigError naming it (never a silent difference from AutoTokenizer)."""
    cls = str(tok_cfg.get("tokenizer_class") or "").removesuffix("Fast")
    norm, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    problems = []

    def want(key, default):
        v = tok_cfg.get(key, default)
        return default if v is None and default is not None else v
    if cls in _BERT_CLASSES:
        lower, strip = want("do_lower_case", True), tok_cfg.get("strip_accents")
        cjk = want("tokenize_chinese_chars", True)
        if norm.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
            problems.append(f"{cls} builds BertNormalizer + BertPreTokenizer, tokenizer.json has "
                            f"{norm.get('type')} + {pre.get('type')}")
        else:
            fl = norm.get("lowercase", True)
            fs = norm.get("strip_accents")
            for name, a, b in (("do_lower_case / lowercase", lower, fl),
                               ("strip_accents", lower if strip is None else strip, fl if fs is None else fs),
                               ("tokenize_chinese_chars / handle_chinese_chars", cjk,
                                norm.get("handle_chinese_chars", True))):
                if a != b:
                    problems.append(f"{name}: {a} in tokenizer_config.json, {b} in tokenizer.json")
    elif cls == "RobertaTokenizer":
        a, b = want("add_prefix_space", False), pre.get("add_prefix_space", True)
        if pre.get("type") != "ByteLevel" or a != b:
            problems.append(f"add_prefix_space: {a} in tokenizer_config.json; tokenizer.json's pre-tokenizer "
                            f"{pre.get('type')} add_prefix_space {b}")
    elif cls == "AlbertTokenizer":
        types = [n.get("type") for n in (norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm])
                 if isinstance(n, dict)]
        lower, keep = want("do_lower_case", True), want("keep_accents", False)
        expect = ["Replace", "Replace"] + ([] if keep else ["NFKD", "StripAccents"]) + (["Lowercase"] if lower else [])
        if types and _is_space_runs(norm.get("normalizers", [None])[-1] if norm.get("type") == "Sequence" else norm):
            types = types[:-1]                 # Replace " {2,}" of the converter: transformers 5 drops it
        if [t for t in types if t != "Precompiled"][:len(expect) + 1] != expect:
            problems.append(f"do_lower_case {lower}, keep_accents {keep} in tokenizer_config.json build the "
                            f"normalizers {expect}; tokenizer.json has {types}")
    if problems:
        raise ConfigError(f"{folder}: tokenizer_config.json and tokenizer.json disagree (transformers 5's "
                          f"{cls} follows tokenizer_config.json, refexit reads tokenizer.json): "
                          + "; ".join(problems))


_SPM_CLASSES = {"albert": "AlbertTokenizer", "xlm-roberta": "XLMRobertaTokenizer", "t5": "T5Tokenizer"}


def _is_space_runs(n) -> bool:
    return (isinstance(n, dict) and n.get("type") == "Replace" and n.get("pattern") == {"Regex": " {2,}"})


def sentencepiece_class(tok_cfg: dict, folder: Path) -> str:
    """The tokenizer class transformers 5 picks: tokenizer_config.json's tokenizer_class (without
    "Fast"), else the class of config.json's model_type among the SentencePiece ones, else ""."""
    cls = str(tok_cfg.get("tokenizer_class") or "").removesuffix("Fast")
    if not cls:
        cfg = _read_optional(folder / "config.json")
        cls = _SPM_CLASSES.get(cfg.get("model_type"), "")
    return cls


def _sentencepiece_tokenizer(folder: Path, tok_cfg: dict, ml: int, pad_token, pad_id) -> TokenizerJson:
    """A folder with a SentencePiece model file and no tokenizer.json (spm_model.py): the file of
    the class (spiece.model, sentencepiece.bpe.model) -> the spec its class builds -> the
    normalizer and pre-tokenizer of sentencepiece_spec."""
    cls = sentencepiece_class(tok_cfg, folder)
    name = spm_model.FILES.get(cls)
    path = folder / name if name and (folder / name).is_file() else \
        next(folder / n for n in spm_model.FILE_NAMES if (folder / n).is_file())
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    model = spm_model.parse_model(raw, str(path))            # a corrupt file first: CheckpointError
    if name is None:
        raise ConfigError(f"{path}: reading a SentencePiece model needs its tokenizer class: tokenizer_config.json's "
                          f"tokenizer_class (or config.json's model_type) must be one of "
                          + ", ".join(f"{c} ({t})" for t, c in _SPM_CLASSES.items()) + f"; got {cls or 'neither'}")
    if path.name != name:
        raise CheckpointError(f"{folder}: transformers' {cls} reads {name}, the folder has {path.name} only")
    special_map = None
    if (folder / "special_tokens_map.json").is_file():
        special_map = jsonio.read_object(folder / "special_tokens_map.json", ConfigError)
    spec = spm_model.tokenizer_spec(model, cls, tok_cfg, special_map, str(folder / "tokenizer_config.json"))
    spec = sentencepiece_spec(spec, tok_cfg, folder)
    meta = {k: spec[k] for k in ("normalizer", "pre_tokenizer", "post_processor", "added_tokens")}
    return TokenizerJson(spec, source=str(path), max_length=ml, pad_token=pad_token,
                         pad_token_id=None if pad_token is not None else pad_id,
                         text=hashlib.sha256(raw).hexdigest() + json.dumps(meta))


def sentencepiece_spec(spec: dict, tok_cfg: dict, folder: Path) -> dict | None:
    """transformers 5's AlbertTokenizer, XLMRobertaTokenizer and T5Tokenizer (the class named by
    tokenizer_config.json, else by config.json's model_type) do not run tokenizer.json's normalizer
    and pre-tokenizer: they keep its vocabulary, added tokens, post-processor and Precompiled
    charsmap and build the rest themselves (models/*/tokenization_*.py):

        AlbertTokenizer      Replace `` and '' by ", NFKD + StripAccents unless keep_accents,
                             Lowercase if do_lower_case, Precompiled
        XLMRobertaTokenizer  Precompiled
        T5Tokenizer          Precompiled
        all three            WhitespaceSplit, then Metaspace "▁" (prepend always; XLM-R and
                             ALBERT: never when add_prefix_space is false), split

    (The hub's converter-written files have Precompiled + Strip + Replace " {2,}" and a Metaspace
    alone, which give other ids around runs of spaces.) Returns that spec, or None for other
    classes."""
    cls = sentencepiece_class(tok_cfg, folder)
    if cls not in _SPM_CLASSES.values():
        return None
    norm = spec.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    charsmap = next((n for n in steps if isinstance(n, dict) and n.get("type") == "Precompiled"
                     and "precompiled_charsmap" in n), None)
    out: list = []
    prefix = True
    if cls == "AlbertTokenizer":
        keep, lower = tok_cfg.get("keep_accents"), tok_cfg.get("do_lower_case")
        keep, lower = bool(keep), lower is None or bool(lower)       # null: the class default
        out = [{"type": "Replace", "pattern": {"String": "``"}, "content": '"'},
               {"type": "Replace", "pattern": {"String": "''"}, "content": '"'}]
        out += [] if keep else [{"type": "NFKD"}, {"type": "StripAccents"}]
        out += [{"type": "Lowercase"}] if lower else []
    if cls != "T5Tokenizer":
        prefix = tok_cfg.get("add_prefix_space")
        prefix = True if prefix is None else prefix
        if not isinstance(prefix, bool):
            raise ConfigError(f"{folder / 'tokenizer_config.json'}: field 'add_prefix_space' must be true or "
                              f"false, got {prefix!r}")
    if charsmap is not None:
        out.append({"type": "Precompiled", "precompiled_charsmap": charsmap["precompiled_charsmap"]})
    rebuilt = dict(spec)
    rebuilt["normalizer"] = ({"type": "Sequence", "normalizers": out} if cls == "AlbertTokenizer"
                             else out[0] if out else None)
    rebuilt["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always" if prefix else "never",
         "split": True}]}
    return rebuilt


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
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
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
