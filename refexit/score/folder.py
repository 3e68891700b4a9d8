"""A folder output (`-o DIR/` or a URI such as `s3://bucket/dir/`): one Parquet file per *part*,
written where the part is scored (a worker thread, or a Ray actor on any node), committed part by
part, so a killed run resumes with `--resume` and nothing is lost or duplicated.

Part k of input file f is its data rows [k * part_rows, (k + 1) * part_rows) (row numbers as
tables.iter_rows counts them; part_rows: --part-rows, else about 4 parts per worker, open_run). A part is scored by whoever picks it up (score_part): it reads its
rows from the input file itself (refexit's reader: bad rows keep their place with `error` set;
an uncompressed .txt / .jsonl file is indexed once by the driver, tables.line_offsets, so a part
seeks to its first row; see Plan for the others), scores them chunk_rows at a time (memory stays
flat), streams them into

    DIR/part-f<f:05>-p<k:06>.parquet       the part's rows, in row order (no file for an empty part)

and only then writes its marker

    DIR/_refexit/f<f:05>-p<k:06>.json       rows, the bad rows (row, id, error), exit-layer counts,
                                            `last`: the file ends in this part

The names are fixed by (f, k), so a part scored again replaces its file, never adds one; the marker
is the commit. DIR/_refexit/run.json records the run (inputs with sizes and mtimes, options, model
hash, part_rows) as OUTPUT.parts/run.json does for a file output (chunks.py); the engine is not
part of it, so either engine resumes the other's run. On a local path every file goes to a hidden
temporary name, fsync, rename, fsync of the folder; on a URI (a pyarrow filesystem) each file is
one upload, which an object store (S3, GCS, Azure) shows whole or not at all. At the end the
driver writes DIR/_errors.jsonl (one line per bad row, from the markers) and the summary (from the
markers too: no output row passes through the driver). Files and folders whose names start with
`_` or `.` are skipped by pyarrow, Ray and Spark when they read DIR as a Parquet dataset.

`--resume` skips the committed parts and deletes the stray files of the others (a part file
without its marker, temporaries) before anything runs, and scores every part not committed at
that moment, even one that a still-running worker of the killed run commits meanwhile (FolderRun.
remove_strays); a run without --resume on a folder holding a run is refused, as is a resume whose
inputs or options changed."""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refexit import files, jsonio, tables
from refexit.errors import InputError, OutputError

from . import chunks, rows as R

MARKERS = "_refexit"
ERRORS = "_errors.jsonl"
_PART = re.compile(r"part-f(\d{5})-p(\d{6})\.parquet")
_MARKER = re.compile(r"f(\d{5})-p(\d{6})\.json")


def is_folder_output(output: str) -> bool:
    """`-o DIR/` (a path ending in /) or a URI (`s3://bucket/dir/`, `file:///...`)."""
    return str(output).endswith("/") or "://" in str(output)


def part_name(f: int, k: int) -> str:
    return f"part-f{f:05d}-p{k:06d}.parquet"


def marker_name(f: int, k: int) -> str:
    return f"{MARKERS}/f{f:05d}-p{k:06d}.json"


# ---------------------------------------------------------------------- where the files go
class Store:
    """The output folder: a local path (durable writes: temporary, fsync, rename, fsync folder) or
    a URI through pyarrow's filesystems (each file one upload, shown whole or not at all)."""

    def __init__(self, out: str):
        self.out = out
        if "://" in out:
            import pyarrow.fs as pafs
            try:
                self.fs, root = pafs.FileSystem.from_uri(out)
            except (ValueError, OSError) as e:
                raise InputError(f"-o {out}: not a folder pyarrow can write to: {e}") from None
            self.local, self.root = None, root.rstrip("/")
        else:
            self.fs, self.local, self.root = None, Path(out), out.rstrip("/")

    def _full(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def makedirs(self) -> None:
        try:
            if self.local is not None:
                (self.local / MARKERS).mkdir(parents=True, exist_ok=True)
            else:
                self.fs.create_dir(self._full(MARKERS), recursive=True)
        except OSError as e:
            raise OutputError(f"cannot create {self.out}: {e.strerror or e}") from None

    def list(self, sub: str = "") -> list[str] | None:
        """The names in the folder (or its subfolder `sub`); None when it does not exist."""
        if self.local is not None:
            p = self.local / sub
            return sorted(os.listdir(p)) if p.is_dir() else None
        import pyarrow.fs as pafs
        info = self.fs.get_file_info(self._full(sub))
        if info.type != pafs.FileType.Directory:
            return None
        sel = pafs.FileSelector(self._full(sub), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel))

    def read_bytes(self, name: str) -> bytes:
        if self.local is not None:
            return (self.local / name).read_bytes()
        with self.fs.open_input_stream(self._full(name)) as s:
            return s.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        if self.local is not None:
            chunks.write_durable(self.local / name, data)
        else:
            with self.fs.open_output_stream(self._full(name)) as s:
                s.write(data)

    def delete(self, name: str) -> None:
        if self.local is not None:
            (self.local / name).unlink(missing_ok=True)
        else:
            self.fs.delete_file(self._full(name))

    def write_parquet(self, name: str, schema, tables_) -> None:
        """Stream pyarrow tables into one Parquet file `name`, committed whole (see the class doc)."""
        import pyarrow.parquet as pq
        if self.local is None:
            with self.fs.open_output_stream(self._full(name)) as s, pq.ParquetWriter(s, schema) as w:
                for t in tables_:
                    w.write_table(t)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.local)
        try:
            with os.fdopen(fd, "wb") as fh:
                with pq.ParquetWriter(fh, schema) as w:
                    for t in tables_:
                        w.write_table(t)
                fh.flush()
                os.fsync(fh.fileno())
            files.set_mode(tmp)
            os.replace(tmp, self.local / name)
            chunks.fsync_dir(self.local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------------- the run
class FolderRun:
    """DIR/_refexit/: what the run is (run.json) and its committed parts (the markers)."""

    def __init__(self, out: str, run: dict, resume: bool):
        self.store = store = Store(out)
        self.out = out
        self.run = run = {"refexit_score_run": chunks.RUN_FORMAT, "output": "folder"} | run
        names = store.list()
        if names and MARKERS not in names:
            raise InputError(f"-o {out}: the folder holds other files and no refexit score run; give a new "
                             f"or empty folder")
        if names and MARKERS in names:
            old = jsonio.loads(store.read_bytes(f"{MARKERS}/run.json"), f"{out}{MARKERS}/run.json", InputError) \
                if "run.json" in (store.list(MARKERS) or []) else None
            if not resume:
                if old is not None and self.finished(len(old.get("inputs", []))):
                    raise InputError(f"-o {out}: the folder holds a finished run: delete it (or choose another "
                                     f"folder) to score again")
                raise InputError(f"-o {out}: the folder holds an unfinished run: add --resume to continue it, "
                                 f"or delete the folder to start again")
            if old is not None:
                chunks.check_same_run(old, run, out)
                self.done_at_start = self.remove_strays()
                return
        self.done_at_start: dict[int, dict[int, dict]] = {}
        store.makedirs()
        store.write_bytes(f"{MARKERS}/run.json", json.dumps(run, indent=1).encode())

    def committed(self) -> dict[int, dict[int, dict]]:
        """file index -> part index -> its marker, for every committed part."""
        out: dict = {}
        for name in self.store.list(MARKERS) or []:
            m = _MARKER.fullmatch(name)
            if m:
                raw = self.store.read_bytes(f"{MARKERS}/{name}")
                out.setdefault(int(m.group(1)), {})[int(m.group(2))] = \
                    jsonio.loads(raw, f"{self.out}{MARKERS}/{name}", OutputError)
        return out

    def finished(self, n_files: int) -> bool:
        done = self.committed()
        return all(_complete(done.get(f, {})) for f in range(n_files))

    def remove_strays(self) -> dict[int, dict[int, dict]]:
        """Delete what a killed run left uncommitted: part files without a marker, temporaries.
        -> the committed parts it judged by, which are the parts this run skips: a worker of the
        killed run still alive (a Ray actor outlives its driver for a while) may commit a part
        whose file was just deleted here, and such a part is not in the list, so it is scored again."""
        done = self.committed()
        for name in self.store.list() or []:
            m = _PART.fullmatch(name)
            if (m and int(m.group(2)) not in done.get(int(m.group(1)), {})) or \
                    (name.startswith((".part-", ERRORS + ".")) and name.endswith(".tmp")):
                self.store.delete(name)
        for name in self.store.list(MARKERS) or []:
            if name.endswith(".tmp"):
                self.store.delete(f"{MARKERS}/{name}")
        return done


MAX_PART_ROWS, MIN_PART_ROWS = 65536, 1024


def open_run(out: str, inputs: list[Path], opt, cm, workers: int) -> tuple[FolderRun, object]:
    """The run of a folder output (refusing a changed run, or one needing --resume) and the options
    with part_rows settled: --part-rows if given, else the unfinished run's (a resume), else about
    4 parts per worker over the inputs (a quick estimate of their rows), within [1024, 65536]."""
    import dataclasses

    from . import engine
    part_rows = opt.part_rows
    if part_rows is None and opt.resume:
        store = Store(out)
        if "run.json" in (store.list(MARKERS) or []):
            old = jsonio.loads(store.read_bytes(f"{MARKERS}/run.json"), f"{out}{MARKERS}/run.json", InputError)
            part_rows = old.get("part_rows") if isinstance(old.get("part_rows"), int) else None
    if part_rows is None:
        est = estimate_rows(inputs, opt.input_format)
        part_rows = MAX_PART_ROWS if est is None else \
            min(MAX_PART_ROWS, max(MIN_PART_ROWS, -(-est // (4 * workers))))
    opt = dataclasses.replace(opt, part_rows=part_rows)
    return FolderRun(out, engine.run_spec(inputs, opt, cm) | {"part_rows": part_rows}, opt.resume), opt


def estimate_rows(inputs: list[Path], input_format: str | None) -> int | None:
    """The inputs' rows, roughly and without reading them: each text file's size over the mean
    length of its first MiB of lines, a Parquet file's metadata; None for a compressed file."""
    total = 0
    for p in inputs:
        fmt = tables.table_format(p, input_format)
        if fmt == "parquet":
            import pyarrow.parquet as pq
            try:
                total += pq.ParquetFile(p).metadata.num_rows
            except Exception:                  # noqa: BLE001  (only an estimate; the reader says why later)
                return None
            continue
        if str(p).lower().endswith(".gz"):
            return None
        with open(p, "rb") as f:
            head = f.read(1 << 20)
        lines = head.count(b"\n") or 1
        total += -(-Path(p).stat().st_size * lines // max(len(head), 1))
    return total


# ---------------------------------------------------------------------- one part
@dataclass(frozen=True)
class Part:
    """What a worker needs to score part k of input file f into the folder `out`."""
    out: str
    f: int
    k: int
    path: str
    part_rows: int
    chunk_rows: int
    input_format: str | None
    spec: R.Spec
    offset: int | None = None        # the byte offset of its first row (tables.line_offsets), if known
    last: bool | None = None         # the file ends in this part (None: not known before reading)


def part_schema(spec: R.Spec, num_labels: int):
    """The Parquet schema every part shares (so DIR reads as one data set): `id` is the row number
    (int64) or, with --id-column, the id as text (JSON text for a value that is not a string)."""
    import pyarrow as pa
    types = {"file": pa.string(), "row": pa.int64(), "id": pa.int64() if spec.id_column is None else pa.string(),
             "label": pa.string(), "label_id": pa.int64(), "probability": pa.float64(), "value": pa.float64(),
             "exit_layer": pa.int64(), "logits": pa.list_(pa.float64()), "error": pa.string()}
    return pa.schema([(c, types[c]) for c in R.columns(spec, num_labels)])


def _id_text(v):
    return None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def score_part(scorer, part: Part, label_names: list[str]) -> dict:
    """Read, score and commit one part (its Parquet file, then its marker) -> the marker's meta."""
    import itertools

    import pyarrow as pa
    spec = part.spec
    schema = part_schema(spec, scorer.cm.num_labels)
    store = Store(part.out)
    meta = {"rows": 0, "errors": [], "exits": [0] * scorer.cm.num_layers} | \
        ({"layers_run": 0} if scorer.layers_run is not None else {})
    rows = itertools.islice(tables.iter_rows(part.path, format=part.input_format, start=part.k * part.part_rows,
                                             offset=part.offset), part.part_rows)

    def scored():
        while buf := list(itertools.islice(rows, part.chunk_rows)):
            lines, m = R.score_rows(scorer, buf, spec, label_names)
            meta["rows"] += m["rows"]
            meta["errors"] += m["errors"]
            meta["exits"] = [a + b for a, b in zip(meta["exits"], m["exits"])]
            if "layers_run" in meta:
                meta["layers_run"] += m["layers_run"]
            recs = [json.loads(line) for line in lines]
            if spec.id_column is not None:
                for r in recs:
                    r["id"] = _id_text(r["id"])
            yield pa.Table.from_pylist(recs, schema=schema)

    tables_ = scored()
    first = next(tables_, None)
    if first is not None:                                # an empty part (past the file's end) has no file
        store.write_parquet(part_name(part.f, part.k), schema, itertools.chain([first], tables_))
    meta["last"] = meta["rows"] < part.part_rows if part.last is None else part.last
    store.write_bytes(marker_name(part.f, part.k), json.dumps(meta).encode())      # the commit
    return meta


# ---------------------------------------------------------------------- the parts still to do
class Plan:
    """The parts still to score, file by file, each file looked at when its turn comes. An
    uncompressed .txt / .jsonl file is indexed then (tables.line_offsets: one pass counting
    newlines, no row parsed), so its parts are known and each seeks to its first row; any other
    file (CSV / TSV, Parquet, gzip) is read by each part from its start up to the part's first row
    (Parquet skips whole row groups), and its end is found by trying parts k, k+1, ... until one
    comes back with `last` (the parts handed out meanwhile past the end come back empty)."""

    def __init__(self, inputs: list[Path], opt, out: str, done: dict):
        from . import engine
        self.inputs, self.opt, self.out, self.done = inputs, opt, out, done
        self.specs = engine.specs(inputs, opt)
        self.files = [f for f in range(len(inputs)) if not _complete(done.get(f, {}))]   # still to do, in order
        self.f: int | None = None                        # the file whose parts are being handed out
        self.todo: list[int] = []                        # its parts still to hand out, in order
        self.open_from: int | None = None                # its next part to try (its end not known)
        self.end: dict[int, int] = {}                    # file -> its last part, once known
        self.offsets: list[int] | None = None            # its parts' byte offsets (indexed)

    def _start(self, f: int) -> None:
        d = self.done.get(f, {})
        todo, end_known = chunks.missing_chunks(d)
        self.f, self.open_from = f, None
        self.offsets = offs = tables.line_offsets(self.inputs[f], self.opt.part_rows, self.opt.input_format)
        if offs is not None:
            self.offsets = offs = offs or [0]            # an empty file: one empty part
            self.end[f] = len(offs) - 1
            todo = [k for k in range(len(offs)) if k not in d]
        elif end_known:
            self.end[f] = min(k for k, m in d.items() if m.get("last"))
        else:
            self.open_from = max(d) + 1 if d else 0
        self.todo = todo[::-1]

    def next(self) -> Part | None:
        while True:
            if self.f is not None and self.todo:
                k = self.todo.pop()
                break
            if self.f is not None and self.open_from is not None and self.f not in self.end:
                k = self.open_from
                self.open_from += 1
                break
            if not self.files:
                return None
            self._start(self.files.pop(0))
        o, offs = self.opt, self.offsets
        return Part(self.out, self.f, k, str(self.inputs[self.f]), o.part_rows, o.chunk_rows, o.input_format,
                    self.specs[self.f], None if offs is None else offs[k], None if offs is None else k == len(offs) - 1)

    def needed(self, part: Part) -> bool:
        return part.k <= self.end.get(part.f, part.k)

    def finished(self, part: Part, meta: dict) -> None:
        if meta["last"]:
            self.end[part.f] = min(self.end.get(part.f, part.k), part.k)


def _complete(d: dict) -> bool:
    todo, end_known = chunks.missing_chunks(d)
    return end_known and not todo


def drive(plan: Plan, submit, wait_one, limit: int, prog) -> int:
    """Hand out the plan's parts (submit(part)), at most `limit` at a time; wait_one() -> (part,
    meta) of a finished one. -> rows scored."""
    inflight = rows = 0
    part = plan.next()
    while part is not None or inflight:
        if part is not None and not plan.needed(part):        # past a file's end, found meanwhile
            part = plan.next()
            continue
        if part is not None and inflight < limit:
            submit(part)
            inflight += 1
            part = plan.next()
            continue
        got, meta = wait_one()
        inflight -= 1
        plan.finished(got, meta)
        rows += meta["rows"]
        prog.add(meta["rows"])
    return rows


def finish(run: FolderRun, inputs: list[Path], cm, rows_scored: int, seconds: float) -> dict:
    """Every part committed: DIR/_errors.jsonl and the summary, both from the markers."""
    from . import engine
    done = run.committed()
    total, errors, metas = 0, [], []
    many = len(inputs) > 1
    for f, path in enumerate(inputs):
        d = done.get(f, {})
        todo, end_known = chunks.missing_chunks(d)
        if todo or not end_known:
            raise RuntimeError(f"internal: {path} has parts not committed: {todo}")      # a bug, not an input
        end = min(k for k, m in d.items() if m.get("last"))
        for k in sorted(k for k in d if k <= end):
            total += d[k]["rows"]
            metas.append(d[k])
            errors += [({"file": str(path)} if many else {}) | e for e in d[k]["errors"]]
    run.store.write_bytes(ERRORS, "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n"
                                          for e in errors).encode())
    return engine.summarize(total, *engine.exit_counts(metas, cm.num_layers), len(errors), rows_scored, seconds,
                            run.out, run.out.rstrip("/") + "/" + ERRORS)


# ---------------------------------------------------------------------- the local engine
def score_folder_local(cm, inputs: list[Path], out: str, opt) -> dict:
    """The local engine into a folder: worker threads (one C handle each) score whole parts."""
    from . import engine
    from .handles import Scorer, SharedWeights
    engine.check_options(opt)
    workers = opt.workers or max(1, engine.cpu_count() // opt.threads_per_worker)
    run, opt = open_run(out, inputs, opt, cm, workers)
    done = run.done_at_start
    prog = engine.progress_bar(inputs, opt, done)
    shared = SharedWeights(cm)
    mine = threading.local()
    scorers: list = []

    def work(part: Part) -> dict:
        if getattr(mine, "scorer", None) is None:
            mine.scorer = Scorer(shared, opt.batch, opt.threads_per_worker)
            with shared.lock:
                scorers.append(mine.scorer)
        return score_part(mine.scorer, part, cm.label_names)

    pending: dict = {}
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="score")

    def submit(part: Part) -> None:
        pending[pool.submit(work, part)] = part

    def wait_one():
        fut = next(iter(wait(pending, return_when=FIRST_COMPLETED)[0]))
        return pending.pop(fut), fut.result()

    try:
        rows = drive(Plan(inputs, opt, out, done), submit, wait_one, workers, prog)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        prog.close()
        for s in scorers:
            s.close()
    return finish(run, inputs, cm, rows, time.perf_counter() - t0)
