"""The Ray engine of `refexit score` (refexit/score/ray_engine.py) on a local Ray with 2 CPUs: the
same output as the local engine, byte for byte; a scoring actor SIGKILLed mid-run is restarted and
its batch retried, so every input row comes out exactly once; the artefact shipped to a worker is
rebuilt there from its C source when the shipped library does not load. Skipped, saying so, when
Ray Data is not installed (pip install '.[ray]')."""
from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import pytest

import refexit
from refexit import tables
from refexit.cli.main import main
from refexit.synthetic import random_model, save_model

import codegen
from refexit.score import ray_engine

from test_score import expected, random_texts, read_jsonl


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
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        pytest.skip("Ray Data is not installed (pip install '.[ray]'): the Ray engine is optional")
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


def test_folder_output_keeps_rays_files_unmerged(tiny, local_ray, tmp_path, capsys):
    """-o DIR/ (or a URI) with --engine ray: Ray's Parquet files are the output (the cluster case:
    no merge through the driver); ids come from --id-column, which it needs."""
    compiled, cm = tiny
    pq = pytest.importorskip("pyarrow.parquet")
    texts = random_texts(120, seed=24)
    src = tables.write_rows(tmp_path / "in.jsonl", [{"key": f"k{i}", "text": t} for i, t in enumerate(texts)])
    out = str(tmp_path / "out") + "/"
    assert main(["score", str(compiled), str(src), "-o", out, "--engine", "ray", "-q"]) == 1
    assert "--id-column" in capsys.readouterr().err
    assert main(["score", str(compiled), str(src), "-o", out, "-q", "--id-column", "key"]) == 1   # local: a file
    assert main(["score", str(compiled), str(src), "-o", out, "--engine", "ray", "-q", "--id-column", "key",
                 "--summary", str(tmp_path / "s.json")]) == 0
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(f"k{i}" for i in range(120))
    by_id = {r["id"]: r for r in rows}
    want = expected(cm, texts)
    assert [by_id[f"k{i}"]["exit_layer"] for i in range(120)] == [w["exit_layer"] for w in want]
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["rows"], s["scored"], s["errors"]) == (120, 120, 0)
