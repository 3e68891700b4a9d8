"""Crafted and mutated input files: every loader answers with a RefexitError subclass naming the
problem, never a raw Python exception, a crash, or unbounded work.

Two layers of tests:
  - class sweeps: each class of bad JSON (duplicate keys, deep nesting, huge integers, NaN, a
    non-object, invalid UTF-8, a directory) against every JSON file refexit reads (config.json,
    tokenizer_config.json, the safetensors header, exits metadata, a compiled manifest), and each
    class of bad safetensors entry (shapes and offsets negative / fractional / huge, overlapping
    byte ranges, metadata of the wrong type) and of bad label names;
  - hypothesis fuzzing of the same loaders with mutated files, asserting that only RefexitError
    subclasses escape.
"""
from __future__ import annotations

import copy
import json
import shutil
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refexit
from refexit import jsonio
from refexit.errors import CheckpointError, ConfigError, RefexitError
from refexit.synthetic import random_model, save_model

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def model():
    return random_model(num_layers=2, hidden=8, heads=2, intermediate=10, num_labels=3, vocab_size=60,
                        max_position=16, head_kind="pooler_linear", seed=3)


@pytest.fixture()
def folder(model, tmp_path):
    return save_model(model, tmp_path / "m")


# ------------------------------------------------------------------ helpers
def header_of(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw_header(path, header_bytes: bytes, data: bytes):
    header_bytes += b" " * (-len(header_bytes) % 8)
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)


def write_header(path, header: dict, data: bytes):
    write_raw_header(path, json.dumps(header).encode(), data)


def only_refexit_errors(fn, *args, **kwargs):
    """Call fn; a RefexitError is a fine answer, anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except RefexitError as e:
        assert str(e), "an error must say what is wrong"
        return e


# ------------------------------------------------------------------ the strict JSON reader itself
BAD_JSON = {
    "duplicate key": (b'{"a": 1, "a": 2}', "duplicate key"),
    "deep nesting": (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    "moderately deep nesting": (b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}", "nested"),
    "5000-digit integer": (b'{"a": 1' + b"0" * 5000 + b"}", "digits"),
    "NaN": (b'{"a": NaN}', "NaN"),
    "Infinity": (b'{"a": -Infinity}', "Infinity"),
    "overflowing float": (b'{"a": 1e999}', "overflows"),
    "invalid UTF-8": (b'{"a": "\xff\xfe"}', "UTF-8"),
    "not JSON": (b"{not json", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_strict_json_rejects_each_class(name):
    text, match = BAD_JSON[name]
    with pytest.raises(ConfigError, match=match):
        jsonio.loads(text, "x.json")


@pytest.mark.parametrize("value", ["[1, 2]", "5", '"text"', "null", "true"])
def test_strict_json_object_reader_rejects_non_objects(tmp_path, value):
    (tmp_path / "a.json").write_text(value)
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        jsonio.read_object(tmp_path / "a.json")


def test_strict_json_accepts_what_hf_writes():
    v = jsonio.loads('{"model_max_length": 1000000000000000019884624838656, "x": [1.5e-12, {"y": null}]}', "t")
    assert v["model_max_length"] == int(1e30) and v["x"][1] == {"y": None}


# ------------------------------------------------------------------ each class x each JSON file
def _put(folder, which, text: bytes):
    """Write `text` where one of the JSON documents of a model folder lives."""
    if which in ("config.json", "tokenizer_config.json"):
        (folder / which).write_bytes(text)
    elif which == "safetensors header":
        path = folder / "model.safetensors"
        _, data = header_of(path)
        write_raw_header(path, text, data)
    else:                                           # an exits metadata value
        key = which.split(":")[1]
        path = folder / "exits.safetensors"
        header, data = header_of(path)
        header["__metadata__"][key] = text.decode("utf-8", "surrogateescape")
        write_header(path, header, data)


JSON_FILES = {"config.json": ConfigError, "tokenizer_config.json": ConfigError,
              "safetensors header": CheckpointError, "exits:labels": CheckpointError,
              "exits:temperatures": CheckpointError, "exits:l2norm": CheckpointError,
              "exits:attn_heads": CheckpointError}


@pytest.mark.parametrize("which", sorted(JSON_FILES))
@pytest.mark.parametrize("name", sorted(set(BAD_JSON) - {"invalid UTF-8"}))
def test_every_json_file_rejects_every_bad_json_class(folder, which, name):
    text, match = BAD_JSON[name]
    _put(folder, which, text)
    with pytest.raises(JSON_FILES[which], match=match):
        refexit.load(folder)


@pytest.mark.parametrize("which", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("value", ["[1, 2]", "5", '"x"', "null"])
def test_config_files_must_be_objects(folder, which, value):
    (folder / which).write_text(value)
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        refexit.load(folder)


@pytest.mark.parametrize("which", ["config.json", "tokenizer_config.json"])
def test_config_file_that_is_a_directory(folder, which):
    (folder / which).unlink()
    (folder / which).mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        refexit.load(folder)


def test_invalid_utf8_config(folder):
    (folder / "config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigError, match="UTF-8"):
        refexit.load(folder)


# ------------------------------------------------------------------ config fields: types and bounds
@pytest.mark.parametrize("field,value,match", [
    ("num_hidden_layers", 10**6, "num_hidden_layers"),
    ("num_hidden_layers", 10**7, "num_hidden_layers"),
    ("num_hidden_layers", 1e6, "num_hidden_layers"),
    ("num_hidden_layers", 5, "num_hidden_layers' is 5 but the checkpoint has only layers 0..1"),
    ("vocab_size", 10**9, "vocab_size"),
    ("vocab_size", 61, "vocab_size' is 61 but tensor"),
    ("hidden_size", 150.5, "hidden_size"),
    ("hidden_size", True, "hidden_size"),
    ("max_position_embeddings", -3, "max_position_embeddings"),
    ("intermediate_size", "10", "intermediate_size"),
    ("architectures", 5, "architectures"),
    ("architectures", [5], "architectures"),
    ("hidden_act", ["gelu"], "hidden_act"),
    ("pad_token_id", 10**6, "pad_token_id"),
    ("pad_token_id", "0", "pad_token_id"),
    ("problem_type", 3, "problem_type"),
    ("id2label", [1], "id2label"),
    ("id2label", {"0": "a", "1": "b", "2": 7}, "id2label"),
    ("id2label", {"0": "a", "1": "a", "2": "c"}, "both 'a'"),
    ("id2label", {"0": "a", "1": "b\u0000", "2": "c"}, "NUL"),
    ("id2label", {"0": "a", "1": "\ud800", "2": "c"}, "surrogate"),
    ("id2label", {"x": "a"}, "id2label"),
])
def test_config_fields_are_typed_and_bounded(folder, field, value, match):
    cfg = json.loads((folder / "config.json").read_text())
    cfg[field] = value
    if field == "id2label":
        cfg["architectures"] = ["BertForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ConfigError, CheckpointError), match=match):
        refexit.load(folder)


@pytest.mark.parametrize("field,value", [("do_lower_case", "false"), ("strip_accents", 1),
                                         ("tokenize_chinese_chars", None), ("model_max_length", "512")])
def test_tokenizer_config_fields_are_typed(folder, field, value):
    (folder / "tokenizer_config.json").write_text(json.dumps({field: value}))
    with pytest.raises(ConfigError, match=field):
        refexit.load(folder)


# ------------------------------------------------------------------ safetensors entries
def _mutate_entry(folder, mutate):
    path = folder / "model.safetensors"
    header, data = header_of(path)
    mutate(header)
    write_header(path, header, data)


NAME = "embeddings.LayerNorm.bias"


@pytest.mark.parametrize("field,value,match", [
    ("shape", [-8], "shape entry"),
    ("shape", [8.0], "shape entry"),
    ("shape", [150.5], "shape entry"),
    ("shape", [1 << 70], "shape entry"),
    ("shape", "8", "shape must be a list"),
    ("shape", [True], "shape entry"),
    ("data_offsets", [-4, 28], "data_offsets"),
    ("data_offsets", [0.5, 32], "data_offsets"),
    ("data_offsets", [1 << 70, (1 << 70) + 32], "data_offsets"),
    ("data_offsets", [0], r"data_offsets must be \[begin, end\]"),
    ("data_offsets", [10**9, 10**9 + 32], "truncated"),
    ("dtype", "F128", "dtype"),
    ("dtype", ["F32"], "dtype"),
    ("extra", 1, "malformed header entry"),
])
def test_bad_safetensors_entries(folder, field, value, match):
    _mutate_entry(folder, lambda h: h[NAME].__setitem__(field, value))
    with pytest.raises(CheckpointError, match=match):
        refexit.load(folder)


def test_overlapping_tensor_bytes_are_refused(folder):
    def overlap(h):
        a = h[NAME]["data_offsets"]
        other = next(k for k in h if k != "__metadata__" and h[k]["data_offsets"][0] == a[1])
        h[other]["data_offsets"] = [a[0], a[0] + h[other]["data_offsets"][1] - h[other]["data_offsets"][0]]
    _mutate_entry(folder, overlap)
    with pytest.raises(CheckpointError, match="share bytes"):
        refexit.load(folder)


def test_duplicate_tensor_names_are_refused(folder):
    path = folder / "model.safetensors"
    header, data = header_of(path)
    text = json.dumps(header)
    entry = json.dumps(header[NAME])
    write_raw_header(path, text[:-1].encode() + f', "{NAME}": {entry}}}'.encode(), data)
    with pytest.raises(CheckpointError, match="duplicate key"):
        refexit.load(folder)


@pytest.mark.parametrize("meta", [["a"], "x", {"format": 5}, {"format": ["pt"]}])
def test_safetensors_metadata_must_be_strings(folder, meta):
    _mutate_entry(folder, lambda h: h.__setitem__("__metadata__", meta))
    with pytest.raises(CheckpointError, match="__metadata__"):
        refexit.load(folder)


# ------------------------------------------------------------------ exits metadata and label names
def _set_meta(folder, **kv):
    path = folder / "exits.safetensors"
    header, data = header_of(path)
    header["__metadata__"].update(kv)
    write_header(path, header, data)


@pytest.mark.parametrize("key,value,match", [
    ("labels", '["a", "b"]', "2 label name"),               # fewer names than outputs: the old segfault
    ("labels", '["a", "b", "c", "d"]', "4 label name"),
    ("labels", '["a", "a", "b"]', "both 'a'"),
    ("labels", '["a", 1, "b"]', "must be a string"),
    ("labels", '["a", "b\\u0000", "c"]', "NUL"),
    ("labels", '["a", "\\ud800", "c"]', "surrogate"),
    ("labels", '{"0": "a"}', "list"),
    ("temperatures", '{"a": 1}', "temperatures"),
    ("temperatures", '"hot"', "temperatures"),
    ("temperatures", '[1, "x"]', "temperatures"),
    ("temperatures", '[1, -1]', "temperatures"),
    ("l2norm", '"yes"', "l2norm"),
    ("attn_heads", "0", "attn_heads"),
    ("attn_heads", "-2", "attn_heads"),
    ("attn_heads", "2.5", "attn_heads"),
    ("kind", "[1]", "kind"),
])
def test_bad_exits_metadata(folder, key, value, match):
    _set_meta(folder, **{key: value})
    with pytest.raises(CheckpointError, match=match):
        refexit.load(folder)


@pytest.mark.parametrize("attn_heads", [0, -1, 3, 1000])
def test_fastbert_attention_heads_must_divide_the_width(tmp_path, attn_heads):
    m = random_model(num_layers=2, hidden=8, heads=2, intermediate=10, num_labels=2, vocab_size=60,
                     max_position=16, head_kind="fastbert", fastbert_width=8, lte=False, ponder=False)
    folder = save_model(m, tmp_path / "fb")
    _set_meta(folder, attn_heads=str(attn_heads))
    with pytest.raises(CheckpointError, match="attn_heads|attention heads"):
        refexit.load(folder)


def test_static_layer_beyond_the_model_is_an_input_error(folder):
    m = refexit.load(folder)
    with pytest.raises(refexit.InputError, match="only 2 layers"):
        m.classify(m.tokenizer(["abc"]), refexit.Static(7))


def test_exits_folder_or_file(folder, tmp_path):
    out = tmp_path / "exits"
    out.mkdir()
    shutil.move(folder / "exits.safetensors", out / "exits.safetensors")
    a = refexit.load(folder, exits=out)
    b = refexit.load(folder, exits=out / "exits.safetensors")
    assert a.label_names == b.label_names and a.heads[0] is not None
    with pytest.raises(CheckpointError, match="folder without exits.safetensors"):
        refexit.load(folder, exits=tmp_path)


# ------------------------------------------------------------------ hypothesis: mutated files
# values a crafted file uses: wrong types, signs, fractions, huge sizes, odd strings
TRICKY = [5, -1, 0, 1, 2, 3, 150.5, 2.0, 1e6, 10**6, 10**9, 2**63, -(2**63), 10**40, 1e308, True, False,
          None, "", "x", "2", "gelu", "\ud800", "a\u0000b", [], [1], [-1, 2], ["a", "b"], ["a", "a", "b"],
          {}, {"0": "a"}, {"a": 1}, {"0": "a", "1": "b", "2": "c"}]
tricky = st.sampled_from(TRICKY).map(copy.deepcopy)      # fresh objects: a test may mutate what it gets
json_values = tricky | st.recursive(
    st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats(allow_nan=True)
    | st.text(max_size=8) | tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps", "pad_token_id",
               "id2label", "architectures", "problem_type", "model_type", "position_embedding_type"]


def _dumps(v) -> str:
    return json.dumps(v, allow_nan=True)


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    """One saved model folder; each fuzz example rewrites one file and restores it."""
    return save_model(model, tmp_path_factory.mktemp("fz") / "m")


def _load_with(folder, name, content: bytes):
    path = folder / name
    good = path.read_bytes()
    try:
        path.write_bytes(content)
        got = only_refexit_errors(refexit.load, folder)
        if isinstance(got, refexit.Model):        # whatever loaded must classify or refuse cleanly
            only_refexit_errors(got.classify, got.tokenizer(["ab cd"]), None)
    finally:
        path.write_bytes(good)


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), json_values), min_size=1, max_size=2))
def test_fuzz_config(base, edits):
    cfg = json.loads((base / "config.json").read_text())
    for k, v in edits:
        cfg[k] = v
    _load_with(base, "config.json", _dumps(cfg).encode())


@FUZZ
@given(value=json_values, text=st.binary(max_size=40), raw=st.booleans(),
       key=st.sampled_from(["do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length"]))
def test_fuzz_tokenizer_config(base, value, text, raw, key):
    _load_with(base, "tokenizer_config.json", text if raw else _dumps({key: value} if len(text) % 2 else value).encode())


@FUZZ
@given(mode=st.sampled_from(["entry", "entry", "metadata", "bytes"]), tensor=st.integers(0, 1000),
       field=st.sampled_from(["dtype", "shape", "data_offsets", "other"]), value=json_values,
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
       which=st.sampled_from(["model.safetensors", "exits.safetensors"]))
def test_fuzz_safetensors_header(base, mode, tensor, field, value, flips, which):
    path = base / which
    header, data = header_of(path)
    names = sorted(k for k in header if k != "__metadata__")
    if mode == "entry":
        header[names[tensor % len(names)]][field] = value
    elif mode == "metadata":
        header["__metadata__"] = value
    raw = bytearray(_dumps(header).encode())
    if mode == "bytes":
        for pos, byte in flips:
            raw[pos % len(raw)] = byte
    raw += b" " * (-len(raw) % 8)
    _load_with(base, which, struct.pack("<Q", len(raw)) + bytes(raw) + data)


EXITS_META = ["refexit_exits", "kind", "final_kind", "l2norm", "attn_heads", "labels", "temperatures"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(EXITS_META), json_values, st.booleans()), min_size=1, max_size=2))
def test_fuzz_exits_metadata(base, edits):
    path = base / "exits.safetensors"
    header, data = header_of(path)
    for key, value, as_json in edits:
        header["__metadata__"][key] = _dumps(value) if as_json else str(value)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    _load_with(base, "exits.safetensors", struct.pack("<Q", len(raw)) + raw + data)


# ------------------------------------------------------------------ compiled manifests
@pytest.fixture(scope="module")
def compiled(model, tmp_path_factory):
    codegen = pytest.importorskip("codegen", reason="codegen needs jinja2 and cffi (the test extra)")
    out = tmp_path_factory.mktemp("manifest") / "m"
    cm = codegen.compile_model(model, refexit.Entropy(0.5), out, prefix="fzm", max_length=12)
    cm.close()
    return out


MANIFEST_KEYS = ["prefix", "header", "source", "weights", "library", "build_key", "model_hash", "num_layers",
                 "num_labels", "hidden", "max_length", "vocab_size", "type_vocab_size", "label_names",
                 "has_lte", "has_ponder", "warnings", "model_temperatures", "policy", "flops", "tokenizer",
                 "isa", "precision"]


def _load_with_manifest(folder, manifest_text: bytes):
    import codegen
    path = folder / "fzm.manifest.json"
    good = path.read_bytes()
    try:
        path.write_bytes(manifest_text)
        cm = codegen.load_compiled(folder)
        cm.classify(cm.tokenizer(["ab cd"]))
        cm.close()
    finally:
        path.write_bytes(good)


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_manifest_rejects_every_bad_json_class(compiled, name):
    with pytest.raises(CheckpointError, match=BAD_JSON[name][1]):
        _load_with_manifest(compiled, BAD_JSON[name][0])


@pytest.mark.parametrize("key,value,match", [
    ("max_length", 10**9, "max_length"),
    ("max_length", 11, "max_length = 11, its library 12"),
    ("label_names", ["a", "b"], "2 label name"),
    ("num_layers", "2", "num_layers"),
    ("policy", [], "policy"),
    ("prefix", "other", "prefix 'other'"),
    ("build_key", "../../x", "build_key"),
    ("weights", "../x.weights", "weights"),
])
def test_manifest_fields_are_checked(compiled, key, value, match):
    manifest = json.loads((compiled / "fzm.manifest.json").read_text())
    manifest[key] = value
    with pytest.raises(CheckpointError, match=match):
        _load_with_manifest(compiled, json.dumps(manifest).encode())


@pytest.mark.parametrize("key", ["prefix", "policy", "flops", "tokenizer", "label_names", "num_labels"])
def test_manifest_missing_keys(compiled, key):
    manifest = json.loads((compiled / "fzm.manifest.json").read_text())
    del manifest[key]
    with pytest.raises(CheckpointError, match=f"lacks the field '{key}'"):
        _load_with_manifest(compiled, json.dumps(manifest).encode())


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(MANIFEST_KEYS), json_values), min_size=1, max_size=2),
       inner=st.booleans())
def test_fuzz_manifest(compiled, edits, inner):
    manifest = json.loads((compiled / "fzm.manifest.json").read_text())
    for key, value in edits:
        if inner and isinstance(manifest.get(key), dict) and manifest[key]:
            sub = sorted(manifest[key])[zlib.crc32(_dumps(value).encode()) % len(manifest[key])]
            manifest[key][sub] = value
        else:
            manifest[key] = value
    only_refexit_errors(_load_with_manifest, compiled, _dumps(manifest).encode())


def test_weights_vocab_that_is_not_utf8(compiled, tmp_path):
    import codegen
    from codegen import pack
    dst = tmp_path / "c"
    shutil.copytree(compiled, dst)
    w = dst / "fzm.weights"
    h = pack.read_header(w)
    raw = bytearray(w.read_bytes())
    raw[h.vocab_offset] = 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        cm = codegen.load_compiled(dst)        # the checksum notices first; if it did not, the
        cm.tokenizer                            # vocabulary decoder would: never UnicodeDecodeError
    with pytest.raises(CheckpointError, match="not UTF-8"):
        pack.read_vocab(w)


def test_fuzz_json_values_stay_in_their_error_class():
    """The reader itself on arbitrary bytes: only ConfigError (or a value)."""
    @FUZZ
    @given(st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
    def run(b):
        only_refexit_errors(jsonio.loads, b, "x")
    run()


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c", "d"], ["a", "a", "b"], ["a", "b\0", "c"],
                                   ["a", "\ud800", "c"]])
def test_compile_refuses_label_names_that_do_not_fit(model, names):
    """The C library's label table is one valid, unique C string per output, or no library."""
    codegen = pytest.importorskip("codegen", reason="codegen needs jinja2 and cffi (the test extra)")
    from codegen.lower import lower
    bad = refexit.Model(model.config, model.weights, model.exits, names, model.tokenizer)
    with pytest.raises(refexit.InputError, match="label name"):
        lower(bad, refexit.Entropy(0.5), "lbl")
    assert codegen is not None
