"""Folders with a SentencePiece model file and no tokenizer.json (refexit/tokenizers/spm_model.py,
load_tokenizer): `spiece.model` (ALBERT, T5), `sentencepiece.bpe.model` (XLM-R).

  - golden: tests/golden/tokenizers/<kind>_model (tools/make_tokenizer_golden.py: the model file the
    <kind> tokenizer.json was converted from, tokenizer_config.json, AutoTokenizer's ids on that
    folder) give AutoTokenizer's ids exactly, singles and pairs, with truncation;
  - the hand-written protobuf reader reads what the protobuf library read (proto.json);
  - the same model through its tokenizer.json and through its model file: the same tokenizer
    (spec compared, hypothesis Unicode through both);
  - truncated, corrupted and unsupported files and folders: CheckpointError / ConfigError naming
    the file and what is wrong, never another exception (hypothesis byte flips and cuts);
  - a compiled model of such a folder tokenizes in C (`<prefix>_tokenize`) as the Python tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refexit.errors import CheckpointError, ConfigError
from refexit.tokenizers import TokenizerJson, load_tokenizer
from refexit.tokenizers import spm_model
from test_precompiled import unicode_texts
from test_tokenizer import mixed_texts
from test_tokenizer_json import JSON_TRICKY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from bench_spm_model import field as _field  # noqa: E402   (the protobuf encoding of one field)

GOLDEN = Path(__file__).parent / "golden" / "tokenizers"
KINDS = ("albert_spm", "xlmr_spm", "t5_spm")
TRICKY = JSON_TRICKY + ["[CLS]", "[SEP]", "[MASK]", " [MASK] ", "<extra_id_0>", "<extra_id_99>", "ﬁ", "½",
                        "\u3000", "\U0001f468\u200d\U0001f469", "1,000", "e\u0301"]


def model_file(kind: str) -> Path:
    folder = GOLDEN / f"{kind}_model"
    return next(folder / n for n in spm_model.FILE_NAMES if (folder / n).is_file())


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> dict[str, tuple[TokenizerJson, TokenizerJson]]:
    """kind -> (its tokenizer.json folder's tokenizer, its model-file folder's with the added-token
    flags of that tokenizer.json in tokenizer_config.json's added_tokens_decoder)."""
    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp("spm") / kind
        shutil.copytree(GOLDEN / f"{kind}_model", folder)
        spec = json.loads((GOLDEN / kind / "tokenizer.json").read_text(encoding="utf-8"))
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        cfg.pop("mask_token", None)
        cfg["added_tokens_decoder"] = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                        "single_word", "special")}
                                       for a in spec["added_tokens"]}
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
        out[kind] = (load_tokenizer(GOLDEN / kind, max_length=1 << 20), load_tokenizer(folder, max_length=1 << 20))
    return out


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


# ------------------------------------------------------------------ golden (AutoTokenizer)

def test_golden_ids(kind):
    exp = json.loads((GOLDEN / f"{kind}_model" / "expected.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(GOLDEN / f"{kind}_model")
    assert isinstance(tok, TokenizerJson) and tok.kind == "Unigram" and tok.source == str(model_file(kind))
    texts = exp["texts"]
    for ml, e in exp["singles"].items():
        got = [tok.encode(t, None, int(ml)) for t in texts]
        assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, ml)
    for ml, e in exp["pairs"].items():
        got = [tok.encode(a, b, int(ml)) for a, b in zip(texts[:-1], texts[1:])]
        assert got == list(zip(e["input_ids"], e["token_type_ids"])), (kind, "pair", ml)


def test_reader_reads_what_protobuf_reads(kind):
    want = json.loads((GOLDEN / f"{kind}_model" / "proto.json").read_text(encoding="utf-8"))
    m = spm_model.read_model(model_file(kind))
    pieces = [[p, s, t] for p, s, t in m.pieces]
    assert len(pieces) == want["n_pieces"] and pieces[:8] == want["first_pieces"]
    assert hashlib.sha256(json.dumps(pieces, ensure_ascii=False).encode("utf-8")).hexdigest() == want["pieces_sha256"]
    for k, v in want["trainer_spec"].items():
        assert getattr(m, k) == v, k
    n = want["normalizer_spec"]
    assert (m.normalizer_name, m.add_dummy_prefix, m.remove_extra_whitespaces, m.escape_whitespaces) == (
        n["name"], n["add_dummy_prefix"], n["remove_extra_whitespaces"], n["escape_whitespaces"])
    assert hashlib.sha256(m.precompiled_charsmap).hexdigest() == n["precompiled_charsmap_sha256"]


# ------------------------------------------------------------------ the same as through tokenizer.json

def test_same_spec_as_the_converted_tokenizer_json(both, kind):
    """The model file gives the tokenizer.json path's pipeline: normalizer, pre-tokenizer,
    post-processor, added tokens, unk id; the vocabulary too, but for the -100 that AlbertConverter
    (not the model-file path of transformers 5) gives ALBERT's pieces ending in a digit and a comma."""
    a, b = both[kind]
    for key in ("normalizer", "pre_tokenizer"):
        assert a.spec[key] == b.spec[key], key
    assert (a.post.single, a.post.pair) == (b.post.single, b.post.pair)
    assert (a.added.raw, a.added.normed) == (b.added.raw, b.added.normed)
    assert a.model.unk_id == b.model.unk_id and a.model.pieces == b.model.pieces
    shifted = [i for i, p in enumerate(a.model.pieces) if kind == "albert_spm" and len(p) > 1
               and p[-1] == "," and p[-2].isdigit()]
    assert [x - 100 if i in shifted else x for i, x in enumerate(b.model.scores)] == a.model.scores
    assert a.vocab == b.vocab


@settings(max_examples=300, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), text=unicode_texts | mixed_texts(TRICKY),
       pair=st.none() | unicode_texts | mixed_texts(TRICKY), ml=st.sampled_from([8, 33, 1 << 20]))
def test_same_ids_as_the_converted_tokenizer_json(both, kind, text, pair, ml):
    a, b = both[kind]
    assert a.encode(text, pair, ml) == b.encode(text, pair, ml)


# ------------------------------------------------------------------ bad files and folders

def _piece(p: bytes, score: float = -1.0, kind: int | None = None) -> bytes:
    body = b"\x0a" + bytes([len(p)]) + p + b"\x15" + struct.pack("<f", score)
    if kind is not None:
        body += b"\x18" + bytes([kind])
    return b"\x0a" + bytes([len(body)]) + body


GOOD = _piece(b"<pad>", 0, 3) + _piece(b"<unk>", 0, 2) + _piece(b"\xe2\x96\x81a")


@pytest.mark.parametrize("data, match", [
    (b"", "holds no pieces \\(an empty file\\)"),
    (b"\x00", "field number 0"),
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05ab", "field 1 is 5 bytes long but only 2 remain"),
    (b"\x0b", "wire type 3 \\(start group\\)"),
    (b"\x0e", "wire type 6 of field 1"),
    (b"\x08\x01", "field pieces \\(1\\) has wire type varint, expected length-delimited"),
    (b"\x0a\x03\x0a\x01\xff", "pieces\\[0\\] at byte 2: piece is not UTF-8"),
    (b"\x0a\x02\x0a\x00", "piece 0 is empty"),
    (b"\x0a\x05\x15\x00\x00\x80\xbf", "piece 0 is missing"),
    (_piece(b"a", float("nan")), "score nan is not finite"),
    (_piece(b"a", 0, 9), "type 9 is not a piece type"),
    (b"\x0a\x04\x0a\x01a\x15", "truncated fixed32 field 2"),
    (b"\x10" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
    (GOOD + b"\x12\x02\x18\x07", "trainer_spec.model_type 7 is not a model type"),
    (GOOD + b"\x1a\x02\x08\x01", "normalizer_spec.normalizer_name \\(1\\) has wire type varint"),
])
def test_bad_files(data, match):
    with pytest.raises(CheckpointError, match=match) as e:
        spm_model.parse_model(data, "dir/spiece.model")
    assert str(e.value).startswith("dir/spiece.model: ")


def test_reader_fields_and_defaults():
    """Known fields (negative int32s as 10-byte varints), unknown and extension fields skipped,
    a repeated message merged, defaults of sentencepiece_model.proto for the rest."""
    trainer = (_field(35, 0, 1) + _field(40, 0, 1) + _field(41, 0, -1) + _field(200, 2, b"ext")
               + _field(45, 2, "<UNK>".encode()) + _field(16, 0, 4))
    m = spm_model.parse_model(GOOD + _field(2, 2, trainer) + _field(2, 2, _field(43, 0, 0)) + _field(7, 2, b"?")
                              + _field(3, 2, _field(3, 0, 0) + _field(1, 2, b"nmt_nfkc")), "x")
    assert m.pieces == [("<pad>", 0.0, 3), ("<unk>", 0.0, 2), ("\u2581a", -1.0, 1)]
    assert (m.byte_fallback, m.unk_id, m.bos_id, m.eos_id, m.pad_id, m.model_type, m.unk_piece) == (
        True, 1, -1, 2, 0, 1, "<UNK>")
    assert (m.normalizer_name, m.add_dummy_prefix, m.remove_extra_whitespaces, m.escape_whitespaces,
            m.precompiled_charsmap) == ("nmt_nfkc", False, True, True, b"")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1),
                                                                                  st.integers(1, 255)), max_size=4))
def test_cut_or_corrupted_files_fail_cleanly(kind, cut, flips):
    """A cut (at any byte) or bytes changed: a CheckpointError, or a ConfigError naming a model
    type or a charsmap, or (a cut between fields, a change inside a string or score) a model that
    loads, never another exception."""
    data = bytearray(model_file(kind).read_bytes())
    for where, x in flips:
        data[int(where * (len(data) - 1))] ^= x
    data = bytes(data[:int(cut * len(data))] if cut < 1 else data)
    try:
        m = spm_model.parse_model(data, "spiece.model")
        cls = json.loads((GOLDEN / kind / "tokenizer_config.json").read_text())["tokenizer_class"]
        TokenizerJson(spm_model.tokenizer_spec(m, cls, {}), max_length=64).encode("a b c ½", "x")
    except (CheckpointError, ConfigError) as e:
        assert "spiece.model" in str(e) or "precompiled_charsmap" in str(e) or "unk_id" in str(e), e


def test_truncated_real_files(kind):
    data = model_file(kind).read_bytes()
    for n in (1, 2, 7, len(data) // 3, len(data) - 1):
        try:
            spm_model.parse_model(data[:n], "m.model")
        except CheckpointError as e:
            assert "m.model: not a valid SentencePiece model" in str(e)
    with pytest.raises(CheckpointError, match="remain|truncated"):
        spm_model.parse_model(data[:len(data) - 1], "m.model")     # inside the last field


def _folder(tmp_path, kind: str, cfg=None, name=None, config=None) -> Path:
    folder = tmp_path / f"{kind}_folder"
    folder.mkdir(parents=True)
    src = model_file(kind)
    shutil.copy(src, folder / (name or src.name))
    if cfg is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_bad_folders(tmp_path):
    with pytest.raises(ConfigError, match="needs its tokenizer class.*AlbertTokenizer \\(albert\\).*got neither"):
        load_tokenizer(_folder(tmp_path / "a", "albert_spm"))
    with pytest.raises(ConfigError, match="got CamembertTokenizer"):
        load_tokenizer(_folder(tmp_path / "b", "xlmr_spm", {"tokenizer_class": "CamembertTokenizer"}))
    with pytest.raises(CheckpointError, match="XLMRobertaTokenizer reads sentencepiece.bpe.model, the folder has "
                                              "spiece.model only"):
        load_tokenizer(_folder(tmp_path / "c", "xlmr_spm", {"tokenizer_class": "XLMRobertaTokenizer"},
                               name="spiece.model"))
    with pytest.raises(ConfigError, match="template needs its special tokens"):
        load_tokenizer(_folder(tmp_path / "d", "albert_spm", {"tokenizer_class": "AlbertTokenizer",
                                                              "cls_token": None}))
    with pytest.raises(ConfigError, match="'mask_token' must be a string or an AddedToken"):
        load_tokenizer(_folder(tmp_path / "e", "albert_spm", {"tokenizer_class": "AlbertTokenizer", "mask_token": 3}))
    with pytest.raises(ConfigError, match="'extra_ids' must be an integer"):
        load_tokenizer(_folder(tmp_path / "f", "t5_spm", {"tokenizer_class": "T5Tokenizer", "extra_ids": "x"}))
    folder = _folder(tmp_path / "g", "albert_spm", {"tokenizer_class": "AlbertTokenizer"})
    (folder / "spiece.model").write_bytes(b"\x0a\x05ab")
    with pytest.raises(CheckpointError, match="spiece.model: not a valid SentencePiece model"):
        load_tokenizer(folder)


def test_other_model_types_are_refused():
    m = spm_model.parse_model(GOOD + b"\x12\x02\x18\x02", "bpe.model")
    assert m.model_type == 2
    with pytest.raises(ConfigError, match="model_type is BPE \\(2\\); only UNIGRAM"):
        spm_model.tokenizer_spec(m, "AlbertTokenizer", {})


def test_class_from_config_json_and_special_tokens_map(tmp_path):
    """No tokenizer_config.json: the class of config.json's model_type; special_tokens_map.json's
    named tokens replace the class's (a token outside the vocabulary takes the next id)."""
    folder = _folder(tmp_path, "albert_spm", config={"model_type": "albert"})
    plain = load_tokenizer(folder)
    golden = load_tokenizer(GOLDEN / "albert_spm_model")
    assert plain.encode("a [MASK] b") == golden.encode("a [MASK] b") and plain.vocab_size == 1000
    (folder / "special_tokens_map.json").write_text(json.dumps({"mask_token": {
        "content": "<new mask>", "lstrip": True, "rstrip": False, "normalized": False, "single_word": False}}))
    new = load_tokenizer(folder)
    assert new.vocab_size == 1001 and 1000 in new.encode("a<new mask>b")[0]
    assert new.encode("a [MASK] b") == plain.encode("a [MASK] b")     # still a CONTROL piece of the model


try:
    import sentencepiece  # noqa: F401   (transformers reads .model files with it)
    import transformers
except ImportError:
    transformers = None


@pytest.mark.skipif(transformers is None, reason="compares with transformers.AutoTokenizer (+ sentencepiece)")
@pytest.mark.parametrize("kind, cfg, stm", [
    ("albert_spm", {"do_lower_case": False, "keep_accents": True}, None),
    ("albert_spm", {"added_tokens_decoder": None}, {"mask_token": {"content": "[MASK]", "normalized": True,
                                                                   "lstrip": False, "rstrip": False}}),
    ("albert_spm", {"added_tokens_decoder": None, "mask_token": "<new mask>"}, None),
    ("xlmr_spm", {"add_prefix_space": False, "mask_token": None}, None),
    ("albert_spm", {"added_tokens_decoder": None, "do_lower_case": None, "keep_accents": None}, None),
    ("t5_spm", {"extra_ids": 10}, None),
    ("t5_spm", {"additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)]}, None),
    ("t5_spm", {"tokenizer_class": None, "model": "t5"}, None),
])
def test_live_autotokenizer_settings(tmp_path, kind, cfg, stm):
    """tokenizer_config.json settings, special_tokens_map.json, a class named by config.json only:
    AutoTokenizer's ids on the model-file folder."""
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = tmp_path / kind
    shutil.copytree(GOLDEN / f"{kind}_model", folder)
    for f in ("expected.json", "proto.json"):
        (folder / f).unlink()
    tc = json.loads((folder / "tokenizer_config.json").read_text()) | cfg
    model = tc.pop("model", None)
    if model:
        (folder / "config.json").write_text(json.dumps({"model_type": model}), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in tc.items() if v is not None}))
    if stm:
        (folder / "special_tokens_map.json").write_text(json.dumps(stm))
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load_tokenizer(folder)
    texts = json.loads((GOLDEN / f"{kind}_model" / "expected.json").read_text(encoding="utf-8"))["texts"]
    texts += ["a [mask] b <new mask> [MASK]<mask>", "<extra_id_9><extra_id_10> x<extra_id_0>"]
    for a, b in zip(texts, texts[1:] + [None]):
        b = b or None                                      # AutoTokenizer's single call: "" is no pair
        enc = hf(a, b, max_length=64, truncation=True, return_token_type_ids=True)
        assert ours.encode(a, b, 64) == (enc["input_ids"], enc["token_type_ids"]), (a, b)


# ------------------------------------------------------------------ compiled: P_tokenize == Python

def test_compiled_model_of_a_model_file_folder(tmp_path):
    """The golden ALBERT model with spiece.model (no tokenizer.json): refexit.load reads it, the
    compiler packs its Unigram tokenizer, and the C `<prefix>_tokenize` gives the Python ids."""
    pytest.importorskip("cffi", reason="the compiled model is driven through cffi")
    import codegen
    import refexit
    from test_codegen_tokenizers import TEXTS, family_folder, quiet
    folder = family_folder("albert", tmp_path / "albert")
    (folder / "tokenizer.json").unlink()
    for f in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(GOLDEN / "albert_spm_model" / f, folder / f)
    model = refexit.load(folder)
    tok = model.tokenizer
    assert isinstance(tok, TokenizerJson) and tok.source == str(folder / "spiece.model")
    cm = quiet(codegen.compile_model, model, refexit.Static(1), tmp_path / "build", prefix="tspm")
    assert cm.tokenizer_kind == "unigram"
    texts = TEXTS + ["a [MASK] b", "ﬁ½ \u3000x\U0001f468\u200d\U0001f469", "``quoted''"]
    for t in texts:
        assert cm.encode_text(t) == tok.encode(t), t
        for p in texts[::4]:
            assert cm.encode_text(t, p, 17) == tok.encode(t, p, 17), (t, p)
