"""A model's predictions on a split and their metrics: every epoch of a stage, and a saved checkpoint.

Metrics per split: the task's F1 (Table 2), precision, recall, accuracy, ECE (App. A.1), mean CE loss,
and with a teacher ``lat``, the mean Eq. 4 count of [CLS] sign disagreements with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doktra_tune.config import DataConfig
from doktra_tune.device import Runtime, autocast, matmul_precision, resolve_runtime
from doktra_tune.encoding import EncodedSplit, collate
from doktra_tune.losses import TeacherProjection, activation_transfer_count, confidence_penalty_loss, label_probabilities
from doktra_tune.metrics import ReliabilityBins, confusion_matrix, evaluate_predictions, reliability_for_task
from doktra_tune.models import forward_cls_logits, hidden_size, load_checkpoint
from doktra_tune.stages.splits import SplitData, load_encoded
from doktra_tune.stages.teacher import projection_from_meta, teacher_features
from doktra_tune.tasks import TaskSpec, get_task, task_of_checkpoint


@dataclass
class EvaluationResult:
    """A checkpoint's predictions on one split and their metrics."""

    split: str
    metrics: dict[str, float]  # f1, precision, recall, ece, accuracy, loss (+ lat with a teacher)
    probs: np.ndarray  # [N, L] per-label probabilities (losses.label_probabilities: softmax / sigmoid / HoC pairs)
    labels: np.ndarray  # as data.label_matrix
    doc_ids: list[str | None]
    reliability: ReliabilityBins
    confusion: np.ndarray  # [L, L] (rows gold, cols predicted) or [L, 2, 2] for multi-label
    label_names: tuple[str, ...] = ()
    lat: np.ndarray | None = None  # per-example Eq. 4 counts when a teacher was given

    def confusion_dict(self) -> dict[str, Any]:
        return {"split": self.split, "labels": list(self.label_names), "matrix": self.confusion.tolist()}


@dataclass
class Predictions:
    """A model's outputs over one split, in the split's example order."""

    probs: np.ndarray
    loss: float
    lat: np.ndarray | None


@torch.no_grad()
def predict_split(
    model: torch.nn.Module,
    encoded: EncodedSplit,
    task: TaskSpec,
    pad_token_id: int,
    *,
    batch_size: int,
    rt: Runtime,
    teacher_cls: torch.Tensor | None = None,
    projection: TeacherProjection | None = None,
) -> Predictions:
    """Per-label probabilities [N, L] (``label_probabilities``; HoC's 20 outputs become its 10 hallmarks),
    mean CE loss and (with teacher [CLS]) per-example Eq. 4 counts over a split."""
    model.eval()
    n = len(encoded)
    probs = np.zeros((n, len(task.labels)), dtype=np.float64)
    lat = np.zeros(n, dtype=np.float64) if teacher_cls is not None else None
    loss_sum = 0.0
    order = np.argsort(encoded.lengths, kind="stable")  # tight dynamic padding; scattered back by index
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size].tolist()
        batch = collate(encoded, idx, pad_token_id)
        with autocast(rt.device, rt.amp_dtype):
            cls, logits = forward_cls_logits(model, batch)
        logits = logits.float()
        labels = batch.labels.to(rt.device)
        loss_sum += float(confidence_penalty_loss(logits, labels, 0.0, task.multi_label, task.pair_outputs)) * len(idx)
        p = label_probabilities(logits, task.multi_label, task.pair_outputs)
        probs[idx] = p.double().cpu().numpy()
        if lat is not None and teacher_cls is not None:
            t = teacher_cls[batch.indices.to(teacher_cls.device)].to(rt.device)
            if projection is not None:
                t = projection(t)
            lat[idx] = activation_transfer_count(cls.float(), t.float()).double().cpu().numpy()
    return Predictions(probs, loss_sum / max(1, n), lat)


def split_metrics(task: TaskSpec, split: SplitData, pred: Predictions, ece_bins: int) -> dict[str, float]:
    """The task's metrics (``evaluate_predictions``), the mean loss and, with a teacher, the mean Eq. 4 count."""
    metrics = evaluate_predictions(task, split.encoded.labels, pred.probs, split.encoded.doc_ids, n_bins=ece_bins)
    out = {k: float(v) for k, v in metrics.items()}
    out["loss"] = float(pred.loss)
    if pred.lat is not None:
        out["lat"] = float(pred.lat.mean()) if pred.lat.size else 0.0
    return out


def evaluation_result(task: TaskSpec, split: str, split_data: SplitData, pred: Predictions, ece_bins: int) -> EvaluationResult:
    """Metrics, reliability bins (App. A.1) and confusion counts of one split's predictions."""
    labels = split_data.encoded.labels
    return EvaluationResult(
        split=split,
        metrics=split_metrics(task, split_data, pred, ece_bins),
        probs=pred.probs,
        labels=labels,
        doc_ids=list(split_data.encoded.doc_ids),
        reliability=reliability_for_task(task, labels, pred.probs, ece_bins),
        confusion=confusion_matrix(task, labels, pred.probs),
        label_names=tuple(task.labels),
        lat=pred.lat,
    )


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    data: DataConfig,
    split: str,
    *,
    teacher_checkpoint: str | Path | None = None,
    ece_bins: int = 15,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 128,
) -> EvaluationResult:
    """Metrics, probabilities, labels, reliability bins and confusion counts of a checkpoint on a split.

    With ``teacher_checkpoint``: also ``lat``, the mean Eq. 4 sign disagreement between the student's
    [CLS] and the teacher's (projected as recorded in the student's doktra_meta.json).
    """
    model, tokenizer, meta = load_checkpoint(checkpoint_dir)
    # HoC: the checkpoint's own head (its output width fixes it); data.hoc_head, when set, must agree
    task = task_of_checkpoint(meta, get_task(data.task), checkpoint_dir, requested=data.hoc_head,
                              num_outputs=int(model.config.num_labels))
    rt = resolve_runtime(device, precision)
    model.to(rt.device)
    split_data = load_encoded(data, split, tokenizer)
    teacher_cls = projection = None
    if teacher_checkpoint:
        features = teacher_features(teacher_checkpoint, task, [split_data], data, rt, batch_size=batch_size)
        teacher_cls = features.cls[split]
        projection = projection_from_meta(Path(checkpoint_dir), meta, features.width, hidden_size(model))
        if projection is not None:
            projection.to(rt.device)
    with matmul_precision(rt.tf32):
        pred = predict_split(
            model, split_data.encoded, task, tokenizer.pad_token_id, batch_size=batch_size, rt=rt,
            teacher_cls=teacher_cls, projection=projection,
        )
    return evaluation_result(task, split, split_data, pred, ece_bins)
