"""The Ray engine of `refexit score` (refexit/score/ray_engine.py) on a local Ray with 2 CPUs: the
same output and errors file as the local engine, byte for byte, bad rows (not UTF-8, not JSON, no
text column, empty text) included; a scoring actor SIGKILLed mid-run (in Ray Data's map_batches,
and in the command's own actor pool) is restarted and its batch retried, so every input row comes
out exactly once; a driver SIGKILLed mid-run is resumed (by either engine) to exactly the output of
an uninterrupted run, and refuses to resume a changed run, with a file output and with a folder
output (-o DIR/: whole parts scored and committed by the actors); the artefact shipped to a worker is
rebuilt there from its C source when the shipped library does not load. Skipped, saying so, when
Ray Data is not installed (pip install '.[ray]')."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import refexit
from refexit import tables
from refexit.cli.main import main
from refexit.synthetic import random_model, save_model

import codegen
from refexit.score import chunks, ray_engine

from test_score import ROOT, expected, kill_when, random_texts, read_jsonl


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        pytest.skip("Ray Data is not installed (pip install '.[ray]'): the Ray engine is optional")
    return ray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_ray")
    model_dir = save_model(random_model(num_layers=3, hidden=24, num_labels=3, vocab_size=120, seed=5),
                           root / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(refexit.load(model_dir), refexit.Entropy(0.7), root / "compiled",
                                   prefix="tinyray")
    return root / "compiled", cm


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


def test_ray_engine_writes_what_the_local_engine_writes(tiny, local_ray, tmp_path):
    compiled, cm = tiny
    texts = random_texts(300, seed=21)
    recs = [{"key": f"k{i}", "text": t if i % 37 else ""} for i, t in enumerate(texts)]
    recs[5] = {"key": "k5", "body": "no text column"}
    src = tables.write_rows(tmp_path / "in.jsonl", recs)
    common = [str(compiled), str(src), "--id-column", "key", "--chunk-rows", "50", "-q", "--logits"]
    assert main(["score", *common, "-o", str(tmp_path / "local.jsonl")]) == 0
    assert main(["score", *common, "-o", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--workers", "2"]) == 0
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.jsonl.errors.jsonl").read_bytes() == (tmp_path / "local.jsonl.errors.jsonl").read_bytes()
    rows = read_jsonl(tmp_path / "ray.jsonl")
    assert [r["row"] for r in rows] == list(range(300))
    assert rows[5]["error"] == "no text (column 'text' missing or null)" and rows[37]["error"] == "empty text"


def test_bad_rows_on_ray_are_reported_as_the_local_engine_reports_them(tiny, local_ray, tmp_path):
    """Bytes that are not UTF-8, a line that is not JSON, a missing text column and an empty text:
    each keeps its place with its reason and goes to the errors file, the rows after it are scored,
    exactly as with the local engine (Ray's own readers would stop at the first two)."""
    compiled, cm = tiny
    good = random_texts(7, seed=25)
    lines = [json.dumps({"id": "g0", "text": good[0]}).encode(),
             b'{"id": "u1", "text": "caf\xe9 latin-1"}',
             json.dumps({"id": "g2", "text": good[1]}).encode(),
             b"{not json",
             json.dumps({"id": "m4", "body": "no text column"}).encode(),
             json.dumps({"id": "e5", "text": ""}).encode()] + \
        [json.dumps({"id": f"g{i}", "text": t}).encode() for i, t in enumerate(good[2:], start=6)]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    common = [str(compiled), str(src), "--id-column", "id", "--chunk-rows", "4", "--batch", "3", "-q"]
    assert main(["score", *common, "-o", str(tmp_path / "local.jsonl")]) == 0
    assert main(["score", *common, "-o", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--workers", "2"]) == 0
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.jsonl.errors.jsonl").read_bytes() == (tmp_path / "local.jsonl.errors.jsonl").read_bytes()
    rows = read_jsonl(tmp_path / "ray.jsonl")
    assert [r["row"] for r in rows] == list(range(11))
    errs = read_jsonl(tmp_path / "ray.jsonl.errors.jsonl")
    assert [(e["row"], e["id"]) for e in errs] == [(1, None), (3, None), (4, "m4"), (5, "e5")]
    assert "UTF-8" in errs[0]["error"] and "JSON" in errs[1]["error"]
    assert errs[2]["error"] == "no text (column 'text' missing or null)" and errs[3]["error"] == "empty text"
    scored = [r for r in rows if not r.get("error")]
    assert [r["id"] for r in scored] == ["g0", "g2"] + [f"g{i}" for i in range(6, 11)]
    assert [(r["label"], r["exit_layer"]) for r in scored] == \
        [(w["label"], w["exit_layer"]) for w in expected(cm, good)]


def test_more_actors_than_the_cluster_has_cpus_is_a_clear_error(tiny, local_ray, tmp_path, capsys):
    compiled, _ = tiny
    src = tables.write_rows(tmp_path / "in.txt", [{"text": "ab cd"}])
    out = tmp_path / "out.jsonl"
    assert main(["score", str(compiled), str(src), "-o", str(out), "-q", "--engine", "ray", "--workers", "3"]) == 1
    assert "needs 3 CPUs; the Ray cluster has 2" in capsys.readouterr().err
    assert not chunks.parts_dir(out).exists()          # nothing to --resume: the run never started


def test_an_actor_of_the_command_killed_mid_run_loses_and_duplicates_nothing(tiny, local_ray, tmp_path,
                                                                             monkeypatch):
    """`refexit score --engine ray`'s own actor pool: one actor SIGKILLs itself in its third chunk
    (once); it is restarted, the chunks it held are retried, and the output is the local engine's."""
    compiled, _ = tiny
    texts = random_texts(400, seed=26)
    src = tables.write_rows(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    marker = str(tmp_path / "killed")
    make = ray_engine.map_batches_fn

    def killing_class(*args, **kwargs):
        Base = make(*args, **kwargs)

        class KillOnce(Base):
            calls = 0

            def score_chunk(self, rows, spec):
                self.calls += 1
                if self.calls == 3:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        pass
                    else:
                        os.kill(os.getpid(), signal.SIGKILL)
                return super().score_chunk(rows, spec)
        return KillOnce

    monkeypatch.setattr(ray_engine, "map_batches_fn", killing_class)
    common = [str(compiled), str(src), "--chunk-rows", "20", "-q"]
    assert main(["score", *common, "-o", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--workers", "2"]) == 0
    assert Path(marker).exists()                       # an actor really died mid-run
    assert main(["score", *common, "-o", str(tmp_path / "local.jsonl")]) == 0
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_a_ray_run_sigkilled_mid_run_resumes_to_the_uninterrupted_output(tiny, tmp_path):
    """A real `refexit score --engine ray` process (its own local Ray), SIGKILLed once 30 chunks
    are committed: resumed with --engine ray, and (from a copy of its parts) with the local
    engine, the output equals an uninterrupted run's byte for byte, the errors file too; a resume
    with other options is refused."""
    compiled, _ = tiny
    require_ray()
    n = 40000
    texts = random_texts(997, seed=27)
    src = tmp_path / "in.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": texts[i % len(texts)] if i % 1009 else ""}) + "\n")
    cmd = [sys.executable, "-m", "refexit.cli.main", "score", str(compiled), str(src), "--id-column", "id",
           "--chunk-rows", "100", "--batch", "1", "-q"]
    ray_cmd = cmd + ["--engine", "ray", "--address", "local", "--workers", "2"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    ref = tmp_path / "ref.jsonl"
    subprocess.run(cmd + ["-o", str(ref)], check=True, env=env, cwd=ROOT, capture_output=True)
    out = tmp_path / "out.jsonl"
    parts = chunks.parts_dir(out)
    kill_when(ray_cmd + ["-o", str(out)], env, lambda: parts.exists() and len(list(parts.glob("*.jsonl"))) >= 30,
              "30 chunks")
    assert not out.exists()
    before = sorted(p.name for p in parts.glob("*.jsonl"))
    assert 30 <= len(before) < n // 100
    out_local = tmp_path / "out-local.jsonl"
    shutil.copytree(parts, chunks.parts_dir(out_local))

    r = subprocess.run(ray_cmd + ["-o", str(out), "--resume", "--logits"], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "--resume" in r.stderr and "logits" in r.stderr, r.stderr
    r = subprocess.run(ray_cmd + ["-o", str(out), "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == list(range(n))
    assert (tmp_path / "out.jsonl.errors.jsonl").read_bytes() == (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()
    assert not parts.exists()

    r = subprocess.run(cmd + ["-o", str(out_local), "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out_local.read_bytes() == ref.read_bytes()
    assert (tmp_path / "out-local.jsonl.errors.jsonl").read_bytes() == \
        (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()


def test_a_killed_actor_loses_and_duplicates_nothing(tiny, local_ray, tmp_path):
    """One scoring actor SIGKILLs itself on its third batch (a real worker death, once): Ray restarts
    it and retries the batch; the output has every input row exactly once, in order."""
    compiled, cm = tiny
    ray = local_ray
    texts = random_texts(1200, seed=22)
    src = tables.write_rows(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    marker = str(tmp_path / "killed")
    Base = ray_engine.map_batches_fn(compiled, id_column="id", batch=16)

    class KillOnce(Base):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 3:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.read_json([str(src)], lines=True, **ray_engine.LIGHT).map_batches(
        KillOnce, batch_size=50, concurrency=2, num_cpus=1)         # Ray Data's defaults restart and retry
    out = ds.take_all()
    assert Path(marker).exists()                       # an actor really died mid-run
    assert [r["id"] for r in out] == list(range(1200))
    want = expected(cm, texts)
    assert [(r["label"], r["exit_layer"]) for r in out] == [(w["label"], w["exit_layer"]) for w in want]


def test_the_shipped_library_is_rebuilt_where_it_does_not_load(tiny, tmp_path, monkeypatch):
    """A worker whose CPU or C library cannot load the shipped .so (here: a broken one, on a node
    with an empty build cache) builds the library again from the shipped C source, and scores the
    same."""
    compiled, cm = tiny
    monkeypatch.setenv("REFEXIT_BUILD_CACHE", str(tmp_path / "build-cache"))
    art = ray_engine.pack_artefact(compiled)
    art["library"] = b"\x7fELF not a library"
    folder = ray_engine.unpack_artefact(art, cache_root=tmp_path / "node")
    manifest = json.loads(next(folder.glob("*.manifest.json")).read_text())
    assert (folder / manifest["library"]).read_bytes() != art["library"]
    again = codegen.load_compiled(folder)
    texts = random_texts(20, seed=23)
    assert [r["exit_layer"] for r in again.classify(again.tokenizer(texts)).records()] == \
        [w["exit_layer"] for w in expected(cm, texts)]
    assert ray_engine.unpack_artefact(ray_engine.pack_artefact(compiled), cache_root=tmp_path / "node2") \
        .joinpath(cm.manifest["weights"]).read_bytes() == (compiled / cm.manifest["weights"]).read_bytes()


def test_a_ray_folder_output_is_the_local_engines_bad_rows_included(tiny, local_ray, tmp_path, capsys):
    """-o DIR/ with --engine ray: the actors read, score and commit whole parts into the folder;
    the parts and DIR/_errors.jsonl are the local engine's, bad rows (not UTF-8, not JSON, no text
    column, empty text) kept in place with their reason; a second run on the folder is refused."""
    compiled, cm = tiny
    pytest.importorskip("pyarrow")
    from test_score_folder import read_folder
    good = random_texts(60, seed=24)
    lines = [json.dumps({"key": f"k{i}", "text": t}).encode() for i, t in enumerate(good)]
    lines[3] = b'{"key": "u3", "text": "caf\xe9 latin-1"}'
    lines[20] = b"{not json"
    lines[33] = json.dumps({"key": "m33", "body": "no text column"}).encode()
    lines[47] = json.dumps({"key": "e47", "text": ""}).encode()
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    common = [str(compiled), str(src), "--id-column", "key", "--part-rows", "16", "--chunk-rows", "5", "-q"]
    local, out = str(tmp_path / "local") + "/", str(tmp_path / "ray") + "/"
    assert main(["score", *common, "-o", local]) == 0
    assert main(["score", *common, "-o", out, "--engine", "ray", "--workers", "2",
                 "--summary", str(tmp_path / "s.json")]) == 0
    rows = read_folder(out)
    assert rows == read_folder(local)
    assert [r["row"] for r in rows] == list(range(60))
    assert (Path(out) / "_errors.jsonl").read_bytes() == (Path(local) / "_errors.jsonl").read_bytes()
    errs = read_jsonl(Path(out) / "_errors.jsonl")
    assert [(e["row"], e["id"]) for e in errs] == [(3, None), (20, None), (33, "m33"), (47, "e47")]
    ok = [i for i in range(60) if i not in (3, 20, 33, 47)]
    assert [rows[i]["id"] for i in ok] == [f"k{i}" for i in ok]
    assert [rows[i]["exit_layer"] for i in ok] == [w["exit_layer"] for w in expected(cm, [good[i] for i in ok])]
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["rows"], s["scored"], s["errors"]) == (60, 56, 4)
    assert main(["score", *common, "-o", out, "--engine", "ray", "--workers", "2"]) == 1
    assert "holds a finished run" in capsys.readouterr().err


def test_a_ray_folder_run_sigkilled_mid_run_resumes_to_the_uninterrupted_rows(tiny, tmp_path):
    """A real `refexit score --engine ray -o DIR/` process (its own local Ray), SIGKILLed once 10
    of its 48 parts are committed: a resume with other options is refused; resumed with --engine
    ray, and (a copy of the folder) with the local engine, each has exactly one row per input row
    (ids checked), the rows and errors file of an uninterrupted run."""
    compiled, _ = tiny
    require_ray()
    pytest.importorskip("pyarrow")
    from test_score_folder import markers, read_folder, write_input
    n = 24000
    src = write_input(tmp_path / "in.jsonl", n, seed=27, bad_every=1009)
    cmd = [sys.executable, "-m", "refexit.cli.main", "score", str(compiled), str(src), "--id-column", "id",
           "--part-rows", "500", "--chunk-rows", "100", "--batch", "1", "-q"]
    ray_cmd = cmd + ["--engine", "ray", "--address", "local", "--workers", "2"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    ref = str(tmp_path / "ref") + "/"
    subprocess.run(cmd + ["-o", ref], check=True, env=env, cwd=ROOT, capture_output=True)
    out = str(tmp_path / "out") + "/"
    kill_when(ray_cmd + ["-o", out], env, lambda: len(markers(out)) >= 10, "10 parts")
    assert 10 <= len(markers(out)) < n // 500
    out_local = str(tmp_path / "out-local") + "/"
    # (the killed run's actors may still be writing: their temporaries come and go)
    shutil.copytree(out, out_local, ignore=shutil.ignore_patterns("*.tmp"))

    r = subprocess.run(cmd + ["-o", out, "--resume", "--logits"], env=env, cwd=ROOT,     # (no Ray start-up)
                       capture_output=True, text=True)
    assert r.returncode == 1 and "--resume" in r.stderr and "logits" in r.stderr, r.stderr
    r = subprocess.run(ray_cmd + ["-o", out, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = read_folder(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(n)]
    assert rows == read_folder(ref)
    assert (Path(out) / "_errors.jsonl").read_bytes() == (Path(ref) / "_errors.jsonl").read_bytes()

    r = subprocess.run(cmd + ["-o", out_local, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert read_folder(out_local) == read_folder(ref)
