"""The pinned Unicode tables of the Rust `tokenizers` BERT pipeline (refexit/tokenizers/tokenizer_unicode.txt).

One source for the oracle (refexit.tokenizers.wordpiece) and the C tokenizer (codegen/unicode_tables.py):
the file is written once by tools/make_unicode_tables.py from pinned sources (the categories of
the `unicode_categories` crate, Unicode 8.0; the canonical decompositions and combining classes
of `unicode-normalization-alignments`, Unicode 9.0; Rust std's lower case and whitespace) and
checked against `tokenizers` on every code point. Nothing here reads Python's `unicodedata`, so
the tokens do not depend on the running Python.

    t = load()
    t.normalize("Ça ΑΣ", lower=True, strip=True, cjk=True)   # BertNormalizer: 'ca ασ'
"""
from __future__ import annotations

import bisect
import functools
from pathlib import Path

DATA = Path(__file__).with_name("tokenizer_unicode.txt")

HANGUL_S, HANGUL_L, HANGUL_V, HANGUL_T = 0xAC00, 0x1100, 0x1161, 0x11A7
HANGUL_COUNT, V_COUNT, T_COUNT = 11172, 21, 28


def is_ascii_punctuation(cp: int) -> bool:
    """Rust `char::is_ascii_punctuation`: !-/ :-@ [-` {-~."""
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126


class RangeSet:
    """Sorted disjoint inclusive ranges; `cp in s` by bisection."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = sorted(ranges)
        self._starts = [a for a, _ in self.ranges]

    def __contains__(self, cp: int) -> bool:
        i = bisect.bisect_right(self._starts, cp) - 1
        return i >= 0 and cp <= self.ranges[i][1]

    def __iter__(self):
        for a, b in self.ranges:
            yield from range(a, b + 1)


def _range(tok: str) -> tuple[int, int]:
    a, _, b = tok.partition("-")
    return int(a, 16), int(b or a, 16)


def read_sections(path: Path) -> dict[str, list[str]]:
    """A pinned table file: "@name" starts a section, then whitespace-separated tokens; "#" comments."""
    sections: dict[str, list[str]] = {}
    cur = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("@"):
            cur = sections.setdefault(line.split()[0][1:], [])
        else:
            cur.extend(line.split())
    return sections


class PinnedUnicode:
    """The tables, and the BertNormalizer built on them (reference implementation, per text)."""

    def __init__(self, path: Path = DATA):
        sections = read_sections(path)
        self.source = path
        self.other = RangeSet([_range(t) for t in sections["other"]])
        self.whitespace = RangeSet([_range(t) for t in sections["whitespace"]])
        self.cjk = RangeSet([_range(t) for t in sections["cjk"]])
        self.nonspacing = RangeSet([_range(t) for t in sections["nonspacing"]])
        self.punctuation = RangeSet([_range(t) for t in sections["punctuation"]])
        self.ccc: dict[int, int] = {}
        for t in sections["ccc"]:
            r, _, c = t.partition(":")
            a, b = _range(r)
            for cp in range(a, b + 1):
                self.ccc[cp] = int(c)
        self.decomposition: dict[int, tuple[int, ...]] = {}
        for t in sections["decomposition"]:
            k, _, v = t.partition(":")
            self.decomposition[int(k, 16)] = tuple(int(x, 16) for x in v.split(","))
        self.lowercase: dict[int, tuple[int, ...]] = {}
        for t in sections["lowercase"]:
            k, _, v = t.partition(":")
            if v[0] in "+-":
                r, _, step = k.partition("/")
                a, b = _range(r)
                for cp in range(a, b + 1, int(step or 1)):
                    self.lowercase[cp] = (cp + int(v),)
            else:
                self.lowercase[int(k, 16)] = tuple(int(x, 16) for x in v.split(","))

    # -- per code point

    def is_other(self, cp: int) -> bool:
        """`is_control` of BertNormalizer: Cc Cf Co (Unicode 8.0) except \\t \\n \\r."""
        return cp not in (9, 10, 13) and cp in self.other

    def is_whitespace(self, cp: int) -> bool:
        return cp in self.whitespace

    def is_punctuation(self, cp: int) -> bool:
        """BertPreTokenizer's `is_bert_punc`: ASCII punctuation or P* (Unicode 8.0)."""
        return is_ascii_punctuation(cp) or cp in self.punctuation

    def is_cjk(self, cp: int) -> bool:
        return cp in self.cjk

    def is_nonspacing(self, cp: int) -> bool:
        return cp in self.nonspacing

    def combining(self, cp: int) -> int:
        return self.ccc.get(cp, 0)

    def decompose(self, cp: int) -> tuple[int, ...]:
        """Full canonical decomposition (Unicode 9.0), not yet reordered; (cp,) when none."""
        s = cp - HANGUL_S
        if 0 <= s < HANGUL_COUNT:
            lv = (HANGUL_L + s // (V_COUNT * T_COUNT), HANGUL_V + (s % (V_COUNT * T_COUNT)) // T_COUNT)
            return lv + ((HANGUL_T + s % T_COUNT,) if s % T_COUNT else ())
        return self.decomposition.get(cp, (cp,))

    def lower(self, cp: int) -> tuple[int, ...]:
        """Rust `char::to_lowercase` (no context)."""
        return self.lowercase.get(cp, (cp,))

    # -- the normalizer

    def clean_char(self, cp: int) -> int | None:
        """clean_text for one character: None (dropped), 32 (whitespace) or cp."""
        if cp == 0 or cp == 0xFFFD or self.is_other(cp):
            return None
        return 32 if cp in (9, 10, 13) or cp in self.whitespace else cp

    def normalize(self, text: str, lower: bool, strip: bool, cjk: bool = True) -> str:
        """BertNormalizer.normalize (clean_text on): clean, space CJK, [NFD + drop Mn], [lower]."""
        cps: list[int] = []
        for ch in text:
            c = self.clean_char(ord(ch))
            if c is None:
                continue
            if cjk and c in self.cjk:
                cps += (32, c, 32)
            else:
                cps.append(c)
        if strip:
            cps = [c for c in self.nfd(cps) if c not in self.nonspacing]
        if lower:
            cps = [x for c in cps for x in self.lower(c)]
        return "".join(map(chr, cps))

    def nfd(self, cps: list[int]) -> list[int]:
        """Canonical decomposition, then canonical ordering (each run of non-starters sorted
        stably by combining class)."""
        out = [x for c in cps for x in self.decompose(c)]
        i = 0
        while i < len(out):
            if self.combining(out[i]) == 0:
                i += 1
                continue
            j = i
            while j < len(out) and self.combining(out[j]) != 0:
                j += 1
            out[i:j] = sorted(out[i:j], key=self.combining)
            i = j
        return out


@functools.lru_cache(maxsize=None)
def load(path: Path = DATA) -> PinnedUnicode:
    return PinnedUnicode(Path(path))
