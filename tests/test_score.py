"""`refexit score` and its local engine (refexit/score/) on tiny random compiled models: every
input format gives the same rows, in input order, with ids; bad rows keep their place and go to the
errors file; the labels, exit layers and logits are those of the compiled model's own
`classify` (CompiledModel, the binding the C tests check against the oracle) on the same texts;
a run SIGKILLed in the middle and resumed gives exactly the output of an uninterrupted run.
Memory staying flat on a huge input is measured by tools/bench_score.py, not tested here."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import refexit
from refexit import tables
from refexit.cli.main import main
from refexit.synthetic import random_model, save_model

import codegen
from refexit.score import chunks, engine
from refexit.score.handles import Scorer, SharedWeights

ROOT = Path(__file__).resolve().parents[1]



def kill_when(cmd: list, env: dict, ready, what: str) -> None:
    """Start `cmd`, SIGKILL it as soon as ready() holds (polled every 10 ms), and fail the test if
    it ended on its own first (the input was too small to catch it mid-run)."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        threading.Event().wait(0.01)
    proc.wait()
    proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended (exit {proc.returncode}) before {what} were seen; make the input larger")

def random_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of the random vocabulary's letters and pieces (varied tokens, so varied answers)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 4)))
                     for _ in range(rng.randint(1, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model folder, compiled folder with Entropy(0.6), its CompiledModel)."""
    root = tmp_path_factory.mktemp("score")
    model_dir = save_model(random_model(num_layers=3, hidden=24, num_labels=3, vocab_size=120, seed=3),
                           root / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(refexit.load(model_dir), refexit.Entropy(0.6), root / "compiled",
                                   prefix="tiny")
    return model_dir, root / "compiled", cm


def expected(cm, texts: list[str]) -> list[dict]:
    """The compiled model's own answer for each text (CompiledModel.classify on its tokenizer)."""
    res = cm.classify(cm.tokenizer(texts))
    return [{"label": r["label"], "label_id": r["label_id"], "probability": r["probability"],
             "exit_layer": r["exit_layer"], "logits": r["logits"]} for r in res.records()]


def score(*argv) -> int:
    return main(["score", *map(str, argv), "--quiet"])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_matches(rows: list[dict], want: list[dict], logits: bool = False):
    assert len(rows) == len(want)
    for r, w in zip(rows, want):
        assert (r["label"], r["label_id"], r["exit_layer"]) == (w["label"], w["label_id"], w["exit_layer"])
        assert r["probability"] == pytest.approx(w["probability"], rel=1e-6)
        if logits:
            np.testing.assert_allclose(r["logits"], w["logits"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- formats, order, ids
@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv", "parquet", "jsonl.gz"])
def test_every_input_format_gives_the_compiled_models_answers_in_order(tiny, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet input needs the optional pyarrow")
    _, compiled, cm = tiny
    texts = random_texts(150, seed=1)
    src = tables.write_rows(tmp_path / f"in.{fmt}", [{"text": t} for t in texts])
    out = tmp_path / "out.jsonl"
    assert score(compiled, src, "-o", out, "--workers", "2", "--batch", "7", "--chunk-rows", "20", "--logits") == 0
    rows = read_jsonl(out)
    assert [r["row"] for r in rows] == list(range(len(texts)))
    assert [r["id"] for r in rows] == list(range(len(texts)))
    assert_matches(rows, expected(cm, texts), logits=True)
    assert (tmp_path / "out.jsonl.errors.jsonl").read_text() == ""
    assert not chunks.parts_dir(out).exists()


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_output_formats_hold_the_same_rows(tiny, tmp_path, ext):
    if ext == "parquet":
        pa = pytest.importorskip("pyarrow", reason="Parquet output needs the optional pyarrow")
    _, compiled, cm = tiny
    texts = random_texts(60, seed=2) + [""]
    src = tables.write_rows(tmp_path / "in.jsonl", [{"text": t, "key": f"k{i}"} for i, t in enumerate(texts)])
    out = tmp_path / f"out.{ext}"
    assert score(compiled, src, "-o", out, "--id-column", "key", "--chunk-rows", "16") == 0
    if ext == "parquet":
        import pyarrow.parquet as pq
        rows = pq.read_table(out).to_pylist()
        assert pa is not None
    else:
        rows = [r.values for r in tables.iter_rows(out)]
    assert [r["id"] for r in rows] == [f"k{i}" for i in range(len(texts))]
    assert [str(r["row"]) for r in rows] == [str(i) for i in range(len(texts))]
    want = expected(cm, texts[:-1])
    for r, w in zip(rows, want):
        assert (r["label"], str(r["exit_layer"])) == (w["label"], str(w["exit_layer"]))
        assert float(r["probability"]) == pytest.approx(w["probability"], rel=1e-6)
    assert rows[-1]["error"] == "empty text" and rows[-1]["label"] in (None, "")


def test_several_files_a_folder_and_a_glob_keep_file_then_row_order(tiny, tmp_path):
    _, compiled, cm = tiny
    a, b = random_texts(30, seed=4), random_texts(45, seed=5)
    (tmp_path / "in").mkdir()
    tables.write_rows(tmp_path / "in" / "a.txt", [{"text": t} for t in a])
    tables.write_rows(tmp_path / "in" / "b.csv", [{"text": t} for t in b])
    out = tmp_path / "out.jsonl"
    assert score(compiled, tmp_path / "in", "-o", out, "--chunk-rows", "8", "--workers", "3") == 0
    rows = read_jsonl(out)
    assert [(Path(r["file"]).name, r["row"]) for r in rows] == \
        [("a.txt", i) for i in range(30)] + [("b.csv", i) for i in range(45)]
    assert_matches(rows, expected(cm, a + b))
    out2 = tmp_path / "out2.jsonl"
    assert score(compiled, str(tmp_path / "in" / "*.txt"), "-o", out2) == 0
    assert len(read_jsonl(out2)) == 30 and "file" not in read_jsonl(out2)[0]


def test_sentence_pairs(tiny, tmp_path):
    _, compiled, cm = tiny
    first, second = random_texts(20, seed=6), random_texts(20, seed=7)
    src = tables.write_rows(tmp_path / "in.jsonl", [{"a": x, "b": y} for x, y in zip(first, second)])
    out = tmp_path / "out.jsonl"
    assert score(compiled, src, "-o", out, "--text-column", "a", "--pair-column", "b") == 0
    res = cm.classify(cm.tokenizer(first, second)).records()
    assert [r["exit_layer"] for r in read_jsonl(out)] == [r["exit_layer"] for r in res]
    assert [r["label"] for r in read_jsonl(out)] == [r["label"] for r in res]


# ---------------------------------------------------------------------- bad rows, summary
def test_bad_rows_keep_their_place_and_go_to_the_errors_file(tiny, tmp_path):
    _, compiled, cm = tiny
    good = random_texts(6, seed=8)
    lines = [json.dumps({"id": "g0", "text": good[0]}).encode(),
             json.dumps({"id": "m1", "body": "no text column"}).encode(),
             b'{"id": "u2", "text": "caf\xe9 latin-1"}',
             json.dumps({"id": "e3", "text": "   "}).encode(),
             json.dumps({"id": "n4", "text": 42}).encode(),
             b"{not json",
             json.dumps({"id": "g6", "text": good[1]}).encode(),
             json.dumps({"id": "z7", "text": None}).encode(),
             json.dumps({"id": "g8", "text": good[2]}).encode()]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    assert score(compiled, src, "-o", out, "--id-column", "id", "--batch", "4", "--summary", summary) == 0
    rows = read_jsonl(out)
    assert [r["row"] for r in rows] == list(range(9))
    # an unreadable line (not UTF-8, not JSON) has no id to read: null
    assert [r["id"] for r in rows] == ["g0", "m1", None, "e3", "n4", None, "g6", "z7", "g8"]
    bad = {r["row"]: r["error"] for r in rows if r.get("error")}
    assert sorted(bad) == [1, 2, 3, 4, 5, 7]
    assert bad[1] == bad[7] == "no text (column 'text' missing or null)"
    assert "UTF-8" in bad[2] and bad[3] == "empty text" and "int" in bad[4] and "JSON" in bad[5]
    assert all(rows[i]["label"] is None and rows[i]["exit_layer"] is None for i in bad)
    assert_matches([rows[i] for i in (0, 6, 8)], expected(cm, good[:3]))
    errs = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert [(e["row"], e["error"]) for e in errs] == sorted(bad.items())
    assert [e["id"] for e in errs] == ["m1", None, "e3", "n4", None, "z7"]
    s = json.loads(summary.read_text())
    assert (s["rows"], s["scored"], s["errors"]) == (9, 3, 6)
    layers = [r["exit_layer"] for r in expected(cm, good[:3])]
    assert s["exit_layers"] == {str(e): layers.count(e) for e in range(1, 4)}
    assert s["mean_exit_layer"] == pytest.approx(np.mean(layers), abs=1e-4)


def test_summary_on_stderr_and_no_progress_line_when_not_a_terminal(tiny, tmp_path):
    _, compiled, _ = tiny
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in random_texts(40)])
    r = subprocess.run([sys.executable, "-m", "refexit.cli.main", "score", str(compiled), str(src), "-o",
                        str(tmp_path / "o.jsonl")], capture_output=True, text=True, cwd=ROOT,
                       env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "\r" not in r.stderr
    assert "score: 40 rows" in r.stderr and "mean exit layer" in r.stderr and "exit layers {" in r.stderr


# ---------------------------------------------------------------------- policies, SOURCE kinds
def test_policy_override_on_a_compiled_folder(tiny, tmp_path):
    model_dir, compiled, _ = tiny
    texts = random_texts(80, seed=9)
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    cm = codegen.load_compiled(compiled)
    for thr in ("0.9", "0.3,0.8"):
        out = tmp_path / f"out-{thr}.jsonl"
        assert score(compiled, src, "-o", out, "--policy", "entropy", "--threshold", thr) == 0
        cm.set_policy(refexit.Entropy([float(x) for x in thr.split(",")] if "," in thr else float(thr)))
        assert_matches(read_jsonl(out), expected(cm, texts))
    assert score(compiled, src, "-o", tmp_path / "x.jsonl", "--policy", "max_prob", "--threshold", "0.9") == 1
    assert score(compiled, src, "-o", tmp_path / "x.jsonl", "--threshold", "0.9") == 1     # needs --policy


def test_model_folder_is_compiled_once_and_cached(tiny, tmp_path, monkeypatch):
    model_dir, _, _ = tiny
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))
    texts = random_texts(25, seed=10)
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    assert score(model_dir, src, "-o", tmp_path / "a.jsonl", "--policy", "entropy", "--threshold", "0.5") == 0
    built = list((tmp_path / "cache" / "score").iterdir())
    assert len(built) == 1
    lib = next(built[0].glob("*.so"))
    stamp = lib.stat().st_mtime_ns
    assert score(model_dir, src, "-o", tmp_path / "b.jsonl", "--policy", "entropy", "--threshold", "0.5") == 0
    assert list((tmp_path / "cache" / "score").iterdir()) == built and lib.stat().st_mtime_ns == stamp
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    cm = codegen.load_compiled(built[0])
    assert_matches(read_jsonl(tmp_path / "a.jsonl"), expected(cm, texts))
    assert score(model_dir, src, "-o", tmp_path / "c.jsonl") == 0                     # full model: another build
    assert len(list((tmp_path / "cache" / "score").iterdir())) == 2
    assert {r["exit_layer"] for r in read_jsonl(tmp_path / "c.jsonl")} == {3}


@pytest.mark.parametrize("argv, message", [
    (["{src}", "-o", "{tmp}/out.xlsx"], "extension"),
    (["{tmp}/missing.txt", "-o", "{tmp}/out.jsonl"], "missing.txt"),
    (["{src}", "-o", "{tmp}/out.jsonl", "--workers", "0"], "--workers"),
    (["{src}", "-o", "{tmp}/out.jsonl", "--batch", "0"], "--batch"),
    (["{src}", "-o", "{tmp}/out.jsonl", "--address", "x:1"], "--address"),
])
def test_bad_usage_is_a_clear_error(tiny, tmp_path, capsys, argv, message):
    _, compiled, _ = tiny
    src = tables.write_rows(tmp_path / "in.txt", [{"text": "ab cd"}])
    argv = [a.format(src=src, tmp=tmp_path) for a in argv]
    assert main(["score", str(compiled), *argv, "--quiet"]) == 1
    assert message in capsys.readouterr().err


def test_bad_source_is_a_clear_error(tmp_path, capsys):
    src = tables.write_rows(tmp_path / "in.txt", [{"text": "ab cd"}])
    assert main(["score", str(tmp_path), str(src), "-o", str(tmp_path / "o.jsonl"), "-q"]) == 1
    assert "neither a compiled folder" in capsys.readouterr().err


# ---------------------------------------------------------------------- resume
def test_an_unfinished_run_needs_resume_and_the_same_inputs(tiny, tmp_path, capsys):
    _, compiled, cm = tiny
    texts = random_texts(50, seed=11)
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    out = tmp_path / "out.jsonl"
    opt = engine.Options(chunk_rows=10, quiet=True)
    run = chunks.RunDir(out, engine.run_spec([src], opt, cm), resume=False)
    assert score(compiled, src, "-o", out, "--chunk-rows", "10") == 1
    assert "--resume" in capsys.readouterr().err
    assert score(compiled, src, "-o", out, "--chunk-rows", "11", "--resume") == 1       # other chunking
    assert "chunk_rows" in capsys.readouterr().err
    # a chunk committed by the earlier run is kept, not redone (its content here is a marker)
    marker = [json.dumps({"row": i, "id": i, "marker": True}) for i in range(10, 20)]
    run.commit(0, 1, marker, {"rows": 10, "errors": [], "exits": [0, 0, 10], "last": False})
    assert score(compiled, src, "-o", out, "--chunk-rows", "10", "--resume") == 0
    rows = read_jsonl(out)
    assert [r["row"] for r in rows] == list(range(50))
    assert [i for i, r in enumerate(rows) if r.get("marker")] == list(range(10, 20))
    assert_matches(rows[:10] + rows[20:], expected(cm, texts[:10] + texts[20:]))


def test_resume_after_sigkill_gives_exactly_one_row_per_input_row(tiny, tmp_path):
    """A real `refexit score` process, SIGKILLed once some chunks are committed, then resumed: the
    output equals an uninterrupted run's, byte for byte."""
    _, compiled, _ = tiny
    n = 30000
    texts = random_texts(997, seed=12)
    src = tmp_path / "in.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": texts[i % len(texts)] if i % 1009 else ""}) + "\n")
    cmd = [sys.executable, "-m", "refexit.cli.main", "score", str(compiled), str(src), "--id-column", "id",
           "--chunk-rows", "100", "--batch", "1", "--workers", "2", "-q"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    ref = tmp_path / "ref.jsonl"
    subprocess.run(cmd + ["-o", str(ref)], check=True, env=env, cwd=ROOT, capture_output=True)
    out = tmp_path / "out.jsonl"
    parts = chunks.parts_dir(out)
    kill_when(cmd + ["-o", str(out)], env, lambda: parts.exists() and len(list(parts.glob("*.jsonl"))) >= 30,
              "30 chunks")
    assert not out.exists() and parts.exists()
    before = sorted(p.name for p in parts.glob("*.jsonl"))
    assert 30 <= len(before) < n // 100
    r = subprocess.run(cmd + ["-o", str(out), "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == list(range(n))
    assert (tmp_path / "out.jsonl.errors.jsonl").read_bytes() == (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()
    assert not parts.exists()


# ---------------------------------------------------------------------- handles, GIL
def test_handles_share_one_mapping_and_agree_with_classify(tiny):
    _, compiled, _ = tiny
    cm = codegen.load_compiled(compiled)
    shared = SharedWeights(cm)
    texts = random_texts(40, seed=13)
    a, b = Scorer(shared, batch=40), Scorer(shared, batch=5)
    ra, ea, run = a.classify([t.encode() for t in texts])
    assert run is None                                   # no skip gates: the exit layer is the layers run
    rb = np.concatenate([b.classify([t.encode() for t in texts[i:i + 5]])[0] for i in range(0, 40, 5)])
    assert not ea.any()
    assert ra.tobytes() == rb.tobytes()                  # a sample's answer never depends on its batch
    want = expected(cm, texts)
    assert ra["exit_layer"].tolist() == [w["exit_layer"] for w in want]
    np.testing.assert_allclose(ra["logits"], [w["logits"] for w in want], rtol=1e-6, atol=1e-7)
    a.close(), b.close()


def test_calls_through_the_binding_release_the_gil(tiny):
    """cffi (ABI mode, ffi.dlopen, as codegen.binding opens the library) releases the GIL around
    every C call. Shown without timing: a C call through the compiled model's own `ffi` that blocks
    in read() on a pipe returns only when this (Python) thread writes to the pipe, which it could
    never do if the blocked call held the GIL."""
    _, compiled, _ = tiny
    cm = codegen.load_compiled(compiled)
    ffi = cm.ffi
    ffi.cdef("long read(int fd, void *buf, unsigned long count);", override=True)
    libc = ffi.dlopen(None)
    r, w = os.pipe()
    buf = ffi.new("char[8]")
    got = []
    t = threading.Thread(target=lambda: got.append(libc.read(r, buf, 8)), daemon=True)
    t.start()
    _wait_in_read(t, r)                      # Python runs here while the other thread is inside read()
    os.write(w, b"released")
    t.join(120)                              # only a deadlock guard: a GIL-holding call never returns
    os.close(r), os.close(w)
    assert got == [8] and ffi.buffer(buf, 8)[:] == b"released"


def _wait_in_read(thread: threading.Thread, fd: int) -> None:
    """Until `thread` is blocked in the read(fd) system call (Linux: /proc/self/task/<tid>/syscall
    reads "0 0x<fd> ..." on x86-64, "63 0x<fd> ..." on arm64); elsewhere return at once."""
    while thread.native_id is None:
        threading.Event().wait(0.001)
    path = Path(f"/proc/self/task/{thread.native_id}/syscall")
    while thread.is_alive():
        try:
            fields = path.read_text().split()
        except OSError:
            return
        if len(fields) > 1 and fields[0] in ("0", "63") and int(fields[1], 16) == fd:
            return
        threading.Event().wait(0.001)


def test_threads_per_worker_and_batch_do_not_change_the_answers(tiny, tmp_path):
    _, compiled, _ = tiny
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in random_texts(90, seed=14)])
    outs = []
    for i, extra in enumerate((["--workers", "1", "--threads-per-worker", "2", "--batch", "64"],
                               ["--workers", "3", "--batch", "1", "--chunk-rows", "7"])):
        out = tmp_path / f"out{i}.jsonl"
        assert score(compiled, src, "-o", out, "--logits", *extra) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
