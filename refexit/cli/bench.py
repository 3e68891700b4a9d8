"""`refexit bench`: the side-by-side benchmark of tools/bench.py (ours, the NumPy oracle, ONNX
Runtime, OpenVINO, PyTorch), reachable from the `refexit` command.

A thin wrapper: the tool lives in tools/bench.py of a source checkout (it is not part of the
installed library, and its peers are optional: `pip install .[bench]`)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# a source checkout (editable install), or the checkout the command is run from
CANDIDATES = (Path(__file__).resolve().parent.parent.parent / "tools" / "bench.py", Path.cwd() / "tools" / "bench.py")
TOOL = next((c for c in CANDIDATES if c.is_file()), CANDIDATES[0])


def load_tool():
    """tools/bench.py as a module, or None when this is not run from a source checkout."""
    if not TOOL.is_file():
        return None
    mod = sys.modules.get("refexit_bench_tool")
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location("refexit_bench_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod           # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def _missing(args) -> int:
    from refexit.errors import RefexitError
    raise RefexitError("refexit bench is a tool of the source checkout, not of the installed package: it runs "
                       "tools/bench.py (and optional peers: pip install '.[bench]'). Run it from a clone of "
                       f"the repository (its root as the current folder); {TOOL} is not there")


def add_subcommand(sub, load: bool = True):
    """load=False: register the name only (the tool, a file of the checkout or of the current folder,
    is executed only when `refexit bench` itself runs, never for another command)."""
    tool = load_tool() if load else None
    doc = tool.__doc__ if tool is not None else __doc__
    p = sub.add_parser("bench", help="latency side by side with ONNX Runtime, OpenVINO, PyTorch (tools/bench.py)",
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if not load:
        return
    if tool is None:
        p.set_defaults(func=_missing)
        return
    tool.add_arguments(p)
    p.set_defaults(func=tool.run)
