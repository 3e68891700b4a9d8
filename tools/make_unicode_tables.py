#!/usr/bin/env python
"""Write refexit/tokenizers/tokenizer_unicode.txt: the pinned Unicode tables of the Rust `tokenizers` BERT
pipeline, read by refexit.tokenizers.wordpiece (the oracle) and codegen/unicode_tables.py (the C tokenizer).

Run once; the output is committed. Nothing at tokenization time reads Python's `unicodedata`.

    python tools/make_unicode_tables.py \\
        --categories  unicode_categories-0.1.1/src/tables.rs \\
        --normalization unicode-normalization-alignments-0.1.12/src/tables.rs

Sources (pinned: the script refuses files whose sha256 differs):

  categories      the `unicode_categories` crate 0.1.1 (github.com/swgillespie/unicode-categories,
                  commit 92bb24621c20, src/tables.rs; Unicode 8.0), the crate `tokenizers` uses for
                  `is_other` (Cc | Cf | Co: BertNormalizer clean_text), `is_mark_nonspacing` (Mn:
                  strip_accents) and `is_punctuation` (P*: BertPreTokenizer). Its lib.rs adds the
                  private-use ranges E000-F8FF, F0000-FFFFD, 100000-10FFFD to Co (written here).
  decomposition   the `unicode-normalization-alignments` crate 0.1.12 (github.com/n1t0/
                  unicode-normalization, commit 9ca696060d7b, src/tables.rs; Unicode 9.0):
                  CANONICAL_DECOMPOSED_KV (full canonical decompositions; Hangul syllables are
                  algorithmic) and CANONICAL_COMBINING_CLASS_KV (canonical ordering), i.e. what
                  NormalizedString::nfd uses.
  lower case      Rust std `char::to_lowercase` as compiled into the `tokenizers` wheel (0.23.3):
                  read off `tokenizers.normalizers.Lowercase()` on every code point (per character,
                  no context: no final sigma).
  whitespace      Rust std `char::is_whitespace` (the White_Space property, the same since Unicode
                  6.3), written out below and checked against the wheel.

After writing, every table is checked against the installed `tokenizers` on all 1,112,064
non-surrogate code points (BertNormalizer in three settings, BertPreTokenizer); any difference
fails the run.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CATEGORIES_SHA256 = "162393c222be7f49425f232abef890da4ccf7a45e2c43df34830d32c979f5bd8"
NORMALIZATION_SHA256 = "83736e2488e7f5e513317e035dfd476611248227efe0a456fddb8a641fe9ade6"
TOKENIZERS_VERSION = "0.23.3"

PRIVATE_USE = [(0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD)]   # unicode_categories lib.rs
WHITE_SPACE = [(0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
       (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]                # tokenizers bert.rs
PUNCT_TABLES = ["PUNCTUATION_CONNECTOR", "PUNCTUATION_DASH", "PUNCTUATION_CLOSE", "PUNCTUATION_FINAL_QUOTE",
                "PUNCTUATION_INITIAL_QUOTE", "PUNCTUATION_OTHER", "PUNCTUATION_OPEN"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rust_char_table(text: str, name: str) -> list[int]:
    m = re.search(rf"pub static {name} : &'static \[char\] = &\[(.*?)\];", text, re.S)
    if not m:
        raise SystemExit(f"table {name} not found")
    return [int(x, 16) for x in re.findall(r"\\u\{([0-9A-Fa-f]+)\}", m.group(1))]


def ranges(cps) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cp in sorted(set(cps)):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [tuple(r) for r in out]


def fmt_ranges(rs) -> list[str]:
    return [f"{a:X}" if a == b else f"{a:X}-{b:X}" for a, b in rs]


def wrap(items: list[str], width: int = 100) -> list[str]:
    lines, cur = [], ""
    for it in items:
        if cur and len(cur) + 1 + len(it) > width:
            lines.append(cur)
            cur = it
        else:
            cur = f"{cur} {it}" if cur else it
    if cur:
        lines.append(cur)
    return lines


def lower_runs(lower: dict[int, tuple[int, ...]]) -> list[str]:
    """Single-code-point lower cases as runs start-end/step:+delta; longer ones as cp:seq."""
    single = sorted((cp, v[0] - cp) for cp, v in lower.items() if len(v) == 1)
    out, i = [], 0
    while i < len(single):
        cp, d = single[i]
        j, step = i, None
        if i + 1 < len(single) and single[i + 1][1] == d:
            step = single[i + 1][0] - cp
            j = i + 1
            while j + 1 < len(single) and single[j + 1][1] == d and single[j + 1][0] - single[j][0] == step:
                j += 1
        end = single[j][0]
        out.append(f"{cp:X}:{d:+d}" if j == i else f"{cp:X}-{end:X}/{step}:{d:+d}")
        i = j + 1
    multi = [f"{cp:X}:" + ",".join(f"{x:X}" for x in v) for cp, v in sorted(lower.items()) if len(v) > 1]
    return out + multi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--categories", type=Path, required=True, help="unicode_categories 0.1.1 src/tables.rs")
    ap.add_argument("--normalization", type=Path, required=True,
                    help="unicode-normalization-alignments 0.1.12 src/tables.rs")
    ap.add_argument("--out", type=Path, default=ROOT / "refexit" / "tokenizer_unicode.txt")
    args = ap.parse_args(argv)
    for path, want in ((args.categories, CATEGORIES_SHA256), (args.normalization, NORMALIZATION_SHA256)):
        got = sha256(path)
        if got != want:
            raise SystemExit(f"{path}: sha256 {got}, expected {want} (not the pinned source)")
    import tokenizers
    if tokenizers.__version__ != TOKENIZERS_VERSION:
        raise SystemExit(f"tokenizers {tokenizers.__version__} installed; the tables pin {TOKENIZERS_VERSION}")

    cat = args.categories.read_text(encoding="utf-8")
    other = set(rust_char_table(cat, "OTHER_CONTROL")) | set(rust_char_table(cat, "OTHER_FORMAT"))
    other |= set(rust_char_table(cat, "OTHER_PRIVATE_USE"))
    other_r = ranges(other | {cp for a, b in PRIVATE_USE for cp in range(a, b + 1)})
    mn = rust_char_table(cat, "MARK_NONSPACING")
    punct = [cp for name in PUNCT_TABLES for cp in rust_char_table(cat, name)]

    norm = args.normalization.read_text(encoding="utf-8")
    m = re.search(r"CANONICAL_COMBINING_CLASS_KV: &\[u32\] = &\[(.*?)\];", norm, re.S)
    ccc = {v >> 8: v & 0xFF for v in (int(x, 16) for x in re.findall(r"0x([0-9A-Fa-f]+)", m.group(1)))}
    ccc = {cp: c for cp, c in ccc.items() if c}
    m = re.search(r"CANONICAL_DECOMPOSED_KV: &\[\(u32, &'static \[char\]\)\] = &\[(.*?)\n\];", norm, re.S)
    dec = {}
    for key, body in re.findall(r"\(0x([0-9a-fA-F]+), &\[([^\]]*)\]\)", m.group(1)):
        dec[int(key, 16)] = [int(x, 16) for x in re.findall(r"\\u\{([0-9A-Fa-f]+)\}", body)]
    assert len(dec) > 2000 and len(ccc) > 800, (len(dec), len(ccc))

    from tokenizers import normalizers
    low = normalizers.Lowercase()
    lower = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        s = low.normalize_str(chr(cp))
        if s != chr(cp):
            lower[cp] = tuple(ord(c) for c in s)

    ccc_runs, cur = [], None
    for cp in sorted(ccc):
        if cur and cur[1] == cp - 1 and cur[2] == ccc[cp]:
            cur[1] = cp
        else:
            cur = [cp, cp, ccc[cp]]
            ccc_runs.append(cur)
    lines = [
        "# Pinned Unicode tables of the Rust `tokenizers` BERT pipeline (BertNormalizer, BertPreTokenizer).",
        "# Written by tools/make_unicode_tables.py; do not edit. Code points in hex; a-b = a range.",
        f"# other, nonspacing, punctuation: unicode_categories 0.1.1 (Unicode 8.0) src/tables.rs sha256 {CATEGORIES_SHA256}",
        f"# ccc, decomposition: unicode-normalization-alignments 0.1.12 (Unicode 9.0) src/tables.rs sha256 "
        f"{NORMALIZATION_SHA256}",
        f"# lowercase: Rust std char::to_lowercase in tokenizers {TOKENIZERS_VERSION}; whitespace: char::is_whitespace",
        "@other          Cc Cf Co: dropped by clean_text (except \\t \\n \\r, which are whitespace)",
    ]
    lines += wrap(fmt_ranges(other_r))
    lines.append("@whitespace     becomes ' ' (clean_text) and separates words (pre-tokenizer)")
    lines += wrap(fmt_ranges(WHITE_SPACE))
    lines.append("@cjk            spaced out (handle_chinese_chars)")
    lines += wrap(fmt_ranges(sorted(CJK)))
    lines.append("@nonspacing     Mn: dropped after NFD (strip_accents)")
    lines += wrap(fmt_ranges(ranges(mn)))
    lines.append("@punctuation    P*: a piece of its own (pre-tokenizer; ASCII punctuation too, not listed)")
    lines += wrap(fmt_ranges(ranges(punct)))
    lines.append("@ccc            canonical combining class (not 0): a-b:class")
    lines += wrap([(f"{a:X}" if a == b else f"{a:X}-{b:X}") + f":{c}" for a, b, c in ccc_runs])
    lines.append("@decomposition  full canonical decomposition, cp:seq (Hangul syllables algorithmic)")
    lines += wrap([f"{cp:X}:" + ",".join(f"{x:X}" for x in dec[cp]) for cp in sorted(dec)])
    lines.append("@lowercase      a-b/step:+delta (every step-th code point from a to b), cp:seq when longer")
    lines += wrap(lower_runs(lower))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.out}: {args.out.stat().st_size} bytes; {len(dec)} decompositions, {len(ccc)} combining "
          f"classes, {len(lower)} lower cases")
    return verify(args.out)


def verify(path: Path) -> int:
    """Every code point through the Rust normalizer / pre-tokenizer vs the tables."""
    from tokenizers import normalizers, pre_tokenizers
    from refexit.tokenizers import unicode_pinned as up
    t = up.load(path)
    settings = [(True, True), (False, False), (True, False), (False, True)]     # (lowercase, strip_accents)
    rust = [normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=s, lowercase=lo)
            for lo, s in settings]
    pre = pre_tokenizers.BertPreTokenizer()
    bad = 0
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        for (lo, s), r in zip(settings, rust):
            want = r.normalize_str(ch)
            got = t.normalize(ch, lower=lo, strip=s, cjk=True)
            if want != got:
                bad += 1
                if bad < 20:
                    print(f"U+{cp:04X} lower={lo} strip={s}: rust {want!r} tables {got!r}")
        pieces = [p for p, _ in pre.pre_tokenize_str("a" + ch + "b")]
        if t.is_whitespace(cp):
            want = ["a", "b"]
        elif t.is_punctuation(cp):
            want = ["a", ch, "b"]
        else:
            want = ["a" + ch + "b"]
        if pieces != want:
            bad += 1
            if bad < 20:
                print(f"U+{cp:04X} pre-tokenizer: rust {pieces!r} tables {want!r}")
    print(f"verified against tokenizers on every code point: {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__" and not {"--tokenizer-json", "--graphemes"} & set(sys.argv[1:]):
    sys.exit(main())


# ---------------------------------------------------------------- tokenizer.json pipelines (appended)
#
#     python tools/make_unicode_tables.py --tokenizer-json \
#         --normalization unicode-normalization-alignments-0.1.12/src/tables.rs
#
# writes refexit/tokenizers/tokenizer_json_unicode.txt, the classes the other components of a
# tokenizer.json pipeline use beyond BertNormalizer / BertPreTokenizer:
#
#   bytelevel_letter, bytelevel_number, bytelevel_space
#                   \p{L}, \p{N} and \s of the ByteLevel pre-tokenizer's regex
#                   ('s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), as the Oniguruma
#                   library compiled into the `tokenizers` wheel sees them: read off
#                   `pre_tokenizers.ByteLevel` on every code point (as the lower case table is)
#   word, word_space \w and \s of the Rust `regex` crate (Whitespace pre-tokenizer: \w+|[^\w\s]+),
#                   read off `pre_tokenizers.Whitespace` on every code point
#   combining_mark  `is_combining_mark` of unicode-normalization-alignments (StripAccents),
#                   read off `normalizers.StripAccents`
#   compat_decomposition
#                   full compatibility decomposition where it differs from the canonical one
#                   (NFKD/NFKC), read off `normalizers.NFKD` per code point
#   composition     COMPOSITION_TABLE_KV and composition_table_astral of the pinned
#                   unicode-normalization-alignments 0.1.12 tables.rs (NFC/NFKC), a,b:c
#
# then checks NFC/NFKC/NFKD/StripAccents of the tables against the wheel on every code point.

JSON_TABLES = ROOT / "refexit" / "tokenizers" / "tokenizer_json_unicode.txt"


def json_tables_main(argv) -> int:
    ap = argparse.ArgumentParser(description="write refexit/tokenizers/tokenizer_json_unicode.txt")
    ap.add_argument("--tokenizer-json", action="store_true", required=True)
    ap.add_argument("--normalization", type=Path, required=True,
                    help="unicode-normalization-alignments 0.1.12 src/tables.rs")
    ap.add_argument("--out", type=Path, default=JSON_TABLES)
    args = ap.parse_args(argv)
    got = sha256(args.normalization)
    if got != NORMALIZATION_SHA256:
        raise SystemExit(f"{args.normalization}: sha256 {got}, expected {NORMALIZATION_SHA256}")
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers
    if tokenizers.__version__ != TOKENIZERS_VERSION:
        raise SystemExit(f"tokenizers {tokenizers.__version__} installed; the tables pin {TOKENIZERS_VERSION}")
    from refexit.tokenizers import unicode_pinned as up
    canon = up.load()

    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ws = pre_tokenizers.Whitespace()
    strip, nfkd, nfd = normalizers.StripAccents(), normalizers.NFKD(), normalizers.NFD()
    classes = {k: [] for k in ("bytelevel_letter", "bytelevel_number", "bytelevel_space", "word",
                               "word_space", "combining_mark")}
    compat = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        letter = len(bl.pre_tokenize_str("a" + ch)) == 1
        number = len(bl.pre_tokenize_str("1" + ch)) == 1
        other = len(bl.pre_tokenize_str("!" + ch)) == 1
        if letter + number + other > 1:
            raise SystemExit(f"U+{cp:04X}: ByteLevel classes overlap")
        if letter:
            classes["bytelevel_letter"].append(cp)
        elif number:
            classes["bytelevel_number"].append(cp)
        elif not other:
            classes["bytelevel_space"].append(cp)
        pieces = [p for p, _ in ws.pre_tokenize_str("a" + ch)]
        if pieces == ["a" + ch]:
            classes["word"].append(cp)
        elif pieces == ["a"]:
            classes["word_space"].append(cp)
        elif pieces != ["a", ch]:
            raise SystemExit(f"U+{cp:04X}: Whitespace pre-tokenizer gave {pieces!r}")
        if strip.normalize_str(ch) == "":
            classes["combining_mark"].append(cp)
        k = nfkd.normalize_str(ch)
        if k != nfd.normalize_str(ch):
            compat[cp] = [ord(c) for c in k]
    norm = args.normalization.read_text(encoding="utf-8")
    m = re.search(r"COMPOSITION_TABLE_KV: &\[\(u32, char\)\] = &\[(.*?)\];", norm, re.S)
    comp = [((k >> 16), k & 0xFFFF, int(v, 16)) for k, v in
            ((int(a, 16), b) for a, b in re.findall(r"\(0x([0-9A-Fa-f]+), '\\u\{([0-9A-Fa-f]+)\}'\)", m.group(1)))]
    m = re.search(r"fn composition_table_astral.*?\{(.*?)\n\}", norm, re.S)
    comp += [(int(a, 16), int(b, 16), int(c, 16)) for a, b, c in
             re.findall(r"\('\\u\{([0-9A-Fa-f]+)\}', '\\u\{([0-9A-Fa-f]+)\}'\) => Some\('\\u\{([0-9A-Fa-f]+)\}'\)",
                        m.group(1))]
    assert len(comp) > 900, len(comp)
    lines = [
        "# Pinned Unicode classes of the tokenizer.json components beyond BertNormalizer / BertPreTokenizer.",
        "# Written by tools/make_unicode_tables.py --tokenizer-json; do not edit. Code points in hex; a-b = a range.",
        f"# read off tokenizers {TOKENIZERS_VERSION} on every code point (Oniguruma \\p{{L}} \\p{{N}} \\s of ByteLevel;",
        "# regex-crate \\w \\s of Whitespace; StripAccents; NFKD); composition: unicode-normalization-alignments",
        f"# 0.1.12 (Unicode 9.0) src/tables.rs sha256 {NORMALIZATION_SHA256}",
    ]
    notes = {"bytelevel_letter": "\\p{L} of the ByteLevel regex", "bytelevel_number": "\\p{N} of the ByteLevel regex",
             "bytelevel_space": "\\s of the ByteLevel regex", "word": "\\w of the Whitespace pre-tokenizer",
             "word_space": "\\s of the Whitespace pre-tokenizer", "combining_mark": "dropped by StripAccents"}
    for name, cps in classes.items():
        lines.append(f"@{name:17s} {notes[name]}")
        lines += wrap(fmt_ranges(ranges(cps)))
    lines.append("@compat_decomposition  full NFKD of one code point where it differs from NFD, cp:seq")
    lines += wrap([f"{cp:X}:" + ",".join(f"{x:X}" for x in v) for cp, v in sorted(compat.items())])
    lines.append("@composition    canonical composition a,b:c (Hangul algorithmic)")
    lines += wrap([f"{a:X},{b:X}:{c:X}" for a, b, c in sorted(comp)])
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.out}: {args.out.stat().st_size} bytes; " + ", ".join(f"{k} {len(v)}" for k, v in classes.items())
          + f", {len(compat)} compatibility decompositions, {len(comp)} compositions")
    return verify_json_tables(args.out)


def verify_json_tables(path: Path) -> int:
    """NFD/NFKD/NFC/NFKC/StripAccents of the tables against the wheel on every code point, alone and
    after a base letter (so compositions with a starter are exercised)."""
    from tokenizers import normalizers
    from refexit.tokenizers import tokenizer_json as tj
    bad = 0
    for name in ("NFD", "NFKD", "NFC", "NFKC", "StripAccents"):
        rust = getattr(normalizers, name)()
        mine = tj.build_normalizer({"type": name})
        for cp in range(0x110000):
            if 0xD800 <= cp < 0xE000:
                continue
            for text in (chr(cp), "e" + chr(cp), "\u1100" + chr(cp)):
                if rust.normalize_str(text) != mine(text):
                    bad += 1
                    if bad < 20:
                        print(f"{name} {text!r}: rust {rust.normalize_str(text)!r} tables {mine(text)!r}")
    print(f"tokenizer.json tables verified against tokenizers on every code point: {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__" and "--tokenizer-json" in sys.argv[1:]:
    sys.exit(json_tables_main(sys.argv[1:]))


# ---------------------------------------------------------------- --graphemes: grapheme_unicode.txt
# The extended grapheme clusters the Precompiled normalizer iterates over (tokenizers'
# normalizers/precompiled.rs: `graphemes(true)` of the unicode-segmentation crate):
#
#   python tools/make_unicode_tables.py --graphemes \
#       --segmentation unicode-segmentation/src/tables.rs --break-tests unicode-segmentation/tests/testdata/mod.rs
#
# Source (pinned by sha256): unicode-segmentation at github.com/unicode-rs/unicode-segmentation commit
# 3874b9a64103 (v1.13.2 plus documentation commits; Unicode 17.0.0). The tokenizers 0.23.3 wheel is built
# with 1.13.3 (its panic paths name the crate); the live-library tests (tests/test_precompiled.py) are
# the check that the two segment alike. The table file holds the Grapheme_Cluster_Break class of every
# code point (with Extended_Pictographic and InCB=Consonant as classes of their own, as the crate stores
# them), InCB=Extend and InCB=Linker; the crate's copy of GraphemeBreakTest.txt (Unicode 17.0.0,
# extended clusters) is written to tests/golden/grapheme_break_test.json and run against the tables.

SEGMENTATION_SHA256 = "089c221918a60e8672ed8eda73d27f195dcc404f91b9e71b57c0b5e348e7aeef"
BREAK_TESTS_SHA256 = "52b9609d96660413c21f51e8f9d15667213f628c05b7c228e54585865bd4c373"
GRAPHEME_TABLES = ROOT / "refexit" / "tokenizers" / "grapheme_unicode.txt"
BREAK_TESTS = ROOT / "tests" / "golden" / "grapheme_break_test.json"


def _rust_str(s: str) -> str:
    return re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda m: chr(int(m.group(1), 16)), s)


def graphemes_main(argv) -> int:
    import json
    ap = argparse.ArgumentParser(description="write refexit/tokenizers/grapheme_unicode.txt")
    ap.add_argument("--graphemes", action="store_true", required=True)
    ap.add_argument("--segmentation", type=Path, required=True, help="unicode-segmentation src/tables.rs")
    ap.add_argument("--break-tests", type=Path, required=True, help="unicode-segmentation tests/testdata/mod.rs")
    ap.add_argument("--out", type=Path, default=GRAPHEME_TABLES)
    ap.add_argument("--tests-out", type=Path, default=BREAK_TESTS)
    args = ap.parse_args(argv)
    for path, want in ((args.segmentation, SEGMENTATION_SHA256), (args.break_tests, BREAK_TESTS_SHA256)):
        if sha256(path) != want:
            raise SystemExit(f"{path}: sha256 {sha256(path)}, expected {want}")
    src = args.segmentation.read_text(encoding="utf-8")
    m = re.search(r"const grapheme_cat_table: &\[\(char, char, GraphemeCat\)\] = &\[(.*?)\];", src, re.S)
    cats = [(int(a, 16), int(b, 16), c) for a, b, c in
            re.findall(r"\('\\u\{([0-9a-f]+)\}',\s*'\\u\{([0-9a-f]+)\}',\s*GC_(\w+)\)", m.group(1))]
    m = re.search(r"const InCB_Extend_table: &\[\(char, char\)\] = &\[(.*?)\];", src, re.S)
    extend = [(int(a, 16), int(b, 16)) for a, b in
              re.findall(r"\('\\u\{([0-9a-f]+)\}',\s*'\\u\{([0-9a-f]+)\}'\)", m.group(1))]
    m = re.search(r"pub fn is_incb_linker\(c: char\) -> bool \{(.*?)\}\n", src, re.S)
    linker = [int(x, 16) for x in re.findall(r"'\\u\{([0-9A-Fa-f]+)\}'", m.group(1))]
    assert len(cats) > 1500 and len(extend) > 300 and len(linker) > 10, (len(cats), len(extend), len(linker))
    lines = [
        "# Pinned grapheme cluster tables of the Precompiled normalizer (unicode-segmentation, Unicode 17.0.0).",
        "# Written by tools/make_unicode_tables.py --graphemes; do not edit. Code points in hex; a-b = a range.",
        f"# source: unicode-segmentation src/tables.rs sha256 {SEGMENTATION_SHA256}",
        "@grapheme_break  a-b:Class (Extended_Pictographic and InCB_Consonant are classes; the rest is Any)",
    ]
    lines += wrap([(f"{a:X}" if a == b else f"{a:X}-{b:X}") + f":{c}" for a, b, c in cats])
    lines.append("@incb_extend     InCB=Extend")
    lines += wrap(fmt_ranges(extend))
    lines.append("@incb_linker     InCB=Linker")
    lines += wrap(fmt_ranges(ranges(linker)))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tests = []
    body = args.break_tests.read_text(encoding="utf-8")
    same = re.search(r"TEST_SAME: [^=]*= &\[(.*?)\n    \];", body, re.S).group(1)
    diff = re.search(r"TEST_DIFF: [^=]*= &\[(.*?)\n    \];", body, re.S).group(1)
    for s, parts in re.findall(r'\("([^"]*)",\s*&\[([^\]]*)\]\)', same):
        tests.append([_rust_str(s), [_rust_str(p) for p in re.findall(r'"([^"]*)"', parts)]])
    for s, parts, _legacy in re.findall(r'\("([^"]*)",\s*&\[([^\]]*)\],\s*&\[([^\]]*)\]\)', diff):
        tests.append([_rust_str(s), [_rust_str(p) for p in re.findall(r'"([^"]*)"', parts)]])
    assert len(tests) == 766, len(tests)
    for s, parts in tests:
        assert "".join(parts) == s, (s, parts)
    args.tests_out.write_text(json.dumps({"source": f"unicode-segmentation tests/testdata/mod.rs sha256 "
                                                    f"{BREAK_TESTS_SHA256} (GraphemeBreakTest.txt 17.0.0, extended)",
                                          "tests": tests}, ensure_ascii=True) + "\n", encoding="utf-8")
    from refexit.tokenizers import graphemes
    seg = graphemes.Segmenter(args.out)
    bad = [(s, parts) for s, parts in tests if seg.split(s) != parts]
    print(f"{args.out}: {len(cats)} class ranges, {len(extend)} InCB=Extend ranges, {len(linker)} linkers; "
          f"{len(tests)} break tests, {len(bad)} failures")
    for s, parts in bad[:10]:
        print(f"  {s!r}: want {parts!r} got {seg.split(s)!r}")
    return 1 if bad else 0


if __name__ == "__main__" and "--graphemes" in sys.argv[1:]:
    sys.exit(graphemes_main(sys.argv[1:]))
