"""Global Past-Future (methods.md, "Global Past-Future"): the combination against a transcription of
the paper's code, the entropy exit, the parameters in the exits file, training (analytic gradients
against finite differences of an independent loss), the evaluate replay, and the compiled C against
the float64 oracle."""
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import gpf as G
from refexit import nn
from refexit.checkpoint import load_checkpoint, save_exits
from refexit.errors import CheckpointError, InputError
from refexit.heads import ExitParams
from refexit.synthetic import random_model, save_model
from refexit.train import evaluate as E
from refexit.train import features as F
from refexit.train import gpf as TG

from test_codegen_props import (EXAMPLES, MAX_BATCH, MAX_LEN, MAX_TOKENS, OTHER_ISAS, assert_alone_as_in_batch,
                                batches, compare, cut_between)


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        return f(*a, **kw)


def random_params(L, H, C, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, scale / np.sqrt(s[-1]) if len(s) > 1 else 0.3, s)
            for n, s in G.param_shapes(L, H, C).items()}


# ---------------------------------------------------------------- the paper's code, transcribed
def paper_logits(g, cls, i):
    """lancopku/Early-Exit BertModel.forward (eval branch) + ClassifierWithGate.forward for one sample
    after 0-based layer i, with the paper's layouts (pred_layer.weight [L, H, H] and classifier
    weight [L, H, 2C], both multiplied on the right). cls [L, H]: the [CLS] states."""
    L, C = len(cls), g["gate.w"].shape[0]
    pred_w = np.transpose(g["imit.w"], (0, 2, 1))                             # [L, H(in), H(out)]
    cls_w = np.transpose(g["proj.w"], (0, 2, 1))                              # [L, H, 2C]
    all_pool = [np.tanh(g["pool.w"][j] @ cls[j] + g["pool.b"][j]) for j in range(i + 1)]   # self.poolers[j]
    cls_token = all_pool[-1]
    pred_cls = np.tanh(np.einsum("h,lhk->lk", cls_token, pred_w) + g["imit.b"])[i + 1:]   # CLSPredLayer
    pooled = np.concatenate([np.stack(all_pool), pred_cls])                  # [L, H]
    proj = np.einsum("lh,lhk->lk", pooled, cls_w) + g["proj.b"]              # cls_tokens_proj [L, 2C]
    prev_logits = proj[:i + 1, :C].sum(0)
    future_logits = proj[i + 1:, :C].sum(0)
    prev_gate = np.tanh(proj[:i + 1, C:].sum(0) / (i + 1))
    lam = 1 / (1 + np.exp(-(g["gate.w"] @ prev_gate + g["gate.b"])))
    return 2 * lam * prev_logits + (2 - 2 * lam) * future_logits


@pytest.mark.parametrize("L,H,C", [(1, 5, 2), (3, 6, 2), (4, 7, 5)])
def test_step_and_forward_all_match_the_papers_code(L, H, C):
    g = random_params(L, H, C, seed=L)
    cls = np.random.default_rng(1).normal(0, 1, (L, H))
    past = None
    fw = G.forward_all(g, cls[:, None, :])
    for layer in range(1, L + 1):
        z, v, past = G.step(g, layer, cls[layer - 1], past)
        want = paper_logits(g, cls, layer - 1)
        np.testing.assert_allclose(z, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fw["z"][layer - 1, 0], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(v, np.tanh(g["pool.w"][layer - 1] @ cls[layer - 1] + g["pool.b"][layer - 1]))


def test_the_running_past_is_the_sum_over_the_layers_so_far():
    L, H, C = 4, 6, 3
    g = random_params(L, H, C)
    cls = np.random.default_rng(2).normal(0, 1, (L, H))
    past = None
    for layer in range(1, L + 1):
        _, _, past = G.step(g, layer, cls[layer - 1], past)
    r = [g["proj.w"][j] @ np.tanh(g["pool.w"][j] @ cls[j] + g["pool.b"][j]) + g["proj.b"][j] for j in range(L)]
    np.testing.assert_allclose(past, np.sum(r, axis=0), rtol=1e-12)


# ---------------------------------------------------------------- the policy in the oracle
def gpf_model(L=3, C=3, seed=0, **kw):
    args = dict(num_layers=L, hidden=16, heads=2, intermediate=20, num_labels=C, seed=seed,
                head_kind="mean_linear", gpf=True, scale=1.5, vocab_size=97, max_position=40)
    args.update(kw)
    return random_model(**args)


ENC = {"input_ids": np.array([[2, 10, 11, 12, 3], [2, 20, 3, 0, 0], [2, 5, 6, 7, 8]]),
       "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}


def test_the_exit_is_strict_on_the_entropy_of_the_combination():
    m = gpf_model().astype(np.float64)
    L = m.num_layers
    tr = quiet(m.classify, ENC, refexit.GlobalPastFuture(-1.0), trace=True)
    hs = m.hidden_states(ENC)
    for b, t in enumerate(tr.per_layer):
        past = None
        for layer in range(1, L):
            z, _, past = G.step(m.exits.gpf, layer, hs[layer][b, 0], past)
            np.testing.assert_array_equal(t[layer - 1].logits, z)              # the combination, not the head
            assert t[layer - 1].score == pytest.approx(float(nn.entropy(z[None])[0]), rel=1e-12)
    h = tr.per_layer[0][0].score                                               # sample 0, layer 1
    assert quiet(m.classify, ENC, refexit.GlobalPastFuture(h)).exit_layers[0] > 1          # strict
    out = quiet(m.classify, ENC, refexit.GlobalPastFuture(np.nextafter(h, 9)), trace=True)
    assert out.exit_layers[0] == 1
    np.testing.assert_array_equal(out.logits[0], tr.per_layer[0][0].logits)
    # at the last layer the model's classifier answers; FLOPs: layers + the policy's own checks + the final head
    full = quiet(m.classify, ENC, refexit.GlobalPastFuture(-1.0))
    want = m.classify(ENC).logits
    np.testing.assert_array_equal(full.logits, want)
    n = ENC["attention_mask"].sum(1)
    H, C = m.config.hidden_size, m.num_labels
    for b in range(3):
        checks = sum(G.flops(i, L, H, C) for i in range(1, L))
        assert full.flops[b] == L * m.layer_flops(n[b]) + checks + m.heads[L - 1].flops(n[b])
    assert G.flops(1, L, H, C) - G.flops(2, L, H, C) == 2 * H * H + 2 * C * H   # one imitation fewer


def test_mean_pooling_reads_the_mean_of_the_real_tokens():
    """gpf_pool "mean": each layer's pooler reads the mean of the sample's real tokens (padding left out),
    not its [CLS] state; the same parameters with pool "cls" give other logits; FLOPs are the same."""
    m = gpf_model(L=3, C=3, seed=6).astype(np.float64)
    m.exits.gpf_pool = "mean"
    L, mask = m.num_layers, ENC["attention_mask"]
    tr = quiet(m.classify, ENC, refexit.GlobalPastFuture(-1.0), trace=True)
    hs = m.hidden_states(ENC)
    for b, t in enumerate(tr.per_layer):
        n, past, past_cls = int(mask[b].sum()), None, None
        for layer in range(1, L):
            x = hs[layer][b, :n]                                                   # [n, H] real tokens only
            z, _, past = G.step(m.exits.gpf, layer, x.mean(axis=0), past)
            np.testing.assert_allclose(t[layer - 1].logits, z, rtol=1e-12, atol=1e-12)
            zc, _, past_cls = G.step(m.exits.gpf, layer, x[0], past_cls)
            assert not np.allclose(t[layer - 1].logits, zc)                        # not the [CLS] reading
    cls = quiet(m.classify, ENC, refexit.GlobalPastFuture(-1.0))
    m.exits.gpf_pool = "cls"
    np.testing.assert_array_equal(quiet(m.classify, ENC, refexit.GlobalPastFuture(-1.0)).flops, cls.flops)


@pytest.mark.parametrize("pool, L, seed", [(p, 3, 7) for p in G.POOLS] + [("cls", 4, 3)])
def test_a_sample_does_not_depend_on_padding_or_batch_mates_with_either_pooling(pool, L, seed):
    m = gpf_model(L=L, C=2, seed=seed)
    m.exits.gpf_pool = pool
    tr = quiet(m.astype(np.float64).classify, ENC, refexit.GlobalPastFuture(-1.0), trace=True)
    pol = refexit.GlobalPastFuture(float(np.median([t.score for x in tr.per_layer for t in x[:-1]])))
    full = quiet(m.classify, ENC, pol)
    for b in range(3):
        n = int(ENC["attention_mask"][b].sum())
        one = quiet(m.classify, {k: v[b:b + 1, :n] for k, v in ENC.items()}, pol)
        np.testing.assert_array_equal(one.logits[0], full.logits[b])
        assert one.exit_layers[0] == full.exit_layers[b]


def test_an_unknown_pooling_is_refused():
    L, C = 3, 3
    for bad in ("max", "CLS", None, 1):
        ep = ExitParams([None] * L, temperatures=np.ones(L), gpf=random_params(L, 4, C), gpf_pool=bad)
        with pytest.raises(InputError, match="pooling must be one of 'cls', 'mean'"):
            refexit.GlobalPastFuture(0.5).check(L, C, ep)


def test_bad_settings_raise():
    with pytest.raises(InputError, match="NaN"):
        refexit.GlobalPastFuture(float("nan"))
    with pytest.raises(InputError, match="NaN"):
        refexit.GlobalPastFuture([0.2, float("nan")])
    L, C = 3, 3
    bare = ExitParams([None] * L, temperatures=np.ones(L))
    with pytest.raises(InputError, match="Global Past-Future parameters"):
        refexit.GlobalPastFuture(0.5).check(L, C, bare)
    ep = ExitParams([None] * L, temperatures=np.ones(L), gpf=random_params(L, 4, C))
    with pytest.raises(InputError, match="2 classes"):
        refexit.GlobalPastFuture(0.5).check(L, 1, ep)
    with pytest.raises(InputError, match="values"):
        refexit.GlobalPastFuture([0.1, 0.2, 0.3, 0.4]).check(L, C, ep)
    with pytest.warns(refexit.ExitWarning, match="never fire"):
        refexit.GlobalPastFuture(0.0).check(L, C, ep)
    with pytest.warns(refexit.ExitWarning, match="always fires"):
        refexit.GlobalPastFuture(1.2).check(L, C, ep)
    m = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="--extras gpf"):
        m.classify(ENC, refexit.GlobalPastFuture(0.5))
    assert refexit.make_policy("gpf", 0.3).name == "gpf"


def test_parameters_round_trip_through_the_exits_file(tmp_path):
    model = gpf_model(L=3, C=3, seed=1)
    save_model(model, tmp_path / "m")
    _, _, ep, _ = load_checkpoint(tmp_path / "m")
    for n in G.PARTS:
        np.testing.assert_array_equal(ep.gpf[n], model.exits.gpf[n])
    # misshaped, missing, extra or non-finite tensors are refused, naming the tensor
    good = model.exits.gpf
    for name, bad in (("gpf.imit.w", dict(good, **{"imit.w": np.zeros((2, 16, 16))})),
                      ("gpf.proj.w", dict(good, **{"proj.w": np.zeros((3, 3, 16))})),
                      ("gpf.gate.b", {k: v for k, v in good.items() if k != "gate.b"}),
                      ("gpf.extra", dict(good, extra=np.zeros(2))),
                      ("gpf.pool.b", dict(good, **{"pool.b": np.full((3, 16), np.nan)}))):
        ep = ExitParams(model.exits.heads, None, None, np.ones(3), gpf=bad)
        save_exits(tmp_path / "bad.safetensors", ep, model.label_names)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")


def test_the_pooling_round_trips_and_is_checked_on_load(tmp_path):
    model = gpf_model(L=3, C=3, seed=1)
    save_model(model, tmp_path / "m")
    assert load_checkpoint(tmp_path / "m")[2].gpf_pool == "cls"
    model.exits.gpf_pool = "mean"
    save_exits(tmp_path / "mean.safetensors", model.exits, model.label_names)
    assert load_checkpoint(tmp_path / "m", exits=tmp_path / "mean.safetensors")[2].gpf_pool == "mean"
    assert refexit.load(tmp_path / "m", exits=tmp_path / "mean.safetensors").astype(np.float64).exits.gpf_pool == "mean"
    # an exits file written before the choice (no metadata 'gpf_pool') reads the [CLS] state, as the paper
    from refexit import safetensors_io
    tensors, meta = safetensors_io.read(tmp_path / "mean.safetensors")
    safetensors_io.write(tmp_path / "old.safetensors", tensors, {k: v for k, v in meta.items() if k != "gpf_pool"})
    assert load_checkpoint(tmp_path / "m", exits=tmp_path / "old.safetensors")[2].gpf_pool == "cls"
    # an unknown value, or the setting without the parameters, is refused naming it
    save_exits(tmp_path / "bad.safetensors", model.exits, model.label_names, extra_meta={"gpf_pool": "max"})
    with pytest.raises(CheckpointError, match=r"metadata 'gpf_pool'.*'max'"):
        load_checkpoint(tmp_path / "m", exits=tmp_path / "bad.safetensors")
    bare = ExitParams(model.exits.heads, None, None, np.ones(3))
    save_exits(tmp_path / "bare.safetensors", bare, model.label_names, extra_meta={"gpf_pool": "mean"})
    with pytest.raises(CheckpointError, match="'gpf_pool' without Global Past-Future tensors"):
        load_checkpoint(tmp_path / "m", exits=tmp_path / "bare.safetensors")
    model.exits.gpf_pool = "avg"
    with pytest.raises(CheckpointError, match="'avg'"):
        save_exits(tmp_path / "never.safetensors", model.exits, model.label_names)


# ---------------------------------------------------------------- training
def reference_loss(g, X, y, gd):
    """The paper's training loss, one exit at a time as its code computes it; `gd` supplies the
    detached values (the earlier pooled vectors and the imitation targets)."""
    L, N, H = X.shape
    C = g["gate.w"].shape[0]

    def pooled(p, j):
        return np.tanh(X[j] @ p["pool.w"][j].T + p["pool.b"][j])
    ce_total, wsum, cos_total = 0.0, 0, 0.0
    for i in range(L):
        vecs = [pooled(gd, j) for j in range(i)] + [pooled(g, i)]
        preds = [np.tanh(vecs[-1] @ g["imit.w"][j].T + g["imit.b"][j]) for j in range(i + 1, L)]
        allv = vecs + preds
        proj = np.stack([allv[j] @ g["proj.w"][j].T + g["proj.b"][j] for j in range(L)], 1)   # [N, L, 2C]
        gate = np.tanh(proj[:, :i + 1, C:].sum(1) / (i + 1))
        lam = 1 / (1 + np.exp(-(gate @ g["gate.w"].T + g["gate.b"])))
        z = 2 * lam * proj[:, :i + 1, :C].sum(1) + (2 - 2 * lam) * proj[:, i + 1:, :C].sum(1)
        ce_total += (i + 1) * -nn.log_softmax(z)[np.arange(N), y].mean()
        wsum += i + 1
        if i < L - 1:
            t, f = np.concatenate([pooled(gd, j) for j in range(i + 1, L)]), np.concatenate(preds)
            c = (t * f).sum(1) / np.sqrt(((t * t).sum(1) + 1e-12) * ((f * f).sum(1) + 1e-12))
            cos_total += (1 - c).mean()
    return (ce_total / wsum + cos_total / (L - 1)) / 2


@pytest.mark.parametrize("L,C", [(3, 3), (4, 2)])
def test_gradients_match_finite_differences(L, C):
    rng = np.random.default_rng(L)
    N, H = 5, 4
    g = {k: v + rng.normal(0, 0.5, v.shape) for k, v in TG.init_params(L, H, C, rng).items()}
    X, y = rng.normal(0, 1, (L, N, H)), rng.integers(0, C, N)
    loss, grads = TG.loss_and_grads(g, X, y)
    frozen = {k: v.copy() for k, v in g.items()}
    assert loss == pytest.approx(reference_loss(g, X, y, frozen), rel=1e-12)
    for k, a in g.items():
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            o = a[idx]
            a[idx] = o + 1e-6
            lp = reference_loss(g, X, y, frozen)
            a[idx] = o - 1e-6
            lm = reference_loss(g, X, y, frozen)
            a[idx] = o
            num[idx] = (lp - lm) / 2e-6
        np.testing.assert_allclose(grads[k], num, rtol=1e-5, atol=1e-8, err_msg=k)


def test_training_learns():
    from refexit.train.exits import TrainConfig
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (3, 300, 8))
    y = (X[0, :, 0] + 0.5 * X[2, :, 1] > 0).astype(np.int64)                # layer 1 knows most, layer 3 the rest
    g, log = TG.train(X[:, :200], y[:200], X[:, 200:], y[200:], 2, TrainConfig(max_epochs=60, batch_size=32),
                      rng, lr=1e-2)
    assert log["best_epoch"] > 0 and min(log["dev_loss"]) < log["dev_loss"][0] - 0.1
    acc = (nn.argmax(G.forward_all(g, X[:, 200:])["z"]) == y[200:]).mean(axis=1)   # [L] dev accuracy per exit
    assert acc[0] > 0.75 and acc[2] > 0.9


def test_train_exits_writes_a_loadable_exits_file(tmp_path):
    from refexit.train import exits as T
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=4,
                     head_kind="mean_linear", vocab_size=97)
    rng = np.random.default_rng(0)
    vocab = m.tokenizer.vocab[5:]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 10))) for _ in range(40)]
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    y = rng.integers(0, 2, 40)
    cfg = T.TrainConfig(max_epochs=3, batch_size=16)
    res = T.train_exits(m, f, y, f, y, ["a", "b"], extras=("gpf",), cfg=cfg)
    assert len(res.info["gpf_dev_per_layer"]) == 3 and "gpf" in res.info["log"]
    path = T.save(res, tmp_path / "ex")
    m2 = refexit.load(save_model(m, tmp_path / "m", with_exits=False), exits=path)
    for n in G.PARTS:
        np.testing.assert_array_equal(m2.exits.gpf[n], res.exits.gpf[n])
    assert T.train_exits(m, f, y, f, y, ["a", "b"], extras=(), cfg=cfg).exits.gpf is None   # only when asked
    with pytest.raises(InputError, match="unknown extras"):
        T.train_exits(m, f, y, f, y, ["a", "b"], extras=("gpff",), cfg=cfg)


def test_train_exits_with_mean_pooling_trains_on_the_token_means(tmp_path, monkeypatch):
    from refexit.train import exits as T
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=4,
                     head_kind="mean_linear", vocab_size=97)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 10))) for _ in range(40)]
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    y = rng.integers(0, 2, 40)
    seen, train = {}, TG.train

    def spy(X, y_, X_dev, *a, **kw):                 # what the GPF training is fed
        seen["X"], seen["X_dev"] = X, X_dev
        return train(X, y_, X_dev, *a, **kw)
    monkeypatch.setattr(TG, "train", spy)
    runs = {}
    for pool in G.POOLS:
        runs[pool] = T.train_exits(m, f, y, f, y, ["a", "b"], extras=("gpf",),
                                   cfg=T.TrainConfig(max_epochs=3, batch_size=16, gpf_pool=pool))
        want = f.mean if pool == "mean" else f.cls
        assert seen["X"] is want and seen["X_dev"] is want
        assert runs[pool].exits.gpf_pool == pool and runs[pool].info["gpf_pool"] == pool
    res = runs["mean"]
    z = G.forward_all({k: np.asarray(v, np.float64) for k, v in res.exits.gpf.items()}, f.mean.astype(np.float64))["z"]
    got = [float(np.mean(nn.argmax(zi) == y)) for zi in z]                     # dev metrics on the means
    assert got == pytest.approx([w["accuracy"] for w in res.info["gpf_dev_per_layer"]], abs=1 / 40 + 1e-9)
    path = T.save(res, tmp_path / "ex")
    m2 = refexit.load(save_model(m, tmp_path / "m", with_exits=False), exits=path)
    assert m2.exits.gpf_pool == "mean"
    for n in G.PARTS:
        np.testing.assert_array_equal(m2.exits.gpf[n], res.exits.gpf[n])
    with pytest.raises(InputError, match="pooling must be one of"):
        T.train_exits(m, f, y, f, y, ["a", "b"], extras=("gpf",), cfg=T.TrainConfig(max_epochs=1, gpf_pool="max"))


def test_cli_train_exits_gpf_pool_and_evaluate(tmp_path, capsys, monkeypatch):
    from refexit import tables
    from refexit.cli.main import main
    monkeypatch.setenv("REFEXIT_CACHE", str(tmp_path / "cache"))     # features cached away from ~
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=4,
                     head_kind="mean_linear", vocab_size=97)
    mdir = save_model(m, tmp_path / "model", with_exits=False)
    rng = np.random.default_rng(1)
    rows = [{"text": " ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 10))), "label": ["neg", "pos"][i % 2],
             "split": ["train", "dev", "test"][i % 3]} for i in range(60)]
    tables.write_rows(tmp_path / "d.csv", rows)
    out = tmp_path / "ex"
    assert main(["train-exits", str(mdir), "--data", str(tmp_path / "d.csv"), "--split-column", "split",
                 "--extras", "gpf", "--gpf-pool", "mean", "--epochs", "2", "--out", str(out)]) == 0
    assert refexit.load(mdir, exits=out).exits.gpf_pool == "mean"
    assert json.loads((out / "exits.json").read_text())["gpf_pool"] == "mean"
    assert main(["evaluate", str(mdir), "--exits", str(out), "--sweep", "--policy", "gpf",
                 "--out", str(tmp_path / "ev"), "--no-plot"]) == 0
    rep = json.loads(next((tmp_path / "ev").glob("evaluate-*.json")).read_text())
    assert rep["policies"]["gpf"]["points"]
    capsys.readouterr()
    assert main(["train-exits", str(mdir), "--data", str(tmp_path / "d.csv"), "--gpf-pool", "mean"]) == 1
    assert "--gpf-pool is a setting of --extras gpf" in capsys.readouterr().err


@pytest.mark.parametrize("pool", G.POOLS)
def test_the_evaluate_replay_is_a_real_run(pool):
    m = gpf_model(L=4, C=3, seed=5)
    m.exits.gpf_pool = pool
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(m.tokenizer.vocab[5:], rng.integers(1, 14))) for _ in range(30)]
    f = F.extract(m, texts, 32, use_cache=False, progress=False)
    out = E.LayerOutputs(m, f)
    enc = m.tokenizer(texts, max_length=32)
    for pol in E.sweep_policies("gpf", 4, 3)[::3]:
        want = quiet(m.classify, enc, pol)
        got = E.simulate(m, pol, out)
        np.testing.assert_array_equal(got.exit_layers, want.exit_layers)
        np.testing.assert_array_equal(got.logits, want.logits)
        np.testing.assert_array_equal(got.flops, want.flops)
    rep = E.evaluate(m, {"dev": f}, {"dev": rng.integers(0, 3, 30)}, policies=("gpf", "entropy"), progress=False)
    assert "gpf" in rep["policies"] and rep["policies"]["gpf"]["points"]
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    assert "--extras gpf" in E.available(bare, "gpf")


def test_command_line_settings():
    import argparse
    from refexit.cli.policy_args import add_policy_args, policy_from_args
    p = argparse.ArgumentParser()
    add_policy_args(p)
    pol = policy_from_args(p.parse_args(["--policy", "gpf", "--threshold", "0.2,0.3"]))
    assert isinstance(pol, refexit.GlobalPastFuture) and pol.threshold == [0.2, 0.3]
    for argv, match in ((["--policy", "gpf"], "needs --threshold"),
                        (["--policy", "gpf", "--threshold", "0.1", "--lam", "2"], "not a setting")):
        with pytest.raises(InputError, match=match):
            policy_from_args(p.parse_args(argv))


# ---------------------------------------------------------------- compiled C vs the oracle
CONFIGS = {
    "a": dict(num_layers=3, hidden=18, heads=3, intermediate=22, num_labels=2, seed=11),
    "c": dict(num_layers=4, hidden=44, heads=4, intermediate=50, num_labels=5, eps=1e-5, seed=13,
              final_kind="shared_pooler"),
    "d": dict(num_layers=1, hidden=30, heads=1, intermediate=19, num_labels=4, seed=14),
}
KINDS = ("pooler_linear", "mean_linear", "fastbert")
_MODELS, _COMPILED = {}, {}


def get(cfg, kind, build_root, pool="cls", isa=None):
    if (cfg, kind, pool) not in _MODELS:
        _MODELS[cfg, kind, pool] = random_model(head_kind=kind, fastbert_width=12, fastbert_heads=2, vocab_size=97,
                                                max_position=40, scale=1.5, gpf=True, **CONFIGS[cfg])
        _MODELS[cfg, kind, pool].exits.gpf_pool = pool
    model = _MODELS[cfg, kind, pool]
    key = (cfg, kind, pool, isa)
    if key not in _COMPILED:
        name = f"gpf_{cfg}_{kind}" + ("" if pool == "cls" else f"_{pool}") + (f"_{isa}" if isa else "")
        _COMPILED[key] = refexit_compile(model, quiet(refexit.GlobalPastFuture, -1.0), build_root / name,
                                         **({"isa": isa} if isa else {}))
    return model, _COMPILED[key]


def refexit_compile(model, policy, out_dir, **kw):
    import codegen
    return quiet(codegen.compile_model, model, policy, out_dir, prefix=out_dir.name, max_length=MAX_LEN,
                 max_batch=MAX_BATCH, max_tokens=MAX_TOKENS, **kw)


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    pytest.importorskip("cffi", reason="the codegen extra (cffi) is not installed")
    return tmp_path_factory.mktemp("gpf")


@pytest.mark.parametrize("kind,pool", [(k, "cls") for k in KINDS] + [("mean_linear", "mean"), ("pooler_linear", "mean")])
def test_compiled_gpf_matches_oracle(kind, pool, build_root):
    """Thresholds cut between the oracle's own entropies of the combination; C vs the float64 oracle
    per sample (logits, exit layers, FLOPs, margins), and a sample's result does not depend on its
    batch mates (bitwise). pool "mean": the mean over the real tokens of batches with mixed lengths
    (pooler_linear heads: the mean is compiled for GPF alone)."""

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        cfg = data.draw(st.sampled_from(sorted(CONFIGS)), label="config")
        model, cm = get(cfg, kind, build_root, pool)
        L = model.num_layers
        enc = data.draw(batches(model.config.vocab_size), label="batch")
        tr = quiet(model.astype(np.float64).classify, enc, refexit.GlobalPastFuture(-1.0), trace=True)
        scores = np.array([[t.score for t in s if t.layer < L] for s in tr.per_layer]).reshape(len(tr.per_layer), L - 1)
        if L > 1 and data.draw(st.booleans(), label="per_layer"):
            thr = [cut_between(data.draw, scores[:, i], f"cut {i + 1}") for i in range(L - 1)]
        else:
            thr = cut_between(data.draw, scores, "cut")
        got = compare(cm, model, refexit.GlobalPastFuture(thr), enc, f"config {cfg} {kind} gpf pool {pool}")
        assert_alone_as_in_batch(cm, enc, got)
        assert cm.manifest["gpf_pool"] == pool

    check()


@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_compiled_gpf_mean_on_other_instruction_sets(isa, build_root):
    """The mean-pooled GPF on an instruction set other than the default: per-layer thresholds at the
    medians of the oracle's entropies, on a batch with lengths 1..MAX_LEN (padding in every row but one)."""
    model, cm = get("c", "mean_linear", build_root, "mean", isa)
    assert cm.ffi.string(getattr(cm.lib, f"{cm.prefix}_isa")()).decode() == isa
    rng = np.random.default_rng(3)
    lengths = np.array([MAX_LEN, 1, 9, 4, 2, 13])
    mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int64)
    enc = {"input_ids": rng.integers(0, model.config.vocab_size, mask.shape) * mask, "attention_mask": mask,
           "token_type_ids": rng.integers(0, 2, mask.shape) * mask}
    tr = quiet(model.astype(np.float64).classify, enc, refexit.GlobalPastFuture(-1.0), trace=True)
    scores = np.array([[t.score for t in s[:-1]] for s in tr.per_layer])
    got = compare(cm, model, refexit.GlobalPastFuture(np.median(scores, axis=0).tolist()), enc, f"{isa} gpf mean")
    assert_alone_as_in_batch(cm, enc, got)


def test_compiled_gpf_settings_and_bad_input(build_root):
    model, cm = get("a", "mean_linear", build_root)
    with pytest.raises(InputError, match="NaN"):
        cm.set_threshold(float("nan"))
    with pytest.raises(InputError, match="compiled for the gpf policy"):
        cm.set_policy(refexit.Entropy(0.5))
    with pytest.warns(refexit.ExitWarning):
        cm.set_policy(refexit.GlobalPastFuture(2.0))                        # always fires at layer 1
    enc = {"input_ids": np.array([[2, 5, 9, 3]]), "attention_mask": np.ones((1, 4), np.int64)}
    assert cm.classify(enc).exit_layers.tolist() == [1]
    assert cm.manifest["has_gpf"] and len(cm.manifest["flops"]["gpf"]) == model.num_layers - 1
    # a model without the parameters, or with misshaped ones, cannot be compiled for gpf
    bare = random_model(num_layers=2, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2)
    with pytest.raises(InputError, match="Global Past-Future"):
        refexit_compile(bare, refexit.GlobalPastFuture(0.5), build_root / "gpf_bare")
    bad = random_model(num_layers=3, hidden=12, heads=2, intermediate=16, num_labels=2, seed=2, gpf=True)
    bad.exits.gpf["imit.w"] = bad.exits.gpf["imit.w"][:2]
    with pytest.raises(InputError, match="gpf.imit.w"):
        refexit_compile(bad, refexit.GlobalPastFuture(0.5), build_root / "gpf_bad")
    # another policy on a model with the parameters: they stay in the blob, unused
    other = refexit_compile(model, refexit.Entropy(0.5), build_root / "gpf_other")
    assert other.manifest["has_gpf"]


def test_compiled_gpf_pool_in_the_manifest(build_root, tmp_path):
    """The compiled library records its pooling; load_compiled refuses an unknown value, naming it; the
    mean-pooled library reopens as it was compiled."""
    import codegen
    import shutil
    model, cm = get("a", "mean_linear", build_root, "mean")
    assert cm.manifest["gpf_pool"] == "mean" and "gpf=yes (pool mean)" in (build_root / "gpf_a_mean_linear_mean"
                                                                           / "gpf_a_mean_linear_mean.c").read_text()
    again = codegen.load_compiled(build_root / "gpf_a_mean_linear_mean")
    enc = {"input_ids": np.array([[2, 5, 9, 3, 0], [2, 7, 3, 0, 0]]), "attention_mask": np.array([[1] * 4 + [0], [1] * 3 + [0] * 2])}
    pol = refexit.GlobalPastFuture(0.3)
    quiet(again.set_policy, pol)
    quiet(cm.set_policy, pol)
    np.testing.assert_array_equal(again.classify(enc).logits, cm.classify(enc).logits)
    bad = tmp_path / "bad"
    shutil.copytree(build_root / "gpf_a_mean_linear_mean", bad)
    man = next(bad.glob("*.manifest.json"))
    m = json.loads(man.read_text())
    man.write_text(json.dumps(dict(m, gpf_pool="max")))
    with pytest.raises(CheckpointError, match=r"'gpf_pool'.*'max'"):
        codegen.load_compiled(bad)
