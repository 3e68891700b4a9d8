"""A folder output of `refexit score` (`-o DIR/`, refexit/score/folder.py) with the local engine, on
a tiny random compiled model: its rows are the file output's rows, split into one Parquet file per
part; bad rows keep their place and go to DIR/_errors.jsonl; a real run SIGKILLed mid-run and
resumed has exactly one row per input row, equal to an uninterrupted run's; a part whose file was
written but not committed (no marker) is redone and a committed one is not; a run without --resume
on a folder holding a run, a changed input and a folder of other files are refused. The Ray engine's
folder output (the same parts, scored by actors) is tested in tests/test_score_ray.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refexit import tables
from refexit.errors import InputError
from refexit.cli.main import main
from refexit.score import folder

from test_score import ROOT, expected, kill_when, random_texts, read_jsonl, score, tiny  # noqa: F401  (fixture)

pa = pytest.importorskip("pyarrow", reason="a folder output is Parquet: needs the optional pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def read_folder(out) -> list[dict]:
    """The rows of a folder output in input order (its part files sorted by name: file, then part)."""
    base = Path(str(out).removeprefix("file://"))
    rows = []
    for p in sorted(base.glob("part-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def markers(out) -> list[str]:
    d = Path(out) / folder.MARKERS
    return sorted(p.name for p in d.glob("f*-p*.json")) if d.is_dir() else []


def as_folder_rows(file_rows: list[dict], id_text: bool) -> list[dict]:
    """A file output's rows as a folder output holds them (every column present, ids as text with
    --id-column)."""
    cols = list(dict.fromkeys([k for r in file_rows for k in r] + ["error"]))    # a good row has no `error`
    return [{k: (r.get(k) if not (id_text and k == "id") else folder._id_text(r.get(k))) for k in cols}
            for r in file_rows]


def write_input(path: Path, n: int, seed: int, bad_every: int = 0) -> Path:
    """n rows {id: r<i>, text} in the format of `path`'s extension; every bad_every-th text empty."""
    texts = random_texts(997, seed=seed)
    return tables.write_rows(path, [{"id": f"r{i}", "text": "" if bad_every and i % bad_every == bad_every - 1
                                     else texts[i % len(texts)]} for i in range(n)])


# ---------------------------------------------------------------------- seeking to a part
_line = st.binary(max_size=6).map(lambda b: b.replace(b"\n", b"x"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=12), crlf=st.booleans(), bom=st.booleans(), final=st.booleans(),
       every=st.integers(1, 5), fmt=st.sampled_from(["txt", "jsonl"]))
def test_line_offsets_let_a_part_seek_to_its_first_row(tmp_path, lines, crlf, bom, final, every, fmt):
    """Any bytes (bad UTF-8, empty lines, CRLF, a BOM, no final newline): reading from
    line_offsets' k-th offset with start=k*every gives exactly the rows of a full read from there."""
    end = b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + end.join(lines) + (end if final and lines else b"")
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(data)
    full = list(tables.iter_rows(path))
    offs = tables.line_offsets(path, every)
    assert len(offs) == -(-len(full) // every)
    for k, off in enumerate(offs):
        assert list(tables.iter_rows(path, start=k * every, offset=off)) == full[k * every:]


def test_only_line_files_are_indexed(tmp_path):
    rows = [{"text": "a\nb"}, {"text": "c"}]
    assert tables.line_offsets(tables.write_rows(tmp_path / "x.csv", rows), 1) is None
    assert tables.line_offsets(tables.write_rows(tmp_path / "x.jsonl.gz", rows), 1) is None
    first = tables.write_rows(tmp_path / "x.jsonl", rows).read_bytes().index(b"\n") + 1
    assert tables.line_offsets(tmp_path / "x.jsonl", 1) == [0, first]
    with pytest.raises(InputError, match="uncompressed .txt or .jsonl"):
        tables.iter_rows(tmp_path / "x.csv", start=1, offset=4)


def test_a_folder_holds_the_file_outputs_rows_part_by_part(tiny, tmp_path):
    """Two inputs (one with bad rows) into parts of 40 rows: the parts, in name order, are the file
    output's rows; the errors file and the summary agree with the file output's."""
    _, compiled, cm = tiny
    a = write_input(tmp_path / "a.jsonl", 130, seed=31, bad_every=17)
    b_texts = random_texts(80, seed=32)
    lines = [json.dumps({"id": f"b{i}", "text": t}).encode() for i, t in enumerate(b_texts)]
    lines[3] = b'{"id": "u3", "text": "caf\xe9"}'                   # not UTF-8
    lines[50] = b"{not json"
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    b = tmp_path / "b.jsonl"
    common = ["--id-column", "id", "--chunk-rows", "16", "--batch", "5", "--logits", "--workers", "2"]
    assert score(compiled, a, b, "-o", tmp_path / "ref.jsonl", *common) == 0
    out = str(tmp_path / "out") + "/"
    assert score(compiled, a, b, "-o", out, "--part-rows", "40", *common, "--summary", tmp_path / "s.json") == 0
    names = sorted(p.name for p in Path(out).glob("part-*.parquet"))
    assert names == [folder.part_name(0, k) for k in range(4)] + [folder.part_name(1, k) for k in range(2)]
    ref = read_jsonl(tmp_path / "ref.jsonl")
    assert read_folder(out) == as_folder_rows(ref, id_text=True)
    assert [r["file"] for r in read_folder(out)] == [str(a)] * 130 + [str(b)] * 80
    assert (Path(out) / folder.ERRORS).read_bytes() == (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()
    errs = read_jsonl(Path(out) / folder.ERRORS)
    assert {(e["file"], e["row"]) for e in errs} >= {(str(b), 3), (str(b), 50), (str(a), 16)}
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["rows"], s["errors"], s["rows_this_run"]) == (210, len(errs), 210)
    assert s["scored"] == 210 - len(errs)
    # the whole folder reads as one Parquet data set (the markers and the errors file are skipped)
    assert pq.read_table(out).num_rows == 210


def test_ids_without_an_id_column_are_row_numbers_and_a_uri_works(tiny, tmp_path):
    """No --id-column: `id` is the row number (int64); a file:// URI goes through pyarrow's
    filesystem (the branch an s3:// folder takes) and holds the same rows."""
    _, compiled, cm = tiny
    texts = random_texts(90, seed=33)
    src = tables.write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    out = str(tmp_path / "out") + "/"
    assert score(compiled, src, "-o", out, "--part-rows", "30", "--chunk-rows", "7") == 0
    rows = read_folder(out)
    assert [r["id"] for r in rows] == [r["row"] for r in rows] == list(range(90))
    assert [(r["label"], r["exit_layer"]) for r in rows] == [(w["label"], w["exit_layer"]) for w in expected(cm, texts)]
    uri = "file://" + str(tmp_path / "uri") + "/"
    assert score(compiled, src, "-o", uri, "--part-rows", "30", "--chunk-rows", "7") == 0
    assert read_folder(uri) == rows
    assert markers(tmp_path / "uri") == markers(out)


def test_a_folder_run_needs_resume_the_same_inputs_and_a_folder_of_its_own(tiny, tmp_path, capsys):
    _, compiled, _ = tiny
    src = write_input(tmp_path / "in.jsonl", 60, seed=34)
    out = str(tmp_path / "out") + "/"
    argv = [compiled, src, "-o", out, "--part-rows", "20", "--chunk-rows", "10"]
    assert score(*argv) == 0
    assert score(*argv) == 1                                          # finished: not overwritten
    assert "holds a finished run" in capsys.readouterr().err
    assert score(*argv, "--resume") == 0                              # nothing to do
    os.remove(Path(out) / folder.marker_name(0, 2))                   # now unfinished
    assert score(*argv) == 1
    assert "holds an unfinished run: add --resume" in capsys.readouterr().err
    assert score(*argv[:-2], "--chunk-rows", "11", "--resume") == 1  # other options
    assert "chunk_rows" in capsys.readouterr().err
    with open(src, "a", encoding="utf-8") as f:                       # a changed input
        f.write(json.dumps({"id": "new", "text": "ab"}) + "\n")
    assert score(*argv, "--resume") == 1
    err = capsys.readouterr().err
    assert "--resume" in err and "inputs" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    assert score(compiled, src, "-o", str(other) + "/") == 1
    assert "holds other files and no refexit score run" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("ext", ["csv", "jsonl.gz", "parquet"])
def test_inputs_without_a_line_index_give_the_same_parts(tiny, tmp_path, ext):
    """CSV, gzip and Parquet inputs are not indexed: each part reads up to its first row, and a
    file's end is found by trying parts until one is short (the empty one past the end gets a
    marker but no file). The rows and errors are still the file output's."""
    _, compiled, _ = tiny
    src = write_input(tmp_path / f"in.{ext}", 95, seed=37, bad_every=11)
    common = ["--id-column", "id", "--chunk-rows", "6", "--workers", "2"]
    assert score(compiled, src, "-o", tmp_path / "ref.jsonl", *common) == 0
    out = str(tmp_path / "out") + "/"
    assert score(compiled, src, "-o", out, "--part-rows", "19", *common) == 0
    assert read_folder(out) == as_folder_rows(read_jsonl(tmp_path / "ref.jsonl"), id_text=True)
    assert (Path(out) / folder.ERRORS).read_bytes() == (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()
    assert sorted(p.name for p in Path(out).glob("part-*")) == [folder.part_name(0, k) for k in range(5)]


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_resume_redoes_uncommitted_parts_and_keeps_committed_ones(tiny, tmp_path, ext):
    """The states a kill leaves, made by hand from a finished run: a part whose file is there but
    whose marker is not (killed between the two), a temporary file (killed while writing), a
    missing part (never started): --resume redoes exactly those, deletes the strays, and keeps a
    committed part as it is (its file here replaced by a marked copy, which survives)."""
    _, compiled, _ = tiny
    src = write_input(tmp_path / f"in.{ext}", 100, seed=35, bad_every=13)
    out = Path(tmp_path / "out")
    argv = [compiled, src, "-o", str(out) + "/", "--part-rows", "20", "--chunk-rows", "8", "--id-column", "id"]
    assert score(*argv) == 0
    want = read_folder(out)
    want_errors = (out / folder.ERRORS).read_bytes()
    t1 = pq.read_table(out / folder.part_name(0, 1))
    i = t1.schema.get_field_index("label")
    pq.write_table(t1.set_column(i, t1.schema.field(i), pa.array(["kept"] * t1.num_rows, pa.string())),
                   out / folder.part_name(0, 1))
    os.remove(out / folder.marker_name(0, 2))                          # file written, marker not
    (out / folder.part_name(0, 2)).write_bytes(b"half a parquet file")
    os.remove(out / folder.marker_name(0, 3))                          # never started
    os.remove(out / folder.part_name(0, 3))
    (out / ".part-f00000-p000004.parquet.abc.tmp").write_bytes(b"partial")
    (out / folder.MARKERS / "f00000-p000004.json.abc.tmp").write_bytes(b"{")
    (out / folder.ERRORS).unlink()
    assert score(*argv, "--resume", "--summary", tmp_path / "s.json") == 0
    got = read_folder(out)
    assert [r["label"] for r in got[20:40]] == ["kept"] * 20                # committed: not redone
    assert got[:20] + got[40:] == want[:20] + want[40:]
    assert json.loads((tmp_path / "s.json").read_text())["rows_this_run"] == 40
    assert not [p for p in out.rglob("*.tmp")]
    assert (out / folder.ERRORS).read_bytes() == want_errors


def test_a_part_committed_by_a_survivor_of_the_killed_run_during_the_resume_is_redone(tiny, tmp_path,
                                                                                    monkeypatch):
    """A worker of the killed run may outlive it (a Ray actor outlives its driver for a while) and
    commit its part just after --resume deleted that part's file as a stray: the resume must still
    score the part itself, not take the new marker as done and leave the part without its rows."""
    _, compiled, _ = tiny
    src = write_input(tmp_path / "in.jsonl", 100, seed=37, bad_every=13)
    out = Path(tmp_path / "out")
    argv = [compiled, src, "-o", str(out) + "/", "--part-rows", "20", "--chunk-rows", "8", "--id-column", "id"]
    assert score(*argv) == 0
    want = read_folder(out)
    marker = out / folder.marker_name(0, 2)
    late = marker.read_bytes()
    marker.unlink()                                       # part 2: its file written, its marker not yet
    delete = folder.Store.delete

    def delete_then_the_survivor_commits(store, name):
        delete(store, name)
        if name == folder.part_name(0, 2):
            marker.write_bytes(late)
    monkeypatch.setattr(folder.Store, "delete", delete_then_the_survivor_commits)
    assert score(*argv, "--resume", "--summary", tmp_path / "s.json") == 0
    assert marker.read_bytes() == late                    # the resume wrote it again, the same
    assert read_folder(out) == want
    assert json.loads((tmp_path / "s.json").read_text())["rows_this_run"] == 20


def test_a_folder_run_sigkilled_mid_run_resumes_to_the_uninterrupted_rows(tiny, tmp_path):
    """A real `refexit score -o DIR/` process, SIGKILLed once 10 of its 60 parts are committed,
    then the same command with --resume: exactly one row per input row (ids checked), the rows and
    the errors file of an uninterrupted run."""
    _, compiled, _ = tiny
    n = 30000
    src = write_input(tmp_path / "in.jsonl", n, seed=36, bad_every=1009)
    cmd = [sys.executable, "-m", "refexit.cli.main", "score", str(compiled), str(src), "--id-column", "id",
           "--part-rows", "500", "--chunk-rows", "100", "--batch", "1", "--workers", "2", "-q"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    ref = str(tmp_path / "ref") + "/"
    subprocess.run(cmd + ["-o", ref], check=True, env=env, cwd=ROOT, capture_output=True)
    out = str(tmp_path / "out") + "/"
    kill_when(cmd + ["-o", out], env, lambda: len(markers(out)) >= 10, "10 parts")
    assert 10 <= len(markers(out)) < n // 500
    assert not (Path(out) / folder.ERRORS).exists()
    r = subprocess.run(cmd + ["-o", out], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "unfinished run" in r.stderr
    r = subprocess.run(cmd + ["-o", out, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = read_folder(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(n)]
    assert rows == read_folder(ref)
    assert (Path(out) / folder.ERRORS).read_bytes() == (Path(ref) / folder.ERRORS).read_bytes()
    assert len(read_jsonl(Path(out) / folder.ERRORS)) == n // 1009


def test_parts_default_to_about_four_per_worker_and_a_resume_keeps_them(tiny, tmp_path):
    """Without --part-rows, the parts are sized for about 4 per worker (10,000 rows, 2 workers:
    1,250 rows each), recorded in run.json; a resume with other --workers keeps that size."""
    _, compiled, _ = tiny
    src = write_input(tmp_path / "in.txt", 10000, seed=38, bad_every=501)
    out = Path(tmp_path / "out")
    assert score(compiled, src, "-o", str(out) + "/", "--workers", "2") == 0
    part_rows = json.loads((out / folder.MARKERS / "run.json").read_text())["part_rows"]
    assert part_rows == 1250
    assert sorted(p.name for p in out.glob("part-*")) == [folder.part_name(0, k) for k in range(8)]
    want = read_folder(out)
    assert [r["row"] for r in want] == list(range(10000))
    os.remove(out / folder.marker_name(0, 5))
    assert score(compiled, src, "-o", str(out) + "/", "--workers", "1", "--resume") == 0
    assert read_folder(out) == want
