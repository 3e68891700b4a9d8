"""Extended grapheme clusters as the `unicode-segmentation` crate cuts them (`str::graphemes(true)`),
from the pinned tables in refexit/tokenizers/grapheme_unicode.txt (tools/make_unicode_tables.py
--graphemes; Unicode 17.0.0). The Precompiled normalizer (precompiled.py) iterates over these.

The rules, as the crate's `check_pair` (src/grapheme.rs) orders them, between the character
before a position and the one after it:

    GB3   CR x LF                     GB9   x (Extend | ZWJ)
    GB4   (Control | CR | LF) /       GB9a  x SpacingMark
    GB5   / (Control | CR | LF)       GB9b  Prepend x
    GB6   L x (L | V | LV | LVT)      GB9c  x InCB_Consonant when the characters before are
    GB7   (LV | V) x (V | T)                InCB_Consonant [InCB_Extend | InCB_Linker]* with at least one linker
    GB8   (LVT | T) x T               GB11  ZWJ x Extended_Pictographic when before the ZWJ: ExtPict Extend*
                                      GB12/13  RI x RI after an even number of RIs
                                      GB999 / otherwise

    seg = load()
    seg.split("e\\u0301👍🏽🇫🇷")        # ['é', '👍🏽', '🇫🇷']
"""
from __future__ import annotations

import bisect
import functools
from pathlib import Path

from refexit.tokenizers.unicode_pinned import _range, read_sections

DATA = Path(__file__).with_name("grapheme_unicode.txt")

# class numbers, shared with the C tables (codegen/unicode_tables.py): 0 is Any
CLASSES = ("Any", "CR", "LF", "Control", "Extend", "ZWJ", "Regional_Indicator", "Prepend", "SpacingMark",
           "L", "V", "T", "LV", "LVT", "Extended_Pictographic", "InCB_Consonant")
(ANY, CR, LF, CONTROL, EXTEND, ZWJ, RI, PREPEND, SPACING, L, V, T, LV, LVT, EXTPICT,
 CONSONANT) = range(len(CLASSES))
# pair results
_BREAK, _KEEP, _CONS, _EMOJI, _REGIONAL = range(5)


def _pair(a: int, b: int) -> int:
    """check_pair of unicode-segmentation (extended clusters: GB9a / GB9b never break)."""
    if a == CR and b == LF:
        return _KEEP
    if a in (CONTROL, CR, LF) or b in (CONTROL, CR, LF):
        return _BREAK
    if a == L and b in (L, V, LV, LVT):
        return _KEEP
    if a in (LV, V) and b in (V, T):
        return _KEEP
    if a in (LVT, T) and b == T:
        return _KEEP
    if b in (EXTEND, ZWJ, SPACING) or a == PREPEND:
        return _KEEP
    if b == CONSONANT:
        return _CONS
    if a == ZWJ and b == EXTPICT:
        return _EMOJI
    if a == RI and b == RI:
        return _REGIONAL
    return _BREAK


PAIR = [[_pair(a, b) for b in range(len(CLASSES))] for a in range(len(CLASSES))]


class Segmenter:
    """The pinned tables and the segmentation built on them."""

    def __init__(self, path: Path = DATA):
        sections = read_sections(Path(path))
        self.starts, self.ends, self.classes = [], [], []
        for tok in sections["grapheme_break"]:
            r, _, name = tok.partition(":")
            a, b = _range(r)
            self.starts.append(a)
            self.ends.append(b)
            self.classes.append(CLASSES.index(name))
        self.incb_extend = [_range(t) for t in sections["incb_extend"]]
        self.incb_linker = [_range(t) for t in sections["incb_linker"]]
        self._ext_starts = [a for a, _ in self.incb_extend]
        self._linkers = {cp for a, b in self.incb_linker for cp in range(a, b + 1)}
        self._cache: dict[int, int] = {}

    def cls(self, cp: int) -> int:
        """The class of a code point (CLASSES index)."""
        c = self._cache.get(cp)
        if c is None:
            if cp < 0x7F:                            # the crate's ASCII shortcut (the table agrees)
                c = ANY if cp >= 0x20 else LF if cp == 0xA else CR if cp == 0xD else CONTROL
            else:
                i = bisect.bisect_right(self.starts, cp) - 1
                c = self.classes[i] if i >= 0 and cp <= self.ends[i] else ANY
            self._cache[cp] = c
        return c

    def is_incb_extend(self, cp: int) -> bool:
        i = bisect.bisect_right(self._ext_starts, cp) - 1
        return i >= 0 and cp <= self.incb_extend[i][1]

    def boundaries(self, cps: list[int]) -> list[int]:
        """The grapheme boundaries strictly inside cps (indices i: a cluster starts at cps[i])."""
        out = []
        cls = [self.cls(c) for c in cps]
        for i in range(1, len(cps)):
            r = PAIR[cls[i - 1]][cls[i]]
            if r == _KEEP:
                continue
            if r == _CONS:                           # GB9c: look back over InCB Extend / Linker
                j, linkers = i - 1, 0
                while j >= 0:
                    if cps[j] in self._linkers:
                        linkers += 1
                    elif not self.is_incb_extend(cps[j]):
                        break
                    j -= 1
                if j >= 0 and linkers and cls[j] == CONSONANT:
                    continue
            elif r == _EMOJI:                        # GB11: ZWJ preceded by ExtPict Extend*
                j = i - 2
                while j >= 0 and cls[j] == EXTEND:
                    j -= 1
                if j >= 0 and cls[j] == EXTPICT:
                    continue
            elif r == _REGIONAL:                     # GB12/13: pairs of regional indicators
                j = i - 1
                while j >= 0 and cls[j] == RI:
                    j -= 1
                if (i - 1 - j) % 2 == 1:
                    continue
            out.append(i)
        return out

    def split(self, text: str) -> list[str]:
        """text -> its extended grapheme clusters."""
        if not text:
            return []
        cps = [ord(c) for c in text]
        cuts = [0] + self.boundaries(cps) + [len(cps)]
        return [text[a:b] for a, b in zip(cuts, cuts[1:])]


@functools.lru_cache(maxsize=None)
def load(path: Path = DATA) -> Segmenter:
    return Segmenter(Path(path))
