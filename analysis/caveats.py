"""What differs between a search and the paper's experiments, in lines a reader sees next to every
table that prints the paper's numbers beside ours (§4.2 and App. A are the reference).

`comparison_caveats(config)` takes the search's resolved configuration (the run directory's
config.yaml, or the search run's MLflow params unflattened) and returns one line per difference:
dataset copy and format, subsample sizes, models, epochs, sequence length. A CPU proxy must never be
read as a replication.
"""

from __future__ import annotations

from typing import Any, Mapping

from analysis import paper_values as paper

# The paper's models (§4.1, §4.7) and App. A's sequence length.
PAPER_TEACHERS = {"biomedical": "dmis-lab/biobert-base-cased-v1.1", "clinical": "dmis-lab/biobert-base-cased-v1.1",
                  "financial": "FinBERT-base (Yang et al., 2020)"}
PAPER_STUDENTS = ("albert-xlarge-v2", "roberta-large", "roberta-base")
PAPER_MAX_LEN = 128
DATASET_NOTES = {
    "chemprot_jsonl": (
        "ChemProt is SciBERT's copy (13 fine labels grouped into CPR:3/4/5/6/9, entities marked << >> and "
        "[[ ]], no negative 'false' pairs), not the paper's BLUE ChemProt (17,865/11,263/15,583 pairs with "
        "negatives, entities anonymised as @CHEMICAL$/@GENE$)"
    ),
    "fpb": "FPB (50 % agree, 4,846 sentences) split here 80/10/10 stratified with a fixed seed; the paper's split is not published",
    "hoc_raw": (
        "HoC is built from the raw corpus (first-level hallmarks, split by abstract in BLUE's 1,108/157/315 "
        "proportions with a fixed seed), not BLUE's own HoC files"
    ),
    "gad_folds": "GAD dev is a stratified 10 % of each fold's train file (the authors' GAD dev is undocumented)",
    "csv_holdout": "FTS is split here 80/10/10 stratified with a fixed seed; the paper's split is not published",
}


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _format_name(config: Mapping[str, Any]) -> str:
    from doktra_tune.tasks import get_task

    fmt = _get(config, "task.data_format") or get_task(str(_get(config, "task.name"))).default_format
    return str(fmt).split(":", 1)[0]


def comparison_caveats(config: Mapping[str, Any]) -> list[str]:
    """One line per way this search differs from the paper's setting (empty when none is known)."""
    from doktra_tune.tasks import get_task

    task_name = str(_get(config, "task.name") or "")
    try:
        task = get_task(task_name)
    except Exception:  # noqa: BLE001 - an unknown task: nothing to compare
        return []
    lines: list[str] = []
    note = DATASET_NOTES.get(_format_name(config))
    if note:
        lines.append(f"data: {note}.")
    limits = [(split, _get(config, f"data.{split}_limit")) for split in ("train", "dev", "test")]
    sub = [f"{split} {n}" for split, n in limits if n]
    if sub:
        lines.append(f"data: seeded stratified subsample ({', '.join(sub)} examples), not the full splits.")
    teacher, student = _get(config, "teacher_model"), _get(config, "student_model")
    paper_teacher = PAPER_TEACHERS[task.domain]
    if teacher and str(teacher) != paper_teacher:
        lines.append(f"models: teacher {teacher} (paper: {paper_teacher}).")
    if student and str(student).split("@")[0] not in PAPER_STUDENTS:
        lines.append(f"models: student {student} (paper: ALBERT-xlarge / RoBERTa-large; RoBERTa-base for FPB/FTS).")
    epochs = []
    ctt_e = (paper.TABLE_A1.get(task.name) or {}).get("e")
    if ctt_e is not None and _get(config, "stages.ctt.epochs") not in (None, ctt_e):
        epochs.append(f"CTT e={_get(config, 'stages.ctt.epochs')} (Table A1: {ctt_e})")
    if _get(config, "stages.abd.epochs") not in (None, 10):
        epochs.append(f"ABD e2={_get(config, 'stages.abd.epochs')} (paper: 10)")
    e1 = [int(e) for e in (_get(config, "stages.student.grid.epochs") or [_get(config, "stages.student.epochs")])
          if isinstance(e, (int, float))]
    if e1 and max(e1) < 5:
        epochs.append(f"student e1 up to {max(e1)} (paper: 5-10)")
    if epochs:
        lines.append(f"epochs: {'; '.join(epochs)}.")
    max_len = _get(config, "data.max_len")
    if max_len not in (None, PAPER_MAX_LEN):
        lines.append(f"max_len {max_len} tokens (paper: {PAPER_MAX_LEN}).")
    return lines

