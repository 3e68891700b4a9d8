"""`refexit evaluate MODEL_DIR --exits DIR [--data NAME] [--policy P] --sweep`: accuracy / macro-F1
vs mean layers, L / mean, FLOPs for each policy over a threshold sweep on dev and test, a threshold
picked on dev (fastest within --max-drop points of the full model), JSON + a PNG plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import evaluate as E


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy vs layers executed for exit policies (threshold sweeps)",
        description=__doc__)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--exits", type=Path, help="exits folder (with exits.json) or exits.safetensors "
                                              "(default: MODEL_DIR/exits.safetensors)")
    p.add_argument("--data", metavar="NAME", help="data set (default: the one in exits.json)")
    p.add_argument("--policy", action="append", choices=E.POLICY_NAMES + ("all",),
                   help="policy to evaluate; repeat for several (default all)")
    p.add_argument("--sweep", action="store_true", help="sweep thresholds and pick one on dev")
    p.add_argument("--threshold", type=float, help="without --sweep: the threshold (count for "
                                                   "patience/window, layer for static)")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the picked threshold "
                                                               "may lose on dev (default 1.0)")
    p.add_argument("--max-length", type=int, help="tokens per text (default: exits.json's, else 128)")
    p.add_argument("--limit", type=int, metavar="N", help="use at most N dev and N test examples")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    p.add_argument("--out", type=Path, help="folder for evaluate-DATA.json/.png (default: the exits folder)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--wallclock", type=int, nargs="?", const=500, metavar="N",
                   help="also time the compiled C (full depth and each picked policy) on N test texts "
                        "(default 500); needs the codegen extra and a C compiler")
    p.add_argument("--threads", type=int, default=1, help="threads of the compiled C for --wallclock")
    p.add_argument("--no-cache", action="store_true", help="recompute features (and do not cache them)")
    p.set_defaults(func=run)


def _exits_paths(args):
    ex = args.exits if args.exits is not None else Path(args.model_dir) / "exits.safetensors"
    file = ex / "exits.safetensors" if ex.is_dir() else ex
    meta_path = file.parent / "exits.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return file, meta


def run(args) -> int:
    import refexit
    from . import data
    from . import features as F
    from .train_cli import limited
    file, meta = _exits_paths(args)
    if not file.exists():
        raise refexit.InputError(f"{file} does not exist: train exit heads first "
                                 f"(refexit train-exits {args.model_dir} --data NAME)")
    name = args.data or meta.get("dataset", {}).get("name")
    if not name:
        raise refexit.InputError("--data is required (the exits have no exits.json naming their data set)")
    if not args.sweep and args.threshold is None:
        raise refexit.InputError("give --sweep, or --threshold for a single operating point")
    policies = E.POLICY_NAMES if not args.policy or "all" in args.policy else tuple(dict.fromkeys(args.policy))
    if not args.sweep and len(policies) > 1 and args.policy is None:
        policies = tuple(p for p in policies if p not in ("patience", "window", "static"))
    threshold = args.threshold
    if not args.sweep and policies and set(policies) <= {"patience", "window", "static"}:
        threshold = int(threshold)
    max_length = args.max_length or meta.get("max_length") or 128
    model = refexit.load(args.model_dir, exits=file)
    ds = data.load_dataset(name)
    ds = limited(ds, args.limit, args.seed) if args.limit else ds
    feats = {s: F.extract(model, getattr(ds, s).texts, max_length, use_cache=not args.no_cache,
                          label=f"{name}/{s}") for s in ("dev", "test")}
    labels = {s: getattr(ds, s).labels for s in ("dev", "test")}
    report = E.evaluate(model, feats, labels, policies, args.max_drop / 100, args.sweep, threshold)
    report.update({"dataset": name, "model_dir": str(args.model_dir), "exits": str(file),
                   "max_length": max_length, "limit": args.limit,
                   "sizes": {s: len(labels[s]) for s in labels}, "training": {
                       k: meta.get(k) for k in ("head_kind", "objective", "extras", "seed") if k in meta}})
    out = args.out or file.parent
    if args.wallclock and args.sweep:
        compiled_wallclock(model, report, ds.test.texts[:args.wallclock], max_length, out / "compiled",
                           args.threads)
    print_report(report)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"evaluate-{name}" + ("" if args.sweep else "-point")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / f'{stem}.json'}")
    if args.sweep and not args.no_plot:
        if E.plot(report, out / f"{stem}.png"):
            print(f"wrote {out / f'{stem}.png'}")
        else:
            print("matplotlib is not installed (pip install 'refexit[plot]'): no PNG plot", file=sys.stderr)
    return 0


def compiled_wallclock(model, report: dict, texts: list[str], max_length: int, build_dir: Path,
                       threads: int) -> dict:
    """Seconds per text of the compiled C at full depth and at each picked threshold (one library
    per policy, cached by codegen), measured on the same texts, batched as the C API allows."""
    import codegen
    cache: dict = {}

    def make_classify(policy):
        key = policy.name
        if key not in cache:
            cache[key] = codegen.compile_model(model, policy, build_dir / key, prefix=f"ev_{key}",
                                               max_batch=256)
            cache[key].set_threads(threads)
        cm = cache[key]
        cm.set_policy(policy)
        enc = cm.tokenizer(texts, max_length=max_length)
        return lambda _texts: cm.classify(enc)

    print(f"evaluate: timing the compiled C on {len(texts)} test texts, {threads} thread(s)", file=sys.stderr)
    out = E.add_wallclock(report, make_classify, texts)       # sets report["wallclock"]
    out["threads"] = threads
    return out


def _short(pt) -> str:
    """Policy name with its threshold, compact: entropy(threshold=0.0693)."""
    vals = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in pt["params"].items()
            if v is not None and k != "inclusive" and not (k == "temperatures")]
    return f"{pt['policy'].split('(')[0]}({', '.join(vals)})"


def _row(label, m):
    return (f"{label:<40} {100 * m['accuracy']:6.2f} {100 * m['macro_f1']:6.2f} {m['mean_layers']:5.2f} "
            f"{m['layer_speedup']:5.2f}x {m['flops_ratio']:5.2f}x")


def print_report(r: dict):
    L = r["num_layers"]
    print(f"{r.get('dataset', '')}: L={L}, dev {r['sizes']['dev'] if 'sizes' in r else ''} / test "
          f"{r['sizes']['test'] if 'sizes' in r else ''}; mean layers include the exit layer; "
          f"speed-ups are L/mean layers and full/spent FLOPs (heads included)")
    hdr = f"{'':<40} {'acc%':>6} {'mF1%':>6} {'layers':>5} {'L/mean':>6} {'FLOPs':>6}"
    for split in ("dev", "test"):
        if split in r["full"]:
            print(_row(f"full model ({split})", r["full"][split]))
    for name, e in r["policies"].items():
        print(f"\n{name}  ({len(e['points'])} point(s), {e['seconds']}s)\n{hdr}")
        if "picked" not in e:
            for p in e["points"]:
                for split in ("dev", "test"):
                    print(_row(f"{_short(p)[:28]} {split}", p[split]))
            continue
        pk, bt = e["picked"], e.get("best_on_test")
        if pk:
            print(_row(f"dev-picked {_short(pk)[:29]}", pk["test"]) + "  test")
        else:
            print(f"picked on dev: none within {100 * r['max_drop']:g} pt")
        if bt:
            print(_row(f"test-best  {_short(bt)[:29]}", bt["test"]) + "  test (picked on test)")
    for name, why in r.get("skipped", {}).items():
        print(f"\n{name}: skipped: {why}")
    w = r.get("wallclock")
    if w:
        print(f"\ncompiled C wall-clock on {w['texts']} test texts, {w.get('threads', 1)} thread(s): "
              f"full model {1e3 * w['full_seconds_per_example']:.3f} ms/text")
        print(f"{'policy':<14} {'ms/text':>8} {'speed-up':>8} {'L/mean':>7} {'of ideal':>8}")
        for name, p in w["policies"].items():
            print(f"{name:<14} {1e3 * p['seconds_per_example']:8.3f} {p['speedup']:7.2f}x "
                  f"{p['ideal_layer_speedup']:6.2f}x {100 * p['fraction_of_ideal']:7.0f}%")
