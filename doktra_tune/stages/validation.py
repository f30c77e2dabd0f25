"""A stage configuration checked against the allowed values of ``doktra_tune.config`` before a stage runs."""

from __future__ import annotations

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
    DistillConfig,
    StageConfig,
)
from doktra_tune.errors import ConfigError


def validate_stage_config(cfg: StageConfig) -> None:
    """Raise a one-line ``ConfigError`` for the first value of ``cfg`` outside its allowed set or range."""
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
