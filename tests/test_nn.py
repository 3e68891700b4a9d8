import math

import numpy as np
import pytest

from refexit import nn


def test_erf_matches_libm_float64():
    z = np.linspace(-9, 9, 400001)
    ref = np.array([math.erf(v) for v in z])
    assert np.max(np.abs(nn.erf(z) - ref)) < 5e-15


def test_erf_float32_keeps_dtype_and_accuracy():
    z = np.linspace(-9, 9, 100001).astype(np.float32)
    out = nn.erf(z)
    assert out.dtype == np.float32
    ref = np.array([math.erf(float(v)) for v in z])
    assert np.max(np.abs(out - ref)) < 3e-7


def test_erf_special_values():
    out = nn.erf(np.array([0.0, -0.0, np.inf, -np.inf, 1e-300]))
    assert out[0] == 0 and out[2] == 1 and out[3] == -1 and abs(out[4]) < 1e-299
    assert np.isnan(nn.erf(np.array([np.nan])))[0]


def test_gelu_forms():
    x = np.linspace(-6, 6, 1001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.max(np.abs(nn.gelu(x) - exact)) < 1e-14
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.max(np.abs(nn.gelu_tanh(x) - tanh_form)) < 1e-15
    assert np.max(np.abs(nn.gelu_tanh(x) - exact)) > 1e-5        # the two really differ


def test_layer_norm_uses_population_variance_and_eps():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    mu, var = x.mean(), ((x - x.mean()) ** 2).mean()
    for eps in (1e-12, 0.5):
        out = nn.layer_norm(x, np.ones(4), np.zeros(4), eps)
        assert np.allclose(out, (x - mu) / np.sqrt(var + eps), atol=1e-15)


def test_softmax_and_entropy_are_stable_on_extreme_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [-1e30, 1e30, 0.0]])
    p = nn.softmax(z)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1)
    h = nn.entropy(z)
    assert np.all(np.isfinite(h))
    assert h[0] == 0 and h[2] == 0                      # 0 log 0 = 0, not NaN
    assert h[1] == pytest.approx(math.log(3), abs=1e-15)


def test_argmax_ties_go_to_lowest_index():
    assert list(nn.argmax(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]]))) == [0, 1, 0]


def test_sigmoid_no_overflow():
    s = nn.sigmoid(np.array([-1e4, 0.0, 1e4]))
    assert s[0] == 0 and s[1] == 0.5 and s[2] == 1


def test_attention_skips_padded_keys():
    rng = np.random.default_rng(0)
    D, T = 8, 5
    w = [rng.normal(size=(D, D)) if i % 2 == 0 else rng.normal(size=D) for i in range(8)]
    x = rng.normal(size=(T, D))
    mask = np.array([1, 1, 1, 0, 0], bool)
    full = nn.attention(x, mask, *w, n_heads=2)
    cut = nn.attention(x[:3], mask[:3], *w, n_heads=2)
    assert np.allclose(full[:3], cut, atol=1e-12)
    x2 = x.copy()
    x2[3:] = 1e3                                          # garbage in padded rows changes nothing real
    assert np.allclose(nn.attention(x2, mask, *w, n_heads=2)[:3], cut, atol=1e-12)
