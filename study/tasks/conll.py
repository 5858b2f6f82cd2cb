"""CoNLL-style token files: ``token<TAB>tag`` lines, a blank line between sentences.

Comment lines start with ``#`` and hold no tab (``# sent_enum = 12``); a line that starts with
``#`` but has a tab is a token (tweets are full of ``#hashtag<TAB>other``). A line without a
tab is split at its last run of spaces (LinCE's dev file has one such line).
"""

from __future__ import annotations

from pathlib import Path

from study.tasks.base import TaskDataError


def _token_and_tag(line: str, where: str) -> tuple[str, str]:
    token, tab, tag = line.rpartition("\t")
    if not tab:
        token, _, tag = line.rstrip().rpartition(" ")
    token, tag = token.strip(), tag.strip()
    if not token or not tag:
        raise TaskDataError(f"{where}: expected `token<TAB>tag`, got {line!r}; "
                            "fix the line or make it a `#` comment")
    return token, tag


def read_conll(path) -> list[tuple[list[str], list[str]]]:
    """Sentences of ``path`` as (tokens, tags), in file order; raises TaskDataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file; expected a CoNLL file (token<TAB>tag lines)")
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    # Split on \n only: tweets can contain characters str.splitlines treats as line breaks.
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
        line = line.rstrip("\r")
        is_comment = line.startswith("#") and "\t" not in line
        if not line.strip() or is_comment:
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        token, tag = _token_and_tag(line, f"{path}:{lineno}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences
