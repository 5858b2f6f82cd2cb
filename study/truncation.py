"""How much ``training.max_length`` cuts: the share of examples (and, for token tasks, of words)
that do not fit. A cut sentence trains on less text; a cut word of a token task is neither
trained on nor scored. Every run records it (``env.truncation``), ``study validate`` prints it per
task and model, and the report shows it.
"""

from __future__ import annotations


def truncation(tokenizer, examples, items: list[dict], max_length: int) -> dict:
    """``{"examples": cut, "of": n}`` (+ ``"words"``, ``"words_of"`` for token tasks) for ``examples``
    and their encoded ``items`` (``study.train.encode`` with this ``max_length``)."""
    if not examples:
        return {"examples": 0, "of": 0}
    if examples[0].words is not None:  # token task: the words after the last one encoded are cut
        kept = [max((w for w in it["_word_ids"] if w >= 0), default=-1) + 1 for it in items]
        cut = [len(ex.words) - k for ex, k in zip(examples, kept, strict=True)]
        return {"examples": sum(c > 0 for c in cut), "of": len(examples),
                "words": sum(cut), "words_of": sum(len(ex.words) for ex in examples)}
    # Only an item that fills max_length can have been cut: re-encode just those, untruncated.
    full = [ex for ex, it in zip(examples, items, strict=True) if len(it["input_ids"]) >= max_length]
    cut = 0
    if full:
        pairs = full[0].text_b is not None
        enc = tokenizer([e.text_a for e in full], [e.text_b or "" for e in full] if pairs else None)
        cut = sum(len(ids) > max_length for ids in enc["input_ids"])
    return {"examples": cut, "of": len(examples)}


def describe(t: dict | None) -> str:
    """"3 of 800 examples (0.4 %)" (+ ", 12 of 9,100 words (0.1 %)")."""
    if not t or not t.get("of"):
        return "not measured"
    text = f"{t['examples']:,} of {t['of']:,} examples ({100 * t['examples'] / t['of']:.1f} %)"
    if t.get("words_of"):
        text += f", {t['words']:,} of {t['words_of']:,} words ({100 * t['words'] / t['words_of']:.1f} %)"
    return text


def by_cell(runs) -> dict[tuple[str, str], dict]:
    """(task, model) → the recorded ``{"train": ..., "eval": ...}`` of the cell's runs (the same for
    every seed and masker: one subsample, one tokenizer), from a ``Store.load_runs`` frame."""
    import json

    out: dict[tuple[str, str], dict] = {}
    for task, model, env in runs[["task", "model", "env"]].itertuples(index=False):
        if (task, model) not in out and isinstance(env, str) and env:
            cut = json.loads(env).get("truncation")
            if cut:
                out[(task, model)] = cut
    return out


def lines(runs, max_length: int) -> list[str]:
    """One sentence per cell: "max_length 48 cuts, tweets/minilm-l2: train 88 of 800 examples (11.0 %); eval ..."."""
    return [f"max_length {max_length} cuts, {task}/{model}: train {describe(c.get('train'))}; "
            f"eval {describe(c.get('eval'))}" for (task, model), c in sorted(by_cell(runs).items())]
