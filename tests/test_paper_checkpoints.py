"""The papers' own early-exit checkpoints of the non-BERT families (refexit/arch.py exit_name), the
embedding projection in every FLOPs count, and the early refusal of pooler heads on families
without a pooler.

Golden files (tools/make_golden.py --only papers): a random transformers backbone saved with exit
tensors named as PABEE's ALBERT, DeeBERT's RoBERTa and ELBERT's code name them, every exit head's
logits and the exit decisions of the papers' own inference loops (batch size 1) in PyTorch float64.
"""
import shutil

import numpy as np
import pytest

import refexit
from conftest import GOLDEN, assert_close
from refexit import arch, safetensors_io
from refexit.errors import CheckpointError, InputError
from refexit.train import evaluate as E
from refexit.train import exits as T
from refexit.train import features as F
from test_families import with_ids_tokenizer

PAPERS = ["pabee_albert", "deebert_roberta", "elbert_albert"]
MARGIN = 1e-4          # design.md: exit decisions exact unless the oracle's margin is below this


def golden(name):
    return np.load(GOLDEN / f"{name}_golden.npz")


def encoding(z):
    return {k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def copy_folder(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(GOLDEN / name, dst)
    return dst


def edit_tensors(folder, fn):
    tensors, meta = safetensors_io.read(folder / "model.safetensors")
    fn(tensors)
    safetensors_io.write(folder / "model.safetensors", tensors, meta)


def paper_policy(name, t):
    if name == "pabee_albert":
        return refexit.Patience(int(t))
    if name == "deebert_roberta":
        return refexit.Entropy(float(t))
    return refexit.NormEntropy(float(t), inclusive=False)          # ELBERT: normalised entropy, strict


# ---------------------------------------------------------------- the heads and the decisions
@pytest.mark.parametrize("name", PAPERS)
def test_paper_heads_load_as_the_papers_built_them(name):
    m = refexit.load(GOLDEN / name)
    L, heads = m.num_layers, m.heads
    assert L == 4 and all(h is not None for h in heads) and m.label_names == ["neg", "neu", "pos"]
    if name == "pabee_albert":                                     # classifiers.{i} over albert.pooler
        assert [h.kind for h in heads] == ["shared_pooler"] * L
    elif name == "deebert_roberta":                                # highways, then one Linear over the pooler
        assert [h.kind for h in heads] == ["pooler_linear"] * 3 + ["shared_pooler"]
        assert m.weights["pooler.w"].shape == (40, 40)
    else:                                                          # one exit layer shared by every layer
        assert [h.kind for h in heads] == ["shared_pooler"] * L
        assert all(np.array_equal(h.params["fc.w"], heads[0].params["fc.w"]) for h in heads)
    assert len(m._layers) == L and m.config.shared_layers == (name != "deebert_roberta")


@pytest.mark.parametrize("name", PAPERS)
def test_every_exit_head_equals_the_papers_forward(name):
    """Static(k) answers with the head after layer k: float64 against the papers' float64 logits."""
    z = golden(name)
    m64 = refexit.load(GOLDEN / name).astype(np.float64)
    enc = encoding(z)
    for k in range(1, m64.num_layers + 1):
        r = m64.classify(enc, refexit.Static(k))
        assert np.all(r.exit_layers == k)
        assert_close(r.logits, z["layer_logits"][k - 1], atol=1e-9, what=f"{name} head after layer {k}")


@pytest.mark.parametrize("name", PAPERS)
def test_exit_decisions_equal_the_papers_inference(name):
    z = golden(name)
    L = int(z["layer_logits"].shape[0])
    assert (z["exit_layers"] < L).any() and (z["exit_layers"] > 1).any()   # the golden decisions discriminate
    model = refexit.load(GOLDEN / name)
    enc = encoding(z)
    for m, atol in ((model.astype(np.float64), 1e-9), (model, 1e-5)):
        for t, want_layers, want_logits in zip(z["thresholds"], z["exit_layers"], z["exit_logits"]):
            res = m.classify(enc, paper_policy(name, t))
            sure = res.margins >= MARGIN
            assert sure.sum() >= len(sure) - 1, f"{name} {t}: margins {res.margins}"
            np.testing.assert_array_equal(res.exit_layers[sure], want_layers[sure], err_msg=f"{name} {t}")
            assert_close(res.logits[sure], want_logits[sure], atol=atol, what=f"{name} {t} exit logits")


# ---------------------------------------------------------------- bad files name the paper's tensor
def test_pabee_errors(tmp_path):
    f = copy_folder("pabee_albert", tmp_path)
    edit_tensors(f, lambda t: t.__setitem__("classifiers.1.weight", t["classifiers.1.weight"][:, :-1].copy()))
    with pytest.raises(CheckpointError, match=r"'classifiers\.1\.weight' has shape \[3, 39\], expected \[3, 40\]"):
        refexit.load(f)
    f = copy_folder("pabee_albert", tmp_path / "b")
    edit_tensors(f, lambda t: t.pop("albert.pooler.weight"))
    with pytest.raises(CheckpointError, match=r"albert\.pooler\.weight"):
        refexit.load(f)
    f = copy_folder("pabee_albert", tmp_path / "c")
    edit_tensors(f, lambda t: t.update({"classifiers.9.weight": t["classifiers.0.weight"],
                                        "classifiers.9.bias": t["classifiers.0.bias"]}))
    with pytest.raises(CheckpointError, match="layer index 9 but the model has 4 layers"):
        refexit.load(f)
    f = copy_folder("pabee_albert", tmp_path / "d")            # PALBERT's ponder classifier: refused by name
    edit_tensors(f, lambda t: t.update({"classifiers.cls_head.weight": t["classifiers.0.weight"]}))
    with pytest.raises(CheckpointError, match=r"classifiers\.cls_head\.weight.*PALBERT"):
        refexit.load(f)


def test_deebert_roberta_errors(tmp_path):
    f = copy_folder("deebert_roberta", tmp_path)
    key = "roberta.encoder.highway.1.pooler.dense.weight"
    edit_tensors(f, lambda t: t.__setitem__(key, t[key][:-1].copy()))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        refexit.load(f)
    f = copy_folder("deebert_roberta", tmp_path / "b")
    edit_tensors(f, lambda t: t.pop("roberta.encoder.highway.1.classifier.bias"))
    with pytest.raises(CheckpointError, match=r"exit head 1 \(pooler_linear\) lacks"):
        refexit.load(f)
    f = copy_folder("deebert_roberta", tmp_path / "c")         # RobertaClassificationHead's names beside it
    edit_tensors(f, lambda t: t.update({"classifier.dense.weight": t["roberta.pooler.dense.weight"],
                                        "classifier.dense.bias": t["roberta.pooler.dense.bias"]}))
    with pytest.raises(CheckpointError, match="both a one-Linear classifier"):
        refexit.load(f)
    f = copy_folder("deebert_roberta", tmp_path / "d")
    edit_tensors(f, lambda t: t.update({"classifier.out_proj.weight": t["classifier.weight"]}))
    with pytest.raises(CheckpointError, match="both map to 'classifier.w'"):
        refexit.load(f)
    f = copy_folder("deebert_roberta", tmp_path / "e")         # the final classifier needs the model's pooler
    edit_tensors(f, lambda t: t.pop("roberta.pooler.dense.weight"))
    with pytest.raises(CheckpointError, match=r"roberta\.pooler\.dense\.weight"):
        refexit.load(f)


def test_elbert_layouts(tmp_path):
    stem = "albert.encoder.exit_out_layer"
    for extra, match in ((f"{stem}.classifier1.weight", "use_fc2"),
                         ("albert.encoder.exit_out_layers.0.classifier.weight", "num_exit_layers"),
                         ("classifiers.0.weight", "a shared exit layer")):
        f = copy_folder("elbert_albert", tmp_path / extra)
        edit_tensors(f, lambda t: t.update({extra: t[f"{stem}.classifier.weight"],
                                            extra.replace("weight", "bias"): t[f"{stem}.classifier.bias"]}))
        with pytest.raises(CheckpointError, match=match):
            refexit.load(f)
    # use_out_pooler false: the shared exit layer's own pooler -> pooler_linear heads, one pooler for all
    f = copy_folder("elbert_albert", tmp_path / "own")
    rng = np.random.default_rng(0)
    own = {f"{stem}.pooler.weight": rng.normal(0, 0.2, (40, 40)).astype(np.float32),
           f"{stem}.pooler.bias": rng.normal(0, 0.1, 40).astype(np.float32)}
    edit_tensors(f, lambda t: t.update(own))
    m = refexit.load(f).astype(np.float64)
    assert [h.kind for h in m.heads] == ["pooler_linear"] * 4
    z = golden("elbert_albert")
    enc = encoding(z)
    ids, types = m.rows(enc)[0]
    x = m.embed(ids, types)
    for k in range(1, 5):
        x = m.layer(k - 1, x)
        pooled = np.tanh(own[f"{stem}.pooler.weight"].astype(np.float64) @ x[0] + own[f"{stem}.pooler.bias"])
        want = m.heads[0].params["fc.w"] @ pooled + m.heads[0].params["fc.b"]
        assert_close(m.classify({k2: v[:1] for k2, v in enc.items()}, refexit.Static(k)).logits[0], want,
                     atol=1e-12, what=f"own-pooler ELBERT head {k}")


# ---------------------------------------------------------------- FLOPs: the embedding projection
def flops_by_definition(c, n, L_run, head_flops):
    """2 x multiply-adds, written out from the architecture: the E -> H projection (ALBERT; ELECTRA
    with E != H), then per layer q, k, v, o (4 H^2), the feed-forward (2 H I) and attention scores and
    context (2 n^2 H multiply-adds), then the head."""
    H, I, E = c.hidden_size, c.intermediate_size, c.embedding_size
    proj = n * E * H if c.model_type == "albert" or (c.model_type == "electra" and E != H) else 0
    layer = n * (4 * H * H + 2 * H * I) + 2 * n * n * H
    return 2 * proj + 2 * L_run * layer + head_flops


@pytest.mark.parametrize("fam", ["albert", "electra", "roberta", "distilbert"])
def test_flops_count_the_embedding_projection(fam):
    m = with_ids_tokenizer(refexit.load(GOLDEN / fam))
    z = np.load(GOLDEN / f"{fam}_golden.npz")
    enc = encoding(z)
    L = m.num_layers
    res = m.classify(enc)
    n = enc["attention_mask"].sum(1)
    for b in range(len(n)):
        want = flops_by_definition(m.config, int(n[b]), L, m.heads[-1].flops(int(n[b])))
        assert res.flops[b] == res.full_flops[b] == want
    assert (m.embed_flops(10) > 0) == (fam in ("albert", "electra"))
    # the evaluate replay counts the same
    rng = np.random.default_rng(0)
    words = [w for w in m.tokenizer.vocab[5:] if not w.startswith("##")]
    texts = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(12)]
    out = E.LayerOutputs(m, F.extract(m, texts, 32, use_cache=False, progress=False))
    got, ref = E.simulate(m, refexit.Static(L), out), m.classify(m.tokenizer(texts, max_length=32))
    assert np.array_equal(got.flops, ref.flops) and np.array_equal(got.full_flops, ref.full_flops)


def test_paper_checkpoint_exit_flops():
    """An early exit spends the projection too: PABEE-ALBERT exiting after layer 1."""
    z = golden("pabee_albert")
    m = refexit.load(GOLDEN / "pabee_albert")
    res = m.classify(encoding(z), refexit.Static(1))
    n = z["attention_mask"].sum(1)
    for b in range(len(n)):
        assert res.flops[b] == flops_by_definition(m.config, int(n[b]), 1, m.heads[0].flops(int(n[b])))
    assert arch.embed_flops(m.config, 7) == 2 * 7 * 24 * 40


# ---------------------------------------------------------------- pooler heads on families without a pooler
@pytest.mark.parametrize("fam", ["distilbert", "electra", "roberta"])
@pytest.mark.parametrize("kind", ["shared_pooler", "scalar_mix"])
def test_train_exits_refuses_pooler_heads_before_any_feature(fam, kind, monkeypatch, capsys, tmp_path):
    from refexit.cli import data_args
    from refexit.cli.main import main

    def never(*a, **k):
        raise AssertionError("reached the data / feature extraction")
    monkeypatch.setattr(data_args, "load", never)
    monkeypatch.setattr(data_args, "extract", never)
    monkeypatch.setattr(F, "extract", never)
    rc = main(["train-exits", str(GOLDEN / fam), "--data", "sms_spam", "--heads", kind, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{kind} heads need the model's pooler, and this {fam} checkpoint has none" in err
    assert "train mean_linear, pooler_linear, fastbert heads instead" in err
    with pytest.raises(InputError, match=f"this {fam} checkpoint has none"):     # the Python API alike
        T.check_kind(refexit.load(GOLDEN / fam), kind)


def test_pooler_linear_heads_train_on_a_family_without_a_pooler(tmp_path):
    """A fresh pooler per head (no model pooler to copy): trains, saves and loads on ELECTRA."""
    m = with_ids_tokenizer(refexit.load(GOLDEN / "electra"))
    assert "pooler.w" not in m.weights
    rng = np.random.default_rng(1)
    words = [w for w in m.tokenizer.vocab[5:] if not w.startswith("##")]
    texts = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(60)]
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    y = (feats.cls[0, :, 0] > np.median(feats.cls[0, :, 0])).astype(int) * 2
    tr, dv = np.arange(60) < 45, np.arange(60) >= 45
    sub = lambda f, k: F.Features(f.cls[:, k], f.mean[:, k], f.lengths[k])   # noqa: E731
    res = T.train_exits(m, sub(feats, tr), y[tr], sub(feats, dv), y[dv], m.label_names, kind="pooler_linear",
                        extras=(), cfg=T.TrainConfig(max_epochs=3, batch_size=16))
    loaded = refexit.load(GOLDEN / "electra", exits=T.save(res, tmp_path / "exits"))
    assert loaded.heads[0].kind == "pooler_linear" and loaded.heads[-1].act == "gelu"
    assert np.all(loaded.classify(m.tokenizer(texts[:5], max_length=32), refexit.Static(1)).exit_layers == 1)


@pytest.mark.parametrize("name", ["deebert_roberta"] + [pytest.param(n, marks=pytest.mark.slow) for n in PAPERS[::2]])
def test_compiled_paper_checkpoint_takes_the_papers_decisions(name, tmp_path):
    """The compiled C of each paper's checkpoint (fp32) exits where the paper's forward does (one
    compile, ~14 s, in the default run; the two ALBERT ones under -m slow)."""
    import warnings

    import codegen
    z = golden(name)
    model = refexit.load(GOLDEN / name)
    enc = encoding(z)
    t = z["thresholds"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", refexit.ExitWarning)
        cm = codegen.compile_model(model, paper_policy(name, t), tmp_path / name, prefix=name,
                                   max_length=16, max_batch=8)
        res, ref = cm.classify(enc), model.astype(np.float64).classify(enc, paper_policy(name, t))
    sure = ref.margins >= MARGIN
    np.testing.assert_array_equal(res.exit_layers[sure], z["exit_layers"][0][sure], err_msg=name)
    assert_close(res.logits[sure], z["exit_logits"][0][sure], atol=1e-5, what=f"{name} compiled exit logits")
    assert np.array_equal(res.flops, model.classify(enc, paper_policy(name, t)).flops)
