"""Throughput of `refexit score` on real text, next to what a user would run instead.

    python tools/bench_score.py --exits out/exits-rotten_tomatoes --policy entropy --threshold 0.3 \
        --rows 1000000 --json score-bench.json

Rotten Tomatoes texts (refexit.data, all splits) repeated to --rows lines in one .txt file, and the
real all-MiniLM-L6-v2 with the given exit heads compiled once (codegen.compile_model + the
standalone programs). Each contender runs in its own process, one after another in one run, on
the same file (the peers on the first --peer-rows lines); for each: wall seconds, texts/s and the
process's peak RSS (sampled from /proc: the process's own VmHWM, and the peak sum over its process
tree, which for Ray includes its daemons and workers):

  standalone   OUT/<prefix>-sidecar --batch B --threads T < input.txt (the C program, no Python)
  local        refexit score COMPILED input.txt -o out.jsonl (thread pool, one C handle per core)
  ray          refexit score ... --engine ray (a local Ray on this node; Ray start-up included,
               and its own split: start-up / read + score + commit / write of the output)
  local-tenth  the local engine on the first tenth of the rows (memory must not grow with the input)
  local-folder, ray-folder   the same into a folder output (-o DIR/: Parquet parts, committed where
               scored; not in the default --only)
  one-handle   a process that opens one handle and classifies one batch: the RSS baseline
  torch        HF transformers BertModel (torch, eager attention) + the same final exit head in
               NumPy, --batch texts per call padded to the longest (needs torch, transformers)
  onnxruntime  the backbone exported to ONNX, ONNX Runtime + the same final head in NumPy (needs
               onnxruntime and torch for the export)

The peers run the full model (no early exit: they have none); ours runs the given policy. Timed
figures depend on machine load: pin with `taskset -c 0,1`, quote the command and the load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import refexit  # noqa: E402
from refexit import data  # noqa: E402


def write_input(path: Path, rows: int) -> int:
    """Rotten Tomatoes texts (every split, one line each) repeated to `rows` lines."""
    ds = data.load_dataset("rotten_tomatoes")
    texts = [" ".join(t.split()) for s in ds.splits().values() for t in s.texts]
    texts = [t for t in texts if t]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(texts[i % len(texts)] + "\n")
    return len(texts)


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def run(cmd, stdin=None, stdout=None, env=None) -> dict:
    """Run `cmd`; -> wall seconds, exit code, its stderr, and memory sampled every 0.2 s from /proc
    (ru_maxrss is no use here: a forked child inherits the parent's high-water mark):
    peak_rss_mb, the process's VmHWM; peak_tree_rss_mb, the largest sum of VmRSS over it and
    its descendants (Ray's daemons and workers)."""
    import threading
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=stdin, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=os.environ | (env or {}), cwd=ROOT)
    peak = {"hwm": 0, "tree": 0}

    def sample():
        while p.poll() is None:
            peak["hwm"] = max(peak["hwm"], _status_kb(p.pid, "VmHWM"))
            peak["tree"] = max(peak["tree"], sum(_status_kb(q, "VmRSS") for q in _descendants(p.pid)))
            time.sleep(0.2)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    err = p.stderr.read().decode("utf-8", "replace")
    p.wait()
    wall = time.perf_counter() - t0
    t.join()
    return {"seconds": round(wall, 3), "returncode": p.returncode, "peak_rss_mb": round(peak["hwm"] / 1024, 1),
            "peak_tree_rss_mb": round(peak["tree"] / 1024, 1), "stderr_tail": err.strip().splitlines()[-3:]}


def refexit_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "refexit.cli.main", *map(str, args)]


# ---------------------------------------------------------------------- peers (run in a child process)
def peer_main(args) -> None:
    """--peer NAME: time one peer on the first --peer-rows lines, write JSON to --result."""
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    model_dir = data.model_dir()
    model = refexit.load(model_dir, exits=args.exits)
    final = model.exits.heads[-1]
    texts = Path(args.input).read_text(encoding="utf-8").splitlines()[:args.peer_rows]
    tok = transformers.BertTokenizerFast.from_pretrained(str(model_dir))
    max_len = model.tokenizer.max_length
    if args.peer == "torch":
        bert = transformers.BertModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                                      add_pooling_layer=False).eval()

        def backbone(enc):
            with torch.inference_mode():
                return bert(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
        info = {"torch": torch.__version__, "transformers": transformers.__version__}
    else:
        import onnxruntime as ort
        path = Path(args.work) / "backbone.onnx"
        if not path.exists():
            bert = transformers.BertModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                                          add_pooling_layer=False).eval()
            names = ["input_ids", "attention_mask", "token_type_ids"]
            enc = tok(["a b", "c"], padding=True, return_tensors="pt")

            class Backbone(torch.nn.Module):                     # positional inputs -> last hidden state
                def __init__(self):
                    super().__init__()
                    self.bert = bert

                def forward(self, input_ids, attention_mask, token_type_ids):
                    return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                     token_type_ids=token_type_ids).last_hidden_state
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Backbone().eval(), tuple(enc[k] for k in names), str(path), input_names=names,
                                  output_names=["hidden"], opset_version=17, dynamo=False,
                                  dynamic_axes={k: {0: "b", 1: "t"} for k in names + ["hidden"]})
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def backbone(enc):
            return sess.run(["hidden"], dict(enc))[0]
        info = {"onnxruntime": ort.__version__}
    labels = []
    t0 = time.perf_counter()
    for s in range(0, len(texts), args.batch):
        enc = dict(tok(texts[s:s + args.batch], padding=True, truncation=True, max_length=max_len,
                       return_tensors="np"))
        enc = {k: v.astype(np.int64) for k, v in enc.items()}
        h = backbone(enc)                                               # [B, T, H]
        for b in range(len(h)):                                          # the final exit head, NumPy
            n = int(enc["attention_mask"][b].sum())
            labels.append(int(np.argmax(final.logits(final.features(h[b, :n], model.weights.get("pooler.w"),
                                                                    model.weights.get("pooler.b"))))))
    wall = time.perf_counter() - t0
    Path(args.result).write_text(json.dumps({"rows": len(texts), "loop_seconds": round(wall, 3),
                                             "texts_per_s": round(len(texts) / wall, 1),
                                             "labels": labels[:2000]} | info))


# ---------------------------------------------------------------------- the run
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--peer-rows", type=int, default=5000)
    ap.add_argument("--exits", type=Path, help="exit heads of all-MiniLM-L6-v2 (train-exits output)")
    ap.add_argument("--policy", default=None)
    ap.add_argument("--threshold", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="cores used by every contender")
    ap.add_argument("--work", type=Path, default=Path("build/bench_score"))
    ap.add_argument("--only", default="one-handle,standalone,local-tenth,local,ray,torch,onnxruntime")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        peer_main(args)
        return 0
    import codegen
    from codegen.standalone import build_standalone

    from refexit.cli.policy_args import policy_from_args
    only = args.only.split(",")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inp = work / "input.txt"
    distinct = write_input(inp, args.rows)
    model = refexit.load(data.model_dir(), exits=args.exits)
    policy = policy_from_args(argparse.Namespace(policy=args.policy, threshold=args.threshold), model.num_layers)
    cm = codegen.compile_model(model, policy, work / "compiled", prefix="rt", max_batch=max(args.batch, 32))
    sa = build_standalone(work / "compiled", prefix="rt")
    doc = {"rows": args.rows, "distinct_texts": distinct, "policy": cm.policy_repr, "batch": args.batch,
           "threads": args.threads, "isa": cm.isa, "load_before": os.getloadavg(), "results": {}}
    res = doc["results"]
    log = lambda *a: print(*a, file=sys.stderr, flush=True)          # noqa: E731
    if "one-handle" in only:
        code = ("import sys, time, codegen; cm = codegen.load_compiled(sys.argv[1]); "
                "cm.classify(cm.tokenizer(['a fine film'] * 32)); time.sleep(1)")       # sampled at 0.2 s
        res["one-handle"] = run([sys.executable, "-c", code, str(work / "compiled")],
                                env={"PYTHONPATH": str(ROOT)})
        log("one-handle", res["one-handle"])
    if "standalone" in only:
        with open(inp, "rb") as fin, open(work / "standalone.jsonl", "wb") as fout:
            r = run([str(sa.sidecar), "--batch", str(args.batch), "--threads", str(args.threads)], stdin=fin,
                    stdout=fout)
        r["texts_per_s"] = round(args.rows / r["seconds"], 1)
        res["standalone"] = r
        log("standalone", r)
    if "local-tenth" in only:                        # memory flat: the same run on a tenth of the rows
        with open(inp, encoding="utf-8") as fin, open(work / "input-tenth.txt", "w", encoding="utf-8") as fout:
            for i, line in enumerate(fin):
                if i == args.rows // 10:
                    break
                fout.write(line)
    for engine in ("local-tenth", "local", "ray", "local-folder", "ray-folder"):
        if engine not in only:
            continue
        out = work / f"{engine}.jsonl"
        if engine.endswith("-folder"):
            out = f"{work / engine}/"
            shutil.rmtree(out, ignore_errors=True)                  # a folder holding a run is refused
        summary = work / f"{engine}-summary.json"
        rows = args.rows // 10 if engine == "local-tenth" else args.rows
        r = run(refexit_cmd("score", work / "compiled", work / "input-tenth.txt" if engine == "local-tenth" else inp,
                            "-o", out, "--batch", args.batch, "-q", "--engine", engine.split("-")[0],
                            "--summary", summary, *(["--workers", args.threads] if engine.split("-")[0] != "ray"
                                                    else [])),
                env={"PYTHONPATH": str(ROOT)})
        if r["returncode"] == 0:
            s = json.loads(summary.read_text())
            r |= {"rows": rows, "texts_per_s": round(rows / r["seconds"], 1), "engine_seconds": s["seconds"],
                  "engine_texts_per_s": s["texts_per_s"], "mean_exit_layer": s["mean_exit_layer"],
                  "timing_s": s.get("timing_s")}
        res[engine] = r
        log(engine, r)
    for peer in ("torch", "onnxruntime"):
        if peer not in only:
            continue
        cmd = [sys.executable, __file__, "--peer", peer, "--input", str(inp), "--peer-rows", str(args.peer_rows),
               "--batch", str(args.batch), "--threads", str(args.threads), "--work", str(work)]
        if args.exits:
            cmd += ["--exits", str(args.exits)]
        result = work / f"{peer}.json"
        result.unlink(missing_ok=True)
        r = run(cmd + ["--result", str(result)])
        if r["returncode"] == 0:
            r |= json.loads(result.read_text())
            r.pop("labels", None)
        else:
            r["skipped"] = (r["stderr_tail"] or ["failed"])[-1]
        res[peer] = r
        log(peer, r)
    if "standalone" in res and "local" in res and res["local"].get("texts_per_s"):
        a = [json.loads(x) for x in (work / "standalone.jsonl").read_text().splitlines()[:20000]]
        b = [json.loads(x) for x in (work / "local.jsonl").read_text().splitlines()[:20000]]
        doc["agree_local_standalone"] = sum((x["label"], x["exit_layer"]) == (y["label"], y["exit_layer"])
                                            for x, y in zip(a, b)) / max(len(a), 1)
        doc["local_vs_standalone"] = round(res["local"]["texts_per_s"] / res["standalone"]["texts_per_s"], 3)
        if "one-handle" in res:
            doc["local_rss_over_one_handle_mb"] = round(res["local"]["peak_rss_mb"] - res["one-handle"]["peak_rss_mb"], 1)
    if res.get("ray", {}).get("texts_per_s") and res.get("local", {}).get("texts_per_s"):
        doc["ray_vs_local"] = round(res["ray"]["texts_per_s"] / res["local"]["texts_per_s"], 3)
    doc["load_after"] = os.getloadavg()
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
