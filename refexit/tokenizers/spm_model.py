"""SentencePiece model files (`spiece.model`: ALBERT, T5; `sentencepiece.bpe.model`: XLM-R), read
without the sentencepiece or protobuf packages, and the Unigram tokenizer spec (tokenizer.json's
shape) that transformers 5's AlbertTokenizer / XLMRobertaTokenizer / T5Tokenizer build from one
when a folder has no tokenizer.json.

The file is a serialized `ModelProto` (protobuf 2). The fields read, with their numbers from
src/sentencepiece_model.proto (google/sentencepiece, commit 2734490, 2025-02-27):

    ModelProto      1 pieces (repeated SentencePiece)  2 trainer_spec  3 normalizer_spec
                    (4 self_test_data, 5 denormalizer_spec and extensions >= 200: skipped)
    SentencePiece   1 piece (string)  2 score (float)  3 type (enum, default NORMAL:
                    NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6)
    TrainerSpec     3 model_type (enum, default UNIGRAM: UNIGRAM 1, BPE 2, WORD 3, CHAR 4)
                    35 byte_fallback (false)  40 unk_id (0)  41 bos_id (1)  42 eos_id (2)
                    43 pad_id (-1)  45 unk_piece  46 bos_piece  47 eos_piece  48 pad_piece
    NormalizerSpec  1 name  2 precompiled_charsmap (bytes)  3 add_dummy_prefix (true)
                    4 remove_extra_whitespaces (true)  5 escape_whitespaces (true)

Encoding (protobuf wire format): each field is a varint key (field number << 3 | wire type), then
wire type 0 a varint, 1 eight bytes, 2 a varint length and that many bytes (strings, bytes,
messages), 5 four bytes (float). Varints are little-endian base-128, at most 10 bytes; a negative
int32 is the 10-byte varint of its 64-bit two's complement. Unknown fields are skipped; a scalar
given twice keeps the last value and a message given twice is merged, as protobuf parsers do.
Anything malformed (a truncated varint or length, a length past its message, wire types 3 / 4 / 6
/ 7, field number 0, a known field with the wrong wire type, a piece that is empty or not UTF-8, an
unknown piece type, a non-finite score, no pieces) is a CheckpointError naming the file, the byte
offset and what is wrong.

What transformers 5 builds from it (tokenization_utils_tokenizers.TokenizersBackend.
_convert_from_sentencepiece: SentencePieceExtractor.extract, the converter's convert_from_spm, then
the class's __init__):

    model           Unigram over the pieces and scores as stored (ALBERT: as is, without the -100
                    AlbertConverter gives "number," pieces when it writes a tokenizer.json;
                    XLM-R: <s> <pad> </s> <unk>, the pieces from id 3 on, <mask> (fairseq's offset
                    of 1); T5: + <extra_id_{n-1}> ... <extra_id_0>, n = extra_ids, 100), the
                    class's unk id (ALBERT 1, XLM-R 3, T5 2), byte_fallback off
    normalizer      the charsmap as a Precompiled step (none when the model has none); the class's
                    own steps come from load.sentencepiece_spec, as for a tokenizer.json
    added tokens    tokenizer_config.json's added_tokens_decoder, the named special tokens (the
                    class's defaults, overridden by tokenizer_config.json, by special_tokens_map.json
                    when there is no added_tokens_decoder), the extra special tokens (_extra_tokens:
                    the CONTROL pieces and T5's extra ids unless tokenizer_config.json lists its
                    own): matched on the raw text, no lstrip / rstrip unless a token's own entry
                    says so; a content listed twice keeps its first id and added_tokens_decoder's
                    flags, else its last entry's (the Rust AddedVocabulary replaces them)
    post-processor  the class's template: ALBERT [CLS] A [SEP] (B [SEP], type 1); XLM-R <s> A </s>
                    (</s> B </s>); T5 A </s> (B </s>), type ids 0

trainer_spec's model_type must be UNIGRAM: the classes would run a BPE, WORD or CHAR model's pieces
as a Unigram, which is not how SentencePiece segments them, so such files are a ConfigError naming
the type. The normalizer_spec flags are read (`SpmModel`) but, as in transformers 5, not used: the
class's WhitespaceSplit + Metaspace stand for add_dummy_prefix, remove_extra_whitespaces and
escape_whitespaces.

    m = read_model("albert-folder/spiece.model")      # SpmModel
    spec = tokenizer_spec(m, "AlbertTokenizer", tok_cfg, special_tokens_map)
"""
from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from refexit.errors import CheckpointError, ConfigError

FILES = {"AlbertTokenizer": "spiece.model", "T5Tokenizer": "spiece.model",
         "XLMRobertaTokenizer": "sentencepiece.bpe.model"}
FILE_NAMES = ("spiece.model", "sentencepiece.bpe.model")
PIECE_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
MODEL_TYPES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}
WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "start group", 4: "end group", 5: "fixed32"}
CONTROL = 3


@dataclass
class SpmModel:
    """The parts of a ModelProto read (defaults as in sentencepiece_model.proto)."""
    path: str
    pieces: list[tuple[str, float, int]] = field(default_factory=list)   # (piece, score, type)
    model_type: int = 1
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


# ---------------------------------------------------------------- the wire format

class _Reader:
    """Fields of one message: buf[start:end] of the file's bytes; errors name the file and offset."""

    def __init__(self, path: str, buf: bytes, start: int, end: int, what: str):
        self.path, self.buf, self.pos, self.end, self.what = path, buf, start, end, what

    def fail(self, at: int, msg: str):
        raise CheckpointError(f"{self.path}: not a valid SentencePiece model: {self.what} at byte {at}: {msg}")

    def varint(self) -> int:
        buf, pos, end = self.buf, self.pos, self.end
        at, shift, value = pos, 0, 0
        while True:
            if pos >= end:
                self.fail(at, "truncated varint")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift >= 70:
                self.fail(at, "varint longer than 10 bytes")
        self.pos = pos
        return value

    def fields(self):
        """(field number, wire type, value, offset) of each field: value an int (varint, fixed64 /
        fixed32 as raw bits) or (start, end) of a length-delimited field's bytes."""
        while self.pos < self.end:
            at = self.pos
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                self.fail(at, "field number 0")
            if wire == 0:
                value = self.varint()
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if self.pos + size > self.end:
                    self.fail(at, f"truncated {WIRE_NAMES[wire]} field {number}")
                value = int.from_bytes(self.buf[self.pos:self.pos + size], "little")
                self.pos += size
            elif wire == 2:
                n = self.varint()
                if n > self.end - self.pos:
                    self.fail(at, f"field {number} is {n} bytes long but only {self.end - self.pos} remain")
                value = (self.pos, self.pos + n)
                self.pos += n
            else:
                self.fail(at, f"wire type {wire}{' (' + WIRE_NAMES[wire] + ')' if wire in WIRE_NAMES else ''} "
                              f"of field {number} is not supported")
            yield number, wire, value, at

    def expect(self, number: int, wire: int, want: int, at: int, name: str):
        if wire != want:
            self.fail(at, f"field {name} ({number}) has wire type {WIRE_NAMES.get(wire, wire)}, "
                          f"expected {WIRE_NAMES[want]}")

    def sub(self, span, what: str) -> "_Reader":
        return _Reader(self.path, self.buf, span[0], span[1], what)

    def text(self, span, at: int, name: str) -> str:
        try:
            return self.buf[span[0]:span[1]].decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(at, f"{name} is not UTF-8: {e}")


def _int32(v: int) -> int:
    """An int32 field's varint: the low 32 bits, signed (negatives come as 10-byte varints)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _float(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# SentencePiece fields: number -> (attribute, wire type, kind)
_TRAINER = {3: ("model_type", 0, "enum"), 35: ("byte_fallback", 0, "bool"), 40: ("unk_id", 0, "int32"),
            41: ("bos_id", 0, "int32"), 42: ("eos_id", 0, "int32"), 43: ("pad_id", 0, "int32"),
            45: ("unk_piece", 2, "str"), 46: ("bos_piece", 2, "str"), 47: ("eos_piece", 2, "str"),
            48: ("pad_piece", 2, "str")}
_NORMALIZER = {1: ("normalizer_name", 2, "str"), 2: ("precompiled_charsmap", 2, "bytes"),
               3: ("add_dummy_prefix", 0, "bool"), 4: ("remove_extra_whitespaces", 0, "bool"),
               5: ("escape_whitespaces", 0, "bool")}


def _read_spec(r: _Reader, table: dict, name: str, m: SpmModel) -> None:
    """TrainerSpec / NormalizerSpec fields into m (the others skipped)."""
    for number, wire, value, at in r.fields():
        if number not in table:
            continue
        attr, want, kind = table[number]
        r.expect(number, wire, want, at, f"{name}.{attr}")
        if kind == "str":
            value = r.text(value, at, f"{name}.{attr}")
        elif kind == "bytes":
            value = r.buf[value[0]:value[1]]
        elif kind == "bool":
            value = value != 0
        elif kind == "int32":
            value = _int32(value)
        elif kind == "enum":
            value = _int32(value)
            if value not in MODEL_TYPES:
                r.fail(at, f"{name}.{attr} {value} is not a model type ({', '.join(MODEL_TYPES.values())})")
        setattr(m, attr, value)


def _read_piece(r: _Reader, index: int) -> tuple[str, float, int]:
    piece, score, kind = None, 0.0, 1
    for number, wire, value, at in r.fields():
        if number == 1:
            r.expect(number, wire, 2, at, "piece")
            piece = r.text(value, at, "piece")
        elif number == 2:
            r.expect(number, wire, 5, at, "score")
            score = _float(value)
            if not math.isfinite(score):
                r.fail(at, f"score {score} is not finite")
        elif number == 3:
            r.expect(number, wire, 0, at, "type")
            kind = _int32(value)
            if kind not in PIECE_TYPES:
                r.fail(at, f"type {kind} is not a piece type ({', '.join(f'{k} {v}' for k, v in PIECE_TYPES.items())})")
    if not piece:
        r.fail(r.end, f"piece {index} is {'missing' if piece is None else 'empty'}")
    return piece, score, kind


_F32 = struct.Struct("<f")


def _canonical_piece(buf: bytes, s: int, e: int) -> tuple[str, float, int] | None:
    """buf[s:e] when it is a SentencePiece as sentencepiece writes it (piece shorter than 128
    bytes, score, type unless NORMAL, in that order), read at once; None for anything else (the
    general reader then reads it or names what is wrong): 2.1x to 3.1x faster over three runs of
    tools/bench_spm_model.py (250,000 pieces, 5.6 MB: 0.8 to 1.3 s against 2.0 to 3.0 s)."""
    n = buf[s + 1] if e - s > 1 and buf[s] == 0x0A else 0x80
    q = s + 2 + n
    if not 0 < n < 0x80 or q + 5 > e or buf[q] != 0x15:
        return None
    rest = q + 5
    if rest == e:
        kind = 1
    elif rest + 2 == e and buf[rest] == 0x18 and 1 <= buf[rest + 1] <= 6:
        kind = buf[rest + 1]
    else:
        return None
    score = _F32.unpack_from(buf, q + 1)[0]
    try:
        return (buf[s + 2:q].decode("utf-8"), score, kind) if math.isfinite(score) else None
    except UnicodeDecodeError:
        return None


def parse_model(data: bytes, path: str = "spiece.model") -> SpmModel:
    """A serialized ModelProto -> SpmModel (CheckpointError when it is not a valid one)."""
    m = SpmModel(path=path)
    r = _Reader(path, data, 0, len(data), "ModelProto")
    for number, wire, value, at in r.fields():
        if number == 1:
            r.expect(number, wire, 2, at, "pieces")
            piece = _canonical_piece(data, value[0], value[1])
            m.pieces.append(piece or _read_piece(r.sub(value, f"pieces[{len(m.pieces)}]"), len(m.pieces)))
        elif number == 2:
            r.expect(number, wire, 2, at, "trainer_spec")
            _read_spec(r.sub(value, "trainer_spec"), _TRAINER, "trainer_spec", m)
        elif number == 3:
            r.expect(number, wire, 2, at, "normalizer_spec")
            _read_spec(r.sub(value, "normalizer_spec"), _NORMALIZER, "normalizer_spec", m)
    if not m.pieces:
        raise CheckpointError(f"{path}: not a valid SentencePiece model: it holds no pieces"
                              f"{' (an empty file)' if not data else ''}")
    return m


def read_model(path: str | Path) -> SpmModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    return parse_model(data, str(path))


# ---------------------------------------------------------------- the tokenizer transformers builds

# named special tokens of each class (its __init__ defaults), in SPECIAL_TOKENS_ATTRIBUTES order
CLASS_TOKENS = {
    "AlbertTokenizer": {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
                        "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"},
    "XLMRobertaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                            "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"},
    "T5Tokenizer": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
}
UNK_IDS = {"AlbertTokenizer": 1, "XLMRobertaTokenizer": 3, "T5Tokenizer": 2}
_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def _token(value, where: str) -> tuple[str, dict] | None:
    """A special token of tokenizer_config.json / special_tokens_map.json: a string, or an
    AddedToken object ({"content": ..., "lstrip": ..., ...}) -> (content, its flags)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        flags = {k: value[k] for k in _FLAGS if k in value}
        if any(not isinstance(v, bool) for v in flags.values()):
            raise ConfigError(f"{where}: the flags of {value['content']!r} must be true or false, got {flags}")
        return value["content"], flags
    raise ConfigError(f"{where} must be a string or an AddedToken object with a 'content', got {value!r:.80}")


def _token_list(value, where: str) -> list[tuple[str, dict]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of tokens, got {type(value).__name__}")
    return [t for i, v in enumerate(value) if (t := _token(v, f"{where}[{i}]")) is not None]


def _vocab(m: SpmModel, cls: str, named: dict[str, str], tok_cfg: dict) -> list[tuple[str, float]]:
    """The Unigram vocabulary of the converter's convert_from_spm."""
    vocab = [(p, s) for p, s, _ in m.pieces]
    if cls == "XLMRobertaTokenizer":
        head = [(named[k], 0.0) for k in ("bos_token", "pad_token", "eos_token", "unk_token")]
        return head + vocab[3:] + [(named["mask_token"], 0.0)]
    if cls == "T5Tokenizer":
        n = tok_cfg.get("extra_ids", 100)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"tokenizer_config.json field 'extra_ids' must be an integer >= 0, got {n!r}")
        return vocab + [(f"<extra_id_{i}>", 0.0) for i in range(n - 1, -1, -1)]
    return vocab


def tokenizer_spec(m: SpmModel, cls: str, tok_cfg: dict, special_map: dict | None = None,
                   where: str = "tokenizer_config.json") -> dict:
    """The tokenizer.json-shaped spec transformers 5's `cls` builds from m (see the module
    docstring); its normalizer is the charsmap alone, for load.sentencepiece_spec to complete."""
    if cls not in CLASS_TOKENS:
        raise ConfigError(f"{m.path}: a SentencePiece model is read for {', '.join(CLASS_TOKENS)}, not {cls!r}")
    if m.model_type != 1:
        raise ConfigError(f"{m.path}: trainer_spec.model_type is {MODEL_TYPES[m.model_type]} ({m.model_type}); "
                          f"only UNIGRAM SentencePiece models are read (transformers' {cls} would run its "
                          f"pieces as a Unigram model, not as SentencePiece segments them)")
    decoder = tok_cfg.get("added_tokens_decoder")
    if decoder is not None and not isinstance(decoder, dict):
        raise ConfigError(f"{where}: field 'added_tokens_decoder' must be an object, got {type(decoder).__name__}")
    decoded = [t for k, v in (decoder or {}).items() if (t := _token(v, f"{where}: added_tokens_decoder[{k!r}]"))]
    by_content = {c: f for c, f in decoded}
    # named special tokens: the class's defaults < tokenizer_config.json < special_tokens_map.json
    named: dict[str, tuple[str, dict]] = {}
    for key, default in CLASS_TOKENS[cls].items():
        tok = _token(tok_cfg.get(key, default), f"{where}: field '{key}'")
        if not decoder and special_map and key in special_map:
            tok = _token(special_map[key], f"special_tokens_map.json: field '{key}'")
        if tok is not None:
            named[key] = tok
    names = {k: c for k, (c, _) in named.items()}
    for key in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"):
        if cls == "XLMRobertaTokenizer" and key not in names:
            raise ConfigError(f"{where}: XLMRobertaTokenizer needs a {key}")
    vocab = _vocab(m, cls, names, tok_cfg)
    extras = _extra_tokens(m, cls, tok_cfg, None if decoder else special_map, where)
    # added tokens, each content once, ids as tokenizers' AddedVocabulary gives them
    ids = {}
    for i, (p, _) in enumerate(vocab):
        ids[p] = i                                 # a repeated piece: the last id wins, as in Rust
    added: dict[str, dict] = {}
    next_id = len(vocab)
    for content, flags in decoded + list(named.values()) + extras:
        if not content or content in by_content and content in added:
            continue                               # a token of added_tokens_decoder keeps its flags
        special = flags.get("special", content not in by_content)
        if content not in ids:
            ids[content], next_id = next_id, next_id + 1
        added[content] = {"id": ids[content], "content": content, "single_word": flags.get("single_word", False),
                          "lstrip": flags.get("lstrip", False), "rstrip": flags.get("rstrip", False),
                          "normalized": flags.get("normalized", not special), "special": special}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added.values()),
            "normalizer": ({"type": "Precompiled",
                            "precompiled_charsmap": base64.b64encode(m.precompiled_charsmap).decode("ascii")}
                           if m.precompiled_charsmap else None),
            "pre_tokenizer": None,
            "post_processor": _template(cls, names, ids, where),
            "decoder": None,
            "model": {"type": "Unigram", "unk_id": UNK_IDS[cls], "vocab": [[p, s] for p, s in vocab],
                      "byte_fallback": False}}


def _extra_tokens(m: SpmModel, cls: str, tok_cfg: dict, special_map: dict | None, where: str) -> list:
    """The extra special tokens (PreTrainedTokenizerBase's _extra_special_tokens): tokenizer_config.json's
    extra_special_tokens (else its additional_special_tokens), + special_tokens_map.json's
    extra_special_tokens; when tokenizer_config.json names neither, the model's CONTROL pieces (the
    extractor's additional_special_tokens) and T5's <extra_id_0> ... <extra_id_{n-1}>."""
    key = "extra_special_tokens" if tok_cfg.get("extra_special_tokens") else "additional_special_tokens"
    value = tok_cfg.get(key)
    if isinstance(value, dict):                     # named model-specific tokens
        value = list(value.values())
    extras = _token_list(value, f"{where}: field '{key}'")
    mapped = (special_map or {}).get("extra_special_tokens")
    if isinstance(mapped, list):
        extras += _token_list(mapped, "special_tokens_map.json: field 'extra_special_tokens'")
    if key in tok_cfg or "extra_special_tokens" in tok_cfg or isinstance(mapped, list):
        return extras
    extras = [(p, {}) for p, _, t in m.pieces if t == CONTROL]
    if cls == "T5Tokenizer":
        extras += [(f"<extra_id_{i}>", {}) for i in range(tok_cfg.get("extra_ids", 100))]
    return extras


def _template(cls: str, names: dict[str, str], ids: dict[str, int], where: str) -> dict:
    """The class's TemplateProcessing: (single, pair) of (token name or "A" / "B", type id)."""
    if cls == "AlbertTokenizer":
        c, s = names.get("cls_token"), names.get("sep_token")
        single, pair = [(c, 0), ("A", 0), (s, 0)], [(c, 0), ("A", 0), (s, 0), ("B", 1), (s, 1)]
    elif cls == "XLMRobertaTokenizer":
        b, e = names["bos_token"], names["eos_token"]
        single, pair = [(b, 0), ("A", 0), (e, 0)], [(b, 0), ("A", 0), (e, 0), (e, 0), ("B", 0), (e, 0)]
    else:
        e = names.get("eos_token")
        single, pair = [("A", 0), (e, 0)], [("A", 0), (e, 0), ("B", 0), (e, 0)]
    specials = {}
    for name, _ in single + pair:
        if name in ("A", "B"):
            continue
        if name is None:
            raise ConfigError(f"{where}: {cls}'s template needs its special tokens; one is null")
        specials[name] = {"id": name, "ids": [ids[name]], "tokens": [name]}

    def items(seq):
        return [{"Sequence": {"id": n, "type_id": t}} if n in ("A", "B") else
                {"SpecialToken": {"id": n, "type_id": t}} for n, t in seq]
    return {"type": "TemplateProcessing", "single": items(single), "pair": items(pair), "special_tokens": specials}
