"""Typed, bounded checks of values read from files (JSON fields, metadata strings), shared by every
loader so that a wrong type or an absurd size is one clear error class, never a TypeError deep
inside, a huge allocation or a truncation:

    integer(value, what, lo, hi, error)         an int (not bool, not 150.5 or 150.0) in [lo, hi]
    number(value, what, error, positive=...)    a finite real number
    boolean(value, what, error)                 true / false only
    string(value, what, error, optional=...)    a str (or None)
    label_names(names, count, where, error)     C class names: strings, unique, valid UTF-8, no NUL
"""
from __future__ import annotations

import math

from .errors import ConfigError
from .jsonio import type_name

MISSING = object()
MAX_LABEL_BYTES = 4096


def integer(value, what: str, lo: int, hi: int, error: type = ConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):    # 150.5 (or 150.0) is not a size
        raise error(f"{what} must be a whole number in [{lo}, {hi}], got {_show(value)}")
    if not lo <= value <= hi:
        raise error(f"{what} must be in [{lo}, {hi}], got {_show(value)}")
    return int(value)


def number(value, what: str, error: type = ConfigError, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{what} must be a number, got {_show(value)}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise error(f"{what} must be a {'positive ' if positive else ''}finite number, got {_show(value)}")
    return v


def boolean(value, what: str, error: type = ConfigError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{what} must be true or false, got {_show(value)}")
    return value


def string(value, what: str, error: type = ConfigError, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise error(f"{what} must be a string{' or null' if optional else ''}, got {_show(value)}")
    return value


def string_list(value, what: str, error: type = ConfigError) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise error(f"{what} must be a list of strings, got {_show(value)}")
    return list(value)


def label_names(names, count: int | None, where: str, error: type = ConfigError) -> list[str]:
    """Class names as the compiled C and the JSON output hold them: `count` of them (when given),
    each a string of valid UTF-8 without NUL, at most MAX_LABEL_BYTES bytes, no two equal."""
    if not isinstance(names, (list, tuple)):
        raise error(f"{where}: label names must be a list of strings, got {_show(names)}")
    if count is not None and len(names) != count:
        raise error(f"{where}: {len(names)} label name(s) {_show(list(names))} for a model with "
                    f"{count} output(s)")
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise error(f"{where}: label name {i} must be a string, got {_show(n)}")
        try:
            size = len(n.encode("utf-8"))
        except UnicodeEncodeError:
            raise error(f"{where}: label name {i} {n!r} is not valid Unicode (a lone surrogate)") from None
        if "\0" in n:
            raise error(f"{where}: label name {i} {n!r} contains a NUL character")
        if size > MAX_LABEL_BYTES:
            raise error(f"{where}: label name {i} is {size} bytes long (at most {MAX_LABEL_BYTES})")
    seen = {}
    for i, n in enumerate(names):
        if n in seen:
            raise error(f"{where}: label names {seen[n]} and {i} are both {n!r}")
        seen[n] = i
    return list(names)


def _show(value) -> str:
    """A short description of a bad value for an error message."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type_name(value)})"
