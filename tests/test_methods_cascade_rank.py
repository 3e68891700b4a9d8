"""CascadeBERT's difficulty-aware regularisation on a frozen backbone (refexit.train.cascadebert,
`train-exits --objective cascadebert`): the ranking term and its gradient, the pairs, the difficulty
labels, the ranking AUC, training, the command line and its refusals."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from refexit import synthetic
from refexit.errors import InputError
from refexit.train import cascadebert as CB
from refexit.train import exits as T

from test_train import assert_grads, toy_task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))


def softmax_row(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------- the term and its gradient
def test_dar_loss_is_the_mean_hinge_of_the_confidence_gap():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 3)) * 2
    easy, hard = np.array([0, 2, 3, 7]), np.array([1, 1, 8, 5])
    for margin in (0.0, 0.3, 0.5, 2.0):
        conf = [max(softmax_row(list(r))) for r in z]
        want = sum(max(0.0, margin - (conf[i] - conf[j])) for i, j in zip(easy, hard)) / len(easy)
        assert CB.dar_loss(z, easy, hard, margin)[0] == pytest.approx(want, rel=1e-12, abs=1e-15)
    loss, dz = CB.dar_loss(z, easy[:0], hard[:0], 0.5)          # no pair: no term, no gradient
    assert loss == 0.0 and not dz.any()


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.5])
def test_dar_gradient_matches_finite_differences(margin):
    rng = np.random.default_rng(int(margin * 10))
    N, C = 10, 4
    z = rng.normal(size=(N, C)) * 1.5
    easy, hard = np.arange(6), rng.integers(6, N, 6)
    num = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[i] += 1e-6
        down[i] -= 1e-6
        num[i] = (CB.dar_loss(up, easy, hard, margin)[0] - CB.dar_loss(down, easy, hard, margin)[0]) / 2e-6
    np.testing.assert_allclose(CB.dar_loss(z, easy, hard, margin)[1], num, atol=1e-7, rtol=1e-5)
    c, dc = CB.confidence(z)
    assert np.allclose(c, nn_max_softmax(z)) and dc.shape == (N, C)


def nn_max_softmax(z):
    return np.array([max(softmax_row(list(r))) for r in z])


@pytest.mark.parametrize("kind", ["mean_linear", "pooler_linear", "scalar_mix"])
def test_head_objective_gradient_ce_plus_weighted_dar(kind):
    """CE + w * DAR through the head's own parameters (fc, its pooler, the scalar mix), as training sees it."""
    rng = np.random.default_rng(5)
    N, H, C, w = 8, 5, 3, 0.7
    x = rng.normal(size=(N, 3, H)) if kind == "scalar_mix" else rng.normal(size=(N, H))
    q = np.eye(C)[rng.integers(0, C, N)]
    p = {"fc.w": rng.normal(size=(C, H)), "fc.b": rng.normal(size=C)}
    if kind == "pooler_linear":
        p["pooler.w"], p["pooler.b"] = rng.normal(size=(H, H)), rng.normal(size=H)
    if kind == "scalar_mix":
        p["mix"] = rng.normal(size=3)
    easy, hard = np.array([0, 1, 4, 6]), np.array([2, 7, 7, 3])

    def extra(z):
        loss, dz = CB.dar_loss(z, easy, hard, 0.5)
        return w * loss, w * dz
    assert_grads(lambda pp: T.head_loss(pp, x, q, extra=extra), p)
    plain, _ = T.head_loss(p, x, q)
    both, _ = T.head_loss(p, x, q, extra=extra)
    z = T.head_forward(p, x)[1]
    assert both == pytest.approx(plain + w * CB.dar_loss(z, easy, hard, 0.5)[0], rel=1e-12)


# ---------------------------------------------------------------- pairs, labels, ranking
def test_pairs_take_every_easy_row_once_with_a_uniform_hard_partner():
    rng = np.random.default_rng(1)
    d = np.array([0, 1, 1, 0, 0, 1, 0, 0])
    easy, hard = CB.pairs(d, rng)
    assert list(easy) == [i for i in range(len(d)) if d[i] == 0]
    assert all(d[j] == 1 for j in hard) and len(hard) == len(easy)
    draws = np.concatenate([CB.pairs(d, rng)[1] for _ in range(3000)])
    share = np.bincount(draws, minlength=len(d))[d == 1] / len(draws)
    np.testing.assert_allclose(share, 1 / 3, atol=0.02)          # uniform over the hard rows
    for only in (np.zeros(4, int), np.ones(4, int)):
        e, h = CB.pairs(only, rng)
        assert len(e) == len(h) == 0


def test_difficulty_is_hard_when_any_seed_gets_it_wrong():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 12)
    preds = np.where(rng.random((4, 12)) < 0.8, y, rng.integers(0, 3, (4, 12)))
    want = [0 if all(preds[s, n] == y[n] for s in range(4)) else 1 for n in range(12)]
    assert list(CB.difficulty(preds, y)) == want
    assert list(CB.difficulty(preds[:1], y)) == [int(preds[0, n] != y[n]) for n in range(12)]
    with pytest.raises(InputError, match="predictions"):
        CB.difficulty(preds[:, :5], y)


def test_difficulty_labels_of_trained_heads_mark_the_flipped_labels_hard():
    """Two well-separated clusters whose labels are their cluster, but for a few flipped rows: a
    linear head predicts the cluster, so exactly the flipped rows (train and dev) are hard."""
    rng = np.random.default_rng(3)

    def cluster_data(n, flip):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, 6)) + np.where(y[:, None] == 1, 4.0, -4.0)
        yl = y.copy()
        yl[flip] = 1 - yl[flip]
        return x, yl
    flip, flip_dev = np.array([3, 10, 17, 50]), np.array([1, 8])
    x, y = cluster_data(120, flip)
    xd, yd = cluster_data(40, flip_dev)
    cfg = T.TrainConfig(max_epochs=40, batch_size=16, lr=3e-2, dar_seeds=3)
    d, d_dev = CB.labels("mean_linear", None, x, np.eye(2)[y], xd, np.eye(2)[yd], cfg)
    assert list(np.flatnonzero(d)) == list(flip) and list(np.flatnonzero(d_dev)) == list(flip_dev)


def test_rank_auc_counts_right_over_wrong_pairs_with_ties_as_half():
    rng = np.random.default_rng(4)
    conf = rng.choice([0.5, 0.6, 0.7, 0.9], 30)
    right = rng.random(30) < 0.6
    pairs = [(a, b) for a in conf[right] for b in conf[~right]]
    want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert CB.rank_auc(conf, right) == pytest.approx(want, rel=1e-12)
    assert math.isnan(CB.rank_auc(conf, np.ones(30, bool)))


# ---------------------------------------------------------------- training
def overlapping(n, rng, mu=0.3):
    """Two overlapping clusters: the rows a linear head gets wrong lie near the boundary."""
    y = np.arange(n) % 2
    return rng.normal(size=(n, 8)) + np.where(y[:, None] == 1, mu, -mu), y


def all_pairs_term(z, d, margin):
    e, h = np.flatnonzero(d == 0), np.flatnonzero(d == 1)
    ee, hh = np.repeat(e, len(h)), np.tile(h, len(e))
    return CB.dar_loss(z, ee, hh, margin)[0]


@pytest.mark.parametrize("seed", [0, 3])
def test_dar_training_lowers_its_ranking_term_and_weight_0_is_cross_entropy(seed):
    """Full batches, dev = train, no early stop: the CE head minimises CE, the DAR head CE + w DAR, so
    the DAR head's ranking term (over all easy x hard pairs) is the lower one."""
    x, y = overlapping(300, np.random.default_rng(seed))
    q = np.eye(2)[y]
    base = dict(max_epochs=150, batch_size=300, lr=3e-2, patience=150, dar_seeds=2, seed=1)
    ce_params, _ = T.train_head("mean_linear", None, x, q, x, q, T.TrainConfig(**base), np.random.default_rng(1))
    zero, _, _ = CB.train_member("mean_linear", None, x, y, x, y, 2, T.TrainConfig(**base, dar_weight=0.0),
                                 np.random.default_rng(1), 1)
    for k in ce_params:
        assert np.array_equal(zero[k], ce_params[k]), k
    dar, log, facts = CB.train_member("mean_linear", None, x, y, x, y, 2, T.TrainConfig(**base, dar_weight=2.0),
                                      np.random.default_rng(1), 1)
    d, _ = CB.labels("mean_linear", None, x, q, x, q, T.TrainConfig(**base))
    assert 0.1 < d.mean() < 0.3 and facts["hard_train"] == pytest.approx(d.mean())
    z_ce, z_dar = (T.head_forward(p, x)[1] for p in (ce_params, dar))
    assert all_pairs_term(z_dar, d, 0.5) < all_pairs_term(z_ce, d, 0.5) - 0.005
    assert log["train_loss"][-1] < log["train_loss"][0]


def test_train_exits_cascadebert_every_exit_head_and_the_record():
    m, _, ftr, ytr, fdv, ydv = toy_task(num_layers=3, n=200)
    cfg = dict(max_epochs=6, batch_size=32, lr=1e-2, seed=2)
    dee = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="deebert", cfg=T.TrainConfig(**cfg),
                        extras=(), train_final=True)
    zero = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="cascadebert",
                         cfg=T.TrainConfig(**cfg, dar_weight=0.0, dar_seeds=2), extras=(), train_final=True)
    casc = T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="cascadebert",
                         cfg=T.TrainConfig(**cfg, dar_weight=3.0, dar_seeds=2), extras=(), train_final=True)
    for a, b, c in zip(dee.exits.heads, zero.exits.heads, casc.exits.heads):
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), k
    assert np.array_equal(dee.exits.heads[-1].params["fc.w"], casc.exits.heads[-1].params["fc.w"])  # CE only
    assert any(not np.array_equal(a.params["fc.w"], c.params["fc.w"]) for a, c in zip(dee.exits.heads[:-1],
                                                                                      casc.exits.heads[:-1]))
    facts = casc.info["cascadebert_dev_per_layer"]
    assert [f["layer"] for f in facts] == [1, 2] and "cascadebert_dev_per_layer" not in dee.info
    assert casc.info["train_config"]["dar_weight"] == 3.0 and casc.info["objective"] == "cascadebert"


@pytest.mark.parametrize("bad, match", [
    (dict(dar_margin=-0.1), "margin must be a finite number >= 0"),
    (dict(dar_weight=float("nan")), "weight must be a finite number >= 0"),
    (dict(dar_weight=float("inf")), "weight must be a finite number >= 0"),
    (dict(dar_weight=-1.0), "weight must be a finite number >= 0"),
    (dict(dar_seeds=0), "seeds must be an integer >= 1"),
    (dict(dar_seeds=2.5), "seeds must be an integer >= 1"),
])
def test_bad_settings_are_refused(bad, match):
    m, _, ftr, ytr, fdv, ydv = toy_task(n=40)
    with pytest.raises(InputError, match=match):
        T.train_exits(m, ftr, ytr, fdv, ydv, m.label_names, objective="cascadebert", cfg=T.TrainConfig(**bad))
    with pytest.raises(InputError, match="not fastbert"):
        CB.check_settings(0.5, 0.5, 5, "fastbert")
    with pytest.raises(InputError, match="needs class probabilities"):
        T.train_exits(m, ftr, ytr.astype(np.float64), fdv, ydv.astype(np.float64), ["score"],
                      objective="cascadebert", extras=())


# ---------------------------------------------------------------- the command line
def csv_data(m, path, n=90):
    from refexit import tables
    rng = np.random.default_rng(7)
    vocab = m.tokenizer.vocab[5:]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 9))) for _ in range(n)]
    rows = [{"text": t, "label": ["neg", "pos"][len(t.split()) % 2], "split": ["train", "dev", "test"][i % 3]}
            for i, t in enumerate(texts)]
    return tables.write_rows(path, rows)


def test_cli_train_exits_cascadebert_then_evaluate_the_cascades(tmp_path, capsys):
    from refexit.cli.main import main
    m = synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=2, vocab_size=60,
                               head_kind="mean_linear", seed=1)
    mdir = synthetic.save_model(m, tmp_path / "model", with_exits=False)
    data, out = csv_data(m, tmp_path / "d.csv"), tmp_path / "ex"
    assert main(["train-exits", str(mdir), "--data", str(data), "--split-column", "split", "--objective",
                 "cascadebert", "--dar-weight", "1.5", "--dar-margin", "0.3", "--dar-seeds", "2", "--epochs", "3",
                 "--extras", "calibrate", "--out", str(out)]) == 0
    info = json.loads((out / "exits.json").read_text())
    cfg = info["train_config"]
    assert info["objective"] == "cascadebert"
    assert (cfg["dar_weight"], cfg["dar_margin"], cfg["dar_seeds"]) == (1.5, 0.3, 2)
    assert [f["layer"] for f in info["cascadebert_dev_per_layer"]] == [1, 2]
    capsys.readouterr()
    assert main(["evaluate", str(mdir), "--exits", str(out), "--sweep", "--policy", "max_prob", "--cascade", "1",
                 "--cascade", "2", "--out", str(tmp_path / "ev"), "--no-plot"]) == 0
    report = next((tmp_path / "ev").glob("evaluate-*.json"))
    rep = json.loads(report.read_text())
    assert rep["cascades"]["cascade1"]["points"] and rep["cascades"]["cascade2"]["points"]
    # the two tables of docs/methods.md from these files
    import cascade_rank_table
    import cascade_table
    capsys.readouterr()
    assert cascade_table.main([str(report), "--by-objective"]) == 0
    assert "| d (cascadebert) | cascade1 >" in capsys.readouterr().out
    assert cascade_rank_table.main([str(mdir), "--exits", str(out), "--header", "--shares", "0,1", "--members",
                                    "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| data set | exits | layer 1: acc % / AUC | layer 2")
    assert lines[2].startswith("| d | cascadebert (w 1.5, m 0.3, S 2) | ") and lines[2].count("/") == 2
    acc1 = lines[2].split("|")[3].split("/")[0].strip()
    full = f"{100 * rep['full']['test']['accuracy']:.2f}"
    assert lines[-1] == f"| d | cascadebert (w 1.5, m 0.3, S 2) | cascade1 | {full} | {acc1} |"


def test_share_accuracy_takes_the_most_confident_share_from_the_member():
    import cascade_rank_table
    conf = np.array([0.9, 0.6, 0.8, 0.7, 0.55])
    right_k, right_full = np.array([1, 0, 0, 1, 0], bool), np.array([0, 1, 1, 1, 1], bool)
    for share in (0.0, 0.4, 0.6, 1.0):
        n = round(share * 5)
        top = sorted(range(5), key=lambda i: -conf[i])[:n]
        want = np.mean([right_k[i] if i in top else right_full[i] for i in range(5)])
        assert cascade_rank_table.share_accuracy(conf, right_k, right_full, share) == pytest.approx(want)


@pytest.mark.parametrize("argv, match", [
    (["--objective", "cascadebert", "--dar-margin", "-0.5"], "margin must be a finite number >= 0"),
    (["--objective", "cascadebert", "--dar-weight", "nan"], "weight must be a finite number >= 0"),
    (["--objective", "cascadebert", "--dar-seeds", "0"], "seeds must be an integer >= 1"),
    (["--objective", "cascadebert", "--heads", "fastbert"], "not fastbert"),
    (["--objective", "deebert", "--dar-weight", "1"], "settings of --objective cascadebert"),
])
def test_cli_refuses_bad_dar_options_before_loading_anything(argv, match, capsys):
    from refexit.cli.main import main
    assert main(["train-exits", "no-such-model", "--data", "sms_spam", *argv]) == 1
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
