"""Every failure the C code can meet is an error code, and a clear Python exception: bad weights
files (truncated, another model, corrupted, not ours) and bad inputs (too long, token or type id out
of range, no tokens, NaN threshold). After an error the handle keeps working."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

import refexit
from refexit.synthetic import random_model
from refexit.tokenizers.wordpiece import unpack

import codegen
from codegen import pack

MAX_LEN = 12


def small_model(seed=0):
    return random_model(num_layers=3, hidden=18, heads=2, intermediate=21, num_labels=3, vocab_size=60,
                        max_position=32, seed=seed)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "m"
    cm = codegen.compile_model(small_model(), refexit.Entropy(0.8), out, prefix="errm", max_length=MAX_LEN)
    return cm


@pytest.fixture
def folder_copy(compiled, tmp_path):
    """A copy of the compiled folder whose weights file a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(compiled.out_dir, dst)
    return dst


def enc_of(ids, types=None):
    ids = np.atleast_2d(np.asarray(ids, np.int64))
    e = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if types is not None:
        e["token_type_ids"] = np.atleast_2d(np.asarray(types, np.int64))
    return e


GOOD = enc_of([[2, 10, 11, 12, 3], [2, 20, 21, 22, 3]])


def still_works(cm):
    ref = small_model().astype(np.float64).classify(GOOD, refexit.Entropy(0.8))
    got = cm.classify(GOOD)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the weights file
def test_truncated_weights_file(folder_copy):
    w = folder_copy / "errm.weights"
    data = w.read_bytes()
    w.write_bytes(data[:-100])
    with pytest.raises(refexit.CheckpointError, match="truncated.*ERR_TRUNCATED"):
        codegen.load_compiled(folder_copy)
    w.write_bytes(data[:50])                       # shorter than the header
    with pytest.raises(refexit.CheckpointError, match="truncated"):
        codegen.load_compiled(folder_copy)
    w.write_bytes(b"")
    with pytest.raises(refexit.CheckpointError, match="truncated"):
        codegen.load_compiled(folder_copy)


def test_weights_of_another_model(folder_copy, tmp_path):
    other = codegen.compile_model(small_model(seed=1), refexit.Entropy(0.8), tmp_path / "other",
                                  prefix="errm", max_length=MAX_LEN)
    assert other.manifest["model_hash"] != codegen.load_compiled(folder_copy).manifest["model_hash"]
    shutil.copy(other.weights_path, folder_copy / "errm.weights")
    with pytest.raises(refexit.CheckpointError, match="another model.*ERR_MODEL"):
        codegen.load_compiled(folder_copy)


def test_flipped_byte_fails_the_checksum(folder_copy):
    w = folder_copy / "errm.weights"
    data = bytearray(w.read_bytes())
    h = pack.read_header(w)
    for pos in (pack.HEADER_SIZE + 5, len(data) // 2, h.vocab_offset + 3, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        w.write_bytes(bytes(bad))
        with pytest.raises(refexit.CheckpointError, match="corrupted.*checksum.*ERR_CHECKSUM"):
            codegen.load_compiled(folder_copy)


def test_bad_magic_version_and_header_hash(folder_copy):
    w = folder_copy / "errm.weights"
    data = w.read_bytes()
    for pos, expect in ((0, "bad magic"), (8, "format version"), (20, "another model")):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        w.write_bytes(bytes(bad))
        with pytest.raises(refexit.CheckpointError, match=expect):
            codegen.load_compiled(folder_copy)


def test_missing_weights_file(folder_copy):
    (folder_copy / "errm.weights").unlink()
    with pytest.raises(refexit.CheckpointError, match="cannot open.*ERR_IO"):
        codegen.load_compiled(folder_copy)


def test_not_a_compiled_folder(tmp_path):
    with pytest.raises(refexit.CheckpointError, match="no compiled model"):
        codegen.load_compiled(tmp_path)


# ---------------------------------------------------------------- inputs
def test_too_long_sequence(compiled):
    with pytest.raises(refexit.InputError, match=rf"longer than the compiled maximum.*sample 1 has {MAX_LEN + 1} tokens"):
        compiled.classify({"input_ids": np.full((2, MAX_LEN + 1), 5),
                           "attention_mask": np.array([[1] * MAX_LEN + [0], [1] * (MAX_LEN + 1)])})
    still_works(compiled)


def test_token_id_out_of_range(compiled):
    for bad in (60, 61, 10**6, -1, 2**40, 2**32 + 5, -2**32 + 5):      # the last two wrap to 5 in int32
        with pytest.raises(refexit.InputError, match="outside the vocabulary.*ERR_TOKEN"):
            compiled.classify(enc_of([[2, 5, 3], [2, bad, 3]]))
    for dtype, bad in ((np.uint32, 2**32 - 1), (np.uint64, 2**63 + 5)):
        with pytest.raises(refexit.InputError, match="outside the vocabulary.*ERR_TOKEN"):
            compiled.classify({"input_ids": np.array([[2, bad, 3]], dtype)})
    still_works(compiled)


def test_type_id_out_of_range(compiled):
    with pytest.raises(refexit.InputError, match="type id.*ERR_TYPE"):
        compiled.classify(enc_of([[2, 5, 3]], types=[[0, 2, 0]]))
    with pytest.raises(refexit.InputError, match="type id"):
        compiled.classify(enc_of([[2, 5, 3]], types=[[0, -1, 0]]))
    with pytest.raises(refexit.InputError, match="type id"):
        compiled.classify(enc_of([[2, 5, 3]], types=[[0, 2**32, 0]]))         # 0 in int32
    still_works(compiled)


@pytest.mark.parametrize("enc", [
    {"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones(5, np.int64)},
    {"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones(6, np.int64)},
    {"input_ids": np.ones((2, 3), np.int64), "token_type_ids": np.zeros((3, 2), np.int64)},
    {"input_ids": np.ones(3, np.int64), "attention_mask": np.ones((3, 1), np.int64)},
    {"input_ids": np.ones((1, 3), np.int64), "token_type_ids": np.array([[0.0, 0.5, 0.0]])},
])
def test_mask_and_types_must_match_the_ids(compiled, enc):
    """A mask or type array of another shape (even one that reshapes to the ids' shape, as a
    transposed one does) or a non-integer one is refused, by the compiled model and the oracle."""
    with pytest.raises(refexit.InputError, match="must match input_ids"):
        compiled.classify(enc)
    with pytest.raises(refexit.InputError, match="must match input_ids"):
        unpack(enc)
    still_works(compiled)


def test_no_tokens(compiled):
    with pytest.raises(refexit.InputError, match=r"no tokens.*sample 1 has no tokens.*ERR_EMPTY"):
        compiled.classify({"input_ids": np.array([[2, 5, 3], [0, 0, 0]]),
                           "attention_mask": np.array([[1, 1, 1], [0, 0, 0]])})
    ids = np.array([2, 5, 3], np.int32)
    for lengths in ([0], [-1], [3, 0]):
        with pytest.raises(refexit.InputError, match="ERR_EMPTY"):
            compiled.classify_raw(ids, np.zeros(3, np.int32), np.array(lengths, np.int32))
    still_works(compiled)


def test_bad_padding(compiled):
    with pytest.raises(refexit.InputError, match="right padding"):
        compiled.classify({"input_ids": np.array([[2, 5, 3]]), "attention_mask": np.array([[1, 0, 1]])})


def test_classify_padded_in_c(compiled):
    """The padded entry straight through the C API: right padding, ranges and arguments are checked
    by the C code; padding slots are not read; results and lengths match classify_batch."""
    ffi, p = compiled.ffi, compiled.prefix
    fn = compiled._fn.classify_padded
    codes = {name: getattr(compiled.lib, f"{p.upper()}_{name}") for name in
             ("ERR_ARG", "ERR_PADDING", "ERR_EMPTY", "ERR_TOO_LONG", "ERR_TOKEN", "ERR_TYPE")}
    m = compiled._handle()

    def call(ids, mask=None, types=None, lengths=True):
        ids = np.ascontiguousarray(ids, np.int64)
        arr = lambda a: ffi.NULL if a is None else ffi.from_buffer("int64_t[]", np.ascontiguousarray(a, np.int64))  # noqa: E731
        out = np.zeros(len(ids), compiled._dtype)
        lens = np.full(len(ids), -9, np.int32)
        st = fn(m, arr(ids), arr(mask), arr(types), ids.shape[0], ids.shape[1],
                ffi.from_buffer("int32_t[]", lens) if lengths else ffi.NULL,
                ffi.from_buffer(f"{p}_result[]", out, require_writable=True))
        return st, out, lens

    ids = np.array([[2, 10, 11, 12, 3], [2, 20, 3, -7, 10**12]])           # row 1: 3 tokens, junk after
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    types = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 99, -5]])
    st, out, lens = call(ids, mask, types)
    assert st == 0 and lens.tolist() == [5, 3]
    ref = compiled.classify_raw(np.int32([2, 10, 11, 12, 3, 2, 20, 3]), np.int32([0, 0, 1, 1, 1, 0, 1, 1]),
                                np.int32([5, 3]))
    assert out.tobytes() == ref.tobytes()                                  # the same bits
    st, out2, lens = call(ids[:1], None, None, lengths=False)              # no mask, no types, no lengths
    assert st == 0 and lens.tolist() == [-9]
    assert out2.tobytes() == compiled.classify_raw(np.int32([2, 10, 11, 12, 3]), np.zeros(5, np.int32),
                                                   np.int32([5])).tobytes()
    assert call(ids, np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0]]))[0] == codes["ERR_PADDING"]
    assert call(ids, np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]))[0] == codes["ERR_EMPTY"]
    assert call(np.zeros((2, 0)))[0] == codes["ERR_EMPTY"]
    assert call(np.full((1, MAX_LEN + 1), 5))[0] == codes["ERR_TOO_LONG"]
    assert call(np.full((1, MAX_LEN + 4), 5), np.int64([[1] * MAX_LEN + [0] * 4]))[0] == 0   # wide, not long
    assert call(np.array([[2, 60, 3]]))[0] == codes["ERR_TOKEN"]
    assert call(np.array([[2, -1, 3]]))[0] == codes["ERR_TOKEN"]
    assert call(np.array([[2, 5, 3]]), None, np.array([[0, 2, 0]]))[0] == codes["ERR_TYPE"]
    assert fn(ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL) == codes["ERR_ARG"]
    res = ffi.new(f"{p}_result[1]")
    assert fn(m, ffi.NULL, ffi.NULL, ffi.NULL, 1, 3, ffi.NULL, res) == codes["ERR_ARG"]
    assert fn(m, ffi.new("int64_t[]", [2, 5, 3]), ffi.NULL, ffi.NULL, 1, -3, ffi.NULL, res) == codes["ERR_ARG"]
    assert fn(m, ffi.NULL, ffi.NULL, ffi.NULL, 0, 3, ffi.NULL, ffi.NULL) == 0     # empty batch
    still_works(compiled)


def test_classify_takes_any_integer_layout(compiled):
    """int32, uint8 masks, bool masks, Fortran order and strided views give the int64 C-order
    result bit for bit (the wrapper converts them; int64 C order goes through without a copy)."""
    ids = np.array([[2, 10, 11, 12, 3, 0], [2, 20, 21, 3, 0, 0]])
    mask = (ids != 0) | (np.arange(6) == 0)
    types = np.zeros_like(ids)
    want = compiled.classify({"input_ids": ids, "attention_mask": mask.astype(np.int64), "token_type_ids": types})
    wide = np.zeros((2, 12), np.int64)
    wide[:, ::2] = ids
    for enc in ({"input_ids": ids.astype(np.int32), "attention_mask": mask},
                {"input_ids": np.asfortranarray(ids), "attention_mask": mask.astype(np.uint8),
                 "token_type_ids": types.astype(np.int16)},
                {"input_ids": wide[:, ::2], "attention_mask": mask.astype(np.int64)}):
        got = compiled.classify(enc)
        assert got.logits.tobytes() == want.logits.tobytes()
        assert got.exit_layers.tolist() == want.exit_layers.tolist()
        np.testing.assert_array_equal(got.flops, want.flops)


def test_shape_beyond_the_c_int(compiled):
    """A batch or width that does not fit the C API's int is refused before any copy (these
    zero-stride views would take 8 TiB as int64 in C order: a copy first would fail)."""
    for shape in ((1, 2**40), (2**40, 1)):
        with pytest.raises(refexit.InputError, match="below 2\\*\\*31"):
            compiled.classify(np.broadcast_to(np.int32(5), shape))
    still_works(compiled)


def test_flops_at_every_length(compiled):
    """The FLOPs table made at load covers every length up to the compiled maximum and equals the
    oracle's count exactly (lengths 1 and MAX_LEN are its edges)."""
    model = small_model().astype(np.float64)
    ids = np.random.default_rng(0).integers(4, 60, (MAX_LEN, MAX_LEN))  # row i: i + 1 tokens
    mask = (np.arange(MAX_LEN)[None] <= np.arange(MAX_LEN)[:, None]).astype(np.int64)
    enc = {"input_ids": ids, "attention_mask": mask}
    compiled.set_threshold(1.08)                 # near ln 3: some samples exit at layer 1, some run on
    try:
        got, ref = compiled.classify(enc), model.classify(enc, refexit.Entropy(1.08))
    finally:
        compiled.set_threshold(0.8)
    assert got.flops.dtype == ref.flops.dtype == np.float64
    same = got.exit_layers == ref.exit_layers
    assert same.sum() >= MAX_LEN - 1 and len(set(ref.exit_layers[same].tolist())) > 1
    np.testing.assert_array_equal(got.flops[same], ref.flops[same])
    np.testing.assert_array_equal(got.full_flops, ref.full_flops)


def test_nan_threshold(compiled):
    before = compiled.thresholds.copy()
    with pytest.raises(refexit.InputError, match="NaN.*ERR_NAN"):
        compiled.set_threshold(math.nan)
    with pytest.raises(refexit.InputError, match="NaN.*ERR_NAN"):
        compiled.set_thresholds([0.5, math.nan])
    np.testing.assert_array_equal(compiled.thresholds, before)     # nothing changed
    with pytest.raises(refexit.InputError, match="ERR_ARG"):
        compiled.set_thresholds([0.5, 0.5, 0.5, 0.5])              # L = 3: 2 (or 3) values
    compiled.set_thresholds([0.25, 0.5, 99.0])                      # L values: the last is ignored
    np.testing.assert_array_equal(compiled.thresholds, np.float32([0.25, 0.5]))
    compiled.set_threshold(0.8)
    still_works(compiled)


def test_c_api_rejects_bad_arguments(compiled):
    """Straight through the C API (no Python checks): NULL pointers and bad counts."""
    ffi, lib, p = compiled.ffi, compiled.lib, compiled.prefix
    fn = lambda name: getattr(lib, f"{p}_{name}")          # noqa: E731
    ERR_ARG = getattr(lib, f"{p.upper()}_ERR_ARG")
    m = compiled._handle()
    res = ffi.new(f"{p}_result[1]")
    ids = ffi.new("int32_t[]", [2, 5, 3])
    assert fn("classify")(ffi.NULL, ids, ffi.NULL, 3, res) == ERR_ARG
    assert fn("classify")(m, ffi.NULL, ffi.NULL, 3, res) == ERR_ARG
    assert fn("classify")(m, ids, ffi.NULL, 3, ffi.NULL) == ERR_ARG
    assert fn("classify_batch")(m, ids, ffi.NULL, ffi.new("int32_t[]", [3]), -1, res) == ERR_ARG
    assert fn("classify_batch")(m, ids, ffi.NULL, ffi.NULL, 0, ffi.NULL) == 0           # empty batch
    assert fn("set_threads")(m, 0) == ERR_ARG
    assert fn("open")(ffi.NULL, ffi.new(f"{p}_model **")) == ERR_ARG
    assert fn("classify")(m, ids, ffi.NULL, 3, res) == 0
    assert res[0].exit_layer >= 1
    assert ffi.string(fn("strerror")(12345)) == b"unknown status code"
    assert fn("label_name")(m, 3) == ffi.NULL
    assert ffi.string(fn("label_name")(m, 2)) == b"label_2"


def test_count_policy_settings(tmp_path):
    cm = codegen.compile_model(small_model(), refexit.Patience(1), tmp_path / "pat", prefix="pat",
                               max_length=MAX_LEN)
    for bad in (1.5, -1, math.nan, math.inf):
        with pytest.raises(refexit.InputError):
            cm.set_threshold(bad)
    with pytest.raises(refexit.InputError, match="ERR_ARG"):
        cm.set_thresholds([1, 1])
    with pytest.raises(refexit.InputError, match="compiled for the patience policy"):
        cm.set_policy(refexit.Entropy(0.5))
    cm.set_threshold(2)
    assert cm.thresholds.tolist() == [2.0, 2.0]


def test_final_classifier_only(tmp_path):
    """A plain sequence classifier (no exit heads): Static(L) compiles; other layers are refused."""
    model = small_model()
    for i in range(model.num_layers - 1):
        model.exits.heads[i] = None
    model.exits.lte = model.exits.ponder = None
    with pytest.raises(refexit.InputError, match="needs exit heads"):
        codegen.compile_model(model, refexit.Entropy(0.5), tmp_path / "no", prefix="nohead")
    cm = codegen.compile_model(model, None, tmp_path / "cls", prefix="clsonly", max_length=MAX_LEN)
    ref = model.astype(np.float64).classify(GOOD)
    got = cm.classify(GOOD)
    assert got.exit_layers.tolist() == [3, 3]
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.flops, ref.flops)
    for k in (1, 2):
        with pytest.raises(refexit.InputError, match="ERR_ARG"):
            cm.set_threshold(k)
    assert [h for h in cm.manifest["heads"]] == ["none", "none", "pooler_linear"]


def test_bad_prefixes(tmp_path):
    for bad in ("x", "W", "9lives", "_hidden", "a-b", "a" * 50):
        with pytest.raises(refexit.InputError, match="prefix"):
            codegen.compile_model(small_model(), None, tmp_path, prefix=bad)
