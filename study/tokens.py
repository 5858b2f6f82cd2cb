"""Token classification: words -> subword inputs with one label per word, and the predictions back.

As the Token Masking reference (and Hugging Face's ``run_ner`` without ``label_all_tokens``):
the words go to the tokenizer with ``is_split_into_words=True``; the FIRST subword of each word
carries the word's label, every other subword and every special token carries ``IGNORE_INDEX``
(-100), which the loss and the metrics skip. Words cut off by ``max_length`` are neither
trained on nor scored (the reference truncates the same way); keep ``max_length`` above the
longest sentence to score every word.

Tokenizers that give no word ids (slow, Python tokenizers) or refuse split words (byte-level
BPE without ``add_prefix_space``, e.g. GPT-2) are encoded word by word instead: each word is
tokenized alone (after a space, as inside a sentence; the first word without one), the pieces
are concatenated, truncated and wrapped with the tokenizer's own special tokens. With a
decoder-only backbone the label still sits on the first subword, as in the reference; note that
under causal attention that position sees only the words to its left.

Predictions are stored per labelled word with ``example_id = "<sentence id>:<word index>"``;
the multibootstrap groups them back into sentences (:func:`analysis.multiboot.sentence_groups`).
"""

from __future__ import annotations

import numpy as np

from analysis.metrics import IGNORE_INDEX


def encode_words(tokenizer, examples, max_length: int) -> list[dict]:
    """One dict of plain lists per sentence: model inputs, ``label`` (one per position, -100 on
    all but first subwords) and the ``_word_ids``/``_sequence_ids`` whole-word masking keys on."""
    word_ids = None
    if getattr(tokenizer, "is_fast", False):
        try:
            enc = tokenizer([list(ex.words) for ex in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length)
            word_ids = [enc.word_ids(i) for i in range(len(examples))]
            inputs = [{k: enc[k][i] for k in enc.keys()} for i in range(len(examples))]
        except ValueError:  # GPT-2 style: "instantiate with add_prefix_space=True to use pretokenized inputs"
            word_ids = None
    if word_ids is None:
        inputs, word_ids = zip(*(encode_word_by_word(tokenizer, ex.words, max_length) for ex in examples), strict=True)
    out = []
    for ex, item, words in zip(examples, inputs, word_ids, strict=True):
        labels, previous = [], None
        for w in words:
            labels.append(ex.tags[w] if w is not None and w != previous else IGNORE_INDEX)
            previous = w
        item = dict(item)
        item["label"] = labels
        item["_word_ids"] = [-1 if w is None else w for w in words]
        item["_sequence_ids"] = [-1 if w is None else 0 for w in words]
        out.append(item)
    return out


def encode_word_by_word(tokenizer, words, max_length: int) -> tuple[dict, list[int | None]]:
    """Inputs and word ids (None on specials) of ``words`` tokenized one at a time (the fallback)."""
    pieces, owner = [], []
    for i, word in enumerate(words):
        ids = tokenizer((" " if i else "") + word, add_special_tokens=False)["input_ids"]
        pieces += ids
        owner += [i] * len(ids)
    prefix, suffix = _special_template(tokenizer)
    keep = max(0, max_length - len(prefix) - len(suffix))
    input_ids = prefix + pieces[:keep] + suffix
    words_of = [None] * len(prefix) + owner[:keep] + [None] * len(suffix)
    item = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        item["token_type_ids"] = [0] * len(input_ids)
    return item, words_of


def _special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text (e.g. [CLS] / [SEP],
    or BOS), read off one encoding with and one without them: the one way every tokenizer
    generation (Python, Rust, transformers 4 and 5) answers alike."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


def scored_words(examples, items) -> tuple[list[str], np.ndarray]:
    """The ids (``"<sentence id>:<word index>"``) and labels of the scored words, in evaluation order."""
    ids, labels = [], []
    for ex, item in zip(examples, items, strict=True):
        for w, y in zip(item["_word_ids"], item["label"], strict=True):
            if y != IGNORE_INDEX:
                ids.append(f"{ex.id}:{w}")
                labels.append(y)
    return ids, np.asarray(labels, dtype=np.int64)
