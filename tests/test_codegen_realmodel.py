"""The real all-MiniLM-L6-v2, with random exit heads attached, compiled to C: it agrees with the
float64 oracle on real text (tokenized by refexit's tokenizer), at every layer and with exits."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import refexit
from refexit.heads import ExitParams, Head, param_shapes

import codegen

TEXTS = [
    "The movie was a delight from start to finish.",
    "I would not recommend this restaurant to anyone; the service was slow and the food was cold.",
    "Stocks fell sharply on Tuesday after the central bank raised interest rates by half a point, "
    "surprising investors who had expected a smaller move and prompting a broad sell-off in technology shares.",
    "ok",
    "Ünïcödé, punctuation!? and numbers 12345 — all at once.",
    "What time does the train to Zürich leave?",
]
PAIRS = ("Is it raining?", "The streets are wet and people carry umbrellas.")


def with_random_heads(model, kind: str, C: int = 3, seed: int = 0, final_kind: str | None = None):
    """The backbone of `model` with random exit heads of `kind` after every layer (and an LTE)."""
    rng = np.random.default_rng(seed)
    H, L = model.config.hidden_size, model.num_layers

    def head(k):
        params = {n: rng.normal(0, 1.0 / np.sqrt(s[-1]), s).astype(np.float32) if len(s) == 2
                  else rng.normal(0, 0.1, s).astype(np.float32) for n, s in param_shapes(k, H, C, 64).items()}
        return Head(k, params, l2norm=(k == "mean_linear"), attn_heads=4)

    heads = [head(kind) for _ in range(L - 1)] + [head(final_kind or kind)]
    F = heads[0].feature_size
    lte = {"w": rng.normal(0, 1, (1, F)).astype(np.float32), "b": np.zeros(1, np.float32)}
    exits = ExitParams(heads, lte, None, np.ones(L))
    return refexit.Model(model.config, model.weights, exits, ["neg", "neutral", "pos"][:C], model.tokenizer,
                         source=model.source)


@pytest.fixture(scope="module")
def encoded(minilm):
    enc = minilm.tokenizer(TEXTS, max_length=128)
    pair = minilm.tokenizer([PAIRS[0]], [PAIRS[1]], max_length=128)
    T = max(enc.input_ids.shape[1], pair.input_ids.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, T - a.shape[1])))        # noqa: E731
    return {k: np.concatenate([pad(getattr(enc, k)), pad(getattr(pair, k))])
            for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.mark.parametrize("kind,final", [("pooler_linear", "shared_pooler"), ("mean_linear", None),
                                        ("fastbert", "shared_pooler")])
def test_minilm_compiled_matches_oracle(minilm, encoded, kind, final, tmp_path):
    model = with_random_heads(minilm, kind, final_kind=final if "pooler.w" in minilm.weights else None)
    ref64 = model.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(model, refexit.Entropy(-1.0), tmp_path, prefix=f"minilm_{kind}",
                                   max_length=128, max_batch=4)
        trace = ref64.classify(encoded, refexit.Entropy(-1.0), trace=True)
    assert cm.classify(encoded).exit_layers.tolist() == [6] * len(TEXTS + [0])
    # every layer: Static(k) through a library compiled for entropy = thresholds that exit at k
    L = model.num_layers
    for k in range(1, L + 1):
        ref = np.stack([t[k - 1].logits for t in trace.per_layer])
        cm.set_thresholds([np.inf if i + 1 == k else -np.inf for i in range(L - 1)] if k < L else [-np.inf] * (L - 1))
        got = cm.classify(encoded)
        assert got.exit_layers.tolist() == [k] * len(ref)
        np.testing.assert_allclose(got.logits, ref, rtol=1e-4, atol=1e-5, err_msg=f"layer {k}")
    # real exits at various layers, thresholds from the oracle's own entropies
    scores = np.array([[t.score for t in tr[:L - 1]] for tr in trace.per_layer])
    thr = [float(np.quantile(scores[:, i], 0.5)) for i in range(L - 1)]
    pol = refexit.Entropy(thr)
    cm.set_policy(pol)
    ref = ref64.classify(encoded, pol)
    got = cm.classify(encoded)
    ok = ref.margins >= 1e-4
    assert np.array_equal(got.exit_layers[ok], ref.exit_layers[ok]) and np.array_equal(got.labels[ok], ref.labels[ok])
    same = got.exit_layers == ref.exit_layers
    np.testing.assert_allclose(got.logits[same], ref.logits[same], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.flops[same], ref.flops[same])
    assert len(set(got.exit_layers.tolist())) >= 2


def test_minilm_learned_exit_and_threads(minilm, encoded, tmp_path):
    model = with_random_heads(minilm, "pooler_linear", seed=3, final_kind="pooler_linear")
    pol = refexit.Learned(0.5)
    cm = codegen.compile_model(model, pol, tmp_path, prefix="minilm_lte", max_length=128)
    ref = model.astype(np.float64).classify(encoded, pol)
    one = cm.classify(encoded)
    cm.set_threads(2)
    two = cm.classify(encoded)
    np.testing.assert_array_equal(one.logits, two.logits)
    ok = ref.margins >= 1e-4
    assert np.array_equal(one.exit_layers[ok], ref.exit_layers[ok])
    same = one.exit_layers == ref.exit_layers
    np.testing.assert_allclose(one.logits[same], ref.logits[same], rtol=1e-4, atol=1e-5)
    vocab = codegen.pack.read_vocab(cm.weights_path)
    assert vocab == minilm.tokenizer.vocab and len(vocab) == minilm.config.vocab_size
