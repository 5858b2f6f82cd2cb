"""How a metric is named to a reader: binary ``f1`` says which class it scores.

``f1`` is the F1 of class id 1 (labels sorted: the second name), which is not always the class a
reader has in mind ("not paraphrase" or "paraphrase"?). ``study validate``, the report and the
HTML page name it: ``f1 (class 1: 'equivalent')``.
"""

from __future__ import annotations


def metric_label(metric: str, labels) -> str:
    labels = list(labels or [])
    if metric == "f1" and len(labels) == 2:
        return f"f1 (class 1: '{labels[1]}')"
    return metric
