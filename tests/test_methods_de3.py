"""DE3-BERT (methods.md, "Exit rules"): the distance-enhanced exit rule in the oracle, its class
prototypes (training, the exits file, the weights file) and the compiled C against the oracle."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import nn
from refexit.checkpoint import load_checkpoint, save_exits
from refexit.errors import CheckpointError, InputError
from refexit.heads import ExitParams
from refexit.synthetic import random_model, save_model
from refexit.train.exits import class_prototypes

from test_codegen_props import (EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, assert_alone_as_in_batch, batches,
                                compare, cut_between)
from test_policies import decide_seq

L, C = 4, 3
Z = np.array([2.0, 0.5, -1.0])


def exits_with(protos):
    return ExitParams([None] * L, temperatures=np.ones(L), prototypes=np.asarray(protos, np.float64))


def test_edr_is_the_weighted_harmonic_mean_of_distance_ratio_and_entropy():
    protos = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]] * (L - 1))       # [L-1, C, F]
    feat = np.array([1.0, 0.0])                                              # distances 1, 2, sqrt(17)
    r1, r2 = 1.0, 2.0                                                        # predicted class 0
    dr = 0.5 * (1 + (r1 - r2) / max(r1, r2))
    h = float(nn.entropy(Z[None])[0]) / math.log(C)
    for lam in (0.0, 1.0, 2.5):
        want = (lam + 1) / (lam / dr + 1 / h)
        ex, score, margin = decide_seq(refexit.DistanceEntropy(10.0, lam=lam), [Z], exits_with(protos), [feat])[0]
        assert score == pytest.approx(want, rel=1e-12) and ex is True
    assert decide_seq(refexit.DistanceEntropy(1.0, lam=0.0), [Z], exits_with(protos), [feat])[0][1] == \
        pytest.approx(h, rel=1e-12)                                           # lam = 0: entropy alone


def test_de3_is_strict_and_uses_the_predicted_class():
    protos = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]] * (L - 1))
    feat = np.array([1.0, 0.0])
    e = decide_seq(refexit.DistanceEntropy(10.0), [Z], exits_with(protos), [feat])[0][1]
    assert decide_seq(refexit.DistanceEntropy(e), [Z], exits_with(protos), [feat])[0][0] is False
    assert decide_seq(refexit.DistanceEntropy(np.nextafter(e, 2)), [Z], exits_with(protos), [feat])[0][0] is True
    # the feature vector closer to another class's prototype than the predicted one: DR > 0.5
    far = decide_seq(refexit.DistanceEntropy(10.0), [Z], exits_with(protos), [np.array([3.0, 0.0])])[0][1]
    assert far > e


def test_de3_degenerate_cases():
    protos = np.zeros((L - 1, C, 2))
    feat = np.zeros(2)
    lam = 1.0
    h = float(nn.entropy(Z[None])[0]) / math.log(C)
    # every distance 0: DR = 0.5 (not 0/0)
    got = decide_seq(refexit.DistanceEntropy(10.0, lam=lam), [Z], exits_with(protos), [feat])[0][1]
    assert got == pytest.approx((lam + 1) / (lam / 0.5 + 1 / h))
    # on the predicted class's prototype: DR = 0, EDR = 0 (exits at any positive threshold)
    protos[:, 0] = [1.0, 1.0]
    feat = np.array([1.0, 1.0])
    ex, score, _ = decide_seq(refexit.DistanceEntropy(1e-9), [Z], exits_with(protos), [feat])[0]
    assert score == 0.0 and ex is True
    # a one-hot softmax: H = 0, EDR = 0
    z = np.array([1000.0, 0.0, -1000.0])
    assert decide_seq(refexit.DistanceEntropy(1e-9), [z], exits_with(protos), [np.array([5.0, 5.0])])[0][1] == 0.0


def test_de3_bad_settings_raise():
    with pytest.raises(InputError, match="NaN"):
        refexit.DistanceEntropy(float("nan"))
    with pytest.raises(InputError, match="NaN"):
        refexit.DistanceEntropy([0.2, float("nan"), 0.3])
    for lam in (float("nan"), -1.0, float("inf"), "1", True):
        with pytest.raises(InputError, match="lam"):
            refexit.DistanceEntropy(0.5, lam=lam)
    with pytest.raises(InputError, match="prototypes"):
        refexit.DistanceEntropy(0.5).check(L, C, ExitParams([None] * L, temperatures=np.ones(L)))
    with pytest.raises(InputError, match="2 classes"):
        refexit.DistanceEntropy(0.5).check(L, 1, exits_with(np.zeros((L - 1, 1, 2))))
    with pytest.raises(InputError, match="values"):
        refexit.DistanceEntropy([0.1, 0.2]).check(L, C, exits_with(np.zeros((L - 1, C, 2))))
    with pytest.warns(refexit.ExitWarning, match="never fire"):
        refexit.DistanceEntropy(0.0).check(L, C, exits_with(np.zeros((L - 1, C, 2))))
    with pytest.warns(refexit.ExitWarning, match="always fires"):
        refexit.DistanceEntropy(1.5).check(L, C, exits_with(np.zeros((L - 1, C, 2))))
    assert refexit.make_policy("de3", 0.3, lam=2.0).lam == 2.0


def test_class_prototypes_are_class_means():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 1, 0, 1])                                           # class 2 absent
    outs = [(rng.normal(size=(5, 4)), None) for _ in range(L)]
    p = class_prototypes(outs, y, C)
    assert p.shape == (L - 1, C, 4)
    for i in range(L - 1):
        np.testing.assert_allclose(p[i, 0], outs[i][0][y == 0].mean(0))
        np.testing.assert_allclose(p[i, 1], outs[i][0][y == 1].mean(0))
        np.testing.assert_allclose(p[i, 2], outs[i][0].mean(0))            # absent: the overall mean


def test_prototypes_round_trip_through_the_exits_file(tmp_path):
    model = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=3, seed=1,
                         head_kind="mean_linear", prototypes=True)
    save_model(model, tmp_path / "m")
    _, _, ep, _ = load_checkpoint(tmp_path / "m")
    np.testing.assert_array_equal(ep.prototypes, model.exits.prototypes)
    # an exits file without prototypes (written before DE3-BERT) still loads, without them
    old = ExitParams(model.exits.heads, model.exits.lte, model.exits.ponder, model.exits.temperatures)
    save_exits(tmp_path / "old.safetensors", old, model.label_names)
    _, _, ep, _ = load_checkpoint(tmp_path / "m", exits=tmp_path / "old.safetensors")
    assert ep.prototypes is None
    # misshaped or non-finite prototypes are refused, naming the tensor
    for bad in (np.zeros((3, 3, 12)), np.full((2, 3, 12), np.nan)):
        save_exits(tmp_path / "bad.safetensors", ExitParams(model.exits.heads, None, None, np.ones(3), bad),
                   model.label_names)
        with pytest.raises(CheckpointError, match="prototypes"):
            load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
}
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert")
_MODELS, _COMPILED = {}, {}


def get(cfg, kind, build_root, lam=1.0):
    if (cfg, kind) not in _MODELS:
        _MODELS[cfg, kind] = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97,
                                          max_position=40, scale=1.5, prototypes=True,
                                          l2norm=kind == "mean_linear", **CONFIGS[cfg])
    model = _MODELS[cfg, kind]
    if (cfg, kind, lam) not in _COMPILED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            _COMPILED[cfg, kind, lam] = refexit_compile(model, refexit.DistanceEntropy(-1.0, lam=lam),
                                                        build_root / f"de3_{cfg}_{kind}_{lam}")
    return model, _COMPILED[cfg, kind, lam]


def refexit_compile(model, policy, out_dir):
    import codegen
    return codegen.compile_model(model, policy, out_dir, prefix="de3_" + out_dir.name.split("_", 1)[1]
                                 .replace(".", "_"), max_length=MAX_LEN, max_batch=MAX_BATCH,
                                 max_tokens=MAX_TOKENS)


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("de3")


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_de3_matches_oracle(kind, build_root):
    """Thresholds cut between the oracle's own EDR scores; C vs the float64 oracle per sample, and a
    sample's result does not depend on its batch mates (bitwise)."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        lam = data.draw(st.sampled_from([1.0, 0.5]), label="lam")
        model, cm = get(cfg, kind, build_root, lam)
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            tr = model.astype(np.float64).classify(enc, refexit.DistanceEntropy(-1.0, lam=lam), trace=True)
        scores = np.array([[t.score for t in s if t.layer < model.num_layers] for s in tr.per_layer])
        if data.draw(st.booleans(), label="per_layer"):
            thr = [cut_between(data.draw, scores[:, i], f"cut {i + 1}") for i in range(model.num_layers - 1)]
        else:
            thr = cut_between(data.draw, scores, "cut")
        got = compare(cm, model, refexit.DistanceEntropy(thr, lam=lam), enc, f"config {cfg} {kind} de3")
        assert_alone_as_in_batch(cm, enc, got)

    check()


def test_compiled_de3_settings(build_root):
    model, cm = get("a", "mean_linear", build_root)
    with pytest.raises(InputError, match="lam"):
        cm.set_policy(refexit.DistanceEntropy(0.5, lam=2.0))               # compiled in
    with pytest.raises(InputError, match="NaN"):
        cm.set_threshold(float("nan"))
    with pytest.raises(InputError, match="compiled for the de3 policy"):
        cm.set_policy(refexit.Entropy(0.5))
    enc = {"input_ids": np.array([[2, 5, 9, 3]]), "attention_mask": np.ones((1, 4), np.int64)}
    with pytest.warns(refexit.ExitWarning):
        cm.set_policy(refexit.DistanceEntropy(2.0))                         # always fires at layer 1
    assert cm.classify(enc).exit_layers.tolist() == [1]
    # a model without prototypes cannot be compiled for de3
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="prototypes"):
        refexit_compile(bare, refexit.DistanceEntropy(0.5), build_root / "de3_bare")


def test_command_line_settings_of_de3_and_edgebert():
    import argparse
    from refexit.cli.policy_args import add_policy_args, policy_from_args
    p = argparse.ArgumentParser()
    add_policy_args(p)
    pol = policy_from_args(p.parse_args(["--policy", "de3", "--threshold", "0.2,0.3", "--lam", "2"]))
    assert isinstance(pol, refexit.DistanceEntropy) and pol.lam == 2.0 and pol.threshold == [0.2, 0.3]
    pol = policy_from_args(p.parse_args(["--policy", "edgebert", "--threshold", "0.1", "--check-between"]))
    assert isinstance(pol, refexit.PredictedExit) and pol.check_between is True
    assert policy_from_args(p.parse_args(["--policy", "edgebert", "--threshold", "0.1"])).check_between is False
    for argv, match in ((["--policy", "entropy", "--threshold", "0.1", "--lam", "2"], "not a setting"),
                        (["--policy", "de3", "--threshold", "0.1", "--check-between"], "not a setting"),
                        (["--policy", "de3"], "needs --threshold"),
                        (["--policy", "de3", "--threshold", "0.1", "--lam", "nan"], "lam"),
                        (["--lam", "1"], "needs --policy")):
        with pytest.raises(InputError, match=match):
            policy_from_args(p.parse_args(argv))
