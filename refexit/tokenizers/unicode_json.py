"""The pinned Unicode classes of the tokenizer.json components (refexit/tokenizers/tokenizer_json_unicode.txt).

Beside the BertNormalizer tables of unicode_pinned.py (tokenizer_unicode.txt), the other components
of the Rust `tokenizers` pipelines use:

    ByteLevel pre-tokenizer    \\p{L}, \\p{N}, \\s of its Oniguruma regex
    Whitespace pre-tokenizer   \\w, \\s of the Rust `regex` crate
    StripAccents               is_combining_mark of unicode-normalization-alignments (Unicode 9.0)
    NFD / NFKD / NFC / NFKC    that crate's decompositions (canonical ones in tokenizer_unicode.txt,
                               compatibility ones here) and its composition table

all written once by `tools/make_unicode_tables.py --tokenizer-json` and checked there against
`tokenizers` on every code point. Nothing here reads Python's `unicodedata`.

    u = load()
    u.nfkc("ﬁ Å")            # 'fi Å'
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from refexit.tokenizers import unicode_pinned
from refexit.tokenizers.unicode_pinned import (HANGUL_COUNT, HANGUL_L, HANGUL_S, HANGUL_T, HANGUL_V, T_COUNT,
                                               V_COUNT, RangeSet, _range)

DATA = Path(__file__).with_name("tokenizer_json_unicode.txt")
CLASSES = ("bytelevel_letter", "bytelevel_number", "bytelevel_space", "word", "word_space", "combining_mark")


def char_class(ranges) -> str:
    """The body of a Python `re` character class holding these inclusive code point ranges."""
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


class _PerChar(dict):
    """A `str.translate` table computed on first use of each code point."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, cp: int) -> str:
        out = self[cp] = self.fn(cp)
        return out


class JsonUnicode:
    """The tables, and the Unicode normalization forms built on them."""

    def __init__(self, path: Path = DATA):
        sections = unicode_pinned.read_sections(path)
        self.classes = {name: RangeSet([_range(t) for t in sections[name]]) for name in CLASSES}
        self.compat: dict[int, tuple[int, ...]] = {}
        for t in sections["compat_decomposition"]:
            k, _, v = t.partition(":")
            self.compat[int(k, 16)] = tuple(int(x, 16) for x in v.split(","))
        self.composition: dict[tuple[int, int], int] = {}
        for t in sections["composition"]:
            k, _, v = t.partition(":")
            a, _, b = k.partition(",")
            self.composition[(int(a, 16), int(b, 16))] = int(v, 16)
        self.bert = unicode_pinned.load()          # canonical decompositions, combining classes, case
        marks = self.classes["combining_mark"]
        self._strip = _PerChar(lambda cp: "" if cp in marks else chr(cp))
        self._lower = _PerChar(lambda cp: "".join(map(chr, self.bert.lower(cp))))
        self._nfd = _PerChar(lambda cp: "".join(map(chr, self.bert.decompose(cp))))
        self._nfkd = _PerChar(lambda cp: "".join(map(chr, self.compat.get(cp) or self.bert.decompose(cp))))
        self._nonstarter = re.compile(f"[{char_class(sorted((c, c) for c in self.bert.ccc))}]")

    def regex_class(self, name: str) -> str:
        return char_class(self.classes[name].ranges)

    # -- per character maps

    def lower(self, text: str) -> str:
        """Lowercase: Rust `char::to_lowercase` character by character (no final sigma)."""
        return text.translate(self._lower)

    def strip_accents(self, text: str) -> str:
        """StripAccents: drop every combining mark (Mn, Mc, Me of Unicode 9.0)."""
        return text if text.isascii() else text.translate(self._strip)

    # -- normalization forms

    def nfd(self, text: str) -> str:
        return self._decompose(text, self._nfd)

    def nfkd(self, text: str) -> str:
        return self._decompose(text, self._nfkd)

    def nfc(self, text: str) -> str:
        return text if text.isascii() else self._compose(self.nfd(text))

    def nfkc(self, text: str) -> str:
        return text if text.isascii() else self._compose(self.nfkd(text))

    def _decompose(self, text: str, table) -> str:
        """Full decomposition of every character, then canonical ordering (each run of
        non-starters sorted stably by combining class)."""
        if text.isascii():
            return text
        out = text.translate(table)
        if not self._nonstarter.search(out):
            return out
        return "".join(map(chr, self._reorder([ord(c) for c in out])))

    def _reorder(self, cps: list[int]) -> list[int]:
        ccc = self.bert.combining
        i = 0
        while i < len(cps):
            if ccc(cps[i]) == 0:
                i += 1
                continue
            j = i
            while j < len(cps) and ccc(cps[j]) != 0:
                j += 1
            cps[i:j] = sorted(cps[i:j], key=ccc)
            i = j
        return cps

    def _compose_pair(self, a: int, b: int) -> int | None:
        if HANGUL_L <= a < HANGUL_L + 19 and HANGUL_V <= b < HANGUL_V + V_COUNT:
            return HANGUL_S + ((a - HANGUL_L) * V_COUNT + (b - HANGUL_V)) * T_COUNT
        s = a - HANGUL_S
        if 0 <= s < HANGUL_COUNT and s % T_COUNT == 0 and HANGUL_T < b < HANGUL_T + T_COUNT:
            return a + (b - HANGUL_T)
        return self.composition.get((a, b))

    def _compose(self, text: str) -> str:
        """Canonical composition of decomposed, ordered text (unicode-normalization's
        Recompositions): a character joins the last starter unless a character between them
        has combining class 0 or one at least its own."""
        ccc = self.bert.combining
        out: list[int] = []
        starter = None                       # index in out of the last starter
        for ch in text:
            c = ord(ch)
            cc = ccc(c)
            if starter is not None:
                adjacent = starter == len(out) - 1
                if adjacent or 0 != ccc(out[-1]) < cc:
                    comp = self._compose_pair(out[starter], c)
                    if comp is not None:
                        out[starter] = comp
                        continue
            if cc == 0:
                starter = len(out)
            out.append(c)
        return "".join(map(chr, out))


@functools.lru_cache(maxsize=None)
def load(path: Path = DATA) -> JsonUnicode:
    return JsonUnicode(Path(path))
