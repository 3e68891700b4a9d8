"""The oracle forward: per-sample exit semantics, batch/padding independence, input errors."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import refexit
from refexit.policies import ExitWarning
from refexit.synthetic import random_model

MODELS = {kind: random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3,
                             head_kind=kind, fastbert_width=10, seed=3, scale=2.0)
          for kind in ("pooler_linear", "shared_pooler", "mean_linear", "fastbert")}
POLICIES = [refexit.Entropy(0.9), refexit.NormEntropy(0.85), refexit.MaxProb(0.5), refexit.Patience(1),
            refexit.Learned(0.5), refexit.Ponder(0.5), refexit.Window(2), refexit.Static(2), None]
words = st.text(alphabet="abcdefghij klmnop.,!", max_size=40)


def enc_of(model, texts, **kw):
    return model.tokenizer(texts, **kw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(MODELS)), texts=st.lists(words, min_size=2, max_size=5),
       pi=st.integers(0, len(POLICIES) - 1), pad=st.integers(0, 7))
def test_sample_result_independent_of_batch_and_padding(kind, texts, pi, pad):
    model, policy = MODELS[kind], POLICIES[pi]
    enc = enc_of(model, texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExitWarning)
        batch = model.classify(enc, policy)
        # extra padding columns and a reversed batch
        ids = np.pad(enc.input_ids, ((0, 0), (0, pad)))
        mask = np.pad(enc.attention_mask, ((0, 0), (0, pad)))
        types = np.pad(enc.token_type_ids, ((0, 0), (0, pad)))
        rev = model.classify({"input_ids": ids[::-1], "attention_mask": mask[::-1], "token_type_ids": types[::-1]},
                             policy)
        for b, t in enumerate(texts):
            alone = model.classify(enc_of(model, [t]), policy)
            assert np.array_equal(alone.logits[0], batch.logits[b])          # bitwise
            assert alone.exit_layers[0] == batch.exit_layers[b]
    assert np.array_equal(rev.logits[::-1], batch.logits)
    assert np.array_equal(rev.exit_layers[::-1], batch.exit_layers)


def test_exit_layers_follow_trace_and_last_layer_always_answers():
    model = MODELS["mean_linear"]
    enc = enc_of(model, ["abc def", "ghij klm nop", "a", ""])
    res = model.classify(enc, refexit.MaxProb(0.55), trace=True)
    for b, tr in enumerate(res.per_layer):
        assert [t.layer for t in tr] == list(range(1, res.exit_layers[b] + 1))
        assert [t.exited for t in tr[:-1]] == [False] * (len(tr) - 1) and tr[-1].exited
        assert np.array_equal(tr[-1].logits, res.logits[b])
        for t in tr[:-1]:
            assert t.score < 0.55                                            # did not exit: below thr
        if res.exit_layers[b] < model.num_layers:
            assert tr[-1].score >= 0.55
    never = model.classify(enc, refexit.MaxProb(0.999999))
    assert np.all(never.exit_layers == model.num_layers)
    full = model.classify(enc)
    assert np.array_equal(never.logits, full.logits)


def test_static_matches_hidden_states_and_head():
    model = MODELS["pooler_linear"]
    enc = enc_of(model, ["abc def ghi", "jk"])
    res = model.classify(enc, refexit.Static(2))
    hs = model.hidden_states(enc)
    for b in range(2):
        n = int(enc.attention_mask[b].sum())
        z, _ = model.head(2, hs[2][b, :n])
        np.testing.assert_allclose(res.logits[b], z, rtol=1e-5, atol=1e-6)
    assert np.all(res.exit_layers == 2)


def test_float64_mode_is_close_to_float32():
    model = MODELS["fastbert"]
    enc = enc_of(model, ["abc def ghi", "jk lmn"])
    r32 = model.classify(enc)
    r64 = model.astype(np.float64).classify(enc)
    assert r64.logits.dtype == np.float64
    np.testing.assert_allclose(r32.logits, r64.logits, rtol=1e-4, atol=1e-5)


def test_flops_are_counted_from_layers_and_heads():
    model = MODELS["pooler_linear"]
    enc = enc_of(model, ["abc def ghi", "jk"])
    res = model.classify(enc, refexit.Static(1))
    H = model.config.hidden_size
    for b in range(2):
        n = int(enc.attention_mask[b].sum())
        head = model.heads[0].flops(n)
        assert head == 2 * H * H + 2 * 3 * H
        assert res.flops[b] == model.layer_flops(n) + head
        assert res.full_flops[b] == 3 * model.layer_flops(n) + model.heads[-1].flops(n)
    assert res.mean_layers == 1 and res.layer_speedup == 3


@pytest.mark.parametrize("bad,match", [
    ({"input_ids": [[2, 5, 3000]]}, "outside the vocabulary"),
    ({"input_ids": [[2, -1, 3]]}, "outside the vocabulary"),
    ({"input_ids": [[2, 5, 3]], "attention_mask": [[0, 0, 0]]}, "no tokens"),
    ({"input_ids": [[2, 5, 3]], "attention_mask": [[1, 0, 1]]}, "right padding"),
    ({"input_ids": [[2, 5, 3]], "token_type_ids": [[0, 0, 7]]}, "token type"),
    ({"input_ids": [[2] * 65]}, "at most 64"),
    ({"input_ids": [[2.5, 3.0]]}, "integer"),
    ({"input_ids": [[2, 3]], "attention_mask": [[1, 1, 1]]}, "must match"),
    ({"input_ids": [[2, 3, 4], [2, 3, 4]], "token_type_ids": [[0, 0], [0, 0], [0, 0]]}, "must match"),
    ({"input_ids": [[2, 3]], "token_type_ids": [[0.0, 1.0]]}, "must match"),
    ({}, "no 'input_ids'"),
])
def test_bad_input_raises_clear_error(bad, match):
    with pytest.raises(refexit.InputError, match=match):
        MODELS["mean_linear"].classify(bad)


def test_policy_needing_missing_heads_is_rejected():
    model = random_model(num_layers=3, seed=1)
    model.exits.heads[0] = None
    with pytest.raises(refexit.InputError, match="needs exit heads after layer"):
        model.classify(model.tokenizer(["abc"]), refexit.Entropy(0.5))
    model.classify(model.tokenizer(["abc"]), refexit.Static(2))          # layer 2 head still there
    model.exits.heads[-1] = None
    with pytest.raises(refexit.InputError, match="no classifier"):
        model.classify(model.tokenizer(["abc"]))


def test_learned_and_ponder_need_their_heads():
    model = random_model(num_layers=2, lte=False, ponder=False)
    for pol in (refexit.Learned(0.5), refexit.Ponder(0.5)):
        with pytest.raises(refexit.InputError, match="needs"):
            model.classify(model.tokenizer(["abc"]), pol)


def test_regression_head_with_patience_tau():
    model = random_model(num_layers=4, num_labels=1, head_kind="shared_pooler", seed=5)
    enc = model.tokenizer(["abc def", "ghi"])
    res = model.classify(enc, refexit.Patience(1, tau=10.0))       # huge tau: agree at once
    assert np.all(res.exit_layers == 2)
    assert res.logits.shape == (2, 1)
    assert "value" in res.records()[0]


def test_records_carry_label_names_and_probabilities():
    model = MODELS["shared_pooler"]
    res = model.classify(enc_of(model, ["abc def"]), refexit.Entropy(0.5))
    rec = res.records(["abc def"])[0]
    assert rec["label"] in model.label_names and 0 < rec["probability"] <= 1
    assert rec["exit_layer"] == res.exit_layers[0]
    assert abs(sum(rec["probabilities"].values()) - 1) < 1e-9


def test_warning_is_recorded_in_result():
    model = MODELS["pooler_linear"]
    with pytest.warns(ExitWarning):
        res = model.classify(enc_of(model, ["abc"]), refexit.Entropy(-1))
    assert res.warnings and "never" in res.warnings[0]
