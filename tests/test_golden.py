"""The oracle against Hugging Face transformers, through golden files written by
tools/make_golden.py (torch 2.13.0 + transformers; see the file header for versions)."""
import numpy as np
import pytest

import refexit
from conftest import GOLDEN, assert_close


def encoding(z):
    return {k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def retokenized(model, z):
    texts = [str(t) for t in z["texts"]]
    pairs = [str(p) if h else None for p, h in zip(z["pairs"], z["has_pair"])]
    rows = [model.tokenizer.encode(t, p) for t, p in zip(texts, pairs)]
    return [r[0] for r in rows], [r[1] for r in rows]


def check_same_tokens(model, z):
    ids, types = retokenized(model, z)
    for b, (i, t) in enumerate(zip(ids, types)):
        n = int(z["attention_mask"][b].sum())
        assert i == z["input_ids"][b, :n].tolist() and t == z["token_type_ids"][b, :n].tolist()


@pytest.fixture(scope="module")
def golden_minilm():
    return np.load(GOLDEN / "minilm_hidden.npz")


def test_minilm_hidden_states_float64(minilm, golden_minilm):
    z = golden_minilm
    check_same_tokens(minilm, z)
    hs = minilm.astype(np.float64).hidden_states(encoding(z))
    assert len(hs) == minilm.num_layers + 1
    for i, h in enumerate(hs):
        assert_close(h, z["hidden_f64"][i], atol=1e-6, what=f"hidden state {i} (float64)")


def test_minilm_hidden_states_float32(minilm, golden_minilm):
    """float32 is judged against the float64 truth: our error must not exceed HF's own float32
    error (HF float32 is up to ~7e-5 away from HF float64 on MiniLM's outlier activations, |h| up
    to ~10, so 1e-5 abs is below what float32 can do here), and the median stays at rounding
    level. Against HF float32 directly: 2e-4 abs (the two float32 roundings add up)."""
    z = golden_minilm
    hs = minilm.hidden_states(encoding(z))
    mask = z["attention_mask"].astype(bool)
    for i, h in enumerate(hs):
        assert h.dtype == np.float32
        assert_close(h, z["hidden_f32"][i], atol=2e-4, what=f"hidden state {i} (float32 vs HF float32)")
        assert_close(h, z["hidden_f64"][i], atol=3e-5, what=f"hidden state {i} (float32 vs float64 truth)")
        assert np.median(np.abs(h - z["hidden_f64"][i])[mask]) < 1e-6
        ours = np.max(np.abs(h - z["hidden_f64"][i]))
        theirs = np.max(np.abs(z["hidden_f32"][i] - z["hidden_f64"][i]))
        assert ours <= theirs + 1e-6, f"layer {i}: our float32 error {ours:.2g} vs HF's {theirs:.2g}"


def test_minilm_pooler(minilm, golden_minilm):
    z = golden_minilm
    m = minilm.astype(np.float64)
    hs = m.hidden_states(encoding(z))
    w, b = m.weights["pooler.w"], m.weights["pooler.b"]
    pooled = np.tanh(hs[-1][:, 0] @ w.T + b)
    assert_close(pooled, z["pooler_f64"], atol=1e-6, what="pooler")


@pytest.mark.parametrize("name", ["tiny_seqcls", "tiny_regression"])
def test_sequence_classification_checkpoint(name):
    z = np.load(GOLDEN / f"{name}_golden.npz")
    model = refexit.load(GOLDEN / name)
    check_same_tokens(model, z)
    enc = encoding(z)
    r64 = model.astype(np.float64).classify(enc)
    assert_close(r64.logits, z["logits_f64"], atol=1e-9, what=f"{name} logits float64")
    r32 = model.classify(enc)
    assert_close(r32.logits, z["logits_f32"], atol=1e-5, what=f"{name} logits float32")
    hs = model.astype(np.float64).hidden_states(enc)
    for i, h in enumerate(hs):
        assert_close(h, z["hidden_f64"][i], atol=1e-6, what=f"{name} hidden {i}")
    assert np.all(r64.exit_layers == model.num_layers)


def test_seqcls_labels_and_activation_from_config():
    m = refexit.load(GOLDEN / "tiny_seqcls")
    assert m.label_names == ["neg", "neu", "pos"] and m.config.layer_norm_eps == 1e-7
    r = refexit.load(GOLDEN / "tiny_regression")
    assert r.config.hidden_act == "gelu_new" and r.num_labels == 1
