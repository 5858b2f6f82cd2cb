"""Statistics for seed-paired masker comparisons. Pure numpy/scipy/pandas: no torch import.

Entry points::

    table = compare(runs, baseline="none", alpha=0.05, margin=None, correction="holm",
                    n_boot=10_000, seed=0)            # one row per comparison
    result = analyze(runs, predictions, baseline="none", margin=0.005)   # every table
    files = write_analysis(runs, predictions, out_dir="reports/demo", baseline="none")

See analysis/README.md for the conventions (units, zero differences, which interval to trust).
"""

from analysis import figures
from analysis._frames import AnalysisWarning, resolve_comparisons
from analysis.audit import PairingError, audit_pairing, pair_runs
from analysis.bootstrap import bootstrap_ci
from analysis.compare import compare
from analysis.coverage import coverage_simulation
from analysis.disagreement import single_run_disagreement
from analysis.metrics import METRICS, compute_metrics, get_metric, metric_from_confusion
from analysis.multiboot import multibootstrap
from analysis.paired import holm, signflip_test, tost_paired, ttest_paired, wilcoxon_exact
from analysis.pipeline import AnalysisResult, analyze, write_analysis, write_result
from analysis.power import mde, paired_power, power_table, seeds_needed
from analysis.summary import summary_sentence
from analysis.tables import comparisons_latex, to_markdown
from analysis.variance import variance_decomposition

__all__ = [
    "METRICS", "AnalysisResult", "AnalysisWarning", "PairingError", "analyze", "audit_pairing",
    "bootstrap_ci", "compare", "comparisons_latex", "compute_metrics", "coverage_simulation",
    "figures", "get_metric", "holm", "mde", "metric_from_confusion", "multibootstrap",
    "pair_runs", "paired_power", "power_table", "resolve_comparisons", "seeds_needed",
    "signflip_test", "single_run_disagreement", "summary_sentence", "to_markdown",
    "tost_paired", "ttest_paired", "variance_decomposition", "wilcoxon_exact", "write_analysis",
    "write_result",
]
