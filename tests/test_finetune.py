"""Fine-tuning (refexit.train.finetune): the objectives' gradients against finite differences, the
optimiser and schedule against PyTorch's, repeatable runs, resume, the output folder (refexit and
transformers read it and agree with the training forward), and bad settings."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

import refexit
from refexit import synthetic
from refexit.data import Split
from refexit.errors import InputError
from refexit.train import backward as BW
from refexit.train import finetune as FT
from refexit.train.optim import AdamW, clip_grad_norm, linear_schedule, no_decay

WORDS = ["good", "bad", "fine", "awful", "great", "poor", "nice", "sad"]
POSITIVE = {"good", "fine", "great", "nice"}


def toy(n, seed, regression=False):
    """Texts of the random model's vocabulary whose label is whether most words are positive
    (regression: the fraction of positive words)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        ws = list(rng.choice(WORDS, rng.integers(1, 7)))
        frac = sum(w in POSITIVE for w in ws) / len(ws)
        texts.append(" ".join(ws))
        labels.append(frac if regression else int(frac >= 0.5))
    if regression:                    # refexit.data.Split holds class indices: a plain object for floats
        return SimpleNamespace(texts=texts, labels=np.array(labels, np.float32))
    return Split(texts, np.array(labels, np.int64))


@pytest.fixture(scope="module")
def tiny():
    return synthetic.random_model(num_layers=3, hidden=16, heads=2, intermediate=24, num_labels=2,
                                  head_kind="shared_pooler", lte=False, ponder=False)


def cfg(**kw):
    base = dict(epochs=2, lr=3e-3, batch_size=16, max_length=16, seed=0, patience=0)
    return FT.FinetuneConfig(**{**base, **kw})


# ---------------------------------------------------------------- objectives: gradients
@pytest.mark.parametrize("objective", FT.OBJECTIVES)
@pytest.mark.parametrize("regression", [False, True])
def test_objective_gradients(tiny, objective, regression):
    """Loss of every objective through the whole model (float64, dropout on with fixed masks):
    the backward's gradient of every parameter (ELBERT's weights, PALBERT's MLP included) against
    central finite differences along a random direction."""
    from test_backward import check, directional
    c = cfg(objective=objective, heads="pooler_linear" if objective == "joint" else "shared_pooler")
    C = 1 if regression else 2
    P, kinds = FT.initial_params(tiny, C, c, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    P = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float64) for k, v in P.items()}   # away from the init
    spec = BW.Spec.of(tiny.config, kinds, hidden_dropout=0.1, attn_dropout=0.1)
    data = FT.encode(tiny.tokenizer, toy(6, 3, regression), 12, regression)
    ids, types, mask, y = data.batch(np.arange(6))

    teacher = BW.model_fwd(P, spec, ids, types, mask, np.random.default_rng(7))[0][tiny.num_layers - 1].copy()

    def loss(grad=False):             # distill: the teacher is a constant (RomeBERT detaches it)
        z, feats, cache = BW.model_fwd(P, spec, ids, types, mask, np.random.default_rng(7))
        val, dz, dfeat, own = FT.objective_loss(c, z, feats, y, P, tiny.num_layers, regression, teacher)
        if not grad:
            return val
        g = BW.model_bwd(dz, cache, P, dfeat)
        g.update(own)
        return val, g

    _, grads = loss(True)
    assert set(grads) == set(P)
    # atol: the key biases' gradient is 0 (a softmax shift); their slope is rounding noise ~1e-9
    check(directional(loss, P, grads), rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- optimiser
def test_length_batches():
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    a = FT.length_batches(lengths, 32, np.random.default_rng(5), bucket=4)
    b = FT.length_batches(lengths, 32, np.random.default_rng(5), bucket=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    padded = lambda bs: sum(len(i) * lengths[i].max() for i in bs)          # noqa: E731
    plain = FT.length_batches(lengths, 32, np.random.default_rng(5), bucket=1)
    assert padded(a) < 0.85 * padded(plain)                 # bucketing removes padding
    assert padded(FT.length_batches(lengths, 32, np.random.default_rng(5), bucket=50)) < 1.05 * lengths.sum()
    assert all(np.all(np.diff(lengths[i]) >= 0) for i in a)


def test_schedule_and_no_decay():
    assert [linear_schedule(s, 10, 2) for s in (0, 1, 2, 6, 10, 11)] == [0, 0.5, 1, 0.5, 0, 0]
    assert no_decay("layers.0.attn.q.b") and no_decay("emb.ln.w") and no_decay("layers.3.ffn.ln.w")
    assert not no_decay("layers.0.attn.q.w") and not no_decay("emb.word") and not no_decay("heads.2.fc.w")


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch", reason="torch not installed (optional: compares with torch.optim.AdamW)")
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    rng = np.random.default_rng(0)
    P = {"a.w": rng.normal(size=(4, 3)), "a.b": rng.normal(size=4), "x.ln.w": rng.normal(size=3)}
    T = {k: torch.tensor(v, requires_grad=True) for k, v in P.items()}
    opt = AdamW(P, 1e-2, weight_decay=0.1)
    topt = torch.optim.AdamW([{"params": [T["a.w"]], "weight_decay": 0.1},
                              {"params": [T["a.b"], T["x.ln.w"]], "weight_decay": 0.0}], lr=1e-2)
    sched = transformers.get_linear_schedule_with_warmup(topt, 2, 6)
    for step in range(6):
        g = {k: rng.normal(size=v.shape) * 3 for k, v in P.items()}
        for k, t in T.items():
            t.grad = torch.tensor(g[k])
        norm = clip_grad_norm(g, 1.0)
        tnorm = torch.nn.utils.clip_grad_norm_(list(T.values()), 1.0)
        assert norm == pytest.approx(float(tnorm), rel=1e-12)
        opt.step(P, g, linear_schedule(step, 6, 2))
        topt.step()
        sched.step()
        for k in P:
            np.testing.assert_allclose(P[k], T[k].detach().numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- runs
def test_learns_and_is_repeatable(tiny):
    tr, dv = toy(300, 1), toy(100, 2)
    a = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=3), log=lambda m: None)
    b = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=3), log=lambda m: None)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    losses = [r["train_loss"] for r in a.info["log"]]
    assert losses[-1] < losses[0]
    majority = max(np.mean(dv.labels), 1 - np.mean(dv.labels))
    assert a.info["per_exit"]["dev"][3] > majority + 0.05
    assert a.info["exit_layers"] == [3] and a.info["best_epoch"] >= 1


@pytest.mark.parametrize("objective", ["pabee", "palbert", "elbert", "distill", "romebert", "joint"])
def test_joint_objectives_train_every_exit(tiny, objective):
    tr, dv = toy(200, 1), toy(60, 2)
    res = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(objective=objective), log=lambda m: None)
    assert res.info["exit_layers"] == [1, 2, 3]
    assert set(res.info["per_exit"]["dev"]) == {1, 2, 3}
    if objective == "palbert":
        assert not np.array_equal(res.params["ponder.hid.w"],
                                  FT.initial_params(tiny, 2, cfg(objective="palbert"), np.random.default_rng(0))[0]["ponder.hid.w"])


def test_head_lr_moves_only_the_exit_heads(tiny):
    """head_lr: the exit heads of layers 1..L-1 train at their own rate. With the backbone's lr
    tiny and no decay, one epoch leaves the backbone and final classifier where they started
    (AdamW moves each parameter by at most ~lr per step) and moves the exit heads."""
    tr, dv = toy(64, 1), toy(16, 2)
    c = cfg(objective="pabee", epochs=1, lr=1e-9, head_lr=1e-2, weight_decay=0.0, warmup_ratio=0.0)
    start = FT.initial_params(tiny, 2, c, np.random.default_rng(c.seed))[0]
    res = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], c, log=lambda m: None)
    moved = {k: float(np.max(np.abs(res.params[k] - start[k]))) for k in start}
    steps = 4                                                 # 64 texts / batch 16
    exit_heads = [k for k in moved if k.startswith(("heads.0.", "heads.1."))]
    assert exit_heads and all(moved[k] > 1e-3 for k in exit_heads), moved
    assert all(v <= steps * 1e-9 * 1.01 for k, v in moved.items() if k not in exit_heads), moved


def test_resume_continues_exactly(tiny, tmp_path, monkeypatch):
    tr, dv = toy(120, 1), toy(40, 2)
    full = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=2), log=lambda m: None)
    calls = {"n": 0}
    real = FT.length_batches

    def interrupted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt               # killed at the start of epoch 2
        return real(*a, **kw)

    monkeypatch.setattr(FT, "length_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=2), out_dir=tmp_path, log=lambda m: None)
    monkeypatch.setattr(FT, "length_batches", real)
    assert (tmp_path / FT.CHECKPOINT).is_file()
    res = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=2), out_dir=tmp_path, resume=True, log=lambda m: None)
    assert all(np.array_equal(res.params[k], full.params[k]) for k in full.params)
    assert [r["train_loss"] for r in res.info["log"]] == [r["train_loss"] for r in full.info["log"]]
    with pytest.raises(InputError, match="other settings"):
        FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=2, lr=1e-3), out_dir=tmp_path, resume=True)
    with pytest.raises(InputError, match="no checkpoint"):
        FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(), out_dir=tmp_path / "none", resume=True)


# ---------------------------------------------------------------- output folder
@pytest.mark.parametrize("objective,regression", [("final", False), ("pabee", False), ("palbert", False),
                                                  ("final", True)])
def test_output_folder_loads(tiny, tmp_path, objective, regression):
    tr, dv = toy(100, 1, regression), toy(30, 2, regression)
    res = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(objective=objective, epochs=1), log=lambda m: None)
    out = FT.save(res, tiny, tmp_path / "m")
    for f in ("config.json", "model.safetensors", "vocab.txt", "finetune.json"):
        assert (out / f).is_file()
    assert (out / "exits.safetensors").is_file() == (objective != "final")
    m = refexit.load(out)
    assert m.num_labels == (1 if regression else 2)
    cfgj = json.loads((out / "config.json").read_text())
    assert cfgj["problem_type"] == ("regression" if regression else "single_label_classification")
    enc = m.tokenizer(dv.texts[:12])
    want = FT.predict(res.params, BW.Spec.of(tiny.config, res.kinds), FT.encode(m.tokenizer, SimpleNamespace(
        texts=dv.texts[:12], labels=dv.labels[:12]), 64, regression))
    for layer in res.info["exit_layers"]:
        got = m.classify(enc, refexit.Static(layer)).logits
        np.testing.assert_allclose(got, want[layer - 1], rtol=1e-5, atol=1e-5)
    if objective == "palbert":
        assert m.exits.ponder is not None


def test_transformers_loads_the_output(tiny, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed (optional)")
    transformers = pytest.importorskip("transformers", reason="transformers not installed (optional)")
    tr, dv = toy(100, 1), toy(30, 2)
    res = FT.fine_tune(tiny, tr, dv, ["neg", "pos"], cfg(epochs=1), log=lambda m: None)
    out = FT.save(res, tiny, tmp_path / "m")
    hf = transformers.BertForSequenceClassification.from_pretrained(str(out), attn_implementation="eager").eval()
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    m = refexit.load(out)
    enc = m.tokenizer(dv.texts[:10])
    with torch.no_grad():
        z = hf(input_ids=torch.from_numpy(enc.input_ids), attention_mask=torch.from_numpy(enc.attention_mask),
               token_type_ids=torch.from_numpy(enc.token_type_ids)).logits.numpy()
    np.testing.assert_allclose(m.classify(enc).logits, z, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- bad settings
@pytest.mark.parametrize("bad,match", [({"objective": "nope"}, "unknown objective"), ({"heads": "x"}, "exit head kind"),
                                       ({"lr": float("nan")}, "lr must be"), ({"epochs": 0}, "epochs"),
                                       ({"hidden_dropout": 1.0}, "hidden_dropout"), ({"batch_size": 2.5}, "batch_size"),
                                       ({"head_lr": 0.0}, "head_lr"), ({"head_lr": float("inf")}, "head_lr")])
def test_bad_settings(tiny, bad, match):
    with pytest.raises(InputError, match=match):
        FT.fine_tune(tiny, toy(10, 1), toy(5, 2), ["neg", "pos"], cfg(**bad))


def test_bad_labels(tiny):
    tr = toy(10, 1)
    tr.labels[3] = 5
    with pytest.raises(InputError, match="class indices"):
        FT.fine_tune(tiny, tr, toy(5, 2), ["neg", "pos"], cfg())


def test_cli_fine_tune(tmp_path, capsys):
    """`refexit fine-tune` end to end on a tiny saved model and a user's CSV (refexit.tables)."""
    from refexit import tables
    from refexit.cli import main as cli
    model_dir = synthetic.save_model(synthetic.random_model(num_layers=2, hidden=16, heads=2, intermediate=24,
                                                            lte=False, ponder=False), tmp_path / "base",
                                     with_exits=False)
    names = ["neg", "pos"]
    rows = [{"text": t, "label": names[y], "split": split}
            for split, sp in (("train", toy(64, 1)), ("dev", toy(20, 2)), ("test", toy(20, 3)))
            for t, y in zip(sp.texts, sp.labels)]
    tables.write_rows(tmp_path / "toy.csv", rows)
    rc = cli.main(["fine-tune", str(model_dir), "--data", str(tmp_path / "toy.csv"), "--split-column", "split",
                   "-o", str(tmp_path / "ft"), "--epochs", "1", "--objective", "pabee", "--lr", "3e-3",
                   "--max-length", "16"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "test accuracy" in out.out and "tokens/s" in out.err and "ETA" in out.err
    assert (tmp_path / "ft" / "exits.safetensors").is_file()
    rc = cli.main(["classify", str(tmp_path / "ft"), "good nice"])
    assert rc == 0


def test_demo_fine_tunes_once_and_says_subset(tmp_path, capsys):
    """refexit demo's fine-tuning step: trains on the (subset) training split, says it is a subset,
    and reuses the cached folder on the next run."""
    from refexit.cli import demo
    model_dir = synthetic.save_model(synthetic.random_model(num_layers=2, hidden=16, heads=2, intermediate=24,
                                                            lte=False, ponder=False), tmp_path / "base",
                                     with_exits=False)
    from refexit import data
    ds = data.Dataset("toy", ["neg", "pos"], toy(40, 1), toy(12, 2), toy(12, 3))
    args = SimpleNamespace(data="toy", full=False, seed=0, retrain=False, ft_epochs=1, max_length=16)
    path = demo._fine_tune_or_load(model_dir, ds, args, tmp_path / "out", full_size=400)
    said = capsys.readouterr().out
    assert "a subset of 40 of the 400 training examples" in said and "fine-tuned: dev accuracy" in said
    assert refexit.load(path).num_labels == 2 and not (path / FT.CHECKPOINT).exists()
    assert demo._fine_tune_or_load(model_dir, ds, args, tmp_path / "out", full_size=400) == path
    assert "cached fine-tuned model" in capsys.readouterr().out
