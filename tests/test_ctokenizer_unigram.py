"""The generated C Unigram tokenizer (templates/tokenizer_unigram.{h,c}.j2) against the oracle
refexit.tokenizers.TokenizerJson: the golden ALBERT tokenizer and random variants of it (normalizer
steps, Metaspace settings, unknown characters, perturbed scores), hypothesis Unicode, invalid UTF-8,
bad packed files and arguments, warning-free builds with gcc and clang, a short sanitizer run
(tools/fuzz_tokenizer_unigram.py runs longer)."""
from __future__ import annotations

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
from refexit.tokenizers import TokenizerJson  # noqa: E402
from test_tokenizer import mixed_texts  # noqa: E402
from test_tokenizer_json import JSON_TRICKY  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "tokenizers"
TRICKY = JSON_TRICKY + ["``", "''", "[CLS]", "[SEP]", "[MASK]", "ﬁ", "½", "각", "\u1100\u1161", "e\u0301\u0316",
                        "\u3000", "İ"]
SPEC = json.loads((GOLDEN / "albert" / "tokenizer.json").read_text(encoding="utf-8"))


def fuzz_tool():
    sys.path.insert(0, str(ROOT / "tools"))
    import fuzz_tokenizer_unigram
    return fuzz_tokenizer_unigram


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return te.build_unigram_library(tmp_path_factory.mktemp("unigram"), flags=("-O1",))


@pytest.fixture(scope="module")
def pair(lib):
    py = TokenizerJson(SPEC, max_length=1 << 20)
    return py, te.CUnigramTokenizer(lib, te.pack_unigram(py))


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_builds_warning_free(tmp_path, cc):
    checks.builds_warning_free(tmp_path, cc, te.build_unigram_library, te.build_unigram_driver)


def test_inlined_source_is_one_translation_unit(tmp_path):
    checks.inlined_source_compiles(tmp_path, te.unigram_source_inlined("m1"))


def test_golden_texts(pair):
    py, c = pair
    checks.golden_texts_agree(py, c, GOLDEN / "albert" / "expected.json", (512, 16, 7, 3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mixed_texts(TRICKY) | st.text(max_size=80), other=st.none() | mixed_texts(TRICKY),
       ml=st.sampled_from([3, 9, 32, 512]))
def test_hypothesis_unicode(pair, text, other, ml):
    py, c = pair
    assert c.encode(text, other, ml) == py.encode(text, other, ml)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=60))
def test_invalid_utf8_reads_as_python_replace(pair, raw):
    py, c = pair
    assert c.pieces(raw) == py.tokenize_ids(raw.decode("utf-8", "replace"))


def test_long_inputs(pair):
    py, c = pair
    for text in ("a" * 20000, " " * 5000 + "x", "\u0301\u0316" * 3000 + "e", "\ufdfa" * 2000, "[MASK]" * 500,
                 "\u2581" * 3000, "😀" * 3000):
        assert c.pieces(text) == py.tokenize_ids(text), text[:10]


@pytest.mark.parametrize("seed", range(12))
def test_variants(lib, seed):
    """Random variants of the ALBERT pipeline (tools/fuzz_tokenizer_unigram.variant): every
    prepend_scheme, split on / off, no WhitespaceSplit, steps reordered, unknown characters."""
    tool = fuzz_tool()
    rng = random.Random(seed)
    corpus = [t.encode() for t in json.loads((GOLDEN / "albert" / "expected.json").read_text(encoding="utf-8"))["texts"]]
    py = TokenizerJson(tool.variant(rng, SPEC), max_length=1 << 20)
    c = te.CUnigramTokenizer(lib, te.pack_unigram(py))
    for _ in range(150):
        a = tool.ug_input(rng, corpus).decode("utf-8", "replace")
        b = tool.ug_input(rng, corpus).decode("utf-8", "replace") if rng.random() < 0.5 else None
        ml = rng.choice([3, 5, 16, 512])
        assert c.encode(a, b, ml) == py.encode(a, b, ml), (a, b, ml)


def test_errors(pair):
    py, c = pair
    with pytest.raises(te.TokenizerError, match="max_length") as e:
        c.encode("a", "b", max_length=2)
    assert e.value.code == te.UNIGRAM_CODES["ERR_MAX_LENGTH"]
    n = c.ffi.new("int *")
    f = c._fn["tokenize"]
    assert f(c.handle, b"hello world", 11, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, 0, n) \
        == te.UNIGRAM_CODES["ERR_CAPACITY"]
    assert n[0] == len(py.encode("hello world")[0])
    assert f(c.handle, b"x", 1, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, -1, n) == te.UNIGRAM_CODES["ERR_ARG"]
    assert f(c.ffi.NULL, b"x", 1, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, 0, n) == te.UNIGRAM_CODES["ERR_NULL"]
    assert f(c.handle, b"x", 1, c.ffi.NULL, 3, 512, c.ffi.NULL, c.ffi.NULL, 0, n) == te.UNIGRAM_CODES["ERR_NULL"]
    assert c.lib.rxug_ug_special_tokens(c.handle, 0) == 2 and c.lib.rxug_ug_special_tokens(c.handle, 1) == 3
    assert c.ffi.string(c._fn["strerror"](12345)) == b"unknown tokenizer status code"


def test_bad_packed_files(lib):
    good = te.pack_unigram(TokenizerJson(SPEC))
    n_ids, n_pieces = struct.unpack_from("<II", good, 8)
    steps = struct.unpack_from("<I", good, 32)[0]
    pos = 44
    for _ in range(steps):
        la, lb = struct.unpack_from("<II", good, pos + 4)
        pos += 12 + la + lb
    first_piece = pos
    bad = {
        "empty": b"",
        "magic": b"XXUNI\0\0\1" + good[8:],
        "truncated": good[:-1],
        "longer": good + b"\0",
        "unk out of range": good[:28] + struct.pack("<i", n_pieces) + good[32:],
        "flags": good[:20] + struct.pack("<I", 12) + good[24:],
        "surrogate replacement": good[:24] + struct.pack("<I", 0xD800) + good[28:],
        "a step op": good[:44] + struct.pack("<I", 9) + good[48:],
        "a NaN score": good[:first_piece] + struct.pack("<d", float("nan")) + good[first_piece + 8:],
        "a piece that is not UTF-8": good[:first_piece + 12] + b"\xff" + good[first_piece + 13:],
        "template id out of range": good[:-8] + struct.pack("<ii", n_ids, 0),
    }
    for what, blob in bad.items():
        with pytest.raises(te.TokenizerError, match="malformed") as e:
            te.CUnigramTokenizer(lib, blob)
        assert e.value.code == te.UNIGRAM_CODES["ERR_FORMAT"], what


@pytest.mark.parametrize("kind", ["roberta", "distilbert"])
def test_pack_refuses_other_pipelines(kind):
    with pytest.raises(ValueError, match="does not implement"):
        te.pack_unigram(TokenizerJson.from_file(GOLDEN / kind / "tokenizer.json"))


@pytest.mark.slow
def test_sanitizers_short_fuzz():
    rc = fuzz_tool().main(["--batches", "2", "--batch-size", "300", "--seed", "5", "--out",
                           str(Path(__file__).parent / ".." / "fuzz_tokenizer_unigram_failures")])
    if rc == 2:
        pytest.skip("no sanitizer runtime for the C compiler")
    assert rc == 0
