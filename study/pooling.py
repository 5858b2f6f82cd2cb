"""Mean pooling for sequence classification (``models[].pooling: mean``).

Hugging Face's ``*ForSequenceClassification`` heads classify the first token (BERT: the
[CLS] state through the pretrained ``pooler``) or, for decoders, the last real token.
Sentence-transformer checkpoints such as all-MiniLM-L6-v2 were trained to be read by the mean
of their token states instead; their [CLS] state carries little, and a classifier on it learns
slowly and unevenly across seeds. :class:`MeanPooledClassifier` puts a fresh linear head on the
attention-mask-weighted mean of the last hidden states — the sentence-transformers pooling.

It behaves as the model objects the rest of the harness expects: ``forward(**inputs)`` returns
an object with ``logits`` (and ``loss`` when given ``labels``), and ``config``, ``get_input_embeddings`` and
``resize_token_embeddings`` reach the backbone, so every masker (input-level, attention-level
and Typhoon's embedding saliency) works on it unchanged.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPooledClassifier(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, num_labels: int):
        super().__init__()
        config = backbone.config
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # BERT-style [CLS] pooler: unused here, so not computed or trained
        self.backbone = backbone
        p = getattr(config, "classifier_dropout", None)
        if p is None:
            p = getattr(config, "hidden_dropout_prob", 0.1)
        self.dropout = torch.nn.Dropout(p)
        self.classifier = torch.nn.Linear(config.hidden_size, num_labels)
        # Hugging Face's own head initialisation (normal with the config's range, zero bias), drawn
        # from the global RNG the caller seeded with the run's init stream.
        torch.nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        torch.nn.init.zeros_(self.classifier.bias)

    @property
    def config(self):
        return self.backbone.config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.backbone.get_input_embeddings()

    def resize_token_embeddings(self, size: int):
        return self.backbone.resize_token_embeddings(size)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **inputs) -> SequenceClassifierOutput:
        """``labels``: as Hugging Face heads, the cross-entropy comes back as ``loss`` (what
        ``transformers.Trainer`` needs, bench/vs_trainer.py); our loop computes its own loss."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
