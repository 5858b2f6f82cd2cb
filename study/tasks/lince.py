"""``lince-spaeng``: sentence-level code-switching detection derived from LinCE Spanish–English LID.

Source (``data_dir``): ``train.conll`` (21,030 sentences) → train, ``dev.conll`` (3,332) →
eval; LinCE's test labels are hidden. Format: ``# sent_enum = N``, then ``token<TAB>tag``
lines with tags ``lang1`` (English), ``lang2`` (Spanish), ``other``, ``ne``, ``ambiguous``,
``mixed``, ``fw``, ``unk``; a blank line ends a sentence. Tokens may themselves start with
``#`` (hashtags), so only ``# sent_enum = N`` lines are headers. One dev line separates
token and tag with spaces instead of a tab; it is accepted.

LID is per token; the sentence-level label is derived here:
``code_switched`` (1) if the sentence has at least one ``lang1`` *and* at least one
``lang2`` token, else ``monolingual`` (0). ``mixed`` tokens (both languages inside one
word) do not count. Text: the tokens joined by single spaces. Measured balance:
train 7,986 / 21,030 code-switched (38.0 %), eval 1,142 / 3,332 (34.3 %): imbalanced, so the
primary metric is macro-F1. No deduplication: the splits are LinCE's own.
"""

from __future__ import annotations

import re
from pathlib import Path

from study.tasks.base import DataFile, DatasetSpec, Splits, TaskDataError, number

NAME = "lince-spaeng"
LABEL_NAMES = ("monolingual", "code_switched")
TAGS = frozenset({"lang1", "lang2", "other", "ne", "ambiguous", "mixed", "fw", "unk"})
FORMAT = ("LinCE CoNLL: `# sent_enum = N`, then one `token<TAB>tag` line per token "
          f"(tags {', '.join(sorted(TAGS))}), a blank line between sentences")
_HEADER = re.compile(r"# sent_enum = \d+\s*$")


def _token(line: str, where: str) -> tuple[str, str]:
    token, tab, tag = line.rpartition("\t")
    if not tab:
        token, _, tag = line.rstrip().rpartition(" ")
        token = token.rstrip()
    if not token or tag not in TAGS:
        raise TaskDataError(f"{where}: expected `token<TAB>tag` with a tag in {sorted(TAGS)}, got {line!r}")
    return token, tag


def read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences as lists of (token, tag), in file order."""
    sentences: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    # Split on \n only: tweets can contain characters str.splitlines treats as breaks.
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip() or _HEADER.match(line):
            if current:
                sentences.append(current)
            current = []
            continue
        current.append(_token(line, f"{path}:{lineno}"))
    if current:
        sentences.append(current)
    return sentences


def sentence_label(tags: list[str]) -> int:
    return int("lang1" in tags and "lang2" in tags)


def _examples(split: str, path: Path) -> tuple:
    rows = []
    for sentence in read_conll(path):
        tokens = [tok for tok, _ in sentence]
        rows.append((" ".join(tokens), None, sentence_label([tag for _, tag in sentence])))
    return number(split, rows)


def load(data_dir: str | None) -> Splits:
    if not data_dir:
        raise TaskDataError(f"dataset {NAME!r} needs data_dir: a folder holding train.conll and dev.conll")
    root = Path(data_dir).expanduser()
    return _examples("train", root / "train.conll"), _examples("dev", root / "dev.conll")


def spec() -> DatasetSpec:
    return DatasetSpec(
        name=NAME,
        description="LinCE Spanish-English tweets: is the sentence code-switched? 2 classes, macro-F1",
        num_labels=2,
        label_names=LABEL_NAMES,
        primary_metric="macro_f1",
        data_dir="required",
        files=(DataFile("train.conll", FORMAT, None, 21030), DataFile("dev.conll", FORMAT, None, 3332)),
        load=load,
    )
