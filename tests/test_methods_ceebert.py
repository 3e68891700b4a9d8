"""CeeBERT (methods.md, "CeeBERT"): per-exit UCB bandits choose the confidence thresholds online,
without labels. The rule and the bandits' update in the oracle (worked by hand), its state (read,
reset, restore), that results depend on the input order and the batch boundaries only, bad settings,
and the compiled C against the float64 oracle given the same input order and batch boundaries
(exit decisions exact outside the threshold's tolerance band, the bandits' counts exact, their means
close; two handles keep separate states)."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit.errors import InputError
from refexit.policies import max_softmax
from refexit.synthetic import random_model
from refexit.train import evaluate as E
from refexit.train import features as F

from test_codegen_props import ATOL, EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, NEAR, RTOL, batches
from test_policies import decide_seq


def z_with_conf(p: float, C: int = 2) -> np.ndarray:
    """Logits [C] whose max softmax is p (class 0 on top, the rest equal)."""
    return np.array([math.log(p * (C - 1) / (1 - p))] + [0.0] * (C - 1))


def sample_state(confs: dict) -> dict:
    return {"conf": dict(confs)}


# ---------------------------------------------------------------- the rule and the bandits, by hand
def test_exit_is_inclusive_at_the_arm_in_force():
    pol = refexit.CeeBERT(0.1, arms=[0.6, 0.8])
    z = np.array([0.0, 0.0])                                    # p = 0.5
    res = decide_seq(pol, [z_with_conf(0.6), z_with_conf(0.59), z])
    assert res[0][0] is True and res[1][0] is False             # fresh state: the first arm, 0.6, inclusive
    assert res[0][1] == pytest.approx(0.6) and res[1][2] == pytest.approx(0.01)
    assert max_softmax(np.array([1000.0, -1000.0, 0.0])) == 1.0  # max-subtracted: no overflow


def test_update_rewards_side_observations_and_ucb_by_hand():
    """L = 3 (bandits at exits 1 and 2), arms 0.5, 0.7, 0.9, cost 0.1, c = 1."""
    pol = refexit.CeeBERT(0.1, arms=[0.5, 0.7, 0.9], c=1.0)
    pol.reset(3)
    b = pol._bandit
    b["arm"][:] = [1, 2]                                        # in force: exit 1 at 0.7, exit 2 at 0.9
    final = np.array([[math.log(0.95 / 0.05), 0.0]])            # max softmax 0.95 at layer L
    # sample A exits at 1 (conf 0.8 >= 0.7); sample B goes on at 1 (0.6) and 2 (0.8), ends at L = 3
    pol.observe([sample_state({1: 0.8}), sample_state({1: 0.6, 2: 0.8})],
                np.vstack([[0.0, 0.0], final]), np.array([1, 3]))
    st_ = pol.state()
    rB1 = 0.95 - 0.6 - 0.1 * 2                                   # bandit 1: conf_L - conf_1 - 2 o
    rB2 = 0.95 - 0.8 - 0.1 * 1
    # bandit 1: A exited with arm 1 -> arms 0, 1 get 0; B went on with arm 1 -> arms 1, 2 get rB1
    np.testing.assert_array_equal(st_["n"][0], [1, 2, 1])
    np.testing.assert_allclose(st_["q"][0], [0.0, rB1 / 2, rB1])
    # bandit 2: only B reached it and went on with arm 2 -> arm 2 gets rB2
    np.testing.assert_array_equal(st_["n"][1], [0, 0, 1])
    np.testing.assert_allclose(st_["q"][1], [0.0, 0.0, rB2])
    np.testing.assert_array_equal(st_["t"], [2, 1])
    # next arms: bandit 1 has every arm observed: argmax q + sqrt(ln 2 / n); bandit 2: arm 0 (n = 0)
    ucb = st_["q"][0] + np.sqrt(math.log(2) / st_["n"][0])
    assert st_["arm"][0] == int(np.argmax(ucb)) == 2 and st_["arm"][1] == 0
    assert pol.thresholds() == [0.9, 0.5]


def test_ties_go_to_the_lowest_arm_and_c_zero_is_greedy():
    pol = refexit.CeeBERT(0.0, arms=[0.5, 0.6, 0.7], c=0.0)
    pol.set_state(q=[[0.2, 0.3, 0.3]], n=[[1, 1, 1]], t=[3])
    assert pol.state()["arm"].tolist() == [1]
    pol.set_state(q=[[0.2, 0.3, 0.3]], n=[[1, 0, 1]], t=[3])    # an unobserved arm comes first
    assert pol.state()["arm"].tolist() == [1]


# ---------------------------------------------------------------- bad settings
@pytest.mark.parametrize("kw, match", [
    (dict(cost=float("nan")), "cost"), (dict(cost=-0.1), "cost"), (dict(cost=float("inf")), "cost"),
    (dict(cost=True), "cost"), (dict(cost=0.1, arms=[]), "non-empty"), (dict(cost=0.1, arms=[[0.5]]), "1-D"),
    (dict(cost=0.1, arms=[0.5, float("nan")]), r"\[0, 1\]"), (dict(cost=0.1, arms=[0.5, 1.5]), r"\[0, 1\]"),
    (dict(cost=0.1, arms=[0.7, 0.5]), "increasing"), (dict(cost=0.1, arms=[0.5, 0.5]), "increasing"),
    (dict(cost=0.1, arms=["a"]), "numbers"), (dict(cost=0.1, c=float("nan")), "exploration"),
    (dict(cost=0.1, c=-1), "exploration")])
def test_bad_settings_raise(kw, match):
    with pytest.raises(InputError, match=match):
        refexit.CeeBERT(**kw)


def test_bad_models_and_states_raise():
    with pytest.raises(InputError, match="2 classes"):
        refexit.CeeBERT(0.1).check(3, 1, None)
    with pytest.raises(InputError, match="exit layer"):
        refexit.CeeBERT(0.1).check(1, 2, None)
    pol = refexit.CeeBERT(0.1, arms=[0.5, 0.9])
    with pytest.raises(InputError, match="no state yet"):
        pol.state()
    pol.check(4, 2, None)
    with pytest.raises(InputError, match="reset"):
        pol.check(5, 2, None)                                   # a state for another depth
    for q, n, t, match in [([[0.0, 0.0]], [[1, 0]], [0], "0 <= n <= t"),
                           ([[0.0, 0.0]], [[-1, 0]], [1], "0 <= n <= t"),
                           ([[np.nan, 0.0]], [[0, 0]], [0], "finite"),
                           ([[0.0, 0.0, 0.0]], [[0, 0, 0]], [0], "shapes"),
                           ([[0.0, 0.0]], [[0.5, 0]], [1], "integers")]:
        with pytest.raises(InputError, match=match):
            pol.set_state(q, n, t)


# ---------------------------------------------------------------- the oracle: state and input order
def _model(L=4, C=3, seed=3, kind="pooler_linear"):
    return random_model(num_layers=L, hidden=16, heads=2, intermediate=24, num_labels=C, seed=seed,
                        head_kind=kind, scale=1.5)


def _texts(m, n, seed=1):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(n)]


def _stream(m, pol, texts, size):
    """Classify `texts` in consecutive batches of `size` -> (exit layers, labels, thresholds used)."""
    exits, labels, used = [], [], []
    for i in range(0, len(texts), size):
        used.append(pol.thresholds() if pol._bandit is not None else None)
        r = m.classify(m.tokenizer(texts[i:i + size], max_length=32), pol)
        exits += r.exit_layers.tolist()
        labels += r.labels.tolist()
    return exits, labels, used


def test_oracle_depends_on_input_order_and_batch_boundaries_only():
    m = _model()
    texts = _texts(m, 24)
    arms = [0.4, 0.5, 0.6, 0.7, 0.8]
    a = refexit.CeeBERT(0.02, arms=arms)
    b = refexit.CeeBERT(0.02, arms=arms)
    ra, rb = _stream(m, a, texts, 4), _stream(m, b, texts, 4)
    assert ra == rb                                             # same order, same boundaries: identical
    for k in a.state():
        np.testing.assert_array_equal(a.state()[k], b.state()[k])
    assert len({tuple(u) for u in ra[2][1:]}) >= 2, ra[2]       # the thresholds did move
    assert len(set(ra[0])) >= 2, ra[0]
    c = refexit.CeeBERT(0.02, arms=arms)
    _stream(m, c, texts[::-1], 4)                               # another order: another state
    assert not np.array_equal(c.state()["q"], a.state()["q"])
    d = refexit.CeeBERT(0.02, arms=arms)
    _stream(m, d, texts, 3)                                     # other boundaries: other arms in force
    assert not np.array_equal(d.state()["q"], a.state()["q"])


def test_oracle_within_a_batch_a_sample_does_not_depend_on_its_mates():
    """The thresholds are fixed during a batch: each sample alone, from the same state, gets bit for
    bit what it gets inside the batch."""
    m = _model()
    texts = _texts(m, 9)
    pol = refexit.CeeBERT(0.02, arms=[0.4, 0.5, 0.6, 0.7])
    _stream(m, pol, _texts(m, 12, seed=5), 4)                   # some learned state
    saved = pol.state()
    batch = m.classify(m.tokenizer(texts, max_length=32), pol)
    for i, t in enumerate(texts):
        pol.set_state(saved["q"], saved["n"], saved["t"])
        one = m.classify(m.tokenizer([t], max_length=32), pol)
        np.testing.assert_array_equal(one.logits[0], batch.logits[i])
        assert one.exit_layers[0] == batch.exit_layers[i]


def test_oracle_state_round_trip_and_reset():
    m = _model()
    pol = refexit.CeeBERT(0.02, arms=[0.4, 0.55, 0.7])
    _stream(m, pol, _texts(m, 10), 3)
    saved = pol.state()
    after = _stream(m, pol, _texts(m, 8, seed=9), 2)
    pol.reset()
    fresh = pol.state()
    assert not fresh["n"].any() and not fresh["t"].any() and not fresh["arm"].any()
    pol.set_state(saved["q"], saved["n"], saved["t"])
    np.testing.assert_array_equal(pol.state()["arm"], saved["arm"])
    assert _stream(m, pol, _texts(m, 8, seed=9), 2) == after     # restored: the same future


def test_replay_matches_model_classify_batchwise():
    """evaluate.simulate(batch=k) replays Model.classify called on consecutive batches of k."""
    m = _model(L=3, C=2, kind="mean_linear")
    texts = _texts(m, 15)
    live = refexit.CeeBERT(0.03, arms=[0.5, 0.6, 0.7, 0.8])
    exits, labels, _ = _stream(m, live, texts, 4)
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    replay = refexit.CeeBERT(0.03, arms=[0.5, 0.6, 0.7, 0.8])
    res = E.simulate(m, replay, E.LayerOutputs(m, feats), batch=4)
    assert res.exit_layers.tolist() == exits and res.labels.tolist() == labels
    np.testing.assert_allclose(replay.state()["q"], live.state()["q"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(replay.state()["n"], live.state()["n"])


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "b": dict(num_layers=2, hidden=30, heads=2, intermediate=37, num_labels=3, hidden_act="gelu_new", seed=12),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
}
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert")
K_ARMS = 4
_MODELS, _COMPILED = {}, {}


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("ceebert")


def _model_of(cfg, kind):
    if (cfg, kind) not in _MODELS:
        _MODELS[cfg, kind] = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97,
                                          max_position=40, scale=1.5, **CONFIGS[cfg])
    return _MODELS[cfg, kind]


def get(cfg, kind, arms, c, build_root, tag=""):
    """A library per (config, kind, arms, c): arms and c are compiled in, the cost is set at run time."""
    model = _model_of(cfg, kind)
    key = (cfg, kind, tuple(arms), c, tag)
    if key not in _COMPILED:
        import codegen
        n = len(_COMPILED)
        _COMPILED[key] = codegen.compile_model(model, refexit.CeeBERT(0.0, arms=arms, c=c),
                                               build_root / f"cee_{n}", prefix=f"cee_{n}", max_length=MAX_LEN,
                                               max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    return model, _COMPILED[key]


_SPREAD = {}


def get_spread(cfg, kind, build_root):
    """The library of (config, kind) whose K_ARMS arms are quantiles of the model's own confidences on
    random batches (so exits happen at various layers); c = 1, the cost set per example."""
    if (cfg, kind) not in _SPREAD:
        model = _model_of(cfg, kind)
        rng = np.random.default_rng(7)
        confs = np.concatenate([oracle_confidences(model.astype(np.float64), _enc(rng, 6, model.config.vocab_size))
                                for _ in range(3)])
        arms = np.unique(np.round(np.quantile(confs, np.linspace(0.15, 0.85, K_ARMS)), 4)).tolist()
        _SPREAD[cfg, kind] = (model, get(cfg, kind, arms, 1.0, build_root)[1], arms)
    return _SPREAD[cfg, kind]


def oracle_confidences(model64, enc) -> np.ndarray:
    """[B * (L-1)] max softmax at every exit (a max_prob policy that never exits, temperature 1)."""
    L = model64.num_layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        tr = model64.classify(enc, refexit.MaxProb(2.0, temperatures=np.ones(L)), trace=True)
    return np.array([t.score for s in tr.per_layer for t in s if t.layer < L])


STATS = {"batches": 0, "samples": 0, "near": 0, "synced": 0}


def run_both(cm, model64, ref, enc, what):
    """One batch through the C handle and the oracle policy (same state before); checks the decisions
    (exact outside the tolerance band), the logits, and the bandits after; returns whether the states
    had to be re-synchronised (a near-threshold sample or a near-tie of the next arms)."""
    np.testing.assert_array_equal(cm.thresholds, np.asarray(ref.thresholds(), np.float32), err_msg=what)
    got = cm.classify(enc)
    r = model64.classify(enc, ref)
    near = r.margins < NEAR
    bad = ((got.exit_layers != r.exit_layers) | (got.labels != r.labels)) & ~near
    assert not bad.any(), (f"{what}: samples {np.flatnonzero(bad).tolist()} C exits {got.exit_layers.tolist()} "
                           f"oracle {r.exit_layers.tolist()} margins {r.margins.tolist()}")
    same = got.exit_layers == r.exit_layers
    np.testing.assert_allclose(got.logits[same], r.logits[same], rtol=RTOL, atol=ATOL, err_msg=what)
    sc, so = cm.bandit_state(), ref.state()
    STATS["batches"] += 1
    STATS["samples"] += len(r.exit_layers)
    if near.any() or ref.ucb_gap() < 1e-4:
        STATS["near"] += int(near.sum())
        STATS["synced"] += 1
        ref.set_state(sc["q"], sc["n"], sc["t"])                # continue both from the C's state
        np.testing.assert_array_equal(ref.state()["arm"], sc["arm"])
        return True
    np.testing.assert_array_equal(sc["n"], so["n"], err_msg=f"{what}: observation counts")
    np.testing.assert_array_equal(sc["t"], so["t"], err_msg=f"{what}: rounds")
    np.testing.assert_array_equal(sc["arm"], so["arm"], err_msg=f"{what}: arms chosen")
    np.testing.assert_allclose(sc["q"], so["q"], rtol=1e-4, atol=1e-5, err_msg=f"{what}: mean rewards")
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_ceebert_matches_oracle(kind, build_root):
    """A stream of 2-5 batches (mixed lengths, some larger than the compiled chunk of 3 samples) from a
    fresh state: the C's thresholds before each batch, its decisions and its bandits after equal the
    float64 oracle's given the same order and boundaries. Arms are cut between the oracle's own
    confidences so exits happen at various layers."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        model, cm, arms = get_spread(cfg, kind, build_root)
        m64 = model.astype(np.float64)
        encs = [data.draw(batches(model.config.vocab_size), label=f"batch {i}")
                for i in range(data.draw(st.integers(2, 5), label="batches"))]
        c = 1.0
        cost = data.draw(st.sampled_from([0.0, 0.02, 0.1]), label="cost")
        cm.reset_bandit()
        cm.set_threshold(cost)
        ref = refexit.CeeBERT(cost, arms=arms, c=c)
        ref.reset(model.num_layers)
        for i, enc in enumerate(encs):
            run_both(cm, m64, ref, enc, f"config {cfg} {kind} arms {arms} c {c} cost {cost} batch {i}")

    before = dict(STATS)
    check()
    compared = STATS["batches"] - before["batches"] - (STATS["synced"] - before["synced"])
    print(f"\nceebert {kind}: {STATS['batches'] - before['batches']} batches, {compared} compared state for state, "
          f"{STATS['synced'] - before['synced']} re-synchronised ({STATS['near'] - before['near']} samples near a threshold)")
    assert compared > 0                                         # the states were really compared


def test_compiled_state_read_reset_round_trip_and_two_handles(build_root):
    import codegen
    model, cm = get("c", "mean_linear", [0.4, 0.5, 0.6, 0.7], 2.0, build_root)
    cm.reset_bandit()
    cm.set_threshold(0.02)
    rng = np.random.default_rng(4)
    encs = [_enc(rng, 5) for _ in range(4)]
    for e in encs[:2]:
        cm.classify(e)
    saved = cm.bandit_state()
    assert saved["t"][0] > 0 and saved["n"].sum() > 0
    after = [cm.classify(e).exit_layers.tolist() for e in encs[2:]]
    cm.reset_bandit()
    fresh = cm.bandit_state()
    assert not fresh["n"].any() and not fresh["t"].any() and not fresh["q"].any()
    np.testing.assert_array_equal(cm.thresholds, np.float32(0.4))
    cm.set_bandit_state(saved["q"], saved["n"], saved["t"])
    for k in saved:
        np.testing.assert_array_equal(cm.bandit_state()[k], saved[k])
    assert [cm.classify(e).exit_layers.tolist() for e in encs[2:]] == after
    # the oracle continues from the C's state (and the C from the oracle's) through set_policy
    pol = refexit.CeeBERT(0.02, arms=[0.4, 0.5, 0.6, 0.7])
    pol.reset(model.num_layers)
    pol.set_state(saved["q"], saved["n"], saved["t"])
    cm.reset_bandit()
    cm.set_policy(pol)
    np.testing.assert_array_equal(cm.bandit_state()["n"], saved["n"])
    # two handles of one library: separate states
    other = codegen.load_compiled(cm.out_dir)
    other.reset_bandit()
    cm.reset_bandit()
    for e in encs:
        other.classify(e)
    assert not cm.bandit_state()["t"].any()                     # untouched by the other handle
    cm.classify(encs[0])
    assert cm.bandit_state()["t"][0] == 5 and other.bandit_state()["t"][0] == 20
    # the same inputs in the same order on a fresh handle: the same results
    third = codegen.load_compiled(cm.out_dir)
    third.set_threshold(0.02)
    other.reset_bandit()
    assert [other.classify(e).exit_layers.tolist() for e in encs] == \
        [third.classify(e).exit_layers.tolist() for e in encs]


def _enc(rng, B, vocab=97):
    lengths = rng.integers(2, MAX_LEN + 1, B)
    T = int(lengths.max())
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(0, vocab, (B, T)) * mask
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_compiled_bad_settings_raise(build_root):
    model, cm = get("a", "pooler_linear", [0.5, 0.7], 2.0, build_root)
    with pytest.raises(InputError, match="NaN"):
        cm.set_threshold(float("nan"))
    with pytest.raises(InputError):
        cm.set_threshold(-0.1)                                  # a negative cost
    with pytest.raises(InputError):
        cm.set_thresholds([0.5, 0.6])                           # the bandits choose the thresholds
    E_, K = model.num_layers - 1, 2
    with pytest.raises(InputError, match="0 <= n <= t"):
        cm.set_bandit_state(np.zeros((E_, K)), np.ones((E_, K), np.int64), np.zeros(E_, np.int64))
    with pytest.raises(InputError, match="NaN"):
        cm.set_bandit_state(np.full((E_, K), np.nan), np.zeros((E_, K), np.int64), np.zeros(E_, np.int64))
    with pytest.raises(InputError, match="shapes"):
        cm.set_bandit_state(np.zeros((E_, K + 1)), np.zeros((E_, K + 1), np.int64), np.zeros(E_, np.int64))
    with pytest.raises(InputError, match="arms"):
        cm.set_policy(refexit.CeeBERT(0.1, arms=[0.5, 0.8]))     # compiled in
    import codegen
    plain = codegen.compile_model(model, refexit.MaxProb(0.7), build_root / "cee_plain", prefix="cee_plain",
                                  max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    with pytest.raises(InputError, match="no bandit state"):
        plain.bandit_state()


# ---------------------------------------------------------------- command line and evaluate
def test_command_line_settings_of_ceebert():
    import argparse
    from refexit.cli.policy_args import add_policy_args, policy_from_args
    p = argparse.ArgumentParser()
    add_policy_args(p)
    pol = policy_from_args(p.parse_args(["--policy", "ceebert", "--cost", "0.03", "--arms", "0.6,0.8", "--ucb-c", "1"]))
    assert isinstance(pol, refexit.CeeBERT) and (pol.cost, pol.arms, pol.c) == (0.03, [0.6, 0.8], 1.0)
    pol = policy_from_args(p.parse_args(["--policy", "ceebert", "--cost", "0"]))
    assert pol.arms == list(refexit.CeeBERT.ARMS) and pol.c == 2.0 and len(pol.arms) == 10
    for argv, match in ((["--policy", "ceebert"], "needs --cost"),
                        (["--policy", "ceebert", "--threshold", "0.5"], "not a setting"),
                        (["--policy", "entropy", "--threshold", "0.5", "--cost", "0.1"], "not a setting"),
                        (["--policy", "ceebert", "--cost", "nan"], "cost"),
                        (["--policy", "ceebert", "--cost", "0.1", "--arms", "0.9,0.5"], "increasing"),
                        (["--policy", "ceebert", "--cost", "0.1", "--ucb-c", "-2"], "exploration"),
                        (["--cost", "0.1"], "needs --policy")):
        with pytest.raises(InputError, match=match):
            policy_from_args(p.parse_args(argv))


def test_classify_command_learns_across_its_batches(tmp_path, capsys):
    """`refexit classify --policy ceebert --batch 2`: the same texts in the same order twice give the
    same lines; the bandits learned (the exits differ from a run in one batch)."""
    import json
    from refexit.cli.main import main
    from refexit.synthetic import save_model
    m = _model(L=4, C=2, kind="mean_linear")
    folder = save_model(m, tmp_path / "model")
    texts = _texts(m, 12, seed=2)
    runs = []
    for batch in ("2", "2", "12"):
        assert main(["classify", str(folder), *texts, "--policy", "ceebert", "--cost", "0.02",
                     "--arms", "0.5,0.6,0.7,0.8,0.9", "--batch", batch]) == 0
        runs.append([json.loads(x)["exit_layer"] for x in capsys.readouterr()[0].splitlines()])
    assert runs[0] == runs[1] and len(runs[0]) == 12
    assert runs[2] != runs[0]                                   # one batch: the first arms for all


def test_evaluate_sweeps_the_cost_and_restarts_per_split():
    m = _model(L=3, C=2, kind="mean_linear")
    texts = _texts(m, 20)
    y = np.random.default_rng(0).integers(0, 2, 20)
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    rep = E.evaluate(m, {"dev": feats, "test": feats}, {"dev": y, "test": y}, ("ceebert",), progress=False,
                     online_batch=3)
    pts = rep["policies"]["ceebert"]["points"]
    assert [p["params"]["cost"] for p in pts] == list(E.CEEBERT_COSTS)
    for p in pts:                                               # the same texts on both splits, fresh each time
        assert p["dev"] == p["test"]
    assert pts[0]["dev"]["mean_layers"] <= pts[-1]["dev"]["mean_layers"]
