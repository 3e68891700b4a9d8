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
  albert_spm      SentencePiece Unigram with the nmt_nfkc rules (the `sentencepiece` trainer, vocabulary
                  1,000, one thread), converted as hub folders were: transformers' AlbertConverter
                  (convert_slow_tokenizer) -> tokenizer.json with the Precompiled charsmap
  xlmr_spm        the same through XLMRobertaConverter (Precompiled, Strip, Replace " {2,}")
  t5_spm          nmt_nfkc_cf (case folding) through T5Converter (100 extra ids)

The *_spm kinds need `pip install sentencepiece` (dev only); their tokenizer.json holds the real
compiled charsmap of the rule (about 330 kB of base64 each). Each also writes <kind>_model/: the
same SentencePiece model as a folder without tokenizer.json, as many hub folders ship it
(spiece.model, or sentencepiece.bpe.model for XLM-R, + tokenizer_config.json: ALBERT's with
transformers 4's added_tokens_decoder, [MASK] lstrip; XLM-R's with an AddedToken-object mask_token,
lstrip; T5's with the class alone), AutoTokenizer's ids on it (expected.json) and proto.json, what
the protobuf library reads from the model (the fields refexit/tokenizers/spm_model.py reads; the
pieces as a SHA-256 of their JSON).

expected.json holds, for the texts listed in it, AutoTokenizer's input_ids and token_type_ids
(truncation=True, return_token_type_ids=True; pairs through a batch call so an empty second text
stays a pair): singles at max_length 512 and 16, pairs of consecutive texts at 512, 17 and 32. The
texts: fixed ones (spacing, contractions, accents, compatibility forms, special tokens inside text),
the first 12 test texts of each data set (cut at 1,500 characters) and 40 generated Unicode strings
(check_tokenizer_hf.generated_texts, seed 19); the *_spm kinds add SPM_TEXTS (emoji ZWJ sequences,
full-width forms, ligatures with marks, Hangul jamo, control characters).
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

KINDS = ("roberta", "roberta_prefix", "albert", "distilbert", "electra", "albert_spm", "xlmr_spm", "t5_spm")
# SentencePiece kinds: (normalization rule, converter / transformers class, trainer settings)
SPM_KINDS = {
    "albert_spm": ("nmt_nfkc", "AlbertTokenizer",
                   dict(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"])),
    "xlmr_spm": ("nmt_nfkc", "XLMRobertaTokenizer", dict(unk_id=0, bos_id=1, eos_id=2)),
    "t5_spm": ("nmt_nfkc_cf", "T5Tokenizer", dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)),
}
DATASETS = ("rotten_tomatoes", "sms_spam", "bbc_news", "tweets")
OUT = ROOT / "tests" / "golden" / "tokenizers"
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


# more texts for the SentencePiece kinds: what the Precompiled charsmap and grapheme clusters change
SPM_TEXTS = [
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family \U0001f3f3\ufe0f\u200d\U0001f308 flag "
    "\U0001f44d\U0001f3fd", "\uff46\uff55\uff4c\uff4c\uff0d\uff57\uff49\uff44\uff54\uff48\u3000\uff21\uff22\uff23\u3000\uff11\uff12\uff13",
    "\ufb01\u0301nal \ufb02\u0308 \ufb00", "\uac01\u0301 \u1100\u1161\u11a8\u0301 \u321c \u326e",
    "\u2122\x1eg \u2121 \u338f \u337b \u216b", "a\u3000b\t\tc\u00a0d\u2028e", "x\u200dy \u200b z",
    "\u0915\u094d\u200d\u0937 \u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947", "e\u0301\u0301\u0301 o\u0308\u0304",
    "\u0301leading mark", "\uff23\uff21\uff33\uff25 \u01c4 \u01c5 \u00df \u1e9e", "  two  spaces  ", "\r\n\r\n",
    "\u00bd \u00bc \u2075 \u2082 \u2460", "\u00aa\u0301 \u00ba\u0308 \u017f\u0301 \u01fc",
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


class _SlowShim:
    """What transformers' SpmConverter reads of a slow tokenizer (transformers 5 has none)."""

    def __init__(self, vocab_file: str, converter_cls):
        self.vocab_file, self.keep_accents, self.do_lower_case = vocab_file, False, True
        self.add_prefix_space, self._extra_ids = True, 100
        self._cls = converter_cls

    def convert_tokens_to_ids(self, token: str) -> int:
        conv = self._cls.__new__(self._cls)
        conv.original_tokenizer = self
        from transformers.convert_slow_tokenizer import import_protobuf
        proto = import_protobuf().ModelProto()
        proto.ParseFromString(Path(self.vocab_file).read_bytes())
        return [p for p, _ in conv.vocab(proto)].index(token)


def build_spm(kind: str, texts: list[str], folder: Path) -> Path:
    """Train a SentencePiece Unigram model with kind's rule and convert it to tokenizer.json."""
    import tempfile
    import sentencepiece as spm
    import importlib
    cst = importlib.import_module("transformers.convert_slow_tokenizer")
    rule, cls, extra = SPM_KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "train.txt"
        corpus.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "m"), vocab_size=VOCAB_SIZE,
                                       model_type="unigram", normalization_rule_name=rule, character_coverage=1.0,
                                       num_threads=1, minloglevel=2, **extra)
        converter = {"AlbertTokenizer": cst.AlbertConverter, "XLMRobertaTokenizer": cst.XLMRobertaConverter,
                     "T5Tokenizer": cst.T5Converter}[cls]
        fast = converter(_SlowShim(str(Path(tmp) / "m.model"), converter)).converted()
        model_bytes = (Path(tmp) / "m.model").read_bytes()
    # the special tokens as transformers 4 saved them into hub files (masks with lstrip)
    from tokenizers import AddedToken
    specials = {"AlbertTokenizer": ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
                "XLMRobertaTokenizer": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                "T5Tokenizer": ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(99, -1, -1)]}[cls]
    fast.add_special_tokens([AddedToken(t, lstrip=t in ("[MASK]", "<mask>"), rstrip=False, normalized=False,
                                        special=True) for t in specials])
    fast.save(str(folder / "tokenizer.json"), pretty=False)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}) + "\n", encoding="utf-8")
    write_spm_model_folder(kind, model_bytes, json.loads(fast.to_str())["added_tokens"])
    return folder


SPM_FILES = {"AlbertTokenizer": "spiece.model", "XLMRobertaTokenizer": "sentencepiece.bpe.model",
             "T5Tokenizer": "spiece.model"}


def write_spm_model_folder(kind: str, model_bytes: bytes, added: list[dict]) -> Path:
    """<kind>_model/: the SentencePiece model file, tokenizer_config.json and proto.json."""
    import hashlib
    from transformers.convert_slow_tokenizer import import_protobuf
    cls = SPM_KINDS[kind][1]
    out = OUT / f"{kind}_model"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    (out / SPM_FILES[cls]).write_bytes(model_bytes)
    cfg: dict = {"tokenizer_class": cls}
    if cls == "AlbertTokenizer":               # as transformers 4.34+ saved hub ALBERT folders
        cfg.update(do_lower_case=True, keep_accents=False, remove_space=True, added_tokens_decoder={
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in added})
    elif cls == "XLMRobertaTokenizer":         # as older hub files: an AddedToken object
        cfg["mask_token"] = {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "normalized": False,
                             "rstrip": False, "single_word": False}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg) + "\n", encoding="utf-8")
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_bytes)
    t, n = proto.trainer_spec, proto.normalizer_spec
    pieces = [[p.piece, p.score, p.type] for p in proto.pieces]
    summary = {
        "n_pieces": len(pieces),
        "pieces_sha256": hashlib.sha256(json.dumps(pieces, ensure_ascii=False).encode("utf-8")).hexdigest(),
        "first_pieces": pieces[:8],
        "trainer_spec": {k: getattr(t, k) for k in ("model_type", "byte_fallback", "unk_id", "bos_id", "eos_id",
                                                    "pad_id", "unk_piece", "bos_piece", "eos_piece", "pad_piece")},
        "normalizer_spec": {"name": n.name, "add_dummy_prefix": n.add_dummy_prefix,
                            "remove_extra_whitespaces": n.remove_extra_whitespaces,
                            "escape_whitespaces": n.escape_whitespaces,
                            "precompiled_charsmap_sha256": hashlib.sha256(n.precompiled_charsmap).hexdigest()}}
    (out / "proto.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


def build(kind: str, texts: list[str], folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    import transformers
    if kind in SPM_KINDS:
        return build_spm(kind, texts, folder)
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
    global OUT
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", choices=KINDS, action="append")
    args = ap.parse_args(argv)
    OUT = args.out
    import tokenizers
    import transformers
    train = training_texts()
    texts = golden_texts()
    for kind in args.only or KINDS:
        folder = build(kind, train, args.out / kind)
        for f in [folder] + ([args.out / f"{kind}_model"] if kind in SPM_KINDS else []):
            exp = expected(f, texts + SPM_TEXTS if kind in SPM_KINDS else texts)
            exp["versions"] = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}
            text = json.dumps(exp, ensure_ascii=False, separators=(",", ":"))
            (f / "expected.json").write_text(text + "\n", encoding="utf-8")
            size = sum(p.stat().st_size for p in f.iterdir())
            print(f"{f}: {exp['tokenizer_class']}, {len(exp['texts'])} texts, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
