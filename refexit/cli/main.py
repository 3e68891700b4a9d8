"""The `refexit` command: one entry point, subcommands registered by the modules that own them."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from refexit.errors import OutputError, RefexitError

# module that owns the subcommand -> it defines add_subcommand(subparsers); the parser's
# `func` default receives the parsed args and returns an exit code.
SUBCOMMAND_MODULES = (
    "refexit.cli.classify",   # refexit classify
    "refexit.data",           # refexit data fetch|list|path
    "refexit.cli.compile",    # refexit compile
    "refexit.cli.train",      # refexit train-exits
    "refexit.cli.train_gates",  # refexit train-gates (SmartBERT skip gates)
    "refexit.cli.finetune",   # refexit fine-tune
    "refexit.cli.evaluate",   # refexit evaluate
    "refexit.cli.demo",           # refexit demo
    "refexit.cli.bench",      # refexit bench
    "refexit.cli.score",      # refexit score
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `refexit` parser; `command`: the subcommand about to run (None: any). Only `refexit
    bench` loads the benchmark tool (a file of the source checkout)."""
    from refexit import __version__
    parser = argparse.ArgumentParser(
        prog="refexit", description="Early-exit BERT: a NumPy oracle you can check, and a compiler to C.",
        epilog="Start with: refexit demo   (fetches a real model and data set, trains exit heads, compiles, "
               "classifies). `refexit COMMAND --help` explains each command.")
    parser.add_argument("--version", action="version", version=f"refexit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # an optional part is not installed (codegen needs jinja2/cffi), or not written yet
            if e.name and (e.name.split(".")[0] in ("jinja2", "cffi", "matplotlib") or e.name == name):
                continue
            raise
        if name == "refexit.cli.bench":
            mod.add_subcommand(sub, load=command in ("bench", None))
        else:
            mod.add_subcommand(sub)
    parser.subcommands = sub.choices
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and TEXT arguments in any order (`classify M --exits F "text"`), and a bad option
    answered with the subcommand's own usage: the subcommand's parser parses its arguments."""
    subs = parser.subcommands
    if argv and argv[0] in subs:
        sp = subs[argv[0]]
        try:
            args = sp.parse_intermixed_args(argv[1:])
        except TypeError:                       # a subcommand with its own subcommands (refexit data)
            args = sp.parse_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """One line per warning, without Python's file and source-line noise."""
    print(f"refexit: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else "")
    args = parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("default")          # each distinct message once per run
        warnings.showwarning = _show_warning
        try:
            rc = int(args.func(args) or 0)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:                   # `refexit classify ... | head -1`: the reader is gone
            _silence_stdout()
            return 141
        except RefexitError as e:
            if isinstance(e, OutputError):
                _silence_stdout()
            print(f"refexit {args.command}: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


def write_out(text: str) -> None:
    """Write to stdout now (flushed): a closed pipe raises BrokenPipeError, any other failure
    (a full disk) OutputError, at the first line that cannot be written."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write the output: {e.strerror or e}") from None


def _silence_stdout():
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
