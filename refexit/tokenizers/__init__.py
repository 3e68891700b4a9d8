"""Tokenizers, each identical to what Hugging Face's AutoTokenizer (the Rust `tokenizers` backend)
produces: WordPiece (wordpiece.py) with the pinned Unicode tables of the Rust crates
(unicode_pinned.py, tokenizer_unicode.txt)."""
from refexit.tokenizers.wordpiece import Tokenizer

__all__ = ["Tokenizer"]
