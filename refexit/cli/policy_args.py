"""The exit-policy options, one definition for every command that takes them (classify, compile).

One rule: without --policy the full model runs (no early exit); a policy's setting given without
--policy (--threshold, --patience, ...) or one the chosen policy does not use is an error that says
so, never silently ignored or silently turned into some default policy."""
from __future__ import annotations

import argparse

from refexit.errors import InputError

POLICY_NAMES = ("entropy", "norm_entropy", "max_prob", "patience", "learned", "ponder", "window", "static", "de3",
                "edgebert", "ceebert", "gpf", "dact")
THRESHOLD_POLICIES = ("entropy", "norm_entropy", "max_prob", "learned", "ponder", "de3", "edgebert", "gpf")
# option -> the policies that use it
SETTINGS = {"threshold": THRESHOLD_POLICIES, "temperatures": ("max_prob",), "patience": ("patience",),
            "window": ("window",), "tau": ("patience", "window"), "layer": ("static",),
            "strict": ("norm_entropy",), "lam": ("de3",), "check_between": ("edgebert",),
            "cost": ("ceebert",), "arms": ("ceebert",), "ucb_c": ("ceebert",)}
POLICY_NAMES += ("smartbert",)                       # SmartBERT: skip gates + entropy exit
THRESHOLD_POLICIES += ("smartbert",)
SETTINGS["threshold"] = THRESHOLD_POLICIES
SETTINGS["gate"] = ("smartbert",)


def add_policy_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("exit policy", "Without --policy the full model runs (no early exit).")
    g.add_argument("--policy", choices=POLICY_NAMES, default=None,
                   help="exit rule: " + ", ".join(POLICY_NAMES))
    g.add_argument("--threshold", metavar="X[,X...]",
                   help="threshold of entropy, norm_entropy, max_prob, learned, ponder, de3, edgebert, gpf: one number, or one "
                        "per exit layer 1..L-1, comma-separated")
    g.add_argument("--temperatures", metavar="T[,T...]",
                   help="max_prob: per-layer temperatures (default: the model's calibrated ones, else 1)")
    g.add_argument("--patience", type=int, metavar="T", help="patience: agreeing layers needed (0: full model)")
    g.add_argument("--window", type=int, metavar="N", help="window: the same prediction for N layers")
    g.add_argument("--tau", type=float, help="patience / window on a regression head: agreement tolerance")
    g.add_argument("--layer", type=int, metavar="K", help="static: exit at layer K (default: the last)")
    g.add_argument("--strict", action="store_true", default=None,
                   help="norm_entropy: exit on < instead of <=")
    g.add_argument("--lam", type=float, metavar="W",
                   help="de3: weight of the prototype distance ratio in the harmonic mean with the "
                        "normalised entropy (default 1)")
    g.add_argument("--check-between", action="store_true", default=None,
                   help="edgebert: also apply the entropy rule at the layers before the predicted one")
    g.add_argument("--cost", type=float, metavar="O",
                   help="ceebert: the reward's cost per layer a sample goes on (larger: earlier exits)")
    g.add_argument("--arms", metavar="A[,A...]",
                   help="ceebert: the thresholds its bandits choose from (default 0.5,0.55,...,0.95)")
    g.add_argument("--ucb-c", type=float, metavar="C", help="ceebert: UCB exploration constant (default 2)")
    g.add_argument("--gate", type=float, metavar="G",
                   help="smartbert: skip a layer when its gate's sigmoid >= G (default 0.5; above 1: never)")


def _floats(text: str, what: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be a number or comma-separated numbers, got {text!r}") from None
    if not vals:
        raise InputError(f"{what} is empty")
    return vals[0] if len(vals) == 1 else vals


def policy_from_args(args, num_layers: int | None = None):
    """The refexit policy the command line describes, or None (the full model)."""
    from refexit import policies as P
    name = getattr(args, "policy", None)
    given = [k for k in SETTINGS if getattr(args, k, None) not in (None, False)]
    if name is None:
        if given:
            raise InputError(f"--{given[0]} needs --policy (which exit rule it is for, e.g. --policy "
                             f"{SETTINGS[given[0]][0]}); without --policy the full model runs")
        return None
    unused = [k for k in given if name not in SETTINGS[k]]
    if unused:
        raise InputError(f"--{unused[0]} is not a setting of --policy {name} (it is for "
                         f"{', '.join(SETTINGS[unused[0]])})")
    if name in THRESHOLD_POLICIES:
        if args.threshold is None:
            raise InputError(f"--policy {name} needs --threshold X (or X1,X2,... one per layer)")
        thr = _floats(args.threshold, "--threshold")
        if name == "norm_entropy":
            return P.NormEntropy(thr, inclusive=not args.strict)
        if name == "max_prob":
            temps = None if args.temperatures is None else _floats(args.temperatures, "--temperatures")
            return P.MaxProb(thr, temperatures=temps)
        if name == "de3":
            return P.DistanceEntropy(thr, lam=1.0 if args.lam is None else args.lam)
        if name == "edgebert":
            return P.PredictedExit(thr, check_between=bool(args.check_between))
        if name == "smartbert":
            return P.SkipEntropy(thr, gate=0.5 if args.gate is None else args.gate)
        return {"entropy": P.Entropy, "learned": P.Learned, "ponder": P.Ponder, "gpf": P.GlobalPastFuture}[name](thr)
    if name == "ceebert":
        if args.cost is None:
            raise InputError("--policy ceebert needs --cost O (the reward's cost per layer, e.g. 0.02)")
        arms = P.CeeBERT.ARMS if args.arms is None else _floats(args.arms, "--arms")
        return P.CeeBERT(args.cost, arms=[arms] if isinstance(arms, float) else arms,
                         c=2.0 if args.ucb_c is None else args.ucb_c)
    if name == "dact":                  # no setting: the trade-off was trained (train-exits --dact-tau)
        return P.DACT()
    if name == "patience":
        if args.patience is None:
            raise InputError("--policy patience needs --patience T (0 runs the full model)")
        return P.Patience(args.patience, tau=args.tau)
    if name == "window":
        if args.window is None:
            raise InputError("--policy window needs --window N")
        return P.Window(args.window, tau=args.tau)
    if name == "static":
        layer = args.layer if args.layer is not None else num_layers
        if layer is None:
            raise InputError("--policy static needs --layer K")
        return P.Static(layer)
    raise InputError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")
