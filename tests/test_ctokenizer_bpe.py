"""The generated C byte-level BPE tokenizer (templates/tokenizer_bpe.{h,c}.j2) against the oracle
refexit.tokenizers.TokenizerJson: golden texts, hypothesis Unicode, bad packed files and arguments,
warning-free builds with gcc and clang, a short sanitizer run (tools/fuzz_tokenizer_bpe.py runs
longer)."""
from __future__ import annotations

import struct
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

GOLDEN = Path(__file__).parent / "golden" / "tokenizers"
KINDS = ("roberta", "roberta_prefix")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return te.build_bpe_library(tmp_path_factory.mktemp("bpe"), flags=("-O1",))


@pytest.fixture(scope="module", params=KINDS)
def pair(request, lib):
    py = TokenizerJson.from_file(GOLDEN / request.param / "tokenizer.json", max_length=1 << 20)
    return py, te.CBpeTokenizer(lib, te.pack_bpe(py))


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_builds_warning_free(tmp_path, cc):
    checks.builds_warning_free(tmp_path, cc, te.build_bpe_library, te.build_bpe_driver)


def test_inlined_source_is_one_translation_unit(tmp_path):
    checks.inlined_source_compiles(tmp_path, te.bpe_source_inlined("m1"))


def test_golden_texts(pair):
    py, c = pair
    checks.golden_texts_agree(py, c, GOLDEN / "roberta" / "expected.json", (512, 16, 7, 4))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mixed_texts(JSON_TRICKY) | st.text(max_size=80), other=st.none() | mixed_texts(JSON_TRICKY),
       ml=st.sampled_from([4, 9, 32, 512]))
def test_hypothesis_unicode(pair, text, other, ml):
    py, c = pair
    assert c.encode(text, other, ml) == py.encode(text, other, ml)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=60))
def test_invalid_utf8_reads_as_python_replace(pair, raw):
    py, c = pair
    assert c.pieces(raw) == py.tokenize_ids(raw.decode("utf-8", "replace"))


def test_long_words(pair):
    py, c = pair
    for text in ("a" * 20000, " " * 5000 + "x", "'s" * 3000, "\u00e9" * 4000, "<mask>" * 500):
        assert c.pieces(text) == py.tokenize_ids(text)


def test_errors(pair, lib):
    py, c = pair
    with pytest.raises(te.TokenizerError, match="max_length") as e:
        c.encode("a", "b", max_length=3)
    assert e.value.code == te.BPE_CODES["ERR_MAX_LENGTH"]
    with pytest.raises(te.TokenizerError, match="max_length"):
        c.encode("a", None, max_length=1)
    n = c.ffi.new("int *")
    assert c._fn["tokenize"](c.handle, b"hello world", 11, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, 0, n) \
        == te.BPE_CODES["ERR_CAPACITY"]
    assert n[0] == len(py.encode("hello world")[0])
    assert c._fn["tokenize"](c.handle, b"x", 1, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, -1, n) \
        == te.BPE_CODES["ERR_ARG"]
    assert c._fn["tokenize"](c.ffi.NULL, b"x", 1, c.ffi.NULL, 0, 512, c.ffi.NULL, c.ffi.NULL, 0, n) \
        == te.BPE_CODES["ERR_NULL"]
    assert c._fn["tokenize"](c.handle, b"x", 1, c.ffi.NULL, 3, 512, c.ffi.NULL, c.ffi.NULL, 0, n) \
        == te.BPE_CODES["ERR_NULL"]
    assert c.ffi.string(c._fn["strerror"](12345)) == b"unknown tokenizer status code"


def test_bad_packed_files(lib):
    py = TokenizerJson.from_file(GOLDEN / "roberta" / "tokenizer.json")
    good = te.pack_bpe(py)
    n_ids, n_merges = struct.unpack_from("<II", good, 8)
    header = 8 + 7 * 4 + 256 * 4
    bad = {
        "empty": b"",
        "magic": b"XXBPE\0\0\1" + good[8:],
        "truncated": good[:-1],
        "longer": good + b"\0",
        "cls out of range": good[:24] + struct.pack("<i", n_ids) + good[28:],
        "byte id out of range": good[:36] + struct.pack("<i", n_ids + 5) + good[40:],
        "merge id out of range": good[:header] + struct.pack("<I", 1 << 30) + good[header + 4:],
        "merge listed twice": good[:12] + struct.pack("<I", n_merges + 1) + good[16:header + 16 * n_merges]
        + good[header:header + 16] + good[header + 16 * n_merges:],
        "flags": good[:20] + struct.pack("<I", 9) + good[24:],
    }
    for what, blob in bad.items():
        with pytest.raises(te.TokenizerError, match="malformed") as e:
            te.CBpeTokenizer(lib, blob)
        assert e.value.code == te.BPE_CODES["ERR_FORMAT"], what


@pytest.mark.parametrize("kind", ["albert", "distilbert"])
def test_pack_refuses_other_pipelines(kind):
    with pytest.raises(ValueError, match="does not implement"):
        te.pack_bpe(TokenizerJson.from_file(GOLDEN / kind / "tokenizer.json"))


@pytest.mark.slow
def test_sanitizers_short_fuzz():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import fuzz_tokenizer_bpe
    rc = fuzz_tokenizer_bpe.main(["--batches", "2", "--batch-size", "300", "--seed", "5", "--out",
                                  str(Path(__file__).parent / ".." / "fuzz_tokenizer_bpe_failures")])
    if rc == 2:
        pytest.skip("no sanitizer runtime for the C compiler")
    assert rc == 0
