"""Statistics for seed-paired masker comparisons. Pure numpy/scipy/pandas: no torch import.

Entry points::

    table = compare(runs, baseline="none", alpha=0.05, margin=None, correction="holm",
                    n_boot=10_000, seed=0)            # one row per comparison
    result = analyze(runs, predictions, baseline="none", margin=0.005)   # every table
    files = write_analysis(runs, predictions, out_dir="reports/demo", baseline="none")

See analysis/README.md for the conventions (units, zero differences, which interval to trust).
"""

import importlib

# Public name -> defining module. Imported on first use (PEP 562) so that a training worker,
# which needs only ``analysis.metrics``, does not pay for scipy, pandas and statsmodels.
_EXPORTS = {
    "figures": None,
    "AnalysisWarning": "_frames", "resolve_comparisons": "_frames",
    "across_cells": "across",
    "PairingError": "audit", "audit_pairing": "audit", "pair_runs": "audit",
    "bayes_paired": "bayes",
    "bootstrap_ci": "bootstrap",
    "SequentialDesign": "sequential",
    "collapsed_runs": "collapse", "uninformative_comparisons": "collapse",
    "compare": "comparisons",  # module not named `compare`: a submodule would shadow the function
    "coverage_simulation": "coverage",
    "single_run_disagreement": "disagreement",
    "METRICS": "metrics", "compute_metrics": "metrics", "get_metric": "metrics",
    "metric_from_confusion": "metrics",
    "multibootstrap": "multiboot",
    "paired_run_tests": "generation",
    "TEXT_METRICS": "textmetrics", "corpus_score": "textmetrics", "example_stats": "textmetrics",
    "paired_ar": "textmetrics", "paired_bootstrap": "textmetrics",
    "holm": "paired", "signflip_test": "paired", "tost_paired": "paired", "ttest_paired": "paired",
    "wilcoxon_exact": "paired",
    "AnalysisResult": "pipeline", "analyze": "pipeline", "write_analysis": "pipeline",
    "write_result": "pipeline",
    "mde": "power", "paired_power": "power", "power_table": "power", "seeds_needed": "power",
    "summary_sentence": "summary",
    "best": "selection", "many_to_one": "selection",
    "rate_interaction": "rate", "rate_response": "rate",
    "comparisons_latex": "tables", "to_markdown": "tables", "write_tables": "tables",
    "display_frame": "display",
    "variance_decomposition": "variance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        value = importlib.import_module(f"analysis.{name}")
    else:
        value = getattr(importlib.import_module(f"analysis.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
