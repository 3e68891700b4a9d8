"""The `refexit` command: one entry point, subcommands registered by the modules that own them."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import RefexitError

# module that owns the subcommand -> it defines add_subcommand(subparsers); the parser's
# `func` default receives the parsed args and returns an exit code.
SUBCOMMAND_MODULES = (
    "refexit.classify_cli",   # refexit classify
    "refexit.data",           # refexit data fetch|list|path
    "refexit.compile_cli",    # refexit compile
    "refexit.train_cli",      # refexit train-exits
    "refexit.evaluate_cli",   # refexit evaluate
    "refexit.demo",           # refexit demo
    "refexit.bench_cli",      # refexit bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refexit", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # an optional part is not installed (codegen needs jinja2/cffi), or not written yet
            if e.name and (e.name.split(".")[0] in ("jinja2", "cffi", "matplotlib") or e.name == name):
                continue
            raise
        mod.add_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RefexitError as e:
        print(f"refexit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
