"""Generation metrics as per-example sufficient statistics, and the corpus metric recomputed
from them: the form every resampling test (multibootstrap, paired bootstrap, paired
approximate randomization) needs. Torch-free; sacrebleu and rouge-score are imported on use.

::

    stats = [example_stats("bleu", hyp, refs) for hyp, refs in zip(hyps, refs_per_example)]
    corpus_score("bleu", stats)            # == sacrebleu.corpus_bleu(...).score
    paired_bootstrap(stats_a, stats_b, "bleu")   # == sacrebleu --paired-bs

Every corpus score is in **points, 0-100** (BLEU and chrF on sacrebleu's own scale; ROUGE-L,
GLEU and exact match x100), so a difference of 1.0 is one BLEU point.

``lowercase=True`` (``tasks[].lowercase``) compares lower-cased text, as sacrebleu's
``BLEU(lowercase=True)`` / ``CHRF(lowercase=True)`` do — which lower-case hypothesis and
references before tokenising, exactly what ``example_stats`` does here for every metric — and
says so in the signature (``case:lc``). The corpus score from the statistics is the same
function either way.

| metric | per-example statistics (``example_stats``) | corpus score |
|---|---|---|
| ``bleu`` | sacrebleu's: ``[hyp_len, ref_len, match_1..4, total_1..4]``; ``ref_len`` is the reference length closest to the hypothesis (the shorter on a tie), the n-gram matches are clipped by the maximum count over references | BLEU of the summed statistics (13a, mixed case, exp smoothing) |
| ``chrf`` | sacrebleu's: ``[hyp, ref, match]`` counts per character n-gram order 1..6, of the reference with the best sentence chrF | chrF (beta 2) of the summed statistics |
| ``rougeL`` | ``[F]``: rouge-score's ROUGE-L F of the best reference (``score_multi``: max F) | 100 x mean F |
| ``gleu`` | ``[n_refs, (hyp_len, ref_len, num_1, den_1, ..., num_4, den_4) per reference]`` | GLEU as the JFLEG scorer computes it (below) |
| ``exact_match`` | ``[1.0]`` if the hypothesis equals a reference (surrounding white space stripped), else ``[0.0]`` | 100 x mean |

GLEU (Napoles et al. 2015, with the 2016 update for several references) follows the JFLEG
authors' scorer ``eval/gleu.py`` (github.com/keisks/jfleg) line by line: white-space tokens; per
n-gram order, ``num = max(|h & r| - |h & (s - r)|, 0)`` (hypothesis n-grams matching the
reference, minus those matching source n-grams that the reference dropped) and
``den = max(len(h) + 1 - n, 0)``; a corpus GLEU ``exp(min(0, 1 - r/c) + mean_n log(num/den))``
(0 if any summed statistic is 0); and, the 2016 update, 500 iterations each choosing one
reference per sentence at random (Python's Mersenne Twister seeded ``101 j``, then ``randint(0, n_refs - 1)`` per
sentence in corpus order), the score being the mean over iterations. The choice depends on a
sentence's position, so a resample is scored as the scorer would score the resampled corpus.
Sentences with different numbers of references draw ``randint(0, n_refs_i - 1)`` each (the
scorer itself assumes one count). GLEU is not additive over examples: its resampling costs
about 500 corpus evaluations per resample.

Resamples: ``resampled_scores`` scores several runs under shared example draws (the
multibootstrap); ``paired_bootstrap`` and ``paired_ar`` reproduce sacrebleu's ``--paired-bs``
and ``--paired-ar`` (``sacrebleu/significance.py``): the same generator calls, so the same
resamples and p-values for the same seed (sacrebleu sums the bootstrap's statistics in float32;
here they are summed in float64, so resampled scores agree to ~1e-5 points, not bit for bit).
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from study.registry import Registry

TEXT_METRICS = Registry("generation metric")
GLEU_ITERATIONS = 500  # the JFLEG scorer's default number of reference draws
GLEU_ORDER = 4
CHUNK = 256  # resamples scored per matrix product


class TextMetric:
    """One generation metric: per-example statistics and the corpus score from them."""

    name = ""
    width: int | None = None  # numbers per example (None: GLEU's 1 + 10 per reference)
    additive = True  # the corpus score is a function of the summed statistics and the count

    def example_stats(self, hypothesis: str, references: list[str], source: str | None) -> list[float]:
        raise NotImplementedError

    def from_sums(self, sums: np.ndarray, n) -> np.ndarray:
        """The corpus score (points) of summed statistics ``sums`` (..., k) over ``n`` examples."""
        raise NotImplementedError

    def signature(self, n_refs=None, lowercase: bool = False) -> str:
        """The reproducibility signature; ``lowercase``: the text was lower-cased (``case:lc``)."""
        raise NotImplementedError

    # Non-additive metrics (GLEU) override the two scoring routes below.
    def scores(self, stats: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Corpus scores of the runs ``stats`` (R, N, k) on the example draws ``draws`` (B, n):
        row b scores examples ``draws[b]`` in that order. Returns (B, R)."""
        r, n_all, k = stats.shape
        flat = stats.transpose(1, 0, 2).reshape(n_all, r * k)
        out = []
        for start in range(0, len(draws), CHUNK):
            d = draws[start:start + CHUNK]
            b = d.shape[0]
            counts = np.bincount((d + (np.arange(b) * n_all)[:, None]).ravel(),
                                 minlength=b * n_all).reshape(b, n_all).astype(float)
            out.append(self.from_sums((counts @ flat).reshape(b, r, k), d.shape[1]))
        return np.concatenate(out, axis=0)

    def mixture_scores(self, first: np.ndarray, second: np.ndarray, take_first: np.ndarray) -> np.ndarray:
        """Scores of pseudo-systems that take example i from ``first`` (N, k) where
        ``take_first[t, i]`` and from ``second`` otherwise (approximate randomization). (T,)"""
        sel = take_first.astype(float)
        return self.from_sums(sel @ first + (1.0 - sel) @ second, first.shape[0])


def _sacrebleu_metric(kind: str, lowercase: bool = False):
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(lowercase=lowercase) if kind == "bleu" else CHRF(lowercase=lowercase)


@functools.cache
def _cached_sacrebleu(kind: str):
    return _sacrebleu_metric(kind)


def _sacrebleu_signature(kind: str, n_refs, lowercase: bool = False) -> str:
    metric = _sacrebleu_metric(kind, lowercase)
    metric.num_refs = n_refs  # None leaves nrefs out; -1 prints "var", as sacrebleu does
    return str(metric.get_signature())


@TEXT_METRICS.register("bleu")
class Bleu(TextMetric):
    """sacrebleu's corpus BLEU with its defaults (13a, mixed case, exp smoothing); 0-100."""

    name = "bleu"
    width = 10

    def example_stats(self, hypothesis, references, source=None):
        stats = _cached_sacrebleu("bleu")._extract_corpus_statistics(
            [hypothesis], [[r] for r in references])
        return [float(x) for x in stats[0]]

    def from_sums(self, sums, n):
        s = np.asarray(sums, dtype=float)
        sys_len, ref_len = s[..., 0], s[..., 1]
        correct, total = s[..., 2:2 + 4], s[..., 6:6 + 4]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            bp = np.where(sys_len < ref_len,
                          np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
            # exp smoothing (mteval-v13a): the k-th order without a match gets 100 / (2^k total)
            smooth = 2.0 ** np.cumsum(correct == 0, axis=-1)
            prec = np.where(correct == 0, 100.0 / (smooth * total), 100.0 * correct / total)
            score = bp * np.exp(np.sum(np.log(prec), axis=-1) / 4)
        # sacrebleu: 0 without any match, and 0 once an order has no n-gram at all (its
        # precision is 0, whose log it takes as -9999999999)
        ok = np.any(correct > 0, axis=-1) & np.all(total > 0, axis=-1)
        return np.where(ok, score, 0.0)

    def signature(self, n_refs=None, lowercase=False):
        return _sacrebleu_signature("bleu", n_refs, lowercase)


@TEXT_METRICS.register("chrf")
class Chrf(TextMetric):
    """sacrebleu's corpus chrF with its defaults (6 character orders, no words, beta 2); 0-100."""

    name = "chrf"
    width = 18

    def example_stats(self, hypothesis, references, source=None):
        stats = _cached_sacrebleu("chrf")._extract_corpus_statistics(
            [hypothesis], [[r] for r in references])
        return [float(x) for x in stats[0]]

    def from_sums(self, sums, n):
        s = np.asarray(sums, dtype=float)
        n_hyp, n_ref, n_match = s[..., 0::3], s[..., 1::3], s[..., 2::3]
        factor = 2.0 ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(n_hyp > 0, n_match / n_hyp, 0.0)
            rec = np.where(n_ref > 0, n_match / n_ref, 0.0)
            effective = (n_hyp > 0) & (n_ref > 0)
            n_eff = effective.sum(axis=-1)
            avg_prec = np.where(n_eff > 0, np.sum(prec * effective, axis=-1) / n_eff, 0.0)
            avg_rec = np.where(n_eff > 0, np.sum(rec * effective, axis=-1) / n_eff, 0.0)
            score = (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)
        return np.where(avg_prec + avg_rec > 0, 100 * score, 0.0)

    def signature(self, n_refs=None, lowercase=False):
        return _sacrebleu_signature("chrf", n_refs, lowercase)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - a dependency of the project
        return "?"


@TEXT_METRICS.register("rougeL")
class RougeL(TextMetric):
    """rouge-score's ROUGE-L F (Porter stemmer, its default tokenizer), best reference; 0-100."""

    name = "rougeL"
    width = 1

    def example_stats(self, hypothesis, references, source=None):
        return [float(_rouge_scorer().score_multi(list(references), hypothesis)["rougeL"].fmeasure)]

    def from_sums(self, sums, n):
        return 100.0 * np.asarray(sums, dtype=float)[..., 0] / n

    def signature(self, n_refs=None, lowercase=False):
        # rouge-score's tokenizer lower-cases whatever it is given: lowercase changes nothing
        refs = "" if n_refs is None else f"nrefs:{'var' if n_refs == -1 else n_refs}|"
        return (f"{refs}type:rougeL|stem:yes|multiref:max-f|score:100*mean-f|"
                f"rouge-score:{_version('rouge-score')}")


@TEXT_METRICS.register("exact_match")
class ExactMatch(TextMetric):
    """Share of hypotheses equal to one of their references (strip()ped), in points."""

    name = "exact_match"
    width = 1

    def example_stats(self, hypothesis, references, source=None):
        return [float(hypothesis.strip() in {r.strip() for r in references})]

    def from_sums(self, sums, n):
        return 100.0 * np.asarray(sums, dtype=float)[..., 0] / n

    def signature(self, n_refs=None, lowercase=False):
        refs = "" if n_refs is None else f"nrefs:{'var' if n_refs == -1 else n_refs}|"
        return f"{refs}type:exact_match|strip:yes|case:{'lc' if lowercase else 'mixed'}|multiref:any|score:100*mean"


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) + 1 - n))


@functools.lru_cache(maxsize=16)
def _gleu_reference_draws(n_refs: tuple) -> np.ndarray:
    """(GLEU_ITERATIONS, n) reference choices, the JFLEG scorer's: seeded with ``j * 101``
    then one ``randint(0, n_refs - 1)`` per sentence in order. ``n_refs``: ``("all", n, m)``
    when every sentence has m references (a short cache key), else the count per sentence."""
    counts = [n_refs[2]] * n_refs[1] if n_refs and n_refs[0] == "all" else list(n_refs)
    rnd = random.Random()
    out = np.empty((GLEU_ITERATIONS, len(counts)), dtype=np.int64)
    for j in range(GLEU_ITERATIONS):
        rnd.seed(j * 101)
        out[j] = [rnd.randint(0, m - 1) for m in counts]
    return out


def _exact_dtype(counts: np.ndarray, n: int):
    """float32 when sums of ``n`` of these integer counts stay below 2^24, where float32
    integer arithmetic is exact (twice the speed of float64 products); else float64."""
    return np.float32 if float(np.max(counts, initial=0.0)) * n < 2**24 else np.float64


@functools.lru_cache(maxsize=2)
def _gleu_choice_all(n: int, m: int) -> np.ndarray:
    """One-hot (ITER, n, m) of the choices for n sentences with m references each."""
    return (_gleu_reference_draws(("all", n, m))[..., None] == np.arange(m)).astype(float)


def _gleu_from_sums(s: np.ndarray) -> np.ndarray:
    """The scorer's ``GLEU.gleu`` of summed statistics (..., 10): 0 if any is 0."""
    c, r = s[..., 0], s[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prec = np.sum(np.log(s[..., 2::2] / s[..., 3::2]), axis=-1) / GLEU_ORDER
        score = np.exp(np.minimum(0.0, 1 - r / c) + log_prec)
    return np.where(np.all(s != 0, axis=-1), score, 0.0)


@TEXT_METRICS.register("gleu")
class Gleu(TextMetric):
    """GLEU for grammatical error correction as the JFLEG scorer computes it; 0-100."""

    name = "gleu"
    additive = False

    def example_stats(self, hypothesis, references, source=None):
        if source is None:
            raise ValueError("gleu needs the source sentence: example_stats(..., source=...)")
        h = hypothesis.split()
        orders = range(1, GLEU_ORDER + 1)
        h_ng = [_ngram_counts(h, n) for n in orders]
        s_ng = [_ngram_counts(source.split(), n) for n in orders]
        out = [len(references)]
        for ref in references:
            r = ref.split()
            out += [len(h), len(r)]
            for n, hn, sn in zip(orders, h_ng, s_ng, strict=True):
                rn = _ngram_counts(r, n)
                # the scorer's |h & r| - |h & (s n-grams the reference dropped)|, floored at 0
                matched = sum(min(c, rn[g]) for g, c in hn.items() if g in rn)
                penalised = sum(min(c, sn[g]) for g, c in hn.items() if g in sn and g not in rn)
                out += [max(matched - penalised, 0), max(len(h) + 1 - n, 0)]
        return [float(x) for x in out]

    @staticmethod
    def _layout(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., N, 1 + 10 M) padded rows -> reference counts (..., N) and (..., N, M, 10)."""
        n_refs = stats[..., 0].astype(np.int64)
        per_ref = np.nan_to_num(stats[..., 1:], nan=0.0)
        return n_refs, per_ref.reshape(*per_ref.shape[:-1], -1, 10)

    @staticmethod
    def _choice(n_refs: np.ndarray) -> np.ndarray:
        """One-hot reference choices (ITER, n, m) for sentences with ``n_refs`` (n,) references."""
        if np.any(n_refs < 1):
            raise ValueError("gleu statistics: every example needs at least one reference")
        m = int(n_refs.max())
        if np.all(n_refs == m):  # the usual case: one matrix for every resample of the corpus
            return _gleu_choice_all(len(n_refs), m)
        draws = _gleu_reference_draws(tuple(int(x) for x in n_refs))
        return (draws[..., None] == np.arange(m)).astype(float)

    @staticmethod
    def _iteration_means(choice: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        """Mean over iterations of GLEU: ``choice`` (ITER, n, m), ``drawn`` (R, c, n, m, 10) the
        statistics of c resamples of R runs, rows in corpus order. Returns (c, R)."""
        runs, c, n, m = drawn.shape[:4]
        dtype = _exact_dtype(drawn, n)
        flat = drawn.transpose(2, 3, 1, 0, 4).reshape(n * m, c * runs * 10).astype(dtype)
        sums = choice.reshape(GLEU_ITERATIONS, n * m).astype(dtype, copy=False) @ flat
        sums = sums.astype(float).reshape(GLEU_ITERATIONS, c, runs, 10)
        return 100.0 * _gleu_from_sums(sums).mean(axis=0)

    def scores(self, stats, draws):
        n_refs, per_ref = self._layout(stats)  # (R, N), (R, N, M, 10)
        if np.any(n_refs != n_refs[:1]):
            raise ValueError("gleu: runs disagree on the number of references of some example")
        n_refs, (runs, n) = n_refs[0], (per_ref.shape[0], draws.shape[1])
        m = int(n_refs.max())
        if np.all(n_refs == m):
            # Every resample then makes the same choices by position: one product
            # (ITER, n m) @ (n m, resamples x runs x 10) per chunk of resamples.
            choice = self._choice(np.full(n, m))
            chunk = max(1, int(2e6 // (n * m * runs * 10)))
            return np.concatenate([self._iteration_means(choice, per_ref[:, d, :m])
                                   for d in np.array_split(draws, range(chunk, len(draws), chunk))])
        # different reference counts: each resample draws its own choices
        out = []
        for d in draws:
            choice = self._choice(n_refs[d])
            out.append(self._iteration_means(choice, per_ref[:, d[None], : choice.shape[2]])[0])
        return np.stack(out)

    def mixture_scores(self, first, second, take_first):
        # The rows keep their positions, so the reference choices are fixed: an iteration's sum
        # is second's plus, per example taken from first, that example's chosen difference.
        n_refs, a = self._layout(first)
        n_refs_b, b = self._layout(second)
        if np.any(n_refs != n_refs_b):
            raise ValueError("gleu: the two systems disagree on the number of references")
        choice = self._choice(n_refs)  # (ITER, n, M)
        m = choice.shape[2]
        base = np.einsum("jpr,prk->jk", choice, b[:, :m])  # (ITER, 10)
        delta = np.einsum("jpr,prk->pjk", choice, (a - b)[:, :m]).reshape(len(n_refs), -1)
        dtype = _exact_dtype(np.abs(delta), len(n_refs))
        delta = delta.astype(dtype)
        out = []
        for start in range(0, len(take_first), CHUNK):
            sel = take_first[start:start + CHUNK].astype(dtype)
            sums = base[None] + (sel @ delta).astype(float).reshape(len(sel), GLEU_ITERATIONS, 10)
            out.append(100.0 * _gleu_from_sums(sums).mean(axis=1))
        return np.concatenate(out)

    def signature(self, n_refs=None, lowercase=False):
        refs = "" if n_refs is None else f"nrefs:{'var' if n_refs == -1 else n_refs}|"
        case = "case:lc|" if lowercase else ""  # the JFLEG scorer compares the text as given
        return (f"{refs}type:gleu|{case}version:napoles2016|n:{GLEU_ORDER}|iter:{GLEU_ITERATIONS}|"
                "draws:python-seed-101j|tok:split|score:100*mean-over-iterations")


# --- the functional interface ------------------------------------------------------------


def get_text_metric(metric: str) -> TextMetric:
    """The registered metric ``metric`` (KeyError with did-you-mean on a miss)."""
    return TEXT_METRICS.get(metric)()


def is_text_metric(metric) -> bool:
    return metric in TEXT_METRICS


def example_stats(metric: str, hypothesis: str, references: Sequence[str],
                  source: str | None = None, lowercase: bool = False) -> list[float]:
    """Per-example sufficient statistics of ``metric`` (see the module's table); ``lowercase``:
    of the lower-cased texts (sacrebleu's ``lowercase=True``)."""
    m = get_text_metric(metric)
    if not isinstance(hypothesis, str):
        raise TypeError(f"{metric}: the hypothesis must be a string, got {type(hypothesis).__name__}")
    refs = [references] if isinstance(references, str) else list(references)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"{metric}: references must be a non-empty list of strings, got {references!r}")
    if lowercase:
        hypothesis, refs = hypothesis.lower(), [r.lower() for r in refs]
        source = None if source is None else source.lower()
    return m.example_stats(hypothesis, refs, source)


def stats_matrix(stats) -> np.ndarray:
    """(n, k) float array of per-example statistics. Rows may be lists, arrays or JSON strings
    (as the store keeps them); rows of different lengths (GLEU with different numbers of
    references) are padded with NaN."""
    if isinstance(stats, np.ndarray) and stats.ndim == 2:
        return stats.astype(float)
    rows = [np.asarray(json.loads(r) if isinstance(r, str) else r, dtype=float).ravel()
            for r in stats]
    if not rows:
        raise ValueError("no examples: the statistics are empty")
    k = max(len(r) for r in rows)
    out = np.full((len(rows), k), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _check_width(m: TextMetric, stats: np.ndarray) -> None:
    """Statistics that cannot be ``m``'s (another metric's, or a row cut short) are an error,
    never a wrong score."""
    k = stats.shape[-1]
    if m.width is not None and (k != m.width or np.isnan(stats).any()):
        raise ValueError(f"{m.name}: every example needs {m.width} statistics "
                         f"(example_stats({m.name!r}, ...)); got rows of {k} numbers, or rows "
                         "that differ in length or hold NaN")
    if m.width is None:  # gleu: [n_refs, 10 per reference], rows padded with NaN
        n_refs = stats[..., 0]
        if (k - 1) % 10 or np.isnan(n_refs).any() or np.any(n_refs < 1) \
                or np.any(1 + 10 * n_refs > k) or np.isnan(stats[..., :11]).any():
            raise ValueError(f"{m.name}: every example needs [n_refs, then 10 numbers per "
                             f"reference] (example_stats({m.name!r}, ...)); got rows of {k}")


def corpus_score(metric: str, stats) -> float:
    """The corpus ``metric`` (points, 0-100) recomputed from per-example ``stats`` (n, k)."""
    m = get_text_metric(metric)
    s = stats_matrix(stats)
    _check_width(m, s)
    if m.additive:
        return float(m.from_sums(s.sum(axis=0), s.shape[0]))
    return float(m.scores(s[None], np.arange(s.shape[0])[None])[0, 0])


def resampled_scores(metric: str, stats_by_run: Sequence, draws) -> np.ndarray:
    """Corpus scores (B, R) of R runs on the same example draws: ``stats_by_run`` R matrices
    (N, k) over the same examples in the same order, ``draws`` (B, n) example indices (a
    bootstrap resample per row). The multibootstrap's route: one product per chunk of draws."""
    m = get_text_metric(metric)
    mats = [stats_matrix(s) for s in stats_by_run]
    k = max(x.shape[1] for x in mats)
    stacked = np.full((len(mats), mats[0].shape[0], k), np.nan)
    for i, x in enumerate(mats):
        if x.shape[0] != stacked.shape[1]:
            raise ValueError(f"{metric}: runs cover different numbers of examples "
                             f"({x.shape[0]} vs {stacked.shape[1]})")
        stacked[i, :, : x.shape[1]] = x
    _check_width(m, stacked)
    return m.scores(stacked, np.atleast_2d(np.asarray(draws, dtype=np.int64)))


def signature(metric: str, n_refs: int | str | None = None, lowercase: bool = False) -> str:
    """The metric's reproducibility signature (sacrebleu's own for bleu and chrf). ``n_refs``:
    references per example (-1: a variable number), left out when None; ``lowercase``: the
    statistics are of lower-cased text (``case:lc``)."""
    m = get_text_metric(metric)
    return m.signature(n_refs, lowercase=True) if lowercase else m.signature(n_refs)


# --- paired tests of one system against another (sacrebleu's --paired-bs / --paired-ar) --


@dataclass(frozen=True)
class PairedResult:
    """One system against a baseline on the same examples. Scores in points; ``p_value`` as
    sacrebleu computes it, ``(#{resampled statistic > observed} + 1) / (n_samples + 1)``.
    Bootstrap only: ``mean_*`` and ``ci_*`` (half-width of the 95 % interval) of the resampled
    scores, sacrebleu's ``μ ± ci``."""

    test: str  # "paired-bs" | "paired-ar"
    metric: str
    score_baseline: float
    score_system: float
    p_value: float
    n_samples: int
    seed: int
    mean_baseline: float | None = None
    ci_baseline: float | None = None
    mean_system: float | None = None
    ci_system: float | None = None

    @property
    def difference(self) -> float:
        return self.score_system - self.score_baseline


def _p_value(resampled: np.ndarray, observed: float) -> float:
    return (int(np.sum(resampled > observed)) + 1) / (len(resampled) + 1)


def _mean_ci(scores: np.ndarray) -> tuple[float, float]:
    """sacrebleu's ``estimate_ci``: mean, half the width between the n//40-th order statistics."""
    s = np.sort(scores)
    low = len(s) // 40
    return float(s.mean()), float(0.5 * (s[len(s) - low - 1] - s[low]))


def _pair(stats_baseline, stats_system, metric):
    m = get_text_metric(metric)
    a, b = stats_matrix(stats_baseline), stats_matrix(stats_system)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{metric}: baseline has {a.shape[0]} examples, system {b.shape[0]}; "
                         "a paired test needs the same examples in the same order")
    return m, a, b


def paired_bootstrap(stats_baseline, stats_system, metric: str, n_samples: int = 1000,
                     seed: int = 12345) -> PairedResult:
    """sacrebleu's paired bootstrap (``--paired-bs``, Koehn 2004 as in Moses): the same
    ``default_rng(seed).choice`` resamples; p = share of centred resampled |differences| above
    the observed |difference| (with sacrebleu's +1)."""
    m, a, b = _pair(stats_baseline, stats_system, metric)
    n = a.shape[0]
    draws = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    full = resampled_scores(metric, [a, b], np.arange(n)[None])[0]
    boot = resampled_scores(metric, [a, b], draws)
    diffs = np.abs(boot[:, 1] - boot[:, 0])
    mean_b, ci_b = _mean_ci(boot[:, 0])
    mean_s, ci_s = _mean_ci(boot[:, 1])
    return PairedResult("paired-bs", metric, float(full[0]), float(full[1]),
                        _p_value(diffs - diffs.mean(), abs(full[1] - full[0])), n_samples, seed,
                        mean_b, ci_b, mean_s, ci_s)


def paired_ar(stats_baseline, stats_system, metric: str, n_samples: int = 10000,
              seed: int = 12345) -> PairedResult:
    """sacrebleu's paired approximate randomization (``--paired-ar``, Riezler & Maxwell 2005):
    each trial swaps the two systems' outputs on a random half of the examples (the same
    ``default_rng(seed).integers(2, ..., dtype=bool)`` draws); p = share of trials whose
    |difference| exceeds the observed one (with sacrebleu's +1)."""
    m, a, b = _pair(stats_baseline, stats_system, metric)
    n = a.shape[0]
    take_baseline = np.random.default_rng(seed).integers(2, size=(n_samples, n), dtype=bool)
    full = resampled_scores(metric, [a, b], np.arange(n)[None])[0]
    # sacrebleu: shuf_a = pos @ baseline + neg @ system, shuf_b = neg @ baseline + pos @ system
    shuf_a = m.mixture_scores(a, b, take_baseline)
    shuf_b = m.mixture_scores(a, b, ~take_baseline)
    return PairedResult("paired-ar", metric, float(full[0]), float(full[1]),
                        _p_value(np.abs(shuf_a - shuf_b), abs(full[1] - full[0])), n_samples, seed)
