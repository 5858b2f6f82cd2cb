"""Helpers for the masker tests: tiny randomly initialised backbones (BERT, Qwen2, Llama) with
offline tokenizers, a MaskerContext as train.py builds it, and a few-step training loop that
mirrors train.py's order of calls. No weights, no downloads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from study.maskers.base import MaskerContext
from study.models import choose_replacement
from study.registry import masker_class
from study.tasks.base import Example
from study.tasktypes.classification import collate, encode, model_inputs

WORDS = ("the movie was great fun but far too long and the ending felt rushed although "
         "acting music and photography were superb overall i would watch it again with friends").split()
EXTRA = ["unbelievably", "uncharacteristically", "photographically"]


def sentences(n: int, seed: int = 0, pairs: bool = False) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    vocab = WORDS + EXTRA

    def sent():
        k = int(torch.randint(4, 12, (1,), generator=g))
        return " ".join(vocab[int(i)] for i in torch.randint(0, len(vocab), (k,), generator=g))

    return [Example(id=str(i), text_a=sent(), text_b=sent() if pairs else None, label=i % 3) for i in range(n)]


def word_tokenizer(*, unk: bool, bos: bool):
    """A fast WordLevel tokenizer over WORDS (EXTRA words split into pieces), no [MASK] token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    pieces = sorted(set(WORDS) | {"un", "believ", "ably", "character", "istic", "ally", "photo", "graph", "ic"})
    vocab = {tok: i for i, tok in enumerate(specials + pieces)}
    model = models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 2), ("</s>", 3)])
    kwargs = {"eos_token": "</s>", "bos_token": "<s>"}
    if unk:
        kwargs["unk_token"] = "<unk>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def tiny_backbone(arch: str, *, dropout: float = 0.0, layers: int = 2, attn: str = "sdpa"):
    """(model, tokenizer, context) for arch in bert | qwen2 | llama, as load_model prepares them."""
    torch.manual_seed(0)
    if arch == "bert":
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from study.models import resolve_source

        tokenizer = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                            num_labels=3, attn_implementation=attn)
        model = BertForSequenceClassification(config)
        is_decoder = False
    elif arch in ("qwen2", "llama"):
        from transformers import (
            LlamaConfig,
            LlamaForSequenceClassification,
            Qwen2Config,
            Qwen2ForSequenceClassification,
        )

        # Qwen2-like: no unk, no BOS (the replacement becomes an added special token);
        # Llama-like: unk and a BOS special (the replacement is unk).
        tokenizer = word_tokenizer(unk=arch == "llama", bos=arch == "llama")
        cfg_cls, model_cls = ((Qwen2Config, Qwen2ForSequenceClassification) if arch == "qwen2"
                              else (LlamaConfig, LlamaForSequenceClassification))
        config = cfg_cls(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                         attention_dropout=dropout, num_labels=3, attn_implementation=attn)
        model = model_cls(config)
        is_decoder = True
    else:
        raise ValueError(arch)
    if tokenizer.pad_token is None:  # as load_model does
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    replacement_id, replacement = choose_replacement(model, tokenizer, None)
    context = MaskerContext(
        replacement_id=replacement_id, replacement=replacement, pad_token_id=tokenizer.pad_token_id,
        special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
        num_layers=layers, num_heads=4, is_decoder=is_decoder)
    return model, tokenizer, context


def make_masker(kind: str, context: MaskerContext, seed: int = 0, **params):
    cls = masker_class(kind)
    return cls(cls.Params(**params), torch.Generator().manual_seed(seed), context)


def batches(tokenizer, examples, batch_size: int, max_length: int = 32):
    items = encode(tokenizer, examples, max_length)
    pad = tokenizer.pad_token_id
    return items, [collate(items[i:i + batch_size], pad, torch.device("cpu")) for i in range(0, len(items), batch_size)]


def train_steps(masker, model, batch_list, *, lr: float = 0.0, record=None):
    """train.py's order of calls: apply → forward → backward → after_backward (optional SGD step)."""
    model.train()
    for step, batch in enumerate(batch_list):
        masked = masker.apply(batch, step)
        if record is not None:
            record.append((batch, masked))
        logits = model(**model_inputs(masked)).logits
        loss = F.cross_entropy(logits, masked["labels"])
        loss.backward()
        masker.after_backward(step)
        if lr:
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
        model.zero_grad(set_to_none=True)


def pooled_index(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Where HF sequence classification pools a decoder: the rightmost non-pad token."""
    idx = torch.arange(input_ids.shape[1])
    return (idx * (input_ids != pad_id)).argmax(-1)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run far faster on one thread, and on a shared 2-core box 2 threads thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
