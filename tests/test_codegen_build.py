"""The generated C and how it is built and loaded: warning-free under gcc and clang with
-std=c99 -pedantic -Wall -Wextra -Werror, with and without OpenMP; every exported symbol prefixed;
two models in one process (cffi) and in one C program; two handles in parallel threads; the build
cache; the templates found from a non-editable install; the CLI."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

import refexit
from refexit.synthetic import random_model, save_model

import codegen
from codegen import build, emit, pack
from codegen.lower import lower

ROOT = Path(__file__).resolve().parent.parent
ALL_POLICIES = {
    "entropy": lambda C, L: refexit.Entropy(0.5), "norm_entropy": lambda C, L: refexit.NormEntropy(0.5, inclusive=False),
    "max_prob": lambda C, L: refexit.MaxProb(0.6), "learned": lambda C, L: refexit.Learned(0.5),
    "ponder": lambda C, L: refexit.Ponder(0.5), "patience": lambda C, L: refexit.Patience(1, tau=0.1 if C == 1 else None),
    "window": lambda C, L: refexit.Window(2, tau=0.1 if C == 1 else None), "static": lambda C, L: refexit.Static(1),
    "de3": lambda C, L: refexit.DistanceEntropy(0.5), "edgebert": lambda C, L: refexit.PredictedExit(0.5),
    "ceebert": lambda C, L: refexit.CeeBERT(0.05),
    "gpf": lambda C, L: refexit.GlobalPastFuture(0.5), "dact": lambda C, L: refexit.DACT(),
}
ALL_POLICIES["smartbert"] = lambda C, L: refexit.SkipEntropy(0.5)      # its skip gates: model_for(gates=6)
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert")
# every policy, every head kind, regression where allowed, each activation
COMBOS = [(kind, pol, C) for i, pol in enumerate(ALL_POLICIES) for kind, C in
          [(KINDS[i % 4], 3)] + ([(KINDS[(i + 1) % 4], 1)] if pol in ("learned", "ponder", "patience", "window", "static") else [])]


def model_for(kind, C, seed=0, **kw):
    act = {"pooler_linear": "gelu", "shared_pooler": "gelu_new", "mean_linear": "relu", "fastbert": "gelu"}[kind]
    args = dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=C, vocab_size=50, max_position=24,
                head_kind=kind, hidden_act=act, l2norm=kind == "mean_linear", fastbert_width=12,
                fastbert_heads=3, seed=seed, prototypes=True, edge_rows=4, gpf=True, dact=True, gates=6)
    args.update(kw)
    return random_model(**args)


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


ENC = {"input_ids": np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0], [2, 4, 5, 6, 7, 3]]),
       "attention_mask": np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]),
       "token_type_ids": np.array([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]])}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Generated .c/.h for every COMBO (emitted once for the module)."""
    root = tmp_path_factory.mktemp("pedantic")
    out = {}
    for kind, pol, C in COMBOS:
        model = model_for(kind, C)
        plan = quiet(lower, model, ALL_POLICIES[pol](C, model.num_layers), prefix=f"x_{kind}_{pol}_{C}")
        out[(kind, pol, C)] = emit.write_sources(plan, root / f"{kind}_{pol}_{C}")[1]
    for i, kind in enumerate(KINDS):              # token reduction (refexit/tokens.py), each precision
        model = model_for(kind, 3).with_token_reduction(refexit.TokenReduction([1.0, 0.7, 0.5]))
        prec = ("fp32", "bf16", "int8", "fp32")[i]
        plan = quiet(lower, model, refexit.MaxProb(0.6), prefix=f"x_{kind}_keep_{prec}", precision=prec)
        out[(kind, f"keep_{prec}", 3)] = emit.write_sources(plan, root / f"{kind}_keep_{prec}")[1]
    return out


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_warning_free_pedantic_c99(cc, sources, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (.ci/run installs clang; apt-get install -y clang)")
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    for i, ((kind, pol, C), c_path) in enumerate(sources.items()):
        # the portable build for every combination; the SIMD builds (compiling needs no such CPU)
        # for one combination of each head kind
        isas = ["scalar"] + (["avx2", "avx512"] if x86 and (i < len(KINDS) or pol == "keep_fp32") else [])
        for isa in isas:
            for omp in ([None, False] if (kind, pol, C) == COMBOS[0] else [None]):
                build.compile_c(c_path, tmp_path / f"{c_path.stem}_{omp}_{isa}.so", cc,
                                build.flags(cc, omp, ["-pedantic"], isa=isa))


def test_every_exported_symbol_is_prefixed(tmp_path):
    if shutil.which("nm") is None:
        pytest.skip("nm is not installed")
    model = model_for("fastbert", 3)
    cm = quiet(codegen.compile_model, model, refexit.Ponder(0.5), tmp_path, prefix="zz_pref")
    out = subprocess.run(["nm", "-D", "--defined-only", str(cm.out_dir / cm.manifest["library"])],
                         capture_output=True, text=True, check=True).stdout
    syms = [line.split()[-1] for line in out.splitlines() if line.split()[-2:-1] in (["T"], ["D"], ["B"], ["R"])]
    assert syms and all(s.startswith("zz_pref_") for s in syms), syms
    header = (tmp_path / "zz_pref.h").read_text()
    for s in ("zz_pref_open", "zz_pref_classify_batch", "zz_pref_set_thresholds", "zz_pref_strerror"):
        assert s in syms and s + "(" in header


def test_provenance_and_round_trip_floats(tmp_path):
    model = model_for("pooler_linear", 3, eps=1e-7)
    thr = [0.1234567, 0.3]
    plan = quiet(lower, model, refexit.MaxProb(thr, temperatures=[0.7, 1.3, 1.0]), prefix="prov")
    h, c = emit.emit(plan)
    for text in (h, c):
        head = text[:1500]
        assert text.startswith("/*") and refexit.__version__ in head and plan.model_hash in head
        assert "MaxProb(threshold=[0.1234567, 0.3]" in head and "max_length=" in head
    assert emit.emit(plan) == (h, c)                                    # deterministic (cache key)
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 500), 10.0 ** rng.uniform(-30, 30, 500),
                             [0.0, -0.0, 1.0, 1e-12, 0.1, 3.4028235e38, 1.4e-45]]).astype(np.float32)
    for v in values:
        lit = emit.c_float(v)
        assert np.float32(float(lit[:-1])) == v, (v, lit)
    assert emit.c_float(np.inf) == "INFINITY" and emit.c_float(-np.inf) == "(-INFINITY)"
    assert "0.123456702f" in c and "1.29999995f" in c and emit.c_float(np.float32(1e-7)) in c
    assert emit.c_string('a"b\\c??=d\né') == '"a\\042b\\134c\\077\\077=d\\012\\303\\251"'


def test_build_cache_and_atomic_files(tmp_path, monkeypatch):
    monkeypatch.setenv("REFEXIT_BUILD_CACHE", str(tmp_path / "cache"))
    model = model_for("mean_linear", 2)
    a = quiet(codegen.compile_model, model, refexit.Entropy(0.5), tmp_path / "a", prefix="cache_m")
    b = quiet(codegen.compile_model, model, refexit.Entropy(0.5), tmp_path / "b", prefix="cache_m")
    assert a.manifest["build_key"] == b.manifest["build_key"]
    cached = list((tmp_path / "cache").iterdir())
    assert [p.name for p in cached] == [a.manifest["build_key"] + ".so"]          # no temp files left
    c = quiet(codegen.compile_model, model, refexit.Entropy(0.5), tmp_path / "c", prefix="cache_m",
              openmp=False)
    assert c.manifest["build_key"] != a.manifest["build_key"] and "-fopenmp" not in c.manifest["flags"]
    assert not [p for p in (tmp_path / "a").iterdir() if p.suffix == ".tmp"]
    np.testing.assert_allclose(c.classify(ENC).logits, a.classify(ENC).logits, rtol=1e-6, atol=1e-7)
    # recompiling another model into the same folder/prefix in the same process uses the new code
    other = quiet(codegen.compile_model, model_for("mean_linear", 2, seed=9), refexit.Entropy(0.5),
                  tmp_path / "a", prefix="cache_m")
    ref = model_for("mean_linear", 2, seed=9).astype(np.float64).classify(ENC, refexit.Entropy(0.5))
    np.testing.assert_allclose(other.classify(ENC).logits, ref.logits, rtol=1e-4, atol=1e-5)


def test_build_without_openmp_matches_oracle(tmp_path):
    model = model_for("fastbert", 4)
    pol = refexit.Entropy([0.9, 1.2])
    cm = quiet(codegen.compile_model, model, pol, tmp_path, prefix="noomp", openmp=False)
    assert not cm.manifest["openmp"] and "-fopenmp" not in cm.manifest["flags"]
    ref = quiet(model.astype(np.float64).classify, ENC, pol)
    got = cm.classify(ENC)
    assert got.exit_layers.tolist() == ref.exit_layers.tolist()
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-5)
    cm.set_threads(4)                                              # accepted, no effect
    np.testing.assert_array_equal(cm.classify(ENC).logits, got.logits)


def test_two_prefixes_in_one_process(tmp_path):
    m1, m2 = model_for("pooler_linear", 3, seed=1), model_for("shared_pooler", 2, seed=2, num_layers=2)
    a = quiet(codegen.compile_model, m1, refexit.Patience(1), tmp_path / "one", prefix="alpha")
    b = quiet(codegen.compile_model, m2, refexit.MaxProb(0.7), tmp_path / "two", prefix="beta")
    for cm, m, pol in ((a, m1, refexit.Patience(1)), (b, m2, refexit.MaxProb(0.7)), (a, m1, refexit.Patience(1))):
        ref = quiet(m.astype(np.float64).classify, ENC, pol)
        got = cm.classify(ENC)
        assert got.exit_layers.tolist() == ref.exit_layers.tolist()
        np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-5)
    again = codegen.load_compiled(tmp_path / "one")                  # a second handle, no compiler
    np.testing.assert_array_equal(again.classify(ENC).logits, a.classify(ENC).logits)


MAIN_C = r"""
#include <stdio.h>
#include "alpha.h"
#include "beta.h"

int main(int argc, char **argv) {
    const int32_t ids[] = {2, 7, 8, 9, 3, 2, 11, 3};
    const int32_t lengths[] = {5, 3};
    alpha_model *a = NULL;
    beta_model *b = NULL;
    alpha_result ra[2];
    beta_result rb[2];
    int st;
    if (argc != 3) return 2;
    if ((st = alpha_open(argv[1], &a)) != ALPHA_OK) { printf("alpha: %s\n", alpha_strerror(st)); return 1; }
    if ((st = beta_open(argv[2], &b)) != BETA_OK) { printf("beta: %s\n", beta_strerror(st)); return 1; }
    if (alpha_classify_batch(a, ids, NULL, lengths, 2, ra) || beta_classify_batch(b, ids, NULL, lengths, 2, rb))
        return 1;
    for (int i = 0; i < 2; i++)
        printf("alpha %d %d %.9g\n", ra[i].label, ra[i].exit_layer, ra[i].logits[0]);
    for (int i = 0; i < 2; i++)
        printf("beta %d %d %.9g\n", rb[i].label, rb[i].exit_layer, rb[i].logits[0]);
    printf("%s %d\n", alpha_label_name(a, 1), beta_max_length(b));
    alpha_close(a);
    beta_close(b);
    return 0;
}
"""


def test_two_prefixes_link_into_one_c_program(tmp_path):
    m1, m2 = model_for("pooler_linear", 3, seed=1), model_for("mean_linear", 2, seed=2)
    a = quiet(codegen.compile_model, m1, refexit.Entropy(0.9), tmp_path, prefix="alpha")
    b = quiet(codegen.compile_model, m2, refexit.Window(2), tmp_path, prefix="beta", max_length=9)
    (tmp_path / "main.c").write_text(MAIN_C)
    exe = tmp_path / "prog"
    cmd = ["cc", "-O2", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path),
           str(tmp_path / "main.c"), str(tmp_path / "alpha.c"), str(tmp_path / "beta.c"), "-o", str(exe), "-lm"]
    cmd[1:1] = build.ISA_FLAGS[a.manifest["isa"]]          # the instruction set the libraries use
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe), str(a.weights_path), str(b.weights_path)], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    enc = {"input_ids": np.array([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]]),
           "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    for i, (name, cm) in enumerate((("alpha", a), ("beta", b))):
        r = cm.classify(enc)
        for j in range(2):
            word, label, layer, z0 = out[2 * i + j].split()
            assert (word, int(label), int(layer)) == (name, int(r.labels[j]), int(r.exit_layers[j]))
            assert np.float32(float(z0)) == r.logits[j, 0]
    assert out[4] == "label_1 9"
    bad = subprocess.run([str(exe), str(b.weights_path), str(a.weights_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "another model" in bad.stdout


@pytest.mark.parametrize("kind", ["fastbert", "pooler_linear"])
def test_two_handles_in_parallel_threads(kind, tmp_path):
    """pooler_linear: the last layer runs on [CLS] rows only (moved to the front of a chunk)."""
    model = model_for(kind, 3, num_layers=4, hidden=30, heads=2, intermediate=40)
    pol = refexit.NormEntropy(0.6)
    quiet(codegen.compile_model, model, pol, tmp_path / "t", prefix="thr", max_length=20, max_batch=2, max_tokens=30)
    handles = [codegen.load_compiled(tmp_path / "t") for _ in range(2)]
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 20, 24)
    mask = (np.arange(20)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 50, mask.shape) * mask, "attention_mask": mask}
    expected = handles[0].classify(enc)
    ref = quiet(model.astype(np.float64).classify, enc, pol)
    np.testing.assert_allclose(expected.logits[expected.exit_layers == ref.exit_layers],
                               ref.logits[expected.exit_layers == ref.exit_layers], rtol=1e-4, atol=1e-5)
    errors = []

    def work(cm, threads):
        try:
            cm.set_threads(threads)
            for _ in range(15):
                got = cm.classify(enc)
                np.testing.assert_array_equal(got.logits, expected.logits)
                np.testing.assert_array_equal(got.exit_layers, expected.exit_layers)
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(h, n)) for h, n in zip(handles * 2, (1, 2, 2, 1))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("kind", ["mean_linear", "pooler_linear"])
def test_layers_split_by_rows_match_one_thread_and_the_oracle(kind, tmp_path):
    """Chunks of 60-160 rows: with 2 and 3 threads (>= ROWS_PER_THREAD = 16 rows each) the output
    projection, FFN and LayerNorms of a layer run split by rows; with 1 thread, and for the
    [CLS]-only last layer of pooler_linear (a few rows), split by weight panels. hidden 40: the
    last weight panel is partial (NR = 32). Same bits for every thread count; the oracle's logits
    (float64) within rtol 1e-4 / atol 1e-5 where the exit layer agrees."""
    model = model_for(kind, 5, num_layers=3, hidden=40, heads=2, intermediate=72, max_position=40)
    pol = refexit.NormEntropy(0.6)
    quiet(codegen.compile_model, model, pol, tmp_path / "t", prefix="rows", max_length=40, max_batch=8,
          max_tokens=160)
    cm = codegen.load_compiled(tmp_path / "t")
    rng = np.random.default_rng(7)
    lengths = rng.integers(10, 41, 20)
    mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 50, mask.shape) * mask, "attention_mask": mask}
    got = {}
    for n in (1, 2, 3):
        cm.set_threads(n)
        got[n] = cm.classify(enc)
    for n in (2, 3):
        np.testing.assert_array_equal(got[n].logits, got[1].logits)
        np.testing.assert_array_equal(got[n].exit_layers, got[1].exit_layers)
    ref = quiet(model.astype(np.float64).classify, enc, pol)
    same = got[1].exit_layers == ref.exit_layers
    assert same.sum() >= len(same) - 1
    np.testing.assert_allclose(got[1].logits[same], ref.logits[same], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and 2 CPUs")
def test_threads_on_one_allowed_cpu_and_on_several(tmp_path):
    """The worker nudge (apart_from_master) in a process allowed a single CPU (nowhere to move: the
    2-thread team shares it) and in one allowed every CPU (a worker found on the master's CPU moves,
    when the kernel put it there). Each subprocess
    classifies a batch with 1 and then 2 threads; the results are bitwise the same everywhere."""
    model = model_for("pooler_linear", 3, num_layers=3, hidden=30, heads=2, intermediate=40)
    pol = refexit.NormEntropy(0.6)
    quiet(codegen.compile_model, model, pol, tmp_path / "t", prefix="aff", max_length=20, max_batch=4, max_tokens=40)
    script = (
        "import os, sys, numpy as np, codegen\n"
        "if sys.argv[1] == 'one':\n"
        "    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "cm = codegen.load_compiled(%r)\n"
        "rng = np.random.default_rng(4)\n"
        "mask = (np.arange(20)[None] < rng.integers(1, 21, 9)[:, None]).astype(np.int64)\n"
        "enc = {'input_ids': rng.integers(0, 50, mask.shape) * mask, 'attention_mask': mask}\n"
        "out = []\n"
        "for n in (1, 2, 2):\n"
        "    cm.set_threads(n)\n"
        "    r = cm.classify(enc)\n"
        "    out.append(np.concatenate([r.logits.ravel(), r.exit_layers]))\n"
        "assert all(np.array_equal(out[0], o) for o in out[1:]), 'threads changed the result'\n"
        "np.save(sys.argv[2], out[0])\n"
    ) % str(tmp_path / "t")
    got = {}
    for where in ("one", "all"):
        r = subprocess.run([sys.executable, "-c", script, where, str(tmp_path / f"{where}.npy")], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        got[where] = np.load(tmp_path / f"{where}.npy")
    np.testing.assert_array_equal(got["one"], got["all"])


def test_pyproject_ships_the_templates():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    st = cfg["tool"]["setuptools"]
    assert "codegen.templates" in st["packages"] and st["package-dir"]["codegen.templates"] == "templates"
    assert "*.j2" in st["package-data"]["codegen.templates"]
    assert (ROOT / "templates" / "__init__.py").is_file()


def test_templates_found_through_importlib_resources(tmp_path):
    """The layout a non-editable install produces (codegen/templates/*.j2, no top-level templates/):
    emit finds the templates through importlib.resources and compiles."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "refexit", site / "refexit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "codegen", site / "codegen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", site / "codegen" / "templates", ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import codegen, codegen.emit as e, refexit, numpy as np\n"
        "from refexit.synthetic import random_model\n"
        "root = e.templates_root()\n"
        "assert str(root).startswith(%r), root\n"
        "m = random_model(num_layers=2, hidden=18, heads=2, intermediate=20)\n"
        "cm = codegen.compile_model(m, refexit.Static(2), %r, prefix='inst')\n"
        "print(root, cm.classify({'input_ids': np.array([[2, 5, 3]])}).exit_layers[0])\n"
    ) % (str(site / "codegen" / "templates"), str(tmp_path / "out"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(site / "codegen" / "templates"), "2"]


@pytest.mark.slow
def test_pip_install_non_editable(tmp_path):
    """A real `pip install .` (non-editable, into a target folder) finds its templates and compiles."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for d in ("refexit", "codegen", "templates"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(src)], capture_output=True, text=True)
    if r.returncode != 0 and "bdist_wheel" not in r.stderr and ("connection" in r.stderr.lower() or "resolve" in r.stderr.lower()):
        pytest.skip(f"pip could not fetch the build backend: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr
    assert (target / "codegen" / "templates" / "model.c.j2").is_file()
    script = ("import codegen.emit as e, codegen, refexit, numpy as np\n"
              "from refexit.synthetic import random_model\n"
              "cm = codegen.compile_model(random_model(), refexit.Static(2), %r, prefix='piped')\n"
              "print(e.templates_root(), cm.classify({'input_ids': np.array([[2, 5, 3]])}).exit_layers[0])\n"
              ) % str(tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(target / "codegen" / "templates"), "2"]


def test_cli_compile(tmp_path, capsys):
    import argparse

    from refexit.cli import compile as compile_cli
    model = model_for("pooler_linear", 3)
    folder = save_model(model, tmp_path / "my-model")
    parser = argparse.ArgumentParser(prog="refexit")
    compile_cli.add_subcommand(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(["compile", str(folder), "-o", str(out), "--policy", "entropy",
                              "--threshold", "0.9,1.1", "--max-length", "10"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "my_model.weights" in printed
    for name in ("my_model.h", "my_model.c", "my_model.weights", build.library_name("my_model"),
                 "my_model.manifest.json"):
        assert (out / name).is_file(), name
    cm = codegen.load_compiled(out)
    assert cm.max_length == 10 and cm.thresholds.tolist() == [np.float32(0.9), np.float32(1.1)]
    loaded = refexit.load(folder)
    ref = loaded.astype(np.float64).classify(ENC, refexit.Entropy([0.9, 1.1]))
    got = cm.classify(ENC)
    assert got.exit_layers.tolist() == ref.exit_layers.tolist()
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-5)
    assert json.loads((out / "my_model.manifest.json").read_text())["policy"]["name"] == "entropy"
    assert pack.read_vocab(out / "my_model.weights") == loaded.tokenizer.vocab
    assert cm.tokenizer(["ab cd"]).input_ids.tolist() == loaded.tokenizer(["ab cd"]).input_ids.tolist()
    for argv, msg in ((["--policy", "entropy"], "needs --threshold"), (["--policy", "patience"], "needs --patience"),
                      (["--policy", "window"], "needs --window")):
        args = parser.parse_args(["compile", str(folder), "-o", str(out)] + argv)
        with pytest.raises(refexit.InputError, match=msg):
            args.func(args)
    args = parser.parse_args(["compile", str(folder), "-o", str(out), "--policy", "static", "--layer", "2",
                              "--prefix", "stat", "--no-openmp"])
    assert args.func(args) == 0
    assert codegen.load_compiled(out, prefix="stat").classify(ENC).exit_layers.tolist() == [2, 2, 2]
