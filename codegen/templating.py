"""The one jinja2 set-up of the compiler and the C literal formatters it gives the templates.

Every emitter (emit.py: the model; text.py / tokenizer_emit.py: the tokenizer and text API;
standalone.py: the programs) renders through `environment()`: templates from the package data
`codegen.templates` when installed, else the source tree's templates/ folder; `cf` / `cd` / `cstr`
print float32 / double / string literals that round-trip exactly.
"""
from __future__ import annotations

import importlib.resources
import math
from pathlib import Path

import jinja2
import numpy as np


# ---------------------------------------------------------------- C literals
def _c_number(x: float, fmt: str, suffix: str) -> str:
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    s = fmt % x
    if not any(c in s for c in ".e"):
        s += ".0"
    return s + suffix


def c_float(x) -> str:
    """float32 literal that round-trips exactly (%.9g)."""
    return _c_number(float(np.float32(x)), "%.9g", "f")


def c_double(x) -> str:
    """double literal that round-trips exactly (%.17g)."""
    return _c_number(float(x), "%.17g", "")


def c_string(text: str) -> str:
    """A C string literal: printable ASCII kept, everything else (and ", \\, ?) as octal escapes."""
    out = []
    for b in str(text).encode("utf-8"):
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\?' else "\\%03o" % b)
    return '"' + "".join(out) + '"'


def c_comment(text: str) -> str:
    """Text safe inside /* */: ASCII only, no comment end, no trigraphs."""
    s = str(text).encode("ascii", "replace").decode("ascii")
    s = "".join(c if 32 <= ord(c) < 127 else " " for c in s).replace("*/", "* /")
    while "??" in s:
        s = s.replace("??", "? ?")
    return s


# ---------------------------------------------------------------- templates
def templates_root():
    """The templates folder: the source tree's top-level templates/ folder when this codegen runs
    from a source tree (an editable install of another checkout must not lend its templates), else
    package data `codegen.templates` when installed."""
    source = Path(__file__).resolve().parent.parent / "templates"
    if (source / "model.c.j2").is_file():
        return source
    try:
        root = importlib.resources.files("codegen.templates")
        if root.joinpath("model.c.j2").is_file():
            return root
    except ModuleNotFoundError:
        pass
    return src


def environment() -> jinja2.Environment:
    root = templates_root()
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: root.joinpath(name).read_text(encoding="utf-8")),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False)
    env.filters.update(cf=c_float, cd=c_double, cstr=c_string)
    env.globals.update(cf=c_float, cd=c_double)
    return env
