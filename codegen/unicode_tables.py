"""Unicode tables for the generated C tokenizer, from the pinned tables of refexit/tokenizers/tokenizer_unicode.txt.

The C tokenizer (templates/tokenizer.c.j2) must give the same tokens as refexit.tokenizers.wordpiece's default
mode, i.e. as the Rust `tokenizers` BERT pipeline. Both read the one committed table file through
refexit.tokenizers.unicode_pinned (written by tools/make_unicode_tables.py from the tables the Rust crates
compile in), so neither depends on the Python that runs the generator.

What the rules need, per code point (one 4-byte record, found through a three-level table):

    flags   DROP   dropped by clean_text (Cc Cf Co of Unicode 8.0, NUL, U+FFFD; not \\t \\n \\r)
            WS     becomes ' ' (char::is_whitespace)
            CJK    gets spaces around it (handle_chinese_chars)
            PUNCT  a piece of its own (ASCII punctuation or P* of Unicode 8.0)
            MN     Mn of Unicode 8.0: dropped after NFD (strip_accents)
            DEC    has a canonical decomposition (Unicode 9.0, in the dec table; not Hangul)
            LMULTI lower case is several code points (U+0130 -> i + U+0307)
    ccc     canonical combining class (Unicode 9.0): canonical ordering
    lower   index into the table of lower-case deltas (char::to_lowercase)

and two sorted side tables: the full canonical decompositions (Hangul is algorithmic in C) and
the multi-code-point lower cases.
"""
from __future__ import annotations

import functools

import numpy as np

from refexit.tokenizers import unicode_pinned as unicode_pinned

MAX_CP = 0x110000

F_DROP, F_WS, F_CJK, F_PUNCT, F_MN, F_DEC, F_LMULTI = (1 << i for i in range(7))
FLAG_NAMES = ["DROP", "WS", "CJK", "PUNCT", "MN", "DEC", "LMULTI"]
SOURCE = unicode_pinned.DATA.name


class Tables:
    """Everything the C code needs; `c_source()` prints it."""

    def __init__(self):
        u = unicode_pinned.load()
        flags = np.zeros(MAX_CP, np.uint32)

        def mark(rangeset, bit):
            for a, b in rangeset.ranges:
                flags[a:b + 1] |= bit
        mark(u.other, F_DROP)
        flags[[9, 10, 13]] &= ~np.uint32(F_DROP)
        flags[[0, 0xFFFD]] |= F_DROP
        mark(u.whitespace, F_WS)
        flags[flags & F_DROP != 0] &= ~np.uint32(F_WS)          # dropped before whitespace is seen
        mark(u.cjk, F_CJK)
        mark(u.punctuation, F_PUNCT)
        for cp in range(128):
            if unicode_pinned.is_ascii_punctuation(cp):
                flags[cp] |= F_PUNCT
        mark(u.nonspacing, F_MN)
        self.dec = {cp: list(v) for cp, v in u.decomposition.items()}
        flags[list(self.dec)] |= F_DEC
        self.max_dec = max(3, max(len(v) for v in self.dec.values()))   # 3: Hangul
        ccc = np.zeros(MAX_CP, np.uint32)
        for cp, c in u.ccc.items():
            ccc[cp] = c
        self.lower_multi = {cp: list(v) for cp, v in u.lowercase.items() if len(v) > 1}
        flags[list(self.lower_multi)] |= F_LMULTI
        deltas = sorted({v[0] - cp for cp, v in u.lowercase.items() if len(v) == 1})
        self.deltas = [0] + deltas
        index = {d: i + 1 for i, d in enumerate(deltas)}
        lower = np.zeros(MAX_CP, np.uint32)
        for cp, v in u.lowercase.items():
            if len(v) == 1:
                lower[cp] = index[v[0] - cp]
        assert len(self.deltas) < 256 and int(flags.max()) < 1 << 16
        key = flags | (ccc << 16) | (lower << 24)                 # one record per distinct key
        uniq, inverse = np.unique(key, return_inverse=True)
        self.records = [(int(k) & 0xFFFF, (int(k) >> 16) & 0xFF, int(k) >> 24) for k in uniq]
        self.values = inverse.astype(np.int64).reshape(-1)
        self.flags_array, self.ccc_array = flags, ccc
        self._check(u)

    def flags(self, cp: int) -> int:
        return int(self.flags_array[cp])

    def ccc(self, cp: int) -> int:
        return int(self.ccc_array[cp])

    def _check(self, u) -> None:
        """What the C algorithm relies on; a new table that breaks one fails here, not silently."""
        for cp, d in self.dec.items():       # (a character cleaned away never decomposes)
            assert len(d) <= self.max_dec, hex(cp)
            if not self.flags(cp) & (F_DROP | F_WS):
                assert not any(self.flags(x) & (F_DROP | F_WS | F_CJK) for x in d[1:]), hex(cp)
        for cp, low in self.lower_multi.items():
            assert len(low) <= 3, hex(cp)
        for cp in range(128):            # C lower-cases ASCII by itself
            assert u.lower(cp) == ((cp + 32,) if 65 <= cp <= 90 else (cp,))

    # ------------------------------------------------------------ C text

    def three_level(self):
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
        out = [
            f"/* Unicode tables generated by codegen/unicode_tables.py from refexit/{SOURCE} (the pinned",
            "   tables of the Rust tokenizers pipeline: categories Unicode 8.0, decompositions Unicode 9.0,",
            "   Rust std lower case). Do not edit.",
            f"   {len(self.records)} property records, three-level index (blocks of {1 << a} records, "
            f"{1 << b} blocks);",
            f"   {len(self.dec)} canonical decompositions ({len(pool)} code points, Hangul algorithmic),",
            f"   {len(self.deltas) - 1} lower-case deltas, {len(self.lower_multi)} multi-code-point lower case(s).",
            "   Bytes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f"; total {total}. */",
            "",
        ]
        for name in FLAG_NAMES:
            out.append(f"#define {ns.upper()}_F_{name} 0x{globals()['F_' + name]:03x}u")
        nz = np.nonzero(self.ccc_array)[0]
        out += [
            f"#define {ns.upper()}_SHIFT_A {a}",
            f"#define {ns.upper()}_SHIFT_B {b}",
            f"#define {ns.upper()}_MAX_DEC {self.max_dec}",
            f"#define {ns.upper()}_MIN_CCC_CP 0x{int(nz[0]):x}u   /* below it every combining class is 0 */",
            f"#define {ns.upper()}_MIN_DEC_CP 0x{min(self.dec):x}u   /* below it nothing decomposes */",
            f"#define {ns.upper()}_N_DEC {len(dec_cps)}",
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
        ascii_flags = [self.flags(cp) for cp in range(128)]
        out.append(_c_array(f"static const uint16_t {ns}_ascii_flags[128]", ascii_flags, hexa=True))
        out.append(_c_array(f"static const uint32_t {ns}_dec_cp[{len(dec_cps)}]", dec_cps, hexa=True))
        out.append(_c_array(f"static const uint16_t {ns}_dec_off[{len(offs)}]", offs))
        out.append(_c_array(f"static const uint32_t {ns}_dec_pool[{len(pool)}]", pool, hexa=True))
        multi = sorted(self.lower_multi.items()) or [(MAX_CP, [0])]   # never empty (C99 has no [0] arrays)
        out.append(f"static const struct {{ uint32_t cp; uint8_t n; uint32_t s[3]; }} {ns}_lower_multi[{len(multi)}] = {{")
        out += _wrap([f"{{0x{cp:x},{len(s)},{{" + ",".join(f"0x{x:x}" for x in s) + "}}" for cp, s in multi],
                     indent="    ")
        out.append("};")
        return "\n".join(out) + "\n"


def _share_blocks(values, shift: int) -> tuple[list[int], list[int]]:
    """Cut `values` into blocks of 2**shift; equal blocks are stored once.
    Returns (block number per block position, the stored blocks concatenated)."""
    size = 1 << shift
    v = np.asarray(values, np.int64)
    if len(v) % size:
        v = np.concatenate([v, np.zeros(size - len(v) % size, np.int64)])
    rows = v.reshape(-1, size)
    seen: dict[bytes, int] = {}
    index, blocks = [], []
    for row in rows:
        k = row.tobytes()
        idx = seen.get(k)
        if idx is None:
            idx = seen[k] = len(seen)
            blocks.extend(row.tolist())
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
    """The tables (built once per process)."""
    return Tables()


@functools.lru_cache(maxsize=4)
def c_source(ns: str = "tk") -> str:
    return tables().c_source(ns)


if __name__ == "__main__":
    t = tables()
    for k, v in t.sizes().items():
        print(f"{k:15s} {v:8d} bytes")
    print(f"{'total':15s} {sum(t.sizes().values()):8d} bytes  ({len(t.records)} records)")
