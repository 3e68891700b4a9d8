"""The Precompiled step of the generated C Unigram tokenizer (templates/tokenizer_unigram.c.j2: the
SentencePiece charsmap packed as data, grapheme cluster tables generated from
refexit/tokenizers/grapheme_unicode.txt) against the oracle (refexit.tokenizers.precompiled through
load_tokenizer): the golden SentencePiece folders (AutoTokenizer's ids), hypothesis Unicode, invalid
UTF-8, long clusters, bad and corrupt charsmaps, and a short sanitizer run over the SentencePiece bases."""
from __future__ import annotations

import base64
import json
import random
import struct
import sys
from pathlib import Path

import pytest

pytest.importorskip("cffi", reason="the C tokenizer tests drive the library through cffi")
pytest.importorskip("jinja2", reason="the C tokenizer is generated from jinja2 templates")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ctokenizer_checks as checks  # noqa: E402
from codegen import tokenizer_emit as te  # noqa: E402
from refexit.errors import ConfigError  # noqa: E402
from refexit.tokenizers import TokenizerJson, load_tokenizer  # noqa: E402
from test_precompiled import SPM_KINDS, _cm, unicode_texts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "tokenizers"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return te.build_unigram_library(tmp_path_factory.mktemp("unigram_pc"), flags=("-O1",))


@pytest.fixture(scope="module")
def pairs(lib):
    out = {}
    for kind in SPM_KINDS:
        py = load_tokenizer(GOLDEN / kind, max_length=1 << 20)
        out[kind] = (py, te.CUnigramTokenizer(lib, te.pack_unigram(py)))
    return out


@pytest.mark.parametrize("kind", SPM_KINDS)
def test_golden_texts(pairs, kind):
    py, c = pairs[kind]
    checks.golden_texts_agree(py, c, GOLDEN / kind / "expected.json", (512, 16, 7))
    exp = json.loads((GOLDEN / kind / "expected.json").read_text(encoding="utf-8"))
    e = exp["singles"]["512"]                           # and AutoTokenizer's own ids
    assert [c.encode(t, None, 512) for t in exp["texts"]] == list(zip(e["input_ids"], e["token_type_ids"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(SPM_KINDS), text=unicode_texts, other=st.none() | unicode_texts,
       ml=st.sampled_from([5, 9, 512]))
def test_hypothesis_unicode(pairs, kind, text, other, ml):
    py, c = pairs[kind]
    assert c.encode(text, other, ml) == py.encode(text, other, ml)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(SPM_KINDS), raw=st.binary(max_size=60))
def test_invalid_utf8_reads_as_python_replace(pairs, kind, raw):
    py, c = pairs[kind]
    assert c.pieces(raw) == py.tokenize_ids(raw.decode("utf-8", "replace"))


@pytest.mark.parametrize("kind", SPM_KINDS)
def test_long_clusters(pairs, kind):
    """Long runs that stay one cluster or alternate (regional indicators, marks, ZWJ chains,
    Indic conjuncts, Hangul jamo), and the same texts glued after other characters."""
    py, c = pairs[kind]
    for text in ("\U0001f1eb" * 3001, "e" + "\u0301" * 4000, "\U0001f468\u200d" * 2000 + "\U0001f469",
                 "\u0915\u094d" * 2000 + "\u0937", "\u1100" * 2000 + "\u1161\u11a8", "\u00aa\u0301" * 3000,
                 "\uff21" * 4000, "\r\n" * 3000, "\u200d" * 3000):
        for t in (text, "x " + text + " y"):
            assert c.pieces(t) == py.tokenize_ids(t), t[:8]


def _with_charsmap(kind: str, data: bytes) -> dict:
    spec = json.loads(json.dumps(load_tokenizer(GOLDEN / kind).spec))
    steps = spec["normalizer"]["normalizers"] if spec["normalizer"]["type"] == "Sequence" else [spec["normalizer"]]
    for n in steps:
        if n["type"] == "Precompiled":
            n["precompiled_charsmap"] = base64.b64encode(data).decode()
    return spec


def _real_charsmap(kind: str) -> bytes:
    from test_precompiled import _charsmap_b64
    return base64.b64decode(_charsmap_b64(kind))


def _packed_with(kind: str, data: bytes) -> bytes:
    """The packed file of kind with its charsmap bytes replaced (lengths rewritten)."""
    good = te.pack_unigram(load_tokenizer(GOLDEN / kind))
    steps = struct.unpack_from("<I", good, 32)[0]
    pos = 44
    for _ in range(steps):
        op, la, lb = struct.unpack_from("<III", good, pos)
        if op == te.UNIGRAM_STEPS["Precompiled"]:
            return good[:pos] + struct.pack("<III", op, len(data), lb) + data + good[pos + 12 + la:]
        pos += 12 + la + lb
    raise AssertionError("no Precompiled step")


@pytest.mark.parametrize("what", ["too short", "trie past the end", "empty trie", "strings not UTF-8"])
def test_bad_charsmaps_refused_by_both(lib, what):
    real = _real_charsmap("albert_spm")
    (size,) = struct.unpack_from("<I", real)
    data = {"too short": b"\x01\x00", "trie past the end": real[:size // 2], "empty trie": _cm([], b"a\0"),
            "strings not UTF-8": real[:4 + size] + b"\xff\0"}[what]
    with pytest.raises(ConfigError):
        TokenizerJson(_with_charsmap("albert_spm", data))
    with pytest.raises(te.TokenizerError, match="malformed") as e:
        te.CUnigramTokenizer(lib, _packed_with("albert_spm", data))
    assert e.value.code == te.UNIGRAM_CODES["ERR_FORMAT"]


@pytest.mark.parametrize("what", ["root offset", "leaf value", "string mid-character"])
def test_corrupt_charsmap_is_an_error_at_tokenize(lib, what):
    """Indices out of range inside the trie (tokenizers panics there): the oracle raises ConfigError,
    the C code returns ERR_FORMAT from the tokenize call, on the same texts."""
    a = ord("a")
    if what == "root offset":                 # the root's children live past the array
        data = _cm([100 << 10], b"x\0")
    elif what == "leaf value":                # root offset 0: "a" at 97, a key whose value unit is past the array
        data = _cm([0] * a + [(1000 << 10) | (1 << 8) | a], b"x\0")
    else:                                     # "a" -> string index 1, inside a two-byte character
        trie = [0] * 128
        trie[0] = 1 << 10                     # root offset 1: child "a" at 1 ^ 97 = 96
        trie[1 ^ a] = ((1 ^ a ^ 2) << 10) | (1 << 8) | a      # its leaf value unit at 96 ^ (96 ^ 2) = 2
        trie[2] = 1 | (1 << 31)
        data = _cm(trie, "é\0".encode())
    py = TokenizerJson(_with_charsmap("albert_spm", data), max_length=1 << 20)
    c = te.CUnigramTokenizer(lib, te.pack_unigram(py))
    with pytest.raises(ConfigError, match="corrupt charsmap"):
        py.tokenize_ids("a b")
    with pytest.raises(te.TokenizerError) as e:
        c.pieces("a b")
    assert e.value.code == te.UNIGRAM_CODES["ERR_FORMAT"]
    with pytest.raises(te.TokenizerError) as e:
        c.encode("zz", "a", 512)
    assert e.value.code == te.UNIGRAM_CODES["ERR_FORMAT"]


@pytest.mark.parametrize("seed", range(6))
def test_variants(lib, seed):
    """Random variants of the SentencePiece pipelines (tools/fuzz_tokenizer_unigram.variant: steps
    reordered around Precompiled, Metaspace settings, unknown characters)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import fuzz_tokenizer_unigram as tool
    rng = random.Random(seed)
    kind = SPM_KINDS[seed % 3]
    corpus = [t.encode() for t in json.loads((GOLDEN / kind / "expected.json").read_text(encoding="utf-8"))["texts"]]
    spec = json.loads((GOLDEN / kind / "tokenizer.json").read_text(encoding="utf-8"))
    py = TokenizerJson(tool.variant(rng, spec), max_length=1 << 20)
    c = te.CUnigramTokenizer(lib, te.pack_unigram(py))
    for _ in range(150):
        a = tool.ug_input(rng, corpus).decode("utf-8", "replace")
        b = tool.ug_input(rng, corpus).decode("utf-8", "replace") if rng.random() < 0.5 else None
        ml = rng.choice([5, 7, 16, 512])
        assert c.encode(a, b, ml) == py.encode(a, b, ml), (a, b, ml)


def test_compiled_albert_folder_with_a_charsmap(tmp_path):
    """An ALBERT model folder whose tokenizer.json has the Precompiled charsmap (albert_spm): the
    compiled library's own tokenizer (encode_text, classify_text) equals the oracle's."""
    import warnings

    import numpy as np

    import codegen
    import refexit
    from test_codegen_tokenizers import family_folder
    folder = family_folder("albert", tmp_path / "albert")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((GOLDEN / "albert_spm" / name).read_bytes())
    model = refexit.load(folder)
    assert any(n.get("type") == "Precompiled" for n in model.tokenizer.spec["normalizer"]["normalizers"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(model, refexit.Static(1), tmp_path / "build", prefix="tpc")
    assert cm.tokenizer_kind == "unigram"
    texts = json.loads((GOLDEN / "albert_spm" / "expected.json").read_text(encoding="utf-8"))["texts"][:60]
    for t in texts:
        assert cm.encode_text(t) == model.tokenizer.encode(t), t
    got = cm.classify_text(texts)
    want = model.classify(model.tokenizer(texts), refexit.Static(1))
    assert np.array_equal(np.asarray(got.labels), np.asarray(want.labels))
