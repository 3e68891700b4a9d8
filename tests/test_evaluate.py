"""Evaluation: the replay from cached features is the oracle (Model.classify), and every reported
number is recomputed here from raw predictions (no hand-typed expectations)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refexit
from refexit import evaluate as E
from refexit import features as F
from refexit import synthetic
from refexit.policies import ExitWarning, Static


def toy(kind="mean_linear", L=4, C=3, n=60, seed=0, l2norm=False):
    m = synthetic.random_model(num_layers=L, hidden=16, heads=2, intermediate=24, num_labels=C, seed=seed,
                               head_kind=kind, final_kind="shared_pooler" if kind != "mean_linear" else None,
                               l2norm=l2norm)
    rng = np.random.default_rng(seed)
    vocab = m.tokenizer.vocab[5:]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 14))) for _ in range(n)]
    return m, texts, rng.integers(0, C, n)


def oracle(m, texts, policy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        return m.classify(m.tokenizer(texts, max_length=32), policy)


# ---------------------------------------------------------------- the replay is the oracle
@pytest.mark.parametrize("kind,l2norm", [("mean_linear", False), ("mean_linear", True),
                                         ("pooler_linear", False), ("shared_pooler", False)])
def test_replay_equals_model_classify_for_every_policy(kind, l2norm):
    m, texts, _ = toy(kind, l2norm=l2norm)
    out = E.LayerOutputs(m, F.extract(m, texts, 32, use_cache=False, progress=False))
    for name in E.POLICY_NAMES:
        for pol in E.sweep_policies(name, m.num_layers, m.num_labels)[::3]:
            want, got = oracle(m, texts, pol), E.simulate(m, pol, out)
            assert np.array_equal(got.exit_layers, want.exit_layers), pol
            assert np.array_equal(got.logits, want.logits), pol          # bit-identical
            assert np.array_equal(got.flops, want.flops), pol
            assert np.array_equal(got.full_flops, want.full_flops), pol
            assert np.array_equal(got.margins, want.margins), pol
            assert got.warnings == want.warnings and got.policy == want.policy


def test_features_are_the_oracles_hidden_states():
    m, texts, _ = toy(n=8)
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    enc = m.tokenizer(texts, max_length=32)
    hs = m.hidden_states(enc)
    for b, n in enumerate(enc.attention_mask.sum(1)):
        assert feats.lengths[b] == n
        for i in range(1, m.num_layers + 1):
            np.testing.assert_allclose(feats.cls[i - 1, b], hs[i][b, 0], atol=1e-5)
            np.testing.assert_allclose(feats.mean[i - 1, b], hs[i][b, :n].mean(0), atol=1e-5)


def test_feature_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path))
    m, texts, _ = toy(n=10)
    a = F.extract(m, texts, 32, tokens=True, progress=False)
    files = list((tmp_path / "features").glob("*.npz"))
    assert len(files) == 1 and files[0].name == f"{a.key}-tokens.npz"
    b = F.extract(m, texts, 32, progress=False)                  # served by the tokens file
    assert b.key == a.key and np.array_equal(a.cls, b.cls) and np.array_equal(a.mean, b.mean)
    c = F.extract(m, texts, 32, tokens=True, progress=False)
    off = c.offsets()
    for i in range(m.num_layers):
        assert np.array_equal(c.tokens[i], a.tokens[i])
        for s in range(len(texts)):                             # token 0 is [CLS], the mean is theirs
            assert np.array_equal(c.tokens[i][off[s]], c.cls[i, s])
            assert np.array_equal(c.tokens[i][off[s]:off[s + 1]].mean(0), c.mean[i, s])
    assert F.extract(m, texts, 16, progress=False).key != a.key  # max_length is in the key
    assert F.extract(m, texts[:-1], 32, progress=False).key != a.key


# ---------------------------------------------------------------- numbers from raw predictions
def my_macro_f1(pred, y, C):
    conf = np.zeros((C, C), int)
    for p, t in zip(pred, y):
        conf[t, p] += 1
    f1 = []
    for c in range(C):
        tp, fp, fn = conf[c, c], conf[:, c].sum() - conf[c, c], conf[c, :].sum() - conf[c, c]
        if tp + fp + fn:
            prec = tp / (tp + fp) if tp + fp else 0.0
            rec = tp / (tp + fn) if tp + fn else 0.0
            f1.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return np.mean(f1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5).flatmap(lambda C: st.tuples(
    st.just(C), st.lists(st.tuples(st.integers(0, C - 1), st.integers(0, C - 1)), min_size=1, max_size=40))))
def test_macro_f1_matches_a_confusion_matrix(case):
    C, pairs = case
    pred, y = np.array([p for p, _ in pairs]), np.array([t for _, t in pairs])
    assert E.macro_f1(pred, y, C) == pytest.approx(my_macro_f1(pred, y, C), abs=1e-12)
    assert E.accuracy(pred, y) == pytest.approx(sum(p == t for p, t in pairs) / len(pairs))


def test_sweep_report_is_recomputed_from_oracle_runs():
    m, texts, y = toy(n=50)
    dev, test = slice(0, 25), slice(25, 50)
    splits = {"dev": F.extract(m, texts[dev], 32, use_cache=False, progress=False),
              "test": F.extract(m, texts[test], 32, use_cache=False, progress=False)}
    labels = {"dev": y[dev], "test": y[test]}
    rep = E.evaluate(m, splits, labels, max_drop=0.05, progress=False)
    json.dumps(rep)                                           # JSON-ready
    L, C = m.num_layers, m.num_labels
    for s, sl in (("dev", dev), ("test", test)):
        full = oracle(m, texts[sl], Static(L))
        assert rep["full"][s]["accuracy"] == pytest.approx(np.mean(np.argmax(full.logits, 1) == y[sl]))
    for name, entry in rep["policies"].items():
        grid = E.sweep_policies(name, L, C)
        assert len(entry["points"]) == len(grid)
        for pt in entry["points"][::2]:
            pol = grid[pt["index"]]
            assert repr(pol) == pt["policy"]
            for s, sl in (("dev", dev), ("test", test)):
                r = oracle(m, texts[sl], pol)
                pred, got = np.argmax(r.logits, 1), pt[s]
                assert got["accuracy"] == pytest.approx(np.mean(pred == y[sl]), abs=1e-12)
                assert got["macro_f1"] == pytest.approx(my_macro_f1(pred, y[sl], C), abs=1e-12)
                assert got["mean_layers"] == pytest.approx(np.mean(r.exit_layers))
                assert got["layer_speedup"] == pytest.approx(L / np.mean(r.exit_layers))
                assert got["flops_ratio"] == pytest.approx(r.full_flops.sum() / r.flops.sum())
                assert got["exit_histogram"] == [int(np.sum(r.exit_layers == k)) for k in range(1, L + 1)]
        # the picker: fewest dev layers among points within max_drop of the full dev accuracy
        ok = [p for p in entry["points"] if p["dev"]["accuracy"] >= rep["full"]["dev"]["accuracy"] - 0.05 - 1e-12]
        if ok:
            assert entry["picked"]["dev"]["mean_layers"] == min(p["dev"]["mean_layers"] for p in ok)
        else:
            assert entry["picked"] is None
        okt = [p for p in entry["points"] if p["test"]["accuracy"] >= rep["full"]["test"]["accuracy"] - 0.05 - 1e-12]
        if okt:
            assert entry["best_on_test"]["test"]["mean_layers"] == min(p["test"]["mean_layers"] for p in okt)


def test_policies_the_model_cannot_run_are_skipped():
    m = synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, lte=False, ponder=False)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], 4)) for _ in range(6)]
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    rep = E.evaluate(m, {"dev": f}, {"dev": rng.integers(0, 3, 6)}, progress=False)
    assert set(rep["skipped"]) == {"learned", "ponder"} and "entropy" in rep["policies"]


def test_single_threshold_mode():
    m, texts, y = toy(n=12)
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    rep = E.evaluate(m, {"dev": f}, {"dev": y}, policies=("entropy",), sweep=False, threshold=0.7, progress=False)
    (pt,) = rep["policies"]["entropy"]["points"]
    r = oracle(m, texts, refexit.Entropy(0.7))
    assert pt["dev"]["mean_layers"] == pytest.approx(np.mean(r.exit_layers))
    assert "picked" not in rep["policies"]["entropy"]


# ---------------------------------------------------------------- wall-clock hook, plot
def test_wallclock_hook_times_any_classify_callable():
    m, texts, y = toy(n=20)
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    rep = E.evaluate(m, {"dev": f, "test": f}, {"dev": y, "test": y}, policies=("entropy", "static"),
                     max_drop=1.0, progress=False)
    calls = []

    def make_classify(policy):
        def classify(batch):
            calls.append(repr(policy))
            return oracle(m, batch, policy)
        return classify

    wc = E.add_wallclock(rep, make_classify, texts[:5], repeat=2)
    assert wc["full_seconds_per_example"] > 0 and set(wc["policies"]) == {"entropy", "static"}
    for name, w in wc["policies"].items():
        assert w["policy"] == rep["policies"][name]["picked"]["policy"]
        assert w["speedup"] == pytest.approx(wc["full_seconds_per_example"] / w["seconds_per_example"])
        timed = oracle(m, texts[:5], E.sweep_policies(name, m.num_layers, m.num_labels)[
            rep["policies"][name]["picked"]["index"]])
        assert w["ideal_layer_speedup"] == pytest.approx(timed.layer_speedup)     # on the timed texts
        assert w["fraction_of_ideal"] == pytest.approx(w["speedup"] / timed.layer_speedup)
    assert repr(Static(m.num_layers)) in calls


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    m, texts, y = toy(n=20)
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    rep = E.evaluate(m, {"dev": f, "test": f}, {"dev": y, "test": y}, progress=False)
    assert E.plot(rep, tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 1000


# ---------------------------------------------------------------- the two commands, end to end
def test_cli_train_then_evaluate_on_real_sms(minilm_dir, tmp_path, capsys):
    import argparse

    from refexit import evaluate_cli, train_cli
    parser = argparse.ArgumentParser(prog="refexit")
    sub = parser.add_subparsers(dest="command")
    train_cli.add_subcommand(sub)
    evaluate_cli.add_subcommand(sub)
    out = tmp_path / "exits"
    args = parser.parse_args(["train-exits", str(minilm_dir), "--data", "sms_spam", "--limit", "24",
                              "--max-length", "32", "--epochs", "5", "--out", str(out), "--no-cache"])
    assert args.func(args) == 0
    info = json.loads((out / "exits.json").read_text())
    assert info["dataset"]["name"] == "sms_spam" and info["label_names"] == ["ham", "spam"]
    args = parser.parse_args(["evaluate", str(minilm_dir), "--exits", str(out), "--limit", "24",
                              "--sweep", "--no-cache", "--policy", "entropy", "--policy", "patience"])
    assert args.func(args) == 0
    rep = json.loads((out / "evaluate-sms_spam.json").read_text())
    assert rep["max_length"] == 32 and set(rep["policies"]) == {"entropy", "patience"}
    assert "entropy" in capsys.readouterr().out
