"""Hand-computed checks of the task F1s, BLUE's HoC F1 and the Appendix A.1 ECE."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from doktra_tune.metrics import (
    ReliabilityBins,
    confidences_and_correct,
    confusion_matrix,
    evaluate_predictions,
    expected_calibration_error,
    hoc_example_prf,
    reliability_bins,
    reliability_for_task,
    task_f1,
    task_prf,
)
from doktra_tune.tasks import TaskSpec, get_task


def one_hot_probs(pred: list[int], n_labels: int, high: float = 0.9) -> np.ndarray:
    """Softmax-like rows whose argmax is `pred`."""
    low = (1.0 - high) / (n_labels - 1)
    probs = np.full((len(pred), n_labels), low)
    probs[np.arange(len(pred)), pred] = high
    return probs


def set_probs(sets: list[set[int]], n_labels: int) -> np.ndarray:
    """Sigmoid-like rows: 0.9 for the labels in the set, 0.1 elsewhere."""
    probs = np.full((len(sets), n_labels), 0.1)
    for i, labels in enumerate(sets):
        for j in labels:
            probs[i, j] = 0.9
    return probs


def multi_hot(sets: list[set[int]], n_labels: int) -> np.ndarray:
    y = np.zeros((len(sets), n_labels), dtype=np.float32)
    for i, labels in enumerate(sets):
        for j in labels:
            y[i, j] = 1.0
    return y


# ------------------------------------------------------------------ micro F1 over positive labels


def test_micro_f1_excludes_the_negative_class() -> None:
    task = get_task("chemprot")  # labels CPR:3..CPR:9 (0-4), "false" (5)
    y = np.array([0, 1, 5, 5, 2])
    pred = [0, 5, 5, 1, 2]
    # positives 0-4: TP = 2 (rows 0, 4), FP = 1 (row 3: predicted CPR:4 for false),
    # FN = 1 (row 1: CPR:4 predicted false) -> P = R = F1 = 2/3
    p, r, f1 = task_prf(task, y, one_hot_probs(pred, 6))
    assert (p, r, f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # micro over all six classes would be plain accuracy 3/5 = 0.6
    assert task_f1("chemprot", y, one_hot_probs(pred, 6)) != pytest.approx(0.6)
    assert evaluate_predictions(task, y, one_hot_probs(pred, 6))["accuracy"] == pytest.approx(0.6)


def test_micro_f1_no_positive_predictions_is_zero() -> None:
    y = np.array([0, 1, 5])
    assert task_f1("chemprot", y, one_hot_probs([5, 5, 5], 6)) == 0.0


# ------------------------------------------------------------------ GAD binary F1, FPB micro / macro F1


def test_gad_binary_f1_is_the_positive_class() -> None:
    y = np.array([1, 1, 0, 0, 1, 1])
    pred = [1, 0, 1, 0, 1, 0]
    # class "1": TP = 2, FP = 1, FN = 2 -> P = 2/3, R = 1/2, F1 = 4/7
    # (class "0" would give F1 = 0.4, the macro average 0.4857)
    p, r, f1 = task_prf("gad", y, one_hot_probs(pred, 2))
    assert (p, r, f1) == pytest.approx((2 / 3, 1 / 2, 4 / 7))


def test_fpb_scores_the_authors_micro_f1_with_macro_f1_beside_it() -> None:
    """Table 7: the authors' financial scripts score micro-F1 over the three classes (labels=[0, 1, 2],
    average="micro"), which for one label per sentence is the accuracy; macro-F1 is the extra column."""
    task = get_task("fpb")  # negative, neutral, positive
    y = np.array([0, 1, 1, 2, 2, 2])
    pred = [0, 1, 2, 2, 2, 1]
    probs = one_hot_probs(pred, 3)
    # 4 of 6 right: micro P = R = F1 = accuracy = 2/3
    assert task_prf(task, y, probs) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    out = evaluate_predictions(task, y, probs)
    assert set(out) == {"f1", "precision", "recall", "ece", "accuracy", "macro_f1"}
    assert out["f1"] == pytest.approx(out["accuracy"]) == pytest.approx(4 / 6)
    # per-class F1: negative 1, neutral 1/2, positive 2/3 -> macro 13/18
    assert out["macro_f1"] == pytest.approx(13 / 18)
    # all six confidences 0.9 fall in the 15-bin interval (12/15, 13/15]: |4/6 - 0.9| = 0.2333
    assert out["ece"] == pytest.approx(abs(4 / 6 - 0.9))
    cm = confusion_matrix(task, y, probs)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]  # rows gold, columns predicted


# ------------------------------------------------------------------ HoC (BLUE eval_hoc.py)


def test_hoc_example_f1_per_document_hand_case() -> None:
    task = get_task("hoc")
    L = len(task.labels)
    gold_sets = [{0}, {1}, {2}, {0, 1}]
    pred_sets = [{0}, {2}, set(), {0, 1, 2}]
    doc_ids = ["A", "A", "B", "C"]
    # doc A: gold {0,1}, pred {0,2}: P = 1/2, R = 1/2
    # doc B: gold {2}, pred {} (BLUE: P = 0): P = 0, R = 0
    # doc C: gold {0,1}, pred {0,1,2}: P = 2/3, R = 1
    # mean P = 7/18, mean R = 1/2, F1 = 2 PR / (P + R) = 7/16  (mean of per-doc F1s would be 13/30)
    p, r, f1 = task_prf(task, multi_hot(gold_sets, L), set_probs(pred_sets, L), doc_ids)
    assert (p, r, f1) == pytest.approx((7 / 18, 1 / 2, 7 / 16))
    assert task_f1(task, multi_hot(gold_sets, L), set_probs(pred_sets, L), doc_ids) == pytest.approx(0.4375)
    # without doc ids every sentence is its own document:
    # P = [1, 0, 0, 2/3] -> 5/12, R = [1, 0, 0, 1] -> 1/2, F1 = (5/12) / (11/12) = 5/11
    assert task_f1(task, multi_hot(gold_sets, L), set_probs(pred_sets, L)) == pytest.approx(5 / 11)


def test_hoc_empty_sets_and_threshold() -> None:
    # doc with empty gold and empty prediction: P = 0 (BLUE), R = 0 (BLUE would divide by zero)
    p, r, f1 = hoc_example_prf(np.zeros((1, 3)), np.zeros((1, 3)))
    assert (p, r, f1) == (0.0, 0.0, 0.0)
    # one perfect doc + one empty doc -> mean P = mean R = 1/2, F1 = 1/2
    gold = np.array([[1, 0, 0], [0, 0, 0]])
    assert hoc_example_prf(gold, gold, ["x", "y"]) == pytest.approx((0.5, 0.5, 0.5))
    # probability exactly 0.5 is a positive decision
    task = get_task("hoc")
    probs = np.full((1, len(task.labels)), 0.2)
    probs[0, 3] = 0.5
    y = np.zeros((1, len(task.labels)))
    y[0, 3] = 1
    assert task_f1(task, y, probs) == pytest.approx(1.0)


# ------------------------------------------------------------------ ECE (Appendix A.1)


def test_ece_hand_case_with_bin_edges() -> None:
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0.25 and 0.5 lie on edges -> lower bin
    conf = [0.25, 0.3, 0.5, 0.8, 1.0]
    correct = [0, 0, 1, 1, 1]
    # bin 1: {0.25 wrong}: |0 - .25| * 1 = .25; bin 2: {0.3 wrong, 0.5 right}: |.5 - .4| * 2 = .2
    # bin 3: empty; bin 4: {0.8, 1.0 right}: |1 - .9| * 2 = .2  -> ECE = .65 / 5 = 0.13
    # (0.25 in the upper bin instead would give 0.05)
    assert expected_calibration_error(conf, correct, n_bins=4) == pytest.approx(0.13)
    bins = reliability_bins(conf, correct, n_bins=4)
    assert bins.count == [1, 2, 0, 2]
    assert bins.edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert bins.accuracy[0] == 0.0 and bins.accuracy[1] == pytest.approx(0.5)
    assert math.isnan(bins.accuracy[2]) and math.isnan(bins.confidence[2])
    assert bins.confidence[3] == pytest.approx(0.9)
    assert bins.ece == pytest.approx(0.13) and bins.n == 5


def test_ece_fifteen_bins_edge_and_zero() -> None:
    # 0.2 = 3/15 is the upper edge of bin 3 (2/15, 3/15]; 0.0 goes to the first bin
    bins = reliability_bins([0.2, 0.0, 0.2 + 1e-9], [1, 1, 0], n_bins=15)
    assert bins.count[2] == 1 and bins.count[0] == 1 and bins.count[3] == 1
    assert sum(bins.count) == 3 and bins.n_bins == 15
    # perfectly calibrated: confidence 1 and always right
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([], []) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [1])


def test_reliability_bins_json_round_trip() -> None:
    bins = reliability_bins([0.25, 0.3, 0.5, 0.8, 1.0], [0, 0, 1, 1, 1], n_bins=4)
    data = json.loads(json.dumps(bins.to_dict(), allow_nan=False))
    assert data["accuracy"][2] is None and data["count"] == [1, 2, 0, 2]
    back = ReliabilityBins.from_dict(data)
    assert back.count == bins.count and back.ece == pytest.approx(bins.ece)
    assert math.isnan(back.accuracy[2]) and back.accuracy[1] == pytest.approx(0.5)


def test_multi_label_calibration_uses_each_label_decision() -> None:
    task = get_task("hoc")
    L = len(task.labels)
    probs = np.full((1, L), 0.0)
    probs[0, 0], probs[0, 1] = 0.9, 0.2
    y = np.zeros((1, L))
    y[0, 0] = y[0, 1] = 1
    conf, ok = confidences_and_correct(task, y, probs)
    # label 0: p = .9 -> predicted, right, conf .9; label 1: p = .2 -> not predicted, wrong, conf .8;
    # the other 8 labels: p = 0 -> not predicted, right, conf 1
    assert conf[:2] == pytest.approx([0.9, 0.8]) and ok[:2].tolist() == [True, False]
    assert conf[2:].tolist() == [1.0] * (L - 2) and ok[2:].all()
    out = evaluate_predictions(task, y, probs, n_bins=10)
    assert out["accuracy"] == pytest.approx(9 / 10)
    # bins: (.8,.9] |1-.9|, (.7,.8] |0-.8|, (.9,1] 8*|1-1| -> (0.1 + 0.8) / 10
    assert out["ece"] == pytest.approx(0.09)
    assert reliability_for_task(task, y, probs, n_bins=10).ece == pytest.approx(0.09)
    assert confusion_matrix(task, y, probs).shape == (L, 2, 2)


# ------------------------------------------------------------------ contract with TaskSpec


def stand_in(name: str, labels: tuple[str, ...], negative_labels: tuple[str, ...], metric: str) -> TaskSpec:
    """A task that is not registered: a registered spec with other labels and metric (the functions
    read the spec's fields only, never the registry)."""
    return dataclasses.replace(get_task("gad"), name=name, labels=labels, negative_labels=negative_labels,
                               metric=metric, positive_label=None)


def test_shapes_are_checked_and_unknown_metric_rejected() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        task_f1("chemprot", np.array([0]), np.ones((1, 3)) / 3)
    bad = stand_in("x", ("a", "b"), (), "accuracy_top5")
    with pytest.raises(ValueError, match="unknown metric"):
        task_f1(bad, np.array([0]), np.array([[0.6, 0.4]]))


def test_stand_in_task_binary_without_positive_label() -> None:
    task = stand_in("b", ("neg", "pos"), ("neg",), "binary_f1")
    y = np.array([1, 1, 0, 0, 1, 1])
    assert task_f1(task, y, one_hot_probs([1, 0, 1, 0, 1, 0], 2)) == pytest.approx(4 / 7)


def test_micro_f1_matches_the_authors_sklearn_call() -> None:
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=200)
    probs = rng.dirichlet(np.ones(6), size=200)
    _, _, f_authors, _ = precision_recall_fscore_support(
        y_true=y, y_pred=probs.argmax(1), labels=[0, 1, 2, 3, 4], average="micro"
    )
    assert task_f1("chemprot", y, probs) == pytest.approx(f_authors)


def _blue_get_p_r_f(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float, float]:
    """BLUE eval_hoc.get_p_r_f_arrary, loop for loop (gold sets must be non-empty)."""
    prc_list, rec_list = [], []
    for i in range(pred.shape[0]):
        p_set = {j for j in range(pred.shape[1]) if pred[i, j] == 1}
        g_set = {j for j in range(pred.shape[1]) if gold[i, j] == 1}
        tt = len(p_set & g_set)
        prc_list.append(0 if len(p_set) == 0 else tt / len(p_set))
        rec_list.append(tt / len(g_set))
    mp, mr = float(np.mean(prc_list)), float(np.mean(rec_list))
    return mp, mr, (2 * mp * mr / (mp + mr) if mp + mr else 0.0)


def test_hoc_matches_a_literal_port_of_blue() -> None:
    rng = np.random.default_rng(1)
    n_sent, L = 60, 10
    doc_ids = [f"d{i // 4}" for i in range(n_sent)]
    gold = (rng.random((n_sent, L)) < 0.15).astype(int)
    gold[::4, rng.integers(0, L)] = 1  # every document has a hallmark, as BLUE assumes
    probs = rng.random((n_sent, L)) * 0.62
    docs = sorted(set(doc_ids))
    rows = {d: [i for i, x in enumerate(doc_ids) if x == d] for d in docs}
    doc_gold = np.array([gold[rows[d]].max(0) for d in docs])
    doc_pred = np.array([(probs[rows[d]] >= 0.5).max(0).astype(int) for d in docs])
    assert task_prf("hoc", gold, probs, doc_ids) == pytest.approx(_blue_get_p_r_f(doc_pred, doc_gold))


def test_logits_are_rejected_where_probabilities_are_expected() -> None:
    with pytest.raises(ValueError, match="not logits"):
        evaluate_predictions("fpb", np.array([0]), np.array([[2.0, -1.0, 0.5]]))
