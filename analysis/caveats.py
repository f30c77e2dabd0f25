"""What differs between a search and the paper's setting, in lines a reader sees next to every
table that prints the paper's numbers beside ours.

`comparison_caveats(config)` takes the search's resolved configuration (the run directory's
config.yaml, or the search run's MLflow params unflattened) and returns one line per kind of
difference: data copy and format, subsample sizes, models, each stage's grid and epochs (lr, β, γ,
e, e₁, e₂), batch size, batching and precision, sequence length, number of seeds, and the protocol keys (search
mode, pruner, hand-off, e₁ mode, projection, final protocol, ...). A CPU proxy must never be read as
a replication.

The paper's setting is defined once: the `paper` preset composed for the search's task
(`doktra_tune/conf`, the grids of `search_spaces/`). What that preset itself cannot match are the
notes below: the public data copies a user reads (`../shared/data` beside a clone) and the FinBERT
checkpoint on the hub.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

PAPER_PRESET = "paper"
DATASET_NOTES = {
    "chemprot_jsonl": (
        "ChemProt: SciBERT's copy (no false class), not BLUE's (13 fine labels grouped into CPR:3/4/5/6/9, "
        "entities marked << >> and [[ ]]; the paper's BLUE ChemProt has 17,865/11,263/15,583 pairs with the "
        "false class, entities anonymised as @CHEMICAL$/@GENE$)"
    ),
    "fpb": "FPB (50 % agree, 4,846 sentences) split here 80/10/10 stratified with a fixed seed; the paper's split is not published",
    "hoc_raw": (
        "HoC is built from the raw corpus (first-level hallmarks, split by abstract in BLUE's 1,108/157/315 "
        "proportions with a fixed seed: task.data_copy=raw), not BLUE's pre-processed HoC files the paper uses "
        "(task.data_copy=paper, the paper preset's)"
    ),
    "gad_folds:carve": (
        "GAD dev is a stratified 10 % carved from each fold's train file, 90 % of it trained (the authors' "
        "scripts score the fold's test file as dev and train all 4,796 pairs)"
    ),
    "csv_holdout": "FTS is split here 80/10/10 stratified with a fixed seed; the paper's split is not published",
}
# hub checkpoints that stand in for the paper's own (README: Models)
MODEL_NOTES = {
    "yiyanghkust/finbert-pretrain": (
        "teacher yiyanghkust/finbert-pretrain is FinBERT-FinVocab-uncased; the paper's FinBERT-base has BERT's "
        "original vocabulary (App. A.2), a checkpoint not on the hub"
    ),
}
# per stage: the grid keys as the paper names them
STAGE_NAMES = {"ctt": "CTT", "student": "student fine-tuning", "abd": "ABD"}
SYMBOLS = {
    "ctt": {"beta": "β₁", "lr": "lr", "epochs": "e"},
    "student": {"lr": "lr₁", "epochs": "e₁"},
    "abd": {"lr": "lr₂", "beta": "β₂", "gamma": "γ", "epochs": "e₂"},
}
# protocol choices the paper preset fixes (each a named option; README: Protocol)
PROTOCOL_KEYS = (
    "search.mode", "search.num_samples", "search.pruner", "search.handoff", "search.selection.kind",
    "search.selection.f1_tolerance", "stages.student.e1_mode", "stages.abd.margin", "stages.abd.projection",
    "final.protocol", "final.folds", "final.gad_std", "train.weight_decay", "train.warmup_ratio",
    "train.max_grad_norm", "task.hoc_head",
)


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _has(config: Mapping[str, Any], dotted: str) -> bool:
    head, _, last = dotted.rpartition(".")
    parent = _get(config, head) if head else config
    return isinstance(parent, Mapping) and last in parent


def _format_name(config: Mapping[str, Any]) -> str:
    """The loader's name (`DATASET_NOTES`' key); GAD's folds with their dev mode (`gad_folds:test|carve`).
    A GAD search recorded before the dev modes (its format `gad_folds[:k]`) carved its dev."""
    from doktra_tune.tasks import get_task

    fmt = str(_get(config, "task.data_format") or get_task(str(_get(config, "task.name"))).default_format)
    name, _, arg = fmt.partition(":")
    if name == "gad_folds":
        return f"gad_folds:{arg.partition(':')[2] or ('test' if _has(config, 'final.gad_std') else 'carve')}"
    return name


@lru_cache(maxsize=None)
def paper_config(task: str) -> dict[str, Any]:
    """The `paper` preset composed for `task`, resolved: the paper's setting as this repository runs it."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from doktra_tune.compose import compose_config, resolved_dict

    overrides = [f"task={task}", f"preset={PAPER_PRESET}"]
    if GlobalHydra.instance().is_initialized():  # inside the search's own Hydra app (its final report)
        return resolved_dict(compose(config_name="config", overrides=overrides))
    return resolved_dict(compose_config(overrides))


def _number(value: Any) -> str:
    """A value as the paper writes it: 2e-5, 1.5e-4, 0.3, 10; None as none."""
    from analysis.results import short_number

    if value is None:
        return "none"
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return short_number(str(value))


def _values(values: list[Any]) -> str:
    shown = [_number(v) for v in values]
    return shown[0] if len(shown) == 1 else "{" + ", ".join(shown) + "}"


def stage_values(config: Mapping[str, Any], stage: str) -> dict[str, list[Any]] | None:
    """A stage's hyperparameters as the search runs them: its grid file with the config's overrides,
    the fixed values (CTT's lr) and its epochs (e, e₂; e₁ when not searched), each as a sorted list.
    None when the config does not describe the stage or its grid file cannot be read."""
    from doktra_tune.errors import ConfigError
    from doktra_tune.search_space import load_search_space

    options = _get(config, f"stages.{stage}")
    if not isinstance(options, Mapping):
        return None
    grid = {k: v for k, v in (options.get("grid") or {}).items() if v is not None}
    searched = stage == "student" and options.get("e1_mode", "grid") == "grid"
    fixed = {} if searched or options.get("epochs") is None else {"epochs": options["epochs"]}
    try:
        space = load_search_space(stage, options.get("search_space"), grid, fixed)
    except ConfigError:
        return None
    values = {**{k: list(v) for k, v in space.params.items()}, **{k: [v] for k, v in space.fixed.items()}}
    return {k: sorted(v) for k, v in values.items()}


def _precisions(config: Mapping[str, Any]) -> dict[str, str] | None:
    """stage -> the precision it trains in (stages.<stage>.precision, else train.precision)."""
    if not _has(config, "train.precision"):
        return None
    default = _get(config, "train.precision") or "auto"
    return {stage: _get(config, f"stages.{stage}.precision") or default for stage in STAGE_NAMES}


def _precision_text(precisions: dict[str, str]) -> str:
    if len(set(precisions.values())) == 1:
        return next(iter(precisions.values()))
    return ", ".join(f"{STAGE_NAMES[stage]} {p}" for stage, p in precisions.items())


def _model_lines(config: Mapping[str, Any], paper: Mapping[str, Any]) -> list[str]:
    lines = []
    teacher, student = _get(config, "teacher_model"), _get(config, "student_model")
    paper_teacher = _get(paper, "teacher_model")
    paper_students = [str(s) for s in _get(paper, "task.paper_students") or [_get(paper, "student_model")]]
    if teacher and str(teacher) != paper_teacher:
        lines.append(f"models: teacher {teacher} (paper: {paper_teacher}).")
    elif teacher and str(teacher) in MODEL_NOTES:
        lines.append(f"models: {MODEL_NOTES[str(teacher)]}.")
    if student and str(student).split("@")[0] not in paper_students:
        lines.append(f"models: student {student} (paper: {' or '.join(paper_students)}).")
    return lines


def comparison_caveats(config: Mapping[str, Any]) -> list[str]:
    """One line per kind of difference between this search and the paper's setting (empty when none is known)."""
    from doktra_tune.tasks import get_task

    task_name = str(_get(config, "task.name") or "")
    try:
        task = get_task(task_name)
    except Exception:  # noqa: BLE001 - an unknown task: nothing to compare
        return []
    paper = paper_config(task.name)
    lines: list[str] = []
    note = DATASET_NOTES.get(_format_name(config))
    if note:
        lines.append(f"data: {note}.")
    limits = [(split, _get(config, f"data.{split}_limit")) for split in ("train", "dev", "test")]
    sub = [f"{split} {n}" for split, n in limits if n]
    if sub:
        lines.append(f"data: seeded stratified subsample ({', '.join(sub)} examples), not the full splits.")
    lines += _model_lines(config, paper)
    for stage, name in STAGE_NAMES.items():
        ours, theirs = stage_values(config, stage), stage_values(paper, stage)
        if ours is None or theirs is None:
            continue
        diffs = [f"{SYMBOLS[stage].get(key, key)} {_values(ours.get(key, []))} (paper: {_values(theirs.get(key, []))})"
                 for key in [*theirs, *(k for k in ours if k not in theirs)] if ours.get(key) != theirs.get(key)]
        if diffs:
            lines.append(f"{name}: {', '.join(diffs)}.")
    training = []
    batch = _get(config, "train.batch_size")
    if batch is not None and batch != _get(paper, "train.batch_size"):
        training.append(f"batch size {batch} (paper: {_get(paper, 'train.batch_size')})")
    ours_p, theirs_p = _precisions(config), _precisions(paper)
    if ours_p is not None and theirs_p is not None and ours_p != theirs_p:
        auto = "; auto is bf16 autocast on a GPU, fp32 on a CPU" if "auto" in ours_p.values() else ""
        auto += "; tf32 is fp32 on a CPU" if "tf32" in ours_p.values() else ""
        training.append(f"precision {_precision_text(ours_p)} (paper: {_precision_text(theirs_p)}{auto})")
    batching = _get(config, "train.batching") if _has(config, "train.batching") else "bucketed"  # before the option: bucketed
    if _has(config, "train.precision") and batching != _get(paper, "train.batching"):
        training.append(f"batching {batching} (paper: {_get(paper, 'train.batching')}, the authors' RandomSampler; "
                        "bucketed batches hold sentences of similar length: other batch-mates, other SGD noise)")
    if training:
        lines.append(f"training: {'; '.join(training)}.")
    max_len = _get(config, "data.max_len")
    if max_len not in (None, _get(paper, "data.max_len")):
        lines.append(f"max_len {max_len} tokens (paper: {_get(paper, 'data.max_len')}).")
    seeds, paper_seeds = _get(config, "final.seeds"), _get(paper, "final.seeds") or []
    if isinstance(seeds, list) and len(seeds) != len(paper_seeds):
        lines.append(f"seeds: {len(seeds)} final seed{'s' if len(seeds) != 1 else ''} {seeds} "
                     f"(paper: {len(paper_seeds)}).")
    protocol = [f"{key}={_number(_get(config, key))} (paper preset: {_number(_get(paper, key))})"
                for key in PROTOCOL_KEYS if _has(config, key) and _get(config, key) != _get(paper, key)]
    if protocol:
        lines.append(f"protocol: {'; '.join(protocol)}.")
    return lines
