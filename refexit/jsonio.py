"""One strict JSON reader for every file refexit reads (config.json, tokenizer_config.json, the
safetensors header and its metadata, exits metadata, compiled manifests).

Python's `json` accepts things a crafted file can use to hurt: duplicate keys (the last one wins,
silently), nesting deep enough to raise RecursionError, integers of thousands of digits (slow to
convert, then ValueError), NaN / Infinity, and any top-level type. Here each of those is an error
of the caller's class (a RefexitError subclass) that names the file:

    loads(text, where, error)          -> any JSON value, strictly parsed
    read_object(path, error, ...)      -> the JSON object in a file (None when optional and absent)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import ConfigError

MAX_DEPTH = 32                 # no refexit file nests deeper than a few levels
MAX_INT_DIGITS = 40            # HF writes model_max_length = int(1e30) (31 digits)
MAX_FILE_BYTES = 64 << 20      # a config / manifest is a few kB


class _Reject(ValueError):
    pass


def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _Reject(f"duplicate key {k!r}")
        d[k] = v
    return d


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Reject(f"an integer of {len(s.lstrip('-'))} digits")
    return int(s)


def _float(s: str) -> float:
    if len(s) > 400:
        raise _Reject(f"a number of {len(s)} characters")
    v = float(s)
    if not math.isfinite(v):
        raise _Reject(f"the number {s[:40]} overflows")
    return v


def _constant(s: str):
    raise _Reject(f"{s} is not JSON")


def _depth(value) -> int:
    """Nesting depth (iterative: never recurses)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v)
    return deepest


def loads(text: str | bytes, where: str, error: type = ConfigError, max_depth: int = MAX_DEPTH):
    """Parse JSON strictly; any problem raises `error` starting with `where`."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{where}: not UTF-8 text ({e})") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float,
                           parse_constant=_constant)
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    except _Reject as e:
        raise error(f"{where}: not valid JSON ({e})") from None
    except ValueError as e:                              # JSONDecodeError, int conversion limits
        raise error(f"{where}: not valid JSON ({e})") from None
    if _depth(value) > max_depth:
        raise error(f"{where}: not valid JSON for refexit (nested deeper than {max_depth} levels)")
    return value


def read_object(path: str | Path, error: type = ConfigError, required: bool = True,
                what: str = "", max_bytes: int = MAX_FILE_BYTES) -> dict | None:
    """The JSON object stored in `path`. Absent: None if not `required`, else `error` (with `what`,
    a hint of what the file is for). A directory, an unreadable or oversized file, invalid JSON or
    a non-object raise `error`."""
    path = Path(path)
    try:
        exists = path.exists()
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror})") from None
    if not exists:
        if required:
            raise error(f"{path} does not exist{f' ({what})' if what else ''}")
        return None
    if not path.is_file():
        raise error(f"{path} is not a regular file (a JSON file is expected there)")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror})") from None
    if len(raw) > max_bytes:
        raise error(f"{path} is larger than {max_bytes} bytes; not a refexit JSON file")
    value = loads(raw, str(path), error)
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object ({{...}}), got a {type_name(value)}")
    return value


def type_name(value) -> str:
    """JSON's name for the type of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
