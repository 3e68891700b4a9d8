#!/usr/bin/env python
"""Tiny tokenizers of each kind a model family ships, and the ids transformers.AutoTokenizer gives,
written to tests/golden/tokenizers/<kind>/ (tokenizer.json, tokenizer_config.json, expected.json).

NOT a library dependency: this script needs `tokenizers` and `transformers` (no PyTorch). Offline;
the trainers see a fixed text list, but the WordPiece and Unigram trainers order some equal-count
entries differently from run to run, so a rerun may renumber those vocabularies (the expected ids
are always recomputed with the tokenizers written next to them):

    python tools/make_tokenizer_golden.py                # all kinds
    python tools/make_tokenizer_golden.py --only roberta

Kinds (vocabularies of 1,000 trained with the `tokenizers` trainers on the first 800 training texts
of each of the four cached data sets, then wrapped by the transformers class of that family with
its defaults, saved with save_pretrained):

  roberta         byte-level BPE (RobertaTokenizer: ByteLevel pre-tokenizer, add_prefix_space false,
                  RobertaProcessing)
  roberta_prefix  the same with add_prefix_space true and <mask> lstrip (as roberta-base's files)
  albert          Unigram (AlbertTokenizer: `` and '' replaced, NFKD, StripAccents, Lowercase,
                  WhitespaceSplit + Metaspace, [CLS] A [SEP] B [SEP])
  distilbert      WordPiece, uncased (DistilBertTokenizer)
  electra         WordPiece, cased, accents kept (ElectraTokenizer, do_lower_case false)

expected.json holds, for the texts listed in it, AutoTokenizer's input_ids and token_type_ids
(truncation=True, return_token_type_ids=True; pairs through a batch call so an empty second text
stays a pair): singles at max_length 512 and 16, pairs of consecutive texts at 512, 17 and 32. The
texts: fixed ones (spacing, contractions, accents, compatibility forms, special tokens inside text),
the first 12 test texts of each data set (cut at 1,500 characters) and 40 generated Unicode strings
(check_tokenizer_hf.generated_texts, seed 19).
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

KINDS = ("roberta", "roberta_prefix", "albert", "distilbert", "electra")
DATASETS = ("rotten_tomatoes", "sms_spam", "bbc_news", "tweets")
VOCAB_SIZE = 1000
SINGLE_MLS = (512, 16)
PAIR_MLS = (512, 17, 32)
FIXED_TEXTS = [
    "Hello world!", "  leading spaces and   runs   of them ", "I'm sure it's fine, we've said they'll go; don't",
    "Ça va? naïve café ÉCOLE ﬁnal ½", "数字 123 ４５ x² Ⅻ", "<mask> hi<s>there</s> [CLS]x[SEP] <unk>", "", " ",
    "tabs\tand\nnewlines\r\n\u00a0nbsp\u2003em", "emoji 😀 and 🇫🇷 and \u200d\u200b", "``quoted'' text '' ``",
    "Ω Å K \u212b \u2126", "\u1100\u1161\u11a8 한국어 ㄱ", "e\u0301\u0327 a\u0308\u0304", "ΑΣ ς σ İ ß ǅ",
    "x" * 120, "’curly’ “quotes” — dash… ellipsis", "\x00nul \x7f del \ufffd", "\u2581meta space\u2581",
    "a <mask> b", "a  <mask>  b", "x<s> y </s>z", "[MASK] a [SEP]b", " <pad>",
]


def training_texts() -> list[str]:
    from refexit import data
    out = []
    for name in DATASETS:
        out += list(data.load_dataset(name).train.texts)[:800]
    return out


def golden_texts() -> list[str]:
    from check_tokenizer_hf import generated_texts
    from refexit import data
    out = list(FIXED_TEXTS)
    for name in DATASETS:
        out += [t[:1500] for t in list(data.load_dataset(name).test.texts)[:12]]  # still truncated at 512
    return out + generated_texts(40, seed=19)


def build(kind: str, texts: list[str], folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    import transformers
    folder.mkdir(parents=True, exist_ok=True)
    if kind.startswith("roberta"):
        t = Tokenizer(models.BPE())
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
        m = json.loads(t.to_str())["model"]
        merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]
        if kind == "roberta":
            tok = transformers.RobertaTokenizer(vocab=m["vocab"], merges=merges)
        else:
            from transformers import AddedToken
            tok = transformers.RobertaTokenizer(vocab=m["vocab"], merges=merges, add_prefix_space=True,
                                                mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))
    elif kind == "albert":
        t = Tokenizer(models.Unigram())
        t.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
        t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        t.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], unk_token="<unk>"))
        m = json.loads(t.to_str())["model"]
        tok = transformers.AlbertTokenizer(vocab=[tuple(x) for x in m["vocab"]])
    else:
        cased = kind == "electra"
        t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        t.normalizer = normalizers.BertNormalizer(lowercase=not cased, strip_accents=False if cased else None)
        t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        t.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
        vocab = json.loads(t.to_str())["model"]["vocab"]
        if cased:
            tok = transformers.ElectraTokenizer(vocab=vocab, do_lower_case=False, strip_accents=False)
        else:
            tok = transformers.DistilBertTokenizer(vocab=vocab)
    tok.save_pretrained(str(folder))
    return folder


def expected(folder: Path, texts: list[str]) -> dict:
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(folder))
    assert hf.is_fast, type(hf)
    out = {"texts": texts, "tokenizer_class": type(hf).__name__, "singles": {}, "pairs": {}}
    for ml in SINGLE_MLS:
        enc = hf(texts, max_length=ml, truncation=True, return_token_type_ids=True)
        out["singles"][str(ml)] = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]}
    for ml in PAIR_MLS:
        enc = hf(texts[:-1], texts[1:], max_length=ml, truncation=True, return_token_type_ids=True)
        out["pairs"][str(ml)] = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / "tokenizers")
    ap.add_argument("--only", choices=KINDS, action="append")
    args = ap.parse_args(argv)
    import tokenizers
    import transformers
    train = training_texts()
    texts = golden_texts()
    for kind in args.only or KINDS:
        folder = build(kind, train, args.out / kind)
        exp = expected(folder, texts)
        exp["versions"] = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}
        text = json.dumps(exp, ensure_ascii=False, separators=(",", ":"))
        (folder / "expected.json").write_text(text + "\n", encoding="utf-8")
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{folder}: {exp['tokenizer_class']}, {len(texts)} texts, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
