"""run_one end to end on decoder-only backbones loaded from a local directory.

This is the path of a user with a downloaded Qwen2 or Llama checkpoint: ``source: /abs/dir``,
``AutoModelForSequenceClassification.from_pretrained(dir)`` initialises a new ``score`` head on a
causal-LM checkpoint, the tokenizer has no [MASK] and no pad token, and ``load_model`` has to pick
a pad (EOS) and a replacement (unk, else an added special token). The checkpoints are tiny,
randomly initialised and written here with ``save_pretrained`` (no hub); their tokenizers are BPE
models trained with ``tokenizers`` on a few hundred tweets:

- ``qwen-nopad``: Qwen2, byte-level BPE, no pad and no unk (``null`` in tokenizer_config, which
  beats Qwen2Tokenizer's defaults), embedding rows padded past the tokenizer as real Qwen
  checkpoints do → pad falls back to EOS, the replacement is an added special token;
- ``qwen-unk-is-pad``: the same tokenizer loaded with Qwen2Tokenizer's defaults (unk = pad =
  EOS), vocabulary not padded → unk is the pad, so again an added token (embeddings grow);
- ``llama-unk``: Llama, Metaspace BPE with ``<unk>``, BOS ``<s>`` prepended, no pad, no mask →
  pad falls back to ``</s>``, the replacement is ``<unk>``.

Every run is observed through spies on ``study.train`` (load_model, collate, model_inputs), so
the tests see the batches before and after masking and the trained model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch

import study.models as models
import study.tasktypes.classification as classification
import study.train as train
from study.models import ADDED_MASK_TOKEN
from study.protocol import TaskConfig, parse_protocol
from study.spec import expand
from study.tasks import load_task

N_TRAIN, N_EVAL, BATCH, MAX_LEN = 32, 16, 8, 24
TASK = {"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": N_TRAIN, "max_eval_examples": N_EVAL}
MASKERS = [
    {"name": "none", "kind": "none"},
    {"name": "random-token", "kind": "random-token", "rate": 0.3},
    {"name": "whole-word", "kind": "whole-word", "rate": 0.3},
    {"name": "typhoon", "kind": "typhoon", "rate": 0.3},
    {"name": "tlm", "kind": "tlm", "rate": 0.1},
    {"name": "drophead", "kind": "drophead", "rate": 0.2},
]
INPUT_MASKERS = ("random-token", "whole-word", "typhoon")
RATES = {m["name"]: m.get("rate") for m in MASKERS}
# Which maskers each variant runs (the unk-is-pad variant only differs in choose_replacement).
VARIANTS = {
    "qwen-nopad": [m["name"] for m in MASKERS],
    "llama-unk": [m["name"] for m in MASKERS],
    "qwen-unk-is-pad": ["none", "random-token"],
}
LAYERS, HEADS = 2, 4
QWEN_EOS = "<|endoftext|>"
LLAMA_RESERVED = "<reserved_0>"  # a special in the vocabulary but not a named one (like Llama 3's)


# ---- tiny checkpoints ---------------------------------------------------------------------------


def _tweets(n: int) -> list[str]:
    task = load_task(TaskConfig(name="tok", dataset="tweets-sentiment", max_train_examples=n, max_eval_examples=N_EVAL))
    return [e.text_a for e in task.train]


def _qwen_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[QWEN_EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=QWEN_EOS)


def _llama_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>", "<s>", "</s>", LLAMA_RESERVED], limit_alphabet=80,
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _save(directory, tokenizer, config_cls, model_cls, vocab_size: int, **ids):
    config = config_cls(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, **ids)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(directory)  # a causal LM: the classification head is missing
    tokenizer.save_pretrained(directory)


def _set_tokenizer_config(directory, **values) -> None:
    path = directory / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("decoders")
    texts = _tweets(300)
    dirs = {name: root / name for name in VARIANTS}

    qwen = _qwen_tokenizer(texts)
    eos = qwen.convert_tokens_to_ids(QWEN_EOS)
    padded = (len(qwen) // 64 + 1) * 64  # real Qwen checkpoints carry more embedding rows than tokens
    _save(dirs["qwen-nopad"], qwen, Qwen2Config, Qwen2ForCausalLM, padded, eos_token_id=eos, bos_token_id=None)
    _set_tokenizer_config(dirs["qwen-nopad"], pad_token=None, unk_token=None)
    _save(dirs["qwen-unk-is-pad"], qwen, Qwen2Config, Qwen2ForCausalLM, len(qwen), eos_token_id=eos, bos_token_id=None)

    llama = _llama_tokenizer(texts)
    _save(dirs["llama-unk"], llama, LlamaConfig, LlamaForCausalLM, len(llama),
          bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=None)
    return dirs


# ---- runs, observed -----------------------------------------------------------------------------


@dataclass
class Observed:
    result: object = None
    loaded: object = None
    vocab_before: int = 0  # embedding rows in the checkpoint
    collated: list = field(default_factory=list)  # batches as collated (train steps, then eval)
    fed: list = field(default_factory=list)  # what the model was given for each of them
    error: Exception | None = None


def specs(source, maskers, **model) -> dict:
    from protocoltools import tiny_protocol_dict

    data = tiny_protocol_dict(
        seeds=[0], tasks=[TASK], models=[{"name": "decoder", "source": str(source), **model}],
        maskers=MASKERS,
        training={"epochs": 1, "batch_size": BATCH, "learning_rate": 1.0e-3, "max_length": MAX_LEN},
        execution={"threads_per_run": 1})
    return {s.masker["name"]: s for s in expand(parse_protocol(data)) if s.masker["name"] in maskers}


def observe(spec) -> Observed:
    obs = Observed()
    real_load, real_collate, real_inputs = models.load_model, classification.collate, classification.model_inputs

    def load_model(cfg, num_labels, init_seed, *task_type):
        from transformers import AutoConfig

        obs.vocab_before = AutoConfig.from_pretrained(cfg["source"]).vocab_size
        obs.loaded = real_load(cfg, num_labels, init_seed, *task_type)
        return obs.loaded

    def collate(items, pad_id, device):
        batch = real_collate(items, pad_id, device)
        obs.collated.append(batch)
        return batch

    def model_inputs(batch):
        inputs = real_inputs(batch)
        obs.fed.append(inputs)
        return inputs

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_model", load_model)
        mp.setattr(classification, "collate", collate)
        mp.setattr(classification, "model_inputs", model_inputs)
        try:
            obs.result = train.run_one(spec)
        except Exception as exc:  # noqa: BLE001  (asserted on by the tests that expect it)
            obs.error = exc
    return obs


@pytest.fixture(scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # run_one applies threads_per_run: 1 process-wide


@pytest.fixture(scope="module")
def runs(checkpoints, restore_threads) -> dict:
    out = {}
    for variant, maskers in VARIANTS.items():
        for name, spec in specs(checkpoints[variant], maskers).items():
            obs = observe(spec)
            if obs.error:
                raise obs.error
            out[variant, name] = obs
    return out


def _train_pairs(obs: Observed):
    steps = math.ceil(N_TRAIN / BATCH)
    return list(zip(obs.collated[:steps], obs.fed[:steps], strict=True))


def _pooled(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Where HF sequence classification pools a decoder: the rightmost non-pad token."""
    idx = torch.arange(ids.shape[1])
    return (idx * (ids != pad_id)).argmax(-1)


RUNS = [(v, m) for v, ms in VARIANTS.items() for m in ms]


# ---- the tests -----------------------------------------------------------------------------------


def test_source_must_be_a_local_directory(checkpoints, tmp_path):
    from study.errors import ProtocolError

    with pytest.raises(ProtocolError, match="config.json"):
        specs(tmp_path, ["none"])  # absolute, but no checkpoint there
    assert specs(checkpoints["llama-unk"], ["none"])["none"].model["source"].startswith("/")


@pytest.mark.parametrize("variant,masker", RUNS)
def test_run_completes_with_finite_metrics_and_all_predictions(runs, variant, masker):
    obs = runs[variant, masker]
    r = obs.result
    assert r.final_metrics and all(math.isfinite(v) for v in r.final_metrics.values())
    assert 0.0 <= r.final_metrics["macro_f1"] <= 1.0 and r.primary_metric == "macro_f1"
    assert all(math.isfinite(e["train_loss"]) for e in r.epochs) and len(r.epochs) == 1
    assert len(r.predictions) == N_EVAL
    assert len({p[0] for p in r.predictions}) == N_EVAL and all(0 <= p[2] < 3 for p in r.predictions)
    assert all(0.0 < p[3] <= 1.0 for p in r.predictions)
    # Loaded as a decoder with a fresh head on the causal-LM checkpoint.
    loaded = obs.loaded
    assert loaded.is_decoder and loaded.num_layers == LAYERS and loaded.num_heads == HEADS
    assert type(loaded.model).__name__.endswith("ForSequenceClassification") and loaded.head_fingerprint


@pytest.mark.parametrize("variant", VARIANTS)
def test_pad_falls_back_to_eos_and_is_never_the_replacement(runs, variant):
    loaded = runs[variant, "random-token"].loaded
    tok = loaded.tokenizer
    assert tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id
    assert loaded.model.config.pad_token_id == tok.pad_token_id
    assert loaded.replacement_id is not None and loaded.replacement_id != tok.pad_token_id
    assert tok.mask_token is None


def test_replacement_is_unk_for_llama(runs):
    obs = runs["llama-unk", "random-token"]
    tok = obs.loaded.tokenizer
    assert tok.unk_token == "<unk>" and obs.loaded.replacement_id == tok.unk_token_id
    assert obs.result.masker_stats["replacement"] == "unk token '<unk>' (model has no mask token)"
    assert obs.loaded.model.get_input_embeddings().num_embeddings == obs.vocab_before  # nothing added


@pytest.mark.parametrize("variant", ["qwen-nopad", "qwen-unk-is-pad"])
def test_replacement_is_an_added_special_token_without_unk(runs, variant):
    obs = runs[variant, "random-token"]
    tok = obs.loaded.tokenizer
    if variant == "qwen-nopad":
        assert tok.unk_token is None
    else:
        assert tok.unk_token_id == tok.pad_token_id  # Qwen2Tokenizer's defaults: unk = pad = EOS
    assert obs.result.masker_stats["replacement"].startswith(f"added special token {ADDED_MASK_TOKEN!r}")
    assert obs.loaded.replacement_id == tok.convert_tokens_to_ids(ADDED_MASK_TOKEN)
    assert obs.loaded.replacement_id in tok.all_special_ids  # never masked itself
    rows = obs.loaded.model.get_input_embeddings().num_embeddings
    assert obs.loaded.replacement_id < rows and len(tok) <= rows
    assert rows == max(obs.vocab_before, len(tok))  # grown when needed, padded rows kept


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_input_maskers_record_no_replacement(runs, variant):
    for masker in VARIANTS[variant]:
        stats = runs[variant, masker].result.masker_stats
        assert (stats["replacement"] is not None) == (masker in INPUT_MASKERS)
    assert runs[variant, "none"].result.realised_mask_rate is None


@pytest.mark.parametrize("variant,masker", [(v, m) for v, m in RUNS if RATES[m] is not None])
def test_realised_rate_within_binomial_tolerance(runs, variant, masker):
    stats = runs[variant, masker].result.masker_stats
    p, n = RATES[masker], stats["eligible"]
    assert n > 0 and stats["realised_rate"] == runs[variant, masker].result.realised_mask_rate
    # Loose: 5 binomial SDs plus slack (whole-word draws per word, Typhoon calibrates an expectation).
    assert abs(stats["realised_rate"] - p) <= 5 * math.sqrt(p * (1 - p) / n) + 0.03, stats


@pytest.mark.parametrize("variant", VARIANTS)
def test_fingerprints_are_paired_across_maskers(runs, variant):
    results = [runs[variant, m].result for m in VARIANTS[variant]]
    for key in ("data", "data_order", "head_init"):
        assert len({r.fingerprints[key] for r in results}) == 1, key
    assert len({tuple(p[0] for p in r.predictions) for r in results}) == 1


@pytest.mark.parametrize("variant,masker", [(v, m) for v, m in RUNS if m in INPUT_MASKERS])
def test_masked_batches_use_the_replacement_and_keep_the_pooled_position(runs, variant, masker):
    obs = runs[variant, masker]
    pad, rep = obs.loaded.tokenizer.pad_token_id, obs.loaded.replacement_id
    special = torch.tensor(sorted(obs.loaded.tokenizer.all_special_ids))
    changed_total = 0
    for before, after in _train_pairs(obs):
        ids, fed = before["input_ids"], after["input_ids"]
        changed = ids != fed
        assert (fed[changed] == rep).all()
        assert before["attention_mask"][changed].all() and not torch.isin(ids[changed], special).any()
        assert torch.equal(after["attention_mask"], before["attention_mask"])
        assert torch.equal(_pooled(fed, pad), _pooled(ids, pad))
        assert not ((fed == pad) & (ids != pad)).any()  # no pad is ever written
        changed_total += int(changed.sum())
    assert changed_total == obs.result.masker_stats["masked"] > 0


@pytest.mark.parametrize("variant,masker", RUNS)
def test_evaluation_batches_are_never_masked(runs, variant, masker):
    obs = runs[variant, masker]
    steps = math.ceil(N_TRAIN / BATCH)
    evals = list(zip(obs.collated[steps:], obs.fed[steps:], strict=True))
    assert sum(b["input_ids"].shape[0] for b, _ in evals) == N_EVAL
    assert all(torch.equal(b["input_ids"], f["input_ids"]) for b, f in evals)
    if masker not in INPUT_MASKERS:  # attention-level maskers never touch the inputs either
        assert all(torch.equal(b["input_ids"], f["input_ids"]) for b, f in _train_pairs(obs))


def test_llama_bos_is_never_masked(runs):
    obs = runs["llama-unk", "random-token"]
    bos = obs.loaded.tokenizer.bos_token_id
    for before, after in _train_pairs(obs):
        assert (before["input_ids"][:, 0] == bos).all() and (after["input_ids"][:, 0] == bos).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_move_the_pooled_position(runs, variant):
    """The trained model scores an eval tweet the same alone and right-padded in a batch."""
    obs = runs[variant, "none"]
    model, tok = obs.loaded.model, obs.loaded.tokenizer
    items = classification.encode(tok, load_task(TaskConfig(**TASK)).eval, 64)  # untruncated: lengths differ
    assert len({len(it["input_ids"]) for it in items}) > 1  # the batch really is padded
    model.eval()
    with torch.no_grad():
        batched = model(**classification.model_inputs(classification.collate(items, tok.pad_token_id, torch.device("cpu")))).logits
        alone = torch.cat([model(**classification.model_inputs(classification.collate([it], tok.pad_token_id, torch.device("cpu"))))
                           .logits for it in items])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


# ---- models[].replacement_token -----------------------------------------------------------------


def test_requested_token_not_in_vocabulary_is_added_and_recorded(checkpoints, restore_threads):
    obs = observe(specs(checkpoints["qwen-nopad"], ["random-token"], replacement_token="<|fill|>")["random-token"])
    assert obs.error is None
    tok = obs.loaded.tokenizer
    assert obs.result.masker_stats["replacement"] == "requested token '<|fill|>' (added to the vocabulary)"
    assert obs.loaded.replacement_id == tok.convert_tokens_to_ids("<|fill|>") != tok.pad_token_id
    fed = torch.cat([a["input_ids"].flatten() for _, a in _train_pairs(obs)])
    assert int((fed == obs.loaded.replacement_id).sum()) == obs.result.masker_stats["masked"] > 0
    assert obs.result.predictions and len(obs.result.predictions) == N_EVAL


def test_requested_token_in_vocabulary_is_used_as_is(checkpoints, restore_threads):
    spec = specs(checkpoints["llama-unk"], ["whole-word"], replacement_token=LLAMA_RESERVED)["whole-word"]
    assert spec.run_id != specs(checkpoints["llama-unk"], ["whole-word"])["whole-word"].run_id
    obs = observe(spec)
    assert obs.error is None
    tok = obs.loaded.tokenizer
    reserved = tok.convert_tokens_to_ids(LLAMA_RESERVED)
    assert reserved != tok.unk_token_id and obs.loaded.replacement_id == reserved
    assert obs.result.masker_stats["replacement"] == f"requested token {LLAMA_RESERVED!r}"
    assert obs.loaded.model.get_input_embeddings().num_embeddings == obs.vocab_before  # not added again
    changed = sum(int((b["input_ids"] != a["input_ids"]).sum()) for b, a in _train_pairs(obs))
    fed = torch.cat([a["input_ids"].flatten() for _, a in _train_pairs(obs)])
    assert changed == int((fed == reserved).sum()) == obs.result.masker_stats["masked"] > 0


def test_requested_pad_token_is_refused(checkpoints, restore_threads):
    obs = observe(specs(checkpoints["llama-unk"], ["random-token"], replacement_token="</s>")["random-token"])
    assert isinstance(obs.error, ValueError) and "pad token" in str(obs.error)


def test_llama_tokenizer_class_gives_word_ids(checkpoints):
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(checkpoints["llama-unk"])  # tokenizer_config of a Llama-2 checkpoint
    tok.pad_token = tok.eos_token
    items = classification.encode(tok, load_task(TaskConfig(**TASK)).train[:4], MAX_LEN)
    # transformers' LlamaTokenizer (Metaspace, split=False) reports a whole text as one word;
    # encode() falls back to whitespace words, so whole-word masking still masks words.
    assert all(len({w for w in it["_word_ids"] if w >= 0}) > 1 for it in items)
    for ex, it in zip(load_task(TaskConfig(**TASK)).train[:4], items, strict=True):
        n_words = len({w for w in it["_word_ids"] if w >= 0})
        if len(it["input_ids"]) < MAX_LEN:  # not truncated: one id per whitespace word
            assert n_words == len(ex.text_a.split())


# ---- token classification on decoder-only backbones ----------------------------------------------


@pytest.mark.parametrize("variant", ["qwen-nopad", "llama-unk"])
def test_token_classification_on_decoder_backbones(checkpoints, variant, tmp_path):
    """lince-lid on a decoder: AutoModelForTokenClassification, the label on each word's first
    subword (the word ids of the fast tokenizer: byte-level BPE and Metaspace alike), input
    masking keeps the labels, and one prediction per scored word comes back."""
    from protocoltools import SHARED_DATA

    from study.tokens import encode_words

    lince = SHARED_DATA / "lince-lid-spaeng"
    if not lince.is_dir():
        pytest.skip("needs ../shared/data/lince-lid-spaeng")
    task = {"name": "lid", "dataset": "lince-lid", "task_type": "token-classification", "data_dir": str(lince),
            "max_train_examples": 16, "max_eval_examples": 8}
    data = {"name": "dec-tok", "seeds": [0], "store": str(tmp_path / "s.sqlite"), "tasks": [task],
            "models": [{"name": variant, "source": str(checkpoints[variant])}],
            "maskers": [{"name": "none", "kind": "none"}, {"name": "random-token", "kind": "random-token", "rate": 0.3}],
            "training": {"epochs": 1, "batch_size": BATCH, "learning_rate": 1e-3, "max_length": MAX_LEN},
            "analysis": {"baseline": "none"}}
    specs = expand(parse_protocol(data))
    results = [train.run_one(s) for s in specs]
    loaded = models.load_model(specs[0].model, 3, 0, "token-classification")
    assert type(loaded.model).__name__.endswith("ForTokenClassification")
    lid = load_task(TaskConfig(**specs[0].task))
    items = encode_words(loaded.tokenizer, lid.eval, MAX_LEN)
    n_scored = sum(y != -100 for it in items for y in it["label"])
    for it, ex in zip(items, lid.eval, strict=True):
        starts = [i for i, w in enumerate(it["_word_ids"]) if w >= 0 and (i == 0 or it["_word_ids"][i - 1] != w)]
        assert [i for i, y in enumerate(it["label"]) if y != -100] == starts
        assert [it["label"][i] for i in starts] == [ex.tags[it["_word_ids"][i]] for i in starts]
    for r in results:
        assert len(r.predictions) == n_scored and all(":" in p[0] for p in r.predictions)
    assert results[1].realised_mask_rate > 0 and [p[1] for p in results[0].predictions] == [p[1] for p in results[1].predictions]
