"""WordPiece tokenizer, token for token identical to Hugging Face's `AutoTokenizer` for BERT.

Two modes, one class:

  "rust" (the default)  the Rust `tokenizers` pipeline that `AutoTokenizer.from_pretrained`,
                        transformers 5's `BertTokenizer` and every `pipeline` run: added special
                        tokens matched on the raw text, `BertNormalizer` (clean_text,
                        handle_chinese_chars, strip_accents, lowercase), `BertPreTokenizer`,
                        `WordPiece`, the `[CLS] A [SEP] (B [SEP])` template and `longest_first`
                        truncation as in tokenizers/src/utils/truncation.rs. Every character
                        class comes from the pinned tables of refexit/tokenizers/tokenizer_unicode.txt
                        (refexit.tokenizers.unicode_pinned: the tables those Rust crates compile in), never
                        from the running Python's `unicodedata`: the tokens are the same on every
                        Python. Checked against `tokenizers` on every code point and on golden
                        files (tests/golden/, tools/make_golden.py).
  "legacy"              transformers' Python tokenizer (`BertTokenizerLegacy` in 5.x:
                        BasicTokenizer + WordpieceTokenizer + PreTrainedTokenizer's truncation).
                        It reads the running Python's `unicodedata`, as that tokenizer does.

Rust pipeline for one text:

    split out special tokens        AddedVocabulary (on the raw text: "[CL\u200bS]" is no special token)
    per remaining chunk:
      clean, space CJK              BertNormalizer do_clean_text, do_handle_chinese_chars
      NFD + drop Mn                 do_strip_accents (when strip_accents, default: lowercase)
      lower case                    do_lowercase (char by char: no final sigma)
      split whitespace, punctuation BertPreTokenizer
      greedy longest match          WordPiece (max_input_chars_per_word 100)

Legacy pipeline for one text (each step names the HF function it mirrors):

    split out special tokens        PreTrainedTokenizer.tokenize (tokens_trie.split)
    per remaining chunk:
      clean + space CJK             BasicTokenizer._clean_text, _tokenize_chinese_chars
      NFC, whitespace split         BasicTokenizer.tokenize, whitespace_tokenize
      per word (cached):
        lower / strip accents       BasicTokenizer.tokenize, _run_strip_accents
        split on punctuation        BasicTokenizer._run_split_on_punc
        greedy longest match        WordpieceTokenizer.tokenize
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refexit.tokenizers import unicode_pinned as unicode_pinned
from refexit.errors import CheckpointError, ConfigError, InputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 100  # WordpieceTokenizer.max_input_chars_per_word
_CACHE_LIMIT = 1 << 20          # words kept in the per-tokenizer cache before it is cleared
MODES = ("rust", "legacy")
# Names what the default tokenizer does; part of the features cache key (refexit/train/features.py):
# change it whenever the tokens of some text change.
BEHAVIOUR = "rust-tokenizers-0.23.3+pinned-unicode-1"


# ---------------------------------------------------------------- Rust pipeline (pinned tables)

def _char_class(ranges) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


class _RustChars(dict):
    """A `str.translate` table: code point -> what BertNormalizer makes of that character alone.

    Every step of BertNormalizer maps characters one by one except the canonical reordering of
    NFD; that only matters for the marks that survive stripping (combining class > 0 but not
    Mn), and texts holding a character that decomposes to one go through the reference
    implementation (`unicode_pinned.PinnedUnicode.normalize`) instead."""

    def __init__(self, lower: bool, strip: bool, cjk: bool):
        super().__init__()
        self.u = unicode_pinned.load()
        self.lower, self.strip, self.cjk = lower, strip, cjk

    def __missing__(self, cp: int) -> str:
        out = self[cp] = self.u.normalize(chr(cp), self.lower, self.strip, self.cjk)
        return out


class _RustRules:
    """The compiled pieces of the Rust pipeline for one (lower, strip, cjk) setting, shared."""

    _cache: dict = {}

    def __init__(self, lower: bool, strip: bool, cjk: bool):
        u = unicode_pinned.load()
        self.u, self.lower, self.strip, self.cjk = u, lower, strip, cjk
        self.chars = _RustChars(lower, strip, cjk)
        punct = _char_class(u.punctuation.ranges) + r"!-/:-@\[-`{-~"
        space = _char_class(u.whitespace.ranges)
        self.split = re.compile(f"[{punct}]|[^{punct}{space}]+")   # BertPreTokenizer
        survivors = {c for c in u.ccc if c not in u.nonspacing}        # reordered, not stripped
        sensitive = sorted({cp for cp in list(u.ccc) + list(u.decomposition)
                            if any(x in survivors for x in u.decompose(cp))})
        self.reorder = re.compile(f"[{_char_class([(c, c) for c in sensitive])}]") if sensitive else None

    @classmethod
    def get(cls, lower: bool, strip: bool, cjk: bool) -> "_RustRules":
        key = (lower, strip, cjk)
        if key not in cls._cache:
            cls._cache[key] = cls(*key)
        return cls._cache[key]

    def normalize(self, text: str) -> str:
        """BertNormalizer.normalize."""
        if self.strip and self.reorder is not None and not text.isascii() and self.reorder.search(text):
            return self.u.normalize(text, self.lower, self.strip, self.cjk)
        return text.translate(self.chars)

    def pre_tokenize(self, text: str) -> list[str]:
        """BertNormalizer, then BertPreTokenizer: the pieces WordPiece sees."""
        return self.split.findall(self.normalize(text))


def truncate_longest_first(ids: list, pair_ids: list, budget: int) -> tuple[list, list]:
    """tokenizers' `truncate_encodings`, LongestFirst with a pair, direction right: with n1 <= n2
    (swapped otherwise), the shorter keeps min(n1, budget // 2), the longer the rest of the
    budget; so when both are cut and the budget is odd the extra token goes to the longer
    sequence, or to the second when they are equally long."""
    n1, n2 = len(ids), len(pair_ids)
    if n1 + n2 <= budget:
        return ids, pair_ids
    swap = n1 > n2
    first, second = (n2, n1) if swap else (n1, n2)
    first = min(first, budget // 2)
    second = min(second, budget - first)
    if swap:
        first, second = second, first
    return ids[:first], pair_ids[:second]


# ---------------------------------------------------------------- legacy character classes (HF tokenization_python)

def _is_whitespace(ch: str) -> bool:
    """HF `_is_whitespace`: space, \\t, \\n, \\r and category Zs."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    """HF `_is_control`: any category C* except \\t, \\n, \\r (which count as whitespace)."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    """HF `_is_punctuation`: every non-alphanumeric printable ASCII character, and category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    """HF `BasicTokenizer._is_chinese_char`: the CJK ideograph blocks (not kana, not hangul)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _clean_char(ch: str) -> str:
    """HF `BasicTokenizer._clean_text` for one character: '' (dropped), ' ' or the character."""
    if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
        return ""
    return " " if _is_whitespace(ch) else ch


class _CharTable(dict):
    """A `str.translate` table that computes a character's replacement the first time it is seen.

    Both `_clean_text` and `_tokenize_chinese_chars` map each character independently, so a
    per-character table applies them exactly, at C speed for characters seen before."""

    def __init__(self, space_cjk: bool):
        super().__init__()
        self.space_cjk = space_cjk

    def __missing__(self, cp: int) -> str:
        out = _clean_char(chr(cp))
        if self.space_cjk and out not in ("", " ") and _is_chinese_char(cp):
            out = f" {out} "  # _tokenize_chinese_chars
        self[cp] = out
        return out


_CLEAN = {True: _CharTable(space_cjk=True), False: _CharTable(space_cjk=False)}
_ASCII_PUNCT_SPLIT = re.compile(r"[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~]+")  # _run_split_on_punc on ASCII


def _strip_accents(word: str) -> str:
    """HF `BasicTokenizer._run_strip_accents`: NFD, then drop nonspacing marks (Mn)."""
    if word.isascii():
        return word
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


def _split_on_punc(word: str) -> list[str]:
    """HF `BasicTokenizer._run_split_on_punc`: every punctuation character becomes its own piece."""
    if word.isascii():
        return _ASCII_PUNCT_SPLIT.findall(word)
    out: list[str] = []
    start_new_word = True
    for ch in word:
        if _is_punctuation(ch):
            out.append(ch)
            start_new_word = True
        else:
            if start_new_word:
                out.append("")
            start_new_word = False
            out[-1] += ch
    return out


# ---------------------------------------------------------------- batch of encoded texts

def input_arrays(enc) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Encoding, dict of arrays, or a bare [B, T] / [T] id array -> (ids [B, T], mask [B, T] or
    None, type_ids [B, T] or None): integer arrays (the mask may be bool) of the ids' shape, as
    given, not yet checked for right padding or ranges (unpack does that; the compiled path leaves
    it to the C code). It runs before every compiled call, so it keeps to attribute checks."""
    bare = isinstance(enc, np.ndarray)
    get = enc.get if isinstance(enc, dict) else (lambda k, d=None: getattr(enc, k, d))
    ids = enc if bare else get("input_ids")
    if ids is None:
        raise InputError("input has no 'input_ids'")
    ids = np.asarray(ids)
    one_row = ids.ndim == 1
    if one_row:
        ids = ids[None]
    if ids.ndim != 2 or (ids.size and ids.dtype.kind not in "iu"):
        raise InputError(f"input_ids must be a [B, T] integer array, got {ids.dtype} {ids.shape}")

    def like_ids(name):                                    # [B, T] integer array, or None if absent
        a = None if bare else get(name)
        if a is None:
            return None
        a = np.asarray(a)
        if one_row and a.ndim == 1:
            a = a[None]
        if a.shape != ids.shape or (a.size and a.dtype.kind not in "iub"):
            raise InputError(f"{name} must match input_ids: an integer array of shape {ids.shape}, "
                             f"got {a.dtype} {a.shape}")
        return a
    return ids, like_ids("attention_mask"), like_ids("token_type_ids")


def unpack(enc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoding, dict of arrays, or a bare [B, T] / [T] id array -> (ids [B, T] int, real [B, T]
    bool, type_ids [B, T] int), checked: integer ids, types and mask, each of the ids' shape, right
    padding (mask 1 for the real tokens, then 0). The one place every NumPy forward path reads its
    input from (input_arrays, then the padding check)."""
    ids, mask, types = input_arrays(enc)
    real = np.ones(ids.shape, bool) if mask is None else mask != 0
    if types is None:
        types = np.zeros(ids.shape, np.int64)
    if mask is not None and not real.all():
        after_pad = real[:, 1:] > real[:, :-1]             # [B, T-1]: a real token after padding
        if after_pad.any():
            bad = int(np.argmax(after_pad.any(axis=1)))
            raise InputError(f"sample {bad}: attention_mask must be 1 for the real tokens then 0 "
                             f"(right padding)")
    return ids, real, types


@dataclass
class Encoding:
    """A right-padded batch: int64 arrays [B, T]; attention_mask is 1 on real tokens, 0 on padding."""
    input_ids: np.ndarray       # [B, T]
    attention_mask: np.ndarray  # [B, T]
    token_type_ids: np.ndarray  # [B, T]

    def __post_init__(self):
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            a = np.asarray(getattr(self, name))
            if a.ndim != 2 or not (a.dtype.kind in "iu" or a.size == 0):
                raise InputError(f"Encoding.{name} must be a 2-D integer array, got "
                                 f"shape {a.shape} dtype {a.dtype}")
            if a.shape != np.shape(self.input_ids):
                raise InputError(f"Encoding.{name} has shape {a.shape}, input_ids has "
                                 f"{np.shape(self.input_ids)}")
            setattr(self, name, a.astype(np.int64, copy=False))

    @property
    def lengths(self) -> np.ndarray:
        """Number of real (unpadded) tokens per row, [B]."""
        return self.attention_mask.sum(axis=1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def row(self, i: int) -> "Encoding":
        """Sample i alone, without padding: arrays [1, n]."""
        i = range(len(self))[i]              # negative indices as usual; IndexError when out of range
        n = int(self.lengths[i])
        return Encoding(self.input_ids[i:i + 1, :n].copy(), self.attention_mask[i:i + 1, :n].copy(),
                        self.token_type_ids[i:i + 1, :n].copy())


# ---------------------------------------------------------------- the tokenizer

class Tokenizer:
    """BERT WordPiece tokenizer; `tok(texts, pairs)` gives an `Encoding` like HF `tokenizer(...)`.

    mode "rust" (default): as `AutoTokenizer` (the Rust `tokenizers` backend), on every Python;
    mode "legacy": as transformers' Python `BertTokenizerLegacy` on this Python's unicodedata."""

    def __init__(self, vocab: list[str], do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, max_length: int = 512, pad_token_id: int = 0,
                 source: str = "vocabulary", mode: str = "rust"):
        _check_vocab(vocab, source)
        if mode not in MODES:
            raise ConfigError(f"tokenizer mode must be one of {', '.join(MODES)}, got {mode!r}")
        if strip_accents not in (True, False, None):
            raise ConfigError(f"strip_accents must be True, False or None, got {strip_accents!r}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 3:
            raise ConfigError(f"max_length must be an integer >= 3, got {max_length!r}")
        if not isinstance(pad_token_id, int) or not 0 <= pad_token_id < len(vocab):
            raise ConfigError(f"pad_token_id {pad_token_id!r} is not an id of the {len(vocab)}-token {source}")
        self.vocab = list(vocab)
        self.token_to_id = {tok: i for i, tok in enumerate(self.vocab)}
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.max_length = max_length
        self.pad_id = pad_token_id
        self.cls_id, self.sep_id, self.unk_id, self.mask_id = (
            self.token_to_id[t] for t in ("[CLS]", "[SEP]", "[UNK]", "[MASK]"))
        self._longest = max(map(len, self.vocab))  # no vocab entry is longer: bounds the match loop
        self.mode = mode
        self._clean = _CLEAN[self.tokenize_chinese_chars]
        strip = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self._rules = (_RustRules.get(self.do_lower_case, strip, self.tokenize_chinese_chars)
                       if mode == "rust" else None)
        self._special_split = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_dir(cls, model_dir: str | Path, config=None, mode: str = "rust") -> "Tokenizer":
        """Read `vocab.txt` of an HF model folder; settings come from `config` (a BertConfig)."""
        if config is None:
            from refexit.config import BertConfig
            config = BertConfig.from_dir(model_dir)
        path = Path(model_dir) / "vocab.txt"
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist (a model folder needs vocab.txt for its tokenizer)")
        try:
            with path.open(encoding="utf-8") as f:  # HF load_vocab: universal newlines, strip '\n' only
                vocab = [line.rstrip("\n") for line in f.readlines()]
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{path} is not UTF-8 text: {e}") from None
        if len(vocab) > config.vocab_size:
            raise ConfigError(f"{path} has {len(vocab)} tokens but config field 'vocab_size' is "
                              f"{config.vocab_size}: token ids would run past the embedding table")
        return cls(vocab, do_lower_case=config.do_lower_case, strip_accents=config.strip_accents,
                   tokenize_chinese_chars=config.tokenize_chinese_chars, max_length=config.max_length,
                   pad_token_id=config.pad_token_id, source=str(path), mode=mode)

    @property
    def behaviour(self) -> str:
        """Names what this tokenizer does with a text (not the vocabulary or settings): part of
        the features cache key."""
        if self.mode == "rust":
            return BEHAVIOUR
        return f"legacy+unicodedata-{unicodedata.unidata_version}"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def num_special_tokens(self, pair: bool = False) -> int:
        """The special tokens encode adds: [CLS] a [SEP] (b [SEP])."""
        return 3 if pair else 2

    # -- text -> word pieces

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of `text`, without [CLS]/[SEP] (HF `tokenizer.tokenize`)."""
        if not isinstance(text, str):
            raise InputError(f"TypeError: text must be a str, got {type(text).__name__}")
        # special tokens in the raw text are kept whole (Rust AddedVocabulary, Python tokens_trie)
        chunks = self._special_split.split(text) if "[" in text else [text]
        pieces: list[str] = []
        for k, chunk in enumerate(chunks):
            if k % 2:                       # odd positions hold the special tokens themselves
                pieces.append(chunk)
                continue
            if self._rules is not None:                   # the Rust pipeline / the legacy one
                words, split = self._rules.pre_tokenize(chunk), self._wordpiece
            else:
                words, split = self._basic_words(chunk), self._word_pieces
            for word in words:
                cached = self._cache.get(word)
                if cached is None:
                    cached = split(word)
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[word] = cached
                pieces.extend(cached)
        return pieces

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces WordPiece sees (special tokens whole, then the normalized, split words):
        for tests and tools that check normalization without a vocabulary's [UNK]."""
        chunks = self._special_split.split(text) if "[" in text else [text]
        out: list[str] = []
        for k, chunk in enumerate(chunks):
            if k % 2:
                out.append(chunk)
            elif self._rules is not None:
                out += self._rules.pre_tokenize(chunk)
            else:
                for word in self._basic_words(chunk):
                    if word in SPECIAL_TOKENS:
                        out.append(word)
                        continue
                    if self.do_lower_case:
                        word = word.lower()
                        if self.strip_accents is not False:
                            word = _strip_accents(word)
                    elif self.strip_accents:
                        word = _strip_accents(word)
                    out += " ".join(_split_on_punc(word)).split()
        return out

    def _basic_words(self, text: str) -> list[str]:
        """BasicTokenizer.tokenize up to whitespace_tokenize: clean, space CJK, NFC, split."""
        text = text.translate(self._clean)
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)
        return text.split()

    def _word_pieces(self, word: str) -> list[str]:
        """BasicTokenizer.tokenize's per-word loop body, then WordpieceTokenizer.tokenize."""
        if word in SPECIAL_TOKENS:           # never_split: kept as is (and it is in the vocab)
            return [word]
        if self.do_lower_case:
            word = word.lower()              # str.lower on the whole word (final sigma like HF)
            if self.strip_accents is not False:
                word = _strip_accents(word)
        elif self.strip_accents:
            word = _strip_accents(word)
        pieces = []
        for part in " ".join(_split_on_punc(word)).split():  # BasicTokenizer's last whitespace_tokenize
            pieces.extend(self._wordpiece(part))
        return pieces

    def _wordpiece(self, word: str) -> list[str]:
        """WordpieceTokenizer.tokenize for one word: greedy longest match first, '##' continuations."""
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = min(len(word), start + self._longest)
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_to_id:
                    break
                end -= 1
            else:
                return ["[UNK]"]             # some suffix matches nothing: the whole word is unknown
            pieces.append(piece)
            start = end
        return pieces

    # -- word pieces -> ids

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None
               ) -> tuple[list[int], list[int]]:
        """[CLS] text [SEP] (pair [SEP]) ids and token type ids, truncated like HF `truncation=True`.
        A pair is a pair even when empty (`[CLS] text [SEP] [SEP]`, as tokenizers' encode and a
        batch call; `tok("text", "")` follows transformers' single call, which drops it)."""
        max_length = self._check_max_length(max_length, pair is not None)
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        if pair is None:
            ids = ids[:max_length - 2]       # truncate_sequences, single sequence: cut the end
            return [self.cls_id] + ids + [self.sep_id], [0] * (len(ids) + 2)
        pair_ids = self.convert_tokens_to_ids(self.tokenize(pair))
        if self.mode == "rust":
            ids, pair_ids = truncate_longest_first(ids, pair_ids, max_length - 3)
        else:
            ids, pair_ids = _truncate_longest_first(ids, pair_ids, len(ids) + len(pair_ids) + 3 - max_length)
        return ([self.cls_id] + ids + [self.sep_id] + pair_ids + [self.sep_id],
                [0] * (len(ids) + 2) + [1] * (len(pair_ids) + 1))

    def __call__(self, texts, pairs=None, max_length: int | None = None, padding: str = "longest") -> Encoding:
        """Encode a text or a list of texts (and pairs) into a right-padded `Encoding`."""
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        if not isinstance(texts, (list, tuple)):
            raise InputError(f"TypeError: texts must be a str or a list of str, got {type(texts).__name__}")
        if not texts:
            raise InputError("texts is empty: nothing to encode")
        if single and pairs == "" and self.mode == "rust":
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
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        for b, (ids, types) in enumerate(rows):
            input_ids[b, :len(ids)] = ids
            attention_mask[b, :len(ids)] = 1
            token_type_ids[b, :len(ids)] = types
        return Encoding(input_ids, attention_mask, token_type_ids)

    def _check_max_length(self, max_length, pair: bool) -> int:
        if max_length is None:
            return self.max_length
        low = 3 if pair else 2
        if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool):
            raise InputError(f"max_length must be an integer, got {type(max_length).__name__}")
        if not low <= max_length <= self.max_length:
            raise InputError(f"max_length {max_length} is out of range: it must be at least {low} "
                             f"(room for [CLS] and [SEP]{' x2' if pair else ''}) and at most "
                             f"{self.max_length}, the model's maximum sequence length")
        return int(max_length)

    # -- ids -> text (simple)

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.token_to_id.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self.vocab):
                raise InputError(f"token id {i} is out of range for a vocabulary of {len(self.vocab)}")
            out.append(self.vocab[i])
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Tokens joined by spaces, '##' continuations glued (HF convert_tokens_to_string; no
        clean_up_tokenization_spaces)."""
        tokens = [t for t in self.convert_ids_to_tokens(ids)
                  if not (skip_special_tokens and t in SPECIAL_TOKENS)]
        return " ".join(tokens).replace(" ##", "").strip()


def _truncate_longest_first(ids: list[int], pair_ids: list[int], n_remove: int) -> tuple[list[int], list[int]]:
    """Legacy mode: PreTrainedTokenizer.truncate_sequences, LONGEST_FIRST with a pair, truncation side right:
    first shorten the longer sequence down to the other's length, then split the rest evenly,
    the extra odd token coming off the second sequence (unless the first is longer)."""
    if n_remove <= 0:
        return ids, pair_ids
    first_remove = min(abs(len(pair_ids) - len(ids)), n_remove)
    second_remove = n_remove - first_remove
    if len(ids) > len(pair_ids):
        ids_cut, pair_cut = first_remove + second_remove // 2, second_remove - second_remove // 2
    else:
        ids_cut, pair_cut = second_remove // 2, first_remove + second_remove - second_remove // 2
    return ids[:len(ids) - ids_cut], pair_ids[:len(pair_ids) - pair_cut]


def _check_vocab(vocab, source: str) -> None:
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(t, str) for t in vocab):
        raise CheckpointError(f"{source}: the vocabulary must be a list of str")
    if not vocab:
        raise CheckpointError(f"{source} is empty: a WordPiece vocabulary needs at least the special tokens")
    seen: dict[str, int] = {}
    for i, tok in enumerate(vocab):
        if tok in seen:
            raise CheckpointError(f"{source}: token {tok!r} appears twice (lines {seen[tok] + 1} and {i + 1})")
        seen[tok] = i
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise CheckpointError(f"{source} lacks the special token(s) {', '.join(missing)}")
