"""What a compiled folder needs where it is deployed: file modes from the user's umask, prefixes
that cannot shadow a system header, programs without an OpenMP shared library or a special CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import refexit
from refexit.cli.main import main
from refexit.synthetic import random_model, save_model

pytest.importorskip("codegen", reason="codegen needs jinja2 and cffi (the test extra)")
if not shutil.which(os.environ.get("CC", "cc")):
    pytest.skip("no C compiler", allow_module_level=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    m = random_model(num_layers=2, hidden=8, heads=2, intermediate=10, num_labels=2, vocab_size=60,
                     max_position=16, head_kind="mean_linear", seed=9)
    return save_model(m, tmp_path_factory.mktemp("deploy") / "model")


def compile_cli(folder, out, *extra):
    assert main(["compile", str(folder), "-o", str(out), "--policy", "entropy", "--threshold", "0.5", *extra]) == 0


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_generated_files_follow_the_umask(folder, tmp_path, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / "out"
        compile_cli(folder, out, "--prefix", "um", "--standalone", "--openmp", "off", "--isa", "scalar")
    finally:
        os.umask(old)
    for name in ("um.h", "um.c", "um.weights", "um.manifest.json", "um_main.c", "um_embed.c"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    for name in ("libum.so", "um", "um-sidecar"):
        assert (out / name).stat().st_mode & 0o777 == 0o777 & ~mask, name


@pytest.mark.parametrize("prefix", ["math", "stdio", "omp"])
def test_prefix_named_like_a_system_header(folder, tmp_path, prefix):
    """<prefix>.h sits in the output folder, which is never an -I path: <math.h> stays the system's."""
    out = tmp_path / "out"
    compile_cli(folder, out, "--prefix", prefix, "--standalone", "--isa", "scalar")
    if prefix == "math":                                                 # and again in the same folder
        compile_cli(folder, out, "--prefix", prefix, "--standalone", "--isa", "scalar")
    r = subprocess.run([str(out / prefix), "abc"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "label" in json.loads(r.stdout)


def _needed(exe) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    out = subprocess.run([readelf, "-dW", str(exe)], capture_output=True, text=True).stdout
    return [ln.split("[")[1].split("]")[0] for ln in out.splitlines() if "(NEEDED)" in ln]


@pytest.mark.parametrize("openmp,omp_lib", [("static", False), ("off", False), ("on", True)])
def test_openmp_static_on_off(folder, tmp_path, openmp, omp_lib, capsys):
    from codegen import build
    cc = build.compiler()
    if openmp != "off" and not build.openmp_supported(cc):
        pytest.skip(f"{cc} has no OpenMP")
    out = tmp_path / "out"
    try:
        compile_cli(folder, out, "--prefix", "omp_t", "--standalone", "--openmp", openmp, "--isa", "scalar")
    except AssertionError:
        err = capsys.readouterr().err
        if openmp == "static" and "no static OpenMP run-time" in err:
            pytest.skip(err)
        raise
    printed = capsys.readouterr().out
    assert "the programs need: libc and libm" in printed and "any x86-64 CPU" in printed
    for exe in (out / "omp_t", out / "omp_t-sidecar"):
        needed = _needed(exe)
        assert any("omp" in n for n in needed) == omp_lib, needed
        r = subprocess.run([str(exe), "--threads", "2", "abc de"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert json.loads((out / "omp_t.manifest.json").read_text())["isa"] == "scalar"


def test_compile_isa_auto_is_this_cpus_best(folder, tmp_path):
    from codegen import build
    out = tmp_path / "out"
    compile_cli(folder, out, "--prefix", "auto_t", "--isa", "auto")
    assert json.loads((out / "auto_t.manifest.json").read_text())["isa"] == build.resolve_isa(build.compiler())
    assert refexit.load(folder)                       # the folder itself untouched
