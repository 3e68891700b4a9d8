"""Input rows -> output records, the same for every engine.

An output record per input row, in input order: `row` (0-based data row of its file), `id` (the
--id-column value, else the row number), then `label`, `label_id`, `probability`, `exit_layer`
(`value` instead of the label fields for a regression model; `logits` with --logits). A row that
cannot be scored (unreadable, no text column, a text that is not a string or is empty) keeps its
place with those fields null and `error` saying why; it also goes to the errors file."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from refexit.tables import TEXT_COLUMN

from .handles import probabilities


@dataclass(frozen=True)
class Spec:
    """Which columns hold what, and what the output records carry."""
    text_column: str = TEXT_COLUMN
    pair_column: str | None = None
    id_column: str | None = None
    logits: bool = False
    file: str | None = None                  # the input file's name in every record (several inputs)


def result_columns(num_labels: int, logits: bool) -> list[str]:
    cols = ["value"] if num_labels == 1 else ["label", "label_id", "probability"]
    return cols + ["exit_layer"] + (["logits"] if logits else [])


def columns(spec: Spec, num_labels: int) -> list[str]:
    """The output columns, in order."""
    return (["file"] if spec.file is not None else []) + ["row", "id"] + \
        result_columns(num_labels, spec.logits) + ["error"]


def _text(values: dict, column: str, what: str) -> tuple[bytes | None, str | None]:
    v = values.get(column)
    if v is None or v != v:                   # missing, null or NaN: the same to a columnar reader (Ray)
        return None, f"no {what} (column {column!r} missing or null)"
    if not isinstance(v, str):
        return None, f"{what} column {column!r} holds {type(v).__name__}, not text"
    try:
        return v.encode("utf-8"), None
    except UnicodeEncodeError:
        return None, f"{what} column {column!r} is not valid UTF-8"


def extract(row, spec: Spec):
    """A table Row -> (id, text bytes, pair bytes or None, error or None)."""
    if row.error is not None:                 # unreadable: no id column to read
        return (row.number if spec.id_column is None else None), None, None, row.error
    v = row.values
    rid = row.number
    if spec.id_column is not None:
        if spec.id_column not in v:
            return None, None, None, f"no id column {spec.id_column!r}"
        rid = v[spec.id_column]
    text, err = _text(v, spec.text_column, "text")
    pair = None
    if err is None and spec.pair_column is not None:
        pair, err = _text(v, spec.pair_column, "pair")
    return rid, text, pair, err


def score_rows(scorer, rows: list, spec: Spec, label_names: list[str]) -> tuple[list[str], dict]:
    """Score table rows (in order) with a Scorer -> (one JSON line per row, the chunk's meta:
    rows, errors [{row, id, error}], exits (count per exit layer 1..L), and with skip gates
    layers_run: the layers the scored rows ran, summed)."""
    cm = scorer.cm
    C, L = cm.num_labels, cm.num_layers
    lines: list[str] = []
    errors: list[dict] = []
    exits = np.zeros(L + 1, np.int64)
    head = {"file": spec.file} if spec.file is not None else {}
    nulls = dict.fromkeys(result_columns(C, spec.logits))
    layers_run = 0
    for s in range(0, len(rows), scorer.batch):
        part = rows[s:s + scorer.batch]
        got = [extract(r, spec) for r in part]
        ok = [i for i, g in enumerate(got) if g[3] is None]
        res, empty, run = scorer.classify([got[i][1] for i in ok], [got[i][2] for i in ok] if spec.pair_column else None)
        result = dict.fromkeys(range(len(part)))
        if ok:
            probs = probabilities(res["logits"]) if C > 1 else None                   # [n, C]
            for j, i in enumerate(ok):
                if empty[j]:
                    got[i] = got[i][:3] + ("empty text",)
                    continue
                e = int(res["exit_layer"][j])
                exits[e] += 1
                layers_run += e if run is None else int(run[j])
                if C == 1:
                    rec = {"value": float(res["logits"][j, 0])}
                else:
                    lab = int(res["label"][j])
                    rec = {"label": label_names[lab], "label_id": lab, "probability": float(probs[j, lab])}
                rec["exit_layer"] = e
                if spec.logits:
                    rec["logits"] = [float(z) for z in res["logits"][j]]
                result[i] = rec
        for i, (r, g) in enumerate(zip(part, got)):
            rec = head | {"row": r.number, "id": g[0]}
            if result[i] is None:
                rec |= nulls | {"error": g[3]}
                errors.append({"row": r.number, "id": g[0], "error": g[3]})
            else:
                rec |= result[i]
            lines.append(json.dumps(rec, ensure_ascii=False, default=str))
    meta = {"rows": len(rows), "errors": errors, "exits": exits[1:].tolist()}
    return lines, meta | ({"layers_run": layers_run} if scorer.layers_run is not None else {})
