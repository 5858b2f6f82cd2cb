"""Tiny offline seq2seq models and data for the tests: random T5 and BART configs (built here,
saved with ``save_pretrained`` beside the shipped MiniLM's BERT tokenizer, whose [PAD]/[SEP]/[CLS]
they use), and a small data-to-text CSV in E2E's layout (one row per reference)."""

from __future__ import annotations

import csv
from pathlib import Path

NAMES = ["Aromi", "Bibimbap", "Cotto", "Giraffe", "Zizzi", "Wildwood"]
FOODS = ["Chinese", "French", "Indian", "Italian"]
AREAS = ["city centre", "riverside"]


def tiny_seq2seq(kind: str, folder: Path) -> Path:
    """A random tiny ``t5`` or ``bart`` encoder-decoder saved in ``folder`` (returned)."""
    import torch
    from transformers import (
        AutoTokenizer,
        BartConfig,
        BartForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    from study.models import resolve_source

    if (folder / "config.json").is_file():
        return folder
    tok = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
    torch.manual_seed(0)
    if kind == "t5":
        config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                          num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                          decoder_start_token_id=tok.pad_token_id)
        model = T5ForConditionalGeneration(config)
    else:
        config = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                            decoder_start_token_id=tok.sep_token_id, forced_eos_token_id=tok.sep_token_id)
        model = BartForConditionalGeneration(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def mr_rows(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """(mr, ref) rows: n meaning representations, each with two references (E2E's layout)."""
    rows = []
    for i in range(offset, offset + n):
        name, food, area = NAMES[i % len(NAMES)], FOODS[(i // 2) % len(FOODS)], AREAS[(i // 3) % len(AREAS)]
        mr = f"name[{name}], food[{food}], area[{area}], id[{i}]"
        rows += [(mr, f"{name} serves {food} food in the {area}."),
                 (mr, f"In the {area} there is {name}, which serves {food} food.")]
    return rows


def write_csv(path: Path, rows, header=("mr", "ref")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
