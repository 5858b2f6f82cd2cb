"""CoNLL-style token files: ``token<TAB>tag`` lines, a blank line between sentences.

The shared parser for ``dataset: file`` with ``format: conll`` (or a ``.conll`` file) and
for token-level LinCE. Lines starting with ``#`` are comments (``# sent_enum = 3``) unless
they hold a tab: tweets have hashtag tokens (``#fail<TAB>other``), which are data.
"""

from __future__ import annotations

from pathlib import Path

from study.tasks.base import TaskDataError

Sentence = tuple[list[str], list[str]]  # (tokens, tags), same length


def read_conll(path) -> list[Sentence]:
    """Sentences of ``path`` as (tokens, tags), in file order; TaskDataError names file:line on a bad line."""
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    # Split on \n only: tweets can contain characters str.splitlines treats as line breaks.
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip() or (line.startswith("#") and "\t" not in line):
            if not line.strip() and tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, tab, tag = line.rpartition("\t")
        if not tab or not token or not tag.strip():
            raise TaskDataError(
                f"{path}:{lineno}: expected `token<TAB>tag`, got {line!r}; "
                "fix: one token and its tag per line separated by a tab, a blank line between sentences"
            )
        tokens.append(token)
        tags.append(tag.strip())
    if tokens:
        sentences.append((tokens, tags))
    return sentences
