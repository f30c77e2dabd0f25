"""The paper's own numbers (Kim et al., ACL 2022, /work/shared/paper/doktra-acl2022.md), shown
next to ours where a task matches. F1 in percent as printed: (mean, std); std None when the paper
prints none.
"""

from __future__ import annotations

Cell = tuple[float, float | None]

# Table 2 (biomedical/clinical) and Table 7 (financial): row -> task -> (F1 %, std)
TABLE2: dict[str, dict[str, Cell]] = {
    "BioBERT-ft (teacher)": {
        "chemprot": (76.20, 0.65), "gad": (81.59, 0.27), "ddi": (80.05, 0.62),
        "i2b2": (74.14, 0.35), "hoc": (84.21, 0.33),
    },
    "ALBERT-ft (student)": {
        "chemprot": (73.67, 0.98), "gad": (74.33, 0.91), "ddi": (81.31, 0.72),
        "i2b2": (69.89, 1.17), "hoc": (81.76, 0.20),
    },
    "ALBERT-DoKTra": {
        "chemprot": (77.42, 0.04), "gad": (78.86, 0.19), "ddi": (82.30, 0.41),
        "i2b2": (72.98, 0.07), "hoc": (83.52, 0.44),
    },
    "RoBERTa-ft (student)": {
        "chemprot": (75.75, 0.35), "gad": (77.84, 1.80), "ddi": (80.71, 1.56),
        "i2b2": (72.51, 1.80), "hoc": (83.98, 0.44),
    },
    "RoBERTa-DoKTra": {
        "chemprot": (78.04, 0.22), "gad": (81.38, 0.05), "ddi": (82.25, 0.30),
        "i2b2": (75.65, 0.11), "hoc": (85.34, 0.12),
    },
}
TABLE2_AVG = {"BioBERT-ft (teacher)": 79.24, "ALBERT-ft (student)": 76.19, "ALBERT-DoKTra": 79.02,
              "RoBERTa-ft (student)": 78.16, "RoBERTa-DoKTra": 80.53}
TABLE2_RETAIN = {"ALBERT-DoKTra": 99.72, "RoBERTa-DoKTra": 101.63}

TABLE7: dict[str, dict[str, Cell]] = {
    "FinBERT-ft (teacher)": {"fpb": (85.70, 0.59), "fts": (85.88, 0.48)},
    "ALBERT-ft (student)": {"fpb": (83.85, 1.65), "fts": (80.79, 1.94)},
    "ALBERT-DoKTra": {"fpb": (86.25, 0.19), "fts": (86.08, 1.82)},
    "RoBERTa-ft (student)": {"fpb": (85.78, 0.29), "fts": (81.76, 0.48)},
    "RoBERTa-DoKTra": {"fpb": (87.21, 0.29), "fts": (85.10, 0.19)},
}
TABLE7_RETAIN = {"ALBERT-DoKTra": 100.44, "RoBERTa-DoKTra": 100.43}

# Table 5 (ALBERT students): task -> {"no_ctt": (F1, std, L_AT), "ctt": (F1, std, L_AT)}
TABLE5: dict[str, dict[str, tuple[float, float, float]]] = {
    "chemprot": {"no_ctt": (76.20, 0.20, 193.75), "ctt": (77.42, 0.04, 139.79)},
    "gad": {"no_ctt": (77.26, 0.94, 331.50), "ctt": (78.86, 0.19, 268.95)},
    "ddi": {"no_ctt": (82.16, 0.63, 131.62), "ctt": (82.30, 0.41, 98.97)},
    "i2b2": {"no_ctt": (72.82, 0.30, 123.29), "ctt": (72.98, 0.07, 92.20)},
}

# Table 6 (ChemProt, ALBERT-xlarge student): our variant -> (F1 %, std)
TABLE6_CHEMPROT: dict[str, Cell] = {
    "teacher_ft": (76.20, 0.65),
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
