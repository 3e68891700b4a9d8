"""Boundary cases of every exit rule (methods.md): comparison direction at equality, counting,
ties, t = 0, regression, warnings and invalid thresholds."""
import math
import warnings

import numpy as np
import pytest

import refexit
from refexit import nn
from refexit.heads import ExitParams
from refexit.policies import ExitWarning

L, C = 4, 3


def decide_seq(policy, zs, exits=None, feats=None, num_labels=None):
    """Run policy over layers 1..len(zs) for one sample; -> list of (exit, score, margin)."""
    exits = exits or ExitParams([None] * L, temperatures=np.ones(L))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        policy.check(L, num_labels or len(zs[0]), exits)
    state = policy.start()
    out = []
    for i, z in enumerate(zs, start=1):
        out.append(policy.decide(i, np.asarray(z, np.float64), None if feats is None else feats[i - 1], exits, state))
    return out


Z = np.array([2.0, 0.5, -1.0])


def test_entropy_is_strict():
    h = float(nn.entropy(Z[None])[0])
    assert decide_seq(refexit.Entropy(h), [Z])[0][0] is False
    assert decide_seq(refexit.Entropy(np.nextafter(h, np.inf)), [Z])[0][0] is True
    assert decide_seq(refexit.Entropy(h), [Z])[0][1] == h


def test_norm_entropy_inclusive_by_default_strict_on_request():
    s = float(nn.entropy(Z[None])[0]) / math.log(3)
    assert decide_seq(refexit.NormEntropy(s), [Z])[0][0] is True
    assert decide_seq(refexit.NormEntropy(s, inclusive=False), [Z])[0][0] is False


def test_max_prob_inclusive_with_temperature():
    T = 2.5
    p = float(np.max(nn.softmax(Z / T)))
    pol = refexit.MaxProb(p, temperatures=[T] * L)
    ex, score, _ = decide_seq(pol, [Z])[0]
    assert ex is True and score == p
    assert decide_seq(refexit.MaxProb(np.nextafter(p, 2), temperatures=[T] * L), [Z])[0][0] is False
    assert decide_seq(refexit.MaxProb(p), [Z])[0][1] > p          # T = 1 is sharper


def test_learned_is_strict():
    w = np.array([[0.3, -0.2]]); b = np.array([0.1]); f = np.array([1.0, 2.0])
    exits = ExitParams([None] * L, lte={"w": w, "b": b}, temperatures=np.ones(L))
    u = float(nn.sigmoid(f @ w.T + b)[0])
    assert decide_seq(refexit.Learned(u), [Z], exits, [f])[0][0] is False
    assert decide_seq(refexit.Learned(np.nextafter(u, 1)), [Z], exits, [f])[0][0] is True


def test_ponder_running_sum_and_strictness():
    F, P = 2, 3
    rng = np.random.default_rng(0)
    pond = {"pos": rng.normal(size=(L, F)), "hid.w": rng.normal(size=(P, F)), "hid.b": rng.normal(size=P),
            "out.w": rng.normal(size=(1, P)), "out.b": rng.normal(size=1)}
    exits = ExitParams([None] * L, ponder=pond, temperatures=np.ones(L))
    feats = [rng.normal(size=F) for _ in range(3)]
    lams = [float(exits.ponder_lambda(i + 1, f)) for i, f in enumerate(feats)]
    # p_j = lambda_j prod_{k<j}(1 - lambda_k); the decision compares sum_{j<=i} p_j
    cum = [sum(lams[j] * np.prod([1 - lams[k] for k in range(j)]) for j in range(i + 1)) for i in range(3)]
    res = decide_seq(refexit.Ponder(10.0), [Z] * 3, exits, feats)    # q >= 1: never fires
    assert [r[0] for r in res] == [False] * 3
    assert np.allclose([r[1] for r in res], cum, atol=1e-15)
    assert decide_seq(refexit.Ponder(cum[1]), [Z] * 3, exits, feats)[1][0] is False   # equal: no exit
    assert decide_seq(refexit.Ponder(np.nextafter(cum[1], -1)), [Z] * 3, exits, feats)[1][0] is True


def onehot(c, scale=3.0):
    z = np.zeros(C)
    z[c] = scale
    return z


def test_patience_counts_agreements_and_resets():
    preds = [0, 0, 1, 1, 1]
    res = decide_seq(refexit.Patience(2), [onehot(c) for c in preds])
    assert [r[1] for r in res] == [0, 1, 0, 1, 2]
    assert [r[0] for r in res] == [False, False, False, False, True]


def test_patience_earliest_exit_is_t_plus_1_and_t0_never():
    res = decide_seq(refexit.Patience(1), [onehot(2)] * 2)
    assert [r[0] for r in res] == [False, True]
    res = decide_seq(refexit.Patience(2), [onehot(2)] * 3)
    assert [r[0] for r in res] == [False, False, True]
    assert not any(r[0] for r in decide_seq(refexit.Patience(0), [onehot(2)] * 3))


def test_patience_uses_lowest_index_on_ties():
    tie = np.array([1.0, 1.0, 0.0])
    res = decide_seq(refexit.Patience(1), [tie, onehot(0)])
    assert res[1][0] is True                # argmax(tie) = 0 agrees with class 0
    res = decide_seq(refexit.Patience(1), [tie, onehot(1)])
    assert res[1][0] is False
    assert res[1][2] == 0.0                 # the decision rests on a zero logit gap


def test_patience_regression_tau():
    ys = [[0.50], [0.55], [0.70], [0.72]]
    res = decide_seq(refexit.Patience(1, tau=0.1), ys, num_labels=1)
    assert [r[0] for r in res] == [False, True, False, True]
    assert not any(r[0] for r in decide_seq(refexit.Patience(1, tau=0.0), ys, num_labels=1))
    with pytest.raises(refexit.InputError):
        decide_seq(refexit.Patience(1), ys, num_labels=1)


def test_window_counts_this_layer():
    res = decide_seq(refexit.Window(2), [onehot(0), onehot(1), onehot(1)])
    assert [r[0] for r in res] == [False, False, True]
    assert decide_seq(refexit.Window(1), [onehot(0)])[0][0] is True


def test_static():
    assert [r[0] for r in decide_seq(refexit.Static(2), [Z] * 3)] == [False, True, False]


@pytest.mark.parametrize("make", [refexit.Entropy, refexit.NormEntropy, refexit.MaxProb, refexit.Learned,
                                  refexit.Ponder])
def test_nan_threshold_rejected(make):
    with pytest.raises(refexit.InputError, match="NaN"):
        make(float("nan"))
    with pytest.raises(refexit.InputError, match="NaN"):
        make([0.1, float("nan"), 0.2])


def test_per_layer_thresholds_length_checked():
    exits = ExitParams([None] * L, temperatures=np.ones(L))
    pol = refexit.Entropy([0.1, 0.2])
    with pytest.raises(refexit.InputError, match="one per layer"):
        pol.check(L, C, exits)
    refexit.Entropy([0.1, 0.2, 0.3]).check(L, C, exits)          # L-1 values
    refexit.Entropy([0.1, 0.2, 0.3, 9.0]).check(L, C, exits)     # L values, last ignored


@pytest.mark.parametrize("policy,fragment", [
    (refexit.Entropy(-1), "never"), (refexit.Entropy(0), "never"), (refexit.Entropy(2.0), "always"),
    (refexit.NormEntropy(-0.1), "never"), (refexit.NormEntropy(1.0), "always"),
    (refexit.MaxProb(1.01), "never"), (refexit.MaxProb(1 / 3), "always"),
    (refexit.Patience(0), "full model"), (refexit.Patience(3), "never"), (refexit.Window(1), "always"),
])
def test_threshold_that_never_or_always_fires_warns(policy, fragment):
    exits = ExitParams([None] * L, temperatures=np.ones(L))
    with pytest.warns(ExitWarning, match=fragment):
        msgs = policy.check(L, C, exits)
    assert msgs


def test_sensible_threshold_does_not_warn():
    exits = ExitParams([None] * L, temperatures=np.ones(L))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExitWarning)
        assert refexit.Entropy(0.3).check(L, C, exits) == []
        assert refexit.MaxProb(0.9).check(L, C, exits) == []


def test_single_class_rejected_where_undefined():
    exits = ExitParams([None] * L, temperatures=np.ones(L))
    for pol in (refexit.NormEntropy(0.5), refexit.Entropy(0.5), refexit.MaxProb(0.5)):
        with pytest.raises(refexit.InputError):
            pol.check(L, 1, exits)


def test_make_policy_by_name():
    assert isinstance(refexit.make_policy("max_prob", 0.9), refexit.MaxProb)
    with pytest.raises(refexit.InputError, match="unknown policy"):
        refexit.make_policy("nope", 1)
