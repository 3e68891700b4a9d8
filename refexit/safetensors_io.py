"""A strict safetensors reader (memory-mapped, never a pickle) and a writer.

Reading is our own ~50 lines so that a truncated or corrupted file gives an error naming the
tensor and the byte counts, instead of a library panic. Format: u64 little-endian header size N,
N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
then the data; offsets are relative to the end of the header.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .errors import CheckpointError

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
MAX_HEADER = 100 * 1024 * 1024


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
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupted safetensors header ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        try:
            dt = DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
        if begin < 0 or end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} {info['dtype']}{list(shape)} needs {nbytes} "
                                  f"bytes but its offsets span {end - begin}")
        if base + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {base + end}, "
                                  f"the file has {size}")
        arr = data[base + begin: base + end].view(dt).reshape(shape)
        if info["dtype"] == "BF16":                     # bfloat16 = the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = arr.astype(np.float32)
        tensors[name] = arr
    return tensors, {str(k): str(v) for k, v in meta.items()}


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
