#!/usr/bin/env python
"""Count disagreements between refexit's tokenizer.json pipelines and the live
`transformers.AutoTokenizer` (Rust `tokenizers` backend), for every kind of tests/golden/tokenizers/
(byte-level BPE, Unigram, WordPiece; tools/make_tokenizer_golden.py; the *_spm_model folders hold a
SentencePiece model file and no tokenizer.json) or the folders given.

    python tools/check_tokenizer_json.py                         # every golden kind, everything below
    python tools/check_tokenizer_json.py --kind albert --generated 5000 --no-datasets
    python tools/check_tokenizer_json.py --folder /path/to/hf-model-folder

Inputs (as tools/check_tokenizer_hf.py, the sibling for BERT's WordPiece and its C version):
  data sets   every train+dev+test text of rotten_tomatoes, sms_spam, bbc_news, tweets: singles at
              max_length 128 and 512; pairs of consecutive texts at 32, 33, 64, 65, 128, 129
  generated   --generated strings (default 20,000; check_tokenizer_hf.generated_texts, seeded):
              singles at 512 and 16, consecutive pairs at 17 and 32

`TokenizerJson`, what `load_tokenizer` returns for the folder (wordpiece.Tokenizer for the BERT
WordPiece kinds; for ALBERT / XLM-R / T5 SentencePiece files the pipeline transformers 5 rebuilds,
which replaces the file as written in the comparison) and, for byte-level BPE and Unigram folders, the generated C
(codegen.tokenizer_emit.pack_bpe / CBpeTokenizer, pack_unigram / CUnigramTokenizer) are checked. Prints one line per (kind, input set, max_length) and the
totals; exit status 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from check_tokenizer_hf import DATASETS, PAIR_MLS, SINGLE_MLS, generated_texts  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "tokenizers"


def check_folder(folder: Path, sets: dict[str, list[str]], show: int, pair_chars: int | None = None,
                 single_mls=SINGLE_MLS, pair_mls=PAIR_MLS) -> int:
    from transformers import AutoTokenizer
    from refexit.tokenizers import TokenizerJson, load_tokenizer
    hf = AutoTokenizer.from_pretrained(str(folder))
    assert hf.is_fast, type(hf)
    ours = {"load_tokenizer": load_tokenizer(folder, max_length=1 << 20)}
    if (folder / "tokenizer.json").is_file():     # else a SentencePiece model file (spm_model.py)
        ours["pipeline"] = TokenizerJson.from_file(folder / "tokenizer.json", max_length=1 << 20)
    if "pipeline" in ours and isinstance(ours["load_tokenizer"], TokenizerJson) \
            and ours["load_tokenizer"].spec != ours["pipeline"].spec:
        del ours["pipeline"]       # a SentencePiece class that transformers 5 rebuilds (load.sentencepiece_spec)
    from codegen import tokenizer_emit as te      # the generated C, for the pipelines it implements
    for pack, build, wrap in ((te.pack_bpe, te.build_bpe_library, te.CBpeTokenizer),
                              (te.pack_unigram, te.build_unigram_library, te.CUnigramTokenizer)):
        try:
            packed = pack(ours.get("pipeline", ours["load_tokenizer"]))
        except ValueError:
            continue
        ours["C"] = wrap(build(tempfile.mkdtemp(prefix="refexit-ccheck-")), packed)
        break
    for who, tok in ours.items():                  # each text is tokenized once, then truncated per case
        if who == "C":
            continue
        name = "tokenize_ids" if hasattr(tok, "tokenize_ids") else "tokenize"
        setattr(tok, name, functools.lru_cache(maxsize=None)(getattr(tok, name)))
    total = 0
    for name, texts in sets.items():
        singles = (512, 16) if name == "generated" else single_mls
        pairs = (17, 32) if name == "generated" else pair_mls
        for kind, mls in (("single", singles), ("pair", pairs)):
            for ml in mls:
                t0 = time.time()
                cut = [t[:pair_chars] for t in texts] if pair_chars else texts
                cases = [(t, None) for t in texts] if kind == "single" else list(zip(cut[:-1], cut[1:]))
                want_ids, want_types = [], []
                step = 64 if kind == "single" else 4
                for k in range(0, len(cases), step):
                    # small batches: the Rust tokenizer builds every overflowing window of both texts
                    # of a truncated pair (their product): gigabytes for a batch of long articles
                    a = [x for x, _ in cases[k:k + step]]
                    b = None if kind == "single" else [y for _, y in cases[k:k + step]]
                    enc = hf(a, b, max_length=ml, truncation=True, return_token_type_ids=True)
                    want_ids += enc["input_ids"]
                    want_types += enc["token_type_ids"]
                bad = {who: [] for who in ours}
                for k, (a, b) in enumerate(cases):
                    w = (list(want_ids[k]), list(want_types[k]))
                    for who, tok in ours.items():
                        if tok.encode(a, b, ml) != w:
                            bad[who].append((a, b))
                n_bad = sum(len(v) for v in bad.values())
                total += n_bad
                print(f"{folder.name:16s} {name:16s} {kind:6s} max_length {ml:3d}: {len(cases):6d} inputs, "
                      f"mismatches " + ", ".join(f"{who} {len(v)}" for who, v in bad.items())
                      + f"  ({time.time() - t0:.1f} s)", flush=True)
                for who, v in bad.items():
                    for a, b in v[:show]:
                        print(f"    {who}: {a!r:.200}" + (f" / {b!r:.200}" if b is not None else ""))
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", action="append", help="a folder name under tests/golden/tokenizers (repeatable)")
    ap.add_argument("--folder", type=Path, action="append",
                    help="any HF folder holding tokenizer.json (or spiece.model / sentencepiece.bpe.model)")
    ap.add_argument("--generated", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--no-datasets", action="store_true")
    ap.add_argument("--show", type=int, default=3, help="mismatches printed per set")
    ap.add_argument("--single-mls", type=int, nargs="+", default=list(SINGLE_MLS))
    ap.add_argument("--pair-mls", type=int, nargs="+", default=list(PAIR_MLS))
    ap.add_argument("--pair-chars", type=int, default=None,
                    help="cut each text of a pair to this many characters (both sides see the cut text): "
                         "bounds the Rust tokenizer's overflow windows of long articles")
    args = ap.parse_args(argv)
    import tokenizers
    from refexit import data
    folders = list(args.folder or []) + [GOLDEN / k for k in (args.kind or [])]
    if not folders:
        files = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model")
        folders = sorted(p for p in GOLDEN.iterdir() if any((p / f).is_file() for f in files))
    sets: dict[str, list[str]] = {}
    if not args.no_datasets:
        for name in DATASETS:
            ds = data.load_dataset(name)
            sets[name] = list(ds.train.texts) + list(ds.dev.texts) + list(ds.test.texts)
    if args.generated:
        sets["generated"] = generated_texts(args.generated, args.seed)
    print(f"python {sys.version.split()[0]}, tokenizers {tokenizers.__version__}; "
          f"{sum(map(len, sets.values()))} texts; folders: {', '.join(str(f) for f in folders)}")
    total = sum(check_folder(f, sets, args.show, args.pair_chars, args.single_mls, args.pair_mls) for f in folders)
    print(f"total mismatches: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
