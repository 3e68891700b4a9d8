"""The local engine of `refexit score`: the main thread streams the input rows into chunks; a pool
of worker threads, each with its own C handle over one shared read-only mapping of the weights
(handles.Scorer), scores a chunk at a time and commits it (chunks.RunDir). C runs without the GIL
(tokenizing and classifying), so the workers use every core; at most 2 x workers chunks are in
memory at once, however large the input."""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refexit import tables
from refexit.errors import InputError

from . import chunks, output, progress, rows as R
from .handles import Scorer, SharedWeights


@dataclass
class Options:
    text_column: str = tables.TEXT_COLUMN
    pair_column: str | None = None
    id_column: str | None = None
    batch: int = 32
    workers: int | None = None               # None: the cores / threads_per_worker
    threads_per_worker: int = 1
    logits: bool = False
    resume: bool = False
    quiet: bool = False
    chunk_rows: int = 4096
    part_rows: int | None = None             # a folder output's rows per part (None: folder.open_run picks)
    input_format: str | None = None
    extra: dict = field(default_factory=dict)  # recorded in run.json (policy, model hash, engine)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_options(opt: Options) -> None:
    for name in ("batch", "threads_per_worker", "chunk_rows", "part_rows"):
        v = getattr(opt, name)
        if v is None and name == "part_rows":
            continue
        if not isinstance(v, int) or v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
    if opt.workers is not None and (not isinstance(opt.workers, int) or opt.workers < 1):
        raise InputError(f"--workers must be a whole number >= 1, got {opt.workers!r}")


def run_spec(inputs: list[Path], opt: Options, cm) -> dict:
    """What a run is, as run.json records it (a --resume must match it)."""
    return {"inputs": chunks.input_identity(inputs), "chunk_rows": opt.chunk_rows,
            "columns": [opt.text_column, opt.pair_column, opt.id_column], "logits": opt.logits,
            "input_format": opt.input_format, "model_hash": cm.manifest["model_hash"],
            "policy": cm.policy_repr, "thresholds": cm.thresholds.tolist() if cm.num_layers > 1 else []} | opt.extra


def specs(inputs: list[Path], opt: Options) -> list[R.Spec]:
    many = len(inputs) > 1
    return [R.Spec(opt.text_column, opt.pair_column, opt.id_column, opt.logits, str(p) if many else None)
            for p in inputs]


def score_local(cm, inputs: list[Path], out_path: Path, opt: Options) -> dict:
    """Score every row of `inputs` with the opened CompiledModel `cm` into `out_path`; -> summary."""
    check_options(opt)
    fmt = output.output_format(out_path)
    run = chunks.RunDir(out_path, run_spec(inputs, opt, cm), opt.resume)
    done = run.committed()
    workers = opt.workers or max(1, cpu_count() // opt.threads_per_worker)
    prog = progress_bar(inputs, opt, done)
    shared = SharedWeights(cm)
    jobs: queue.Queue = queue.Queue(maxsize=2 * workers)
    failure: list[BaseException] = []
    rows_scored = [0]
    label_names = cm.label_names

    def worker():
        try:
            scorer = Scorer(shared, opt.batch, opt.threads_per_worker)
        except BaseException as e:             # noqa: BLE001  (reported by the main thread)
            failure.append(e)
            while jobs.get() is not None:      # drain so that the producer never blocks
                pass
            return
        try:
            while (job := jobs.get()) is not None:
                if failure:
                    continue
                f, k, rws, last, spec = job
                run.commit(f, k, *R.score_rows(scorer, rws, spec, label_names), last=last)
                with shared.lock:
                    rows_scored[0] += len(rws)
                prog.add(len(rws))
        except BaseException as e:             # noqa: BLE001
            failure.append(e)
            while jobs.get() is not None:      # drain so that the producer never blocks
                pass
        finally:
            scorer.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"score-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        for job in chunk_jobs(inputs, opt, done):
            if failure:
                break
            jobs.put(job)
    finally:
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join()
        prog.close()
    if failure:
        raise failure[0]
    seconds = time.perf_counter() - t0
    return finish(run, inputs, out_path, cm, specs(inputs, opt)[0], rows_scored[0], seconds, fmt)


def progress_bar(inputs: list[Path], opt: Options, done: dict) -> progress.Progress:
    """The progress line of a run (shown on a terminal without --quiet), the committed rows of an
    earlier run (`done`: RunDir.committed()) counted as done."""
    show = not opt.quiet and _isatty()
    prog = progress.Progress(progress.estimate_rows(inputs, lambda p: tables.table_format(p, opt.input_format))
                             if show else None, show)
    prog.skip(sum(m["rows"] for d in done.values() for m in d.values()))
    return prog


def chunk_jobs(inputs: list[Path], opt: Options, done: dict):
    """Every chunk still to score, file by file, in order: (f, k, rows, last, spec); `done`:
    RunDir.committed() (a resumed run). The rows are read by refexit's own reader
    (tables.iter_rows): an unreadable row is a Row with its error, never a stop."""
    for f, (path, spec) in enumerate(zip(inputs, specs(inputs, opt))):
        yield from _file_jobs(f, path, spec, done.get(f, {}), opt)


def _file_jobs(f: int, path: Path, spec: R.Spec, done: dict, opt: Options):
    """The chunks of one file still to score, in order: (f, k, rows, last, spec). `done`: its
    committed chunks (a resumed run); the file is read once from its first missing chunk on,
    skipping committed ones only by reading past them."""
    todo, end_known = chunks.missing_chunks(done)
    open_from = None if end_known else (max(done) + 1 if done else 0)
    C = opt.chunk_rows
    it, pos = None, -1                          # the row iterator and the row number it yields next
    for k in todo + ([open_from] if open_from is not None else []):
        while True:
            if it is None or pos != k * C:
                it = iter(tables.iter_rows(path, format=opt.input_format, start=k * C))
            buf = list(itertools.islice(it, C))  # [<= C] rows k*C ...
            pos = k * C + len(buf)
            last = len(buf) < C
            yield f, k, buf, last, spec
            if last:
                return
            if k != open_from:
                break
            k = open_from = k + 1


def finish(run: chunks.RunDir, inputs, out_path: Path, cm, spec: R.Spec, rows_scored: int, seconds: float,
           fmt: str) -> dict:
    """Every chunk committed: write the output and the errors file, remove the parts, -> summary."""
    done = run.committed()
    ordered, total = [], 0
    many = len(inputs) > 1
    for f, path in enumerate(inputs):
        d = done.get(f, {})
        todo, end_known = chunks.missing_chunks(d)
        if todo or not end_known:
            raise RuntimeError(f"internal: {path} has chunks not committed: {todo}")     # a bug, not an input
        for k in sorted(d):
            ordered.append((f, k))
            total += d[k]["rows"]
    output.write_output(out_path, [run.chunk_path(f, k) for f, k in ordered], R.columns(spec, cm.num_labels))
    errors = (({"file": str(inputs[f])} if many else {}) | e for f, k in ordered for e in done[f][k]["errors"])
    n_err = output.write_errors(output.errors_path(out_path), errors)
    counts = exit_counts([done[f][k] for f, k in ordered], cm.num_layers)
    run.remove()
    return summarize(total, *counts, n_err, rows_scored, seconds, str(out_path), str(output.errors_path(out_path)))


def exit_counts(metas: list[dict], num_layers: int) -> tuple[np.ndarray, int | None]:
    """The committed chunks' or parts' metas -> (rows per exit layer [L], the layers run summed:
    with skip gates, when every meta counts them, else None)."""
    exits = np.zeros(num_layers, np.int64)
    for m in metas:
        exits += np.asarray(m["exits"], np.int64)
    run = [m.get("layers_run") for m in metas]
    return exits, (sum(run) if run and None not in run else None)


def summarize(total: int, exits: np.ndarray, layers_run: int | None, n_err: int, rows_scored: int, seconds: float,
              out: str, errors_file: str) -> dict:
    """The summary of a run: `exits` [L] rows per exit layer, over the whole output; `layers_run`
    the layers the scored rows ran (skip gates: fewer than their exit layers), else None."""
    scored = int(exits.sum())
    mean = (lambda x: round(float(x) / scored, 4) if scored else None)
    return {"rows": total, "scored": scored, "errors": n_err, "seconds": round(seconds, 3),
            "rows_this_run": rows_scored, "texts_per_s": round(rows_scored / seconds, 1) if seconds > 0 else None,
            "mean_exit_layer": mean((exits * np.arange(1, len(exits) + 1)).sum())} | \
        ({"mean_layers_run": mean(layers_run)} if layers_run is not None else {}) | \
        {"exit_layers": {str(i + 1): int(c) for i, c in enumerate(exits)}, "output": out, "errors_file": errors_file}


def _isatty() -> bool:
    import sys
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
