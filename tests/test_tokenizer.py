"""refexit.tokenizers.wordpiece against Hugging Face's Python BERT tokenizer (golden files) and on its own."""
from __future__ import annotations

import importlib
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refexit.config import BertConfig
from refexit.errors import CheckpointError, ConfigError, InputError
from refexit.tokenizers.wordpiece import SPECIAL_TOKENS, Encoding, Tokenizer

GOLDEN = Path(__file__).parent / "golden"
TINY = GOLDEN / "tiny_seqcls"
TOKENS = json.loads((GOLDEN / "minilm_tokens.json").read_text(encoding="utf-8"))
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_dir(TINY, BertConfig.from_dir(TINY))


@pytest.fixture(scope="module")
def minilm_tok(minilm_dir) -> Tokenizer:
    return Tokenizer.from_dir(minilm_dir, BertConfig.from_dir(minilm_dir))


def small(words, **kw) -> Tokenizer:
    """A tokenizer over the special tokens and the given word pieces."""
    return Tokenizer(SPECIALS + list(words), **kw)


# ---------------------------------------------------------------- golden: HF on the real vocabulary
# singles / pairs: AutoTokenizer (Rust tokenizers), the default mode; legacy_*: BertTokenizerLegacy

def golden_ids(g, ml):
    """The recorded (ids, type ids) at max_length ml (left out when equal to max_length 512's)."""
    ids = g.get(f"input_ids_{ml}", g["input_ids_512"])
    types = g.get(f"token_type_ids_{ml}", g.get("token_type_ids_512", [0] * len(ids)))
    if f"input_ids_{ml}" in g and "pair" not in g:
        types = [0] * len(ids)
    return ids, types


@pytest.fixture(scope="module")
def minilm_legacy(minilm_dir) -> Tokenizer:
    return Tokenizer.from_dir(minilm_dir, BertConfig.from_dir(minilm_dir), mode="legacy")


@pytest.mark.realmodel
@pytest.mark.parametrize("i", range(len(TOKENS["singles"])), ids=lambda i: f"single{i}")
def test_golden_single(minilm_tok, i):
    g = TOKENS["singles"][i]
    assert minilm_tok.tokenize(g["text"]) == g["tokens"]
    for ml in TOKENS["single_max_lengths"]:
        assert minilm_tok.encode(g["text"], max_length=ml) == golden_ids(g, ml), ml
        assert minilm_tok(g["text"], max_length=ml).input_ids[0].tolist() == golden_ids(g, ml)[0], ml


@pytest.mark.realmodel
@pytest.mark.parametrize("i", range(len(TOKENS["pairs"])), ids=lambda i: f"pair{i}")
def test_golden_pair(minilm_tok, i):
    """Pairs at odd and even budgets: longest_first as tokenizers (the odd token to the longer
    text, to the second when equally long); `tok(text, "")` drops an empty pair like
    transformers' single call, a batch keeps it."""
    g = TOKENS["pairs"][i]
    for ml in TOKENS["pair_max_lengths"]:
        want = golden_ids(g, ml)
        enc = minilm_tok(g["text"], g["pair"], max_length=ml)
        n = int(enc.attention_mask.sum())
        assert (enc.input_ids[0, :n].tolist(), enc.token_type_ids[0, :n].tolist()) == want, ml
        if g["pair"]:
            assert minilm_tok.encode(g["text"], g["pair"], max_length=ml) == want, ml
    batch = minilm_tok([g["text"]], [g["pair"]], max_length=16)
    want = g.get("batch_input_ids_16", golden_ids(g, 16)[0])
    assert batch.input_ids[0, :int(batch.attention_mask.sum())].tolist() == want
    assert minilm_tok.encode(g["text"], g["pair"], max_length=16)[0] == want


@pytest.mark.realmodel
@pytest.mark.parametrize("i", range(len(TOKENS["legacy_singles"])), ids=lambda i: f"single{i}")
def test_golden_legacy_single(minilm_legacy, i):
    g = TOKENS["legacy_singles"][i]
    assert minilm_legacy.tokenize(g["text"]) == g["tokens"]
    assert minilm_legacy.encode(g["text"]) == (g["input_ids"], g["token_type_ids"])
    assert minilm_legacy.encode(g["text"], max_length=TOKENS["trunc_max_length"]) == (
        g["trunc_input_ids"], g["trunc_token_type_ids"])


@pytest.mark.realmodel
@pytest.mark.parametrize("i", range(len(TOKENS["legacy_pairs"])), ids=lambda i: f"pair{i}")
def test_golden_legacy_pair(minilm_legacy, i):
    g = TOKENS["legacy_pairs"][i]
    assert minilm_legacy.tokenize(g["text"]) == g["tokens"]
    assert minilm_legacy.tokenize(g["pair"]) == g["pair_tokens"]
    assert minilm_legacy.encode(g["text"], g["pair"]) == (g["input_ids"], g["token_type_ids"])
    assert minilm_legacy.encode(g["text"], g["pair"], max_length=TOKENS["trunc_max_length"]) == (
        g["trunc_input_ids"], g["trunc_token_type_ids"])


@pytest.mark.realmodel
def test_golden_batch_and_vocab(minilm_tok, minilm_dir):
    import hashlib
    assert hashlib.sha256((minilm_dir / "vocab.txt").read_bytes()).hexdigest() == TOKENS["vocab_sha256"]
    singles = TOKENS["singles"]
    enc = minilm_tok([g["text"] for g in singles], max_length=16, padding="max_length")
    assert enc.input_ids.shape == (len(singles), 16)
    for b, g in enumerate(singles):
        ids = golden_ids(g, 16)[0]
        assert enc.input_ids[b, :len(ids)].tolist() == ids
        assert enc.attention_mask[b].tolist() == [1] * len(ids) + [0] * (16 - len(ids))


def test_golden_file_is_varied():
    assert len(TOKENS["singles"]) >= 200 and len(TOKENS["pairs"]) >= 100
    assert len(TOKENS["legacy_singles"]) >= 80 and len(TOKENS["legacy_pairs"]) >= 15
    assert TOKENS["fast_class"] in ("BertTokenizer", "BertTokenizerFast")
    mls = TOKENS["pair_max_lengths"]
    assert any(ml % 2 for ml in mls) and any(ml % 2 == 0 and ml < 512 for ml in mls)
    # truncated pairs whose odd token goes to the second text, and to the first
    cut = [g for g in TOKENS["pairs"] if "input_ids_8" in g and len(g["input_ids_8"]) == 8]
    assert len(cut) > 20
    # the recorded legacy/fast differences are all explained
    assert all(m["expected_reason"] for m in TOKENS["fast_mismatches"])
    assert {"[", "cl", "##s", "]"} <= {t for g in TOKENS["singles"] for t in g["tokens"]}


def test_tiny_golden_batch(tiny):
    z = np.load(GOLDEN / "tiny_seqcls_golden.npz")
    pairs = [p if has else None for p, has in zip(z["pairs"].tolist(), z["has_pair"].tolist())]
    rows = [tiny.encode(t, p) for t, p in zip(z["texts"].tolist(), pairs)]
    width = z["input_ids"].shape[1]
    assert width == max(len(ids) for ids, _ in rows)
    for b, (ids, types) in enumerate(rows):
        assert z["input_ids"][b, :len(ids)].tolist() == ids
        assert z["token_type_ids"][b, :len(ids)].tolist() == types
        assert z["attention_mask"][b].sum() == len(ids)
    assert tiny.unk_id not in z["input_ids"]


# ---------------------------------------------------------------- basic behaviour

@pytest.mark.parametrize("text", ["", " ", "\t\n\r ", "\u3000\u00a0", "\x00\x07\u200b\ufeff\ufffd"])
def test_empty_and_whitespace(tiny, text):
    assert tiny.tokenize(text) == []
    assert tiny.encode(text) == ([tiny.cls_id, tiny.sep_id], [0, 0])
    assert tiny(text).input_ids.tolist() == [[tiny.cls_id, tiny.sep_id]]


def test_ids_of_specials(tiny):
    assert (tiny.pad_id, tiny.unk_id, tiny.cls_id, tiny.sep_id, tiny.mask_id) == (0, 1, 2, 3, 4)
    assert tiny.vocab_size == 600 and tiny.max_length == 64


def test_special_tokens_kept_whole(tiny):
    assert tiny.tokenize("a[SEP]b [MASK]") == ["a", "[SEP]", "b", "[MASK]"]
    lowered = tiny.tokenize("[sep]")                  # not a special token: lower-cased text, split
    assert lowered[0] == "[" and lowered[-1] == "]" and "[SEP]" not in lowered
    # Rust: special tokens are matched on the raw text, so a control inside breaks them
    assert tiny.tokenize("[SE\x00P]") == tiny.tokenize("[sep]")
    assert Tokenizer(tiny.vocab, mode="legacy").tokenize("[SE\x00P]") == ["[SEP]"]  # legacy: never_split


def test_punctuation_and_cjk_split():
    tok = small(["a", "b", "中", "文", "!", "`", "$", "¿", "«"])
    assert tok.tokenize("a!b") == ["a", "!", "b"]
    assert tok.tokenize("a`b$") == ["a", "`", "b", "$"]                 # ASCII symbols count as punctuation
    assert tok.tokenize("¿a«") == ["¿", "a", "«"]                        # Unicode P*
    assert tok.tokenize("a中文b") == ["a", "中", "文", "b"]
    assert small(["a", "中文"], tokenize_chinese_chars=False).tokenize("中文") == ["中文"]


def test_wordpiece_greedy_longest_match():
    tok = small(["un", "una", "##aff", "##able", "##ff", "##a", "x"])
    assert tok.tokenize("unaffable") == ["una", "##ff", "##able"]
    assert tok.tokenize("unaffablez x") == ["[UNK]", "x"]               # one unmatched suffix: whole word
    assert small(["a", "##a"]).tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert small(["a", "##a"]).tokenize("a" * 101) == ["[UNK]"]          # max_input_chars_per_word


def test_lower_case_and_strip_accents_semantics():
    words = ["cafe", "café", "Café", "Cafe"]
    assert small(words).tokenize("Café") == ["cafe"]                                   # None + lower: strip
    assert small(words, strip_accents=False).tokenize("Café") == ["café"]
    assert small(words, do_lower_case=False).tokenize("Café") == ["Café"]              # None, cased: keep
    assert small(words, do_lower_case=False, strip_accents=True).tokenize("Café") == ["Cafe"]
    # legacy composes (NFC) first; Rust does not compose, so the decomposed word stays unknown
    assert small(words, strip_accents=False, mode="legacy").tokenize("Cafe\u0301") == ["café"]
    assert small(words, strip_accents=False).tokenize("Cafe\u0301") == ["[UNK]"]
    assert small(words, strip_accents=False).tokenize("Café") == ["café"]


def test_final_sigma():
    """Rust lower-cases character by character (σ); legacy uses str.lower (final ς)."""
    words = ["οδος", "οδοσ", "σ", "."]
    assert small(words).tokenize("ΟΔΟΣ.") == ["οδοσ", "."]
    assert small(words, mode="legacy").tokenize("ΟΔΟΣ.") == ["οδος", "."]
    assert small(words).tokenize("Σ") == small(words, mode="legacy").tokenize("Σ") == ["σ"]


def test_unassigned_and_new_characters_kept():
    """Rust keeps unassigned code points (and later-assigned marks / controls, unknown to its
    Unicode 8.0 categories) as characters: [UNK], not dropped."""
    tok = small(["a"])
    for ch in ("\u0378", "\U0001e900", "\u08d3", "\U000e0080"):
        assert tok.tokenize("a " + ch) == ["a", "[UNK]"], hex(ord(ch))
    assert tok.tokenize("a \u200b\U000e0001\u00ad") == ["a"]          # Cf of Unicode 8.0: dropped
    assert tok.tokenize("\U0002b81f") == ["[UNK]"] and tok.pre_tokenize("a\U0002b820b") == ["a\U0002b820b"]
    assert tok.pre_tokenize("a\U0002b920b") == ["a", "\U0002b920", "b"]        # CJK range as tokenizers


def test_empty_pair_like_transformers(tiny):
    one = [tiny.cls_id, tiny.token_to_id["the"], tiny.sep_id]
    assert tiny("the", "").input_ids[0].tolist() == one                     # single call: no pair
    assert tiny(["the"], [""]).input_ids[0].tolist() == one + [tiny.sep_id]  # batch: a pair
    assert tiny.encode("the", "")[0] == one + [tiny.sep_id]
    assert Tokenizer(tiny.vocab, mode="legacy")("the", "").input_ids[0].tolist() == one + [tiny.sep_id]


def test_single_truncation(tiny):
    ids, types = tiny.encode("the " * 100, max_length=10)
    assert len(ids) == 10 and ids[0] == tiny.cls_id and ids[-1] == tiny.sep_id and types == [0] * 10
    assert tiny.encode("the", max_length=2) == ([tiny.cls_id, tiny.sep_id], [0, 0])
    assert len(tiny.encode("the " * 100)[0]) == 64          # default: the model's maximum


@pytest.mark.parametrize("n1, n2, first, second", [
    (10, 10, 6, 7), (9, 10, 6, 7), (10, 9, 7, 6), (7, 8, 6, 7), (20, 3, 10, 3), (3, 20, 3, 10),
    (5, 5, 5, 5), (0, 20, 0, 13), (20, 0, 13, 0), (6, 7, 6, 7), (7, 7, 6, 7), (8, 7, 7, 6)])
def test_pair_truncation_longest_first(tiny, n1, n2, first, second):
    """tokenizers' longest_first (budget 16 - 3 = 13): the shorter keeps min(n, 6), the longer the
    rest; the odd token goes to the longer text, to the second one when they are equally long."""
    ids, types = tiny.encode("the " * n1, "the " * n2, max_length=16)
    assert types.count(0) - 2 == first and types.count(1) - 1 == second
    assert ids[0] == tiny.cls_id and ids[first + 1] == tiny.sep_id and ids[-1] == tiny.sep_id


@pytest.mark.parametrize("n1, n2, first, second", [
    (10, 10, 7, 6), (9, 10, 7, 6), (10, 9, 7, 6), (7, 8, 7, 6), (20, 3, 10, 3), (3, 20, 3, 10),
    (5, 5, 5, 5), (0, 20, 0, 13), (20, 0, 13, 0), (6, 7, 6, 7)])
def test_pair_truncation_legacy(tiny, n1, n2, first, second):
    """Legacy (HF Python truncate_sequences): cut the longer down to the shorter, then halves, the
    odd one off the second sequence."""
    tiny = Tokenizer(tiny.vocab, max_length=64, mode="legacy")
    ids, types = tiny.encode("the " * n1, "the " * n2, max_length=16)
    assert types.count(0) - 2 == first and types.count(1) - 1 == second
    assert ids[0] == tiny.cls_id and ids[first + 1] == tiny.sep_id and ids[-1] == tiny.sep_id


def test_pair_truncation_to_minimum(tiny):
    assert tiny.encode("a b c", "d e", max_length=3) == ([2, 3, 3], [0, 0, 1])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs", [dict(max_length=1), dict(max_length=65), dict(max_length=0),
                                    dict(max_length=-5), dict(max_length=2.5), dict(max_length=True)])
def test_bad_max_length(tiny, kwargs):
    with pytest.raises(InputError, match="max_length"):
        tiny.encode("hello", **kwargs)
    with pytest.raises(InputError, match="max_length"):
        tiny(["hello"], **kwargs)


def test_pair_needs_three(tiny):
    with pytest.raises(InputError, match="at least 3"):
        tiny.encode("a", "b", max_length=2)
    with pytest.raises(InputError, match="at least 3"):
        tiny(["a"], ["b"], max_length=2)
    assert tiny.encode("a", max_length=2)[0] == [2, 3]


@pytest.mark.parametrize("bad", [None, 5, b"bytes", ["nested"], 3.0])
def test_non_str_input(tiny, bad):
    with pytest.raises(InputError, match="TypeError"):
        tiny.tokenize(bad)
    with pytest.raises(InputError, match="TypeError"):
        tiny.encode(bad)
    with pytest.raises(InputError):
        tiny(["ok", bad])
    if bad is not None:
        with pytest.raises(InputError):
            tiny.encode("ok", bad)


def test_bad_batches(tiny):
    with pytest.raises(InputError, match="empty"):
        tiny([])
    with pytest.raises(InputError, match="pairs"):
        tiny(["a", "b"], ["c"])
    with pytest.raises(InputError, match="None"):
        tiny(["a", "b"], ["c", None])
    with pytest.raises(InputError, match="padding"):
        tiny(["a"], padding="do_not_pad")
    with pytest.raises(InputError, match="TypeError"):
        tiny(42)


def test_bad_ids(tiny):
    with pytest.raises(InputError, match="out of range"):
        tiny.convert_ids_to_tokens([5, 600])
    with pytest.raises(InputError, match="out of range"):
        tiny.decode([-1])


# ---------------------------------------------------------------- padding and the Encoding

def test_padding_shapes_and_mask(tiny):
    texts = ["the", "the movie was great", ""]
    enc = tiny(texts)
    n = [len(tiny.encode(t)[0]) for t in texts]
    assert enc.input_ids.shape == enc.attention_mask.shape == enc.token_type_ids.shape == (3, max(n))
    assert all(a.dtype == np.int64 for a in (enc.input_ids, enc.attention_mask, enc.token_type_ids))
    assert enc.lengths.tolist() == n and len(enc) == 3
    for b in range(3):
        assert enc.attention_mask[b].tolist() == [1] * n[b] + [0] * (max(n) - n[b])
        assert (enc.input_ids[b, n[b]:] == tiny.pad_id).all()
        assert (enc.token_type_ids[b, n[b]:] == 0).all()
    fixed = tiny(texts, padding="max_length", max_length=20)
    assert fixed.input_ids.shape == (3, 20)
    assert (fixed.input_ids[:, :max(n)] == enc.input_ids).all()


def test_row_and_single_text(tiny):
    enc = tiny(["the movie", "a"], ["was great", "b"])
    r = enc.row(1)
    assert r.input_ids.shape == (1, int(enc.lengths[1])) and r.attention_mask.all()
    assert r.input_ids[0].tolist() == tiny.encode("a", "b")[0]
    assert r.token_type_ids[0].tolist() == tiny.encode("a", "b")[1]
    assert enc.row(-1).input_ids.tolist() == r.input_ids.tolist()
    with pytest.raises(IndexError):
        enc.row(2)
    one = tiny("the movie", "was great")
    assert one.input_ids.tolist() == enc.row(0).input_ids.tolist()


def test_encoding_checks_shapes():
    with pytest.raises(InputError):
        Encoding(np.zeros((2, 3), np.int64), np.zeros((2, 4), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(InputError):
        Encoding(np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(InputError):
        Encoding(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)))  # floats


def test_decode(tiny):
    ids, _ = tiny.encode("the movie was great")
    assert tiny.decode(ids) == "the movie was great"
    assert tiny.decode(ids, skip_special_tokens=False).startswith("[CLS] the")
    assert tiny.convert_ids_to_tokens(ids)[0] == "[CLS]"


# ---------------------------------------------------------------- from_dir

def copy_model(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(TINY, d)
    return d


def test_from_dir_without_config_argument():
    assert Tokenizer.from_dir(TINY).vocab == Tokenizer.from_dir(TINY, BertConfig.from_dir(TINY)).vocab


def test_from_dir_missing_vocab(tmp_path):
    d = copy_model(tmp_path)
    (d / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="vocab.txt does not exist"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_from_dir_empty_vocab(tmp_path):
    d = copy_model(tmp_path)
    (d / "vocab.txt").write_text("")
    with pytest.raises(CheckpointError, match="empty"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_from_dir_missing_unk(tmp_path):
    d = copy_model(tmp_path)
    lines = (d / "vocab.txt").read_text().splitlines()
    (d / "vocab.txt").write_text("\n".join(t for t in lines if t != "[UNK]") + "\n")
    with pytest.raises(CheckpointError, match=r"\[UNK\]"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_from_dir_duplicate_token(tmp_path):
    d = copy_model(tmp_path)
    lines = (d / "vocab.txt").read_text().splitlines()
    (d / "vocab.txt").write_text("\n".join(lines[:-1] + ["the"]) + "\n")
    with pytest.raises(CheckpointError, match="'the' appears twice"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_from_dir_not_utf8(tmp_path):
    d = copy_model(tmp_path)
    (d / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(CheckpointError, match="UTF-8"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_from_dir_vocab_larger_than_embeddings(tmp_path):
    d = copy_model(tmp_path)
    with (d / "vocab.txt").open("a") as f:
        f.write("extra1\nextra2\n")
    with pytest.raises(ConfigError, match="vocab_size"):
        Tokenizer.from_dir(d, BertConfig.from_dir(d))


def test_constructor_checks():
    with pytest.raises(CheckpointError, match=r"\[CLS\], \[SEP\]"):
        Tokenizer(["[PAD]", "[UNK]", "[MASK]", "a"])
    with pytest.raises(ConfigError, match="strip_accents"):
        small([], strip_accents="yes")
    with pytest.raises(ConfigError, match="pad_token_id"):
        small([], pad_token_id=99)
    with pytest.raises(ConfigError, match="mode"):
        small([], mode="python")


# ---------------------------------------------------------------- properties

def split_specials(text: str) -> list[str]:
    """text -> pieces, each a special token or the text between them (leftmost match first, as the
    trie split of both tokenizers)."""
    chunks, i = [], 0
    while i < len(text):
        hits = [(text.find(s, i), s) for s in SPECIAL_TOKENS if text.find(s, i) >= 0]
        if not hits:
            chunks.append(text[i:])
            break
        at, s = min(hits)
        chunks += [text[i:at], s]
        i = at + len(s)
    return chunks


def reference_tokenize(text: str, vocab: set, lower=True, strip=None, cjk=True) -> list[str]:
    """A literal, unoptimised transcription of HF's Python tokenizer (tokenization_bert_legacy.py +
    PreTrainedTokenizer.tokenize) to check refexit's caches and fast paths against."""
    def cat(c):
        return unicodedata.category(c)

    def is_punc(c):
        cp = ord(c)
        return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat(c).startswith("P")

    def is_cjk(cp):
        return any(a <= cp <= b for a, b in [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)])

    def strip_acc(t):
        return "".join(c for c in unicodedata.normalize("NFD", t) if cat(c) != "Mn")

    def basic(t):
        out = ""
        for c in t:
            if ord(c) == 0 or ord(c) == 0xFFFD or (c not in "\t\n\r" and cat(c).startswith("C")):
                continue
            out += " " if c in " \t\n\r" or cat(c) == "Zs" else c
        if cjk:
            out = "".join(f" {c} " if is_cjk(ord(c)) else c for c in out)
        split = []
        for tok in unicodedata.normalize("NFC", out).strip().split():
            if tok not in SPECIAL_TOKENS:
                if lower:
                    tok = tok.lower()
                    if strip is not False:
                        tok = strip_acc(tok)
                elif strip:
                    tok = strip_acc(tok)
                pieces, new = [], True
                for c in tok:
                    if is_punc(c):
                        pieces.append([c])
                        new = True
                    else:
                        if new:
                            pieces.append([])
                        new = False
                        pieces[-1].append(c)
                split.extend("".join(p) for p in pieces)
            else:
                split.append(tok)
        return " ".join(split).strip().split()

    def wordpiece(word):
        chars = list(word)
        if len(chars) > 100:
            return ["[UNK]"]
        start, subs = 0, []
        while start < len(chars):
            end, cur = len(chars), None
            while start < end:
                s = "".join(chars[start:end])
                s = "##" + s if start > 0 else s
                if s in vocab:
                    cur = s
                    break
                end -= 1
            if cur is None:
                return ["[UNK]"]
            subs.append(cur)
            start = end
        return subs

    out = []
    for c in split_specials(text):
        if c in SPECIAL_TOKENS:
            out.append(c)
        elif c:
            for w in basic(c):
                out.extend(wordpiece(w))
    return out


TRICKY = ["[SEP]", "[CLS]", "[MASK]", "[UNK]", "[PAD]", "[SE", "P]", "Σ", "ΟΔΟΣ", "é", "e\u0301", "ß",
          "İ", "中", "ｶ", "가", "\u1100\u1161", "\x00", "\u200b", "\ufffd", "\u2028", "\u3000", "\u00ad",
          "😀", "👨\u200d👩", "\ufe0f", "the", "movie", "##", "a" * 99, "!", "`", "\u1fef", "ﬁ", " ", "\t"]


def mixed_texts(tricky):
    """Random text, tricky pieces glued to random bits, and tricky pieces as words."""
    return st.one_of(
        st.text(max_size=60),
        st.lists(st.one_of(st.sampled_from(tricky), st.text(max_size=5)), max_size=15).map("".join),
        st.lists(st.sampled_from(tricky), min_size=1, max_size=12).map(" ".join),
    )


texts = mixed_texts(TRICKY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, lower=st.booleans(), strip=st.sampled_from([None, True, False]), cjk=st.booleans())
def test_legacy_matches_literal_hf_transcription(tiny, text, lower, strip, cjk):
    vocab = tiny.vocab + ["é", "##é", "σ", "##ς", "##σ", "ο", "##δ", "中", "가", "ß", "##ß", "ﬁ", "😀",
                          "\u1100", "##\u1161", "ı", "i̇", "A", "##E", "Σ", "ｶ"]
    tok = Tokenizer(vocab, do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk, mode="legacy")
    expected = reference_tokenize(text, set(vocab), lower, strip, cjk)
    assert tok.tokenize(text) == expected
    assert tok.tokenize(text) == expected  # again, from the word cache


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | texts, pair=st.none() | texts)
def test_never_raises_on_unicode(tiny, text, pair):
    ids, types = tiny.encode(text, pair)
    assert 2 <= len(ids) <= tiny.max_length and len(types) == len(ids)
    assert ids[0] == tiny.cls_id and ids[-1] == tiny.sep_id
    assert all(0 <= i < tiny.vocab_size for i in ids)
    assert set(types) <= {0, 1} and types == sorted(types)
    assert all(t in tiny.token_to_id for t in tiny.tokenize(text))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=6), with_pairs=st.booleans(),
       max_length=st.integers(3, 64), padding=st.sampled_from(["longest", "max_length"]), data=st.data())
def test_batch_equals_single_encodes(tiny, batch, with_pairs, max_length, padding, data):
    pairs = data.draw(st.lists(texts, min_size=len(batch), max_size=len(batch))) if with_pairs else None
    enc = tiny(batch, pairs, max_length=max_length, padding=padding)
    rows = [tiny.encode(t, None if pairs is None else pairs[i], max_length) for i, t in enumerate(batch)]
    width = max_length if padding == "max_length" else max(len(ids) for ids, _ in rows)
    assert enc.input_ids.shape == (len(batch), width)
    for b, (ids, types) in enumerate(rows):
        r = enc.row(b)
        assert r.input_ids[0].tolist() == ids and r.token_type_ids[0].tolist() == types
        assert enc.input_ids[b, len(ids):].tolist() == [tiny.pad_id] * (width - len(ids))


# ---------------------------------------------------------------- the Rust pipeline: reference, tables, every code point

def reference_rust_tokenize(text: str, vocab: set, lower=True, strip=None, cjk=True) -> list[str]:
    """A literal transcription of the Rust pipeline (AddedVocabulary split on the raw text,
    BertNormalizer through the pinned tables' reference `normalize`, BertPreTokenizer as a
    character loop, WordPiece), to check refexit's translate tables and regexes against."""
    from refexit.tokenizers import unicode_pinned as unicode_pinned
    u = unicode_pinned.load()
    strip = lower if strip is None else strip
    out = []
    for c in split_specials(text):
        if c in SPECIAL_TOKENS:
            out.append(c)
            continue
        words, cur = [], ""
        for ch in u.normalize(c, lower, strip, cjk):
            if u.is_whitespace(ord(ch)) or u.is_punctuation(ord(ch)):
                words.append(cur)
                words.append("" if u.is_whitespace(ord(ch)) else ch)
                cur = ""
            else:
                cur += ch
        words.append(cur)
        for w in filter(None, words):
            if len(w) > 100:
                out.append("[UNK]")
                continue
            start, subs = 0, []
            while start < len(w):
                end = len(w)
                while end > start and (("##" if start else "") + w[start:end]) not in vocab:
                    end -= 1
                if end == start:
                    subs = ["[UNK]"]
                    break
                subs.append(("##" if start else "") + w[start:end])
                start = end
            out += subs
    return out


RUST_TRICKY = TRICKY + ["\u0378", "\U0001e944", "\U0001d165", "\U0001d16d", "\U00011442", "\u0f39",
                        "\U0001d15f", "\u1885", "\u302e", "\u0345", "\u0316", "\U0002b820", "\U0002b920",
                        "[CL\u200bS]", "[SEP\u0301]", "\u212b", "Ω"]
rust_texts = mixed_texts(RUST_TRICKY)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=rust_texts, lower=st.booleans(), strip=st.sampled_from([None, True, False]), cjk=st.booleans())
def test_rust_matches_literal_transcription(tiny, text, lower, strip, cjk):
    vocab = tiny.vocab + ["é", "##é", "σ", "##ς", "##σ", "ο", "##δ", "中", "가", "ß", "##ß", "ﬁ", "😀",
                          "\u1100", "##\u1161", "ı", "i̇", "A", "##E", "Σ", "ｶ", "\U0001d165", "##\U0001d16d"]
    tok = Tokenizer(vocab, do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk)
    expected = reference_rust_tokenize(text, set(vocab), lower, strip, cjk)
    assert tok.tokenize(text) == expected
    assert tok.tokenize(text) == expected  # again, from the piece cache


def test_kept_marks_are_reordered():
    """Marks that stripping keeps (class > 0, not Mn) are put in canonical order (NFD), which
    the per-character fast path cannot do: U+1D16D (class 226) after U+1D165 (216)."""
    tok = small(["a"], do_lower_case=True)
    assert tok.pre_tokenize("a\U0001d16d\u0301\U0001d165") == ["a\U0001d165\U0001d16d"]
    assert tok.pre_tokenize("a\U0001d16d\U0001d165", ) == ["a\U0001d165\U0001d16d"]
    assert small(["a"], do_lower_case=False).pre_tokenize("a\U0001d16d\U0001d165") == ["a\U0001d16d\U0001d165"]


def test_no_unicodedata_at_tokenization_time(monkeypatch, tiny):
    """The default mode reads only the pinned tables: tokens stay the same when this Python's
    unicodedata would say otherwise (here: every function of it raises)."""
    import refexit.tokenizers.wordpiece as tk
    texts_ = ["Ça déjà vu ΟΔΟΣ İstanbul 我 \u0378 \U0001d16d\U0001d165 [CL\u200bS] e\u0301 가 ﬁ",
              "".join(chr(c) for c in range(0x20, 0x3000, 7))]
    fresh = Tokenizer(tiny.vocab + ["ç", "é"])
    want = [reference_rust_tokenize(t, set(fresh.vocab)) for t in texts_]

    class NoUnicodedata:
        def __getattr__(self, name):
            raise AssertionError(f"unicodedata.{name} used")
    monkeypatch.setattr(tk, "unicodedata", NoUnicodedata())
    monkeypatch.setattr(tk._RustRules, "_cache", {})             # new tables, new caches
    fresh = Tokenizer(tiny.vocab + ["ç", "é"])
    assert "unicodedata" not in vars(importlib.import_module("refexit.tokenizers.unicode_pinned"))
    assert [fresh.tokenize(t) for t in texts_] == want


def codepoint_golden():
    """tests/golden/rust_codepoints.jsonl.gz (tools/make_golden.py --only codepoints): per setting,
    cp -> (pieces of chr(cp) alone, pieces of "a" + chr(cp) + "b") from the Rust tokenizer, and
    cp -> MiniLM ids of chr(cp) alone."""
    import gzip
    with gzip.open(GOLDEN / "rust_codepoints.jsonl.gz", "rt", encoding="ascii") as f:
        header = json.loads(f.readline())
        rows = [json.loads(line) for line in f]
    return header, rows


def expand(rows, setting, step=1):
    """Yield (cp, alone, between) for the code points of `setting`: every step-th one, and the
    first and last of every run of alike code points (where the tables change)."""
    for name, start, count, *rec in rows:
        if name != setting:
            continue
        cps = sorted({start, start + count - 1} | set(range(start + (-start) % step, start + count, step)))
        for cp in cps:
            ch = chr(cp)
            yield cp, *[[p.replace("\uffff", ch) for p in r] for r in rec]


def check_codepoints(step: int):
    header, rows = codepoint_golden()
    assert header["n_codepoints"] == 1112064
    bad, n = [], 0
    for name, lower, strip in header["settings"]:
        tok = small([], do_lower_case=lower, strip_accents=strip)
        for cp, alone, between in expand(rows, name, step):
            n += 1
            ch = chr(cp)
            if tok.pre_tokenize(ch) != alone or tok.pre_tokenize("a" + ch + "b") != between:
                bad.append((name, hex(cp), alone, between, tok.pre_tokenize(ch), tok.pre_tokenize("a" + ch + "b")))
    assert n >= 3 * 1112064 // step
    assert not bad, f"{len(bad)} code points differ from the Rust tokenizer, first: {bad[:5]}"


def test_codepoints_sample():
    """Every 61st code point and both ends of every run of alike ones against the Rust dump."""
    check_codepoints(61)


@pytest.mark.slow
def test_codepoints_exhaustive():
    """All 1,112,064 non-surrogate code points, alone and between two letters, in three settings,
    against the table dumped from the Rust tokenizer once (tools/make_golden.py)."""
    check_codepoints(1)


@pytest.mark.realmodel
@pytest.mark.slow
def test_codepoints_minilm_ids(minilm_tok):
    """AutoTokenizer's ids of every code point alone, with the real vocabulary."""
    _, rows = codepoint_golden()
    bad = []
    for name, start, count, *rec in rows:
        if name != "minilm":
            continue
        ids = rec[0]
        for cp in range(start, start + count):
            got = minilm_tok.convert_tokens_to_ids(minilm_tok.tokenize(chr(cp)))
            if got != ids:
                bad.append((hex(cp), ids, got))
    assert not bad, f"{len(bad)} differ, first: {bad[:5]}"


def test_feature_cache_key_follows_tokenizer_behaviour(monkeypatch):
    """Features cached under another tokenizer behaviour are not served (refexit/train/features.py)."""
    import refexit
    from refexit.train import features as F
    from refexit.synthetic import random_model
    m = random_model(num_layers=1, hidden=8, heads=2, intermediate=8, num_labels=2, vocab_size=40)
    legacy = Tokenizer(m.tokenizer.vocab, max_length=m.tokenizer.max_length, mode="legacy")
    m_legacy = refexit.Model(m.config, m.weights, m.exits, m.label_names, legacy, source=None)
    key = F.cache_key(m, ["a text"], 16)
    assert key == F.cache_key(m, ["a text"], 16)
    assert F.cache_key(m_legacy, ["a text"], 16) != key
    import refexit.tokenizers.wordpiece as tk
    monkeypatch.setattr(tk, "BEHAVIOUR", tk.BEHAVIOUR + "-next")
    assert F.cache_key(m, ["a text"], 16) != key
