"""Tokenizers read from `tokenizer.json` (the Rust `tokenizers` serialisation), id for id identical to
`transformers.AutoTokenizer` on those folders: WordPiece (BERT, DistilBERT, ELECTRA), byte-level
BPE (RoBERTa), Unigram / SentencePiece (ALBERT).

The pipeline for one text, as tokenizers/src/tokenizer/mod.rs runs it:

    split out added tokens      AddedVocabulary: tokens with normalized=false on the raw text
                                (leftmost-longest, lstrip / rstrip), then the normalized ones on
                                the normalized text of each remaining piece
    per remaining piece:
      normalizer                BertNormalizer Lowercase NFD NFKD NFC NFKC StripAccents Replace
                                Prepend Strip Sequence
      pre-tokenizer             BertPreTokenizer ByteLevel Metaspace Whitespace WhitespaceSplit
                                Punctuation Split Sequence
      model                     WordPiece BPE Unigram WordLevel
    truncation                  longest_first (as `truncation=True, max_length=...`)
    post-processor              TemplateProcessing BertProcessing RobertaProcessing ByteLevel Sequence

Each component is a small function built from its JSON object (`build_normalizer`, ...); a type
or setting it does not support is a `ConfigError` naming it and the supported list (Precompiled,
the SentencePiece charsmap of hub ALBERT / XLM-R / T5 folders, is precompiled.py). Character classes come
from the pinned tables (unicode_pinned.py, unicode_json.py), never from Python's `unicodedata`.

    tok = TokenizerJson.from_dir("roberta-folder", max_length=512)
    enc = tok(["a text"], ["its pair"], max_length=64)        # an Encoding, like wordpiece.Tokenizer
"""
from __future__ import annotations

import hashlib
import heapq
import re
from pathlib import Path

import numpy as np

from refexit import jsonio
from refexit.errors import ConfigError, InputError
from refexit.tokenizers import unicode_json, unicode_pinned
from refexit.tokenizers.wordpiece import Encoding, _RustRules, truncate_longest_first

BEHAVIOUR = "tokenizer-json-rust-tokenizers-0.23.3+pinned-unicode-1"
NORMALIZERS = ("BertNormalizer", "Lowercase", "NFD", "NFKD", "NFC", "NFKC", "StripAccents", "Replace",
               "Prepend", "Strip", "Sequence", "Precompiled")
PRE_TOKENIZERS = ("BertPreTokenizer", "ByteLevel", "Metaspace", "Whitespace", "WhitespaceSplit", "Punctuation",
                  "Split", "Sequence")
MODELS = ("WordPiece", "BPE", "Unigram", "WordLevel")
POST_PROCESSORS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence")
BEHAVIOURS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")
_CACHE_LIMIT = 1 << 20
MAX_ID = 1 << 24                # token ids above this are refused (the id -> token table is a list)


# ---------------------------------------------------------------- reading the JSON

_KIND_NAMES = {"str": "a string", "bool": "true or false", "list": "a list", "dict": "an object",
               "int": "an integer", "num": "a number"}


class _Where:
    """Reads typed fields of one JSON object, every error naming the file and the field path."""

    def __init__(self, obj, path: str, source: str):
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}: {path} must be an object, got {jsonio.type_name(obj)}")
        self.obj, self.path, self.source = obj, path, source

    def fail(self, msg: str):
        raise ConfigError(f"{self.source}: {self.path}: {msg}")

    def get(self, key, kind, default=..., none_ok=False):
        if key not in self.obj:
            if default is ...:
                self.fail(f"field '{key}' is missing")
            return default
        v = self.obj[key]
        if v is None and none_ok:
            return None
        ok = {"str": isinstance(v, str), "bool": isinstance(v, bool), "list": isinstance(v, list),
              "dict": isinstance(v, dict),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "num": isinstance(v, (int, float)) and not isinstance(v, bool)}[kind]
        if not ok:
            self.fail(f"field '{key}' must be {_KIND_NAMES[kind]}{' or null' if none_ok else ''}, "
                      f"got {jsonio.type_name(v)}")
        return v

    def sub(self, key, value=None) -> "_Where":
        return _Where(self.obj[key] if value is None else value, f"{self.path}.{key}", self.source)

    def kind(self, supported: tuple[str, ...], what: str) -> str:
        t = self.get("type", "str")
        if t not in supported:
            self.fail(f"unsupported {what} type {t!r} (supported: {', '.join(supported)})")
        return t


def _pattern(w: _Where):
    """A Replace / Split pattern: {"String": s} or {"Regex": r} -> a compiled Python regex. Regexes
    using classes whose Unicode tables differ between Oniguruma and Python are refused."""
    p = w.get("pattern", "dict")
    if len(p) != 1 or next(iter(p)) not in ("String", "Regex") or not isinstance(next(iter(p.values())), str):
        w.fail(f"field 'pattern' must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {p!r}")
    (kind, s), = p.items()
    if kind == "String":
        return re.compile(re.escape(s))
    if re.search(r"\\[pPwWsSdDbBhH]", s):
        w.fail(f"regex pattern {s!r} uses a Unicode class (\\p, \\w, \\s, \\d, \\b, \\h): not supported")
    try:
        return re.compile(s)
    except re.error as e:
        w.fail(f"regex pattern {s!r} does not compile: {e}")


# ---------------------------------------------------------------- normalizers: str -> str

def build_normalizer(obj, path: str = "normalizer", source: str = "tokenizer.json"):
    """A normalizer's JSON object -> a function str -> str (None: the identity)."""
    if obj is None:
        return None
    w = _Where(obj, path, source)
    t = w.kind(NORMALIZERS, "normalizer")
    u = unicode_json.load()
    if t == "Sequence":
        steps = [build_normalizer(o, f"{path}.normalizers[{i}]", source)
                 for i, o in enumerate(w.get("normalizers", "list"))]
        steps = [s for s in steps if s is not None]

        def sequence(text: str) -> str:
            for s in steps:
                text = s(text)
            return text
        return sequence
    if t == "BertNormalizer":
        if not w.get("clean_text", "bool", True):
            w.fail("clean_text false is not supported")
        lower = w.get("lowercase", "bool", True)
        strip = w.get("strip_accents", "bool", None, none_ok=True)
        rules = _RustRules.get(lower, lower if strip is None else strip, w.get("handle_chinese_chars", "bool", True))
        return rules.normalize
    if t == "Replace":
        pat, content = _pattern(w), w.get("content", "str")
        return lambda text: pat.sub(lambda m: content, text)
    if t == "Precompiled":
        from refexit.tokenizers.precompiled import Charsmap
        return Charsmap.from_base64(w.get("precompiled_charsmap", "str"),
                                    f"{source}: {path}.precompiled_charsmap").normalize
    if t == "Prepend":
        pre = w.get("prepend", "str")
        return lambda text: pre + text if text else text
    if t == "Strip":
        left, right = w.get("strip_left", "bool", True), w.get("strip_right", "bool", True)
        space = unicode_json.char_class(unicode_pinned.load().whitespace.ranges)
        lead, trail = re.compile(f"^[{space}]+"), re.compile(f"[{space}]+$")

        def strip(text: str) -> str:
            if left:
                text = lead.sub("", text)
            return trail.sub("", text) if right else text
        return strip
    return {"Lowercase": u.lower, "StripAccents": u.strip_accents, "NFD": u.nfd, "NFKD": u.nfkd,
            "NFC": u.nfc, "NFKC": u.nfkc}[t]


# ---------------------------------------------------------------- pre-tokenizers: pieces -> pieces
# A piece is (text, at_origin): at_origin when it starts at offset 0 of the original text (what
# Metaspace's prepend_scheme "first" asks). Tracked as "offset 0 of the normalized first chunk":
# the Rust offsets can differ from that only when a normalizer deletes leading characters before a
# splitting pre-tokenizer (not seen in the live tests; ALBERT uses "always").

def _split(text: str, spans, behaviour: str) -> list[tuple[int, int]]:
    """NormalizedString::split: spans [(start, end, is_match)] covering text -> the kept ranges."""
    out: list[list[int]] = []
    if behaviour == "Removed":
        return [(a, b) for a, b, m in spans if not m]
    if behaviour == "Isolated":
        return [(a, b) for a, b, _ in spans]
    prev = False
    if behaviour == "MergedWithPrevious":
        for a, b, m in spans:
            if m and not prev and out:
                out[-1][1] = b
            else:
                out.append([a, b])
            prev = m
    elif behaviour == "MergedWithNext":
        for a, b, m in reversed(spans):
            if m and not prev and out:
                out[-1][0] = a
            else:
                out.append([a, b])
            prev = m
        out.reverse()
    else:                                    # Contiguous
        for a, b, m in spans:
            if m == prev and out:
                out[-1][1] = b
            else:
                out.append([a, b])
            prev = m
    return [(a, b) for a, b in out]


def _spans(text: str, regex, invert: bool = False) -> list[tuple[int, int, bool]]:
    """Every match of regex and every gap between them, in order (tokenizers' Pattern::find_matches)."""
    spans, prev = [], 0
    for m in regex.finditer(text):
        if m.start() > prev:
            spans.append((prev, m.start(), invert))
        spans.append((m.start(), m.end(), not invert))
        prev = m.end()
    if prev < len(text) or not spans:
        spans.append((prev, len(text), invert))
    return spans


def _splitter(regex, behaviour: str, invert: bool = False):
    def split(pieces):
        out = []
        for text, origin in pieces:
            for a, b in _split(text, _spans(text, regex, invert), behaviour):
                if b > a:
                    out.append((text[a:b], origin and a == 0))
        return out
    return split


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (tokenizers byte_level.rs bytes_char)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = _bytes_to_unicode()
_BYTE_TABLE = [BYTE_CHARS[b] for b in range(256)]


def byte_level_chars(text: str) -> str:
    """The UTF-8 bytes of text, each as its printable stand-in (ByteLevel's normalize step)."""
    return "".join(_BYTE_TABLE[b] for b in text.encode("utf-8"))


def _byte_level_regex() -> re.Pattern:
    u = unicode_json.load()
    L, N, S = (u.regex_class(n) for n in ("bytelevel_letter", "bytelevel_number", "bytelevel_space"))
    return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


def build_pre_tokenizer(obj, path: str = "pre_tokenizer", source: str = "tokenizer.json"):
    """A pre-tokenizer's JSON object -> a function [(text, at_origin)] -> [(text, at_origin)]."""
    if obj is None:
        return None
    w = _Where(obj, path, source)
    t = w.kind(PRE_TOKENIZERS, "pre-tokenizer")
    u = unicode_json.load()
    if t == "Sequence":
        steps = [build_pre_tokenizer(o, f"{path}.pretokenizers[{i}]", source)
                 for i, o in enumerate(w.get("pretokenizers", "list"))]

        def sequence(pieces):
            for s in steps:
                pieces = s(pieces)
            return pieces
        return sequence
    if t == "BertPreTokenizer":
        return _bert_pre_tokenizer()
    if t == "ByteLevel":
        prefix = w.get("add_prefix_space", "bool", True)
        use_regex = w.get("use_regex", "bool", True)
        regex = _byte_level_regex()

        def byte_level(pieces):
            out = []
            for text, origin in pieces:
                if prefix and not text.startswith(" "):
                    text = " " + text
                parts = regex.findall(text) if use_regex else [text]   # the regex matches everywhere
                for k, p in enumerate(parts):
                    if p:
                        out.append((byte_level_chars(p), origin and k == 0))
            return out
        return byte_level
    if t == "Metaspace":
        rep = w.get("replacement", "str")
        if len(rep) != 1:
            w.fail(f"field 'replacement' must be one character, got {rep!r}")
        scheme = w.get("prepend_scheme", "str", "always")
        if scheme not in ("always", "first", "never"):
            w.fail(f"unsupported prepend_scheme {scheme!r} (supported: always, first, never)")
        if w.get("add_prefix_space", "bool", None, none_ok=True) is False:
            if scheme != "never":
                w.fail("add_prefix_space does not match declared prepend_scheme")
        split = w.get("split", "bool", True)
        splitter = _splitter(re.compile(re.escape(rep)), "MergedWithNext")

        def metaspace(pieces):
            out = []
            for text, origin in pieces:
                text = text.replace(" ", rep)
                if not text.startswith(rep) and (scheme == "always" or (scheme == "first" and origin)):
                    text = rep + text
                out.append((text, origin))
            return splitter(out) if split else out
        return metaspace
    if t == "Whitespace":
        W, S = u.regex_class("word"), u.regex_class("word_space")
        return _splitter(re.compile(f"[{W}]+|[^{W}{S}]+"), "Removed", invert=True)
    if t == "WhitespaceSplit":
        S = unicode_json.char_class(unicode_pinned.load().whitespace.ranges)
        return _splitter(re.compile(f"[{S}]+"), "Removed")
    if t == "Punctuation":
        behaviour = w.get("behavior", "str", "Isolated")
        if behaviour not in BEHAVIOURS:
            w.fail(f"unsupported behavior {behaviour!r} (supported: {', '.join(BEHAVIOURS)})")
        P = unicode_json.char_class(unicode_pinned.load().punctuation.ranges) + r"!-/:-@\[-`{-~"
        return _splitter(re.compile(f"[{P}]"), behaviour)
    # Split
    behaviour = w.get("behavior", "str")
    if behaviour not in BEHAVIOURS:
        w.fail(f"unsupported behavior {behaviour!r} (supported: {', '.join(BEHAVIOURS)})")
    return _splitter(_pattern(w), behaviour, invert=w.get("invert", "bool", False))


def _bert_pre_tokenizer():
    """BertPreTokenizer: split on whitespace, every punctuation character a piece of its own."""
    split = _RustRules.get(True, True, True).split

    def bert(pieces):
        out = []
        for text, origin in pieces:
            for m in split.finditer(text):
                out.append((m.group(), origin and m.start() == 0))
        return out
    return bert


# ---------------------------------------------------------------- models: word -> ids

class WordPiece:
    """Greedy longest match first, `continuing_subword_prefix` on later pieces; a word with a
    part that matches nothing, or longer than max_input_chars_per_word characters, is [UNK]."""

    def __init__(self, w: _Where):
        self.vocab = _vocab_dict(w)
        self.unk = w.get("unk_token", "str", "[UNK]")
        self.prefix = w.get("continuing_subword_prefix", "str", "##")
        self.max_chars = w.get("max_input_chars_per_word", "int", 100)
        self.longest = max(map(len, self.vocab), default=1)

    def __call__(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self._unk()]
        ids, start = [], 0
        while start < len(word):
            end = min(len(word), start + self.longest)
            while start < end:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:
                return [self._unk()]
            ids.append(self.vocab[piece])
            start = end
        return ids

    def _unk(self) -> int:
        if self.unk not in self.vocab:
            raise InputError(f"WordPiece: unk_token {self.unk!r} is not in the vocabulary")
        return self.vocab[self.unk]


class WordLevel:
    def __init__(self, w: _Where):
        self.vocab = _vocab_dict(w)
        self.unk = w.get("unk_token", "str", "<unk>")

    def __call__(self, word: str) -> list[int]:
        if word in self.vocab:
            return [self.vocab[word]]
        if self.unk not in self.vocab:
            raise InputError(f"WordLevel: unk_token {self.unk!r} is not in the vocabulary")
        return [self.vocab[self.unk]]


class BPE:
    """Byte-pair encoding (tokenizers models/bpe): characters, then the lowest-ranked merge first
    (leftmost among equal ranks) until none applies. Dropout must be off."""

    def __init__(self, w: _Where):
        self.vocab = _vocab_dict(w)
        dropout = w.get("dropout", "num", None, none_ok=True)
        if dropout not in (None, 0, 0.0):
            w.fail(f"dropout {dropout} is not supported (random merges): set it to null")
        self.unk = w.get("unk_token", "str", None, none_ok=True)
        self.prefix = w.get("continuing_subword_prefix", "str", None, none_ok=True) or None
        self.suffix = w.get("end_of_word_suffix", "str", None, none_ok=True) or None
        self.fuse_unk = w.get("fuse_unk", "bool", False)
        self.byte_fallback = w.get("byte_fallback", "bool", False)
        self.ignore_merges = w.get("ignore_merges", "bool", False)
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, m in enumerate(w.get("merges", "list")):
            if isinstance(m, str):
                parts = m.split(" ")
            elif isinstance(m, list) and all(isinstance(x, str) for x in m):
                parts = m
            else:
                w.fail(f"merges[{rank}] must be \"a b\" or [\"a\", \"b\"], got {jsonio.type_name(m)}")
            if len(parts) != 2:
                w.fail(f"merges[{rank}] {m!r} is not a pair")
            a, b = parts
            for tok in (a, b, a + b):
                if tok not in self.vocab:
                    w.fail(f"merges[{rank}] {m!r}: {tok!r} is not in the vocabulary")
            self.merges[(self.vocab[a], self.vocab[b])] = (rank, self.vocab[a + b])
        self._cache: dict[str, list[int]] = {}

    def __call__(self, word: str) -> list[int]:
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        ids = self._cache.get(word)
        if ids is None:
            ids = self._merge_word(word)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _merge_word(self, word: str) -> list[int]:
        symbols: list[int] = []
        unk = None                                     # a pending [UNK] id (fused runs: one)
        for i, ch in enumerate(word):
            s = ch
            if i > 0 and self.prefix:
                s = self.prefix + s
            if i == len(word) - 1 and self.suffix:
                s = s + self.suffix
            if s in self.vocab:
                if unk is not None:
                    symbols.append(unk)
                    unk = None
                symbols.append(self.vocab[s])
                continue
            if self.byte_fallback:
                codes = [f"<0x{b:02X}>" for b in s.encode("utf-8")]
                if all(c in self.vocab for c in codes):
                    symbols += [self.vocab[c] for c in codes]   # as the Rust code: a pending unk waits
                    continue
            if self.unk is not None:
                if self.unk not in self.vocab:
                    raise InputError(f"BPE: unk_token {self.unk!r} is not in the vocabulary")
                if unk is not None and not self.fuse_unk:
                    symbols.append(unk)
                unk = self.vocab[self.unk]
        if unk is not None:
            symbols.append(unk)
        return self._merge_all(symbols)

    def _merge_all(self, ids: list[int]) -> list[int]:
        """Word::merge_all: a heap of (rank, position, new id); stale entries are skipped."""
        n = len(ids)
        sym = list(ids)
        alive = [True] * n
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        heap = [(self.merges[(sym[i], sym[i + 1])][0], i, self.merges[(sym[i], sym[i + 1])][1])
                for i in range(n - 1) if (sym[i], sym[i + 1]) in self.merges]
        heapq.heapify(heap)
        while heap:
            rank, pos, new_id = heapq.heappop(heap)
            if not alive[pos] or nxt[pos] == -1:
                continue
            right = nxt[pos]
            m = self.merges.get((sym[pos], sym[right]))
            if m is None or m[1] != new_id:
                continue
            sym[pos] = new_id
            alive[right] = False
            nxt[pos] = nxt[right]
            if nxt[right] != -1:
                prv[nxt[right]] = pos
            if prv[pos] >= 0:
                m = self.merges.get((sym[prv[pos]], sym[pos]))
                if m is not None:
                    heapq.heappush(heap, (m[0], prv[pos], m[1]))
            if nxt[pos] != -1:
                m = self.merges.get((sym[pos], sym[nxt[pos]]))
                if m is not None:
                    heapq.heappush(heap, (m[0], pos, m[1]))
        return [s for s, a in zip(sym, alive) if a]


class Unigram:
    """SentencePiece unigram (tokenizers models/unigram, encode_optimized): Viterbi over every
    vocabulary piece starting at each character; a character no single-character piece covers
    gets the unk piece scored min_score - 10; consecutive unknowns are fused into one [UNK]."""

    def __init__(self, w: _Where):
        vocab = w.get("vocab", "list")
        self.pieces: list[str] = []
        self.scores: list[float] = []
        for i, item in enumerate(vocab):
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                    or not isinstance(item[1], (int, float)) or isinstance(item[1], bool)):
                w.fail(f"vocab[{i}] must be [piece, score], got {item!r:.60}")
            self.pieces.append(item[0])
            self.scores.append(float(item[1]))
        if not self.pieces:
            w.fail("the vocabulary is empty but at least <unk> is needed")
        self.vocab = {}
        for i, p in enumerate(self.pieces):
            self.vocab[p] = i                         # a repeated piece: the last id wins, as in Rust
        self.unk_id = w.get("unk_id", "int", None, none_ok=True)
        if self.unk_id is not None and not 0 <= self.unk_id < len(self.pieces):
            w.fail(f"unk_id {self.unk_id} is not an id of the {len(self.pieces)}-piece vocabulary")
        if w.get("byte_fallback", "bool", False):
            w.fail("byte_fallback true is not supported for Unigram")
        self.min_score = min(self.scores)
        self.longest = max(len(p) for p in self.pieces)
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = [self._id(p) for p in self.encode(text)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def _id(self, piece: str) -> int:
        if piece in self.vocab:
            return self.vocab[piece]
        if self.unk_id is None:
            raise InputError("Unigram: an unknown piece but the model has no unk_id")
        return self.unk_id

    def encode(self, text: str) -> list[str]:
        n = len(text)
        unk_score = self.min_score - 10.0
        best = [0.0] * (n + 1)                         # best path score ending at each character
        start: list[int | None] = [None] * (n + 1)     # where that path's last piece starts
        node_id = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            single = False
            for j in range(i + 1, min(n, i + self.longest) + 1):   # increasing length, as the trie
                pid = self.vocab.get(text[i:j])
                if pid is None:
                    continue
                cand = self.scores[pid] + here
                if start[j] is None or cand > best[j]:
                    best[j], start[j], node_id[j] = cand, i, pid
                if j == i + 1:
                    single = True
            if not single:
                cand = unk_score + here
                if start[i + 1] is None or cand > best[i + 1]:
                    if self.unk_id is None:
                        raise InputError("Unigram: an unknown character but the model has no unk_id")
                    best[i + 1], start[i + 1], node_id[i + 1] = cand, i, self.unk_id
        out: list[str] = []
        fused: list[str] = []
        end = n
        while end > 0:
            s = start[end]
            if node_id[end] == self.unk_id:
                fused.append(text[s:end])
            else:
                if fused:
                    out.append("".join(reversed(fused)))
                    fused = []
                out.append(text[s:end])
            end = s
        if fused:
            out.append("".join(reversed(fused)))
        return out[::-1]


def _vocab_dict(w: _Where) -> dict[str, int]:
    vocab = w.get("vocab", "dict")
    for tok, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < MAX_ID:
            w.fail(f"vocab[{tok!r}] must be an integer id in [0, {MAX_ID}), got {i!r:.40}")
    return vocab


def build_model(obj, path: str = "model", source: str = "tokenizer.json"):
    w = _Where(obj, path, source)
    if "type" not in obj:                          # old files: the type is implied by the fields
        w.fail("field 'type' is missing")
    t = w.kind(MODELS, "model")
    return {"WordPiece": WordPiece, "BPE": BPE, "Unigram": Unigram, "WordLevel": WordLevel}[t](w)


# ---------------------------------------------------------------- post-processors

class PostProcessor:
    """Adds the special tokens and sets the type ids: process(a, b or None) -> (ids, type_ids)."""

    def __init__(self, single, pair):
        # single / pair: lists of ("A" | "B" | [special ids], type_id); a sequence's tokens all get
        # the type id of its place (every processor read here sets them so)
        self.single, self.pair = single, pair

    def added(self, is_pair: bool) -> int:
        return sum(len(x) for x, _ in (self.pair if is_pair else self.single) if not isinstance(x, str))

    def process(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        types: list[int] = []
        for x, t in (self.single if b is None else self.pair):
            seq = a if x == "A" else b if x == "B" else x
            ids += seq
            types += [t] * len(seq)
        return ids, types


def build_post_processor(obj, path: str = "post_processor", source: str = "tokenizer.json") -> PostProcessor:
    if obj is None:                                # no special tokens; a pair's second part has type 1
        return PostProcessor([("A", 0)], [("A", 0), ("B", 1)])
    w = _Where(obj, path, source)
    t = w.kind(POST_PROCESSORS, "post-processor")
    if t == "ByteLevel":                           # offsets only
        return None
    if t == "Sequence":
        parts = [build_post_processor(o, f"{path}.processors[{i}]", source)
                 for i, o in enumerate(w.get("processors", "list"))]
        parts = [p for p in parts if p is not None]
        if len(parts) > 1:
            w.fail("a Sequence with more than one processor adding tokens is not supported")
        return parts[0] if parts else build_post_processor(None, path, source)
    if t in ("BertProcessing", "RobertaProcessing"):
        ids = {}
        for key in ("cls", "sep"):
            v = w.get(key, "list")
            if len(v) != 2 or not isinstance(v[0], str) or not isinstance(v[1], int) or isinstance(v[1], bool):
                w.fail(f"field '{key}' must be [token, id], got {v!r:.60}")
            ids[key] = v[1]
        cls, sep = [ids["cls"]], [ids["sep"]]
        if t == "BertProcessing":
            return PostProcessor([(cls, 0), ("A", 0), (sep, 0)], [(cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)])
        return PostProcessor([(cls, 0), ("A", 0), (sep, 0)],
                             [(cls, 0), ("A", 0), (sep, 0), (sep, 0), ("B", 0), (sep, 0)])
    # TemplateProcessing
    specials = w.get("special_tokens", "dict")
    special_ids = {}
    for name, v in specials.items():
        sw = w.sub("special_tokens", specials).sub(name, v)
        ids = sw.get("ids", "list")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            sw.fail("field 'ids' must be a list of token ids")
        special_ids[name] = ids

    def template(key: str, allowed: tuple[str, ...]):
        out = []
        for k, item in enumerate(w.get(key, "list")):
            iw = _Where(item, f"{path}.{key}[{k}]", source)
            if len(item) != 1 or next(iter(item)) not in ("SpecialToken", "Sequence"):
                iw.fail(f"must be {{\"SpecialToken\": ...}} or {{\"Sequence\": ...}}, got {item!r:.60}")
            (kind, body), = item.items()
            bw = iw.sub(kind, body)
            ident, type_id = bw.get("id", "str"), bw.get("type_id", "int")
            if kind == "Sequence":
                if ident not in allowed:
                    bw.fail(f"sequence id {ident!r} must be one of {', '.join(allowed)}")
                out.append((ident, type_id))
            else:
                if ident not in special_ids:
                    bw.fail(f"special token {ident!r} is not in special_tokens")
                out.append((special_ids[ident], type_id))
        return out
    return PostProcessor(template("single", ("A",)), template("pair", ("A", "B")))


# ---------------------------------------------------------------- added tokens

class AddedTokens:
    """AddedVocabulary: the tokens matched whole before the model runs (special tokens and added
    ones). Tokens with normalized=false match on the raw text, the others on normalized text."""

    def __init__(self, items: list, source: str, normalizer, model_vocab: dict[str, int], model_size: int):
        """Ids as tokenizers' AddedVocabulary::add_tokens gives them when it reads the file (the
        "id" fields are not used): the model's id of the content when it has one, else the next
        id from the model's vocabulary size on; a content listed twice keeps its id, the last
        entry's flags. An empty content is skipped, as there."""
        self.by_content: dict[str, int] = {}
        entries: dict[int, tuple[str, dict, bool]] = {}
        next_id = model_size
        for k, item in enumerate(items):
            w = _Where(item, f"added_tokens[{k}]", source)
            content = w.get("content", "str")
            w.get("id", "int")
            if w.get("single_word", "bool", False):
                w.fail("single_word true is not supported")
            flags = {"lstrip": w.get("lstrip", "bool", False), "rstrip": w.get("rstrip", "bool", False)}
            special = w.get("special", "bool", False)
            normalized = w.get("normalized", "bool", not special)
            if not content:
                continue
            tid = self.by_content.get(content, model_vocab.get(content))
            if tid is None:
                tid, next_id = next_id, next_id + 1
            flags["id"] = tid
            self.by_content[content] = tid
            entries[tid] = (content, flags, normalized)
        self.raw: dict[str, dict] = {}
        self.normed: dict[str, dict] = {}
        for content, flags, normalized in entries.values():
            if normalized:
                key = normalizer(content) if normalizer is not None else content
                if key:
                    self.normed[key] = flags
            else:
                self.raw[content] = flags
        space = unicode_json.char_class(unicode_pinned.load().whitespace.ranges)
        self._lspace, self._rspace = re.compile(f"[{space}]*$"), re.compile(f"[{space}]*")  # search / match at pos
        self._raw_re, self._normed_re = self._regex(self.raw), self._regex(self.normed)

    @staticmethod
    def _regex(tokens: dict):
        if not tokens:
            return None
        # leftmost-longest: at one position the longest alternative first
        return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))

    def split(self, text: str, raw: bool) -> list[tuple[str, int | None, bool]]:
        """AddedVocabulary::find_matches: text -> [(piece, token id or None, piece starts text)]."""
        regex, tokens = (self._raw_re, self.raw) if raw else (self._normed_re, self.normed)
        if regex is None:
            return [(text, None, True)] if text else []
        out, done = [], 0
        for m in regex.finditer(text):
            flags = tokens[m.group()]
            start, stop = m.start(), m.end()
            if flags["lstrip"]:
                start = max(self._lspace.search(text, 0, start).start(), done)
            if flags["rstrip"]:
                stop = self._rspace.match(text, stop).end()
            if done < start:
                out.append((text[done:start], None, done == 0))
            out.append((text[start:stop], flags["id"], start == 0))
            done = stop
        if done < len(text):
            out.append((text[done:], None, done == 0))
        return out


# ---------------------------------------------------------------- the tokenizer

class TokenizerJson:
    """A `tokenizer.json` pipeline with the call interface of refexit.tokenizers.wordpiece.Tokenizer:
    `tok(texts, pairs, max_length)` -> Encoding, `tok.encode(text, pair, max_length)` -> (ids, type ids)."""

    def __init__(self, spec: dict, source: str = "tokenizer.json", max_length: int = 512,
                 pad_token: str | None = None, pad_token_id: int | None = None, text: str | None = None):
        top = _Where(spec, "tokenizer", source)
        self.source, self.spec = source, spec
        self.normalizer = build_normalizer(top.get("normalizer", "dict", None, none_ok=True), source=source)
        self.pre_tokenizer = build_pre_tokenizer(top.get("pre_tokenizer", "dict", None, none_ok=True), source=source)
        self.model = build_model(top.get("model", "dict"), source=source)
        self.post = build_post_processor(top.get("post_processor", "dict", None, none_ok=True), source=source)
        if self.post is None:
            self.post = build_post_processor(None, source=source)
        top.get("decoder", "dict", None, none_ok=True)      # checked, not used: ids only
        model_size = len(self.model.pieces) if isinstance(self.model, Unigram) else len(self.model.vocab)
        self.added = AddedTokens(top.get("added_tokens", "list", []), source, self.normalizer, self.model.vocab,
                                 model_size)
        # id -> token over the model's vocabulary and the added tokens
        vocab = dict(self.model.vocab)
        vocab.update(self.added.by_content)
        size = max(vocab.values(), default=-1) + 1
        self.vocab = [""] * size
        for tok, i in vocab.items():
            self.vocab[i] = tok
        self.token_to_id = vocab
        for pp in (self.post.single, self.post.pair):
            for x, _ in pp:
                if not isinstance(x, str) and any(i >= size for i in x):
                    raise ConfigError(f"{source}: post_processor adds token id {max(x)}, not an id of the "
                                      f"{size}-token vocabulary")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < self.post.added(True) + 1:
            raise ConfigError(f"max_length must be an integer >= {self.post.added(True) + 1}, got {max_length!r}")
        self.max_length = max_length
        if pad_token_id is None:            # tokenizer_config's pad_token, else <pad> / [PAD], else 0
            padding = spec.get("padding") if isinstance(spec.get("padding"), dict) else {}
            names = [pad_token, padding.get("pad_token"), "<pad>", "[PAD]"]
            pad_token_id = next((vocab[n] for n in names if isinstance(n, str) and n in vocab), 0)
        if not 0 <= pad_token_id < max(size, 1):
            raise ConfigError(f"pad_token_id {pad_token_id} is not an id of the {size}-token vocabulary")
        self.pad_id = pad_token_id
        self.kind = type(self.model).__name__
        digest = hashlib.sha256((text if text is not None else repr(spec)).encode()).hexdigest()[:16]
        self._behaviour = f"{BEHAVIOUR}+{digest}"
        # read by the features cache key (refexit/train/features.py), like wordpiece.Tokenizer's settings
        self.do_lower_case = None
        self.strip_accents = None
        self.tokenize_chinese_chars = None

    @classmethod
    def from_file(cls, path: str | Path, **kw) -> "TokenizerJson":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
        except OSError as e:
            raise ConfigError(f"{path} cannot be read: {e}") from None
        spec = jsonio.loads(text, str(path))
        return cls(spec, source=str(path), text=text, **kw)

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def num_special_tokens(self, pair: bool = False) -> int:
        """The special tokens encode adds (the post-processor's: RoBERTa <s> a </s> (</s> b </s>))."""
        return self.post.added(pair)

    # -- text -> ids

    def tokenize_ids(self, text: str) -> list[int]:
        """The ids of text without the post-processor's special tokens."""
        if not isinstance(text, str):
            raise InputError(f"TypeError: text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for chunk, tid, origin in self.added.split(text, raw=True):
            if tid is not None:
                ids.append(tid)
                continue
            normed = self.normalizer(chunk) if self.normalizer is not None else chunk
            for piece, tid2, first in self.added.split(normed, raw=False):
                if tid2 is not None:
                    ids.append(tid2)
                    continue
                pieces = [(piece, origin and first)]
                if self.pre_tokenizer is not None:
                    pieces = self.pre_tokenizer(pieces)
                for word, _ in pieces:
                    ids += self.model(word)
        return ids

    def tokenize(self, text: str) -> list[str]:
        return self.convert_ids_to_tokens(self.tokenize_ids(text))

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None
               ) -> tuple[list[int], list[int]]:
        """Special tokens added, truncated as `truncation=True, max_length=...` (longest_first)."""
        max_length = self._check_max_length(max_length, pair is not None)
        ids = self.tokenize_ids(text)
        if pair is None:
            return self.post.process(ids[:max_length - self.post.added(False)], None)
        pair_ids = self.tokenize_ids(pair)
        ids, pair_ids = truncate_longest_first(ids, pair_ids, max_length - self.post.added(True))
        return self.post.process(ids, pair_ids)

    def __call__(self, texts, pairs=None, max_length: int | None = None, padding: str = "longest") -> Encoding:
        """Encode a text or a list of texts (and pairs) into a right-padded `Encoding`."""
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        if not isinstance(texts, (list, tuple)):
            raise InputError(f"TypeError: texts must be a str or a list of str, got {type(texts).__name__}")
        if not texts:
            raise InputError("texts is empty: nothing to encode")
        if single and pairs == "":
            pairs = None                     # transformers' single call: an empty pair is no pair
        if pairs is not None:
            pairs = [pairs] if single and isinstance(pairs, str) else pairs
            if not isinstance(pairs, (list, tuple)) or len(pairs) != len(texts):
                raise InputError(f"pairs must be a list as long as texts ({len(texts)}), got "
                                 f"{len(pairs) if isinstance(pairs, (list, tuple)) else type(pairs).__name__}")
            if any(p is None for p in pairs):
                raise InputError("pairs holds None: give a pair for every text or pairs=None")
        if padding not in ("longest", "max_length"):
            raise InputError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        max_length = self._check_max_length(max_length, pairs is not None)
        rows = [self.encode(t, None if pairs is None else pairs[i], max_length) for i, t in enumerate(texts)]
        width = max_length if padding == "max_length" else max(len(ids) for ids, _ in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)     # [B, T]
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)            # [B, T]
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)            # [B, T]
        for b, (ids, types) in enumerate(rows):
            input_ids[b, :len(ids)] = ids
            attention_mask[b, :len(ids)] = 1
            token_type_ids[b, :len(ids)] = types
        return Encoding(input_ids, attention_mask, token_type_ids)

    def _check_max_length(self, max_length, pair: bool) -> int:
        if max_length is None:
            return self.max_length
        low = self.post.added(pair)
        if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool):
            raise InputError(f"max_length must be an integer, got {type(max_length).__name__}")
        if not max(low, 1) <= max_length <= self.max_length:
            raise InputError(f"max_length {max_length} is out of range: it must be at least {max(low, 1)} "
                             f"(room for the {low} special tokens) and at most {self.max_length}, the "
                             f"model's maximum sequence length")
        return int(max_length)

    # -- ids -> tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        out = []
        for t in tokens:
            if t not in self.token_to_id:
                raise InputError(f"token {t!r} is not in the vocabulary")
            out.append(self.token_to_id[t])
        return out

    def convert_ids_to_tokens(self, ids) -> list[str]:
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self.vocab):
                raise InputError(f"token id {i} is out of range for a vocabulary of {len(self.vocab)}")
            out.append(self.vocab[i])
        return out
