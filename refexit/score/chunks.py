"""The output of a run as committed chunks: OUTPUT.parts/ holds run.json (what the run is: inputs
with their sizes and mtimes, options, rows per chunk) and, per input file f and chunk k (data rows
[k * chunk_rows, (k + 1) * chunk_rows) of that file), f<f>-c<k>.jsonl (one JSON line per input row)
and f<f>-c<k>.meta.json (rows, errors, exit layers, `last`: the file ends in this chunk).

Every file is written to a temporary name, fsynced, renamed into place and the folder fsynced; the
.jsonl is renamed last, so its presence commits the chunk. A run killed at any point leaves only
whole, committed chunks (and stray temporaries, ignored and replaced); `--resume` redoes exactly
the chunks that are not committed, so the final output holds each input row once."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from refexit import files, jsonio
from refexit.errors import InputError, OutputError

RUN_FORMAT = 1
_CHUNK = re.compile(r"f(\d{5})-c(\d{9})\.jsonl")


def write_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably: temporary file, fsync, rename, fsync folder."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        files.set_mode(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def input_identity(paths: list[Path]) -> list[dict]:
    """What run.json records of the inputs (a resume refuses inputs that changed)."""
    out = []
    for p in paths:
        st = p.stat()
        out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


class RunDir:
    """OUTPUT.parts/: the committed chunks of one run."""

    def __init__(self, output: Path, run: dict, resume: bool):
        self.output, self.path = output, parts_dir(output)
        self.run = run = {"refexit_score_run": RUN_FORMAT} | run
        run_file = self.path / "run.json"
        if self.path.exists():
            if not resume:
                raise InputError(f"{self.path} holds an unfinished run: add --resume to continue it, or delete "
                                 f"the folder to start again")
            old = jsonio.read_object(run_file, InputError, what="the run file of an unfinished score run") \
                if run_file.exists() else None
            if old is not None:
                check_same_run(old, run, self.path)
                return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {self.path}: {e.strerror}") from None
        write_durable(run_file, json.dumps(run, indent=1).encode())

    def chunk_path(self, f: int, k: int) -> Path:
        return self.path / f"f{f:05d}-c{k:09d}.jsonl"

    def committed(self) -> dict[int, dict[int, dict]]:
        """file index -> chunk index -> its meta, for every committed chunk."""
        out: dict = {}
        for p in self.path.iterdir():
            m = _CHUNK.fullmatch(p.name)
            if m:
                f, k = int(m.group(1)), int(m.group(2))
                meta = jsonio.read_object(p.with_suffix(".meta.json"), OutputError, what="a chunk's meta file")
                out.setdefault(f, {})[k] = meta
        return out

    def commit(self, f: int, k: int, lines: list[str], meta: dict, last: bool | None = None) -> None:
        """Commit chunk k of file f: its meta (rows.score_rows's, with `last` when given: the file
        ends in this chunk), then its lines."""
        path = self.chunk_path(f, k)
        if last is not None:
            meta = meta | {"last": last}
        write_durable(path.with_suffix(".meta.json"), json.dumps(meta).encode())
        write_durable(path, "".join(line + "\n" for line in lines).encode())      # the commit

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def check_same_run(old: dict, run: dict, where) -> None:
    """A --resume of the run recorded as `old` with the run `run`: refused when they differ."""
    if old != json.loads(json.dumps(run)):
        diff = sorted(k for k in set(old) | set(run) if old.get(k) != json.loads(json.dumps(run.get(k))))
        raise InputError(f"--resume: {where} is a run with other {', '.join(diff)} (the inputs "
                         f"or options changed); delete the folder to start again")


def missing_chunks(done: dict[int, dict]) -> tuple[list[int], bool]:
    """The chunk indices of one file still to do below its last known chunk, and whether the file's
    end is known (a committed chunk with `last`). With the end unknown, everything after
    max(done) is to do as well."""
    last = [k for k, m in done.items() if m.get("last")]
    end = min(last) if last else (max(done) if done else -1)
    todo = [k for k in range(end + 1) if k not in done]
    return todo, bool(last)
