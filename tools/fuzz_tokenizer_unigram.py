"""Fuzzing of the generated C Unigram tokenizer (templates/tokenizer_unigram.c.j2): AddressSanitizer
+ UBSan build, outputs compared with the oracle refexit.tokenizers.TokenizerJson (the loop of
tools/fuzz_tokenizer_bpe.py).

    python tools/fuzz_tokenizer_unigram.py --seconds 600
    python tools/fuzz_tokenizer_unigram.py --batches 20 --seed 7

Each batch uses a variant of a golden ALBERT tokenizer (tests/golden/tokenizers/albert, and the
SentencePiece kinds albert_spm, xlmr_spm, t5_spm with their Precompiled charsmaps, as load_tokenizer
rebuilds them): the normalizer steps in random order and subsets (Replace, NFD, NFKD, StripAccents, Lowercase, extra
Replace rules), Metaspace with or without WhitespaceSplit, every prepend_scheme, split on or off,
some pieces removed (unknown characters, fused) or their scores perturbed or rounded (ties), a piece
listed twice,
lstrip / rstrip on the added tokens. Inputs as tools/fuzz_tokenizer.py makes them plus pieces that
hit the normalizer (``, '', accents, ligatures, Hangul, ▁, special tokens).
Exit status 0 = nothing found, 1 = found something, 2 = no sanitizer runtime.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_tokenizer_bpe  # noqa: E402
from codegen import tokenizer_emit as te  # noqa: E402
from fuzz_tokenizer import random_input  # noqa: E402
from refexit.tokenizers.load import sentencepiece_spec  # noqa: E402

UG_PIECES = [s.encode() for s in ["``", "''", "\u2581", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "[CLS]", "[SEP]",
                                  "[MASK]", "<unk>", "<pad>", "[CL", "S]", "A", "the", "The", "THE", "é", "e\u0301",
                                  "\u0301\u0316\u0301", "ﬁ", "½", "x²", "Ⅻ", "각", "\u1100\u1161", "İ", "ß", "Σ", "ǅ",
                                  "😀", "中", "1", "23", ".", ",", "!", "\u2581the",
                                  # grapheme clusters and charsmap entries (Precompiled)
                                  "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd", "\u200d",
                                  "\U0001f1eb\U0001f1f7\U0001f1e9", "\u0915\u094d\u0937", "\u0915\u094d\u200d",
                                  "\u00aa\u0301", "\u017f\u0308", "\uff21\uff42", "\u3000", "\r\n", "\x1e",
                                  "\ufe0f", "\u0600\u0661", "\U000e0041", "\u1100\u1161\u11a8\u0301"]]
EXTRA_REPLACE = [("a", "bb"), (" ", ""), ("\u2581", " "), ("e", "\u0301"), ("th", "TH")]


def variant(rng: random.Random, spec: dict) -> dict:
    """A random variant of the ALBERT tokenizer.json spec (still one the C tokenizer implements)."""
    spec = json.loads(json.dumps(spec))
    if spec["pre_tokenizer"].get("type") != "Sequence":     # a converter-written SentencePiece file
        spec = sentencepiece_spec(spec, {"tokenizer_class": "AlbertTokenizer"}, ROOT)
    steps = list(spec["normalizer"]["normalizers"])
    steps += [{"type": "NFD"}] + [{"type": "Replace", "pattern": {"String": a}, "content": b}
                                  for a, b in rng.sample(EXTRA_REPLACE, rng.randrange(3))]
    rng.shuffle(steps)
    spec["normalizer"] = {"type": "Sequence", "normalizers": steps[:rng.randrange(len(steps) + 1)]}
    meta = spec["pre_tokenizer"]["pretokenizers"][-1]
    meta["prepend_scheme"] = rng.choice(["always", "first", "never"])
    meta["split"] = rng.random() < 0.8
    if rng.random() < 0.3:
        spec["pre_tokenizer"] = meta
    vocab = spec["model"]["vocab"]
    if rng.random() < 0.5:                     # unknown characters
        keep = rng.random()
        vocab[:] = vocab[:5] + [v for v in vocab[5:] if rng.random() < keep]
    if rng.random() < 0.3:
        for v in vocab[5:]:
            v[1] += rng.uniform(-2, 2)
    if rng.random() < 0.3:                     # whole-number scores: segmentations that tie
        for v in vocab[5:]:
            v[1] = float(round(v[1]))
    if rng.random() < 0.2:                     # a piece listed twice: the last id wins
        vocab.append(list(rng.choice(vocab[5:])))
    for a in spec["added_tokens"]:
        a["lstrip"], a["rstrip"] = rng.random() < 0.3, rng.random() < 0.3
    return spec


def ug_input(rng: random.Random, corpus: list[bytes]) -> bytes:
    if rng.random() < 0.4:
        return b"".join(rng.choice(UG_PIECES) for _ in range(rng.randrange(40)))
    return random_input(rng, corpus)


fuzz_tokenizer_bpe.KINDS["unigram"] = dict(driver=te.build_unigram_driver, bases=("albert", "albert_spm", "xlmr_spm", "t5_spm"),
                                           variant=variant,
                                           pack=te.pack_unigram, input=ug_input)


def main(argv=None) -> int:
    return fuzz_tokenizer_bpe.main(argv, kind="unigram")


if __name__ == "__main__":
    sys.exit(main())
