"""Smoke tests of tools/bench.py on a tiny random model: the measurement functions, the JSON
document and the ratios. No wall-clock assertions: only that what is reported is computed from
what was measured."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from refexit import bench_cli, synthetic

bench = bench_cli.load_tool()
pytestmark = pytest.mark.skipif(bench is None, reason="tools/bench.py is not in this checkout")


class OracleCopy(bench.Contender if bench else object):
    """A second contender that does the oracle's work under another name, recording its calls."""

    def __init__(self, name, calls):
        super().__init__(name)
        self.calls = calls

    def setup(self, model, workdir, shared):
        self.model = model

    def call(self):
        self.calls.append(self.name)
        return self.model.classify(self.enc)


class Unavailable(bench.Contender if bench else object):
    def setup(self, model, workdir, shared):
        raise bench.Skip("not installed here")


@pytest.fixture(scope="module")
def tiny():
    return synthetic.random_model(num_layers=2, hidden=16, heads=2, intermediate=24, num_labels=2,
                                  vocab_size=60, max_position=32, seed=1)


@pytest.fixture(scope="module")
def doc(tiny, tmp_path_factory):
    contenders = [bench.NumpyOracle(), OracleCopy("copy", []), Unavailable("absent")]
    return bench.run_bench({"tiny": tiny}, [(1, 5), (2, 7)], [1], contenders_by_model={"tiny": contenders},
                           reps=2, warmup=1, gap_ms=0, peak_size=64, sgemm_samples=2, baseline="numpy",
                           workdir=tmp_path_factory.mktemp("bench"), log=lambda s: None)


def test_results_are_the_measured_statistics(doc, tiny):
    rows = doc["results"]
    assert {(r["batch"], r["seq"], r["contender"]) for r in rows} == {
        (b, t, c) for b, t in [(1, 5), (2, 7)] for c in ("numpy", "copy")}
    for r in rows:
        t = np.asarray(r["times_ms"])
        assert len(t) == 2 and np.all(t > 0)
        assert r["median_ms"] == pytest.approx(np.median(t))
        assert r["p10_ms"] == pytest.approx(np.percentile(t, 10))
        assert r["p90_ms"] == pytest.approx(np.percentile(t, 90))
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["flops"] == bench.case_flops(tiny, r["batch"], r["seq"])
        assert r["flops"] == r["batch"] * (2 * tiny.layer_flops(r["seq"]) + tiny.exits.heads[-1].flops(r["seq"]))
        assert r["gflops"] == pytest.approx(r["flops"] / (r["median_ms"] / 1e3) / 1e9)
        sq = next(s for s in doc["sgemm"] if s["threads"] == r["threads"])["square"]["gflops"]
        assert r["pct_sgemm_square"] == pytest.approx(100 * r["gflops"] / sq)
        assert r["max_abs_diff_vs_oracle"] == 0.0          # both run the oracle on the same input


def test_ratios_come_from_the_medians(doc):
    med = {(r["batch"], r["seq"], r["contender"]): r["median_ms"] for r in doc["results"]}
    assert len(doc["ratios"]) == 2
    for q in doc["ratios"]:
        assert q["baseline"] == "numpy" and q["peer"] == "copy"
        assert q["ratio"] == pytest.approx(med[(q["batch"], q["seq"], "numpy")] / med[(q["batch"], q["seq"], "copy")])


def test_document_structure_and_json_roundtrip(doc, tmp_path):
    assert doc["format"] == bench.JSON_FORMAT
    assert doc["settings"]["reps"] == 2 and doc["settings"]["cases"] == ["1x5", "2x7"]
    m = doc["machine"]
    assert {"cpu", "flags", "numpy", "packages", "python"} <= set(m)
    assert {"avx2", "avx512f"} <= set(m.get("flags", {"avx2": 0, "avx512f": 0}))
    st = doc["contenders"]["tiny"]
    assert st["numpy"]["available"] and st["copy"]["available"]
    assert st["absent"] == {"available": False, "why": "not installed here"}
    sg = doc["sgemm"][0]
    assert sg["threads"] == 1 and sg["square"]["size"] == 64 and sg["square"]["gflops"] > 0
    shapes = {(s["batch"], s["seq"]): s for s in sg["shapes"]}
    assert set(shapes) == {(1, 5), (2, 7)}
    g = shapes[(2, 7)]["gemms"]
    assert [(x["gemm"], x["M"], x["K"], x["N"], x["count"]) for x in g] == [
        ("qkvo", 14, 16, 16, 4), ("up", 14, 16, 24, 1), ("down", 14, 24, 16, 1)]
    path = tmp_path / "out.json"
    bench.write_json(doc, path)
    back = json.loads(path.read_text())
    assert back["ratios"] == json.loads(json.dumps(doc["ratios"]))
    assert len(back["results"]) == len(doc["results"])
    table = bench.format_table(doc)
    assert "copy" in table and "numpy/x" in table and "skipped: not installed here" in table


def test_markdown_summary_is_computed_from_the_document(doc):
    """Rename the two measured contenders to ours and a fp32 peer: the summary's ratio and share of
    the FMA peak are the document's own numbers."""
    d = json.loads(json.dumps(doc))
    for r in d["results"]:
        r["contender"] = {"numpy": "ours", "copy": "onnxruntime"}[r["contender"]]
    d["sgemm"][0]["fma_peak"] = {"gflops": 50.0}
    lines = bench.markdown_summary(d).splitlines()
    assert lines[0] == "**tiny, 1 thread** (median ms)"
    med = {(r["batch"], r["seq"], r["contender"]): r for r in d["results"]}
    for b, t in [(1, 5), (2, 7)]:
        row = next(line for line in lines if line.startswith(f"| {b}x{t} |")).strip("| ").split(" | ")
        ours, peer = med[(b, t, "ours")], med[(b, t, "onnxruntime")]
        assert row[1] == f"{ours['median_ms']:.1f}" and row[2] == f"{peer['median_ms']:.1f}"
        assert row[3] == f"{ours['median_ms'] / peer['median_ms']:.2f} (onnxruntime)"
        assert row[4] == f"{100 * ours['gflops'] / 50.0:.0f}%"


def test_interleaved_round_robin(tiny):
    calls = []
    a, b = OracleCopy("a", calls), OracleCopy("b", calls)
    for c in (a, b):
        c.setup(tiny, None, {})
    res = bench.measure_case(tiny, [a, b], 1, 4, reps=3, warmup=1, gap_ms=0)
    # one untimed trial call each, then warm-up + reps with the starting contender rotating
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(res["a"]["times_ms"]) == 3 and len(res["b"]["times_ms"]) == 3


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    rc = bench.main(["--models", "tiny", "--cases", "1x4", "--threads", "1", "--reps", "2", "--warmup", "0",
                     "--peak-size", "32", "--contenders", "numpy,ours", "--gap-ms", "0", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert [r["contender"] for r in d["results"]][0] == "numpy"
    assert "ours" in d["contenders"]["tiny"]           # measured, or skipped with the reason
    if not d["contenders"]["tiny"]["ours"]["available"]:
        assert d["contenders"]["tiny"]["ours"]["why"] and d["settings"]["baseline"] == "numpy"


def test_refexit_bench_subcommand():
    p = argparse.ArgumentParser()
    bench_cli.add_subcommand(p.add_subparsers(dest="command"))
    args = p.parse_args(["bench", "--quick", "--cases", "1x16,8x128", "--threads", "2"])
    assert args.func is bench.run and args.quick and args.cases == [(1, 16), (8, 128)] and args.threads == [2]
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--cases", "128"])


class Broken(bench.Contender if bench else object):
    def call(self):
        raise RuntimeError("boom")


def test_a_contender_that_fails_is_reported_not_fatal(tiny, tmp_path):
    d = bench.run_bench({"tiny": tiny}, [(1, 3)], [1], contenders_by_model={"tiny": [bench.NumpyOracle(), Broken("broken")]},
                        reps=1, warmup=0, gap_ms=0, peak_size=32, sgemm_samples=1, baseline="broken",
                        workdir=tmp_path, log=lambda s: None)
    assert [r["contender"] for r in d["results"]] == ["numpy"]
    assert d["failures"] == [{"model": "tiny", "batch": 1, "seq": 3, "threads": 1, "contender": "broken",
                              "error": "RuntimeError: boom"}]
    assert d["ratios"] == []                              # no baseline measured, no ratio invented


def test_peers_compute_the_same_logits(tiny, tmp_path):
    """When the peers are installed (pip install .[bench]), each one is the same model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    names = ["torch"] + [n for n, mod in (("onnxruntime", "onnxruntime"), ("openvino-f32", "openvino"))
                         if _importable(mod)]
    blas = bench.BlasThreads()
    d = bench.run_bench({"tiny": tiny}, [(2, 6)], [1], contender_names=["numpy"] + names, reps=1, warmup=0,
                        gap_ms=0, peak_size=32, sgemm_samples=1, baseline="numpy", workdir=tmp_path,
                        blas=blas, log=lambda s: None)
    assert d["models"]["tiny"]["hf_folder_check"]["max_abs_weight_diff"] == 0.0
    got = {r["contender"]: r["max_abs_diff_vs_oracle"] for r in d["results"]}
    assert set(got) == {"numpy", *names}
    assert all(v < 1e-4 for v in got.values()), got


def _importable(mod):
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def test_gemm_tool_times_our_kernel_and_numpy(capsys):
    """tools/bench_gemm.py: one row per GEMM shape, with both rates measured and their ratio."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_gemm", bench_cli.TOOL.parent / "bench_gemm.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--model", "minilm-l12", "--rows", "4"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["qkvo"], ["up"], ["down"])]
    assert [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows] == [
        ("qkvo", 4, 384, 384), ("up", 4, 384, 1536), ("down", 4, 1536, 384)]
    for r in rows:
        ours, numpy_rate, ratio = float(r[4]), float(r[5]), float(r[6])
        assert ours > 0 and numpy_rate > 0 and ratio == pytest.approx(ours / numpy_rate, rel=0.02)  # printed rounded


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("tool, isa", [("fma_peak.c", ["-fopenmp", "-mavx2", "-mfma"]),
                                       ("fma_peak.c", ["-fopenmp", "-mavx512f"]), ("fma_peak.c", ["-mavx512f"]),
                                       ("tile_ceiling.c", ["-mavx512f", "-mfma"])])
def test_c_tools_compile_warning_free(cc, tool, isa, tmp_path):
    """The standalone C tools beside bench.py (the FMA peak, the tile ceiling) build with
    -Wall -Wextra -Werror, so that the commands quoted in docs/benchmarks.md keep working."""
    import platform
    import shutil
    import subprocess

    from codegen import build
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the C tools are x86 (AVX2 / AVX-512) code")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    if "-fopenmp" in isa and not build.openmp_supported(cc):
        pytest.skip(f"{cc} cannot build OpenMP code here (as tools/bench.py, which then runs without it)")
    src = bench_cli.TOOL.parent / tool
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", *isa, "-c", str(src), "-o", str(tmp_path / "t.o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t.o").stat().st_size > 0
