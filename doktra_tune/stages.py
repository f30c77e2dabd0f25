"""The three DoKTra training stages (Algorithm 1) and checkpoint evaluation.

* ``train_teacher`` -- calibrated teacher training (Alg. 1 line 1, Sec. 3.2): L_cls = CE - beta1 * H.
* ``train_student`` -- student fine-tuning (Alg. 1 line 2): plain CE (beta = 0); a beta > 0 gives the
  "ft + CPL" row of Table 6.
* ``distill`` -- activation boundary distillation (Alg. 1 lines 3-10, Sec. 3.3): epochs (0-based)
  ``< int(epochs * gamma)`` train on Eq. 5 against the frozen teacher's cached, projected [CLS]
  vectors; the rest refine with L_cls = CE - beta2 * H. ``distill_loss="kld"`` swaps Eq. 5 for the
  KL-divergence of Table 6 on the cached teacher logits.

Training recipe as in the authors' code: AdamW (eps 1e-8, no weight decay), linear schedule with 0
warm-up steps over all epochs, gradient-norm clipping at 1.0, teacher in eval mode, [CLS] =
``hidden_states[-1][:, 0]``. Batches are length-bucketed with dynamic padding (``bucket_by_length``).

Every epoch: train, evaluate on dev (and ``eval_splits``; with ``eval_every_epoch=False`` those only
after the last epoch), save ``output_dir/epoch_<k>``, call
``on_epoch(EpochReport)``, then prune checkpoints per ``keep_checkpoints``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from doktra_tune.config import (
    BATCH_SIZE,
    DISTILL_LOSSES,
    EPOCHS,
    EVAL_SPLITS,
    GAMMA,
    KEEP_MODES,
    LEARNING_RATE,
    MAX_LEN,
    POSITIVE,
    PROJECTIONS,
    WARMUP_RATIO,
    DataConfig,
    DistillConfig,
    EpochCallback,
    EpochReport,
    StageConfig,
    StageResult,
)
from doktra_tune.data import Example, load_split
from doktra_tune.device import apply_torch_threads, autocast, resolve_device, resolve_precision
from doktra_tune.encoding import Batch, EncodedSplit, collate, encode_split, make_batches
from doktra_tune.errors import ConfigError, NonFiniteLossError
from doktra_tune.losses import (
    TeacherProjection,
    activation_boundary_loss,
    activation_transfer_count,
    confidence_penalty_loss,
    kd_kl_loss,
    resolve_projection,
)
from doktra_tune.metrics import ReliabilityBins, confusion_matrix, evaluate_predictions, reliability_for_task
from doktra_tune.models import (
    forward_cls_logits,
    hidden_size,
    is_checkpoint,
    load_checkpoint,
    load_classifier,
    read_meta,
    save_checkpoint,
)
from doktra_tune.tasks import TaskSpec, get_task
from doktra_tune.teacher_cache import teacher_outputs

log = logging.getLogger(__name__)

PROJECTION_FILE = "teacher_projection.pt"
TRAINING_STATE_FILE = "training_state.pt"  # optimizer, LR schedule, RNG, best-so-far: resume_from
NAN_CHECK_EVERY = 16  # steps between (device-synchronising) finiteness checks of the running loss

# step_loss(batch, student_cls, logits) -> (loss, per-example L_AT counts or None)
StepLoss = Callable[[Batch, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


# ----------------------------------------------------------------------------- data


@dataclass
class SplitData:
    """One split, tokenized for the model being trained."""

    name: str
    examples: list[Example]
    encoded: EncodedSplit


def split_limit(data: DataConfig, split: str) -> int | None:
    return {"train": data.train_limit, "dev": data.dev_limit, "test": data.test_limit}.get(split)


def load_examples(data: DataConfig, split: str) -> list[Example]:
    return load_split(
        data.task,
        split,
        data.data_dir,
        data_format=data.data_format,
        limit=split_limit(data, split),
        seed=data.subsample_seed,
    )


def load_encoded(data: DataConfig, split: str, tokenizer: Any) -> SplitData:
    examples = load_examples(data, split)
    encoded = encode_split(
        examples,
        data.task,
        tokenizer,
        max_len=data.max_len,
        cache_dir=data.cache_dir,
        cache_key=f"{get_task(data.task).name}-{split}",
    )
    return SplitData(split, examples, encoded)


# ----------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None


def _runtime(cfg: StageConfig) -> Runtime:
    apply_torch_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    return Runtime(device, resolve_precision(cfg.precision, device))


def _validate(cfg: StageConfig) -> None:
    checks = [
        (cfg.epochs in EPOCHS, f"epochs={cfg.epochs} must be {EPOCHS.requirement()}; set epochs=1 or more"),
        (cfg.batch_size in BATCH_SIZE, f"batch_size={cfg.batch_size} must be {BATCH_SIZE.requirement()}; set batch_size=32 (or what fits)"),
        (cfg.eval_batch_size in BATCH_SIZE, f"eval_batch_size={cfg.eval_batch_size} must be {BATCH_SIZE.requirement()}; set eval_batch_size=128"),
        (cfg.lr in LEARNING_RATE, f"lr={cfg.lr} must be {LEARNING_RATE.requirement()}; set e.g. lr=2e-5"),
        (cfg.warmup_ratio in WARMUP_RATIO, f"warmup_ratio={cfg.warmup_ratio} must be {WARMUP_RATIO.describe()}; the authors use 0"),
        (cfg.keep_checkpoints in KEEP_MODES, f"keep_checkpoints={cfg.keep_checkpoints!r} is unknown; use one of {list(KEEP_MODES)}"),
        (cfg.data.max_len in MAX_LEN, f"data.max_len={cfg.data.max_len} must be {MAX_LEN.requirement()}; the paper uses 128"),
        (cfg.stop_after_epoch is None or 1 <= cfg.stop_after_epoch <= cfg.epochs,
         f"stop_after_epoch={cfg.stop_after_epoch} must be in [1, epochs={cfg.epochs}] or None"),
    ]
    for split in cfg.eval_splits:
        checks.append((split in EVAL_SPLITS, f"eval_splits holds {split!r}; use train, dev and/or test"))
    if isinstance(cfg, DistillConfig):
        checks += [
            (cfg.gamma in GAMMA, f"gamma={cfg.gamma} must be {GAMMA.describe()} (loss switch rate); e.g. gamma=0.9"),
            (cfg.projection in PROJECTIONS, f"projection={cfg.projection!r} is unknown; use one of {', '.join(PROJECTIONS)}"),
            (cfg.distill_loss in DISTILL_LOSSES, f"distill_loss={cfg.distill_loss!r} is unknown; use one of {', '.join(DISTILL_LOSSES)}"),
            (cfg.kd_temperature in POSITIVE, f"kd_temperature={cfg.kd_temperature} must be {POSITIVE.describe()}; e.g. kd_temperature=1.0"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) for dropout; batch order is seeded separately (make_batches)."""
    torch.manual_seed(seed)


def epoch_batch_seed(seed: int, epoch: int) -> int:
    """Seed of the batch order of 0-based ``epoch`` (distinct per (seed, epoch))."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**32)


def build_optimizer(
    params: Sequence[torch.nn.Parameter], cfg: StageConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (eps=adam_eps, weight_decay) + linear decay with ``warmup_ratio`` warm-up (authors: 0)."""
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- one epoch


@dataclass
class EpochStats:
    loss: float
    lat: float | None  # mean Eq. 4 count over the epoch's examples (ABD phase only)
    seconds: float  # wall clock
    steps: int
    cpu_seconds: float = 0.0  # process CPU time (all threads): robust to other load on the box


def train_epoch(
    model: torch.nn.Module,
    train: EncodedSplit,
    batches: list[list[int]],
    pad_token_id: int,
    step_loss: StepLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Sequence[torch.nn.Parameter],
    *,
    max_grad_norm: float,
    rt: Runtime,
    pad_to: int | None = None,
) -> EpochStats:
    """One pass over ``batches``: forward ([CLS], logits), step_loss, backward, clip, AdamW, schedule.

    Batches are padded to their longest sequence (dynamic padding) unless ``pad_to`` is given.
    """
    model.train()
    start = time.perf_counter()
    cpu_start = time.process_time()
    running = torch.zeros((), device=rt.device, dtype=torch.float32)
    lat_sum = torch.zeros((), device=rt.device, dtype=torch.float32)
    lat_n = 0
    for step, indices in enumerate(batches, start=1):
        batch = collate(train, indices, pad_token_id, pad_to)
        with autocast(rt.device, rt.amp_dtype):
            cls, logits = forward_cls_logits(model, batch)
        loss, lat = step_loss(batch, cls.float(), logits.float())
        loss.backward()
        if max_grad_norm and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach().float()
        if lat is not None:
            lat_sum += lat.sum()
            lat_n += int(lat.shape[0])
        if step % NAN_CHECK_EVERY == 0:
            _check_finite(running, step)
    _check_finite(running, len(batches))
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    steps = max(1, len(batches))
    return EpochStats(
        loss=float(running.item()) / steps,
        lat=float(lat_sum.item()) / lat_n if lat_n else None,
        seconds=time.perf_counter() - start,
        steps=len(batches),
        cpu_seconds=time.process_time() - cpu_start,
    )


def _check_finite(running: torch.Tensor, step: int) -> None:
    if not bool(torch.isfinite(running)):
        raise NonFiniteLossError(
            f"training loss became non-finite by step {step}; lower the learning rate or use precision=fp32"
        )


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    """A checkpoint's predictions on one split and their metrics."""

    split: str
    metrics: dict[str, float]  # f1, precision, recall, ece, accuracy, loss (+ lat with a teacher)
    probs: np.ndarray  # [N, L] softmax (single-label) / sigmoid (multi-label) probabilities
    labels: np.ndarray  # as data.label_matrix
    doc_ids: list[str | None]
    reliability: ReliabilityBins
    confusion: np.ndarray  # [L, L] (rows gold, cols predicted) or [L, 2, 2] for multi-label
    label_names: tuple[str, ...] = ()
    lat: np.ndarray | None = None  # per-example Eq. 4 counts when a teacher was given

    def confusion_dict(self) -> dict[str, Any]:
        return {"split": self.split, "labels": list(self.label_names), "matrix": self.confusion.tolist()}


@dataclass
class _Predictions:
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
) -> _Predictions:
    """Probabilities, mean CE loss and (with teacher [CLS]) per-example Eq. 4 counts over a split."""
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
        loss_sum += float(confidence_penalty_loss(logits, labels, 0.0, task.multi_label)) * len(idx)
        p = torch.sigmoid(logits) if task.multi_label else torch.softmax(logits, dim=-1)
        probs[idx] = p.double().cpu().numpy()
        if lat is not None and teacher_cls is not None:
            t = teacher_cls[batch.indices.to(teacher_cls.device)].to(rt.device)
            if projection is not None:
                t = projection(t)
            lat[idx] = activation_transfer_count(cls.float(), t.float()).double().cpu().numpy()
    return _Predictions(probs, loss_sum / max(1, n), lat)


def split_metrics(
    task: TaskSpec, split: SplitData, pred: _Predictions, ece_bins: int
) -> dict[str, float]:
    metrics = evaluate_predictions(task, split.encoded.labels, pred.probs, split.encoded.doc_ids, n_bins=ece_bins)
    out = {k: float(v) for k, v in metrics.items()}
    out["loss"] = float(pred.loss)
    if pred.lat is not None:
        out["lat"] = float(pred.lat.mean()) if pred.lat.size else 0.0
    return out


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
    task = get_task(data.task)
    _check_task(meta, task, checkpoint_dir)
    device_ = resolve_device(device)
    rt = Runtime(device_, resolve_precision(precision, device_))
    model.to(rt.device)
    split_data = load_encoded(data, split, tokenizer)
    teacher_cls = projection = None
    if teacher_checkpoint:
        outs = teacher_outputs(
            teacher_checkpoint,
            task,
            split,
            split_data.examples,
            max_len=data.max_len,
            cache_dir=data.cache_dir,
            device=rt.device,
            amp_dtype=teacher_amp_dtype(teacher_checkpoint, rt),
            batch_size=batch_size,
        )
        teacher_cls = torch.from_numpy(outs.cls).to(rt.device)
        projection = _projection_from_meta(Path(checkpoint_dir), meta, outs.cls.shape[1], hidden_size(model))
        if projection is not None:
            projection.to(rt.device)
    pred = predict_split(
        model, split_data.encoded, task, tokenizer.pad_token_id, batch_size=batch_size, rt=rt,
        teacher_cls=teacher_cls, projection=projection,
    )
    return evaluation_result(task, split, split_data, pred, ece_bins)


def evaluation_result(task: TaskSpec, split: str, split_data: SplitData, pred: _Predictions, ece_bins: int) -> EvaluationResult:
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


def teacher_amp_dtype(teacher_checkpoint: str | Path, rt: Runtime) -> torch.dtype | None:
    """The frozen teacher runs (for its cached [CLS]/logits) in the precision it was trained in
    (its checkpoint's config), on this stage's device; checkpoints without one use the stage's."""
    meta = read_meta(teacher_checkpoint) if is_checkpoint(teacher_checkpoint) else {}
    precision = (meta.get("config") or {}).get("precision")
    return resolve_precision(str(precision), rt.device) if precision else rt.amp_dtype


def _projection_from_meta(
    ckpt: Path, meta: dict[str, Any], teacher_dim: int, student_dim: int
) -> TeacherProjection | None:
    """The teacher map a distilled student was trained against (None: identity)."""
    info = meta.get("projection") or {}
    mode = resolve_projection(str(info.get("mode", "fixed_random")), teacher_dim, student_dim)
    if mode == "identity":
        return None
    projection = TeacherProjection(teacher_dim, student_dim, mode=mode, seed=int(info.get("seed", 0)))
    weights = ckpt / PROJECTION_FILE
    if weights.is_file():
        projection.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    projection.eval()
    return projection


def _check_task(meta: dict[str, Any], task: TaskSpec, where: str | Path) -> None:
    if meta.get("task") not in (None, task.name):
        raise ConfigError(
            f"checkpoint {str(where)!r} was trained on task {meta.get('task')!r}, not {task.name!r}; "
            "use a checkpoint of the same task or change data.task"
        )


# ----------------------------------------------------------------------------- the stage loop


@dataclass
class _StageState:
    """Everything the generic epoch loop needs from a stage."""

    name: str
    cfg: StageConfig
    task: TaskSpec
    model: torch.nn.Module
    tokenizer: Any
    model_spec: str
    train: SplitData
    evals: dict[str, SplitData]
    params: list[torch.nn.Parameter]
    rt: Runtime
    step_loss_for_epoch: Callable[[int], tuple[StepLoss, float | None]]  # 0-based epoch -> (loss, phase)
    teacher_cls: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> projected teacher [CLS]
    projection: TeacherProjection | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)


def _run_stage(state: _StageState, on_epoch: EpochCallback | None) -> StageResult:
    cfg, rt = state.cfg, state.rt
    out_dir = Path(cfg.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(state.train.encoded) / cfg.batch_size)
    optimizer, scheduler = build_optimizer(state.params, cfg, steps_per_epoch * cfg.epochs)
    seed_everything(cfg.seed)
    pad_id = state.tokenizer.pad_token_id
    result = StageResult()
    saved: dict[int, Path] = {}
    best_f1 = -math.inf
    start_epoch0 = 0
    if cfg.resume_from:
        start_epoch0, best_f1 = _resume(state, Path(cfg.resume_from).expanduser(), optimizer, scheduler, result)
    for epoch0 in range(start_epoch0, cfg.stop_after_epoch or cfg.epochs):
        epoch = epoch0 + 1
        step_loss, phase = state.step_loss_for_epoch(epoch0)
        batches = make_batches(
            state.train.encoded,
            cfg.batch_size,
            shuffle=True,
            seed=epoch_batch_seed(cfg.seed, epoch0),
            bucket_by_length=cfg.bucket_by_length,
        )
        stats = train_epoch(
            state.model, state.train.encoded, batches, pad_id, step_loss, optimizer, scheduler, state.params,
            max_grad_norm=cfg.max_grad_norm, rt=rt,
        )
        metrics: dict[str, float] = {
            "epoch": float(epoch),
            "train_loss": stats.loss,
            "epoch_seconds": stats.seconds,
            "epoch_cpu_seconds": stats.cpu_seconds,
        }
        if phase is not None:
            metrics["phase"] = float(phase)
        if stats.lat is not None:
            metrics["train_lat"] = stats.lat
        metrics["lr"] = float(scheduler.get_last_lr()[0])
        eval_start = time.perf_counter()
        evaluations: dict[str, EvaluationResult] = {}
        for split_name, split in state.evals.items():
            if split_name != "dev" and not cfg.eval_every_epoch and epoch < cfg.epochs:
                continue
            pred = predict_split(
                state.model, split.encoded, state.task, pad_id, batch_size=cfg.eval_batch_size, rt=rt,
                teacher_cls=state.teacher_cls.get(split_name), projection=state.projection,
            )
            evaluations[split_name] = evaluation_result(state.task, split_name, split, pred, cfg.ece_bins)
            for key, value in evaluations[split_name].metrics.items():
                metrics[f"{split_name}_{key}"] = value
        metrics["eval_seconds"] = time.perf_counter() - eval_start
        result.history.append(metrics)
        f1 = metrics.get("dev_f1", math.nan)
        if not math.isnan(f1) and f1 > best_f1:
            best_f1 = f1
            result.best_epoch = epoch
        if result.best_epoch == 0:
            result.best_epoch = 1  # every dev F1 NaN so far: the first epoch stands
        if result.best_epoch == epoch:
            result.best_evaluations = evaluations
        if epoch == cfg.epochs:
            result.last_evaluations = evaluations
        keep = _keep_set(cfg.keep_checkpoints, result.best_epoch, epoch)
        ckpt_dir: Path | None = None
        if on_epoch is not None or epoch in keep:
            ckpt_dir = _save_epoch(state, out_dir, epoch, metrics)
            saved[epoch] = ckpt_dir
            if cfg.save_training_state:
                _save_training_state(ckpt_dir, epoch, optimizer, scheduler, best_f1, result)
        _log_epoch(state.name, epoch, cfg.epochs, metrics)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch=epoch, metrics=dict(metrics), checkpoint_dir=ckpt_dir))
        for old in sorted(saved):
            if old not in keep:
                shutil.rmtree(saved.pop(old), ignore_errors=True)
    result.best_checkpoint = saved.get(result.best_epoch)
    result.last_checkpoint = saved.get(cfg.stop_after_epoch or cfg.epochs)
    return result


# Fields that may differ between the run that wrote a checkpoint and the one resuming from it.
_RESUME_FREE_FIELDS = ("output_dir", "resume_from", "save_training_state", "torch_threads", "device",
                       "stop_after_epoch")
# ABD fields that act only from the switch epoch int(gamma * epochs) on (Alg. 1 lines 3-10: beta2
# weighs the refinement's entropy term, gamma places the switch): a run may resume from another's
# checkpoint of an epoch before both runs' switches -- the shared prefix of an ABD grid.
PREFIX_FREE_FIELDS = ("beta", "gamma")


def _save_training_state(
    ckpt_dir: Path, epoch: int, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, best_f1: float, result: StageResult,
) -> None:
    torch.save({
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "best_f1": best_f1,
        "best_epoch": result.best_epoch,
        "history": result.history,
    }, ckpt_dir / TRAINING_STATE_FILE)


def _resume(
    state: _StageState, ckpt: Path, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, result: StageResult,
) -> tuple[int, float]:
    """Load `ckpt`'s weights and training state into this run; returns (epochs done, best dev F1).

    The checkpoint must come from this stage with the same configuration (output_dir, threads and
    device aside): the resumed epochs then equal those of an uninterrupted run."""
    state_file = ckpt / TRAINING_STATE_FILE
    if not state_file.is_file():
        raise ConfigError(
            f"resume_from={ckpt} holds no {TRAINING_STATE_FILE}; resume from a checkpoint written "
            "with save_training_state=True, or drop resume_from"
        )
    meta = read_meta(ckpt)
    training = torch.load(state_file, map_location="cpu", weights_only=False)
    free = _resume_free_fields(state.cfg, dict(meta.get("config", {})), int(training["epoch"]))
    theirs = {k: v for k, v in dict(meta.get("config", {})).items() if k not in free}
    ours = {k: v for k, v in state.cfg.to_dict().items() if k not in free}
    if meta.get("stage") != state.name or theirs != ours:
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ConfigError(
            f"resume_from={ckpt} was written by stage {meta.get('stage')!r} with a different "
            f"configuration ({', '.join(changed) or 'stage'}); resume with the same settings or drop resume_from"
        )
    saved_model, _, _ = load_checkpoint(ckpt)
    state.model.load_state_dict(saved_model.state_dict())
    if state.projection is not None and state.projection.trainable:
        state.projection.load_state_dict(torch.load(ckpt / PROJECTION_FILE, map_location=state.rt.device))
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["torch_rng"])
    if training.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["cuda_rng"])
    result.history = list(training["history"])
    result.best_epoch = int(training["best_epoch"])
    log.info("[%s] resumed from %s after epoch %d", state.name, ckpt, training["epoch"])
    return int(training["epoch"]), float(training["best_f1"])


def _resume_free_fields(cfg: StageConfig, theirs: dict[str, Any], epoch: int) -> set[str]:
    """The config fields a run resuming after `epoch` may have changed: bookkeeping always; for ABD
    also beta and gamma when `epoch` is before both runs' switch (neither acted yet)."""
    free = set(_RESUME_FREE_FIELDS)
    if isinstance(cfg, DistillConfig) and {"epochs", "gamma"} <= set(theirs):
        theirs_switch = switch_epoch(int(theirs["epochs"]), float(theirs["gamma"]))
        if epoch <= min(switch_epoch(cfg.epochs, cfg.gamma), theirs_switch):
            free |= set(PREFIX_FREE_FIELDS)
    return free


def _keep_set(mode: str, best_epoch: int, epoch: int) -> set[int]:
    keep: set[int] = set()
    if mode in ("best", "best_and_last"):
        keep.add(best_epoch)
    if mode in ("last", "best_and_last"):
        keep.add(epoch)
    return keep


def _save_epoch(state: _StageState, out_dir: Path, epoch: int, metrics: dict[str, float]) -> Path:
    meta = {
        "task": state.task.name,
        "labels": list(state.task.labels),
        "multi_label": state.task.multi_label,
        "model_spec": state.model_spec,
        "hidden_size": hidden_size(state.model),
        "epoch": epoch,
        "metrics": metrics,
        "stage": state.name,
        "seed": state.cfg.seed,
        "config": state.cfg.to_dict(),
        **state.extra_meta,
    }
    path = save_checkpoint(state.model, state.tokenizer, out_dir / f"epoch_{epoch}", meta)
    if state.projection is not None and state.projection.trainable:
        torch.save(state.projection.state_dict(), path / PROJECTION_FILE)
    return path


def _log_epoch(stage: str, epoch: int, epochs: int, m: dict[str, float]) -> None:
    parts = [f"[{stage}] epoch {epoch}/{epochs}", f"train_loss={m['train_loss']:.4f}"]
    if "phase" in m:
        parts.append(f"phase={int(m['phase'])}")
    if "train_lat" in m:
        parts.append(f"train_lat={m['train_lat']:.1f}")
    for key in ("dev_f1", "dev_ece", "dev_loss", "dev_lat", "test_f1"):
        if key in m:
            parts.append(f"{key}={m[key]:.4f}" if key != "dev_lat" else f"{key}={m[key]:.1f}")
    parts.append(f"({m['epoch_seconds']:.1f}s train, {m['eval_seconds']:.1f}s eval)")
    log.info(" ".join(parts))


def _eval_splits(cfg: StageConfig) -> list[str]:
    return ["dev"] + [s for s in cfg.eval_splits if s != "dev"]


def cpl_step_loss(beta: float, multi_label: bool) -> StepLoss:
    """Eq. 2: L_cls = CE - beta * H (beta = 0: plain CE)."""

    def step_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        labels = batch.labels.to(logits.device, non_blocking=True)
        return confidence_penalty_loss(logits, labels, beta, multi_label), None

    return step_loss


def _fine_tune(name: str, cfg: StageConfig, on_epoch: EpochCallback | None) -> StageResult:
    _validate(cfg)
    rt = _runtime(cfg)
    task = get_task(cfg.data.task)
    model, tokenizer = load_classifier(cfg.model, task, seed=cfg.seed)
    model.to(rt.device)
    train = load_encoded(cfg.data, "train", tokenizer)
    evals = {s: load_encoded(cfg.data, s, tokenizer) for s in _eval_splits(cfg)}
    loss = cpl_step_loss(cfg.beta, task.multi_label)
    state = _StageState(
        name=name, cfg=cfg, task=task, model=model, tokenizer=tokenizer, model_spec=cfg.model,
        train=train, evals=evals, params=[p for p in model.parameters() if p.requires_grad], rt=rt,
        step_loss_for_epoch=lambda epoch0: (loss, None),
    )
    return _run_stage(state, on_epoch)


def train_teacher(cfg: StageConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Calibrated teacher training (Alg. 1 line 1, Sec. 3.2): fine-tune with L_cls = CE - beta1 * H (Eq. 2)."""
    return _fine_tune("ctt", cfg, on_epoch)


def train_student(cfg: StageConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Student fine-tuning (Alg. 1 line 2): L_CE (beta = 0); beta > 0 is Table 6's "ft + CPL" variant."""
    return _fine_tune("student", cfg, on_epoch)


def abd_step_loss(teacher_cls_for: Callable[[Batch], torch.Tensor], margin: float) -> StepLoss:
    """Eq. 5 against ``teacher_cls_for(batch)`` (the projected teacher [CLS] [B, H_student]); also Eq. 4 counts."""

    def step_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = teacher_cls_for(batch)
        return activation_boundary_loss(cls, t, margin=margin), activation_transfer_count(cls, t)

    return step_loss


def switch_epoch(epochs: int, gamma: float) -> int:
    """Alg. 1 line 3 as the authors' code: epoch_switch = int(epochs * gamma)."""
    return int(epochs * gamma)


def distill(cfg: DistillConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Activation boundary distillation + refinement (Alg. 1 lines 3-10).

    Epochs (0-based) < int(epochs * gamma) train the student on Eq. 5 (margin mu) against the cached
    frozen-teacher [CLS] of each example (looked up by ``Batch.indices``, projected to the student's
    width by ``TeacherProjection``); ``distill_loss="kld"`` uses the KL divergence to the cached
    teacher logits there instead (Table 6). Later epochs refine with L_cls = CE - beta2 * H.
    Reports ``dev_lat`` (mean Eq. 4 count on dev), ``train_lat`` (ABD epochs) and ``phase`` per epoch.
    """
    _validate(cfg)
    if not cfg.teacher_checkpoint:
        raise ConfigError("distill needs teacher_checkpoint; set teacher_checkpoint=<ctt output_dir>/epoch_<k>")
    if not is_checkpoint(cfg.teacher_checkpoint):
        read_meta(cfg.teacher_checkpoint)  # raises the one-line ConfigError
    rt = _runtime(cfg)
    task = get_task(cfg.data.task)
    if is_checkpoint(cfg.model):
        model, tokenizer, student_meta = load_checkpoint(cfg.model)
        _check_task(student_meta, task, cfg.model)
        model_spec = str(student_meta.get("model_spec", cfg.model))
    else:
        model, tokenizer = load_classifier(cfg.model, task, seed=cfg.seed)
        model_spec = cfg.model
    model.to(rt.device)
    train = load_encoded(cfg.data, "train", tokenizer)
    evals = {s: load_encoded(cfg.data, s, tokenizer) for s in _eval_splits(cfg)}

    raw_cls: dict[str, torch.Tensor] = {}
    teacher_logits: torch.Tensor | None = None
    for split in [train, *evals.values()]:
        outs = teacher_outputs(
            cfg.teacher_checkpoint, task, split.name, split.examples,
            max_len=cfg.data.max_len, cache_dir=cfg.data.cache_dir, device=rt.device,
            amp_dtype=teacher_amp_dtype(cfg.teacher_checkpoint, rt), batch_size=cfg.eval_batch_size,
        )
        raw_cls[split.name] = torch.from_numpy(outs.cls).to(rt.device)
        if split.name == "train":
            teacher_logits = torch.from_numpy(outs.logits).to(rt.device)
    teacher_dim = raw_cls["train"].shape[1]
    mode = resolve_projection(cfg.projection, teacher_dim, hidden_size(model))
    projection_seed = cfg.seed if cfg.projection_seed is None else cfg.projection_seed
    params = [p for p in model.parameters() if p.requires_grad]
    eval_projection: TeacherProjection | None = None
    if mode == "identity":
        teacher_cls = raw_cls
    else:
        projection = TeacherProjection(teacher_dim, hidden_size(model), mode=mode, seed=projection_seed).to(rt.device)
        if projection.trainable:
            params += list(projection.parameters())
            teacher_cls = raw_cls  # projected per batch (its weights change)
            eval_projection = projection
        else:
            with torch.no_grad():  # a fixed map: project every cached vector once
                teacher_cls = {name: projection(vecs).float() for name, vecs in raw_cls.items()}
    assert teacher_logits is not None

    def cached_teacher_cls(batch: Batch) -> torch.Tensor:
        t = teacher_cls["train"][batch.indices.to(rt.device, non_blocking=True)]
        return eval_projection(t) if eval_projection is not None else t

    def kld_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        idx = batch.indices.to(rt.device, non_blocking=True)
        return kd_kl_loss(logits, teacher_logits[idx], cfg.kd_temperature, task.multi_label), None

    refine = cpl_step_loss(cfg.beta, task.multi_label)
    distill_step = abd_step_loss(cached_teacher_cls, cfg.margin) if cfg.distill_loss == "abd" else kld_loss
    switch = switch_epoch(cfg.epochs, cfg.gamma)

    def step_loss_for_epoch(epoch0: int) -> tuple[StepLoss, float]:
        return (distill_step, 0.0) if epoch0 < switch else (refine, 1.0)

    state = _StageState(
        name="abd", cfg=cfg, task=task, model=model, tokenizer=tokenizer, model_spec=model_spec,
        train=train, evals=evals, params=params, rt=rt, step_loss_for_epoch=step_loss_for_epoch,
        teacher_cls={k: v for k, v in teacher_cls.items() if k != "train"},
        projection=eval_projection,
        extra_meta={
            "teacher_checkpoint": str(cfg.teacher_checkpoint),
            "init_checkpoint": str(cfg.model),
            "projection": {"mode": mode, "seed": projection_seed},
        },
    )
    return _run_stage(state, on_epoch)
