"""The `Precompiled` normalizer of tokenizer.json: SentencePiece's compiled normalization rules
(`precompiled_charsmap`, base64), as the Rust `tokenizers` library runs them
(tokenizers/src/normalizers/precompiled.rs over the `spm_precompiled` crate 0.1.4).

The charsmap (spm_precompiled's `parse`):

    u32 little-endian   trie_size, in bytes
    trie_size // 4      u32 little-endian units of a Darts double-array trie over UTF-8 bytes
    the rest            the normalized strings, each ended by a NUL byte (must be UTF-8)

A unit: has_leaf = bit 8, value = low 31 bits, label = bits 0-7 and 31, offset =
(unit >> 10) << ((unit & 512) >> 6). `transform(chunk)` walks the trie over chunk's bytes (stopping
at a NUL byte or at the first byte with no edge) collecting the values of every prefix that is a key,
and returns the normalized string at the FIRST (shortest) one, up to its NUL; None when no prefix
of chunk is a key. The remaining bytes of chunk are then dropped: a chunk's replacement is the
replacement of its shortest key prefix.

The normalizer: over the extended grapheme clusters of the text (graphemes.py), a cluster of
fewer than 6 UTF-8 bytes is transformed whole when some prefix of it is a key; otherwise (or when
it is 6 bytes or more) each of its characters is transformed alone, a character with no key kept.
Offsets are not tracked (refexit's tokenizers give ids only).

Bad charsmaps: the file is refused where `tokenizers` refuses it (too short for its trie, the
strings not UTF-8), and also when the trie is empty; a trie or string index out of range found
while normalizing (the Rust code panics there) is a ConfigError.

    cm = Charsmap.from_base64(spec["precompiled_charsmap"])
    cm.normalize("ﬁ½")          # 'fi1⁄2' under nmt_nfkc
"""
from __future__ import annotations

import base64
import binascii
import struct

import numpy as np

from refexit.errors import ConfigError
from refexit.tokenizers import graphemes

_CACHE_LIMIT = 1 << 16


class Charsmap:
    """A parsed precompiled_charsmap."""

    def __init__(self, data: bytes, where: str = "precompiled_charsmap"):
        self.where = where
        self.data = bytes(data)
        if len(data) < 4:
            raise ConfigError(f"{where}: {len(data)} bytes, too short for the trie size (4 bytes)")
        (size,) = struct.unpack_from("<I", data, 0)
        n = size // 4
        if 4 + 4 * n > len(data):
            raise ConfigError(f"{where}: the trie takes {4 * n} bytes but only {len(data) - 4} follow its size")
        if n == 0:
            raise ConfigError(f"{where}: the trie is empty")
        self.trie = np.frombuffer(data, dtype="<u4", count=n, offset=4).astype(np.int64).tolist()
        self.normalized = data[4 + 4 * n:]
        try:
            self.normalized.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{where}: the normalized strings are not UTF-8: {e}") from None
        self._cache: dict[str, str | None] = {}
        self.seg = graphemes.load()

    @classmethod
    def from_base64(cls, text: str, where: str = "precompiled_charsmap") -> "Charsmap":
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ConfigError(f"{where}: not base64: {e}") from None
        return cls(data, where)

    def _corrupt(self, what: str):
        raise ConfigError(f"{self.where}: corrupt charsmap: {what}")

    def common_prefix_search(self, key: bytes) -> list[int]:
        """spm_precompiled DoubleArray::common_prefix_search: the values of key's prefixes that are keys."""
        arr, size = self.trie, len(self.trie)
        out = []
        unit = arr[0]
        pos = (unit >> 10) << ((unit & 512) >> 6)
        for c in key:
            if c == 0:
                break
            pos ^= c
            if pos >= size:
                self._corrupt(f"trie index {pos} past its {size} units")
            unit = arr[pos]
            if unit & 0x800000FF != c:
                return out
            pos ^= (unit >> 10) << ((unit & 512) >> 6)
            if (unit >> 8) & 1:
                if pos >= size:
                    self._corrupt(f"trie index {pos} past its {size} units")
                out.append(arr[pos] & 0x7FFFFFFF)
        return out

    def transform(self, chunk: str) -> str | None:
        """The replacement of chunk (its shortest key prefix's), None when no prefix is a key."""
        if chunk in self._cache:
            return self._cache[chunk]
        res = self.common_prefix_search(chunk.encode("utf-8", "surrogatepass"))
        out = None
        if res:
            i = res[0]
            if i > len(self.normalized):
                self._corrupt(f"string index {i} past the {len(self.normalized)} bytes of strings")
            j = self.normalized.find(b"\0", i)
            j = len(self.normalized) if j < 0 else j
            try:
                out = self.normalized[i:j].decode("utf-8")
            except UnicodeDecodeError:
                self._corrupt(f"string index {i} is not on a character boundary")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = out
        return out

    def normalize(self, text: str) -> str:
        out = []
        for g in self.seg.split(text):
            if len(g.encode("utf-8", "surrogatepass")) < 6:
                norm = self.transform(g)
                if norm is not None:
                    out.append(norm)
                    continue
            for c in g:
                norm = self.transform(c)
                out.append(c if norm is None else norm)
        return "".join(out)
