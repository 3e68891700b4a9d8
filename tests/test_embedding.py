"""Embedding a compiled model in C: the text API of the generated header (<prefix>_tokenize,
<prefix>_classify_text(_pair), <prefix>_open_memory, the vocabulary opened at <prefix>_open), the
example program in examples/ built with gcc and clang through its Makefile, and the text entry
points under AddressSanitizer + UBSan on a few thousand random and adversarial inputs.

The text API is driven through cffi on the compiled library (ABI mode, like codegen.binding) and
compared with the oracle's tokenizer and model, in several tokenizer settings.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import refexit
from refexit.synthetic import random_model
from refexit.tokenizers.wordpiece import Tokenizer

import codegen
from codegen import tokenizer_emit as te

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC") or "cc"
OK, ERR_ARG, ERR_TRUNCATED, ERR_CHECKSUM, ERR_CAPACITY, ERR_VOCAB = 0, 1, 3, 7, 15, 16

SAMPLES = [
    "Hello, World! Ünïcödé Café naïve résumé",
    "ÀÉÎÕÜ àéîõü ÇçÑñ ẞß Σίσυφος ΟΔΥΣΣΕΥΣ",
    "\u4e2d\u6587\u6587\u672c and \u65e5\u672c\u8a9e; 한국어 텍스트",
    "tabs\tand\nnew lines\r\nand\u00a0spaces\u3000here",
    "[CLS] special [SEP] tokens [MASK] inside [UNK]",
    "a\u0301e\u0300o\u0302 combining marks \u0041\u030a",
    "punctuation... !!! ??? (brackets) {braces} <angles> \"quotes\" 'single' — dash – en",
    "x" * 150 + " " + "word " * 40,
    "",
    "emoji \U0001f600\U0001f44d\u2764\ufe0f",
]
RAW_SAMPLES = [b"invalid \xff\xfe bytes \xc3", b"\xed\xa0\x80 surrogate \xf4\x90\x80\x80", b"nul\x00inside",
               b"\xe2\x80\xa8line sep\xc2\x85nel"]


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


def have(cc: str) -> bool:
    return shutil.which(cc) is not None


class TextAPI:
    """One C handle of a compiled model, for the text functions (cffi on the built library)."""

    def __init__(self, cm):
        self.ffi, self.lib, self.p = cm.ffi, cm.lib, cm.prefix
        h = self.ffi.new(f"{self.p}_model **")
        assert self.f("open")(str(cm.weights_path).encode(), h) == OK
        self.m = self.ffi.gc(h[0], self.f("close"))

    def f(self, name):
        return getattr(self.lib, f"{self.p}_{name}")

    def tokenize(self, text: bytes, pair: bytes | None = None, max_length: int = 0, capacity: int = 4096):
        ids, types = self.ffi.new("int32_t[]", max(capacity, 1)), self.ffi.new("int32_t[]", max(capacity, 1))
        n = self.ffi.new("int *")
        rc = self.f("tokenize")(self.m, text, len(text), self.ffi.NULL if pair is None else pair,
                                0 if pair is None else len(pair), max_length, ids, types, capacity, n)
        return rc, list(ids[0:n[0]]) if rc == OK else n[0], list(types[0:n[0]]) if rc == OK else None

    def classify_text(self, text: bytes, pair: bytes | None = None):
        res = self.ffi.new(f"{self.p}_result *")
        if pair is None:
            rc = self.f("classify_text")(self.m, text, len(text), res)
        else:
            rc = self.f("classify_text_pair")(self.m, text, len(text), pair, len(pair), res)
        return rc, res

    def classify_ids(self, ids, types):
        res = self.ffi.new(f"{self.p}_result *")
        rc = self.f("classify")(self.m, self.ffi.new("int32_t[]", ids), self.ffi.new("int32_t[]", types),
                                len(ids), res)
        return rc, res


def char_model(lower: bool, strip, cjk: bool, seed: int = 0, max_length: int = 40):
    """A random model whose vocabulary spells out every character of SAMPLES (so that each
    tokenizer setting shows in the ids), with the given tokenizer settings."""
    text = " ".join(SAMPLES) + "".join(b.decode("utf-8", "replace") for b in RAW_SAMPLES)
    vocab = te.char_vocabulary(text)
    base = random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=3, vocab_size=len(vocab),
                        max_position=64, head_kind="pooler_linear", seed=seed)
    tok = Tokenizer(vocab, do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk, max_length=64)
    return refexit.Model(base.config, base.weights, base.exits, base.label_names, tok, source=None)


SETTINGS = [(True, None, True), (False, True, False), (False, None, True), (True, False, True)]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{setting: (model, CompiledModel)} for the tokenizer settings of SETTINGS."""
    if not have(CC):
        pytest.skip(f"no C compiler ({CC})")
    root = tmp_path_factory.mktemp("textapi")
    out = {}
    for i, s in enumerate(SETTINGS):
        model = char_model(*s, seed=i)
        cm = quiet(codegen.compile_model, model, refexit.Entropy(1.05), root / f"m{i}", prefix=f"txt{i}",
                   max_length=40)
        out[s] = (model, cm)
    return out


# ---------------------------------------------------------------- the text API against the oracle

@pytest.mark.parametrize("setting", SETTINGS)
def test_tokenize_matches_oracle(compiled, setting):
    model, cm = compiled[setting]
    api, tok = TextAPI(cm), model.tokenizer
    texts = [(s, s.encode()) for s in SAMPLES] + [(b.decode("utf-8", "replace"), b) for b in RAW_SAMPLES]
    for s, b in texts:
        assert api.tokenize(b) == (OK, *tok.encode(s, max_length=40)), s                    # 0: compiled max
        for ml in (2, 5, 17, 64):
            assert api.tokenize(b, max_length=ml) == (OK, *tok.encode(s, max_length=ml)), (s, ml)
        for ps, pb in texts[::3]:
            for ml in (3, 8, 40):
                assert api.tokenize(b, pb, max_length=ml) == (OK, *tok.encode(s, ps, max_length=ml)), (s, ps, ml)
    # no truncation at all (longer than the model accepts: tokenize allows it, classify refuses it)
    long = ("word " * 200).encode()
    rc, ids, _ = api.tokenize(long, max_length=2**31 - 1)
    assert rc == OK and ids == [tok.cls_id] + tok.convert_tokens_to_ids(tok.tokenize(long.decode())) + [tok.sep_id]
    assert api.classify_ids(ids, [0] * len(ids))[0] == 9                              # ERR_TOO_LONG


def test_tokenize_errors(compiled):
    model, cm = compiled[SETTINGS[0]]
    api = TextAPI(cm)
    ffi, f, m = api.ffi, api.f("tokenize"), api.m
    ids, n = ffi.new("int32_t[]", 64), ffi.new("int *")
    text = b"Hello, World"
    want = model.tokenizer.encode("Hello, World", max_length=40)[0]
    assert api.tokenize(text, capacity=3) == (ERR_CAPACITY, len(want), None)          # the size needed
    assert f(m, text, len(text), ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, 0, n) == ERR_CAPACITY and n[0] == len(want)
    assert f(m, text, len(text), ffi.NULL, 0, 0, ids, ffi.NULL, 64, n) == OK and list(ids[0:n[0]]) == want
    assert f(m, text, len(text), ffi.NULL, 0, 0, ids, ffi.NULL, len(want), n) == OK      # exactly enough
    for args in [(ffi.NULL, 0, ffi.NULL, 0, 0, ids, ffi.NULL, 64, n),                     # NULL text
                 (text, len(text), ffi.NULL, 0, 0, ids, ffi.NULL, 64, ffi.NULL),          # NULL n_tokens
                 (text, len(text), ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, 64, n),            # NULL ids
                 (text, len(text), ffi.NULL, 0, 0, ids, ffi.NULL, -1, n),                 # capacity < 0
                 (text, len(text), ffi.NULL, 0, -5, ids, ffi.NULL, 64, n),                # max_length < 0
                 (text, len(text), ffi.NULL, 0, 1, ids, ffi.NULL, 64, n),                 # too small
                 (text, len(text), b"x", 1, 2, ids, ffi.NULL, 64, n)]:                    # pair needs 3
        assert f(m, *args) == ERR_ARG, args
    assert f(ffi.NULL, text, len(text), ffi.NULL, 0, 0, ids, ffi.NULL, 64, n) == ERR_ARG
    res = ffi.new(f"{api.p}_result *")
    assert api.f("classify_text")(m, ffi.NULL, 0, res) == ERR_ARG
    assert api.f("classify_text")(m, text, len(text), ffi.NULL) == ERR_ARG
    for code in (ERR_CAPACITY, ERR_VOCAB):
        assert ffi.string(api.f("strerror")(code)).decode() != "unknown status code"


@pytest.mark.parametrize("setting", SETTINGS[:2])
def test_classify_text_matches_oracle(compiled, setting):
    model, cm = compiled[setting]
    api, tok, ref64 = TextAPI(cm), model.tokenizer, model.astype(np.float64)
    texts = SAMPLES + [b.decode("utf-8", "replace") for b in RAW_SAMPLES]
    raws = [s.encode() for s in SAMPLES] + RAW_SAMPLES
    pairs = list(zip(texts[::2], texts[1::2]))
    ref = quiet(ref64.classify, tok(texts, max_length=40), refexit.Entropy(1.05))
    pref = quiet(ref64.classify, tok([a for a, _ in pairs], [b for _, b in pairs], max_length=40),
                 refexit.Entropy(1.05))
    got = [api.classify_text(b) for b in raws]
    gotp = [api.classify_text(raws[2 * i], raws[2 * i + 1]) for i in range(len(pairs))]
    for results, r in ((got, ref), (gotp, pref)):
        assert all(rc == OK for rc, _ in results)
        layers = np.array([res.exit_layer for _, res in results])
        logits = np.array([list(res.logits) for _, res in results])
        ok = r.margins >= 1e-4
        assert np.array_equal(layers[ok], r.exit_layers[ok])
        assert np.array_equal(np.array([res.label for _, res in results])[ok], r.labels[ok])
        same = layers == r.exit_layers
        np.testing.assert_allclose(logits[same], r.logits[same], rtol=1e-4, atol=1e-5)
    # the same as tokenize + classify, bit for bit
    for b, (_, res) in zip(raws, got):
        rc, ids, types = api.tokenize(b)
        rc2, res2 = api.classify_ids(ids, types)
        assert rc == rc2 == OK and list(res.logits) == list(res2.logits) and res.exit_layer == res2.exit_layer


def test_model_without_vocabulary(tmp_path):
    base = random_model(num_layers=2, hidden=16, heads=2, intermediate=20, vocab_size=60, seed=3)
    model = refexit.Model(base.config, base.weights, base.exits, base.label_names, None)
    cm = quiet(codegen.compile_model, model, refexit.Static(2), tmp_path, prefix="novocab", max_length=16)
    api = TextAPI(cm)                                                   # opens all the same
    assert api.tokenize(b"hello")[0] == ERR_VOCAB and api.classify_text(b"hello")[0] == ERR_VOCAB
    assert "vocabulary" in api.ffi.string(api.f("strerror")(ERR_VOCAB)).decode()
    rc, res = api.classify_ids([2, 7, 3], [0, 0, 0])
    assert rc == OK and res.exit_layer == 2
    assert cm.classify({"input_ids": np.array([[2, 7, 3]])}).exit_layers.tolist() == [2]


def test_open_memory(compiled):
    model, cm = compiled[SETTINGS[0]]
    api = TextAPI(cm)
    ffi, p = api.ffi, api.p
    data = cm.weights_path.read_bytes()
    raw = np.zeros(len(data) + 128, np.uint8)                   # a 64-byte aligned copy
    off = (-raw.ctypes.data) % 64
    buf = raw[off:off + len(data)]
    buf[:] = np.frombuffer(data, np.uint8)
    ptr = ffi.cast("void *", buf.ctypes.data)
    h = ffi.new(f"{p}_model **")
    assert api.f("open_memory")(ptr, len(data), h) == OK
    mem = ffi.gc(h[0], api.f("close"))
    res = ffi.new(f"{p}_result *")
    assert api.f("classify_text")(mem, b"Hello, World", 12, res) == OK
    rc, want = api.classify_text(b"Hello, World")
    assert list(res.logits) == list(want.logits) and res.exit_layer == want.exit_layer
    del mem
    assert api.f("open_memory")(ffi.cast("void *", buf.ctypes.data + 4), len(data) - 4, h) == ERR_ARG   # misaligned
    assert h[0] == ffi.NULL
    assert api.f("open_memory")(ffi.NULL, len(data), h) == ERR_ARG
    assert api.f("open_memory")(ptr, 100, h) == ERR_TRUNCATED
    assert api.f("open_memory")(ptr, len(data) - 64, h) == ERR_TRUNCATED
    buf[len(data) // 2] ^= 1
    assert api.f("open_memory")(ptr, len(data), h) == ERR_CHECKSUM
    # the header's vocabulary fields are not under the checksum: a wrong one is refused
    buf[len(data) // 2] ^= 1
    struct.pack_into("<Q", buf, 88, 12345)
    assert api.f("open_memory")(ptr, len(data), h) == 6                            # ERR_MODEL


def test_threads_share_the_tokenizer(compiled):
    """tokenize is read-only on the handle: many threads at once, while another classifies on it."""
    model, cm = compiled[SETTINGS[1]]
    api = TextAPI(cm)
    rng = random.Random(3)
    texts = [" ".join(rng.choice(SAMPLES) for _ in range(rng.randrange(1, 4))).encode() for _ in range(60)]
    want = [api.tokenize(t, max_length=64) for t in texts]
    want_cls = [tuple(api.classify_text(t)[1].logits) for t in texts]
    errors = []

    def tokenize_all(k):
        for i in range(k % 5, len(texts), 2):
            if api.tokenize(texts[i], max_length=64) != want[i]:
                errors.append(("tokenize", i))

    def classify_all():
        for i, t in enumerate(texts):
            if tuple(api.classify_text(t)[1].logits) != want_cls[i]:
                errors.append(("classify", i))

    threads = [threading.Thread(target=tokenize_all, args=(k,)) for k in range(6)] + \
              [threading.Thread(target=classify_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_header_documents_the_text_api_and_threads(compiled):
    _, cm = compiled[SETTINGS[1]]
    header = (cm.out_dir / f"{cm.prefix}.h").read_text()
    p = cm.prefix
    for decl in (f"int {p}_tokenize(const {p}_model *m, const char *text, size_t len",
                 f"int {p}_classify_text({p}_model *m, const char *text, size_t len, {p}_result *res);",
                 f"int {p}_classify_text_pair(", f"int {p}_open_memory(const void *blob, size_t size",
                 f"int {p}_open_embedded({p}_model **out);", f"const char *{p}_label_name("):
        assert decl in header, decl
    flat = " ".join(header.split())
    assert "one thread at a time per handle" in flat and "one handle per thread" in flat
    assert "never written after" in flat and "do_lower_case=0, strip_accents=1, tokenize_chinese_chars=0" in flat
    assert f"{p.upper()}_ERR_VOCAB = 16" in header and f"{p.upper()}_ERR_CAPACITY = 15" in header


# ---------------------------------------------------------------- examples/: make with gcc and clang

def example_oracle(model, policy, texts, max_length):
    enc = model.tokenizer(texts, max_length=max_length)
    return quiet(model.astype(np.float64).classify, enc, policy)


@pytest.fixture(scope="module")
def example_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    model = random_model(num_layers=3, hidden=20, heads=2, intermediate=30, num_labels=2, vocab_size=200,
                         max_position=32, head_kind="mean_linear", seed=8)
    cm = quiet(codegen.compile_model, model, refexit.MaxProb(0.52), root / "model-dir", prefix="sst2",
               max_length=32)
    return model, cm


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_example_builds_and_runs(example_model, cc, tmp_path):
    if not have(cc):
        pytest.skip(f"{cc} is not installed (.ci/run installs clang; apt-get install -y clang)")
    if not have("make"):
        pytest.skip("make is not installed")
    model, cm = example_model
    out = tmp_path / "bin"
    out.mkdir()
    r = subprocess.run(["make", "-C", str(ROOT / "examples"), f"MODEL_DIR={cm.out_dir}", "PREFIX=sst2",
                        f"OUT={out}", f"CC={cc}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{cc} " in r.stdout and "-Werror" in r.stdout
    assert not (ROOT / "examples" / "classify").exists()                  # built into OUT only
    texts = ["a great movie", "dull and far too long, with a weak ending", "Ünïcödé ✓", "x " * 100]
    r = subprocess.run([str(out / "classify"), str(cm.weights_path), *texts], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    ref = example_oracle(model, refexit.MaxProb(0.52), texts, 32)
    probs = ref.probs
    lines = r.stdout.splitlines()
    assert len(lines) == len(texts)
    ok = ref.margins >= 1e-4
    for i, (line, text) in enumerate(zip(lines, texts)):
        label, prob, layers, n_tokens, shown = line.split(" ", 4)
        assert shown == text and layers.endswith("/3")
        assert int(n_tokens) == len(model.tokenizer.encode(text, max_length=32)[0])
        if ok[i]:
            assert label == ref.label_names[ref.labels[i]] and int(layers.split("/")[0]) == ref.exit_layers[i]
            assert abs(float(prob) - probs[i, ref.labels[i]]) < 1e-4
    bad = subprocess.run([str(out / "classify"), str(tmp_path / "nope.weights"), "x"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "cannot open or read the weights file" in bad.stderr
    usage = subprocess.run([str(out / "classify")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_example_comment_has_the_plain_cc_line():
    src = (ROOT / "examples" / "classify.c").read_text()
    mk = (ROOT / "examples" / "Makefile").read_text()
    line = "cc -O2 -std=c99 -Wall -Wextra -iquote build/m -DPREFIX=sst2 examples/classify.c build/m/sst2.c -o classify -lm"
    assert line in src and line in mk
    assert "## The C API" in (ROOT / "README.md").read_text()


def test_plain_cc_line_works(example_model, tmp_path):
    """The documented one-line build (copied to a build/m layout) compiles with -pedantic -Werror."""
    _, cm = example_model
    (tmp_path / "build").mkdir()
    shutil.copytree(cm.out_dir, tmp_path / "build" / "m")
    (tmp_path / "examples").mkdir()
    shutil.copy2(ROOT / "examples" / "classify.c", tmp_path / "examples" / "classify.c")
    cmd = [CC, "-O2", "-std=c99", "-pedantic", "-Werror", "-Wall", "-Wextra", "-iquote", "build/m", "-DPREFIX=sst2",
           "examples/classify.c", "build/m/sst2.c", "-o", "classify", "-lm"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["./classify", "build/m/sst2.weights", "hello"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.endswith(" hello\n"), r.stderr


# ---------------------------------------------------------------- sanitizers

DRIVER_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "PREFIX.h"

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long size;
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc(size > 0 ? (size_t)size : 1u);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) { fprintf(stderr, "read %s\n", path); exit(2); }
    fclose(f);
    *n = (size_t)size;
    return buf;
}

static uint32_t rd32(const unsigned char *in, size_t n, size_t *pos) {
    uint32_t v;
    if (*pos + 4 > n) { fprintf(stderr, "truncated input file\n"); exit(2); }
    v = (uint32_t)in[*pos] | (uint32_t)in[*pos + 1] << 8 | (uint32_t)in[*pos + 2] << 16 | (uint32_t)in[*pos + 3] << 24;
    *pos += 4;
    return v;
}

static char *take(const unsigned char *in, size_t n, size_t *pos, size_t *len) {
    char *p;
    *len = rd32(in, n, pos);
    if (*pos + *len > n) { fprintf(stderr, "truncated input file\n"); exit(2); }
    p = (char *)malloc(*len ? *len : 1u);     /* exactly the bytes: ASan sees any over-read */
    if (!p) exit(3);
    if (*len) memcpy(p, in + *pos, *len);
    *pos += *len;
    return p;
}

/* records as codegen.tokenizer_emit.driver_record: kind 0 classify_text, 1 tokenize, 2 tokenize
   with pair, 3 classify_text_pair */
int main(int argc, char **argv) {
    size_t n, pos = 0;
    unsigned char *in;
    PREFIX_model *m = NULL;
    int rc;
    if (argc != 3) { fprintf(stderr, "usage: %s WEIGHTS INPUTS\n", argv[0]); return 2; }
    rc = PREFIX_open(argv[1], &m);
    if (rc) { fprintf(stderr, "open: %s\n", PREFIX_strerror(rc)); return 1; }
    in = read_file(argv[2], &n);
    while (pos < n) {
        int kind = in[pos++], max_length, capacity, nt = -1, i;
        size_t la, lb;
        char *a, *b;
        int32_t *ids, *types;
        max_length = (int)rd32(in, n, &pos);
        capacity = (int)rd32(in, n, &pos);
        a = take(in, n, &pos, &la);
        b = take(in, n, &pos, &lb);
        ids = capacity > 0 ? (int32_t *)malloc((size_t)capacity * sizeof *ids) : NULL;
        types = capacity > 0 ? (int32_t *)malloc((size_t)capacity * sizeof *types) : NULL;
        if (kind == 0 || kind == 3) {
            PREFIX_result res;
            rc = kind == 0 ? PREFIX_classify_text(m, a, la, &res) : PREFIX_classify_text_pair(m, a, la, b, lb, &res);
            if (rc == 0)
                printf("%d %d %d %.9g %.9g\n", rc, (int)res.label, (int)res.exit_layer, res.logits[0], res.margin);
            else
                printf("%d\n", rc);
        } else {
            rc = PREFIX_tokenize(m, a, la, kind == 2 ? b : NULL, lb, max_length, ids, types, capacity, &nt);
            printf("%d %d", rc, nt);
            if (rc == 0) {
                for (i = 0; i < nt; i++) printf(" %d", (int)ids[i]);
                printf(" |");
                for (i = 0; i < nt; i++) printf(" %d", (int)types[i]);
            }
            printf("\n");
        }
        free(a); free(b); free(ids); free(types);
    }
    free(in);
    PREFIX_close(m);
    return 0;
}
"""

SAN_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]


def sanitizer_cc(tmp_path) -> str:
    cc = CC
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, *SAN_FLAGS, str(probe), "-o", str(tmp_path / "probe")], capture_output=True, text=True)
    if r.returncode != 0 or subprocess.run([str(tmp_path / "probe")], capture_output=True).returncode != 0:
        pytest.skip(f"{cc} cannot build/run with -fsanitize=address,undefined: {r.stderr.strip()[:300]}")
    return cc


def adversarial_texts(rng: random.Random, count: int) -> list[bytes]:
    pieces = [b"a", b"A", b" ", b".", b"'", b"\xce\xa3", b"\xcc\x81", b"\xcc\x96", b"\xe1\x84\x80", b"\xe4\xb8\xad",
              b"[CLS]", b"[SEP]", b"[", b"]", b"\x00", b"\xff", b"\xe0", b"\xf0\x90", b"\xed\xa0\x80", b"\xc4\xb0",
              b"\xf0\x9d\x85\xad", b"\xef\xbf\xbd", b"hello", b"##", b"\t", b"\r", b"\xe2\x80\xa8", b"\xc3\xa9",
              b'"', b"\\", b"\x1b[31m", b"\xf0\x9f\x98\x80"]
    out = [b"", b"a" + b"\xcc\x81" * 5000, b"x" * 20000, b"a," * 3000, b"[CLS]" * 800, b"\xff" * 3000,
           b"word " * 2000, bytes(range(256)) * 8, b"\xf0\x90\x80" * 1000, b"\xce\x91\xce\xa3" + b"'" * 3000]
    while len(out) < count:
        k = rng.random()
        if k < 0.4:
            t = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        elif k < 0.85:
            t = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 50)))
        else:
            t = "".join(chr(rng.choice([rng.randrange(0x110000), rng.randrange(0x300, 0x370),
                                        rng.randrange(0x20, 0x7f)])) for _ in range(rng.randrange(0, 40))
                        ).encode("utf-8", "surrogatepass")
        out.append(t)
    return out


def test_sanitizers_text_entry_points(compiled, tmp_path):
    """ASan + UBSan builds of (1) a driver of tokenize / classify_text / classify_text_pair with
    random capacities and lengths and (2) the standalone program over stdin: no sanitizer report
    on ~4,000 random and adversarial inputs, and the same answers as the unsanitized library."""
    cc = sanitizer_cc(tmp_path)
    model, cm = compiled[SETTINGS[0]]
    p = cm.prefix
    (tmp_path / "driver.c").write_text(DRIVER_C.replace("PREFIX", p))
    exe = tmp_path / "driver"
    r = subprocess.run([cc, "-std=c99", *SAN_FLAGS, "-I", str(cm.out_dir), str(tmp_path / "driver.c"),
                        str(cm.out_dir / f"{p}.c"), "-o", str(exe), "-lm"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rng = random.Random(2024)
    texts = adversarial_texts(rng, 3000)
    records = []
    for t in texts:
        kind = rng.choice([0, 1, 1, 2, 3])
        pair = rng.choice(texts)[:200] if kind in (2, 3) else b""
        ml = rng.choice([0, 0, 2, 3, 5, 40, 64, 2**31 - 1, -1])
        cap = rng.choice([0, 1, 4, 40, 100000])
        records.append((kind, t, pair, ml, cap))
    (tmp_path / "inputs.bin").write_bytes(b"".join(te.driver_record(*rec) for rec in records))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run([str(exe), str(cm.weights_path), str(tmp_path / "inputs.bin")], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-4000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(records)
    api = TextAPI(cm)
    bad = []
    for (kind, t, pair, ml, cap), line in zip(records, lines):
        f = line.split()
        if kind in (0, 3):                      # "rc label exit_layer logit0 margin" (rc only on error)
            rc, res = api.classify_text(t, pair if kind == 3 else None)
            if int(f[0]) != rc:
                bad.append((t[:80], line, rc))
            elif rc == OK and res.margin >= 1e-3 and (
                    (int(f[1]), int(f[2])) != (res.label, res.exit_layer)
                    or abs(float(f[3]) - res.logits[0]) > 1e-4 + 1e-4 * abs(res.logits[0])):
                bad.append((t[:80], line, (res.label, res.exit_layer, res.logits[0])))
        else:                                   # "rc n_tokens ids... | types..." (ids only when rc is 0)
            rc, ids, types = api.tokenize(t, pair if kind == 2 else None, ml, cap)
            if rc == OK:
                want = f"0 {len(ids)}" + "".join(f" {i}" for i in ids) + " |" + "".join(f" {i}" for i in types)
            else:
                want = f"{rc} {ids}"            # ids: the size needed (ERR_CAPACITY), else 0
            if line != want:
                bad.append((t[:80], line[:200], want[:200]))
    assert not bad, bad[:5]
    # the cffi results themselves against the oracle, for the tokenize records it can check
    tok = model.tokenizer
    for kind, t, pair, ml, cap in records[:600]:
        if kind != 1 or ml < 0 or ml == 1 or ml > tok.max_length:
            continue
        rc, ids, types = api.tokenize(t, None, ml, cap)
        want_ids, want_types = tok.encode(t.decode("utf-8", "replace"), max_length=ml or 40)
        assert (rc == OK and (ids, types) == (want_ids, want_types)) or (rc == ERR_CAPACITY and ids == len(want_ids))

    # the standalone program, sanitized, over the same texts as stdin lines
    from codegen.standalone import program_sources
    manifest = json.loads((cm.out_dir / f"{p}.manifest.json").read_text())
    main_src, _ = program_sources(dict(manifest, weights_size=cm.weights_path.stat().st_size))
    (tmp_path / "main.c").write_text(main_src)
    prog = tmp_path / "prog"
    r = subprocess.run([cc, "-std=c99", *SAN_FLAGS, "-I", str(cm.out_dir), str(tmp_path / "main.c"),
                        str(cm.out_dir / f"{p}.c"), "-o", str(prog), "-lm"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines_in = [t.replace(b"\n", b" ") for t in texts[:1500]]
    stdin = b"\n".join(lines_in) + b"\n"
    for args in ([], ["--batch", "7", "--max-length", "9"], ["--batch", "64"]):
        r = subprocess.run([str(prog), "--weights", str(cm.weights_path), "--echo", *args], input=stdin, capture_output=True,
                           env=env, timeout=900)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 0 and "Sanitizer" not in err and "runtime error" not in err, err[-4000:]
        out = r.stdout.decode("utf-8").split("\n")[:-1]
        assert len(out) == len(lines_in)
        assert [json.loads(o)["text"] for o in out] == [(t[:-1] if t.endswith(b"\r") else t).decode("utf-8", "replace")
                                                       for t in lines_in]
    for args in (["--threshold", "nan"], ["--bogus"], ["--max-length", "999999999999"], ["--threshold", "1," * 50]):
        r = subprocess.run([str(prog), "--weights", str(cm.weights_path), *args, "x"], capture_output=True, env=env)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 2 and "Sanitizer" not in err and "runtime error" not in err, err[-2000:]
