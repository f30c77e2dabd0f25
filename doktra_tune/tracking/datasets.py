"""MLflow dataset inputs of a run: per split, the examples actually used (subsample included), a
digest of their texts and labels, where they came from and their label counts, so the runs list's
Dataset column is filled and two searches on different data are never confused. Plain values: the
trials build them without importing MLflow, the driver's client turns them into MLflow entities."""

from __future__ import annotations

from typing import Any, Sequence

from doktra_tune.config import DataConfig
from doktra_tune.data import label_counts, split_digest
from doktra_tune.stages.splits import load_examples, split_limit
from doktra_tune.tasks import get_task


def dataset_input(name: str, source: str, digest: str, context: str, schema: dict[str, Any] | None = None,
                  profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dataset input as plain values (what the outbox stores): name, where it came from, a digest
    of the exact examples used, and the split it served as (train/dev/test)."""
    return {"name": name, "source": source, "digest": digest, "context": context,
            "schema": schema or {}, "profile": profile or {}}


def dataset_inputs(data: DataConfig, splits: Sequence[str]) -> list[dict[str, Any]]:
    """One `dataset_input` per split of `data` (context = the split's name)."""
    fmt = data.data_format or get_task(data.task).default_format
    out = []
    for split in splits:
        examples = load_examples(data, split)
        limit = split_limit(data, split)
        out.append(dataset_input(
            name=f"{data.task}-{split}", source=f"{data.data_dir} ({fmt})", digest=split_digest(examples),
            context=split, schema={"text": "string", "labels": "list[string]"},
            profile={"num_rows": len(examples), "labels": label_counts(examples),
                     "subsample": f"{limit} of the split, seed {data.subsample_seed}" if limit else "the whole split"},
        ))
    return out
