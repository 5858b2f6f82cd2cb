"""Generation metrics from per-example statistics (analysis/textmetrics.py), each against an
independent implementation: sacrebleu's corpus_bleu / corpus_chrf and its PairedTest
(--paired-bs, --paired-ar), rouge-score, and the JFLEG authors' GLEU scorer (its outputs on
fixed corpora, in data/jfleg_gleu_scorer.json). Corpora are random, with different numbers of references per example,
empty and one-word hypotheses, so higher n-gram orders run empty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis import textmetrics as tm

sacrebleu = pytest.importorskip("sacrebleu")
JFLEG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "jfleg"

WORDS = ("the cat sat on a mat , . dog runs fast Big well-known it's 3.5 ( ) ! "
         "house blue very really ran is was").split()


def sentence(rng, lo=0, hi=12) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi + 1)))


def edit(rng, text: str) -> str:
    """A hypothesis near a reference: drop, swap and insert words."""
    words = [w for w in text.split() if rng.random() > 0.2]
    if len(words) > 2 and rng.random() < 0.5:
        i = rng.integers(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    if rng.random() < 0.5:
        words.insert(rng.integers(len(words) + 1), str(rng.choice(WORDS)))
    return " ".join(words)


def corpus(seed: int, n: int = 40, max_refs: int = 4, same_refs: bool = False):
    """(hypotheses, references per example, sources): 1..max_refs references each."""
    rng = np.random.default_rng(seed)
    hyps, refs, srcs = [], [], []
    for i in range(n):
        k = max_refs if same_refs else int(rng.integers(1, max_refs + 1))
        r = [sentence(rng, 1) for _ in range(k)]
        refs.append(r)
        srcs.append(edit(rng, r[0]))
        hyps.append("" if i == 3 else str(rng.choice(WORDS)) if i == 5 else edit(rng, r[rng.integers(k)]))
    return hyps, refs, srcs


def streams(refs):
    """sacrebleu's layout: one stream per reference position, None where an example has fewer."""
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def stats_of(metric, hyps, refs, srcs=None):
    srcs = srcs or [None] * len(hyps)
    return [tm.example_stats(metric, h, r, s) for h, r, s in zip(hyps, refs, srcs, strict=True)]


SACRE = {"bleu": lambda h, r: sacrebleu.corpus_bleu(h, streams(r)).score,
         "chrf": lambda h, r: sacrebleu.corpus_chrf(h, streams(r)).score}


@pytest.mark.parametrize("metric", sorted(SACRE))
@pytest.mark.parametrize("seed", range(6))
def test_corpus_score_equals_sacrebleu(metric, seed):
    hyps, refs, _ = corpus(seed, n=[40, 3, 1, 25, 60, 10][seed])
    assert tm.corpus_score(metric, stats_of(metric, hyps, refs)) == pytest.approx(
        SACRE[metric](hyps, refs), abs=1e-9, rel=0)


def recase(rng, text: str) -> str:
    """The same words, each upper-cased, capitalised or left as it is at random."""
    return " ".join(w.upper() if r < 0.2 else w.capitalize() if r < 0.5 else w
                    for w, r in zip(text.split(), rng.random(len(text.split())), strict=True))


LOWERCASED = {"bleu": sacrebleu.metrics.BLEU, "chrf": sacrebleu.metrics.CHRF}


@pytest.mark.parametrize("metric", sorted(LOWERCASED))
@pytest.mark.parametrize("seed", range(3))
def test_lowercase_equals_sacrebleus_lowercase_option(metric, seed):
    """tasks[].lowercase: the statistics of lower-cased text give sacrebleu's ``lowercase=True``
    score to 1e-9 on a corpus whose hypotheses and references differ in case, where the cased
    score is lower; the signature says case:lc, as sacrebleu's does."""
    rng = np.random.default_rng(100 + seed)
    hyps, refs, _ = corpus(seed, n=30, max_refs=3, same_refs=True)
    hyps, refs = [recase(rng, h) for h in hyps], [[recase(rng, x) for x in r] for r in refs]
    scorer = LOWERCASED[metric](lowercase=True)
    expected = scorer.corpus_score(hyps, streams(refs)).score
    stats = [tm.example_stats(metric, h, r, lowercase=True) for h, r in zip(hyps, refs, strict=True)]
    assert tm.corpus_score(metric, stats) == pytest.approx(expected, abs=1e-9, rel=0)
    assert tm.corpus_score(metric, stats_of(metric, hyps, refs)) < expected - 1  # cased: case differences are misses
    assert tm.signature(metric, n_refs=3, lowercase=True) == str(scorer.get_signature())
    assert "case:lc" in tm.signature(metric, 3, lowercase=True) and "case:mixed" in tm.signature(metric, 3)


@pytest.mark.parametrize("metric", sorted(SACRE))
def test_corpus_score_edge_cases_equal_sacrebleu(metric):
    cases = [
        (["a"], [["a b c d"]]),                           # order 2..4 without n-grams: BLEU 0
        ([""], [["the cat"]]),                            # empty hypothesis
        (["x y z w v"], [["a b c d e"]]),                 # no match at all
        (["the cat sat on the mat"], [["the cat sat on the mat"]]),  # perfect
        (["the cat sat"], [["dog", "the cat sat on a mat today"]]),  # closest ref length
        (["the cat ran home fast"], [["the cat sat on a mat"]]),  # 3-, 4-grams: no match, smoothed
        (["the cat ran home fast", "a dog"], [["the cat sat on a mat"], ["a dog barks"]]),
    ]
    for hyps, refs in cases:
        assert tm.corpus_score(metric, stats_of(metric, hyps, refs)) == pytest.approx(
            SACRE[metric](hyps, refs), abs=1e-9, rel=0), (hyps, refs)


@pytest.mark.parametrize("metric", sorted(SACRE))
def test_bootstrap_resample_of_rows_equals_sacrebleu_on_resampled_text(metric):
    hyps, refs, _ = corpus(11, n=30)
    stats = np.asarray(stats_of(metric, hyps, refs))
    draws = np.random.default_rng(0).integers(0, 30, (5, 30))
    batch = tm.resampled_scores(metric, [stats], draws)[:, 0]
    for d, got in zip(draws, batch, strict=True):
        expected = SACRE[metric]([hyps[i] for i in d], [refs[i] for i in d])
        assert tm.corpus_score(metric, stats[d]) == pytest.approx(expected, abs=1e-9, rel=0)
        assert got == pytest.approx(expected, abs=1e-9, rel=0)


def test_rouge_l_equals_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    hyps, refs, _ = corpus(2, n=30)
    per = [scorer.score_multi(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    # score_multi keeps the reference with the highest F; recomputed here one by one
    best = [max(scorer.score(t, h)["rougeL"].fmeasure for t in r) for h, r in zip(hyps, refs, strict=True)]
    np.testing.assert_array_equal(per, best)
    stats = stats_of("rougeL", hyps, refs)
    np.testing.assert_array_equal(np.asarray(stats)[:, 0], per)
    assert tm.corpus_score("rougeL", stats) == pytest.approx(100 * np.mean(per), abs=1e-12)
    d = np.random.default_rng(1).integers(0, 30, 30)
    assert tm.corpus_score("rougeL", np.asarray(stats)[d]) == pytest.approx(
        100 * np.mean(np.asarray(per)[d]), abs=1e-12)


def test_exact_match():
    stats = stats_of("exact_match", ["a b", " a b ", "c", "A b"], [["x", "a b"], ["a b"], ["d"], ["a b"]])
    assert [s[0] for s in stats] == [1.0, 1.0, 0.0, 0.0]
    assert tm.corpus_score("exact_match", stats) == 50.0


# --- GLEU against the JFLEG authors' scorer ----------------------------------------------
# The expected values were produced by the JFLEG authors' scorer (eval/gleu.py of
# github.com/keisks/jfleg, commit ee06ff8), unrounded — the mean of its 500 iteration scores, as
# it averages them — on the corpora stored beside them in data/jfleg_gleu_scorer.json (random
# corpora with 1, 2 and 4 references, empty and one-word hypotheses; three resamples of a fourth;
# the JFLEG dev source). The scorer is not shipped: its licence (CC BY-NC-SA) is not MIT's.
# To regenerate: run that scorer's GLEU(4).run_iterations(500) on each corpus, written as its
# src/hyp/ref files, keeping the raw iteration scores (get_gleu_stats replaced by the identity).

SCORER = json.loads((Path(__file__).parent / "data" / "jfleg_gleu_scorer.json").read_text())


@pytest.mark.parametrize("index", range(len(SCORER["corpora"])))
def test_gleu_equals_the_jfleg_scorer(index):
    c = SCORER["corpora"][index]
    assert 0 < c["gleu"] < 100
    got = tm.corpus_score("gleu", stats_of("gleu", c["hypotheses"], c["references"], c["sources"]))
    assert got == pytest.approx(c["gleu"], abs=1e-9, rel=0)


def test_gleu_resample_equals_the_scorer_on_the_resampled_corpus():
    c = SCORER["resample"]
    stats = tm.stats_matrix(stats_of("gleu", c["hypotheses"], c["references"], c["sources"]))
    draws = np.asarray(c["draws"])
    batch = tm.resampled_scores("gleu", [stats, stats[::-1]], draws)
    for b, d in enumerate(draws):
        assert batch[b, 0] == pytest.approx(c["gleu"][b], abs=1e-9, rel=0)
        assert tm.corpus_score("gleu", stats[d]) == pytest.approx(c["gleu"][b], abs=1e-9, rel=0)
        assert batch[b, 1] == pytest.approx(tm.corpus_score("gleu", stats[::-1][d]), abs=1e-9)


@pytest.mark.skipif(not (JFLEG / "dev").is_dir(), reason="needs ../shared/data/jfleg")
def test_gleu_of_the_jfleg_dev_source_equals_the_scorer():
    """The "SOURCE" row of JFLEG's leaderboard: the uncorrected source as the hypothesis.
    The scorer prints 0.381965 here; the README's table (an older scorer run) says 38.21."""
    dev = JFLEG / "dev"
    srcs = (dev / "dev.src").read_text().splitlines()
    refs = list(zip(*[(dev / f"dev.ref{j}").read_text().splitlines() for j in range(4)], strict=True))
    got = tm.corpus_score("gleu", stats_of("gleu", srcs, [list(r) for r in refs], srcs))
    assert got == pytest.approx(SCORER["jfleg_dev_source"], abs=1e-9, rel=0)
    assert round(got, 4) == 38.1965


def test_gleu_leaves_the_global_random_state_alone():
    import random

    hyps, refs, srcs = corpus(9, n=10, max_refs=2, same_refs=True)
    random.seed(5)
    state = random.getstate()
    tm.corpus_score("gleu", stats_of("gleu", hyps, refs, srcs))
    assert random.getstate() == state


def test_gleu_with_different_reference_counts_draws_per_example():
    """Not the scorer's case (it takes one count); the generalisation draws randint(0, m_i - 1)."""
    import random

    hyps, refs, srcs = corpus(7, n=12, max_refs=3)
    stats = tm.stats_matrix(stats_of("gleu", hyps, refs, srcs))
    assert np.isnan(stats).any()  # rows padded to the longest
    rnd, total = random.Random(), []
    per = [np.asarray(s[1:], float).reshape(-1, 10) for s in stats_of("gleu", hyps, refs, srcs)]
    for j in range(500):
        rnd.seed(j * 101)
        pick = sum(p[rnd.randint(0, len(p) - 1)] for p in per)
        c, r, num, den = pick[0], pick[1], pick[2::2], pick[3::2]
        total.append(0.0 if (pick == 0).any() else np.exp(min(0, 1 - r / c) + np.mean(np.log(num / den))))
    assert tm.corpus_score("gleu", stats) == pytest.approx(100 * np.mean(total), abs=1e-9)


# --- paired tests against sacrebleu ------------------------------------------------------


def sacrebleu_paired(test, metric, baseline, system, refs, n_samples):
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    m = BLEU() if metric == "bleu" else CHRF()
    sigs, scores = PairedTest([("baseline", baseline), ("system", system)], {metric: m},
                              streams(refs), test_type=test, n_samples=n_samples)()
    (name,) = [k for k in scores if k != "System"]
    return scores[name][0], scores[name][1]


@pytest.mark.parametrize("metric", sorted(SACRE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_bootstrap_equals_sacrebleu(metric, seed, monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    hyps, refs, _ = corpus(20 + seed, n=50)
    rng = np.random.default_rng(seed)
    other = [edit(rng, r[0]) if rng.random() < 0.6 else h for h, r in zip(hyps, refs, strict=True)]
    base, sys_ = sacrebleu_paired("bs", metric, hyps, other, refs, 1000)
    res = tm.paired_bootstrap(stats_of(metric, hyps, refs), stats_of(metric, other, refs), metric)
    assert (res.score_baseline, res.score_system) == pytest.approx((base.score, sys_.score), abs=1e-9)
    assert res.p_value == sys_.p_value  # same resamples, same p (sacrebleu's float32 sums aside)
    # sacrebleu sums the resampled statistics in float32: means and CIs agree to ~1e-5 points
    assert res.mean_system == pytest.approx(sys_.mean, abs=1e-4)
    assert res.ci_system == pytest.approx(sys_.ci, abs=1e-4)
    assert res.mean_baseline == pytest.approx(base.mean, abs=1e-4)
    assert res.ci_baseline == pytest.approx(base.ci, abs=1e-4)


@pytest.mark.parametrize("metric", sorted(SACRE))
@pytest.mark.parametrize("seed", [0, 1])
def test_paired_ar_equals_sacrebleu(metric, seed, monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    hyps, refs, _ = corpus(30 + seed, n=40)
    rng = np.random.default_rng(seed)
    other = [edit(rng, r[0]) if rng.random() < 0.5 else h for h, r in zip(hyps, refs, strict=True)]
    base, sys_ = sacrebleu_paired("ar", metric, hyps, other, refs, 2000)
    res = tm.paired_ar(stats_of(metric, hyps, refs), stats_of(metric, other, refs), metric,
                       n_samples=2000)
    assert res.score_system == pytest.approx(sys_.score, abs=1e-9)
    assert res.p_value == sys_.p_value
    assert 0 < res.p_value <= 1


def test_p_values_small_for_a_real_difference_and_sacrebleus_for_identical_outputs(monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    hyps, refs, _ = corpus(40, n=80)
    good = stats_of("bleu", [r[0] for r in refs], refs)
    bad = stats_of("bleu", hyps, refs)
    assert tm.paired_bootstrap(bad, good, "bleu").p_value < 0.01
    assert tm.paired_ar(bad, good, "bleu", n_samples=2000).p_value < 0.01
    # A system against itself: sacrebleu counts "> observed" with +1, so identical outputs get
    # the smallest p, 1 / (n + 1), in both tests; reproduced, and flagged by the frame helper.
    for test, fn in (("bs", tm.paired_bootstrap), ("ar", tm.paired_ar)):
        _, same = sacrebleu_paired(test, "bleu", hyps, hyps, refs, 500)
        assert fn(bad, bad, "bleu", n_samples=500).p_value == same.p_value == 1 / 501


def test_gleu_and_rouge_paired_tests_use_the_generic_routes():
    """The mixture route (AR) equals scoring each pseudo-system's rows directly."""
    hyps, refs, srcs = corpus(8, n=25, max_refs=4, same_refs=True)
    rng = np.random.default_rng(0)
    other = [edit(rng, r[0]) for r in refs]
    for metric in ("gleu", "rougeL"):
        a = tm.stats_matrix(stats_of(metric, hyps, refs, srcs))
        b = tm.stats_matrix(stats_of(metric, other, refs, srcs))
        sel = np.random.default_rng(12345).integers(2, size=(7, 25), dtype=bool)
        direct = [tm.corpus_score(metric, np.where(s[:, None], a, b)) for s in sel]
        np.testing.assert_allclose(tm.get_text_metric(metric).mixture_scores(a, b, sel), direct,
                                   atol=1e-9)
        res = tm.paired_ar(a, b, metric, n_samples=300)
        assert res.score_baseline == pytest.approx(tm.corpus_score(metric, a))
        boot = tm.paired_bootstrap(a, b, metric, n_samples=200)
        assert 0 < boot.p_value <= 1 and boot.ci_system >= 0


# --- interface and errors ----------------------------------------------------------------


def test_registry_signatures_and_errors():
    assert set(tm.TEXT_METRICS.names()) == {"bleu", "chrf", "rougeL", "gleu", "exact_match"}
    bleu = sacrebleu.metrics.BLEU()
    bleu.corpus_score(["a b"], [["a b"], ["a c"]])
    assert tm.signature("bleu", n_refs=2) == str(bleu.get_signature())
    assert tm.signature("chrf", n_refs=-1).startswith("nrefs:var|")
    assert "iter:500" in tm.signature("gleu") and "stem:yes" in tm.signature("rougeL")
    with pytest.raises(KeyError, match="Did you mean 'bleu'"):
        tm.corpus_score("blue", [[1.0]])
    with pytest.raises(ValueError, match="needs the source"):
        tm.example_stats("gleu", "a", ["a"])
    with pytest.raises(ValueError, match="non-empty list"):
        tm.example_stats("bleu", "a", [])
    with pytest.raises(ValueError, match="bleu: every example needs 10 statistics"):
        tm.corpus_score("bleu", [[1.0] * 10, [1.0] * 9])
    with pytest.raises(ValueError, match="chrf: every example needs 18 statistics.*rows of 10"):
        tm.corpus_score("chrf", [[1.0] * 10])  # BLEU's statistics scored as chrF
    with pytest.raises(ValueError, match=r"gleu: every example needs \[n_refs"):
        tm.corpus_score("gleu", [[2.0] + [1.0] * 10])  # says 2 references, holds 1
    with pytest.raises(ValueError, match="same examples"):
        tm.paired_bootstrap([[1.0]] * 3, [[1.0]] * 4, "exact_match")
    # the store keeps a row as JSON text
    assert tm.corpus_score("exact_match", ["[1.0]", "[0.0]"]) == 50.0


E2E = JFLEG.parent / "e2e" / "testset_w_refs.csv"


@pytest.mark.slow  # ~8 s: sacrebleu's PairedTest re-reads 4,693 references per metric
@pytest.mark.skipif(not E2E.is_file(), reason="needs ../shared/data/e2e")
def test_e2e_test_set_bleu_chrf_and_paired_bootstrap_equal_sacrebleu(monkeypatch):
    """E2E's 630 test inputs with 1-14 references each; two systems made from the references."""
    import pandas as pd

    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    refs = [list(r) for r in pd.read_csv(E2E).groupby("mr", sort=False)["ref"].apply(list)]
    assert len(refs) == 630 and sum(map(len, refs)) == 4693
    rng = np.random.default_rng(0)
    base = [" ".join(w for w in r[0].split() if rng.random() > 0.3) for r in refs]
    other = [" ".join(w for w in r[-1].split() if rng.random() > 0.29) for r in refs]
    for metric in ("bleu", "chrf"):
        sb, so = stats_of(metric, base, refs), stats_of(metric, other, refs)
        assert tm.corpus_score(metric, sb) == pytest.approx(SACRE[metric](base, refs), abs=1e-9, rel=0)
        _, theirs = sacrebleu_paired("bs", metric, base, other, refs, 1000)
        assert tm.paired_bootstrap(sb, so, metric).p_value == theirs.p_value
