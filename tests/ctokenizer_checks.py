"""Checks shared by the tests of the generated C tokenizers built from tokenizer.json (byte-level
BPE: test_ctokenizer_bpe.py, Unigram: test_ctokenizer_unigram.py): each takes the kind's builders
or its (oracle, C) pair."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codegen import tokenizer_emit as te

WARN = ("-O1", "-Wall", "-Wextra", "-Werror", "-pedantic")


def builds_warning_free(tmp_path: Path, cc: str, build_library, build_driver) -> None:
    """The library and the sanitizer driver compile with `cc` under WARN (skips without `cc`)."""
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    build_library(tmp_path, prefix=f"w_{cc}", cc=cc, flags=WARN)
    build_driver(tmp_path, prefix=f"d_{cc}", cc=cc, flags=WARN)


def inlined_source_compiles(tmp_path: Path, source: str) -> None:
    """The tokenizer inlined into one translation unit (as a compiled model holds it) compiles."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    c = tmp_path / "one.c"
    c.write_text(source, encoding="utf-8")
    te._compile([cc, "-std=c99", *WARN, "-c", str(c), "-o", str(tmp_path / "one.o")])


def golden_texts_agree(py, c, expected: Path, max_lengths) -> None:
    """C == oracle on the golden texts (expected.json of tools/make_tokenizer_golden.py): singles
    and neighbouring pairs at every max_length, and the pieces without specials."""
    texts = json.loads(expected.read_text(encoding="utf-8"))["texts"]
    assert c.vocab_size == py.vocab_size
    for ml in max_lengths:
        for t in texts:
            assert c.encode(t, None, ml) == py.encode(t, None, ml), (ml, t)
        for a, b in zip(texts[:-1], texts[1:]):
            assert c.encode(a, b, ml) == py.encode(a, b, ml), (ml, a, b)
    for t in texts:
        assert c.pieces(t) == py.tokenize_ids(t)
