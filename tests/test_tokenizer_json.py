"""tokenizer.json pipelines (refexit.tokenizers.tokenizer_json) and load_tokenizer.

  - golden: tiny tokenizers of each kind (tests/golden/tokenizers/<kind>/, tools/make_tokenizer_golden.py)
    give transformers.AutoTokenizer's ids exactly, singles and pairs, with truncation;
  - live, when the `tokenizers` library is installed: hypothesis Unicode text through every golden
    tokenizer and through each component (normalizers, pre-tokenizers) equals the Rust library;
  - bad files (truncated, wrong types, unknown components) give a ConfigError naming what is wrong.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refexit.errors import CheckpointError, ConfigError, InputError
from refexit.tokenizers import Tokenizer, TokenizerJson, load_tokenizer
from refexit.tokenizers.tokenizer_json import build_normalizer, build_pre_tokenizer
from test_fuzz_loaders import json_values, only_refexit_errors
from test_tokenizer import RUST_TRICKY, mixed_texts

GOLDEN = Path(__file__).parent / "golden" / "tokenizers"
KINDS = ("roberta", "roberta_prefix", "albert", "distilbert", "electra")
JSON_TRICKY = RUST_TRICKY + ["<s>", "</s>", "<mask>", " <mask> ", "<unk>", "<pad>", "``", "''", "'s", "'ll",
                             "'RE", "\u2581", "  ", "   ", "1²", "٣", "Ⅻ", "ǅ", "Å", "\u0301", "x" * 101]
json_texts = mixed_texts(JSON_TRICKY)


def expected(kind: str) -> dict:
    return json.loads((GOLDEN / kind / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def pipeline(kind):
    return TokenizerJson.from_file(GOLDEN / kind / "tokenizer.json")


# ------------------------------------------------------------------ golden (AutoTokenizer)

def test_golden_ids(kind, pipeline):
    """Every golden text, single and paired with the next, at every max_length, through the
    pipeline and through load_tokenizer (which gives the WordPiece kinds as wordpiece.Tokenizer)."""
    exp = expected(kind)
    texts = exp["texts"]
    loaded = load_tokenizer(GOLDEN / kind)
    for tok in (pipeline, loaded):
        for ml, e in exp["singles"].items():
            got = [tok.encode(t, None, int(ml)) for t in texts]
            assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, ml)
        for ml, e in exp["pairs"].items():
            got = [tok.encode(a, b, int(ml)) for a, b in zip(texts[:-1], texts[1:])]
            assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, "pair", ml)


def test_load_tokenizer_kinds():
    assert isinstance(load_tokenizer(GOLDEN / "distilbert"), Tokenizer)
    assert isinstance(load_tokenizer(GOLDEN / "electra"), Tokenizer)
    assert not load_tokenizer(GOLDEN / "electra").do_lower_case
    for kind, model in (("roberta", "BPE"), ("albert", "Unigram")):
        tok = load_tokenizer(GOLDEN / kind)
        assert isinstance(tok, TokenizerJson) and tok.kind == model


def test_batch_call_pads_with_pad_token(pipeline):
    enc = pipeline(["a much longer text than the other one", "short"], max_length=64)
    assert enc.input_ids.shape == enc.attention_mask.shape == enc.token_type_ids.shape
    n = int(enc.attention_mask[1].sum())
    assert (enc.input_ids[1, n:] == pipeline.pad_id).all()
    assert pipeline.vocab[pipeline.pad_id] in ("<pad>", "[PAD]")
    ids, types = pipeline.encode("short")
    assert enc.input_ids[1, :n].tolist() == ids and enc.token_type_ids[1, :n].tolist() == types
    enc = pipeline("a", "b", max_length=16, padding="max_length")
    assert enc.input_ids.shape == (1, 16)
    assert pipeline("a", "").input_ids.tolist() == pipeline(["a"]).input_ids.tolist()   # transformers' rule
    assert len(pipeline.encode("a", "")[0]) > len(pipeline.encode("a")[0])              # a batch pair stays


def test_bad_calls(pipeline):
    low = pipeline.post.added(True)
    with pytest.raises(InputError, match="max_length"):
        pipeline.encode("a", "b", max_length=low - 1)
    with pytest.raises(InputError, match="max_length"):
        pipeline.encode("a", max_length=pipeline.max_length + 1)
    with pytest.raises(InputError, match="TypeError"):
        pipeline.encode(b"bytes")
    with pytest.raises(InputError, match="pairs"):
        pipeline(["a", "b"], ["c"])
    with pytest.raises(InputError, match="out of range"):
        pipeline.convert_ids_to_tokens([pipeline.vocab_size])
    assert pipeline.convert_tokens_to_ids(pipeline.convert_ids_to_tokens([0, 5])) == [0, 5]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=json_texts, pair=st.none() | json_texts, ml=st.integers(5, 40))
def test_truncation_bounds(pipeline, text, pair, ml):
    ids, types = pipeline.encode(text, pair, ml)
    assert len(ids) == len(types) <= ml
    assert all(0 <= i < pipeline.vocab_size for i in ids)
    full, _ = pipeline.encode(text, pair, 512)
    if len(full) <= ml:
        assert ids == full


# ------------------------------------------------------------------ live: the Rust library

try:
    import tokenizers
except ImportError:                                  # optional: the golden tests above still run
    tokenizers = None
live = pytest.mark.skipif(tokenizers is None, reason="the live comparison needs the `tokenizers` library "
                          "(pip install tokenizers; it is in the `test` extra)")


@pytest.fixture(scope="module")
def rust(kind):
    if tokenizers is None:
        pytest.skip("needs the `tokenizers` library")
    return tokenizers.Tokenizer.from_file(str(GOLDEN / kind / "tokenizer.json"))


@live
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=json_texts, pair=st.none() | json_texts, ml=st.sampled_from([512, 7, 16, 33]))
def test_live_equals_rust(pipeline, rust, text, pair, ml):
    rust.enable_truncation(max_length=ml)
    want = rust.encode(text, pair)
    assert pipeline.encode(text, pair, ml) == (want.ids, want.type_ids)


@live
@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_live_random_unicode(text):
    for kind in KINDS:
        r = tokenizers.Tokenizer.from_file(str(GOLDEN / kind / "tokenizer.json"))
        mine = TokenizerJson.from_file(GOLDEN / kind / "tokenizer.json")
        assert mine.encode(text)[0] == r.encode(text).ids, kind


@live
@pytest.mark.parametrize("base", ["roberta", "albert", "distilbert"])
@settings(max_examples=150, deadline=None)
@given(text=json_texts, flags=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=8, max_size=8))
def test_live_added_token_flags(base, text, flags):
    """lstrip / rstrip on the special tokens, and added tokens matched on normalized text."""
    spec = _spec(base)
    extra = [("hello", False), ("ING", True), ("é", True)]
    top = max(spec["model"]["vocab"].values()) if isinstance(spec["model"]["vocab"], dict) \
        else len(spec["model"]["vocab"]) - 1
    for k, (content, special) in enumerate(extra):
        spec["added_tokens"].append({"id": top + 1 + k, "content": content, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": True, "special": special})
    for a, (ls, rs) in zip(spec["added_tokens"], flags):
        a["lstrip"], a["rstrip"] = ls, rs
    rust = tokenizers.Tokenizer.from_str(json.dumps(spec))
    mine = TokenizerJson(spec)
    assert mine.tokenize_ids(text) == rust.encode(text, add_special_tokens=False).ids


NORMALIZERS = [{"type": t} for t in ("NFD", "NFKD", "NFC", "NFKC", "Lowercase", "StripAccents")] + [
    {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": c, "strip_accents": s, "lowercase": lo}
    for c in (True, False) for s in (None, True, False) for lo in (True, False)] + [
    {"type": "Replace", "pattern": {"String": "``"}, "content": "\""},
    {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Strip", "strip_left": True, "strip_right": False},
    {"type": "Strip", "strip_left": True, "strip_right": True},
    {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "StripAccents"}]},
]


@live
@pytest.mark.parametrize("spec", NORMALIZERS, ids=lambda s: json.dumps(s)[:60])
@settings(max_examples=60, deadline=None)
@given(text=json_texts | st.text(max_size=40))
def test_live_normalizers(spec, text):
    rust = _rust_component("normalizers", spec)
    assert build_normalizer(spec)(text) == rust.normalize_str(text)


PRE_TOKENIZERS = [
    {"type": "BertPreTokenizer"}, {"type": "Whitespace"}, {"type": "WhitespaceSplit"},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
    {"type": "Metaspace", "replacement": "_", "prepend_scheme": "never", "split": False},
    {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
                                           {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                                            "split": True}]},
] + [{"type": "Punctuation", "behavior": b} for b in ("Isolated", "Removed", "MergedWithPrevious",
                                                       "MergedWithNext", "Contiguous")] + [
    {"type": "Split", "pattern": {"String": s}, "behavior": b, "invert": inv}
    for s, b, inv in ((" ", "Removed", False), ("'", "MergedWithPrevious", False), ("ab", "Isolated", True),
                      ("\u2581", "MergedWithNext", False), ("a", "Contiguous", False))]


@live
@pytest.mark.parametrize("spec", PRE_TOKENIZERS, ids=lambda s: json.dumps(s)[:70])
@settings(max_examples=60, deadline=None)
@given(text=json_texts | st.text(alphabet="ab' \u2581x.!", max_size=20))
def test_live_pre_tokenizers(spec, text):
    rust = _rust_component("pre_tokenizers", spec)
    want = [p for p, _ in rust.pre_tokenize_str(text)]
    got = [p for p, _ in build_pre_tokenizer(spec)([(text, True)])] if text else []
    assert got == want


@live
@settings(max_examples=300, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), norms=st.lists(st.sampled_from(NORMALIZERS), max_size=2),
       pre=st.sampled_from(PRE_TOKENIZERS), text=json_texts, pair=st.none() | json_texts)
def test_live_composed_pipelines(kind, norms, pre, text, pair):
    """Each golden model behind other normalizers and pre-tokenizers, whole pipelines against Rust."""
    spec = _spec(kind)
    spec["normalizer"] = {"type": "Sequence", "normalizers": norms} if norms else None
    spec["pre_tokenizer"] = pre
    rust = tokenizers.Tokenizer.from_str(json.dumps(spec))
    want = rust.encode(text, pair)
    assert TokenizerJson(spec, max_length=1 << 20).encode(text, pair, 1 << 20) == (want.ids, want.type_ids)


def _rust_component(module: str, spec: dict):
    """The `tokenizers` object of a component, through its JSON (the way tokenizer.json holds it)."""
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0}, "unk_token": "<unk>"}}
    base["normalizer" if module == "normalizers" else "pre_tokenizer"] = spec
    t = tokenizers.Tokenizer.from_str(json.dumps(base))
    return t.normalizer if module == "normalizers" else t.pre_tokenizer


# ------------------------------------------------------------------ bad files

def _spec(kind="roberta") -> dict:
    return json.loads((GOLDEN / kind / "tokenizer.json").read_text(encoding="utf-8"))


def _write(tmp_path, spec) -> Path:
    p = tmp_path / "tokenizer.json"
    p.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return p


@pytest.mark.parametrize("where, value, match", [
    ("normalizer", {"type": "Precompiled", "precompiled_charsmap": ""}, "precompiled_charsmap: 0 bytes, too short"),
    ("normalizer", {"type": "NFKC_CF"}, "unsupported normalizer type 'NFKC_CF'"),
    ("pre_tokenizer", {"type": "Digits", "individual_digits": True}, "unsupported pre-tokenizer type 'Digits'"),
    ("post_processor", {"type": "Fancy"}, "unsupported post-processor type 'Fancy'.*TemplateProcessing"),
    ("model", {"type": "Magic"}, "unsupported model type 'Magic'.*BPE"),
    ("model", [1, 2], "field 'model' must be an object"),
    ("normalizer", {"lowercase": True}, "field 'type' is missing"),
    ("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated"}, "Unicode class"),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "ab"}, "one character"),
    ("added_tokens", [{"id": 0, "content": "<s>", "single_word": True, "special": True}], "single_word"),
    ("added_tokens", [{"id": "0", "content": "<s>"}], "'id' must be an integer"),
])
def test_unsupported_or_wrong_components(tmp_path, where, value, match):
    spec = _spec()
    spec[where] = value
    with pytest.raises(ConfigError, match=match):
        TokenizerJson.from_file(_write(tmp_path, spec))


def test_bad_models(tmp_path):
    spec = _spec()
    spec["model"]["merges"] = spec["model"]["merges"][:3] + [["zzq", "qzz"]]
    with pytest.raises(ConfigError, match="merges\\[3\\].*not in the vocabulary"):
        TokenizerJson.from_file(_write(tmp_path, spec))
    spec = _spec()
    spec["model"]["dropout"] = 0.1
    with pytest.raises(ConfigError, match="dropout"):
        TokenizerJson.from_file(_write(tmp_path, spec))
    spec = _spec("albert")
    spec["model"]["vocab"][5] = ["x", "high"]
    with pytest.raises(ConfigError, match="vocab\\[5\\]"):
        TokenizerJson.from_file(_write(tmp_path, spec))
    spec = _spec("albert")
    spec["model"]["unk_id"] = 10 ** 6
    with pytest.raises(ConfigError, match="unk_id"):
        TokenizerJson.from_file(_write(tmp_path, spec))
    spec = _spec("distilbert")
    for bad in (-1, 10 ** 9):
        spec["model"]["vocab"]["[UNK]"] = bad
        with pytest.raises(ConfigError, match="integer id in"):
            TokenizerJson.from_file(_write(tmp_path, spec))
    spec = _spec("distilbert")
    spec["post_processor"]["special_tokens"]["[CLS]"]["ids"] = [10 ** 6]
    with pytest.raises(ConfigError, match="post_processor adds token id"):
        TokenizerJson.from_file(_write(tmp_path, spec))


def test_truncated_and_non_json_files(tmp_path):
    text = (GOLDEN / "albert" / "tokenizer.json").read_text(encoding="utf-8")
    for bad in (text[: len(text) // 2], "", "[]", "null", "{\"model\": 3}"):
        with pytest.raises(ConfigError):
            TokenizerJson.from_file(_write(tmp_path, bad))
    (tmp_path / "tokenizer.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="UTF-8"):
        TokenizerJson.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match="cannot be read"):
        TokenizerJson.from_file(tmp_path / "absent.json")


def _mutate(spec, path: list[int], value):
    """Replace the node a path of indices leads to (each index picks a key / item, modulo)."""
    node = spec
    for depth, i in enumerate(path):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        k = keys[i % len(keys)]
        if depth == len(path) - 1 or not isinstance(node[k], (dict, list)):
            node[k] = value
            return spec
        node = node[k]
    return spec


@settings(max_examples=300, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), path=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
       value=json_values, text=json_texts)
def test_fuzz_mutated_files(kind, path, value, text):
    """Any one value of a tokenizer.json replaced by another JSON value: loading and encoding give
    a result or a RefexitError (ConfigError / InputError) that says what is wrong, nothing else."""
    spec = _mutate(_spec(kind), path, value)
    tok = only_refexit_errors(TokenizerJson, spec)
    if isinstance(tok, TokenizerJson):
        only_refexit_errors(tok.encode, text, "b", 64)


# ------------------------------------------------------------------ load_tokenizer fallbacks

def test_vocab_json_merges_txt_fallback(tmp_path):
    """vocab.json + merges.txt (no tokenizer.json) reads as transformers 5's RobertaTokenizer builds
    them (checked against AutoTokenizer on such a folder): the ids of the roberta golden."""
    spec = _spec("roberta")
    (tmp_path / "vocab.json").write_text(json.dumps(spec["model"]["vocab"]), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": False}), encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    exp = expected("roberta")
    for ml, e in exp["singles"].items():
        assert [tok.encode(t, None, int(ml))[0] for t in exp["texts"]] == e["input_ids"]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "spiece.model").write_bytes(b"\x00")
    with pytest.raises(CheckpointError, match="spiece.model"):
        load_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="not a folder"):
        load_tokenizer(tmp_path / "spiece.model")

    class Cfg:
        vocab_size, pad_token_id, max_length = 10, 0, 64
    with pytest.raises(ConfigError, match="vocab_size"):
        load_tokenizer(GOLDEN / "albert", Cfg())
    Cfg.vocab_size = 5000
    tok = load_tokenizer(GOLDEN / "albert", Cfg())
    assert tok.max_length == 64 and tok.pad_id == 0
    assert load_tokenizer(GOLDEN / "albert", max_length=100).max_length == 100
    folder = tmp_path / "rob"
    shutil.copytree(GOLDEN / "roberta", folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514,
                                                    "pad_token_id": 1}), encoding="utf-8")
    assert load_tokenizer(folder).max_length == 512


@pytest.mark.parametrize("kind, edit, match", [
    ("distilbert", {"do_lower_case": False}, "do_lower_case"),
    ("electra", {"strip_accents": True}, "strip_accents"),
    ("distilbert", {"tokenize_chinese_chars": False}, "chinese"),
    ("roberta", {"add_prefix_space": True}, "add_prefix_space"),
    ("albert", {"keep_accents": True}, "keep_accents"),
])
def test_config_must_agree_with_tokenizer_json(tmp_path, kind, edit, match):
    """transformers 5 rebuilds these settings from tokenizer_config.json: a folder where they
    disagree with tokenizer.json is refused rather than tokenized differently from AutoTokenizer."""
    folder = tmp_path / kind
    shutil.copytree(GOLDEN / kind, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg | edit), encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load_tokenizer(folder)


def test_behaviour_names_the_file():
    a, b = (TokenizerJson.from_file(GOLDEN / k / "tokenizer.json") for k in ("roberta", "roberta_prefix"))
    assert a.behaviour != b.behaviour
    assert np.array_equal(a("x").input_ids, a("x").input_ids)
