#!/usr/bin/env python
"""Time reading an XLM-R-sized SentencePiece model (refexit/tokenizers/spm_model.py): a synthetic
ModelProto of 250,000 pieces (5.6 MB, seeded), parsed with and without the canonical-piece path,
then load_tokenizer on a folder holding it as sentencepiece.bpe.model.

    python tools/bench_spm_model.py [--pieces 250000]
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = b""
    while v >= 0x80:
        out, v = out + bytes([v & 0x7F | 0x80]), v >> 7
    return out + bytes([v])


def field(number: int, wire: int, value) -> bytes:
    return varint(number << 3 | wire) + (varint(value) if wire == 0 else varint(len(value)) + value)


def synthetic_model(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    parts = []
    for i in range(n):
        p = "\u2581" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzéü") for _ in range(rng.randint(1, 8))) + str(i)
        body = field(1, 2, p.encode()) + b"\x15" + struct.pack("<f", -rng.random() * 20) + (b"\x18\x03" if i < 3 else b"")
        parts.append(field(1, 2, body))
    return b"".join(parts) + field(2, 2, field(40, 0, 0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=250000)
    args = ap.parse_args(argv)
    from refexit.tokenizers import load_tokenizer, spm_model
    data = synthetic_model(args.pieces)
    print(f"{args.pieces} pieces, {len(data)} bytes")
    t = time.perf_counter()
    spm_model.parse_model(data, "big.model")
    print(f"parse_model: {time.perf_counter() - t:.2f} s")
    fast, spm_model._canonical_piece = spm_model._canonical_piece, lambda *a: None
    t = time.perf_counter()
    spm_model.parse_model(data, "big.model")
    print(f"parse_model, general reader only: {time.perf_counter() - t:.2f} s")
    spm_model._canonical_piece = fast
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sentencepiece.bpe.model").write_bytes(data)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
        t = time.perf_counter()
        tok = load_tokenizer(tmp)
        print(f"load_tokenizer: {time.perf_counter() - t:.2f} s ({tok.vocab_size} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
