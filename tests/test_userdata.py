"""refexit.userdata: your own labelled table files as a refexit.data.Dataset — every format, pair
columns, a split column or deterministic stratified fractions, every kind of bad row (counted, with
its row number, never dropped silently), unknown labels, class ids vs names vs regression."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refexit import data, tables, userdata
from refexit.errors import InputError


def labelled(n=60, labels=("neg", "pos", "mid"), seed=0):
    rng = np.random.default_rng(seed)
    return [{"text": f"text number {i} {rng.integers(1000)}", "label": labels[i % len(labels)]} for i in range(n)]


def all_texts(ds):
    return [t for s in ds.splits().values() for t in s.texts]


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet", "csv.gz", "jsonl.gz"])
def test_every_format_gives_the_same_dataset(tmp_path, ext):
    if ext == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")
    rows = labelled()
    ref = userdata.load_table(tables.write_rows(tmp_path / "ref.csv", rows))
    ds = userdata.load_table(tables.write_rows(tmp_path / f"d.{ext}", rows))
    assert isinstance(ds, data.Dataset) and ds.label_names == ["mid", "neg", "pos"]
    assert ds.problem_type == "single_label_classification"
    for a, b in zip(ref.splits().values(), ds.splits().values()):
        assert a.texts == b.texts and np.array_equal(a.labels, b.labels) and b.pairs is None
    assert ds.info["bad_rows"]["count"] == 0 and ds.info["size"] == 60


def test_fractions_are_the_builtin_stratified_split(tmp_path):
    rows = labelled(101)
    ds = userdata.load_table(tables.write_rows(tmp_path / "d.csv", rows), split_seed=3)
    y = np.array([["mid", "neg", "pos"].index(r["label"]) for r in rows])
    idx = data.stratified_split(y, (0.7, 0.1, 0.2), np.random.default_rng(3))
    for part, split in zip(idx, ds.splits().values()):
        assert split.texts == [rows[i]["text"] for i in part] and np.array_equal(split.labels, y[part])
    assert sorted(all_texts(ds)) == sorted(r["text"] for r in rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(20, 80), k=st.integers(1, 4), dev=st.floats(0.0, 0.35), test=st.floats(0.0, 0.35),
       seed=st.integers(0, 5))
def test_stratified_fractions_are_deterministic_and_stratified(tmp_path, n, k, dev, test, seed):
    rows = labelled(n, labels=[f"c{j}" for j in range(k)])
    p = tables.write_rows(tmp_path / "d.jsonl", rows)
    a = userdata.load_table(p, dev_fraction=dev, test_fraction=test, split_seed=seed)
    b = userdata.load_table(p, dev_fraction=dev, test_fraction=test, split_seed=seed)
    assert [s.texts for s in a.splits().values()] == [s.texts for s in b.splits().values()]
    assert sorted(all_texts(a)) == sorted(r["text"] for r in rows)        # every row in one split
    for c in range(len(a.label_names)):                                   # per label: its rounded share
        count = sum(int(np.sum(s.labels == c)) for s in a.splits().values())
        assert abs(int(np.sum(a.dev.labels == c)) - dev * count) <= 1
        assert abs(int(np.sum(a.test.labels == c)) - test * count) <= 1


def test_split_column_keeps_file_order(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "part": s}
            for i, s in enumerate(["train", "TEST", "validation", "train", "dev", "val", "test", "train", "valid"])]
    ds = userdata.load_table(tables.write_rows(tmp_path / "d.csv", rows), split_column="part")
    assert ds.train.texts == ["t0", "t3", "t7"] and ds.dev.texts == ["t2", "t4", "t5", "t8"]
    assert ds.test.texts == ["t1", "t6"] and ds.info["table"]["split_column"] == "part"


def test_pairs(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": ["entailment", "neutral"][i % 2]} for i in range(30)]
    ds = userdata.load_table(tables.write_rows(tmp_path / "nli.tsv", rows), text_column="premise",
                             pair_column="hypothesis")
    for s in ds.splits().values():
        assert s.pairs == [t.replace("p", "h") for t in s.texts]
    sub = ds.subset(5, 1, 2)
    assert sub.train.pairs == [t.replace("p", "h") for t in sub.train.texts]


def test_builtin_rows_through_a_file_give_the_builtin_dataset(tmp_path):
    """A built-in split written to a CSV with a split column reads back as the same Dataset."""
    ds = toy_builtin()
    rows = [{"text": t, "label": ds.label_names[y], "split": k}
            for k, s in ds.splits().items() for t, y in zip(s.texts, s.labels)]
    got = userdata.load_data(tables.write_rows(tmp_path / "d.csv", rows), split_column="split")
    assert got.label_names == ds.label_names
    for a, b in zip(ds.splits().values(), got.splits().values()):
        assert a.texts == b.texts and np.array_equal(a.labels, b.labels)


def toy_builtin():
    rows = labelled(40, labels=("ham", "spam"))
    y = np.array([r["label"] == "spam" for r in rows], np.int64)
    idx = data.stratified_split(y, (0.7, 0.1, 0.2), np.random.default_rng(0))
    split = lambda i: data.Split([rows[j]["text"] for j in i], y[i])  # noqa: E731
    return data.Dataset("toy", ["ham", "spam"], *(split(i) for i in idx))


# ---------------------------------------------------------------- labels
@pytest.mark.parametrize("raw, names", [
    (["0", "2", "1", "2"], ["0", "1", "2"]),                      # CSV ids
    ([3, 0, 1], ["0", "1", "2", "3"]),                            # JSON ids (2: a class without examples)
    (["-1", "1", "-1"], ["-1", "1"]),                             # negative integers: names, by value
    (["b", "a", "10"], ["10", "a", "b"]),                         # names
    ([True, False], ["False", "True"]),
])
def test_class_ids_and_names(tmp_path, raw, names):
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate(raw)]
    ds = userdata.load_table(tables.write_rows(tmp_path / "d.jsonl", rows), dev_fraction=0, test_fraction=0)
    assert ds.label_names == names and ds.problem_type == "single_label_classification"
    got = {t: ds.label_names[y] for t, y in zip(ds.train.texts, ds.train.labels)}   # (shuffled)
    assert got == {f"t{i}": str(v) for i, v in enumerate(raw)}


@pytest.mark.parametrize("ext, raw", [("csv", ["0.5", "1", "-2.25", "3e2"]), ("jsonl", [0.5, 1, 2.0, -3])])
def test_regression_detection(tmp_path, ext, raw):
    rows = [{"text": f"t{i}", "score": v} for i, v in enumerate(raw)]
    ds = userdata.load_table(tables.write_rows(tmp_path / f"d.{ext}", rows), label_column="score",
                             dev_fraction=0, test_fraction=0)
    assert ds.problem_type == "regression" and ds.label_names == ["score"]
    assert ds.train.labels.dtype == np.float64
    assert sorted(ds.train.labels) == sorted(float(v) for v in raw)
    with pytest.raises(InputError, match="regression.*the demo handles classification only"):
        userdata.require_classification(ds, "the demo")
    assert len(ds.subset(2, 0, 0).train) == 2


def test_parquet_float_column_is_regression(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow")
    import pyarrow.parquet as pq
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [1.0, 0.0, 1.0]}), p)
    assert userdata.load_table(p).problem_type == "regression"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [1, 0, 1]}), p)
    assert userdata.load_table(p).label_names == ["0", "1"]


# ---------------------------------------------------------------- bad rows
def test_every_bad_row_kind_is_counted_with_its_row_number(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"text,label,split\n"
                  b"good one,a,train\n"           # 0
                  b",a,train\n"                   # 1 empty text
                  b"   ,b,train\n"                # 2 empty text (whitespace)
                  b"no label,,train\n"            # 3 missing label
                  b"bad \xff bytes,a,train\n"     # 4 bad bytes
                  b"short,a\n"                    # 5 wrong field count
                  b"new label,zz,test\n"          # 6 unknown label (not in train)
                  b"where,a,holdout\n"            # 7 unknown split
                  b"\"multi\nline\",b,train\n"    # 8 good (two lines, one row)
                  b"\n"                           # 9 blank line
                  b"dev one,b,dev\n")             # 10
    ds = userdata.load_table(p, split_column="split")
    assert ds.train.texts == ["good one", "multi\nline"] and ds.dev.texts == ["dev one"] and not ds.test.texts
    bad = ds.info["bad_rows"]
    assert bad["count"] == 8 and (ds.info["raw_size"], ds.info["size"]) == (11, 3)
    assert bad["by_kind"] == {"bad bytes": 1, "empty text": 2, "missing label": 1, "unknown label": 1,
                              "unknown split": 1, "unreadable row": 2}
    assert [(r["row"], r["kind"]) for r in bad["rows"]] == [
        (1, "empty text"), (2, "empty text"), (3, "missing label"), (4, "bad bytes"), (5, "unreadable row"),
        (6, "unknown label"), (7, "unknown split"), (9, "unreadable row")]
    assert all(r["file"] == str(p) for r in bad["rows"])
    text = userdata.summary(ds)
    assert "8 bad row(s) left out" in text and f"{p} row 6: unknown label: 'zz'" in text
    assert json.loads(json.dumps(ds.info))["bad_rows"] == bad             # goes into JSON as it is


def test_jsonl_bad_rows(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "a", "label": "x"}\n{"text": 5, "label": "x"}\n{"label": "x"}\n'
                  b'{"text": "b", "label": null}\n{"text": "c", "label": [1]}\n{broken\n'
                  b'{"text": "d", "label": "y"}\n')
    ds = userdata.load_table(p, dev_fraction=0, test_fraction=0)
    assert ds.train.texts == ["a", "d"]
    assert [(r["row"], r["kind"]) for r in ds.info["bad_rows"]["rows"]] == [
        (1, "text is not a string"), (2, "no text field"), (3, "missing label"),
        (4, "label is not a number or name"), (5, "unreadable row")]


def test_nonfinite_regression_target(tmp_path):
    p = tables.write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": v}
                                               for i, v in enumerate(["0.5", "inf", "1.5", "", "nan"])])
    ds = userdata.load_table(p, dev_fraction=0, test_fraction=0)
    assert ds.problem_type == "regression" and sorted(ds.train.labels) == [0.5, 1.5]
    assert [(r["row"], r["kind"]) for r in ds.info["bad_rows"]["rows"]] == [
        (1, "label is not a finite number"), (3, "missing label"), (4, "label is not a finite number")]


def test_several_files_number_their_own_rows(tmp_path):
    (tmp_path / "d").mkdir()
    tables.write_rows(tmp_path / "d" / "a.csv", [{"text": "x", "label": "p"}, {"text": "", "label": "p"}])
    tables.write_rows(tmp_path / "d" / "b.jsonl", [{"text": "", "label": "q"}, {"text": "y", "label": "q"}])
    ds = userdata.load_table(tmp_path / "d", dev_fraction=0, test_fraction=0)
    assert ds.name == "d" and sorted(ds.train.texts) == ["x", "y"]
    assert [(r["file"].rsplit("/", 1)[1], r["row"]) for r in ds.info["bad_rows"]["rows"]] == [("a.csv", 1), ("b.jsonl", 0)]


# ---------------------------------------------------------------- whole-file problems
def test_missing_column_names_the_columns(tmp_path):
    p = tables.write_rows(tmp_path / "d.csv", [{"sentence": "a", "label": "x"}])
    with pytest.raises(InputError, match=r"no column 'text' \(--text-column\); its columns are \['label', 'sentence'\]"):
        userdata.load_table(p)
    p = tables.write_rows(tmp_path / "d.jsonl", [{"text": "a", "y": 1}])
    with pytest.raises(InputError, match=r"no column 'label' \(--label-column\)"):
        userdata.load_table(p)
    with pytest.raises(InputError, match=r"no column 'pair' \(--pair-column\)"):
        userdata.load_table(tables.write_rows(tmp_path / "e.csv", [{"text": "a", "label": "b"}]),
                            pair_column="pair")


def test_no_usable_rows(tmp_path):
    p = tables.write_rows(tmp_path / "d.csv", [{"text": "", "label": "x"}])
    with pytest.raises(InputError, match="no usable rows.*empty text"):
        userdata.load_table(p)


@pytest.mark.parametrize("dev, test, match", [(0.5, 0.5, "leaves nothing to train"), (-0.1, 0.2, "dev_fraction"),
                                              (0.1, float("nan"), "test_fraction"), (1.0, 0.0, "dev_fraction")])
def test_bad_fractions(tmp_path, dev, test, match):
    p = tables.write_rows(tmp_path / "d.csv", labelled(10))
    with pytest.raises(InputError, match=match):
        userdata.load_table(p, dev_fraction=dev, test_fraction=test)


def test_load_data_dispatch(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="'nope' is neither a built-in data set"):
        userdata.load_data("nope")
    with pytest.raises(InputError, match="missing.csv: no such file"):
        userdata.load_data("missing.csv")
    with pytest.raises(InputError, match="--label-column apply only to your own files"):
        userdata.load_data("sms_spam", label_column="y")
    p = tables.write_rows(tmp_path / "d.csv", labelled(20))
    assert data.load_dataset(str(p)).info["files"] == [str(p.resolve())]      # data.py dispatches too
    monkeypatch.chdir(tmp_path)
    assert userdata.load_data("d.csv").name == "d"
    assert userdata.looks_like_path("*.csv") and not userdata.looks_like_path("sms_spam")
