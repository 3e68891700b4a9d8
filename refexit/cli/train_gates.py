"""`refexit train-gates MODEL_DIR --exits DIR`: train SmartBERT's skip gates on the frozen backbone
(refexit.train.skipgates) and write a new exits folder: the given exits plus `gates.{i}.*`
(exits.safetensors) and the training log (exits.json, key "gates"). Evaluate with
`refexit evaluate MODEL_DIR --exits OUT --sweep --policy smartbert`."""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from refexit.train import skipgates as SG


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("train-gates", help="train SmartBERT skip gates on a frozen backbone (NumPy)",
                              description=__doc__)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--exits", type=Path, required=True, help="the exits folder (train-exits) the gates go with")
    p.add_argument("--data", help="data set (default: the one in the exits' exits.json)")
    p.add_argument("--out", type=Path, required=True, help="output folder (a new exits folder)")
    d = SG.GateConfig()
    for f in fields(SG.GateConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(d, f.name)), default=getattr(d, f.name),
                       help=f"(default {getattr(d, f.name)})")
    p.add_argument("--max-length", type=int, help="tokens per text (default: exits.json's, else 128)")
    p.set_defaults(func=run)


def run(args) -> int:
    import refexit
    from refexit import userdata
    from refexit.checkpoint import save_exits
    from refexit.cli import data_args
    from refexit.cli.evaluate import _exits_paths
    file, meta = _exits_paths(args)
    recorded = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    if not args.data and not recorded.get("name"):
        raise refexit.InputError("--data is required (the exits have no exits.json naming their data set)")
    ds = data_args.load(args, recorded)
    userdata.require_classification(ds, "train-gates")
    model = refexit.load(args.model_dir, exits=file)
    max_length = args.max_length or meta.get("max_length") or 128
    cfg = SG.GateConfig(**{f.name: getattr(args, f.name) for f in fields(SG.GateConfig)})
    cfg.check()

    def rows(split):
        s = getattr(ds, split)
        enc = model.tokenizer(s.texts, s.pairs, max_length=max_length)
        return model.rows(enc), s.labels
    (tr, y_tr), (dv, y_dv) = rows("train"), rows("dev")
    print(f"train-gates: {ds}; {model}; {min(len(tr), cfg.max_train)} training examples", file=sys.stderr)
    gates, log = SG.train_gates(model, tr, y_tr, dv, y_dv, cfg)
    ep = model.exits
    ep.gates, ep.gate_heads = gates, cfg.heads
    args.out.mkdir(parents=True, exist_ok=True)
    save_exits(args.out / "exits.safetensors", ep, model.label_names,
               include_final=bool(meta.get("trained_final", True)))
    meta = dict(meta)
    meta["gates"] = log
    meta["gates_from_exits"] = str(file)
    (args.out / "exits.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out / 'exits.safetensors'} and exits.json")
    return 0
