"""CascadeBERT (methods.md, "CascadeBERT"): the cascade of complete models in the oracle
(refexit.Cascade: strict calibrated hand-off, the last member answers, per-member layers and
FLOPs, batch independence, bad settings) and in C (codegen.Cascade: one call over compiled models,
against the float64 oracle; its error codes; warning-free gcc / clang; a C program embedding it)."""
import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit.cascade import confidence
from refexit.errors import InputError
from refexit.synthetic import random_model

from test_codegen_props import ATOL, EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, NEAR, RTOL, STATS, batches, cut_between

C = 3


def pool_model(seed, layers, hidden=18, heads=3, labels=C, **kw):
    return random_model(num_layers=layers, hidden=hidden, heads=heads, intermediate=22, num_labels=labels, seed=seed,
                        vocab_size=97, max_position=40, scale=1.5, **kw)


SMALL = pool_model(1, 2)
BIG = pool_model(2, 3, hidden=30, heads=2, head_kind="mean_linear")
BIG.exits.temperatures = np.array([0.8, 1.3, 1.7])         # "calibrated" temperatures, not 1


def encode(model, n=9, seed=1):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(model.tokenizer.vocab[5:], rng.integers(1, 13))) for _ in range(n)]
    return texts, model.tokenizer(texts, max_length=MAX_LEN)


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


# ---------------------------------------------------------------- the oracle
def test_hand_off_is_strict_and_uses_the_member_temperature():
    _, enc = encode(SMALL, 1)
    first = SMALL.classify(enc, refexit.Static(1))
    T = 1.7
    c = float(confidence(first.logits, [T])[0])
    assert c == pytest.approx(float(np.max(refexit.nn.softmax(first.logits[0].astype(np.float64) / T))))
    at = refexit.Cascade([refexit.Stage(SMALL, refexit.Static(1), c, T), refexit.Stage(BIG)]).classify(enc)
    below = refexit.Cascade([refexit.Stage(SMALL, refexit.Static(1), np.nextafter(c, 0), T),
                             refexit.Stage(BIG)]).classify(enc)
    assert at.members.tolist() == [1] and below.members.tolist() == [0]     # conf == thr hands on
    assert at.member_layers.tolist() == [[1, 3]] and below.member_layers.tolist() == [[1, 0]]
    assert at.margins[0] == 0.0
    np.testing.assert_array_equal(below.logits, first.logits)
    np.testing.assert_array_equal(at.logits, BIG.classify(enc).logits)


def test_members_run_only_on_what_they_are_handed_and_costs_add_up():
    texts, enc = encode(SMALL, 12, seed=3)
    small = SMALL.classify(enc, refexit.Static(1))
    conf = confidence(small.logits, np.full(12, SMALL.exits.temperatures[0]))
    thr = float(np.median(conf))
    res = refexit.Cascade([refexit.Stage(SMALL, refexit.Static(1), thr), refexit.Stage(BIG, refexit.Entropy(0.8))]
                          ).classify(enc)
    handed = conf <= thr
    assert 0 < handed.sum() < 12
    np.testing.assert_array_equal(res.members, handed.astype(int))
    big = BIG.classify({k: v[handed] for k, v in vars(enc).items()}, refexit.Entropy(0.8))
    np.testing.assert_array_equal(res.logits[handed], big.logits)
    np.testing.assert_array_equal(res.logits[~handed], small.logits[~handed])
    np.testing.assert_array_equal(res.member_layers[handed, 1], big.exit_layers)
    assert np.all(res.member_layers[~handed, 1] == 0)
    np.testing.assert_array_equal(res.flops[~handed], small.flops[~handed])
    np.testing.assert_allclose(res.flops[handed], small.flops[handed] + big.flops)
    assert res.mean_layers == pytest.approx(1 + handed.mean() * np.mean(big.exit_layers))
    full = BIG.classify(enc)
    np.testing.assert_array_equal(res.full_flops, full.full_flops)          # the reference: the last member
    s = res.summary()
    assert s["answered_by"] == [int((~handed).sum()), int(handed.sum())]
    recs = res.records(texts)
    assert [r["member"] for r in recs] == res.members.tolist()


def test_truncation_then_full_model_is_one_call():
    _, enc = encode(BIG, 10, seed=4)
    thr = 0.45
    got = refexit.Cascade.truncation(BIG, 2, thr).classify(enc)
    want = refexit.Cascade([refexit.Stage(BIG, refexit.Static(2), thr, BIG.exits.temperatures),
                            refexit.Stage(BIG, None)]).classify(enc)
    np.testing.assert_array_equal(got.members, want.members)
    np.testing.assert_array_equal(got.logits, want.logits)
    trunc = BIG.classify(enc, refexit.Static(2))                          # layer 2's calibrated temperature
    np.testing.assert_array_equal(got.members, (confidence(trunc.logits, np.full(10, 1.3)) <= thr).astype(int))
    assert set(got.member_layers[:, 0]) == {2} and set(got.member_layers[:, 1]) <= {0, 3}


def test_results_do_not_depend_on_the_batch():
    _, enc = encode(SMALL, 11, seed=5)
    first = SMALL.classify(enc, refexit.Entropy([0.9]))
    c0 = confidence(first.logits, SMALL.exits.temperatures[first.exit_layers - 1])
    c1 = confidence(BIG.classify(enc, refexit.Static(2)).logits, np.full(11, 1.3))
    casc = refexit.Cascade([refexit.Stage(SMALL, refexit.Entropy([0.9]), float(np.quantile(c0, 0.3))),
                            refexit.Stage(BIG, refexit.Static(2), float(np.median(c1))), refexit.Stage(BIG)])
    batch = casc.classify(enc)
    assert len(set(batch.members.tolist())) == 3, batch.members
    for b in range(11):
        n = int(enc.attention_mask[b].sum())
        one = casc.classify({k: v[b:b + 1, :n] for k, v in vars(enc).items()})
        np.testing.assert_array_equal(one.logits[0], batch.logits[b])
        np.testing.assert_array_equal(one.member_layers[0], batch.member_layers[b])
        assert one.flops[0] == batch.flops[b] and one.margins[0] == batch.margins[b]


def test_bad_cascades_raise():
    S = refexit.Stage
    with pytest.raises(InputError, match="non-empty list"):
        refexit.Cascade([])
    with pytest.raises(InputError, match="non-empty list"):
        refexit.Cascade([SMALL])
    for bad in (float("nan"), np.float32("nan")):
        with pytest.raises(InputError, match="NaN"):
            refexit.Cascade([S(SMALL, None, bad), S(BIG)])
    with pytest.raises(InputError, match="needs a threshold"):
        refexit.Cascade([S(SMALL), S(BIG)])
    with pytest.raises(InputError, match="must be a number"):
        refexit.Cascade([S(SMALL, None, "0.5"), S(BIG)])
    with pytest.raises(InputError, match="4 labels, member 0 has 3"):
        refexit.Cascade([S(SMALL, None, 0.5), S(pool_model(3, 2, labels=4))])
    other = pool_model(1, 2)
    other.label_names = ["a", "b", "c"]
    with pytest.raises(InputError, match="labels"):
        refexit.Cascade([S(SMALL, None, 0.5), S(other)])
    with pytest.raises(InputError, match="vocabulary"):
        refexit.Cascade([S(SMALL, None, 0.5), S(random_model(num_layers=2, num_labels=C, vocab_size=80))])
    for temps in (0.0, -1.0, math.inf, float("nan"), [1.0, 1.0, 1.0], "x"):
        with pytest.raises(InputError, match="temperatures"):
            refexit.Cascade([S(SMALL, None, 0.5, temps), S(BIG)])
    with pytest.raises(InputError, match="at least 2 classes"):
        refexit.Cascade([S(pool_model(4, 2, labels=1))])
    with pytest.raises(InputError, match="only 2 layers"):
        refexit.Cascade([S(SMALL, refexit.Static(3), 0.5), S(BIG)])
    with pytest.warns(refexit.ExitWarning, match="never answers"):
        refexit.Cascade([S(SMALL, None, 1.0), S(BIG)])
    with pytest.warns(refexit.ExitWarning, match="always answers"):
        c = refexit.Cascade([S(SMALL, None, 0.2), S(BIG)])
    assert any("always answers" in w for w in c.warnings)


# ---------------------------------------------------------------- compiled C vs the oracle
_COMPILED = {}


@pytest.fixture(scope="module", autouse=True)
def report_near_threshold():
    yield
    if STATS["cascade samples"]:
        print(f"\ncascade props: {STATS['cascade samples']} samples, {STATS['cascade answered early']} answered before "
              f"the last member; {STATS['near cascade']} near a threshold (oracle margin < {NEAR}), "
              f"{STATS['cascade near differ']} of them on another path")


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("cascade")


def compiled(name, model, base, build_root):
    """One library per (model, policy kind); thresholds and counts change at run time."""
    import codegen
    if name not in _COMPILED:
        _COMPILED[name] = quiet(codegen.compile_model, model, base, build_root / name, prefix=f"cas_{name}",
                                max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS)
    return _COMPILED[name]


MODELS = {"small": SMALL, "big": BIG}


def member(draw, k, last, build_root, enc):
    """(oracle Stage on the float64 model, its CompiledModel) of a drawn kind: full depth, a static
    truncation, or an entropy exit with thresholds cut between the oracle's entropies."""
    import codegen
    name = draw(st.sampled_from(sorted(MODELS)), label=f"member {k} model")
    model = MODELS[name]
    L = model.num_layers
    kind = draw(st.sampled_from(["full", "static", "entropy"] if L > 1 else ["full"]), label=f"member {k} kind")
    if kind == "entropy":
        tr = quiet(model.astype(np.float64).classify, enc, refexit.Entropy(-1.0), trace=True)
        scores = np.array([[t.score for t in s if t.layer < L] for s in tr.per_layer])
        policy = refexit.Entropy([cut_between(draw, scores[:, i], f"member {k} cut {i + 1}") for i in range(L - 1)])
        cm = compiled(f"{name}_entropy_{k}", model, refexit.Entropy(-1.0), build_root)
    else:
        policy = refexit.Static(draw(st.integers(1, L - 1), label=f"member {k} k")) if kind == "static" else None
        cm = compiled(f"{name}_static_{k}", model, refexit.Static(L), build_root)
    quiet(cm.set_policy, policy if policy is not None else refexit.Static(L))
    temps = draw(st.sampled_from([None, 0.7, 1.9]), label=f"member {k} temperature")
    return refexit.Stage(model.astype(np.float64), policy, None, temps), cm


def compare(casc, oracle, enc, what=""):
    """C cascade vs float64 oracle cascade per sample: member, label and exit layers identical unless
    the oracle's margin is below NEAR; logits within RTOL / ATOL; FLOPs identical on the same path."""
    ref = quiet(oracle.classify, enc)
    got = casc.classify(enc)
    near = ref.margins < NEAR
    differ = (got.members != ref.members) | (got.labels != ref.labels) | \
        np.any(got.member_layers != ref.member_layers, axis=1)
    STATS["near"] += int(near.sum())
    STATS["near cascade"] += int(near.sum())
    STATS["near_differ"] += int((differ & near).sum())
    STATS["cascade near differ"] += int((differ & near).sum())
    STATS["cascade samples"] += len(ref.members)
    STATS["cascade answered early"] += int(np.sum(ref.members < len(oracle.stages) - 1))
    bad = differ & ~near
    assert not bad.any(), (f"{what} {oracle!r}: samples {np.flatnonzero(bad).tolist()}: C members "
                           f"{got.members[bad].tolist()} layers {got.member_layers[bad].tolist()}, oracle "
                           f"{ref.members[bad].tolist()} {ref.member_layers[bad].tolist()} margins {ref.margins[bad]}")
    same = ~differ
    np.testing.assert_allclose(got.logits[same], ref.logits[same], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(got.flops[same], ref.flops[same])
    np.testing.assert_array_equal(got.full_flops, ref.full_flops)
    rows = np.flatnonzero(same)
    np.testing.assert_allclose(got.confidences[rows, got.members[rows]], ref.confidences[rows, ref.members[rows]],
                               rtol=1e-4, atol=1e-5)
    STATS["samples"] += len(ref.members)
    return got, ref


def test_compiled_cascade_matches_oracle(build_root):
    import codegen

    @settings(max_examples=3 * EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        enc = data.draw(batches(97), label="batch")
        K = data.draw(st.integers(1, 3), label="members")
        pairs = [member(data.draw, k, k == K - 1, build_root, enc) for k in range(K)]
        stages = [s for s, _ in pairs]
        # thresholds cut between the oracle's calibrated confidences of each member on the whole batch
        for k, s in enumerate(stages[:-1]):
            r = quiet(s.model.classify, enc, s.policy)
            T = refexit.cascade._temperatures(s.temperatures, s.model, k)
            s.threshold = cut_between(data.draw, confidence(r.logits, T[r.exit_layers - 1]), f"hand-off {k}")
        oracle = quiet(refexit.Cascade, stages)
        casc = codegen.Cascade([cm for _, cm in pairs], oracle.thresholds, oracle.temperatures,
                               chunk=data.draw(st.integers(1, 4), label="chunk"))
        got, _ = compare(casc, oracle, enc, f"K={K}")
        STATS["examples"] += 1
        B = len(got.members)                      # a sample alone gets what it gets in the batch (bitwise)
        for b in sorted({0, B - 1}):
            n = int(enc["attention_mask"][b].sum())
            one = casc.classify({k: v[b:b + 1, :n] for k, v in enc.items()})
            np.testing.assert_array_equal(one.logits[0], got.logits[b])
            np.testing.assert_array_equal(one.member_layers[0], got.member_layers[b])
            assert one.members[0] == got.members[b] and one.margins[0] == got.margins[b]

    check()


def test_compile_cascade_truncation(build_root):
    import codegen
    _, enc = encode(BIG, 14, seed=6)
    tr = BIG.astype(np.float64).classify(enc, refexit.Static(2))
    thr = float(np.median(confidence(tr.logits, np.full(14, 1.3))))
    oracle = refexit.Cascade.truncation(BIG.astype(np.float64), 2, thr + 1e-3)
    casc = quiet(codegen.compile_cascade, refexit.Cascade.truncation(BIG, 2, thr + 1e-3), build_root / "trunc",
                 prefix="trunc", max_length=MAX_LEN)
    got, ref = compare(casc, oracle, enc, "truncation")
    assert set(got.members.tolist()) == {0, 1}
    assert "trunc0" in repr(casc) and casc.thresholds == [pytest.approx(thr + 1e-3)]
    casc.set_threshold(0, 2.0)                                     # never answers: everyone goes on
    assert np.all(casc.classify(enc).members == 1)


def test_compiled_cascade_errors(build_root):
    import codegen
    small = compiled("small_static_0", SMALL, refexit.Static(2), build_root)
    big = compiled("big_static_1", BIG, refexit.Static(3), build_root)
    four = quiet(codegen.compile_model, pool_model(5, 2, labels=4), None, build_root / "four", prefix="cas_four",
                 max_length=MAX_LEN)
    renamed = pool_model(1, 2)
    renamed.label_names = ["x", "y", "z"]
    names = codegen.compile_model(renamed, None, build_root / "names", prefix="cas_names", max_length=MAX_LEN)
    vocab = codegen.compile_model(random_model(num_layers=2, num_labels=C, vocab_size=80, max_position=40), None,
                                  build_root / "vocab", prefix="cas_vocab", max_length=MAX_LEN)
    for other in (four, names, vocab):
        with pytest.raises(InputError, match="disagree.*ERR_MEMBERS"):
            codegen.Cascade([small, other], [0.5])
    with pytest.raises(InputError, match="NaN.*ERR_NAN"):
        codegen.Cascade([small, big], [float("nan")])
    for t in (0.0, -1.0, math.inf, float("nan")):
        with pytest.raises(InputError, match="temperature.*ERR_TEMPERATURE"):
            codegen.Cascade([small, big], [0.5], [t, None])
    with pytest.raises(InputError, match="1 to 8 members.*ERR_COUNT"):
        codegen.Cascade([small] * 9, [0.5] * 8)
    with pytest.raises(InputError, match="takes 1 thresholds"):
        codegen.Cascade([small, big], [0.5, 0.6, 0.7])
    with pytest.raises(InputError, match="temperature"):
        codegen.Cascade([small, big], [0.5], [[1.0] * 5, None])
    with pytest.raises(InputError, match="thresholds must be numbers"):
        codegen.Cascade([small, big], ["high"])
    with pytest.raises(InputError, match="temperatures must be numbers"):
        codegen.Cascade([small, big], [0.5], ["warm", None])
    with pytest.raises(InputError, match="chunk"):
        codegen.Cascade([small, big], [0.5], chunk=0)
    with pytest.raises(InputError, match="CompiledModels"):
        codegen.Cascade([SMALL, BIG], [0.5])
    casc = codegen.Cascade([small, big], [0.5])
    with pytest.raises(InputError, match="NaN"):
        casc.set_threshold(0, float("nan"))
    with pytest.raises(InputError, match="ERR_ARG"):
        casc.set_threshold(1, 0.5)                                  # the last member has none
    ok = {"input_ids": np.array([[2, 5, 6, 3]]), "attention_mask": np.ones((1, 4), np.int64)}
    with pytest.raises(InputError, match="longer.*ERR_TOO_LONG"):
        casc.classify({"input_ids": np.full((1, MAX_LEN + 1), 5), "attention_mask": np.ones((1, MAX_LEN + 1), np.int64)})
    with pytest.raises(InputError, match="vocabulary.*ERR_TOKEN"):
        casc.classify({"input_ids": np.array([[2, 97, 3]]), "attention_mask": np.ones((1, 3), np.int64)})
    with pytest.raises(InputError, match="no tokens.*ERR_EMPTY"):
        casc.classify({"input_ids": np.array([[2, 5], [0, 0]]), "attention_mask": np.array([[1, 1], [0, 0]])})
    with pytest.raises(InputError, match=r"type id.*member 0, cas_small_static_0.*ERR_TYPE"):
        casc.classify(dict(ok, token_type_ids=np.array([[0, 0, 7, 0]])))
    assert casc.classify(ok).members.shape == (1,)
    extra = codegen.load_compiled(small.out_dir)                  # a member closed after the cascade opened
    later = codegen.Cascade([extra, big], [0.5])
    extra.close()
    with pytest.raises(InputError, match="closed"):
        later.classify(ok)
    from codegen import cascade as cascade_mod
    for bad in ("x", "1casc", "a-b", ""):
        with pytest.raises(InputError, match="C identifier"):
            cascade_mod.sources(bad)


def test_cascade_c_is_warning_free_and_embeds(build_root, tmp_path):
    """cascade.c under gcc and clang (-std=c99 -pedantic -Wall -Wextra -Werror), and a C program
    that opens two compiled models and a cascade with <PREFIX>_MEMBER gives the Python result."""
    from codegen import cascade as cascade_mod
    h, c = cascade_mod.write_sources(tmp_path, "casc")
    flags = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O1"]
    ccs = [cc for cc in ("gcc", "clang") if shutil.which(cc)]
    if not ccs:
        pytest.skip("neither gcc nor clang is installed")
    for cc in ccs:
        subprocess.run([cc, *flags, "-c", str(c), "-o", str(tmp_path / f"casc_{cc}.o")], check=True)
    if shutil.which("nm"):                                          # every exported symbol is prefixed
        syms = subprocess.run(["nm", "--defined-only", "-g", str(tmp_path / f"casc_{ccs[0]}.o")], capture_output=True,
                              text=True, check=True).stdout.split()[2::3]
        assert syms and all(x.startswith("casc_") for x in syms), syms
    small = compiled("small_static_0", SMALL, refexit.Static(2), build_root)
    big = compiled("big_static_1", BIG, refexit.Static(3), build_root)
    quiet(small.set_policy, refexit.Static(1))
    quiet(big.set_policy, refexit.Static(3))
    prog = tmp_path / "prog.c"
    prog.write_text(r"""
#include <stdio.h>
#include "cas_small_static_0.h"
#include "cas_big_static_1.h"
#include "casc.h"
int main(int argc, char **argv) {
    cas_small_static_0_model *a; cas_big_static_1_model *b; casc_cascade *c;
    if (argc < 3 || cas_small_static_0_open(argv[1], &a) || cas_big_static_1_open(argv[2], &b)) return 1;
    if (cas_small_static_0_set_threshold(a, 1.0f)) return 1;                 /* Static(1) */
    float temps[3] = {0.8f, 1.3f, 1.7f};
    casc_member m[2] = {CASC_MEMBER(cas_small_static_0, a, 0.45f, NULL), CASC_MEMBER(cas_big_static_1, b, 0.0f, temps)};
    int st = casc_open(m, 2, 2, &c);
    if (st) { fprintf(stderr, "%s\n", casc_strerror(st)); return 1; }
    int32_t ids[] = {2, 7, 8, 9, 3, 2, 11, 3, 2, 4, 5, 6, 7, 30, 3}, lengths[] = {5, 3, 7};
    casc_result r[3]; float logits[3 * 3];
    st = casc_classify_batch(c, ids, NULL, lengths, 3, r, logits);
    if (st) { fprintf(stderr, "%s\n", casc_strerror(st)); return 1; }
    for (int i = 0; i < 3; i++)
        printf("%d %d %d %d %.6g\n", r[i].member, r[i].label, r[i].layers[0], r[i].layers[1], logits[3 * i]);
    casc_close(c); cas_big_static_1_close(b); cas_small_static_0_close(a);
    return 0;
}
""")
    exe = tmp_path / "prog"
    subprocess.run([ccs[0], *flags, "-iquote", str(small.out_dir), "-iquote", str(big.out_dir), "-iquote", str(tmp_path),
                    str(prog), str(c), str(small.out_dir / "cas_small_static_0.c"), str(big.out_dir / "cas_big_static_1.c"),
                    "-o", str(exe), "-lm"], check=True)
    out = subprocess.run([str(exe), str(small.weights_path), str(big.weights_path)], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    import codegen
    casc = codegen.Cascade([small, big], [0.45], [None, [0.8, 1.3, 1.7]])
    lengths = [5, 3, 7]
    ids = np.array([2, 7, 8, 9, 3, 2, 11, 3, 2, 4, 5, 6, 7, 30, 3], np.int32)
    res, logits = casc.classify_raw(ids, np.zeros_like(ids), np.array(lengths, np.int32))
    small_temps = np.asarray(small.manifest["model_temperatures"])
    assert np.all(small_temps == 1.0)                                 # NULL temperatures in C mean 1
    for i in range(3):
        f = out[i].split()
        assert [int(x) for x in f[:4]] == [res["member"][i], res["label"][i], *res["layers"][i, :2]]
        assert float(f[4]) == pytest.approx(logits[i, 0], rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- evaluate --cascade, the command lines
def test_replayed_cascade_is_the_oracle_and_the_sweep_is_reported():
    from refexit.train import evaluate as E
    from refexit.train import features as F
    texts, _ = encode(BIG, 40, seed=7)
    y = np.random.default_rng(0).integers(0, C, 40)
    out = E.LayerOutputs(BIG, F.extract(BIG, texts, MAX_LEN, use_cache=False, progress=False))
    enc = BIG.tokenizer(texts, max_length=MAX_LEN)
    grid = E.sweep_cascade(BIG, 2, 1.3)
    for casc in grid[::4]:
        want, got = casc.classify(enc), E.simulate_cascade(casc, out)
        for f in ("logits", "members", "member_layers", "exit_layers", "flops", "full_flops", "margins"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
    with pytest.raises(InputError, match="1..2"):
        E.sweep_cascade(BIG, 3)
    with pytest.raises(InputError, match="every member"):
        E.simulate_cascade(refexit.Cascade([refexit.Stage(BIG, None, 0.5), refexit.Stage(BIG.astype(np.float64))]),
                           out)
    f = F.extract(BIG, texts, MAX_LEN, use_cache=False, progress=False)
    rep = E.evaluate(BIG, {"dev": f, "test": f}, {"dev": y, "test": y}, policies=("static",), max_drop=0.05,
                     progress=False, cascades=(1, 2))
    entry = rep["cascades"]["cascade2"]
    assert entry["temperature"] == 1.3 and "calibrated" in entry["temperature_source"]
    assert len(entry["points"]) == len(grid)
    pt = entry["points"][5]
    r = grid[5].classify(enc)
    assert pt["test"]["accuracy"] == pytest.approx(np.mean(r.labels == y))
    assert pt["test"]["mean_layers"] == pytest.approx(np.mean(r.member_layers.sum(1)))
    assert pt["test"]["answered_by_first"] == pytest.approx(np.mean(r.members == 0))
    ok = [p for p in entry["points"] if p["dev"]["accuracy"] >= rep["full"]["dev"]["accuracy"] - 0.05 - 1e-12]
    assert entry["picked"]["dev"]["mean_layers"] == min(p["dev"]["mean_layers"] for p in ok)
    plain = refexit.synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=C, seed=9)
    T, source = E.cascade_temperature(plain, 2, E.LayerOutputs(plain, F.extract(
        plain, texts, MAX_LEN, use_cache=False, progress=False)), y)
    assert "fitted on dev" in source and T > 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from refexit.synthetic import save_model
    return save_model(SMALL, tmp_path_factory.mktemp("cascade_cli") / "model")


def test_classify_cli_cascade(folder, capsys):
    import json
    from refexit.cli.main import main
    texts = ["abc de", "f g hij", "k"]
    small = SMALL.classify(SMALL.tokenizer(texts), refexit.Static(1))
    thr = float(np.median(confidence(small.logits, SMALL.exits.temperatures[np.zeros(3, int)])))
    assert main(["classify", str(folder), "--cascade", f"1:{thr!r}", *texts]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want = refexit.Cascade.truncation(SMALL, 1, thr).classify(SMALL.tokenizer(texts))
    assert [r["member"] for r in recs] == want.members.tolist()
    assert [r["member_layers"] for r in recs] == want.member_layers.tolist()
    assert [r["label_id"] for r in recs] == want.labels.tolist()
    for bad, match in ((["--cascade", "2:0.5"], "in 1..1"), (["--cascade", "x"], "K:THRESHOLD"),
                       (["--cascade", "1:nan"], "NaN"), (["--cascade", "1:0.5", "--policy", "entropy",
                                                          "--threshold", "0.3"], "without --policy")):
        assert main(["classify", str(folder), "abc", *bad]) == 1
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err


def test_evaluate_cli_cascade_needs_sweep(folder, capsys):
    from refexit.cli.main import main
    assert main(["evaluate", str(folder), "--data", "sms_spam", "--cascade", "1", "--policy", "static",
                 "--threshold", "1"]) == 1
    assert "--cascade K is swept" in capsys.readouterr().err
