"""The report: the results section of a careful paper, regenerated from the store alone.

Sections: title block, summary, design, results, comparisons, per-seed detail, power, what a
single run would have told you, audit, appendix (one row per run). Nothing is re-trained;
everything comes from the store and the protocol (:func:`gather` reads it once). The sections
build a neutral :class:`study.document.Document`; ``study/pdf.py`` renders it as a PDF and
``study/htmlreport.py`` as one self-contained HTML page.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.display import display_frame, fmt_points
from study import document as doc
from study.document import code, esc, para
from study.protocol import Protocol
from study.spec import expand
from study.store import Store


def _json_col(df: pd.DataFrame, col: str) -> list[dict]:
    return [json.loads(v) if isinstance(v, str) and v else {} for v in df.get(col, pd.Series(dtype=object))]


@dataclass
class ReportData:
    """Everything the report shows, read once from the store: the sections only format it (they
    never reach into the store, the scheduler or the pilot's machinery themselves)."""

    specs: list
    all_runs: pd.DataFrame
    runs: pd.DataFrame  # the done ones
    preds: pd.DataFrame
    events: pd.DataFrame
    counts: dict
    result: object  # analysis.AnalysisResult, None before any run is done
    plan: object = None  # the sequential design's state (study/scheduler/looks.py), if the protocol has one
    pilot: pd.DataFrame | None = None  # the latest recorded pilot table
    generations: pd.DataFrame | None = None  # generation tasks: the generated text per run and example
    references: pd.DataFrame | None = None  # generation tasks: task, example_id, ref_index, text


def gather(protocol: Protocol) -> ReportData:
    """Read the store once; every verdict and caveat comes from the :class:`analysis.AnalysisResult`."""
    from analysis import AnalysisWarning, analyze
    from study.pilot import recorded_pilot_table
    from study.scheduler.looks import store_plan

    specs = expand(protocol)
    with Store(protocol.store_path) as store:
        all_runs = store.load_runs(specs, status=None)
        store_grid = store.load_grid(specs)  # names a masker without a finished run
        runs = all_runs[all_runs.status == "done"].reset_index(drop=True)
        preds = store.load_predictions(specs)
        generations, references = store.load_generations(specs), store.load_references()
        events = store.events(set(all_runs.run_id))
        plan = store_plan(protocol, specs, store) if protocol.sequential is not None else None
    counts = {s: int((all_runs.status == s).sum()) for s in ("done", "failed", "running", "pending")}
    counts["pending"] += len(specs) - len(all_runs)
    result = None
    if len(runs):
        with warnings.catch_warnings():  # kept in result.warnings; the audit section prints them
            warnings.simplefilter("ignore", AnalysisWarning)
            result = analyze(store_grid, preds, **protocol.analysis_options())
    return ReportData(specs, all_runs, runs, preds, events, counts, result, plan,
                      recorded_pilot_table(protocol, specs), generations, references)


# -- sections -----------------------------------------------------------------------------------


def title_block(p: Protocol, counts: dict) -> list:
    total = sum(counts.values())
    return [
        para(f"Study report: {esc(p.name)}", "title"),
        para(f"Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by maskstudy from "
             f"{code(p.source)} "
             f"(sha256 {code(p.sha256[:16])}) and the store "
             f"{code(p.store)}.", "small"),
        para(f"Runs: <b>{counts['done']}</b> done, <b>{counts['failed']}</b> failed, "
             f"{counts['running']} running, {counts['pending']} pending, of {total} in the grid.", "small"),
        doc.spacer(),
    ]


def summary_section(p: Protocol, result, counts: dict) -> list:
    out = [para("1. Summary", "h1")]
    if p.description:
        out.append(para(f"<i>Question.</i> {esc(p.description.strip())}"))
    if result is None:
        return out + [para("No finished runs yet: run <code>study run</code> first.")]
    out.append(para(f"<i>Answer.</i> {esc(result.summary)}"))
    out += [para(f"<b>Caveat.</b> {esc(c)}", "small") for c in result.caveats]
    if counts["failed"]:
        out.append(para(f"<b>{counts['failed']} run(s) failed</b>; their seeds are missing from the pairs "
                        "(section 8 lists the errors).", "small"))
    return out


def design_section(p: Protocol, all_runs: pd.DataFrame) -> list:
    out = [para("2. Design", "h1")]
    out.append(para(f"Seeds: {', '.join(map(str, p.seeds))} ({len(p.seeds)}); every masker is paired with its "
                    "comparison masker by seed: same head initialisation, data order and dropout draws "
                    "(audited in section 8). Comparisons: "
                    + "; ".join(f"{esc(t)} vs {esc(b)}" for t, b in p.comparisons()) + "."))
    tasks = pd.DataFrame([{"Task": t.name, "Dataset": t.dataset, "Train examples": t.max_train_examples or "all",
                           "Eval examples": t.max_eval_examples or "all",
                           "Data": data_source(t)} for t in p.tasks])
    models = pd.DataFrame([{"Model": m.name, "Source": m.source, "Layers": m.num_hidden_layers or "all",
                            "Pooling (sequence tasks)": "mean of token states" if m.pooling == "mean"
                            else "model's own head",
                            "Replacement token": m.replacement_token or "default"} for m in p.models])
    maskers = pd.DataFrame([{"Masker": m.name, "Kind": m.kind,
                             "Parameters": ", ".join(f"{k}={v}" for k, v in m.to_dict().items()
                                                     if k not in ("name", "kind")) or "–"} for m in p.maskers])
    # Settings keep their protocol key names: that is where a reader changes them.
    training = pd.DataFrame([{"Setting (protocol key)": k, "Value": f"{v:g}".replace("-", doc.MINUS)
                              if isinstance(v, float) else ("–" if v is None else str(v))}
                             for k, v in p.training.__dict__.items()])
    out += [para("Tasks", "h2"), doc.table(tasks), para("Models", "h2"), doc.table(models),
            para("Maskers", "h2"), doc.table(maskers, widths=[0.2, 0.2, 0.6]),
            para("Training", "h2"), doc.table(training, widths=[0.3, 0.3])]
    from study.truncation import lines

    cuts = lines(all_runs[all_runs.status == "done"], p.training.max_length)
    if cuts:
        out += [para("Truncation", "h2"),
                para("What <code>training.max_length</code> cuts (tokens past it are never seen; for token tasks "
                     "the cut words are neither trained on nor scored): " + "; ".join(esc(c) for c in cuts) + ".",
                     "small")]
    envs = _json_col(all_runs[all_runs.status == "done"], "env")
    if envs:
        keys = ["device", "gpu", "torch", "cuda", "cudnn", "transformers", "datasets", "python", "hostname",
                "git_commit"]
        rows = [{"Item": k, "Values seen": ", ".join(sorted({str(e.get(k)) for e in envs}))} for k in keys]
        det = sorted({", ".join(f"{k}={v}" for k, v in sorted(e.get("determinism", {}).items())) for e in envs})
        rows.append({"Item": "determinism", "Values seen": "; ".join(det)})
        out += [para("Environment", "h2"),
                doc.table(pd.DataFrame(rows), widths=[0.2, 0.8])]
    return out


def data_source(t) -> str:
    """Where a task's data came from: a local folder, files, a hub name, or the package it ships with."""
    from study.tasks import DATASETS
    from study.tasks.glue import HUB_PATH

    if t.data_dir:
        return f"local folder {t.data_dir}"
    if t.train_file:
        return "files " + ", ".join(Path(f).name for f in (t.train_file, t.eval_file, t.validation_file) if f)
    if t.dataset.startswith("hf:"):
        return f"hub {t.dataset[3:]}"
    if t.dataset in DATASETS and DATASETS.get(t.dataset).data_dir == "none":
        return "built-in"
    if t.dataset.startswith("glue/"):
        return f"hub {HUB_PATH} ({t.dataset.split('/', 1)[1]})"
    return "hub"


def sequential_section(p: Protocol, plan) -> list:
    """The sequential design, its boundaries, and where each comparison stopped (``plan``: recomputed
    from the store by the same pure function ``study run`` used; its ``sequential`` events log the same)."""
    sq = p.sequential
    design = sq.design(p.analysis)
    m = len(plan.comparisons)
    rows = [{"Look": b["look"], "Seed pairs": b["n_pairs"], "α spent": f"{b['alpha_spent']:.2g}",
             "Efficacy: p ≤": f"{b['p_boundary']:.2g}", "Efficacy: |t| ≥": f"{b['t_boundary']:.2f}",
             "Futility: p >": ("–" if not sq.futility or b["look"] == len(sq.looks) or fp >= 1 else f"{fp:g}")}
            for b, fp in zip(design.boundaries(m), design.futility_p, strict=True)]
    stops = [_stop_row(c, plan.decisions.get(c)) for c in plan.comparisons]
    margin = p.analysis.margin
    return [
        para("Sequential design", "h2"),
        para(f"Seeds ran look by look: at {', '.join(map(str, sq.looks))} seed pairs every comparison still "
             f"undecided was tested; decided ones stopped and their runs for later seeds were never started "
             f"({len(plan.stopped)} run(s)). Alpha spending: {'O’Brien–Fleming' if sq.spending == 'obf' else 'Pocock'}"
             f"-type (Lan–DeMets), family-wise α = {p.analysis.alpha:g} over the {m} comparisons with Holm’s "
             f"step-down (the boundaries below are for the first rejection, α/{m}; each rejection raises the "
             "others’ level); "
             + (f"equivalence (TOST within ±{margin * 100:g} pts) also stops a comparison; " if margin else "")
             + ("futility: an interim p-value above the futility threshold stops it; " if sq.futility else "")
             + "every comparison left at the last look stops there.", "small"),
        doc.table(pd.DataFrame(rows)),
        para("Where each comparison stopped", "h2"),
        para("<b>Caveat.</b> Estimates after early stopping are biased toward larger effects: a comparison stops "
             "early when its observed difference happens to be large, so the naive mean difference at the stop "
             "(shown here, and the intervals in section 4, which ignore the sequential design) overstates the "
             "true effect of comparisons that stopped for efficacy.", "small"),
        doc.table(pd.DataFrame(stops)),
    ]


def _stop_row(c: tuple, d) -> dict:
    task, model, treatment, baseline = c
    row = {"Task / model": f"{task} / {model}", "Comparison": f"{treatment} vs {baseline}"}
    if d is None:
        return row | {"Stopped at look": "–", "Pairs": "–", "Decision": "undecided (runs to go, or failed)",
                      "Naive Δ (pts)": "–"}
    return row | {"Stopped at look": str(d.look), "Pairs": str(d.n_pairs), "Decision": d.decision,
                  "Naive Δ (pts)": f"{d.estimate * 100:.2f}".replace("-", "−")}


def task_labels(all_runs: pd.DataFrame) -> dict[str, list]:
    """task → its label names, as the runs recorded them (``env.labels``)."""
    out: dict[str, list] = {}
    for task, env in zip(all_runs["task"], _json_col(all_runs, "env"), strict=True):
        if env.get("labels") and task not in out:
            out[task] = env["labels"]
    return out


def reference_levels(runs: pd.DataFrame, preds: pd.DataFrame, labels: dict) -> dict[tuple, tuple[float, float]]:
    """(task, model) → the (majority-class, chance) levels of the cell's metric on its eval labels."""
    from analysis.pilot import reference_levels as levels

    out = {}
    for (task, model), cell in runs.groupby(["task", "model"], sort=False):
        y = preds[preds["run_id"] == cell["run_id"].iloc[0]].sort_values("example_id")["label"].to_numpy()
        if len(y) and pd.notna(y).all():  # class labels (a generation task's rows carry none)
            k = max(len(labels.get(task, [])), int(y.max()) + 1)
            out[(task, model)] = levels(str(cell["metric"].iloc[0]), y, k)
    return out


def results_table(runs: pd.DataFrame, comparisons: pd.DataFrame, maskers: list[str],
                  levels: dict | None = None, labels: dict | None = None) -> tuple[pd.DataFrame, set]:
    """mean ± sd per task × model (rows) × masker (columns), beside the cell's majority-class and
    chance levels; the best per row is bold only when it wins a significant comparison."""
    from study.metricnames import metric_label

    levels, labels = levels or {}, labels or {}
    stats = runs.groupby(["task", "model", "masker"])["value"].agg(["mean", "std", "count"]).reset_index()
    rows, bold = [], set()
    for i, ((task, model), grp) in enumerate(stats.groupby(["task", "model"], sort=False)):
        majority, chance = levels.get((task, model), (np.nan, np.nan))
        row = {"Task": task, "Model": model,
               "Metric": metric_label(runs[runs.task == task]["metric"].iloc[0], labels.get(task)),
               "Majority": fmt_points(majority), "Chance": fmt_points(chance)}
        by = grp.set_index("masker")
        for m in maskers:
            if m in by.index:
                r = by.loc[m]
                sd = "" if np.isnan(r["std"]) else f" ± {fmt_points(r['std'])}"
                row[m] = f"{fmt_points(r['mean'])}{sd} (n={int(r['count'])})"
            else:
                row[m] = "–"
        best = by["mean"].idxmax()
        c = comparisons[(comparisons.task == task) & (comparisons.model == model)]
        wins = c[c.significant.astype(bool) & (((c.treatment == best) & (c.estimate > 0)) |
                                               ((c.baseline == best) & (c.estimate < 0)))]
        if len(wins) and best in maskers:
            bold.add((i, 5 + maskers.index(best)))
        rows.append(row)
    return pd.DataFrame(rows), bold


def pilot_section(p: Protocol, table: pd.DataFrame | None) -> list:
    """The latest `study pilot`'s table (does the backbone learn, how noisy are seeds), if one ran."""
    if table is None or table.empty:
        return []

    def seeds(x):
        return "–" if pd.isna(x) else str(int(x))

    # No "Runs" column (Collapsed says "k of n"): thirteen columns do not fit the page without breaking words.
    rows = [{"Task / model": f"{r.task} / {r.model}", "Masker": r.masker,
             "Mean (pts)": fmt_points(r.mean), "Majority (pts)": fmt_points(r.majority),
             "Chance (pts)": fmt_points(r.chance), "Collapsed": f"{r.n_collapsed} of {r.n_runs}",
             "SD seeds (pts)": fmt_points(r.sd_seed), "SD of Δ (pts)": fmt_points(r.sd_diff)
             + ("*" if r.sd_source != "paired" else ""),
             "Seeds: detect / equiv.": f"{seeds(r.seeds_needed)} / {seeds(r.seeds_needed_equivalence)}",
             "s per run": f"{r.run_s:.0f}", "Verdict": r.verdict} for r in table.itertuples()]
    margin = p.analysis.margin
    return [para("Pilot", "h2"),
            para("The first seeds, run by `study pilot` before the study (ordinary runs of the grid): does the "
                 "backbone learn the task (mean against the majority-class and chance levels), did runs collapse "
                 "to one class, how noisy are seeds, and how many seeds the question needs at 80 % power"
                 + (f" for a ±{margin * 100:g}-point margin" if margin else "")
                 + " (detect a difference of the margin / show equivalence within it). * SD of Δ estimated as "
                 "√2 × the seed SD (no paired run yet).", "small"),
            doc.table(pd.DataFrame(rows))]


def results_section(p: Protocol, result, preds: pd.DataFrame, all_runs: pd.DataFrame) -> list:
    maskers = [m.name for m in p.maskers]
    labels = task_labels(all_runs)
    table, bold = results_table(result.runs, result.comparisons, maskers,
                                reference_levels(result.runs, preds, labels), labels)
    out = [para("3. Results", "h1"),
           para("Primary metric (×100), mean ± sd over seeds, at each run's reported epoch (the last, or the best "
                "on validation with training.select: best), beside the levels that need no learning: "
                "<i>Majority</i>, the metric of always predicting the eval split's most frequent label, and "
                "<i>Chance</i>, the expected metric of guessing uniformly among the classes. The best masker of a "
                "row is in bold only where it wins a comparison that is significant after Holm correction."),
           doc.table(table, bold_cells=bold)]
    if not result.pairs:
        out += [para("Seed spread per cell", "h2"),
                para("Nothing to compare (one masker): each cell's mean, spread and range over seeds, in points.",
                     "small"),
                doc.table(display_frame(result.cells, fold=False))]
    if len(result.variance):
        out += [para("Variance decomposition", "h2"),
                para("Share of the metric's variance attributed to each factor (where the design has more than "
                     "one level of it).", "small"), doc.table(display_frame(result.variance))]
    return out


GENERATION_EXAMPLES = 3  # examples shown side by side per generation task


def generation_section(p: Protocol, runs: pd.DataFrame, gens: pd.DataFrame, refs: pd.DataFrame) -> list:
    """Generation tasks: the metric's signature, and a few eval examples side by side — source,
    references, the baseline's output and the treatment's, for the same seed."""
    from study.tasktypes import get_task_type

    tasks = [t for t in p.tasks if get_task_type(t.task_type).generates and t.name in set(runs["task"])]
    if not tasks:
        return []
    out = [para("Generations", "h2")]
    pair = (p.comparisons() or [(p.maskers[0].name, p.maskers[0].name)])[0]
    for t in tasks:
        cell = runs[runs["task"] == t.name]
        envs = _json_col(cell, "env")
        signatures = sorted({e.get("metric_signature", "") for e in envs} - {""})
        out.append(para(f"{esc(t.name)}: {esc(str(cell['metric'].iloc[0]))}, signature "
                        f"{esc('; '.join(signatures) or 'not recorded')}", "small"))
        g = gens[(gens["task"] == t.name) & gens["masker"].isin(pair)]
        if g.empty:
            continue
        seed = int(g["seed"].min())
        g = g[g["seed"] == seed]
        by_masker = {m: x.set_index(["model", "example_id"])["generation"] for m, x in g.groupby("masker")}
        r = refs[refs["task"] == t.name].groupby("example_id")["text"].apply(list)
        source = _sources(t)
        rows = []
        for model, example_id in list(by_masker[pair[1]].index)[:GENERATION_EXAMPLES] if pair[1] in by_masker else []:
            row = {"Source": source.get(example_id, ""), "References": " | ".join(r.get(example_id, [])[:2]),
                   f"{pair[1]} (seed {seed})": by_masker[pair[1]].get((model, example_id), "")}
            if pair[0] != pair[1] and pair[0] in by_masker:
                row[f"{pair[0]} (seed {seed})"] = by_masker[pair[0]].get((model, example_id), "")
            rows.append(row)
        if rows:
            frame = pd.DataFrame(rows)
            out.append(doc.table(frame, widths=[1 / len(frame.columns)] * len(frame.columns)))
    return out


def _sources(task_cfg) -> dict:
    """example_id → source text of a generation task's eval split (read from its data; empty if it
    cannot be read here)."""
    from study.tasks import load_task

    try:
        return {e.id: e.text_a for e in load_task(task_cfg).eval}
    except Exception:  # noqa: BLE001  (the report is written from the store; the data may be elsewhere)
        return {}


ESTIMATE_COLUMNS = ["n_pairs", "estimate", "ci_low", "ci_high", "boot_low", "boot_high", "d_z", "mde"]
TEST_COLUMNS = ["p_ttest", "p_wilcoxon", "p_signflip", "p_adj", "significant", "p_tost", "equivalent"]


def comparisons_section(result, figs: dict) -> list:
    c = result.comparisons
    tests = TEST_COLUMNS if result.margin is not None else TEST_COLUMNS[:-2]
    level = float(c["level"].iloc[0]) if len(c) else 1 - result.alpha
    corr = str(c["correction"].iloc[0]).capitalize() if len(c) else "Holm"
    out = [doc.page_break(), para("4. Comparisons", "h1"),
           para(f"Paired by seed; Δ = treatment − baseline in points of the metric. CI: {level:.0%} t-interval "
                "(the interval to read); BCa CI: paired bootstrap (under-covers at few seeds); effect d_z = mean / "
                "sd of the differences; MDE: smallest true difference the paired t-test detects with 80 % power.",
                "small"),
           doc.table(display_frame(c, ESTIMATE_COLUMNS)), doc.spacer(),
           para(f"p (t-test): paired t-test; p (Wilcoxon): exact signed-rank; p (sign-flip): exact sign-flip "
                f"permutation; adjusted p: {corr}-adjusted t-test p over the whole table; significant: adjusted "
                f"p &lt; α = {result.alpha:g}"
                + ("; p (TOST) / equivalent: paired TOST against ±margin" if result.margin is not None else "") + ".",
                "small"),
           doc.table(display_frame(c, tests))]
    for w in sorted({str(w) for w in c.get("warning", []) if str(w)}):
        out.append(para(f"Note: {esc(w)}", "small"))
    out.append(doc.figure(figs["forest"], width=1.0))
    out += bayes_section(result) + across_section(result, figs) + sweep_section(result, figs)
    out += multiboot_section(result)
    return out


def bayes_section(result) -> list:
    """P(better) / P(within the margin) / P(worse) beside each comparison of the table above."""
    b = result.bayes
    cells = b[b["scope"] == "cell"] if len(b) else b
    if not len(cells):
        return []
    keys = ["task", "model", "treatment", "baseline"]
    cells = result.comparisons[keys].merge(cells, on=keys, how="inner")  # the table's row order
    rope = float(cells["rope"].iloc[0])
    rope_txt = (f"the region of practical equivalence (ROPE) is ±{rope * 100:g} points, the protocol's margin"
                if rope > 0 else "no margin is declared, so there is no ROPE: P(in ROPE) is 0 and "
                "P(better) + P(worse) = 1")
    cols = ["n_pairs", "estimate", "p_better", "p_rope", "p_worse"] if rope > 0 else \
        ["n_pairs", "estimate", "p_better", "p_worse"]
    out = [para("Bayesian probabilities", "h2"),
           para("Posterior probability that the treatment is better, practically equivalent or worse, for the "
                "same comparisons in the same order: Student-t posterior of the mean paired difference under the "
                f"non-informative prior; {rope_txt}. Cells whose differences have no spread get no posterior.",
                "small"),
           doc.table(display_frame(cells, cols))]
    return out


def across_section(result, figs: dict) -> list:
    """Random-effects summary over task x model cells, for comparisons made in >= 2 cells."""
    a = result.across
    if not len(a):
        return []
    level = float(a["level"].iloc[0])
    probs = result.bayes[result.bayes["scope"] == "across"]
    shown = a.merge(probs[["treatment", "baseline", "metric", "p_better", "p_rope", "p_worse"]],
                    on=["treatment", "baseline", "metric"], how="left")
    if float(probs["rope"].max() if len(probs) else 0) == 0:
        shown = shown.drop(columns="p_rope")
    out = [doc.page_break(), para("Across tasks and models", "h2"),
           para(f"Random-effects meta-analysis of each comparison's per-cell mean paired differences, pooling only "
                f"cells whose tasks share a metric (one row per metric): τ² by REML (the global maximum of the "
                f"restricted likelihood), {level:.0%} interval by the modified Hartung–Knapp–Sidik–Jonkman method "
                "(t with cells − 1 df, its variance factor at least 1 so that cells agreeing closely never give a "
                "zero-width interval; Röver et al. 2015); p (HKSJ): its two-sided p. I²: share of the spread due to "
                "heterogeneity; PI: prediction interval for the effect in a new task or model (needs 3 cells). "
                "P(better), P(in ROPE), P(worse): posterior probabilities (not p-values) of the Bayesian "
                "signed-rank test over the cells (Benavoli et al. 2017).", "small"),
           doc.table(display_frame(shown, ["metric", "n_cells", "estimate", "ci_low", "ci_high", "p_hksj", "tau2",
                                           "i2", "pi_low", "pi_high", "p_better", "p_rope", "p_worse"]))]
    for w in sorted({str(w) for w in a["warning"] if str(w)}):
        out.append(para(f"Note: {esc(w)}", "small"))
    if "across_forest" in figs:
        out.append(doc.figure(figs["across_forest"], width=1.0))
    return out


def sweep_section(result, figs: dict) -> list:
    """Several treatments against one baseline: the rate response (a sweep), the set of maskers
    that could be best, and the max-T table beside Holm."""
    many, best, rate = result.many_to_one, result.best, result.rate_response
    if not len(many) and not len(rate):
        return []
    level = float(many["level"].iloc[0]) if len(many) else 1 - result.alpha
    out = [doc.page_break(), para("Rate sweep" if len(rate) else "Several treatments against one baseline", "h2")]
    if len(rate):
        out += [para("Per cell, a mixed model of the metric on rate and rate² with a random intercept per seed "
                     "(quadratic; a straight line where the quadratic has no maximum inside the swept rates: "
                     "Fit = monotone). Optimum: the rate where the fitted curve peaks; gain: fitted value there minus "
                     f"at rate 0; {level:.0%} intervals from a parametric bootstrap of the coefficients (each draw "
                     "takes its own optimum, so the gain's interval includes picking the rate). Figure: the fitted "
                     f"gain over the baseline per model with its {level:.0%} band, the observed mean gain per rate "
                     f"(dots) and the optimum with its {level:.0%} interval (triangle and bar).", "small"),
                # one panel per task: a single panel at full width would print its labels oversized
                doc.figure(figs["rate_response"], width=min(1.0, 0.6 * rate["task"].nunique())),
                doc.table(display_frame(rate, ["n_seeds", "n_rates", "curve", "optimum", "optimum_low",
                                               "optimum_high", "gain", "gain_low", "gain_high", "p_curvature"]))]
        for w in sorted({str(w) for w in rate["warning"] if str(w)}):
            out.append(para(f"Note: {esc(w)}", "small"))
    if len(result.rate_interaction):
        out += [para("Does the optimum move with the model? F-test that the response curve (rate and rate² "
                     "terms) differs between models, seeds as blocks within each model; with parameter counts, "
                     "also the test that it moves with log model size.", "small"),
                doc.table(display_frame(result.rate_interaction, ["task", "n_models", "term", "df_num", "df_den",
                                                                  "f_stat", "p_interaction"], fold=False))]
    if len(best):
        out += [para(f"Which masker could be best? Hsu's multiple comparisons with the best at {level:.0%}: a "
                     "masker is in the set unless another beats it significantly (the baseline is a candidate). "
                     "Δ over the baseline of each treatment: the naive t-interval overstates the gain of whichever "
                     "is picked as best; the selection-adjusted interval (the simultaneous max-T one) does not.",
                     "small"),
                doc.table(_best_display(best))]
    if len(many):
        out += [para(f"Every treatment against the baseline, family-wise error held per cell: {level:.0%} "
                     "simultaneous intervals (Dunnett-type, estimated correlation); p (max-T): single-step max-T "
                     "over joint sign flips of the seeds; adjusted p: its Westfall–Young step-down; p (Holm): "
                     "Holm on the paired t-tests, which ignores the treatments' correlation.", "small"),
                doc.table(display_frame(many, ["n_pairs", "estimate", "ci_low", "ci_high", "p_maxt", "p_adj",
                                               "p_holm"]))]
    return out


def _best_display(best: pd.DataFrame) -> pd.DataFrame:
    """The best-set table: one row per masker (the baseline marked), the adjusted interval named."""
    shown = best.assign(treatment=[f"{t} (baseline)" if t == b else t
                                   for t, b in zip(best["treatment"], best["baseline"], strict=True)])
    out = display_frame(shown, ["task", "model", "treatment", "estimate", "in_best_set", "apparent_best",
                                "naive_low", "naive_high", "ci_low", "ci_high"], fold=False)
    level = float(best["level"].iloc[0])
    return out.rename(columns={"Treatment": "Masker", f"{level:.0%} CI (pts)": f"{level:.0%} selection-adjusted CI (pts)"})


def multiboot_section(result) -> list:
    mb = result.multibootstrap
    if mb is None or not len(mb):
        return []
    keys = ["task", "model", "treatment", "baseline"]
    shown = mb.merge(result.comparisons[keys + ["p_ttest"]], on=keys, how="left")
    out = [para("Multibootstrap over seeds × evaluation examples", "h2"),
           para("Resamples seeds and test examples jointly from the stored predictions (MultiBERTs), so the "
                "interval reflects both sources of variation. Its seed resampling treats the few seeds run as the "
                "whole population of seeds, so with few seeds it is too narrow: the seed-level p (t-test) is shown "
                "beside it and is the one to trust.", "small"),
           doc.table(display_frame(shown, ["n_pairs", "n_examples", "estimate", "ci_low", "ci_high", "p_boot",
                                           "p_ttest"]))]
    if result.multiboot_note:
        out.append(para(f"<b>Disagreement.</b> {esc(result.multiboot_note)}", "small"))
    return out


def per_seed_section(figs: dict) -> list:
    return [doc.page_break(), para("5. Per-seed detail", "h1"),
            para("Each line joins the two maskers' scores for one seed: crossing lines are what a single-seed "
                 "comparison would have got wrong.", "small"),
            doc.figure(figs["slopes"], width=0.95),
            doc.figure(figs["distributions"], width=0.8)]


def power_section(result, figs: dict) -> list:
    return [doc.page_break(), para("6. Power", "h1"),
            para("Seeds needed for 80 % power (paired t-test at the study's α) given the observed sd of the "
                 "paired differences; effects in points of the metric.", "small"),
            doc.table(power_pivot(result.power)), doc.figure(figs["power_curve"], width=0.75)]


def power_pivot(power: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: seeds needed for each effect size."""
    if power.empty:
        return power
    rows = []
    for _, grp in power.groupby(["task", "model", "treatment", "baseline"], sort=False):
        first = display_frame(grp.head(1), ["n_pairs", "sd"]).iloc[0].to_dict()
        first.update({f"Seeds for {r.effect_label}": "–" if pd.isna(r.seeds_needed) else str(r.seeds_needed)
                      for r in grp.itertuples()})
        rows.append(first)
    return pd.DataFrame(rows)


def single_run_section(result, figs: dict) -> list:
    dis = result.disagreement
    thr = float(dis["win_threshold"].iloc[0]) if "win_threshold" in dis and len(dis) else 0.005
    pts = f"{thr * 100:g}"
    return [para("7. What a single run would have told you", "h1"),
            para("Sign disagrees: the share of single-seed comparisons (the same seed for both maskers, and "
                 "mismatched seeds) whose sign disagrees with the multi-seed mean. "
                 f"<i>Claims a win</i>: the share of single runs whose difference is ≥ {pts} pts in either "
                 f"direction, what one run would have reported as an effect; <i>wrong-way win</i>: ≥ {pts} pts "
                 "in the direction opposite to the multi-seed mean.", "small"),
            doc.table(display_frame(dis, [
                "n_pairs", "estimate", "share_sign_disagree", "share_sign_disagree_mismatched", "share_win",
                "share_win_opposite"]).rename(columns={
                    "Claims a win (same seed)": f"Claims a win: |Δ| ≥ {pts} pts (same seed)"})),
            doc.figure(figs["disagreement"], width=0.8)]


def audit_section(p: Protocol, all_runs, runs, events, result) -> list:
    out = [doc.page_break(), para("8. Audit", "h1"), para("Pairing fingerprints", "h2")]
    if result is not None:
        out.append(para(esc(result.pairing)))
        bad = result.audit[~result.audit["status"].astype(str).eq("ok")] if len(result.audit) else result.audit
        if len(bad):
            out.append(doc.table(display_frame(bad, ["seed", "status", "detail"])))
        out += [para(f"Analysis warning: {esc(msg)}", "small") for msg in result.warnings]
    failed = all_runs[all_runs.status == "failed"]
    out.append(para("Failed runs", "h2"))
    if failed.empty:
        out.append(para("None."))
    else:
        last = events.sort_values("id").groupby("run_id").tail(1).set_index("run_id")
        rows = [{"Run": f"{r.task}/{r.model}/{r.masker}/seed {r.seed}", "Attempts": r.attempts,
                 "Error": (str(last.loc[r.run_id, "traceback"]).strip().splitlines() or ["?"])[-1][:160]
                 if r.run_id in last.index else "?"} for r in failed.itertuples()]
        out.append(doc.table(pd.DataFrame(rows), widths=[0.3, 0.1, 0.6]))
    out.append(para("Collapsed runs", "h2"))
    collapsed = result.collapsed if result is not None else pd.DataFrame()
    if collapsed.empty:
        out.append(para("None: no run collapsed (analysis.collapse: a single class, or accuracy within noise of "
                        "the majority class; a single output for generation tasks)."))
    else:
        from analysis.collapse import describe

        counts = collapsed.groupby(["task", "model", "masker"]).size().rename("runs").reset_index()
        out += [para(f"{len(collapsed)} run(s) collapsed ({describe(collapsed)}).", "small"),
                doc.table(counts.rename(columns=str.capitalize))]
    out += [para("Realised masking rates", "h2"), doc.table(realised_rates(p, runs), digits=4)]
    out += saliency_tables(runs)
    return out


def realised_rates(p: Protocol, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for m in p.maskers:
        r = runs[runs.masker == m.name]["realised_mask_rate"].dropna()
        nominal = m.to_dict().get("rate")
        rows.append({"Masker": m.name, "Kind": m.kind, "Nominal rate": nominal,
                     "Realised mean": r.mean() if len(r) else None,
                     "Realised min": r.min() if len(r) else None, "Realised max": r.max() if len(r) else None,
                     "Runs": len(r)})
    return pd.DataFrame(rows)


def saliency_tables(runs: pd.DataFrame) -> list:
    """Typhoon's most and least salient token types, from the masker state it recorded."""
    out = []
    for masker, grp in runs[runs.masker_kind == "typhoon"].groupby("masker"):
        states = _json_col(grp, "masker_state")
        top = [f"{k} ({v})" for k, v in pd.Series(
            [t[0] for s in states for t in s.get("top_salient", [])]).value_counts().head(12).items()]
        low = [f"{k} ({v})" for k, v in pd.Series(
            [t[0] for s in states for t in s.get("least_salient", [])]).value_counts().head(12).items()]
        if not top and not low:
            continue
        n = max(len(top), len(low))
        table = pd.DataFrame({"most salient": top + [""] * (n - len(top)),
                              "least salient": low + [""] * (n - len(low))})
        out += [para(f"Typhoon saliency ({esc(masker)})", "h2"),
                para("Token types most often among a run's top-10 / bottom-10 by final EMA saliency "
                     "(count of runs in brackets).", "small"), doc.table(table)]
    return out


APPENDIX_COLUMNS = {"task": "Task", "model": "Model", "masker": "Masker", "seed": "Seed", "status": "Status",
                    "metric": "Metric", "value": "Value", "accuracy": "Accuracy",
                    "realised_mask_rate": "Mask rate", "wall_time_s": "Wall time (s)", "attempts": "Attempts",
                    "run_id": "Run id"}


def appendix(all_runs: pd.DataFrame) -> list:
    df = all_runs.sort_values(["task", "model", "masker", "seed"])[list(APPENDIX_COLUMNS)]
    df = df.assign(run_id=df["run_id"].str[:12],
                   wall_time_s=[doc.fmt(x, 1) for x in df["wall_time_s"].astype(float)])
    return [doc.page_break(), para("Appendix: every run", "h1"),
            para("Values are fractions of the primary metric; run ids shortened to 12 characters.", "small"),
            doc.table(df.rename(columns=APPENDIX_COLUMNS), digits=4)]


def nothing_compared_section(figs: dict) -> list:
    return [para("4. Seed spread", "h1"),
            para("One masker, so nothing is compared: the scores of every seed per cell.", "small"),
            doc.figure(figs["distributions"], width=0.8)]


def build_document(protocol: Protocol) -> doc.Document:
    """The report of ``protocol``'s store as a neutral document (``study/document.py``)."""
    from study.errors import UserError

    if not protocol.store_path.exists():
        raise UserError(f"{protocol.source}: no results store at {protocol.store} yet. "
                        f"Fix: run `study run {protocol.source}` first.")
    data = gather(protocol)
    all_runs, runs, preds, events, counts, result = (data.all_runs, data.runs, data.preds, data.events,
                                                     data.counts, data.result)
    story = (title_block(protocol, counts) + summary_section(protocol, result, counts)
             + design_section(protocol, all_runs))
    if protocol.sequential is not None:
        story += sequential_section(protocol, data.plan)
    story += pilot_section(protocol, data.pilot)
    if result is not None:
        figs = result.figures()
        story += results_section(protocol, result, preds, all_runs) + generation_section(protocol, runs, data.generations, data.references)
        if result.pairs:
            story += comparisons_section(result, figs) + per_seed_section(figs)
            story += power_section(result, figs) + single_run_section(result, figs)
        else:
            story += nothing_compared_section(figs)
        import matplotlib.pyplot as plt

        for fig in figs.values():
            plt.close(fig)
    story += audit_section(protocol, all_runs, runs, events, result) + appendix(all_runs)
    return doc.Document(f"maskstudy · {protocol.name}", story)


FORMATS = ("pdf", "html")


def write_report(protocol: Protocol, out: str | Path, format: str = "pdf") -> Path:
    """Write the report as a PDF (reportlab) or one self-contained HTML page: the same document."""
    from study import htmlreport, pdf

    renderer = {"pdf": pdf.render, "html": htmlreport.render}[format]
    return renderer(build_document(protocol), Path(out))
