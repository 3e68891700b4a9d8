"""The generated C tokenizer (codegen/tokenizer_emit.py, templates/tokenizer.*.j2) against the
oracle refexit.tokenizers.wordpiece.Tokenizer (default mode: the Rust `tokenizers` pipeline), and against the
Rust tokenizer's own outputs (tests/golden/minilm_tokens.json, tests/golden/rust_codepoints.jsonl.gz).

Every comparison is exact: one differing id is a failure, reported with the text. Four ways in:
  - the real all-MiniLM-L6-v2 vocabulary on the real data sets and on hypothesis text;
  - a "character vocabulary" (every character of the text and "##" + it, nothing longer), under
    which the ids spell out each piece character by character: any difference in cleaning,
    decomposition, mark ordering, lower-casing, accent stripping or punctuation splitting shows,
    in all 12 settings of do_lower_case x strip_accents x tokenize_chinese_chars;
  - every code point (every 61st by default, all in the slow suite) alone and between two
    letters against the table dumped from the Rust tokenizer;
  - a build with a 1-mark run buffer, so the re-reading path for long runs of kept combining
    marks runs on every pair of them.
The sanitizer test runs a driver executable built with -fsanitize=address,undefined over a few
thousand random and adversarial inputs (tools/fuzz_tokenizer.py does the same for longer).
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading

import pytest

from codegen import tokenizer_emit as te
from refexit.tokenizers.wordpiece import SPECIAL_TOKENS, Tokenizer

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PREFIX = "rxtok"
SETTINGS = [(lower, strip, cjk) for lower in (True, False) for strip in (None, True, False)
            for cjk in (True, False)]


# ---------------------------------------------------------------- builds (once per session)

@pytest.fixture(scope="session")
def c_build(tmp_path_factory):
    """Header, source and the default shared library."""
    if not shutil.which(os.environ.get("CC") or "cc"):
        pytest.skip("no C compiler ($CC or cc)")
    d = tmp_path_factory.mktemp("ctok")
    return te.build_library(d, PREFIX, flags=("-O2",))


@pytest.fixture(scope="session")
def c_build_runbuf1(tmp_path_factory):
    """A build that re-reads every run of two or more kept marks (the long-run path)."""
    d = tmp_path_factory.mktemp("ctok_runbuf1")
    return te.build_library(d, PREFIX, flags=("-O1",), defines={f"{PREFIX.upper()}_TOK_RUNBUF": 1})


@pytest.fixture(scope="session", params=["default", "runbuf1"])
def any_build(request, c_build, c_build_runbuf1):
    return c_build if request.param == "default" else c_build_runbuf1


@pytest.fixture(scope="session")
def real_vocab(minilm_dir) -> bytes:
    return (minilm_dir / "vocab.txt").read_bytes()


@pytest.fixture(scope="session")
def real_pair(c_build, minilm_dir, real_vocab):
    """(C tokenizer, oracle) on the real vocabulary with the model's settings."""
    py = Tokenizer.from_dir(minilm_dir)
    c = te.CTokenizer(c_build, real_vocab, py.do_lower_case, py.strip_accents, py.tokenize_chinese_chars,
                      prefix=PREFIX)
    return c, py


def py_ids(py: Tokenizer, text: str) -> list[int]:
    return py.convert_tokens_to_ids(py.tokenize(text))


def first_mismatches(pairs, limit=5) -> str:
    return "\n".join(f"  text={t!r}\n    C ={c}\n    py={p}" for t, c, p in pairs[:limit])


# ---------------------------------------------------------------- the character vocabulary (te.char_vocabulary)

def compare_char_vocab(lib, text: str, raw: bytes | None, lower, strip, cjk):
    vocab = te.char_vocabulary(text)
    py = Tokenizer(vocab, do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk)
    c = te.CTokenizer(lib, "\n".join(vocab).encode("utf-8"), lower, strip, cjk, prefix=PREFIX)
    try:
        got = c.wordpieces(raw if raw is not None else text.encode("utf-8"))
    finally:
        c.close()
    want = py_ids(py, text)
    if got != want:
        show = lambda ids: [vocab[i] for i in ids]  # noqa: E731
        raise AssertionError(f"settings lower={lower} strip={strip} cjk={cjk}\ntext={text!r}\n"
                             f"C ={show(got)}\npy={show(want)}")


# ---------------------------------------------------------------- text strategies

CURATED = (
    list("AaZz09 \t\n\r.,;:!?'\"-_()[]{}#$%&*+/<=>@\\^`|~") + ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]",
                                                             "[CL", "S]", "##"]
    + list("\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2003\u2028\u2029\u202f\u3000")       # spaces
    + list("\x00\x07\x1b\x7f\xad\u200b\u200c\u200d\u2060\ufeff\ufffd\U000e0001\ue000\U000f0000")  # dropped
    + list("ÀÁÂÃÄÅàáâãäåÇçÈéÑñÖöÜüǕǖǗǘṨṩẞßĲĳǄǅǆﬃﬀ")                                          # Latin
    + [chr(c) for c in range(0x300, 0x370)] + list("\u0316\u0323\u0345\u0344\u0f73\u0f75\u0f81")
    + list("\U0001d165\U0001d166\U0001d16d\U0001d16e\u302e\u302f\U00016ff0\u1b44\ua953")      # Mc marks
    + list("ΣσςΑαΆάΐΰΌϏϐϑϒϓϔΩωΪᾼᾈᾀ\u1fbe") + ["ΑΣ", "ΑΣΑ", "Σ'", "Α\u0301Σ", "ΑΣ\u0301", "ς"]  # Greek
    + list("İıIiKkΩÅ\u212a\u2126\u212b") + list("ДдЁёЙй")
    + [chr(c) for c in (0x1100, 0x1101, 0x1112, 0x1113, 0x1161, 0x1175, 0x1176, 0x11a7, 0x11a8,
                        0x11c2, 0x11c3, 0xac00, 0xac01, 0xd7a3, 0x3131)]                        # Hangul
    + list("\u4e00\u4e2d\u6587\u9fff\u3400\uf900\ufa6d\U00020000\U0002a6df\U0002f800\U0002fa1d")  # CJK
    + list("あアｱ한글")
    + list("\u0915\u093c\u0958\u09c7\u09be\u09d7\u0b47\u0b3e\u0bc6\u0bbe\u0d46\u0d3e\u0dd9\u0dcf")
    + list("\u1b05\u1b35\u0627\u0653\u05d0\u05b7\u05bc")                                       # compose
    + list("\u02b0\u02c6\u00b4\u00b7\u2019\u2018\u00a8\u0387\u05f4\u2024\ufe13\uff07")        # ignorable
    + list("\U0001f600\U0001f468\U0001f469\u2764\ufe0f\U0001f1fa\U0001f1f8\U0001f3fb")        # emoji
    + list("\u2160\u216b\u24b6\u24d0\U00010400\U00010428\U0001e900\U0001e922\u10a0\u2d00\uab70")  # cases
    + list("¡¿«»–—…‘’“”„†•‰€£¥©®°±²³µ¶×÷")                                                    # symbols
)

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=("Cs",))
texts = st.lists(st.one_of(st.sampled_from(CURATED), any_char), max_size=40).map("".join)
texts_planes = st.text(alphabet=any_char, max_size=60)
marks = st.sampled_from([chr(c) for c in range(0x300, 0x370)] + list("\u0316\u0323\u0345\u0344\u0f73\u0f75"
                                                                     "\U0001d165\U0001d16d\u302e\u1b44"))
runs = st.tuples(st.sampled_from(list("aAeEoOuUsSΣΑαıiİ\u1100\u0915\u0b47 ") + ["", "\u1100\u1161"]),
                 st.lists(marks, min_size=1, max_size=80)).map(lambda t: t[0] + "".join(t[1]))
texts_marks = st.lists(st.one_of(runs, st.sampled_from(CURATED)), max_size=8).map("".join)
setting = st.sampled_from(SETTINGS)

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
           derandomize=True)


# ---------------------------------------------------------------- character vocabulary: all settings

@settings(max_examples=400, **HYP)
@given(text=texts, cfg=setting)
def test_char_vocab_curated(any_build, text, cfg):
    compare_char_vocab(any_build, text, None, *cfg)


@settings(max_examples=150, **HYP)
@given(text=texts_planes, cfg=setting)
def test_char_vocab_all_planes(c_build, text, cfg):
    compare_char_vocab(c_build, text, None, *cfg)


@settings(max_examples=200, **HYP)
@given(text=texts_marks, cfg=setting)
def test_char_vocab_combining_runs(any_build, text, cfg):
    compare_char_vocab(any_build, text, None, *cfg)


@settings(max_examples=300, **HYP)
@given(raw=st.binary(max_size=60), cfg=setting)
def test_char_vocab_random_bytes(c_build, raw, cfg):
    compare_char_vocab(c_build, raw.decode("utf-8", "replace"), raw, *cfg)


utf8_pieces = st.sampled_from([b"\xc2", b"\xdf", b"\xe0", b"\xe0\xa0", b"\xe0\x80", b"\xed\xa0\x80", b"\xed\x9f\xbf",
                               b"\xef\xbf\xbd", b"\xf0", b"\xf0\x90", b"\xf0\x90\x80", b"\xf0\x80\x80\x80",
                               b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\x80", b"\xbf", b"\xc0\xaf",
                               b"\xc1\xbf", b"a", b" ", b"\xcc\x81", b"A", b"\xce\xa3", b"[CLS]", b"[", b"\xe4\xb8\xad"])


@settings(max_examples=300, **HYP)
@given(raw=st.lists(utf8_pieces, max_size=20).map(b"".join), cfg=setting)
def test_char_vocab_invalid_utf8(c_build, raw, cfg):
    compare_char_vocab(c_build, raw.decode("utf-8", "replace"), raw, *cfg)


EDGE_CASES = [
    # Greek sigma in every context (Rust lower-cases character by character: never a final ς)
    "Σ", "ΑΣ", "ΑΣΑ", "ΣΣΣ", "Α'Σ", "Α'Σ'", "Α'Σ'Α", "Α.Σ.", "Α\u02b0Σ", "Α\u00adΣ", "Α\u0301Σ", "ΑΣ\u0301",
    "'Σ", "1Σ", "aΣ b", "ΑΣ\u200dΑ", "ΑΣ\u2028Α", "ΑΣ\u3000", "ΑΣ1", "ΑΣ'1", "Α" + "'" * 3000 + "Σ",
    # special tokens: split out of the raw text only (a control inside breaks them)
    "[MA\x00SK]", "[CL\u200bS]", "[SEP\x07]", "[UNK]\u0301", "[PAD\ufffd]", "x[MASK]y", "[[CLS]]", "[CLS",
    "[cls]", "[CLS]]", " [UNK] ", "[CLS\u0301]", "\u0301[SEP]", "[\x00CLS]", "[MASK\x00]x",
    # Hangul decomposition, composed and decomposed forms (Rust never composes)
    "\uac00\u11a7", "\u1100\u1161\u11a7", "\u1100\u1161\u11a8", "\uac00\u11a8", "\uac01\u11a8",
    "\u1100\u0301\u1161", "\u0b47\u0b3e", "\u0b47\u0301\u0b3e", "\u09c7\u09be\u09d7", "\u0b47\u0b57",
    "a\u0328\u0301", "a\u0301\u0328", "a\u0301\u0301", "\u0958", "\u0915\u093c", "e\u0323\u0302",
    # lower case that adds a mark, marks that survive stripping
    "İ", "İ\u0316", "İ\u0301", "i\u0307", "I\u0307", "\U0001d15f\U0001d16e", "\U0001d160",
    "a\U0001d16d\U0001d165\u0301", "\u302e\u0316\u302f",
]


@pytest.mark.parametrize("cfg", SETTINGS)
def test_char_vocab_edge_cases(any_build, cfg):
    for text in EDGE_CASES:
        compare_char_vocab(any_build, text, None, *cfg)


@pytest.mark.parametrize("text", [
    "a" + "\u0301" * 5000 + "b",                             # one long run of stripped marks
    "a" + "\U0001d16d\u0301\U0001d165\u0316" * 2000 + "b",    # kept marks, sorted past the buffer
    "\u0301\u0316" * 3000,                                   # a run with no starter
    "x" + "".join(chr(0x300 + i % 0x70) for i in range(4000)),
    "\u1100\u1161" + "\u0301" * 500 + "\u11a8",              # Hangul LV blocked from T by marks
    "ΑΣ" + "'" * 5000 + "Α ΑΣ" + "\u0301" * 3000 + " ΑΣ" + "." * 3000,   # sigma, far context
    "İ" + "\u0316\u0323\u0307" * 1000,                       # lower case adds a mark to the run
    "\U0001d16d\U0001d165" * 600 + "a",                      # marks that survive stripping (Mc)
    "word " * 3000,
    "a," * 5000,
    "[CLS]" * 2000 + "[" * 3000,
    "Α" + "\u00b7" * 4000 + "Σ" + "\u0301" * 3000,
])
@pytest.mark.parametrize("cfg", [(True, None, True), (False, True, True), (True, False, False), (False, None, True)])
def test_char_vocab_long_inputs(any_build, text, cfg):
    compare_char_vocab(any_build, text, None, *cfg)


# ---------------------------------------------------------------- the real vocabulary

def test_golden_hf(real_pair, golden_dir):
    """AutoTokenizer's own outputs (the Rust tokenizers backend), recorded by tools/make_golden.py:
    singles at several max_length, pairs at odd and even budgets (an empty pair: as a batch call,
    where it stays a pair; the single call drops it)."""
    import json
    c, _ = real_pair
    g = json.loads((golden_dir / "minilm_tokens.json").read_text(encoding="utf-8"))
    for case in g["singles"]:
        for ml in g["single_max_lengths"]:
            ids = case.get(f"input_ids_{ml}", case["input_ids_512"])
            assert c.encode(case["text"], max_length=ml) == (ids, [0] * len(ids)), (case["text"], ml)
    for case in g["pairs"]:
        for ml in g["pair_max_lengths"]:
            want = (case.get(f"input_ids_{ml}", case["input_ids_512"]),
                    case.get(f"token_type_ids_{ml}", case["token_type_ids_512"]))
            got = c.encode(case["text"], case["pair"] or None, max_length=ml)
            assert got == want, (case["text"], case["pair"], ml)
        want = case.get("batch_input_ids_16", case.get("input_ids_16", case["input_ids_512"]))
        assert c.encode(case["text"], case["pair"], max_length=16)[0] == want, (case["text"], case["pair"])


def test_real_vocab_edge_cases(real_pair):
    c, py = real_pair
    for text in EDGE_CASES:
        assert c.wordpieces(text) == py_ids(py, text), text


@settings(max_examples=300, **HYP)
@given(text=st.one_of(texts, texts_planes))
def test_real_vocab_hypothesis(real_pair, text):
    c, py = real_pair
    assert c.wordpieces(text) == py_ids(py, text), text


@settings(max_examples=200, **HYP)
@given(a=texts, b=st.one_of(st.none(), texts), max_length=st.integers(2, 40))
def test_real_vocab_truncation(real_pair, a, b, max_length):
    c, py = real_pair
    if b is not None:
        max_length = max(max_length, 3)
    assert c.encode(a, b, max_length) == py.encode(a, b, max_length), (a, b, max_length)


def corpus(names=("rotten_tomatoes", "sms_spam", "bbc_news", "tweets")) -> dict[str, list[str]]:
    from refexit import data
    out = {}
    for name in names:
        try:
            ds = data.load_dataset(name)
        except data.DataError as e:
            pytest.skip(f"data set {name} unavailable: {e}")
        out[name] = ds.train.texts + ds.dev.texts + ds.test.texts
    return out


def compare_corpus(c, py, named_texts: dict[str, list[str]], n_pairs: int):
    bad = []
    for name, texts_ in named_texts.items():
        for t in texts_:
            ids = py_ids(py, t)
            want = ([py.cls_id] + ids[:510] + [py.sep_id], [0] * (min(len(ids), 510) + 2))
            if c.encode(t, max_length=512) != want:
                bad.append((f"{name}: {t}", c.encode(t, max_length=512)[0], want[0]))
            if name == "bbc_news" and c.wordpieces(t) != ids:          # untruncated too
                bad.append((f"{name} (untruncated): {t}", c.wordpieces(t), ids))
        rng = random.Random(len(texts_))
        for _ in range(min(n_pairs, len(texts_))):
            a, b = rng.choice(texts_), rng.choice(texts_)
            ml = rng.choice([16, 64, 128, 512])
            got, want = c.encode(a, b, ml), py.encode(a, b, ml)
            if got != want:
                bad.append((f"{name} pair max_length={ml}: {a!r} / {b!r}", got[0], want[0]))
    assert not bad, f"{len(bad)} mismatches, first ones:\n{first_mismatches(bad)}"


@pytest.mark.parametrize("name", ["rotten_tomatoes", "sms_spam", "bbc_news", "tweets"])
def test_real_corpus(real_pair, name):
    """Every train+dev+test text of the data set, truncated at 512 (and for bbc_news's long
    articles also untruncated), plus 2,000 random pairs. About 10 s for the four together."""
    c, py = real_pair
    compare_corpus(c, py, corpus((name,)), n_pairs=2000)


def test_concurrent_calls_one_handle(real_pair):
    """A handle is read-only after open: threads share it (cffi releases the GIL in calls)."""
    c, py = real_pair
    texts_ = corpus(("sms_spam",))["sms_spam"][:400]
    want = [py_ids(py, t) for t in texts_]
    lib = c._fn["wordpieces"]
    errors = []

    def work(k):
        ids = c.ffi.new("int32_t[]", 4096)
        n = c.ffi.new("int *")
        for i in range(k % 7, len(texts_), 3):
            b = texts_[i].encode()
            rc = lib(c.handle, b, len(b), ids, 4096, n)
            if rc != 0 or list(ids[0:n[0]]) != want[i]:
                errors.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


# ---------------------------------------------------------------- API contract and errors

SMALL_VOCAB = "\n".join(list(SPECIAL_TOKENS) + ["hello", "world", "##s", ",", "a"]) + "\n"


def small(lib, vocab=SMALL_VOCAB, **kw):
    return te.CTokenizer(lib, vocab.encode("utf-8") if isinstance(vocab, str) else vocab, prefix=PREFIX, **kw)


def test_error_codes(c_build):
    tok = small(c_build)
    ffi, f = tok.ffi, tok._fn
    n = ffi.new("int *")
    ids = ffi.new("int32_t[]", 8)
    text = b"hello worlds, a"
    assert tok.encode(text, max_length=16)[0] == [2, 5, 6, 7, 8, 9, 3]
    # NULL arguments
    assert f["tokenize"](ffi.NULL, text, len(text), ffi.NULL, 0, 16, ids, ffi.NULL, 8, n) == 101
    assert f["tokenize"](tok.handle, ffi.NULL, 0, ffi.NULL, 0, 16, ids, ffi.NULL, 8, n) == 101
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ids, ffi.NULL, 8, ffi.NULL) == 101
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ffi.NULL, ffi.NULL, 8, n) == 101
    assert f["wordpieces"](tok.handle, ffi.NULL, 3, ids, 8, n) == 101
    # capacity: too small -> the size needed; NULL ids with capacity 0 is a size query
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ids, ffi.NULL, 3, n) == 103 and n[0] == 7
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ffi.NULL, ffi.NULL, 0, n) == 103 and n[0] == 7
    assert f["wordpieces"](tok.handle, text, len(text), ffi.NULL, 0, n) == 103 and n[0] == 5
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ids, ffi.NULL, -1, n) == 102
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 16, ids, ffi.NULL, 7, n) == 0 and n[0] == 7
    # max_length
    assert f["tokenize"](tok.handle, text, len(text), ffi.NULL, 0, 1, ids, ffi.NULL, 8, n) == 104
    assert f["tokenize"](tok.handle, text, len(text), b"a", 1, 2, ids, ffi.NULL, 8, n) == 104
    assert tok.encode(text, max_length=2) == ([2, 3], [0, 0])
    assert tok.encode(text, b"a", max_length=3) == ([2, 3, 3], [0, 0, 1])
    assert tok.encode(text, max_length=2**31 - 1)[0] == [2, 5, 6, 7, 8, 9, 3]
    # every code has a message, unknown codes too
    for code in [c for _, c, _ in te.ERRORS] + [-1, 12345]:
        assert ffi.string(f["tokenizer_strerror"](code))
    tok.close()


@pytest.mark.parametrize("vocab,code", [
    ("\n".join(["[PAD]", "[UNK]", "[CLS]", "hello"]), 105),                # no [SEP]
    ("\n".join(list(SPECIAL_TOKENS) + ["a", "a"]), 107),                   # duplicate
    ("\n".join(list(SPECIAL_TOKENS) + ["", "", "a"]), 107),                # two empty lines
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\n", 106),                          # invalid UTF-8
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xed\xa0\x80\n", 106),                  # a surrogate
    ("", 105),
])
def test_open_errors(c_build, vocab, code):
    with pytest.raises(te.TokenizerError) as e:
        small(c_build, vocab)
    assert e.value.code == code


def test_open_bad_flags(c_build):
    tok = small(c_build)
    ffi, f = tok.ffi, tok._fn
    out = ffi.new(f"{PREFIX}_tokenizer **")
    v = SMALL_VOCAB.encode()
    assert f["tokenizer_open"](v, len(v), 2, -1, 1, out) == 102 and out[0] == ffi.NULL
    assert f["tokenizer_open"](v, len(v), 1, -2, 1, out) == 102
    assert f["tokenizer_open"](v, len(v), 1, -1, 7, out) == 102
    assert f["tokenizer_open"](ffi.NULL, 0, 1, -1, 1, out) == 101
    assert f["tokenizer_open"](v, len(v), 1, -1, 1, ffi.NULL) == 101
    f["tokenizer_close"](ffi.NULL)


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("final", [True, False])
def test_vocab_line_endings(c_build, sep, final):
    """Universal newlines like Python's open(): ids are line numbers whatever the line ending."""
    toks = list(SPECIAL_TOKENS) + ["hello", "\ufeffbom", "", "##s"]
    text = sep.join(toks) + (sep if final else "")
    tok = small(c_build, text)
    assert tok.vocab_size == len(toks)
    for i, t in enumerate(toks):
        if t:
            assert tok.token_id(t) == i
    assert tok.wordpieces("hellos") == [5, 8]
    tok.close()


def test_mask_missing_becomes_unk(c_build):
    tok = small(c_build, "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]))
    assert tok.wordpieces("a [MASK] a") == [4, 1, 4]


# ---------------------------------------------------------------- C compilers, sanitizers

def compilers() -> list[str]:
    return [cc for cc in ("gcc", "clang") if shutil.which(cc)]


@pytest.mark.parametrize("cc", compilers())
def test_compiles_pedantic(tmp_path, cc):
    header, source = te.emit_tokenizer("my_model")
    (tmp_path / "my_model_tokenizer.h").write_text(header)
    (tmp_path / "my_model_tokenizer.c").write_text(source)
    r = subprocess.run([cc, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
                        str(tmp_path / "my_model_tokenizer.c"), "-o", str(tmp_path / "t.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nm = shutil.which("nm")
    if nm:
        out = subprocess.run([nm, "-g", "--defined-only", str(tmp_path / "t.o")], capture_output=True,
                             text=True).stdout
        exported = [line.split()[-1] for line in out.splitlines() if line.strip()]
        assert exported and all(s.startswith("my_model_") for s in exported), exported


def sanitizer_inputs(rng: random.Random) -> list[tuple[int, bytes, bytes, int, int]]:
    """(kind, text, pair, max_length, capacity): random and adversarial."""
    pieces = [b"a", b"A", b" ", b".", b"'", b"\xce\xa3", b"\xcc\x81", b"\xcc\x96", b"\xe1\x84\x80",
              b"\xe1\x85\xa1", b"\xe1\x86\xa8", b"\xe4\xb8\xad", b"[CLS]", b"[", b"]", b"\x00", b"\xff",
              b"\xe0", b"\xf0\x90", b"\xed\xa0\x80", b"\xc4\xb0", b"\xf0\x9d\x85\xad", b"\xef\xbf\xbd",
              b"hello", b"##", b"\t\n", b"\xe2\x80\xa8"]
    out = []
    long_ = [b"a" + b"\xcc\x81" * 20000, b"\xcc\x81\xcc\x96" * 5000, b"\xce\x91\xce\xa3" + b"'" * 20000 + b"a",
             b"x" * 100000, b"a," * 20000, b"[CLS]" * 5000, b"[" * 20000, b"\xff" * 10000,
             b"\xe0" * 7001, b"\xf0\x90\x80" * 3000, bytes(range(256)) * 40, b"\xc4\xb0" + b"\xcc\x96" * 3000]
    for t in long_:
        out += [(0, t, b"", 512, 1 << 17), (1, t, b"", 512, 512), (2, t, t[:5000], 128, 128)]
    for _ in range(3000):
        k = rng.random()
        if k < 0.4:
            t = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        elif k < 0.8:
            t = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))
        else:
            t = "".join(chr(rng.choice([rng.randrange(0x110000), rng.randrange(0x300, 0x370),
                                        rng.randrange(0x20, 0x7f)])) for _ in range(rng.randrange(0, 30))
                        ).encode("utf-8", "surrogatepass")
        kind = rng.choice([0, 1, 2, 2])
        pair = t[::-1] if kind == 2 else b""
        ml = rng.choice([2, 3, 4, 8, 64, 512, 2**31 - 1])
        cap = rng.choice([0, 1, 2, 5, 64, 2048])
        out.append((kind, t, pair, ml, cap))
    for _ in range(200):                                      # random vocabularies
        v = b"\n".join(rng.choice([b"[PAD]", b"[UNK]", b"[CLS]", b"[SEP]", b"a", b"##a", b"\xff",
                                   bytes(rng.randrange(256) for _ in range(3))]) for _ in range(rng.randrange(8)))
        out.append((3, v, b"", rng.randrange(12), 0))
    return out


def test_sanitizers(tmp_path, real_vocab, minilm_dir):
    """ASan + UBSan build of a driver program over a few thousand random and adversarial inputs:
    no sanitizer report, and the outputs still equal the oracle's."""
    cc = os.environ.get("CC") or (compilers() or ["cc"])[0]
    flags = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=undefined")
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, *flags, str(probe), "-o", str(tmp_path / "probe")], capture_output=True, text=True)
    if r.returncode != 0 or subprocess.run([str(tmp_path / "probe")], capture_output=True).returncode != 0:
        pytest.skip(f"{cc} cannot build/run with -fsanitize=address,undefined: {r.stderr.strip()[:300]}")
    exe = te.build_driver(tmp_path, PREFIX, cc=cc, flags=flags)
    rng = random.Random(1234)
    inputs = sanitizer_inputs(rng)
    (tmp_path / "inputs.bin").write_bytes(b"".join(te.driver_record(k, t, p, ml, cap) for k, t, p, ml, cap in inputs))
    (tmp_path / "vocab.txt").write_bytes(real_vocab)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run([str(exe), str(tmp_path / "vocab.txt"), str(tmp_path / "inputs.bin"), "1", "-1", "1"],
                       capture_output=True, text=True, env=env, timeout=600)
    report = r.stderr
    assert r.returncode == 0 and "Sanitizer" not in report and "runtime error" not in report, report[-4000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(inputs)
    py = Tokenizer.from_dir(minilm_dir)
    bad = []
    for (kind, t, p, ml, cap), line in zip(inputs, lines):
        want = te.oracle_driver_line(py, kind, t, p, ml, cap)
        if want is not None and line != want:
            bad.append((t[:200], line[:300], want[:300]))
    assert not bad, f"{len(bad)} mismatches:\n{first_mismatches(bad)}"


def test_tables_come_from_the_pinned_file():
    """The C tables name their source, and nothing of the running Python: the generated C is the
    same whichever Python generates it."""
    import sys
    header, source = te.emit_tokenizer("m")
    assert "tokenizer_unicode.txt" in source and "tokenizer_unicode.txt" in header
    assert sys.version.split()[0] not in source and "unicodedata" not in source


# ---------------------------------------------------------------- every code point vs the Rust dump

def check_codepoints_c(lib, step: int):
    """Each code point alone and as "a" c "b", under a character vocabulary of everything the Rust
    tokenizer made of them: the ids spell out the pieces, compared with the dump."""
    from test_tokenizer import codepoint_golden, expand
    header, rows = codepoint_golden()
    bad, n = [], 0
    for name, lower, strip in header["settings"]:
        cases = list(expand(rows, name, step))
        chars = sorted({ch for _, alone, between in cases for p in alone + between for ch in p})
        vocab = list(SPECIAL_TOKENS) + chars + ["##" + ch for ch in chars]
        assert not {"\n", "\r"} & set(chars)
        c = te.CTokenizer(lib, "\n".join(vocab).encode("utf-8"), lower, strip, True, prefix=PREFIX)

        def pieces(text):
            out = []
            for tok in (vocab[i] for i in c.wordpieces(text)):
                if tok.startswith("##") and len(tok) > 2:
                    out[-1] += tok[2:]
                else:
                    out.append(tok)
            return out
        try:
            for cp, alone, between in cases:
                n += 1
                ch = chr(cp)
                got = (pieces(ch), pieces("a" + ch + "b"))
                if got != (alone, between):
                    bad.append((name, hex(cp), (alone, between), got))
        finally:
            c.close()
    assert n >= 3 * 1112064 // step
    assert not bad, f"{len(bad)} code points differ from the Rust tokenizer, first: {bad[:5]}"


def test_codepoints_sample(any_build):
    check_codepoints_c(any_build, 61)


@pytest.mark.slow
def test_codepoints_exhaustive(c_build):
    """All 1,112,064 non-surrogate code points, alone and between two letters, three settings."""
    check_codepoints_c(c_build, 1)
