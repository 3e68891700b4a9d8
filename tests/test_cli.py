"""The `refexit` command as a newcomer meets it: options in any order, the subcommand's own usage on
a mistake, one rule for policy settings, clear errors (never a traceback) for bad values, broken
pipes and full disks, one-line warnings, and the output fields of the standalone program."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import refexit
from refexit.cli.main import main
from refexit.synthetic import random_model, save_model

STANDALONE_FIELDS = ["label", "label_id", "probability", "probabilities", "logits", "exit_layer", "time_ms"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder with its exit heads in a separate exits folder (as train-exits writes it)."""
    root = tmp_path_factory.mktemp("cli")
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, vocab_size=80,
                     max_position=24, head_kind="mean_linear", seed=4)
    f = save_model(m, root / "model")
    (root / "exits").mkdir()
    shutil.move(f / "exits.safetensors", root / "exits" / "exits.safetensors")
    return f


@pytest.fixture(scope="module")
def exits(folder):
    return folder.parent / "exits"


def run_main(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines()]


def test_options_in_any_order(folder, exits, capsys):
    a = run_main(capsys, "classify", folder, "--exits", exits, "abc de", "--policy", "entropy", "--threshold", "0.5")
    b = run_main(capsys, "classify", "--policy", "entropy", folder, "abc de", "--threshold", "0.5", "--exits", exits)
    assert a[0] == b[0] == 0
    ra, rb = lines(a[1]), lines(b[1])
    assert len(ra) == 1 and [k for k in ra[0] if k != "time_ms"] == [k for k in rb[0] if k != "time_ms"]
    assert ra[0]["exit_layer"] == rb[0]["exit_layer"]


def test_mistakes_print_the_subcommands_usage(folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["classify", str(folder), "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: refexit classify" in err and "--bogus" in err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"refexit {refexit.__version__}"
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert all(" ".join(par.split()).count("default") <= 1 for par in text.split("\n  -"))   # said once per option
    assert "--openmp {auto,on,off,static}" in text and "--isa {auto," in text


def test_exits_folder_or_file(folder, exits, capsys):
    for ex in (exits, exits / "exits.safetensors"):
        rc, out, _ = run_main(capsys, "classify", folder, "--exits", ex, "abc")
        assert rc == 0 and lines(out)[0]["label"] in ("label_0", "label_1")
    rc, _, err = run_main(capsys, "classify", folder, "abc")       # no classifier: says how to get one
    assert rc == 1 and "train-exits" in err and "--exits" in err


@pytest.mark.parametrize("argv,match", [
    (["--threshold", "0.3"], "--threshold needs --policy"),
    (["--layer", "2"], "--layer needs --policy"),
    (["--policy", "entropy", "--patience", "2", "--threshold", "0.3"], "--patience is not a setting of --policy entropy"),
    (["--policy", "static", "--layer", "7"], "only 3 layers"),
    (["--policy", "entropy"], "needs --threshold"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--batch", "-1"], "--batch must be at least 1"),
    (["--max-length", "1"], "max_length"),
    (["--policy", "entropy", "--threshold", "nan"], "NaN"),
])
def test_bad_values_are_clear_errors(folder, exits, capsys, argv, match):
    rc, out, err = run_main(capsys, "classify", folder, "--exits", exits, "abc", *argv)
    assert rc == 1 and match in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv,match", [
    (["--threshold", "0.3"], "--threshold needs --policy"),
    (["--policy", "static", "--layer", "7"], "only 3 layers"),
    (["--max-length", "1"], "max_length must be an integer in [3,"),
])
def test_compile_uses_the_same_rules(folder, exits, capsys, tmp_path, argv, match):
    rc, _, err = run_main(capsys, "compile", folder, "--exits", exits, "-o", tmp_path / "out", *argv)
    assert rc == 1 and match in err


@pytest.mark.parametrize("argv,match", [
    (["--sweep", "--threshold", "0.3"], "--sweep picks the thresholds itself"),
    (["--threshold", "0.3"], "--threshold needs --policy"),
])
def test_evaluate_uses_the_same_rules(folder, exits, capsys, argv, match):
    rc, _, err = run_main(capsys, "evaluate", folder, "--exits", exits, "--data", "sms_spam", *argv)
    assert rc == 1 and match in err and "Traceback" not in err


def test_compile_into_a_file_is_an_error(folder, exits, capsys, tmp_path):
    (tmp_path / "f").write_text("")
    rc, _, err = run_main(capsys, "compile", folder, "--exits", exits, "-o", tmp_path / "f")
    assert rc == 1 and "must be a folder" in err


def test_output_fields(folder, exits, capsys):
    long = " ".join(["abc"] * 100)
    rc, out, _ = run_main(capsys, "classify", folder, "--exits", exits, "abc de", long, "", "  \t ")
    recs = lines(out)
    assert rc == 0 and len(recs) == 4
    assert list(recs[0]) == STANDALONE_FIELDS                          # no text unless asked
    n = len(refexit.load(folder, exits=exits).tokenizer.tokenize(long)) + 2
    assert list(recs[1]) == STANDALONE_FIELDS + ["truncated", "n_tokens"] and recs[1]["n_tokens"] == n > 24
    assert recs[2] == recs[3] == {"error": "empty text"}
    rc, out, _ = run_main(capsys, "classify", folder, "--exits", exits, "--echo", "abc de", "")
    recs = lines(out)
    assert recs[0]["text"] == "abc de" and list(recs[0])[1:] == STANDALONE_FIELDS
    assert recs[1] == {"text": "", "error": "empty text"}


def test_sentence_pairs(folder, exits, capsys):
    rc, out, _ = run_main(capsys, "classify", folder, "--exits", exits, "--pairs", "--echo", "ab cd\tef", "gh")
    recs = lines(out)
    m = refexit.load(folder, exits=exits)
    want = m.classify(m.tokenizer(["ab cd"], ["ef"]))
    assert rc == 0 and recs[0]["text"] == "ab cd" and recs[0]["pair"] == "ef" and "pair" not in recs[1]
    assert recs[0]["logits"] == [float(z) for z in want.logits[0]]


def test_policy_warnings_are_one_line_once(folder, exits, capsys, monkeypatch):
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("abc\n" * 10))
    rc, out, err = run_main(capsys, "classify", folder, "--exits", exits, "--batch", "2",
                            "--policy", "entropy", "--threshold", "100")      # fires at layer 1 always
    assert rc == 0 and len(lines(out)) == 10
    warn = [ln for ln in err.splitlines() if ln]
    assert len(warn) == 1 and warn[0].startswith("refexit: warning: ") and ".py" not in warn[0]


def _cli(*argv, **kw):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen([sys.executable, "-m", "refexit.cli.main", *map(str, argv)], env=env, **kw)


def test_broken_pipe_is_quiet(folder, exits):
    p = _cli("classify", folder, "--exits", exits, "--batch", "1", stdin=subprocess.PIPE,
             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"abc\n" * 3000)
    p.stdin.close()
    first = p.stdout.readline()
    p.stdout.close()                                   # `| head -1`
    err = p.stderr.read()
    p.wait(timeout=600)
    assert json.loads(first)["exit_layer"] == 3
    assert b"Traceback" not in err and p.returncode == 141


def test_full_disk_is_an_error_not_a_traceback(folder, exits):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as full:
        p = _cli("classify", folder, "--exits", exits, "abc", stdout=full, stderr=subprocess.PIPE)
        err = p.communicate(timeout=600)[1]
    assert p.returncode == 1 and b"cannot write the output" in err and b"Traceback" not in err


def test_undecodable_argument_bytes(folder, exits):
    p = _cli("classify", folder, "--exits", exits, "--echo", os.fsdecode(b"ab\xff"), stdout=subprocess.PIPE,
             stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert json.loads(out)["text"] == "ab\ufffd"


def test_bench_outside_a_checkout_says_why(monkeypatch, capsys):
    from refexit.cli import bench as bench_cli
    monkeypatch.setattr(bench_cli, "load_tool", lambda: None)
    rc, _, err = run_main(capsys, "bench")
    assert rc == 1 and "source checkout" in err and "tools/bench.py" in err


def test_bench_never_overwrites_a_tracked_file(tmp_path):
    """Results go only to a path the user names, and never over a file git tracks."""
    from refexit.cli import bench as bench_cli
    tool = bench_cli.load_tool()
    if tool is None:
        pytest.skip("not a source checkout")
    import argparse
    p = argparse.ArgumentParser()
    tool.add_arguments(p)
    assert p.parse_args([]).json is None                       # nothing written unless asked
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or subprocess.run(["git", "ls-files", "--error-unmatch", "README.md"], cwd=root,
                                                     capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    with pytest.raises(SystemExit, match="tracked by git"):
        tool.refuse_tracked(root / "README.md")
    tool.refuse_tracked(tmp_path / "mine.json")                # a path of the user's own: fine


# ---------------------------------------------------------------- your own data (--data FILE)
def own_rows(n=48, pairs=False):
    """Labelled rows a tiny random model can tokenize (its vocabulary: letters and letter pairs)."""
    rng = __import__("numpy").random.default_rng(1)
    rows = []
    for i in range(n):
        words = " ".join("".join(rng.choice(list("abcdefgh"), 2)) for _ in range(3 + i % 4))
        row = {"text": words, "label": "yes" if i % 3 else "no"}
        if pairs:
            row["second"] = words[::-1]
        rows.append(row)
    return rows


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))     # features cached away from ~


def test_train_exits_then_evaluate_on_your_own_csv(folder, tmp_path, capsys, own_cache):
    from refexit import tables
    p = tables.write_rows(tmp_path / "mine.csv", own_rows())
    with open(p, "ab") as f:
        f.write(b",yes\nno label here,\nbad \xff byte,no\n")         # data rows 48, 49, 50
    out = tmp_path / "exits"
    rc, stdout, err = run_main(capsys, "train-exits", folder, "--data", p, "--out", out, "--epochs", "3",
                               "--max-length", "16")
    assert rc == 0, err
    assert "3 bad row(s) left out" in err and f"{p} row 49: missing label" in err
    info = json.loads((out / "exits.json").read_text())
    d = info["dataset"]
    assert d["name"] == "mine" and d["files"] == [str(p.resolve())] and d["problem_type"] == "single_label_classification"
    assert d["bad_rows"]["count"] == 3 and [r["row"] for r in d["bad_rows"]["rows"]] == [48, 49, 50]
    assert sum(d["sizes"].values()) == 48
    # evaluate without --data: the same file, the same split, from exits.json
    rc, stdout, err = run_main(capsys, "evaluate", folder, "--exits", out, "--sweep", "--no-plot",
                               "--policy", "entropy")
    assert rc == 0, err
    rep = json.loads((out / "evaluate-mine.json").read_text())
    assert rep["dataset"] == "mine" and rep["sizes"] == {"dev": d["sizes"]["dev"], "test": d["sizes"]["test"]}
    assert rep["data"]["bad_rows"]["count"] == 3 and "3 bad row(s) left out" in err
    three = tables.write_rows(tmp_path / "three.csv", [dict(r, label="abc"[i % 3]) for i, r in enumerate(own_rows())])
    rc, _, err = run_main(capsys, "evaluate", folder, "--exits", out, "--sweep", "--no-plot", "--data", three)
    assert rc == 1 and "three has 3 labels ['a', 'b', 'c'], the model with these exits 2" in err


def test_sentence_pairs_and_a_split_column(folder, tmp_path, capsys, own_cache):
    from refexit import tables
    rows = own_rows(30, pairs=True)
    for i, r in enumerate(rows):
        r["part"] = ("train", "train", "dev", "test")[i % 4]
    p = tables.write_rows(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "exits"
    rc, _, err = run_main(capsys, "train-exits", folder, "--data", p, "--pair-column", "second",
                          "--split-column", "part", "--out", out, "--epochs", "2", "--max-length", "20")
    assert rc == 0, err
    d = json.loads((out / "exits.json").read_text())["dataset"]
    assert d["pairs"] and d["table"]["pair_column"] == "second" and d["sizes"] == {"train": 16, "dev": 7, "test": 7}
    rc, _, err = run_main(capsys, "evaluate", folder, "--exits", out, "--sweep", "--no-plot", "--policy", "max_prob")
    assert rc == 0, err
    assert json.loads((out / "evaluate-pairs.json").read_text())["data"]["pairs"] is True


@pytest.mark.parametrize("make, argv, match", [
    (None, ["--data", "nope"], "'nope' is neither a built-in data set"),
    (None, ["--data", "missing.csv"], "missing.csv: no such file"),
    (None, ["--data", "sms_spam", "--text-column", "x"], "--text-column apply only to your own files"),
    ("csv", ["--label-column", "y"], r"no column 'y' \(--label-column\)"),
    ("csv", ["--split-column", "s", "--dev-fraction", "0.2"], "--split-column or --dev-fraction"),
    ("csv", ["--dev-fraction", "0.6", "--test-fraction", "0.5"], "leaves nothing to train on"),
    ("regression", ["--objective", "ponder"], "objective 'ponder' needs class probabilities"),
])
def test_own_data_mistakes_are_clear_errors(folder, tmp_path, capsys, own_cache, make, argv, match):
    import re as _re

    from refexit import tables
    if make == "csv":
        argv = ["--data", tables.write_rows(tmp_path / "d.csv", own_rows(12))] + argv
    elif make == "regression":
        argv = ["--data", tables.write_rows(tmp_path / "r.csv", [{"text": "ab", "label": f"{i / 4}"}
                                                                 for i in range(12)])] + argv
    rc, _, err = run_main(capsys, "train-exits", folder, "--out", tmp_path / "o", *argv)
    assert rc == 1 and _re.search(match, err), err
    assert "Traceback" not in err


def test_regression_csv_trains_evaluates_and_classifies_with_patience_tau(tmp_path, capsys, own_cache):
    """A float label column end to end: train-exits (MSE heads, no extras), evaluate --sweep (Pearson,
    Spearman and MSE; patience / window with tau), classify with the dev-picked patience and tau."""
    from refexit import tables
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=1, vocab_size=80,
                     max_position=24, head_kind="mean_linear", seed=6)
    folder = save_model(m, tmp_path / "model")
    rows = own_rows(60)
    for r in rows:                             # a target the texts determine: the share of 'a's
        r["label"] = f"{r['text'].count('a') / len(r['text']):.4f}"
    p = tables.write_rows(tmp_path / "scores.csv", rows)
    out = tmp_path / "exits"
    rc, stdout, err = run_main(capsys, "train-exits", folder, "--data", p, "--out", out, "--epochs", "5",
                               "--max-length", "16", "--heads", "mean_linear")
    assert rc == 0, err
    info = json.loads((out / "exits.json").read_text())
    assert info["problem_type"] == "regression" and info["extras"] == [] and info["label_names"] == ["label"]
    assert "dev r" in stdout and len(info["dev_per_layer"]) == 3
    rc, stdout, err = run_main(capsys, "evaluate", folder, "--exits", out, "--sweep", "--no-plot")
    assert rc == 0, err
    rep = json.loads((out / "evaluate-scores.json").read_text())
    assert set(rep["policies"]) == {"patience", "window", "static"} and "pearson" in rep["full"]["test"]
    assert "Pearson r and Spearman rho" in stdout and "Traceback" not in err
    pt = rep["policies"]["patience"]["points"][0]["params"]
    rc, stdout, err = run_main(capsys, "classify", folder, "--exits", out, "--policy", "patience",
                               "--patience", pt["count"], "--tau", pt["tau"], "ab cd ef")
    assert rc == 0, err
    (row,) = lines(stdout)
    assert 1 <= row["exit_layer"] <= 3 and len(row["logits"]) == 1
    rc, _, err = run_main(capsys, "evaluate", folder, "--exits", out, "--sweep", "--no-plot", "--precision", "bf16")
    assert rc == 1 and "evaluate --precision handles classification only" in err


def test_own_csv_of_builtin_rows_scores_as_the_builtin_set(minilm_dir, tmp_path, capsys, monkeypatch):
    """train-exits + evaluate on a CSV made from sms_spam's rows give the accuracies of the
    built-in run on the same rows (the same texts, labels and splits -> the same numbers). The
    feature cache (keyed by the texts) is a fresh one: the second run reuses the first one's
    features only if its texts are the same, in the same order."""
    from refexit import data, tables
    whole = data.load_dataset("sms_spam")               # the data cache, before pointing the cache away
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "load_dataset", lambda name, fetch=True, seed=0: whole if name == "sms_spam" else
                        pytest.fail(f"unexpected load_dataset({name!r})"))
    from refexit.cli.train import limited
    ds = limited(whole, 24, 0)
    rows = [{"sms": t, "class": ds.label_names[y], "split": k}
            for k, s in ds.splits().items() for t, y in zip(s.texts, s.labels)]
    p = tables.write_rows(tmp_path / "sms.csv", rows)
    common = ["--max-length", "32", "--epochs", "5"]
    builtin, own = tmp_path / "builtin", tmp_path / "own"
    assert run_main(capsys, "train-exits", minilm_dir, "--data", "sms_spam", "--limit", "24",
                    "--out", builtin, *common)[0] == 0
    rc, _, err = run_main(capsys, "train-exits", minilm_dir, "--data", p, "--text-column", "sms",
                          "--label-column", "class", "--split-column", "split", "--out", own, *common)
    assert rc == 0, err
    reports = {}
    for name, folder_, extra in (("sms_spam", builtin, ["--limit", "24"]), ("sms", own, [])):
        rc, _, err = run_main(capsys, "evaluate", minilm_dir, "--exits", folder_, "--sweep", "--no-plot",
                              "--policy", "entropy", *extra)
        assert rc == 0, err
        reports[name] = json.loads((folder_ / f"evaluate-{name}.json").read_text())
    a, b = reports["sms_spam"], reports["sms"]
    assert a["sizes"] == b["sizes"] and a["labels"] == b["labels"] == ["ham", "spam"]
    assert a["full"] == b["full"]                                   # full model: dev and test accuracy, F1
    assert a["policies"]["entropy"]["points"] == b["policies"]["entropy"]["points"]
    dev_own, dev_builtin = (json.loads((f / "exits.json").read_text())["dev_per_layer"] for f in (own, builtin))
    for x, y in zip(dev_own, dev_builtin, strict=True):   # training on the same features: BLAS rounding aside
        assert (x["accuracy"], x["macro_f1"]) == (y["accuracy"], y["macro_f1"])
        assert x["nll"] == pytest.approx(y["nll"], rel=1e-5) and x["temperature"] == pytest.approx(y["temperature"], rel=1e-5)
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 3      # train, dev, test: shared
