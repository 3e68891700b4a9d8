"""Unicode tables for the generated C tokenizer, computed from this Python's `unicodedata` and `str`.

The C tokenizer (templates/tokenizer.c.j2) must give the same tokens as refexit.tokenizer, i.e. as
HF's Python BERT tokenizer running on this Python. So every table here is read off the very
functions that tokenizer calls (`unicodedata.category`, `unicodedata.normalize`, `str.lower`,
`str.isspace`) rather than off the Unicode data files, and the Unicode version is written into the
generated file's header.

What the rules need, per code point (one 4-byte record, found through a two-level table):

    flags   DROP   cleaned away (NUL, U+FFFD, category C* except \\t \\n \\r)  HF _clean_text
            WS     becomes ' ' (space, \\t, \\n, \\r, Zs)                      HF _clean_text
            CJK    gets spaces around it (HF _is_chinese_char, not dropped)   _tokenize_chinese_chars
            SPACE  str.isspace(): where str.split() cuts words               whitespace_tokenize
            PUNCT  HF _is_punctuation (ASCII symbols and P*)                 _run_split_on_punc
            MN     category Mn: dropped after NFD                            _run_strip_accents
            IGN, CASED  the Final_Sigma context of str.lower (see below)
            DEC    has a canonical decomposition (in the dec table)          NFC, NFD
            COMPF, COMPS  first / second character of a canonical composition NFC
            LMULTI lower case is several code points (U+0130 -> i + U+0307)   str.lower
    ccc     canonical combining class                                       NFC, NFD ordering
    lower   index into the table of lower-case deltas                       str.lower

and three sorted side tables: the full canonical decompositions (recursive, Hangul excepted: the C
code does Hangul algorithmically), the primary composites (pairs, composition exclusions already
left out), and the multi-code-point lower cases.

Final sigma: CPython lower-cases U+03A3 to U+03C2 when it follows a cased letter (skipping
case-ignorable characters) and no cased letter follows it (skipping case-ignorable characters).
`unicodedata` does not expose Cased / Case_Ignorable, so they are probed through `str.lower`
itself: "A" + c + SIGMA ends in the final form iff c is ignorable or cased, c + SIGMA iff c is
cased and not ignorable. Those two bits are all the rule can observe (a character that is both is
only ever skipped), so the C code gets IGN (skipped) and CASED (cased, not ignorable).
"""
from __future__ import annotations

import functools
import sys
import unicodedata

UNIDATA_VERSION = unicodedata.unidata_version
MAX_CP = 0x110000

F_DROP, F_WS, F_CJK, F_SPACE, F_PUNCT, F_MN, F_IGN, F_CASED = (1 << i for i in range(8))
F_DEC, F_COMPF, F_COMPS, F_LMULTI = (1 << i for i in range(8, 12))
FLAG_NAMES = ["DROP", "WS", "CJK", "SPACE", "PUNCT", "MN", "IGN", "CASED", "DEC", "COMPF", "COMPS", "LMULTI"]

HANGUL_S, HANGUL_COUNT = 0xAC00, 11172
SIGMA, SMALL_SIGMA, FINAL_SIGMA = 0x3A3, 0x3C3, 0x3C2


# ---------------------------------------------------------------- HF's character classes

def is_whitespace(ch: str) -> bool:
    """HF `_is_whitespace`."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """HF `_is_control`: category C* (Cc Cf Cn Co Cs) except \\t \\n \\r."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    """HF `_is_punctuation`."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_chinese_char(cp: int) -> bool:
    """HF `BasicTokenizer._is_chinese_char`."""
    return any(a <= cp <= b for a, b in CJK_RANGES)


# ---------------------------------------------------------------- the data

class Tables:
    """Everything the C code needs, as Python lists; `c_source()` prints it."""

    def __init__(self):
        self.records: list[tuple[int, int, int]] = []   # (flags, ccc, lower-delta index)
        self.values: list[int] = []                      # record index per code point
        self.deltas: list[int] = [0]                     # lower-case deltas, [0] = none
        self.dec: dict[int, list[int]] = {}              # cp -> full canonical decomposition (not Hangul)
        self.comp: dict[tuple[int, int], int] = {}       # (first, second) -> primary composite (not Hangul)
        self.lower_multi: dict[int, list[int]] = {}      # cp -> its lower case, when longer than one
        self.max_dec = 0
        self._build()

    def _build(self) -> None:
        category, combining, normalize, decomposition = (
            unicodedata.category, unicodedata.combining, unicodedata.normalize, unicodedata.decomposition)
        sigma, final = chr(SIGMA), chr(FINAL_SIGMA)
        rec_index: dict[tuple[int, int, int], int] = {}
        delta_index = {0: 0}
        default = None
        values = self.values
        for cp in range(MAX_CP):
            ch = chr(cp)
            cat = category(ch)
            if cat in ("Cn", "Co", "Cs"):        # unassigned, private use, surrogate: only DROP
                if default is None:
                    default = self._record(rec_index, (F_DROP, 0, 0))
                values.append(default)
                continue
            flags = 0
            if ch == "\x00" or ch == "\ufffd" or is_control(ch):
                flags |= F_DROP
            elif is_whitespace(ch):
                flags |= F_WS
            elif is_chinese_char(cp):
                flags |= F_CJK
            if ch.isspace():
                flags |= F_SPACE
            if is_punctuation(ch):
                flags |= F_PUNCT
            if cat == "Mn":
                flags |= F_MN
            if ch != sigma:
                probe_any = ("A" + ch + sigma).lower().endswith(final)
                probe_cased = (ch + sigma).lower().endswith(final)
            else:
                probe_any = probe_cased = True
            if probe_cased:
                flags |= F_CASED
            elif probe_any:
                flags |= F_IGN
            ccc = combining(ch)
            if not HANGUL_S <= cp < HANGUL_S + HANGUL_COUNT:
                d = normalize("NFD", ch)
                if d != ch:
                    flags |= F_DEC
                    self.dec[cp] = [ord(x) for x in d]
                    self.max_dec = max(self.max_dec, len(d))
                dm = decomposition(ch)
                if dm and not dm.startswith("<"):
                    parts = [int(x, 16) for x in dm.split()]
                    if len(parts) == 2 and normalize("NFC", ch) == ch:   # a primary composite
                        self.comp[(parts[0], parts[1])] = cp
            low = ch.lower()
            didx = 0
            if len(low) > 1:
                flags |= F_LMULTI
                self.lower_multi[cp] = [ord(x) for x in low]
            elif low != ch:
                delta = ord(low) - cp
                didx = delta_index.setdefault(delta, len(delta_index))
            values.append(self._record(rec_index, (flags, ccc, didx)))
        self.deltas = [d for d, _ in sorted(delta_index.items(), key=lambda kv: kv[1])]
        # composition flags go on the records of the characters involved
        firsts = {a for a, _ in self.comp}
        seconds = {b for _, b in self.comp}
        for cp in firsts | seconds:
            flags, ccc, didx = self.records[values[cp]]
            flags |= (F_COMPF if cp in firsts else 0) | (F_COMPS if cp in seconds else 0)
            values[cp] = self._record(rec_index, (flags, ccc, didx))
        self._check()

    def _record(self, rec_index: dict, rec: tuple[int, int, int]) -> int:
        i = rec_index.get(rec)
        if i is None:
            i = rec_index[rec] = len(self.records)
            self.records.append(rec)
        return i

    def flags(self, cp: int) -> int:
        return self.records[self.values[cp]][0]

    def ccc(self, cp: int) -> int:
        return self.records[self.values[cp]][1]

    def _check(self) -> None:
        """The properties the C algorithm relies on (it streams with bounded memory because of them).
        A future Unicode version that breaks one fails here, at generation time, not silently."""
        ccc, normalize = self.ccc, unicodedata.normalize
        for cp, d in self.dec.items():
            # a decomposition is starters followed by non-starters (never a starter after a mark)
            k = 0
            while k < len(d) and ccc(d[k]) == 0:
                k += 1
            assert all(ccc(x) != 0 for x in d[k:]), f"U+{cp:04X}: decomposition {d} mixes marks and starters"
            assert len(d) <= 4, f"U+{cp:04X}: decomposition longer than 4"
        for (a, b), c in self.comp.items():
            assert ccc(a) == 0, f"composition pair U+{a:04X} U+{b:04X}: first is not a starter"
        for cp in range(MAX_CP):
            f = self.flags(cp)
            if f & F_SPACE and not f & (F_DROP | F_WS):
                # no composition or decomposition touches a character where words are cut
                # (the ones cleaning does not turn into ' ': ' ' itself, U+2028, U+2029)
                assert not f & (F_DEC | F_COMPF | F_COMPS) and ccc(cp) == 0, f"U+{cp:04X}"
            if f & F_PUNCT:
                assert ccc(cp) == 0, f"punctuation U+{cp:04X} is a combining mark"
            if f & (F_DROP | F_WS) or 0xD800 <= cp < 0xE000:
                continue
            ch = chr(cp)
            if not unicodedata.is_normalized("NFC", ch):
                continue                  # never in NFC output, which is all the later steps see
            if ccc(cp) != 0:
                # marks that survive NFC are fully decomposed and lower-case to themselves
                assert ch.lower() == ch and normalize("NFD", ch) == ch, f"U+{cp:04X}"
            elif f & (F_DEC | F_LMULTI) or ch.lower() != ch:
                # a starter stays a starter at the front: NFD(c) and NFD(lower(c)) start with one
                assert ccc(ord(normalize("NFD", ch)[0])) == 0, f"U+{cp:04X}"
                assert ccc(ord(normalize("NFD", ch.lower())[0])) == 0, f"U+{cp:04X}"
        for cp, low in self.lower_multi.items():
            assert len(low) <= 3 and ccc(low[0]) == 0, f"U+{cp:04X}: lower case {low}"
        for cp in self.dec:
            if self.flags(cp) & (F_DROP | F_WS):
                continue                  # cleaned before NFC (U+2000 -> U+2002 never happens)
            assert not any(self.flags(x) & F_SPACE for x in self.dec[cp]), f"U+{cp:04X}"

    # ------------------------------------------------------------ C text

    def three_level(self) -> tuple[int, int, list[int], list[int], list[int]]:
        """Index `values` in three levels: blocks of 2**a records, shared when equal, then blocks of
        2**b block numbers, shared when equal; the (a, b) with the fewest bytes.
        record = recs[s3[(s2[(s1[cp >> (a+b)] << b) | (cp >> a & (2**b-1))] << a) | (cp & (2**a-1))]]"""
        best = None
        for a in range(3, 9):
            s2full, s3 = _share_blocks(self.values, a)
            for b in range(2, 9):
                s1, s2 = _share_blocks(s2full, b)
                nbytes = (len(s1) * _int_bytes(max(s1)) + len(s2) * _int_bytes(max(s2))
                          + len(s3) * _int_bytes(len(self.records) - 1))
                if best is None or nbytes < best[0]:
                    best = (nbytes, a, b, s1, s2, s3)
        return best[1:]

    def sizes(self) -> dict[str, int]:
        """Bytes of each generated table."""
        a, b, s1, s2, s3 = self.three_level()
        pool = sum(len(v) for v in self.dec.values())
        return {
            "index": (len(s1) * _int_bytes(max(s1)) + len(s2) * _int_bytes(max(s2))
                      + len(s3) * _int_bytes(len(self.records) - 1)),
            "records": 4 * len(self.records),
            "lower_deltas": 4 * len(self.deltas),
            "lower_multi": 16 * len(self.lower_multi),
            "decompositions": 4 * len(self.dec) + 2 * (len(self.dec) + 1) + 4 * pool,
            "compositions": 12 * len(self.comp),
            "ascii": 128 * 2,
        }

    def c_source(self, ns: str = "tk") -> str:
        """C99 definitions (all `static const`, names start with `ns`_) and a header comment."""
        a, b, s1, s2, s3 = self.three_level()
        sizes = self.sizes()
        total = sum(sizes.values())
        dec_cps = sorted(self.dec)
        offs, pool = [0], []
        for cp in dec_cps:
            pool.extend(self.dec[cp])
            offs.append(len(pool))
        comp = sorted(self.comp.items())
        out = [
            f"/* Unicode tables generated by codegen/unicode_tables.py from Python {sys.version.split()[0]}",
            f"   unicodedata {UNIDATA_VERSION} (unicodedata.unidata_version). Do not edit.",
            f"   {len(self.records)} property records, three-level index (blocks of {1 << a} records, "
            f"{1 << b} blocks);",
            f"   {len(self.dec)} canonical decompositions ({len(pool)} code points, Hangul algorithmic),",
            f"   {len(self.comp)} primary composites, {len(self.deltas) - 1} lower-case deltas,",
            f"   {len(self.lower_multi)} multi-code-point lower case(s).",
            "   Bytes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f"; total {total}. */",
            "",
        ]
        for name in FLAG_NAMES:
            out.append(f"#define {ns.upper()}_F_{name} 0x{globals()['F_' + name]:03x}u")
        out += [
            f"#define {ns.upper()}_SHIFT_A {a}",
            f"#define {ns.upper()}_SHIFT_B {b}",
            f"#define {ns.upper()}_MAX_DEC {self.max_dec}",
            f"#define {ns.upper()}_MIN_CCC_CP 0x{min(cp for cp in range(MAX_CP) if self.ccc(cp)):x}u"
            "   /* below it every combining class is 0 */",
            f"#define {ns.upper()}_MIN_DEC_CP 0x{min(self.dec):x}u   /* below it nothing decomposes */",
            f"#define {ns.upper()}_MIN_COMPS_CP 0x{min(b for _, b in self.comp):x}u"
            "   /* below it nothing is the second of a composition */",
            f"#define {ns.upper()}_N_DEC {len(dec_cps)}",
            f"#define {ns.upper()}_N_COMP {len(comp)}",
            f"#define {ns.upper()}_N_LMULTI {len(self.lower_multi)}",
            "",
            f"typedef struct {{ uint16_t flags; uint8_t ccc; uint8_t lower; }} {ns}_rec;",
            "",
            _c_array(f"static const {_ctype(max(s1))} {ns}_s1[{len(s1)}]", s1),
            _c_array(f"static const {_ctype(max(s2))} {ns}_s2[{len(s2)}]", s2),
            _c_array(f"static const {_ctype(len(self.records) - 1)} {ns}_s3[{len(s3)}]", s3),
            f"static const {ns}_rec {ns}_recs[{len(self.records)}] = {{",
        ]
        out += _wrap([f"{{0x{f:03x},{c},{d}}}" for f, c, d in self.records], indent="    ")
        out.append("};")
        out.append(_c_array(f"static const int32_t {ns}_lower_delta[{len(self.deltas)}]", self.deltas))
        ascii_flags = [self.records[self.values[cp]][0] for cp in range(128)]
        out.append(_c_array(f"static const uint16_t {ns}_ascii_flags[128]", ascii_flags, hexa=True))
        out.append(_c_array(f"static const uint32_t {ns}_dec_cp[{len(dec_cps)}]", dec_cps, hexa=True))
        out.append(_c_array(f"static const uint16_t {ns}_dec_off[{len(offs)}]", offs))
        out.append(_c_array(f"static const uint32_t {ns}_dec_pool[{len(pool)}]", pool, hexa=True))
        out.append(_c_array(f"static const uint64_t {ns}_comp_key[{len(comp)}]",
                            [f"0x{(a << 21) | b:x}u" for (a, b), _ in comp], raw=True))
        out.append(_c_array(f"static const uint32_t {ns}_comp_val[{len(comp)}]", [c for _, c in comp], hexa=True))
        multi = sorted(self.lower_multi.items()) or [(MAX_CP, [0])]   # never empty (C99 has no [0] arrays)
        out.append(f"static const struct {{ uint32_t cp; uint8_t n; uint32_t s[3]; }} {ns}_lower_multi[{len(multi)}] = {{")
        out += _wrap([f"{{0x{cp:x},{len(s)},{{" + ",".join(f"0x{x:x}" for x in s) + "}}" for cp, s in multi],
                     indent="    ")
        out.append("};")
        return "\n".join(out) + "\n"


def _share_blocks(values: list[int], shift: int) -> tuple[list[int], list[int]]:
    """Cut `values` into blocks of 2**shift; equal blocks are stored once.
    Returns (block number per block position, the stored blocks concatenated)."""
    size = 1 << shift
    seen: dict[tuple, int] = {}
    index, blocks = [], []
    for start in range(0, len(values), size):
        blk = tuple(values[start:start + size])
        idx = seen.get(blk)
        if idx is None:
            idx = seen[blk] = len(seen)
            blocks.extend(blk)
        index.append(idx)
    return index, blocks


def _int_bytes(maxval: int) -> int:
    return 1 if maxval < 256 else 2 if maxval < 65536 else 4


def _ctype(maxval: int) -> str:
    return {1: "uint8_t", 2: "uint16_t", 4: "uint32_t"}[_int_bytes(maxval)]


def _wrap(items: list[str], indent: str = "    ", width: int = 100) -> list[str]:
    lines, cur = [], indent
    for it in items:
        if len(cur) + len(it) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += it + ","
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def _c_array(decl: str, values, hexa: bool = False, raw: bool = False) -> str:
    items = [str(v) if raw else (f"0x{v:x}" if hexa else str(v)) for v in values]
    return decl + " = {\n" + "\n".join(_wrap(items)) + "\n};"


@functools.lru_cache(maxsize=1)
def tables() -> Tables:
    """The tables of this Python (built once per process, about a second)."""
    return Tables()


def c_source(ns: str = "tk") -> str:
    return tables().c_source(ns)


if __name__ == "__main__":
    t = tables()
    for k, v in t.sizes().items():
        print(f"{k:15s} {v:8d} bytes")
    print(f"{'total':15s} {sum(t.sizes().values()):8d} bytes  (unicodedata {UNIDATA_VERSION}, "
          f"{len(t.records)} records)")
