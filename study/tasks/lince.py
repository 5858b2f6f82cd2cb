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

from pathlib import Path

from study.tasks.base import DataFile, DatasetSpec, Splits, TaskDataError, number, token_example
from study.tasks.conll import read_conll

NAME = "lince-spaeng"
LABEL_NAMES = ("monolingual", "code_switched")
TAGS = frozenset({"lang1", "lang2", "other", "ne", "ambiguous", "mixed", "fw", "unk"})
FORMAT = ("LinCE CoNLL: `# sent_enum = N`, then one `token<TAB>tag` line per token "
          f"(tags {', '.join(sorted(TAGS))}), a blank line between sentences")


def read_sentences(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence, every tag checked against LinCE's tag set."""
    sentences = read_conll(path)
    for i, (_, tags) in enumerate(sentences):
        bad = sorted(set(tags) - TAGS)
        if bad:
            raise TaskDataError(f"{path}: sentence {i + 1} has tag(s) {bad}; expected {FORMAT}")
    return sentences


def sentence_label(tags: list[str]) -> int:
    return int("lang1" in tags and "lang2" in tags)


FILES = (DataFile("train.conll", FORMAT, None, 21030), DataFile("dev.conll", FORMAT, None, 3332))


def _examples(split: str, path: Path) -> tuple:
    rows = []
    for tokens, tags in read_sentences(path):
        rows.append((" ".join(tokens), None, sentence_label(tags)))
    return number(split, rows)


def _load_folder(name: str, data_dir: str | None, examples) -> Splits:
    """Both LinCE datasets read the same folder: train.conll is train, dev.conll is eval."""
    if not data_dir:
        raise TaskDataError(f"dataset {name!r} needs data_dir: a folder holding train.conll and dev.conll")
    root = Path(data_dir).expanduser()
    return examples("train", root / "train.conll"), examples("dev", root / "dev.conll")


def load(data_dir: str | None) -> Splits:
    return _load_folder(NAME, data_dir, _examples)


def spec() -> DatasetSpec:
    return DatasetSpec(
        name=NAME,
        description="LinCE Spanish-English tweets: is the sentence code-switched? 2 classes, macro-F1",
        num_labels=2,
        label_names=LABEL_NAMES,
        primary_metric="macro_f1",
        data_dir="required",
        files=FILES,
        load=load,
    )


# --- lince-lid: the token-level task of the Token Masking paper -----------------------------
LID_NAME = "lince-lid"
LID_LABEL_NAMES = ("lang1", "lang2", "other")
# The reference's 3-way mapping: lang1 (English), lang2 (Spanish), every other LinCE tag -> other.
LID_TAG_IDS = {"lang1": 0, "lang2": 1}


def lid_tag_id(tag: str) -> int:
    return LID_TAG_IDS.get(tag, 2)


def _lid_examples(split: str, path: Path) -> tuple:
    return tuple(token_example(f"{split}-{i}", tokens, [lid_tag_id(t) for t in tags])
                 for i, (tokens, tags) in enumerate(read_sentences(path)))


def lid_load(data_dir: str | None) -> Splits:
    return _load_folder(LID_NAME, data_dir, _lid_examples)


def lid_spec() -> DatasetSpec:
    """Token classification: one of lang1 / lang2 / other per word (ne, ambiguous, mixed, fw, unk
    map to other), weighted F1 primary and macro F1 recorded, as the Token Masking paper reports."""
    return DatasetSpec(
        name=LID_NAME,
        description="LinCE Spanish-English tweets: language of each word (lang1/lang2/other), weighted F1",
        num_labels=3,
        label_names=LID_LABEL_NAMES,
        primary_metric="weighted_f1",
        data_dir="required",
        files=FILES,
        load=lid_load,
        task_type="token-classification",
        extra_metrics=("macro_f1",),
    )
