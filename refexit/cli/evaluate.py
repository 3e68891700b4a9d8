"""`refexit evaluate MODEL_DIR --exits DIR [--data NAME] [--policy P] --sweep`: accuracy / macro-F1
vs mean layers, L / mean, FLOPs for each policy over a threshold sweep on dev and test, a threshold
picked on dev (fastest within --max-drop points of the full model), JSON + a PNG plot.

--precision fp32,bf16: the exit-agreement report. The compiled C of each precision classifies every
test text at each fp32-picked operating point (the full model and each policy's dev-picked
threshold, reused unchanged); against fp32's compiled C on the same texts: label and exit-layer
agreement, accuracy and macro-F1 with their deltas, mean layers, and with --wallclock the measured
speed-up. The oracle emulating each precision (Model.with_precision) cross-checks the C on the
first --crosscheck texts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from refexit.train import evaluate as E
from refexit import jsonio
from refexit.cli import data_args
from refexit.errors import CheckpointError, InputError
from refexit.model import PRECISIONS
from refexit.policies import Static


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy vs layers executed for exit policies (threshold sweeps)",
        description=__doc__)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--exits", type=Path, help="exits folder (with exits.json) or exits.safetensors "
                                              "(default: MODEL_DIR/exits.safetensors)")
    data_args.add_arguments(p, data_help="a built-in data set or your own table file(s) (default: the data in "
                                         "exits.json, with the table options recorded there)")
    p.add_argument("--policy", action="append", choices=E.POLICY_NAMES + ("all",),
                   help="policy to evaluate; repeat for several (default all)")
    p.add_argument("--cascade", type=int, action="append", metavar="K",
                   help="with --sweep: also sweep the CascadeBERT cascade 'layer-K truncation (calibrated "
                        "max softmax > threshold answers), then the full model'; repeat for several K")
    p.add_argument("--sweep", action="store_true", help="sweep thresholds and pick one on dev")
    p.add_argument("--threshold", type=float, help="without --sweep: the threshold (count for "
                                                   "patience/window, layer for static, cost per layer for ceebert)")
    p.add_argument("--online-batch", type=int, default=1, metavar="N",
                   help="ceebert: its bandits learn after every N samples, in the split's order (default 1)")
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
    p.add_argument("--repeat", type=int, default=3, help="--wallclock: timed runs per measurement (median)")
    p.add_argument("--precision", metavar="LIST",
                   help="compare the compiled C of these precisions (comma-separated: "
                        f"{', '.join(PRECISIONS)}) with fp32's on the test texts, at the fp32-picked thresholds")
    p.add_argument("--crosscheck", type=int, default=200, metavar="N",
                   help="--precision: also run the oracle emulating each precision on the first N test "
                        "texts and report its agreement with the C (default 200; 0: off)")
    p.add_argument("--no-cache", action="store_true", help="recompute features (and do not cache them)")
    p.add_argument("--token-rates", action="append", metavar="R[,R...]",
                   help="with --sweep: also evaluate token reduction keeping R**i of the tokens in layer i, for "
                        "each rate R, alone and with each policy (one backbone pass per rate; docs/methods.md)")
    p.add_argument("--token-keep", action="append", metavar="R1,...,RL",
                   help="with --sweep: also evaluate this length configuration (keep ratio per layer; repeatable)")
    p.add_argument("--token-engine", choices=("oracle", "c"), default="oracle",
                   help="token reduction: per-layer outputs from the oracle (default; cached) or the compiled C "
                        "(much faster; policies that read only the logits)")
    p.set_defaults(func=run)


def _exits_paths(args):
    ex = args.exits if args.exits is not None else Path(args.model_dir) / "exits.safetensors"
    file = ex / "exits.safetensors" if ex.is_dir() else ex
    meta_path = file.parent / "exits.json"
    meta = jsonio.read_object(meta_path, CheckpointError, required=False) or {}
    return file, meta


def run(args) -> int:
    import refexit
    from refexit import userdata
    from refexit.cli.train import limited
    file, meta = _exits_paths(args)
    if not file.exists():
        raise refexit.InputError(f"{file} does not exist: train exit heads first "
                                 f"(refexit train-exits {args.model_dir} --data NAME)")
    recorded = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    if not args.data and not recorded.get("name"):
        raise refexit.InputError("--data is required (the exits have no exits.json naming their data set)")
    if args.sweep and args.threshold is not None:
        raise refexit.InputError("--sweep picks the thresholds itself: give --sweep, or --policy P --threshold X "
                                 "for a single operating point, not both")
    if not args.sweep and args.threshold is None and not (args.policy and set(args.policy) <= set(E.NO_SETTING)):
        raise refexit.InputError("give --sweep, or --policy P --threshold X for a single operating point")
    if not args.sweep and not args.policy:      # one rule across commands: a setting needs its policy
        raise refexit.InputError("--threshold needs --policy (which exit rule it is for, e.g. --policy entropy)")
    if args.cascade and not args.sweep:
        raise refexit.InputError("--cascade K is swept: give it with --sweep")
    policies = E.POLICY_NAMES if not args.policy or "all" in args.policy else tuple(dict.fromkeys(args.policy))
    threshold = args.threshold
    if not args.sweep and policies and set(policies) <= {"patience", "window", "static"}:
        threshold = int(threshold)
    precisions = E.parse_precisions(args.precision) if args.precision else None
    max_length = args.max_length or meta.get("max_length") or 128
    ds = data_args.load(args, recorded)
    if ds.problem_type == "regression" and precisions:
        userdata.require_classification(ds, "evaluate --precision")
    name = ds.name
    model = refexit.load(args.model_dir, exits=file)
    if ds.num_labels != model.num_labels:
        raise refexit.InputError(f"{name} has {ds.num_labels} labels {ds.label_names}, the model with these exits "
                                 f"{model.num_labels} {list(model.label_names)}: evaluate them on the data they "
                                 f"were trained for")
    for k in args.cascade or ():
        E.sweep_cascade(model, k)                           # a bad K fails before any feature extraction
    ds = limited(ds, args.limit, args.seed) if args.limit else ds
    from refexit.train import token_heads
    if token_heads.has_token_heads(model):    # fastbert heads: one more (batched float32) backbone pass
        feats = {s: token_heads.head_outputs_exact(model, getattr(ds, s).texts, max_length, getattr(ds, s).pairs,
                                                   label=data_args.feature_label(ds, s), exact=False)
                 for s in ("dev", "test")}
    else:
        feats = {s: data_args.extract(model, ds, s, max_length, use_cache=not args.no_cache) for s in ("dev", "test")}
    labels = {s: getattr(ds, s).labels for s in ("dev", "test")}
    if args.online_batch < 1:
        raise refexit.InputError(f"--online-batch must be at least 1, got {args.online_batch}")
    gated = None
    if "smartbert" in policies and model.exits.gates is not None:   # one gated pass per split (SmartBERT)
        from refexit.train import skipgates
        gated = {s: skipgates.GatedOutputs(model, model.rows(model.tokenizer(
            getattr(ds, s).texts, getattr(ds, s).pairs, max_length=max_length)), progress=True) for s in ("dev", "test")}
    report = E.evaluate(model, feats, labels, policies, args.max_drop / 100, args.sweep, threshold,
                        online_batch=args.online_batch, cascades=tuple(dict.fromkeys(args.cascade or ())),
                        gated=gated)
    report.update({"dataset": name, "model_dir": str(args.model_dir), "exits": str(file),
                   "max_length": max_length, "limit": args.limit,
                   "sizes": {s: len(labels[s]) for s in labels}, "training": {
                       k: meta.get(k) for k in ("head_kind", "objective", "extras", "seed") if k in meta}})
    if args.token_rates or args.token_keep:                # token reduction (refexit/train/tokred.py)
        from refexit.train import tokred
        if not args.sweep:
            raise refexit.InputError("--token-rates / --token-keep are swept: give them with --sweep")
        configs = tokred.parse_configs(args.token_rates, args.token_keep, model.num_layers)
        splits = {s: (getattr(ds, s).texts, getattr(ds, s).pairs) for s in ("dev", "test")}
        report["token_reduction"] = tokred.evaluate_reductions(
            model, configs, splits, labels, policies, report["full"], args.max_drop / 100, max_length,
            use_cache=not args.no_cache, engine=args.token_engine,
            build_dir=(args.out or file.parent) / "compiled-tokred", threads=args.threads)
    if ds.info.get("source") == "files":                  # your own data: where from, and the rows left out
        report["data"] = userdata.describe(ds)
    out = args.out or file.parent
    compiled = Compiled(model, out / "compiled", args.threads) if args.wallclock or precisions else None
    if args.wallclock and args.sweep:
        pairs = ds.test.pairs[:args.wallclock] if ds.test.pairs is not None else None
        compiled_wallclock(model, report, ds.test.texts[:args.wallclock], max_length, compiled, args.repeat, pairs)
    if precisions:
        compiled_precisions(model, report, precisions, ds.test.texts, ds.test.labels, max_length, compiled,
                            threshold, args.wallclock or 0, args.crosscheck, args.repeat, ds.test.pairs)
    print_report(report)
    if "token_reduction" in report:
        from refexit.train import tokred
        print(f"\ntoken reduction (test; thresholds picked on dev: fewest FLOPs within {args.max_drop:g} point of "
              f"the full model):")
        tokred.print_table(tokred.table_rows(report["full"], report["policies"], report["token_reduction"],
                                             args.max_drop / 100))
    out.mkdir(parents=True, exist_ok=True)
    stem = f"evaluate-{name}" + ("" if args.sweep else "-point")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / f'{stem}.json'}")
    if args.sweep and not args.no_plot:
        if E.plot(report, out / f"{stem}.png"):
            print(f"wrote {out / f'{stem}.png'}")
        else:
            print("matplotlib is not installed (pip install 'refexit[plot]'): no PNG plot", file=sys.stderr)
    if precisions and not args.no_plot and E.plot_precisions(
            report["precision"], out / f"{stem}-precision.png",
            f"{name}: the compiled C of {', '.join(precisions)} vs fp32's, {len(labels['test'])} test texts"):
        print(f"wrote {out / f'{stem}-precision.png'}")
    return 0


class Compiled:
    """The compiled C of `model`: one library per policy kind and precision, built on demand under
    build_dir/<policy>[-<precision>] (codegen caches the builds), run at any threshold of its kind."""

    def __init__(self, model, build_dir: Path, threads: int):
        try:
            import codegen
        except ImportError as e:
            raise InputError(f"--wallclock and --precision run the compiled C and need the codegen extra "
                             f"(pip install '.[codegen]'): {e}") from None
        self.codegen, self.model, self.build_dir, self.threads = codegen, model, build_dir, threads
        self.libs: dict = {}

    def lib(self, policy, precision: str = "fp32"):
        key = policy.name if precision == "fp32" else f"{policy.name}-{precision}"
        if key not in self.libs:
            self.libs[key] = cm = self.codegen.compile_model(
                self.model, policy, self.build_dir / key, prefix="ev_" + key.replace("-", "_"),
                max_batch=256, precision=precision)
            cm.set_threads(self.threads)
        return self.libs[key]

    def run(self, enc, policy, precision: str = "fp32"):
        """A callable classifying the encoded batch `enc` at `policy` with that library."""
        cm = self.lib(policy, precision)

        def classify(*_):
            if cm.policy_repr != repr(policy):        # the library may be shared by two points
                cm.set_policy(policy)
            if policy.name == "ceebert":              # thresholds learnt online: every timed call starts
                cm.reset_bandit()                     # from the state the ideal's call started from
            return cm.classify(enc)
        return classify


def compiled_wallclock(model, report: dict, texts: list[str], max_length: int, compiled: Compiled,
                       repeat: int = 3, pairs: list[str] | None = None) -> dict:
    """Seconds per text of the compiled C at full depth and at each picked threshold (one library
    per policy, cached by codegen), measured on the same texts (pairs), batched as the C API allows."""
    enc = model.tokenizer(texts, pairs, max_length=max_length)
    print(f"evaluate: timing the compiled C on {len(texts)} test texts, {compiled.threads} thread(s)",
          file=sys.stderr)
    out = E.add_wallclock(report, lambda pol: compiled.run(enc, pol), texts, repeat)   # sets report["wallclock"]
    out["threads"] = compiled.threads
    return out


def compiled_precisions(model, report: dict, precisions, texts: list[str], y, max_length: int,
                        compiled: Compiled, threshold=None, wallclock: int = 0, crosscheck: int = 0,
                        repeat: int = 3, pairs: list[str] | None = None) -> dict:
    """report["precision"]: each precision's compiled C on every test text (with `pairs`: sentence
    pair) at the fp32-picked operating points, against fp32's (E.precision_report); the oracle's
    emulation on the first `crosscheck` texts; with `wallclock`, the precisions timed interleaved on
    that many texts."""
    points = E.operating_points(report, threshold)
    print(f"evaluate: compiled C of {', '.join(precisions)} on {len(texts)} test texts at "
          f"{', '.join(points)}", file=sys.stderr)
    enc = model.tokenizer(texts, pairs, max_length=max_length)
    runs = {p: {k: compiled.run(enc, pol, p)() for k, pol in points.items()} for p in precisions}
    emulated = E.emulated_runs(model, precisions, points, texts[:crosscheck], max_length,
                               None if pairs is None else pairs[:crosscheck]) if crosscheck else None
    timing, timed = None, texts[:wallclock]
    if timed:
        print(f"evaluate: timing {', '.join(precisions)} interleaved on {len(timed)} test texts", file=sys.stderr)
        tenc = model.tokenizer(timed, None if pairs is None else pairs[:wallclock], max_length=max_length)
        timing = E.time_precisions(lambda p, k: compiled.run(tenc, points[k], p), precisions, points,
                                   len(timed), repeat)
    prec = E.precision_report(points, runs, y, emulated, timing)
    prec["source"] = (f"labels and exit layers: the compiled C of each precision on all {len(texts)} test texts, "
                      f"at thresholds picked on dev by the fp32 sweep and reused unchanged")
    prec["isa"] = {p: compiled.lib(Static(model.num_layers), p).isa for p in precisions}
    if emulated:
        prec["crosscheck"] = (f"the oracle emulating each precision (Model.with_precision) on the first "
                              f"{min(crosscheck, len(texts))} test texts, against that precision's C")
    if timing:
        prec["wallclock"] = (f"seconds per text of one classify call of the compiled C on the first {len(timed)} "
                             f"test texts (padded batch, {compiled.threads} thread(s)), median of {repeat} runs, "
                             f"precisions interleaved; speed-up = fp32's time / this precision's at the same point")
    report["precision"] = prec
    return prec


def _short(pt) -> str:
    """Policy name with its threshold, compact: entropy(threshold=0.0693)."""
    vals = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in pt["params"].items()
            if v is not None and k != "inclusive" and not (k == "temperatures")]
    return f"{pt['policy'].split('(')[0]}({', '.join(vals)})"


def _row(label, m):
    scores = (f"{100 * m['accuracy']:6.2f} {100 * m['macro_f1']:6.2f}" if "accuracy" in m      # regression:
              else f"{100 * m['pearson']:6.2f} {100 * m['spearman']:6.2f} {m['mse']:8.4g}")    # r, rho x100, MSE
    return f"{label:<40} {scores} {m['mean_layers']:5.2f} {m['layer_speedup']:5.2f}x {m['flops_ratio']:5.2f}x"


def print_report(r: dict):
    L = r["num_layers"]
    print(f"{r.get('dataset', '')}: L={L}, dev {r['sizes']['dev'] if 'sizes' in r else ''} / test "
          f"{r['sizes']['test'] if 'sizes' in r else ''}; mean layers include the exit layer; "
          f"speed-ups are L/mean layers and full/spent FLOPs (heads included)")
    regression = "accuracy" not in next(iter(r["full"].values()))
    hdr = (f"{'':<40} {'r%':>6} {'rho%':>6} {'MSE':>8} {'layers':>5} {'L/mean':>6} {'FLOPs':>6}" if regression else
           f"{'':<40} {'acc%':>6} {'mF1%':>6} {'layers':>5} {'L/mean':>6} {'FLOPs':>6}")
    if regression:
        print(f"regression: Pearson r and Spearman rho (x100), MSE; patience / window with tau = tau_scale x "
              f"{list(E.TAU_FRACTIONS)}, tau_scale {r['tau_scale']:.4g} (std of the full model's dev outputs)")
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
    for name, e in r.get("cascades", {}).items():
        pk, bt = e["picked"], e.get("best_on_test")
        print(f"\n{name}: layer-{name[7:]} truncation, then the full model ({len(e['points'])} thresholds, "
              f"{e['seconds']}s; layers and FLOPs count both members; T = {e['temperature']:.3g}, "
              f"{e['temperature_source']})\n{hdr} {'1st answers':>11}")
        for label, p, where in (("dev-picked", pk, "test"), ("test-best ", bt, "test (picked on test)")):
            if p:
                print(_row(f"{label} threshold={p['params']['threshold']:.4g}", p["test"]) +
                      f" {100 * p['test']['answered_by_first']:10.1f}%  {where}")
            elif label == "dev-picked":
                print(f"picked on dev: none within {100 * r['max_drop']:g} pt")
    for name, why in r.get("skipped", {}).items():
        print(f"\n{name}: skipped: {why}")
    w = r.get("wallclock")
    if w:
        print(f"\ncompiled C wall-clock on {w['texts']} test texts, {w.get('threads', 1)} thread(s): "
              f"full model {1e3 * w['full_seconds_per_example']:.3f} ms/text")
        print(f"{'policy':<14} {'ms/text':>8} {'speed-up':>8} {'L/mean':>7} {'of ideal':>8} {'FLOPs':>7} {'of FLOPs':>8}")
        for name, p in w["policies"].items():
            fr = p.get("flops_ratio")
            print(f"{name:<14} {1e3 * p['seconds_per_example']:8.3f} {p['speedup']:7.2f}x "
                  f"{p['ideal_layer_speedup']:6.2f}x {100 * p['fraction_of_ideal']:7.0f}%" +
                  (f" {fr:6.2f}x {100 * p['fraction_of_flops_ratio']:7.0f}%" if fr else ""))
    if r.get("precision"):
        print_precision(r["precision"])


def print_precision(prec: dict):
    first = next(iter(prec["points"].values()))
    n, timed = first["fp32"]["texts"], "wallclock" in prec
    print(f"\nprecisions vs fp32 on {n} test texts; {prec['source']}; ISA {prec['isa']}")
    print(f"{'point':<14} {'prec':<5} {'labels=':>7} {'exits=':>7} {'acc%':>6} {'Δacc':>6} {'mF1%':>6} {'ΔmF1':>6} "
          f"{'layers':>6}" + (f" {'ms/text':>8} {'speed-up':>8}" if timed else ""))
    for k, e in prec["points"].items():
        for p in prec["precisions"]:
            a = e[p]
            line = (f"{k:<14} {p:<5} {100 * a['label_agreement']:6.2f}% {100 * a['exit_agreement']:6.2f}% "
                    f"{100 * a['accuracy']:6.2f} {100 * a['accuracy_delta']:+6.2f} {100 * a['macro_f1']:6.2f} "
                    f"{100 * a['macro_f1_delta']:+6.2f} {a['mean_layers']:6.2f}")
            if timed:
                w = a["wallclock"]
                line += f" {1e3 * w['seconds_per_text']:8.3f} {w['speedup_vs_fp32']:7.2f}x"
            print(line)
    print("labels= / exits=: share of test texts with the same label / exit layer as fp32's C; "
          "Δ: points vs fp32" + (f"\nwall-clock: {prec['wallclock']}" if timed else ""))
    if "crosscheck" in prec:
        worst = {p: min(e[p]["crosscheck"]["label_agreement"] for e in prec["points"].values())
                 for p in prec["precisions"]}
        worst_exit = {p: min(e[p]["crosscheck"]["exit_agreement"] for e in prec["points"].values())
                      for p in prec["precisions"]}
        print(f"cross-check, {prec['crosscheck']}: lowest agreement over the points: " + "; ".join(
            f"{p} labels {100 * worst[p]:.2f}% exits {100 * worst_exit[p]:.2f}%" for p in prec["precisions"]))
