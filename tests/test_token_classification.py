"""Token classification (issue 11 item 3): CoNLL reading, lince-lid, word-level encoding,
token-level metrics and the sentence-resampling multibootstrap, each against an independent
computation (scikit-learn, the fast tokenizer, a plain Python loop)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from analysis._frames import stable_rng
from analysis.metrics import IGNORE_INDEX, compute_metrics, get_metric
from analysis.multiboot import example_draws, multibootstrap, sentence_groups
from study.tasks import TaskDataError, load_task
from study.tasks.base import carve_validation, token_example
from study.tasks.conll import read_conll


def write_lince(folder, n_train=40, n_eval=12):
    """A small LinCE-format folder: headers, hashtags, every tag kind."""
    rng = np.random.default_rng(0)
    tags = ["lang1", "lang2", "other", "ne", "ambiguous", "mixed", "fw", "unk"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.conll", n_train), ("dev.conll", n_eval)):
        lines = []
        for s in range(n):
            lines.append(f"# sent_enum = {s + 1}")
            for w in range(int(rng.integers(2, 7))):
                tag = tags[int(rng.integers(0, 3))] if w else tags[s % len(tags)]
                lines.append(f"{'#hash' if w == 1 else 'w'}{s}x{w}\t{tag}")
            lines.append("")
        (folder / name).write_text("\n".join(lines), encoding="utf-8")
    return folder


def test_read_conll_comments_hashtags_spaces_and_errors(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text("# sent_enum = 1\n#yolo\tother\nhola\tlang2\n\n\n# a comment\nhi  lang1\n", encoding="utf-8")
    assert read_conll(f) == [(["#yolo", "hola"], ["other", "lang2"]), (["hi"], ["lang1"])]
    f.write_text("ok\tlang1\nbroken\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"a\.conll:2"):
        read_conll(f)


def test_lince_lid_maps_every_other_tag_to_other(tmp_path):
    folder = write_lince(tmp_path / "lince")
    cfg = type("Cfg", (), {"dataset": "lince-lid", "data_dir": str(folder), "max_train_examples": None,
                           "max_eval_examples": None, "data_seed": 0, "validation_fraction": None})
    task = load_task(cfg)
    raw = read_conll(folder / "train.conll")
    mapping = {"lang1": 0, "lang2": 1}
    assert task.task_type == "token-classification" and task.num_labels == 3
    assert task.label_names == ("lang1", "lang2", "other") and task.primary_metric == "weighted_f1"
    for ex, (words, tags) in zip(task.train, raw, strict=True):
        assert ex.words == tuple(words) and ex.tags == tuple(mapping.get(t, 2) for t in tags)
        assert ex.label == int(np.argmax(np.bincount(ex.tags)))  # the stratum: the most frequent tag


def test_carve_validation_is_deterministic_stratified_and_disjoint():
    rng = np.random.default_rng(3)
    examples = tuple(token_example(f"train-{i}", [f"w{i}", "x"], [int(rng.integers(0, 3))] * 2) for i in range(90))
    train, val = carve_validation(examples, 0.2)
    assert carve_validation(examples, 0.2) == (train, val)
    assert {e.id for e in train}.isdisjoint(e.id for e in val) and len(train) + len(val) == 90
    for c in range(3):
        members = sum(e.label == c for e in examples)
        assert sum(e.label == c for e in val) == int(np.floor(members * 0.2 + 0.5))


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from study.models import resolve_source

    return AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))


def test_first_subword_carries_the_label_and_the_word_by_word_path_agrees(minilm_tokenizer):
    from study.tokens import encode_word_by_word, encode_words, scored_words

    fast = minilm_tokenizer
    examples = (token_example("dev-0", ["Hola", "unbelievably", "#tbt", "ok"], [1, 0, 2, 0]),
                token_example("dev-1", ["a", "b" * 30, "c"], [0, 1, 2]))
    items = encode_words(fast, examples, max_length=8)
    for ex, item in zip(examples, items, strict=True):
        pieces = fast.convert_ids_to_tokens(item["input_ids"])
        labelled = [i for i, y in enumerate(item["label"]) if y != IGNORE_INDEX]
        # A labelled position starts a word (not a ## continuation, not a special) ...
        assert all(not pieces[i].startswith("##") and pieces[i] not in ("[CLS]", "[SEP]") for i in labelled)
        # ... and holds the tag of the word it starts, in word order.
        assert [item["label"][i] for i in labelled] == [ex.tags[item["_word_ids"][i]] for i in labelled]
        assert [item["_word_ids"][i] for i in labelled] == sorted({w for w in item["_word_ids"] if w >= 0})
    assert len(items[0]["input_ids"]) == 8 and items[0]["_word_ids"][-2] < 3  # truncated: later words unscored
    # The fallback for tokenizers without word ids, run on the same tokenizer, builds the same inputs.
    for ex, a in zip(examples, items, strict=True):
        inputs, word_ids = encode_word_by_word(fast, ex.words, 8)
        assert inputs["input_ids"] == a["input_ids"] and [-1 if w is None else w for w in word_ids] == a["_word_ids"]
    ids, labels = scored_words(examples, items)
    assert ids[:2] == ["dev-0:0", "dev-0:1"] and len(ids) == len(labels) == sum(
        y != IGNORE_INDEX for it in items for y in it["label"])


def test_token_metrics_are_over_labelled_positions_only():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 200)
    preds = rng.integers(0, 3, 200)
    labels_with_ignored = labels.copy()
    labels_with_ignored[::4] = IGNORE_INDEX
    keep = labels_with_ignored != IGNORE_INDEX
    got = compute_metrics(labels_with_ignored, preds, "weighted_f1", 3, ("macro_f1",))
    assert got["weighted_f1"] == pytest.approx(f1_score(labels[keep], preds[keep], average="weighted"), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(labels[keep], preds[keep], average="macro"), abs=1e-12)
    assert got["accuracy"] == pytest.approx(np.mean(labels[keep] == preds[keep]), abs=1e-12)


def test_sentence_groups():
    ids = ["dev-10:0", "dev-2:1", "dev-10:1", "dev-2:0", "dev-2:10"]
    assert sentence_groups(ids).tolist() == [0, 1, 0, 1, 1]  # sorted sentence ids: dev-10, dev-2
    assert sentence_groups(["dev-1", "dev-2"]) is None
    assert sentence_groups(["dev-1:0", "dev-2"]) is None


@pytest.mark.parametrize("metric", ["weighted_f1", "macro_f1", "accuracy"])
def test_token_level_multibootstrap_equals_a_plain_loop_over_sentences(metric):
    """The vectorised multibootstrap (weighted confusion matrices) against a loop that draws
    sentences, concatenates their words and calls the metric on the concatenation."""
    rng = np.random.default_rng(11)
    n_sent, seeds, n_boot, alpha = 15, [0, 1, 2, 3], 300, 0.1
    words = {f"dev-{s}": int(rng.integers(1, 6)) for s in range(n_sent)}
    token_ids = [f"{s}:{w}" for s, n in words.items() for w in range(n)]
    labels = rng.integers(0, 3, len(token_ids))
    rows = []
    for masker in ("none", "rt"):
        for seed in seeds:
            flip = rng.random(len(token_ids)) < (0.3 if masker == "none" else 0.2)
            pred = np.where(flip, rng.integers(0, 3, len(token_ids)), labels)
            rows += [{"task": "lid", "model": "m", "masker": masker, "seed": seed, "example_id": i,
                      "label": int(y), "prediction": int(p)} for i, y, p in zip(token_ids, labels, pred, strict=True)]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    got = multibootstrap(frame, baseline="none", metric_by_task={"lid": metric}, n_boot=n_boot, alpha=alpha,
                         seed=7).iloc[0]

    # The plain loop: sentences in sorted id order, the same streams as the documented definition.
    sentences = sorted(words)
    tokens_of = {s: [i for i, t in enumerate(token_ids) if t.rsplit(":", 1)[0] == s] for s in sentences}
    pred_of = {(m, s): frame[(frame.masker == m) & (frame.seed == s)].set_index("example_id").loc[token_ids, "prediction"]
               .to_numpy() for m in ("none", "rt") for s in seeds}
    fn = get_metric(metric)
    kw = {"num_labels": 3} if metric != "accuracy" else {}
    draws = np.concatenate(example_draws(7, "lid", n_boot, n_sent))
    seed_idx = stable_rng(7, "multibootstrap-seeds", "lid", "m", "rt", "none").integers(0, len(seeds), (n_boot, len(seeds)))
    deltas = []
    for b in range(n_boot):
        toks = [t for j in draws[b] for t in tokens_of[sentences[j]]]
        drawn = [seeds[i] for i in seed_idx[b]]
        treat = np.mean([fn(labels[toks], pred_of[("rt", s)][toks], **kw) for s in drawn])
        base = np.mean([fn(labels[toks], pred_of[("none", s)][toks], **kw) for s in drawn])
        deltas.append(treat - base)
    full = np.mean([fn(labels, pred_of[("rt", s)], **kw) - fn(labels, pred_of[("none", s)], **kw) for s in seeds])
    assert got["n_examples"] == n_sent and got["n_pairs"] == len(seeds)
    assert got["estimate"] == pytest.approx(full, abs=1e-12)
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert got["p_one_sided"] == pytest.approx(np.mean(np.asarray(deltas) <= 0), abs=1e-12)
