"""The paper's own numbers (Choi, Choi & Lee, ACL 2022: Tables 2 and 5-7, Appendix A), shown
next to ours where a task matches. F1 in percent as printed: (mean, std); std None when the paper
prints none.

`ROW_VARIANTS` says which of our final variants each row of Tables 2 and 7 measures, and Table 6 is
keyed by variant: one mapping, so a number the paper prints in two tables is one variant of ours
(`variant_cells`; tests/integration/test_tables.py checks it). The teacher row of Tables 2, 6 and 7 is the
teacher DoKTra distils from, trained with CTT (its dev-tuned beta1, Table A1; 0 for HoC): §3.2 calls
calibrated teacher training "a fine-tuning approach", §4.3 measures Retain against "the teacher
model", and Table 6 prints Table 2's row unchanged (76.20 +/- 0.65) as its reference, one teacher
row for an ablation that has two teachers (CE-only for +KLD/+ABD, CTT for +CTT+...).
"""

from __future__ import annotations

from typing import NamedTuple

Cell = tuple[float, float | None]

BIO_TASKS = ("chemprot", "gad", "ddi", "i2b2", "hoc")  # Table 2's columns
FIN_TASKS = ("fpb", "fts")  # Table 7's


def _row(tasks: tuple[str, ...], *cells: Cell) -> dict[str, Cell]:
    """One printed row: a (mean, std) per column of `tasks`, in the paper's column order."""
    if len(cells) != len(tasks):
        raise ValueError(f"{len(cells)} cells for {len(tasks)} columns {tasks}")
    return dict(zip(tasks, cells))


# Table 2 (biomedical/clinical) and Table 7 (financial): row -> task -> (F1 %, std)
TABLE2: dict[str, dict[str, Cell]] = {
    "BioBERT-ft (teacher)": _row(BIO_TASKS, (76.20, 0.65), (81.59, 0.27), (80.05, 0.62), (74.14, 0.35), (84.21, 0.33)),
    "ALBERT-ft (student)": _row(BIO_TASKS, (73.67, 0.98), (74.33, 0.91), (81.31, 0.72), (69.89, 1.17), (81.76, 0.20)),
    "ALBERT-DoKTra": _row(BIO_TASKS, (77.42, 0.04), (78.86, 0.19), (82.30, 0.41), (72.98, 0.07), (83.52, 0.44)),
    "RoBERTa-ft (student)": _row(BIO_TASKS, (75.75, 0.35), (77.84, 1.80), (80.71, 1.56), (72.51, 1.80), (83.98, 0.44)),
    "RoBERTa-DoKTra": _row(BIO_TASKS, (78.04, 0.22), (81.38, 0.05), (82.25, 0.30), (75.65, 0.11), (85.34, 0.12)),
}
TABLE2_AVG = {"BioBERT-ft (teacher)": 79.24, "ALBERT-ft (student)": 76.19, "ALBERT-DoKTra": 79.02,
              "RoBERTa-ft (student)": 78.16, "RoBERTa-DoKTra": 80.53}
TABLE2_RETAIN = {"ALBERT-DoKTra": 99.72, "RoBERTa-DoKTra": 101.63}

TABLE7: dict[str, dict[str, Cell]] = {
    "FinBERT-ft (teacher)": _row(FIN_TASKS, (85.70, 0.59), (85.88, 0.48)),
    "ALBERT-ft (student)": _row(FIN_TASKS, (83.85, 1.65), (80.79, 1.94)),
    "ALBERT-DoKTra": _row(FIN_TASKS, (86.25, 0.19), (86.08, 1.82)),
    "RoBERTa-ft (student)": _row(FIN_TASKS, (85.78, 0.29), (81.76, 0.48)),
    "RoBERTa-DoKTra": _row(FIN_TASKS, (87.21, 0.29), (85.10, 0.19)),
}
TABLE7_RETAIN = {"ALBERT-DoKTra": 100.44, "RoBERTa-DoKTra": 100.43}

TEACHER_ROWS = {"biomedical": "BioBERT-ft (teacher)", "financial": "FinBERT-ft (teacher)"}
# Tables 2 and 7: row -> our variant (the teacher is the CTT teacher DoKTra distils from: docstring)
ROW_VARIANTS: dict[str, str] = {
    "BioBERT-ft (teacher)": "teacher_ctt", "FinBERT-ft (teacher)": "teacher_ctt",
    "ALBERT-ft (student)": "student_ft", "RoBERTa-ft (student)": "student_ft",
    "ALBERT-DoKTra": "doktra", "RoBERTa-DoKTra": "doktra",
}

# Table 5 (ALBERT students): task -> {"no_ctt": (F1, std, L_AT), "ctt": (F1, std, L_AT)}
TABLE5_VARIANTS = {"no_ctt": "doktra_no_ctt", "ctt": "doktra"}
TABLE5: dict[str, dict[str, tuple[float, float, float]]] = {
    "chemprot": {"no_ctt": (76.20, 0.20, 193.75), "ctt": (77.42, 0.04, 139.79)},
    "gad": {"no_ctt": (77.26, 0.94, 331.50), "ctt": (78.86, 0.19, 268.95)},
    "ddi": {"no_ctt": (82.16, 0.63, 131.62), "ctt": (82.30, 0.41, 98.97)},
    "i2b2": {"no_ctt": (72.82, 0.30, 123.29), "ctt": (72.98, 0.07, 92.20)},
}

# Table 6 (ChemProt, ALBERT-xlarge student): our variant -> (F1 %, std)
TABLE6_CHEMPROT: dict[str, Cell] = {
    "teacher_ctt": (76.20, 0.65),  # "BioBERT-ft (teacher)": Table 2's teacher row (docstring)
    "student_ft": (73.67, 0.98),
    "kld": (76.40, 0.36),
    "ctt_kld": (76.87, 0.49),
    "doktra_no_ctt": (76.20, 0.24),
    "doktra": (77.42, 0.04),
    "student_ft_cpl": (74.04, 0.43),
}

# Tables A1 / A4: CTT epochs and beta1 per task
TABLE_A1: dict[str, dict[str, float]] = {
    "chemprot": {"e": 5, "beta1": 0.3}, "gad": {"e": 3, "beta1": 0.7},
    "ddi": {"e": 5, "beta1": 0.3}, "i2b2": {"e": 5, "beta1": 0.3}, "hoc": {"e": 10, "beta1": 0.0},
    "fpb": {"e": 5, "beta1": 0.7}, "fts": {"e": 5, "beta1": 0.3},  # Table A4
}

_ABD_KEYS = ("e1", "lr1", "e2", "lr2", "beta2", "gamma")


def _abd(*values: float) -> dict[str, float]:
    return dict(zip(_ABD_KEYS, values))


# Tables A2 / A5 (ALBERT student) and A3 / A6 (RoBERTa student)
TABLE_A2: dict[str, dict[str, float]] = {
    "chemprot": _abd(10, 6e-6, 10, 1e-5, 0.5, 0.9), "gad": _abd(5, 6e-6, 10, 1e-5, 0.3, 0.9),
    "ddi": _abd(10, 8e-6, 10, 1e-5, 0.7, 0.9), "i2b2": _abd(10, 1e-5, 10, 1e-5, 0.5, 0.9),
    "hoc": _abd(10, 1e-5, 10, 6e-6, 0.0, 0.6),
    "fpb": _abd(10, 6e-6, 10, 1e-5, 0.0, 0.9), "fts": _abd(10, 6e-6, 10, 6e-6, 0.1, 0.8),  # A5
}
TABLE_A3: dict[str, dict[str, float]] = {
    "chemprot": _abd(5, 1e-5, 10, 1e-5, 0.5, 0.8), "gad": _abd(5, 1e-5, 10, 1e-5, 0.5, 0.9),
    "ddi": _abd(10, 1e-5, 10, 1e-5, 0.7, 0.8), "i2b2": _abd(5, 1e-5, 10, 1e-5, 0.5, 0.8),
    "hoc": _abd(10, 1e-5, 10, 6e-6, 0.0, 0.6),
    "fpb": _abd(5, 1e-5, 10, 1e-5, 0.0, 0.9), "fts": _abd(10, 1e-5, 10, 6e-6, 0.5, 0.9),  # A6
}


def student_family(student_model: str | None) -> str:
    """Which of the paper's student rows to compare with: RoBERTa for roberta-like specs,
    ALBERT otherwise (the paper's main student)."""
    return "RoBERTa" if student_model and "roberta" in student_model.lower() else "ALBERT"


class PaperCell(NamedTuple):
    """One F1 cell the paper prints, with the variant of ours it measures."""

    table: str
    task: str
    student: str | None  # ALBERT / RoBERTa; None for the teacher (the same for both students, App. A.1)
    variant: str
    mean: float
    std: float | None


def variant_cells() -> list[PaperCell]:
    """Every F1 cell of Tables 2, 5, 6 and 7 as the analysis maps it to our variants."""
    cells = [
        PaperCell(name, task, None if ROW_VARIANTS[row].startswith("teacher") else row.split("-")[0],
                  ROW_VARIANTS[row], *cell)
        for name, table in (("Table 2", TABLE2), ("Table 7", TABLE7))
        for row, tasks in table.items() for task, cell in tasks.items()
    ]
    cells += [PaperCell("Table 5", task, "ALBERT", TABLE5_VARIANTS[key], f1, std)
              for task, rows in TABLE5.items() for key, (f1, std, _) in rows.items()]
    cells += [PaperCell("Table 6", "chemprot", None if variant.startswith("teacher") else "ALBERT", variant, *cell)
              for variant, cell in TABLE6_CHEMPROT.items()]
    return cells
