"""The standalone programs of `refexit compile --standalone` (codegen/standalone.py,
templates/main.c.j2, templates/embed.c.j2) against the float64 oracle.

OUT/<prefix> embeds the weights (one file: it runs copied alone into an empty folder) and
OUT/<prefix>-sidecar maps <prefix>.weights. Both read texts from the arguments or stdin and print
JSON lines; their labels and exit layers equal the oracle's (except where the oracle's decision is
within 1e-4 of a threshold) and their logits are within rtol 1e-4 / atol 1e-5. Bad usage exits 2,
run-time failures 1, always with a message on stderr.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import refexit
from refexit.heads import ExitParams, Head, param_shapes
from refexit.synthetic import random_model, save_model

import codegen
from codegen.standalone import build_standalone

TEXTS = [
    "The movie was a delight from start to finish.",
    "I would not recommend this restaurant to anyone; the service was slow and the food was cold.",
    "Stocks fell sharply on Tuesday after the central bank raised interest rates by half a point, "
    "surprising investors who had expected a smaller move and prompting a broad sell-off in technology shares.",
    "ok",
    "",
    "Ünïcödé, punctuation!? and numbers 12345 — all at once.",
    "What time does the train to Zürich leave?",
    "FREE entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive entry",
    "Nah I don't think he goes to usf, he lives around here though",
    "\u4e2d\u6587\u6587\u672c and \u65e5\u672c\u8a9e mixed with English",
    "Ελληνικά ΚΕΙΜΕΝΑ με τόνους",
    "\"Quoted\" text with a back\\slash and a tab\there",
    "emoji \U0001f600\U0001f44d and math \u2211 \u221e",
    "a " * 300 + "very long text that must be truncated",
    "Hungry? Get 50% off your first order — use code YUMMY at checkout!!!",
    "the quick brown fox jumps over the lazy dog",
    "I've been searching for the right words to thank you for this breather.",
    "Ok lar... Joking wif u oni...",
    "Gareth Southgate has named his squad for the friendly against Brazil.",
    "@united thanks for the quick response, flight was great",
]
CC = os.environ.get("CC") or "cc"


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


def run(exe, *args, stdin: bytes | None = None, cwd=None, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(exe), *map(str, args)], input=stdin if stdin is not None else b"",
                       capture_output=True, cwd=cwd, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def records(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode("utf-8").split("\n")[:-1]]


_TOKENIZERS = []


def ref_tokens(text):
    """The oracle's ids of one text (with the tokenizer of the last model given to oracle())."""
    return _TOKENIZERS[-1].encode(text)[0]


def oracle(model, policy, texts, max_length):
    _TOKENIZERS.append(model.tokenizer)
    enc = model.tokenizer(texts, max_length=max_length)
    return quiet(model.astype(np.float64).classify, enc, policy)


def compare(recs: list[dict], ref, texts: list[str], echo: bool = False) -> int:
    """Assert the program's records agree with the oracle's result; returns the near-threshold count.
    The program echoes the texts only with --echo."""
    assert len(recs) == len(texts)
    if echo:
        assert [r["text"] for r in recs] == texts
    else:
        assert not any("text" in r for r in recs)
    empty = np.array(["error" in r for r in recs])
    for r, t in zip(recs, texts):          # an empty or whitespace-only text is reported, not classified
        if "error" in r:
            assert r == ({"text": t} if echo else {}) | {"error": "empty text"}
            assert len(ref_tokens(t)) == 2, t
    keep = np.flatnonzero(~empty)
    recs = [recs[i] for i in keep]
    ref = types.SimpleNamespace(margins=ref.margins[keep], exit_layers=ref.exit_layers[keep],
                                labels=ref.labels[keep], logits=ref.logits[keep], label_names=ref.label_names)
    layers = np.array([r["exit_layer"] for r in recs])
    logits = np.array([r["logits"] for r in recs], np.float64)
    labels = np.array([r["label_id"] for r in recs])
    near = ref.margins < 1e-4
    assert np.array_equal(layers[~near], ref.exit_layers[~near]), (layers, ref.exit_layers)
    assert np.array_equal(labels[~near], ref.labels[~near])
    same = layers == ref.exit_layers
    np.testing.assert_allclose(logits[same], ref.logits[same], rtol=1e-4, atol=1e-5)
    for r, z in zip(recs, logits):
        p = np.exp(z - z.max())
        p /= p.sum()
        assert r["label"] == ref.label_names[r["label_id"]]
        assert math.isclose(r["probability"], p[r["label_id"]], rel_tol=1e-6, abs_tol=1e-9)
        assert list(r["probabilities"]) == list(ref.label_names)
        np.testing.assert_allclose(list(r["probabilities"].values()), p, rtol=1e-6, atol=1e-9)
        assert r["time_ms"] >= 0
    return int(near.sum())


def median_thresholds(model, texts, max_length) -> list[float]:
    """Per-layer entropy thresholds in the middle of the oracle's scores (exits at several layers),
    each in a wide gap between two scores so that no decision is near a threshold."""
    enc = model.tokenizer(texts, max_length=max_length)
    trace = quiet(model.astype(np.float64).classify, enc, refexit.Entropy(-1.0), trace=True)
    L = model.num_layers
    scores = np.array([[t.score for t in tr[:L - 1]] for tr in trace.per_layer])
    out = []
    for i in range(L - 1):                     # the widest gap between the 30% and 70% quantiles
        v = np.sort(scores[:, i])
        lo, hi = int(0.3 * len(v)), max(int(0.7 * len(v)), int(0.3 * len(v)) + 1)
        j = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
        out.append(float((v[j] + v[j + 1]) / 2))
    return out


# ---------------------------------------------------------------- a small random model, compiled by the CLI

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not shutil.which(CC):
        pytest.skip(f"no C compiler ({CC})")
    root = tmp_path_factory.mktemp("standalone")
    model = random_model(num_layers=4, hidden=24, heads=2, intermediate=40, num_labels=3, vocab_size=300,
                         max_position=48, head_kind="mean_linear", final_kind="pooler_linear", seed=5)
    folder = save_model(model, root / "small-model")
    model = refexit.load(folder)
    out = root / "out"
    from refexit.cli.main import main
    assert main(["compile", str(folder), "-o", str(out), "--policy", "entropy", "--threshold", "0.5",
                 "--prefix", "small_m", "--standalone"]) == 0
    thr = median_thresholds(model, TEXTS, 48)
    return dict(model=model, out=out, embedded=out / "small_m", sidecar=out / "small_m-sidecar",
                weights=out / "small_m.weights", thr=thr, thr_arg=",".join(repr(t) for t in thr))


def test_cli_writes_both_programs(small):
    for exe in (small["embedded"], small["sidecar"]):
        assert exe.is_file() and os.access(exe, os.X_OK)
    assert (small["out"] / "small_m_main.c").is_file() and (small["out"] / "small_m_embed.c").is_file()
    # the embedded program carries the whole weights file; the sidecar does not
    w = small["weights"].stat().st_size
    assert abs(small["embedded"].stat().st_size - small["sidecar"].stat().st_size - w) < 16384
    info = json.loads(run(small["embedded"], "--info").stdout)
    assert info["embedded"] is True and info["policy"] == "entropy" and info["num_layers"] == 4
    assert info["thresholds"] == [0.5, 0.5, 0.5] and info["labels"] == ["label_0", "label_1", "label_2"]
    assert json.loads(run(small["sidecar"], "--info").stdout)["embedded"] is False
    h = run(small["embedded"], "--help")
    assert b"usage:" in h.stdout and b"--threshold" in h.stdout and b"--policy-param" in h.stdout


@pytest.mark.parametrize("which,source,extra", [
    ("embedded", "args", []),
    ("sidecar", "stdin", ["--batch", "4"]),
    ("embedded", "stdin", ["--max-length", "12", "--batch", "3"]),
    ("embedded", "stdin", ["--max-length", "12"]),
    ("sidecar", "args", ["--threads", "2", "--batch", "64"]),
])
def test_outputs_match_oracle(small, which, source, extra):
    exe = small[which]
    ml = int(extra[extra.index("--max-length") + 1]) if "--max-length" in extra else 48
    args = ["--threshold", small["thr_arg"], *extra]
    if source == "args":
        r = run(exe, *args, "--", *TEXTS)
    else:
        r = run(exe, *args, stdin="\n".join(TEXTS).encode() + b"\n")
    recs = records(r.stdout)
    ref = oracle(small["model"], refexit.Entropy(small["thr"]), TEXTS, ml)
    near = compare(recs, ref, TEXTS)
    assert near <= 2
    assert len({rec["exit_layer"] for rec in recs if "error" not in rec}) >= 2          # the thresholds really exit early


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_programs_build_with_gcc_and_clang(small, cc, tmp_path):
    """main.c, embed.c and the library, -pedantic -Werror, with each compiler (.incbin included)."""
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (.ci/run installs clang; apt-get install -y clang)")
    d = Path(shutil.copytree(small["out"], tmp_path / "copy"))
    res = build_standalone(d, cc=cc, extra_flags=["-pedantic"])
    assert "-pedantic" in res.flags and res.compiler == cc
    recs = records(run(res.embedded, "--threshold", small["thr_arg"], *TEXTS).stdout)
    compare(recs, oracle(small["model"], refexit.Entropy(small["thr"]), TEXTS, 48), TEXTS)
    recs = records(run(res.sidecar, "--threshold", small["thr_arg"], "--batch", "8",
                       stdin="\n".join(TEXTS).encode()).stdout)
    compare(recs, oracle(small["model"], refexit.Entropy(small["thr"]), TEXTS, 48), TEXTS)


def test_single_threshold_and_threads_agree(small):
    a = records(run(small["embedded"], "--threshold", "1.05", *TEXTS[:6]).stdout)
    b = records(run(small["sidecar"], "--threshold", "1.05", "--threads", "2", *TEXTS[:6]).stdout)
    assert [(x.get("logits"), x.get("exit_layer")) for x in a] == [(x.get("logits"), x.get("exit_layer")) for x in b]
    compare(a, oracle(small["model"], refexit.Entropy(1.05), TEXTS[:6], 48), TEXTS[:6])


def test_json_text_field_for_any_bytes(small):
    """Any bytes in a line come back as valid JSON whose text is the line decoded with
    errors="replace" (one U+FFFD per maximal invalid subsequence, as Python)."""
    rng = random.Random(7)
    pieces = [b"a", b" ", b'"', b"\\", b"\t", b"\x00", b"\x01", b"\x1f", b"\x7f", b"\xc3\xa9", b"\xff", b"\xc3",
              b"\xe0\x80", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80", b"\xf4\x90\x80\x80", b"\xe2\x80\xa8",
              b"\xef\xbb\xbf", b"[CLS]", b"\r"]
    lines = [b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30))) for _ in range(300)]
    lines += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))).replace(b"\n", b"") for _ in range(300)]
    lines = [ln.rstrip(b"\r") for ln in lines]
    r = run(small["embedded"], "--batch", "16", "--echo", stdin=b"\n".join(lines))
    recs = records(r.stdout)
    assert r.stdout.count(b"\n") == len(lines) and "\u2028".encode() not in r.stdout   # escaped: one line each
    texts = [ln.decode("utf-8", "replace") for ln in lines]
    assert [x["text"] for x in recs] == texts
    ref = oracle(small["model"], refexit.Entropy(0.5), texts, 48)
    compare(recs, ref, texts, echo=True)
    assert sum("error" in x for x in recs) >= 5          # empty and whitespace-only lines among them


def test_crlf_and_missing_final_newline(small):
    recs = records(run(small["sidecar"], "--echo", stdin=b"one\r\ntwo\n\nthree").stdout)
    assert [x["text"] for x in recs] == ["one", "two", "", "three"]
    assert recs[2] == {"text": "", "error": "empty text"} and "label" in recs[3]
    assert records(run(small["sidecar"], stdin=b"").stdout) == []
    assert [x["text"] for x in records(run(small["sidecar"], "--echo", "-", stdin=b"x\n").stdout)] == ["x"]
    assert records(run(small["sidecar"], stdin=b" \t \n").stdout) == [{"error": "empty text"}]


def test_embedded_binary_runs_alone(small, tmp_path):
    """Copied alone into an empty folder (and run from another one) it needs no side file."""
    alone = tmp_path / "alone"
    alone.mkdir()
    exe = Path(shutil.copy2(small["embedded"], alone / "classifier"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    got = records(run(exe, *TEXTS[:5], cwd=elsewhere).stdout)
    want = records(run(small["embedded"], *TEXTS[:5]).stdout)
    assert [(g.get("logits"), g.get("exit_layer"), g.get("label")) for g in got] == \
           [(w.get("logits"), w.get("exit_layer"), w.get("label")) for w in want]
    assert sorted(p.name for p in alone.iterdir()) == ["classifier"] and not list(elsewhere.iterdir())
    # the blob sits in a read-only, allocated section of the executable (mapped, never copied)
    readelf = shutil.which("readelf")
    if readelf:
        syms = subprocess.run([readelf, "-sW", str(exe)], capture_output=True, text=True).stdout
        sym = next(ln.split() for ln in syms.splitlines() if ln.endswith(" small_m_weights_blob"))
        value, size, ndx = int(sym[1], 16), int(sym[2], 0), sym[6]
        assert size == small["weights"].stat().st_size and value % 64 == 0
        sections = subprocess.run([readelf, "-SW", str(exe)], capture_output=True, text=True).stdout
        sec = next(ln.split("]", 1)[1].split() for ln in sections.splitlines()
                   if ln.strip().startswith("[") and ln.split("]")[0].strip("[ ") == ndx)
        assert sec[0] == ".rodata" and sec[1] == "PROGBITS"
        flags = sec[6]
        assert "A" in flags and "W" not in flags, sec


def test_sidecar_finds_weights_beside_itself(small, tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    exe = Path(shutil.copy2(small["sidecar"], d / "small_m-sidecar"))
    r = run(exe, "hello", cwd=tmp_path, check=False)
    assert r.returncode == 1 and b"cannot open weights" in r.stderr and b"small_m.weights" in r.stderr
    shutil.copy2(small["weights"], d / "small_m.weights")
    assert records(run(exe, "--echo", "hello", cwd=tmp_path).stdout)[0]["text"] == "hello"
    assert records(run(small["sidecar"], "--weights", d / "small_m.weights", "--echo", "hello").stdout)[0]["text"] == "hello"


@pytest.mark.parametrize("args,code,message", [
    (["--bogus"], 2, "unknown option '--bogus'"),
    (["-x", "text"], 2, "unknown option '-x'"),
    (["--threshold", "nan", "a"], 2, "bad --threshold value 'nan'"),
    (["--threshold", "NaN,0.5,0.5", "a"], 2, "bad --threshold value 'NaN'"),
    (["--threshold", "abc"], 2, "bad --threshold value 'abc'"),
    (["--threshold", "0.1,0.2"], 2, "the model has 3 exit layers"),
    (["--threshold", "0.1,,0.2"], 2, "comma-separated"),
    (["--threshold"], 2, "--threshold needs a value"),
    (["--policy-param", "2", "a"], 2, "the entropy policy takes --threshold"),
    (["--max-length", "1", "a"], 2, "--max-length must be a whole number in [2, 48]"),
    (["--max-length", "49", "a"], 2, "--max-length must be"),
    (["--max-length=12x", "a"], 2, "--max-length must be"),
    (["--batch", "0", "a"], 2, "--batch must be"),
    (["--threads", "two", "a"], 2, "--threads must be"),
    (["--weights", "small_m.weights", "a"], 2, "embeds its weights"),
])
def test_bad_usage_exits_2(small, args, code, message):
    r = run(small["embedded"], *args, check=False)
    assert r.returncode == code and message in r.stderr.decode(), r.stderr
    assert r.stdout == b""


def test_weights_errors_exit_1(small, tmp_path):
    r = run(small["sidecar"], "--weights", tmp_path / "missing.weights", "a", check=False)
    assert r.returncode == 1 and b"cannot open weights" in r.stderr and b"cannot open or read" in r.stderr
    bad = tmp_path / "corrupt.weights"
    data = bytearray(small["weights"].read_bytes())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    r = run(small["sidecar"], "--weights", bad, "a", check=False)
    assert r.returncode == 1 and b"checksum" in r.stderr
    bad.write_bytes(bytes(data[:1000]))
    r = run(small["sidecar"], "--weights", bad, "a", check=False)
    assert r.returncode == 1 and b"truncated" in r.stderr
    r = run(small["sidecar"], "--weights", tmp_path, "a", check=False)          # a folder
    assert r.returncode == 1 and r.stderr


def test_long_input_is_truncated(small):
    text = " ".join(f"word{i}" for i in range(5000)) + " end"
    recs = records(run(small["embedded"], stdin=text.encode() + b"\n" + text[::-1].encode() + b"\nshort").stdout)
    compare(recs, oracle(small["model"], refexit.Entropy(0.5), [text, text[::-1], "short"], 48),
            [text, text[::-1], "short"])
    tok = small["model"].tokenizer
    assert [r.get("truncated") for r in recs] == [True, True, None]
    assert recs[0]["n_tokens"] == len(tok.tokenize(text)) + 2 and "n_tokens" not in recs[2]


def test_sentence_pairs(small):
    """--pairs: FIRST<TAB>SECOND, from the arguments or stdin, as the oracle's (text, pair) encoding."""
    pairs = [("a gripping film", "dull and far too long"), ("one", ""), ("", "two three")]
    lines = [f"{a}\t{b}" for a, b in pairs]
    model = small["model"]
    enc = model.tokenizer([a for a, _ in pairs], [b for _, b in pairs], max_length=48)
    ref = quiet(model.astype(np.float64).classify, enc, refexit.Entropy(0.5))
    for recs in (records(run(small["embedded"], "--pairs", "--echo", *lines).stdout),
                 records(run(small["sidecar"], "--pairs", "--echo", "--batch", "2",
                             stdin="\n".join(lines).encode()).stdout)):
        assert [(r["text"], r["pair"]) for r in recs] == pairs
        assert [r["exit_layer"] for r in recs] == ref.exit_layers.tolist()
        np.testing.assert_allclose([r["logits"] for r in recs], ref.logits, rtol=1e-4, atol=1e-5)
    assert records(run(small["embedded"], "--pairs", "\t").stdout) == [{"error": "empty text"}]


def test_write_errors_stop_the_program(small, tmp_path):
    """A full disk is noticed at the first line written, not after the whole input."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as full:
        r = subprocess.run([str(small["embedded"]), "-"], input=b"a b c\n" * 2000, stdout=full,
                           stderr=subprocess.PIPE, timeout=600)
    assert r.returncode == 1 and b"cannot write the output" in r.stderr


def test_weights_that_are_not_a_regular_file(small, tmp_path):
    """A FIFO (or a device) as --weights is refused at once instead of blocking in open()."""
    fifo = tmp_path / "w.fifo"
    os.mkfifo(fifo)
    r = run(small["sidecar"], "--weights", fifo, "a", check=False)
    assert r.returncode == 1 and b"cannot open weights" in r.stderr


def test_count_policy(small, tmp_path):
    """patience: the count is --policy-param; --threshold is refused."""
    model = small["model"]
    cm = quiet(codegen.compile_model, model, refexit.Patience(1), tmp_path, prefix="pat", max_length=48)
    res = build_standalone(cm.out_dir, sidecar=False)
    assert res.sidecar is None and res.embedded.is_file()
    for t in (0, 1, 2):
        recs = records(run(res.embedded, "--policy-param", t, *TEXTS).stdout)
        compare(recs, oracle(model, refexit.Patience(t), TEXTS, 48), TEXTS)
    r = run(res.embedded, "--threshold", "0.5", "a", check=False)
    assert r.returncode == 2 and b"takes --policy-param" in r.stderr
    r = run(res.embedded, "--policy-param", "-1", "a", check=False)
    assert r.returncode == 2 and b"--policy-param must be a whole number" in r.stderr
    assert json.loads(run(res.embedded, "--policy-param", "2", "--info").stdout)["policy_param"] == [2, 2, 2]


def test_regression_model_prints_value(tmp_path):
    model = random_model(num_layers=2, hidden=16, heads=2, intermediate=20, num_labels=1, vocab_size=120, seed=2)
    cm = quiet(codegen.compile_model, model, refexit.Static(2), tmp_path, prefix="reg", max_length=32)
    res = build_standalone(cm.out_dir, embedded=False)
    rec = records(run(res.sidecar, "a b c").stdout)[0]
    ref = oracle(model, refexit.Static(2), ["a b c"], 32)
    assert set(rec) == {"value", "logits", "exit_layer", "time_ms"} and rec["exit_layer"] == 2
    np.testing.assert_allclose(rec["value"], ref.logits[0, 0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the real MiniLM, end to end

def with_random_heads(model, kind: str, C: int = 3, seed: int = 0, final_kind: str | None = None):
    """The backbone of `model` with random exit heads of `kind` after every layer."""
    rng = np.random.default_rng(seed)
    H, L = model.config.hidden_size, model.num_layers

    def head(k):
        params = {n: rng.normal(0, 1.0 / np.sqrt(s[-1]), s).astype(np.float32) if len(s) == 2
                  else rng.normal(0, 0.1, s).astype(np.float32) for n, s in param_shapes(k, H, C, 64).items()}
        return Head(k, params, l2norm=(k == "mean_linear"), attn_heads=4)

    heads = [head(kind) for _ in range(L - 1)] + [head(final_kind or kind)]
    exits = ExitParams(heads, None, None, np.ones(L))
    return refexit.Model(model.config, model.weights, exits, ["neg", "neutral", "pos"][:C], model.tokenizer,
                         source=model.source)


def test_minilm_standalone_end_to_end(minilm, tmp_path):
    """all-MiniLM-L6-v2 + random exit heads: text in, the oracle's labels / exits / logits out."""
    model = with_random_heads(minilm, "mean_linear", seed=11)
    thr = median_thresholds(model, TEXTS, 128)
    cm = quiet(codegen.compile_model, model, refexit.Entropy(thr), tmp_path, prefix="minilm_sa", max_length=128)
    res = build_standalone(cm.out_dir)
    assert res.embedded.stat().st_size > cm.weights_path.stat().st_size
    ref = oracle(model, refexit.Entropy(thr), TEXTS, 128)
    recs = records(run(res.embedded, "--batch", "5", stdin="\n".join(TEXTS).encode()).stdout)
    near = compare(recs, ref, TEXTS)
    assert near <= 2 and len({r["exit_layer"] for r in recs if "error" not in r}) >= 2
    recs = records(run(res.sidecar, "--", *TEXTS).stdout)
    compare(recs, ref, TEXTS)
    short = ["a b c d e f", "Zürich"]
    recs = records(run(res.embedded, "--max-length", "5", *short).stdout)
    compare(recs, oracle(model, refexit.Entropy(thr), short, 5), short)


def test_threshold_out_of_range_warns_as_python_does(small):
    r = run(small["embedded"], "--threshold", "-1", "abc")
    assert b"warning: threshold -1 can never fire" in r.stderr and records(r.stdout)[0]["exit_layer"] == 4
    r = run(small["embedded"], "--threshold", "5", "abc")                  # > ln 3: always at layer 1
    assert b"warning: threshold 5 always fires at layer 1" in r.stderr
    assert run(small["embedded"], "--threshold", "0.5", "abc").stderr == b""
    with warnings.catch_warnings(record=True) as caught:                  # the same verdicts as the oracle's
        warnings.simplefilter("always")
        small["model"].check_policy(refexit.Entropy(-1.0))
        small["model"].check_policy(refexit.Entropy(5.0))
    assert [("never" in str(w.message), "always" in str(w.message)) for w in caught] == \
        [(True, False)] * 3 + [(False, True)]


def test_weights_modified_in_place_are_noticed(small, tmp_path):
    w = Path(shutil.copy2(small["weights"], tmp_path / "w.weights"))
    p = subprocess.Popen([str(small["sidecar"]), "--weights", str(w)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"first text\n")
    p.stdin.flush()
    assert "label" in json.loads(p.stdout.readline())
    with open(w, "ab") as f:                                  # in place: same file, new size
        f.write(b"\0" * 64)
    out, err = p.communicate(b"second text\n", timeout=600)
    assert p.returncode == 1 and b"modified in place" in err and out == b""


def test_scalar_mix_heads_standalone_match_the_oracle(tmp_path):
    """Right Tool's scalar_mix heads (kept pooled [CLS] of every layer) through the CLI's standalone
    program, gcc and clang: the oracle's labels, exit layers and logits."""
    model = random_model(num_layers=4, hidden=24, heads=2, intermediate=40, num_labels=3, vocab_size=300,
                         max_position=48, head_kind="scalar_mix", seed=9, scale=2.0)   # logits far from uniform
    folder = save_model(model, tmp_path / "mix-model")
    model = refexit.load(folder)
    thr = median_thresholds(model, TEXTS, 48)
    from refexit.cli.main import main
    for cc in ("gcc", "clang"):
        if not shutil.which(cc):
            continue
        out = tmp_path / f"out-{cc}"
        os.environ["CC"], old = cc, os.environ.get("CC")
        try:
            assert main(["compile", str(folder), "-o", str(out), "--policy", "entropy", "--threshold", "0.5",
                         "--prefix", "mix_m", "--standalone"]) == 0
        finally:
            os.environ.pop("CC") if old is None else os.environ.__setitem__("CC", old)
        r = run(out / "mix_m", "--threshold", ",".join(repr(t) for t in thr), "--", *TEXTS)
        recs = records(r.stdout)
        assert compare(recs, oracle(model, refexit.Entropy(thr), TEXTS, 48), TEXTS) <= 2
        assert len({rec["exit_layer"] for rec in recs if "error" not in rec}) >= 2
