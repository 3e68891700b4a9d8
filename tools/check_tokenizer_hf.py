#!/usr/bin/env python
"""Count disagreements between refexit's tokenizers (the Python oracle and the generated C) and
the live `transformers.AutoTokenizer` (Rust `tokenizers` backend) of all-MiniLM-L6-v2.

    python tools/check_tokenizer_hf.py                     # everything below
    python tools/check_tokenizer_hf.py --generated 50000 --seed 3 --no-datasets

Inputs:
  data sets   every train+dev+test text of rotten_tomatoes, sms_spam, bbc_news, tweets:
              singles at max_length 128 and 512; pairs of consecutive texts at 32, 33, 64, 65,
              128, 129 (odd and even budgets)
  generated   --generated strings (default 20,000), seeded, mixing every general category
              (characters picked with this Python's unicodedata; the reference is the Rust
              tokenizer's output, whatever the category tables say), combining-mark runs,
              special tokens broken by controls, Greek sigma, Hangul, CJK, unassigned code
              points: singles at 512 and 16, consecutive pairs at 17 and 32

A pair is passed as a batch call does (an empty second text stays a pair). Needs transformers,
tokenizers, cffi and a C compiler; reads the data through `refexit data` (offline once fetched).
Prints one line per (input set, max_length) and the totals; exit status 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATASETS = ("rotten_tomatoes", "sms_spam", "bbc_news", "tweets")
SINGLE_MLS = (128, 512)
PAIR_MLS = (32, 33, 64, 65, 128, 129)


def generated_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    by_cat: dict[str, list[int]] = {}
    for cp in range(0x110000):
        if not 0xD800 <= cp < 0xE000:
            by_cat.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    cats = sorted(by_cat)
    specials = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"]
    controls = "\x00\x07\x0b\x1f\x7f\x85\u00ad\u200b\u200d\u2028\ufeff\ufffd\U000e0001\u0378\U0001e900"
    marks = [chr(c) for c in range(0x300, 0x370)] + ["\U0001d165", "\U0001d16d", "\u0f39", "\U0001e944",
                                                     "\U00011442", "\u1885", "\u302e"]
    pieces = [" ", " ", "a", "É", "Σ", "ΑΣ", "ς", "İ", "ß", "我", "\uac01", "\u1100\u1161\u11a8", "e\u0301",
              "ﬁ", "Ω", "\u212b", "\U0002b820", "\U0002b920", "!", "-", "'", "x" * 101]
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.45:
                parts.append(chr(rng.choice(by_cat[cats[(i + len(parts)) % len(cats)] if rng.random() < 0.5
                                                   else rng.choice(cats)])))
            elif r < 0.6:
                parts.append(rng.choice(pieces))
            elif r < 0.7:
                parts.append("".join(rng.choice(marks) for _ in range(rng.randint(1, 6))))
            elif r < 0.8:
                tok = rng.choice(specials)
                k = rng.randint(1, len(tok) - 1)
                parts.append(tok if rng.random() < 0.4 else tok[:k] + rng.choice(controls) + tok[k:])
            elif r < 0.9:
                parts.append(rng.choice(controls))
            else:
                parts.append(" ".join(rng.choice(["the", "film", "was", "Great", "ÇA", "naïve", "über"])
                                      for _ in range(rng.randint(1, 5))))
        out.append("".join(parts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generated", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--no-datasets", action="store_true")
    ap.add_argument("--show", type=int, default=5, help="mismatches printed per set")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer
    from codegen import tokenizer_emit as te
    from refexit import data
    from refexit.tokenizers.wordpiece import Tokenizer

    model_dir = Path(data.model_dir("all-MiniLM-L6-v2"))
    hf = AutoTokenizer.from_pretrained(str(model_dir))
    assert hf.is_fast, type(hf)
    py = Tokenizer.from_dir(model_dir)
    tmp = tempfile.mkdtemp(prefix="refexit-tokcheck-")
    lib = te.build_library(tmp, flags=("-O2",))
    c = te.CTokenizer(lib, (model_dir / "vocab.txt").read_bytes(), do_lower_case=py.do_lower_case,
                      strip_accents=py.strip_accents, tokenize_cjk=py.tokenize_chinese_chars)
    print(f"python {sys.version.split()[0]} (unicodedata {unicodedata.unidata_version}), "
          f"tokenizers {__import__('tokenizers').__version__}, model {model_dir}")

    sets: dict[str, list[str]] = {}
    if not args.no_datasets:
        for name in DATASETS:
            ds = data.load_dataset(name)
            sets[name] = list(ds.train.texts) + list(ds.dev.texts) + list(ds.test.texts)
    if args.generated:
        sets["generated"] = generated_texts(args.generated, args.seed)

    totals = {"python": 0, "c": 0}
    n_checked = 0
    for name, texts in sets.items():
        singles = (512, 16) if name == "generated" else SINGLE_MLS
        pairs = (17, 32) if name == "generated" else PAIR_MLS
        for kind, mls in (("single", singles), ("pair", pairs)):
            for ml in mls:
                t0 = time.time()
                if kind == "single":
                    cases = [(t, None) for t in texts]
                else:
                    cases = list(zip(texts[:-1], texts[1:]))
                want = {"input_ids": [], "token_type_ids": []}
                for k in range(0, len(cases), 64):
                    # small batches: the Rust tokenizer builds every overflowing window of both
                    # texts of a truncated pair (their product), gigabytes for long articles
                    a = [x for x, _ in cases[k:k + 64]]
                    b = None if kind == "single" else [y for _, y in cases[k:k + 64]]
                    enc = hf(a, b, max_length=ml, truncation=True, return_token_type_ids=True)
                    want["input_ids"] += enc["input_ids"]
                    want["token_type_ids"] += enc["token_type_ids"]
                bad = {"python": [], "c": []}
                for k, (a, b) in enumerate(cases):
                    w = (list(want["input_ids"][k]), list(want["token_type_ids"][k]))
                    if py.encode(a, b, ml) != w:
                        bad["python"].append((a, b))
                    if c.encode(a, b, ml) != w:
                        bad["c"].append((a, b))
                n_checked += len(cases)
                for who in bad:
                    totals[who] += len(bad[who])
                print(f"{name:16s} {kind:6s} max_length {ml:3d}: {len(cases):6d} inputs, mismatches "
                      f"python {len(bad['python'])}, C {len(bad['c'])}  ({time.time() - t0:.1f} s)", flush=True)
                for who in bad:
                    for a, b in bad[who][:args.show]:
                        print(f"    {who}: {a!r}" + (f" / {b!r}" if b is not None else ""))
    print(f"total: {n_checked} encodings checked; mismatches python {totals['python']}, C {totals['c']}")
    return 1 if any(totals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
