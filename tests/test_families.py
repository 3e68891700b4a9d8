"""The model families beyond BERT (refexit/arch.py) against Hugging Face transformers, through the
golden files of tools/make_golden.py (families_golden: tiny random RoBERTa, DistilBERT with
sinusoidal positions, ALBERT and ELECTRA with embedding_size != hidden_size), their checkpoint
errors, and exit training on each."""
import json
import shutil

import numpy as np
import pytest

import refexit
from conftest import GOLDEN, assert_close
from refexit import arch, safetensors_io
from refexit.errors import CheckpointError, ConfigError
from refexit.model import Model
from refexit.tokenizers.wordpiece import Tokenizer
from refexit.train import exits as T
from refexit.train import features as F
from test_golden import check_same_tokens, encoding

FAMILIES = ["roberta", "distilbert", "albert", "electra"]


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request):
    return request.param


def golden(fam):
    return np.load(GOLDEN / f"{fam}_golden.npz")


def copy_family(fam, tmp_path):
    dst = tmp_path / fam
    shutil.copytree(GOLDEN / fam, dst)
    return dst


def edit_tensors(folder, fn):
    tensors, meta = safetensors_io.read(folder / "model.safetensors")
    fn(tensors)
    safetensors_io.write(folder / "model.safetensors", tensors, meta)


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------- the oracle equals HF
def test_family_matches_transformers(fam):
    """The same bounds as BERT's golden test (test_golden.test_sequence_classification_checkpoint):
    hidden states 1e-6 and logits 1e-9 in float64, logits 1e-5 in float32 against HF float32."""
    z = golden(fam)
    model = refexit.load(GOLDEN / fam)
    assert model.config.model_type == fam and model.label_names == ["neg", "neu", "pos"]
    if model.tokenizer:                                 # the WordPiece families: ids from texts
        check_same_tokens(model, z)
    enc = encoding(z)
    m64 = model.astype(np.float64)
    hs = m64.hidden_states(enc)
    assert len(hs) == model.num_layers + 1 == len(z["hidden_f64"])
    for i, h in enumerate(hs):
        assert_close(h, z["hidden_f64"][i], atol=1e-6, what=f"{fam} hidden {i}")
    r64 = m64.classify(enc)
    assert_close(r64.logits, z["logits_f64"], atol=1e-9, what=f"{fam} logits float64")
    r32 = model.classify(enc)
    assert r32.logits.dtype == np.float32
    assert_close(r32.logits, z["logits_f32"], atol=1e-5, what=f"{fam} logits float32")
    assert np.all(r64.exit_layers == model.num_layers)


def test_family_quirks_are_read_from_the_config():
    r, d, a, e = (refexit.load(GOLDEN / f).config for f in FAMILIES)
    assert (r.position_offset, r.max_positions, r.type_vocab_size, r.classifier_act) == (2, 32, 1, "tanh")
    assert (d.token_types, d.sinusoidal, d.classifier_act, d.hidden_size, d.layer_norm_eps) == \
        (False, True, "relu", 40, 1e-12)
    assert (a.shared_layers, a.embedding_size, a.hidden_size, a.hidden_act) == (True, 24, 40, "gelu_new")
    assert (e.embedding_size, e.classifier_act, e.shared_layers) == (24, "gelu", False)


def test_roberta_positions_skip_pad_ids_inside_a_row():
    """create_position_ids_from_input_ids: a real token equal to the pad id takes position
    padding_idx and the count resumes after it (the golden batch has one, row 1)."""
    c = refexit.load(GOLDEN / "roberta").config
    ids = np.array([0, 7, 1, 9, 2])
    assert arch.position_ids(ids, c).tolist() == [2, 3, 1, 4, 5]
    assert golden("roberta")["input_ids"][1, 5] == c.pad_token_id


def test_xlm_roberta_falls_out(tmp_path):
    folder = copy_family("roberta", tmp_path)
    edit_config(folder, model_type="xlm-roberta", architectures=["XLMRobertaForSequenceClassification"])
    z = golden("roberta")
    m = refexit.load(folder)
    assert m.config.model_type == "xlm-roberta"
    assert_close(m.astype(np.float64).classify(encoding(z)).logits, z["logits_f64"], atol=1e-9, what="xlm-r")


def test_distilbert_ignores_token_types():
    z = golden("distilbert")
    m = refexit.load(GOLDEN / "distilbert")
    enc = encoding(z)
    assert enc["token_type_ids"].max() == 1                 # the pair row: the tokenizer's types
    zeros = dict(enc, token_type_ids=np.zeros_like(enc["token_type_ids"]))
    assert np.array_equal(m.classify(enc).logits, m.classify(zeros).logits)
    assert "emb.type" not in m.weights


def test_distilbert_sinusoidal_table_and_its_absence(tmp_path):
    """The saved table is HF's sinusoidal one; a checkpoint without it gets it from the config."""
    m = refexit.load(GOLDEN / "distilbert")
    assert_close(m.weights["emb.pos"], arch.sinusoidal_table(64, 40), atol=0, what="sinusoidal table")
    folder = copy_family("distilbert", tmp_path)
    edit_tensors(folder, lambda t: t.pop("distilbert.embeddings.position_embeddings.weight"))
    z = golden("distilbert")
    assert_close(refexit.load(folder).astype(np.float64).classify(encoding(z)).logits, z["logits_f64"],
                 atol=1e-9, what="regenerated sinusoidal table")
    edit_config(folder, sinusoidal_pos_embds=False)
    with pytest.raises(CheckpointError, match="distilbert.embeddings.position_embeddings.weight"):
        refexit.load(folder)


def test_albert_has_one_shared_layer():
    m = refexit.load(GOLDEN / "albert")
    assert sorted({k.split(".")[1] for k in m.weights if k.startswith("layers.")}) == ["0"]
    assert m.num_layers == 3 and all(p is m._layers[0] for p in m._layers)
    assert m.weights["emb.word"].shape == (120, 24) and m.weights["emb.proj.w"].shape == (40, 24)


def test_unsupported_model_types_name_the_supported_list(tmp_path):
    folder = copy_family("roberta", tmp_path)
    for mt in ("deberta-v2", "gpt2"):
        edit_config(folder, model_type=mt)
        with pytest.raises(ConfigError, match=rf"'model_type': '{mt}' is not supported \(supported: bert, "
                                              rf"roberta, xlm-roberta, distilbert, albert, electra\)"):
            refexit.load(folder)


# ---------------------------------------------------------------- bad checkpoints, per family
A_LAYER_TENSOR = {
    "roberta": "roberta.encoder.layer.1.attention.self.key.weight",
    "distilbert": "distilbert.transformer.layer.1.attention.k_lin.weight",
    "albert": "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.key.weight",
    "electra": "electra.encoder.layer.1.attention.self.key.weight",
}
CLASSIFIER_TENSOR = {"roberta": "classifier.dense.weight", "distilbert": "pre_classifier.weight",
                     "albert": "classifier.weight", "electra": "classifier.out_proj.weight"}
EMBEDDING = {"roberta": "roberta.embeddings.word_embeddings.weight",
             "distilbert": "distilbert.embeddings.word_embeddings.weight",
             "albert": "albert.embeddings.word_embeddings.weight",
             "electra": "electra.embeddings.word_embeddings.weight"}


@pytest.mark.parametrize("what", ["missing", "misshaped", "extra", "classifier", "embedding"])
def test_bad_checkpoints_name_the_tensor(fam, what, tmp_path):
    folder = copy_family(fam, tmp_path)
    name = {"missing": A_LAYER_TENSOR, "misshaped": A_LAYER_TENSOR, "classifier": CLASSIFIER_TENSOR,
            "embedding": EMBEDDING}.get(what, {})
    name = name.get(fam, f"{fam}.encoder.surprise.weight")
    if what in ("missing", "classifier"):
        edit_tensors(folder, lambda t: t.pop(name))
    elif what == "extra":
        edit_tensors(folder, lambda t: t.__setitem__(name, np.zeros(3, np.float32)))
    else:
        edit_tensors(folder, lambda t: t.__setitem__(name, t[name][:, :-1].copy()))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        refexit.load(folder)


def test_albert_and_electra_projection_errors(tmp_path):
    a = copy_family("albert", tmp_path)
    edit_tensors(a, lambda t: t.pop("albert.encoder.embedding_hidden_mapping_in.bias"))
    with pytest.raises(CheckpointError, match=r"albert\.encoder\.embedding_hidden_mapping_in\.bias"):
        refexit.load(a)
    e = copy_family("electra", tmp_path)
    edit_config(e, embedding_size=40)         # = hidden_size: no projection expected, the file has one
    with pytest.raises(CheckpointError, match=r"electra\.embeddings_project\.weight|embedding_size"):
        refexit.load(e)
    edit_config(e, embedding_size=32)
    with pytest.raises(CheckpointError, match=r"'embedding_size' is 32 but tensor "
                                              r"'electra\.embeddings\.word_embeddings\.weight'"):
        refexit.load(e)


def test_albert_layer_groups_other_than_one_are_refused(tmp_path):
    a = copy_family("albert", tmp_path)
    edit_config(a, num_hidden_groups=2)
    with pytest.raises(ConfigError, match="num_hidden_groups"):
        refexit.load(a)
    edit_config(a, num_hidden_groups=1)
    edit_tensors(a, lambda t: t.__setitem__(
        "albert.encoder.albert_layer_groups.0.albert_layers.1.ffn.bias", t[
            "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.bias"]))
    with pytest.raises(CheckpointError, match=r"albert_layers\.1\.ffn\.bias"):
        refexit.load(a)


def test_roberta_pad_id_must_leave_positions(tmp_path):
    r = copy_family("roberta", tmp_path)
    edit_config(r, pad_token_id=40)           # offset 41 of 34 position embeddings
    with pytest.raises(ConfigError, match="position offset"):
        refexit.load(r)


# ---------------------------------------------------------------- exits train on each family
def with_ids_tokenizer(model):
    """RoBERTa and ALBERT come without a tokenizer here (their BPE / Unigram tokenizers are not
    read by refexit yet): a WordPiece stand-in over made-up pieces whose special tokens sit at the
    family's ids, so the text-based training code has ids to work on."""
    if model.tokenizer:
        return model
    c = model.config
    chars = list("abcdefghijklmnopqrstuvwxyz")
    specials = {0: "[CLS]", c.pad_token_id: "[PAD]", 2: "[SEP]", 3: "[UNK]", 4: "[MASK]"} \
        if c.model_type == "roberta" else dict(enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    vocab = [specials[i] for i in range(5)] + chars + ["##" + ch for ch in chars]
    vocab += [a + b for a in chars for b in chars][:c.vocab_size - len(vocab)]
    tok = Tokenizer(vocab, max_length=c.max_length, pad_token_id=c.pad_token_id)
    return Model(c, model.weights, model.exits, model.label_names, tok, model.source)


@pytest.mark.parametrize("fam, kind", [(f, "mean_linear") for f in FAMILIES] +
                         [("albert", "pooler_linear"), ("albert", "shared_pooler")])
def test_exits_train_on_each_family(fam, kind, tmp_path):
    """Every family trains mean_linear exits; the heads that share the model's pooler need one,
    which of these only ALBERT has (RoBERTa's, DistilBERT's and ELECTRA's sequence classifiers have
    their own first Linear instead; pooler_linear heads start from a fresh pooler there and
    shared_pooler / scalar_mix are refused early: tests/test_paper_checkpoints.py)."""
    m = with_ids_tokenizer(refexit.load(GOLDEN / fam))
    rng = np.random.default_rng(0)
    words = [w for w in m.tokenizer.vocab[5:] if not w.startswith("##")]
    texts = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(120)]
    feats = F.extract(m, texts, 32, use_cache=False, progress=False)
    assert feats.cls.shape == (m.num_layers, 120, m.config.hidden_size)
    y = (feats.cls[0, :, 0] > np.median(feats.cls[0, :, 0])).astype(int) + \
        (feats.cls[0, :, 1] > np.median(feats.cls[0, :, 1])).astype(int)            # 3 classes
    tr, dv = np.arange(120) < 90, np.arange(120) >= 90
    sub = lambda f, k: F.Features(f.cls[:, k], f.mean[:, k], f.lengths[k])   # noqa: E731
    res = T.train_exits(m, sub(feats, tr), y[tr], sub(feats, dv), y[dv], m.label_names, kind=kind,
                        cfg=T.TrainConfig(max_epochs=5, batch_size=16))
    assert res.exits.heads[-1] is m.exits.heads[-1] or not res.include_final   # the family's classifier stays
    path = T.save(res, tmp_path / "exits")
    loaded = refexit.load(GOLDEN / fam, exits=path)
    assert all(h is not None and h.kind == kind for h in loaded.heads[:-1])
    enc = m.tokenizer(texts[:16], max_length=32)
    full = loaded.classify(enc)
    assert np.array_equal(full.logits, m.classify(enc).logits)               # final = HF classifier
    early = loaded.classify(enc, refexit.Static(1))
    assert np.all(early.exit_layers == 1)
    # the exit head after layer 1 reads the first token (<s> / [CLS]) of layer 1's states
    x1 = loaded.layer(0, loaded.embed(*loaded.rows(enc)[0]))
    z, _ = loaded.head(1, x1)
    assert_close(early.logits[0], z, atol=0, what="exit head on layer 1")


def test_folders_without_a_tokenizer_say_so(tmp_path):
    m = refexit.load(GOLDEN / "roberta")
    assert not m.tokenizer
    with pytest.raises(ConfigError, match="roberta folder has no tokenizer refexit reads.*token ids"):
        m.tokenizer(["a text"])
    from refexit.cli.main import main
    assert main(["classify", str(GOLDEN / "albert"), "a text"]) != 0


@pytest.mark.parametrize("fam", ["roberta", "albert"])
def test_tokenizer_json_folders_tokenize(fam, tmp_path):
    """A RoBERTa / ALBERT folder with a tokenizer.json (the golden ones of tests/golden/tokenizers,
    1000 tokens: the model's embedding table grown to match) tokenizes texts with
    refexit.tokenizers.load_tokenizer; classifying the texts is classifying its ids."""
    folder = copy_family(fam, tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(GOLDEN / "tokenizers" / fam / f, folder / f)
    key = EMBEDDING[fam]

    def grow(t):
        rng = np.random.default_rng(0)
        t[key] = np.concatenate([t[key], rng.normal(0, 0.5, (1000 - len(t[key]), t[key].shape[1]))]).astype(np.float32)
    edit_tensors(folder, grow)
    edit_config(folder, vocab_size=1000)
    m = refexit.load(folder)
    assert m.tokenizer and type(m.tokenizer).__name__ == "TokenizerJson"
    texts = ["hello world", "the movie was great, really"]
    rows = [m.tokenizer.encode(t, None, 32)[0] for t in texts]
    enc = m.tokenizer(texts, max_length=32)
    assert [list(r[:len(x)]) for r, x in zip(np.asarray(enc.input_ids), rows)] == rows
    got = m.classify(enc).logits
    for t, ids in enumerate(rows):
        one = m.classify({"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})
        np.testing.assert_array_equal(one.logits[0], got[t])
