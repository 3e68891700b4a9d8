"""Smoke tests of tools/bench.py on a tiny random model: the measurement functions, the JSON
document and the ratios. No wall-clock assertions: only that what is reported is computed from
what was measured."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import refexit
from refexit import synthetic
from refexit.cli import bench as bench_cli

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
    data: list = []
    assert tool.main(["--model", "minilm-l12", "--rows", "4"], rows_out=data) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["qkvo"], ["up"], ["down"])]
    shapes = [("qkvo", 4, 384, 384), ("up", 4, 384, 1536), ("down", 4, 1536, 384)]
    assert [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows] == shapes
    assert [(d["name"], d["M"], d["K"], d["N"]) for d in data] == shapes
    # structure only, never the timings themselves: both rates measured, the ratio is theirs, and
    # each printed figure is its measured value as printed (no re-derivation from rounded rates)
    for r, d in zip(rows, data):
        assert d["ours"] > 0 and d["numpy"] > 0 and d["ratio"] == d["ours"] / d["numpy"]
        assert (r[4], r[5], r[6]) == (f"{d['ours']:.1f}", f"{d['numpy']:.1f}", f"{d['ratio']:.2f}")


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("tool, isa", [("fma_peak.c", ["-fopenmp", "-mavx2", "-mfma"]),
                                       ("fma_peak.c", ["-fopenmp", "-mavx512f"]), ("fma_peak.c", ["-mavx512f"]),
                                       ("tile_ceiling.c", ["-mavx512f", "-mfma"]),
                                       ("lowp_peak.c", []), ("lowp_peak.c", ["-fopenmp"])])
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


# ---------------------------------------------------------------------- bf16 / int8 contenders and peaks
class PrecisionCopy(OracleCopy):
    """The oracle's work at a precision: its own emulation when it has one (oracle = precision),
    else fp32 reported as `precision` (as the int8 peers, which are checked against fp32)."""

    def __init__(self, name, precision, isa=None):
        super().__init__(name, [])
        self.precision, self.isa = precision, isa
        self.oracle = precision if precision in getattr(refexit, "PRECISIONS", ()) else "fp32"

    def setup(self, model, workdir, shared):
        self.model = model if self.oracle == "fp32" else model.with_precision(self.oracle)


FAKE_PEAKS = {"vdpbf16ps": {"gflops": 50.0}, "tdpbf16ps": {"gflops": 1000.0},
              "vpdpbusd": {"gflops": None, "why": "the CPU has no AVX512-VNNI"}, "tdpbusd": {"gflops": 2000.0}}


def test_lowp_peaks_are_measured_or_skipped_with_the_reason(doc):
    peaks = doc["sgemm"][0]["lowp_peaks"]
    assert set(peaks) == set(bench.LOWP_PEAKS)
    for name, p in peaks.items():
        assert (p["gflops"] is not None and p["gflops"] > 0) or p["why"], (name, p)
    for r in doc["results"]:                      # fp32 rows: their share of the fp32 FMA peak, if measured
        assert r["precision"] == "fp32" and r["oracle"] == "fp32"
        fma = doc["sgemm"][0]["fma_peak"].get("gflops")
        assert r["peak"] == ("fma" if fma else None)
        if fma:
            assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / fma)


def test_parse_lowp_peaks():
    text = ("vdpbf16ps 106.1\ntdpbf16ps skip: the CPU has no AMX-TILE / AMX-BF16\nsomething else\n"
            "vpdpbusd 768.5\ntdpbusd garbage\n")
    assert bench.parse_lowp_peaks(text) == {
        "vdpbf16ps": {"gflops": 106.1}, "tdpbf16ps": {"gflops": None, "why": "the CPU has no AMX-TILE / AMX-BF16"},
        "vpdpbusd": {"gflops": 768.5}, "tdpbusd": {"gflops": None, "why": "unreadable output: 'tdpbusd garbage'"}}


def test_rows_are_set_against_their_own_peak(tiny, tmp_path, monkeypatch):
    """bf16 on AMX: the TDPBF16PS peak; bf16 otherwise: VDPBF16PS; int8: TDPBUSD on AMX or when the
    runtime's kernels are unknown, VPDPBUSD on vector kernels (here not measured: no share)."""
    monkeypatch.setattr(bench, "measure_fma_peak", lambda n, w: {"gflops": 100.0})
    monkeypatch.setattr(bench, "measure_lowp_peaks", lambda n, w: json.loads(json.dumps(FAKE_PEAKS)))
    cs = [bench.NumpyOracle(), PrecisionCopy("bf16-amx", "bf16", "amx"), PrecisionCopy("bf16-vec", "bf16", "avx512bf16"),
          PrecisionCopy("int8-unknown", "int8"), PrecisionCopy("int8-vec", "int8", "vector")]
    d = bench.run_bench({"tiny": tiny}, [(1, 5)], [1], contenders_by_model={"tiny": cs}, reps=1, warmup=0, gap_ms=0,
                        peak_size=32, sgemm_samples=1, baseline="numpy", workdir=tmp_path, log=lambda s: None)
    want = {"numpy": ("fma", 100.0), "bf16-amx": ("tdpbf16ps", 1000.0), "bf16-vec": ("vdpbf16ps", 50.0),
            "int8-unknown": ("tdpbusd", 2000.0), "int8-vec": (None, None)}
    rows = {r["contender"]: r for r in d["results"]}
    assert set(rows) == set(want)
    for name, (peak, g) in want.items():
        assert rows[name]["peak"] == peak
        assert rows[name]["pct_peak"] == (pytest.approx(100 * rows[name]["gflops"] / g) if g else None)
    table = bench.format_table(d)
    assert "tdpbf16ps (AMX-BF16) 1000.0" in table and "vpdpbusd (AVX512-VNNI int8) skipped: the CPU has no" in table


def test_bf16_rows_are_checked_against_the_bf16_oracle(tiny):
    """ours-bf16's max|dz| is taken against model.with_precision("bf16"): a contender that computes
    exactly that emulation agrees to 0, and so does the fp32 oracle with itself."""
    if "bf16" not in getattr(refexit, "PRECISIONS", ()):
        pytest.skip("refexit has no bf16 emulation")
    fp32, bf16 = OracleCopy("fp32", []), PrecisionCopy("bf16", "bf16", "amx")
    for c in (fp32, bf16):
        c.setup(tiny, None, {})
    oracles = {}
    res = bench.measure_case(tiny, [fp32, bf16], 2, 6, reps=1, warmup=0, oracles=oracles)
    assert res["fp32"]["oracle"] == "fp32" and res["bf16"]["oracle"] == "bf16"
    assert res["fp32"]["max_abs_diff"] == 0.0 and res["bf16"]["max_abs_diff"] == 0.0
    assert set(oracles) == {"fp32", "bf16"} and oracles["bf16"].precision == "bf16"   # emulated once, kept
    enc = bench.make_input(tiny, 2, 6)
    assert np.max(np.abs(oracles["bf16"].classify(enc).logits - tiny.classify(enc).logits)) > 0


def test_a_failing_bf16_oracle_fails_only_its_rows(tiny):
    class NoEmulation:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def with_precision(self, p):
            raise ValueError("no emulation")

    fp32, bf16 = OracleCopy("fp32", []), PrecisionCopy("bf16", "bf16")
    bf16.oracle = "bf16"
    for c in (fp32, bf16):
        c.setup(tiny, None, {})
    res = bench.measure_case(NoEmulation(), [fp32, bf16], 1, 4, reps=1, warmup=0)
    assert res["fp32"]["max_abs_diff"] == 0.0
    assert res["bf16"] == {"error": "the bf16 oracle failed: ValueError: no emulation"}


def _compile_model_stub(result=None, error=None):
    def compile_model(model, policy=None, out_dir=None, **kw):
        if error is not None:
            raise error
        return result
    return compile_model


@pytest.mark.parametrize("stub, why", [
    (_compile_model_stub(error=TypeError("compile_model() got an unexpected keyword argument 'precision'")),
     "codegen.compile_model (precision='bf16') failed: TypeError: compile_model() got an unexpected keyword "
     "argument 'precision'"),
    (_compile_model_stub(result=argparse.Namespace(precision="fp32", manifest={})),
     "codegen.compile_model(precision='bf16') built a fp32 library")])
def test_ours_bf16_is_skipped_with_the_reason_until_the_compiler_has_it(tiny, tmp_path, monkeypatch, stub, why):
    import codegen
    monkeypatch.setattr(codegen, "compile_model", stub)
    monkeypatch.setattr(bench.refexit, "PRECISIONS", ("fp32", "bf16"), raising=False)
    ready, status = bench.setup_contenders(tiny, [bench.make_contender("ours-bf16", bench.BlasThreads())],
                                           tmp_path, log=lambda s: None)
    assert ready == [] and status["ours-bf16"] == {"available": False, "why": why}


def test_ours_bf16_needs_the_oracle_emulation(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.refexit, "PRECISIONS", ("fp32",), raising=False)
    with pytest.raises(bench.Skip, match=r"the oracle cannot emulate bf16 \(refexit.PRECISIONS\)"):
        bench.Ours("bf16").setup(tiny, tmp_path, {})


def test_ours_bf16_is_the_same_library_at_bf16(tiny, tmp_path):
    """When the compiler builds bf16, ours-bf16 runs it and says which ISA (and so which peak) it used."""
    c = bench.Ours("bf16")
    try:
        c.setup(tiny, tmp_path, {})
    except bench.Skip as e:
        pytest.skip(f"ours-bf16 unavailable: {e}")
    assert c.name == "ours-bf16" and c.precision == "bf16" and c.oracle == "bf16"
    assert c.info["precision"] == "bf16" and c.info["isa"] == c.isa
    assert c.peak_kinds() == (("tdpbf16ps",) if c.isa == "amx" else ("vdpbf16ps",))
    c.set_threads(1)
    res = bench.measure_case(tiny, [c], 2, 6, reps=1, warmup=0)
    assert res["ours-bf16"]["oracle"] == "bf16" and res["ours-bf16"]["max_abs_diff"] < 1e-4


def test_new_contenders_on_the_command_line():
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = bench.resolve(p.parse_args(["--contenders", "ours,ours-bf16,openvino-default,onnxruntime-int8,openvino-int8"]))
    assert args.contenders == ["ours", "ours-bf16", "openvino-default", "onnxruntime-int8", "openvino-int8"]
    assert {"ours-bf16", "ours-int8", "onnxruntime-int8", "openvino-int8"} <= set(bench.resolve(p.parse_args([])).contenders)
    with pytest.raises(SystemExit, match="unknown contender 'ours-int4'"):
        bench.resolve(p.parse_args(["--contenders", "ours-int4"]))
    names = ("ours-bf16", "ours-int8", "onnxruntime-int8", "openvino-int8")
    made = {n: bench.make_contender(n, bench.BlasThreads()) for n in names}
    assert {n: (c.name, c.precision, c.oracle) for n, c in made.items()} == {
        "ours-bf16": ("ours-bf16", "bf16", "bf16"), "ours-int8": ("ours-int8", "int8", "int8"),
        "onnxruntime-int8": ("onnxruntime-int8", "int8", "fp32"), "openvino-int8": ("openvino-int8", "int8", "fp32")}


def _lowp_doc(doc):
    """The fixture's document with its rows renamed: ours and onnxruntime (fp32), then ours-bf16,
    openvino-default and onnxruntime-int8 rows with made-up medians and peak shares."""
    d = json.loads(json.dumps(doc))
    d["sgemm"][0]["fma_peak"] = {"gflops": 50.0}
    fp32 = [dict(r, contender={"numpy": "ours", "copy": "onnxruntime"}[r["contender"]]) for r in d["results"]]
    extra = []
    for r in (r for r in fp32 if r["contender"] == "ours"):
        t = r["seq"]
        extra += [dict(r, contender="ours-bf16", median_ms=2.0 * t, precision="bf16", oracle="bf16",
                       peak="tdpbf16ps", pct_peak=40.0 + t),
                  dict(r, contender="openvino-default", median_ms=4.0 * t, precision="bf16", oracle="fp32",
                       peak="tdpbf16ps", pct_peak=20.0 + t),
                  dict(r, contender="onnxruntime-int8", median_ms=3.0 * t, precision="int8", oracle="fp32",
                       peak="tdpbusd", pct_peak=10.0)]
    return dict(d, results=fp32), dict(d, results=fp32 + extra)


def test_markdown_summary_adds_a_bf16_table_and_keeps_the_fp32_one(doc):
    only_fp32, mixed = _lowp_doc(doc)
    assert "bf16 / int8" not in bench.markdown_summary(only_fp32)
    # the fp32 table (which always showed openvino-default as "openvino bf16") is what it was
    # before the bf16 / int8 contenders existed, figure for figure
    old = dict(mixed, results=[r for r in mixed["results"] if r["contender"] in ("ours", "onnxruntime",
                                                                              "openvino-default")])
    header = "**tiny, 1 thread, bf16 / int8** (median ms)"
    after = bench.markdown_summary(mixed)
    assert after.split(header)[0] == bench.markdown_summary(old).split(header)[0]
    lines = (header + after.split(header)[1]).strip("\n").splitlines()
    assert lines[0] == header
    assert lines[2] == ("| case | ours-bf16 | openvino bf16 | onnxruntime-int8 | ours-bf16 / openvino bf16 "
                        "| ours-bf16, % of bf16 peak | openvino bf16, % of bf16 peak |")
    for b, t in [(1, 5), (2, 7)]:
        row = next(line for line in lines if line.startswith(f"| {b}x{t} |")).strip("| ").split(" | ")
        assert row[1:] == [f"{2.0 * t:.1f}", f"{4.0 * t:.1f}", f"{3.0 * t:.1f}", "0.50",
                           f"{40 + t}% (tdpbf16ps)", f"{20 + t}% (tdpbf16ps)"]


def test_format_table_names_each_rows_oracle_and_the_bf16_ratio(doc):
    _, mixed = _lowp_doc(doc)
    table = bench.format_table(mixed)
    rows = {line.split()[3]: line.split() for line in table.splitlines()
            if line.startswith("tiny") and line.split()[1] == "2x7"}
    assert rows["ours-bf16"][-1] == "bf16" and rows["openvino-default"][-1] == "fp32"
    assert rows["ours"][-1] == "fp32" and rows["onnxruntime-int8"][-1] == "fp32"
    assert "47% tdpbf16ps" in " ".join(rows["ours-bf16"])
    assert "bf16: ours-bf16 / openvino-default" in table and "  tiny 2x7 threads=1: 0.50" in table
    assert bench.bf16_ratios(mixed) == {("tiny", 1, 1, 5): 0.5, ("tiny", 1, 2, 7): 0.5}


def test_int8_peers_compute_the_same_model(tiny, tmp_path):
    """onnxruntime-int8 (quantize_dynamic) and openvino-int8 (NNCF, when installed) run the same
    model: checked against the fp32 oracle, within int8's error on this tiny model."""
    for mod in ("torch", "transformers", "onnxruntime"):
        pytest.importorskip(mod)
    names = ["onnxruntime-int8"] + (["openvino-int8"] if _importable("openvino") and _importable("nncf") else [])
    d = bench.run_bench({"tiny": tiny}, [(2, 6)], [1], contender_names=["numpy"] + names, reps=1, warmup=0,
                        gap_ms=0, peak_size=32, sgemm_samples=1, baseline="numpy", workdir=tmp_path,
                        fma_peak=False, log=lambda s: None)
    st = d["contenders"]["tiny"]
    for n in names:
        assert st[n]["available"], st[n]
        assert "quantiz" in st[n]["quantization"]
    rows = {r["contender"]: r for r in d["results"]}
    for n in names:
        assert rows[n]["precision"] == "int8" and rows[n]["oracle"] == "fp32"
        assert 0 < rows[n]["max_abs_diff_vs_oracle"] < 0.05


def test_openvino_int8_is_skipped_with_the_reason_without_nncf(tiny, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    for mod in ("torch", "transformers"):
        pytest.importorskip(mod)
    import sys
    monkeypatch.setitem(sys.modules, "nncf", None)            # import nncf -> ImportError
    ready, status = bench.setup_contenders(tiny, [bench.make_contender("openvino-int8", bench.BlasThreads())],
                                           tmp_path, log=lambda s: None)
    assert ready == [] and status["openvino-int8"] == {"available": False,
                                                       "why": "not installed: nncf (pip install nncf)"}


def _cpu_flags() -> set:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("omp", [[], ["-fopenmp"]])
def test_lowp_peak_tool_prints_a_peak_or_a_reason(cc, omp, tmp_path):
    """tools/lowp_peak.c (no -m flags: per-function target attributes) builds warning-free and
    prints one parseable line per peak: a rate, or `skip:` and why (CPU, compiler, kernel)."""
    import platform
    import shutil
    import subprocess

    from codegen import build
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 code")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    if omp and not build.openmp_supported(cc):
        pytest.skip(f"{cc} cannot build OpenMP code here")
    exe = tmp_path / "lowp_peak"
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", *omp, str(bench_cli.TOOL.parent / "lowp_peak.c"),
                        "-o", str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe), "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(bench.LOWP_PEAKS)
    peaks = bench.parse_lowp_peaks(out.stdout)
    flags = _cpu_flags()
    needs = {"vdpbf16ps": "avx512_bf16", "tdpbf16ps": "amx_bf16", "vpdpbusd": "avx512_vnni", "tdpbusd": "amx_int8"}
    for name, p in peaks.items():
        if p["gflops"] is None:
            assert p["why"], name
            assert needs[name] not in flags or "arch_prctl" in p["why"] or "compiler" in p["why"], (name, p)
        else:
            assert p["gflops"] > 0 and needs[name] in flags, (name, p)
    one = subprocess.run([str(exe), "1", "vpdpbusd"], capture_output=True, text=True, timeout=120)
    assert [line.split()[0] for line in one.stdout.splitlines()] == ["vpdpbusd"]
    bad = subprocess.run([str(exe), "1", "fp64"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown peak fp64" in bad.stderr
    if not omp:
        two = bench.parse_lowp_peaks(subprocess.run([str(exe), "2"], capture_output=True, text=True,
                                                    timeout=60).stdout)
        assert set(two) == set(bench.LOWP_PEAKS)
        assert all(p["gflops"] is None for p in two.values())
        assert all(p["why"] == "built without OpenMP, only 1 thread" for n, p in two.items() if peaks[n]["gflops"])
