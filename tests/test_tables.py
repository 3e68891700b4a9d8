"""refexit.tables: every format, bad rows of each kind (yielded with their reason, numbers kept),
start, folders and globs, a missing pyarrow, and a round trip through the writers of csv / json /
pyarrow themselves (hypothesis)."""
from __future__ import annotations

import builtins
import csv
import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refexit import tables as T
from refexit.errors import InputError


def rows_of(path, **kw):
    return list(T.iter_rows(path, **kw))


def ok(rows):
    return [(r.number, r.values) for r in rows if r.error is None]


def bad(rows):
    return {r.number: r.error for r in rows if r.error is not None}


# ---------------------------------------------------------------------------------------------
# formats and extensions
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt", [
    ("a.txt", "txt"), ("a.csv", "csv"), ("a.CSV", "csv"), ("a.tsv", "tsv"), ("a.tab", "tsv"),
    ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.parquet", "parquet"), ("a.csv.gz", "csv"),
    ("dir.v2/a.jsonl.gz", "jsonl"), ("a.b.tsv", "tsv")])
def test_format_from_extension(name, fmt):
    assert T.table_format(name) == fmt


@pytest.mark.parametrize("name", ["a.xlsx", "a", "a.gz", "a.parquet.gz", "a.json"])
def test_unknown_extension_names_file_and_formats(name):
    with pytest.raises(InputError, match=r"(?s)" + name.replace(".", r"\.") + ".*supported.*\\.csv"):
        T.table_format(name)


def test_format_override():
    assert T.table_format("data.dat", "tsv") == "tsv"
    assert T.table_format("a.csv", "txt") == "txt"
    with pytest.raises(InputError, match="unknown table format 'xls'.*txt, csv, tsv, jsonl, parquet"):
        T.table_format("a.csv", "xls")


def test_txt(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbffirst\r\n\nthird, with comma\n\xc3\xa9t\xc3\xa9\nbad \xff\n")
    rows = rows_of(p)
    assert ok(rows) == [(0, {"text": "first"}), (1, {"text": ""}), (2, {"text": "third, with comma"}),
                        (3, {"text": "été"})]
    assert list(bad(rows)) == [4] and "not valid UTF-8" in bad(rows)[4] and "0xff" in bad(rows)[4]


def test_txt_without_final_newline(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("a\nb", encoding="utf-8")
    assert ok(rows_of(p)) == [(0, {"text": "a"}), (1, {"text": "b"})]


def test_csv_quoting_and_embedded_newlines_keep_row_numbers(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b'text,label\n"one\nspans\r\nthree lines",pos\n"say ""hi"", ok",neg\nlast,pos\n')
    assert ok(rows_of(p)) == [(0, {"text": "one\nspans\r\nthree lines", "label": "pos"}),
                              (1, {"text": 'say "hi", ok', "label": "neg"}),
                              (2, {"text": "last", "label": "pos"})]


def test_tsv(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text('label\ttext\nspam\ta, b\nham\t"quoted\ttab"\n', encoding="utf-8")
    assert ok(rows_of(p)) == [(0, {"label": "spam", "text": "a, b"}),
                              (1, {"label": "ham", "text": "quoted\ttab"})]


def test_csv_bad_rows_are_yielded_with_reasons(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"text,label\ngood,pos\nbad \xfe byte,neg\n\ntoo,many,fields\nshort\n"
                  b"nul\x00here,pos\nafter,neg\n")
    rows = rows_of(p)
    assert [r.number for r in rows] == list(range(7))
    assert ok(rows) == [(0, {"text": "good", "label": "pos"}), (5, {"text": "nul\x00here", "label": "pos"}),
                        (6, {"text": "after", "label": "neg"})]
    errors = bad(rows)
    assert "column 'text'" in errors[1] and "not valid UTF-8" in errors[1] and "0xfe" in errors[1]
    assert "blank line" in errors[2]
    assert errors[3] == "3 fields, the header has 2"
    assert errors[4] == "1 fields, the header has 2"


def test_csv_oversized_field_is_a_row_error_and_reading_goes_on(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text\n" + "x" * (csv.field_size_limit() + 10) + "\nnext\n", encoding="utf-8")
    rows = rows_of(p)
    assert "field larger than field limit" in bad(rows)[0]
    assert ok(rows) == [(1, {"text": "next"})]


@pytest.mark.parametrize("content, match", [
    (b"", "empty file, no header"), (b"\n", "header line is empty"),
    (b"text,text\na,b\n", r"duplicate column name\(s\) \['text'\]"),
    (b"te\xffxt,label\n", "header line is not valid UTF-8")])
def test_csv_file_level_problems_raise(tmp_path, content, match):
    p = tmp_path / "a.csv"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        rows_of(p)


def test_csv_header_only(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text,label\n", encoding="utf-8")
    assert rows_of(p) == []


def test_jsonl_bad_rows(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "a", "label": 1}\n{"text": \n\n[1, 2]\n{"text": "\xff"}\n'
                  b'{"a": 1, "a": 2}\n{"text": "b", "label": null, "x": {"y": [1]}}\n')
    rows = rows_of(p)
    assert ok(rows) == [(0, {"text": "a", "label": 1}), (6, {"text": "b", "label": None, "x": {"y": [1]}})]
    e = bad(rows)
    assert e[1].startswith("malformed JSON") and "blank line" in e[2]
    assert e[3] == "expected a JSON object, got list" and "not valid UTF-8" in e[4]
    assert "duplicate key 'a'" in e[5]


def test_gzip_text_formats(tmp_path):
    p = tmp_path / "a.csv.gz"
    with gzip.open(p, "wt", encoding="utf-8", newline="") as f:
        f.write("text,label\nx,1\ny,2\n")
    assert ok(rows_of(p)) == [(0, {"text": "x", "label": "1"}), (1, {"text": "y", "label": "2"})]


def test_truncated_gzip_is_an_input_error(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    data = gzip.compress(b'{"text": "x"}\n' * 2000)
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="a.jsonl.gz: cannot read"):
        rows_of(p)


@pytest.mark.parametrize("name", ["a.txt", "a.csv", "a.tsv", "a.jsonl", "a.csv.gz"])
def test_start_skips_rows_keeping_numbers(tmp_path, name):
    rows = [{"text": f"t{i}"} for i in range(10)]
    p = T.write_rows(tmp_path / name, rows)
    got = rows_of(p, start=7)
    assert ok(got) == [(i, {"text": f"t{i}"}) for i in range(7, 10)]
    assert rows_of(p, start=10) == [] and rows_of(p, start=99) == []


def test_start_counts_bad_rows(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"text\n\"multi\nline\"\n\xff\nc\n")
    assert [(r.number, r.error is None) for r in rows_of(p, start=1)] == [(1, False), (2, True)]


@pytest.mark.parametrize("start", [-1, 1.5, "2", True])
def test_bad_start(tmp_path, start):
    p = T.write_rows(tmp_path / "a.txt", [{"text": "a"}])
    with pytest.raises(InputError, match="start must be"):
        T.iter_rows(p, start=start)


def test_errors_are_raised_at_the_call(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        T.iter_rows(tmp_path / "missing.csv")          # not only when iterated
    with pytest.raises(InputError, match="not a file"):
        T.iter_rows(tmp_path, format="csv")


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------

def test_parquet_batches_start_and_bad_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")
    import pyarrow.parquet as pq
    n = 3 * T.PARQUET_BATCH_ROWS + 5
    table = pa.table({"text": [f"t{i}" for i in range(n)], "label": [i % 3 for i in range(n)],
                      "raw": [b"ok" if i != 7 else b"\xff" for i in range(n)]})
    p = tmp_path / "a.parquet"
    pq.write_table(table, p, row_group_size=T.PARQUET_BATCH_ROWS + 100)
    rows = rows_of(p)
    assert [r.number for r in rows] == list(range(n))
    assert rows[3].values == {"text": "t3", "label": 0, "raw": "ok"}
    assert bad(rows) == {7: "column 'raw': not valid UTF-8 (byte 0xff at offset 0 of the field)"}
    tail = rows_of(p, start=n - 3)
    assert [(r.number, r.values["text"]) for r in tail] == [(i, f"t{i}") for i in range(n - 3, n)]


def test_parquet_corrupt_file(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")
    p = tmp_path / "a.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="a.parquet: not a readable Parquet file"):
        rows_of(p)


def test_missing_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pyarrow(name, *a, **kw):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    p = tmp_path / "a.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(InputError, match="needs the optional pyarrow package: pip install pyarrow"):
        T.iter_rows(p)
    # the text formats never need it
    assert ok(rows_of(T.write_rows(tmp_path / "a.jsonl", [{"text": "x"}]))) == [(0, {"text": "x"})]


# ---------------------------------------------------------------------------------------------
# expand_inputs
# ---------------------------------------------------------------------------------------------

def test_expand_files_folders_globs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "sub").mkdir()
    for name in ("d/b.csv", "d/a.jsonl", "d/.hidden.csv", "d/notes.md", "d/sub/c.tsv", "e.txt"):
        (tmp_path / name).write_text("text\nx\n")
    d = tmp_path / "d"
    assert T.expand_inputs([d]) == [d / "a.jsonl", d / "b.csv"]
    assert T.expand_inputs([str(tmp_path / "**" / "*.tsv")]) == [d / "sub" / "c.tsv"]
    got = T.expand_inputs([tmp_path / "e.txt", d, str(d / "*.csv"), d / "b.csv"])
    assert got == sorted({d / "a.jsonl", d / "b.csv", tmp_path / "e.txt"}, key=str)
    assert T.expand_inputs(str(tmp_path / "e.txt")) == [tmp_path / "e.txt"]


def test_expand_errors(tmp_path):
    with pytest.raises(InputError, match="missing.csv: no such file or folder"):
        T.expand_inputs([tmp_path / "missing.csv"])
    with pytest.raises(InputError, match=r"the pattern matches no file"):
        T.expand_inputs([str(tmp_path / "*.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="a folder without table files"):
        T.expand_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="no input files"):
        T.expand_inputs([])


# ---------------------------------------------------------------------------------------------
# round trip through the formats' own writers
# ---------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_label = st.one_of(st.integers(-5, 5), st.sampled_from(["pos", "neg", "a,b", 'q"uote']))
_rows = st.lists(st.fixed_dictionaries({"text": _text, "label": _label}), min_size=0, max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, fmt=st.sampled_from(["csv", "tsv", "jsonl", "parquet"]), start=st.integers(0, 25))
def test_round_trip(tmp_path, rows, fmt, start):
    p = tmp_path / f"r.{fmt}"
    if fmt in ("csv", "tsv"):
        with open(p, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(["text", "label"])
            w.writerows([r["text"], r["label"]] for r in rows)
        expect = [{"text": r["text"], "label": str(r["label"])} for r in rows]
    elif fmt == "jsonl":
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        expect = rows
    else:
        pa = pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")
        import pyarrow.parquet as pq
        table = pa.table({"text": pa.array([r["text"] for r in rows], pa.string()),
                          "label": pa.array([str(r["label"]) for r in rows], pa.string())})
        pq.write_table(table, p)
        expect = [{"text": r["text"], "label": str(r["label"])} for r in rows]
    got = rows_of(p, start=start)
    assert bad(got) == {}
    assert ok(got) == list(enumerate(expect))[start:]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\ufeff"),
                              max_size=20), max_size=15))
def test_txt_round_trip(tmp_path, texts):
    p = tmp_path / "r.txt"
    p.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    assert ok(rows_of(p)) == [(i, {"text": t}) for i, t in enumerate(texts)]


@pytest.mark.parametrize("name", ["big.csv", "big.jsonl", "big.txt", "big.csv.gz", "big.parquet"])
def test_streaming_keeps_memory_constant(tmp_path, name):
    """The peak memory of reading a file does not grow with the file (rows are streamed, a line or
    a Parquet record batch at a time): 4x the rows, about the same peak."""
    import tracemalloc
    if name.endswith("parquet"):
        pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")

    def peak(n):
        p = T.write_rows(tmp_path / f"{n}{name}", [{"text": f"row {i} " + "x" * 60} for i in range(n)])
        tracemalloc.start()
        try:
            count = sum(1 for r in T.iter_rows(p) if r.error is None)
            return count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    n = T.PARQUET_BATCH_ROWS
    (n1, small), (n4, large) = peak(n), peak(4 * n)
    assert (n1, n4) == (n, 4 * n)
    assert large < 1.25 * small + 32_768, (small, large)         # the 4x file: ~4n * 70 bytes
