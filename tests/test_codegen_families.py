"""The compiled C of every model family (refexit/arch.py) agrees with the float64 oracle.

In the style of test_codegen_props.py (whose comparison and threshold helpers these tests reuse):
random models of each family with odd sizes and every quirk on (RoBERTa's position offset with pad
ids inside rows, DistilBERT without token types and its ReLU classifier, ALBERT's E -> H
projection and one shared layer, ELECTRA's projection and GELU classifier), exit heads of every
kind, policies with thresholds cut between the oracle's own scores (hypothesis), every layer on
every instruction set the host has, both reduced precisions, and the HF golden folders end to end.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from conftest import GOLDEN, assert_close
from refexit import arch
from refexit.checkpoint import backbone_shapes
from refexit.config import BertConfig
from refexit.heads import Head
from refexit.model import Model
from refexit.synthetic import random_model
from test_codegen_props import (DEFAULT_ISA, EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, OTHER_ISAS, base_policy,
                                batches, compare, oracle_scores, policy_from_scores)
from test_precision import ATOL as LOWP_ATOL
from test_precision import RTOL as LOWP_RTOL

import codegen
from codegen import pack

FAMILIES = ("roberta", "distilbert", "albert", "electra")
QUIRKS = {
    "roberta": dict(model_type="roberta", position_offset=2, pad_token_id=1, type_vocab_size=1),
    "distilbert": dict(model_type="distilbert", token_types=False, type_vocab_size=1, classifier_act="relu"),
    "albert": dict(model_type="albert", embedding_size=14, shared_layers=True, hidden_act="gelu_new"),
    "electra": dict(model_type="electra", embedding_size=22, classifier_act="gelu", layer_norm_eps=1e-5),
    "electra_e=h": dict(model_type="electra", embedding_size=30, classifier_act="gelu"),   # electra-base: no projection
}
# (family, exit head kind, policy): every family, head kind and a spread of policies
CASES = [("roberta", "mean_linear", "entropy"), ("roberta", "pooler_linear", "patience"),
         ("distilbert", "fastbert", "max_prob"), ("distilbert", "pooler_linear", "learned"),
         ("albert", "shared_pooler", "entropy"), ("albert", "mean_linear", "ponder"),
         ("electra", "pooler_linear", "norm_entropy"), ("electra", "mean_linear", "window")]
_MODELS: dict = {}
_COMPILED: dict = {}


def family_model(fam: str, kind: str, seed: int = 21) -> Model:
    """A random model of family `fam` (3 layers, H 30, 3 heads, I 37, 3 labels): exit heads of
    `kind` after layers 1-2 (with LTE and ponder), the family's own final classifier."""
    key = (fam, kind)
    if key in _MODELS:
        return _MODELS[key]
    bert = random_model(num_layers=3, hidden=30, heads=3, intermediate=37, num_labels=3, vocab_size=97,
                        max_position=40, head_kind=kind, final_kind="pooler_linear", fastbert_width=12,
                        fastbert_heads=3, ponder_hidden=5, scale=1.5, seed=seed)
    cfg = BertConfig(vocab_size=97, hidden_size=30, num_hidden_layers=3, num_attention_heads=3,
                     intermediate_size=37, max_position_embeddings=40,
                     id2label={i: f"label_{i}" for i in range(3)}, **QUIRKS[fam])
    rng = np.random.default_rng(seed)
    weights = {n: rng.normal(0, 0.1 if len(s) == 1 else 1.5 / np.sqrt(s[-1]), s).astype(np.float32)
               for n, s in backbone_shapes(cfg).items()}
    for n in weights:
        if ".ln.w" in n:
            weights[n] += 1
    weights["pooler.w"], weights["pooler.b"] = bert.weights["pooler.w"], bert.weights["pooler.b"]
    final = bert.exits.heads[-1]
    heads = list(bert.exits.heads[:-1]) + [
        Head("shared_pooler", {k: final.params[k] for k in ("fc.w", "fc.b")}) if fam == "albert" else
        Head("pooler_linear", final.params, act=cfg.classifier_act)]
    ep = refexit.ExitParams(heads, bert.exits.lte, bert.exits.ponder, bert.exits.temperatures)
    _MODELS[key] = Model(cfg, weights, ep, cfg.labels)
    return _MODELS[key]


def compiled(fam, kind, policy, root, isa=None, precision=None):
    key = (fam, kind, policy, isa, precision)
    if key not in _COMPILED:
        model = family_model(fam, kind)
        pol = base_policy(policy, model.num_labels, model.num_layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            _COMPILED[key] = codegen.compile_model(
                model, pol, root / "_".join(str(k) for k in key), prefix=f"f{fam}_{kind}_{policy}".replace("=", ""),
                max_length=MAX_LEN, max_batch=MAX_BATCH, max_tokens=MAX_TOKENS, isa=isa, precision=precision)
    return _COMPILED[key]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("codegen_families")


def family_batch(rng, model, n=6):
    """Rows of mixed lengths with random ids (RoBERTa: its pad id 1 inside rows too) and types."""
    lengths = rng.integers(1, MAX_LEN + 1, n)
    mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(0, model.config.vocab_size, mask.shape) * mask
    types = rng.integers(0, 2 if model.config.type_vocab_size > 1 or not model.config.token_types else 1,
                         mask.shape) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("fam, kind, policy", CASES)
def test_compiled_family_matches_oracle(fam, kind, policy, root):
    model = family_model(fam, kind)
    cm = compiled(fam, kind, policy, root)
    types = 1 if fam == "roberta" else 2          # DistilBERT: type ids 1 are ignored by both

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        enc = data.draw(batches(model.config.vocab_size, types), label="batch")
        base = base_policy(policy, model.num_labels, model.num_layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", refexit.ExitWarning)
            scores = oracle_scores(model.astype(np.float64), enc, base) if policy not in (
                "patience", "window", "static") else None
        pol = policy_from_scores(data.draw, policy, model, scores, base)
        got = compare(cm, model, pol, enc, f"{fam} {kind}")
        n = int(enc["attention_mask"][0].sum())         # a sample alone gives the same bits
        one = cm.classify({k: v[:1, :n] for k, v in enc.items()})
        np.testing.assert_array_equal(one.logits[0], got.logits[0])

    check()


@pytest.mark.parametrize("isa", [DEFAULT_ISA] + OTHER_ISAS)
@pytest.mark.parametrize("fam", FAMILIES)
def test_every_layer_on_every_instruction_set(fam, isa, root):
    kind = "mean_linear"
    model = family_model(fam, kind)
    cm = compiled(fam, kind, "static", root, isa=isa)
    assert cm.ffi.string(getattr(cm.lib, f"{cm.prefix}_isa")()).decode() == isa
    enc = family_batch(np.random.default_rng(3), model)
    for k in range(1, model.num_layers + 1):
        got = compare(cm, model, refexit.Static(k), enc, f"{isa} {fam} layer {k}")
        assert np.all(got.exit_layers == k)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("fam", FAMILIES)
def test_reduced_precisions(fam, precision, root):
    """The C of bf16 / int8 against the float64 oracle emulating it (model.with_precision), with
    test_precision.py's bounds (int8: allowing a sample moved by one rounding-boundary code, see
    below), and far closer to it than to fp32 (it really computes in p)."""
    kind = "mean_linear"
    model = family_model(fam, kind)
    cm = compiled(fam, kind, "static", root, precision=precision)
    enc = family_batch(np.random.default_rng(4), model)
    ref, fp32 = model.with_precision(precision).astype(np.float64), model.astype(np.float64)
    for k in (1, model.num_layers):
        cm.set_policy(refexit.Static(k))
        got, want = cm.classify(enc).logits, ref.classify(enc, refexit.Static(k)).logits
        z32 = fp32.classify(enc, refexit.Static(k)).logits
        if precision == "int8":
            # A row whose input sits on a rounding boundary (the float64 emulation's activations
            # against the C's float32 ones) takes the neighbouring int8 code: that sample moves by
            # one quantization step, a small part of int8's own error. So: most samples within the
            # float bound, every sample within a quarter of the emulation's distance to fp32.
            err = np.abs(got - want)                                              # [B, C]
            within = np.all(err <= LOWP_ATOL + LOWP_RTOL * np.abs(want), axis=1)
            assert within.mean() >= 0.75, f"{fam} int8 layer {k}: {within.sum()} of {len(within)} samples"
            assert err.max() <= 0.25 * np.abs(want - z32).max(), f"{fam} int8 layer {k}: {err.max():.3g}"
        else:
            assert_close(got, want, atol=LOWP_ATOL, rtol=LOWP_RTOL, what=f"{fam} {precision} layer {k}")
        assert np.median(np.abs(got - want)) * 10 < np.median(np.abs(got - z32))


def test_albert_stores_its_shared_layer_once(root):
    model = family_model("albert", "mean_linear")
    cm = compiled("albert", "mean_linear", "static", root)
    plan = codegen.lower.lower(model)
    layers = {s.name.split(".")[1] for s in plan.tensors if s.name.startswith("layers.")}
    assert layers == {"0"} and plan.dims()[13:] == [14, 0, 1]
    one_layer = sum(s.nbytes for s in plan.tensors if s.name.startswith("layers."))
    h = pack.read_header(cm.out_dir / f"{cm.prefix}.weights")
    assert h.dims[15] == 1 and h.file_size < pack.file_size(plan) + one_layer   # not L copies


def test_type_ids_distilbert_ignores_roberta_checks(root):
    d = family_model("distilbert", "mean_linear")
    cm = compiled("distilbert", "mean_linear", "static", root)
    enc = family_batch(np.random.default_rng(5), d)
    ones = dict(enc, token_type_ids=enc["attention_mask"].copy())
    cm.set_policy(refexit.Static(3))
    np.testing.assert_array_equal(cm.classify(ones).logits, cm.classify(enc).logits)
    r = family_model("roberta", "mean_linear")
    cr = compiled("roberta", "mean_linear", "static", root)
    bad = dict(family_batch(np.random.default_rng(6), r), token_type_ids=np.ones((6, MAX_LEN), np.int64))
    with pytest.raises(refexit.InputError, match="token type id"):
        cr.classify(bad)
    with pytest.raises(refexit.InputError, match="token type id"):
        r.classify(bad)


@pytest.mark.parametrize("fam", FAMILIES)
def test_golden_folder_compiles_to_transformers(fam, root):
    """The HF folders of tools/make_golden.py, compiled: the C logits equal transformers' float32
    within the oracle's bound (1e-5, tests/test_families.py)."""
    z = np.load(GOLDEN / f"{fam}_golden.npz")
    model = refexit.load(GOLDEN / fam)
    cm = codegen.compile_model(model, out_dir=root / f"golden_{fam}")
    got = cm.classify({k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert_close(got.logits, z["logits_f32"], atol=1e-5, what=f"{fam} compiled vs transformers")
    assert np.all(got.exit_layers == model.num_layers)
    assert model.config.max_positions == cm.max_length or model.config.model_type != "roberta"


def test_roberta_max_length_is_the_positions_after_the_offset(root):
    model = family_model("roberta", "mean_linear")
    assert arch.position_ids(np.array([0, 5, 1, 6]), model.config).tolist() == [2, 3, 1, 4]
    with pytest.raises(refexit.InputError, match=r"max_length must be an integer in \[3, 38\]"):
        codegen.lower.lower(model, max_length=39)


# ---------------------------------------------------------------- refexit compile --standalone
def run_program(exe, *args, stdin=b""):
    import subprocess
    r = subprocess.run([str(exe), *map(str, args)], input=stdin, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


@pytest.mark.parametrize("fam", FAMILIES)
def test_standalone_program_per_family(fam, tmp_path):
    """`refexit compile FOLDER --standalone` on each HF golden folder: the program classifies token
    ids (--ids, with token types after a TAB) as the oracle does; the WordPiece families (DistilBERT,
    ELECTRA) also classify text. Bad ids give an error line, not a crash."""
    from refexit.cli.main import main
    out = tmp_path / "build"
    assert main(["compile", str(GOLDEN / fam), "-o", str(out), "--prefix", fam, "--isa", "scalar",
                 "--openmp", "off", "--standalone"]) == 0
    z = np.load(GOLDEN / f"{fam}_golden.npz")
    model = refexit.load(GOLDEN / fam)
    lines = []
    for b in range(len(z["input_ids"])):
        n = int(z["attention_mask"][b].sum())
        lines.append(" ".join(map(str, z["input_ids"][b, :n])) + "\t" + " ".join(map(str, z["token_type_ids"][b, :n])))
    got = run_program(out / fam, "--ids", stdin=("\n".join(lines) + "\n").encode())
    want = model.classify({k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert [g["label"] for g in got] == [model.label_names[i] for i in want.labels]
    assert_close([g["logits"] for g in got], want.logits, atol=1e-5, what=f"{fam} standalone --ids")
    errors = run_program(out / f"{fam}-sidecar", "--ids", "0 1 x", f"0 {model.config.vocab_size}", "")
    assert [e["error"] for e in errors] == ["not a list of token ids", "a token id is outside the vocabulary",
                                            "empty text"]
    if model.tokenizer:
        texts = [str(t) for t, h in zip(z["texts"], z["has_pair"]) if not h]
        got = run_program(out / fam, *texts)
        want = model.classify(model.tokenizer(texts))
        assert_close([g["logits"] for g in got], want.logits, atol=1e-5, what=f"{fam} standalone text")


def test_electra_without_projection(root):
    """ELECTRA with embedding_size = hidden_size (electra-base) has no embeddings_project."""
    model = family_model("electra_e=h", "pooler_linear")
    assert "emb.proj.w" not in model.weights and model.weights["emb.word"].shape == (97, 30)
    cm = compiled("electra_e=h", "pooler_linear", "static", root)
    assert codegen.lower.lower(model).dims()[13] == 0
    enc = family_batch(np.random.default_rng(8), model)
    for k in range(1, model.num_layers + 1):
        compare(cm, model, refexit.Static(k), enc, f"electra E=H layer {k}")
