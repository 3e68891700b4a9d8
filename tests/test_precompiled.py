"""The Precompiled normalizer (SentencePiece charsmap, refexit/tokenizers/precompiled.py), its grapheme
clusters (refexit/tokenizers/graphemes.py) and the SentencePiece folders built on it.

  - graphemes: the unicode-segmentation crate's copy of GraphemeBreakTest.txt (Unicode 17.0.0),
    saved by tools/make_unicode_tables.py --graphemes;
  - golden: tokenizer.json files converted from SentencePiece models trained with the nmt_nfkc and
    nmt_nfkc_cf rules (tests/golden/tokenizers/{albert,xlmr,t5}_spm, tools/make_tokenizer_golden.py)
    give transformers.AutoTokenizer's ids exactly, singles and pairs, with truncation;
  - live, when the `tokenizers` library is installed: hypothesis Unicode text (combining marks, emoji
    ZWJ sequences, regional indicators, Hangul, full-width forms, ligatures, control characters,
    Indic conjuncts) through the Rust Precompiled normalizer and whole pipelines;
  - bad charsmaps give a ConfigError naming what is wrong.
"""
from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refexit.errors import ConfigError
from refexit.tokenizers import TokenizerJson, load_tokenizer
from refexit.tokenizers import graphemes
from refexit.tokenizers.load import sentencepiece_spec
from refexit.tokenizers.precompiled import Charsmap
from refexit.tokenizers.tokenizer_json import build_normalizer

GOLDEN = Path(__file__).parent / "golden"
SPM_KINDS = ("albert_spm", "xlmr_spm", "t5_spm")

try:
    import tokenizers
except ImportError:                                  # optional: the golden tests still run
    tokenizers = None
live = pytest.mark.skipif(tokenizers is None, reason="the live comparison needs the `tokenizers` library")


def _spec(kind: str) -> dict:
    return json.loads((GOLDEN / "tokenizers" / kind / "tokenizer.json").read_text(encoding="utf-8"))


def _charsmap_b64(kind: str) -> str:
    norm = _spec(kind)["normalizer"]
    steps = norm["normalizers"] if norm["type"] == "Sequence" else [norm]
    return next(n["precompiled_charsmap"] for n in steps if n["type"] == "Precompiled")


@pytest.fixture(scope="module", params=SPM_KINDS)
def kind(request):
    return request.param


# ------------------------------------------------------------------ grapheme clusters

def test_grapheme_break_test():
    data = json.loads((GOLDEN / "grapheme_break_test.json").read_text(encoding="utf-8"))
    seg = graphemes.load()
    assert len(data["tests"]) == 766
    bad = [(s, parts, seg.split(s)) for s, parts in data["tests"] if seg.split(s) != parts]
    assert not bad, bad[:5]


def test_grapheme_classes_cover_the_table_ascii_shortcut():
    """The crate's ASCII shortcut (below U+007F) agrees with its own table."""
    seg = graphemes.load()
    for cp in range(0x7F):
        import bisect
        i = bisect.bisect_right(seg.starts, cp) - 1
        table = seg.classes[i] if i >= 0 and cp <= seg.ends[i] else graphemes.ANY
        assert seg.cls(cp) == table, hex(cp)


# ------------------------------------------------------------------ golden (AutoTokenizer)

def test_golden_ids(kind):
    exp = json.loads((GOLDEN / "tokenizers" / kind / "expected.json").read_text(encoding="utf-8"))
    assert exp["tokenizer_class"] in ("AlbertTokenizer", "XLMRobertaTokenizer", "T5Tokenizer")
    tok = load_tokenizer(GOLDEN / "tokenizers" / kind)
    assert isinstance(tok, TokenizerJson) and tok.kind == "Unigram"
    texts = exp["texts"]
    for ml, e in exp["singles"].items():
        got = [tok.encode(t, None, int(ml)) for t in texts]
        assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, ml)
    for ml, e in exp["pairs"].items():
        got = [tok.encode(a, b, int(ml)) for a, b in zip(texts[:-1], texts[1:])]
        assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, "pair", ml)


def test_sentencepiece_spec_follows_the_class(tmp_path, kind):
    """The class named by tokenizer_config.json, else by config.json's model_type, picks the pipeline;
    another class leaves tokenizer.json as written."""
    folder = tmp_path / kind
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(_spec(kind)), encoding="utf-8")
    cls = json.loads((GOLDEN / "tokenizers" / kind / "tokenizer_config.json").read_text())["tokenizer_class"]
    model_type = {"AlbertTokenizer": "albert", "XLMRobertaTokenizer": "xlm-roberta", "T5Tokenizer": "t5"}[cls]
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    a = load_tokenizer(folder)
    assert a.spec["pre_tokenizer"]["pretokenizers"][0] == {"type": "WhitespaceSplit"}
    (folder / "config.json").write_text(json.dumps({"model_type": "camembert"}), encoding="utf-8")
    b = load_tokenizer(folder)
    assert b.spec == _spec(kind)
    assert sentencepiece_spec(_spec(kind), {"tokenizer_class": "PreTrainedTokenizerFast"}, folder) is None
    assert a.behaviour != b.behaviour


# ------------------------------------------------------------------ live (Rust tokenizers)

# characters whose clusters and charsmap entries matter
_POOLS = [(0x300, 0x36F), (0x200C, 0x200D), (0x1F3FB, 0x1F3FF), (0x1F1E6, 0x1F1FF), (0x1F300, 0x1F64F),
          (0x2600, 0x27BF), (0xFE00, 0xFE0F), (0x1100, 0x11FF), (0xAC00, 0xAC40), (0xFF00, 0xFFEF),
          (0xFB00, 0xFB06), (0x0, 0x1F), (0x7F, 0xA0), (0x900, 0x97F), (0x3300, 0x33FF), (0x2460, 0x24FF),
          (0x2000, 0x206F), (0xE0020, 0xE007F), (0x41, 0x5A), (0x61, 0x7A), (0x20, 0x20), (0x3000, 0x3000),
          (0x2160, 0x2188), (0x1D400, 0x1D4FF), (0x600, 0x6FF), (0xA0, 0x24F), (0x2B0, 0x2FF)]
_char = st.one_of(*[st.integers(a, b).map(chr) for a, b in _POOLS], st.characters(exclude_categories=("Cs",)))
unicode_texts = st.lists(_char, max_size=40).map("".join)


@live
@settings(max_examples=400, deadline=None, derandomize=True)
@given(kind=st.sampled_from(SPM_KINDS), text=unicode_texts)
def test_live_normalizer(kind, text):
    rust = tokenizers.normalizers.Precompiled(base64.b64decode(_charsmap_b64(kind)))
    mine = build_normalizer({"type": "Precompiled", "precompiled_charsmap": _charsmap_b64(kind)})
    assert mine(text) == rust.normalize_str(text)


@live
@settings(max_examples=200, deadline=None, derandomize=True)
@given(kind=st.sampled_from(SPM_KINDS), text=unicode_texts, pair=st.none() | unicode_texts,
       as_written=st.booleans())
def test_live_pipelines(kind, text, pair, as_written):
    """tokenizer.json as written (Precompiled + Strip + Replace, Metaspace) and as transformers 5's
    class rebuilds it, against the Rust library running the same JSON."""
    spec = _spec(kind)
    if not as_written:
        cfg = json.loads((GOLDEN / "tokenizers" / kind / "tokenizer_config.json").read_text())
        spec = sentencepiece_spec(spec, cfg, GOLDEN / "tokenizers" / kind)
    rust = tokenizers.Tokenizer.from_str(json.dumps(spec))
    want = rust.encode(text, pair)
    assert TokenizerJson(spec, max_length=1 << 20).encode(text, pair, 1 << 20) == (want.ids, want.type_ids)


@live
@pytest.mark.parametrize("stop", [0x3400, pytest.param(0x110000, marks=pytest.mark.slow)])
def test_live_every_code_point(stop):
    """Every code point (below stop; all of them in the slow run) alone, after a letter and before
    a combining mark, under both rules."""
    for kind in ("albert_spm", "t5_spm"):
        b64 = _charsmap_b64(kind)
        rust = tokenizers.normalizers.Precompiled(base64.b64decode(b64))
        mine = Charsmap.from_base64(b64)
        texts = [c for cp in range(stop) if not 0xD800 <= cp < 0xE000
                 for c in (chr(cp), "a" + chr(cp), chr(cp) + "\u0301")]
        joined = "\n".join(texts)             # a line feed always breaks a cluster
        assert mine.normalize(joined) == rust.normalize_str(joined)


# ------------------------------------------------------------------ bad charsmaps

def _cm(trie: list[int], strings: bytes, size: int | None = None) -> bytes:
    return struct.pack("<I", 4 * len(trie) if size is None else size) + struct.pack(f"<{len(trie)}I", *trie) + strings


@pytest.mark.parametrize("data, match", [
    (b"", "too short"),
    (b"\x01\x00", "too short"),
    (_cm([1, 2], b"", size=12), "only 8 follow"),
    (_cm([], b"abc\0"), "trie is empty"),
    (_cm([0], b"\xff\0"), "not UTF-8"),
])
def test_bad_charsmap_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        Charsmap(data)
    spec = {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(data).decode()}
    with pytest.raises(ConfigError, match=match):
        build_normalizer(spec)


def test_bad_base64_and_type():
    with pytest.raises(ConfigError, match="not base64"):
        build_normalizer({"type": "Precompiled", "precompiled_charsmap": "@@@"})
    with pytest.raises(ConfigError, match="precompiled_charsmap.*must be a string"):
        build_normalizer({"type": "Precompiled", "precompiled_charsmap": 3})
    with pytest.raises(ConfigError, match="precompiled_charsmap.*missing"):
        build_normalizer({"type": "Precompiled"})


def test_corrupt_trie_index_is_an_error_not_a_crash():
    """A root whose offset points past the array: a ConfigError when a text reaches it."""
    cm = Charsmap(_cm([(100 << 10)], b"x\0"))
    with pytest.raises(ConfigError, match="corrupt charsmap"):
        cm.normalize("a")


def test_truncating_the_real_charsmap_is_refused(kind):
    data = base64.b64decode(_charsmap_b64(kind))
    (size,) = struct.unpack_from("<I", data)
    with pytest.raises(ConfigError, match="follow its size"):
        Charsmap(data[:size // 2])
    Charsmap(data[:4 + size])                 # no strings at all is still a charsmap


try:
    import transformers
except ImportError:
    transformers = None


@pytest.mark.skipif(transformers is None, reason="compares with transformers.AutoTokenizer")
@pytest.mark.parametrize("kind, cfg", [("xlmr_spm", {"add_prefix_space": False}), ("t5_spm", {}),
                                       ("albert_spm", {"add_prefix_space": None, "do_lower_case": None}),
                                       ("xlmr_spm", {"tokenizer_class": None, "model": "xlm-roberta"})])
def test_live_autotokenizer_settings(tmp_path, kind, cfg):
    """tokenizer_config.json settings (and a folder naming its class through config.json's
    model_type only) give AutoTokenizer's ids."""
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = tmp_path / kind
    shutil.copytree(GOLDEN / "tokenizers" / kind, folder)
    (folder / "expected.json").unlink()
    tc = json.loads((folder / "tokenizer_config.json").read_text()) | cfg
    model = tc.pop("model", None)
    if model:
        (folder / "config.json").write_text(json.dumps({"model_type": model}), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in tc.items() if v is not None}))
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load_tokenizer(folder)
    texts = json.loads((GOLDEN / "tokenizers" / kind / "expected.json").read_text(encoding="utf-8"))["texts"]
    for a, b in zip(texts, texts[1:] + [None]):
        b = b or None                                      # AutoTokenizer's single call: "" is no pair
        enc = hf(a, b, max_length=64, truncation=True, return_token_type_ids=True)
        assert ours.encode(a, b, 64) == (enc["input_ids"], enc["token_type_ids"]), (a, b)
