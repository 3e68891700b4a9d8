"""Checkpoint loading: every layout, every error names what is wrong, never a NumPy traceback."""
import json
import shutil
import struct

import numpy as np
import pytest

import refexit
from refexit import safetensors_io
from refexit.checkpoint import save_exits
from refexit.synthetic import hf_names, random_model, save_model


@pytest.fixture(scope="module")
def model():
    return random_model(num_layers=3, hidden=12, heads=2, intermediate=20, num_labels=3, vocab_size=90,
                        head_kind="pooler_linear", seed=7)


@pytest.fixture()
def folder(model, tmp_path):
    return save_model(model, tmp_path / "m")


def texts_enc(m):
    return m.tokenizer(["abc de f", "ghij"])


def test_round_trip_through_hf_folder(model, folder):
    loaded = refexit.load(folder)
    enc = texts_enc(loaded)
    for pol in (None, refexit.Entropy(0.9), refexit.Learned(0.5), refexit.Ponder(0.5)):
        a, b = model.classify(enc, pol), loaded.classify(enc, pol)
        assert np.array_equal(a.logits, b.logits) and np.array_equal(a.exit_layers, b.exit_layers)
    assert loaded.label_names == model.label_names


def test_reader_agrees_with_official_safetensors(folder):
    st = pytest.importorskip("safetensors.numpy", reason="the official safetensors package is a test extra")
    ours, meta = safetensors_io.read(folder / "model.safetensors")
    theirs = st.load_file(str(folder / "model.safetensors"))
    assert set(ours) == set(theirs) and meta == {"format": "pt"}
    for k in ours:
        assert np.array_equal(ours[k], theirs[k])


def rewrite(folder, mutate):
    path = folder / "model.safetensors"
    tensors, meta = safetensors_io.read(path)
    tensors = {k: np.array(v) for k, v in tensors.items()}
    mutate(tensors)
    safetensors_io.write(path, tensors, meta)


def test_missing_tensor_is_named(folder):
    rewrite(folder, lambda t: t.pop("encoder.layer.1.attention.self.key.bias"))
    with pytest.raises(refexit.CheckpointError, match=r"missing tensor 'encoder\.layer\.1\.attention\.self\.key\.bias'"):
        refexit.load(folder)


def test_extra_tensor_is_named(folder):
    rewrite(folder, lambda t: t.__setitem__("encoder.layer.0.mystery.weight", np.zeros(3, np.float32)))
    with pytest.raises(refexit.CheckpointError, match="unexpected tensor.*mystery"):
        refexit.load(folder)


def test_layer_beyond_config_is_named(folder):
    def add(t):
        t["encoder.layer.7.output.dense.bias"] = np.zeros(12, np.float32)
    rewrite(folder, add)
    with pytest.raises(refexit.CheckpointError, match="encoder.layer.7.*beyond"):
        refexit.load(folder)


def test_misshaped_tensor_is_named(folder):
    rewrite(folder, lambda t: t.__setitem__("encoder.layer.2.intermediate.dense.weight", np.zeros((20, 11), np.float32)))
    with pytest.raises(refexit.CheckpointError, match=r"intermediate\.dense\.weight' has shape \[20, 11\], expected \[20, 12\]"):
        refexit.load(folder)


def test_integer_tensor_rejected(folder):
    rewrite(folder, lambda t: t.__setitem__("pooler.dense.bias", np.zeros(12, np.int32)))
    with pytest.raises(refexit.CheckpointError, match="pooler.dense.bias.*dtype int32"):
        refexit.load(folder)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1000, -4])
def test_truncated_file(folder, keep):
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[:keep] if keep >= 0 else raw[:len(raw) + keep])
    with pytest.raises(refexit.CheckpointError, match="truncated|corrupted"):
        refexit.load(folder)


def test_truncated_file_names_the_tensor(folder):
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[:-4])
    with pytest.raises(refexit.CheckpointError, match=r"truncated: tensor '.*' ends at byte"):
        refexit.load(folder)


def test_garbage_header(folder):
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:20] = b"\xff" * 12
    path.write_bytes(bytes(raw))
    with pytest.raises(refexit.CheckpointError, match="corrupted safetensors header"):
        refexit.load(folder)


def test_offsets_that_do_not_match_shape(folder):
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    name = "pooler.dense.bias"
    header[name]["shape"] = [13]
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (n - len(new)) if len(new) <= n else b""
    assert len(new) == n
    path.write_bytes(raw[:8] + new + raw[8 + n:])
    with pytest.raises(refexit.CheckpointError, match="pooler.dense.bias.*needs 52 bytes"):
        refexit.load(folder)


def test_only_pytorch_bin_is_refused_without_unpickling(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(refexit.CheckpointError, match="never unpickles"):
        refexit.load(folder)


@pytest.mark.parametrize("field,value,match", [
    ("hidden_size", 13, "not divisible"),
    ("hidden_act", "swish", "hidden_act"),
    ("num_hidden_layers", 0, "positive integer"),
    ("layer_norm_eps", -1, "layer_norm_eps"),
    ("model_type", "gpt2", "model_type"),
    ("vocab_size", None, "lacks the field 'vocab_size'"),
])
def test_bad_config_names_the_field(folder, field, value, match):
    cfg = json.loads((folder / "config.json").read_text())
    if value is None:
        del cfg[field]
    else:
        cfg[field] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(refexit.ConfigError, match=match):
        refexit.load(folder)


def test_config_not_json(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(refexit.ConfigError, match="not valid JSON"):
        refexit.load(folder)


def test_missing_files(folder):
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(refexit.ConfigError, match="config.json"):
        refexit.load(folder)


def test_eps_comes_from_config(model, folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_eps"] = 0.5
    (folder / "config.json").write_text(json.dumps(cfg))
    a = refexit.load(folder)
    assert a.config.layer_norm_eps == 0.5
    assert not np.allclose(a.hidden_states(texts_enc(a))[1], model.hidden_states(texts_enc(model))[1])


# ---------------------------------------------------------------- other layouts
def seqcls_tensors(model, highway=False, pabee=False, lte=False):
    """Canonical model -> the HF names a PyTorch BertForSequenceClassification(-like) checkpoint has."""
    t = {"bert." + k: v for k, v in hf_names(model.weights).items()}
    L = model.num_layers
    final = model.heads[-1]
    if pabee:
        for i in range(L):
            h = model.heads[i]
            t[f"classifiers.{i}.weight"], t[f"classifiers.{i}.bias"] = h.params["fc.w"], h.params["fc.b"]
        return t
    t["classifier.weight"], t["classifier.bias"] = final.params["fc.w"], final.params["fc.b"]
    if highway:
        for i in range(L):                         # DeeBERT also stores an (untrained) ramp at L
            h = model.heads[min(i, L - 2)]
            t[f"bert.encoder.highway.{i}.pooler.dense.weight"] = h.params["pooler.w"]
            t[f"bert.encoder.highway.{i}.pooler.dense.bias"] = h.params["pooler.b"]
            t[f"bert.encoder.highway.{i}.classifier.weight"] = h.params["fc.w"]
            t[f"bert.encoder.highway.{i}.classifier.bias"] = h.params["fc.b"]
    if lte:
        t["bert.encoder.lte_classifier.weight"] = model.exits.lte["w"]
        t["bert.encoder.lte_classifier.bias"] = model.exits.lte["b"]
    return t


def write_seqcls(folder, tensors, labels=("a", "b", "c")):
    (folder / "exits.safetensors").unlink(missing_ok=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["BertForSequenceClassification"]
    cfg["id2label"] = {str(i): l for i, l in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(cfg))
    safetensors_io.write(folder / "model.safetensors", {k: np.asarray(v, np.float32) for k, v in tensors.items()})


def test_deebert_bertxit_layout(folder):
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=20, num_labels=3, vocab_size=90,
                     head_kind="pooler_linear", final_kind="shared_pooler", seed=8)
    write_seqcls(folder, seqcls_tensors(m, highway=True, lte=True))
    loaded = refexit.load(folder)
    assert [h.kind for h in loaded.heads] == ["pooler_linear", "pooler_linear", "shared_pooler"]
    assert loaded.label_names == ["a", "b", "c"]
    enc = texts_enc(loaded)
    for pol in (refexit.Entropy(0.9), refexit.Learned(0.6), None):
        assert np.array_equal(loaded.classify(enc, pol).logits, m.classify(enc, pol).logits)


def test_pabee_layout(folder):
    m = random_model(num_layers=3, hidden=12, heads=2, intermediate=20, num_labels=3, vocab_size=90,
                     head_kind="shared_pooler", seed=9)
    write_seqcls(folder, seqcls_tensors(m, pabee=True))
    loaded = refexit.load(folder)
    assert [h.kind for h in loaded.heads] == ["shared_pooler"] * 3
    enc = texts_enc(loaded)
    assert np.array_equal(loaded.classify(enc, refexit.Patience(1)).logits, m.classify(enc, refexit.Patience(1)).logits)


def test_classifier_label_count_mismatch(folder, model):
    write_seqcls(folder, seqcls_tensors(model), labels=("a", "b"))
    with pytest.raises(refexit.CheckpointError, match="classifier.weight' has shape"):
        refexit.load(folder)


def test_exits_file_errors(model, folder):
    path = folder / "exits.safetensors"
    tensors, meta = safetensors_io.read(path)
    safetensors_io.write(path, dict(tensors), {**meta, "kind": "bogus"})
    with pytest.raises(refexit.CheckpointError, match="metadata 'kind'"):
        refexit.load(folder)
    safetensors_io.write(path, dict(tensors), {k: v for k, v in meta.items() if k != "refexit_exits"})
    with pytest.raises(refexit.CheckpointError, match="not a refexit exits file"):
        refexit.load(folder)
    bad = dict(tensors)
    bad["heads.0.fc.w"] = np.zeros((3, 5), np.float32)
    safetensors_io.write(path, bad, meta)
    with pytest.raises(refexit.CheckpointError, match="heads.0.fc.w"):
        refexit.load(folder)
    bad = dict(tensors)
    del bad["heads.1.pooler.b"]
    safetensors_io.write(path, bad, meta)
    with pytest.raises(refexit.CheckpointError, match="lacks tensor 'heads.1.pooler.b'"):
        refexit.load(folder)
    safetensors_io.write(path, dict(tensors), {**meta, "temperatures": "[1, 0, 1]"})
    with pytest.raises(refexit.CheckpointError, match="temperatures"):
        refexit.load(folder)


def test_exits_cannot_replace_the_checkpoint_classifier(model, folder):
    write_seqcls(folder, seqcls_tensors(model))
    save_exits(folder / "exits.safetensors", model.exits, ["a", "b", "c"])
    with pytest.raises(refexit.CheckpointError, match="own classifier"):
        refexit.load(folder)
    save_exits(folder / "exits.safetensors", model.exits, ["a", "b", "c"], include_final=False)
    loaded = refexit.load(folder)
    assert loaded.heads[0].kind == "pooler_linear" and loaded.heads[-1].kind == "shared_pooler"


def test_explicit_exits_path_must_exist(folder):
    with pytest.raises(refexit.CheckpointError, match="does not exist"):
        refexit.load(folder, exits=folder / "nope.safetensors")


def test_scalar_mix_exits_load_and_name_their_bad_tensors(tmp_path):
    m = random_model(num_layers=3, hidden=16, heads=2, intermediate=24, head_kind="scalar_mix",
                     final_kind="shared_pooler", seed=4)
    folder = save_model(m, tmp_path / "m")
    loaded = refexit.load(folder)
    assert [h.kind for h in loaded.heads] == ["scalar_mix", "scalar_mix", "shared_pooler"]
    assert [h.params["mix"].shape for h in loaded.heads[:2]] == [(1,), (2,)]
    enc = texts_enc(m)
    for pol in (refexit.Static(1), refexit.Static(2), refexit.MaxProb(0.4)):
        a, b = m.classify(enc, pol), loaded.classify(enc, pol)
        assert np.array_equal(a.logits, b.logits) and np.array_equal(a.exit_layers, b.exit_layers)
    path = folder / "exits.safetensors"
    tensors, meta = safetensors_io.read(path)
    cases = [("heads.1.mix", np.ones(3, np.float32), r"'heads.1.mix' has shape \[3\], expected \[2\]"),
             ("heads.0.mix", np.zeros(1, np.float32), r"'heads.0.mix' .*not all zero"),
             ("heads.1.mix", np.array([1, np.nan], np.float32), r"'heads.1.mix' .*finite"),
             ("heads.1.mix", None, "lacks tensor 'heads.1.mix'")]
    for name, value, msg in cases:
        bad = dict(tensors)
        if value is None:
            del bad[name]
        else:
            bad[name] = value
        safetensors_io.write(path, bad, meta)
        with pytest.raises(refexit.CheckpointError, match=msg):
            refexit.load(folder)
    weights, wmeta = safetensors_io.read(folder / "model.safetensors")
    safetensors_io.write(path, dict(tensors), meta)
    safetensors_io.write(folder / "model.safetensors",
                         {k: v for k, v in weights.items() if "pooler.dense" not in k}, wmeta)
    with pytest.raises(refexit.CheckpointError, match="uses the model's pooler"):
        refexit.load(folder)
