"""Task metrics (Table 1/2 F1s), calibration (Appendix A.1 ECE) and reliability bins.

Inputs everywhere: `y_true` as `doktra_tune.data.label_matrix` gives it (single-label: int [N]
class indices; multi-label: multi-hot [N, L]) and `probs` [N, L] — softmax probabilities for
single-label tasks, per-label sigmoid probabilities for multi-label tasks.

Decisions: single-label predicts argmax(probs); multi-label predicts label j when
probs[:, j] >= 0.5 (MULTI_LABEL_THRESHOLD).

Calibration of multi-label tasks: each (example, label) pair is one binary decision with
confidence max(p, 1 - p) and "correct" when the thresholded decision equals the gold bit; ECE,
the reliability bins and `accuracy` are taken over these N * L decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

from doktra_tune.tasks import TaskSpec, get_task

MULTI_LABEL_THRESHOLD = 0.5
DEFAULT_ECE_BINS = 15


# ----------------------------------------------------------------------------- predictions


def _resolve(task: TaskSpec | str) -> TaskSpec:
    """A task name is looked up (ConfigError if unknown); a TaskSpec-shaped object is used as is."""
    return get_task(task) if isinstance(task, str) else task


def _as_arrays(task: TaskSpec, y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    n_labels = len(task.labels)
    if p.ndim != 2 or p.shape[1] != n_labels:
        raise ValueError(f"probs must be [N, {n_labels}] for task {task.name}, got {p.shape}")
    if p.size and (not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError("probs must be softmax/sigmoid probabilities in [0, 1], not logits")
    if task.multi_label:
        if y.shape != p.shape:
            raise ValueError(f"multi-label y_true must be [N, {n_labels}], got {y.shape}")
        y = (y > 0.5).astype(np.int64)
    else:
        if y.ndim != 1 or y.shape[0] != p.shape[0]:
            raise ValueError(f"single-label y_true must be [N] with N={p.shape[0]}, got {y.shape}")
        y = y.astype(np.int64)
    return y, p


def predict(task: TaskSpec | str, probs: Any) -> np.ndarray:
    """Predicted labels: int [N] (argmax) or multi-hot int [N, L] (probs >= 0.5)."""
    task = _resolve(task)
    p = np.asarray(probs, dtype=np.float64)
    if task.multi_label:
        return (p >= MULTI_LABEL_THRESHOLD).astype(np.int64)
    return p.argmax(axis=1).astype(np.int64)


def confidences_and_correct(
    task: TaskSpec | str, y_true: Any, probs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision confidence and correctness used for ECE (see the module docstring)."""
    task = _resolve(task)
    y, p = _as_arrays(task, y_true, probs)
    if task.multi_label:
        pred = (p >= MULTI_LABEL_THRESHOLD).astype(np.int64)
        conf = np.maximum(p, 1.0 - p)
        return conf.ravel(), (pred == y).ravel()
    pred = p.argmax(axis=1)
    return p.max(axis=1), pred == y


# ----------------------------------------------------------------------------- F1 scores


def _positive_index(task: TaskSpec) -> int:
    positive_label = getattr(task, "positive_label", None)
    if positive_label is not None:
        return task.labels.index(positive_label)
    positives = [i for i, lab in enumerate(task.labels) if lab not in task.negative_labels]
    if len(positives) != 1:
        raise ValueError(f"task {task.name}: binary_f1 needs positive_label or one non-negative label")
    return positives[0]


def hoc_example_prf(
    y_true: Any, y_pred: Any, doc_ids: Sequence[str | None] | None = None
) -> tuple[float, float, float]:
    """BLUE's HoC evaluation: example-based P, R, F1 at the document (abstract) level.

    Follows ncbi-nlp/BLUE_Benchmark `blue/eval_hoc.py` (`eval_hoc` + `get_p_r_f_arrary`):
      1. gold and predicted label sets of all sentences with the same doc_id are united;
      2. per document: P = |gold & pred| / |pred| (0 when pred is empty),
         R = |gold & pred| / |gold|;
      3. F1 = 2 * mean(P) * mean(R) / (mean(P) + mean(R)) (0 when both means are 0) — the
         harmonic mean of the averaged P and R, not the average of per-document F1s.
    Empty gold set: BLUE's script divides by zero there (it assumes every test abstract has a
    hallmark); we set R = 0, as BLUE's sklearn-based example-based scorer
    (`blue/ext/pmetrics.py::precision_recall_fscore_multilabel`) does, mirroring the P rule.
    doc_ids None: every row is its own document. Rows with doc_id None are their own documents.
    """
    gold = np.asarray(y_true) > 0.5
    pred = np.asarray(y_pred) > 0.5
    if gold.shape != pred.shape or gold.ndim != 2:
        raise ValueError(f"y_true {gold.shape} and y_pred {pred.shape} must be equal [N, L]")
    n = gold.shape[0]
    if doc_ids is None:
        keys: list[object] = list(range(n))
    else:
        if len(doc_ids) != n:
            raise ValueError(f"doc_ids has {len(doc_ids)} entries for {n} rows")
        keys = [("row", i) if d is None else ("doc", d) for i, d in enumerate(doc_ids)]
    order: dict[object, int] = {}
    for key in keys:
        order.setdefault(key, len(order))
    index = np.array([order[k] for k in keys], dtype=np.int64)
    n_docs = len(order)
    doc_gold = np.zeros((n_docs, gold.shape[1]), dtype=bool)
    doc_pred = np.zeros((n_docs, gold.shape[1]), dtype=bool)
    np.logical_or.at(doc_gold, index, gold)
    np.logical_or.at(doc_pred, index, pred)
    if n_docs == 0:
        return 0.0, 0.0, 0.0
    tt = (doc_gold & doc_pred).sum(axis=1).astype(np.float64)
    n_pred = doc_pred.sum(axis=1)
    n_gold = doc_gold.sum(axis=1)
    prc = np.divide(tt, n_pred, out=np.zeros_like(tt), where=n_pred > 0)
    rec = np.divide(tt, n_gold, out=np.zeros_like(tt), where=n_gold > 0)
    mean_p, mean_r = float(prc.mean()), float(rec.mean())
    f1 = 2 * mean_p * mean_r / (mean_p + mean_r) if (mean_p + mean_r) > 0 else 0.0
    return mean_p, mean_r, f1


def task_prf(
    task: TaskSpec | str, y_true: Any, probs: Any, doc_ids: Sequence[str | None] | None = None
) -> tuple[float, float, float]:
    """(precision, recall, F1) under the task's metric (TaskSpec.metric):

    - "micro_f1_positive": micro-averaged over the non-negative labels only, as the authors'
      `precision_recall_fscore_support(..., labels=[0..4], average="micro")` for ChemProt (BLUE);
    - "binary_f1": precision/recall/F1 of the positive class (GAD, authors' average="binary");
    - "micro_f1": micro-averaged over all labels, which for a single-label task equals accuracy:
      the authors' financial scripts' `precision_recall_fscore_support(..., labels=[0, 1, 2],
      average="micro")` (FPB, FTS; Table 7);
    - "macro_f1": unweighted mean over all labels (reported beside the task metric: `macro_f1`);
    - "hoc_example_f1": `hoc_example_prf` on the thresholded sigmoid predictions.
    Undefined ratios (no predicted/gold items) count as 0.
    """
    task = _resolve(task)
    y, p = _as_arrays(task, y_true, probs)
    pred = predict(task, p)
    metric = task.metric
    if metric == "hoc_example_f1":
        return hoc_example_prf(y, pred, doc_ids)
    all_idx = list(range(len(task.labels)))
    if metric == "micro_f1_positive":
        idx = [i for i, lab in enumerate(task.labels) if lab not in task.negative_labels]
        kwargs: dict[str, Any] = {"labels": idx, "average": "micro"}
    elif metric == "binary_f1":
        kwargs = {"labels": [_positive_index(task)], "average": "micro"}
    elif metric == "micro_f1":
        kwargs = {"labels": all_idx, "average": "micro"}
    elif metric == "macro_f1":
        kwargs = {"labels": all_idx, "average": "macro"}
    else:
        raise ValueError(f"task {task.name}: unknown metric {metric!r}")
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, zero_division=0, **kwargs)
    return float(prec), float(rec), float(f1)


def task_f1(
    task: TaskSpec | str, y_true: Any, probs: Any, doc_ids: Sequence[str | None] | None = None
) -> float:
    """The task's Table-1/2 metric in [0, 1] (see `task_prf`)."""
    return task_prf(task, y_true, probs, doc_ids)[2]


def confusion_matrix(task: TaskSpec | str, y_true: Any, probs: Any) -> np.ndarray:
    """Confusion counts with labels in task order.

    Single-label: int [L, L], rows = gold label, columns = predicted label.
    Multi-label: int [L, 2, 2] per label, [[TN, FP], [FN, TP]] (sklearn's multilabel layout).
    """
    task = _resolve(task)
    y, p = _as_arrays(task, y_true, probs)
    pred = predict(task, p)
    if task.multi_label:
        return multilabel_confusion_matrix(y, pred, labels=list(range(len(task.labels))))
    return _sk_confusion_matrix(y, pred, labels=list(range(len(task.labels))))


# ----------------------------------------------------------------------------- calibration


def _bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin m (0-based) holds confidences in (m/M, (m+1)/M]; a confidence of exactly 0 goes to bin 0."""
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    idx = np.searchsorted(edges, confidences, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


def _check_conf(confidences: Any, correct: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != ok.shape:
        raise ValueError(f"confidences {conf.shape} and correct {ok.shape} differ in length")
    if conf.size and (np.nanmin(conf) < 0 or np.nanmax(conf) > 1 or np.isnan(conf).any()):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, ok


@dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (M equal-width bins, Appendix A.1).

    Empty bins have count 0 and accuracy/confidence NaN (None in `to_dict`).
    """

    edges: list[float]
    accuracy: list[float]
    confidence: list[float]
    count: list[int]
    ece: float = 0.0
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        return len(self.count)

    def to_dict(self) -> dict[str, Any]:
        def clean(values: list[float]) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "n_bins": self.n_bins,
            "edges": [float(e) for e in self.edges],
            "accuracy": clean(self.accuracy),
            "confidence": clean(self.confidence),
            "count": [int(c) for c in self.count],
            "ece": float(self.ece),
            "n": int(self.n),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ReliabilityBins":
        def restore(items: Sequence[float | None]) -> list[float]:
            return [float("nan") if v is None else float(v) for v in items]

        return cls(
            edges=[float(e) for e in values["edges"]],
            accuracy=restore(values["accuracy"]),
            confidence=restore(values["confidence"]),
            count=[int(c) for c in values["count"]],
            ece=float(values.get("ece", 0.0)),
            n=int(values.get("n", sum(int(c) for c in values["count"]))),
            extra=dict(values.get("extra", {})),
        )


def reliability_bins(confidences: Any, correct: Any, n_bins: int = DEFAULT_ECE_BINS) -> ReliabilityBins:
    """Per-bin accuracy, mean confidence and count over bins (0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1]."""
    conf, ok = _check_conf(confidences, correct, n_bins)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
    n = int(conf.size)
    gaps = np.abs(acc_sum - conf_sum)  # |B_m| * |acc(B_m) - conf(B_m)|
    ece = float(gaps.sum() / n) if n else 0.0
    return ReliabilityBins(
        edges=(np.arange(n_bins + 1, dtype=np.float64) / n_bins).tolist(),
        accuracy=acc.tolist(),
        confidence=mean_conf.tolist(),
        count=count.astype(int).tolist(),
        ece=ece,
        n=n,
    )


def expected_calibration_error(confidences: Any, correct: Any, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Appendix A.1: ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)| over M equal-width bins.

    Bin m holds the confidences in ((m-1)/M, m/M]; a confidence on an edge goes to the lower bin.
    Returns 0.0 for no examples.
    """
    return reliability_bins(confidences, correct, n_bins).ece


# ----------------------------------------------------------------------------- all together


def evaluate_predictions(
    task: TaskSpec | str,
    y_true: Any,
    probs: Any,
    doc_ids: Sequence[str | None] | None = None,
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, float]:
    """f1 / precision / recall (the task metric, `task_prf`), ece (App. A.1), accuracy and, for
    single-label tasks, macro_f1 (every label weighted equally; Table 7's second column).

    accuracy: fraction of correct argmax predictions (single-label) or of correct
    (example, label) decisions (multi-label) — the same decisions ECE bins.
    """
    task = _resolve(task)
    prec, rec, f1 = task_prf(task, y_true, probs, doc_ids)
    conf, ok = confidences_and_correct(task, y_true, probs)
    out = {
        "f1": f1,
        "precision": prec,
        "recall": rec,
        "ece": expected_calibration_error(conf, ok, n_bins),
        "accuracy": float(ok.mean()) if ok.size else 0.0,
    }
    if not task.multi_label:
        y, p = _as_arrays(task, y_true, probs)
        out["macro_f1"] = float(precision_recall_fscore_support(
            y, predict(task, p), labels=list(range(len(task.labels))), average="macro", zero_division=0)[2])
    return out


def reliability_for_task(
    task: TaskSpec | str, y_true: Any, probs: Any, n_bins: int = DEFAULT_ECE_BINS
) -> ReliabilityBins:
    """`reliability_bins` of the task's decisions (convenience for stages/plots)."""
    conf, ok = confidences_and_correct(task, y_true, probs)
    return reliability_bins(conf, ok, n_bins)


# ----------------------------------------------------------------------------- search score

# What the searcher (TPE) and the pruners rank trials on, reported by the trainables every epoch:
# dev F1 with exact ties broken by the lower dev loss. Small-data runs sit on the same majority-class
# F1 for their first epochs; with plain F1 no pruner can tell those trials apart and none is pruned
# (bench_pruned_vs_grid.py measured 0 of 12). Winners are still chosen on dev F1 (and ECE) by
# doktra_tune.selection.
SEARCH_METRIC = "search_score"
TIE_BREAK_WEIGHT = 1e-6  # x dev_loss: far below any F1 difference two different predictions make
SHARED_METRIC = "shared_prefix"  # reported (1) on the epochs an ABD branch took from its trunk (prefix.py)


def search_score(metrics: Mapping[str, float]) -> float | None:
    """dev_f1 - TIE_BREAK_WEIGHT * dev_loss (None without dev_f1; plain dev_f1 without dev_loss)."""
    f1 = metrics.get("dev_f1")
    if f1 is None or not math.isfinite(f1):
        return None
    loss = metrics.get("dev_loss")
    if loss is None or not math.isfinite(loss):
        return float(f1)
    return float(f1) - TIE_BREAK_WEIGHT * float(loss)
