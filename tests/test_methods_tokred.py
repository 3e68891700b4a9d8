"""Token reduction (refexit/tokens.py; docs/methods.md, "Token reduction"): the selection rule, the
length configuration, the oracle (Model.with_token_reduction), the compiled C against the float64
oracle with every head kind and several exit policies, on every instruction set the CPU has, batch
independence, thread counts, the C's error codes, the command line and the real-data sweep's FLOPs."""
import argparse
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import nn
from refexit.errors import InputError
from refexit.synthetic import random_model
from refexit.tokens import LayerCost, TokenReduction, select, spent_flops

from test_codegen_props import (DEFAULT_ISA, EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, OTHER_ISAS, base_policy,
                                batches, compare, get_model, oracle_scores, policy_from_scores)

RATIOS = (1.0, 0.95, 0.8, 0.6, 0.5, 0.3, 0.1)


# ---------------------------------------------------------------- the rule
@settings(max_examples=200, deadline=None)
@given(sig=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25]) | st.floats(0, 10), min_size=1, max_size=20),
       frac=st.floats(0, 1))
def test_select_keeps_cls_and_the_most_attended_ties_to_the_lower_position(sig, frac):
    sig = np.array(sig)
    n = len(sig)
    k = max(1, min(n, int(round(frac * n))))
    kept, margin = select(sig, k)
    assert len(kept) == k and kept[0] == 0 and np.all(np.diff(kept) > 0)       # [CLS], original order
    dropped = sorted(set(range(1, n)) - set(kept.tolist()))
    for j in kept[1:]:
        for d in dropped:
            assert sig[j] > sig[d] or (sig[j] == sig[d] and j < d)
    if k < n and k > 1:
        assert margin == min(sig[j] for j in kept[1:]) - max(sig[d] for d in dropped)
    else:
        assert math.isinf(margin)


def test_counts_follow_the_length_configuration():
    tr = TokenReduction([1.0, 0.9, 0.95, 0.5, 0.01])
    for n in range(1, 40):
        ks = tr.counts(n)
        want, cur = [], n
        for r in tr.keep:
            cur = min(cur, max(1, math.ceil(r * n)))
            want.append(cur)
        assert ks == want and all(1 <= k <= n for k in ks) and all(a >= b for a, b in zip(ks, ks[1:]))
    g = TokenReduction.geometric(0.8, 4)
    assert g.keep == tuple(0.8 ** i for i in range(1, 5))
    assert g.counts(10) == [8, 7, 6, 5]                       # ceil(8), ceil(6.4), ceil(5.12), ceil(4.096)


def test_bad_settings_raise():
    for bad in ([0.5, float("nan")], [0.0], [1.5], [-0.1], [], [True], ["0.5"], [[0.5]]):
        with pytest.raises(InputError):
            TokenReduction(bad)
    with pytest.raises(InputError, match="NaN"):
        TokenReduction([float("nan")])
    for rate in (0.0, 1.01, float("nan"), True, "0.9"):
        with pytest.raises(InputError, match="rate"):
            TokenReduction.geometric(rate, 3)
    model = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=1)
    with pytest.raises(InputError, match="3 layers"):
        model.with_token_reduction(TokenReduction([0.5, 0.5]))
    with pytest.raises(InputError, match="TokenReduction"):
        model.with_token_reduction([0.5, 0.5, 0.5])


# ---------------------------------------------------------------- the oracle
ENC = {"input_ids": np.array([[2, 7, 8, 9, 10, 11, 12, 3], [2, 11, 3, 0, 0, 0, 0, 0], [2, 4, 5, 6, 7, 8, 3, 0]]),
       "attention_mask": np.array([[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0], [1] * 7 + [0]])}


@pytest.mark.parametrize("kind", ["mean_linear", "pooler_linear", "fastbert"])
def test_keeping_every_token_is_the_plain_model(kind):
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=4, head_kind=kind,
                         fastbert_width=12).astype(np.float64)
    a = model.classify(ENC, refexit.Entropy(0.5))
    b = model.with_token_reduction(TokenReduction([1.0, 1.0, 1.0])).classify(ENC, refexit.Entropy(0.5))
    np.testing.assert_array_equal(a.exit_layers, b.exit_layers)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(a.flops, b.flops)


def test_the_reduced_layer_is_the_full_layer_on_the_kept_rows():
    """Everything after the attention works per token: keeping k rows there gives the full layer's
    rows at the kept positions; the kept positions are chosen by the attention they received."""
    model = random_model(num_layers=2, hidden=20, heads=4, intermediate=24, num_labels=2, seed=5).astype(np.float64)
    c, p = model.config, model._layers[0]
    x = model.embed(np.array([2, 5, 9, 13, 17, 21, 3]), np.zeros(7, np.int64))
    full = nn.encoder_layer(x, np.ones(7, bool), p, c.num_attention_heads, c.hidden_act, c.layer_norm_eps)
    _, probs = nn.attention(x, np.ones(7, bool), p["attn.q.w"], p["attn.q.b"], p["attn.k.w"], p["attn.k.b"],
                            p["attn.v.w"], p["attn.v.b"], p["attn.o.w"], p["attn.o.b"], c.num_attention_heads,
                            return_probs=True)
    sig = np.einsum("hqk->k", probs)                      # attention received: over heads and queries
    for k in range(1, 8):
        out, kept, margin = nn.encoder_layer_keep(x, p, c.num_attention_heads, c.hidden_act, c.layer_norm_eps, k)
        want, want_margin = select(sig, k)
        np.testing.assert_array_equal(kept, want)
        np.testing.assert_allclose(out, full[kept], rtol=1e-12, atol=1e-13)
        assert margin == pytest.approx(want_margin, rel=1e-9) or math.isinf(want_margin)


def test_mean_pooling_heads_read_the_kept_tokens_and_flops_count_them():
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=6,
                         head_kind="mean_linear").astype(np.float64)
    tr = TokenReduction([0.5, 0.3, 0.3])
    red = model.with_token_reduction(tr)
    out = red.classify(ENC, refexit.Entropy(-1.0), trace=True)
    c = model.config
    cost = LayerCost.of(c.hidden_size, c.intermediate_size, c.num_attention_heads)
    for b, (ids, types) in enumerate(model.rows(ENC)):
        x = model.embed(ids, types)
        for i, k in enumerate(tr.counts(len(ids))):
            x, _, _ = nn.encoder_layer_keep(x, model._layers[i], c.num_attention_heads, c.hidden_act,
                                            c.layer_norm_eps, k)
            assert len(x) == k
            z, _ = model.head(i + 1, x, np.zeros((i, c.hidden_size)))
            np.testing.assert_allclose(out.per_layer[b][i].logits, z, rtol=1e-12, atol=1e-13)
        want = spent_flops(cost, tr, len(ids), 3, [h.flops for h in model.heads], [1, 2, 3], 0)
        assert out.flops[b] == want < out.full_flops[b]
        assert out.full_flops[b] == model.classify({k: v[b:b + 1] for k, v in ENC.items()}).full_flops[0]


@pytest.mark.parametrize("name", ["smartbert", "gpf"])
def test_skip_gates_and_global_past_future_refuse_token_reduction(name, tmp_path):
    """Not combined (each was built and tested on full-length layers): a clear InputError from the
    oracle and from the compiler, never a silently different result."""
    codegen = pytest.importorskip("codegen")
    extra = {"gates": 8} if name == "smartbert" else {"gpf": True}
    model = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2,
                         head_kind="mean_linear", **extra)
    policy = refexit.SkipEntropy(0.3) if name == "smartbert" else refexit.GlobalPastFuture(0.3)
    model.classify(ENC, policy)                                  # fine without token reduction
    red = model.with_token_reduction(TokenReduction.geometric(0.7, 3))
    with pytest.raises(InputError, match=f"token reduction with the {name} policy is not supported"):
        red.classify(ENC, policy)
    with pytest.raises(InputError, match=f"token reduction with the {name} policy is not supported"):
        codegen.compile_model(red, policy=policy, out_dir=tmp_path / "c")


def test_oracle_results_do_not_depend_on_batch_mates():
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=7,
                         head_kind="mean_linear").with_token_reduction(TokenReduction.geometric(0.6, 3))
    both = model.classify(ENC, refexit.Entropy(0.9))
    for b in range(3):
        n = int(ENC["attention_mask"][b].sum())
        one = model.classify({k: v[b:b + 1, :n] for k, v in ENC.items()}, refexit.Entropy(0.9))
        np.testing.assert_array_equal(one.logits[0], both.logits[b])
        assert one.exit_layers[0] == both.exit_layers[b] and one.flops[0] == both.flops[b]


def test_with_token_reduction_survives_astype_and_precision():
    model = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=1)
    tr = TokenReduction([0.5, 0.5])
    red = model.with_token_reduction(tr)
    assert red.astype(np.float64).token_reduction == tr and red.with_precision("bf16").token_reduction == tr
    assert model.token_reduction is None and red.with_token_reduction(None).token_reduction is None


# ---------------------------------------------------------------- compiled C vs the oracle
KINDS = ("pooler_linear", "shared_pooler", "mean_linear", "fastbert", "scalar_mix")
CFGS = ("a", "c")                   # 3 and 4 layers, 3 and 4 attention heads, 2 and 5 labels
POLICIES = ("entropy", "max_prob", "static", "patience")
_COMPILED = {}


def compiled(cfg, kind, policy, build_root, isa=None, precision=None):
    import codegen
    key = (cfg, kind, policy, isa, precision)
    if key not in _COMPILED:
        model = get_model(cfg, kind)
        L = model.num_layers
        red = model.with_token_reduction(TokenReduction.geometric(0.7, L))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            _COMPILED[key] = codegen.compile_model(
                red, base_policy(policy, model.num_labels, L),
                build_root / f"tk_{cfg}_{kind}_{policy}_{isa}_{precision}", prefix=f"tk_{cfg}_{kind}_{policy}_{isa or 'auto'}_{precision or 'fp32'}",
                max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS, isa=isa, precision=precision)
    return _COMPILED[key]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("tokred")


def draw_reduction(data, L):
    return TokenReduction([data.draw(st.sampled_from(RATIOS), label=f"keep {i + 1}") for i in range(L)])


def check_batch_independence(cm, enc, got):
    B = len(got.exit_layers)
    for b in sorted({0, B - 1}):
        n = int(enc["attention_mask"][b].sum())
        one = cm.classify({k: v[b:b + 1, :n] for k, v in enc.items()})
        np.testing.assert_array_equal(one.logits[0], got.logits[b])
        assert one.exit_layers[0] == got.exit_layers[b] and one.margins[0] == got.margins[b]


def _grid():
    """Every head kind and every policy by default (the diagonal, POLICIES cycled over KINDS); the
    rest of the kind x policy grid under -m slow (it compiles a library per pair)."""
    diagonal = {(k, POLICIES[i % len(POLICIES)]) for i, k in enumerate(KINDS)}
    return [pytest.param(k, p, marks=() if (k, p) in diagonal else pytest.mark.slow)
            for k in KINDS for p in POLICIES]


@pytest.mark.parametrize("kind, policy", _grid())
def test_compiled_token_reduction_matches_oracle(kind, policy, build_root):
    """A length configuration drawn per example (set_keep at run time), thresholds cut between the
    reduced oracle's own scores; per sample: exit layer and label exact unless the oracle's margin
    (decision or token selection) is below 1e-4, logits within tolerance, FLOPs equal; a sample's
    result does not depend on its batch mates (bitwise)."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(CFGS), label="config")
        model, cm = get_model(cfg, kind), compiled(cfg, kind, policy, build_root)
        tr = draw_reduction(data, model.num_layers)
        red = model.with_token_reduction(tr)
        cm.set_keep(tr)
        assert cm.get_keep() == tr.keep
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        base = base_policy(policy, model.num_labels, model.num_layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            scores = oracle_scores(red.astype(np.float64), enc, base)
        pol = policy_from_scores(data.draw, policy, model, scores, base)
        got = compare(cm, red, pol, enc, f"config {cfg} {kind} {tr!r}")
        check_batch_independence(cm, enc, got)

    check()


@pytest.mark.parametrize("isa", OTHER_ISAS)
@pytest.mark.parametrize("kind", ("mean_linear", "fastbert"))
def test_other_instruction_sets(kind, isa, build_root):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        model, cm = get_model("c", kind), compiled("c", kind, "entropy", build_root, isa)
        assert cm.ffi.string(getattr(cm.lib, f"{cm.prefix}_isa")()).decode() == isa
        tr = draw_reduction(data, model.num_layers)
        red = model.with_token_reduction(tr)
        cm.set_keep(tr)
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        base = base_policy("entropy", model.num_labels, model.num_layers)
        scores = oracle_scores(red.astype(np.float64), enc, base)
        pol = policy_from_scores(data.draw, "entropy", model, scores, base)
        check_batch_independence(cm, enc, compare(cm, red, pol, enc, f"{isa} {kind} {tr!r}"))

    check()


def test_default_isa_is_covered():
    assert DEFAULT_ISA not in OTHER_ISAS


def test_threads_give_the_same_results(build_root):
    model, cm = get_model("c", "mean_linear"), compiled("c", "mean_linear", "entropy", build_root)
    cm.set_keep(TokenReduction([1.0, 0.6, 0.5, 0.3]))
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, MAX_LEN + 1, 9)
    mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 97, (9, MAX_LEN)) * mask, "attention_mask": mask}
    cm.set_policy(refexit.Entropy(0.3))
    cm.set_threads(1)
    one = cm.classify(enc)
    cm.set_threads(3)
    three = cm.classify(enc)
    cm.set_threads(1)
    np.testing.assert_array_equal(one.logits, three.logits)
    np.testing.assert_array_equal(one.exit_layers, three.exit_layers)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_builds_follow_their_emulating_oracle(precision, build_root):
    """bf16 / int8 with token reduction: the labels and exits of the emulating oracle
    (model.with_precision) wherever its margins are clear, logits close."""
    model = get_model("a", "mean_linear")
    cm = compiled("a", "mean_linear", "entropy", build_root, "scalar", precision)
    tr = TokenReduction([0.8, 0.6, 0.5])
    cm.set_keep(tr)
    rng = np.random.default_rng(5)
    lengths = rng.integers(2, MAX_LEN + 1, 12)
    mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 97, (12, MAX_LEN)) * mask, "attention_mask": mask}
    pol = refexit.Entropy(0.4)
    cm.set_policy(pol)
    got = cm.classify(enc)
    ref = model.with_precision(precision).with_token_reduction(tr).classify(enc, pol)
    clear = ref.margins > 1e-2
    assert clear.sum() >= 6
    np.testing.assert_array_equal(got.exit_layers[clear], ref.exit_layers[clear])
    np.testing.assert_array_equal(got.labels[clear], ref.labels[clear])
    np.testing.assert_allclose(got.logits[clear], ref.logits[clear], rtol=1e-2, atol=1e-2)


def test_compiled_keep_settings_and_c_error_codes(build_root):
    from codegen.emit import ERRORS
    codes = {name: code for name, code, *_ in ERRORS}
    model, cm = get_model("a", "mean_linear"), compiled("a", "mean_linear", "entropy", build_root)
    L = model.num_layers
    cm.set_keep([1.0, 0.5, 0.25])
    with pytest.raises(InputError, match="NaN"):
        cm.set_keep([1.0, float("nan"), 0.5])
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        cm.set_keep([1.0, 0.0, 0.5])
    with pytest.raises(InputError, match="layers"):
        cm.set_keep([0.5] * (L + 1))
    assert cm.get_keep() == (1.0, 0.5, 0.25)
    # the C refuses by itself, changing nothing
    f, m = cm._fn.set_keep, cm._handle()
    for vals, n, code in (([0.5, float("nan"), 0.5], L, "ERR_NAN"), ([0.5, 1.5, 0.5], L, "ERR_ARG"),
                          ([0.5, -0.1, 0.5], L, "ERR_ARG"), ([0.5, 0.0, 0.5], L, "ERR_ARG"),
                          ([0.5, 0.5, 0.5], L - 1, "ERR_ARG"), ([0.5, float("inf"), 0.5], L, "ERR_ARG")):
        assert f(m, cm.ffi.new("double[]", vals), n) == codes[code]
    assert f(m, cm.ffi.NULL, L) == codes["ERR_ARG"]
    assert cm._fn.get_keep(m, cm.ffi.new("double[]", L), L - 1) == codes["ERR_ARG"]
    assert cm.get_keep() == (1.0, 0.5, 0.25)
    # a library compiled without token reduction has no keep setting
    import codegen
    plain = codegen.compile_model(model, refexit.Entropy(0.5), build_root / "tk_plain", prefix="tk_plain",
                                  max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    assert plain.keep is None and "token_reduction" not in plain.manifest
    with pytest.raises(InputError, match="without token reduction"):
        plain.set_keep([0.5] * L)
    assert not hasattr(plain.lib, "tk_plain_set_keep")


def test_reopened_library_keeps_its_configuration_and_manifest_is_checked(build_root):
    import codegen
    from codegen.binding import check_manifest
    from refexit.errors import CheckpointError
    cm = compiled("a", "pooler_linear", "entropy", build_root)
    again = codegen.load_compiled(cm.out_dir)
    assert again.keep == tuple(0.7 ** i for i in range(1, 4)) == again.get_keep()
    for bad in ({"keep": [0.5, 0.5]}, {"keep": [0.5, 0.0, 0.5], "cost": [1, 2, 3, 4]},
                {"keep": [0.5, 0.5, 0.5], "cost": [1, 2]}, {"keep": [0.5, "x", 0.5], "cost": [1, 2, 3, 4]}):
        m = dict(cm.manifest, token_reduction=bad)
        with pytest.raises(CheckpointError, match="token_reduction"):
            check_manifest(m, "here")


# ---------------------------------------------------------------- command line and the real-data sweep
def test_command_line_options():
    from refexit.cli.token_args import add_token_args, reduction_from_args
    p = argparse.ArgumentParser()
    add_token_args(p)
    assert reduction_from_args(p.parse_args([]), 3) is None
    assert reduction_from_args(p.parse_args(["--keep", "1,0.5,0.25"]), 3).keep == (1.0, 0.5, 0.25)
    assert reduction_from_args(p.parse_args(["--keep-rate", "0.5"]), 2).keep == (0.5, 0.25)
    for argv, match in ((["--keep", "1,0.5"], "3 layers"), (["--keep", "1,x,1"], "comma-separated"),
                        (["--keep-rate", "1.5"], "rate"), (["--keep", "1,nan,1"], "NaN")):
        with pytest.raises(InputError, match=match):
            reduction_from_args(p.parse_args(argv), 3)
    with pytest.raises(SystemExit):
        p.parse_args(["--keep", "1,1,1", "--keep-rate", "0.5"])


def test_compile_command_line(tmp_path, capsys):
    pytest.importorskip("cffi")
    import json
    from refexit.cli.main import build_parser
    from refexit.synthetic import save_model
    model = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=3, vocab_size=50)
    save_model(model, tmp_path / "m")
    args = build_parser().parse_args(["compile", str(tmp_path / "m"), "-o", str(tmp_path / "out"), "--keep",
                                      "0.5,0.5", "--max-length", "16", "--isa", "scalar"])
    assert args.func(args) == 0
    man = json.loads(next((tmp_path / "out").glob("*.manifest.json")).read_text())
    assert man["token_reduction"]["keep"] == [0.5, 0.5]
    assert "token reduction" in capsys.readouterr().out


def test_sweep_flops_are_the_oracles():
    """The real-data sweep replays policies on features computed under the length configuration
    and recounts FLOPs: the same exits, logits and FLOPs as Model.classify with the reduction."""
    from refexit.train import evaluate as E
    from refexit.train import tokred
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=8,
                         head_kind="mean_linear", final_kind="shared_pooler")
    tr = TokenReduction([0.9, 0.5, 0.4])
    red = model.with_token_reduction(tr)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, 15)
    mask = (np.arange(20)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 120, (15, 20)) * mask, "attention_mask": mask}
    out = E.LayerOutputs(model, tokred.features_of_rows(model, tr, model.rows(enc)))
    for pol in (refexit.Entropy(0.9), refexit.MaxProb(0.5), refexit.Static(2), refexit.Patience(1)):
        want = red.classify(enc, pol)
        got = tokred.simulate(model, pol, out, tr)
        np.testing.assert_array_equal(got.exit_layers, want.exit_layers)
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.flops, want.flops)
        np.testing.assert_array_equal(got.full_flops, want.full_flops)
    with pytest.raises(InputError, match="edgebert"):
        tokred.simulate(model, refexit.PredictedExit(0.5), out, tr)
    assert [n for n, _ in tokred.parse_configs(["0.9,0.8"], ["1,0.5,0.5"], 3)] == \
        ["rate 0.9", "rate 0.8", "keep 1,0.5,0.5"]


def test_sweep_compiled_engine_gives_the_oracle_engines_points(tmp_path):
    """evaluate --token-engine c: the per-layer logits of the compiled C (Static(k) runs) replay to
    the same exits and FLOPs as the oracle's features."""
    pytest.importorskip("cffi")
    import codegen
    from refexit.train import evaluate as E
    from refexit.train import tokred
    model = random_model(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=3, seed=9,
                         head_kind="mean_linear", vocab_size=97, max_position=40, scale=1.5)
    tr = TokenReduction([0.8, 0.6, 0.4])
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, MAX_LEN + 1, 12)
    mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, 97, (12, MAX_LEN)) * mask, "attention_mask": mask}
    cm = codegen.compile_model(model.with_token_reduction(TokenReduction([1.0, 1.0, 1.0])), refexit.Static(3),
                               tmp_path / "sweep", prefix="tk_sweep", max_length=MAX_LEN, max_batch=MAX_BATCH,
                               max_tokens=MAX_TOKENS)
    c_out = tokred.compiled_outputs(cm, model, tr, enc)
    o_out = E.LayerOutputs(model.astype(np.float64), tokred.features_of_rows(model.astype(np.float64), tr,
                                                                            model.rows(enc)))
    for pol in (refexit.Entropy(0.8), refexit.MaxProb(0.6), refexit.Patience(1)):
        a, b = tokred.simulate(model, pol, c_out, tr), tokred.simulate(model, pol, o_out, tr)
        ok = b.margins > 1e-4
        np.testing.assert_array_equal(a.exit_layers[ok], b.exit_layers[ok])
        np.testing.assert_allclose(a.logits[ok], b.logits[ok], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(a.flops[ok], b.flops[ok])
