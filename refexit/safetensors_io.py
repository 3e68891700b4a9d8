"""A strict safetensors reader (memory-mapped, never a pickle) and a writer.

Reading is our own ~50 lines so that a truncated or corrupted file gives an error naming the
tensor and the byte counts, instead of a library panic. Format: u64 little-endian header size N,
N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
then the data; offsets are relative to the end of the header.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from . import jsonio, validate
from .errors import CheckpointError

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
MAX_HEADER = 100 * 1024 * 1024
MAX_DIMS = 8


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """-> (tensors by name, metadata). Float16/bfloat16 tensors are widened to float32."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: truncated or not a safetensors file (header claims "
                                      f"{n} bytes, file has {size})")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    header = jsonio.loads(raw, f"{path}: corrupted safetensors header", CheckpointError)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: safetensors '__metadata__' must be an object of strings, got "
                              f"{str(meta)[:60]}")
    base = 8 + n
    entries = [_entry(path, name, info, size - base) for name, info in header.items()]
    spans = sorted((b, e, name) for name, _, _, b, e in entries if e > b)
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} share bytes (overlapping data_offsets)")
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    tensors = {}
    for name, dtype_name, shape, begin, end in entries:
        dt = DTYPES[dtype_name]
        arr = data[base + begin: base + end].view(dt).reshape(shape)
        if dtype_name == "BF16":                     # bfloat16 = the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dtype_name == "F16":
            arr = arr.astype(np.float32)
        tensors[name] = arr
    return tensors, dict(meta)


def _entry(path, name: str, info, available: int) -> tuple:
    """One header entry, checked: -> (name, dtype, shape, begin, end) with end <= available."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {str(info)[:80]} "
                              f"(expected dtype, shape, data_offsets)")
    dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {str(dtype_name)[:20]!r}, not one of "
                              f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise CheckpointError(f"{path}: tensor {name!r}: shape must be a list of at most {MAX_DIMS} sizes")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise CheckpointError(f"{path}: tensor {name!r}: data_offsets must be [begin, end]")
    what = f"{path}: tensor {name!r}"
    shape = tuple(validate.integer(d, f"{what}: a shape entry", 0, 1 << 40, CheckpointError) for d in shape)
    begin, end = (validate.integer(o, f"{what}: data_offsets", 0, 1 << 62, CheckpointError) for o in offsets)
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype_name]).itemsize
    if end - begin != nbytes:
        raise CheckpointError(f"{what} {dtype_name}{list(shape)} needs {nbytes} bytes but its offsets span "
                              f"{end - begin}")
    if end > available:
        raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {end} of the data, "
                              f"the file holds {available}")
    return name, dtype_name, shape, begin, end


def write(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """Write tensors (C-contiguous copies) atomically: temp file then rename."""
    path = Path(path)
    header, offset, blobs = {}, 0, []
    inv = {np.dtype(v): k for k, v in DTYPES.items() if k not in ("BF16",)}
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in inv:
            raise CheckpointError(f"cannot write tensor {name!r} of dtype {a.dtype}")
        header[name] = {"dtype": inv[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)                        # keep the data 8-byte aligned
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
