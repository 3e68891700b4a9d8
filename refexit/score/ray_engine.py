"""The Ray engine of `refexit score` (`pip install '.[ray]'`): the local engine's run with Ray
actors in place of its worker threads. The driver reads the inputs with refexit's own reader
(engine.chunk_jobs: a line that is not UTF-8 or not JSON is a bad row, reported in place), hands
each chunk of rows to a pool of actors of the callable class map_batches_fn returns (one compiled
library opened per actor), and commits the scored chunks to OUTPUT.parts/ exactly as the local
engine does (chunks.RunDir: the same files, the same `--resume`, either engine resumes a run of the
other); engine.finish writes OUTPUT and the errors file. The output is the local engine's, byte
for byte. The same class is the Python API for Ray Data users: `ds.map_batches(map_batches_fn(...))`.

A folder output (`-o DIR/` or a URI, the cluster case, folder.py) hands whole parts (part_rows
rows of one input file) to the same actors instead of chunks: each actor reads its part from the
input file, scores it and commits it into DIR (its Parquet file, then its marker) on its own node;
only part descriptors go out and each part's meta (rows, bad rows, exit-layer counts) comes back,
so no row passes through the driver, and --resume redoes only the parts without a marker.

What reaches the workers, without a shared file system: the compiled artefact (manifest, header,
C source, the built library and the weights file) is put once in Ray's object store; each actor
unpacks it into its node's cache ($REFEXIT_CACHE/score-ray/<model hash>-<build key>/, once per node)
and loads the shipped library, or rebuilds it from the C source (cached by codegen's build cache)
when it does not load or does not run on that node's CPU. With a file output the rows go from the driver
to the actors and the scored lines back through the object store, so only the driver touches the
input and output files; with a folder output every node reads the inputs and writes into DIR.

Actors are restarted and their chunks retried when one dies (max_restarts=-1, max_task_retries=-1,
as Ray Data's actor pools default to; tests/test_score_ray.py kills one mid-run): the output still
has exactly one row per input row. A killed driver leaves the committed chunks (parts): --resume."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from refexit.errors import InputError

from . import chunks, engine, folder as FO, output, rows as R
from .chunks import write_durable

ARTEFACT_KEYS = ("manifest", "header", "source", "library", "weights")
# Read and write tasks reserve no CPU: the scoring actors take every CPU (as the local engine's
# workers do), and a read task waiting for a CPU behind them would stall the pipeline.
LIGHT = {"num_cpus": 0}


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'refexit[ray]' (or 'ray[data]')") from None
    return ray


# ---------------------------------------------------------------------- the artefact
def pack_artefact(compiled_dir) -> dict:
    """The files of a compiled folder as bytes: what a worker needs to score (no model, no
    shared file system)."""
    from codegen.binding import MANIFEST_SUFFIX
    from refexit import jsonio
    from refexit.errors import CheckpointError
    folder = Path(compiled_dir)
    found = sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))
    if len(found) != 1:
        raise InputError(f"{folder}: expected one compiled model (*{MANIFEST_SUFFIX}), found {len(found)}")
    manifest = jsonio.read_object(found[0], CheckpointError, what="the manifest of a compiled model")
    art = {"manifest": found[0].read_bytes()}
    for key in ARTEFACT_KEYS[1:]:
        art[key] = (folder / manifest[key]).read_bytes()
    return art


def unpack_artefact(art: dict, cache_root: Path | None = None) -> Path:
    """Write the artefact into this node's cache (once) and return a compiled folder whose library
    loads here: the shipped one, or one rebuilt from the C source for this CPU / compiler."""
    import codegen
    from codegen import build as B
    from refexit import jsonio
    from refexit.errors import CheckpointError, RefexitError
    manifest = jsonio.loads(art["manifest"], "shipped manifest", CheckpointError)
    from refexit.data import cache_root as refexit_cache
    root = cache_root or refexit_cache() / "score-ray"
    folder = root / f"{manifest['model_hash'][:16]}-{manifest['build_key'][:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{manifest['prefix']}.manifest.json"
    for key in ARTEFACT_KEYS[1:]:
        path = folder / manifest[key]
        if not path.is_file() or path.stat().st_size != len(art[key]):
            write_durable(path, art[key])
    if not (folder / name).is_file():
        write_durable(folder / name, art["manifest"])
    try:
        codegen.load_compiled(folder).close()
        return folder
    except (RefexitError, OSError, B.BuildError):
        pass                                     # another CPU or libc: rebuild for this node below
    current = jsonio.read_object(folder / name, CheckpointError)
    # the unusable library was copied into the build cache under its key on the way: drop it there,
    # so that a build with the same flags compiles instead of restoring it
    (B.cache_dir() / f"{manifest['build_key']}{Path(manifest['library']).suffix}").unlink(missing_ok=True)
    res = B.build(folder / manifest["source"], folder, manifest["prefix"], openmp=bool(manifest.get("openmp")),
                  precision=manifest.get("precision", "fp32"))
    current |= {"library": res.library.name, "build_key": res.key, "flags": res.flags, "compiler": res.compiler,
                "isa": res.isa, "openmp": res.openmp}
    write_durable(folder / name, json.dumps(current, indent=1).encode())
    return folder


# ---------------------------------------------------------------------- the callable class
def map_batches_fn(compiled_dir, text_column: str = "text", pair_column: str | None = None,
                   id_column: str | None = None, batch: int = 32, threads: int = 1, logits: bool = False,
                   thresholds=None):
    """A callable class for `ds.map_batches(cls, concurrency=N)`: each actor opens the compiled
    model of `compiled_dir` once (shipped through the object store, see the module doc) and turns
    each batch (any batch format Ray gives: pyarrow, pandas, numpy) into a pyarrow table with the
    output columns of `refexit score` (row numbers are unknown to Ray: `row` is null and `id` is the
    id column's value, or null without one). `thresholds`: the exit thresholds to run at (None:
    the compiled ones)."""
    ray = require_ray()
    ref = ray.put(pack_artefact(compiled_dir))
    spec = R.Spec(text_column, pair_column, id_column, logits)
    thr = None if thresholds is None else np.asarray(thresholds, np.float32)
    return _make_class(ref, spec, batch, threads, thr)


def _make_class(ref, spec: R.Spec, batch: int, threads: int, thresholds):
    class ScoreBatch:
        """Scores batches with one C handle, opened once per actor."""

        def __init__(self):
            import ray

            import codegen
            from .handles import Scorer, SharedWeights
            art = ray.get(ref)
            self.cm = codegen.load_compiled(unpack_artefact(art))
            if thresholds is not None:
                self.cm.set_thresholds(thresholds)
            self.scorer = Scorer(SharedWeights(self.cm), batch, threads)
            self.spec = spec

        def score_chunk(self, rows: list, spec: R.Spec) -> tuple[list[str], dict]:
            """One chunk of `refexit score --engine ray`: table Rows (read by the driver with
            refexit's reader) -> rows.score_rows's (JSON lines, meta), as a local worker makes them."""
            return R.score_rows(self.scorer, rows, spec, self.cm.label_names)

        def score_part(self, part) -> dict:
            """One part of a folder output (folder.score_part): read, scored and committed into
            the output folder here, on this actor's node -> its meta."""
            from . import folder
            return folder.score_part(self.scorer, part, self.cm.label_names)

        def __call__(self, batch):
            import pyarrow as pa
            from refexit.tables import Row
            recs = _batch_records(batch)
            rows = [Row(-1, r) for r in recs]
            lines, _ = R.score_rows(self.scorer, rows, self.spec, self.cm.label_names)
            out = [json.loads(line) for line in lines]
            for o, r in zip(out, recs):
                o["row"] = None
                if self.spec.id_column is None:
                    o["id"] = None
                if "path" in r:
                    o["path"] = r["path"]
            cols = R.columns(self.spec, self.cm.num_labels) + (["path"] if recs and "path" in recs[0] else [])
            return pa.Table.from_pylist([{k: o.get(k) for k in cols} for o in out])

    return ScoreBatch


def _batch_records(batch) -> list[dict]:
    """A Ray batch (pyarrow Table, pandas DataFrame or dict of arrays) -> row dicts."""
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    if hasattr(batch, "to_dict"):
        return batch.to_dict("records")
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: (batch[k][i].item() if isinstance(batch[k][i], np.generic) else batch[k][i]) for k in keys}
            for i in range(n)]


# ---------------------------------------------------------------------- the command
def score_ray(folder: Path, cm, inputs: list[Path], out_path: Path, opt, address: str | None = None) -> dict:
    """`refexit score --engine ray`: see the module doc. -> the summary (as the local engine's)."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")         # Ray's own deprecation notices
        return _score_ray(folder, cm, inputs, out_path, opt, address)


def _score_ray(folder: Path, cm, inputs: list[Path], out_path, opt, address: str | None) -> dict:
    ray = require_ray()
    folder_output = isinstance(out_path, str)          # "dir/" or "s3://bucket/dir/": parts, unmerged
    engine.check_options(opt)
    if not folder_output:
        output.output_format(out_path)
    if opt.quiet or not output_isatty():
        import logging
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    t_init = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                 **({"include_dashboard": False} if address in (None, "local") else {}))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = opt.workers or max(1, cpus // opt.threads_per_worker)
    if workers * opt.threads_per_worker > cpus:        # actors that could never start: a hang, not a run
        raise InputError(f"--workers {workers} x --threads-per-worker {opt.threads_per_worker} needs "
                         f"{workers * opt.threads_per_worker} CPUs; the Ray cluster has {cpus}")
    # OUTPUT.parts/ (refusing a changed run, or one needing --resume) once the run can start
    if folder_output:
        run, opt = FO.open_run(out_path, inputs, opt, cm, workers)
    else:
        run = chunks.RunDir(out_path, engine.run_spec(inputs, opt, cm), opt.resume)
    t0 = time.perf_counter()
    thr = cm.thresholds if cm.num_layers > 1 else None
    cls = map_batches_fn(folder, opt.text_column, opt.pair_column, opt.id_column, opt.batch,
                         opt.threads_per_worker, opt.logits, thr)
    if folder_output:
        summary = _score_parts(ray, cls, run, cm, inputs, opt, workers)
    else:
        summary = _score_chunks(ray, cls, run, cm, inputs, out_path, opt, workers)
    seconds = time.perf_counter() - t0                 # Ray's start-up apart, as timing_s says
    summary |= {"engine": "ray", "workers": workers, "seconds": round(seconds, 3),
                "texts_per_s": round(summary["rows_this_run"] / seconds, 1) if seconds > 0 else None,
                "timing_s": {"ray_init": round(t0 - t_init, 3)} | summary["timing_s"]}
    return summary


def _score_chunks(ray, cls, run: chunks.RunDir, cm, inputs: list[Path], out_path: Path, opt, workers: int) -> dict:
    """A file output: the local engine's run, with Ray actors in place of the worker threads. The
    driver reads the rows (engine.chunk_jobs: refexit's reader, bad rows reported in place),
    hands each chunk to the least busy actor (at most 2 chunks in flight per actor), and commits
    what comes back to `run` (OUTPUT.parts/, opened by the caller: the same files and the same
    --resume as the local engine, either engine may resume the other's run); engine.finish writes
    OUTPUT."""
    fmt = output.output_format(out_path)
    done = run.committed()
    prog = engine.progress_bar(inputs, opt, done)
    # a dead actor is restarted and the chunks it held are retried (as Ray Data's actor pools do)
    actor = ray.remote(cls).options(num_cpus=opt.threads_per_worker, max_restarts=-1, max_task_retries=-1)
    actors = [actor.remote() for _ in range(workers)]
    busy = [0] * workers
    pending: dict = {}                                 # ObjectRef -> (actor, f, k, last)
    rows_scored = 0
    t0 = time.perf_counter()

    def commit_one():
        nonlocal rows_scored
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        a, f, k, last = pending.pop(ref)
        busy[a] -= 1
        try:
            lines, meta = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        run.commit(f, k, lines, meta, last=last)
        rows_scored += meta["rows"]
        prog.add(meta["rows"])

    try:
        for f, k, rows, last, spec in engine.chunk_jobs(inputs, opt, done):
            while len(pending) >= 2 * workers:
                commit_one()
            a = busy.index(min(busy))
            pending[actors[a].score_chunk.remote(rows, spec)] = (a, f, k, last)
            busy[a] += 1
        while pending:
            commit_one()
    finally:
        prog.close()
        for a in actors:
            ray.kill(a)
    t1 = time.perf_counter()
    summary = engine.finish(run, inputs, out_path, cm, engine.specs(inputs, opt)[0], rows_scored, t1 - t0, fmt)
    return summary | {"timing_s": {"read_score_commit": round(t1 - t0, 3),
                                   "write_output": round(time.perf_counter() - t1, 3)}}


def _score_parts(ray, cls, run: FO.FolderRun, cm, inputs: list[Path], opt, workers: int) -> dict:
    """A folder output: each actor scores whole parts and commits them into the folder itself
    (folder.score_part on its node); the driver hands out the parts still to do (one per actor at a
    time) and gets each part's meta back; folder.finish writes the errors file and the summary."""
    done = run.done_at_start
    prog = engine.progress_bar(inputs, opt, done)
    actor = ray.remote(cls).options(num_cpus=opt.threads_per_worker, max_restarts=-1, max_task_retries=-1)
    actors = [actor.remote() for _ in range(workers)]
    idle = list(range(workers))
    pending: dict = {}                                 # ObjectRef -> (actor, part)
    t0 = time.perf_counter()

    def submit(part):
        a = idle.pop()
        pending[actors[a].score_part.remote(part)] = (a, part)

    def wait_one():
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        a, part = pending.pop(ref)
        idle.append(a)
        try:
            return part, ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None

    try:
        rows = FO.drive(FO.Plan(inputs, opt, run.out, done), submit, wait_one, workers, prog)
    finally:
        prog.close()
        for a in actors:
            ray.kill(a)
    t1 = time.perf_counter()
    summary = FO.finish(run, inputs, cm, rows, t1 - t0)
    return summary | {"timing_s": {"read_score_commit": round(t1 - t0, 3),
                                   "finish": round(time.perf_counter() - t1, 3)}}


def output_isatty() -> bool:
    import sys
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
