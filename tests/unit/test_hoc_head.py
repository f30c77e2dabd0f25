"""HoC's classifier heads (issue 18, item 5): the authors' 20 outputs (`pairs20`, the default) and one
sigmoid per hallmark (`sigmoid10`): loss and entropy against hand values and Hugging Face's own loss,
the decision rule, the `<i>_<0|1>` encoding round trip, the option's plumbing and a short stage run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.data import label_matrix, load_split
from doktra_tune.data.labels import parse_label_cell
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.losses import (
    confidence_penalty_loss,
    label_probabilities,
    labels_from_pair_targets,
    pair_targets,
)
from doktra_tune.metrics import hoc_example_prf, predict
from doktra_tune.tasks import (
    HOC_LABELS,
    check_checkpoint_head,
    checkpoint_head,
    get_task,
    task_of,
    task_of_checkpoint,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def _h(p: float) -> float:
    """Bernoulli entropy in nats."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


# ------------------------------------------------------------------ the task and the option


def test_hoc_defaults_to_the_authors_twenty_outputs() -> None:
    hoc = get_task("hoc")
    assert hoc.hoc_head == "pairs20" and hoc.pair_outputs
    assert hoc.num_labels == 10 and hoc.labels == HOC_LABELS  # labels and metrics stay the ten hallmarks
    assert hoc.num_outputs == 20
    assert hoc.output_labels[:4] == ("0_0", "0_1", "1_0", "1_1") and hoc.output_labels[-1] == "9_1"
    ten = get_task("hoc", "sigmoid10")
    assert (ten.num_outputs, ten.output_labels, ten.pair_outputs) == (10, HOC_LABELS, False)
    assert get_task(ten, "pairs20") == hoc and get_task("hoc", "pairs20") is get_task("hoc")
    chem = get_task("chemprot")
    assert chem.hoc_head is None and chem.num_outputs == chem.num_labels == 6 and chem.output_labels == chem.labels


@pytest.mark.parametrize("make, fragment", [
    (lambda: get_task("chemprot", "pairs20"), "hoc_head='pairs20' applies to task hoc only"),
    (lambda: get_task("hoc", "pairs40"), "hoc_head='pairs40' is unknown; use one of pairs20, sigmoid10"),
    (lambda: DataConfig(task="gad", data_dir="x", hoc_head="sigmoid10"), "data.hoc_head='sigmoid10' applies to task hoc only"),
    (lambda: DataConfig(task="hoc", data_dir="x", hoc_head="softmax"), "data.hoc_head='softmax' is unknown; use one of pairs20, sigmoid10"),
])
def test_bad_head_is_one_line(make, fragment) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_data_config_head_and_its_serialisation() -> None:
    chem = StageConfig(data=DataConfig(task="chemprot", data_dir="d"), model="m", output_dir="o")
    assert "hoc_head" not in chem.to_dict()["data"]  # every other task serialises as before the option
    assert StageConfig.from_dict(chem.to_dict()) == chem
    hoc = StageConfig(data=DataConfig(task="hoc", data_dir="d", hoc_head="sigmoid10"), model="m", output_dir="o")
    assert hoc.to_dict()["data"]["hoc_head"] == "sigmoid10"
    assert StageConfig.from_dict(hoc.to_dict()) == hoc
    assert task_of(hoc.data).num_outputs == 10
    assert task_of(DataConfig(task="hoc", data_dir="d")).num_outputs == 20  # None: the default, pairs20
    assert task_of(chem.data) is get_task("chemprot")


def test_checkpoint_heads() -> None:
    hoc = get_task("hoc")
    assert checkpoint_head({"task": "hoc", "hoc_head": "pairs20"}) == "pairs20"
    assert checkpoint_head({"task": "hoc"}) == "sigmoid10"  # written before the option: ten outputs
    assert checkpoint_head({"task": "hoc"}, num_outputs=20) == "pairs20"  # no record: the classifier's width
    assert checkpoint_head({"task": "hoc", "hoc_head": "sigmoid10"}, num_outputs=20) == "sigmoid10"
    assert checkpoint_head({"task": "chemprot"}) is None
    assert task_of_checkpoint({"task": "hoc"}, hoc, "ck").hoc_head == "sigmoid10"
    assert task_of_checkpoint({"task": "hoc", "hoc_head": "pairs20"}, hoc, "ck", requested="pairs20") == hoc
    with pytest.raises(ConfigError, match="has the sigmoid10 head, not pairs20; set hoc_head=sigmoid10"):
        task_of_checkpoint({"task": "hoc"}, hoc, "ck", requested="pairs20")
    with pytest.raises(ConfigError, match="student 'ck' has the sigmoid10 head, not pairs20"):
        check_checkpoint_head({"task": "hoc", "hoc_head": "sigmoid10"}, hoc, "ck", role="student")
    check_checkpoint_head({"task": "chemprot"}, get_task("chemprot"), "ck")  # nothing to check


# ------------------------------------------------------------------ the <i>_<0|1> encoding


def _authors_multi_hot(cell: str) -> list[int]:
    """DMCB-GIST/DoKTra CTT/BioBERT_ft_cpl.py `preprocessing(..., is_hoc=True)`, loop for loop."""
    label_list = []
    for i in range(10):
        for value in [0, 1]:
            label_list.append(str(i) + "_" + str(value))
    label_map = {label: i for i, label in enumerate(label_list)}
    label_id = [0 for _ in range(len(label_map))]
    for label_ in cell.split(","):
        label_id[label_map[label_]] = 1
    return label_id


def test_pair_targets_are_the_authors_multi_hot(fixtures_dir) -> None:
    """BLUE's `<i>_<0|1>` cells -> hallmarks -> label matrix -> pair targets == the authors' 20-vector."""
    hoc = get_task("hoc")
    cells = [line.split("\t")[0] for line in (fixtures_dir / "blue_hoc" / "train.tsv").read_text().splitlines()[1:]]
    examples = load_split("hoc", "train", fixtures_dir / "blue_hoc")
    y = label_matrix(hoc, examples)
    assert y.shape == (4, 10)
    got = pair_targets(torch.from_numpy(y))
    assert got.tolist() == [[float(v) for v in _authors_multi_hot(c)] for c in cells]
    # ... and back: the `<i>_1` columns are the hallmarks, the output names the cells
    assert labels_from_pair_targets(got).numpy().tolist() == y.tolist()
    names = [[hoc.output_labels[j] for j in np.flatnonzero(row)] for row in got.numpy()]
    assert [",".join(n) for n in names] == cells
    for cell, row in zip(cells, y):
        assert parse_label_cell(hoc, cell, "t") == tuple(lab for lab, bit in zip(hoc.labels, row) if bit)


def test_a_cell_with_both_values_of_a_pair_is_one_line() -> None:
    with pytest.raises(DataError) as err:
        parse_label_cell(get_task("hoc"), "0_0,1_1,2_0,1_0", "train.tsv:7")
    assert str(err.value) == ("train.tsv:7: the cell holds both 1_0 and 1_1; a hallmark is either absent (_0) or "
                              "present (_1): fix the row")


def test_pair_targets_hand_case_and_bad_pairs() -> None:
    y = torch.tensor([[1.0, 0.0, 1.0]])
    assert pair_targets(y).tolist() == [[0.0, 1.0, 1.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="exactly one 1"):
        labels_from_pair_targets(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="exactly one 1"):
        labels_from_pair_targets(torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="even number"):
        labels_from_pair_targets(torch.zeros(1, 3))


# ------------------------------------------------------------------ Eq. 2 over the 20 outputs


def test_pairs20_loss_and_entropy_hand_values() -> None:
    """Two hallmarks, y = (1, 0): targets (0_0, 0_1, 1_0, 1_1) = (0, 1, 1, 0); logits (0, ln3, ln3, -ln3).

    BCE per output: ln2, ln(4/3), ln(4/3), ln(4/3); Bernoulli entropies H(1/2) = ln2 and H(3/4) = H(1/4)
    three times. Eq. 2 averages both over the four outputs."""
    logits = torch.tensor([[0.0, LN3, LN3, -LN3]])
    y = torch.tensor([[1.0, 0.0]])
    bce = (LN2 + 3 * math.log(4 / 3)) / 4
    ent = (LN2 + 3 * _h(0.75)) / 4
    assert _h(0.75) == pytest.approx(2 * LN2 - 0.75 * LN3)
    assert confidence_penalty_loss(logits, y, 0.0, pairs=True).item() == pytest.approx(bce, abs=1e-6)
    assert confidence_penalty_loss(logits, y, 0.5, pairs=True).item() == pytest.approx(bce - 0.5 * ent, abs=1e-6)
    # zero logits: BCE ln2 and entropy ln2 on every output, so beta = 1 cancels them
    assert confidence_penalty_loss(torch.zeros(3, 20), torch.ones(3, 10), 1.0, pairs=True).item() == pytest.approx(0.0, abs=1e-7)
    # the same numbers as the multi-label loss on the expanded targets (sigmoid10's convention, 20 columns)
    z = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    t = (torch.rand(5, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert confidence_penalty_loss(z, t, 0.3, pairs=True).item() == pytest.approx(
        confidence_penalty_loss(z, pair_targets(t), 0.3, multi_label=True).item(), abs=1e-7)


def test_pairs20_loss_at_beta0_is_hugging_faces_loss_of_the_authors_configuration() -> None:
    """`num_labels=20, problem_type="multi_label_classification"` with float multi-hot labels: HF's
    BCEWithLogitsLoss, what the authors' ABD/BioMed_*_ft.py train on (`outputs['loss']`)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=20, problem_type="multi_label_classification")
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 50, (4, 7))
    y = torch.tensor([[1, 0, 0, 1, 0, 0, 0, 0, 1, 0], [0] * 10, [1] * 10, [0, 1] * 5], dtype=torch.float32)
    out = model(input_ids=ids, labels=pair_targets(y))
    ours = confidence_penalty_loss(out.logits, y, 0.0, multi_label=True, pairs=True)
    assert ours.item() == pytest.approx(out.loss.item(), abs=1e-6)


# ------------------------------------------------------------------ the decision rule


def test_pairs20_decision_is_the_pair_comparison() -> None:
    """Hallmark i is present when z_{i,1} > z_{i,0} (bluebert's per-pair argmax), not when sigmoid(z_{i,1}) > 0.5."""
    z = torch.tensor([[2.0, 1.0,     # s1 = 0.73 > 0.5 but below s0 = 0.88: absent
                       -3.0, -1.0,   # s1 = 0.27 < 0.5 but above s0 = 0.05: present
                       -2.0, 2.0,    # consistent pair: q = sigmoid(2) exactly
                       0.5, 0.5]])   # exact tie: q = 0.5, counted present (as sigmoid10's p = 0.5)
    q = label_probabilities(z, multi_label=True, pairs=True)
    s = torch.sigmoid(z.double())
    expected = s[:, 1::2] / (s[:, 0::2] + s[:, 1::2])
    assert q.double().numpy() == pytest.approx(expected.numpy(), abs=1e-6)
    assert q[0, 2].item() == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    assert q[0, 3].item() == 0.5
    hoc4 = get_task("hoc")
    pred = predict(hoc4, q.numpy())
    assert pred.tolist() == [[0, 1, 1, 1]]
    assert pred[0, :3].tolist() == (z[0, 1:6:2] > z[0, 0:6:2]).int().tolist()  # the per-pair argmax
    assert (torch.sigmoid(z[0, 1::2]) > 0.5).int().tolist() == [1, 0, 1, 1]  # the `_1 > 0.5` rule differs
    # extreme logits stay finite and decided
    far = label_probabilities(torch.tensor([[-200.0, -150.0, 150.0, -200.0]]), pairs=True)
    assert torch.isfinite(far).all() and far.tolist() == [[1.0, 0.0]]
    # sigmoid10 and single-label unchanged
    assert label_probabilities(torch.tensor([[0.0, LN3]]), multi_label=True)[0].tolist() == pytest.approx([0.5, 0.75])
    assert label_probabilities(torch.tensor([[0.0, LN3]]))[0].tolist() == pytest.approx([0.25, 0.75])


def test_hoc_metric_on_pair_decisions_hand_case() -> None:
    """Two abstracts, three sentences: pair logits -> hallmark decisions -> BLUE's example-based F1."""
    z = torch.full((3, 20), -5.0)
    z[:, 0::2] = 5.0                 # every `_0` output beats its `_1`: absent
    z[0, 1], z[0, 0] = 3.0, -3.0     # sentence 0 (doc a): hallmark 0 present
    z[1, 17], z[1, 16] = 1.0, 0.0    # sentence 1 (doc a): hallmark 8 present
    z[2, 5], z[2, 4] = -1.0, -2.0    # sentence 2 (doc b): hallmark 2 present (both outputs < 0.5)
    pred = predict(get_task("hoc"), label_probabilities(z, pairs=True).numpy())
    gold = np.zeros((3, 10))
    gold[0, 0] = gold[2, 2] = gold[2, 3] = 1
    # doc a: pred {0, 8}, gold {0}: P 1/2, R 1; doc b: pred {2}, gold {2, 3}: P 1, R 1/2
    p, r, f1 = hoc_example_prf(gold, pred, ["a", "a", "b"])
    assert (p, r) == pytest.approx((0.75, 0.75)) and f1 == pytest.approx(0.75)


# ------------------------------------------------------------------ the option through the search config


def test_task_config_sets_the_head() -> None:
    from doktra_tune.compose import compose_config
    from doktra_tune.plan.search_plan import build_plan

    assert build_plan(compose_config(["task=hoc"])).data.hoc_head == "pairs20"
    assert build_plan(compose_config(["task=hoc", "preset=cpu"])).data.hoc_head == "pairs20"
    ten = build_plan(compose_config(["task=hoc", "task.hoc_head=sigmoid10"]))
    assert ten.data.hoc_head == "sigmoid10" and ten.search_id != build_plan(compose_config(["task=hoc"])).search_id
    chem = build_plan(compose_config(["task=chemprot", "preset=cpu"]))
    assert chem.data.hoc_head is None and chem.search_id == "chemprot-cpu-22682373"
    for overrides, fragment in (
        (["task=chemprot", "+task.hoc_head=pairs20"], "task.hoc_head='pairs20' applies to task=hoc only"),
        (["task=hoc", "task.hoc_head=pairs10"], "task.hoc_head='pairs10' is unknown; use one of pairs20, sigmoid10"),
    ):
        with pytest.raises(ConfigError) as err:
            build_plan(compose_config(overrides))
        assert fragment in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ a short stage run


def test_pairs20_teacher_stage_on_real_hoc(data_root, tmp_path) -> None:
    from doktra_tune.models import load_checkpoint
    from doktra_tune.stages import evaluate_checkpoint, train_teacher

    data = DataConfig(task="hoc", data_dir=str(data_root / "hoc_raw"), data_format="hoc_raw", max_len=48,
                      train_limit=64, dev_limit=40, cache_dir=str(tmp_path / "cache"))
    cfg = StageConfig(data=data, model="random:bert:L1-H64", output_dir=str(tmp_path / "ctt"), lr=1e-3, epochs=1,
                      batch_size=16, beta=0.3, torch_threads=1, keep_checkpoints="last")
    result = train_teacher(cfg)
    m = result.history[0]
    assert math.isfinite(m["train_loss"]) and math.isfinite(m["dev_loss"]) and 0.0 <= m["dev_f1"] <= 1.0
    ckpt = Path(result.last_checkpoint)
    meta = json.loads((ckpt / "doktra_meta.json").read_text())
    assert meta["hoc_head"] == "pairs20" and meta["labels"] == list(HOC_LABELS)
    model, tokenizer, _ = load_checkpoint(ckpt)
    assert model.config.num_labels == 20 and model.config.id2label[1] == "0_1"
    assert model.config.problem_type == "multi_label_classification"
    ev = evaluate_checkpoint(ckpt, data, "dev")
    assert ev.probs.shape == (40, 10) and ev.reliability.n == 400  # ECE over the hallmark decisions
    assert ev.metrics["f1"] == pytest.approx(m["dev_f1"], abs=1e-9)
    # the stage's F1 is BLUE's on the per-pair comparison of the raw 20 logits
    from doktra_tune.encoding import collate
    from doktra_tune.models import forward_cls_logits
    from doktra_tune.stages.splits import load_encoded

    enc = load_encoded(data, "dev", tokenizer).encoded
    with torch.no_grad():
        _, logits = forward_cls_logits(model.eval(), collate(enc, list(range(len(enc))), tokenizer.pad_token_id))
    decided = (logits[:, 1::2] > logits[:, 0::2]).numpy()
    assert hoc_example_prf(enc.labels, decided, enc.doc_ids)[2] == pytest.approx(m["dev_f1"], abs=1e-9)
    # the checkpoint's head decides how it is read; asking for another is one line
    with pytest.raises(ConfigError, match="has the pairs20 head, not sigmoid10"):
        evaluate_checkpoint(ckpt, DataConfig(**{**data.__dict__, "hoc_head": "sigmoid10"}), "dev")
