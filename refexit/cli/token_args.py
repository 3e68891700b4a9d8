"""The token-reduction options (refexit/tokens.py) of classify, compile and evaluate:
--keep R1,...,RL (one keep ratio per layer) or --keep-rate R (keep R**i of the tokens in layer i).
Without them every token runs through every layer."""
from __future__ import annotations

import argparse

from refexit.errors import InputError


def add_token_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("token reduction",
                             "Inside layer i, after its attention, keep each sample's ceil(r_i n) most attended "
                             "tokens ([CLS] always); the rest of the model runs on those (docs/methods.md).")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--keep", metavar="R1,...,RL",
                   help="keep ratio of each layer 1..L, in (0, 1], comma-separated (e.g. 1,0.9,0.8,0.7,0.6,0.5)")
    x.add_argument("--keep-rate", type=float, metavar="R", help="keep R**i of each sample's tokens in layer i")


def reduction_from_args(args, num_layers: int):
    """The refexit.TokenReduction the options describe, or None."""
    from refexit.tokens import TokenReduction
    keep, rate = getattr(args, "keep", None), getattr(args, "keep_rate", None)
    if keep is not None:
        try:
            vals = [float(v) for v in keep.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--keep takes comma-separated ratios in (0, 1], got {keep!r}") from None
        tr = TokenReduction(vals)
        tr.check(num_layers)
        return tr
    if rate is not None:
        return TokenReduction.geometric(rate, num_layers)
    return None


def apply_token_args(args, model):
    """model with the token reduction of the options (itself when there is none)."""
    tr = reduction_from_args(args, model.num_layers)
    return model if tr is None else model.with_token_reduction(tr)
