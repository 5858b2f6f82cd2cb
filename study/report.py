"""The PDF report: the results section of a careful paper, regenerated from the store alone.

Sections: title block, summary, design, results, comparisons, per-seed detail, power, what a
single run would have told you, audit, appendix (one row per run). Nothing is re-trained;
everything comes from the store and the protocol.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collapse import single_class_runs, uninformative_comparisons
from study import pdf
from study.pdf import esc, para
from study.protocol import Protocol
from study.spec import expand
from study.store import Store


def _json_col(df: pd.DataFrame, col: str) -> list[dict]:
    return [json.loads(v) if isinstance(v, str) and v else {} for v in df.get(col, pd.Series(dtype=object))]


def gather(protocol: Protocol):
    """Everything the report shows, read once from the store."""
    from analysis import analyze

    specs = expand(protocol)
    with Store(protocol.store_path) as store:
        all_runs = store.load_runs(specs, status=None)
        runs = all_runs[all_runs.status == "done"].reset_index(drop=True)
        preds = store.load_predictions(specs)
        events = store.events(set(all_runs.run_id))
    counts = {s: int((all_runs.status == s).sum()) for s in ("done", "failed", "running", "pending")}
    counts["pending"] += len(specs) - len(all_runs)
    result, caught = None, []
    if len(runs):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            result = analyze(runs, preds, **protocol.analysis_options())
        caught = sorted({str(x.message) for x in w if "analysis" in (x.filename or "") or
                         type(x.message).__name__ == "AnalysisWarning"})
    collapsed = single_class_runs(preds)
    return specs, all_runs, runs, events, counts, result, caught, collapsed


# -- sections -----------------------------------------------------------------------------------


def title_block(p: Protocol, counts: dict) -> list:
    total = sum(counts.values())
    return [
        para(f"Study report: {esc(p.name)}", "title"),
        para(f"Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by maskstudy from "
             f"<font face='Courier'>{esc(p.source)}</font> "
             f"(sha256 <font face='Courier'>{p.sha256[:16]}</font>) and the store "
             f"<font face='Courier'>{esc(p.store)}</font>.", "small"),
        para(f"Runs: <b>{counts['done']}</b> done, <b>{counts['failed']}</b> failed, "
             f"{counts['running']} running, {counts['pending']} pending, of {total} in the grid.", "small"),
        pdf.spacer(),
    ]


def summary_section(p: Protocol, result, counts: dict, collapsed: pd.DataFrame) -> list:
    out = [para("1. Summary", "h1")]
    if p.description:
        out.append(para(f"<i>Question.</i> {esc(p.description.strip())}"))
    if result is None:
        return out + [para("No finished runs yet: run <font face='Courier'>study run</font> first.")]
    out.append(para(f"<i>Answer.</i> {esc(result.summary)}"))
    n_pairs = result.comparisons["n_pairs"]
    if len(n_pairs) and n_pairs.max() < 6:
        out.append(para(f"With {int(n_pairs.max())} paired seeds, exact rank tests cannot reach p &lt; 0.0625 and "
                        "bootstrap intervals under-cover; the t-interval is the one to read (see the README's "
                        "coverage simulation). A non-significant result here is weak evidence of no effect: "
                        "see the power section and, where a margin is declared, the equivalence tests.", "small"))
    if len(collapsed):
        out.append(para(f"<b>{len(collapsed)} of {counts['done']} runs predicted a single class</b> for every "
                        "evaluation example (the model collapsed to the majority class): differences between such "
                        "runs say nothing about the maskers. Section 8 lists them; more training data, steps or a "
                        "larger backbone are needed before the comparison is informative.", "small"))
        dead = uninformative_comparisons(result.comparisons, result.runs, collapsed)
        if dead:
            out.append(para(f"<b>{len(dead)} of {len(result.comparisons)} comparisons</b> are between runs that all "
                            "collapsed (" + esc("; ".join(dead)) + "): their zero differences, and any "
                            "'equivalent' verdict for them, are artefacts, not evidence.", "small"))
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
    tasks = pd.DataFrame([{"task": t.name, "dataset": t.dataset, "train": t.max_train_examples or "all",
                           "eval": t.max_eval_examples or "all", "data": t.data_dir or "built-in / hub"}
                          for t in p.tasks])
    models = pd.DataFrame([{"model": m.name, "source": m.source, "layers": m.num_hidden_layers or "all",
                            "replacement token": m.replacement_token or "default"} for m in p.models])
    maskers = pd.DataFrame([{"masker": m.name, "kind": m.kind,
                             "parameters": ", ".join(f"{k}={v}" for k, v in m.to_dict().items()
                                                     if k not in ("name", "kind")) or "–"} for m in p.maskers])
    training = pd.DataFrame([{"setting": k, "value": v} for k, v in p.training.__dict__.items()])
    out += [para("Tasks", "h2"), pdf.table(tasks), para("Models", "h2"), pdf.table(models),
            para("Maskers", "h2"), pdf.table(maskers, widths=[0.2 * pdf.TEXT_W, 0.2 * pdf.TEXT_W, 0.6 * pdf.TEXT_W]),
            para("Training", "h2"), pdf.table(training, widths=[0.3 * pdf.TEXT_W, 0.3 * pdf.TEXT_W])]
    envs = _json_col(all_runs[all_runs.status == "done"], "env")
    if envs:
        keys = ["device", "gpu", "torch", "cuda", "cudnn", "transformers", "datasets", "python", "hostname",
                "git_commit"]
        rows = [{"item": k, "values seen": ", ".join(sorted({str(e.get(k)) for e in envs}))} for k in keys]
        det = sorted({", ".join(f"{k}={v}" for k, v in sorted(e.get("determinism", {}).items())) for e in envs})
        rows.append({"item": "determinism", "values seen": "; ".join(det)})
        out += [para("Environment", "h2"),
                pdf.table(pd.DataFrame(rows), widths=[0.2 * pdf.TEXT_W, 0.8 * pdf.TEXT_W])]
    return out


def results_table(runs: pd.DataFrame, comparisons: pd.DataFrame, maskers: list[str]) -> tuple[pd.DataFrame, set]:
    """mean ± sd per task × model (rows) × masker (columns); the best per row is bold only when it
    wins a significant comparison."""
    stats = runs.groupby(["task", "model", "masker"])["value"].agg(["mean", "std", "count"]).reset_index()
    rows, bold = [], set()
    for i, ((task, model), grp) in enumerate(stats.groupby(["task", "model"], sort=False)):
        row = {"task": task, "model": model, "metric": runs[runs.task == task]["metric"].iloc[0]}
        by = grp.set_index("masker")
        for m in maskers:
            if m in by.index:
                r = by.loc[m]
                sd = "" if np.isnan(r["std"]) else f" ± {r['std'] * 100:.2f}"
                row[m] = f"{r['mean'] * 100:.2f}{sd} (n={int(r['count'])})"
            else:
                row[m] = "–"
        best = by["mean"].idxmax()
        c = comparisons[(comparisons.task == task) & (comparisons.model == model)]
        wins = c[c.significant.astype(bool) & (((c.masker == best) & (c.mean_diff > 0)) |
                                               ((c.baseline == best) & (c.mean_diff < 0)))]
        if len(wins) and best in maskers:
            bold.add((i, 3 + maskers.index(best)))
        rows.append(row)
    return pd.DataFrame(rows), bold


def results_section(p: Protocol, result) -> list:
    maskers = [m.name for m in p.maskers]
    table, bold = results_table(result.runs, result.comparisons, maskers)
    n = len(table.columns)
    widths = [0.12 * pdf.TEXT_W, 0.12 * pdf.TEXT_W, 0.08 * pdf.TEXT_W] + [0.68 * pdf.TEXT_W / (n - 3)] * (n - 3)
    out = [para("3. Results", "h1"),
           para("Primary metric (×100), mean ± sd over seeds, last epoch's evaluation. The best masker of a row "
                "is in bold only where it wins a comparison that is significant after Holm correction."),
           pdf.table(table, widths=widths, bold_cells=bold)]
    if len(result.variance):
        out += [para("Variance decomposition", "h2"),
                para("Share of the metric's variance attributed to each factor (where the design has more than "
                     "one level of it).", "small"), pdf.table(result.variance)]
    return out


def labelled(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fold task/model and treatment/baseline into two short label columns so tables fit a page."""
    out = pd.DataFrame({"task / model": df["task"].astype(str) + " / " + df["model"].astype(str),
                        "comparison": df["masker"].astype(str) + " vs " + df["baseline"].astype(str)})
    for col in columns:
        if col in df.columns:
            out[col] = df[col].to_numpy()
    return out


ESTIMATE_COLUMNS = ["n_pairs", "mean_diff", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high", "d_z", "mde"]
TEST_COLUMNS = ["p_ttest", "p_wilcoxon", "p_signflip", "p_adj", "significant", "p_tost", "equivalent"]


def comparisons_section(result, figs: dict) -> list:
    c = result.comparisons
    tests = TEST_COLUMNS if result.margin is not None else TEST_COLUMNS[:-2]
    level = float(c["level"].iloc[0]) if len(c) else 1 - result.alpha
    out = [pdf.page_break(), para("4. Comparisons", "h1"),
           para(f"Paired by seed; differences are treatment − baseline in metric units. ci = {level:.0%} t-interval "
                "(the interval to read), boot_ci = paired BCa bootstrap (under-covers at few seeds), d_z = mean / sd "
                "of the differences, mde = smallest true difference the paired t-test detects with 80 % power.",
                "small"),
           pdf.table(labelled(c, ESTIMATE_COLUMNS), digits=4), pdf.spacer(),
           para("p_ttest = paired t-test; p_wilcoxon = exact signed-rank; p_signflip = exact sign-flip permutation; "
                "p_adj = Holm-adjusted p_ttest over the whole table; significant = p_adj &lt; α"
                + ("; p_tost / equivalent = paired TOST against ±margin" if result.margin is not None else "") + ".",
                "small"),
           pdf.table(labelled(c, tests), digits=4)]
    for w in sorted({str(w) for w in c.get("warning", []) if str(w)}):
        out.append(para(f"Note: {esc(w)}", "small"))
    out.append(pdf.figure(figs["forest"], width=0.9 * pdf.TEXT_W))
    mb = result.multibootstrap
    if mb is not None and len(mb):
        out += [para("Multibootstrap over seeds × evaluation examples", "h2"),
                para("Resamples seeds and test examples jointly from the stored predictions (MultiBERTs), so the "
                     "interval reflects both sources of variation.", "small"),
                pdf.table(labelled(mb, ["n_seeds", "n_examples", "estimate", "ci_low", "ci_high", "p_val"]), digits=4)]
    return out


def per_seed_section(figs: dict) -> list:
    return [pdf.page_break(), para("5. Per-seed detail", "h1"),
            para("Each line joins the two maskers' scores for one seed: crossing lines are what a single-seed "
                 "comparison would have got wrong.", "small"),
            pdf.figure(figs["slopes"], width=0.95 * pdf.TEXT_W),
            pdf.figure(figs["distributions"], width=0.8 * pdf.TEXT_W)]


def power_section(result, figs: dict) -> list:
    return [pdf.page_break(), para("6. Power", "h1"),
            para("Seeds needed for 80 % power (paired t-test at the study's α) given the observed sd of the "
                 "paired differences; effects in points of the metric.", "small"),
            pdf.table(power_pivot(result.power)), pdf.figure(figs["power_curve"], width=0.75 * pdf.TEXT_W)]


def power_pivot(power: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: seeds needed for each effect size."""
    if power.empty:
        return power
    table = labelled(power, ["n_pairs", "sd_diff", "effect_label", "seeds_needed"])
    rows = []
    for (cell, comparison), grp in table.groupby(["task / model", "comparison"], sort=False):
        row = {"task / model": cell, "comparison": comparison, "n_pairs": grp["n_pairs"].iloc[0],
               "sd_diff": grp["sd_diff"].iloc[0]}
        row.update({f"seeds for {r.effect_label}": r.seeds_needed for r in grp.itertuples()})
        rows.append(row)
    return pd.DataFrame(rows)


def single_run_section(result, figs: dict) -> list:
    return [para("7. What a single run would have told you", "h1"),
            para("Share of single-seed comparisons (same seed, and mismatched seeds) whose sign disagrees with the "
                 "multi-seed mean, and how often one run would have claimed a win of at least 0.5 points.", "small"),
            pdf.table(labelled(result.disagreement, ["n_pairs", "mean_diff", "share_sign_disagree",
                                                     "share_sign_disagree_mismatched", "share_win",
                                                     "share_win_opposite"]), digits=3),
            pdf.figure(figs["disagreement"], width=0.7 * pdf.TEXT_W)]


def audit_section(p: Protocol, all_runs, runs, events, result, caught, collapsed: pd.DataFrame) -> list:
    out = [pdf.page_break(), para("8. Audit", "h1"), para("Pairing fingerprints", "h2")]
    if result is not None and len(result.audit):
        audit = result.audit
        ok = audit["status"].astype(str).eq("ok")
        out.append(para(f"{int(ok.sum())} of {len(audit)} seed pairs audited ok (same data order and head "
                        "initialisation fingerprints)." + (" The others:" if (~ok).any() else "")))
        if (~ok).any():
            out.append(pdf.table(labelled(audit[~ok], ["seed", "status", "detail"])))
    for msg in caught:
        out.append(para(f"Analysis warning: {esc(msg)}", "small"))
    fp = runs.groupby(["task", "model", "seed"]).agg(
        maskers=("masker", "nunique"), data_order=("data_order_fp", "nunique"),
        head_init=("head_init_fp", "nunique")).reset_index()
    bad = fp[(fp.data_order > 1) | (fp.head_init > 1)]
    out.append(para(f"{len(fp)} task × model × seed blocks; "
                    + ("every block has one data-order and one head-init fingerprint across its maskers."
                       if bad.empty else f"<b>{len(bad)} block(s) have differing fingerprints</b> "
                       "(those pairs are refused by the analysis).")))
    failed = all_runs[all_runs.status == "failed"]
    out.append(para("Failed runs", "h2"))
    if failed.empty:
        out.append(para("None."))
    else:
        last = events.sort_values("id").groupby("run_id").tail(1).set_index("run_id")
        rows = [{"run": f"{r.task}/{r.model}/{r.masker}/seed {r.seed}", "attempts": r.attempts,
                 "error": (str(last.loc[r.run_id, "traceback"]).strip().splitlines() or ["?"])[-1][:160]
                 if r.run_id in last.index else "?"} for r in failed.itertuples()]
        out.append(pdf.table(pd.DataFrame(rows), widths=[0.3 * pdf.TEXT_W, 0.1 * pdf.TEXT_W, 0.6 * pdf.TEXT_W]))
    out.append(para("Runs that predicted a single class", "h2"))
    if collapsed.empty:
        out.append(para("None: every run predicted more than one class."))
    else:
        counts = collapsed.groupby(["task", "model", "masker"]).size().rename("runs").reset_index()
        out += [para(f"{len(collapsed)} run(s) predicted one class for every evaluation example.", "small"),
                pdf.table(counts)]
    out += [para("Realised masking rates", "h2"), pdf.table(realised_rates(p, runs), digits=4)]
    out += saliency_tables(runs)
    return out


def realised_rates(p: Protocol, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for m in p.maskers:
        r = runs[runs.masker == m.name]["realised_mask_rate"].dropna()
        nominal = m.to_dict().get("rate")
        rows.append({"masker": m.name, "kind": m.kind, "nominal_rate": nominal,
                     "realised_mean": r.mean() if len(r) else None,
                     "realised_min": r.min() if len(r) else None, "realised_max": r.max() if len(r) else None,
                     "runs": len(r)})
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
                     "(count of runs in brackets).", "small"), pdf.table(table)]
    return out


def appendix(all_runs: pd.DataFrame) -> list:
    cols = ["task", "model", "masker", "seed", "status", "metric", "value", "accuracy", "realised_mask_rate",
            "wall_time_s", "attempts", "run_id"]
    df = all_runs.sort_values(["task", "model", "masker", "seed"])[cols]
    w = pdf.TEXT_W
    widths = [0.09 * w, 0.1 * w, 0.11 * w, 0.05 * w, 0.07 * w, 0.08 * w, 0.07 * w, 0.07 * w, 0.08 * w, 0.07 * w,
              0.06 * w, 0.15 * w]
    return [pdf.page_break(), para("Appendix: every run", "h1"), pdf.table(df, widths=widths, digits=4)]


def write_report(protocol: Protocol, out: str | Path) -> Path:
    from study.errors import UserError

    if not protocol.store_path.exists():
        raise UserError(f"{protocol.source}: no results store at {protocol.store} yet. "
                        f"Fix: run `study run {protocol.source}` first.")
    specs, all_runs, runs, events, counts, result, caught, collapsed = gather(protocol)
    story = (title_block(protocol, counts) + summary_section(protocol, result, counts, collapsed)
             + design_section(protocol, all_runs))
    if result is not None:
        figs = result.figures()
        story += results_section(protocol, result) + comparisons_section(result, figs) + per_seed_section(figs)
        story += power_section(result, figs) + single_run_section(result, figs)
    story += audit_section(protocol, all_runs, runs, events, result, caught, collapsed) + appendix(all_runs)
    return pdf.build(Path(out), story, title=f"maskstudy · {protocol.name}")
