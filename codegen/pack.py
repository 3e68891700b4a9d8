"""Packing: the model's weights -> one blob file `<prefix>.weights` that the C code memory-maps.

Format version 3, all integers little-endian, all arrays little-endian float32 except the layer
GEMMs' packed weights of a bf16 file (little-endian bfloat16 bits):

    offset  size  field
         0     8  magic b"REFEXITW"
         8     4  format version (3)
        12     4  header size (192)
        16    32  model hash: SHA-256 of the payload (bytes [payload offset, file size))
        48     8  file size
        56     8  payload offset (= header size)
        64     8  payload size
        72     4  checksum: CRC-32 (ISO-HDLC, as zlib.crc32) of the payload
        76     4  precision of the layer GEMMs' weights: 0 fp32, 1 bf16, 2 int8 (PRECISION_CODES)
        80     8  vocab offset (absolute) of the trailing vocab.txt section
        88     8  vocab length in bytes (0: no tokenizer section)
        96    64  16 x u32 dims: vocab, hidden, layers, attention heads, intermediate, positions,
                  token types, labels, exit feature size F, fastbert width, fastbert heads,
                  ponder hidden, number of arrays, projected embedding size E (0: none),
                  position offset (RoBERTa), shared layers (1: ALBERT)
       160    32  reserved (0)
       192     .  payload: the arrays, each starting at a 64-byte aligned file offset (zero padding
                  between them), in the fixed order of `tensor_order`, then the tokenizer section,
                  also 64-byte aligned: the vocab.txt bytes (UTF-8, one token per line) of a
                  WordPiece model, or the packed byte-level BPE tables of a RoBERTa-style model
                  (codegen.tokenizer_emit.pack_bpe: magic "RXBPE\0\0\1"), or the packed Unigram tables of an
                  ALBERT-style model (pack_unigram: "RXUNI\0\0\1"), or nothing.

Array order: emb.word [V,H], emb.pos [P,H], emb.type [Tt,H] (not without token types: DistilBERT),
emb.ln.w, emb.ln.b (widths E instead of H, then emb.proj.w [H,E], emb.proj.b [H], when the model
projects its embeddings: ALBERT, ELECTRA with E != H); per layer i (ALBERT: layer 0 only, its one
shared layer):
attn.qkv.w (packed, the q, k, v weights one after the other: 3H outputs), attn.qkv.b [3H],
attn.o.w (packed), attn.o.b, attn.ln.{w,b}, ffn.up.w (packed), ffn.up.b, ffn.down.w (packed),
ffn.down.b, ffn.ln.{w,b}; pooler.{w,b} (if the model has one); per layer with an exit head, its
parameters in refexit.heads.param_shapes order; lte.{w [1,F], b [1]} (if any); ponder.{pos [L,F],
hid.w [P,F], hid.b, out.w [1,P], out.b [1]} (if any); prototypes [L-1,C,F] (DE3-BERT, if any);
edge_table [K,L-1] (EdgeBERT, if any); dact.{w [L-1,F], b [L-1]} (DACT-BERT, if any).

Packed (the layer GEMMs' weights, in the GEMM micro-kernel's panel layout): a Linear weight
W [N out, K in] becomes [ceil(N / PANEL)][K][PANEL]: panel p holds outputs p*PANEL .. p*PANEL+31,
k-major, so the kernel reads one contiguous PANEL-float row of weights per step of k; outputs past
N are zero. The layout does not depend on the instruction set (scalar, AVX2 and AVX-512 code read
the same file). Every other Linear weight (pooler, exit heads) keeps Hugging Face's [out, in].

bf16 files (precision 1) store those four packed weights as bfloat16 (rounded to nearest even,
subnormals flushed to zero), in pairs of k: W [N, K] becomes [ceil(N / PANEL)][Kp / 2][PANEL][2]
with Kp = K rounded up to a multiple of BF16_K (32; zeros past K): out[p, kk, j, e] =
W[p*PANEL + j, 2 kk + e]. One row of a panel (PANEL pairs, 128 bytes) is then one step of
VDPBF16PS on two 512-bit registers, and 16 rows of half a panel are one AMX B tile (16 pairs x
16 outputs, row stride 128 bytes); the scalar and AVX2 code read the same layout. Everything else
stays float32.

int8 files (precision 2) store them quantized per output channel (refexit.nn.quantize_int8:
symmetric, q in [-127, 127], W ~ q * scale), in groups of four k: [ceil(N / PANEL)][Kp / 4][PANEL][4]
int8 with Kp = K rounded up to INT8_K (64; zeros past K and N), one 128-byte row per four k (one
VPDPBUSD step on two registers; 16 rows of half a panel are one AMX B tile). Each such weight is
followed by two arrays of ceil(N / PANEL) * PANEL values (0 past N): `<name>s`, the float32 scales,
and `<name>sum`, the int32 sums of q over k (VPDPBUSD multiplies unsigned by signed bytes: the C
feeds it q_x + 128 and subtracts 128 * sum). The fused query / key / value weight (attn.qkv.w) is the
exception: int8 files keep it as bf16 panels, as a bf16 file does, with no scales or sums
(refexit.nn.INT8_IN_BF16, measured in docs/codegen.md "Precisions").

The model hash covers the arrays and the vocabulary, so a weights file made from another model
(or another tokenizer) is refused by code generated for this one; the checksum catches corruption.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refexit import files
from refexit.errors import CheckpointError
from refexit.heads import param_shapes

MAGIC = b"REFEXITW"
FORMAT_VERSION = 3
PANEL = 32                 # outputs per packed weight panel (the micro-kernel's NR)
BF16_K = 32                # bf16 panels: K padded to a multiple of this (one AMX tile of k)
INT8_K = 64                # int8 panels: the same for int8 (64 bytes of k per AMX tile row)
PRECISION_CODES = {"fp32": 0, "bf16": 1, "int8": 2}
HEADER_SIZE = 192
ALIGN = 64
HEADER = struct.Struct("<8sII32sQQQIIQQ16I32x")
assert HEADER.size == HEADER_SIZE

_LAYER_PARTS = ("attn.qkv.w", "attn.qkv.b", "attn.o.w", "attn.o.b", "attn.ln.w", "attn.ln.b", "ffn.up.w",
                "ffn.up.b", "ffn.down.w", "ffn.down.b", "ffn.ln.w", "ffn.ln.b")
_PACKED = ("attn.qkv.w", "attn.o.w", "ffn.up.w", "ffn.down.w")     # stored as panels


def packed_in_bf16() -> tuple[str, ...]:
    """The packed weights an int8 file keeps in bf16: refexit.nn.INT8_IN_BF16 in the C's terms (q, k
    and v are one fused GEMM there, so they go together; the C supports exactly that one)."""
    from refexit.nn import INT8_IN_BF16
    keep = set(INT8_IN_BF16)
    if keep not in (set(), {"attn.q", "attn.k", "attn.v"}):
        raise AssertionError(f"INT8_IN_BF16 {sorted(keep)}: the C keeps only the fused q, k, v in bf16")
    return ("attn.qkv.w",) if keep else ()


def weight_precision(name: str, precision: str) -> str:
    """What the packed weight `name` (layers.{i}.<part>) of a `precision` file is stored in."""
    if precision == "int8" and name.split(".", 2)[2] in packed_in_bf16():
        return "bf16"
    return precision
_PONDER_PARTS = ("pos", "hid.w", "hid.b", "out.w", "out.b")


@dataclass(frozen=True)
class Slot:
    name: str          # canonical name (refexit.checkpoint), e.g. "layers.0.attn.q.w", "heads.1.fc.b"
    shape: tuple
    offset: int        # absolute byte offset in the file, multiple of ALIGN
    dtype: str = "<f4"  # "<f4", or "<u2" for bfloat16 bits

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.count


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tensor_order(model, plan) -> list[str]:
    names = ["emb.word", "emb.pos"] + (["emb.type"] if plan.token_types else []) + ["emb.ln.w", "emb.ln.b"]
    if plan.embedding_size:
        names += ["emb.proj.w", "emb.proj.b"]
    parts = _LAYER_PARTS
    if plan.precision == "int8":               # each packed weight, then its scales and sums
        parts = sum(([p, p + "s", p + "sum"] if p in _PACKED and p not in packed_in_bf16() else [p]
                     for p in _LAYER_PARTS), [])
    for i in range(1 if plan.shared_layers else plan.num_layers):
        names += [f"layers.{i}.{p}" for p in parts]
    if plan.has_pooler:
        names += ["pooler.w", "pooler.b"]
    for i, h in enumerate(plan.heads):
        if h.kind != "none":
            names += [f"heads.{i}.{p}" for p in param_shapes(h.kind, plan.hidden, plan.num_labels,
                                                               h.width or 128, layer=i + 1)]
    if plan.lte:
        names += ["lte.w", "lte.b"]
    if plan.ponder_hidden:
        names += [f"ponder.{p}" for p in _PONDER_PARTS]
    if getattr(plan, "prototypes", False):
        names += ["prototypes"]
    if getattr(plan, "edge_rows", 0):
        names += ["edge_table"]
    if getattr(plan, "gpf", False):
        from refexit.gpf import PARTS
        names += [f"gpf.{p}" for p in PARTS]
    if getattr(plan, "dact", False):
        names += ["dact.w", "dact.b"]
    if getattr(plan, "gate_width", 0):           # SmartBERT skip gates, layer by layer
        from refexit.skipgates import PARTS
        names += [f"gates.{i}.{p}" for i in range(plan.num_layers) for p in PARTS]
    return names


def pack_panels(w: np.ndarray) -> np.ndarray:
    """W [N, K] -> [ceil(N / PANEL), K, PANEL] float32: out[p, k, j] = W[p*PANEL + j, k] (0 past N)."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    p = -(-n // PANEL)
    padded = np.zeros((p * PANEL, k), np.float32)
    padded[:n] = w
    return np.ascontiguousarray(padded.reshape(p, PANEL, k).transpose(0, 2, 1))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bits, as refexit.nn.round_bf16 rounds (nearest even, subnormals 0)."""
    from refexit.nn import round_bf16
    return (round_bf16(np.asarray(x, np.float32)).view(np.uint32) >> 16).astype(np.uint16)


def pack_panels_bf16(w: np.ndarray) -> np.ndarray:
    """W [N, K] -> [ceil(N / PANEL), Kp / 2, PANEL, 2] bf16 bits (Kp: K rounded up to BF16_K):
    out[p, kk, j, e] = bf16(W[p*PANEL + j, 2 kk + e]), zero past N and K."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    p, kp = -(-n // PANEL), -(-k // BF16_K) * BF16_K
    padded = np.zeros((p * PANEL, kp), np.float32)
    padded[:n, :k] = w
    return np.ascontiguousarray(bf16_bits(padded).reshape(p, PANEL, kp // 2, 2).transpose(0, 2, 1, 3))


def quantized(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [N, K] -> (packed q [ceil(N/PANEL), Kp/4, PANEL, 4] int8, scales [P*PANEL] float32,
    sums of q over k [P*PANEL] int32), zeros past N and K (refexit.nn.quantize_int8)."""
    from refexit.nn import quantize_int8
    q, scale = quantize_int8(w)
    n, k = q.shape
    p, kp = -(-n // PANEL), -(-k // INT8_K) * INT8_K
    padded = np.zeros((p * PANEL, kp), np.int8)
    padded[:n, :k] = q
    packed = np.ascontiguousarray(padded.reshape(p, PANEL, kp // 4, 4).transpose(0, 2, 1, 3))
    scales = np.zeros(p * PANEL, np.float32)
    scales[:n] = scale
    return packed, scales, padded.sum(axis=1, dtype=np.int32)


def _is_packed(name: str) -> bool:
    return name.startswith("layers.") and name.split(".", 2)[2] in _PACKED


def _layer_array(model, name: str, precision: str = "fp32") -> np.ndarray:
    """layers.{i}.attn.qkv.{w,b} (q, k, v concatenated) and the packed weights (bf16 / int8 panels
    for those precisions; int8 also <weight>s and <weight>sum)."""
    _, i, part = name.split(".", 2)
    extra = {"ws": 1, "wsum": 2}.get(part.rsplit(".", 1)[-1])          # int8 scales / sums
    if extra:
        part = part.rsplit(".", 1)[0] + ".w"
    if part.startswith("attn.qkv."):
        suf = part[-1]
        arr = np.concatenate([np.asarray(model.weights[f"layers.{i}.attn.{x}.{suf}"], np.float32)
                              for x in "qkv"])
    else:
        arr = model.weights[f"layers.{i}.{part}"]
    if not _is_packed(f"layers.{i}.{part}"):
        return arr
    precision = weight_precision(f"layers.{i}.{part}", precision)
    if precision == "int8":
        return quantized(arr)[extra or 0]
    return pack_panels_bf16(arr) if precision == "bf16" else pack_panels(arr)


def array_shape(model, name: str, precision: str = "fp32") -> tuple:
    """The shape of get_array(model, name, precision), without packing anything."""
    if not name.startswith("layers."):
        return tuple(int(d) for d in np.shape(get_array(model, name)))
    _, i, part = name.split(".", 2)
    extra = part.rsplit(".", 1)[-1] in ("ws", "wsum")
    if extra:
        part = part.rsplit(".", 1)[0] + ".w"
        name = f"layers.{i}.{part}"
    if part.startswith("attn.qkv."):
        n, *k = np.shape(model.weights[f"layers.{i}.attn.q.{part[-1]}"])
        shape = (3 * n, *k)
    else:
        shape = np.shape(model.weights[name])
    if _is_packed(name):
        n, k = shape
        precision = weight_precision(name, precision)
        if extra:
            return (-(-int(n) // PANEL) * PANEL,)
        if precision == "int8":
            return (-(-int(n) // PANEL), -(-int(k) // INT8_K) * INT8_K // 4, PANEL, 4)
        if precision == "bf16":
            return (-(-int(n) // PANEL), -(-int(k) // BF16_K) * BF16_K // 2, PANEL, 2)
        return (-(-int(n) // PANEL), int(k), PANEL)
    return tuple(int(d) for d in shape)


def array_dtype(name: str, precision: str = "fp32") -> str:
    if name.endswith(".wsum"):
        return "<i4"
    if _is_packed(name):
        precision = weight_precision(name, precision)
    if precision == "int8" and _is_packed(name):
        return "|i1"
    return "<u2" if precision == "bf16" and _is_packed(name) else "<f4"


def get_array(model, name: str, precision: str = "fp32") -> np.ndarray:
    """Canonical name -> the array stored in the blob (backbone, heads.{i}.*, lte.*, ponder.*);
    layers.{i}.attn.qkv.* are the fused q, k, v, the layer GEMMs' weights come packed."""
    if name.startswith("layers."):
        return _layer_array(model, name, precision)
    ep = model.exits
    if name.startswith("heads."):
        _, i, rest = name.split(".", 2)
        return ep.heads[int(i)].params[rest]
    if name.startswith("lte."):
        return ep.lte[name[4:]]
    if name.startswith("ponder."):
        return ep.ponder[name[7:]]
    if name == "prototypes":
        return ep.prototypes
    if name == "edge_table":
        return ep.edge_table
    if name.startswith("gpf."):
        return ep.gpf[name[4:]]
    if name.startswith("dact."):
        return ep.dact[name[5:]]
    if name.startswith("gates."):
        _, i, rest = name.split(".", 2)
        return ep.gates[int(i)][rest]
    return model.weights[name]


def layout(model, plan) -> list[Slot]:
    slots, pos = [], HEADER_SIZE
    for name in tensor_order(model, plan):
        slot = Slot(name, array_shape(model, name, plan.precision), _align(pos),
                    array_dtype(name, plan.precision))
        slots.append(slot)
        pos = slot.offset + slot.nbytes
    return slots


def vocab_offset(plan) -> int:
    last = plan.tensors[-1]
    return _align(last.offset + last.nbytes)


def file_size(plan) -> int:
    return vocab_offset(plan) + len(plan.vocab_bytes)


def _payload_chunks(model, plan):
    """The payload bytes in order, in pieces (padding, array, padding, ..., vocab)."""
    pos = HEADER_SIZE
    for slot in plan.tensors:
        if slot.offset > pos:
            yield bytes(slot.offset - pos)
        arr = np.ascontiguousarray(get_array(model, slot.name, plan.precision), dtype=slot.dtype)
        if arr.shape != slot.shape:
            raise CheckpointError(f"{slot.name}: shape {arr.shape} changed since lowering ({slot.shape})")
        yield memoryview(arr).cast("B")
        pos = slot.offset + slot.nbytes
    voff = vocab_offset(plan)
    if voff > pos:
        yield bytes(voff - pos)
    yield plan.vocab_bytes


def model_hash(model, plan) -> str:
    h = hashlib.sha256()
    for chunk in _payload_chunks(model, plan):
        h.update(chunk)
    return h.hexdigest()


def header_bytes(plan, checksum: int) -> bytes:
    size = file_size(plan)
    return HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, bytes.fromhex(plan.model_hash), size,
                       HEADER_SIZE, size - HEADER_SIZE, checksum, PRECISION_CODES[plan.precision],
                       vocab_offset(plan),
                       len(plan.vocab_bytes), *plan.dims())


def write_blob(model, plan, path: str | Path) -> Path:
    """Write `<prefix>.weights` atomically (temp file + rename); checks the hash on the way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(HEADER_SIZE))
            crc, sha = 0, hashlib.sha256()
            for chunk in _payload_chunks(model, plan):
                crc = zlib.crc32(chunk, crc)
                sha.update(chunk)
                f.write(chunk)
            if sha.hexdigest() != plan.model_hash:
                raise CheckpointError("the model's weights changed between lowering and packing")
            f.seek(0)
            f.write(header_bytes(plan, crc))
        files.set_mode(tmp)                  # mkstemp made it 0600: the user's umask decides
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class Header:
    magic: bytes
    version: int
    header_size: int
    model_hash: str
    file_size: int
    payload_offset: int
    payload_size: int
    checksum: int
    precision: str
    vocab_offset: int
    vocab_length: int
    dims: tuple


def read_header(path: str | Path) -> Header:
    """Parse a blob header (no checks beyond its size): for tools and tests."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) < HEADER_SIZE:
        raise CheckpointError(f"{path}: truncated header ({len(raw)} of {HEADER_SIZE} bytes)")
    f = HEADER.unpack(raw)
    names = {code: name for name, code in PRECISION_CODES.items()}
    return Header(f[0], f[1], f[2], f[3].hex(), f[4], f[5], f[6], f[7], names.get(f[8], f"unknown ({f[8]})"),
                  f[9], f[10], tuple(f[11:]))


def read_vocab(path: str | Path) -> list[str]:
    """The vocab.txt section of a blob, as a token list (a blob of a byte-level BPE or Unigram model
    holds its packed tables there instead: a CheckpointError says so)."""
    h = read_header(path)
    try:
        with open(path, "rb") as f:
            f.seek(h.vocab_offset)
            data = f.read(h.vocab_length)
    except (OSError, OverflowError, ValueError) as e:
        raise CheckpointError(f"cannot read the vocabulary of {path}: {e}") from None
    if len(data) != h.vocab_length:
        raise CheckpointError(f"{path}: truncated vocabulary section ({len(data)} of {h.vocab_length} bytes)")
    from .tokenizer_emit import BPE_MAGIC, UNIGRAM_MAGIC
    for magic, what in ((BPE_MAGIC, "byte-level BPE"), (UNIGRAM_MAGIC, "Unigram")):
        if data.startswith(magic):
            raise CheckpointError(f"{path}: the tokenizer section holds packed {what} tables, not a vocab.txt")
    try:
        return data.decode("utf-8").split("\n")[:-1] if data else []
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: the vocabulary section is not UTF-8 ({e}); the file is corrupted "
                              f"or was replaced (compile again)") from None
