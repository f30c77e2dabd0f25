"""doktra_tune.models: spec resolution, classifier loading, [CLS] forward, checkpoint round trip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from doktra_tune.errors import ConfigError
from doktra_tune.models import (
    META_FILE,
    fetch_model,
    forward_cls_logits,
    load_checkpoint,
    load_classifier,
    parse_random_spec,
    resolve_model_source,
    save_checkpoint,
)
from doktra_tune.tasks import get_task


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return SimpleNamespace(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])


def test_resolve_minilm_and_local_dir(minilm_path):
    assert resolve_model_source("minilm") == str(minilm_path)
    assert resolve_model_source(str(minilm_path)) == str(minilm_path.resolve())


def test_parse_random_spec_derives_heads():
    spec = parse_random_spec("random:bert:L2-H128")
    assert (spec.arch, spec.layers, spec.hidden, spec.heads) == ("bert", 2, 128, 2)
    assert parse_random_spec("random:albert:L2-H48").heads == 1
    assert parse_random_spec("minilm") is None
    assert resolve_model_source("random:roberta:L1-H64") == "random:roberta:L1-H64"


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("random:gpt:L2-H64", "unknown architecture"),
        ("random:bert:L2", "malformed model spec"),
        ("random:bert:L2-H200", "not divisible"),
        ("./no/such/model_dir", "does not exist"),
        ("", "empty model spec"),
    ],
)
def test_bad_specs_raise_one_line_config_error(spec, needle):
    with pytest.raises(ConfigError) as err:
        resolve_model_source(spec)
    message = str(err.value)
    assert needle in message and "\n" not in message and ";" in message


def test_uncached_hub_id_offline_is_config_error(monkeypatch, tmp_path):
    # offline on purpose: the error under test is the one an offline user (or a trial) gets for a cache miss
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        resolve_model_source("dmis-lab/biobert-base-cased-v1.1")


def test_dir_without_config_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_model_source(str(tmp_path))


def test_random_architectures_follow_the_spec_rule():
    chemprot = get_task("chemprot")
    bert, tok = load_classifier("random:bert:L2-H64", chemprot, seed=0)
    cfg = bert.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 64, 1, 256)
    assert cfg.vocab_size == len(tok) == 30522  # MiniLM's WordPiece vocabulary
    assert cfg.num_labels == 6 and cfg.problem_type == "single_label_classification"
    albert, _ = load_classifier("random:albert:L2-H48", chemprot, seed=0)
    assert albert.config.model_type == "albert"
    assert (albert.config.embedding_size, albert.config.hidden_size, albert.config.intermediate_size) == (48, 48, 192)
    wide, _ = load_classifier("random:albert:L1-H256", chemprot, seed=0)
    assert wide.config.embedding_size == 128 and wide.config.num_attention_heads == 4
    roberta, _ = load_classifier("random:roberta:L1-H64", get_task("hoc"), seed=0)
    assert roberta.config.model_type == "roberta"
    assert roberta.config.num_labels == 20 and roberta.config.problem_type == "multi_label_classification"
    assert roberta.config.id2label[0] == "0_0" and roberta.config.id2label[19] == "9_1"  # HoC's pairs20 head
    ten, _ = load_classifier("random:roberta:L1-H64", get_task("hoc", "sigmoid10"), seed=0)
    assert ten.config.num_labels == 10 and ten.config.id2label[0] == "activating invasion and metastasis"


def test_forward_returns_last_layer_cls_not_pooler():
    model, tok = load_classifier("random:bert:L2-H64", get_task("chemprot"), seed=1)
    model.eval()
    batch = _batch(tok, ["the << aspirin >> inhibits [[ COX-1 ]].", "short"])
    with torch.no_grad():
        cls, logits = forward_cls_logits(model, batch)
        full = model.bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    assert cls.shape == (2, 64) and logits.shape == (2, 6)
    torch.testing.assert_close(cls, full.last_hidden_state[:, 0])
    assert not torch.allclose(cls, full.pooler_output)


def test_head_init_is_seeded_and_leaves_global_rng_alone():
    task = get_task("chemprot")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = load_classifier("minilm", task, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)  # loading did not consume the caller's RNG stream
    b, _ = load_classifier("minilm", task, seed=7)
    c, _ = load_classifier("minilm", task, seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    # the pretrained encoder does not depend on the seed
    assert torch.equal(
        a.bert.embeddings.word_embeddings.weight, c.bert.embeddings.word_embeddings.weight
    )


def test_checkpoint_round_trip(tmp_path):
    task = get_task("chemprot")
    model, tok = load_classifier("random:albert:L2-H48", task, seed=3)
    model.eval()
    meta = {"task": "chemprot", "labels": list(task.labels), "epoch": 2, "metrics": {"dev_f1": 0.5}, "stage": "student"}
    path = save_checkpoint(model, tok, tmp_path / "epoch_2", meta)
    assert json.loads((path / META_FILE).read_text())["metrics"] == {"dev_f1": 0.5}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    loaded, loaded_tok, loaded_meta = load_checkpoint(path)
    loaded.eval()
    assert loaded_meta == meta
    batch = _batch(tok, ["<< gefitinib >> blocks [[ EGFR ]] signalling", "no relation here"])
    assert torch.equal(_batch(loaded_tok, ["<< gefitinib >> blocks [[ EGFR ]] signalling", "no relation here"]).input_ids, batch.input_ids)
    with torch.no_grad():
        cls_a, logits_a = forward_cls_logits(model, batch)
        cls_b, logits_b = forward_cls_logits(loaded, batch)
    torch.testing.assert_close(cls_a, cls_b)
    torch.testing.assert_close(logits_a, logits_b)
    # saving again over the same path replaces it
    save_checkpoint(loaded, loaded_tok, path, {**meta, "epoch": 3})
    assert load_checkpoint(path)[2]["epoch"] == 3


def test_load_checkpoint_without_meta_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a doktra checkpoint"):
        load_checkpoint(tmp_path)


def test_truncated_pretrained_spec_keeps_the_first_layers():
    task = get_task("chemprot")
    full, _ = load_classifier("minilm", task, seed=0)
    short, _ = load_classifier("minilm@L2", task, seed=0)
    assert short.config.num_hidden_layers == 2 and len(short.bert.encoder.layer) == 2
    for i in range(2):  # layers 0..1 are the pretrained ones, not re-initialised
        assert torch.equal(
            short.bert.encoder.layer[i].attention.self.query.weight,
            full.bert.encoder.layer[i].attention.self.query.weight,
        )
    with pytest.raises(ConfigError, match="keeps 9 layers but the model has 6"):
        load_classifier("minilm@L9", task, seed=0)


def test_fetch_model_never_sends_local_specs_to_the_hub(monkeypatch):
    """A user's shell has no HF_HUB_OFFLINE: random:, minilm and local directories resolve without the
    hub (a random: spec once went to snapshot_download and failed as an invalid repo id)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError(f"snapshot_download called with {args}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    assert fetch_model("random:bert:L4-H192") == "random:bert:L4-H192"
    assert fetch_model("random:albert:L1-H48") == "random:albert:L1-H48"
    assert fetch_model("minilm") == fetch_model("minilm@L2")
