"""specnb.corpus: the text the zoo trains on and the experiments measure on.

- ``stdlib``: the corpus (the running interpreter's standard library, split by file), its
  tokenizer, a build's folders (``Layout``) and the cached, tokenized splits
- ``heldout``: held-out prompts, token streams and windows from it (``heldout_prompts``,
  ``corpus_tokens``, ``heldout_windows``)

Below ``zoo`` (which trains on it) and the measurements (which prompt with it); imports nothing
of either.
"""

from .heldout import corpus_tokens, heldout_prompts, heldout_windows
from .stdlib import (EOT, MAX_POSITIONS, SPLITS, STDLIB_SKIP_DIRS, VOCAB_SIZE, Layout, build_manifest, cached_manifest,
                     encode_split, hash_documents, hash_file, list_stdlib_files, list_text_files, load_corpus,
                     load_corpus_tokenizer, load_split, make_layout, prepare_corpus, read_documents, split_of, stdlib_dir,
                     train_tokenizer, wrap_tokenizer)

__all__ = ["EOT", "MAX_POSITIONS", "SPLITS", "STDLIB_SKIP_DIRS", "VOCAB_SIZE", "Layout", "build_manifest", "cached_manifest",
           "encode_split", "hash_documents", "hash_file", "list_stdlib_files", "list_text_files", "load_corpus",
           "load_corpus_tokenizer", "load_split", "make_layout", "prepare_corpus", "read_documents", "split_of", "stdlib_dir",
           "train_tokenizer", "wrap_tokenizer", "corpus_tokens", "heldout_prompts", "heldout_windows"]
