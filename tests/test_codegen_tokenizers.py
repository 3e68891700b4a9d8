"""A byte-level BPE (RoBERTa tokenizer.json) or Unigram (ALBERT tokenizer.json) model compiled to C
tokenizes text in C exactly like refexit.tokenizers.TokenizerJson (and so AutoTokenizer):
`<prefix>_tokenize`, the binding's encode_text / classify_text, `<prefix>_classify_text(_pair)`,
the standalone programs and `refexit score`.

Each model is a golden tiny random model of tools/make_golden.py (tests/golden/roberta,
tests/golden/albert: 120 ids) with its word embeddings grown to the golden tokenizer's 1,000 ids
(tests/golden/tokenizers/roberta, .../albert, from tools/make_tokenizer_golden.py; RoBERTa's <mask>
with lstrip as in roberta-base) and a random exit head after layer 1: an HF folder with
config.json, model.safetensors, tokenizer.json and tokenizer_config.json, as the hub ships them.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from conftest import GOLDEN, assert_close
from refexit import safetensors_io
from refexit.checkpoint import save_exits
from refexit.heads import ExitParams, Head, param_shapes
from refexit.tokenizers import TokenizerJson
from test_ctokenizer import corpus
from test_tokenizer import mixed_texts
from test_tokenizer_json import JSON_TRICKY

import codegen
from codegen import lower
from codegen import tokenizer_emit as te

pytest.importorskip("cffi", reason="the compiled model is driven through cffi")
FAMILIES = {"roberta": dict(kind="bpe", infix="bpe", specials=(2, 4)),
            "albert": dict(kind="unigram", infix="ug", specials=(2, 3))}
OK, ERR_ARG, ERR_CAPACITY = 0, 1, 15
TEXTS = ["Hello world!", "  leading spaces and   runs   of them ", "I'm sure it's fine, we've said they'll go",
         "Ça va? naïve café ÉCOLE ﬁnal ½", "数字 123 ４５ x² Ⅻ", "<mask> hi<s>there</s> [CLS]x[SEP] <unk>", "",
         " ", "tabs\tand\nnewlines\r\n nbsp\u00a0em", "emoji 😀 and 🇫🇷", "word " * 40]
RAW = [b"invalid \xff\xfe bytes \xc3", b"\xed\xa0\x80 surrogate \xf4\x90\x80\x80", b"nul\x00inside"]


def family_folder(fam: str, out: Path) -> Path:
    """tests/golden/<fam> + the golden <fam> tokenizer: word embeddings grown to its ids."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = GOLDEN / "tokenizers" / fam
    spec = json.loads((tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    V = len(vocab) if isinstance(vocab, list) else max(vocab.values()) + 1
    cfg = json.loads((GOLDEN / fam / "config.json").read_text(encoding="utf-8"))
    tensors, meta = safetensors_io.read(GOLDEN / fam / "model.safetensors")
    name = f"{fam}.embeddings.word_embeddings.weight"
    w = tensors[name]
    grown = np.random.default_rng(19).normal(0, w.std(), (V - w.shape[0], w.shape[1])).astype(np.float32)
    tensors[name] = np.concatenate([w, grown])
    (out / "config.json").write_text(json.dumps(dict(cfg, vocab_size=V), indent=1), encoding="utf-8")
    safetensors_io.write(out / "model.safetensors", tensors, meta)
    shutil.copy(tokenizer / "tokenizer_config.json", out / "tokenizer_config.json")
    if fam == "roberta":                       # as roberta-base
        spec["added_tokens"] = [dict(t, lstrip=t["content"] == "<mask>") for t in spec["added_tokens"]]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    model = refexit.load(out)                  # + a random exit head after layer 1 (exits.safetensors)
    H, C, L = model.config.hidden_size, model.num_labels, model.num_layers
    rng = np.random.default_rng(7)
    params = {n: rng.normal(0, 4.0 / np.sqrt(s[-1]) if len(s) == 2 else 0.3, s).astype(np.float32)
              for n, s in param_shapes("mean_linear", H, C, 64).items()}
    heads = [Head("mean_linear", params, l2norm=True)] * (L - 1) + [model.exits.heads[-1]]
    save_exits(out / "exits.safetensors", ExitParams(heads, None, None, np.ones(L)), model.label_names,
               include_final=False)
    return out


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


class Fam:
    """One compiled family folder: fam, folder, model, cm (CompiledModel), big (the oracle
    tokenizer without a length limit), policy (the threshold at the median layer-1 entropy: half
    of TEXTS exit early), kind / infix / specials (FAMILIES)."""


@pytest.fixture(scope="module", params=list(FAMILIES))
def rob(request, tmp_path_factory):
    f = Fam()
    f.fam, info = request.param, FAMILIES[request.param]
    f.kind, f.infix, f.specials = info["kind"], info["infix"], info["specials"]
    root = tmp_path_factory.mktemp(f"{f.fam}_model")
    f.folder = family_folder(f.fam, root / f.fam)
    f.model = model = refexit.load(f.folder)
    assert isinstance(model.tokenizer, TokenizerJson) and model.tokenizer.max_length == 32
    z = model.classify(model.tokenizer(TEXTS), refexit.Static(1)).logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    f.policy = refexit.Entropy(float(np.median(-(p * np.log(p)).sum(axis=1))))
    f.prefix = f"t{f.infix}"
    f.cm = quiet(codegen.compile_model, model, f.policy, root / "build", prefix=f.prefix)
    assert f.cm.tokenizer_kind == f.kind
    f.big = TokenizerJson.from_file(f.folder / "tokenizer.json", max_length=1 << 20)
    return f


# ---------------------------------------------------------------- ids: C == Python

def test_golden_texts_singles_and_pairs(rob):
    model, cm, big = rob.model, rob.cm, rob.big
    tok = model.tokenizer
    for t in TEXTS:
        assert cm.encode_text(t) == tok.encode(t), t                               # the compiled maximum
        for ml in (2, 5, 17, 1000):
            assert cm.encode_text(t, max_length=ml) == big.encode(t, None, ml), (t, ml)
        for p in TEXTS[::3]:
            for ml in (4, 9, 32, 1000):
                assert cm.encode_text(t, p, ml) == big.encode(t, p, ml), (t, p, ml)
    for raw in RAW:
        assert cm.encode_text(raw) == tok.encode(raw.decode("utf-8", "replace"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mixed_texts(JSON_TRICKY) | st.text(max_size=80), pair=st.none() | mixed_texts(JSON_TRICKY),
       ml=st.sampled_from([0, 4, 9, 32, 600]))
def test_hypothesis_unicode(rob, text, pair, ml):
    model, cm, big = rob.model, rob.cm, rob.big
    assert cm.encode_text(text, pair, ml) == big.encode(text, pair, ml or 32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=60))
def test_invalid_utf8_reads_as_python_replace(rob, raw):
    cm, big = rob.cm, rob.big
    assert cm.encode_text(raw, max_length=200) == big.encode(raw.decode("utf-8", "replace"), None, 200)


@pytest.mark.parametrize("name", ["rotten_tomatoes", "sms_spam", "bbc_news", "tweets"])
def test_real_corpus(rob, name):
    """Every train+dev+test text of the data set (refexit.data; skipped when it is not available),
    truncated at 512 and at the model's 32, plus 500 random pairs."""
    model, cm, big = rob.model, rob.cm, rob.big
    texts = corpus((name,))[name]
    bad = [t for t in texts if cm.encode_text(t, max_length=512) != big.encode(t, None, 512)
           or cm.encode_text(t) != model.tokenizer.encode(t)]
    rng = random.Random(len(texts))
    for _ in range(500):
        a, b, ml = rng.choice(texts), rng.choice(texts), rng.choice([8, 32, 128, 512])
        if cm.encode_text(a, b, ml) != big.encode(a, b, ml):
            bad.append((a, b, ml))
    assert not bad, f"{len(bad)} mismatches, the first: {bad[:3]}"


def test_long_text_and_errors(rob):
    model, cm, big = rob.model, rob.cm, rob.big
    long = "word " * 3000
    ids, types = cm.encode_text(long, max_length=2**31 - 1)                   # no truncation
    assert ids == big.encode(long, None, 1 << 20)[0] and types == [0] * len(ids)
    with pytest.raises(refexit.InputError, match="longer than the compiled maximum"):
        cm.classify_raw(np.array(ids, np.int32), np.array(types, np.int32), np.array([len(ids)], np.int32))
    with pytest.raises(refexit.InputError, match="bad argument"):
        cm.encode_text("a", "b", max_length=rob.specials[1] - 1)               # no room for the specials
    with pytest.raises(refexit.InputError, match="bad argument"):
        cm.encode_text("a", max_length=1)
    with pytest.raises(refexit.InputError, match="max_length"):
        cm.encode_text("a", max_length=-1)
    with pytest.raises(refexit.InputError, match="str or bytes"):
        cm.encode_text(None)
    assert (cm.special_tokens(), cm.special_tokens(True)) == rob.specials
    assert (model.tokenizer.num_special_tokens(), model.tokenizer.num_special_tokens(True)) == rob.specials
    with pytest.raises(refexit.CheckpointError, match="tokenized in C"):
        cm.tokenizer
    with pytest.raises(refexit.CheckpointError, match="packed .* tables, not a vocab.txt"):
        codegen.pack.read_vocab(cm.weights_path)


# ---------------------------------------------------------------- classify text: C == oracle

def check_against_oracle(got, want, what):
    ok = want.margins >= 1e-4                      # a score within 1e-4 of the threshold may go either way
    assert ok.mean() > 0.5, what
    assert np.array_equal(got.exit_layers[ok], want.exit_layers[ok]), what
    assert np.array_equal(got.labels[ok], want.labels[ok]), what
    same = got.exit_layers == want.exit_layers
    assert_close(got.logits[same], want.logits[same], atol=1e-5, rtol=1e-4, what=what)


def test_classify_text_matches_oracle(rob):
    model, cm = rob.model, rob.cm
    tok, ref = model.tokenizer, model.astype(np.float64)
    texts = [t for t in TEXTS if t] + [r.decode("utf-8", "replace") for r in RAW]
    got = cm.classify_text(texts)
    check_against_oracle(got, quiet(ref.classify, tok(texts), rob.policy), "singles")
    pairs = texts[::-1]
    gotp = cm.classify_text(texts, pairs)
    check_against_oracle(gotp, quiet(ref.classify, tok(texts, pairs), rob.policy), "pairs")
    # the same bits as classifying the Python tokenizer's ids
    np.testing.assert_array_equal(got.logits, cm.classify(tok(texts)).logits)
    np.testing.assert_array_equal(gotp.logits, cm.classify(tok(texts, pairs)).logits)


def test_c_classify_text_entry_points(rob):
    """<prefix>_classify_text(_pair) through cffi: the same bits as encode_text + classify."""
    cm = rob.cm
    ffi, lib, p = cm.ffi, cm.lib, cm.prefix
    h = ffi.new(f"{p}_model **")
    assert getattr(lib, f"{p}_open")(str(cm.weights_path).encode(), h) == OK
    m = ffi.gc(h[0], getattr(lib, f"{p}_close"))
    res = ffi.new(f"{p}_result *")
    for t, pair in [(b"Hello world!", None), ("naïve café".encode(), b"a pair"), (b"", None), (RAW[0], RAW[1])]:
        if pair is None:
            rc = getattr(lib, f"{p}_classify_text")(m, t, len(t), res)
        else:
            rc = getattr(lib, f"{p}_classify_text_pair")(m, t, len(t), pair, len(pair), res)
        assert rc == OK
        want = cm.classify_text([t], None if pair is None else [pair])
        assert list(res.logits) == want.logits[0].tolist() and res.exit_layer == want.exit_layers[0]
    assert getattr(lib, f"{p}_classify_text")(m, ffi.NULL, 0, res) == ERR_ARG
    n = ffi.new("int *")
    tokenize = getattr(lib, f"{p}_tokenize")
    assert tokenize(m, b"Hello world!", 12, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, 0, n) == ERR_CAPACITY
    assert n[0] == len(cm.encode_text("Hello world!")[0])
    assert tokenize(m, b"x", 1, ffi.NULL, 5, 0, ffi.NULL, ffi.NULL, 0, n) == ERR_CAPACITY        # NULL pair: none
    assert n[0] == len(cm.encode_text("x")[0])
    assert tokenize(m, b"x", 1, b"y", 1, rob.specials[1] - 1, ffi.NULL, ffi.NULL, 0, n) == ERR_ARG   # no room
    assert tokenize(m, ffi.NULL, 0, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, 0, n) == ERR_ARG
    P = p.upper()
    assert (getattr(lib, f"{P}_SPECIAL_TOKENS"), getattr(lib, f"{P}_SPECIAL_TOKENS_PAIR")) == rob.specials


def test_threads_share_the_tokenizer(rob):
    cm = rob.cm
    rng = random.Random(4)
    texts = [" ".join(rng.choice(TEXTS) for _ in range(rng.randrange(1, 4))) for _ in range(40)]
    want = [cm.encode_text(t, max_length=300) for t in texts]
    errors = []

    def run(k):
        for i in range(k, len(texts), 3):
            if cm.encode_text(texts[i], max_length=300) != want[i]:
                errors.append(i)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_tokenizer_section():
    """Which C tokenizer a model gets; a pipeline none implements compiles without one (token ids
    only in C), saying why; a tokenizer larger than the model's vocabulary is an error."""
    for fam, (kind, pack) in {"roberta": ("bpe", te.pack_bpe), "albert": ("unigram", te.pack_unigram)}.items():
        tok = TokenizerJson.from_file(GOLDEN / "tokenizers" / fam / "tokenizer.json")
        assert lower.tokenizer_section(tok, tok.vocab_size)[:2] == (kind, pack(tok))
        with pytest.raises(refexit.InputError, match="embedding table"):
            lower.tokenizer_section(tok, tok.vocab_size - 1)
    spec = json.loads((GOLDEN / "tokenizers" / "albert" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["normalizers"].append({"type": "NFC"})
    tok = TokenizerJson(spec)
    kind, data, why = lower.tokenizer_section(tok, tok.vocab_size)
    assert (kind, data) == ("none", b"") and "does not implement" in why and "'NFC'" in why
    spec["normalizer"]["normalizers"][-1] = {"type": "Precompiled", "precompiled_charsmap": "AAAA"}
    with pytest.raises(refexit.ConfigError, match="precompiled_charsmap: 3 bytes, too short"):
        TokenizerJson(spec)                # a SentencePiece charsmap that is not one
    sp = json.loads((GOLDEN / "tokenizers" / "albert_spm" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["normalizers"][-1] = next(n for n in sp["normalizer"]["normalizers"] if n["type"] == "Precompiled")
    tok = TokenizerJson(spec)              # a real one: packed into the Unigram section
    assert lower.tokenizer_section(tok, tok.vocab_size)[:2] == ("unigram", te.pack_unigram(tok))


# ---------------------------------------------------------------- C: warnings, prefixes, programs

CCS = [cc for cc in ("gcc", "clang") if shutil.which(cc)]
WARN = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fPIC"]


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_two_models_link_into_one_library_warning_free(rob, tmp_path, cc):
    """Two compiled models of the family (two prefixes) in one shared library, -Werror -pedantic with gcc
    and clang: every exported symbol carries its model's prefix."""
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    model = rob.model
    objs = []
    for prefix in (f"{rob.infix}_a", f"{rob.infix}_b"):
        plan = lower.lower(model, rob.policy, prefix, max_length=32)
        _, c = codegen.emit.write_sources(plan, tmp_path)
        obj = tmp_path / f"{prefix}.o"
        subprocess.run([cc, *WARN, "-c", str(c), "-o", str(obj)], check=True, capture_output=True, text=True)
        syms = subprocess.run(["nm", "-g", "--defined-only", str(obj)], capture_output=True, text=True,
                              check=True).stdout.split()[2::3]
        assert syms and all(s.startswith(prefix + "_") for s in syms), [s for s in syms if not s.startswith(prefix)]
        assert f"{prefix}_{rob.infix}_open" in syms and f"{prefix}_tokenize" in syms
        objs.append(str(obj))
    r = subprocess.run([cc, "-shared", *objs, "-o", str(tmp_path / "both.so"), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def run_program(exe, *args, stdin=b""):
    r = subprocess.run([str(exe), *map(str, args)], input=stdin, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def test_standalone_classifies_text_from_stdin(rob, tmp_path):
    """`refexit compile FOLDER --standalone` on the family folder: the programs tokenize in C and
    classify text from stdin (singles, pairs, a batch) as the oracle does; empty texts say so."""
    from refexit.cli.main import main
    folder, model = rob.folder, rob.model
    out = tmp_path / "build"
    assert main(["compile", str(folder), "-o", str(out), "--prefix", "rob", "--isa", "scalar", "--openmp", "off",
                 "--standalone"]) == 0
    texts = [t for t in TEXTS if t.strip() and "\n" not in t and "\r" not in t]
    got = run_program(out / "rob", stdin=("\n".join(texts) + "\n").encode())
    want = model.classify(model.tokenizer(texts))
    assert [g["label"] for g in got] == [model.label_names[i] for i in want.labels]
    assert_close([g["logits"] for g in got], want.logits, atol=1e-5, what="standalone stdin")
    long = [i for i, t in enumerate(texts) if len(model.tokenizer.tokenize(t)) + 2 > 32]
    assert long and all(got[i]["truncated"] and got[i]["n_tokens"] == len(model.tokenizer.tokenize(texts[i])) + 2
                        for i in long)
    pairs = [f"{a}\t{b}" for a, b in zip(texts, texts[::-1])]
    got = run_program(out / "rob-sidecar", "--pairs", "--batch", "4", stdin=("\n".join(pairs) + "\n").encode())
    want = model.classify(model.tokenizer(texts, texts[::-1]))
    assert_close([g["logits"] for g in got], want.logits, atol=1e-5, what="standalone pairs")
    assert run_program(out / "rob", "--pairs", "", "\t") == [{"error": "empty text"}] * 2
    r = subprocess.run([str(out / "rob"), "--pairs", "--max-length", str(rob.specials[1] - 1), "a\tb"],
                       capture_output=True)
    assert r.returncode == 2 and f"at least {rob.specials[1]}".encode() in r.stderr
    # the Python CLI gives the same records
    from refexit.cli.classify import records
    recs = records(model, None, texts, None, None, False)
    assert [r["label"] for r in recs] == [g["label"] for g in run_program(out / "rob", *texts)]


def test_refexit_score_on_the_family_folder(rob, tmp_path, monkeypatch):
    """`refexit score FOLDER texts.jsonl` (compiled on the fly, tokenized in C by the workers): the
    compiled model's own answers, pairs included; a text with no tokens is an error row."""
    from refexit import tables
    from refexit.cli.main import main
    folder, cm = rob.folder, rob.cm
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))     # the on-the-fly build goes there
    texts = TEXTS
    src = tables.write_rows(tmp_path / "in.jsonl", [{"a": t, "b": t[::-1]} for t in texts])
    for pairs in (None, [t[::-1] for t in texts]):
        empty = [len(cm.encode_text(t, None if pairs is None else pairs[i])[0]) <= cm.special_tokens(pairs is not None)
                 for i, t in enumerate(texts)]
        assert any(empty) and not all(empty)
        want = cm.classify_text(texts, pairs)
        out = tmp_path / f"out{pairs is None}.jsonl"
        assert main(["score", str(folder), str(src), "-o", str(out), "--text-column", "a",
                     *([] if pairs is None else ["--pair-column", "b"]), "--policy", "entropy", "--threshold",
                     str(rob.policy._thr[0]), "--workers", "2", "--batch", "3", "--quiet"]) == 0
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [r["label"] for r in rows] == [None if e else want.label_names[i]
                                              for e, i in zip(empty, want.labels)]
        assert [r["exit_layer"] for r in rows] == [None if e else int(x) for e, x in zip(empty, want.exit_layers)]
        assert all(bool(r.get("error")) == e for r, e in zip(rows, empty))
