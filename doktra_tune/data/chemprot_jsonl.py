"""SciBERT's ChemProt `{train,dev,test}.jsonl` (`chemprot_jsonl`), fine labels grouped into BLUE's CPR
classes."""

from __future__ import annotations

import json
from pathlib import Path

from doktra_tune.data.examples import Example
from doktra_tune.data.files import read_text, require_file
from doktra_tune.errors import DataError
from doktra_tune.tasks import TaskSpec

CHEMPROT_FINE_TO_CPR: dict[str, str] = {
    "UPREGULATOR": "CPR:3",
    "ACTIVATOR": "CPR:3",
    "INDIRECT-UPREGULATOR": "CPR:3",
    "DOWNREGULATOR": "CPR:4",
    "INHIBITOR": "CPR:4",
    "INDIRECT-DOWNREGULATOR": "CPR:4",
    "AGONIST": "CPR:5",
    "AGONIST-ACTIVATOR": "CPR:5",
    "AGONIST-INHIBITOR": "CPR:5",
    "ANTAGONIST": "CPR:6",
    "SUBSTRATE": "CPR:9",
    "PRODUCT-OF": "CPR:9",
    "SUBSTRATE_PRODUCT-OF": "CPR:9",
}


def load_chemprot_jsonl(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    path = require_file(root / f"{split}.jsonl", split, f"SciBERT's ChemProt {split}.jsonl")
    examples: list[Example] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: bad JSON ({err.msg}); fix the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(
            row.get("label"), str
        ):
            raise DataError(f'{where}: expected an object with string "text" and "label"; fix the line')
        label = row["label"].strip()
        label = CHEMPROT_FINE_TO_CPR.get(label, label)
        if label not in spec.labels:
            raise DataError(
                f"{where}: label {row['label']!r} is neither a ChemProt fine label "
                f"({', '.join(CHEMPROT_FINE_TO_CPR)}) nor one of {', '.join(spec.labels)}; "
                f"fix the line or choose the right data.task"
            )
        text = row["text"].strip()
        if not text:
            raise DataError(f"{where}: empty text; fix or remove the line")
        examples.append(Example(text, (label,)))
    return examples
