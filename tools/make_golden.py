#!/usr/bin/env python
"""Reference values from Hugging Face transformers, written to tests/golden/.

NOT a library dependency: this script alone needs PyTorch and transformers:

    pip install torch==2.13.0 transformers safetensors numpy

Runs offline (HF_HUB_OFFLINE=1, local paths only), deterministically (seeded, one thread):

    python tools/make_golden.py --model-dir /path/to/all-MiniLM-L6-v2 --out tests/golden

Writes (--only tokens / codepoints / models / families / papers / grads to write a part)
  minilm_tokens.json           tokenizer outputs of AutoTokenizer (the Rust `tokenizers` backend,
                               which refexit.tokenizers.wordpiece's default mode mirrors) for >= 80 texts (every
                               Unicode category, special tokens broken by controls) at max_length
                               512/16/17 and pairs at 512/8/9/16/17/32/33 (odd and even budgets);
                               and transformers' Python tokenizer (BertTokenizerLegacy, refexit's
                               mode="legacy") on the first texts and pairs, every difference between
                               the two recorded under "fast_mismatches" with its reason
  rust_codepoints.jsonl.gz     the Rust normalizer + pre-tokenizer on every non-surrogate code point,
                               alone and between two letters, in three settings (and MiniLM's ids)
  minilm_hidden.npz            all hidden states of all-MiniLM-L6-v2 on a padded batch, float32 and float64
  tiny_seqcls/ + tiny_seqcls_golden.npz          a random 2-layer BertForSequenceClassification (3 labels)
  tiny_regression/ + tiny_regression_golden.npz  the same with 1 label, "regression", gelu_new
  tiny_seqcls_grads.npz, tiny_regression_grads.npz  (--only grads) the loss and every parameter's
                               gradient from autograd on a batch of the tiny models, eval mode
  <family>/ + <family>_golden.npz  (--only families) tiny random RoBERTa, DistilBERT, ALBERT, ELECTRA
                               (save_pretrained) with their hidden states and logits on id batches
  pabee_albert/, deebert_roberta/, elbert_albert/ + <name>_golden.npz  (--only papers) the papers' own
                               early-exit checkpoints of those families: a random transformers backbone
                               plus exit tensors named as the papers' code names them, and every exit
                               head's logits and the exit decisions of the papers' forward passes

In transformers 5.x the class named `BertTokenizer` (and AutoTokenizer's choice) is the Rust-backed
tokenizer; the Python one is `BertTokenizerLegacy` (BertTokenizer before 5.0).
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import random
import sys
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel, BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

SEED = 1234
TRUNC = 16          # the truncation case (max_length) for singles and pairs
SIZE_LIMIT = 5_000_000     # 2.5 MB + the model families' folders + tools/make_tokenizer_golden.py's tokenizers/

FAST_FINAL_SIGMA = "fast lowercases char by char: no final sigma (ς)"
FAST_SPECIAL_CTRL = "fast matches special tokens before removing control chars"
FAST_EMPTY_PAIR = "fast treats an empty second text as no pair: one [SEP] instead of two"
FAST_PAIR_SPLIT = "fast longest_first gives the odd token to the second sequence when the first is not longer"

LONG_PARAGRAPH = (
    "The committee met on Tuesday to review the proposal, which had been circulated to members two weeks "
    "earlier. After a lengthy discussion about costs, timelines and the environmental impact assessment, "
    "the chair asked for a show of hands; the motion passed by a narrow margin, with three abstentions. "
    "Critics argued that the consultation period had been too short and that residents of the affected "
    "neighbourhoods were not given enough information to respond in a meaningful way.")

# (text, reason the fast tokenizer is expected to differ or None)
TEXTS: list[tuple[str, str | None]] = [
    # empty and whitespace only
    ("", None), (" ", None), ("   \t\n  \r ", None), ("\u3000\u2003\u00a0", None),
    ("\x00\x07\x1b", None), ("\u200b\ufeff\u200d", None),
    # everyday English, several domains
    ("Hello, world!", None),
    ("The quick brown fox jumps over the lazy dog.", None),
    ("OMG!!! can't believe it's already Friday 😂😂 #TGIF @bestie", None),
    ("RT @user: Check this out http://t.co/abc123 #news #breaking", None),
    ("Pursuant to § 12(b)(6) of the Act, the plaintiff's claim is hereby dismissed.", None),
    ("Pt presents w/ 3-day hx of SOB, BP 140/90 mmHg, HR 102 bpm; r/o PE.", None),
    ("Preheat the oven to 180°C (350°F). Whisk 2 eggs with ½ cup sugar.", None),
    ("This product is AMAZING!!! 5/5 would buy again :) :-( ;-) <3", None),
    ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate.", None),
    ("Stocks fell 3.2% on Monday as investors weighed the Fed's next move.", None),
    (LONG_PARAGRAPH, None),
    # code and markup
    ("def f(x): return x**2 if x > 0 else -x  # square it", None),
    ("for (int i=0;i<n;++i){a[i]+=b[i];}", None),
    ('{"key": [1, 2, {"nested": null}], "ok": true}', None),
    ("<div class=\"main\">Hello&nbsp;<b>world</b></div>", None),
    ("snake_case_name camelCaseIdentifier SCREAMING_CASE kebab-case-name", None),
    # mixed case, names, abbreviations
    ("iPhone McDonald's NASA eBay LaTeX YouTube U.S.A. Ph.D. e.g. i.e.", None),
    ("don't won't y'all rock'n'roll o'clock", None),
    # numbers, urls, emails
    ("3.14159 1,000,000 1e-10 0x1F -42 +7 50% 12:30pm 2024-01-15 #1", None),
    ("https://www.example.com/path/to/page?query=1&x=y#frag", None),
    ("email me: john.doe+tag@example.co.uk or call +1 (555) 010-9999", None),
    ("½ ¼ ² ³ ① Ⅻ ∞ № ‰", None),
    # punctuation runs and unicode punctuation
    ("!!!???...,,,;;;:::", None),
    ("--- *** ### @@@ $$$ %%% ^^^ &&& ~~~ ``` |||", None),
    ("“smart quotes” ‘single’ «guillemets» „German“ — em – en … ellipsis", None),
    ("«»‹›【】「」『』〔〕（）［］｛｝", None),
    ("(parens) [brackets] {braces} <angles> a.b.c d,e,f g-h-i", None),
    ("¿Dónde está la biblioteca? ¡Olé!", None),
    # special tokens in the text
    ("[CLS] already [SEP] inside", None),
    ("[cls] lowercase [sep] [mask]", None),
    ("fill the [MASK] and the other [MASK].", None),
    ("[[SEP]] [SEP[CLS]] x[SEP]y [UNK] [PAD]", None),
    ("[ SEP ] [SEP ] [Sep]", None),
    ("[SE\x00P] broken by a control char", FAST_SPECIAL_CTRL),
    # accents and diacritics in many scripts
    ("Ça déjà vu, naïve coöperate résumé façade", None),
    ("Größenwahn ÄÖÜ äöü ß Straße", None),
    ("Zażółć gęślą jaźń", None),
    ("Příliš žluťoučký kůň úpěl ďábelské ódy", None),
    ("Tiếng Việt có dấu: Phở bò, cà phê sữa đá", None),
    ("Þórsmörk Ægir Øresund Åland", None),
    ("Româna: școală, țară; Türkçe: İstanbul, ılık, ĞÜŞÖÇ", None),
    ("e\u0301 A\u030a n\u0303 combining marks decomposed", None),
    ("ﬁ ﬂ ﬀ ligatures and ℌ𝔢𝔩𝔩𝔬 math letters", None),
    ("ǅ ǈ ǋ titlecase digraphs", None),
    # Greek and Cyrillic
    ("Καλημέρα κόσμε, τι κάνεις;", None),
    ("ΟΔΟΣ ΣΟΦΟΣ", FAST_FINAL_SIGMA),
    ("ΛΟΓΟΣ. ΣΑΣ! Σ", FAST_FINAL_SIGMA),
    ("Съешь же ещё этих мягких французских булок, да выпей чаю.", None),
    ("Ґанок, їжак, Єва — українська мова", None),
    # right-to-left and Indic scripts, Thai
    ("مرحبا بالعالم", None),
    ("مَرْحَبًا بِكُمْ، كَيْفَ حَالُكَ؟", None),
    ("שָׁלוֹם עוֹלָם", None),
    ("नमस्ते दुनिया, आप कैसे हैं?", None),
    ("বাংলা ভাষা", None),
    ("தமிழ் மொழி", None),
    ("สวัสดีครับ ภาษาไทย", None),
    # CJK, kana, hangul
    ("我爱北京天安门。", None),
    ("中文字符和English混合123", None),
    ("𠀀𪚥𫝀 extension ideographs", None),
    ("豈 更 車 compatibility ideographs", None),
    ("こんにちは世界、カタカナ。ｶﾀｶﾅ", None),
    ("東京都は日本の首都です", None),
    ("안녕하세요 세계", None),
    ("한국어 텍스트와 漢字", None),
    ("ＡＢＣ１２３！ fullwidth", None),
    # emoji
    ("😀😂👍🏽👋🏿", None),
    ("family 👨\u200d👩\u200d👧\u200d👦 and 👩🏽\u200d💻 coder", None),
    ("flags 🇫🇷🇯🇵🇺🇸 keycap 1\ufe0f\u20e3 heart ❤\ufe0f", None),
    ("I ❤️ NY 🗽 ☕ ✔ ✨", None),
    # symbols
    ("∑∫√π≈≠≤≥ ∀x∈ℝ", None),
    ("€12 £5 ¥100 ₹50 $3 ₿", None),
    ("©2024 ACME® Widget™ 25° ±3", None),
    # control and invisible characters
    ("\x00hello\x07 world\tfoo\rbar\nbaz", None),
    ("zero\u200bwidth\u200bspace", None),
    ("\ufeffBOM at the start", None),
    ("replacement \ufffd char\ufffd", None),
    ("\x7f DEL \x1b[31m ANSI red\x1b[0m", None),
    ("next\x85line \u2028 line sep \u2029 paragraph", None),
    ("soft\u00adhyphen in\u00adcred\u00adible", None),
    ("bidi \u202eoverride\u202c \u200eLRM\u200f RLM", None),
    ("private \ue000 use \U000f0000 and tag \U000e0041", None),
    ("no\u2009thin\u202fnarrow\u205fmath spaces", None),
    # very long words
    ("a" * 100, None), ("a" * 101, None), ("x" * 150, None),
    ("supercalifragilisticexpialidocious" * 4, None),
    ("é" * 100 + " " + "é" * 101, None),
    ("pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism", None),
    ("https://example.com/" + "-".join(["segment"] * 20), None),
    # beyond 512 tokens
    (" ".join([LONG_PARAGRAPH] * 8), None),
]

PAIRS: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("A man is playing a guitar.", "A person plays an instrument."),
    ("", "only the second text"),
    ("only the first text", ""),
    ("", ""),
    ("one two three four five six seven eight nine ten",
     "one two three four five six seven eight nine ten"),
    ("one two three four five six seven eight nine", "one two three four five six seven eight nine ten"),
    ("one two three four five six seven eight nine ten", "one two three four five six seven eight nine"),
    ("short", LONG_PARAGRAPH),
    (LONG_PARAGRAPH, "short"),
    (LONG_PARAGRAPH, LONG_PARAGRAPH[::-1]),
    ("Ça déjà vu?", "Größenwahn ÄÖÜ"),
    ("我爱北京天安门。", "東京都は日本の首都です"),
    ("😀 emoji 👍🏽", "family 👨\u200d👩\u200d👧\u200d👦"),
    ("[CLS] inside [SEP]", "[MASK] here"),
    ("\x00\u200b", "  \t "),
    ("ΟΔΟΣ", "ΛΟΓΟΣ"),
    (" ".join([LONG_PARAGRAPH] * 5), " ".join([LONG_PARAGRAPH] * 4)),
    ("Is it raining?", "Take an umbrella, just in case."),
]
PAIR_REASONS = {3: FAST_EMPTY_PAIR, 4: FAST_EMPTY_PAIR, 16: FAST_FINAL_SIGMA}  # index in PAIRS -> expected fast difference (besides truncation)

# the padded MiniLM batch: (text, pair)
HIDDEN_BATCH = [("Hello world", None), ("The quick brown fox jumps.", None),
                ("Is it raining?", "Yes, it is")]
TINY_BATCH = [("the movie was great", None), ("terrible acting and a boring plot.", None),
              ("it was ok i guess", "not bad, not good"), ("What a waste of time!!", None)]


def seed_everything():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------- 1. tokenizer golden

SINGLE_MAX_LENGTHS = (512, TRUNC, 17)
PAIR_MAX_LENGTHS = (512, 8, 9, TRUNC, 17, 32, 33)     # budgets (max_length - 3) odd and even
CONTROLS = ["\x00", "\x07", "\u200b", "\u00ad", "\ufeff", "\u200d", "\U000e0041", "\u0301", "\ufffd", "\u0378"]


def category_texts(n_per_category: int = 4) -> list[str]:
    """Texts mixing every general category of this Python's unicodedata (only to pick the
    characters: the golden records what the Rust tokenizer makes of them), seeded."""
    rng = random.Random(SEED)
    by_cat: dict[str, list[str]] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        by_cat.setdefault(unicodedata.category(chr(cp)), []).append(chr(cp))
    out = []
    for cat in sorted(by_cat):
        pool = by_cat[cat]
        for _ in range(n_per_category):
            parts = []
            for _ in range(rng.randint(3, 10)):
                r = rng.random()
                parts.append(rng.choice(pool) if r < 0.5 else rng.choice("aBcÉ Σς[]") if r < 0.8
                             else rng.choice(by_cat[rng.choice(sorted(by_cat))]))
            out.append("".join(parts))
    return out


def special_texts() -> list[str]:
    """Special tokens broken by a control / format / combining character, or lower-cased."""
    out = []
    for k, tok in enumerate(("[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]")):
        for j, ch in enumerate(CONTROLS):
            pos = 1 + (k + j) % (len(tok) - 1)
            out.append(f"x {tok[:pos]}{ch}{tok[pos:]} y{tok}z")
    out += ["[cls] [Sep] [ MASK ]", "[[CLS]]", "[CLS][SEP][MASK]", "\u0301[SEP]\u0300", "ΑΣ[SEP]ΣΑ"]
    return out


def encode(tok, text, pair, max_length):
    enc = tok(text, pair, max_length=max_length, truncation=True, return_token_type_ids=True)
    return list(enc["input_ids"]), list(enc["token_type_ids"])


def tokens_golden(model_dir: Path, out: Path) -> None:
    """minilm_tokens.json: what AutoTokenizer (the Rust `tokenizers` backend, the default that
    refexit.tokenizers.wordpiece mirrors) gives, singles at SINGLE_MAX_LENGTHS and pairs at
    PAIR_MAX_LENGTHS, plus the legacy Python tokenizer's outputs (refexit's mode="legacy")."""
    slow = BertTokenizerLegacy.from_pretrained(str(model_dir))
    fast = AutoTokenizer.from_pretrained(str(model_dir))
    assert type(slow).__name__ == "BertTokenizerLegacy" and fast.is_fast, (type(slow), type(fast))
    singles, pairs, legacy_singles, legacy_pairs, mismatches = [], [], [], [], []

    def compare(kind, index, field, a, b, reason):
        if a != b:
            mismatches.append({"kind": kind, "index": index, "field": field, "slow": a, "fast": b,
                               "expected_reason": reason})

    def fast_case(text, pair=None):
        e = {"text": text}
        if pair is not None:
            e["pair"] = pair
        e["tokens"] = fast.tokenize(text)
        for ml in (PAIR_MAX_LENGTHS if pair is not None else SINGLE_MAX_LENGTHS):
            ids, types = encode(fast, text, pair, ml)
            e[f"input_ids_{ml}"], e[f"token_type_ids_{ml}"] = ids, types
        if pair is not None:          # a batch call: an empty pair stays a pair there
            enc = fast([text], [pair], max_length=TRUNC, truncation=True, return_token_type_ids=True)
            e["batch_input_ids_16"], e["batch_token_type_ids_16"] = enc["input_ids"][0], enc["token_type_ids"][0]
        # kept small: a max_length whose output equals max_length 512's is left out (the tests
        # fall back to it), so are all-zero type ids of single texts
        mls = PAIR_MAX_LENGTHS if pair is not None else SINGLE_MAX_LENGTHS
        for ml in mls[1:]:
            if (e[f"input_ids_{ml}"], e[f"token_type_ids_{ml}"]) == (e["input_ids_512"], e["token_type_ids_512"]):
                del e[f"input_ids_{ml}"], e[f"token_type_ids_{ml}"]
        if pair is not None and e["batch_input_ids_16"] == e.get("input_ids_16", e["input_ids_512"]):
            del e["batch_input_ids_16"], e["batch_token_type_ids_16"]
        if pair is None:
            assert not any(any(v) for k, v in e.items() if k.startswith("token_type_ids"))
            for k in [k for k in e if k.startswith("token_type_ids")]:
                del e[k]
        return e

    for i, (text, reason) in enumerate(TEXTS):
        e = {"text": text, "tokens": slow.tokenize(text)}
        e["input_ids"], e["token_type_ids"] = encode(slow, text, None, 512)
        e["trunc_input_ids"], e["trunc_token_type_ids"] = encode(slow, text, None, TRUNC)
        legacy_singles.append(e)
        singles.append(fast_case(text))
        compare("single", i, "tokens", e["tokens"], fast.tokenize(text), reason)
        for ml, key in ((512, "input_ids"), (TRUNC, "trunc_input_ids")):
            ids, types = encode(fast, text, None, ml)
            compare("single", i, key, e[key], ids, reason)
            compare("single", i, key.replace("input_ids", "token_type_ids"),
                    e[key.replace("input_ids", "token_type_ids")], types, reason)
    extra = category_texts() + special_texts()
    singles += [fast_case(text) for text in extra]

    for i, (text, pair) in enumerate(PAIRS):
        e = {"text": text, "pair": pair, "tokens": slow.tokenize(text), "pair_tokens": slow.tokenize(pair)}
        e["input_ids"], e["token_type_ids"] = encode(slow, text, pair, 512)
        e["trunc_input_ids"], e["trunc_token_type_ids"] = encode(slow, text, pair, TRUNC)
        legacy_pairs.append(e)
        pairs.append(fast_case(text, pair))
        reason = PAIR_REASONS.get(i)
        tokens_agree = (e["tokens"], e["pair_tokens"]) == (fast.tokenize(text), fast.tokenize(pair))
        compare("pair", i, "tokens", [e["tokens"], e["pair_tokens"]],
                [fast.tokenize(text), fast.tokenize(pair)], reason)
        for ml, key in ((512, "input_ids"), (TRUNC, "trunc_input_ids")):
            ids, types = encode(fast, text, pair, ml)
            # same word pieces but a different cut: the two longest_first implementations differ
            truncated = len(e["tokens"]) + len(e["pair_tokens"]) + 3 > ml
            why = reason or (FAST_PAIR_SPLIT if tokens_agree and truncated else None)
            compare("pair", i, key, e[key], ids, why)
            compare("pair", i, key.replace("input_ids", "token_type_ids"),
                    e[key.replace("input_ids", "token_type_ids")], types, why)
    rng = random.Random(SEED)
    words = "a bb ccc dddd é ΣΑΣ 我 [SEP] x\u200by !?".split()
    for n1 in range(0, 9):                       # every short/long, odd/even combination
        for n2 in range(0, 9):
            pairs.append(fast_case(" ".join(rng.choice(words) for _ in range(n1)),
                                   " ".join(rng.choice(words) for _ in range(n2))))
    for k in range(0, len(extra) - 1, 3):
        pairs.append(fast_case(extra[k], extra[k + 1]))

    unexpected = [m for m in mismatches if m["expected_reason"] is None]
    for m in mismatches:
        print(f"fast != slow  {m['kind']} {m['index']} {m['field']}: {m['expected_reason'] or 'UNEXPECTED'}\n"
              f"    slow {m['slow']}\n    fast {m['fast']}", file=sys.stderr)
    declared = {("single", i) for i, (_, r) in enumerate(TEXTS) if r} | {("pair", i) for i in PAIR_REASONS}
    silent = declared - {(m["kind"], m["index"]) for m in mismatches}
    assert not silent, f"expected fast/slow differences that did not happen: {sorted(silent)}"
    assert not unexpected, f"{len(unexpected)} unexpected fast/slow tokenizer disagreements (see above)"
    assert len(singles) >= 80 and len(pairs) >= 15

    vocab = (model_dir / "vocab.txt").read_bytes()
    doc = {
        "about": "BERT WordPiece reference outputs for all-MiniLM-L6-v2, written by tools/make_golden.py: "
                 "singles/pairs from AutoTokenizer (Rust tokenizers backend; refexit's default mode), "
                 "legacy_singles/legacy_pairs from transformers' Python BertTokenizerLegacy (mode='legacy')",
        "transformers_version": transformers.__version__, "tokenizers_version": tokenizers.__version__,
        "python_version": sys.version.split()[0], "unicodedata_version": unicodedata.unidata_version,
        "slow_class": type(slow).__name__, "fast_class": type(fast).__name__,
        "vocab_sha256": hashlib.sha256(vocab).hexdigest(), "max_length": 512, "trunc_max_length": TRUNC,
        "single_max_lengths": list(SINGLE_MAX_LENGTHS), "pair_max_lengths": list(PAIR_MAX_LENGTHS),
        "singles": singles, "pairs": pairs, "legacy_singles": legacy_singles, "legacy_pairs": legacy_pairs,
        "fast_mismatches": mismatches,
    }
    write_json(out / "minilm_tokens.json", doc)
    print(f"minilm_tokens.json: {len(singles)} texts, {len(pairs)} pairs, "
          f"{len(mismatches)} expected legacy/fast differences")


# the settings of the code point table: (name, lowercase, strip_accents)
CODEPOINT_SETTINGS = (("uncased", True, True), ("cased", False, False), ("lower_only", True, False))


def codepoints_golden(model_dir: Path, out: Path) -> None:
    """rust_codepoints.jsonl.gz: the Rust pipeline (BertNormalizer + BertPreTokenizer of the
    installed `tokenizers`) on every one of the 1,112,064 non-surrogate code points c, alone and
    as "a" + c + "b", in three settings; and AutoTokenizer's ids of c alone (all-MiniLM-L6-v2).

    One JSON array per line, runs of code points that behave alike merged:
        [setting, start, count, pieces of c alone, pieces of "a" c "b"]   chr(cp) written U+FFFF
        ["minilm", start, count, ids]
    """
    import gzip
    from tokenizers import normalizers, pre_tokenizers
    fast = AutoTokenizer.from_pretrained(str(model_dir))
    pre = pre_tokenizers.BertPreTokenizer()
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    lines = []

    def runs(name, records):
        start, prev, count = None, None, 0
        for cp, rec in records:
            if rec == prev and cp == start + count:
                count += 1
                continue
            if prev is not None:
                lines.append(json.dumps([name, start, count, *prev], ensure_ascii=True))
            start, prev, count = cp, rec, 1
        lines.append(json.dumps([name, start, count, *prev], ensure_ascii=True))

    def pieces(norm, s):
        return [p for p, _ in pre.pre_tokenize_str(norm.normalize_str(s))]

    for name, lower, strip in CODEPOINT_SETTINGS:
        norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=strip,
                                          lowercase=lower)

        def record(cp):
            ch = chr(cp)
            rel = lambda ps: [p.replace(ch, "\uffff") for p in ps]   # noqa: E731
            return (rel(pieces(norm, ch)), rel(pieces(norm, "a" + ch + "b")))
        runs(name, ((cp, record(cp)) for cp in cps))
    runs("minilm", ((cp, (fast.encode(chr(cp), add_special_tokens=False),)) for cp in cps))
    header = json.dumps({"about": codepoints_golden.__doc__.split("\n\n")[0].strip(),
                         "tokenizers_version": tokenizers.__version__,
                         "transformers_version": transformers.__version__,
                         "settings": CODEPOINT_SETTINGS, "n_codepoints": len(cps)}, ensure_ascii=True)
    data = (header + "\n" + "\n".join(lines) + "\n").encode()
    with open(out / "rust_codepoints.jsonl.gz", "wb") as f:       # fixed mtime: identical reruns
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(data)
    print(f"rust_codepoints.jsonl.gz: {len(lines)} runs, {(out / 'rust_codepoints.jsonl.gz').stat().st_size} bytes")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with a fixed timestamp, so that a rerun writes identical bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def write_json(path: Path, doc: dict) -> None:
    """One list entry per line: readable, diffable, small."""
    lines = ["{"]
    items = list(doc.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], dict):
            body = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{body}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    path.write_text(_escape_invisible("\n".join(lines)) + "\n", encoding="utf-8")


def _escape_invisible(s: str) -> str:
    """JSON \\u escapes for the invisible characters (controls, format chars, odd spaces) that
    json.dumps(ensure_ascii=False) leaves raw; they occur only inside strings here."""
    out = []
    for ch in s:
        if ord(ch) > 126 and unicodedata.category(ch)[0] in "CZ":
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{units[k]:02x}{units[k + 1]:02x}" for k in range(0, len(units), 2))
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------- 2./3. model golden

def batch_texts(batch) -> dict:
    """The texts of a batch as unicode arrays (no pickle): texts [B], pairs [B] ('' = none), has_pair [B]."""
    return dict(texts=np.array([t for t, _ in batch]), pairs=np.array([p or "" for _, p in batch]),
                has_pair=np.array([p is not None for _, p in batch]))


def padded_batch(tok, batch):
    """HF-encoded rows, right-padded with the [PAD] id: int64 [B, T] arrays."""
    rows = [encode(tok, text, pair, 512) for text, pair in batch]
    width = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), width), tok.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for b, (row_ids, row_types) in enumerate(rows):
        ids[b, :len(row_ids)], mask[b, :len(row_ids)], types[b, :len(row_ids)] = row_ids, 1, row_types
    return ids, mask, types


@torch.no_grad()
def run(model, ids, mask, types):
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.from_numpy(types), output_hidden_states=True)
    hidden = torch.stack(out.hidden_states).numpy()  # [L+1, B, T, H]
    return out, hidden


def hidden_golden(model_dir: Path, out: Path) -> None:
    tok = BertTokenizerLegacy.from_pretrained(str(model_dir))
    ids, mask, types = padded_batch(tok, HIDDEN_BATCH)
    assert ids.shape[1] <= 24 and types.max() == 1 and len(set(mask.sum(1))) == len(HIDDEN_BATCH)
    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    assert model.dtype == torch.float32, model.dtype
    _, h32 = run(model, ids, mask, types)
    model64 = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval().double()
    o64, h64 = run(model64, ids, mask, types)
    save_npz(out / "minilm_hidden.npz", input_ids=ids, attention_mask=mask, token_type_ids=types,
                        hidden_f32=h32.astype(np.float32), hidden_f64=h64.astype(np.float64),
                        pooler_f64=o64.pooler_output.numpy().astype(np.float64), **batch_texts(HIDDEN_BATCH))
    print(f"minilm_hidden.npz: batch {ids.shape}, hidden {h64.shape}")


def tiny_vocab(model_dir: Path, size: int = 600) -> list[str]:
    """The 5 special tokens, printable ASCII characters and their '##' forms, then the most
    frequent whole words and pieces of the MiniLM vocabulary (its order), no [unusedN]."""
    big = [line.rstrip("\n") for line in (model_dir / "vocab.txt").open(encoding="utf-8").readlines()]
    have = set(big)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab += [c for c in chars if c in have]
    vocab += ["##" + c for c in chars if c.isalnum() and "##" + c in have]
    for t in big[big.index("the"):]:
        if len(vocab) == size:
            break
        if t not in vocab and t.isascii() and not t.startswith("[") and t.replace("##", "", 1).isalnum():
            vocab.append(t)
    assert len(vocab) == size and len(set(vocab)) == size
    return vocab


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Deterministic random weights with nonzero biases and LayerNorm parameters, so that a loader
    that drops or transposes any tensor produces visibly different outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embeddings" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def tiny_golden(model_dir: Path, out: Path, name: str, seed: int, **cfg_kw) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab(model_dir)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    slow = BertTokenizerLegacy(str(folder / "vocab.txt"), model_max_length=64)
    fast = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64)
    fast.save_pretrained(str(folder))                 # tokenizer.json + tokenizer_config.json
    specials = {k: f"[{k.split('_')[0].upper()}]" for k in ("unk_token", "sep_token", "pad_token",
                                                              "cls_token", "mask_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    for text, pair in TINY_BATCH:
        assert encode(slow, text, pair, 64) == encode(fast, text, pair, 64), text
        assert slow.unk_token_id not in encode(slow, text, pair, 64)[0], f"{text!r} has unknown words"

    config = BertConfig(vocab_size=600, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=72, max_position_embeddings=64, type_vocab_size=2,
                        layer_norm_eps=1e-7, pad_token_id=0, **cfg_kw)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    randomize(model, seed)
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(str(folder))                # transformers 5 always writes model.safetensors
    assert (folder / "model.safetensors").is_file()
    model = BertForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager").eval()

    ids, mask, types = padded_batch(slow, TINY_BATCH)
    o32, _ = run(model, ids, mask, types)
    o64, h64 = run(model.double(), ids, mask, types)
    arrays = dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                  logits_f64=o64.logits.numpy().astype(np.float64), logits_f32=o32.logits.numpy(),
                  hidden_f64=h64.astype(np.float64), **batch_texts(TINY_BATCH))
    save_npz(out / f"{name}_golden.npz", **arrays)
    print(f"{name}: logits {arrays['logits_f64'].shape}, hidden {h64.shape}")


# ---------------------------------------------------------------- 4. model families (issue 19)

FAMILY_IDS_ROWS = 4          # rows of the id batches of the families without a tokenizer here


def family_configs():
    """name -> (config, model class, id of [CLS]/<s>, id of [SEP]/</s>, pad id): tiny random models
    of each family, every quirk switched on (ALBERT and ELECTRA with embedding_size != hidden_size,
    DistilBERT with sinusoidal position embeddings, RoBERTa with its padding_idx position offset)."""
    from transformers import (AlbertConfig, AlbertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification, ElectraConfig,
                              ElectraForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)
    labels = dict(id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    return {
        "roberta": (RobertaConfig(vocab_size=120, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=72, max_position_embeddings=34, type_vocab_size=1,
                                  layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                  hidden_act="gelu", **labels),
                    RobertaForSequenceClassification, 0, 2, 1),
        "distilbert": (DistilBertConfig(vocab_size=600, dim=40, n_layers=2, n_heads=4, hidden_dim=72,
                                        max_position_embeddings=64, sinusoidal_pos_embds=True,
                                        activation="gelu", pad_token_id=0, **labels),
                       DistilBertForSequenceClassification, 2, 3, 0),
        "albert": (AlbertConfig(vocab_size=120, embedding_size=24, hidden_size=40, num_hidden_layers=3,
                                num_attention_heads=4, intermediate_size=72, max_position_embeddings=32,
                                type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=2,
                                eos_token_id=3, hidden_act="gelu_new", num_hidden_groups=1, inner_group_num=1,
                                **labels),
                   AlbertForSequenceClassification, 2, 3, 0),
        "electra": (ElectraConfig(vocab_size=600, embedding_size=24, hidden_size=40, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=72, max_position_embeddings=64,
                                  type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, hidden_act="gelu",
                                  **labels),
                    ElectraForSequenceClassification, 2, 3, 0),
    }


def id_batch(seed, vocab, cls, sep, pad, lengths, pair_at=None, pad_inside=None):
    """Random id rows [CLS] w.. [SEP] (and w.. [SEP] for the pair row, token type 1), right-padded:
    int64 [B, T] ids, mask, types. pad_inside: (row, position) holding the pad id as a real token."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    ids, mask, types = np.full((len(lengths), T), pad), np.zeros((len(lengths), T), np.int64), \
        np.zeros((len(lengths), T), np.int64)
    words = [i for i in range(5, vocab)]
    for b, n in enumerate(lengths):
        row = [cls] + list(rng.choice(words, n - 2)) + [sep]
        if b == pair_at:
            cut = n // 2
            row[cut] = sep
            types[b, cut + 1:n] = 1
        ids[b, :n], mask[b, :n] = row, 1
    if pad_inside is not None:
        ids[pad_inside] = pad
    return ids.astype(np.int64), mask, types


@torch.no_grad()
def run_family(model, ids, mask, types):
    kw = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    if model.config.model_type != "distilbert":          # DistilBERT has no token types
        kw["token_type_ids"] = torch.from_numpy(types)
    out = model(**kw)
    return out, torch.stack(out.hidden_states).numpy()  # [L+1, B, T, H]


def families_golden(model_dir: Path, out: Path) -> None:
    """<family>/ (save_pretrained: config.json, model.safetensors; vocab.txt + tokenizer files for the
    WordPiece families) and <family>_golden.npz (input_ids, attention_mask, token_type_ids [B, T];
    logits_f32/_f64 [B, C]; hidden_f64 [L+1, B, T, H]) for RoBERTa, DistilBERT, ALBERT, ELECTRA.
    The WordPiece families (DistilBERT, ELECTRA) encode TINY_BATCH with the tiny vocabulary; RoBERTa
    and ALBERT get random id rows (their BPE / Unigram tokenizers are golden elsewhere): a pair row
    with token types (ALBERT), and for RoBERTa its pad id inside a real row (position ids skip it)."""
    for k, (name, (config, cls_, cls_id, sep_id, pad_id)) in enumerate(family_configs().items()):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(SEED + 10 + k)
        model = cls_(config).eval()
        pos = [n for n, _ in model.named_parameters() if n.endswith("position_embeddings.weight")]
        sinus = model.get_parameter(pos[0]).detach().clone() if name == "distilbert" else None
        randomize(model, SEED + 10 + k)
        if sinus is not None:                            # keep the sinusoidal table the config promises
            with torch.no_grad():
                model.get_parameter(pos[0]).copy_(sinus)
        model.config.architectures = [cls_.__name__]
        model.save_pretrained(str(folder))
        if name in ("distilbert", "electra"):
            vocab = tiny_vocab(model_dir)
            (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
            tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64)
            tok.save_pretrained(str(folder))
            ids, mask, types = padded_batch(tok, TINY_BATCH)
            extra = batch_texts(TINY_BATCH)
        else:
            lengths = [7, 12, 3, 9] if name == "roberta" else [6, 11, 4, 8]
            ids, mask, types = id_batch(SEED + k, config.vocab_size, cls_id, sep_id, pad_id, lengths,
                                        pair_at=1 if name == "albert" else None,
                                        pad_inside=(1, 5) if name == "roberta" else None)
            extra = {}
        model = cls_.from_pretrained(str(folder), attn_implementation="eager").eval()
        o32, _ = run_family(model, ids, mask, types)
        o64, h64 = run_family(model.double(), ids, mask, types)
        save_npz(out / f"{name}_golden.npz", input_ids=ids, attention_mask=mask, token_type_ids=types,
                 logits_f64=o64.logits.numpy().astype(np.float64), logits_f32=o32.logits.numpy(),
                 hidden_f64=h64.astype(np.float64), **extra)
        print(f"{name}: logits {tuple(o64.logits.shape)}, hidden {h64.shape}")
# ---------------------------------------------------------------- 5. the papers' own checkpoints (issue 19)

def paper_models():
    """name -> (backbone class, config, exit tensors: paper's name -> shape, the policy the golden
    decisions follow). Exit names as the papers' code creates them (refexit/arch.py cites file and line):
    PABEE's ALBERT `classifiers.{i}` (one Linear per layer, over albert.pooler), DeeBERT's RoBERTa
    `roberta.encoder.highway.{i}.{pooler.dense,classifier}` (every layer, the last one unused) with
    its one-Linear `classifier` over roberta.pooler.dense, ELBERT's one shared
    `albert.encoder.exit_out_layer.classifier` over albert.pooler (its released config: use_out_pooler,
    pooler_input cls, num_exit_layers 1, no use_fc2)."""
    from transformers import AlbertConfig, AlbertModel, RobertaConfig, RobertaModel
    labels = dict(id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    albert = dict(vocab_size=120, embedding_size=24, hidden_size=40, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=72, max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12,
                  pad_token_id=0, bos_token_id=2, eos_token_id=3, hidden_act="gelu_new", num_hidden_groups=1,
                  inner_group_num=1, **labels)
    H, C, L = 40, 3, 4
    return {
        "pabee_albert": (AlbertModel, AlbertConfig(**albert),
                         {**{f"classifiers.{i}.weight": (C, H) for i in range(L)},
                          **{f"classifiers.{i}.bias": (C,) for i in range(L)}}, "patience"),
        "deebert_roberta": (RobertaModel, RobertaConfig(
            vocab_size=120, hidden_size=H, num_hidden_layers=L, num_attention_heads=4, intermediate_size=72,
            max_position_embeddings=34, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, hidden_act="gelu", **labels),
            {**{f"roberta.encoder.highway.{i}.pooler.dense.weight": (H, H) for i in range(L)},
             **{f"roberta.encoder.highway.{i}.pooler.dense.bias": (H,) for i in range(L)},
             **{f"roberta.encoder.highway.{i}.classifier.weight": (C, H) for i in range(L)},
             **{f"roberta.encoder.highway.{i}.classifier.bias": (C,) for i in range(L)},
             "classifier.weight": (C, H), "classifier.bias": (C,)}, "entropy"),
        "elbert_albert": (AlbertModel, AlbertConfig(**albert),
                          {"albert.encoder.exit_out_layer.classifier.weight": (C, H),
                           "albert.encoder.exit_out_layer.classifier.bias": (C,)}, "norm_entropy"),
    }


def _paper_layer_logits(name, exits, hidden, pooler_w, pooler_b):
    """The papers' exit logits after every layer, from the backbone's hidden states [L+1, B, T, H]
    (float64): PABEE classifiers[i](tanh(pooler(h_i[:, 0]))) (modeling_albert.py:645-646); DeeBERT
    BertHighway: classifier(tanh(pooler.dense(h_i[:, 0]))) after layers 1..L-1 and the model's
    classifier(tanh(roberta.pooler.dense(h_L[:, 0]))) at L; ELBERT ExitLayer with use_out_pooler:
    classifier(tanh(albert.pooler(h_i[:, 0]))) at every layer. -> [L, B, C]."""
    t = {k: torch.from_numpy(v).double() for k, v in exits.items()}
    lin = lambda x, w, b: x @ t[w].T + t[b]                                    # noqa: E731
    L, out = hidden.shape[0] - 1, []
    for i in range(1, L + 1):
        cls = torch.from_numpy(hidden[i][:, 0]).double()                         # [B, H]
        pooled = torch.tanh(cls @ pooler_w.T + pooler_b)
        if name == "pabee_albert":
            z = lin(pooled, f"classifiers.{i - 1}.weight", f"classifiers.{i - 1}.bias")
        elif name == "deebert_roberta" and i < L:
            hw = f"roberta.encoder.highway.{i - 1}"
            z = lin(torch.tanh(lin(cls, f"{hw}.pooler.dense.weight", f"{hw}.pooler.dense.bias")),
                    f"{hw}.classifier.weight", f"{hw}.classifier.bias")
        elif name == "deebert_roberta":
            z = lin(pooled, "classifier.weight", "classifier.bias")
        else:
            z = lin(pooled, "albert.encoder.exit_out_layer.classifier.weight",
                    "albert.encoder.exit_out_layer.classifier.bias")
        out.append(z.numpy())
    return np.stack(out)                                                         # [L, B, C]


def _paper_exit(policy, z, t):
    """One sample's exit under the paper's inference loop (batch size 1, as all three papers run it):
    z [L, C] float64 per-layer logits -> (exit layer, 1-based; its logits).
    patience (PABEE modeling_albert.py:634-667): the counter grows while argmax agrees with the previous
    layer's, resets otherwise, exit when it equals t; entropy (DeeBERT modeling_highway_bert.py:8-11,
    :106): -sum p ln p < t at layers 1..L-1 (the unused last off-ramp left out, as refexit does);
    norm_entropy (ELBERT ExitLayer, thres_name "entropy"): sum p ln p / ln(1/C) < t."""
    L, C = z.shape
    counter, prev = 0, None
    for i in range(L):
        p = torch.softmax(torch.from_numpy(z[i]), -1)
        if policy == "patience":
            counter = counter + 1 if prev is not None and int(z[i].argmax()) == int(prev.argmax()) else 0
            prev = z[i]
            if counter == t:
                return i + 1, z[i]
        elif i < L - 1:
            h = float(-(p * torch.log(p)).sum())
            if (h if policy == "entropy" else h / np.log(C)) < t:
                return i + 1, z[i]
    return L, z[L - 1]


def _cut_points(values, k=2):
    """k thresholds between the sorted scores (midpoints of the widest gaps near the 1/3 and 2/3
    quantiles), so that no score sits near a threshold."""
    v = np.unique(np.asarray(values, np.float64))
    picks = []
    for q in np.linspace(0, 1, k + 2)[1:-1]:
        j = min(max(int(q * (len(v) - 1)), 0), len(v) - 2)
        picks.append(float((v[j] + v[j + 1]) / 2))
    return picks


def papers_golden(out: Path) -> None:
    """<name>/ (config.json, model.safetensors with the papers' tensor names) and <name>_golden.npz:
    input_ids, attention_mask, token_type_ids [B, T]; layer_logits [L, B, C] (every exit head, float64);
    thresholds [K]; exit_layers [K, B], exit_logits [K, B, C] of the paper's inference per threshold."""
    from safetensors.torch import save_file
    for k, (name, (cls_, config, exit_shapes, policy)) in enumerate(paper_models().items()):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        prefix = "albert" if "albert" in name else "roberta"
        torch.manual_seed(SEED + 40 + k)
        backbone = cls_(config, add_pooling_layer=True).eval()
        randomize(backbone, SEED + 40 + k)
        backbone.save_pretrained(str(folder))            # then reloaded with eager attention
        backbone = cls_.from_pretrained(str(folder), attn_implementation="eager").eval().double()
        g = torch.Generator().manual_seed(SEED + 50 + k)
        exits = {}
        for n, shape in sorted(exit_shapes.items()):
            noise = torch.randn(shape, generator=g, dtype=torch.float32)
            exits[n] = (0.1 * noise if n.endswith("bias") else 2.0 * noise / shape[-1] ** 0.5).numpy()
        tensors = {f"{prefix}.{n}": p.detach().float().contiguous() for n, p in backbone.state_dict().items()
                   if p.is_floating_point()}                  # not the int position / type id buffers
        tensors.update({n: torch.from_numpy(a).contiguous() for n, a in exits.items()})
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        config.architectures = [cls_.__name__.replace("Model", "ForSequenceClassification")]
        config.save_pretrained(str(folder))
        lengths = [7, 12, 3, 9, 5, 10]
        ids, mask, types = id_batch(SEED + 60 + k, config.vocab_size, config.bos_token_id, config.eos_token_id,
                                    config.pad_token_id, lengths, pair_at=1 if prefix == "albert" else None)
        kw = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True,
                  token_type_ids=torch.from_numpy(types))
        with torch.no_grad():
            hidden = torch.stack(backbone(**kw).hidden_states).numpy()           # [L+1, B, T, H]
            pw, pb = (backbone.pooler.weight, backbone.pooler.bias) if prefix == "albert" else \
                (backbone.pooler.dense.weight, backbone.pooler.dense.bias)
            z = _paper_layer_logits(name, exits, hidden, pw.double(), pb.double())
        L, B = z.shape[:2]
        if policy == "patience":
            thresholds = [1, 2]
        else:
            p = torch.softmax(torch.from_numpy(z[:L - 1]), -1)
            h = -(p * torch.log(p)).sum(-1).numpy()
            thresholds = _cut_points(h if policy == "entropy" else h / np.log(z.shape[2]))
        decided = [[_paper_exit(policy, z[:, b], t) for b in range(B)] for t in thresholds]
        save_npz(out / f"{name}_golden.npz", input_ids=ids, attention_mask=mask, token_type_ids=types,
                 layer_logits=z, thresholds=np.array(thresholds, np.float64),
                 exit_layers=np.array([[e for e, _ in row] for row in decided], np.int64),
                 exit_logits=np.array([[zz for _, zz in row] for row in decided], np.float64))
        print(f"{name}: {policy} {thresholds}: exit layers "
              f"{[[e for e, _ in row] for row in decided]}")


# ---------------------------------------------------------------- 4. gradients (fine-tuning)

def grad_golden(out: Path, name: str, seed: int) -> None:
    """The loss and every parameter's gradient from autograd for the tiny model `name` (written by
    tiny_golden) on TINY_BATCH with seeded labels: float64, eval mode (dropout off), the loss
    BertForSequenceClassification computes itself (cross-entropy, or MSE for regression).
    -> <name>_grads.npz: inputs, labels, logits, loss (float64), grad.<HF parameter name> (float32)."""
    folder = out / name
    model = BertForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager").eval().double()
    slow = BertTokenizerLegacy(str(folder / "vocab.txt"), model_max_length=64)
    ids, mask, types = padded_batch(slow, TINY_BATCH)
    g = torch.Generator().manual_seed(seed)
    if model.config.problem_type == "regression":
        labels = torch.randn(len(ids), generator=g, dtype=torch.float64)
    else:
        labels = torch.randint(0, model.config.num_labels, (len(ids),), generator=g)
    o = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
              token_type_ids=torch.from_numpy(types), labels=labels)
    o.loss.backward()
    # float32 storage (relative rounding 6e-8, far below the tests' 1e-5) keeps the golden files under SIZE_LIMIT
    grads = {f"grad.{n}": p.grad.numpy().astype(np.float32) for n, p in model.named_parameters()}
    assert all(np.isfinite(v).all() for v in grads.values())
    save_npz(out / f"{name}_grads.npz", input_ids=ids, attention_mask=mask, token_type_ids=types,
             labels=labels.numpy(), logits=o.logits.detach().numpy(), loss=o.loss.detach().numpy(), **grads)
    print(f"{name}_grads.npz: loss {o.loss.item():.6f}, {len(grads)} gradients")


def grads_golden(out: Path) -> None:
    grad_golden(out, "tiny_seqcls", seed=SEED + 3)
    grad_golden(out, "tiny_regression", seed=SEED + 4)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, type=Path, help="local all-MiniLM-L6-v2 folder")
    ap.add_argument("--out", default=Path("tests/golden"), type=Path)
    ap.add_argument("--only", choices=("tokens", "codepoints", "models", "families", "papers", "grads"),
                    action="append",
                    help="write only these parts (repeatable; default: all)")
    args = ap.parse_args(argv)
    parts = set(args.only or ("tokens", "codepoints", "models", "families", "papers", "grads"))
    for f in ("config.json", "vocab.txt", "model.safetensors"):
        if not (args.model_dir / f).is_file():
            ap.error(f"{args.model_dir / f} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    transformers.logging.set_verbosity_error()
    seed_everything()
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch {torch.__version__}")
    if "tokens" in parts:
        tokens_golden(args.model_dir, args.out)
    if "codepoints" in parts:
        codepoints_golden(args.model_dir, args.out)
    if "families" in parts:
        families_golden(args.model_dir, args.out)
    if "papers" in parts:
        papers_golden(args.out)
    if "grads" in parts and "models" not in parts:      # from the tiny models already written
        grads_golden(args.out)
    if "models" not in parts:
        return 0
    hidden_golden(args.model_dir, args.out)
    tiny_golden(args.model_dir, args.out, "tiny_seqcls", seed=SEED + 1, hidden_act="gelu",
                id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    tiny_golden(args.model_dir, args.out, "tiny_regression", seed=SEED + 2, hidden_act="gelu_new",
                num_labels=1, problem_type="regression")
    if "grads" in parts:
        grads_golden(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {total / 1e6:.2f} MB in total")
    assert total < SIZE_LIMIT, f"golden files take {total} bytes, more than {SIZE_LIMIT}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
