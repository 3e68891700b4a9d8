"""Tokenizers, each identical to what Hugging Face's AutoTokenizer (the Rust `tokenizers` backend)
produces: WordPiece (wordpiece.py) with the pinned Unicode tables of the Rust crates
(unicode_pinned.py, tokenizer_unicode.txt); tokenizer.json pipelines (tokenizer_json.py: WordPiece,
byte-level BPE, Unigram) with the tables of unicode_json.py; `load_tokenizer(folder)` (load.py)
picks the one a model folder ships."""
from refexit.tokenizers.wordpiece import Tokenizer
from refexit.tokenizers.tokenizer_json import TokenizerJson
from refexit.tokenizers.load import load_tokenizer

__all__ = ["Tokenizer", "TokenizerJson", "load_tokenizer"]
